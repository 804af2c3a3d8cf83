"""Channels-last im2col / GEMM / col2im kernels for the convolution ops (backend arrays).

The GEMM layout is channels-last: a conv's output (N, O, *out) is the matrix
(N * prod(out), O) read as a (N, O, *out) view, so the GEMM writes it with no transpose,
and an upstream gradient in that layout is already the GEMM's (N * prod(out), O) operand.
im2col is one copy of a strided window view of the padded channels-last input whose rows
are (tap, channel) runs; a 1x1 stride-1 unpadded conv over channels-last input needs no
copy at all. Weights go to (prod(k) * C/groups, O/groups) matrices: tiny copies.
`op` is the op whose forward calls a kernel: its `scratch` gives the temporaries.
"""
import itertools
import math

from dtrain.core.backend import array_module, channels_first, channels_last

CHUNK_BYTES = 1 << 20  # a kernel's working set per chunk of samples: about half an L2


def layout_scratch(op, name, shape, dtype, xp, last):
    """`op.scratch` of (N, C, *s) `shape`, stored channels-last when `last` (a view)."""
    if not last:
        return op.scratch(name, shape, dtype, xp)
    return channels_first(op.scratch(name, (shape[0],) + shape[2:] + (shape[1],), dtype, xp))


def is_channels_last(a):
    """Whether (N, C, *s) `a` is stored channels-last and dense (a conv's output)."""
    return channels_last(a).flags.c_contiguous


def out_size(in_size, ksize, stride, padding, dilation):
    """The spatial size of a conv's output; `padding` holds (lo, hi) pairs."""
    return tuple((n + lo + hi - d * (k - 1) - 1) // s + 1
                 for n, k, s, (lo, hi), d in zip(in_size, ksize, stride, padding, dilation))


def padded(op, x, padding, last, value=0):
    """`x` (N, C, *s) padded with `value` as a dense array in the order (N, *padded s, C)
    when `last`, else (N, C, *padded s): one copy that pads and sets the layout at once
    (none when `x` already is such an array, unpadded)."""
    src = channels_last(x) if last else x
    lead = 1 if last else 2
    if not any(lo or hi for lo, hi in padding) and src.flags.c_contiguous:
        return src
    nd = len(padding)
    shape = src.shape[:lead] + tuple(m + lo + hi for m, (lo, hi) in
                                     zip(src.shape[lead:lead + nd], padding)) + \
        src.shape[lead + nd:]
    out = op.scratch("padded", shape, x.dtype, array_module(x))
    for d, (lo, hi) in enumerate(padding):  # only the border is filled
        before = (slice(None),) * (lead + d)
        out[before + (slice(0, lo),)] = value
        out[before + (slice(shape[lead + d] - hi, None),)] = value
    out[(slice(None),) * lead + tuple(slice(lo, lo + m) for m, (lo, _) in
                                      zip(src.shape[lead:lead + nd], padding))] = src
    return out


def im2col_chunks(op, x, ksize, stride, padding, dilation, osize, groups):
    """(first, end, cols) per chunk of samples x[first:end]: cols (groups, samples *
    prod(osize), prod(ksize) * C/groups), row (n, pos), column (tap, c) being
    x_padded[n, c, pos * stride + tap * dilation] within the group. Chunks of about
    CHUNK_BYTES, so that the GEMM reads each from the cache (the same buffer every chunk).
    NOTE: measured 1.3-1.8x faster conv forwards than one im2col of the whole batch."""
    xp = array_module(x)
    n, c = x.shape[:2]
    cg, pixels = c // groups, math.prod(osize)
    if groups == 1 and all(k == 1 for k in ksize) and all(s == 1 for s in stride) and \
            not any(lo or hi for lo, hi in padding) and is_channels_last(x):
        yield 0, n, channels_last(x).reshape(1, n * pixels, c)  # a 1x1 conv reads x as is
        return
    width = math.prod(ksize) * cg
    chunk = max(1, min(n, CHUNK_BYTES // (groups * pixels * width * x.dtype.itemsize)))
    buf = op.scratch("cols", (groups * chunk * pixels * width,), x.dtype, xp)
    cl = is_channels_last(x)
    xpad = padded(op, x, padding, cl)
    if cl:
        sn, *ss, sc = xpad.strides
    else:  # runs along the input's rows, not across its channels: cols built transposed
        sn, sc, *ss = xpad.strides
    taps = tuple(s * d for s, d in zip(ss, dilation))
    pos = tuple(s * st for s, st in zip(ss, stride))
    if cl:  # (groups, N, *osize, *ksize, C/groups)
        win = xp.lib.stride_tricks.as_strided(xpad, (groups, n) + tuple(osize) + tuple(ksize) +
                                              (cg,), (sc * cg, sn) + pos + taps + (sc,))
    else:  # (groups, *ksize, C/groups, N, *osize)
        win = xp.lib.stride_tricks.as_strided(xpad, (groups,) + tuple(ksize) + (cg, n) +
                                              tuple(osize), (sc * cg,) + taps + (sc, sn) + pos)
    for first in range(0, n, chunk):
        end = min(n, first + chunk)
        cols = buf[:groups * (end - first) * pixels * width]
        if cl:
            xp.copyto(cols.reshape((groups, end - first) + win.shape[2:]), win[:, first:end])
            yield first, end, cols.reshape(groups, -1, width)
        else:
            part = win[(slice(None),) * (2 + len(ksize)) + (slice(first, end),)]
            xp.copyto(cols.reshape(part.shape), part)
            yield first, end, xp.swapaxes(cols.reshape(groups, width, -1), 1, 2)


def weight_matrix(op, w, groups):
    """w (O, C/groups, *k) as (groups, O/groups, prod(k) * C/groups), columns (tap, c)."""
    o = w.shape[0]
    moved = array_module(w).moveaxis(w.reshape((groups, o // groups) + w.shape[1:]), 2, -1)
    return copy_to_scratch(op, "wm", moved).reshape(groups, o // groups, -1)


def weight_from_matrix(m, w_shape, out=None):
    """The weight `w_shape` (O, C/groups, *k) from its gradient's GEMM result m (groups,
    prod(k) * C/groups, O/groups), rows (tap, c): one copy, into `out` when given."""
    xp = array_module(m)
    o, cg, *k = w_shape
    groups = m.shape[0]
    src = xp.moveaxis(m.reshape((groups,) + tuple(k) + (cg, o // groups)), (-1, -2), (1, 2))
    if out is None:
        out = xp.empty(w_shape, m.dtype)
    xp.copyto(out.reshape((groups, o // groups, cg) + tuple(k)), src)
    return out


def grad_matrix(op, g, groups):
    """A gradient (N, O, *s) as the GEMM operand (groups, N * prod(s), O/groups): a view
    when `g` is channels-last, else one copy (into `op`'s scratch in graph replay, which
    keeps the array by reference when it is passed on to another op)."""
    xp = array_module(g)
    o = g.shape[1]
    gc = channels_last(g)
    if not gc.flags.c_contiguous:
        gc = copy_to_scratch(op, "gt", gc)
    return xp.moveaxis(gc.reshape(-1, groups, o // groups), 1, 0)


def copy_to_scratch(op, name, a):
    """A dense copy of `a` in `op`'s scratch."""
    out = op.scratch(name, a.shape, a.dtype, array_module(a))
    array_module(a).copyto(out, a)
    return out


def result(y, n, osize, out):
    """GEMM output (groups, N * prod(osize), O/groups) as (N, O, *osize): a dense
    channels-last array (a view for groups == 1), or written into `out` when given."""
    xp = array_module(y)
    groups, _, og = y.shape
    y = xp.moveaxis(y, 0, 1).reshape((n,) + tuple(osize) + (groups * og,))
    if out is None:
        return channels_first(y)
    xp.copyto(out, channels_first(y))
    return out


def conv_forward(op, x, w, stride, padding, dilation, groups, out=None):
    """y = conv(x, w) as (N, O, *out), channels-last unless written into `out`: im2col and
    one GEMM per chunk of samples."""
    return conv_gemm(op, x, weight_matrix(op, w, groups), w.shape[2:], stride, padding,
                     dilation, out)


def conv_gemm(op, x, wm, ksize, stride, padding, dilation, out=None):
    """conv_forward with the kernel given as its `weight_matrix` `wm`."""
    xp = array_module(x)
    n, groups = x.shape[0], wm.shape[0]
    osize = out_size(x.shape[2:], ksize, stride, padding, dilation)
    pixels, dtype = math.prod(osize), xp.result_type(wm, x)
    shape = (groups, n * pixels, wm.shape[1])
    # the result is a view of y unless copied into `out`: no scratch for it then; a
    # channels-last `out` (graph replay's buffer) is written by the GEMMs directly
    direct = out is not None and groups == 1 and is_channels_last(out)
    y = xp.empty(shape, dtype) if out is None else \
        channels_last(out).reshape(shape) if direct else op.scratch("y", shape, dtype, xp)
    for first, end, cols in im2col_chunks(op, x, ksize, stride, padding, dilation, osize,
                                          groups):
        xp.matmul(cols, xp.swapaxes(wm, 1, 2), out=y[:, first * pixels:end * pixels])
    return out if direct else result(y, n, osize, out)


def col2im(taps, target, ksize, stride, dilation, osize):
    """Tap products (groups, prod(ksize), N * prod(osize), C/groups) summed into `target`,
    the padded input channels-last (N, *padded, C): one add (a copy when windows do not
    overlap) per kernel tap, each reading a dense block and writing a view whose rows are
    runs of whole pixels, never runs of one pixel's channels."""
    xp = array_module(taps)
    groups = taps.shape[0]
    n, c = target.shape[0], target.shape[-1]
    overlap = any(s < d * (k - 1) + 1 for s, d, k in zip(stride, dilation, ksize))
    target.fill(0)
    for i, tap in enumerate(itertools.product(*(range(k) for k in ksize))):
        key = (slice(None),) + tuple(slice(t * d, t * d + s * (m - 1) + 1, s) for t, d, s, m in
                                     zip(tap, dilation, stride, osize))
        src = xp.moveaxis(taps[:, i].reshape((groups, n) + tuple(osize) + (c // groups,)), 0, -2)
        dest = target[key].reshape(target[key].shape[:-1] + (groups, c // groups))
        if overlap:
            dest += src
        else:
            xp.copyto(dest, src)
    return target


def conv_input_grad(op, g, w, b, stride, padding, dilation, groups, in_size, gm=None,
                    out=None):
    """The adjoint of conv in x (conv_transpose): g (N, O, *osize) and w give
    (N, C, *in_size) (+ b), channels-last unless written into `out`. Stride 1, unless the
    conv widens more than twice: a conv of g (`_stride1_input_grad`). Otherwise one GEMM
    per kernel tap (one stacked matmul call), then col2im; `gm` is g's GEMM operand when
    the caller has it. NOTE: tap-major products, not one GEMM into the im2col layout:
    col2im then reads dense blocks; measured 2-5x faster col2im (runs of C floats are
    short) for ~10% slower GEMMs."""
    xp = array_module(g)
    n, o = g.shape[:2]
    cg, ksize = w.shape[1], w.shape[2:]
    full_pad = tuple(((k - 1) * d - lo, (k - 1) * d - hi)
                     for k, d, (lo, hi) in zip(ksize, dilation, padding))
    if all(s == 1 for s in stride) and o // groups <= 2 * cg and \
            all(lo >= 0 and hi >= 0 for lo, hi in full_pad) and \
            out_size(g.shape[2:], ksize, stride, full_pad, dilation) == tuple(in_size):
        return _stride1_input_grad(op, g, w, b, full_pad, dilation, groups, out)
    gm = grad_matrix(op, g, groups) if gm is None else gm
    wt = copy_to_scratch(op, "wt", xp.moveaxis(  # (groups, taps, O/groups, C/groups)
        w.reshape(groups, o // groups, cg, -1), -1, 1))
    dtype = xp.result_type(w, gm)
    full = (n,) + tuple(m + lo + hi for m, (lo, hi) in zip(in_size, padding)) + (cg * groups,)
    # the result is a view of the padded sum unless copied into `out`: no scratch for it then
    padded = xp.empty(full, dtype) if out is None else op.scratch("full", full, dtype, xp)
    # A chunk of samples at a time, so that col2im reads the tap products from the cache.
    # NOTE: measured 1.3-2x faster than all samples at once (chunks of about CHUNK_BYTES).
    pixels, blocks = gm.shape[1] // n, groups * wt.shape[1]
    chunk = max(1, min(n, CHUNK_BYTES // (blocks * pixels * cg * dtype.itemsize)))
    buf = op.scratch("taps", (blocks * chunk * pixels * cg,), dtype, xp)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        taps = buf[:blocks * (e - s) * pixels * cg].reshape(groups, -1, (e - s) * pixels, cg)
        xp.matmul(gm[:, None, s * pixels:e * pixels], wt, out=taps)
        col2im(taps, padded[s:e], ksize, stride, dilation, g.shape[2:])
    y = padded[(slice(None),) + tuple(slice(lo, lo + m) for m, (lo, _) in
                                      zip(in_size, padding))]
    if b is not None:
        y += b
    if out is None:
        return channels_first(y)
    xp.copyto(out, channels_first(y))
    return out


def _stride1_input_grad(op, g, w, b, full_pad, dilation, groups, out):
    """conv_input_grad for stride 1: the correlation of g, padded by `full_pad`, with the
    flipped kernel whose in/out channels are swapped (per group), through conv_gemm.
    NOTE: measured 1.2-2.5x faster than the tap products and col2im for 3x3 convs of 16 to
    128 channels (2.2x for ResNet-20's 16-channel ones) unless O > 2 C (3 -> 32 channels:
    2.2x slower), where, and for strides > 1, conv_input_grad keeps col2im."""
    xp = array_module(g)
    o, cg, *ksize = w.shape
    flipped = w.reshape((groups, o // groups, cg) + tuple(ksize))[
        (slice(None),) * 3 + (slice(None, None, -1),) * len(ksize)]
    wm = copy_to_scratch(op, "wm", xp.moveaxis(flipped, 1, -1)).reshape(groups, cg, -1)
    y = conv_gemm(op, g, wm, ksize, (1,) * len(ksize), full_pad, dilation, out)
    if b is not None:
        channels_last(y)[...] += b
    return y


def conv_weight_grad(op, x, g, w_shape, stride, padding, dilation, groups, gm=None,
                     out=None):
    """The adjoint of conv in w: x (N, C, *in) and g (N, O, *osize) give w_shape: per chunk
    of samples, x's im2col (recomputed in the cache rather than kept from the forward)
    transposed times g's matrix, summed. `gm` when the caller has it."""
    xp = array_module(x)
    gm = grad_matrix(op, g, groups) if gm is None else gm
    pixels = math.prod(g.shape[2:])
    shape, dtype = (groups, math.prod(w_shape[1:]), gm.shape[2]), xp.result_type(gm, x)
    m, part = op.scratch("gw", shape, dtype, xp), op.scratch("part", shape, dtype, xp)
    for first, end, cols in im2col_chunks(op, x, w_shape[2:], stride, padding, dilation,
                                          g.shape[2:], groups):
        # NOTE: cols^T g, not g^T cols: measured 1.5x faster GEMMs when O is 16 or 32
        rows = gm[:, first * pixels:end * pixels]
        if first == 0:
            xp.matmul(xp.swapaxes(cols, 1, 2), rows, out=m)
        else:
            m += xp.matmul(xp.swapaxes(cols, 1, 2), rows, out=part)
    return weight_from_matrix(m, w_shape, out)
