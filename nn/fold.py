"""`unfold` (im2col) and `fold` (col2im) with their modules `Unfold` and `Fold`.

Two ops, each the other's adjoint, so each one's backward is the other (any order of
derivatives works). They reuse the convolutions' helpers: im2col is a strided view of the
padded input, col2im adds each kernel tap's block into its strided slice (a loop over the
kernel's taps only)."""
import math

from dtrain.autograd.node import Op
from dtrain.autograd.registry import Sample, SampleMaker, register
from dtrain.core.backend import array_module
from dtrain.nn import conv_kernels
from dtrain.nn.conv import _windows, as_tuple, interior, scatter_taps, with_batch_dim
from dtrain.nn.module import Module


def _geometry(kernel_size, dilation, padding, stride):
    """The four as 2-tuples (padding as (lo, hi) pairs), checked as torch's messages say."""
    k, d, p, s = (as_tuple(v, 2, name) for v, name in (
        (kernel_size, "kernel_size"), (dilation, "dilation"), (padding, "padding"),
        (stride, "stride")))
    if min(k + d + s) <= 0 or min(p) < 0:
        raise RuntimeError(f"kernel_size, dilation and stride must be greater than zero and "
                           f"padding non-negative, got kernel_size={k}, dilation={d}, "
                           f"padding={p}, stride={s}")
    return k, d, tuple((q, q) for q in p), s


def _im2col_samples():
    s = SampleMaker("im2col")
    return [Sample(lambda x: unfold(x, 2), (s(2, 3, 3, 4),)),
            Sample(lambda x: unfold(x, (2, 3), dilation=(1, 2), padding=1, stride=(2, 1)),
                   (s(1, 2, 4, 5),))]


@register("im2col", _im2col_samples)
class Im2Col(Op):
    """(N, C, H, W) -> (N, C * kh * kw, L): every sliding block as a column."""

    def forward(self, x, ksize, dilation, padding, stride):
        xp = array_module(x)
        self.in_size, self.geometry = x.shape[2:], (ksize, dilation, padding, stride)
        out_size = conv_kernels.out_size(x.shape[2:], ksize, stride, padding, dilation)
        win = _windows(self, x, ksize, stride, padding, dilation, out_size)
        return xp.ascontiguousarray(win).reshape(x.shape[0], -1, math.prod(out_size))

    def backward(self, g):
        return (Col2Im.apply(g, self.in_size, *self.geometry), None, None, None, None)


def _col2im_samples():
    s = SampleMaker("col2im")
    return [Sample(lambda c: fold(c, (3, 4), 2), (s(2, 12, 6),)),
            Sample(lambda c: fold(c, (4, 5), (2, 3), dilation=(1, 2), padding=1, stride=(2, 1)),
                   (s(1, 12, 9),))]


@register("col2im", _col2im_samples)
class Col2Im(Op):
    """(N, C * kh * kw, L) -> (N, C, *output_size): each column added back into its block
    (overlaps summed), the padding cut off."""

    def forward(self, cols, output_size, ksize, dilation, padding, stride):
        xp = array_module(cols)
        self.geometry = (ksize, dilation, padding, stride)
        out_size = conv_kernels.out_size(output_size, ksize, stride, padding, dilation)
        n = cols.shape[0]
        blocks = cols.reshape((n, -1, math.prod(ksize)) + out_size)
        padded = tuple(o + lo + hi for o, (lo, hi) in zip(output_size, padding))
        out = xp.empty((n, blocks.shape[1]) + padded, cols.dtype)
        scatter_taps(out, ksize, stride, dilation, out_size,
                     lambda i, tap, dest: blocks[:, :, i])
        return xp.ascontiguousarray(out[interior(padding, output_size)])

    def backward(self, g):
        return (Im2Col.apply(g, *self.geometry), None, None, None, None, None)


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """Sliding blocks of (N, C, H, W) or (C, H, W) as columns: (N, C * prod(kernel_size), L)
    with L the number of blocks."""
    if input.dim() not in (3, 4):
        raise RuntimeError(f"Input Error: Only 3D or 4D input Tensors are supported (got "
                           f"{input.dim()}D)")
    x, unbatched = with_batch_dim(input, 2)
    out = Im2Col.apply(x, *_geometry(kernel_size, dilation, padding, stride))
    return out.squeeze(0) if unbatched else out


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """Sum sliding-block columns (N, C * prod(kernel_size), L) or unbatched ones back into
    (N, C, *output_size): the adjoint of unfold."""
    if input.dim() not in (2, 3):
        raise RuntimeError(f"Input Error: Only unbatched (2D) or batched (3D) input Tensors "
                           f"are supported (got {input.dim()}D)")
    k, d, p, s = _geometry(kernel_size, dilation, padding, stride)
    out_hw = as_tuple(output_size, 2, "output_size")
    x, unbatched = with_batch_dim(input, 1)
    blocks = conv_kernels.out_size(out_hw, k, s, p, d)
    if x.shape[1] % math.prod(k):
        raise RuntimeError(f"Expected size of input's dimension 1 to be divisible by the "
                           f"product of kernel_size, but got input.size(1)={x.shape[1]} and "
                           f"kernel_size={k}")
    if x.shape[2] != math.prod(blocks):
        raise RuntimeError(f"Given output_size={out_hw}, kernel_size={k}, dilation={d}, "
                           f"padding={tuple(q for q, _ in p)}, stride={s}, expected size of "
                           f"input's dimension 2 to match the calculated number of sliding "
                           f"blocks {blocks[0]} * {blocks[1]} = {math.prod(blocks)}, but got "
                           f"input.size(2)={x.shape[2]}.")
    out = Col2Im.apply(x, out_hw, k, d, p, s)
    return out.squeeze(0) if unbatched else out


class Unfold(Module):
    def __init__(self, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation
        self.padding, self.stride = padding, stride

    def forward(self, input):
        return unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)

    def extra_repr(self):
        names = ("kernel_size", "dilation", "padding", "stride")
        return ", ".join(f"{name}={getattr(self, name)}" for name in names)


class Fold(Unfold):
    def __init__(self, output_size, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__(kernel_size, dilation, padding, stride)
        self.output_size = output_size

    def forward(self, input):
        return fold(input, self.output_size, self.kernel_size, self.dilation, self.padding,
                    self.stride)

    def extra_repr(self):
        return f"output_size={self.output_size}, " + super().extra_repr()
