"""The shipped configs/cifar10_resnet20.yaml on this machine: its transforms on CIFAR images,
and a 2-rank first run that downloads a CIFAR-10-format archive from a loopback server once."""
import hashlib
import http.server
import io
import json
import tarfile
import threading

import numpy as np
import pytest
import yaml

import dtrain as dt
from dtrain.launcher import registry

ARCHIVE = "/cifar-10-binary.tar.gz"


def cifar10_binary_archive(train_per_batch=40, test=16, seed=0):
    """The bytes of a cifar-10-binary.tar.gz of the real layout, with random images."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, n in [(f"data_batch_{i}.bin", train_per_batch) for i in range(1, 6)] + [
                ("test_batch.bin", test)]:
            labels = rng.integers(0, 10, (n, 1), dtype=np.uint8)
            pixels = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
            data = np.concatenate([labels, pixels], 1).tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 serving `server.files` ({path: bytes}) and recording the
    path of every GET in `server.gets`."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            httpd.gets.append(self.path)
            body = httpd.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files, httpd.gets = {}, []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_config_transforms_on_a_cifar_image(configs):
    """The config's train transforms: an HWC uint8 image -> a normalized float (3, 32, 32)
    tensor equal to NumPy padding, slicing and flipping with the same random draws."""
    specs = yaml.safe_load((configs / "cifar10_resnet20.yaml").read_text())["data"]["transforms"]
    pipeline = registry.build_transforms(specs, train=True)
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mean, std = (np.array(specs[3]["normalize"][k], np.float32).reshape(3, 1, 1)
                 for k in ("mean", "std"))
    flips = set()
    for seed in range(6):
        dt.manual_seed(seed)
        out = pipeline(img)
        dt.manual_seed(seed)
        i, j = (dt.randint(0, 9, (1,)).item() for _ in range(2))
        flip = dt.rand(1, dtype=dt.float64).item() < 0.5
        want = np.pad(img, ((4, 4), (4, 4), (0, 0)))[i:i + 32, j:j + 32]
        want = (want[:, ::-1] if flip else want).transpose(2, 0, 1) / np.float32(255)
        assert isinstance(out, dt.Tensor) and out.shape == (3, 32, 32)
        assert out.dtype == dt.float32
        assert np.allclose(out.numpy(), (want - mean) / std, atol=1e-5)
        flips.add(flip)
    assert flips == {True, False}
    test_out = registry.build_transforms(specs, train=False)(img)
    assert np.allclose(test_out.numpy(), (img.transpose(2, 0, 1) / np.float32(255) - mean) / std,
                       atol=1e-5)


def overrides(tmp_path, server, md5):
    return [f"data.root={tmp_path / 'data'}", f"data.args.url={server.url}{ARCHIVE}",
            f"data.args.md5={md5}", "trainer.device=cpu", "trainer.amp=false",
            "distributed.backend=mpi", "distributed.nproc_per_node=2", "data.num_workers=0",
            "data.batch_size=8", "trainer.max_steps=2", "trainer.log_every=1",
            "scheduler.total_steps=2", f"experiment.output_dir={tmp_path / 'runs'}"]


def test_two_ranks_download_once_then_train(dtrain_cli, configs, tmp_path, server):
    archive = cifar10_binary_archive()
    server.files[ARCHIVE] = archive
    md5 = hashlib.md5(archive).hexdigest()
    proc = dtrain_cli("launch", configs / "cifar10_resnet20.yaml",
                      *overrides(tmp_path, server, md5), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert server.gets == [ARCHIVE]  # one download for both ranks
    assert (tmp_path / "data" / "cifar-10-batches-bin" / "test_batch.bin").stat().st_size == \
        16 * 3073
    found = list((tmp_path / "runs").glob("**/metrics.jsonl"))
    assert len(found) == 1, found
    records = [json.loads(line) for line in found[0].read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"][-1] == 2


def test_a_corrupted_archive_is_a_clear_error(dtrain_cli, configs, tmp_path, server):
    archive = cifar10_binary_archive()
    server.files[ARCHIVE] = archive[:-100] + bytes(100)
    md5 = hashlib.md5(archive).hexdigest()
    proc = dtrain_cli("launch", configs / "cifar10_resnet20.yaml",
                      *overrides(tmp_path, server, md5), timeout=120)
    assert proc.returncode != 0
    assert (f"{server.url}{ARCHIVE}: the downloaded file has md5 checksum "
            f"{hashlib.md5(server.files[ARCHIVE]).hexdigest()} but cifar-10-binary.tar.gz "
            f"should have {md5}") in proc.stdout + proc.stderr
    assert not list((tmp_path / "data").glob("*.tar.gz*part"))  # no temporary file left
    assert not (tmp_path / "data" / "cifar-10-binary.tar.gz").exists()
    assert not (tmp_path / "data" / "cifar-10-batches-bin").exists()
