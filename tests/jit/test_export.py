"""dt.jit.save / dt.jit.load: a traced model saved, then run in a fresh process that never
imports the model's module, gives the same outputs."""
import subprocess
import sys

import numpy as np
import pytest

import dtrain as dt
from dtrain import nn


class TinyNet(nn.Module):
    """Lives only in this test module: the loading process cannot import it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        h = self.pool(self.conv(x).relu())
        h = h.flatten(1)[:, [0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11]]
        return self.fc(h).log_softmax(-1), h.sum(dim=(1,), keepdim=True)


CHILD = r"""
import sys
import dtrain as dt
graph = dt.jit.load(sys.argv[1])
x = dt.load(sys.argv[2])
with dt.no_grad():
    out = graph(x)
assert not any("test_export" in name for name in sys.modules), "model module imported"
dt.save(list(out), sys.argv[3])
"""


def _model_and_input():
    dt.manual_seed(0)
    model = TinyNet().eval()
    x = dt.tensor(np.random.default_rng(0).standard_normal((2, 2, 4, 4)).astype(np.float32))
    return model, x


def test_round_trip_in_a_fresh_process(tmp_path):
    model, x = _model_and_input()
    with dt.no_grad():
        traced = dt.jit.trace(model, (x,))
        want = model(x)
    dt.jit.save(traced, tmp_path / "net.dtj")
    dt.save(x, tmp_path / "x.pt")
    subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "net.dtj"),
                    str(tmp_path / "x.pt"), str(tmp_path / "out.pt")], check=True, timeout=60)
    got = dt.load(tmp_path / "out.pt")
    assert len(got) == 2
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g._data, w._data, rtol=1e-6, atol=1e-7)


def test_loaded_graph_in_process_with_gradients_and_checks(tmp_path):
    model, x = _model_and_input()
    with dt.no_grad():
        traced = dt.jit.trace(model, (x,))
    dt.jit.save(traced, tmp_path / "net.dtj")
    loaded = dt.jit.load(tmp_path / "net.dtj")
    assert len(loaded.weights) == 4  # conv and fc weight and bias
    x2 = dt.tensor(np.random.default_rng(1).standard_normal((2, 2, 4, 4)).astype(np.float32),
                   requires_grad=True)
    out = loaded(x2)[0]  # replay through autograd: the input requires grad
    out.sum().backward()
    twin = x2.detach().requires_grad_()
    model(twin)[0].sum().backward()
    np.testing.assert_allclose(x2.grad._data, twin.grad._data, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match=r"traced for float32\[2, 2, 4, 4\], got "
                                           r"float32\[3, 2, 4, 4\]"):
        loaded(dt.zeros(3, 2, 4, 4))


def test_graphs_with_effects_are_not_exported(tmp_path):
    w = dt.tensor([1.0, 2.0], requires_grad=True)
    traced = dt.jit.trace(lambda x: (w * x).sum().backward(), (dt.ones(2),))
    with pytest.raises(ValueError, match="accumulate"):
        dt.jit.save(traced, tmp_path / "step.dtj")


def test_a_plain_checkpoint_is_not_a_graph(tmp_path):
    dt.save({"a": dt.ones(2)}, tmp_path / "ckpt.pt")
    with pytest.raises(RuntimeError, match="not a saved graph"):
        dt.jit.load(tmp_path / "ckpt.pt")
