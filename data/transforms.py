"""Image transforms as `torchvision.transforms`, on NumPy/CuPy arrays and dt Tensors.

Images are `(..., C, H, W)` (torchvision's tensor layout) except for `ToTensor`, which takes
the `(H, W, C)` / `(H, W)` layout of decoded image files. A transform returns the kind it was
given (array in, array out; Tensor in, Tensor out), without autograd. Random transforms draw
from `generator` (a `dt.Generator`; default: the global one, which DataLoader workers seed
per worker).
"""
import numbers

import numpy as np

from dtrain.core import dtype as dtypes
from dtrain.core.backend import array_module, is_cuda_array
from dtrain.core.creation import as_tensor, rand, randint
from dtrain.core.tensor import Tensor


def _array(img):
    return img.data if isinstance(img, Tensor) else img


def _like(arr, img):
    """`arr` as the same kind of object as the input `img`."""
    return Tensor._make(arr) if isinstance(img, Tensor) else arr


def _check_image(arr, name):
    if arr.ndim < 2:
        raise ValueError(f"{name}: expected an image of shape (..., H, W), got shape "
                         f"{tuple(arr.shape)}")


class Compose:
    """Apply `transforms` one after another."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self):
        body = "".join(f"\n    {t}" for t in self.transforms)
        return f"{type(self).__name__}({body}\n)"


class ToTensor:
    """An `(H, W, C)` or `(H, W)` image array -> a `(C, H, W)` dt Tensor.

    uint8 images are scaled to the default float dtype in [0, 1]; other dtypes keep their
    values (as torchvision).
    """

    def __call__(self, pic):
        if not (isinstance(pic, np.ndarray) or is_cuda_array(pic)):
            raise TypeError(f"pic should be an ndarray. Got {type(pic)}")
        if pic.ndim not in (2, 3):
            raise ValueError(f"pic should be 2/3 dimensional. Got {pic.ndim} dimensions.")
        xp = array_module(pic)
        chw = xp.ascontiguousarray((pic[:, :, None] if pic.ndim == 2 else pic).transpose(2, 0, 1))
        if chw.dtype == np.uint8:
            ft = dtypes.get_default_dtype().np
            chw = chw.astype(ft) / ft.type(255)
        return as_tensor(chw)

    def __repr__(self):
        return f"{type(self).__name__}()"


class Normalize:
    """`(img - mean[c]) / std[c]` for each channel c of a float `(..., C, H, W)` image."""

    def __init__(self, mean, std, inplace=False):
        self.mean = mean
        self.std = std
        self.inplace = inplace

    def __call__(self, img):
        arr = _array(img)
        if arr.ndim < 3:
            raise ValueError("Expected tensor to be a tensor image of size (..., C, H, W). Got "
                             f"tensor.size() = {tuple(arr.shape)}.")
        if arr.dtype.kind != "f":
            raise TypeError(f"Input tensor should be a float tensor. Got {arr.dtype}.")
        xp = array_module(arr)
        mean = xp.asarray(self.mean, dtype=arr.dtype)
        std = xp.asarray(self.std, dtype=arr.dtype)
        if (std == 0).any():
            raise ValueError(f"std evaluated to zero after conversion to {arr.dtype}, leading "
                             "to division by zero.")
        if mean.ndim == 1:
            mean = mean.reshape(-1, 1, 1)
        if std.ndim == 1:
            std = std.reshape(-1, 1, 1)
        if not self.inplace:
            return _like((arr - mean) / std, img)
        xp.subtract(arr, mean, out=arr)
        xp.divide(arr, std, out=arr)
        return img

    def __repr__(self):
        return f"{type(self).__name__}(mean={self.mean}, std={self.std})"


def _pair(size, name):
    if isinstance(size, numbers.Integral):
        return int(size), int(size)
    if len(size) == 1:
        return int(size[0]), int(size[0])
    if len(size) != 2:
        raise ValueError(f"{name}: please provide only two dimensions (h, w) for size, got "
                         f"{size}")
    return int(size[0]), int(size[1])


def _pad_widths(padding):
    """torchvision's padding forms -> ((top, bottom), (left, right))."""
    if isinstance(padding, numbers.Integral):
        return (padding, padding), (padding, padding)
    padding = tuple(padding)
    if len(padding) == 1:
        return (padding[0],) * 2, (padding[0],) * 2
    if len(padding) == 2:  # (left/right, top/bottom)
        return (padding[1], padding[1]), (padding[0], padding[0])
    if len(padding) == 4:  # (left, top, right, bottom)
        return (padding[1], padding[3]), (padding[0], padding[2])
    raise ValueError("Padding must be an int or a 1, 2, or 4 element tuple, not a "
                     f"{len(padding)} element tuple")


_PAD_MODES = ("constant", "edge", "reflect", "symmetric")  # names shared by numpy.pad


class RandomCrop:
    """A random `size` crop of a `(..., H, W)` image, after optional padding.

    `padding` is an int, (left/right, top/bottom) or (left, top, right, bottom);
    `padding_mode` is constant (with the number `fill`), edge, reflect or symmetric;
    `pad_if_needed` pads images smaller than `size`. The offsets are drawn with
    `dt.randint(..., generator=generator)`.
    """

    def __init__(self, size, padding=None, pad_if_needed=False, fill=0,
                 padding_mode="constant", *, generator=None):
        if padding_mode not in _PAD_MODES:
            raise ValueError("Padding mode should be either constant, edge, reflect or "
                             f"symmetric, got {padding_mode!r}")
        self.size = _pair(size, "RandomCrop")
        self.padding = None if padding is None else _pad_widths(padding)
        self.pad_if_needed = pad_if_needed
        self.fill = fill
        self.padding_mode = padding_mode
        self.generator = generator

    def _pad(self, arr, widths):
        xp = array_module(arr)
        full = ((0, 0),) * (arr.ndim - 2) + tuple(widths)
        if self.padding_mode == "constant":
            return xp.pad(arr, full, mode="constant", constant_values=self.fill)
        return xp.pad(arr, full, mode=self.padding_mode)

    def __call__(self, img):
        arr = _array(img)
        _check_image(arr, "RandomCrop")
        if self.padding is not None:
            arr = self._pad(arr, self.padding)
        th, tw = self.size
        h, w = arr.shape[-2:]
        if self.pad_if_needed and (h < th or w < tw):
            arr = self._pad(arr, ((0, max(th - h, 0)), (0, max(tw - w, 0))))
            h, w = arr.shape[-2:]
        if h < th or w < tw:
            raise ValueError(f"Required crop size {(th, tw)} is larger than input image size "
                             f"{(h, w)}")
        i = randint(0, h - th + 1, (1,), generator=self.generator).item()
        j = randint(0, w - tw + 1, (1,), generator=self.generator).item()
        return _like(arr[..., i:i + th, j:j + tw], img)

    def __repr__(self):
        return f"{type(self).__name__}(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror a `(..., H, W)` image left-right with probability `p`."""

    def __init__(self, p=0.5, *, generator=None):
        self.p = p
        self.generator = generator

    def __call__(self, img):
        arr = _array(img)
        _check_image(arr, "RandomHorizontalFlip")
        if rand(1, generator=self.generator, dtype=dtypes.float64).item() < self.p:
            return _like(arr[..., ::-1], img)
        return img

    def __repr__(self):
        return f"{type(self).__name__}(p={self.p})"
