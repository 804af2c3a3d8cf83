"""Convolutions against direct-loop NumPy references, their shape rules and errors, the
modules' parameters, and a small CNN that learns a deterministic image task."""
import math

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.nn.conv import conv1d, conv2d, conv_transpose1d, conv_transpose2d


def ref_conv2d(x, w, b, stride, pads, dilation, groups):
    """Direct definition: y[n, o, i, j] = sum_{c, a, e} w[o, c, a, e] *
    xpad[n, g*Cg + c, i*s + a*d, j*s + e*d]; pads = ((top, bottom), (left, right))."""
    n, c, _, _ = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0)) + tuple(pads))
    oh = (xp.shape[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (xp.shape[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((n, o, oh, ow))
    og = o // groups
    for oc in range(o):
        g = oc // og
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg,
                           i * stride[0]:i * stride[0] + dilation[0] * (kh - 1) + 1:dilation[0],
                           j * stride[1]:j * stride[1] + dilation[1] * (kw - 1) + 1:dilation[1]]
                y[:, oc, i, j] = (patch * w[oc]).sum((1, 2, 3))
    return y if b is None else y + b[None, :, None, None]


def ref_conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation):
    """Direct definition: every input pixel scatters w-weighted copies into the output."""
    n, cin, h, wd = x.shape
    _, cog, kh, kw = w.shape
    full = ((h - 1) * stride[0] + dilation[0] * (kh - 1) + 1 + output_padding[0],
            (wd - 1) * stride[1] + dilation[1] * (kw - 1) + 1 + output_padding[1])
    y = np.zeros((n, cog * groups) + full)
    cig = cin // groups
    for ci in range(cin):
        g = ci // cig
        for i in range(h):
            for j in range(wd):
                for a in range(kh):
                    for e in range(kw):
                        y[:, g * cog:(g + 1) * cog, i * stride[0] + a * dilation[0],
                          j * stride[1] + e * dilation[1]] += x[:, ci, i, j, None] * w[ci, :, a, e]
    ph, pw = padding
    y = y[:, :, ph:full[0] - ph, pw:full[1] - pw]
    return y if b is None else y + b[None, :, None, None]


RNG = np.random.default_rng(0)


@pytest.mark.parametrize("stride, padding, dilation, groups", [
    (1, 0, 1, 1), (2, 1, 1, 1), ((2, 1), (0, 2), (1, 2), 2), (3, 2, 2, 1), (1, 1, 1, 4)])
def test_conv2d_matches_direct_loops(stride, padding, dilation, groups):
    x = RNG.standard_normal((2, 4, 7, 8))
    w = RNG.standard_normal((4, 4 // groups, 3, 2))
    b = RNG.standard_normal(4)
    y = conv2d(dt.tensor(x), dt.tensor(w), dt.tensor(b), stride, padding, dilation, groups)
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    pads = tuple((p, p) for p in pair(padding))
    ref = ref_conv2d(x, w, b, pair(stride), pads, pair(dilation), groups)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k, dilation", [(3, 1), (4, 1), (2, 3), (5, 2)])
def test_same_padding_keeps_size_and_puts_odd_pixel_last(k, dilation):
    x = RNG.standard_normal((1, 2, 6, 5))
    w = RNG.standard_normal((3, 2, k, k))
    y = conv2d(dt.tensor(x), dt.tensor(w), padding="same", dilation=dilation)
    assert y.shape == (1, 3, 6, 5)
    total = dilation * (k - 1)
    pads = ((total // 2, total - total // 2),) * 2
    ref = ref_conv2d(x, w, None, (1, 1), pads, (dilation, dilation), 1)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-10, atol=1e-12)
    assert conv2d(dt.tensor(x), dt.tensor(w[..., :2, :2]), padding="valid").shape == (1, 3, 5, 4)


def test_conv1d_is_conv2d_on_a_row():
    x = RNG.standard_normal((2, 3, 9))
    w = RNG.standard_normal((4, 3, 3))
    y = conv1d(dt.tensor(x), dt.tensor(w), stride=2, padding=1, dilation=2)
    ref = ref_conv2d(x[:, :, None], w[:, :, None], None, (1, 2), ((0, 0), (1, 1)), (1, 2), 1)
    np.testing.assert_allclose(y.numpy(), ref[:, :, 0], rtol=1e-10, atol=1e-12)
    assert y.shape == (2, 4, 4)


@pytest.mark.parametrize("stride, padding, output_padding, groups, dilation", [
    (1, 0, 0, 1, 1), (2, 1, 1, 1, 1), ((2, 3), (1, 0), (1, 2), 2, 1), (1, 2, 0, 1, 2)])
def test_conv_transpose2d_matches_direct_scatter(stride, padding, output_padding, groups,
                                                 dilation):
    x = RNG.standard_normal((2, 4, 4, 3))
    w = RNG.standard_normal((4, 3, 3, 2))
    b = RNG.standard_normal(3 * groups)
    y = conv_transpose2d(dt.tensor(x), dt.tensor(w), dt.tensor(b), stride, padding,
                         output_padding, groups, dilation)
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    ref = ref_conv_transpose2d(x, w, b, pair(stride), pair(padding), pair(output_padding),
                               groups, pair(dilation))
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_conv_transpose_is_the_input_gradient_of_conv():
    x = dt.tensor(RNG.standard_normal((2, 3, 7, 6)), requires_grad=True)
    w = dt.tensor(RNG.standard_normal((4, 3, 3, 3)))
    g = RNG.standard_normal((2, 4, 4, 3))
    conv2d(x, w, stride=2, padding=1).backward(dt.tensor(g))
    direct = conv_transpose2d(dt.tensor(g), w, stride=2, padding=1, output_padding=(0, 1))
    np.testing.assert_allclose(x.grad.numpy(), direct.numpy(), rtol=1e-12)
    y1 = conv_transpose1d(dt.tensor(g[:, :, 0]), w[:, :, 0], stride=2, padding=1)
    assert y1.shape == (2, 3, 5)


def test_unbatched_input_and_float32_output():
    w = dt.randn(5, 3, 3, 3)
    y = conv2d(dt.randn(3, 8, 8), w, padding=1)
    assert y.shape == (5, 8, 8) and y.dtype == dt.float32


def test_conv_errors_name_the_problem():
    w = dt.randn(8, 3, 3, 3)
    with pytest.raises(RuntimeError, match=r"expected input\[1, 4, 8, 8\] to have 3 channels"):
        conv2d(dt.randn(1, 4, 8, 8), w)
    with pytest.raises(RuntimeError, match="Kernel size can't be greater"):
        conv2d(dt.randn(1, 3, 2, 8), w)
    with pytest.raises(RuntimeError, match="not supported for strided"):
        conv2d(dt.randn(1, 3, 8, 8), w, stride=2, padding="same")
    with pytest.raises(ValueError, match="Invalid padding string"):
        conv2d(dt.randn(1, 3, 8, 8), w, padding="full")
    with pytest.raises(RuntimeError, match="Expected 3D .* or 4D"):
        conv2d(dt.randn(3, 8), w)
    with pytest.raises(RuntimeError, match="output padding must be smaller"):
        conv_transpose2d(dt.randn(1, 8, 4, 4), w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 8, 3, groups=2)


def test_modules_have_torch_parameters_and_default_init():
    conv = nn.Conv2d(6, 8, (3, 5), stride=2, padding=1, groups=2)
    assert [(n, tuple(p.shape)) for n, p in conv.named_parameters()] == [
        ("weight", (8, 3, 3, 5)), ("bias", (8,))]
    bound = 1 / math.sqrt(3 * 3 * 5)
    assert np.abs(conv.weight.detach().numpy()).max() <= bound
    assert np.abs(conv.bias.detach().numpy()).max() <= bound
    assert conv.weight.detach().numpy().std() > bound / 3  # spread over the range, not all zero
    assert repr(conv) == ("Conv2d(6, 8, kernel_size=(3, 5), stride=(2, 2), padding=(1, 1), "
                          "groups=2)")
    assert [n for n, _ in nn.Conv1d(2, 4, 3, bias=False).named_parameters()] == ["weight"]
    up = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
    assert tuple(up.weight.shape) == (8, 4, 4, 4) and tuple(up.bias.shape) == (4,)
    x = dt.randn(2, 8, 5, 5)
    assert up(x).shape == (2, 4, 10, 10)
    assert up(x, output_size=(11, 11)).shape == (2, 4, 11, 11)
    assert nn.Conv2d(3, 4, 3, padding="same")(dt.randn(1, 3, 6, 7)).shape == (1, 4, 6, 7)
    up1 = nn.ConvTranspose1d(4, 2, 3, stride=2)
    assert tuple(up1.weight.shape) == (4, 2, 3)
    assert up1(dt.randn(1, 4, 5), output_size=[12]).shape == (1, 2, 12)
    with pytest.raises(ValueError, match=r"valid sizes range from \[11\] to \[12\]"):
        up1(dt.randn(1, 4, 5), output_size=[14])


def bars(n, seed):
    """8x8 images with a noisy bar: horizontal, vertical, diagonal or anti-diagonal (4 classes)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.normal(0, 0.3, (n, 1, 8, 8))
    pos = rng.integers(1, 7, n)
    idx = np.arange(8)
    for i in range(n):
        img = x[i, 0]
        if y[i] == 0:
            img[pos[i], :] += 1.5
        elif y[i] == 1:
            img[:, pos[i]] += 1.5
        elif y[i] == 2:
            img[idx, idx] += 1.5
        else:
            img[idx, 7 - idx] += 1.5
    return x.astype(np.float32), y


def test_small_cnn_learns_bar_orientation():
    dt.manual_seed(0)
    x_train, y_train = bars(512, 0)
    x_test, y_test = bars(256, 1)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    opt = dt.optim.Adam(model.parameters(), lr=0.01)
    for epoch in range(6):
        for i in range(0, 512, 64):
            opt.zero_grad()
            loss = F.cross_entropy(model(dt.tensor(x_train[i:i + 64])),
                                   dt.tensor(y_train[i:i + 64]))
            loss.backward()
            opt.step()
    model.eval()
    with dt.no_grad():
        pred = model(dt.tensor(x_test)).argmax(1).numpy()
    assert (pred == y_test).mean() >= 0.95


def ref_unfold(x, k, d, p, s):
    """Direct loops: column l of block (i, j) holds x_padded[c, i*s + a*d, j*s + b*d]."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    oh = (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    ow = (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    out = np.empty((n, c * k[0] * k[1], oh * ow))
    for ch in range(c):
        for a in range(k[0]):
            for b in range(k[1]):
                row = (ch * k[0] + a) * k[1] + b
                for i in range(oh):
                    for j in range(ow):
                        out[:, row, i * ow + j] = xp[:, ch, i * s[0] + a * d[0],
                                                     j * s[1] + b * d[1]]
    return out


@pytest.mark.parametrize("k, d, p, s", [((2, 2), (1, 1), (0, 0), (1, 1)),
                                        ((3, 2), (1, 2), (1, 0), (2, 1)),
                                        ((2, 3), (2, 1), (1, 2), (1, 3))])
def test_unfold_fold_against_loops_and_as_adjoints(k, d, p, s):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 6, 7))
    cols = F.unfold(dt.tensor(x), k, d, p, s).numpy()
    np.testing.assert_array_equal(cols, ref_unfold(x, k, d, p, s))
    np.testing.assert_array_equal(nn.Unfold(k, d, p, s)(dt.tensor(x[0])).numpy(), cols[0])
    # fold is unfold's adjoint: <unfold(x), c> == <x, fold(c)>
    c = rng.standard_normal(cols.shape)
    back = nn.Fold((6, 7), k, d, p, s)(dt.tensor(c)).numpy()
    assert (cols * c).sum() == pytest.approx((x * back).sum(), rel=1e-12)
    # fold(unfold(x)) counts how many blocks cover each pixel
    ones = F.fold(F.unfold(dt.ones(1, 1, 6, 7, dtype=dt.float64), k, d, p, s), (6, 7), k, d, p,
                  s).numpy()
    np.testing.assert_array_equal(F.fold(dt.tensor(cols), (6, 7), k, d, p, s).numpy(), x * ones)


def test_unfold_matmul_is_conv2d_and_fold_errors():
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 3, 5, 6)), rng.standard_normal((4, 3, 3, 3))
    cols = F.unfold(dt.tensor(x), 3, padding=1)  # torch's documented conv-by-unfold example
    out = (cols.transpose(1, 2) @ dt.tensor(w.reshape(4, -1)).t()).transpose(1, 2)
    np.testing.assert_allclose(out.reshape(2, 4, 5, 6).numpy(),
                               F.conv2d(dt.tensor(x), dt.tensor(w), padding=1).numpy(),
                               rtol=1e-12, atol=1e-12)
    assert repr(nn.Fold((4, 5), 2)) == \
        "Fold(output_size=(4, 5), kernel_size=2, dilation=1, padding=0, stride=1)"
    with pytest.raises(RuntimeError, match="number of sliding blocks 3 \\* 4 = 12"):
        F.fold(dt.zeros(1, 4, 10), (4, 5), 2)
    with pytest.raises(RuntimeError, match="divisible by the product of kernel_size"):
        F.fold(dt.zeros(1, 5, 12), (4, 5), 2)
    with pytest.raises(RuntimeError, match="Only 3D or 4D input"):
        F.unfold(dt.zeros(2, 2), 2)
