"""Reductions over dims (`dim`, `keepdim` as in PyTorch) and the softmax family."""
import builtins
from collections import namedtuple

from dtrain.autograd.node import Op
from dtrain.autograd.ops._util import float_dtype_of, keep_shape, norm_dim, norm_dims
from dtrain.autograd.registry import Sample, SampleMaker, register, register_composite
from dtrain.core import dtype as dtypes
from dtrain.core.backend import array_module
from dtrain.core.tensor import Tensor


def _reduce_samples(name, fn, maker="__call__"):
    def samples():
        s = SampleMaker(name)
        make = getattr(s, maker)
        return [Sample(lambda x: fn(x, None, False), (make(3, 4),)),
                Sample(lambda x: fn(x, 1, False), (make(3, 4),)),
                Sample(lambda x: fn(x, (0, 2), True), (make(2, 3, 4),)),
                Sample(lambda x: fn(x, -1, True), (make(5),))]
    return samples


class _Reduction(Op):
    """Common bookkeeping: the input shape and the reduced axes."""

    def _axes(self, x, dim, name):
        self.in_shape = x.shape
        self.axes = norm_dims(dim, x.ndim, name)
        return self.axes

    def _expand_grad(self, g, keepdim):
        """`g` reshaped as with keepdim, then broadcast over the reduced axes."""
        if not keepdim:
            g = g.reshape(keep_shape(self.in_shape, self.axes))
        return g.expand(self.in_shape)


@register("sum", _reduce_samples("sum", lambda x, d, k: x.sum(d, keepdim=k)))
class Sum(_Reduction):
    def forward(self, x, dim, keepdim, out=None):
        axes = self._axes(x, dim, "sum")
        self.keepdim = keepdim
        return array_module(x).sum(x, axis=axes, keepdims=keepdim, out=out)

    def backward(self, g):
        return (self._expand_grad(g, self.keepdim), None, None)


@register("prod", _reduce_samples("prod", lambda x, d, k: x.prod(d, keepdim=k), "away"))
class Prod(_Reduction):
    saves = ("inputs", "output")

    def forward(self, x, dim, keepdim):
        axes = self._axes(x, dim, "prod")
        self.keepdim = keepdim
        return array_module(x).prod(x, axis=axes, keepdims=keepdim)

    def backward(self, g):
        x = self.inputs[0]
        xp = array_module(x._data)
        out = self._expand_grad(self.output, self.keepdim)
        # A branch on data: graph mode reports it (a host read) when it records this.
        if not bool((x == 0).any()):
            return (self._expand_grad(g, self.keepdim) * out / x, None, None)
        # NOTE: with zeros, the product of the *other* elements comes from exclusive
        # cumulative products (no division by zero); this path is first-order only.
        moved = xp.moveaxis(x._data, self.axes, range(-len(self.axes), 0))
        flat = moved.reshape(moved.shape[:moved.ndim - len(self.axes)] + (-1,))
        ones = xp.ones_like(flat[..., :1])
        left = xp.cumprod(xp.concatenate([ones, flat[..., :-1]], -1), -1)
        right = xp.flip(xp.cumprod(xp.flip(xp.concatenate([flat[..., 1:], ones], -1), -1), -1), -1)
        others = xp.moveaxis((left * right).reshape(moved.shape), range(-len(self.axes), 0),
                             self.axes)
        return (self._expand_grad(g, self.keepdim) * Tensor._make(others), None, None)


class _Extreme(_Reduction):
    """amax/amin: the gradient is shared evenly among the elements equal to the extreme."""

    saves = ("weights",)

    def _run(self, x, dim, keepdim, fn):
        axes = self._axes(x, dim, fn)
        xp = array_module(x)
        out = getattr(xp, fn)(x, axis=axes, keepdims=True)
        mask = (x == out).astype(x.dtype)
        self.weights = mask / mask.sum(axis=axes, keepdims=True)
        self.keepdim = keepdim
        return out if keepdim else out.reshape([s for i, s in enumerate(x.shape) if i not in axes])

    def backward(self, g):
        return (self._expand_grad(g, self.keepdim) * Tensor._make(self.weights), None, None)


@register("amax", _reduce_samples("amax", lambda x, d, k: x.amax(d, keepdim=k), "distinct"))
class Amax(_Extreme):
    def forward(self, x, dim, keepdim):
        return self._run(x, dim, keepdim, "max")


@register("amin", _reduce_samples("amin", lambda x, d, k: x.amin(d, keepdim=k), "distinct"))
class Amin(_Extreme):
    def forward(self, x, dim, keepdim):
        return self._run(x, dim, keepdim, "min")


def _softmax_samples(name, fn):
    def samples():
        s = SampleMaker(name)
        return [Sample(lambda x: fn(x, -1), (s(3, 4, low=-3, high=3),)),
                Sample(lambda x: fn(x, 0), (s(3, 4, low=-3, high=3),)),
                Sample(lambda x: fn(x, 1), (s(2, 3, 2, low=-3, high=3),))]
    return samples


@register("logsumexp", _softmax_samples("logsumexp", lambda x, d: x.logsumexp(d)))
class LogSumExp(_Reduction):
    saves = ("inputs", "output")

    def forward(self, x, dim, keepdim):
        axes = self._axes(x, dim, "logsumexp")
        xp = array_module(x)
        m = xp.max(x, axis=axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)  # NOTE: shift by the max: no overflow, -inf safe
        out = xp.log(xp.sum(xp.exp(x - m), axis=axes, keepdims=True)) + m
        self.keepdim = keepdim
        return out if keepdim else out.reshape([s for i, s in enumerate(x.shape) if i not in axes])

    def backward(self, g):
        x = self.inputs[0]
        out = self._expand_grad(self.output, self.keepdim)
        return (self._expand_grad(g, self.keepdim) * (x - out).exp(), None, None)


@register("softmax", _softmax_samples("softmax", lambda x, d: x.softmax(d)))
class Softmax(Op):
    saves = ("output",)

    def forward(self, x, dim):
        xp = array_module(x)
        self.dim = dim
        e = xp.exp(x - xp.max(x, axis=dim, keepdims=True))  # NOTE: fused for stability
        return e / e.sum(axis=dim, keepdims=True)

    def backward(self, g):
        y = self.output
        return (y * (g - (g * y).sum(self.dim, keepdim=True)), None)


@register("log_softmax", _softmax_samples("log_softmax", lambda x, d: x.log_softmax(d)))
class LogSoftmax(Op):
    saves = ("output",)

    def forward(self, x, dim, out=None):
        xp = array_module(x)
        self.dim = dim
        # NOTE: fused for stability; the result is the shifted input minus its logsumexp
        shifted = xp.subtract(x, xp.max(x, axis=dim, keepdims=True), out=out)
        e = xp.exp(shifted, out=self.scratch("exp", x.shape, shifted.dtype, xp))
        lse = e.sum(axis=dim, keepdims=True)
        return xp.subtract(shifted, xp.log(lse, out=lse), out=shifted)

    def backward(self, g):
        return (g - self.output.exp() * g.sum(self.dim, keepdim=True), None)


# -- public functions -----------------------------------------------------------------------
def sum(input, dim=None, keepdim=False, *, dtype=None):
    """Sum over `dim` (all elements when None); small ints and bools sum in int64."""
    if dtype is not None:
        input = input.to(dtype)
    elif input._data.dtype.kind in "bi" and input._data.dtype.itemsize < 8:
        input = input.to(dtypes.int64)  # torch sums small ints and bools in int64
    return Sum.apply(input, dim, keepdim)


def _count(input, dim):
    n = 1
    for a in norm_dims(dim, input._data.ndim, "mean"):
        n *= input._data.shape[a]
    return n


def mean(input, dim=None, keepdim=False, *, dtype=None):
    """Mean over `dim` (all elements when None) of a floating tensor."""
    if dtype is not None:
        input = input.to(dtype)
    if input._data.dtype.kind != "f":
        raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be either a "
                           f"floating point or complex dtype. Got: {input.dtype}")
    return Sum.apply(input, dim, keepdim) / _count(input, dim)


def var(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """Variance with Bessel's `correction` (default 1; `unbiased=False` means 0)."""
    float_dtype_of(input, "var")
    if correction is None:
        correction = 1 if unbiased is None or unbiased else 0
    diff = input - mean(input, dim, keepdim=True)
    return Sum.apply(diff * diff, dim, keepdim) / builtins.max(_count(input, dim) - correction, 0)


def std(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """Standard deviation over `dim`: sqrt of `var` (same arguments)."""
    return var(input, dim, unbiased, keepdim, correction=correction).sqrt()


def var_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """(var, mean) over `dim`, as `var` and `mean` give them."""
    return (var(input, dim, unbiased, keepdim, correction=correction),
            mean(input, dim, keepdim))


def std_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """(std, mean) over `dim`, as `std` and `mean` give them."""
    return (std(input, dim, unbiased, keepdim, correction=correction),
            mean(input, dim, keepdim))


register_composite("mean", _reduce_samples("mean", lambda x, d, k: x.mean(d, keepdim=k)))
register_composite("var", _reduce_samples("var", lambda x, d, k: x.var(d, keepdim=k)))
register_composite("std", _reduce_samples(
    "std", lambda x, d, k: x.std(d, keepdim=k, correction=0), "distinct"))


def prod(input, dim=None, keepdim=False, *, dtype=None):
    """Product over `dim` (all elements when None)."""
    if dtype is not None:
        input = input.to(dtype)
    return Prod.apply(input, dim, keepdim)


def amax(input, dim=(), keepdim=False):
    """Largest values over `dim` (all dims when ()); the gradient is split among ties."""
    return Amax.apply(input, None if dim == () else dim, keepdim)


def amin(input, dim=(), keepdim=False):
    """Smallest values over `dim` (all dims when ()); the gradient is split among ties."""
    return Amin.apply(input, None if dim == () else dim, keepdim)


ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])


def _extreme(input, dim, keepdim, other, reduce_all, pairwise, arg):
    if isinstance(dim, Tensor):
        other, dim = dim, None
    if other is not None:
        return pairwise(input, other)
    if dim is None:
        return reduce_all(input, None, False)
    idx = arg(input, dim, keepdim=True)
    d = norm_dim(dim, input._data.ndim, "max")
    values = input.gather(d, idx) if input._data.ndim else input
    if not keepdim and input._data.ndim:
        values, idx = values.squeeze(d), idx.squeeze(d)
    return ValuesIndices(values, idx)


def max(input, dim=None, keepdim=False, *, other=None):
    """`max(x)`: largest value; `max(x, dim)`: (values, indices); `max(x, y)`: maximum."""
    from dtrain.autograd.ops.pointwise import maximum

    return _extreme(input, dim, keepdim, other, amax, maximum, argmax)


def min(input, dim=None, keepdim=False, *, other=None):
    """`min(x)`: smallest value; `min(x, dim)`: (values, indices); `min(x, y)`: minimum."""
    from dtrain.autograd.ops.pointwise import minimum

    return _extreme(input, dim, keepdim, other, amin, minimum, argmin)


def _max_dim_samples():
    s = SampleMaker("max_dim")
    return [Sample(lambda x: x.max(1)[0], (s.distinct(3, 4),)),
            Sample(lambda x: x.min(0, keepdim=True).values, (s.distinct(3, 4),)),
            Sample(lambda x: x.max(), (s.distinct(2, 3),))]


register_composite("max_dim", _max_dim_samples)


def _index_reduction_samples(name, fn):
    def samples():
        s = SampleMaker(name)
        def x(*shape):
            return s.distinct(*shape).requires_grad_(False)
        return [Sample(lambda x: fn(x), (x(3, 4),)), Sample(lambda x: fn(x, 1), (x(3, 4),)),
                Sample(lambda x: fn(x, -1, True), (x(2, 3, 4),))]
    return samples


def _index_reduction(fn):
    """The forward of an integer reduction over one dim (all elements when None), no
    gradient: `fn(x, axis, keepdims)` of the array module."""
    def forward(self, x, dim, keepdim):
        xp = array_module(x)
        if dim is None:
            out = getattr(xp, fn)(x.reshape(-1))
            return out.reshape((1,) * x.ndim) if keepdim else out
        return getattr(xp, fn)(x, axis=dim, keepdims=keepdim)
    return forward


@register("argmax", _index_reduction_samples("argmax", lambda *a: argmax(*a)),
          differentiable=False)
class Argmax(Op):
    differentiable = False
    forward = _index_reduction("argmax")


@register("argmin", _index_reduction_samples("argmin", lambda *a: argmin(*a)),
          differentiable=False)
class Argmin(Op):
    differentiable = False
    forward = _index_reduction("argmin")


def argmax(input, dim=None, keepdim=False):
    """Indices of the maximum values over `dim` (of the flattened input when None); int64."""
    d = None if dim is None else norm_dim(dim, input._data.ndim, "argmax")
    return Argmax.apply(input, d, keepdim)


def argmin(input, dim=None, keepdim=False):
    """Indices of the minimum values over `dim` (of the flattened input when None); int64."""
    d = None if dim is None else norm_dim(dim, input._data.ndim, "argmin")
    return Argmin.apply(input, d, keepdim)


def logsumexp(input, dim, keepdim=False):
    """log(sum(exp(input))) over `dim`, computed without overflow."""
    return LogSumExp.apply(input, dim, keepdim)


def _check_dim(input, dim, name):
    if dim is None:
        raise TypeError(f"{name}() missing required argument 'dim' (implicit dim is deprecated "
                        "in PyTorch and not supported)")
    return norm_dim(dim, input._data.ndim, name)


def softmax(input, dim, dtype=None):
    """exp(input) / sum(exp(input)) along `dim`; same shape as input."""
    if dtype is not None:
        input = input.to(dtype)
    return Softmax.apply(input, _check_dim(input, dim, "softmax"))


def log_softmax(input, dim, dtype=None):
    """log(softmax(input, dim)), computed stably; same shape as input."""
    if dtype is not None:
        input = input.to(dtype)
    float_dtype_of(input, "log_softmax")  # as torch: no log_softmax of integers
    return LogSoftmax.apply(input, _check_dim(input, dim, "log_softmax"))


def _truth_samples(name, fn):
    def samples():
        s = SampleMaker(name)
        return [Sample(lambda x: fn(x > 0), (s(3, 4, grad=False),)),
                Sample(lambda x: fn(x > -0.8, 1), (s(3, 4, grad=False),)),
                Sample(lambda x: fn(x, (0, 2)), (s(2, 3, 4, grad=False),))]
    return samples


def _truth(fn):
    """The forward of all / any / count_nonzero over `dim` (all when None; an int or a
    tuple), no gradient: `fn(x, axis=dim, ...)` of the array module."""
    def forward(self, x, dim, keepdim):
        xp = array_module(x)
        if fn == "count_nonzero":
            return xp.asarray(xp.count_nonzero(x, axis=dim), dtype="int64")
        return getattr(xp, fn)(x, axis=dim, keepdims=keepdim)
    return forward


@register("all", _truth_samples("all", lambda x, d=None: all(x, d)), differentiable=False)
class All(Op):
    differentiable = False
    forward = _truth("all")


@register("any", _truth_samples("any", lambda x, d=None: any(x, d)), differentiable=False)
class Any(Op):
    differentiable = False
    forward = _truth("any")


@register("count_nonzero", _truth_samples("count_nonzero", lambda x, d=None: count_nonzero(x, d)),
          differentiable=False)
class CountNonzero(Op):
    differentiable = False
    forward = _truth("count_nonzero")


def all(input, dim=None, keepdim=False):
    """Whether every element is non-zero, over `dim` (all when None): a bool tensor."""
    return All.apply(input, dim, keepdim)


def any(input, dim=None, keepdim=False):
    """Whether some element is non-zero, over `dim` (all when None): a bool tensor."""
    return Any.apply(input, dim, keepdim)


def count_nonzero(input, dim=None):
    """The number of non-zero elements over `dim` (all when None): int64."""
    return CountNonzero.apply(input, dim, False)
