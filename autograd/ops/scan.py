"""Scans along a dim: cumsum and cumprod (primitives), the running extremes cummax/cummin,
logcumsumexp, and the differences and integrals built on them (diff, trapezoid)."""
from dtrain.autograd.node import Op
from dtrain.autograd.ops._util import norm_dim
from dtrain.autograd.ops.index import gather
from dtrain.autograd.ops.pointwise import NonDiff, _nondiff, maximum, where
from dtrain.autograd.ops.rearrange import flip
from dtrain.autograd.ops.reduce import ValuesIndices
from dtrain.autograd.ops.shape import _samples, cat
from dtrain.autograd.registry import Sample, SampleMaker, register, register_composite
from dtrain.core import dtype as dtypes
from dtrain.core.backend import array_module, running
from dtrain.core.tensor import Tensor


def _scan_samples(name, fn, maker="__call__"):
    def samples():
        s = SampleMaker(name)
        make = getattr(s, maker)
        return [Sample(lambda x: fn(x, 0), (make(4),)), Sample(lambda x: fn(x, 1), (make(3, 4),)),
                Sample(lambda x: fn(x, -3), (make(3, 2, 2),))]
    return samples


def _reverse_cumsum(t, dim):
    """Sums over positions at or after each position along `dim`."""
    return flip(Cumsum.apply(flip(t, dim), dim), dim)


@register("cumsum", _scan_samples("cumsum", lambda x, d: x.cumsum(d)))
class Cumsum(Op):
    def forward(self, x, dim):
        self.dim = dim
        return array_module(x).cumsum(x, axis=dim)

    def backward(self, g):
        return (_reverse_cumsum(g, self.dim), None)


def _cumprod_samples():
    s = SampleMaker("cumprod")
    zeros = s(2, 5)
    zeros._data[0, 1] = zeros._data[1, 2] = zeros._data[1, 4] = 0.0  # one and two zeros
    return _scan_samples("cumprod", lambda x, d: x.cumprod(d), "away")() + [
        Sample(lambda x: x.cumprod(1), (zeros,))]


@register("cumprod", _cumprod_samples)
class Cumprod(Op):
    saves = ("inputs", "output")

    def forward(self, x, dim):
        self.dim = dim
        return array_module(x).cumprod(x, axis=dim)

    def backward(self, g):
        return (_cumprod_grad(self.inputs[0], self.output, g, self.dim), None)


def _cumprod_grad(x, y, g, d):
    """The gradient of sum(g * cumprod(x)) for y = cumprod(x) along `d`.

    NOTE: PyTorch's formula with zeros (no division by zero). Before a slice's first zero,
    the division formula holds; at it, the gradient sums g times the running products that
    skip it; after it, every product holds that zero as a factor: the zero (kept as a
    factor, so that second order is right) times the gradient of the skipping products."""
    xp = array_module(x._data)
    zero = x._data == 0
    if not bool(zero.any()):
        return _reverse_cumsum(g * y, d) / x
    seen = xp.cumsum(zero, axis=d)
    before = Tensor._make(seen == 0)
    first = Tensor._make(zero & (seen == 1))
    after = Tensor._make(seen >= 1)
    g_before = where(before, _reverse_cumsum(g * y, d) / where(before, x, 1.0), 0.0)
    skip_x = where(first, 1.0, x)
    skipped = Cumprod.apply(skip_x, d)
    at_first = where(after, g * skipped, 0.0).sum(d, keepdim=True)
    g_skip = where(after, g, 0.0)  # only the products at or after the zero skip it
    zero_factor = where(first, x, 0.0).sum(d, keepdim=True)
    g_after = where(Tensor._make((seen >= 1) & ~(zero & (seen == 1))),
                    zero_factor * _cumprod_grad(skip_x, skipped, g_skip, d), 0.0)
    return g_before + where(first, at_first, 0.0) + g_after


def _scan_dim(input, dim, op):
    if dim is None:
        raise TypeError(f"{op}() missing required argument 'dim'")
    return norm_dim(dim, input._data.ndim, op)


def _scan_input(input, dtype):
    if dtype is not None:
        return input.to(dtype)
    if input._data.dtype.kind in "biu":
        return input.to(dtypes.int64)  # torch scans integers and bools in int64
    return input


def _scan(cls, input, d):
    if input._data.ndim == 0:
        return cls.apply(input.reshape(1), 0).reshape(())
    return cls.apply(input, d)


def cumsum(input, dim, *, dtype=None):
    """Running sums along `dim` (integers and bools in int64, as torch)."""
    d = _scan_dim(input, dim, "cumsum")
    return _scan(Cumsum, _scan_input(input, dtype), d)


def cumprod(input, dim, *, dtype=None):
    """Running products along `dim`; the gradient is exact where the input has zeros."""
    d = _scan_dim(input, dim, "cumprod")
    return _scan(Cumprod, _scan_input(input, dtype), d)


def _running_index(xp, a, dim, better):
    """For each position along `dim`, the index of the running extreme (the latest on ties
    and NaN, as torch): positions that reach or tie the extreme so far, carried forward."""
    acc = running(xp, "maximum" if better == "max" else "minimum", a, dim)
    shape = [1] * a.ndim
    shape[dim] = a.shape[dim]
    pos = xp.arange(a.shape[dim]).reshape(shape)
    reached = (a == acc) | (a != a)  # a NaN is the extreme from there on, as in torch
    return running(xp, "maximum", xp.where(reached, pos, 0), dim).astype("int64")


class CummaxIndices(NonDiff):
    """The index of the running maximum along `dim` (no gradient)."""

    def forward(self, a, dim=-1):
        return _running_index(array_module(a), a, dim, "max")


class CumminIndices(NonDiff):
    """The index of the running minimum along `dim` (no gradient)."""

    def forward(self, a, dim=-1):
        return _running_index(array_module(a), a, dim, "min")


_cummax_index = _nondiff(CummaxIndices, "cummax_indices", 1)
_cummin_index = _nondiff(CumminIndices, "cummin_indices", 1)


def _running(input, dim, index, op):
    d = _scan_dim(input, dim, op)
    x = input.reshape(1) if input._data.ndim == 0 else input
    idx = index(x, d)
    values = gather(x, d, idx)
    if input._data.ndim == 0:
        values, idx = values.reshape(()), idx.reshape(())
    return ValuesIndices(values, idx)


def cummax(input, dim):
    """(values, indices) of the running maximum along `dim`."""
    return _running(input, dim, _cummax_index, "cummax")


def cummin(input, dim):
    """(values, indices) of the running minimum along `dim`."""
    return _running(input, dim, _cummin_index, "cummin")


def _logaddexp(a, b):
    m = maximum(a, b).detach()  # a constant shift: the gradient is the softmax of (a, b)
    m = where(m.isfinite(), m, 0.0)
    return ((a - m).exp() + (b - m).exp()).log() + m


def logcumsumexp(input, dim):
    """log(cumsum(exp(input))) along `dim`, without overflow or underflow."""
    d = _scan_dim(input, dim, "logcumsumexp")
    out = input.reshape(1) if input._data.ndim == 0 else input
    n, k = out._data.shape[d], 1
    # NOTE: a log-step scan (as backend.running) of log-add-exp: ceil(log2(n)) whole-tensor
    # steps, each exact in log space; a single cumsum of exp would overflow or underflow.
    while k < n:
        out = cat([out.narrow(d, 0, k), _logaddexp(out.narrow(d, k, n - k),
                                                  out.narrow(d, 0, n - k))], d)
        k *= 2
    return out.reshape(()) if input._data.ndim == 0 else out


register_composite("cummax_cummin_logcumsumexp", _scan_samples(
    "cummax_cummin_logcumsumexp",
    lambda x, d: cummax(x, d).values + cummin(x, d)[0] + logcumsumexp(x, d), "distinct"))


def diff(input, n=1, dim=-1, prepend=None, append=None):
    """The `n`-th forward difference along `dim`, after joining `prepend` and `append`."""
    d = norm_dim(dim, input._data.ndim, "diff")
    if input._data.ndim == 0:
        raise RuntimeError("diff expects input to be at least one-dimensional")
    if n < 0:
        raise RuntimeError(f"order must be non-negative but got {n}")
    parts = [t for t in (prepend, input, append) if t is not None]
    out = cat(parts, d) if len(parts) > 1 else input
    for _ in range(n):
        m = out._data.shape[d]
        if m == 0:
            break
        later, earlier = out.narrow(d, 1, m - 1), out.narrow(d, 0, m - 1)
        out = later ^ earlier if out._data.dtype.kind == "b" else later - earlier
    return out


def trapezoid(y, x=None, *, dx=None, dim=-1):
    """The integral of `y` along `dim` by the trapezoidal rule, at points `x` (a tensor
    along `dim`, 1-D or as y) or spacing `dx` (default 1)."""
    d = norm_dim(dim, y._data.ndim, "trapezoid")
    if x is not None and dx is not None:
        raise RuntimeError("trapezoid: pass either x or dx, not both")
    m = y._data.shape[d]
    if m == 0:
        return (y * 0).sum(d)
    mids = (y.narrow(d, 1, m - 1) + y.narrow(d, 0, m - 1)) / 2
    if x is None:
        return mids.sum(d) * (1 if dx is None else dx)
    if x._data.ndim == 1:
        if x._data.shape[0] != m:
            raise RuntimeError(f"trapezoid: There must be one `x` value for each sample point "
                               f"(x has {x._data.shape[0]}, y has {m} along dim {d})")
        x = x.reshape([-1 if i == d else 1 for i in range(y._data.ndim)])
    return (mids * diff(x, dim=d)).sum(d)


trapz = trapezoid


register_composite("diff_trapezoid", _samples(
    "diff_trapezoid", (lambda x: diff(x), (3, 4)), (lambda x: diff(x, 2, 0), (4, 3)),
    (lambda x, p: diff(x, 1, 1, prepend=p), (3, 4), (3, 2)),
    (lambda y: trapezoid(y, dx=0.5), (3, 4)), (lambda y, x: trapezoid(y, x, dim=0), (4, 2), (4,)),
    (lambda y, x: trapz(y, x), (2, 3), (2, 3))))
