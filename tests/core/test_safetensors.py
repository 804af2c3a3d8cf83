"""dt.save / dt.load with safetensors files, checked against the safetensors package's own
NumPy reader and writer (PyTorch's `safetensors.torch` loader needs torch, not installed)."""
import io
import os

import numpy as np
import pytest

import dtrain as dt
from dtrain import nn

st_numpy = pytest.importorskip("safetensors.numpy")
from safetensors import safe_open  # noqa: E402


def _cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3))


def test_dtrain_file_reads_with_safetensors_numpy(tmp_path):
    model = _cnn()
    model(dt.randn(2, 1, 6, 6))  # running statistics and num_batches_tracked change
    path = tmp_path / "model.safetensors"
    dt.save(model.state_dict(), path, metadata={"format": "pt", "epoch": "3"})
    arrays = st_numpy.load_file(path)
    assert sorted(arrays) == sorted(model.state_dict()) == sorted(
        ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
         "1.num_batches_tracked", "4.weight", "4.bias"])
    for key, value in model.state_dict().items():
        assert arrays[key].dtype == value.numpy().dtype, key
        np.testing.assert_array_equal(arrays[key], value.numpy())
    assert arrays["1.num_batches_tracked"].shape == () and arrays["1.num_batches_tracked"] == 1
    with safe_open(path, framework="np") as f:
        assert f.metadata() == {"format": "pt", "epoch": "3"}
    assert os.listdir(tmp_path) == ["model.safetensors"]  # no temporary file left


def test_file_written_by_safetensors_loads_into_a_dtrain_model(tmp_path):
    """Weights published as safetensors with PyTorch's keys: load_state_dict takes them."""
    rng = np.random.default_rng(0)
    weights = {"0.weight": rng.standard_normal((8, 5)).astype(np.float32),
               "0.bias": rng.standard_normal(8).astype(np.float32),
               "2.weight": rng.standard_normal((3, 8)).astype(np.float32),
               "2.bias": rng.standard_normal(3).astype(np.float32)}
    st_numpy.save_file(weights, tmp_path / "published.safetensors")
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    sd = dt.load(tmp_path / "published.safetensors")
    assert all(isinstance(v, dt.Tensor) and not v.requires_grad for v in sd.values())
    result = model.load_state_dict(sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    x = rng.standard_normal((4, 5)).astype(np.float32)
    hidden = np.maximum(x @ weights["0.weight"].T + weights["0.bias"], 0)
    expected = hidden @ weights["2.weight"].T + weights["2.bias"]
    np.testing.assert_allclose(model(dt.tensor(x)).detach().numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("dtype", [dt.float16, dt.float32, dt.float64, dt.uint8, dt.int8,
                                   dt.int16, dt.int32, dt.int64, dt.bool], ids=lambda d: d.name)
def test_dtypes_round_trip_by_format_and_file_object(dtype, tmp_path):
    value = (dt.arange(12) % 3).reshape(3, 4).to(dtype)
    dt.save({"v": value, "scalar": dt.tensor(5)}, tmp_path / "plain.bin", format="safetensors")
    back = dt.load(tmp_path / "plain.bin", format="safetensors", map_location="cpu")
    assert back["v"].dtype == dtype and back["v"].tolist() == value.tolist()
    assert back["scalar"].shape == () and back["scalar"].item() == 5
    buf = io.BytesIO()
    dt.save({"v": value}, buf, format="safetensors")
    assert st_numpy.load(buf.getvalue())["v"].tolist() == value.tolist()
    buf.seek(0)
    assert dt.load(buf, format="safetensors")["v"].tolist() == value.tolist()


def test_what_safetensors_cannot_hold_is_refused_naming_the_key(tmp_path):
    model = nn.Linear(2, 2)
    opt = dt.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(dt.randn(3, 2)).sum().backward()
    opt.step()
    path = tmp_path / "x.safetensors"
    with pytest.raises(TypeError, match=r"cannot store dict at key 'state' .*nested state.*"
                                        r"dtrain's format"):
        dt.save(opt.state_dict(), path)
    with pytest.raises(TypeError, match=r"cannot store int at key 'epoch'.*dtrain's format"):
        dt.save({"w": model.weight, "epoch": 3}, path)
    with pytest.raises(TypeError, match=r"keys must be str, got 0"):
        dt.save({0: model.weight}, path)
    with pytest.raises(TypeError, match=r"holds a dict of str -> Tensor .* not list"):
        dt.save([model.weight], path)
    with pytest.raises(TypeError, match=r"metadata must map str to str"):
        dt.save({"w": model.weight}, path, metadata={"epoch": 3})
    with pytest.raises(ValueError, match=r"metadata= is for safetensors files"):
        dt.save({"w": model.weight}, tmp_path / "x.dt", metadata={"a": "b"})
    with pytest.raises(ValueError, match=r"format must be 'dtrain' or 'safetensors', got 'pt'"):
        dt.save({"w": model.weight}, path, format="pt")
    assert not os.listdir(tmp_path)


def test_unreadable_files_are_named(tmp_path):
    dt.save({"w": dt.ones(2)}, tmp_path / "ckpt.dt")
    with pytest.raises(RuntimeError, match=r"ckpt\.dt is not a readable safetensors file"):
        dt.load(tmp_path / "ckpt.dt", format="safetensors")
    st_numpy.save_file({"u": np.zeros(2, np.uint32)}, tmp_path / "u.safetensors")
    with pytest.raises(TypeError, match=r"tensor 'u' has dtype uint32"):
        dt.load(tmp_path / "u.safetensors")


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    dt.save({"w": dt.ones(4)}, path)

    def failing(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="disk full"):
        dt.save({"w": dt.zeros(4)}, path)
    assert os.listdir(tmp_path) == ["w.safetensors"]
    assert st_numpy.load_file(path)["w"].tolist() == [1, 1, 1, 1]
