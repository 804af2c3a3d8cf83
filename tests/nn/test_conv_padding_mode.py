"""Conv padding modes other than zeros: F.pad with the mode, then an unpadded convolution
(torch's definition), checked against np.pad."""
import numpy as np
import pytest

import dtrain as dt
from dtrain import nn

NP_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


@pytest.mark.parametrize("mode", list(NP_MODE))
def test_conv2d_padding_mode_equals_conv_of_the_padded_input(mode):
    dt.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=(1, 2), padding_mode=mode).double()
    x = dt.randn(2, 2, 5, 6, dtype=dt.float64)
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (1, 1), (2, 2)), mode=NP_MODE[mode])
    expected = dt.nn.functional.conv2d(dt.from_numpy(padded), conv.weight, conv.bias)
    np.testing.assert_allclose(conv(x).detach().numpy(), expected.detach().numpy(),
                               rtol=1e-12)
    assert f"padding_mode={mode}" in repr(conv)


@pytest.mark.parametrize("mode", list(NP_MODE))
def test_conv1d_same_padding_with_an_even_kernel_pads_the_extra_column_right(mode):
    dt.manual_seed(0)
    conv = nn.Conv1d(1, 1, 4, padding="same", padding_mode=mode, bias=False).double()
    x = dt.randn(1, 1, 7, dtype=dt.float64)
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (1, 2)), mode=NP_MODE[mode])
    expected = dt.nn.functional.conv1d(dt.from_numpy(padded), conv.weight)
    out = conv(x)
    assert out.shape == (1, 1, 7)
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-12)


def test_gradients_through_a_reflect_padded_conv():
    dt.manual_seed(0)
    conv = nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect").double()
    x = dt.randn(1, 1, 4, 4, dtype=dt.float64, requires_grad=True)
    assert dt.autograd.gradcheck(lambda a, w: dt.nn.functional.conv2d(
        dt.nn.functional.pad(a, (1, 1, 1, 1), mode="reflect"), w), (x, conv.weight))


def test_bad_padding_modes():
    with pytest.raises(ValueError, match="padding_mode must be one of .* got padding_mode='edge'"):
        nn.Conv2d(1, 1, 3, padding_mode="edge")
    with pytest.raises(ValueError, match='Only "zeros" padding mode is supported for '
                                         'ConvTranspose2d'):
        nn.ConvTranspose2d(1, 1, 3, padding_mode="reflect")
