"""dt.save of whole objects (pickle section) and dt.load's weights_only allowlist."""
import io
import os
import pickle
import re
import subprocess
import sys
from collections import Counter, OrderedDict

import numpy as np
import pytest

import dtrain as dt
from dtrain import nn
from dtrain.core import serialization


@pytest.fixture(autouse=True)
def no_safe_globals():
    yield
    dt.serialization.clear_safe_globals()


def test_dtrain_serialization_is_the_core_module():
    import dtrain.serialization
    from dtrain.serialization import safe_globals

    assert dtrain.serialization is dt.serialization is serialization
    assert safe_globals is serialization.safe_globals
    code = ("import dtrain.serialization as s, dtrain.core.serialization as c\n"
            "assert s is c and s.load is c.load\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.out = nn.Linear(3, 3, bias=False)

    def forward(self, x):
        return self.out(self.bn(self.fc(x)).relu())


class Point:
    def __init__(self, t, label):
        self.t, self.label = t, label


def trained_net():
    dt.manual_seed(0)
    model = Net()
    opt = dt.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        model(dt.randn(8, 4)).square().mean().backward()
        opt.step()
    return model, opt


def name(cls):
    return re.escape(f"{cls.__module__}.{cls.__qualname__}")


def test_whole_model_and_optimizer_round_trip(tmp_path):
    model, opt = trained_net()
    dt.save({"model": model, "opt": opt, "epoch": 3}, tmp_path / "ckpt")
    back = dt.load(tmp_path / "ckpt", weights_only=False)
    clone, clone_opt = back["model"], back["opt"]
    assert type(clone) is Net and back["epoch"] == 3 and clone.training
    for (key, p), (key2, q) in zip(model.named_parameters(), clone.named_parameters()):
        assert key == key2 and type(q) is nn.Parameter and q.requires_grad and q.is_leaf
        np.testing.assert_array_equal(q.detach().numpy(), p.detach().numpy())
    assert clone.bn.num_batches_tracked.item() == 3
    x = dt.randn(5, 4)
    model.eval()
    clone.eval()
    np.testing.assert_array_equal(clone(x).detach().numpy(), model(x).detach().numpy())
    # the optimizer's params are the model's, and its momentum buffers came along
    assert all(a is b for a, b in zip(clone_opt.param_groups[0]["params"], clone.parameters()))
    clone.train()
    model.train()
    for m, o in ((model, opt), (clone, clone_opt)):
        o.zero_grad()
        m(x).sum().backward()
        o.step()
    np.testing.assert_array_equal(clone.fc.weight.detach().numpy(),
                                  model.fc.weight.detach().numpy())


def test_default_load_refuses_and_says_how(tmp_path):
    model, _ = trained_net()
    dt.save(model, tmp_path / "m.pt")
    with pytest.raises(pickle.UnpicklingError) as err:
        dt.load(tmp_path / "m.pt")
    message = str(err.value)
    assert re.search(f"it needs {name(Net)}, which is not allowed", message)
    assert "dt.load(f, weights_only=False)" in message
    assert f"dt.serialization.add_safe_globals([{Net.__module__}.Net])" in message
    assert f"with dt.serialization.safe_globals([{Net.__module__}.Net])" in message
    with pytest.raises(pickle.UnpicklingError, match=name(Net)):
        dt.load(tmp_path / "m.pt", weights_only=True)
    # allowing the model class leads to the next global it needs, the layers
    with dt.serialization.safe_globals([Net]):
        with pytest.raises(pickle.UnpicklingError, match=name(nn.Linear)):
            dt.load(tmp_path / "m.pt")


def test_safe_globals_allow_a_user_class(tmp_path):
    t = dt.tensor([1.0, 2.0])
    dt.save({"p": Point(t, Counter("aab"))}, tmp_path / "p")
    with pytest.raises(pickle.UnpicklingError, match=name(Point)):
        dt.load(tmp_path / "p")
    with dt.serialization.safe_globals([Point]):
        assert dt.serialization.get_safe_globals() == [Point]
        back = dt.load(tmp_path / "p")["p"]
    assert type(back) is Point and back.t.tolist() == [1.0, 2.0]
    assert type(back.label) is Counter and back.label == {"a": 2, "b": 1}  # dtrain allows it
    assert dt.serialization.get_safe_globals() == []
    with pytest.raises(pickle.UnpicklingError, match=name(Point)):
        dt.load(tmp_path / "p")  # the context manager removed it again

    dt.serialization.add_safe_globals([(Point, f"{Point.__module__}.Point")])
    assert dt.load(tmp_path / "p")["p"].label["a"] == 2
    dt.serialization.clear_safe_globals()
    assert dt.serialization.get_safe_globals() == []
    dt.serialization.add_safe_globals([Point])
    assert dt.load(tmp_path / "p")["p"].label["b"] == 1
    with pytest.raises(TypeError, match=r"must be \(object, \"module.name\"\)"):
        dt.serialization.add_safe_globals([(Point,)])
    with pytest.raises(TypeError, match="no __module__/__qualname__"):
        dt.serialization.add_safe_globals([3])


def test_dtrain_and_builtin_globals_need_no_allowlist(tmp_path):
    w = nn.Parameter(dt.ones(2))
    obj = {"set": {1, 2}, "frozen": frozenset({3}), "z": 1 - 2j,
           "sizes": {dt.Size([2, 3])}, "dev": {dt.device("cpu")}, "dtypes": {dt.float16},
           "params": {w}, "bytes": bytearray(b"ab")}
    dt.save(obj, tmp_path / "b")
    back = dt.load(tmp_path / "b")
    assert {k: v for k, v in back.items() if k != "params"} == \
        {k: v for k, v in obj.items() if k != "params"}
    (p,) = back["params"]
    assert type(p) is nn.Parameter and p.requires_grad and p.tolist() == [1.0, 1.0]
    assert type(next(iter(back["sizes"]))) is dt.Size


def test_shared_tensors_and_arrays_stay_shared(tmp_path):
    t, arr = dt.arange(3.0), np.arange(4)
    p = Point(t, [t, arr, arr])
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[1].weight = model[0].weight  # tied weights
    dt.save({"t": t, "p": p, "q": Point(t, arr), "model": model}, tmp_path / "s")
    back = dt.load(tmp_path / "s", weights_only=False)
    assert back["p"].t is back["t"] and back["p"].label[0] is back["t"]
    assert back["q"].t is back["t"] and back["p"].label[1] is back["p"].label[2]
    assert back["q"].label is back["p"].label[1] and back["q"].label.tolist() == [0, 1, 2, 3]
    clone = back["model"]
    assert clone[1].weight is clone[0].weight and len(list(clone.parameters())) == 3
    back["t"].add_(1)
    assert back["p"].t.tolist() == [1.0, 2.0, 3.0]


def test_tensors_are_stored_out_of_band(tmp_path):
    big = dt.zeros(10000)
    dt.save(Point(big, "x"), tmp_path / "o")
    header, payload = serialization._verify(bytearray((tmp_path / "o").read_bytes()), "o")
    blob = bytes(payload[header["arrays"][header["pickle"]]["offset"]:])
    assert header["arrays"][0]["shape"] == [10000] and header["tree"] == {"t": "pickle", "i": 0}
    assert len(blob) < 300  # the pickle names the tensor; its 40 kB are raw payload bytes


def test_map_location_places_pickled_tensors(tmp_path):
    model, _ = trained_net()
    dt.save(model, tmp_path / "m")
    seen = []

    def relocate(tensor, location):
        seen.append(location)
        return tensor * 2

    clone = dt.load(tmp_path / "m", map_location=relocate, weights_only=False)
    assert set(seen) == {"cpu"} and type(clone.fc.weight) is nn.Parameter
    np.testing.assert_array_equal(clone.fc.weight.detach().numpy(),
                                  2 * model.fc.weight.detach().numpy())
    assert clone.fc.weight.requires_grad and clone.fc.weight.is_leaf


def test_damaged_files_with_a_pickle_section_are_rejected(tmp_path):
    model, _ = trained_net()
    path = tmp_path / "m"
    dt.save(model, path)
    data = path.read_bytes()
    header, _ = serialization._verify(bytearray(data), "m")
    start = len(data) - 32 - (header["arrays"][-1]["shape"][0]) + 10  # inside the pickle
    damaged = bytearray(data)
    damaged[start] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises(RuntimeError, match="corrupted.*checksum"):
        dt.load(path, weights_only=False)
    path.write_bytes(data[:-100])
    with pytest.raises(RuntimeError, match="is truncated"):
        dt.load(path, weights_only=False)


def test_failed_pickle_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt"
    dt.save({"model": nn.Linear(2, 2)}, path)
    original = path.read_bytes()
    model = nn.Linear(2, 2)
    model.activation = lambda x: x  # not picklable
    with pytest.raises(TypeError, match=r"cannot store Linear at obj\['model'\]"):
        dt.save({"model": model}, path)
    assert path.read_bytes() == original and os.listdir(tmp_path) == ["ckpt"]


# dt.save(OrderedDict(w=dt.tensor([[1.5, -2.0]]), b=dt.tensor([0.25], dtype=dt.float64)))
# as written before dt.save could pickle: state dicts keep exactly this format.
STATE_DICT_V1 = bytes.fromhex(
    "4454524e434b5031280100000000000048000000000000007b22666f726d6174223a2264747261696e222c22"
    "76657273696f6e223a312c22617272617973223a5b7b22646576696365223a22637075222c22726571756972"
    "65735f67726164223a66616c73652c226474797065223a22666c6f61743332222c227368617065223a5b312c"
    "325d2c226f6666736574223a307d2c7b22646576696365223a22637075222c2272657175697265735f677261"
    "64223a66616c73652c226474797065223a22666c6f61743634222c227368617065223a5b315d2c226f666673"
    "6574223a36347d5d2c2274726565223a7b2274223a226f64696374222c226974656d73223a5b5b2277222c7b"
    "2274223a2274656e736f72222c2269223a307d5d2c5b2262222c7b2274223a2274656e736f72222c2269223a"
    "317d5d5d7d7d2020202020200000c03f000000c0000000000000000000000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000000000000000000d03fd1343bb7"
    "7965146a533321bc1b45b9a1cde074a66d3fbf00925edaa43bf33d83"
)


def test_state_dict_format_is_unchanged():
    buf = io.BytesIO()
    state = OrderedDict(w=dt.tensor([[1.5, -2.0]]), b=dt.tensor([0.25], dtype=dt.float64))
    dt.save(state, buf)
    assert buf.getvalue() == STATE_DICT_V1
    back = dt.load(io.BytesIO(STATE_DICT_V1))
    assert type(back) is OrderedDict and list(back) == ["w", "b"]
    assert back["w"].tolist() == [[1.5, -2.0]] and back["b"].dtype == dt.float64
