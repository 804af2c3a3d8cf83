"""Indexing: basic and advanced `x[key]` (get and set), gather/scatter_add, index_select,
masked_fill. Index arrays are constants; gradients flow to the indexed tensor and values."""
from dtrain.autograd.node import Op, replay_view
from dtrain.autograd.ops._util import norm_dim
from dtrain.autograd.ops.pointwise import where
from dtrain.autograd.ops.shape import pad, sum_to
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
    is_view = True

    def forward(self, x, key):
        self.in_shape, self.key = x.shape, key
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
            gv = sum_to(gv, self.v_shape[max(extra, 0):]).reshape(self.v_shape)
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
    def forward(self, x, dim, index):
        xp = array_module(x)
        self.in_shape, self.dim, self.index = x.shape, dim, index
        return x[_along(xp, index, dim)]

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
    def forward(self, x, dim, index, src):
        xp = array_module(x)
        self.dim, self.index, self.src_shape = dim, index, src.shape
        out = x.copy()
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
    d = norm_dim(dim, input._data.ndim, "gather")
    _check_gather_index("gather", input, d, index)
    return Gather.apply(input, d, index)


def scatter_add(input, dim, index, src):
    d = norm_dim(dim, input._data.ndim, "scatter_add")
    _check_gather_index("scatter_add", input, d, index, src)
    return ScatterAdd.apply(input, d, index, src)


def index_select(input, dim, index):
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
