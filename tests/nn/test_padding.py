"""F.pad in every mode (negative widths crop) and the padding layers, against NumPy."""
import numpy as np
import pytest

import dtrain as dt
import dtrain.nn.functional as F
from dtrain import nn

NP_MODE = {"constant": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _np_pad(x, pad, mode):
    """NumPy's padding of the last len(pad) // 2 dims, pad given last dim first."""
    k = len(pad) // 2
    widths = [(0, 0)] * (x.ndim - k) + [(pad[2 * i], pad[2 * i + 1]) for i in reversed(range(k))]
    return np.pad(x, widths, NP_MODE[mode])


@pytest.mark.parametrize("mode", list(NP_MODE))
@pytest.mark.parametrize("shape, pad", [((2, 5), (2, 3)), ((1, 2, 4), (0, 3)),
                                        ((2, 3, 4), (1, 2, 2, 0)), ((1, 2, 3, 5), (3, 1, 2, 2)),
                                        ((1, 3, 4, 5), (1, 2, 0, 3, 2, 1)),
                                        ((2, 1, 3, 3, 4), (3, 3, 2, 1, 1, 2))])
def test_pad_equals_numpy(mode, shape, pad):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    y = F.pad(dt.tensor(x), pad, mode)
    assert y.dtype == dt.float32
    np.testing.assert_array_equal(y.numpy(), _np_pad(x, pad, mode))


def test_negative_padding_crops():
    x = dt.arange(5.0).reshape(1, 5)
    # reflect and replicate read the uncropped input's edges; circular wraps what is left
    assert F.pad(x, (-1, 2), "reflect").tolist() == [[1, 2, 3, 4, 3, 2]]
    assert F.pad(x, (2, -2), "reflect").tolist() == [[2, 1, 0, 1, 2]]
    assert F.pad(x, (-2, 1), "replicate").tolist() == [[2, 3, 4, 4]]
    assert F.pad(x, (-1, 2), "circular").tolist() == [[1, 2, 3, 4, 1, 2]]
    assert F.pad(x, (2, -1), "circular").tolist() == [[2, 3, 0, 1, 2, 3]]
    assert F.pad(x, (-2, -1)).tolist() == [[2, 3]]
    assert F.pad(x, (1, -3), value=7.0).tolist() == [[7, 0, 1]]
    img = dt.arange(12.0).reshape(1, 3, 4)
    for mode in NP_MODE:  # cropping every side is the same slice in every mode
        assert F.pad(img, (-1, -1, -1, 0), mode).tolist() == [[[5, 6], [9, 10]]]


def test_pad_backward_sums_gradients_at_their_source():
    x = dt.arange(4.0, requires_grad=True)
    w = dt.arange(1.0, 8.0)  # output position j weighs its gradient by j + 1
    (F.pad(x.reshape(1, 4), (2, 1), "reflect").reshape(-1) * w).sum().backward()
    # reflect reads x[2], x[1], x[0..3], x[2]: 1 -> x2, 2 -> x1, 3..6 -> x0..x3, 7 -> x2
    assert x.grad.tolist() == [3, 2 + 4, 1 + 5 + 7, 6]
    x.grad = None
    (F.pad(x.reshape(1, 4), (2, -1), "replicate").reshape(-1) * w[:5]).sum().backward()
    assert x.grad.tolist() == [1 + 2 + 3, 4, 5, 0]
    x.grad = None
    (F.pad(x.reshape(1, 4), (-1, 1), value=3.0).reshape(-1) * w[:4]).sum().backward()
    assert x.grad.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("pad, ndim, message", [
    ((1, 2, 3), 2, "divisible by 2"),
    ((1,) * 6, 2, "less than or equal to two times the input dimension"),
])
def test_pad_length_errors(pad, ndim, message):
    with pytest.raises(RuntimeError, match=message):
        F.pad(dt.zeros(*(3,) * ndim), pad)


def test_pad_mode_errors():
    x = dt.zeros(1, 2, 3)
    with pytest.raises(NotImplementedError, match="Only 2D, 3D, 4D, 5D padding"):
        F.pad(dt.zeros(4), (1, 1), "reflect")  # 1 padded dim needs a 2-D or 3-D input
    with pytest.raises(NotImplementedError, match="Only 2D, 3D, 4D, 5D padding"):
        F.pad(x, (1, 1, 1, 1, 1, 1), "replicate")  # 3 padded dims need 4-D or 5-D
    with pytest.raises(RuntimeError, match=r"Padding size should be less than the corresponding "
                       r"input dimension, but got: padding \(3, 0\) at dimension 2"):
        F.pad(x, (3, 0), "reflect")
    with pytest.raises(RuntimeError, match="wrapping around more than once"):
        F.pad(x, (4, 0), "circular")
    with pytest.raises(RuntimeError, match=r"input \(W: 3\) is too small. Calculated output W: 0"):
        F.pad(x, (-2, -1), "replicate")
    with pytest.raises(RuntimeError, match="resulted in a negative output size"):
        F.pad(x, (-2, -2))
    with pytest.raises(RuntimeError, match="doesn't take in value argument"):
        F.pad(x, (1, 1), "reflect", value=1.0)
    with pytest.raises(NotImplementedError, match="Unrecognised padding mode 'mirror'"):
        F.pad(x, (1, 1), "mirror")


@pytest.mark.parametrize("cls, mode, nd", [
    (nn.ReflectionPad1d, "reflect", 1), (nn.ReflectionPad2d, "reflect", 2),
    (nn.ReflectionPad3d, "reflect", 3), (nn.ReplicationPad1d, "replicate", 1),
    (nn.ReplicationPad2d, "replicate", 2), (nn.ReplicationPad3d, "replicate", 3),
    (nn.CircularPad1d, "circular", 1), (nn.CircularPad2d, "circular", 2),
    (nn.CircularPad3d, "circular", 3), (nn.ZeroPad1d, "constant", 1),
    (nn.ZeroPad2d, "constant", 2), (nn.ZeroPad3d, "constant", 3)])
def test_padding_layers(cls, mode, nd):
    x = np.random.default_rng(nd).standard_normal((2, 3) + (4,) * nd)
    layer = cls(2)
    assert layer.padding == (2,) * (2 * nd) and repr(layer) == f"{cls.__name__}({layer.padding})"
    np.testing.assert_array_equal(layer(dt.tensor(x)).numpy(), _np_pad(x, (2,) * (2 * nd), mode))
    pad = tuple(i % 3 + 1 for i in range(2 * nd))
    np.testing.assert_array_equal(cls(pad)(dt.tensor(x)).numpy(), _np_pad(x, pad, mode))


def test_constant_pad_layers():
    layer = nn.ConstantPad2d((1, 0, 0, 2), 3.5)
    assert repr(layer) == "ConstantPad2d(padding=(1, 0, 0, 2), value=3.5)"
    assert layer(dt.ones(1, 1, 1)).tolist() == [[[3.5, 1.0], [3.5, 3.5], [3.5, 3.5]]]
    assert nn.ConstantPad1d(1, -1.0)(dt.zeros(1, 2)).tolist() == [[-1, 0, 0, -1]]
    assert nn.ConstantPad3d(1, 0.0).padding == (1,) * 6
    with pytest.raises(ValueError, match="padding must be an int or a tuple of 4 ints"):
        nn.ReflectionPad2d((1, 2))
    assert isinstance(nn.ZeroPad2d(1), nn.ConstantPad2d)  # as in torch
