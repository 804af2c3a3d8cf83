"""Statistics and bucketing: NaN-ignoring sums and means, quantiles (five interpolation modes),
and the counting / searching ops without gradient (histc, bincount, searchsorted, bucketize,
isin), as in PyTorch."""
from dtrain.autograd.node import Op
from dtrain.autograd.ops._util import norm_dim
from dtrain.autograd.ops.index import scatter_add
from dtrain.autograd.ops.pointwise import NonDiff, isnan, where
from dtrain.autograd.ops.reduce import sum
from dtrain.autograd.registry import Sample, SampleMaker, register, register_composite
from dtrain.core import dtype as dtypes
from dtrain.core.backend import array_module
from dtrain.core.tensor import Tensor


def nansum(input, dim=None, keepdim=False, *, dtype=None):
    """sum treating NaN as zero (its gradient is 0 at NaN elements)."""
    if input._data.dtype.kind == "f":
        input = where(isnan(input), 0.0, input)
    return sum(input, dim, keepdim, dtype=dtype)


def nanmean(input, dim=None, keepdim=False, *, dtype=None):
    """mean over the non-NaN elements (NaN where there are none)."""
    if (input._data.dtype if dtype is None else dtypes.to_np(dtype)).kind != "f":
        raise RuntimeError(f"nanmean(): expected input to have floating point dtype but got "
                           f"{input.dtype if dtype is None else dtype}")
    return nansum(input, dim, keepdim, dtype=dtype) / sum(isnan(input).logical_not(), dim,
                                                          keepdim)


def _nan_samples():
    s = SampleMaker("nansum")
    return [Sample(lambda x: nansum(x.log()), (s(3, 4, low=-0.5, high=2),)),  # log(<0): NaN
            Sample(lambda x: nansum(x.log(), 1, keepdim=True), (s(3, 4, low=-0.5, high=2),)),
            Sample(lambda x: nanmean(x.log(), -1), (s(3, 4, low=-0.5, high=2),)),
            Sample(lambda x: nanmean(x, (0, 1)), (s(3, 4),))]


register_composite("nansum_nanmean", _nan_samples)

_INTERPOLATIONS = ("linear", "lower", "higher", "midpoint", "nearest")


def _quantile_samples():
    s = SampleMaker("quantile")
    q = Tensor._make(s.rng.uniform(0, 1, 3))
    return [Sample(lambda x: quantile(x, 0.3), (s.distinct(3, 4),)),
            Sample(lambda x: quantile(x, q, dim=1, keepdim=True), (s.distinct(3, 5),)),
            Sample(lambda x: quantile(x, 0.5, dim=0, interpolation="midpoint"),
                   (s.distinct(4, 2),)),
            Sample(lambda x: quantile(x, q, dim=-1, interpolation="nearest"),
                   (s.distinct(2, 6),)),
            Sample(lambda x: nanquantile(x.log(), 0.75, dim=0), (s.distinct(5, 3),))]


@register("quantile", _quantile_samples)
class Quantile(Op):
    """q-quantiles along `dim` (of the flattened input when None), NaN-aware.

    NOTE: a primitive, as the composite would need a differentiable sort; forward sorts the
    array and interpolates between two order statistics, backward scatters g * (1 - w) and
    g * w back to their positions (scatter_add, so higher orders record)."""

    saves = ("lo", "hi", "w")

    def forward(self, x, q, dim, keepdim, interpolation, ignore_nan):
        xp = array_module(x)
        self.in_shape = x.shape
        self.perm = None if dim is None else tuple(i for i in range(x.ndim) if i != dim) + (dim,)
        y = x.reshape(-1) if dim is None else x.transpose(self.perm)
        order = xp.argsort(y, axis=-1)  # NaN sorts last
        srt = xp.take_along_axis(y, order, -1)
        nans = xp.isnan(srt)
        qs = xp.asarray(q, dtype=x.dtype).reshape(-1)
        if ignore_nan:  # rank among the non-NaN values; all NaN: rank 0, a NaN
            last = xp.maximum((~nans).sum(-1, keepdims=True) - 1, 0)
            ranks = qs * last
        else:  # any NaN: the last (a NaN)
            last = y.shape[-1] - 1
            ranks = xp.where(nans.any(-1, keepdims=True), last, qs * last)
        ranks = {"lower": xp.floor, "higher": xp.ceil, "nearest": xp.round}.get(
            interpolation, lambda r: r)(ranks)
        lo = xp.floor(ranks).astype("int64")
        hi = xp.ceil(ranks).astype("int64")
        w = xp.full_like(ranks, 0.5) if interpolation == "midpoint" else ranks - lo
        v_lo, v_hi = xp.take_along_axis(srt, lo, -1), xp.take_along_axis(srt, hi, -1)
        # (rest..., Q); no lerp where both are one value (inf - inf would give NaN)
        out = xp.where(lo == hi, v_lo, v_lo + w * (v_hi - v_lo))
        self.lo = xp.take_along_axis(order, lo, -1)
        self.hi = xp.take_along_axis(order, hi, -1)
        self.w, self.y_shape = w, y.shape
        lead = (qs.size,) if xp.ndim(q) else ()
        rest = list(x.shape) if keepdim else list(out.shape[:-1])
        if keepdim:
            for d in (range(x.ndim) if dim is None else (dim,)):
                rest[d] = 1
        self.moved = out.shape
        return xp.moveaxis(out, -1, 0).reshape(lead + tuple(rest))

    def backward(self, g):
        xp = array_module(g._data)
        k = len(self.moved) - 1
        g = g.reshape((self.moved[-1],) + self.moved[:-1]).permute(*range(1, k + 1), 0)
        w = Tensor._make(self.w)
        zeros = Tensor._make(xp.zeros(self.y_shape, g._data.dtype))
        gy = scatter_add(scatter_add(zeros, -1, Tensor._make(self.lo), g * (1 - w)),
                         -1, Tensor._make(self.hi), g * w)
        if self.perm is None:
            return (gy.reshape(self.in_shape),) + (None,) * 5
        inverse = sorted(range(len(self.perm)), key=self.perm.__getitem__)
        return (gy.permute(*inverse),) + (None,) * 5


def _quantile(name, input, q, dim, keepdim, interpolation, ignore_nan):
    if input._data.dtype.kind != "f":
        raise RuntimeError(f"{name}() input tensor must be either float or double dtype")
    if input._data.size == 0:
        raise RuntimeError(f"{name}() input tensor must be non-empty")
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"{name}() interpolation must be one of linear, lower, higher, "
                         f"midpoint or nearest. Got {interpolation}")
    if isinstance(q, Tensor):
        if q._data.ndim > 1:
            raise RuntimeError(f"{name}() q must be a scalar or 1D tensor")
        if q._data.dtype != input._data.dtype:
            raise RuntimeError(f"{name}() q tensor must be same dtype as the input tensor")
        bad = not bool(((q._data >= 0) & (q._data <= 1)).all())
        q = q._data if q._data.ndim else float(q._data)
    else:
        q = float(q)
        bad = not 0 <= q <= 1
    if bad:
        raise RuntimeError(f"{name}() q values must be in the range [0, 1]")
    d = None if dim is None else norm_dim(dim, input._data.ndim, name)
    return Quantile.apply(input, q, d, keepdim, interpolation, ignore_nan)


def quantile(input, q, dim=None, keepdim=False, *, interpolation="linear"):
    """The q-th quantiles of `input` along `dim` (all elements when None); a 1-D `q` adds a
    leading dim of its size. Any NaN in a slice makes its quantiles NaN."""
    return _quantile("quantile", input, q, dim, keepdim, interpolation, False)


def nanquantile(input, q, dim=None, keepdim=False, *, interpolation="linear"):
    """quantile ignoring NaN values (NaN only where a slice has no other values)."""
    return _quantile("nanquantile", input, q, dim, keepdim, interpolation, True)


# -- counting and searching (no gradient) ------------------------------------------------------
def _histc_samples():
    s = SampleMaker("histc")
    return [Sample(lambda x: histc(x, bins=5), (s(20, grad=False),)),
            Sample(lambda x: histc(x, 4, -0.5, 0.5), (s(3, 7, grad=False),))]


@register("histc", _histc_samples, differentiable=False)
class Histc(NonDiff):
    """histc (no gradient)."""

    def forward(self, x, bins, lo, hi):
        xp = array_module(x)
        if lo == hi and x.size:  # the data's range, widened when it is a single value
            lo, hi = float(x.min()), float(x.max())
        if lo == hi:
            lo, hi = lo - 1, hi + 1
        inside = x[(x >= lo) & (x <= hi)]
        pos = ((inside - lo) * bins / (hi - lo)).astype("int64")
        return xp.bincount(xp.minimum(pos, bins - 1), minlength=bins).astype(x.dtype)


def histc(input, bins=100, min=0, max=0):
    """Histogram of `bins` equal bins over [min, max] (the data's range when min == max);
    values outside are ignored, max falls in the last bin. Same float dtype as input."""
    if input._data.dtype.kind != "f":
        raise RuntimeError(f"torch.histc: input tensor must be floating point, got {input.dtype}")
    if bins <= 0:
        raise RuntimeError(f"torch.histc: bins must be > 0, but got {bins} for bins")
    if min > max:
        raise RuntimeError("torch.histc: max must be larger than min")
    return Histc.apply(input, int(bins), float(min), float(max))


def _bincount_samples():
    s = SampleMaker("bincount")
    return [Sample(lambda x: bincount(x), (s.ints(6, 10),)),
            Sample(lambda x, w: bincount(x, w, minlength=9), (s.ints(4, 7), s(7, grad=False)))]


@register("bincount", _bincount_samples, differentiable=False)
class Bincount(NonDiff):
    """bincount (no gradient)."""

    def forward(self, x, weights, minlength):
        xp = array_module(x)
        if weights is None:
            return xp.bincount(x, minlength=minlength)
        dt = weights.dtype if weights.dtype == "float32" else "float64"  # as torch's CPU kernel
        return xp.bincount(x, weights, minlength).astype(dt)


def bincount(input, weights=None, minlength=0):
    """Counts of each value of a 1-D non-negative integer tensor (or sums of `weights`),
    max(input) + 1 long, at least `minlength`."""
    x = input._data
    if x.ndim != 1 or x.dtype.kind not in "iu" or (x.size and int(x.min()) < 0):
        raise RuntimeError("bincount only supports 1-d non-negative integral inputs.")
    if minlength < 0:
        raise RuntimeError("minlength should be >= 0")
    if weights is not None and weights._data.shape != x.shape:
        raise RuntimeError("weights should be 1-d and have the same length as input")
    return Bincount.apply(input, weights, int(minlength))


def _searchsorted_samples():
    s = SampleMaker("searchsorted")
    seq = Tensor._make(s.rng.uniform(-1, 1, (3, 5)).cumsum(-1))
    return [Sample(lambda v: searchsorted(seq[0], v), (s(4, 2, grad=False),)),
            Sample(lambda v: searchsorted(seq, v, right=True), (s(3, 6, grad=False),)),
            Sample(lambda v: bucketize(v, seq[1]), (s(7, grad=False),))]


@register("searchsorted", _searchsorted_samples, differentiable=False)
class Searchsorted(NonDiff):
    """searchsorted (no gradient)."""

    def forward(self, seq, values, right, sorter):
        xp = array_module(seq)
        if sorter is not None:
            seq = xp.take_along_axis(seq, sorter, -1)
        side = "right" if right else "left"
        if seq.ndim == 1:
            return xp.searchsorted(seq, values, side)
        # row-wise: count the row's entries below each value (<= for right), on whole arrays
        rows, vals = seq[..., None, :], values[..., :, None]
        return ((rows <= vals) if right else (rows < vals)).sum(-1)


def searchsorted(sorted_sequence, values, *, out_int32=False, right=False, side=None,
                 sorter=None):
    """Indices at which `values` would be inserted into the last dim of `sorted_sequence`
    to keep it sorted: the first such place, or the last with right=True / side="right"."""
    if side not in (None, "left", "right"):
        raise RuntimeError(f"torch.searchsorted(): side can only be 'left' or 'right' but got "
                           f"{side}")
    if side == "left" and right:
        raise RuntimeError("torch.searchsorted(): side and right can't be set to opposites, "
                           "got side of left while right was True")
    right = right or side == "right"
    seq = sorted_sequence._data
    scalar = not isinstance(values, Tensor)
    if scalar:
        values = Tensor._make(array_module(seq).asarray(values, seq.dtype))
    vshape = values._data.shape
    if seq.ndim != 1 and seq.shape[:-1] != vshape[:-1]:
        raise RuntimeError(f"torch.searchsorted(): boundaries tensor should be 1 dimension or "
                           f"the first N-1 dimensions of boundaries tensor and input value "
                           f"tensor must match, but we got boundaries tensor {list(seq.shape)} "
                           f"and input value tensor {list(vshape)}")
    out = Searchsorted.apply(sorted_sequence, values, right, sorter)
    return out.int() if out_int32 else out


def bucketize(input, boundaries, *, out_int32=False, right=False):
    """The bucket of each element among 1-D sorted `boundaries`: i with
    boundaries[i-1] < x <= boundaries[i] (boundaries[i-1] <= x < boundaries[i] if right)."""
    if boundaries._data.ndim != 1:
        raise RuntimeError(f"boundaries tensor must be 1 dimension, but got dim("
                           f"{boundaries._data.ndim})")
    return searchsorted(boundaries, input, out_int32=out_int32, right=right)


def _isin_samples():
    s = SampleMaker("isin")
    return [Sample(lambda a, b: isin(a, b), (s.ints(6, 3, 4), s.ints(6, 3))),
            Sample(lambda a, b: isin(a, b, invert=True), (s.ints(5, 7), s.ints(5, 2, 2)))]


@register("isin", _isin_samples, differentiable=False)
class Isin(NonDiff):
    """isin (no gradient)."""

    def forward(self, a, b, invert):
        return array_module(a).isin(a, b, invert=invert)


def isin(elements, test_elements, *, assume_unique=False, invert=False):
    """Whether each of `elements` is in `test_elements` (either may be a scalar)."""
    if not isinstance(elements, Tensor):
        elements = Tensor._make(array_module(test_elements._data).asarray(elements))
    return Isin.apply(elements, test_elements, invert)
