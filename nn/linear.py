"""Affine layers and shape helpers: `Linear`, `Bilinear`, `Identity`, `Flatten`, `Unflatten`,
with their functional forms `linear` and `bilinear`."""
import math

from dtrain.autograd.autocast import autocast_args
from dtrain.autograd.node import Op
from dtrain.autograd.registry import Sample, SampleMaker, register, register_composite
from dtrain.core import creation
from dtrain.core.backend import array_module
from dtrain.nn import init
from dtrain.nn.module import Module
from dtrain.nn.parameter import Parameter


def _linear_samples():
    s = SampleMaker("linear")
    b = s(2, grad=False)
    return [Sample(linear, (s(4, 3), s(2, 3), s(2))),
            Sample(linear, (s(2, 2, 3), s(4, 3), s(4))),   # extra leading dims
            Sample(linear, (s(3), s(2, 3))),                # 1-D input, no bias
            Sample(lambda x, w: linear(x, w, b), (s(3, 3), s(2, 3)))]


@register("linear", _linear_samples)
class Addmm(Op):
    """y = x @ W^T + b. NOTE: one fused op (as torch's addmm) rather than permute + matmul +
    add: a single BLAS call on the transposed view of W, the bias added in place into the
    fresh product, and one graph node; it is the hot path of every MLP."""

    saves = ("inputs",)

    def forward(self, x, weight, bias, out=None):
        out = array_module(x).matmul(x, weight.T, out=out)
        if bias is not None:
            out += bias
        return out

    def backward(self, g):
        x, w, b = self.inputs
        nx, nw, nb = self.needs_input_grad
        gx = g @ w if nx else None
        gw = gb = None
        if nw or nb:
            g2 = g.reshape(-1, w._data.shape[0])
            if nw:
                gw = g2.mT @ x.reshape(-1, w._data.shape[1])
            if nb:
                gb = g2.sum(0)
        return gx, gw, gb


def linear(input, weight, bias=None):
    """`input @ weight.T + bias`; input (*, in_features), weight (out_features, in_features)."""
    if input.shape[-1] != weight.shape[-1]:
        raise RuntimeError(f"linear: input has {input.shape[-1]} features (shape "
                           f"{list(input.shape)}) but weight expects {weight.shape[-1]} (shape "
                           f"{list(weight.shape)})")
    input, weight, bias = autocast_args(input, weight, bias)
    if input.dtype != weight.dtype or (bias is not None and bias.dtype != weight.dtype):
        raise RuntimeError(f"linear: mat1 and mat2 must have the same dtype, but got "
                           f"{input.dtype} and {weight.dtype}"
                           + (f" (bias {bias.dtype})" if bias is not None else ""))
    return Addmm.apply(input, weight, bias)


def bilinear(input1, input2, weight, bias=None):
    """y_k = input1^T weight_k input2 + bias_k; inputs (*, in1) and (*, in2), weight
    (out, in1, in2). One GEMM: input1 against weight laid out as (in1, out * in2)."""
    out, in1, in2 = weight.shape
    if input1.shape[-1] != in1 or input2.shape[-1] != in2 or \
            input1.shape[:-1] != input2.shape[:-1]:
        raise RuntimeError(f"bilinear: input1 {list(input1.shape)} and input2 "
                           f"{list(input2.shape)} do not match weight {list(weight.shape)}")
    lead = input1.shape[:-1]
    x1 = input1.reshape(-1, in1)
    x2 = input2.reshape(-1, 1, in2)
    t = (x1 @ weight.permute(1, 0, 2).reshape(in1, out * in2)).reshape(-1, out, in2)
    y = (t * x2).sum(-1)
    if bias is not None:
        y = y + bias
    return y.reshape(*lead, out)


def _bilinear_samples():
    s = SampleMaker("bilinear")
    return [Sample(bilinear, (s(3, 2), s(3, 4), s(2, 2, 4), s(2))),
            Sample(bilinear, (s(2, 1, 3), s(2, 1, 2), s(2, 3, 2)))]


register_composite("bilinear", _bilinear_samples)


def _weight_and_bias(module, weight_shape, bias, device, dtype):
    """Register uninitialised `weight` of weight_shape and `bias` (weight_shape[0],) or None."""
    kw = {"device": device, "dtype": dtype}
    module.weight = Parameter(creation.empty(*weight_shape, **kw))
    module.register_parameter("bias", Parameter(creation.empty(weight_shape[0], **kw))
                              if bias else None)


class Identity(Module):
    """Returns its input; accepts and ignores any constructor arguments (as torch)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Linear(Module):
    """y = x W^T + b with weight (out_features, in_features), torch's default init:
    kaiming_uniform_(a=sqrt(5)) for weight, U(-1/sqrt(in), 1/sqrt(in)) for bias."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        _weight_and_bias(self, (out_features, in_features), bias, device, dtype)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_features
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        return linear(input, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class LazyLinear(Linear):
    """A Linear that takes in_features from the last dim of its first input, then makes and
    initialises its weight and bias and becomes a plain Linear (torch's cls_to_become).
    Until that first call weight and bias are None: run one batch before building the
    optimizer (torch has placeholder parameters; dtrain has none)."""

    def __init__(self, out_features, bias=True, device=None, dtype=None):
        Module.__init__(self)
        self.in_features = 0
        self.out_features = out_features
        self._lazy_args = (bias, device, dtype)
        self.register_parameter("weight", None)
        self.register_parameter("bias", None)

    def forward(self, input):
        self.in_features = input.shape[-1]
        _weight_and_bias(self, (self.out_features, self.in_features), *self._lazy_args)
        self.reset_parameters()
        self.__class__ = Linear
        return Linear.forward(self, input)


class NonDynamicallyQuantizableLinear(Linear):
    """A Linear under torch's name for MultiheadAttention's `out_proj` (torch uses the class
    to keep quantization from swapping that layer); here it is a plain Linear."""


class Bilinear(Module):
    """y = x1^T A x2 + b with weight (out, in1, in2); init U(-1/sqrt(in1), 1/sqrt(in1))."""

    def __init__(self, in1_features, in2_features, out_features, bias=True, device=None,
                 dtype=None):
        super().__init__()
        self.in1_features = in1_features
        self.in2_features = in2_features
        self.out_features = out_features
        _weight_and_bias(self, (out_features, in1_features, in2_features), bias, device, dtype)
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1 / math.sqrt(self.weight.shape[1])
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input1, input2):
        return bilinear(input1, input2, self.weight, self.bias)

    def extra_repr(self):
        return (f"in1_features={self.in1_features}, in2_features={self.in2_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")


class Flatten(Module):
    """Flattens dims start_dim..end_dim (default: all but the batch dim)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input):
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Expands dim `dim` into `unflattened_size`."""

    def __init__(self, dim, unflattened_size):
        super().__init__()
        self.dim = dim
        self.unflattened_size = tuple(unflattened_size)

    def forward(self, input):
        return input.unflatten(self.dim, self.unflattened_size)

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
