"""Reshuffles composed of indexing, shape and join ops: flips and rolls, repeats, diagonals,
moves and selections along dims, stacks, grids and index sets. Their gradients are those of
the ops they are made of (checked by the composites registered below)."""
from dtrain.autograd.node import Op
from dtrain.autograd.ops._util import norm_dim, norm_dims
from dtrain.autograd.ops.index import IndexGrad, gather, getitem, index_select
from dtrain.autograd.ops.shape import _samples, _size_args, cat, clone, expand, permute, reshape
from dtrain.autograd.registry import Sample, SampleMaker, register, register_composite
from dtrain.core import creation
from dtrain.core import dtype as dtypes
from dtrain.core.backend import array_module, device_context, strided_view
from dtrain.core.tensor import Tensor


def _ndim(t):
    return t._data.ndim


def _along(d, item):
    """An index that applies `item` to dim `d` and keeps the others whole."""
    return (slice(None),) * d + (item,)


def _dims_arg(dims):
    return (dims,) if isinstance(dims, int) else tuple(dims)


# -- flips, rolls, rotations ----------------------------------------------------------------
def flip(input, *args, dims=None):
    """A copy of `input` with the order of elements reversed along each of `dims`
    (`flip(x, (0, 1))`, `x.flip(0, 1)` or `dims=`)."""
    axes = norm_dims(_size_args(args) if dims is None else dims, _ndim(input), "flip")
    key = tuple(slice(None, None, -1) if i in axes else slice(None) for i in range(_ndim(input)))
    return clone(getitem(input, key))  # a copy, as torch's flip (a reversed slice is a view)


def fliplr(input):
    """input reversed along dim 1 (input at least 2-D)."""
    if _ndim(input) < 2:
        raise RuntimeError(f"fliplr: Input must be >= 2-d, got {_ndim(input)}-d")
    return flip(input, (1,))


def flipud(input):
    """input reversed along dim 0 (input at least 1-D)."""
    if _ndim(input) < 1:
        raise RuntimeError("flipud: Input must be >= 1-d, got 0-d")
    return flip(input, (0,))


def roll(input, shifts, dims=None):
    """Elements shifted by `shifts` along `dims`, wrapping around; without `dims`, over the
    flattened tensor (then reshaped back)."""
    shifts = _dims_arg(shifts)
    if dims is None:
        if len(shifts) != 1:
            raise RuntimeError(f"roll: shifts must be one int when dims is not given, got "
                               f"{list(shifts)}")
        return reshape(roll(reshape(input, -1), shifts, 0), input._data.shape)
    dims = _dims_arg(dims)
    if len(shifts) != len(dims):
        raise RuntimeError(f"roll: shifts and dimensions must align. shifts: {len(shifts)}, "
                           f"dims: {len(dims)}")
    out = input
    for s, d in zip(shifts, dims):
        d = norm_dim(d, _ndim(input), "roll")
        n = input._data.shape[d]
        s = s % n if n else 0
        if s:
            out = cat([out.narrow(d, n - s, s), out.narrow(d, 0, n - s)], d)
    return out


def rot90(input, k=1, dims=(0, 1)):
    """Rotation by 90 degrees `k` times in the plane of `dims`, from the first towards the
    second dim."""
    dims = tuple(dims)
    if len(dims) != 2:
        raise RuntimeError(f"expected total rotation dims == 2, but got dims = {len(dims)}")
    if _ndim(input) < 2:
        raise RuntimeError(f"expected total dims >= 2, but got total dims = {_ndim(input)}")
    d0, d1 = (norm_dim(d, _ndim(input), "rot90") for d in dims)
    if d0 == d1:
        raise RuntimeError(f"expected rotation dims to be different, but got dim0 = {d0} and "
                           f"dim1 = {d1}")
    k %= 4
    if k == 1:
        return flip(input, d1).transpose(d0, d1)
    if k == 2:
        return flip(input, (d0, d1))
    if k == 3:
        return flip(input, d0).transpose(d0, d1)
    return clone(input)


register_composite("flip_roll_rot90", _samples(
    "flip_roll_rot90", (lambda x: flip(x, (0, -1)), (2, 3, 4)), (lambda x: x.fliplr(), (3, 4)),
    (lambda x: roll(x, (1, -2), (1, 0)), (3, 4)), (lambda x: roll(x, 5), (3, 4)),
    (lambda x: rot90(x), (3, 4)), (lambda x: rot90(x, -1, (2, 0)), (2, 3, 4)),
    (lambda x: rot90(x, 2), (3, 4))))


# -- repeats ---------------------------------------------------------------------------------
def repeat(input, *sizes):
    """`Tensor.repeat`: the tensor tiled `sizes[i]` times along each dim (NumPy's tile); more
    sizes than dims add leading dims."""
    sizes = _size_args(sizes)
    shape = input._data.shape
    if len(sizes) < len(shape):
        raise RuntimeError("Number of dimensions of repeat dims can not be smaller than number "
                           f"of dimensions of tensor (repeat dims {list(sizes)}, tensor shape "
                           f"{list(shape)})")
    shape = (1,) * (len(sizes) - len(shape)) + shape
    # each dim n becomes a pair (1, n), broadcast to (r, n), then merged into r * n
    pairs = reshape(input, tuple(v for n in shape for v in (1, n)))
    tiled = expand(pairs, *(v for r, n in zip(sizes, shape) for v in (r, n)))
    return reshape(tiled, tuple(r * n for r, n in zip(sizes, shape)))


def tile(input, *args, dims=None):
    """`input` repeated `dims[i]` times along each dim; too few dims are padded with ones
    in front."""
    dims = _size_args(args) if dims is None else _dims_arg(dims)
    return repeat(input, (1,) * (_ndim(input) - len(dims)) + dims)


def _repeat_index(xp, n, counts):
    """0..n-1, each index i repeated counts[i] times (counts: an int or a 1-D int array)."""
    if isinstance(counts, int):
        return xp.repeat(xp.arange(n), counts)
    if counts.dtype.kind not in "iu":
        raise RuntimeError(f"repeat_interleave: repeats must be an integer tensor, got "
                           f"{counts.dtype}")
    if bool((counts < 0).any()):
        raise RuntimeError("repeat_interleave: repeats can not be negative")
    ends = xp.cumsum(counts)
    # NOTE: the output position's source is the first run end beyond it: one searchsorted,
    # where CuPy's repeat takes no array of counts
    return xp.searchsorted(ends, xp.arange(int(ends[-1]) if n else 0), side="right")


def repeat_interleave(input, repeats=None, dim=None, *, output_size=None):
    """Each element (slice along `dim`; of the flattened tensor without `dim`) repeated
    `repeats` times in place: an int, or a tensor of one count per element. With `input`
    alone, a 1-D tensor of counts: its indices repeated by them."""
    if repeats is None:
        counts = input._data
        return Tensor._make(_repeat_index(array_module(counts), counts.shape[0], counts))
    if dim is None:
        input, d = reshape(input, -1), 0
    else:
        d = norm_dim(dim, _ndim(input), "repeat_interleave")
    xp = array_module(input._data)
    n = input._data.shape[d]
    counts = repeats._data if isinstance(repeats, Tensor) else repeats
    if getattr(counts, "ndim", None) == 0:
        counts = int(counts)
    if not isinstance(counts, int) and counts.shape[0] != n:
        raise RuntimeError(f"repeats must have the same size as input along dim, but got "
                           f"repeats.size(0) = {counts.shape[0]} and input.size({d}) = {n}")
    index = _repeat_index(xp, n, counts)
    if output_size is not None and output_size != index.shape[0]:
        raise RuntimeError(f"repeat_interleave: output_size {output_size} is not the sum of "
                           f"the repeats ({index.shape[0]})")
    return index_select(input, d, Tensor._make(index))


def _repeat_samples():
    s = SampleMaker("repeat_tile")
    counts = s.ints(3, 3)
    return [Sample(lambda x: x.repeat(2, 1, 3), (s(3, 2),)),
            Sample(lambda x: tile(x, (2,)), (s(2, 3),)),
            Sample(lambda x: x.repeat_interleave(2, dim=-1), (s(2, 3),)),
            Sample(lambda x: x.repeat_interleave(counts, dim=0), (s(3, 2),)),
            Sample(lambda x: repeat_interleave(x, 2), (s(2, 2),))]


register_composite("repeat_tile", _repeat_samples)


# -- diagonals -------------------------------------------------------------------------------
def _diagonal_index(xp, n1, n2, offset):
    """Row and column indices of diagonal `offset` of an (n1, n2) matrix."""
    length = max(min(n1 + min(offset, 0), n2 - max(offset, 0)), 0)
    i = xp.arange(length)
    return (i - min(offset, 0), i + max(offset, 0))


def _embed(values, n1, n2, offset, d1, d2):
    """Zero (n1, n2) matrices in dims d1, d2 with the last dim of `values` on their diagonal
    `offset` (the other dims of `values` in order)."""
    key = (Ellipsis,) + _diagonal_index(array_module(values._data), n1, n2, offset)
    out = IndexGrad.apply(values, values._data.shape[:-1] + (n1, n2), key)
    return movedim(out, (-2, -1), (d1, d2))


def _diagonal_samples():
    s = SampleMaker("diagonal")
    return [Sample(lambda x: diagonal(x), (s(3, 4),)),
            Sample(lambda x: x.diagonal(1, -1, 0), (s(2, 3, 4),)),
            Sample(lambda x: x.diagonal(-2) * 2, (s(4, 3),)),
            Sample(lambda x: x.mT.diagonal(0, 0, 2), (s(3, 2, 3),))]


@register("diagonal", _diagonal_samples)
class Diagonal(Op):
    """The diagonal `offset` of the (d1, d2) planes as the last dim: a strided view (steps of
    both dims' strides at once), as torch's."""

    is_view = True

    def forward(self, x, offset, d1, d2):
        self.in_shape, self.offset, self.d1, self.d2 = x.shape, offset, d1, d2
        start = [slice(None)] * x.ndim
        start[d1], start[d2] = slice(max(-offset, 0), None), slice(max(offset, 0), None)
        y = x[tuple(start)]  # the diagonal starts at [0, 0] of each plane of y
        rest = [i for i in range(x.ndim) if i not in (d1, d2)]
        shape = tuple(y.shape[i] for i in rest) + (min(y.shape[d1], y.shape[d2]),)
        strides = tuple(y.strides[i] for i in rest) + (y.strides[d1] + y.strides[d2],)
        return strided_view(array_module(x), y, shape, strides)

    def backward(self, g):
        n1, n2 = self.in_shape[self.d1], self.in_shape[self.d2]
        return _embed(g, n1, n2, self.offset, self.d1, self.d2), None, None, None


def diagonal(input, offset=0, dim1=0, dim2=1):
    """The diagonal `offset` (0: main, > 0 above, < 0 below) of the (dim1, dim2) planes, as
    the last dim of a view."""
    nd = _ndim(input)
    d1, d2 = norm_dim(dim1, nd, "diagonal"), norm_dim(dim2, nd, "diagonal")
    if d1 == d2:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    return Diagonal.apply(input, int(offset), d1, d2)


def diag_embed(input, offset=0, dim1=-2, dim2=-1):
    """Matrices (in dims `dim1`, `dim2` of the result) with the last dim of `input` on their
    diagonal `offset`, zeros elsewhere."""
    nd = _ndim(input) + 1
    d1, d2 = norm_dim(dim1, nd, "diag_embed"), norm_dim(dim2, nd, "diag_embed")
    if d1 == d2:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    n = input._data.shape[-1] + abs(offset)
    return _embed(input, n, n, offset, d1, d2)


def trace(input):
    """The sum of the main diagonal of a matrix."""
    if _ndim(input) != 2:
        raise RuntimeError(f"trace: expected a matrix, but got tensor with dim {_ndim(input)}")
    return diagonal(input).sum()


register_composite("diag_embed_trace", _samples(
    "diag_embed_trace", (lambda x: x.diag_embed(), (2, 3)),
    (lambda x: diag_embed(x, -1, 0, 2), (2, 3)), (lambda x: x.trace(), (3, 3))))


# -- moves and selections along dims -------------------------------------------------------
def movedim(input, source, destination):
    """Dims `source` moved to positions `destination`; the others keep their order."""
    nd = _ndim(input)
    src, dst = _dims_arg(source), _dims_arg(destination)
    if len(src) != len(dst):
        raise RuntimeError(f"movedim: Invalid source or destination dims: source ({list(src)} "
                           f"dims) should contain the same number of dims as destination "
                           f"({list(dst)} dims)")
    src = [norm_dim(d, nd, "movedim") for d in src]
    dst = [norm_dim(d, nd, "movedim") for d in dst]
    norm_dims(src, nd, "movedim"), norm_dims(dst, nd, "movedim")  # repeats
    rest = iter(d for d in range(nd) if d not in src)
    placed = dict(zip(dst, src))
    order = tuple(placed[i] if i in placed else next(rest) for i in range(nd))
    return input if order == tuple(range(nd)) else permute(input, order)


moveaxis = movedim


def select(input, dim, index):
    """The slice at `index` along `dim`, without that dim (a view)."""
    d = norm_dim(dim, _ndim(input), "select")
    n = input._data.shape[d] if _ndim(input) else 0
    if not -n <= index < n:
        raise IndexError(f"select(): index {index} out of range for tensor of size "
                         f"{list(input._data.shape)} at dimension {d}")
    return getitem(input, _along(d, index))


def take(input, index):
    """Elements of the flattened `input` at `index`, in the shape of `index`."""
    return getitem(reshape(input, -1), index)


def _broadcast_shape(*shapes):
    """The shape that `shapes` broadcast to, with PyTorch's error when they do not."""
    nd = max(len(s) for s in shapes)
    padded = [(1,) * (nd - len(s)) + tuple(s) for s in shapes]
    out = []
    for d, sizes in enumerate(zip(*padded)):
        big = max(sizes)
        for i, n in enumerate(sizes):
            if n not in (1, big):
                raise RuntimeError(f"The size of tensor a ({big}) must match the size of tensor "
                                   f"b ({n}) at non-singleton dimension {d} (shapes "
                                   f"{[list(s) for s in shapes]})")
        out.append(0 if 0 in sizes else big)
    return tuple(out)


def take_along_dim(input, indices, dim=None):
    """`input` gathered at `indices` along `dim` (the other dims broadcast); without `dim`,
    `take` on the flattened input."""
    if dim is None:
        return gather(reshape(input, -1), 0, reshape(indices, -1))
    nd = _ndim(input)
    if _ndim(indices) != nd:
        raise RuntimeError(f"torch.take_along_dim(): input and indices should have the same "
                           f"number of dimensions, but got {nd} dimensions for input, and "
                           f"{_ndim(indices)} dimensions for indices")
    d = norm_dim(dim, nd, "take_along_dim")
    a, b = list(input._data.shape), list(indices._data.shape)
    a[d] = b[d] = 1
    shape = list(_broadcast_shape(a, b))
    shape_in, shape_idx = list(shape), list(shape)
    shape_in[d], shape_idx[d] = input._data.shape[d], indices._data.shape[d]
    return gather(expand(input, *shape_in), d, expand(indices, *shape_idx))


def masked_select(input, mask):
    """The elements of `input` where the boolean `mask` (both broadcast) is True, as 1-D."""
    if mask._data.dtype.kind != "b":
        raise RuntimeError(f"masked_select: expected BoolTensor for mask, got {mask.dtype}")
    shape = _broadcast_shape(input._data.shape, mask._data.shape)
    return getitem(expand(input, *shape), expand(mask, *shape))


def _select_samples():
    s = SampleMaker("select_take")
    idx = s.ints(3, 2, 2)
    mask = Tensor._make(s.rng.random((3, 4)) > 0.4)
    return [Sample(lambda x: movedim(x, (0, -1), (2, 0)), (s(2, 3, 4),)),
            Sample(lambda x: x.select(1, -1), (s(2, 3, 4),)),
            Sample(lambda x: x.take(idx), (s(3, 4),)),
            Sample(lambda x: take_along_dim(x, idx, 1), (s(2, 3),)),
            Sample(lambda x: take_along_dim(x, idx[:1], 0), (s(3, 2),)),
            Sample(lambda x: x.masked_select(mask), (s(3, 4),)),
            Sample(lambda x: x.masked_select(mask[0]), (s(3, 4),))]


register_composite("select_take", _select_samples)


# -- stacks and grids ------------------------------------------------------------------------
def _atleast(t, nd):
    shape = t._data.shape
    if len(shape) >= nd:
        return t
    if nd == 2 or len(shape) == 0:
        return reshape(t, (1,) * (nd - len(shape)) + shape)
    return reshape(t, (1,) * (2 - len(shape)) + shape + (1,))  # to 3-D: (1, n, 1), (m, n, 1)


def hstack(tensors):
    """Tensors joined column-wise: along dim 1, or dim 0 for 1-D tensors."""
    ts = [_atleast(t, 1) for t in tensors]
    return cat(ts, 0 if all(_ndim(t) == 1 for t in ts) else 1)


def vstack(tensors):
    """Tensors joined row-wise (1-D tensors become rows)."""
    return cat([_atleast(t, 2) for t in tensors], 0)


row_stack = vstack


def dstack(tensors):
    """Tensors joined depth-wise, along dim 2 (after making each at least 3-D)."""
    return cat([_atleast(t, 3) for t in tensors], 2)


def column_stack(tensors):
    """Tensors joined as columns: 0-D and 1-D tensors become (n, 1) columns."""
    return cat([reshape(t, (-1, 1)) if _ndim(t) <= 1 else t for t in tensors], 1)


def broadcast_tensors(*tensors):
    """The tensors expanded to their common broadcast shape (views)."""
    shape = _broadcast_shape(*(t._data.shape for t in tensors))
    return tuple(expand(t, *shape) for t in tensors)


def meshgrid(*tensors, indexing="ij"):
    """Coordinate grids from 1-D tensors: 'ij' gives dims in input order, 'xy' (Cartesian)
    swaps the first two."""
    if len(tensors) == 1 and not isinstance(tensors[0], Tensor):
        tensors = tuple(tensors[0])
    if indexing not in ("ij", "xy"):
        raise RuntimeError(f"torch.meshgrid: indexing must be one of \"xy\" or \"ij\", but "
                           f"received: {indexing}")
    for t in tensors:
        if _ndim(t) > 1:
            raise RuntimeError(f"torch.meshgrid: Expected 0D or 1D tensor in the tensor list "
                               f"but got: {list(t._data.shape)}")
    sizes = [t._data.size for t in tensors]
    order = list(range(len(tensors)))
    if indexing == "xy" and len(tensors) >= 2:
        order[0], order[1] = 1, 0
    shape = tuple(sizes[i] for i in order)
    return tuple(expand(reshape(t, tuple(-1 if order[p] == i else 1 for p in range(len(order)))),
                        *shape) for i, t in enumerate(tensors))


def cartesian_prod(*tensors):
    """All tuples of one element from each 1-D tensor, as rows (lexicographic order)."""
    if len(tensors) == 1:
        return tensors[0]
    from dtrain.autograd.ops.shape import stack

    return stack([reshape(g, -1) for g in meshgrid(*tensors, indexing="ij")], 1)


def _stack_samples():
    s = SampleMaker("stacks_grids")
    return [Sample(lambda a, b: hstack([a, b]), (s(3), s(2))),
            Sample(lambda a, b: hstack([a, b]), (s(2, 1), s(2, 3))),
            Sample(lambda a, b: vstack([a, b]), (s(3), s(2, 3))),
            Sample(lambda a, b: dstack([a, b]), (s(3), s(1, 3, 2))),
            Sample(lambda a, b: column_stack([a, b]), (s(3), s(3, 2))),
            Sample(lambda a, b: broadcast_tensors(a, b)[0] * broadcast_tensors(a, b)[1],
                   (s(3, 1), s(4))),
            Sample(lambda a, b: meshgrid(a, b, indexing="xy")[0], (s(3), s(2))),
            Sample(lambda a, b: cartesian_prod(a, b), (s(3), s(2)))]


register_composite("stacks_grids", _stack_samples)


# -- index sets and Vandermonde --------------------------------------------------------------
def _triangle_indices(which, row, col, offset, dtype, device):
    if row < 0 or col < 0:
        raise RuntimeError(f"{which}_indices: row and col must be non-negative, got row={row}, "
                           f"col={col}")
    dev, xp, npd = creation._placement(device, dtype, dtypes.int64)
    with device_context(dev):
        fn = xp.tril_indices if which == "tril" else xp.triu_indices
        return Tensor._make(xp.stack(fn(row, offset, col)).astype(npd))


def tril_indices(row, col, offset=0, *, dtype=None, device=None):
    """The (2, N) coordinates of the lower triangle (on and below diagonal `offset`) of a
    (row, col) matrix, row by row."""
    return _triangle_indices("tril", row, col, offset, dtype, device)


def triu_indices(row, col, offset=0, *, dtype=None, device=None):
    """The (2, N) coordinates of the upper triangle (on and above diagonal `offset`)."""
    return _triangle_indices("triu", row, col, offset, dtype, device)


def vander(x, N=None, increasing=False):
    """Columns of powers of the 1-D `x`: x^(N-1), ..., x^0 (x^0 first if `increasing`)."""
    from dtrain.autograd.ops.scan import cumprod

    if _ndim(x) != 1:
        raise RuntimeError(f"x must be a one-dimensional tensor, got {_ndim(x)}-D")
    n = x._data.shape[0]
    N = n if N is None else N
    if N < 0:
        raise RuntimeError(f"N must be non-negative, got {N}")
    if x._data.dtype.kind in "bu" or (x._data.dtype.kind == "i" and x._data.dtype.itemsize < 8):
        x = x.to(dtypes.int64)  # torch computes integer powers in int64
    xp = array_module(x._data)
    ones = Tensor._make(xp.ones((n, min(N, 1)), dtype=x._data.dtype))
    # NOTE: powers as a running product (as torch): exact at x = 0, unlike x ** k's gradient
    powers = cat([ones, cumprod(expand(reshape(x, (n, 1)), n, max(N - 1, 0)), 1)], 1)
    return powers if increasing else flip(powers, 1)


register_composite("vander", _samples(
    "vander", (lambda x: vander(x), (3,)), (lambda x: vander(x, 4, increasing=True), (2,))))


def _unfold_samples():
    s = SampleMaker("unfold")
    return [Sample(lambda x: x.unfold(1, 2, 1), (s(2, 4),)),
            Sample(lambda x: x.unfold(0, 2, 2), (s(5, 3),)),
            Sample(lambda x: x.t().unfold(-1, 3, 2) * 2, (s(7, 2),))]


@register("unfold", _unfold_samples)
class Unfold(Op):
    """`Tensor.unfold`: windows of `size`, `step` apart along `dim`, as a strided view (the
    dim becomes the window count, the window a new last dim). The gradient adds each
    window's gradient back where it was read (overlaps sum)."""

    is_view = True

    def forward(self, x, dim, size, step):
        xp = array_module(x)
        self.in_shape, self.dim, self.size, self.step = x.shape, dim, size, step
        count = (x.shape[dim] - size) // step + 1
        shape = x.shape[:dim] + (count,) + x.shape[dim + 1:] + (size,)
        st = x.strides
        strides = st[:dim] + (st[dim] * step,) + st[dim + 1:] + (st[dim],)
        return strided_view(xp, x, shape, strides)

    def backward(self, g):
        xp = array_module(g._data)
        count = g._data.shape[self.dim]
        index = xp.arange(0, count * self.step, self.step)[:, None] + xp.arange(self.size)
        # as read by x[..., index, ...]: the window's position right after the count
        g = movedim(g, -1, self.dim + 1)
        return IndexGrad.apply(g, self.in_shape, _along(self.dim, index)), None, None, None


def unfold(input, dimension, size, step):
    """`Tensor.unfold(dimension, size, step)`: the windows of `size` along `dimension`,
    `step` apart, as a new last dim of a view."""
    if _ndim(input) == 0:
        return unfold(reshape(input, 1), 0, size, step).reshape(size)
    d = norm_dim(dimension, _ndim(input), "unfold")
    n = input._data.shape[d]
    if size > n:
        raise RuntimeError(f"maximum size for tensor at dimension {d} is {n} but size is {size}")
    if step <= 0:
        raise RuntimeError(f"step is {step} but must be > 0")
    return Unfold.apply(input, d, size, step)
