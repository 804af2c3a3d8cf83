"""Elementwise ops with broadcasting: arithmetic, transcendental, activations, selection.

Backward formulas return gradients in the broadcast shape; the engine sums each back to
its operand's shape.
Python scalars are constants: they take part in forward and get no gradient.
"""
import math
import operator

from dtrain.autograd.node import CheckError, Op
from dtrain.autograd.ops._util import as_array_arg, binary_forward, torch_dtype, ufunc_forward
from dtrain.autograd.registry import Sample, SampleMaker, register
from dtrain.core.backend import array_module
from dtrain.core.tensor import Tensor


def _binary_samples(name, fn, positive_b=False):
    def samples():
        s = SampleMaker(name)
        lo = 0.5 if positive_b else -1.0
        return [Sample(fn, (s(3, 4), s(3, 4, low=lo))),
                Sample(fn, (s(2, 3, 1), s(4, low=lo))),       # broadcasting both ways
                Sample(fn, (s(3), 1.5 if positive_b else -0.7)),  # Python scalar operand
                Sample(fn, (s(1, 3), s(2, 1, low=lo)))]
    return samples


def _unary_samples(name, fn, low=-1.0, high=1.0, away=False):
    def samples():
        s = SampleMaker(name)
        if away:
            return [Sample(fn, (s.away(3, 4),)), Sample(fn, (s.away(5),))]
        return [Sample(fn, (s(3, 4, low=low, high=high),)), Sample(fn, (s(5, low=low, high=high),))]
    return samples


# -- binary arithmetic ------------------------------------------------------------------------
@register("add", _binary_samples("add", lambda a, b: a + b))
class Add(Op):
    forward = binary_forward(operator.add, "add")

    def backward(self, g):
        na, nb = self.needs_input_grad
        return (g if na else None,
                g if nb else None)


@register("sub", _binary_samples("sub", lambda a, b: a - b))
class Sub(Op):
    forward = binary_forward(operator.sub, "subtract")

    def backward(self, g):
        na, nb = self.needs_input_grad
        return (g if na else None,
                -g if nb else None)


@register("mul", _binary_samples("mul", lambda a, b: a * b))
class Mul(Op):
    saves = ("inputs",)

    forward = binary_forward(operator.mul, "multiply")

    def backward(self, g):
        a, b = self.inputs
        na, nb = self.needs_input_grad
        return (g * b if na else None,
                g * a if nb else None)


@register("div", _binary_samples("div", lambda a, b: a / b, positive_b=True))
class Div(Op):
    saves = ("inputs",)

    forward = binary_forward(operator.truediv, "true_divide")

    def backward(self, g):
        a, b = self.inputs
        na, nb = self.needs_input_grad
        ga = g / b
        return (ga if na else None,
                -ga * a / b if nb else None)


def _pow_samples():
    s = SampleMaker("pow")
    return [Sample(lambda a, b: a ** b, (s(3, 4, low=0.5, high=1.5), s(3, 4))),
            Sample(lambda a: a ** 3, (s(4),)),
            Sample(lambda a: a ** -1.5, (s(4, low=0.5),)),
            Sample(lambda b: 2.0 ** b, (s(2, 3),)),
            Sample(lambda a, b: a ** b, (s(2, 1, low=0.5), s(3)))]


@register("pow", _pow_samples)
class Pow(Op):
    saves = ("inputs", "output")

    def forward(self, a, b):
        return torch_dtype(a ** b, a, b)

    def backward(self, g):
        a, b = self.inputs
        na, nb = self.needs_input_grad
        ga = gb = None
        if na:
            ga = g * b * a ** (b - 1)
        if nb:
            log_a = a.log() if isinstance(a, Tensor) else math.log(a)
            gb = g * self.output * log_a
        return ga, gb


def _minmax_samples(name, fn):
    def samples():
        s = SampleMaker(name)
        return [Sample(fn, (s(3, 4), s(3, 4))), Sample(fn, (s(2, 3), s(3)))]
    return samples


class _PairSelect(Op):
    """maximum/minimum: the gradient goes to the selected operand, split evenly on ties."""

    saves = ("w",)

    def _select(self, a, b, out, wins):
        w = wins.astype(out.dtype) + (a == b).astype(out.dtype) * 0.5
        self.w = w
        return out

    def backward(self, g):
        w = Tensor._make(self.w)
        na, nb = self.needs_input_grad
        return (g * w if na else None,
                g * (1 - w) if nb else None)


@register("maximum", _minmax_samples("maximum", lambda a, b: a.maximum(b)))
class Maximum(_PairSelect):
    def forward(self, a, b):
        xp = array_module(a)
        return self._select(a, b, torch_dtype(xp.maximum(a, b), a, b), a > b)


@register("minimum", _minmax_samples("minimum", lambda a, b: a.minimum(b)))
class Minimum(_PairSelect):
    def forward(self, a, b):
        xp = array_module(a)
        return self._select(a, b, torch_dtype(xp.minimum(a, b), a, b), a < b)


# -- unary ----------------------------------------------------------------------------------
@register("neg", _unary_samples("neg", lambda x: -x))
class Neg(Op):
    forward = ufunc_forward("negative")

    def backward(self, g):
        return (-g,)


@register("exp", _unary_samples("exp", lambda x: x.exp()))
class Exp(Op):
    saves = ("output",)

    forward = ufunc_forward("exp")

    def backward(self, g):
        return (g * self.output,)


@register("log", _unary_samples("log", lambda x: x.log(), low=0.2, high=2.0))
class Log(Op):
    saves = ("inputs",)

    forward = ufunc_forward("log")

    def backward(self, g):
        return (g / self.inputs[0],)


@register("log1p", _unary_samples("log1p", lambda x: x.log1p(), low=-0.5, high=2.0))
class Log1p(Op):
    saves = ("inputs",)

    forward = ufunc_forward("log1p")

    def backward(self, g):
        return (g / (self.inputs[0] + 1),)


@register("sqrt", _unary_samples("sqrt", lambda x: x.sqrt(), low=0.2, high=2.0))
class Sqrt(Op):
    saves = ("output",)

    forward = ufunc_forward("sqrt")

    def backward(self, g):
        return (g / (2 * self.output),)


@register("abs", _unary_samples("abs", lambda x: x.abs(), away=True))
class Abs(Op):
    saves = ("inputs",)

    forward = ufunc_forward("abs")

    def backward(self, g):
        return (g * self.inputs[0].sign(),)


@register("sin", _unary_samples("sin", lambda x: x.sin(), low=-3, high=3))
class Sin(Op):
    saves = ("inputs",)

    forward = ufunc_forward("sin")

    def backward(self, g):
        return (g * self.inputs[0].cos(),)


@register("cos", _unary_samples("cos", lambda x: x.cos(), low=-3, high=3))
class Cos(Op):
    saves = ("inputs",)

    forward = ufunc_forward("cos")

    def backward(self, g):
        return (-g * self.inputs[0].sin(),)


@register("tanh", _unary_samples("tanh", lambda x: x.tanh(), low=-2, high=2))
class Tanh(Op):
    saves = ("output",)

    forward = ufunc_forward("tanh")

    def backward(self, g):
        return (TanhBackward.apply(g, self.output),)


def _act_backward_samples(name, fn):
    def samples():
        s = SampleMaker(name)
        return [Sample(fn, (s(3, 4), s(3, 4, low=-0.9, high=0.9)))]
    return samples


@register("tanh_backward", _act_backward_samples("tanh_backward",
                                                 lambda g, y: TanhBackward.apply(g, y)))
class TanhBackward(Op):
    """g * (1 - y^2) for y = tanh(x). NOTE: one fused op instead of three keeps the
    backward pass of tanh-heavy models cheap; its own backward keeps double-grad exact."""

    saves = ("inputs",)

    def forward(self, g, y, out=None):
        xp = array_module(y)
        t = xp.multiply(y, y, out=out)
        xp.subtract(1, t, out=t)
        return xp.multiply(g, t, out=t)

    def backward(self, gg):
        g, y = self.inputs
        ng, ny = self.needs_input_grad
        return (TanhBackward.apply(gg, y) if ng else None, gg * g * y * -2 if ny else None)


@register("sigmoid", _unary_samples("sigmoid", lambda x: x.sigmoid(), low=-3, high=3))
class Sigmoid(Op):
    saves = ("output",)

    def forward(self, x, out=None):
        xp = array_module(x)
        # NOTE: tanh form is exact and never overflows, unlike 1 / (1 + exp(-x)).
        y = xp.multiply(x, 0.5, out=out)
        xp.tanh(y, out=y)
        y *= 0.5
        y += 0.5
        return y

    def backward(self, g):
        return (SigmoidBackward.apply(g, self.output),)


@register("sigmoid_backward", _act_backward_samples("sigmoid_backward",
                                                    lambda g, y: SigmoidBackward.apply(g, y)))
class SigmoidBackward(Op):
    """g * y * (1 - y) for y = sigmoid(x), fused like TanhBackward."""

    saves = ("inputs",)

    def forward(self, g, y, out=None):
        xp = array_module(y)
        t = xp.subtract(1, y, out=out)
        t *= y
        return xp.multiply(g, t, out=t)

    def backward(self, gg):
        g, y = self.inputs
        ng, ny = self.needs_input_grad
        return (SigmoidBackward.apply(gg, y) if ng else None,
                gg * g * (1 - 2 * y) if ny else None)


@register("relu", _unary_samples("relu", lambda x: x.relu(), away=True))
class Relu(Op):
    saves = ("output",)  # NOTE: backward's mask is `output > 0`, so forward stashes nothing

    def forward(self, x, out=None):
        return array_module(x).maximum(x, 0, out=out)

    def backward(self, g):
        return (g * (self.output > 0),)


def _clamp_samples():
    s = SampleMaker("clamp")
    return [Sample(lambda x: x.clamp(-0.5, 0.5), (s.away(4, 5, gap=0.01),)),
            Sample(lambda x: x.clamp(min=0.1), (s.away(6, gap=0.01),)),
            Sample(lambda x: x.clamp(max=-0.1), (s.away(6, gap=0.01),))]


@register("clamp", _clamp_samples)
class Clamp(Op):
    saves = ("mask",)

    def forward(self, x, lo, hi):
        xp = array_module(x)
        out = xp.clip(x, lo, hi)
        self.mask = out == x
        return out

    def backward(self, g):
        return (g * Tensor._make(self.mask), None, None)


def _where_samples():
    s = SampleMaker("where")
    cond = Tensor._make(s.rng.random((3, 4)) > 0.5)
    return [Sample(lambda a, b: where(cond, a, b), (s(3, 4), s(3, 4))),
            Sample(lambda a, b: where(cond, a, b), (s(4), s(3, 1))),
            Sample(lambda a: where(cond, a, 0.0), (s(3, 4),)),
            Sample(lambda a: a.where(cond, -a), (s(3, 4),))]


@register("where", _where_samples)
class Where(Op):
    saves = ("cond",)

    def forward(self, cond, a, b, out=None):
        xp = array_module(cond)
        self.cond = cond
        if out is None:
            return torch_dtype(xp.where(cond, a, b), a, b)
        xp.copyto(out, b, casting="unsafe")  # out has the promoted dtype already
        xp.copyto(out, a, casting="unsafe", where=cond)
        return out

    def backward(self, g):
        _, na, nb = self.needs_input_grad
        cond = Tensor._make(self.cond)
        return (None, Where.apply(cond, g, 0.0) if na else None,
                Where.apply(cond, 0.0, g) if nb else None)


# -- public functions ---------------------------------------------------------------------
def add(input, other, *, alpha=1):
    """input + alpha * other, elementwise with broadcasting."""
    return Add.apply(input, other if alpha == 1 else other * alpha)


def sub(input, other, *, alpha=1):
    """input - alpha * other, elementwise with broadcasting."""
    return Sub.apply(input, other if alpha == 1 else other * alpha)


def mul(input, other):
    """input * other, elementwise with broadcasting."""
    return Mul.apply(input, other)


def div(input, other, *, rounding_mode=None):
    """True division, or rounded ("floor"/"trunc", no gradient) keeping integer dtypes."""
    if rounding_mode is None:
        return Div.apply(input, other)
    if rounding_mode == "floor":
        return floor_divide(input, other)
    if rounding_mode != "trunc":
        raise ValueError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' "
                         f"but found '{rounding_mode}'")
    return _trunc_divide(input, other)


true_divide = divide = div
subtract = sub
multiply = mul


def pow(input, exponent):
    """input ** exponent, elementwise (exponent a number or a tensor)."""
    return Pow.apply(input, exponent)


def maximum(input, other):
    """The larger of input and other, elementwise with broadcasting."""
    return Maximum.apply(input, other)


def minimum(input, other):
    """The smaller of input and other, elementwise with broadcasting."""
    return Minimum.apply(input, other)


def neg(input):
    """-input, elementwise."""
    return Neg.apply(input)


negative = neg


def exp(input):
    """e ** input, elementwise."""
    return Exp.apply(input)


def log(input):
    """Natural logarithm, elementwise."""
    return Log.apply(input)


def log1p(input):
    """log(1 + input), elementwise (accurate for small input)."""
    return Log1p.apply(input)


def sqrt(input):
    """Square root, elementwise."""
    return Sqrt.apply(input)


def rsqrt(input):
    """1 / sqrt(input), elementwise."""
    return Pow.apply(input, -0.5)


def square(input):
    """input * input, elementwise."""
    return Mul.apply(input, input)


def reciprocal(input):
    """1 / input, elementwise."""
    return Div.apply(1.0, input)


def abs(input):
    """|input|, elementwise."""
    return Abs.apply(input)


def sin(input):
    """Sine, elementwise."""
    return Sin.apply(input)


def cos(input):
    """Cosine, elementwise."""
    return Cos.apply(input)


def tanh(input):
    """Hyperbolic tangent, elementwise."""
    return Tanh.apply(input)


def sigmoid(input):
    """1 / (1 + exp(-input)), elementwise."""
    return Sigmoid.apply(input)


def relu(input):
    """max(input, 0), elementwise."""
    return Relu.apply(input)


def clamp(input, min=None, max=None):
    """Limit values to [min, max]; tensor bounds compose maximum/minimum."""
    if min is None and max is None:
        raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        out = input if min is None else maximum(input, min)
        return out if max is None else minimum(out, max)
    return Clamp.apply(input, min, max)


clip = clamp


def hardshrink(input, lambd=0.5):
    """x where |x| > lambd, else 0 (`F.hardshrink`, `Tensor.hardshrink`)."""
    return where(abs(input) > lambd, input, 0.0)


def where(condition, input=None, other=None):
    """Elementwise `input if condition else other`; `where(cond)` gives nonzero indices."""
    if input is None and other is None:
        return nonzero(condition, as_tuple=True)
    cond = as_array_arg(condition)
    if cond.dtype.kind != "b":
        raise RuntimeError(f"where expected condition to be a boolean tensor, but got a tensor "
                           f"with dtype {condition.dtype}")
    return Where.apply(condition if isinstance(condition, Tensor) else Tensor._make(cond),
                       input, other)


# -- non-differentiable elementwise ---------------------------------------------------------
class NonDiff(Op):
    """Base of the registered ops without gradient (comparisons, rounding, bit operations,
    indices): recorded like any op (so graph mode captures it), never part of the autograd
    graph. Register one, and make its public function, with `_nondiff`."""

    differentiable = False


def _nondiff_samples(cls, name, arity, ints):
    def samples():
        s = SampleMaker(name)
        make = (lambda: s.ints(5, 3, 4)) if ints else (lambda: s(3, 4, low=-3, high=3,
                                                                   grad=False))
        args = tuple(make() for _ in range(arity))
        return [Sample(lambda *a: cls.apply(*a), args)]
    return samples


def _nondiff(cls, name, arity=2, ints=False):
    """Register `cls` (a NonDiff op) as `name`, its samples `arity` float (or, with `ints`,
    integer) tensors, and return its public function."""
    register(name, _nondiff_samples(cls, name, arity, ints), differentiable=False)(cls)

    def op(*args):
        return cls.apply(*args)
    op.__name__ = name
    op.__doc__ = cls.__doc__
    return op


class Eq(NonDiff):
    """Elementwise input == other (no gradient)."""

    forward = ufunc_forward("equal")


class Ne(NonDiff):
    """Elementwise input != other (no gradient)."""

    forward = ufunc_forward("not_equal")


class Lt(NonDiff):
    """Elementwise input < other (no gradient)."""

    forward = ufunc_forward("less")


class Le(NonDiff):
    """Elementwise input <= other (no gradient)."""

    forward = ufunc_forward("less_equal")


class Gt(NonDiff):
    """Elementwise input > other (no gradient)."""

    forward = ufunc_forward("greater")


class Ge(NonDiff):
    """Elementwise input >= other (no gradient)."""

    forward = ufunc_forward("greater_equal")


class LogicalAnd(NonDiff):
    """Elementwise input and other, as booleans (no gradient)."""

    forward = ufunc_forward("logical_and")


class LogicalOr(NonDiff):
    """Elementwise input or other, as booleans (no gradient)."""

    forward = ufunc_forward("logical_or")


class LogicalXor(NonDiff):
    """Elementwise input xor other, as booleans (no gradient)."""

    forward = ufunc_forward("logical_xor")


class LogicalNot(NonDiff):
    """Elementwise not input, as booleans (no gradient)."""

    forward = ufunc_forward("logical_not")


class Isnan(NonDiff):
    """Elementwise whether input is NaN (no gradient)."""

    forward = ufunc_forward("isnan")


class Isinf(NonDiff):
    """Elementwise whether input is +inf or -inf (no gradient)."""

    forward = ufunc_forward("isinf")


class Isfinite(NonDiff):
    """Elementwise whether input is neither infinite nor NaN (no gradient)."""

    forward = ufunc_forward("isfinite")


class Sign(NonDiff):
    """Elementwise -1, 0 or 1 by the sign of input (no gradient)."""

    forward = ufunc_forward("sign")


class Floor(NonDiff):
    """Elementwise largest integer <= input (no gradient)."""

    forward = ufunc_forward("floor")


class Ceil(NonDiff):
    """Elementwise smallest integer >= input (no gradient)."""

    forward = ufunc_forward("ceil")


class Trunc(NonDiff):
    """Elementwise input rounded toward zero (no gradient)."""

    forward = ufunc_forward("trunc")


class Round(NonDiff):
    """Elementwise input rounded to the nearest integer, halves to even (no gradient)."""

    forward = ufunc_forward("round")


class FloorDivide(NonDiff):
    """Elementwise floor(input / other), keeping integer dtypes (no gradient)."""

    def forward(self, a, b):
        return torch_dtype(array_module(a).floor_divide(a, b), a, b)


class DivTrunc(NonDiff):
    """Elementwise trunc(input / other), keeping integer dtypes (no gradient)."""

    def forward(self, a, b):
        xp = array_module(a)
        return torch_dtype(xp.trunc(a / b).astype(xp.result_type(a, b)), a, b)


class Remainder(NonDiff):
    """Elementwise input mod other with the sign of other (Python's %; no gradient)."""

    def forward(self, a, b):
        return torch_dtype(array_module(a).remainder(a, b), a, b)


class BitwiseAnd(NonDiff):
    """Elementwise input & other, of integers or booleans (no gradient)."""

    forward = ufunc_forward("bitwise_and")


class BitwiseOr(NonDiff):
    """Elementwise input | other, of integers or booleans (no gradient)."""

    forward = ufunc_forward("bitwise_or")


class BitwiseNot(NonDiff):
    """Elementwise ~input, of integers or booleans (no gradient)."""

    forward = ufunc_forward("invert")


eq, ne, lt, le = _nondiff(Eq, "eq"), _nondiff(Ne, "ne"), _nondiff(Lt, "lt"), _nondiff(Le, "le")
gt, ge = _nondiff(Gt, "gt"), _nondiff(Ge, "ge")
logical_and = _nondiff(LogicalAnd, "logical_and")
logical_or = _nondiff(LogicalOr, "logical_or")
logical_xor = _nondiff(LogicalXor, "logical_xor")
logical_not = _nondiff(LogicalNot, "logical_not", 1)
isnan = _nondiff(Isnan, "isnan", 1)
isinf = _nondiff(Isinf, "isinf", 1)
isfinite = _nondiff(Isfinite, "isfinite", 1)
sign = _nondiff(Sign, "sign", 1)
floor = _nondiff(Floor, "floor", 1)
ceil = _nondiff(Ceil, "ceil", 1)
trunc = _nondiff(Trunc, "trunc", 1)
round = _nondiff(Round, "round", 1)
floor_divide = _nondiff(FloorDivide, "floor_divide")
_trunc_divide = _nondiff(DivTrunc, "div_trunc")
remainder = _nondiff(Remainder, "remainder")
bitwise_and = _nondiff(BitwiseAnd, "bitwise_and", ints=True)
bitwise_or = _nondiff(BitwiseOr, "bitwise_or", ints=True)
bitwise_not = _nondiff(BitwiseNot, "bitwise_not", 1, ints=True)


class Nonzero(NonDiff):
    """The (n, ndim) int64 indices of the non-zero elements (no gradient); n depends on
    the data."""

    shape_from_data = (0,)

    def forward(self, x):
        xp = array_module(x)
        idx = xp.nonzero(x)
        return xp.stack(idx, axis=1) if idx else xp.zeros((0, 0), dtype="int64")


nonzero_ = _nondiff(Nonzero, "nonzero", 1)


def nonzero(input, *, as_tuple=False):
    """Indices of non-zero elements: an (n, ndim) int64 tensor, or a tuple of 1-D tensors."""
    out = nonzero_(input)
    return tuple(out.unbind(1)) if as_tuple else out


class Check(NonDiff):
    """Raise `error` ("ValueError" or "RuntimeError") with `message` and the values of
    `shown` (when given) unless every element of `condition` is true; returns `condition`.
    A recorded op, not a Python branch on data: graph mode keeps it in the graph, and a
    replay raises as the eager call would."""

    kept = True

    def forward(self, condition, shown, message, error="ValueError"):
        if not bool(array_module(condition).all(condition)):
            text = message if shown is None else f"{message}:\n{shown!r}"
            raise CheckError(text) if error == "ValueError" else RuntimeError(text)
        return condition


def _check_samples():
    s = SampleMaker("check")
    return [Sample(lambda c, x: Check.apply(c, x, "never raised"),
                   (s(2, 3, low=0.5, grad=False) > 0, s(2, 3, grad=False)))]


register("check", _check_samples, differentiable=False)(Check)


def check_all(condition, message, shown=None, error="ValueError"):
    """Raise `error` ("ValueError" or "RuntimeError") with `message` (and the values of
    `shown`) unless `condition` is true everywhere, without reading the values into Python
    (so a compiled function can validate)."""
    Check.apply(condition, shown, message, error=error)


def argwhere(input):
    """torch.argwhere: the (n, ndim) indices of non-zero elements (nonzero's default form)."""
    return nonzero(input)


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """True when |input - other| <= atol + rtol * |other| everywhere (a Python bool)."""
    xp = array_module(input._data)
    return bool(xp.allclose(input._data, as_array_arg(other), rtol, atol, equal_nan))


def isclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """Elementwise |input - other| <= atol + rtol * |other|: a bool tensor."""
    xp = array_module(input._data)
    return Tensor._make(xp.isclose(input._data, as_array_arg(other), rtol, atol, equal_nan))


def equal(input, other):
    """True when both tensors have the same shape and elements."""
    return input._data.shape == other._data.shape and bool((input._data == other._data).all())
