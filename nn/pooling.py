"""Pooling and upsampling: max/avg pooling, adaptive average pooling, nearest interpolation.

Max pooling is a primitive pair: `MaxPoolNd` keeps, per output position, the index of the
winning kernel tap (the first maximum, as torch), and its backward `MaxPoolGrad` sends each
gradient to that tap; `MaxPoolValues` skips the taps where no gradient is asked of the input.
They walk the kernel's taps as strided views (a loop over the k*k taps, not over pixels):
measured ~10x faster than taking argmax over an im2col copy of the windows.
Average and adaptive pooling and nearest upsampling are compositions of existing ops.
"""
import math
import warnings

from dtrain.autograd.node import Op
from dtrain.autograd.registry import Sample, SampleMaker, register, register_composite
from dtrain.core.backend import array_module
from dtrain.core.state import state
from dtrain.core.tensor import Tensor
from dtrain.nn.conv import (
    ConvNd,
    as_tuple,
    copy_into,
    interior,
    pad_spatial,
    scatter_taps,
    tap_keys,
    with_batch_dim,
)
from dtrain.nn.conv_kernels import (
    channels_first,
    channels_last,
    copy_to_scratch,
    is_channels_last,
    layout_scratch,
)
from dtrain.nn.module import Module


def _pool_geometry(op, x, kernel_size, stride, padding, dilation, ceil_mode, nd):
    """Checked (ksize, stride, padding pairs, dilation, out_size); with ceil_mode the last
    window may hang over the high edge, which gets extra padding."""
    ksize = as_tuple(kernel_size, nd, "kernel_size")
    stride = ksize if stride is None or stride == [] or stride == () else \
        as_tuple(stride, nd, "stride")
    pad = as_tuple(padding, nd, "padding")
    dil = as_tuple(dilation, nd, "dilation")
    if any(k < 1 for k in ksize) or any(s < 1 for s in stride) or any(d < 1 for d in dil):
        raise RuntimeError(f"{op}: kernel_size, stride and dilation must be positive, got "
                           f"{ksize}, {stride}, {dil}")
    if any(p > (d * (k - 1) + 1) // 2 for p, k, d in zip(pad, ksize, dil)):
        raise RuntimeError(f"{op}: pad should be at most half of effective kernel size, but got "
                           f"pad={pad}, kernel_size={ksize} and dilation={dil}")
    out, pairs = [], []
    for n, k, s, p, d in zip(x.shape[2:], ksize, stride, pad, dil):
        o = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (o - 1) * s >= n + p:
            o -= 1  # the last window must start inside the input or its left padding
        if o < 1:
            raise RuntimeError(f"{op}: Given input size {list(x.shape[1:])}, the calculated "
                               f"output size is too small (kernel_size={ksize}, "
                               f"stride={stride}, padding={pad})")
        out.append(o)
        pairs.append((p, max(p, (o - 1) * s + d * (k - 1) + 1 - n - p)))
    return ksize, stride, tuple(pairs), dil, tuple(out)


def _max_pool_samples():
    s = SampleMaker("max_pool")
    return [Sample(lambda x: max_pool2d(x, 2), (s.distinct(1, 2, 4, 4),)),
            Sample(lambda x: max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True),
                   (s.distinct(2, 1, 5, 4),)),
            Sample(lambda x: max_pool2d(x, (2, 3), stride=1, dilation=(2, 1)),
                   (s.distinct(1, 2, 4, 4),)),
            Sample(lambda x: max_pool1d(x, 3, stride=2, padding=1), (s.distinct(2, 3, 6),))]


def _window_max(op, x, ksize, stride, padding, dilation, out_size, out, with_taps=True):
    """(max of each window, into `out` when given; index of its first maximal tap, or None
    unless `with_taps`), padding being -inf."""
    xp = array_module(x)
    xpad = pad_spatial(op, x, padding, -xp.inf)
    keys = [key for _, key in tap_keys(ksize, stride, dilation, out_size)]
    best = copy_into(out, xpad[keys[0]])
    if not with_taps:
        for key in keys[1:]:
            xp.maximum(best, xpad[key], out=best)
        return best, None
    cl = is_channels_last(xpad)  # the temporaries take x's layout
    taps = layout_scratch(op, "taps", best.shape, xp.uint8 if len(keys) <= 256 else xp.int32,
                          xp, cl)
    taps.fill(0)
    won = layout_scratch(op, "won", best.shape, bool, xp, cl)
    tap = layout_scratch(op, "tap", best.shape, taps.dtype, xp, cl)
    for i, key in enumerate(keys[1:], 1):
        view = xpad[key]
        # Strictly greater: the first maximum wins (torch's tie rule); taps only grow with
        # i, so a running maximum of i where a tap wins is the argmax. NOTE: measured ~100x
        # faster than copyto(taps, i, where=won).
        xp.greater(view, best, out=won)
        xp.maximum(taps, xp.multiply(won.view(xp.uint8), taps.dtype.type(i), out=tap), out=taps)
        xp.maximum(best, view, out=best)
    return best, taps


@register("max_pool", _max_pool_samples)
class MaxPoolNd(Op):
    """Max over each window; keeps the index of the winning tap per output (or uses the
    given `taps`, which makes this op the adjoint of MaxPoolGrad for double backward)."""

    saves = ("taps",)

    def forward(self, x, ksize, stride, padding, dilation, out_size, taps=None, out=None):
        xp = array_module(x)
        if taps is None:
            best, taps = _window_max(self, x, ksize, stride, padding, dilation, out_size, out)
        else:  # padding reads as zeros here (the adjoint of MaxPoolGrad)
            xpad = pad_spatial(self, x, padding)
            best = xp.empty(taps.shape, dtype=x.dtype) if out is None else out
            best.fill(0)
            won = self.scratch("won", taps.shape, bool, xp)
            for i, (_, key) in enumerate(tap_keys(ksize, stride, dilation, out_size)):
                xp.equal(taps, i, out=won)
                xp.copyto(best, xpad[key], where=won)
        self.taps, self.geom = taps, dict(ksize=ksize, stride=stride, padding=padding,
                                          dilation=dilation, out_size=out_size)
        self.in_shape = x.shape
        return best

    def backward(self, g):
        return (MaxPoolGrad.apply(g, taps=self.taps, in_shape=self.in_shape, **self.geom),)


def _max_pool_values_samples():
    s = SampleMaker("max_pool_values")
    geom = dict(ksize=(2, 2), stride=(2, 2), padding=((0, 0), (0, 0)), dilation=(1, 1),
                out_size=(2, 2))
    geom3 = dict(ksize=(3,), stride=(2,), padding=((1, 1),), dilation=(1,), out_size=(3,))
    return [Sample(lambda x: MaxPoolValues.apply(x, **geom), (s.distinct(2, 3, 4, 4),)),
            Sample(lambda x: MaxPoolValues.apply(x, **geom3), (s.distinct(2, 2, 6),))]


@register("max_pool_values", _max_pool_values_samples)
class MaxPoolValues(Op):
    """MaxPoolNd for an input that no gradient was asked of when it ran (inference, the raw
    input, a graph traced under no_grad): its forward finds no winning taps, and its
    backward, should a replay through autograd need one, finds them again from the input.
    NOTE: finding the taps takes about 40% of a max pool's forward (the two 2x2 pools of
    benchmarks/train_step.py's CNN under no_grad: 6.3 ms with taps, 3.6 without)."""

    saves = ("inputs",)

    def forward(self, x, ksize, stride, padding, dilation, out_size, out=None):
        self.geom = dict(ksize=ksize, stride=stride, padding=padding, dilation=dilation,
                         out_size=out_size)
        return _window_max(self, x, out=out, with_taps=False, **self.geom)[0]

    def backward(self, g):
        x, = self.inputs
        taps = _window_max(self, x._data, out=None, **self.geom)[1]
        return (MaxPoolGrad.apply(g, taps=taps, in_shape=x._data.shape, **self.geom),)


def _max_pool_grad_samples():
    s = SampleMaker("max_pool_grad")
    taps = s.rng.integers(0, 4, (1, 2, 2, 2)).astype("uint8")
    taps3 = s.rng.integers(0, 9, (1, 1, 3, 3)).astype("uint8")
    geom2 = dict(ksize=(2, 2), stride=(2, 2), padding=((0, 0), (0, 0)), dilation=(1, 1),
                 out_size=(2, 2))
    geom3 = dict(ksize=(3, 3), stride=(2, 1), padding=((1, 1), (0, 0)), dilation=(1, 1),
                 out_size=(3, 3))
    return [Sample(lambda g: MaxPoolGrad.apply(g, taps=taps, in_shape=(1, 2, 4, 4), **geom2),
                   (s(1, 2, 2, 2),)),
            Sample(lambda g: MaxPoolGrad.apply(g, taps=taps3, in_shape=(1, 1, 5, 5), **geom3),
                   (s(1, 1, 3, 3),))]


@register("max_pool_grad", _max_pool_grad_samples)
class MaxPoolGrad(Op):
    """The backward of MaxPoolNd: each gradient goes to its window's winning tap."""

    saves = ("taps",)

    def forward(self, g, taps, in_shape, ksize, stride, padding, dilation, out_size,
                out=None):
        xp = array_module(g)
        self.taps, self.geom = taps, dict(ksize=ksize, stride=stride, padding=padding,
                                          dilation=dilation, out_size=out_size)
        full = in_shape[:2] + tuple(n + lo + hi for n, (lo, hi) in zip(in_shape[2:], padding))
        padded = any(lo or hi for lo, hi in padding)
        cl = is_channels_last(taps)  # the gradient takes the forward's layout
        if cl and not is_channels_last(g):  # one small copy, not a strided walk per tap
            g = channels_first(copy_to_scratch(self, "g", channels_last(g)))
        if padded or out is None:
            target = layout_scratch(self, "full", full, g.dtype, xp, cl) if padded else \
                channels_first(xp.empty((full[0],) + full[2:] + full[1:2], g.dtype)) if cl \
                else xp.empty(full, g.dtype)
        else:
            target = out
        won = layout_scratch(self, "won", taps.shape, bool, xp, cl)
        routed = layout_scratch(self, "routed", g.shape, g.dtype, xp, cl)  # unused if tiled

        def tap_grad(i, tap, dest):  # the gradients whose winner is tap i
            xp.equal(taps, i, out=won)
            return xp.multiply(g, won, out=routed if dest is None else dest)
        scatter_taps(target, ksize, stride, dilation, out_size, tap_grad)
        if not padded:
            return target
        return copy_into(out, target[interior(padding, in_shape[2:])])

    def backward(self, gg):
        return (MaxPoolNd.apply(gg, taps=self.taps, **self.geom),)

def _flat_indices(taps, in_size, ksize, stride, padding, dilation):
    """torch's `return_indices`: each winner's flat position in its (unpadded) input plane."""
    xp = array_module(taps)
    taps = taps.astype(xp.int64)
    flat, nd = 0, len(in_size)
    for d in reversed(range(nd)):  # unravel the tap number, last dim fastest
        taps, tap_d = divmod(taps, ksize[d])
        pos = xp.arange(taps.shape[2 + d]).reshape((-1,) + (1,) * (nd - 1 - d))
        coord = pos * stride[d] - padding[d][0] + tap_d * dilation[d]
        flat = flat + coord * math.prod(in_size[d + 1:])
    return Tensor._make(flat)


def _max_pool(op, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices,
              nd):
    x, unbatched = with_batch_dim(input, nd)
    if x._data.ndim != nd + 2:
        raise RuntimeError(f"{op}: Expected {nd + 1}D or {nd + 2}D input, got "
                           f"{list(input._data.shape)}")
    ksize, stride, pads, dil, out = _pool_geometry(op, x._data, kernel_size, stride, padding,
                                                   dilation, ceil_mode, nd)
    geom = dict(ksize=ksize, stride=stride, padding=pads, dilation=dil, out_size=out)
    if not return_indices:
        op = MaxPoolNd if state.enabled and x.requires_grad else MaxPoolValues
        y = op.apply(x, **geom)
        return y.squeeze(0) if unbatched else y
    taps = _window_max(MaxPoolNd(), x._data, **geom, out=None)[1]  # a node for its scratch
    y = MaxPoolNd.apply(x, taps=taps, **geom)
    idx = _flat_indices(taps, x._data.shape[2:], ksize, stride, pads, dil)
    return (y.squeeze(0), idx.squeeze(0)) if unbatched else (y, idx)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max over windows of (N, C, L)."""
    return _max_pool("max_pool1d", input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices, 1)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """Max over windows of (N, C, H, W); stride defaults to kernel_size; padding is -inf."""
    return _max_pool("max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices, 2)


def _divisor(xp, sizes, ksize, stride, pads, out, count_include_pad, dtype):
    """1 / (the number each window's sum is divided by), torch's rule, as (*out) array."""
    inv = None
    for n, k, s, (p, _), o in zip(sizes, ksize, stride, pads, out):
        start = xp.arange(o) * s - p
        end = xp.minimum(start + k, n + p)
        size = end - start if count_include_pad else \
            xp.minimum(end, n) - xp.maximum(start, 0)
        inv = size if inv is None else inv[..., None] * size
    return (1.0 / inv).astype(dtype)


def _avg_pool(op, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override, nd):
    x, unbatched = with_batch_dim(input, nd)
    if x._data.ndim != nd + 2:
        raise RuntimeError(f"{op}: Expected {nd + 1}D or {nd + 2}D input, got "
                           f"{list(input._data.shape)}")
    ksize, stride, pads, dil, out = _pool_geometry(op, x._data, kernel_size, stride, padding, 1,
                                                   ceil_mode, nd)
    xp = array_module(x._data)
    n, c, *sizes = x._data.shape
    # Window sums as a one-channel convolution with a kernel of ones over all N*C planes.
    ones = Tensor._make(xp.ones((1, 1) + ksize, dtype=x._data.dtype))
    sums = ConvNd.apply(x.reshape((n * c, 1) + tuple(sizes)), ones, None, stride=stride,
                        padding=pads, dilation=dil, groups=1).reshape((n, c) + out)
    if divisor_override:
        y = sums / divisor_override
    else:
        y = sums * Tensor._make(_divisor(xp, sizes, ksize, stride, pads, out,
                                         count_include_pad, x._data.dtype))
    return y.squeeze(0) if unbatched else y


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    """Mean over windows of (N, C, L)."""
    return _avg_pool("avg_pool1d", input, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, None, 1)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """Mean over windows of (N, C, H, W); zero padding counts in the divisor unless
    count_include_pad=False."""
    return _avg_pool("avg_pool2d", input, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, divisor_override, 2)


def _avg_pool_samples():
    s = SampleMaker("avg_pool")
    return [Sample(lambda x: avg_pool2d(x, 2), (s(1, 2, 4, 4),)),
            Sample(lambda x: avg_pool2d(x, 3, 2, padding=1, ceil_mode=True,
                                        count_include_pad=False), (s(1, 2, 5, 4),)),
            Sample(lambda x: avg_pool1d(x, 2, 1, padding=1), (s(2, 2, 5),))]


register_composite("avg_pool", _avg_pool_samples)


def _bins(xp, n, o):
    """(start, end) of the o adaptive bins over n: [floor(i*n/o), ceil((i+1)*n/o)) (torch's)."""
    i = xp.arange(o)
    return (i * n) // o, ((i + 1) * n + o - 1) // o


def _averaging_matrix(xp, n, o, dtype):
    """(o, n): row i averages input[start_i : end_i] of the adaptive bins."""
    start, end = _bins(xp, n, o)
    j = xp.arange(n)
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


def adaptive_avg_pool2d(input, output_size):
    """Average pooling to a fixed (H_out, W_out) (None keeps that input size), as two
    products with averaging matrices: rows (H_out, H) @ x @ columns (W, W_out)."""
    x, unbatched = with_batch_dim(input, 2)
    if x._data.ndim != 4:
        raise RuntimeError(f"adaptive_avg_pool2d: Expected 3D or 4D input, got "
                           f"{list(input._data.shape)}")
    h, w = x._data.shape[2:]
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    oh, ow = h if oh is None else oh, w if ow is None else ow
    if oh < 1 or ow < 1:
        raise RuntimeError(f"adaptive_avg_pool2d: output_size must be positive, got "
                           f"{output_size}")
    xp, dtype = array_module(x._data), x._data.dtype
    if (oh, ow) == (1, 1):
        y = x.mean((2, 3), keepdim=True)
    else:
        rows = Tensor._make(_averaging_matrix(xp, h, oh, dtype))
        cols = Tensor._make(_averaging_matrix(xp, w, ow, dtype).T)
        y = rows @ x @ cols
    return y.squeeze(0) if unbatched else y


def adaptive_avg_pool1d(input, output_size):
    """Average pooling of (N, C, L) or (C, L) to a fixed length: x @ (L, L_out) averaging."""
    if input.dim() not in (2, 3):
        raise RuntimeError(f"adaptive_avg_pool1d(): Expected 2D or 3D tensor, but got "
                           f"{list(input.shape)}")
    (o,) = as_tuple(output_size, 1, "output_size")
    x = input._data
    return input @ Tensor._make(_averaging_matrix(array_module(x), x.shape[-1], o, x.dtype).T)


def _adaptive_max(op, input, output_size, return_indices, nd):
    """Max over each adaptive bin of the nd spatial dims, as one gather per dim and a max
    over the gathered window (bins shorter than the longest repeat their last element)."""
    x, unbatched = with_batch_dim(input, nd)
    if x._data.ndim != nd + 2:
        raise RuntimeError(f"{op}(): Expected {nd + 1}D or {nd + 2}D tensor, but got "
                           f"{list(input.shape)}")
    sizes = x._data.shape[2:]
    outs = tuple(n if o is None else o for n, o in zip(
        sizes, (output_size,) * nd if isinstance(output_size, int) else output_size))
    xp = array_module(x._data)
    taps = []
    for n, o in zip(sizes, outs):
        start, end = _bins(xp, n, o)
        k = int((end - start).max())
        taps.append(xp.minimum(start[:, None] + xp.arange(k), end[:, None] - 1))  # (o, k)
    win = x
    for d, t in enumerate(taps):
        win = win.index_select(2 + 2 * d, Tensor._make(t.reshape(-1))).unflatten(
            2 + 2 * d, t.shape)
    perm = (0, 1) + tuple(range(2, 2 + 2 * nd, 2)) + tuple(range(3, 3 + 2 * nd, 2))
    values, k = win.permute(perm).flatten(2 + nd).max(-1)
    if unbatched:
        values, k = values.squeeze(0), k.squeeze(0)
    if not return_indices:
        return values
    picks = xp.unravel_index(k._data, tuple(t.shape[1] for t in taps))
    flat = 0
    for d, (t, pick) in enumerate(zip(taps, picks)):
        o = xp.arange(t.shape[0]).reshape((-1,) + (1,) * (nd - 1 - d))
        flat = flat * sizes[d] + t[o, pick]
    return values, Tensor._make(flat.astype(xp.int64))


def adaptive_max_pool1d(input, output_size, return_indices=False):
    """Max over adaptive bins of (N, C, L) or (C, L); indices along L with return_indices."""
    return _adaptive_max("adaptive_max_pool1d", input, output_size, return_indices, 1)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """Max over adaptive bins of (N, C, H, W) or (C, H, W) (None keeps that size); indices
    flat over H * W with return_indices."""
    return _adaptive_max("adaptive_max_pool2d", input, output_size, return_indices, 2)


def _adaptive_samples():
    s = SampleMaker("adaptive_avg_pool2d")
    return [Sample(lambda x: adaptive_avg_pool2d(x, (2, 3)), (s(1, 2, 5, 4),)),
            Sample(lambda x: adaptive_avg_pool2d(x, 1), (s(2, 2, 3, 3),)),
            Sample(lambda x: adaptive_avg_pool1d(x, 3), (s(2, 2, 7),)),
            Sample(lambda x: adaptive_max_pool1d(x, 3), (s.distinct(2, 7),)),
            Sample(lambda x: adaptive_max_pool2d(x, (2, None)), (s.distinct(1, 2, 5, 3),)),
            Sample(lambda x: adaptive_max_pool2d(x, (3, 2), True)[0], (s.distinct(2, 4, 5),))]


register_composite("adaptive_avg_pool2d", _adaptive_samples)


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize the spatial dims of (N, C, *spatial) by `size` or `scale_factor`. Modes:
    "nearest" (source index floor(dst * in/out), as torch) and the separable linear modes
    "linear" (3-D input), "bilinear" (4-D), "trilinear" (5-D), with torch's source
    coordinates for `align_corners` True or False."""
    nd = input._data.ndim - 2
    if nd < 1:
        raise ValueError(f"interpolate: expected a 3-D, 4-D or 5-D input, got "
                         f"{list(input._data.shape)}")
    linear = _LINEAR_MODES.get(mode)
    if mode != "nearest" and linear is None:
        raise NotImplementedError(f"interpolate: mode {mode!r} (dtrain has 'nearest', "
                                  f"'linear', 'bilinear', 'trilinear')")
    if linear is not None and linear != nd:
        raise NotImplementedError(f"Got {nd + 2}D input, but {mode} mode needs {linear + 2}D "
                                  f"input")
    if linear is None and align_corners is not None:
        raise ValueError("align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear | bicubic | trilinear")
    if (size is None) == (scale_factor is None):
        raise ValueError("only one of size or scale_factor should be defined")
    in_size = input._data.shape[2:]
    if size is not None:
        out_size = as_tuple(size, nd, "size")
        scales = [n / o for n, o in zip(in_size, out_size)]
    else:
        factors = (scale_factor,) * nd if isinstance(scale_factor, (int, float)) \
            else tuple(scale_factor)
        if len(factors) != nd:
            raise ValueError(f"scale_factor shape must match input shape. Input is {nd}D, "
                             f"scale_factor size is {len(factors)}")
        out_size = tuple(math.floor(n * f) for n, f in zip(in_size, factors))
        scales = [n / o if recompute_scale_factor else 1.0 / f
                  for n, o, f in zip(in_size, out_size, factors)]
    xp = array_module(input._data)
    y = input
    for d, (n, o, scale) in enumerate(zip(in_size, out_size, scales)):
        axis = 2 + d
        if linear is not None:
            y = _linear_resize(y, axis, n, o, scale, bool(align_corners), xp)
        elif o % n == 0 and scale == n / o:  # whole repeats: a broadcast, summed back in backward
            shape = y._data.shape
            y = y.unsqueeze(axis + 1).expand(shape[:axis + 1] + (o // n,) + shape[axis + 1:])
            y = y.reshape(shape[:axis] + (o,) + shape[axis + 1:])
        else:
            src = xp.floor(xp.arange(o, dtype=xp.float32) * xp.float32(scale))
            idx = xp.minimum(src.astype(xp.int64), n - 1)
            y = y.index_select(axis, Tensor._make(idx))
    return y


_LINEAR_MODES = {"linear": 1, "bilinear": 2, "trilinear": 3}


def _linear_resize(y, axis, n, o, scale, align_corners, xp):
    """Linear interpolation of `y` along `axis` from n to o points: each output mixes its
    two neighbouring inputs (indices and weights depend on the sizes only)."""
    dst = xp.arange(o, dtype=xp.float64)
    if align_corners:
        src = dst * ((n - 1) / (o - 1)) if o > 1 else dst * 0
    else:
        src = xp.maximum((dst + 0.5) * scale - 0.5, 0.0)
    lo = xp.minimum(xp.floor(src).astype(xp.int64), n - 1)
    hi = xp.minimum(lo + 1, n - 1)
    shape = (o,) + (1,) * (y._data.ndim - axis - 1)
    w_hi = Tensor._make((src - lo).astype(y._data.dtype).reshape(shape))
    return (y.index_select(axis, Tensor._make(lo)) * (1 - w_hi)
            + y.index_select(axis, Tensor._make(hi)) * w_hi)


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """Deprecated alias of `interpolate` (warns, as torch)."""
    warnings.warn("`nn.functional.upsample` is deprecated. Use `nn.functional.interpolate` "
                  "instead.", stacklevel=2)
    return interpolate(input, size, scale_factor, mode, align_corners)


def _interpolate_samples():
    s = SampleMaker("interpolate")
    return [Sample(lambda x: interpolate(x, scale_factor=2), (s(1, 2, 2, 3),)),
            Sample(lambda x: interpolate(x, size=(3, 5)), (s(1, 1, 2, 3),)),
            Sample(lambda x: interpolate(x, scale_factor=1.5), (s(2, 2, 4),)),
            Sample(lambda x: interpolate(x, size=(3, 5), mode="bilinear"), (s(1, 2, 2, 3),)),
            Sample(lambda x: interpolate(x, scale_factor=2, mode="bilinear",
                                         align_corners=True), (s(1, 1, 3, 2),)),
            Sample(lambda x: interpolate(x, size=7, mode="linear"), (s(2, 1, 4),))]


register_composite("interpolate", _interpolate_samples)


# -- modules -------------------------------------------------------------------------------
class _MaxPoolNd(Module):
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, kernel_size if stride is None else stride
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool1d(_MaxPoolNd):
    def forward(self, input):
        return max_pool1d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                          self.ceil_mode, self.return_indices)


class MaxPool2d(_MaxPoolNd):
    def forward(self, input):
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                          self.ceil_mode, self.return_indices)


class AvgPool1d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, kernel_size if stride is None else stride
        self.padding, self.ceil_mode = padding, ceil_mode
        self.count_include_pad = count_include_pad

    def forward(self, input):
        return avg_pool1d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(AvgPool1d):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)
        self.divisor_override = divisor_override

    def forward(self, input):
        return avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, self.divisor_override)


class _AdaptiveAvgPool(Module):
    fn = None

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, input):
        return type(self).fn(input, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveAvgPool1d(_AdaptiveAvgPool):
    fn = staticmethod(adaptive_avg_pool1d)


class AdaptiveAvgPool2d(_AdaptiveAvgPool):
    fn = staticmethod(adaptive_avg_pool2d)


class _AdaptiveMaxPool(_AdaptiveAvgPool):
    def __init__(self, output_size, return_indices=False):
        super().__init__(output_size)
        self.return_indices = return_indices

    def forward(self, input):
        return type(self).fn(input, self.output_size, self.return_indices)


class AdaptiveMaxPool1d(_AdaptiveMaxPool):
    fn = staticmethod(adaptive_max_pool1d)


class AdaptiveMaxPool2d(_AdaptiveMaxPool):
    fn = staticmethod(adaptive_max_pool2d)


def _lp_pool(pool, input, norm_type, kernel_size, stride, ceil_mode, n):
    """(sum over each window of x^p)^(1/p), as torch: an average pool of x^p times the
    window size (negative averages of odd powers are clamped at 0 before the root)."""
    kernel = (kernel_size,) * n if isinstance(kernel_size, int) else tuple(kernel_size)
    out = pool(input.pow(norm_type), kernel, stride, 0, ceil_mode)
    return (out.sign() * out.abs().relu()).mul(math.prod(kernel)).pow(1.0 / norm_type)


def lp_pool1d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """(sum of x**p over each window) ** (1/p) of (N, C, L) input."""
    return _lp_pool(avg_pool1d, input, float(norm_type), kernel_size, stride, ceil_mode, 1)


def lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """(sum of x**p over each window) ** (1/p) of (N, C, H, W) input."""
    return _lp_pool(avg_pool2d, input, float(norm_type), kernel_size, stride, ceil_mode, 2)


class _LPPool(Module):
    def __init__(self, norm_type, kernel_size, stride=None, ceil_mode=False):
        super().__init__()
        self.norm_type, self.kernel_size = norm_type, kernel_size
        self.stride, self.ceil_mode = stride, ceil_mode

    def forward(self, input):
        return self.fn(input, self.norm_type, self.kernel_size, self.stride, self.ceil_mode)

    def extra_repr(self):
        return (f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, ceil_mode={self.ceil_mode}")


class LPPool1d(_LPPool):
    fn = staticmethod(lp_pool1d)


class LPPool2d(_LPPool):
    fn = staticmethod(lp_pool2d)


class Upsample(Module):
    """Module form of `interpolate` (mode "nearest")."""

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        self.size, self.scale_factor, self.mode = size, scale_factor, mode
        self.align_corners = align_corners
        self.recompute_scale_factor = recompute_scale_factor

    def forward(self, input):
        return interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners,
                           self.recompute_scale_factor)

    def extra_repr(self):
        if self.scale_factor is not None:
            return f"scale_factor={float(self.scale_factor)}, mode='{self.mode}'"
        return f"size={self.size}, mode='{self.mode}'"


class UpsamplingNearest2d(Upsample):
    """Upsample with mode 'nearest' (torch's older name)."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    """Upsample with mode 'bilinear' and align_corners=True (torch's older name)."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)
