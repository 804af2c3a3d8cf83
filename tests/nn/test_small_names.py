"""Smaller PyTorch names: bilinear/linear interpolate, LPPool, Softmax2d, AlphaDropout,
Upsampling* modules, argwhere, broadcast_shapes, range, Tensor.apply_ — values from
PyTorch's documented formulas."""
import warnings

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn.functional as F
from dtrain import nn


def test_bilinear_matches_torchs_values_both_corner_modes():
    x = dt.arange(4.0).reshape(1, 1, 2, 2)
    np.testing.assert_allclose(F.interpolate(x, scale_factor=2, mode="bilinear").numpy()[0, 0],
                               [[0, .25, .75, 1], [.5, .75, 1.25, 1.5], [1.5, 1.75, 2.25, 2.5],
                                [2, 2.25, 2.75, 3]])
    np.testing.assert_allclose(F.interpolate(x, size=(3, 3), mode="bilinear",
                                             align_corners=True).numpy()[0, 0],
                               [[0, .5, 1], [1, 1.5, 2], [2, 2.5, 3]])
    np.testing.assert_allclose(nn.UpsamplingBilinear2d(size=(3, 3))(x).numpy(),
                               F.interpolate(x, size=(3, 3), mode="bilinear",
                                             align_corners=True).numpy())
    assert nn.UpsamplingNearest2d(scale_factor=2)(x).shape == (1, 1, 4, 4)
    np.testing.assert_allclose(F.interpolate(dt.tensor([[[0.0, 1.0, 2.0]]]), size=5,
                                             mode="linear").numpy()[0, 0],
                               [0, .4, 1, 1.6, 2], rtol=1e-6)
    with pytest.raises(NotImplementedError, match="Got 4D input, but linear mode needs 3D"):
        F.interpolate(x, size=3, mode="linear")
    with pytest.raises(ValueError, match="align_corners option"):
        F.interpolate(x, size=3, align_corners=True)


def test_lp_pool_is_the_p_norm_of_each_window():
    x = dt.randn(2, 3, 4, 6, dtype=dt.float64)
    a = x.numpy().reshape(2, 3, 2, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 3, 2, 3, 4)
    np.testing.assert_allclose(nn.LPPool2d(3, 2)(x.abs()).numpy(),
                               (np.abs(a) ** 3).sum(-1) ** (1 / 3), rtol=1e-12)
    y = dt.randn(1, 2, 6, dtype=dt.float64)
    np.testing.assert_allclose(F.lp_pool1d(y, 2, 3).numpy(),
                               np.sqrt((y.numpy().reshape(1, 2, 2, 3) ** 2).sum(-1)), rtol=1e-12)


def test_softmax2d_alpha_dropout_and_small_functions():
    x = dt.randn(2, 3, 2, 2)
    np.testing.assert_allclose(nn.Softmax2d()(x).numpy(), F.softmax(x, -3).numpy())
    with pytest.raises(ValueError, match="3D or 4D"):
        nn.Softmax2d()(dt.randn(3, 3))
    dt.manual_seed(0)
    z = dt.randn(400000, dtype=dt.float64)
    out = nn.AlphaDropout(0.2)(z)  # keeps mean 0 and variance 1 of a standard input
    assert abs(float(out.mean())) < 0.01 and abs(float(out.std()) - 1) < 0.01
    assert nn.AlphaDropout(0.2).eval()(z) is z
    assert dt.argwhere(dt.tensor([[0, 1], [2, 0]])).tolist() == [[0, 1], [1, 0]]
    assert dt.broadcast_shapes((2, 1), (3,), 1) == (2, 3)
    with pytest.raises(RuntimeError, match="cannot be broadcast"):
        dt.broadcast_shapes((2,), (3,))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = dt.range(1, 4)
    assert r.tolist() == [1.0, 2.0, 3.0, 4.0] and r.dtype == dt.float32 and caught
    assert dt.tensor([1.0, 2.0]).apply_(lambda v: v * 10).tolist() == [10.0, 20.0]
