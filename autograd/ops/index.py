"""Indexing: basic and advanced `x[key]` (get and set), gather/scatter_add, index_select,
masked_fill. Index arrays are constants; gradients flow to the indexed tensor and values."""
from dtrain.autograd.node import Op, replay_view
from dtrain.autograd.ops._util import norm_dim
from dtrain.autograd.ops.pointwise import where
from dtrain.autograd.ops.shape import pad
from dtrain.autograd.registry import Sample, SampleMaker, register, register_composite
from dtrain.core import backend
from dtrain.core.backend import array_module
from dtrain.core.tensor import Tensor


def normalize_key(key, xp):
    """Replace Tensors and lists inside an index by backend arrays."""
    if isinstance(key, tuple):
        return tuple(_key_item(k, xp) for k in key)
    return _key_item(key, xp)


def _key_item(k, xp):
    if isinstance(k, Tensor):
        k = k._data
    elif isinstance(k, list):
        k = xp.asarray(k)
    else:
        return k
    if k.dtype.kind not in "iub":
        raise IndexError(f"tensors used as indices must be long, int, byte or bool tensors, "
                         f"got {k.dtype}")
    return k


def _has_int_array(key):
    items = key if isinstance(key, tuple) else (key,)
    return any(hasattr(k, "dtype") and k.dtype.kind in "iu" for k in items)


def _has_bool_array(key):
    items = key if isinstance(key, tuple) else (key,)
    return any(getattr(k, "ndim", 0) and k.dtype.kind == "b" for k in items)


def _index_samples():
    s = SampleMaker("index")
    mask = Tensor._make(s.rng.random((3, 4)) > 0.4)
    idx = Tensor._make(s.rng.integers(0, 3, (5,)))  # repeats: gradients must accumulate
    return [Sample(lambda x: x[1], (s(3, 4),)),
            Sample(lambda x: x[:, 1:3], (s(3, 4),)),
            Sample(lambda x: x[..., ::2, None], (s(2, 3, 4),)),
            Sample(lambda x: x[idx], (s(3, 4),)),
            Sample(lambda x: x[idx, 1:], (s(3, 4),)),
            Sample(lambda x: x[mask], (s(3, 4),)),
            Sample(lambda x: x[[0, 2], [1, 1]], (s(3, 4),))]


@register("index", _index_samples)
class Index(Op):
    saves = ("key",)
    is_view = True

    def forward(self, x, key):
        self.in_shape, self.key = x.shape, key
        self.shape_from_data = (1,) if _has_bool_array(key) else ()
        out = x[key]
        if not isinstance(out, type(x)) and not _has_int_array(key):
            # NumPy returns a copied scalar for x[i] of a 1-d x; a trailing `...` keeps the
            # 0-d element a view, so that `x[i].mul_(2)` changes x, as in PyTorch
            out = x[(key if isinstance(key, tuple) else (key,)) + (Ellipsis,)]
        return out

    def backward(self, g):
        return (IndexGrad.apply(g, self.in_shape, self.key), None)


def _index_grad_samples():
    s = SampleMaker("index_grad")
    idx = Tensor._make(s.rng.integers(0, 4, (6,)))
    return [Sample(lambda g: IndexGrad.apply(g, (4, 3), idx._data), (s(6, 3),)),
            Sample(lambda g: IndexGrad.apply(g, (4, 3), (slice(1, 3), 2)), (s(2),))]


@register("index_grad", _index_grad_samples)
class IndexGrad(Op):
    """The adjoint of indexing: zeros of `shape` with `g` added at `key` (repeats summed)."""

    saves = ("key",)

    def forward(self, g, shape, key):
        xp = array_module(g)
        self.key = key
        out = xp.zeros(shape, dtype=g.dtype)
        if _has_int_array(key):
            backend.scatter_add(xp, out, key, g)
        else:
            out[key] = g
        return out

    def backward(self, gg):
        return (gg[self.key], None, None)


def _index_put_samples():
    s = SampleMaker("index_put")
    idx = Tensor._make(s.rng.permutation(4)[:2])

    def put(x, v, key):
        y = x * 1.0  # a non-leaf copy to write into
        y[key] = v
        return y
    return [Sample(lambda x, v: put(x, v, (slice(None), 1)), (s(3, 4), s(3))),
            Sample(lambda x, v: put(x, v, idx), (s(4, 3), s(2, 3))),
            Sample(lambda x, v: put(x, v, 0), (s(2, 3), s(1))),
            Sample(lambda x: put(x, 0.5, (slice(1, None),)), (s(3, 2),))]


@register("index_put", _index_put_samples)
class IndexPut(Op):
    """`x[key] = v` as an op: out-of-place in forward; setitem writes the result back."""

    saves = ("key", "kept")

    def forward(self, x, v, key):
        xp = array_module(x)
        self.key, self.v_shape = key, getattr(v, "shape", ())
        out = x.copy()
        out[key] = fit_value(v, out[key])
        kept = xp.ones(x.shape, dtype=bool)
        kept[key] = False
        self.kept = kept
        return out

    def backward(self, g):
        nx, nv = self.needs_input_grad[:2]
        gx = g * Tensor._make(self.kept) if nx else None
        gv = None
        if nv:
            gv = g[self.key]
            extra = len(self.v_shape) - gv._data.ndim  # leading size-1 dims of the value
            gv = gv.sum_to_size(self.v_shape[max(extra, 0):]).reshape(self.v_shape)
        return gx, gv, None


def _copy_slices_samples():
    s = SampleMaker("copy_slices")

    def through(view, inplace, out=lambda y: y):
        def fn(x, v):
            y = x * 1.0  # a non-leaf base
            inplace(view(y), v)
            return out(y)
        return fn
    z = Tensor._make(s.rng.uniform(-1, 1, (3, 4)))

    def into_zeros(x, v):
        y = z * 0.0  # a base that does not require grad gains a history
        y[1].copy_(v)
        return y * x
    return [Sample(through(lambda y: y[1:3], lambda a, v: a.mul_(v)), (s(3, 4), s(2, 4))),
            Sample(through(lambda y: y.t()[0], lambda a, v: a.copy_(v)), (s(3, 4), s(3))),
            Sample(through(lambda y: y.view(-1)[2:5], lambda a, v: a.add_(v), lambda y: y * y),
                   (s(3, 4), s(3))),
            Sample(through(lambda y: y.split(2)[0], lambda a, v: a.__setitem__(0, v)),
                   (s(3, 4), s(4))),
            Sample(into_zeros, (s(3, 4), s(4)))]


@register("copy_slices", _copy_slices_samples)
class CopySlices(Op):
    """`base` with `src` written into its view reached by `steps` (see node._mark_view),
    out-of-place: an in-place change of a view, rebased onto its base's history as in
    PyTorch's CopySlices. The base's gradient is zero inside the view, `src`'s is the view
    of the gradient."""

    def forward(self, base, src, steps):
        self.steps = steps
        out = base.copy(order="K")  # same layout: reshape steps stay views
        try:
            replay_view(out, steps)[...] = src
        except ValueError as err:  # e.g. a view made by expand() is read-only
            raise RuntimeError(f"unsupported operation: cannot write into this view in place "
                               f"({err}); clone() it first") from None
        return out

    def backward(self, g):
        nb, ns = self.needs_input_grad[:2]
        gb = CopySlices.apply(g, 0.0, self.steps) if nb else None
        gs = replay_view(g, self.steps) if ns else None
        return gb, gs, None


def fit_value(v, target):
    """Drop leading size-1 dims of an assigned value beyond the target's rank (PyTorch
    accepts `x[i] = t` with t of shape [1]; NumPy 2 does not)."""
    extra = getattr(v, "ndim", 0) - getattr(target, "ndim", 0)
    if extra > 0 and all(s == 1 for s in v.shape[:extra]):
        return v.reshape(v.shape[extra:])
    return v


def _check_gather_index(op, input, dim, index, src=None):
    x, idx = input._data, index._data
    if idx.dtype.kind not in "iu":
        raise RuntimeError(f"{op}(): Expected dtype int64 for index, got {index.dtype}")
    if idx.ndim != x.ndim:
        raise RuntimeError(f"Index tensor must have the same number of dimensions as input "
                           f"tensor ({op}: index {list(idx.shape)}, input {list(x.shape)})")
    for d, (i, s) in enumerate(zip(idx.shape, x.shape)):
        if d != dim and i > s:
            raise RuntimeError(f"Size does not match at dimension {d} expected index "
                               f"{list(idx.shape)} to be smaller than self {list(x.shape)} "
                               f"apart from dimension {dim}")
    if src is not None and any(i > s for i, s in zip(idx.shape, src._data.shape)):
        raise RuntimeError(f"Expected index {list(idx.shape)} to be smaller than src "
                           f"{list(src._data.shape)} in every dimension ({op})")


def _along(xp, index, dim):
    """An advanced index that picks `index[i, j, ...]` along `dim` at position (i, j, ...)."""
    nd = index.ndim
    return tuple(index if d == dim else
                 xp.arange(n).reshape((1,) * d + (n,) + (1,) * (nd - d - 1))
                 for d, n in enumerate(index.shape))


def _gather_samples():
    s = SampleMaker("gather")
    i1, i0 = s.ints(4, 3, 2), s.ints(3, 5, 2)
    return [Sample(lambda x: x.gather(1, i1), (s(3, 4),)),
            Sample(lambda x: x.gather(0, i0), (s(3, 4),))]


@register("gather", _gather_samples)
class Gather(Op):
    saves = ("index",)

    def forward(self, x, dim, index, out=None):
        xp = array_module(x)
        self.in_shape, self.dim, self.index = x.shape, dim, index
        picked = x[_along(xp, index, dim)]
        if out is None:
            return picked
        xp.copyto(out, picked)  # a small transient: the picked entries of index's shape
        return out

    def backward(self, g):
        zeros = Tensor._make(array_module(g._data).zeros(self.in_shape, dtype=g._data.dtype))
        return (ScatterAdd.apply(zeros, self.dim, Tensor._make(self.index), g), None, None)


def _scatter_add_samples():
    s = SampleMaker("scatter_add")
    i1, i0 = s.ints(4, 3, 3), s.ints(2, 4, 2)
    return [Sample(lambda x, v: x.scatter_add(1, i1, v), (s(3, 4), s(3, 3))),
            Sample(lambda x, v: x.scatter_add(0, i0, v), (s(2, 2), s(5, 3)))]


@register("scatter_add", _scatter_add_samples)
class ScatterAdd(Op):
    saves = ("index",)

    def forward(self, x, dim, index, src, out=None):
        xp = array_module(x)
        self.dim, self.index, self.src_shape = dim, index, src.shape
        if out is None:
            out = x.copy()
        else:
            xp.copyto(out, x)
        block = src[tuple(slice(0, n) for n in index.shape)]
        backend.scatter_add(xp, out, _along(xp, index, dim), block)
        return out

    def backward(self, g):
        nx, _, _, nsrc = self.needs_input_grad
        gsrc = None
        if nsrc:
            gsrc = g.gather(self.dim, Tensor._make(self.index))
            extra = [(0, s - i) for s, i in zip(self.src_shape, self.index.shape)]
            if any(e for _, e in extra):
                gsrc = pad(gsrc, tuple(v for pair in reversed(extra) for v in pair))
        return (g if nx else None, None, None, gsrc)


# -- public functions ---------------------------------------------------------------------
def getitem(input, key):
    return Index.apply(input, normalize_key(key, array_module(input._data)))


def gather(input, dim, index):
    """out[i][j] = input[i][index[i][j]] along `dim` (dim=1 shown); out has index's shape."""
    d = norm_dim(dim, input._data.ndim, "gather")
    _check_gather_index("gather", input, d, index)
    return Gather.apply(input, d, index)


def scatter_add(input, dim, index, src):
    """A copy of input with src added at `index` along `dim` (index, src: same shape)."""
    d = norm_dim(dim, input._data.ndim, "scatter_add")
    _check_gather_index("scatter_add", input, d, index, src)
    return ScatterAdd.apply(input, d, index, src)


def index_select(input, dim, index):
    """The entries of input at the 1-D `index` along `dim` (that dim becomes len(index))."""
    if index._data.ndim > 1:
        raise IndexError("index_select(): Index is supposed to be a vector")
    d = norm_dim(dim, input._data.ndim, "index_select")
    return getitem(input, (slice(None),) * d + (index,))


def masked_fill(input, mask, value):
    """`input` with `value` where the boolean `mask` (broadcastable) is True."""
    if mask._data.dtype.kind != "b":
        raise RuntimeError(f"masked_fill_ only supports boolean masks, but got mask with dtype "
                           f"{mask.dtype}")
    return where(mask, value, input)


def _masked_fill_samples():
    s = SampleMaker("masked_fill")
    mask = Tensor._make(s.rng.random((3, 4)) > 0.5)
    return [Sample(lambda x: x.masked_fill(mask, -1.0), (s(3, 4),)),
            Sample(lambda x, v: x.masked_fill(mask[0], v), (s(3, 4), s()))]


register_composite("masked_fill", _masked_fill_samples)
def _index_select_samples():
    s = SampleMaker("index_select")
    idx = s.ints(4, 5)
    return [Sample(lambda x: x.index_select(1, idx), (s(3, 4),))]


register_composite("index_select", _index_select_samples)


# -- in-place indexing family: index_add/copy/fill/put, put, masked_scatter, scatter ------------
def _dim_key(op, input, dim, index):
    """The dim and the key `[:, ..., index]` that selects `index` (a vector) along `dim`."""
    if index._data.ndim > 1 or index._data.dtype.kind not in "iu":
        raise IndexError(f"{op}(): Index is supposed to be a vector of int64 (got a "
                         f"{index._data.ndim}-d {index.dtype} tensor)")
    d = norm_dim(dim, input._data.ndim, op)
    return d, (slice(None),) * d + (index._data.reshape(-1),)


def _check_source(op, input, d, index, source):
    x, src = input._data, source._data
    if src.dtype != x.dtype:
        raise RuntimeError(f"{op}(): self ({input.dtype}) and source ({source.dtype}) must "
                           f"have the same scalar type")
    n = index._data.size
    if src.ndim != x.ndim or (src.ndim and src.shape[d] != n):
        got = src.shape[d] if src.ndim == x.ndim and src.ndim else list(src.shape)
        raise RuntimeError(f"{op}(): Number of indices ({n}) should be equal to "
                           f"source.size(dim) ({got})")
    if any(s != t for i, (s, t) in enumerate(zip(src.shape, x.shape)) if i != d):
        raise RuntimeError(f"{op}(): source tensor shape must match self tensor shape, "
                           f"excluding the specified dimension. Got self.shape = "
                           f"{list(x.shape)} source.shape = {list(src.shape)}")


def index_add(input, dim, index, source, *, alpha=1):
    """`input` with `alpha * source[..., i, ...]` added at `input[..., index[i], ...]` along
    `dim` (repeated indices accumulate)."""
    d, key = _dim_key("index_add", input, dim, index)
    _check_source("index_add", input, d, index, source)
    return input + IndexGrad.apply(source if alpha == 1 else source * alpha,
                                   input._data.shape, key)


def index_copy(input, dim, index, source):
    """`input` with `source[..., i, ...]` written at `input[..., index[i], ...]` along `dim`."""
    d, key = _dim_key("index_copy", input, dim, index)
    _check_source("index_copy", input, d, index, source)
    return IndexPut.apply(input, source, key)


def index_fill(input, dim, index, value):
    """`input` with `value` (a number or a 0-d tensor) at the `index` entries along `dim`."""
    if isinstance(value, Tensor) and value._data.ndim:
        raise RuntimeError(f"index_fill_ only supports a 0-dimensional value tensor, but got "
                           f"tensor with {value._data.ndim} dimension(s).")
    return IndexPut.apply(input, value, _dim_key("index_fill", input, dim, index)[1])


def index_put(input, indices, values, accumulate=False):
    """`input` with `values` (broadcast) written, or added with `accumulate=True` (repeats
    summing), at `input[indices]` (a tuple of index or mask tensors)."""
    if values._data.dtype != input._data.dtype:
        raise RuntimeError(f"Index put requires the source and destination dtypes match, got "
                           f"{input.dtype} for the destination and {values.dtype} for the "
                           f"source.")
    key = normalize_key(tuple(indices), array_module(input._data))
    if not accumulate:
        return IndexPut.apply(input, values, key)
    picked = input._data[key].shape
    return input + IndexGrad.apply(values.expand(picked), input._data.shape, key)


def put(input, index, source, accumulate=False):
    """`input` with `source` written (or added) at the flat positions `index`, as if input
    were 1-d."""
    if index._data.size != source._data.size:
        raise RuntimeError(f"put_(): Expected source and index to have the same number of "
                           f"elements, but got source.numel() = {source._data.size}, "
                           f"index.numel() = {index._data.size}")
    flat = index_put(input.reshape(-1), (index.reshape(-1),), source.reshape(-1), accumulate)
    return flat.reshape(input._data.shape)


def masked_scatter(input, mask, source):
    """`input` with the first elements of `source` (in order) where the boolean `mask`
    (broadcast to input) is True."""
    if mask._data.dtype.kind != "b":
        raise RuntimeError(f"masked_scatter_ only supports boolean masks, but got mask with "
                           f"dtype {mask.dtype}")
    where_ = array_module(mask._data).broadcast_to(mask._data, input._data.shape)
    n = int(where_.sum())
    if source._data.size < n:
        raise RuntimeError(f"masked_scatter: Number of elements of source ({source._data.size}) "
                           f"< number of ones in mask ({n})")
    return IndexPut.apply(input, source.reshape(-1)[:n], where_)


def scatter(input, dim, index, src=None, *, value=None, reduce=None):
    """`input` with `src[i][j]` written at `input[index[i][j]][j]` (dim 0; likewise for other
    dims), or the number `value` (also given as `src`). `reduce` "add"/"multiply" (deprecated
    in PyTorch) combines instead, as scatter_reduce "sum"/"prod"."""
    src = value if src is None else src
    if src is None:
        raise TypeError("scatter(): expected src (a tensor) or value (a number)")
    d = norm_dim(dim, input._data.ndim, "scatter")
    if reduce is not None:
        if reduce not in ("add", "multiply"):
            raise RuntimeError(f"reduce argument must be either add or multiply, got {reduce!r}")
        if not isinstance(src, Tensor):
            src = Tensor._make(array_module(input._data).full(index._data.shape, src,
                                                              dtype=input._data.dtype))
        return scatter_reduce(input, d, index, src, {"add": "sum", "multiply": "prod"}[reduce])
    tensor_src = isinstance(src, Tensor)
    _check_gather_index("scatter", input, d, index, src if tensor_src else None)
    if tensor_src:
        _check_same_dtype(input, src)
        src = src[tuple(slice(0, n) for n in index._data.shape)]
    return IndexPut.apply(input, src, _along(array_module(input._data), index._data, d))


def _check_same_dtype(input, src):
    if src._data.dtype != input._data.dtype:
        raise RuntimeError(f"scatter(): Expected self.dtype to be equal to src.dtype (got "
                           f"{input.dtype} and {src.dtype})")


_REDUCTIONS = ("sum", "prod", "mean", "amax", "amin")


def scatter_reduce(input, dim, index, src, reduce, *, include_self=True):
    """`input` where each `src[i][j]` is combined into `input[index[i][j]][j]` (dim 0) by
    `reduce` ("sum", "prod", "mean", "amax", "amin"), the input's own value taking part
    unless `include_self=False` (untouched positions keep it either way)."""
    if reduce not in _REDUCTIONS:
        raise RuntimeError(f"reduce argument must be either {', '.join(_REDUCTIONS)}, got "
                           f"{reduce!r}")
    d = norm_dim(dim, input._data.ndim, "scatter_reduce")
    _check_gather_index("scatter_reduce", input, d, index, src)
    _check_same_dtype(input, src)
    if reduce in ("prod", "amax", "amin"):
        return ScatterReduce.apply(input, d, index, src, reduce=reduce,
                                   include_self=include_self)
    base = input if include_self else scatter(input, d, index, 0)
    total = ScatterAdd.apply(base, d, index, src)
    if reduce == "sum":
        return total
    xp = array_module(input._data)
    ones = Tensor._make(xp.ones(input._data.shape, dtype=input._data.dtype))
    count = ScatterAdd.apply(ones if include_self else scatter(ones, d, index, 0), d, index,
                             Tensor._make(xp.ones(index._data.shape, dtype=input._data.dtype)))
    return total / count if input._data.dtype.kind == "f" else total // count


def _scatter_reduce_samples():
    s = SampleMaker("scatter_reduce")
    i1, i0 = s.ints(4, 3, 3), s.ints(2, 4, 2)
    out = []
    for reduce in ("prod", "amax", "amin"):
        for include_self in (True, False):
            def fn(x, v, reduce=reduce, include_self=include_self):
                return x.scatter_reduce(1, i1, v, reduce, include_self=include_self)
            out.append(Sample(fn, (s.distinct(3, 4), s.distinct(3, 3))))
    out.append(Sample(lambda x, v: x.scatter_reduce(0, i0, v, "amax"),
                      (s.distinct(2, 2), s.distinct(5, 3))))
    return out


_UFUNCS = {"prod": "multiply", "amax": "maximum", "amin": "minimum"}


@register("scatter_reduce", _scatter_reduce_samples)
class ScatterReduce(Op):
    """scatter_reduce by "prod", "amax" or "amin" (sum and mean compose scatter_add).
    The gradient of amax/amin is shared evenly by the tied maxima (minima), as PyTorch."""

    saves = ("inputs", "output", "index")

    def forward(self, x, dim, index, src, reduce, include_self):
        xp = array_module(x)
        self.dim, self.index, self.reduce, self.include_self = dim, index, reduce, include_self
        key = _along(xp, index, dim)
        block = src[tuple(slice(0, n) for n in index.shape)]
        out = x.copy()
        if not include_self:  # a contribution (or prod's 1) replaces the input's value
            out[key] = 1 if reduce == "prod" else block
        backend.scatter_reduce(xp, out, key, block, _UFUNCS[reduce])
        return out

    def backward(self, g):
        x, src = self.inputs[0], self.inputs[3]
        xp = array_module(g._data)
        key = _along(xp, self.index, self.dim)
        idx = Tensor._make(self.index)
        block = src[tuple(slice(0, n) for n in self.index.shape)]
        if self.reduce == "prod":
            gx, gb = self._prod_grads(g, x, block, key)
        else:
            out = self.output._data
            xd = x._data
            self_hit = (xd == out) if self.include_self else xp.zeros(xd.shape, dtype=bool)
            src_hit = block._data == out[key]
            count = self_hit.astype(g._data.dtype)
            backend.scatter_add(xp, count, key, src_hit.astype(g._data.dtype))
            touched = xp.zeros(xd.shape, dtype=bool)
            touched[key] = True
            wx = xp.where(touched, self_hit / xp.maximum(count, 1), 1.0).astype(g._data.dtype)
            gx = g * Tensor._make(wx)
            gb = g.gather(self.dim, idx) * Tensor._make((src_hit / count[key]).astype(
                g._data.dtype))
        nx, nsrc = self.needs_input_grad[0], self.needs_input_grad[3]
        gsrc = None
        if nsrc:
            extra = [(0, s - i) for s, i in zip(src._data.shape, self.index.shape)]
            gsrc = gb
            if any(e for _, e in extra):
                gsrc = pad(gb, tuple(v for pair in reversed(extra) for v in pair))
        return (gx if nx else None, None, None, gsrc, None, None)

    def _prod_grads(self, g, x, block, key):
        """d out / d contribution = the product of the group's other contributions."""
        xp = array_module(g._data)
        out = self.output
        idx = Tensor._make(self.index)
        touched = xp.zeros(x._data.shape, dtype=bool)
        touched[key] = True
        own = x if self.include_self else None
        if not bool(xp.any(block._data == 0)) and (own is None or not bool(
                xp.any(x._data[touched] == 0))):
            hit = Tensor._make(touched)
            gx = (g * where(hit, out / where(hit, x, 1.0), 1.0) if own is not None else
                  g * Tensor._make((~touched).astype(g._data.dtype)))
            return gx, (g * out).gather(self.dim, idx) / block
        # NOTE: with zeros, the product of the others is the group's product of non-zero
        # contributions where the element is the group's only zero, else out / element (0 if
        # the group holds another zero); this path is first-order only, as Prod's.
        vals = block._data
        zeros = xp.zeros(x._data.shape, dtype=g._data.dtype)
        nonzero = xp.ones(x._data.shape, dtype=g._data.dtype)
        if own is not None:
            zeros += touched & (x._data == 0)
            nonzero = xp.where(touched & (x._data != 0), x._data, 1.0)
        backend.scatter_add(xp, zeros, key, (vals == 0).astype(zeros.dtype))
        backend.scatter_reduce(xp, nonzero, key, xp.where(vals == 0, 1.0, vals), "multiply")
        o = out._data

        def others(v, o_, z, nz):
            return xp.where(v == 0, xp.where(z == 1, nz, 0.0), o_ / xp.where(v == 0, 1.0, v))
        wx = (xp.where(touched, others(x._data, o, zeros, nonzero), 1.0) if own is not None
              else (~touched).astype(g._data.dtype))
        wb = others(vals, o[key], zeros[key], nonzero[key])
        return (g * Tensor._make(wx.astype(g._data.dtype)),
                g.gather(self.dim, idx) * Tensor._make(wb.astype(g._data.dtype)))


def _index_family_samples():
    s = SampleMaker("index_family")
    idx = Tensor._make(s.rng.integers(0, 4, (5,)))  # repeats: index_add must accumulate
    perm = Tensor._make(s.rng.permutation(4)[:3])
    mask = Tensor._make(s.rng.random((3, 4)) > 0.5)
    rows, cols = Tensor._make(s.rng.integers(0, 3, (6,))), Tensor._make(s.rng.integers(0, 4, (6,)))
    i1 = s.ints(4, 3, 3)
    distinct = Tensor._make(s.rng.random((3, 4)).argsort(axis=1)[:, :3])  # one writer each
    return [Sample(lambda x, v: x.index_add(1, idx, v, alpha=2.0), (s(3, 4), s(3, 5))),
            Sample(lambda x, v: x.index_copy(0, perm, v), (s(4, 2), s(3, 2))),
            Sample(lambda x, v: x.index_fill(-1, perm, v), (s(2, 4), s())),
            Sample(lambda x: x.index_fill(0, perm, -1.5), (s(4, 3),)),
            Sample(lambda x, v: x.index_put((rows, cols), v, accumulate=True), (s(3, 4), s(6))),
            Sample(lambda x, v: x.index_put((perm,), v), (s(4, 2), s(2))),
            Sample(lambda x, v: x.put(cols, v, accumulate=True), (s(3, 4), s(2, 3))),
            Sample(lambda x, v: x.masked_scatter(mask, v), (s(3, 4), s(13))),
            Sample(lambda x, v: x.scatter(1, distinct, v), (s(3, 4), s(3, 5))),
            Sample(lambda x: x.scatter(1, i1, 0.5), (s(3, 4),)),
            Sample(lambda x, v: x.scatter(1, i1, v, reduce="add"), (s(3, 4), s(3, 3))),
            Sample(lambda x, v: x.scatter_reduce(1, i1, v, "sum", include_self=False),
                   (s(3, 4), s(3, 3))),
            Sample(lambda x, v: x.scatter_reduce(1, i1, v, "mean"), (s(3, 4), s(3, 3))),
            Sample(lambda x, v: x.scatter_reduce(1, i1, v, "mean", include_self=False),
                   (s(3, 4), s(3, 3)))]


register_composite("index_family", _index_family_samples)
