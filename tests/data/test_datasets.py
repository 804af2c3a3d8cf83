"""Built-in data sets, read from tiny files written here in the real formats (no network)."""
import gzip
import hashlib
import multiprocessing
import os
import struct
import sys
import tarfile
import time

import numpy as np
import pytest

import dtrain as dt
from dtrain.data import DataLoader
from dtrain.data import datasets as D


def write_idx(path, array, gz=False):
    codes = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)


def make_mnist(root, name, gz, n_train=5, n_test=3):
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
        out[prefix] = images, labels
    return out


@pytest.mark.parametrize("cls,gz", [(D.MNIST, False), (D.MNIST, True), (D.FashionMNIST, True)])
def test_mnist_family_reads_idx_files(tmp_path, cls, gz):
    files = make_mnist(tmp_path, cls.__name__, gz)
    train = cls(tmp_path)
    images, labels = files["train"]
    assert len(train) == 5 and train.data.dtype == dt.uint8 and train.targets.dtype == dt.int64
    img, target = train[3]
    assert np.array_equal(img, images[3]) and target == int(labels[3])
    test = cls(str(tmp_path), train=False, transform=dt.data.transforms.ToTensor(),
               target_transform=lambda t: -t)
    img, target = test[1]
    assert img.shape == (1, 28, 28) and target == -int(files["t10k"][1][1])
    assert np.allclose(img.numpy()[0], files["t10k"][0][1] / 255.0)
    x, y = next(iter(DataLoader(train, batch_size=5)))
    assert x.shape == (5, 28, 28) and y.tolist() == labels.tolist()


def test_idx_reader_values_and_errors(tmp_path):
    arr = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    write_idx(tmp_path / "a.idx", arr)
    back = D.read_idx(tmp_path / "a.idx")
    assert back.dtype == np.int32 and np.array_equal(back, arr)
    write_idx(tmp_path / "f.idx", np.array([1.5, -2.25], dtype=np.float32))
    assert D.read_idx(tmp_path / "f.idx").tolist() == [1.5, -2.25]
    data = (tmp_path / "a.idx").read_bytes()
    (tmp_path / "cut.idx").write_bytes(data[:-3])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        D.read_idx(tmp_path / "cut.idx")
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02" + data[2:])
    with pytest.raises(ValueError, match="not an IDX file"):
        D.read_idx(tmp_path / "bad.idx")


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(RuntimeError, match="Dataset not found.*download=True"):
        D.MNIST(tmp_path)
    with pytest.raises(RuntimeError, match="Dataset not found.*download=True"):
        D.CIFAR10(tmp_path)


def cifar_records(labels, rng):
    """Records and the HWC images they encode (label bytes, then R, G, B planes)."""
    n = len(labels)
    chw = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    recs = np.concatenate([np.asarray(labels, np.uint8).reshape(n, -1), chw.reshape(n, -1)], 1)
    return recs.tobytes(), chw.transpose(0, 2, 3, 1)


def test_cifar10_binary(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(1)
    train_images, train_labels = [], []
    for i in range(1, 6):
        labels = [(i + k) % 10 for k in range(2)]
        data, images = cifar_records(labels, rng)
        (folder / f"data_batch_{i}.bin").write_bytes(data)
        train_images.append(images)
        train_labels += labels
    data, test_images = cifar_records([9, 0, 4], rng)
    (folder / "test_batch.bin").write_bytes(data)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    (folder / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    train = D.CIFAR10(tmp_path)
    assert len(train) == 10 and train.targets == train_labels and train.classes == names
    assert train.data.shape == (10, 32, 32, 3) and train.data.dtype == np.uint8
    assert np.array_equal(train.data, np.concatenate(train_images))
    test = D.CIFAR10(tmp_path, train=False)
    img, target = test[2]
    assert target == 4 and np.array_equal(img, test_images[2])
    # Pixel (row 0, col 1) of the first test image: bytes 1, 1025 and 2049 of its record.
    raw = np.frombuffer(data, np.uint8)
    assert test[0][0][0, 1].tolist() == [raw[1 + 1], raw[1 + 1025], raw[1 + 2049]]
    (folder / "test_batch.bin").write_bytes(data[:-1])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        D.CIFAR10(tmp_path, train=False)


def test_cifar100_binary_fine_and_coarse_labels(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    rng = np.random.default_rng(2)
    data, images = cifar_records([[3, 57], [19, 99]], rng)
    (folder / "train.bin").write_bytes(data)
    data_test, _ = cifar_records([[0, 1]], rng)
    (folder / "test.bin").write_bytes(data_test)
    train = D.CIFAR100(tmp_path)
    assert train.targets == [57, 99] and train.coarse_targets == [3, 19]
    assert np.array_equal(train[1][0], images[1])
    assert D.CIFAR100(tmp_path, train=False).targets == [1]
    bad, _ = cifar_records([[3, 100]], rng)
    (folder / "test.bin").write_bytes(bad)
    with pytest.raises(ValueError, match="label 100 out of range"):
        D.CIFAR100(tmp_path, train=False)


def test_digits():
    pytest.importorskip("sklearn")
    full = D.Digits()
    assert len(full) == 1797 and sorted(set(full.targets.tolist())) == list(range(10))
    img, target = full[0]
    assert img.shape == (1, 8, 8) and img.dtype == np.float32 and 0 <= img.min() <= img.max() <= 1
    from sklearn.datasets import load_digits
    assert np.allclose(img[0] * 16, load_digits().images[0]) and target == 0
    train, test = D.Digits(train=True), D.Digits(train=False)
    assert len(train) + len(test) == 1797 and len(test) == 359
    assert np.array_equal(D.Digits(train=False).data, test.data)  # deterministic split
    rows = {r.tobytes() for r in train.data} | {r.tobytes() for r in test.data}
    assert len(rows) == len({r.tobytes() for r in full.data})
    assert not np.array_equal(D.Digits(train=False, split_seed=1).data, test.data)


def test_digits_without_scikit_learn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"dtrain\[digits\]"):
        D.Digits()


def test_synthetic_classification_is_deterministic():
    ds = D.SyntheticClassification(20, (3, 4, 4), 5, seed=7)
    x, y = ds[3]
    assert x.shape == (3, 4, 4) and x.dtype == np.float32 and 0 <= y < 5
    again = D.SyntheticClassification(20, (3, 4, 4), 5, seed=7)
    assert np.array_equal(again[3][0], x) and again[3][1] == y
    assert np.array_equal(ds[-17][0], x)
    assert not np.array_equal(D.SyntheticClassification(20, (3, 4, 4), 5, seed=8)[3][0], x)
    with pytest.raises(IndexError):
        ds[20]


def make_cifar10_archive(path, rng, records=2):
    """A cifar-10-binary.tar.gz of the real layout, `records` images per batch file."""
    staging = path.parent / "staging" / "cifar-10-batches-bin"
    staging.mkdir(parents=True)
    for name in D.CIFAR10.train_list + D.CIFAR10.test_list:
        (staging / name).write_bytes(cifar_records([k % 10 for k in range(records)], rng)[0])
    with tarfile.open(path, "w:gz") as tar:
        tar.add(staging, arcname="cifar-10-batches-bin")
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_fetches_verifies_and_extracts(tmp_path):
    """download=True end to end, served from file:// URLs (no network)."""
    served = tmp_path / "served"
    make_mnist(served, "MNIST", gz=True)
    mirror = (served / "MNIST" / "raw").as_uri() + "/"
    sums = [(f, hashlib.md5((served / "MNIST" / "raw" / f).read_bytes()).hexdigest())
            for f, _ in D.MNIST.resources]

    class LocalMNIST(D.MNIST):
        resources = sums

    # The first mirror fails, the second works.
    got = LocalMNIST(tmp_path / "root", download=True, mirrors=["file:///nonexistent/", mirror])
    assert len(got) == 5 and (tmp_path / "root" / "LocalMNIST" / "raw").is_dir()
    assert len(LocalMNIST(tmp_path / "root", train=False, download=True, mirrors=[])) == 3

    archive = tmp_path / "cifar-10-binary.tar.gz"
    md5 = make_cifar10_archive(archive, np.random.default_rng(3))
    ds = D.CIFAR10(tmp_path / "croot", download=True, url=archive.as_uri(), md5=md5)
    assert len(ds) == 10 and ds.url == archive.as_uri() and D.CIFAR10.url.startswith("https")
    assert sorted(os.listdir(tmp_path / "croot")) == [
        "cifar-10-batches-bin", "cifar-10-binary.tar.gz", "cifar-10-binary.tar.gz.lock"]
    with pytest.raises(RuntimeError, match="cifar-10-binary.tar.gz should have 0+ "):
        D.CIFAR10(tmp_path / "other", download=True, url=archive.as_uri(), md5="0" * 32)
    with pytest.raises(RuntimeError, match="does not hold .*train.bin: it is not the binary "
                       "version of CIFAR100"):
        D.CIFAR100(tmp_path / "wrong", download=True, url=archive.as_uri(), md5=md5)


def _load_cifar10(root, url, md5):
    assert len(D.CIFAR10(root, download=True, url=url, md5=md5)) == 10


def test_concurrent_first_downloads_fetch_once(tmp_path, monkeypatch):
    """Processes starting together on an empty root: one downloads, the others wait for it."""
    archive = tmp_path / "cifar-10-binary.tar.gz"
    md5 = make_cifar10_archive(archive, np.random.default_rng(4))
    log = tmp_path / "downloads.log"
    real = D.download_url

    def slow_download(url, path, **kwargs):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.3)  # the others reach the lock meanwhile
        real(url, path, **kwargs)

    monkeypatch.setattr(D, "download_url", slow_download)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_load_cifar10, args=(tmp_path / "root", archive.as_uri(), md5))
             for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0] * 4
    assert len(log.read_text().split()) == 1
