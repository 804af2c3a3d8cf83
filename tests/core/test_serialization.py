"""dt.save / dt.load: round trips, atomic writes, damaged files and hostile files."""
import hashlib
import io
import json
import os
import pickle
import stat
from collections import OrderedDict

import numpy as np
import pytest

import dtrain as dt
from dtrain.core import serialization

DTYPES = [dt.float16, dt.float32, dt.float64, dt.uint8, dt.int8, dt.int16, dt.int32, dt.int64,
          dt.bool]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.name)
def test_tensor_dtypes_and_shapes_round_trip(dtype, tmp_path):
    rng = np.random.default_rng(0)
    values = rng.integers(-100, 100, size=(3, 5)) if dtype != dt.bool else rng.random((3, 5)) > .5
    if dtype == dt.uint8:
        values = np.abs(values)
    t = dt.tensor(values.astype(dtype.np))
    cases = [t, t.T, t[1], dt.zeros(0, 4, dtype=dtype), dt.tensor(values[0, 0].astype(dtype.np))]
    dt.save(cases, tmp_path / "t.dt")
    loaded = dt.load(tmp_path / "t.dt")
    for a, b in zip(cases, loaded):
        assert b.dtype == dtype and b.shape == a.shape and b.device == dt.device("cpu")
        np.testing.assert_array_equal(b.numpy(), a.numpy())


def test_float_values_exact_and_arrays_writable(tmp_path):
    t = dt.tensor(np.array([np.pi, -0.0, np.inf, -np.inf, np.nan, 5e-324]))
    dt.save({"t": t}, tmp_path / "f")
    back = dt.load(tmp_path / "f")["t"]
    assert back.numpy().tobytes() == t.numpy().tobytes()
    back.add_(1.0)  # loaded tensors own writable memory
    assert back[0].item() == np.pi + 1


def test_nested_plain_values_round_trip(tmp_path):
    obj = {
        "ints": [0, -1, 2 ** 100], "floats": (1.5, float("inf"), -0.0), "none": None,
        "flags": [True, False], "text": "é\n\"quoted\"", 7: "int key", (1, "a"): "tuple key",
        None: 1, 2.5: [[], (), {}], "ordered": OrderedDict([("z", 1), ("a", 2)]),
        "np": np.arange(4, dtype=np.int32), "np_scalar": np.float16(1.5),
        "dtype": dt.int64, "device": dt.device("cpu"), "bool_key": {True: 1, 1.25: 2},
    }
    dt.save(obj, tmp_path / "n")
    back = dt.load(tmp_path / "n")
    assert list(back) == list(obj)
    for key in ("ints", "floats", "none", "flags", "text", 7, (1, "a"), None, 2.5, "dtype",
                "device", "bool_key"):
        assert back[key] == obj[key] and type(back[key]) is type(obj[key])
    assert type(back["ordered"]) is OrderedDict and list(back["ordered"]) == ["z", "a"]
    assert back["np"].dtype == np.int32 and back["np"].tolist() == [0, 1, 2, 3]
    assert type(back["np_scalar"]) is np.float16 and back["np_scalar"] == 1.5
    assert type(back[2.5][1]) is tuple and type(back[2.5][0]) is list


def test_shared_tensors_stay_shared_and_requires_grad_is_kept(tmp_path):
    w = dt.randn(2, 2, requires_grad=True)
    dt.save({"a": w, "b": [w], "c": w.detach()}, tmp_path / "s")
    back = dt.load(tmp_path / "s")
    assert back["a"] is back["b"][0] and back["c"] is not back["a"]
    assert back["a"].requires_grad and not back["c"].requires_grad and back["a"].is_leaf


class Net(dt.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = dt.nn.Parameter(dt.randn(4, 3))
        self.b = dt.nn.Parameter(dt.randn(3))
        self.register_buffer("steps", dt.tensor(0))

    def forward(self, x):
        return x @ self.w + self.b


def test_module_state_dict_round_trip(tmp_path):
    model = Net()
    model.steps.fill_(7)
    dt.save(model.state_dict(), tmp_path / "m.dt")
    sd = dt.load(tmp_path / "m.dt")
    assert type(sd) is OrderedDict and list(sd) == ["w", "b", "steps"]
    other = Net()
    other.load_state_dict(sd)
    x = dt.randn(5, 4)
    np.testing.assert_array_equal(other(x).detach().numpy(), model(x).detach().numpy())
    assert other.steps.item() == 7 and other.steps.dtype == dt.int64


def test_optimizer_state_dict_round_trip(tmp_path):
    model = Net()
    opt = dt.optim.Adam(model.parameters(), lr=0.01, amsgrad=True)
    model(dt.randn(5, 4)).sum().backward()
    opt.step()
    sd = opt.state_dict()
    dt.save(sd, tmp_path / "o.dt")
    back = dt.load(tmp_path / "o.dt")
    assert back["param_groups"] == sd["param_groups"]
    assert back["state"].keys() == sd["state"].keys() == {0, 1}
    for i in (0, 1):
        for key, value in sd["state"][i].items():
            np.testing.assert_array_equal(back["state"][i][key].numpy(), value.numpy())


def test_file_objects_and_unsupported_values(tmp_path):
    buf = io.BytesIO()
    dt.save({"x": dt.arange(3)}, buf)
    buf.seek(0)
    assert dt.load(buf)["x"].tolist() == [0, 1, 2]
    with pytest.raises(TypeError, match=r"cannot store function at obj\['a'\]\[1\]: it "
                       "is not picklable"):
        dt.save({"a": [1, lambda: 0]}, tmp_path / "bad")
    assert not os.listdir(tmp_path)  # nothing written for a refused object
    buf.seek(0)
    assert dt.load(buf, weights_only=False)["x"].tolist() == [0, 1, 2]
    with pytest.raises(TypeError, match="weights_only must be None, True or False"):
        dt.load(buf, weights_only="yes")


# -- atomic writes ---------------------------------------------------------------------------
def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.dt"
    dt.save({"version": 1, "w": dt.ones(1000)}, path)
    original = path.read_bytes()
    calls = []

    def failing(put, arr):
        calls.append(1)
        put(b"partial bytes")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(serialization, "_write_array", failing)
    with pytest.raises(OSError, match="disk full"):
        dt.save({"version": 2, "w": dt.zeros(1000)}, path)
    assert calls and path.read_bytes() == original
    assert os.listdir(tmp_path) == ["ckpt.dt"]  # the temporary file is gone
    assert dt.load(path)["version"] == 1


def test_saved_file_has_the_usual_permissions(tmp_path):
    dt.save([1], tmp_path / "p")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "p").st_mode) == 0o666 & ~umask


# -- damaged files ---------------------------------------------------------------------------
@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "good.dt"
    dt.save({"w": dt.arange(64, dtype=dt.float32), "meta": {"epoch": 3}}, path)
    return path


@pytest.mark.parametrize("where", [30, -40, -1], ids=["header", "payload", "checksum"])
def test_corrupted_byte_is_rejected(good_file, where):
    data = bytearray(good_file.read_bytes())
    data[where] ^= 0x01
    good_file.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match=f"{good_file}.*corrupted.*checksum"):
        dt.load(good_file)


@pytest.mark.parametrize("keep", [0, 5, 20, 100, -1], ids=lambda k: f"keep{k}")
def test_truncated_file_is_rejected(good_file, keep):
    data = good_file.read_bytes()
    good_file.write_bytes(data[:keep])
    with pytest.raises(RuntimeError, match=f"{good_file} is truncated"):
        dt.load(good_file)


def test_appended_bytes_are_rejected(good_file):
    with open(good_file, "ab") as f:
        f.write(b"\0")
    with pytest.raises(RuntimeError, match="longer than recorded"):
        dt.load(good_file)


# -- hostile files ---------------------------------------------------------------------------
class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling would create the marker file


def test_pickle_payload_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"state": _Exploit(str(marker))}))
    with pytest.raises(RuntimeError, match="not a dtrain checkpoint.*torch.save.*refused"):
        dt.load(path)
    assert not marker.exists()


class _SystemExploit(_Exploit):
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    dt.save({"w": dt.ones(2), "x": _Exploit(str(marker))}, tmp_path / "e")
    with pytest.raises(pickle.UnpicklingError, match=r"it needs io\.open"):
        dt.load(tmp_path / "e")
    dt.save([_SystemExploit(str(marker))], tmp_path / "s")
    with dt.serialization.safe_globals([os.system]):  # os/posix are never allowed
        with pytest.raises(pickle.UnpicklingError, match=r"it needs (posix|nt)\.system"):
            dt.load(tmp_path / "s")
    assert not marker.exists()


def test_npz_with_object_array_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.npz"
    np.savez(path, a=np.array([_Exploit(str(marker))], dtype=object))
    with pytest.raises(RuntimeError, match="not a dtrain checkpoint"):
        dt.load(path)
    assert not marker.exists()


def craft(path, header, payload=b""):
    """A file with a valid checksum around an arbitrary header (what an attacker can do)."""
    head = json.dumps(header).encode()
    body = serialization._PREFIX.pack(serialization.MAGIC, len(head), len(payload))
    body += head + payload
    path.write_bytes(body + hashlib.sha256(body).digest())
    return path


def tensor_header(**meta):
    entry = {"dtype": "float32", "shape": [2], "offset": 0, "device": "cpu",
             "requires_grad": False, **meta}
    return {"format": "dtrain", "version": 1, "arrays": [entry],
            "tree": {"t": "tensor", "i": 0}}


@pytest.mark.parametrize("header, message", [
    (tensor_header(dtype="object"), "dtype 'object' is not one dtrain saves"),
    (tensor_header(dtype="O"), "not one dtrain saves"),
    (tensor_header(offset=4), "outside the payload"),
    (tensor_header(shape=[-1]), "bad shape"),
    ({**tensor_header(), "tree": {"t": "pickled", "v": "cos\nsystem\n"}}, "unknown node tag"),
    ({**tensor_header(), "tree": {"t": "pickle", "v": "cos\nsystem\n"}}, "malformed"),
    ({**tensor_header(), "pickle": 0, "tree": {"t": "pickle", "i": 0}}, "not a uint8 array"),
    ({**tensor_header(), "pickle": 3}, "malformed"),
    ({**tensor_header(), "tree": {"t": "dict", "items": [[{"t": "list", "v": []}, 1]]}},
     "malformed"),
    ({**tensor_header(), "version": 2}, "format version 2"),
    ({"format": "other"}, "no dtrain header"),
])
def test_crafted_headers_are_refused(tmp_path, header, message):
    path = craft(tmp_path / "crafted", header, payload=b"\0" * 8)
    with pytest.raises(RuntimeError, match=message):
        dt.load(path)


class _Pid:
    """Stands for a persistent id in a crafted pickle."""

    def __init__(self, pid):
        self.pid = pid


class _PidPickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Pid) else None


@pytest.mark.parametrize("pid, message", [
    (("tensor", 5), "names no saved array"),
    (("tensor", 0, int), "bad persistent id"),
    (("tensor",), "bad persistent id"),
    ("tensor", "bad persistent id"),
])
def test_crafted_persistent_ids_are_refused(tmp_path, pid, message):
    out = io.BytesIO()
    _PidPickler(out).dump([_Pid(pid)])
    entry = {"dtype": "uint8", "shape": [len(out.getvalue())], "offset": 0}
    header = {"format": "dtrain", "version": 1, "arrays": [entry],
              "tree": {"t": "pickle", "i": 0}, "pickle": 0}
    path = craft(tmp_path / "crafted", header, payload=out.getvalue())
    with pytest.raises(pickle.UnpicklingError, match=message):
        dt.load(path, weights_only=False)


# -- map_location ----------------------------------------------------------------------------
def test_map_location_forms(tmp_path):
    path = craft(tmp_path / "gpu.dt", tensor_header(device="cuda:1"),
                 payload=np.array([1.5, 2.5], np.float32).tobytes())
    if not dt.cuda.is_available():
        with pytest.raises(RuntimeError, match="map_location='cpu'"):
            dt.load(path)
    for where in ("cpu", dt.device("cpu"), {"cuda:1": "cpu"}):
        t = dt.load(path, map_location=where)
        assert t.device == dt.device("cpu") and t.tolist() == [1.5, 2.5]
    seen = []

    def relocate(tensor, location):
        seen.append(location)
        return tensor * 2

    assert dt.load(path, map_location=relocate).tolist() == [3.0, 5.0] and seen == ["cuda:1"]
    assert dt.load(path, map_location=lambda t, loc: None if loc == "cpu" else t).tolist() == \
        [1.5, 2.5]
