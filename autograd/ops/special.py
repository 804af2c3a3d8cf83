"""Elementwise math beyond the basic ops: trigonometric and hyperbolic functions and their
inverses, exp/log relatives, the erf family, log-gamma and polygamma, the binary functions
atan2, hypot, fmod, xlogy, logaddexp, copysign, and NaN replacement.

NumPy has no erf, erfinv, lgamma or digamma: they are evaluated here on whole arrays, in
float64 whatever the input's float dtype, to float64 precision — erf by series and continued
fraction, erfinv by a closed-form guess refined by Halley steps, lgamma and polygamma by the
recurrence x -> x + 1 up to x >= 10 and then their asymptotic (Stirling) series.
"""
import math

from dtrain.autograd.node import Op
from dtrain.autograd.ops._util import binary_forward, ufunc_forward
from dtrain.autograd.ops.pointwise import (
    NonDiff,
    _binary_samples,
    _nondiff,
    _unary_samples,
    abs,
    clamp,
    exp,
    isfinite,
    log,
    log1p,
    maximum,
    pow,
    sign,
    trunc,
    where,
)
from dtrain.autograd.ops.shape import clone
from dtrain.autograd.registry import Sample, SampleMaker, register, register_composite
from dtrain.core import dtype as dtypes
from dtrain.core.backend import array_module
from dtrain.core.tensor import Tensor

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_LN2, _LN10 = math.log(2.0), math.log(10.0)


class _UnaryMath(Op):
    """An elementwise op whose backward is g * grad(t): `grad` (a static function) is the
    derivative from the input (or, when the op saves its output, from the output) in Tensor
    ops, so that higher orders record."""

    def backward(self, g):
        return (g * self.grad(self.output if self._keeps_output else self.inputs[0]),)


def _unary(cls):
    """The public function of the registered elementwise op `cls`, named as in the registry
    (integer input as the default float dtype)."""
    def fn(input):
        return cls.apply(_as_float(input))
    fn.__name__ = cls.op_name
    fn.__doc__ = f"Elementwise {cls.op_name} of `input` (any shape)."
    return fn


# -- erf family -------------------------------------------------------------------------------
# erf(x) = 2/sqrt(pi) * sum_k (-1)^k x^(2k+1) / (k! (2k+1)) for |x| < 2: the largest term
# there is ~1.2, so cancellation costs < 1 bit; 30 terms reach double precision, 20 single.
# For |x| >= 2, erfc's continued fraction: 60 terms for double precision, 20 for single.
_ERF_SERIES = [_TWO_OVER_SQRT_PI * (-1) ** k / (math.factorial(k) * (2 * k + 1))
               for k in range(30)]
_ERF_SPLIT = 2.0


def _erf_series(x, double):
    xp = array_module(x)
    series = _ERF_SERIES if double else _ERF_SERIES[:20]
    t = x * x
    acc = xp.full_like(x, series[-1])
    for c in reversed(series[:-1]):
        acc *= t
        acc += c
    return acc * x


def _erfc_fraction(a, double):
    """erfc(a) for a >= 2: exp(-a^2) / sqrt(pi) / (a + (1/2) / (a + 1 / (a + (3/2) / ...))),
    evaluated bottom-up; inf gives 0 and NaN stays NaN."""
    xp = array_module(a)
    frac = a.copy()
    for k in range(60 if double else 20, 0, -1):
        xp.divide(k / 2, frac, out=frac)
        frac += a
    return xp.exp(-a * a) / (math.sqrt(math.pi) * frac)


def _erf_pair(x, complement):
    """erf(x), or erfc(x) with `complement`, on a backend float array (dtype kept). Single and
    half precision are summed in float64 too (float32 sums would lose ~7 ulp near 2)."""
    xp = array_module(x)
    double = x.dtype.itemsize >= 8
    x64 = x.astype("float64", copy=False)
    a = xp.abs(x64)
    near = a < _ERF_SPLIT
    out = xp.empty_like(x64)
    series = _erf_series(x64[near], double)
    tail = _erfc_fraction(a[~near], double)
    positive = x64[~near] > 0
    if complement:  # erfc = 1 - erf loses at most ~2 digits for |x| < 2 (erfc(2) = 0.005)
        out[near] = 1 - series
        out[~near] = xp.where(positive, tail, 2 - tail)
    else:
        out[near] = series
        out[~near] = xp.where(positive, 1 - tail, tail - 1)
    return out.astype(x.dtype, copy=False)


def erf_array(x):
    """erf on a backend float array (dtype kept); relative error below 1e-14 in float64."""
    return _erf_pair(x, False)


def _erfinv_array(x):
    """erfinv: Winitzki's closed form (relative error < 2e-3) refined by three Halley steps,
    on erf for |x| <= 0.5 and on erfc beyond (where 1 - |x| is exact, so the tails keep their
    precision); convergence is cubic, so float64 precision is reached."""
    xp = array_module(x)
    x64 = x.astype("float64", copy=False)
    ax = xp.abs(x64)
    lg = xp.log((1 - ax) * (1 + ax))
    a = 0.147
    t = 2 / (math.pi * a) + lg / 2
    y = xp.sqrt(xp.sqrt(t * t - lg / a) - t)
    tail = ax > 0.5
    for _ in range(3):
        # f = erf(y) - |x| = (1 - |x|) - erfc(y): f' = 2/sqrt(pi) exp(-y^2), f''/f' = -2y
        f = xp.where(tail, (1 - ax) - _erf_pair(y, True), erf_array(y) - ax)
        step = f / (_TWO_OVER_SQRT_PI * xp.exp(-y * y))
        y = y - step / (1 + y * step)  # Halley's step
    y = xp.where(ax == 1, math.inf, xp.where(ax > 1, math.nan, y))
    return xp.copysign(y, x64).astype(x.dtype, copy=False)


@register("erf", _unary_samples("erf", lambda x: Erf.apply(x), low=-3, high=3))
class Erf(_UnaryMath):
    """Elementwise erf."""

    saves = ("inputs",)

    def forward(self, x):
        return erf_array(x)

    grad = staticmethod(lambda x: (x * x * -1.0).exp() * _TWO_OVER_SQRT_PI)


@register("erfc", _unary_samples("erfc", lambda x: Erfc.apply(x), low=-3, high=3))
class Erfc(_UnaryMath):
    """Elementwise erfc."""

    saves = ("inputs",)

    def forward(self, x):
        return _erf_pair(x, True)

    grad = staticmethod(lambda x: (x * x * -1.0).exp() * -_TWO_OVER_SQRT_PI)


@register("erfinv", _unary_samples("erfinv", lambda x: Erfinv.apply(x), low=-0.9, high=0.9))
class Erfinv(_UnaryMath):
    """Elementwise erfinv."""

    saves = ("output",)

    def forward(self, x):
        return _erfinv_array(x)

    grad = staticmethod(lambda y: (y * y).exp() * (math.sqrt(math.pi) / 2))


erf, erfc, erfinv = map(_unary, (Erf, Erfc, Erfinv))


# -- log-gamma and polygamma --------------------------------------------------------------------
# B_2k / (2k (2k - 1)) of Stirling's series, and B_2k for the polygamma series.
_BERNOULLI = [1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6, -3617 / 510,
              43867 / 798]
_STIRLING = [b / (2 * k * (2 * k - 1)) for k, b in enumerate(_BERNOULLI, 1)]
_ASYMPTOTIC_FROM = 10.0  # at x >= 10 (+ n for polygamma), 9 terms reach float64 precision


def _shift(x, target, term):
    """Raise x by whole steps to at least `target`: returns (z, sum of term(x + k) over the
    steps taken). Vectorised: one pass per step, each element stopping at its own count."""
    xp = array_module(x)
    steps = xp.where(x < target, xp.ceil(target - x), 0)
    acc = xp.zeros_like(x)
    for k in range(int(steps.max()) if steps.size else 0):
        taken = k < steps
        acc += xp.where(taken, term(xp.where(taken, x + k, 1.0)), 0)
    return x + steps, acc


def _sin_pi(x):
    """|sin(pi x)| with the argument reduced exactly first (x - round(x) has no rounding)."""
    xp = array_module(x)
    return xp.abs(xp.sin(math.pi * (x - xp.round(x))))


def _lgamma_array(x):
    """log|Gamma(x)|: Stirling's series at z = x + k >= 10, less log x + ... + log(x+k-1);
    below 0.5 the reflection log(pi / |sin(pi x)|) - lgamma(1 - x). Absolute error ~1e-15."""
    xp = array_module(x)
    x64 = x.astype("float64", copy=False)
    refl = x64 < 0.5
    a = xp.where(refl, 1 - x64, x64)
    z, logs = _shift(a, _ASYMPTOTIC_FROM, xp.log)
    w, series = 1 / (z * z), xp.zeros_like(z)
    for c in reversed(_STIRLING):
        series = series * w + c
    out = (z - 0.5) * xp.log(z) - z + 0.5 * math.log(2 * math.pi) + series / z - logs
    sin = _sin_pi(xp.where(refl, x64, 0.5))  # only where reflected: no log(0) warnings
    out = xp.where(refl, math.log(math.pi) - xp.log(sin) - out, out)
    return xp.where(xp.isinf(x64), math.inf, out).astype(x.dtype, copy=False)


def _polygamma_array(n, x):
    """The n-th derivative of digamma. psi^(n)(x) = psi^(n)(x + k) - (-1)^n n! sum_j
    (x + j)^-(n+1) over j < k, with k steps to x + k >= 10 + n, where the asymptotic series
    holds; digamma (n = 0) reflects x < 0.5 to 1 - x first (psi(1-x) - pi cot(pi x)). For
    n >= 1 negative x take more steps (as many as -x), with no reflection."""
    xp = array_module(x)
    x64 = x.astype("float64", copy=False)
    refl = (x64 < 0.5) if n == 0 else xp.zeros(x64.shape, bool)
    a = xp.where(refl, 1 - x64, x64)
    z, acc = _shift(a, _ASYMPTOTIC_FROM + n, lambda v: v ** -(n + 1))
    w = 1 / (z * z)
    if n == 0:
        series = xp.zeros_like(z)
        for k, b in reversed(list(enumerate(_BERNOULLI, 1))):
            series = (series + b / (2 * k)) * w
        out = xp.log(z) - 0.5 / z - series - acc
        xr = xp.where(refl, x64, 0.25)  # only where reflected: no division-by-zero warnings
        out = xp.where(refl, out - math.pi / xp.tan(math.pi * (xr - xp.round(xr))), out)
        pole = (x64 <= 0) & (x64 == xp.round(x64))
        return xp.where(pole, xp.where(x64 == 0, -math.inf, math.nan), out).astype(
            x.dtype, copy=False)
    # psi^(n)(z) ~ (-1)^(n+1) [(n-1)!/z^n + n!/(2 z^(n+1)) + sum B_2k (2k+n-1)!/((2k)! z^(2k+n))]
    series = xp.zeros_like(z)
    for k, b in reversed(list(enumerate(_BERNOULLI, 1))):
        c = b * math.factorial(2 * k + n - 1) / math.factorial(2 * k)
        series = (series + c) * w
    tail = (math.factorial(n - 1) + math.factorial(n) / (2 * z) + series) / z ** n
    out = (-1) ** (n + 1) * (tail + math.factorial(n) * acc)
    return out.astype(x.dtype, copy=False)


def _as_float(t):
    """Integer and bool tensors as the default float dtype (PyTorch's result dtype)."""
    return t if t._data.dtype.kind == "f" else t.to(dtypes.get_default_dtype())


def _polygamma_samples():
    s = SampleMaker("polygamma")
    return [Sample(lambda x: polygamma(0, x), (s(3, 4, low=-2.7, high=3),)),
            Sample(lambda x: polygamma(1, x), (s(5, low=0.3, high=4),)),
            Sample(lambda x: polygamma(2, x), (s(4, low=-1.8, high=-1.2),))]


@register("polygamma", _polygamma_samples)
class Polygamma(Op):
    """psi^(n)(x), the n-th derivative of digamma; its own derivative is psi^(n+1)(x)."""

    saves = ("inputs",)

    def forward(self, x, n):
        self.n = n
        return _polygamma_array(n, x)

    def backward(self, g):
        return (g * Polygamma.apply(self.inputs[0], self.n + 1), None)


def polygamma(n, input):
    """The n-th derivative of the digamma function, elementwise (n >= 0)."""
    if not isinstance(n, int) or n < 0:
        raise RuntimeError(f"polygamma(n, x) does not support negative n (got n = {n})")
    return Polygamma.apply(_as_float(input), n)


def digamma(input):
    """psi(x) = d/dx lgamma(x): -inf at 0, NaN at negative integers."""
    return Polygamma.apply(_as_float(input), 0)


psi = digamma


@register("lgamma", _unary_samples("lgamma", lambda x: Lgamma.apply(x), low=-2.7, high=4))
class Lgamma(_UnaryMath):
    """Elementwise lgamma."""

    saves = ("inputs",)

    def forward(self, x):
        return _lgamma_array(x)

    grad = staticmethod(digamma)


lgamma = _unary(Lgamma)


# -- trigonometric, hyperbolic, exp and log -----------------------------------------------------
@register("tan", _unary_samples("tan", lambda x: Tan.apply(x)))
class Tan(_UnaryMath):
    """Elementwise tan."""

    saves, forward = ("output",), ufunc_forward("tan")
    grad = staticmethod(lambda y: y * y + 1)


@register("sinh", _unary_samples("sinh", lambda x: Sinh.apply(x)))
class Sinh(_UnaryMath):
    """Elementwise sinh."""

    saves, forward = ("inputs",), ufunc_forward("sinh")
    grad = staticmethod(lambda x: cosh(x))


@register("cosh", _unary_samples("cosh", lambda x: Cosh.apply(x)))
class Cosh(_UnaryMath):
    """Elementwise cosh."""

    saves, forward = ("inputs",), ufunc_forward("cosh")
    grad = staticmethod(lambda x: sinh(x))


@register("asin", _unary_samples("asin", lambda x: Asin.apply(x), low=-0.9, high=0.9))
class Asin(_UnaryMath):
    """Elementwise asin."""

    saves, forward = ("inputs",), ufunc_forward("arcsin")
    grad = staticmethod(lambda x: (1 - x * x).rsqrt())


@register("acos", _unary_samples("acos", lambda x: Acos.apply(x), low=-0.9, high=0.9))
class Acos(_UnaryMath):
    """Elementwise acos."""

    saves, forward = ("inputs",), ufunc_forward("arccos")
    grad = staticmethod(lambda x: -(1 - x * x).rsqrt())


@register("atan", _unary_samples("atan", lambda x: Atan.apply(x), low=-2, high=2))
class Atan(_UnaryMath):
    """Elementwise atan."""

    saves, forward = ("inputs",), ufunc_forward("arctan")
    grad = staticmethod(lambda x: (x * x + 1).reciprocal())


@register("asinh", _unary_samples("asinh", lambda x: Asinh.apply(x), low=-2, high=2))
class Asinh(_UnaryMath):
    """Elementwise asinh."""

    saves, forward = ("inputs",), ufunc_forward("arcsinh")
    grad = staticmethod(lambda x: (x * x + 1).rsqrt())


@register("acosh", _unary_samples("acosh", lambda x: Acosh.apply(x), low=1.2, high=3))
class Acosh(_UnaryMath):
    """Elementwise acosh."""

    saves, forward = ("inputs",), ufunc_forward("arccosh")
    grad = staticmethod(lambda x: (x * x - 1).rsqrt())


@register("atanh", _unary_samples("atanh", lambda x: Atanh.apply(x), low=-0.9, high=0.9))
class Atanh(_UnaryMath):
    """Elementwise atanh."""

    saves, forward = ("inputs",), ufunc_forward("arctanh")
    grad = staticmethod(lambda x: (1 - x * x).reciprocal())


@register("expm1", _unary_samples("expm1", lambda x: Expm1.apply(x)))
class Expm1(_UnaryMath):
    """Elementwise expm1."""

    saves, forward = ("output",), ufunc_forward("expm1")
    grad = staticmethod(lambda y: y + 1)


@register("log2", _unary_samples("log2", lambda x: Log2.apply(x), low=0.2, high=2))
class Log2(_UnaryMath):
    """Elementwise log2."""

    saves, forward = ("inputs",), ufunc_forward("log2")
    grad = staticmethod(lambda x: (x * _LN2).reciprocal())


@register("log10", _unary_samples("log10", lambda x: Log10.apply(x), low=0.2, high=2))
class Log10(_UnaryMath):
    """Elementwise log10."""

    saves, forward = ("inputs",), ufunc_forward("log10")
    grad = staticmethod(lambda x: (x * _LN10).reciprocal())


tan, sinh, cosh, asin, acos, atan, asinh, acosh, atanh, expm1, log2, log10 = map(_unary, (
    Tan, Sinh, Cosh, Asin, Acos, Atan, Asinh, Acosh, Atanh, Expm1, Log2, Log10))
arcsin, arccos, arctan, arcsinh, arccosh, arctanh = asin, acos, atan, asinh, acosh, atanh


def exp2(input):
    """2 ** input, elementwise."""
    return pow(2.0, input)


def frac(input):
    """The fractional part, input - trunc(input) (sign of input); gradient 1."""
    return input - trunc(input)


def deg2rad(input):
    """Degrees converted to radians, elementwise."""
    return input * (math.pi / 180)


def rad2deg(input):
    """Radians converted to degrees, elementwise."""
    return input * (180 / math.pi)


def sgn(input):
    """sign(input) (dtrain has no complex tensors, where sgn differs)."""
    return sign(input)


def clamp_min(input, min):
    """max(input, min), elementwise."""
    return clamp(input, min=min)


def clamp_max(input, max):
    """min(input, max), elementwise."""
    return clamp(input, max=max)


def logit(input, eps=None):
    """log(p / (1 - p)), with p clamped to [eps, 1 - eps] first when eps is given."""
    p = input if eps is None else clamp(input, eps, 1 - eps)
    return log(p) - log1p(-p)


def _nan_to_num_samples():
    s = SampleMaker("nan_to_num")
    return [Sample(lambda x: nan_to_num(x.log()), (s(3, 4, low=0.2, high=2),)),
            Sample(lambda x: nan_to_num(x, posinf=1.0), (s(5),))]


@register("nan_to_num", _nan_to_num_samples)
class NanToNum(Op):
    """NaN, +inf and -inf replaced; the gradient is 1 at finite elements, 0 at replaced ones.
    NOTE: one primitive, not three `where`s, so that the common case is one pass."""

    saves = ("inputs",)

    def forward(self, x, nan, posinf, neginf):
        return array_module(x).nan_to_num(x, nan=nan, posinf=posinf, neginf=neginf)

    def backward(self, g):
        return (where(isfinite(self.inputs[0]), g, 0.0), None, None, None)


def nan_to_num(input, nan=0.0, posinf=None, neginf=None):
    """NaN, +inf and -inf replaced by `nan`, `posinf`, `neginf` (by default 0 and the dtype's
    largest and lowest finite values); integer tensors are returned copied."""
    if input._data.dtype.kind != "f":
        return clone(input)
    return NanToNum.apply(input, nan, posinf, neginf)


def _unary_composite_samples():
    s = SampleMaker("unary_composites")
    x = s(3, 4, low=-2.5, high=2.5)
    return [Sample(exp2, (x,)), Sample(frac, (x,)), Sample(deg2rad, (x,)),
            Sample(rad2deg, (x,)), Sample(lambda x: logit(x.sigmoid()), (x,)),
            Sample(lambda p: logit(p, eps=0.1), (s(6, low=0.2, high=0.8),))]


register_composite("unary_math_composites", _unary_composite_samples)


# -- binary ---------------------------------------------------------------------------------
def _ufunc2(name):
    """`a (ufunc) b` for arrays or Python scalars, through the array module that owns them."""
    def apply(a, b):
        return getattr(array_module(b if type(a) in (int, float) else a), name)(a, b)
    return apply


class _BinaryMath(Op):
    """A binary elementwise op whose backward is g times the partial derivatives that
    `partials(a, b, na, nb)` gives (None where not needed); the engine sums broadcasting back."""

    saves = ("inputs",)

    def backward(self, g):
        na, nb = self.needs_input_grad
        da, db = self.partials(*self.inputs, na, nb)
        return (g * da if na else None,
                g * db if nb else None)


def _function(cls, name, doc):
    """The public function `name(input, other)` of the binary op `cls`."""
    def fn(input, other):
        return cls.apply(input, other)
    fn.__name__, fn.__doc__ = name, doc
    return fn


@register("atan2", _binary_samples("atan2", lambda a, b: Atan2.apply(a, b)))
class Atan2(_BinaryMath):
    """The angle of the point (other, input) in (-pi, pi], elementwise."""

    forward = binary_forward(_ufunc2("arctan2"), "arctan2")

    def partials(self, a, b, na, nb):
        r2 = a * a + b * b
        return b / r2 if na else None, -a / r2 if nb else None


@register("hypot", _binary_samples("hypot", lambda a, b: Hypot.apply(a, b)))
class Hypot(_BinaryMath):
    """sqrt(input^2 + other^2), elementwise without overflow."""

    saves = ("inputs", "output")
    forward = binary_forward(_ufunc2("hypot"), "hypot")

    def partials(self, a, b, na, nb):
        return a / self.output if na else None, b / self.output if nb else None


@register("fmod", _binary_samples("fmod", lambda a, b: fmod(a * 3, b), positive_b=True))
class Fmod(_BinaryMath):
    """Remainder with the sign of the dividend (C's fmod; `remainder` takes the divisor's):
    input - trunc(input / other) * other."""

    forward = binary_forward(_ufunc2("fmod"), "fmod")

    def partials(self, a, b, na, nb):
        return 1.0, -trunc(a / b) if nb else None


@register("copysign", _binary_samples("copysign", lambda a, b: Copysign.apply(a, b)))
class Copysign(_BinaryMath):
    """|input| with the sign (bit) of other: -0.0 counts as negative; d/dother = 0."""

    saves = ("inputs", "output")
    forward = binary_forward(_ufunc2("copysign"), "copysign")

    def partials(self, a, b, na, nb):
        return sign(a) * sign(self.output) if na else None, 0.0


atan2 = arctan2 = _function(Atan2, "atan2", Atan2.__doc__)
hypot = _function(Hypot, "hypot", Hypot.__doc__)
fmod = _function(Fmod, "fmod", Fmod.__doc__)
copysign = _function(Copysign, "copysign", Copysign.__doc__)


def _xlogy_samples():
    s = SampleMaker("xlogy")
    zeros = Tensor._make(s.rng.uniform(-1, 1, (3, 4)) * (s.rng.random((3, 4)) > 0.3))
    return [Sample(xlogy, (s(3, 4), s(3, 4, low=0.2, high=2))),
            Sample(lambda y: xlogy(zeros, y), (s(3, 4, low=0.2, high=2),)),
            Sample(xlogy, (s(2, 1), s(3, low=0.2, high=2)))]


@register("xlogy", _xlogy_samples)
class Xlogy(_BinaryMath):
    """x * log(y), 0 where x == 0 (unless y is NaN). As in torch, d/dx = xlogy(x != 0, y)
    (so 0 where x == 0) and d/dy = x / y."""

    def forward(self, x, y):
        xp = array_module(y if type(x) in (int, float) else x)
        out = xp.where(xp.asarray(x) == 0, 0.0, x * xp.log(y))
        return xp.where(xp.isnan(y), math.nan, out)

    def partials(self, x, y, nx, ny):
        return (Xlogy.apply(where(x != 0, 1.0, 0.0), y) if nx else None,
                x / y if ny else None)


xlogy = _function(Xlogy, "xlogy", "input * log(other), 0 where input == 0 (as in "
                  "scipy.special.xlogy).")


def logaddexp(input, other):
    """log(exp(input) + exp(other)) without overflow: max + log1p(exp(-|input - other|))."""
    both_inf = (input == other) & isfinite(input).logical_not()  # inf - inf would give NaN
    return where(both_inf, input, maximum(input, other) + log1p(exp(-abs(input - other))))


def logaddexp2(input, other):
    """log2(2**input + 2**other) without overflow."""
    return logaddexp(input * _LN2, other * _LN2) / _LN2


def float_power(input, exponent):
    """input ** exponent computed in float64 (the result is float64)."""
    def double(v):
        return v.double() if isinstance(v, Tensor) else float(v)
    return pow(double(input), double(exponent))


def _binary_composite_samples():
    s = SampleMaker("binary_composites")
    return [Sample(logaddexp, (s(3, 4), s(3, 4))), Sample(logaddexp, (s(2, 3), s(3))),
            Sample(logaddexp2, (s(3, 4), s(4))),
            Sample(float_power, (s(3, 4, low=0.5, high=2), s(3, 4)))]


register_composite("binary_math_composites", _binary_composite_samples)


class Heaviside(NonDiff):
    """Elementwise step: 0 where input < 0, other where input == 0, 1 where input > 0 (no
    gradient)."""

    forward = ufunc_forward("heaviside")


heaviside = _nondiff(Heaviside, "heaviside")
