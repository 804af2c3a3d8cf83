"""Image transforms as `torchvision.transforms`, on NumPy/CuPy arrays and dt Tensors.

Layouts, by type alone: a uint8 array is a decoded image, `(H, W)` or `(H, W, C)` (what the
data sets yield for image files, and what `ToTensor` takes: the part PIL images play in
torchvision); anything else (a Tensor, or a float array such as a Digits image) is
torchvision's tensor layout `(..., C, H, W)`. `RandomCrop` and `RandomHorizontalFlip` take
both, `Normalize` only float `(..., C, H, W)`. A transform returns the kind it was given
(array in, array out; Tensor in, Tensor out), without autograd. Random transforms draw from
`generator` (a `dt.Generator`; default: the global one, which DataLoader workers seed per
worker).
"""
import numbers

import numpy as np

from dtrain.core import dtype as dtypes
from dtrain.core.backend import array_module, is_cuda_array
from dtrain.core.creation import as_tensor, rand, randint
from dtrain.core.tensor import Tensor


def _array(img):
    return img._data if isinstance(img, Tensor) else img


def _like(arr, img):
    """`arr` as the same kind of object as the input `img`."""
    return Tensor._make(arr) if isinstance(img, Tensor) else arr


def _hw_axes(img, arr, name):
    """The (H, W) axes of `arr` (the array of `img`) by the module's layout rule."""
    if arr.ndim < 2:
        raise ValueError(f"{name}: expected an image of shape (H, W), (H, W, C) or "
                         f"(..., C, H, W), got shape {tuple(arr.shape)}")
    if isinstance(img, Tensor) or arr.dtype != np.uint8:
        return arr.ndim - 2, arr.ndim - 1
    if arr.ndim > 3:
        raise ValueError(f"{name}: a uint8 array is a decoded image, (H, W) or (H, W, C), got "
                         f"shape {tuple(arr.shape)}; give a batch as a Tensor (..., C, H, W)")
    return 0, 1


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
    """A random `size` crop of an `(H, W, C)` uint8 array or `(..., C, H, W)` image, after
    optional padding.

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

    def _pad(self, arr, axes, widths):
        xp = array_module(arr)
        full = [(0, 0)] * arr.ndim
        full[axes[0]], full[axes[1]] = widths
        if self.padding_mode == "constant":
            return xp.pad(arr, full, mode="constant", constant_values=self.fill)
        return xp.pad(arr, full, mode=self.padding_mode)

    def __call__(self, img):
        arr = _array(img)
        axes = _hw_axes(img, arr, "RandomCrop")
        if self.padding is not None:
            arr = self._pad(arr, axes, self.padding)
        th, tw = self.size
        h, w = (arr.shape[a] for a in axes)
        if self.pad_if_needed and (h < th or w < tw):
            arr = self._pad(arr, axes, ((0, max(th - h, 0)), (0, max(tw - w, 0))))
            h, w = (arr.shape[a] for a in axes)
        if h < th or w < tw:
            raise ValueError(f"Required crop size {(th, tw)} is larger than input image size "
                             f"{(h, w)} (of an image of shape {tuple(arr.shape)})")
        i = randint(0, h - th + 1, (1,), generator=self.generator).item()
        j = randint(0, w - tw + 1, (1,), generator=self.generator).item()
        index = [slice(None)] * arr.ndim
        index[axes[0]], index[axes[1]] = slice(i, i + th), slice(j, j + tw)
        return _like(arr[tuple(index)], img)

    def __repr__(self):
        return f"{type(self).__name__}(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror an `(H, W, C)` uint8 array or `(..., C, H, W)` image left-right with
    probability `p`."""

    def __init__(self, p=0.5, *, generator=None):
        self.p = p
        self.generator = generator

    def __call__(self, img):
        arr = _array(img)
        w_axis = _hw_axes(img, arr, "RandomHorizontalFlip")[1]
        if rand(1, generator=self.generator, dtype=dtypes.float64).item() < self.p:
            index = [slice(None)] * arr.ndim
            index[w_axis] = slice(None, None, -1)
            return _like(arr[tuple(index)], img)
        return img

    def __repr__(self):
        return f"{type(self).__name__}(p={self.p})"
