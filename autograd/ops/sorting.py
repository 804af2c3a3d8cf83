"""Sorting and selection by rank: sort, argsort, topk, kthvalue, median, mode, unique.
Indices come from non-differentiable ops; values are gathered from the input at them, so
gradients flow back through `gather` to the selected elements."""
from dtrain.autograd.ops._util import norm_dim
from dtrain.autograd.ops.index import gather
from dtrain.autograd.ops.pointwise import NonDiff, _nondiff, where
from dtrain.autograd.ops.reduce import ValuesIndices
from dtrain.autograd.registry import Sample, SampleMaker, register, register_composite
from dtrain.core.backend import array_module, running
from dtrain.core.tensor import Tensor


def _sorted_index(xp, a, dim=-1, descending=False):
    """Stable argsort along `dim`; descending keeps ties in their original order too (NaN
    sorts as the largest value, as in torch)."""
    if not descending:
        return xp.argsort(a, axis=dim, kind="stable").astype("int64")
    # ascending order of the reversed input, reversed back: descending, ties in input order
    rev = xp.argsort(xp.flip(a, dim), axis=dim, kind="stable")
    return (a.shape[dim] - 1 - xp.flip(rev, dim)).astype("int64")


def _mode_index(xp, a, dim=-1):
    """The index of the most frequent value along `dim` (the smallest such value; its last
    occurrence), found from the run lengths of the sorted values."""
    order = _sorted_index(xp, xp.moveaxis(a, dim, -1))
    s = xp.take_along_axis(xp.moveaxis(a, dim, -1), order, -1)
    n = s.shape[-1]
    pos = xp.arange(n)
    new_run = xp.ones(s.shape, dtype=bool)
    new_run[..., 1:] = s[..., 1:] != s[..., :-1]
    end_run = xp.ones(s.shape, dtype=bool)
    end_run[..., :-1] = new_run[..., 1:]
    start = running(xp, "maximum", xp.where(new_run, pos, 0), -1)
    end = xp.flip(running(xp, "minimum", xp.flip(xp.where(end_run, pos, n), -1), -1), -1)
    best = xp.argmax(end - start, axis=-1)[..., None]  # first longest run: smallest value
    last = xp.take_along_axis(end, best, -1)
    return xp.moveaxis(xp.take_along_axis(order, last, -1), -1, dim)


class Argsort(NonDiff):
    """Indices that sort input along `dim`, stably (no gradient)."""

    def forward(self, a, dim=-1, descending=False):
        return _sorted_index(array_module(a), a, dim, descending)


class ModeIndices(NonDiff):
    """The index of the most frequent value along `dim` (no gradient)."""

    def forward(self, a, dim=-1):
        return _mode_index(array_module(a), a, dim)


_argsort = _nondiff(Argsort, "argsort", 1)
_mode = _nondiff(ModeIndices, "mode_indices", 1)


def _as_1d(input):
    return input.reshape(1) if input._data.ndim == 0 else input


def _pick(input, idx, d, keepdim):
    """(values, indices) at `idx` (size 1 along `d`), without that dim unless `keepdim`."""
    x = _as_1d(input)
    values = gather(x, d, idx)
    if input._data.ndim == 0:
        return ValuesIndices(values.reshape(()), idx.reshape(()))
    if not keepdim:
        values, idx = values.squeeze(d), idx.squeeze(d)
    return ValuesIndices(values, idx)


def argsort(input, dim=-1, descending=False, stable=False):
    """Indices that sort `input` along `dim` (always stable: ties keep their order)."""
    d = norm_dim(dim, input._data.ndim, "argsort")
    idx = _argsort(_as_1d(input), d, descending)
    return idx.reshape(()) if input._data.ndim == 0 else idx


def sort(input, dim=-1, descending=False, stable=False):
    """(values, indices) of `input` sorted along `dim` (stable; NaN as the largest)."""
    d = norm_dim(dim, input._data.ndim, "sort")
    idx = _argsort(_as_1d(input), d, descending)
    return _pick(input, idx, d, True)


def msort(input):
    """`input` sorted along dim 0."""
    return sort(input, 0).values


def topk(input, k, dim=-1, largest=True, sorted=True):
    """(values, indices) of the `k` largest (or smallest) elements along `dim`, in order."""
    d = norm_dim(dim, input._data.ndim, "topk")
    n = input._data.shape[d] if input._data.ndim else 1
    if not 0 <= k <= n:
        raise RuntimeError(f"selected index k out of range (topk: k={k}, but dim {d} has size "
                           f"{n})")
    idx = _argsort(_as_1d(input), d, largest).narrow(d, 0, k)
    return _pick(input, idx, d, True)


def kthvalue(input, k, dim=-1, keepdim=False):
    """(values, indices) of the `k`-th smallest element (1-based) along `dim`."""
    d = norm_dim(dim, input._data.ndim, "kthvalue")
    n = input._data.shape[d] if input._data.ndim else 1
    if not 1 <= k <= n:
        raise RuntimeError(f"kthvalue(): selected number k out of range for dimension {d} "
                           f"(k={k}, size {n})")
    idx = _argsort(_as_1d(input), d).narrow(d, k - 1, 1)
    return _pick(input, idx, d, keepdim)


def _median(input, dim, keepdim, skip_nan, op):
    if dim is None:
        flat = input.reshape(-1)
        if flat._data.size == 0:
            return Tensor._make(array_module(flat._data).full((), float("nan"),
                                                              flat._data.dtype))
        return _median(flat, 0, False, skip_nan, op).values
    d = norm_dim(dim, input._data.ndim, op)
    x = _as_1d(input)
    order = _argsort(x, d)
    n = x._data.shape[d]
    if n == 0:
        raise IndexError(f"{op}(): Expected reduction dim {d} to have non-zero size.")
    if x._data.dtype.kind != "f":
        return _pick(input, order.narrow(d, (n - 1) // 2, 1), d, keepdim)
    count = (~x.isnan()).sum(d, keepdim=True)  # NaN sorts last, after `count` numbers
    if skip_nan:  # the median of the numbers
        pos = ((count - 1) // 2).clamp(min=0)
    else:  # a slice with NaN has median NaN, as in torch: the first NaN
        pos = where(count < n, count, (n - 1) // 2)
    return _pick(input, gather(order, d, pos), d, keepdim)


def median(input, dim=None, keepdim=False):
    """The lower median: of all elements (a value), or along `dim` (values, indices); NaN
    where there is NaN."""
    return _median(input, dim, keepdim, False, "median")


def nanmedian(input, dim=None, keepdim=False):
    """The lower median ignoring NaN (NaN only where a slice is all NaN)."""
    return _median(input, dim, keepdim, True, "nanmedian")


def mode(input, dim=-1, keepdim=False):
    """(values, indices) of the most frequent value along `dim`: the smallest on ties, with
    the index of its last occurrence."""
    d = norm_dim(dim, input._data.ndim, "mode")
    idx = _mode(_as_1d(input), d)
    return _pick(input, idx, d, keepdim)


def _rank_samples():
    s = SampleMaker("sort_select")
    nan = s.distinct(3, 4)
    nan._data[1, 2] = float("nan")
    nan._data[2] = float("nan")
    return [Sample(lambda x: x.sort()[0], (s.distinct(3, 4),)),
            Sample(lambda x: x.sort(0, descending=True).values, (s.distinct(3, 2, 2),)),
            Sample(lambda x: msort(x), (s.distinct(3, 2),)),
            Sample(lambda x: x.topk(2).values, (s.distinct(3, 4),)),
            Sample(lambda x: x.topk(2, 0, largest=False)[0], (s.distinct(3, 4),)),
            Sample(lambda x: x.kthvalue(2, 1, True).values, (s.distinct(3, 4),)),
            Sample(lambda x: x.median(), (s.distinct(3, 4),)),
            Sample(lambda x: x.median(-1).values, (s.distinct(2, 5),)),
            Sample(lambda x: x.nanmedian(1).values[:2], (nan,)),
            Sample(lambda x: x.mode(0).values, (s.distinct(3, 4),))]


register_composite("sort_select", _rank_samples)


def _unique_dim(xp, a, d, consecutive):
    """Unique slices along `d`: (values, inverse, counts) as arrays."""
    if not consecutive:
        return xp.unique(a, return_inverse=True, return_counts=True, axis=d)
    moved = xp.moveaxis(a, d, 0)
    n = moved.shape[0]
    change = xp.ones(n, dtype=bool)
    flat = moved.reshape(n, -1)
    change[1:] = (flat[1:] != flat[:-1]).any(axis=1)
    starts = xp.nonzero(change)[0]
    counts = xp.diff(xp.append(starts, n))
    return xp.moveaxis(moved[starts], 0, d), xp.cumsum(change) - 1, counts


def _unique_samples():
    s = SampleMaker("unique")
    x = Tensor._make(s.rng.integers(0, 4, (3, 5)))
    return [Sample(lambda x: Unique.apply(x, None, False)[0], (x,)),
            Sample(lambda x: Unique.apply(x, 1, True)[2], (x,))]


@register("unique", _unique_samples, differentiable=False)
class Unique(NonDiff):
    """(values, inverse, counts) of the distinct elements (dim None) or slices along `dim`,
    sorted, or of runs of equal consecutive ones (no gradient); how many depends on the
    data."""

    n_outputs = 3
    shape_from_data = (0,)

    def forward(self, a, dim, consecutive):
        xp = array_module(a)
        if dim is None:
            values, inverse, counts = _unique_dim(xp, a.reshape(-1), 0, consecutive)
            return values, inverse.reshape(a.shape).astype("int64"), counts.astype("int64")
        values, inverse, counts = _unique_dim(xp, a, dim, consecutive)
        return values, inverse.reshape(-1).astype("int64"), counts.astype("int64")


def _unique(input, return_inverse, return_counts, dim, consecutive):
    d = None if dim is None else norm_dim(dim, input._data.ndim, "unique")
    values, inverse, counts = Unique.apply(input, d, consecutive)
    out = (values,) + ((inverse,) if return_inverse else ()) + \
        ((counts,) if return_counts else ())
    return out[0] if len(out) == 1 else out


def unique(input, sorted=True, return_inverse=False, return_counts=False, dim=None):
    """The distinct elements (or slices along `dim`), sorted; optionally the index of each
    input element in them (`return_inverse`) and their counts. No gradient (as torch)."""
    return _unique(input, return_inverse, return_counts, dim, False)


def unique_consecutive(input, return_inverse=False, return_counts=False, dim=None):
    """Like `unique`, but only runs of equal consecutive elements (or slices) collapse."""
    return _unique(input, return_inverse, return_counts, dim, True)
