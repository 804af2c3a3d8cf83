"""Activations: functional forms (`relu`, `gelu`, `softplus`, ...) and their modules.

GELU's exact normal CDF uses erf (`dtrain.autograd.ops.special`, where NumPy's lack of it is
made up for).
"""
import math
import warnings

from dtrain.autograd.grad_mode import no_grad
from dtrain.autograd.node import Op
from dtrain.autograd.ops import reduce
from dtrain.autograd.ops.pointwise import Where, hardshrink, where
from dtrain.autograd.ops.special import erf, erf_array  # noqa: F401  (erf: nn.activation.erf)
from dtrain.autograd.registry import Sample, SampleMaker, register, register_composite
from dtrain.autograd.tensor_methods import inplace as _inplace
from dtrain.core import backend, creation
from dtrain.core import random as rnd
from dtrain.core.backend import array_module
from dtrain.core.random import manual_seed
from dtrain.nn.module import Module
from dtrain.nn.parameter import Parameter

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _gelu_samples():
    s = SampleMaker("gelu")
    return [Sample(gelu, (s(3, 4, low=-3, high=3),)), Sample(gelu, (s(5, low=-6, high=6),))]


@register("gelu", _gelu_samples)
class Gelu(Op):
    """x * Phi(x) with the exact normal CDF. NOTE: fused (the composite would run erf's
    series twice per step); Phi is kept for backward, whose own op is `GeluBackward`."""

    saves = ("inputs", "cdf")

    def forward(self, x):
        self.cdf = _normal_cdf(x)
        return x * self.cdf

    def backward(self, g):
        return (GeluBackward.apply(g, self.inputs[0], self.cdf),)


def _normal_cdf(x):
    """Phi(x) = (1 + erf(x / sqrt(2))) / 2 on an array."""
    return (erf_array(x * (1 / math.sqrt(2.0))) + 1) * 0.5


def _gelu_backward_samples():
    s = SampleMaker("gelu_backward")
    return [Sample(lambda g, x: GeluBackward.apply(g, x, _normal_cdf(x._data)),
                   (s(3, 4), s(3, 4, low=-3, high=3)))]


@register("gelu_backward", _gelu_backward_samples)
class GeluBackward(Op):
    """g * (Phi(x) + x phi(x)), the derivative of exact GELU; its own derivative in x is
    g * phi(x) * (2 - x^2), written with Tensor ops so higher orders keep working."""

    saves = ("inputs",)

    def forward(self, g, x, cdf):
        pdf = array_module(x).exp(x * x * -0.5) * _INV_SQRT_2PI
        return g * (cdf + x * pdf)

    def backward(self, gg):
        g, x, cdf = self.inputs
        ng, nx = self.needs_input_grad[:2]
        gg_in = GeluBackward.apply(gg, x, cdf) if ng else None
        gx = None
        if nx:
            pdf = (x * x * -0.5).exp() * _INV_SQRT_2PI
            gx = gg * g * pdf * (2 - x * x)
        return gg_in, gx, None


def _softplus_samples():
    s = SampleMaker("softplus")
    return [Sample(softplus, (s(3, 4, low=-3, high=3),)),
            Sample(lambda x: softplus(x, beta=2.0, threshold=2.0), (s(3, 4, low=0.5, high=1.5),))]


@register("softplus", _softplus_samples)
class SoftplusOp(Op):
    """log(1 + exp(beta x)) / beta, linear where beta x > threshold. NOTE: fused so that it
    never overflows: log1p(exp(-|z|)) + max(z, 0) instead of log(1 + exp(z))."""

    saves = ("inputs", "linear")

    def name(self):
        return "SoftplusBackward0"

    def forward(self, x, beta, threshold):
        xp = array_module(x)
        z = x * beta
        self.linear = z > threshold
        soft = (xp.log1p(xp.exp(-xp.abs(z))) + xp.maximum(z, 0)) / beta
        return xp.where(self.linear, x, soft)

    def backward(self, g):
        x, beta, _ = self.inputs
        sig = (x * beta).sigmoid()
        return (Where.apply(self.linear, g, g * sig), None, None)


# -- functional forms -------------------------------------------------------------------------
def relu(input, inplace=False):
    """max(x, 0), elementwise; same shape as input."""
    return input.relu_() if inplace else input.relu()


def _leaky(input, negative_slope):
    return Where.apply(input > 0, input, input * negative_slope)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """x where x > 0, else negative_slope * x."""
    if inplace:
        return _inplace(input, _leaky, (negative_slope,))
    return _leaky(input, negative_slope)


def gelu(input, approximate="none"):
    """x * Phi(x); `approximate="tanh"`: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    if approximate == "none":
        return Gelu.apply(input)
    if approximate == "tanh":
        inner = (input + input * input * input * 0.044715) * math.sqrt(2.0 / math.pi)
        return input * (inner.tanh() + 1) * 0.5
    raise RuntimeError(f"approximate argument must be either none or tanh, got {approximate!r}")


def silu(input, inplace=False):
    """x * sigmoid(x)."""
    if inplace:
        return _inplace(input, lambda x: x * x.sigmoid(), ())
    return input * input.sigmoid()


def _elu(input, alpha):
    # exp only of the non-positive part: no overflow (and no inf * 0 in backward).
    return Where.apply(input > 0, input, (input.clamp(max=0).exp() - 1) * alpha)


def elu(input, alpha=1.0, inplace=False):
    """x where x > 0, else alpha * (exp(x) - 1)."""
    if inplace:
        return _inplace(input, _elu, (alpha,))
    return _elu(input, alpha)


def softplus(input, beta=1.0, threshold=20.0):
    """log(1 + exp(beta * x)) / beta, linear where beta * x > threshold."""
    return SoftplusOp.apply(input, beta, threshold)


def tanh(input):
    """Hyperbolic tangent, elementwise."""
    return input.tanh()


def sigmoid(input):
    """1 / (1 + exp(-x)), elementwise."""
    return input.sigmoid()


def _softmax_dim(name, ndim):
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call "
                  "to include dim=X as an argument.", stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """exp(x) / sum(exp(x)) along `dim`; same shape as input."""
    if dim is None:
        dim = _softmax_dim("softmax", input.dim())
    return reduce.softmax(input, dim, dtype=dtype)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """log(softmax(x, dim)), computed stably; same shape as input."""
    if dim is None:
        dim = _softmax_dim("log_softmax", input.dim())
    return reduce.log_softmax(input, dim, dtype=dtype)


def _maybe_inplace(fn, input, inplace, *args):
    return _inplace(input, fn, args) if inplace else fn(input, *args)


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    """x clamped to [min_val, max_val]."""
    return _maybe_inplace(lambda x, lo, hi: x.clamp(lo, hi), input, inplace, min_val, max_val)


def relu6(input, inplace=False):
    """min(max(x, 0), 6), elementwise."""
    return hardtanh(input, 0.0, 6.0, inplace)


def hardsigmoid(input, inplace=False):
    """relu6(x + 3) / 6."""
    return _maybe_inplace(lambda x: (x + 3).clamp(0.0, 6.0) / 6, input, inplace)


def hardswish(input, inplace=False):
    """x * relu6(x + 3) / 6."""
    return _maybe_inplace(lambda x: x * (x + 3).clamp(0.0, 6.0) / 6, input, inplace)


def logsigmoid(input):
    """log(sigmoid(x)) = -softplus(-x), computed without overflow."""
    return -SoftplusOp.apply(-input, 1.0, math.inf)


def mish(input, inplace=False):
    """x * tanh(softplus(x))."""
    return _maybe_inplace(lambda x: x * softplus(x).tanh(), input, inplace)


def softsign(input):
    """x / (1 + |x|)."""
    return input / (input.abs() + 1)


def celu(input, alpha=1.0, inplace=False):
    """x where x > 0, else alpha * (exp(x / alpha) - 1)."""
    return _maybe_inplace(lambda x: Where.apply(x > 0, x, ((x / alpha).clamp(max=0).exp()
                                                                - 1) * alpha),
                          input, inplace)


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def selu(input, inplace=False):
    """scale * elu(x, alpha) with the self-normalising constants of Klambauer et al."""
    return _maybe_inplace(lambda x: _elu(x, _SELU_ALPHA) * _SELU_SCALE, input, inplace)


def prelu(input, weight):
    """x where x > 0, else weight * x; weight has 1 or C (channel dim 1) entries."""
    if weight.numel() != 1:
        channels = input.shape[1] if input.dim() >= 2 else input.shape[0]
        if weight.numel() != channels:
            raise RuntimeError(f"Mismatch of parameter numbers and input channel size. Found "
                               f"parameter numbers = {weight.numel()} and channel size = "
                               f"{channels}.")
        if input.dim() >= 2:
            weight = weight.reshape((-1,) + (1,) * (input.dim() - 2))
    return Where.apply(input > 0, input, input * weight)


def softmin(input, dim=None, _stacklevel=3, dtype=None):
    """softmax(-x) along `dim`; same shape as input."""
    if dim is None:
        dim = _softmax_dim("softmin", input.dim())
    return reduce.softmax(-input, dim, dtype=dtype)


def glu(input, dim=-1):
    """a * sigmoid(b) for the two halves a, b of input along dim."""
    if input.shape[dim] % 2:
        raise RuntimeError(f"Halving dimension must be even, but dimension {dim} is size "
                           f"{input.shape[dim]}")
    a, b = input.chunk(2, dim)
    return a * b.sigmoid()


def threshold(input, threshold, value, inplace=False):
    """input where input > threshold, else value."""
    return _maybe_inplace(lambda x, th, v: where(x > th, x, v), input, inplace, threshold, value)


def threshold_(input, threshold_value, value):
    """In-place `threshold`."""
    return threshold(input, threshold_value, value, inplace=True)


def tanhshrink(input):
    """x - tanh(x)."""
    return input - input.tanh()


def _check_lambd(lambd):
    if lambd < 0:
        raise RuntimeError(f"lambda must be greater or equal to 0, but found to be {lambd}.")


def softshrink(input, lambd=0.5):
    """x - lambd where x > lambd, x + lambd where x < -lambd, else 0."""
    _check_lambd(lambd)
    return input - input.clamp(-lambd, lambd)


def _gumbel_noise_samples():
    s = SampleMaker("gumbel_noise")

    def seeded(x):
        manual_seed(3)  # the same noise on every call
        return GumbelNoise.apply(x)
    return [Sample(seeded, (s(3, 4, grad=False),))]


@register("gumbel_noise", _gumbel_noise_samples, differentiable=False)
class GumbelNoise(Op):
    """Standard Gumbel samples -log(E), E ~ Exp(1), shaped and typed like `x`, from the
    default generator of its device (an op, so that dtrain.jit draws afresh on replay)."""

    differentiable = False
    random = True

    def forward(self, x):
        xp = array_module(x)
        dev = backend.device_of(x)
        with backend.device_context(dev):
            e = rnd.default_generator(dev).rng.standard_exponential(x.shape)
        return (-xp.log(e)).astype(x.dtype, copy=False)


def gumbel_softmax(logits, tau=1.0, hard=False, eps=1e-10, dim=-1):
    """softmax((logits + g) / tau) over dim with standard Gumbel noise g; `hard`: the one-hot
    of its argmax in value, with the soft sample's gradient (straight-through)."""
    if eps != 1e-10:
        warnings.warn("`eps` parameter is deprecated and has no effect.", stacklevel=2)
    y_soft = reduce.softmax((logits + GumbelNoise.apply(logits)) / tau, dim)
    if not hard:
        return y_soft
    d = dim % logits.dim()
    classes = creation.arange(logits.shape[d], device=logits.device).reshape(
        (-1,) + (1,) * (logits.dim() - d - 1))
    y_hard = (classes == y_soft.argmax(d, keepdim=True)).to(y_soft.dtype)
    return y_hard - y_soft.detach() + y_soft


def _gumbel_softmax_samples():
    s = SampleMaker("gumbel_softmax")

    def seeded(x, **kwargs):
        manual_seed(5)
        return gumbel_softmax(x, **kwargs)
    return [Sample(lambda x: seeded(x, tau=0.5), (s(3, 4),)),
            Sample(lambda x: seeded(x, dim=0), (s(3, 2, 2),))]


register_composite("gumbel_softmax", _gumbel_softmax_samples)


def _activation_samples():
    s = SampleMaker("activations")
    return [Sample(lambda x: leaky_relu(x, 0.2), (s.away(3, 4),)),
            Sample(lambda x: elu(x, 1.5), (s.away(3, 4),)),
            Sample(silu, (s(3, 4, low=-3, high=3),)),
            Sample(lambda x: gelu(x, approximate="tanh"), (s(3, 4, low=-3, high=3),)),
            Sample(lambda x: softmax(x, 1), (s(2, 3),)),
            Sample(lambda x: log_softmax(x, 0), (s(2, 3),)),
            Sample(lambda x: hardswish(x) + relu6(x * 4) + hardsigmoid(x * 2),
                   (s(3, 4, low=-4, high=4),)),
            Sample(lambda x: logsigmoid(x) + mish(x) + softsign(x), (s(3, 4, low=-3, high=3),)),
            Sample(lambda x: celu(x, 0.5) + selu(x), (s.away(3, 4),)),
            Sample(lambda x, w: prelu(x, w), (s.away(2, 3, 2), s(3))),
            Sample(lambda x: softmin(x, 1) * glu(x, 0).sum(), (s(2, 3),)),
            Sample(lambda x: threshold(x, 0.3, -2.0) + softshrink(x, 0.4) + hardshrink(x, 0.6)
                   + tanhshrink(x), (s(3, 4, low=-2, high=2),))]


register_composite("activations", _activation_samples)


# -- modules ----------------------------------------------------------------------------------
class _Simple(Module):
    """A parameterless activation `fn(input)`."""

    fn = None

    def forward(self, input):
        return type(self).fn(input)


class _Inplace(Module):
    """An activation `fn(input, inplace)`."""

    fn = None

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, input):
        return type(self).fn(input, self.inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class _Alpha(Module):
    """An activation `fn(input, alpha, inplace)` (ELU, CELU)."""

    fn = None

    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha = alpha
        self.inplace = inplace

    def forward(self, input):
        return type(self).fn(input, self.alpha, self.inplace)

    def extra_repr(self):
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class _Dim(Module):
    """An activation `fn(input, dim)` (softmax family, GLU)."""

    fn = None

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return type(self).fn(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class Tanh(_Simple):
    fn = staticmethod(tanh)


class Sigmoid(_Simple):
    fn = staticmethod(sigmoid)


class LogSigmoid(_Simple):
    fn = staticmethod(logsigmoid)


class Softsign(_Simple):
    fn = staticmethod(softsign)


class ReLU(_Inplace):
    fn = staticmethod(relu)


class SiLU(_Inplace):
    fn = staticmethod(silu)


class ReLU6(_Inplace):
    fn = staticmethod(relu6)


class Hardsigmoid(_Inplace):
    fn = staticmethod(hardsigmoid)


class Hardswish(_Inplace):
    fn = staticmethod(hardswish)


class Mish(_Inplace):
    fn = staticmethod(mish)


class SELU(_Inplace):
    fn = staticmethod(selu)


class ELU(_Alpha):
    fn = staticmethod(elu)


class CELU(_Alpha):
    fn = staticmethod(celu)


class Softmax(_Dim):
    fn = staticmethod(softmax)


class Softmax2d(Module):
    """Softmax over the channels of (N, C, H, W) or (C, H, W) input."""

    def forward(self, input):
        if input.dim() not in (3, 4):
            raise ValueError(f"Softmax2d: expected input to be 3D or 4D, got {input.dim()}D "
                             f"instead")
        return softmax(input, -3)


class LogSoftmax(_Dim):
    fn = staticmethod(log_softmax)


class Softmin(_Dim):
    fn = staticmethod(softmin)


class GLU(_Dim):
    fn = staticmethod(glu)

    def __init__(self, dim=-1):
        super().__init__(dim)


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = negative_slope
        self.inplace = inplace

    def forward(self, input):
        return leaky_relu(input, self.negative_slope, self.inplace)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace
                                                           else "")


class Hardtanh(Module):
    def __init__(self, min_val=-1.0, max_val=1.0, inplace=False):
        super().__init__()
        self.min_val = min_val
        self.max_val = max_val
        self.inplace = inplace

    def forward(self, input):
        return hardtanh(input, self.min_val, self.max_val, self.inplace)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}" + (
            ", inplace=True" if self.inplace else "")


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, input):
        return gelu(input, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Softplus(Module):
    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta = beta
        self.threshold = threshold

    def forward(self, input):
        return softplus(input, self.beta, self.threshold)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class PReLU(Module):
    """x where x > 0, else a * x with a learnable `weight` (num_parameters entries, init)."""

    def __init__(self, num_parameters=1, init=0.25, device=None, dtype=None):
        super().__init__()
        self.num_parameters = num_parameters
        self.init = init
        self.weight = Parameter(creation.full((num_parameters,), float(init), device=device,
                                              dtype=dtype))

    def reset_parameters(self):
        with no_grad():
            self.weight.fill_(self.init)

    def forward(self, input):
        return prelu(input, self.weight)

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"


class Threshold(_Inplace):
    def __init__(self, threshold, value, inplace=False):
        super().__init__(inplace)
        self.threshold, self.value = threshold, value

    def forward(self, input):
        return threshold(input, self.threshold, self.value, self.inplace)

    def extra_repr(self):
        flag = super().extra_repr()
        return f"threshold={self.threshold}, value={self.value}" + (f", {flag}" if flag else "")


class Tanhshrink(_Simple):
    fn = staticmethod(tanhshrink)


class Hardshrink(Module):
    def __init__(self, lambd=0.5):
        super().__init__()
        self.lambd = lambd

    def extra_repr(self):
        return f"{self.lambd}"

    def forward(self, input):
        return hardshrink(input, self.lambd)


class Softshrink(Hardshrink):
    def forward(self, input):
        return softshrink(input, self.lambd)
