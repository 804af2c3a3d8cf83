"""nn.utils.parametrize and parametrizations (weight_norm, spectral_norm), and the old
weight_norm API: values, gradients, PyTorch's state-dict keys, removal."""
import numpy as np
import pytest

import dtrain as dt
from dtrain import nn
from dtrain.nn.utils import parametrizations, parametrize


class Symmetric(nn.Module):
    def forward(self, X):
        return X.triu() + X.triu(1).transpose(-1, -2)


def test_register_parametrization_recomputes_on_each_read_and_trains_the_original():
    dt.manual_seed(0)
    layer = nn.Linear(3, 3).double()
    opt = dt.optim.SGD(layer.parameters(), lr=0.1)
    parametrize.register_parametrization(layer, "weight", Symmetric())
    w = layer.weight.detach().numpy()
    np.testing.assert_array_equal(w, w.T)
    assert parametrize.is_parametrized(layer, "weight") and not parametrize.is_parametrized(
        layer, "bias")
    assert list(layer.state_dict()) == ["bias", "parametrizations.weight.original"]
    assert type(layer).__name__ == "ParametrizedLinear" and isinstance(layer, nn.Linear)
    layer(dt.randn(4, 3, dtype=dt.float64)).pow(2).sum().backward()
    opt.step()  # the optimizer built before still steps the original
    w2 = layer.weight.detach().numpy()
    assert not np.allclose(w, w2) and np.array_equal(w2, w2.T)
    with parametrize.cached():
        assert layer.weight is layer.weight
    assert layer.weight is not layer.weight


def test_remove_parametrizations_leaves_the_parametrized_value():
    layer = nn.Linear(3, 3).double()
    parametrize.register_parametrization(layer, "weight", Symmetric())
    value = layer.weight.detach().numpy().copy()
    parametrize.remove_parametrizations(layer, "weight")
    assert type(layer) is nn.Linear and list(layer.state_dict()) == ["bias", "weight"]
    np.testing.assert_array_equal(layer.weight.detach().numpy(), value)
    with pytest.raises(ValueError, match="does not have a parametrization on weight"):
        parametrize.remove_parametrizations(layer, "weight")


def test_weight_norm_splits_magnitude_and_direction():
    dt.manual_seed(0)
    layer = nn.Linear(3, 4).double()
    w0 = layer.weight.detach().numpy().copy()
    parametrizations.weight_norm(layer)
    g = layer.parametrizations.weight.original0
    v = layer.parametrizations.weight.original1
    np.testing.assert_allclose(g.detach().numpy()[:, 0], np.linalg.norm(w0, axis=1))
    np.testing.assert_allclose(layer.weight.detach().numpy(), w0, rtol=1e-12)
    x = dt.randn(2, 3, dtype=dt.float64)

    def f(g_, v_):
        return (x @ (v_ * (g_ / v_.pow(2).sum(1, keepdim=True).sqrt())).T).sum()
    assert dt.autograd.gradcheck(f, (g.detach().requires_grad_(), v.detach().requires_grad_()))
    layer(x).sum().backward()
    gg, gv = dt.autograd.grad(f(g, v), (g, v))
    np.testing.assert_allclose(g.grad.numpy(), gg.numpy(), rtol=1e-12)
    np.testing.assert_allclose(v.grad.numpy(), gv.numpy(), rtol=1e-12)


def test_spectral_norm_makes_the_largest_singular_value_one():
    dt.manual_seed(0)
    layer = nn.Linear(5, 6)
    parametrizations.spectral_norm(layer)
    for _ in range(10):
        layer(dt.randn(2, 5))
    sigma = np.linalg.svd(layer.weight.detach().numpy(), compute_uv=False)[0]
    np.testing.assert_allclose(sigma, 1.0, rtol=1e-4)
    assert list(layer.state_dict()) == ["bias", "parametrizations.weight.original",
                                        "parametrizations.weight.0._u",
                                        "parametrizations.weight.0._v"]
    conv = nn.Conv2d(2, 3, 3)
    parametrizations.spectral_norm(conv)
    conv.eval()
    mat = conv.weight.detach().numpy().reshape(3, -1)
    assert np.linalg.svd(mat, compute_uv=False)[0] == pytest.approx(1.0, rel=1e-2)


def test_old_weight_norm_api_keeps_its_keys():
    dt.manual_seed(0)
    layer = nn.Linear(3, 4).double()
    w0 = layer.weight.detach().numpy().copy()
    nn.utils.weight_norm(layer)
    assert list(layer.state_dict()) == ["bias", "weight_g", "weight_v"]
    layer(dt.randn(2, 3, dtype=dt.float64)).sum().backward()
    assert layer.weight_g.grad.shape == (4, 1) and layer.weight_v.grad.shape == (4, 3)
    nn.utils.remove_weight_norm(layer)
    assert list(layer.state_dict()) == ["bias", "weight"]
    np.testing.assert_allclose(layer.weight.detach().numpy(), w0, rtol=1e-12)
