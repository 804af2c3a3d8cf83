"""The channels-last GEMM layout of the conv and pool kernels: an input stored channels-last
(as a conv's output is) gives the values and gradients of the same input stored
channels-first, equal to the direct-loop references, across strides, dilation, groups,
padding modes, 1x1 convs and pooling; float64 gradchecks through channels-last inputs."""
import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.autograd.gradcheck import gradcheck
from dtrain.nn.conv_kernels import is_channels_last

from .test_conv import ref_conv2d, ref_conv_transpose2d

RNG = np.random.default_rng(7)


def stored_channels_last(a):
    """The same (N, C, *s) values, stored channels-last (a view of a (N, *s, C) array)."""
    out = np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 1, -1)), -1, 1)
    assert out.flags.c_contiguous == (a.shape[1] == 1) and is_channels_last(out)
    return out


def both_layouts(a):
    return [("channels_first", a), ("channels_last", stored_channels_last(a))]


def grads(fn, arrays, seed=0):
    """(output, gradients of sum(output * r) for a fixed random r) as NumPy arrays."""
    ts = [dt.tensor(a, requires_grad=True) for a in arrays]
    y = fn(*ts)
    r = np.random.default_rng(seed).standard_normal(y.shape)
    (y * dt.tensor(r)).sum().backward()
    return y.detach().numpy(), [t.grad.numpy() for t in ts]


@pytest.mark.parametrize("stride, padding, dilation, groups, k", [
    (1, 1, 1, 1, 3), (2, 1, 1, 1, 3), ((2, 1), (0, 2), (1, 2), 2, 2), (3, 2, 2, 1, 3),
    (1, 1, 1, 4, 3), (1, 0, 1, 1, 1), (2, 0, 1, 1, 1), (1, 0, 1, 2, 1)])
def test_conv2d_values_and_gradients_equal_in_both_layouts(stride, padding, dilation, groups, k):
    x = RNG.standard_normal((2, 4, 7, 8))
    w = RNG.standard_normal((8, 4 // groups, k, k))
    b = RNG.standard_normal(8)
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    ref = ref_conv2d(x, w, b, pair(stride), tuple((p, p) for p in pair(padding)),
                     pair(dilation), groups)

    def fn(x_, w_, b_):
        return F.conv2d(x_, w_, b_, stride, padding, dilation, groups)
    results = {name: grads(fn, [xa, w, b]) for name, xa in both_layouts(x)}
    y_cf, g_cf = results["channels_first"]
    y_cl, g_cl = results["channels_last"]
    np.testing.assert_allclose(y_cf, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y_cl, ref, rtol=1e-10, atol=1e-12)
    for a, c in zip(g_cf, g_cl):
        np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-12)
    # the input gradient is the transposed conv of the output gradient (its definition)
    r = np.random.default_rng(0).standard_normal(ref.shape)
    out_pad = tuple(n - ((m - 1) * s - 2 * p + d * (k - 1) + 1) for n, m, s, p, d in
                    zip(x.shape[2:], ref.shape[2:], pair(stride), pair(padding), pair(dilation)))
    gx = ref_conv_transpose2d(r, w, None, pair(stride), pair(padding), out_pad, groups,
                              pair(dilation))
    np.testing.assert_allclose(g_cl[0], gx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g_cl[2], r.sum((0, 2, 3)), rtol=1e-10)


@pytest.mark.parametrize("cin, cout, groups", [(2, 8, 1), (8, 8, 1), (8, 2, 1), (4, 12, 2)])
def test_stride1_input_gradient_by_either_algorithm(cin, cout, groups):
    """A stride-1 conv's input gradient is a conv of g with the flipped kernel unless the
    conv widens more than twice (then the tap products and col2im): both equal the
    transposed conv of the definition, in both layouts."""
    x = RNG.standard_normal((2, cin, 6, 7))
    w = RNG.standard_normal((cout, cin // groups, 3, 2))
    r = RNG.standard_normal((2, cout, 6, 5))
    gx = ref_conv_transpose2d(r, w, None, (1, 1), (1, 0), (0, 0), groups, (1, 2))
    for _, xa in both_layouts(x):
        xt = dt.tensor(xa, requires_grad=True)
        (F.conv2d(xt, dt.tensor(w), None, 1, (1, 0), (1, 2), groups) * dt.tensor(r)).sum() \
            .backward()
        np.testing.assert_allclose(xt.grad.numpy(), gx, rtol=1e-10, atol=1e-12)


def test_conv_output_is_channels_last_and_feeds_the_next_conv():
    x = dt.tensor(RNG.standard_normal((2, 3, 6, 6)))
    w1 = dt.tensor(RNG.standard_normal((5, 3, 3, 3)))
    w2 = dt.tensor(RNG.standard_normal((4, 5, 1, 1)))
    y = F.conv2d(x, w1, padding=1)
    assert is_channels_last(y.numpy())
    z = F.conv2d(y, w2)  # 1x1 over a channels-last input: read with no im2col copy
    ref = ref_conv2d(ref_conv2d(x.numpy(), w1.numpy(), None, (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
                     w2.numpy(), None, (1, 1), ((0, 0), (0, 0)), (1, 1), 1)
    np.testing.assert_allclose(z.numpy(), ref, rtol=1e-10)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_padding_modes_equal_in_both_layouts(mode):
    dt.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=(1, 2), padding=2, padding_mode=mode, dtype=dt.float64)
    x = RNG.standard_normal((2, 3, 5, 6))
    out = {}
    for name, xa in both_layouts(x):
        conv.zero_grad()
        y, (gx,) = grads(conv, [xa])
        out[name] = (y, gx, conv.weight.grad.numpy().copy())
    for a, c in zip(out["channels_first"], out["channels_last"]):
        np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("stride, padding, output_padding, groups, dilation", [
    (2, 1, 1, 1, 1), (1, 0, 0, 2, 2), (3, 1, 0, 1, 1)])
def test_conv_transpose2d_equal_in_both_layouts(stride, padding, output_padding, groups,
                                                dilation):
    x = RNG.standard_normal((2, 4, 3, 4))
    w = RNG.standard_normal((4, 6 // groups, 3, 2))
    p = lambda v: (v, v)  # noqa: E731
    ref = ref_conv_transpose2d(x, w, None, p(stride), p(padding), p(output_padding), groups,
                               p(dilation))

    def fn(x_, w_):
        return F.conv_transpose2d(x_, w_, None, stride, padding, output_padding, groups,
                                  dilation)
    (y_cf, g_cf), (y_cl, g_cl) = (grads(fn, [xa, w]) for _, xa in both_layouts(x))
    np.testing.assert_allclose(y_cf, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y_cl, ref, rtol=1e-10, atol=1e-12)
    for a, c in zip(g_cf, g_cl):
        np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kernel, stride, padding, dilation, ceil_mode", [
    (2, 2, 0, 1, False), (3, 2, 1, 1, True), ((2, 3), 1, 0, (2, 1), False), (3, 3, 1, 1, False)])
def test_max_pool_equal_in_both_layouts(kernel, stride, padding, dilation, ceil_mode):
    x = RNG.permutation(2 * 3 * 7 * 8).reshape(2, 3, 7, 8).astype(np.float64)  # no ties

    def fn(x_):
        return F.max_pool2d(x_, kernel, stride, padding, dilation, ceil_mode)
    (y_cf, (g_cf,)), (y_cl, (g_cl,)) = (grads(fn, [xa]) for _, xa in both_layouts(x))
    np.testing.assert_array_equal(y_cf, y_cl)
    np.testing.assert_array_equal(g_cf, g_cl)
    # a tiling 2x2 pool routes every gradient to its window's maximum
    if kernel == 2:
        r = np.random.default_rng(0).standard_normal(y_cf.shape)
        win = x[:, :, :6, :].reshape(2, 3, 3, 2, 4, 2)
        is_max = win == win.max((3, 5), keepdims=True)
        expect = np.zeros_like(x)
        expect[:, :, :6, :] = (is_max * r[:, :, :, None, :, None]).reshape(2, 3, 6, 8)
        np.testing.assert_array_equal(g_cl, expect)


def test_gradcheck_float64_through_channels_last_inputs():
    x = dt.tensor(stored_channels_last(RNG.standard_normal((2, 4, 5, 5))), requires_grad=True)
    w = dt.tensor(RNG.standard_normal((4, 2, 3, 3)), requires_grad=True)
    w1 = dt.tensor(RNG.standard_normal((3, 4, 1, 1)), requires_grad=True)

    def net(x_, w_, w1_):
        y = F.conv2d(x_, w_, stride=(1, 2), padding=1, groups=2).relu()
        return F.conv2d(F.max_pool2d(y, 2, ceil_mode=True), w1_)
    assert gradcheck(net, (x, w, w1))
    assert gradcheck(lambda x_, w_: F.conv_transpose2d(x_, w_, stride=2, padding=1), (x, w))


def test_view_after_a_conv_works_as_in_pytorch():
    """A conv/pool output is stored channels-last, PyTorch's is contiguous: the tutorial
    idiom `x.view(-1, C * H * W)` still works (as a copy), with the values and gradients of
    reshape; a transposed 2-d tensor still refuses `view`, as in PyTorch."""
    dt.manual_seed(0)
    conv, pool = nn.Conv2d(3, 4, 3), nn.MaxPool2d(2)
    x = dt.randn(2, 3, 8, 8)
    h = pool(conv(x))
    assert not h.is_contiguous()
    flat = h.view(-1, 4 * 3 * 3)
    np.testing.assert_array_equal(flat.detach().numpy(), h.detach().numpy().reshape(2, 36))
    flat.sum().backward()
    g = conv.weight.grad.numpy().copy()
    conv.zero_grad()
    pool(conv(x)).reshape(2, 36).sum().backward()
    np.testing.assert_array_equal(g, conv.weight.grad.numpy())
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        dt.ones(3, 4).T.view(12)
