"""Pooling and upsampling against direct-loop NumPy references: values, output sizes
(padding, ceil_mode), torch's tie and divisor rules, and gradients routed to the argmax."""
import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
from dtrain.nn.pooling import adaptive_avg_pool2d, avg_pool2d, interpolate, max_pool1d, max_pool2d

RNG = np.random.default_rng(0)


def out_len(n, k, s, p, d, ceil):
    """torch's pooling output size, ceil_mode's last window starting inside input or left pad."""
    o = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    return o - 1 if ceil and (o - 1) * s >= n + p else o


def ref_max_pool2d(x, k, s, p, d, ceil):
    n, c, h, w = x.shape
    oh, ow = out_len(h, k, s, p, d, ceil), out_len(w, k, s, p, d, ceil)
    y = np.full((n, c, oh, ow), -np.inf)
    for i in range(oh):
        for j in range(ow):
            for a in range(k):
                for e in range(k):
                    r, q = i * s - p + a * d, j * s - p + e * d
                    if 0 <= r < h and 0 <= q < w:
                        y[:, :, i, j] = np.maximum(y[:, :, i, j], x[:, :, r, q])
    return y


def ref_avg_pool2d(x, k, s, p, ceil, count_include_pad):
    n, c, h, w = x.shape
    oh, ow = out_len(h, k, s, p, 1, ceil), out_len(w, k, s, p, 1, ceil)
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            r0, q0 = i * s - p, j * s - p
            r1, q1 = min(r0 + k, h + p), min(q0 + k, w + p)  # window clipped to the padding
            inside = x[:, :, max(r0, 0):min(r1, h), max(q0, 0):min(q1, w)]
            count = (r1 - r0) * (q1 - q0) if count_include_pad else \
                (min(r1, h) - max(r0, 0)) * (min(q1, w) - max(q0, 0))
            y[:, :, i, j] = inside.sum((2, 3)) / count
    return y


@pytest.mark.parametrize("k, s, p, d, ceil", [(2, 2, 0, 1, False), (3, 2, 1, 1, False),
                                              (3, 2, 1, 1, True), (2, 1, 0, 2, False),
                                              (3, 3, 0, 1, True)])
def test_max_pool2d_matches_loops(k, s, p, d, ceil):
    x = RNG.standard_normal((2, 3, 7, 8))
    y = max_pool2d(dt.tensor(x), k, s, p, d, ceil)
    np.testing.assert_array_equal(y.numpy(), ref_max_pool2d(x, k, s, p, d, ceil))


def test_max_pool_gradient_goes_to_the_first_maximum():
    x = np.array([[[[0., 0., 1., 3.],
                    [0., 0., 3., 2.],
                    [5., 1., 2., 2.],
                    [1., 5., 2., 2.]]]])
    t = dt.tensor(x, requires_grad=True)
    y = max_pool2d(t, 2)
    np.testing.assert_array_equal(y.detach().numpy()[0, 0], [[0., 3.], [5., 2.]])
    y.backward(dt.tensor([[[[1., 2.], [3., 4.]]]]))
    np.testing.assert_array_equal(t.grad.numpy()[0, 0], [[1, 0, 0, 2],
                                                         [0, 0, 0, 0],
                                                         [3, 0, 4, 0],
                                                         [0, 0, 0, 0]])


def test_overlapping_max_pool_gradient_accumulates():
    x = dt.tensor([[[1., 9., 2., 3., 0.]]], requires_grad=True)
    max_pool1d(x, 3, stride=1).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy()[0, 0], [0, 2, 0, 1, 0])


@pytest.mark.parametrize("k, s, p, ceil, include", [(2, 2, 0, False, True),
                                                    (3, 2, 1, False, True),
                                                    (3, 2, 1, True, True),
                                                    (3, 2, 1, True, False),
                                                    (2, 3, 1, False, False)])
def test_avg_pool2d_matches_loops(k, s, p, ceil, include):
    x = RNG.standard_normal((2, 3, 7, 6))
    y = avg_pool2d(dt.tensor(x), k, s, p, ceil, include)
    np.testing.assert_allclose(y.numpy(), ref_avg_pool2d(x, k, s, p, ceil, include), rtol=1e-12)


def test_avg_pool2d_divisor_override():
    x = RNG.standard_normal((1, 2, 4, 4))
    y = avg_pool2d(dt.tensor(x), 2, divisor_override=3)
    ref = x.reshape(1, 2, 2, 2, 2, 2).sum((3, 5)) / 3
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12)


@pytest.mark.parametrize("out", [(1, 1), (3, 2), (5, 7), (4, None), 2])
def test_adaptive_avg_pool2d_uses_torch_bins(out):
    x = RNG.standard_normal((2, 3, 5, 7))
    oh, ow = (out, out) if isinstance(out, int) else out
    ow = 7 if ow is None else ow
    ref = np.zeros((2, 3, oh, ow))
    for i in range(oh):
        for j in range(ow):
            r0, r1 = (i * 5) // oh, -(-((i + 1) * 5) // oh)
            q0, q1 = (j * 7) // ow, -(-((j + 1) * 7) // ow)
            ref[:, :, i, j] = x[:, :, r0:r1, q0:q1].mean((2, 3))
    y = adaptive_avg_pool2d(dt.tensor(x), out)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-12)


def test_interpolate_nearest_picks_floor_of_scaled_index():
    x = np.arange(2 * 3 * 4, dtype=np.float64).reshape(1, 2, 3, 4)
    y = interpolate(dt.tensor(x), size=(5, 2)).numpy()
    np.testing.assert_array_equal(y, x[:, :, [0, 0, 1, 1, 2]][:, :, :, [0, 2]])
    y2 = interpolate(dt.tensor(x), scale_factor=2).numpy()
    np.testing.assert_array_equal(y2, x.repeat(2, 2).repeat(2, 3))
    y3 = interpolate(dt.tensor(x[:, :, 0]), scale_factor=1.5).numpy()  # 1-d: floor(i / 1.5)
    np.testing.assert_array_equal(y3, x[:, :, 0][:, :, [0, 0, 1, 2, 2, 3]])


def test_upsample_gradient_sums_over_copies():
    x = dt.tensor(RNG.standard_normal((1, 1, 2, 3)), requires_grad=True)
    nn.Upsample(scale_factor=3)(x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((1, 1, 2, 3), 9.0))


def test_modules_shapes_and_errors():
    x = dt.randn(2, 3, 9, 10)
    assert nn.MaxPool2d(2)(x).shape == (2, 3, 4, 5)
    assert nn.MaxPool2d(3, 2, 1, ceil_mode=True)(x).shape == (2, 3, 5, 6)
    assert nn.AvgPool2d(3, 1, 1)(x).shape == (2, 3, 9, 10)
    assert nn.AdaptiveAvgPool2d((1, 1))(x).shape == (2, 3, 1, 1)
    assert nn.Upsample(size=(4, 4))(x).shape == (2, 3, 4, 4)
    assert nn.MaxPool2d(2)(dt.randn(3, 4, 4)).shape == (3, 2, 2)  # unbatched
    with pytest.raises(RuntimeError, match="pad should be at most half"):
        max_pool2d(x, 2, padding=2)
    with pytest.raises(NotImplementedError, match="mode 'bicubic'"):
        interpolate(x, scale_factor=2, mode="bicubic")
    with pytest.raises(ValueError, match="only one of size or scale_factor"):
        interpolate(x)
    with pytest.raises(RuntimeError, match="output size is too small"):
        max_pool2d(dt.randn(1, 1, 2, 2), 3)


def test_return_indices_are_flat_positions_of_the_first_maximum():
    x = np.round(RNG.standard_normal((2, 3, 7, 8)), 1)  # rounding makes ties
    y, idx = max_pool2d(dt.tensor(x), 3, 2, 1, return_indices=True)
    assert idx.dtype == dt.int64 and idx.shape == y.shape
    for n, c, i, j in np.ndindex(*idx.shape):
        best, where = -np.inf, None
        for a in range(3):
            for e in range(3):
                r, q = 2 * i - 1 + a, 2 * j - 1 + e
                if 0 <= r < 7 and 0 <= q < 8 and x[n, c, r, q] > best:
                    best, where = x[n, c, r, q], r * 8 + q
        assert idx.numpy()[n, c, i, j] == where
    out, idx1 = nn.MaxPool2d(2, return_indices=True)(dt.tensor(x[0]))  # unbatched
    assert out.shape == idx1.shape == (3, 3, 4)


def ref_adaptive(x, outs, reduce):
    """Direct loops over torch's adaptive bins [floor(i n / o), ceil((i + 1) n / o))."""
    sizes = x.shape[2:]
    bins = [[(i * n // o, -(-(i + 1) * n // o)) for i in range(o)] for n, o in zip(sizes, outs)]
    y = np.empty(x.shape[:2] + tuple(outs))
    idx = np.empty(y.shape, dtype=np.int64)
    for pos in np.ndindex(*outs):
        sl = tuple(slice(*bins[d][p]) for d, p in enumerate(pos))
        win = x[(Ellipsis,) + sl].reshape(x.shape[:2] + (-1,))
        y[(Ellipsis,) + pos] = reduce(win, -1)
        if reduce is np.max:
            local = np.unravel_index(win.argmax(-1), [s.stop - s.start for s in sl])
            idx[(Ellipsis,) + pos] = np.ravel_multi_index(
                tuple(loc + s.start for loc, s in zip(local, sl)), sizes)
    return y, idx


@pytest.mark.parametrize("size, out", [(7, 3), (5, 5), (4, 6), (9, 1)])
def test_adaptive_pool1d(size, out):
    x = RNG.standard_normal((2, 3, size))
    avg, _ = ref_adaptive(x, (out,), np.mean)
    top, idx = ref_adaptive(x, (out,), np.max)
    np.testing.assert_allclose(nn.AdaptiveAvgPool1d(out)(dt.tensor(x)).numpy(), avg, rtol=1e-12)
    v, i = nn.AdaptiveMaxPool1d(out, return_indices=True)(dt.tensor(x))
    np.testing.assert_array_equal(v.numpy(), top)
    np.testing.assert_array_equal(i.numpy(), idx)
    np.testing.assert_array_equal(nn.functional.adaptive_max_pool1d(dt.tensor(x[0]), out).numpy(),
                                  top[0])  # unbatched


@pytest.mark.parametrize("shape, out", [((5, 7), (2, 3)), ((4, 4), 3), ((6, 5), (None, 2))])
def test_adaptive_max_pool2d_values_indices_and_gradient(shape, out):
    x = RNG.standard_normal((2, 3) + shape)
    outs = tuple(n if o is None else o for n, o in zip(shape, (out,) * 2
                                                        if isinstance(out, int) else out))
    top, idx = ref_adaptive(x, outs, np.max)
    xt = dt.tensor(x, requires_grad=True)
    v, i = nn.functional.adaptive_max_pool2d(xt, out, return_indices=True)
    np.testing.assert_array_equal(v.detach().numpy(), top)
    np.testing.assert_array_equal(i.numpy(), idx)
    assert i.dtype == dt.int64 and repr(nn.AdaptiveMaxPool2d(out)) == \
        f"AdaptiveMaxPool2d(output_size={out})"
    v.sum().backward()
    expected = np.zeros(x.size)  # one per window maximum, added up where windows overlap
    np.add.at(expected, (idx + np.arange(6).reshape(2, 3, 1, 1) * shape[0] * shape[1]).ravel(),
              1)
    np.testing.assert_array_equal(xt.grad.numpy().ravel(), expected)
    with pytest.raises(RuntimeError, match="Expected 3D or 4D tensor"):
        nn.functional.adaptive_max_pool2d(dt.tensor(x[0, 0, 0]), 2)


def test_upsample_is_interpolate_with_a_deprecation_warning():
    x = dt.tensor(RNG.standard_normal((1, 2, 3, 3)))
    with pytest.warns(UserWarning, match="upsample` is deprecated"):
        y = nn.functional.upsample(x, scale_factor=2)
    np.testing.assert_array_equal(y.numpy(), interpolate(x, scale_factor=2).numpy())
