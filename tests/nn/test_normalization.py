"""Batch/layer/group norm against NumPy (running statistics included) and dropout's
train/eval behaviour."""
import numpy as np
import pytest

import dtrain as dt
import dtrain.nn.functional as F

rng = np.random.default_rng(42)


def t(a, grad=False):
    return dt.tensor(a, dtype=dt.float64, requires_grad=grad)


def np_standardize(x, axes, eps=1e-5):
    m = x.mean(axes, keepdims=True)
    return (x - m) / np.sqrt(x.var(axes, keepdims=True) + eps)


@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
def test_batchnorm2d_running_stats_follow_numpy(momentum):
    bn = dt.nn.BatchNorm2d(3, momentum=momentum).double()
    with dt.no_grad():
        bn.weight.copy_(t([1.0, 2.0, 0.5]))
        bn.bias.copy_(t([0.0, -1.0, 3.0]))
    rm, rv = np.zeros(3), np.ones(3)
    batches = [rng.standard_normal((4, 3, 2, 5)) * (i + 1) + i for i in range(4)]
    for k, x in enumerate(batches, 1):
        y = bn(t(x, grad=k % 2 == 0))  # statistics read from the graph node or recomputed
        expect = np_standardize(x, (0, 2, 3)) * np.array([1, 2, 0.5])[:, None, None] + \
            np.array([0, -1, 3.0])[:, None, None]
        np.testing.assert_allclose(y.detach().numpy(), expect, rtol=1e-10, atol=1e-12)
        f = 1 / k if momentum is None else momentum  # None: the cumulative average
        rm = (1 - f) * rm + f * x.mean((0, 2, 3))
        rv = (1 - f) * rv + f * x.var((0, 2, 3), ddof=1)  # unbiased, as torch
        np.testing.assert_allclose(bn.running_mean.numpy(), rm, rtol=1e-12)
        np.testing.assert_allclose(bn.running_var.numpy(), rv, rtol=1e-12)
        assert bn.num_batches_tracked.item() == k and bn.num_batches_tracked.dtype == dt.int64
    bn.eval()
    x = rng.standard_normal((2, 3, 2, 2))
    expect = (x - rm[:, None, None]) / np.sqrt(rv[:, None, None] + 1e-5) * \
        np.array([1, 2, 0.5])[:, None, None] + np.array([0, -1, 3.0])[:, None, None]
    np.testing.assert_allclose(bn(t(x)).detach().numpy(), expect, rtol=1e-10)
    assert bn.num_batches_tracked.item() == 4  # eval mode changes nothing
    np.testing.assert_allclose(bn.running_mean.numpy(), rm, rtol=1e-12)


def test_batchnorm1d_shapes_and_options():
    x = rng.standard_normal((8, 4, 3))
    bn = dt.nn.BatchNorm1d(4, affine=False).double()
    assert list(bn.state_dict()) == ["running_mean", "running_var", "num_batches_tracked"]
    np.testing.assert_allclose(bn(t(x)).numpy(), np_standardize(x, (0, 2)), rtol=1e-10)
    no_stats = dt.nn.BatchNorm1d(4, track_running_stats=False).double()
    assert list(no_stats.state_dict()) == ["weight", "bias"]
    no_stats.eval()  # no running stats: batch statistics even in eval mode
    np.testing.assert_allclose(no_stats(t(x[:, :, 0])).detach().numpy(),
                               np_standardize(x[:, :, 0], (0,)), rtol=1e-10)
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        bn(t(rng.standard_normal((2, 4, 2, 2))))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        dt.nn.BatchNorm1d(4)(dt.randn(1, 4))
    assert dt.nn.BatchNorm2d(3, bias=False).bias is None


def test_batchnorm_gradient_matches_numpy_formula():
    x = rng.standard_normal((5, 3))
    g = rng.standard_normal((5, 3))
    xt = t(x, grad=True)
    F.batch_norm(xt, None, None, training=True).backward(t(g))
    xhat = np_standardize(x, (0,))
    invstd = 1 / np.sqrt(x.var(0) + 1e-5)
    expect = invstd * (g - g.mean(0) - xhat * (g * xhat).mean(0))
    np.testing.assert_allclose(xt.grad.numpy(), expect, rtol=1e-10)


def test_layer_norm_and_group_norm():
    x = rng.standard_normal((2, 3, 4))
    ln = dt.nn.LayerNorm((3, 4)).double()
    assert ln.weight.shape == (3, 4) and [n for n, _ in ln.named_parameters()] == ["weight",
                                                                                   "bias"]
    np.testing.assert_allclose(ln(t(x)).detach().numpy(), np_standardize(x, (1, 2)), rtol=1e-10)
    ln1 = dt.nn.LayerNorm(4, elementwise_affine=False)
    assert ln1.weight is None and not list(ln1.parameters())
    with pytest.raises(RuntimeError, match="normalized_shape"):
        ln(t(rng.standard_normal((2, 4, 3))))
    gn = dt.nn.GroupNorm(2, 4).double()
    with dt.no_grad():
        gn.weight.copy_(t([1.0, 2.0, 3.0, 4.0]))
    x = rng.standard_normal((3, 4, 5))
    expect = np_standardize(x.reshape(3, 2, 10), (2,)).reshape(3, 4, 5) * \
        np.array([1.0, 2, 3, 4])[:, None]
    np.testing.assert_allclose(gn(t(x)).detach().numpy(), expect, rtol=1e-10)
    with pytest.raises(ValueError, match="divisible"):
        dt.nn.GroupNorm(3, 4)


def test_dropout_train_eval_and_seed():
    drop = dt.nn.Dropout(0.25)
    x = dt.ones(200, 100)
    dt.manual_seed(5)
    a = drop(x).numpy()
    dt.manual_seed(5)
    b = drop(x).numpy()
    np.testing.assert_array_equal(a, b)  # seeded via the default generator
    assert set(np.unique(a)) == {0.0, np.float32(1 / 0.75)}
    assert (a == 0).mean() == pytest.approx(0.25, abs=0.01)
    drop.eval()
    assert drop(x) is x
    assert F.dropout(x, 0.5, training=False) is x
    assert (F.dropout(x, 1.0).numpy() == 0).all()
    xg = dt.ones(50, requires_grad=True)
    dt.manual_seed(1)
    out = F.dropout(xg, 0.5)
    out.sum().backward()
    np.testing.assert_array_equal(xg.grad.numpy(), out.detach().numpy())  # grad = mask/(1-p)
    with pytest.raises(ValueError, match="between 0 and 1"):
        dt.nn.Dropout(1.5)


def test_channel_dropout_zeroes_whole_channels():
    x = dt.ones(8, 16, 3, 3)
    dt.manual_seed(2)
    y = dt.nn.Dropout2d(0.5)(x).numpy()
    per_channel = y.reshape(8, 16, 9)
    assert (per_channel == per_channel[:, :, :1]).all()  # one decision per (sample, channel)
    assert set(np.unique(y)) == {0.0, 2.0} and 0.3 < (per_channel[:, :, 0] == 0).mean() < 0.7
    assert dt.nn.Dropout1d(0.5)(dt.ones(4, 6)).shape == (4, 6)  # unbatched (C, L)
    drop3 = dt.nn.Dropout3d(0.5).eval()
    assert drop3(x[:, :, None]) is not None and F.dropout3d(x, training=False) is x
    with pytest.raises(ValueError, match="Expected 3D or 4D input"):
        F.dropout2d(dt.ones(3, 3), 0.5)


@pytest.mark.parametrize("shape", [(2, 3, 5), (4, 3, 2, 3)])
def test_instance_norm_and_running_stats(shape):
    x = rng.standard_normal(shape) * 2 + 1
    axes = tuple(range(2, len(shape)))
    cls = dt.nn.InstanceNorm1d if len(shape) == 3 else dt.nn.InstanceNorm2d
    plain = cls(3)
    assert plain.weight is None and plain.running_mean is None
    np.testing.assert_allclose(plain(t(x)).numpy(), np_standardize(x, axes), rtol=1e-10)
    np.testing.assert_allclose(plain(t(x[0])).numpy(), np_standardize(x[:1], axes)[0],
                               rtol=1e-10)  # unbatched
    m = cls(3, momentum=0.2, affine=True, track_running_stats=True).double()
    with dt.no_grad():
        m.weight.copy_(t([1.0, 2.0, 0.5]))
        m.bias.copy_(t([0.0, -1.0, 3.0]))
    cs = (1, 3) + (1,) * (len(shape) - 2)
    out = m(t(x)).detach().numpy()
    np.testing.assert_allclose(out, np_standardize(x, axes) * np.array([1.0, 2.0, 0.5]).reshape(
        cs) + np.array([0.0, -1.0, 3.0]).reshape(cs), rtol=1e-10)
    n = int(np.prod(shape[2:]))
    mean = x.mean(axes).mean(0)
    var = (x.var(axes) * n / (n - 1)).mean(0)
    np.testing.assert_allclose(m.running_mean.numpy(), 0.2 * mean, rtol=1e-12)
    np.testing.assert_allclose(m.running_var.numpy(), 0.8 + 0.2 * var, rtol=1e-12)
    m.eval()  # eval with tracked statistics normalizes with them
    expect = (x - m.running_mean.numpy().reshape(cs)) / np.sqrt(
        m.running_var.numpy().reshape(cs) + 1e-5)
    np.testing.assert_allclose(m(t(x)).detach().numpy(), expect * np.array(
        [1.0, 2.0, 0.5]).reshape(cs) + np.array([0.0, -1.0, 3.0]).reshape(cs), rtol=1e-10)
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        F.instance_norm(t(np.ones((2, 3, 1))))
    with pytest.raises(ValueError, match="size at dim=1 to match num_features \\(4\\)"):
        cls(4, affine=True)(t(x))
    with pytest.warns(UserWarning, match="dim=0 does not match num_features"):
        cls(4)(t(x[0]))


@pytest.mark.parametrize("shape, normalized", [((3, 4), 4), ((2, 3, 4), (3, 4)), ((5,), [5])])
def test_rms_norm(shape, normalized):
    x = rng.standard_normal(shape)
    k = 1 if isinstance(normalized, int) else len(normalized)
    dims = tuple(range(len(shape) - k, len(shape)))
    w = rng.standard_normal(shape[len(shape) - k:])
    rms = np.sqrt((x * x).mean(dims, keepdims=True) + np.finfo(np.float64).eps)
    np.testing.assert_allclose(F.rms_norm(t(x), normalized, t(w)).numpy(), x / rms * w,
                               rtol=1e-12)
    m = dt.nn.RMSNorm(normalized, eps=1e-3).double()
    assert [n for n, _ in m.named_parameters()] == ["weight"]
    np.testing.assert_allclose(m(t(x)).detach().numpy(),
                               x / np.sqrt((x * x).mean(dims, keepdims=True) + 1e-3), rtol=1e-12)
    assert dt.nn.RMSNorm(4, elementwise_affine=False).weight is None
    assert repr(dt.nn.RMSNorm([2, 3])) == "RMSNorm((2, 3), eps=None, elementwise_affine=True)"
    with pytest.raises(RuntimeError, match="normalized_shape"):
        F.rms_norm(t(x), 7)


@pytest.mark.parametrize("shape, size", [((2, 6, 4), 3), ((1, 5, 2, 3), 2), ((2, 4, 3), 5)])
def test_local_response_norm(shape, size):
    x = rng.standard_normal(shape)
    c = shape[1]
    sq = np.zeros_like(x)
    for ch in range(c):  # window ch - size//2 .. ch + (size-1)//2, zeros outside
        lo, hi = max(ch - size // 2, 0), min(ch + (size - 1) // 2, c - 1)
        sq[:, ch] = (x[:, lo:hi + 1] ** 2).sum(1)
    expect = x / (2.0 + 0.3 / size * sq) ** 0.6
    m = dt.nn.LocalResponseNorm(size, alpha=0.3, beta=0.6, k=2.0)
    np.testing.assert_allclose(m(t(x)).numpy(), expect, rtol=1e-12)
    assert repr(m) == f"LocalResponseNorm({size}, alpha=0.3, beta=0.6, k=2.0)"
    with pytest.raises(ValueError, match="Expected 3D or higher"):
        F.local_response_norm(t(x[0, 0]), 2)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm2d_keeps_layout_and_equals_across_layouts(training):
    """A channels-last input (a conv's output) gives a channels-last output, and the same
    values and gradients (input, weight, bias) as its channels-first copy."""
    x = rng.standard_normal((3, 4, 5, 2))
    g = rng.standard_normal((3, 4, 5, 2))
    results = []
    for last in (False, True):
        src = np.ascontiguousarray(np.moveaxis(x, 1, -1)) if last else x
        bn = dt.nn.BatchNorm2d(4).double().train(training)
        with dt.no_grad():
            bn.weight.copy_(t([1.0, 2.0, 0.5, -1.0]))
            bn.bias.copy_(t([0.0, -1.0, 3.0, 0.5]))
            bn.running_mean.copy_(t([0.1, -0.2, 0.3, 0.0]))
            bn.running_var.copy_(t([0.5, 2.0, 1.0, 1.5]))
        xin = t(src, grad=True)
        y = bn(xin.permute(0, 3, 1, 2) if last else xin)
        assert np.moveaxis(y.detach().numpy(), 1, -1).flags.c_contiguous == last
        y.backward(t(g))
        gx = xin.grad.numpy()
        results.append((y.detach().numpy(), np.moveaxis(gx, -1, 1) if last else gx,
                        bn.weight.grad.numpy(), bn.bias.grad.numpy(), bn.running_var.numpy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(results[0][3], g.sum((0, 2, 3)), rtol=1e-12)
    if not training:
        scale = np.array([1.0, 2.0, 0.5, -1.0]) / np.sqrt(np.array([0.5, 2.0, 1.0, 1.5]) + 1e-5)
        np.testing.assert_allclose(results[0][1], g * scale[:, None, None], rtol=1e-12)


@pytest.mark.parametrize("layout", ["channels_first", "channels_last", "strided", "2d"])
def test_channel_sum_equals_numpy_in_every_layout(layout):
    from dtrain.nn.channel_ops import channel_sum
    x = rng.standard_normal((4, 3, 5, 6))
    a = {"channels_first": x, "channels_last": np.moveaxis(np.ascontiguousarray(
        np.moveaxis(x, 1, -1)), -1, 1), "strided": x[:, :, ::2, 1:], "2d": x[:, :, 0, 0]}[layout]
    np.testing.assert_allclose(channel_sum(a), a.sum((0,) + tuple(range(2, a.ndim))),
                               rtol=1e-12)
