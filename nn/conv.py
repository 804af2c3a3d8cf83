"""Convolutions (1-d, 2-d, transposed) through im2col + GEMM, and their modules.

Three primitive ops, closed under differentiation, so that double backward works:
  `ConvNd(x, w, b)`          y = correlation of x with w (torch's conv), plus bias;
  `ConvTransposeNd(g, w, b)` the adjoint of ConvNd in x: per kernel tap, a GEMM whose
                             result is added into that tap's strided slice (col2im);
  `ConvWeightNd(x, g)`       the adjoint of ConvNd in w: im2col, then a GEMM.
Each op's backward is written with the other two. The kernels (nn/conv_kernels.py) work in
a channels-last GEMM layout, a chunk of samples at a time; the only Python loops run over
kernel taps and sample chunks, never over pixels.
"""
import itertools
import math

from dtrain.autograd.autocast import autocast_args
from dtrain.autograd.node import Op
from dtrain.autograd.ops.shape import pad
from dtrain.autograd.registry import Sample, SampleMaker, register
from dtrain.core import creation
from dtrain.core.backend import array_module
from dtrain.nn import init
from dtrain.nn.channel_ops import ChannelSum, add_per_channel
from dtrain.nn.conv_kernels import (
    channels_first,
    conv_forward,
    conv_input_grad,
    conv_weight_grad,
    grad_matrix,
    is_channels_last,
    padded,
)
from dtrain.nn.module import Module
from dtrain.nn.parameter import Parameter

# -- array helpers ------------------------------------------------------------------------
# Helpers that make arrays take the op whose forward calls them, and draw from its scratch.


def interior(padding, size):
    """The key of the unpadded (N, C, *size) part of an array padded by `padding`."""
    return (slice(None), slice(None)) + tuple(slice(lo, lo + n) for n, (lo, _) in
                                              zip(size, padding))


def pad_spatial(op, x, padding, value=0):
    """`x` (N, C, *spatial) padded with `value` by `padding`, a (lo, hi) pair per spatial
    dim (itself when there is no padding), in x's layout (channels-last or not)."""
    if not any(lo or hi for lo, hi in padding):
        return x
    if is_channels_last(x):
        return channels_first(padded(op, x, padding, True, value))
    return padded(op, x, padding, False, value)


def _windows(op, x, ksize, stride, padding, dilation, out_size):
    """A strided view (N, C, *ksize, *out_size) of padded `x`: [n, c, *tap, *pos] is
    x_padded[n, c, pos * stride + tap * dilation]. No copy beyond the padding."""
    xp = array_module(x)
    xpad = pad_spatial(op, x, padding)
    sn, sc, *ss = xpad.strides
    strides = (sn, sc, *(s * d for s, d in zip(ss, dilation)),
               *(s * st for s, st in zip(ss, stride)))
    shape = xpad.shape[:2] + tuple(ksize) + tuple(out_size)
    return xp.lib.stride_tricks.as_strided(xpad, shape, strides)


def copy_into(out, src):
    """A contiguous copy of `src`: written into `out` when given, else a new array."""
    if out is None:
        return src.copy(order="K")  # keeps src's layout (channels-last or not)
    array_module(src).copyto(out, src)
    return out


def tap_keys(ksize, stride, dilation, out_size):
    """(tap, key) per kernel tap: x_padded[key] is the (N, C, *out_size) strided view of the
    input pixels that tap `tap` meets at every output position."""
    for tap in itertools.product(*(range(k) for k in ksize)):
        yield tap, (slice(None), slice(None)) + tuple(
            slice(t * d, t * d + s * (n - 1) + 1, s)
            for t, d, s, n in zip(tap, dilation, stride, out_size))


def scatter_taps(out, ksize, stride, dilation, out_size, value):
    """Zero `out`, then add `value(i, tap, dest)` (N, C, *out_size) at each tap's positions:
    the adjoint of reading through `tap_keys`. A loop over the kernel's taps only. Where
    windows do not overlap, `dest` is the tap's view of `out`, which `value` may write into
    and return (else it is None)."""
    # Taps overlap in the output unless stride >= dilation * (k - 1) + 1 in every dim.
    overlap = any(s < d * (k - 1) + 1 for s, d, k in zip(stride, dilation, ksize))
    tiled = all(s == k and d == 1 and o * k == n for s, d, k, o, n in  # windows tile `out`
                zip(stride, dilation, ksize, out_size, out.shape[2:]))
    if not tiled:
        out.fill(0)
    for i, (tap, key) in enumerate(tap_keys(ksize, stride, dilation, out_size)):
        if overlap:
            out[key] += value(i, tap, None)
        else:
            dest = out[key]
            v = value(i, tap, dest)
            if v is not dest:
                dest[...] = v
    return out


# -- primitive ops -------------------------------------------------------------------------
def _conv_samples():
    s = SampleMaker("conv")
    return [Sample(lambda x, w, b: conv2d(x, w, b), (s(1, 2, 4, 4), s(3, 2, 2, 2), s(3))),
            Sample(lambda x, w: conv2d(x, w, stride=2, padding=1, dilation=(1, 2)),
                   (s(2, 1, 4, 5), s(2, 1, 2, 2))),
            Sample(lambda x, w, b: conv2d(x, w, b, padding="same", groups=2),
                   (s(1, 4, 3, 3), s(2, 2, 2, 2), s(2))),
            Sample(lambda x, w: conv1d(x, w, stride=2, padding=2, dilation=2),
                   (s(2, 2, 6), s(3, 2, 3)))]


@register("conv", _conv_samples)
class ConvNd(Op):
    """Correlation of x (N, C, *in) with w (O, C/groups, *k), plus bias b (O,) or None."""

    saves = ("inputs",)

    def forward(self, x, w, b, stride, padding, dilation, groups, out=None):
        self.geom = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        y = conv_forward(self, x, w, stride, padding, dilation, groups, out)
        if b is not None:
            add_per_channel(y, b)
        return y

    def backward(self, g):
        x, w, _ = self.inputs
        nx, nw, nb = self.needs_input_grad
        gt = grad_matrix(self, g._data, self.geom["groups"]) if nx or nw else None  # shared
        gx = ConvTransposeNd.apply(g, w, None, out_size=x._data.shape[2:], gt=gt, **self.geom) \
            if nx else None
        gw = ConvWeightNd.apply(x, g, ksize=w._data.shape[2:], gt=gt,
                                **self.geom) if nw else None
        return gx, gw, ChannelSum.apply(g) if nb else None


def _conv_transpose_samples():
    s = SampleMaker("conv_transpose")
    return [Sample(lambda x, w, b: conv_transpose2d(x, w, b, stride=2, padding=1,
                                                    output_padding=1),
                   (s(1, 2, 3, 3), s(2, 3, 2, 2), s(3))),
            Sample(lambda x, w: conv_transpose2d(x, w, groups=2, dilation=2),
                   (s(1, 4, 2, 3), s(4, 1, 2, 2))),
            Sample(lambda x, w: conv_transpose1d(x, w, stride=3, padding=1),
                   (s(2, 2, 4), s(2, 2, 3)))]


@register("conv_transpose", _conv_transpose_samples)
class ConvTransposeNd(Op):
    """The adjoint of ConvNd in x: g (N, O, *in) and w (O, C/groups, *k) give
    (N, C, *out_size); the padded result is cropped by `padding`. `gt` is g in GEMM layout
    when the caller already built it."""

    saves = ("inputs",)

    def forward(self, g, w, b, stride, padding, dilation, groups, out_size, gt=None, out=None):
        self.geom = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        return conv_input_grad(self, g, w, b, stride, padding, dilation, groups, out_size,
                               gt, out)

    def backward(self, gg):
        g, w, _ = self.inputs
        ng, nw, nb = self.needs_input_grad
        gg_in = None
        if ng:
            gg_in = ConvNd.apply(gg, w, None, **self.geom)
            in_size = g._data.shape[2:]
            if gg_in._data.shape[2:] != in_size:  # output_padding >= stride (dilated kernels)
                gg_in = gg_in[(slice(None), slice(None)) + tuple(slice(0, m) for m in in_size)]
        gw = ConvWeightNd.apply(gg, g, ksize=w._data.shape[2:], **self.geom) if nw else None
        return gg_in, gw, ChannelSum.apply(gg) if nb else None


def _weight_grad(x, g, ksize, stride, padding, dilation, groups):
    return ConvWeightNd.apply(x, g, ksize=ksize, stride=stride, padding=padding,
                              dilation=dilation, groups=groups)


def _conv_weight_samples():
    s = SampleMaker("conv_weight")
    return [Sample(lambda x, g: _weight_grad(x, g, (2, 2), (1, 1), ((0, 1), (1, 0)), (1, 1), 1),
                   (s(1, 2, 3, 3), s(1, 2, 3, 3))),
            Sample(lambda x, g: _weight_grad(x, g, (2, 2), (2, 1), ((1, 1), (0, 0)), (1, 2), 2),
                   (s(2, 2, 3, 4), s(2, 2, 2, 2))),
            Sample(lambda x, g: _weight_grad(x, g, (3,), (2,), ((1, 1),), (1,), 1),
                   (s(2, 2, 7), s(2, 2, 4)))]


@register("conv_weight", _conv_weight_samples)
class ConvWeightNd(Op):
    """The adjoint of ConvNd in w: x (N, C, *in) and g (N, O, *out) give (O, C/groups, *k).
    `gt` (g in GEMM layout) is passed when already built."""

    saves = ("inputs",)

    def forward(self, x, g, ksize, stride, padding, dilation, groups, gt=None, out=None):
        self.geom = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        w_shape = (g.shape[1], x.shape[1] // groups) + tuple(ksize)
        return conv_weight_grad(self, x, g, w_shape, stride, padding, dilation, groups, gt,
                                out)

    def backward(self, ggw):
        x, g = self.inputs
        nx, ng = self.needs_input_grad
        gx = ConvTransposeNd.apply(g, ggw, None, out_size=x._data.shape[2:], **self.geom) \
            if nx else None
        gg = ConvNd.apply(x, ggw, None, **self.geom) if ng else None
        return gx, gg


# -- argument checking -----------------------------------------------------------------------
def as_tuple(v, nd, name):
    t = (v,) * nd if isinstance(v, int) else tuple(v)
    if len(t) != nd or not all(isinstance(i, int) for i in t):
        raise ValueError(f"{name} must be an int or a tuple of {nd} ints, got {v!r}")
    return t


def _check_common(op, input, weight, bias, nd, groups):
    if not isinstance(groups, int) or groups < 1:
        raise RuntimeError(f"{op}: non-positive groups is not supported, got {groups}")
    if weight._data.ndim != nd + 2:
        raise RuntimeError(f"{op}: expected a {nd + 2}-D weight, got {weight._data.ndim}-D "
                           f"{list(weight._data.shape)}")
    if input._data.ndim not in (nd + 1, nd + 2):
        raise RuntimeError(f"{op}: Expected {nd + 1}D (unbatched) or {nd + 2}D (batched) input, "
                           f"but got input of size: {list(input._data.shape)}")
    if bias is not None and bias._data.shape != (_bias_len(op, weight, groups),):
        raise RuntimeError(f"{op}: expected bias of shape [{_bias_len(op, weight, groups)}], "
                           f"got {list(bias._data.shape)}")
    if input._data.dtype != weight._data.dtype:
        raise RuntimeError(f"{op}: Input type ({input.dtype}) and weight type ({weight.dtype}) "
                           "should be the same")


def _bias_len(op, weight, groups):
    return weight._data.shape[1] * groups if "transpose" in op else weight._data.shape[0]


def with_batch_dim(input, nd):
    """(input with a batch dim, whether one was added) — torch accepts unbatched inputs."""
    if input._data.ndim == nd + 1:
        return input.unsqueeze(0), True
    return input, False


def _conv(op, input, weight, bias, stride, padding, dilation, groups, nd):
    input, weight, bias = autocast_args(input, weight, bias)
    _check_common(op, input, weight, bias, nd, groups)
    stride = as_tuple(stride, nd, "stride")
    dilation = as_tuple(dilation, nd, "dilation")
    ksize = weight._data.shape[2:]
    x, unbatched = with_batch_dim(input, nd)
    o, cg = weight._data.shape[:2]
    if x._data.shape[1] != cg * groups:
        raise RuntimeError(f"Given groups={groups}, weight of size {list(weight._data.shape)}, "
                           f"expected input{list(x._data.shape)} to have {cg * groups} channels, "
                           f"but got {x._data.shape[1]} channels instead")
    if o % groups:
        raise RuntimeError(f"{op}: out_channels ({o}) must be divisible by groups ({groups})")
    if any(s < 1 for s in stride) or any(d < 1 for d in dilation):
        raise RuntimeError(f"{op}: stride and dilation must be positive, got stride={stride}, "
                           f"dilation={dilation}")
    if isinstance(padding, str):
        if padding == "valid":
            pads = ((0, 0),) * nd
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise RuntimeError("padding='same' is not supported for strided convolutions")
            # torch puts the odd pixel of an even total on the high side
            pads = tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
                         for d, k in zip(dilation, ksize))
        else:
            raise ValueError(f"Invalid padding string {padding!r}, should be one of "
                             "{'valid', 'same'}")
    else:
        pads = tuple((p, p) for p in as_tuple(padding, nd, "padding"))
        if any(p < 0 for p, _ in pads):
            raise RuntimeError(f"{op}: negative padding is not supported, got {padding}")
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(x._data.shape[2:], pads))
    if any(p < d * (k - 1) + 1 for p, d, k in zip(padded, dilation, ksize)):
        raise RuntimeError(f"{op}: Calculated padded input size per channel: "
                           f"({' x '.join(map(str, padded))}). Kernel size: "
                           f"({' x '.join(str(d * (k - 1) + 1) for d, k in zip(dilation, ksize))}"
                           "). Kernel size can't be greater than actual input size")
    y = ConvNd.apply(x, weight, bias, stride=stride, padding=pads, dilation=dilation,
                    groups=groups)
    return y.squeeze(0) if unbatched else y


def _conv_transpose(op, input, weight, bias, stride, padding, output_padding, groups,
                    dilation, nd):
    input, weight, bias = autocast_args(input, weight, bias)
    _check_common(op, input, weight, bias, nd, groups)
    stride = as_tuple(stride, nd, "stride")
    dilation = as_tuple(dilation, nd, "dilation")
    padding = as_tuple(padding, nd, "padding")
    output_padding = as_tuple(output_padding, nd, "output_padding")
    x, unbatched = with_batch_dim(input, nd)
    if x._data.shape[1] != weight._data.shape[0]:
        raise RuntimeError(f"Given transposed=1, weight of size {list(weight._data.shape)}, "
                           f"expected input{list(x._data.shape)} to have "
                           f"{weight._data.shape[0]} channels, but got {x._data.shape[1]} "
                           "channels instead")
    if weight._data.shape[0] % groups:
        raise RuntimeError(f"{op}: in_channels ({weight._data.shape[0]}) must be divisible by "
                           f"groups ({groups})")
    for op_, s, d in zip(output_padding, stride, dilation):
        if op_ >= max(s, d):
            raise RuntimeError(f"{op}: output padding must be smaller than either stride or "
                               f"dilation, but got output_padding={output_padding}, "
                               f"stride={stride}, dilation={dilation}")
    ksize = weight._data.shape[2:]
    out_size = tuple((n - 1) * s - 2 * p + d * (k - 1) + op_ + 1 for n, s, p, d, k, op_ in
                     zip(x._data.shape[2:], stride, padding, dilation, ksize, output_padding))
    if any(m < 1 for m in out_size):
        raise RuntimeError(f"{op}: the output size {list(out_size)} is too small (input "
                           f"{list(x._data.shape)}, padding {padding})")
    pads = tuple((p, p) for p in padding)
    y = ConvTransposeNd.apply(x, weight, bias, stride=stride, padding=pads, dilation=dilation,
                              groups=groups, out_size=out_size)
    return y.squeeze(0) if unbatched else y


# -- functional forms (the names of torch.nn.functional) ------------------------------------
def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-d convolution: input (N, C_in, L), weight (C_out, C_in/groups, k)."""
    return _conv("conv1d", input, weight, bias, stride, padding, dilation, groups, 1)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-d convolution: input (N, C_in, H, W), weight (C_out, C_in/groups, kH, kW);
    padding is an int, a pair, "valid" or "same"."""
    return _conv("conv2d", input, weight, bias, stride, padding, dilation, groups, 2)


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1):
    """1-d transposed convolution: input (N, C_in, L), weight (C_in, C_out/groups, k)."""
    return _conv_transpose("conv_transpose1d", input, weight, bias, stride, padding,
                           output_padding, groups, dilation, 1)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1):
    """2-d transposed convolution (the gradient of conv2d in its input): input
    (N, C_in, H, W), weight (C_in, C_out/groups, kH, kW)."""
    return _conv_transpose("conv_transpose2d", input, weight, bias, stride, padding,
                           output_padding, groups, dilation, 2)


# -- modules ---------------------------------------------------------------------------------
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _factory(device, dtype):
    return lambda *shape: Parameter(creation.empty(*shape, device=device, dtype=dtype))


class _ConvNd(Module):
    """Convolution modules: torch's constructor arguments, attributes and parameters."""

    _nd = 2
    _transposed = False

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", device=None,
                 dtype=None):
        super().__init__()
        nd = self._nd
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must be divisible by groups ({groups})")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, but got "
                             f"padding_mode={padding_mode!r}")
        if self._transposed and padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for {type(self).__name__}')
        if isinstance(padding, str) and padding not in ("same", "valid"):
            raise ValueError(f"Invalid padding string {padding!r}, should be one of "
                             "{'valid', 'same'}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = as_tuple(kernel_size, nd, "kernel_size")
        self.stride = as_tuple(stride, nd, "stride")
        if padding == "same" and any(s != 1 for s in self.stride):
            raise ValueError("padding='same' is not supported for strided convolutions")
        self.padding = padding if isinstance(padding, str) else as_tuple(padding, nd, "padding")
        self.dilation = as_tuple(dilation, nd, "dilation")
        self.output_padding = (0,) * nd
        self.groups, self.padding_mode = groups, padding_mode
        self._reversed_padding_repeated_twice = self._pad_widths()
        make = _factory(device, dtype)
        shape = (in_channels, out_channels // groups) if self._transposed else \
            (out_channels, in_channels // groups)
        self.weight = make(*shape, *self.kernel_size)
        if bias:
            self.bias = make(out_channels)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def _pad_widths(self):
        """F.pad's widths for this padding, last dim first ('same' puts the odd one right)."""
        if self.padding == "valid":
            return [0] * 2 * self._nd
        widths = []
        for i in reversed(range(self._nd)):
            if self.padding == "same":
                total = self.dilation[i] * (self.kernel_size[i] - 1)
                widths += [total // 2, total - total // 2]
            else:
                widths += [self.padding[i]] * 2
        return widths

    def _padded(self, input):
        """(input, padding) for the conv call: modes other than 'zeros' pad with F.pad
        first and convolve without padding, as torch does."""
        if self.padding_mode == "zeros":
            return input, self.padding
        return pad(input, self._reversed_padding_repeated_twice, self.padding_mode), 0

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0,) * self._nd:
            s += f", padding={self.padding!r}" if isinstance(self.padding, str) else \
                f", padding={self.padding}"
        if self.dilation != (1,) * self._nd:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * self._nd:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class Conv1d(_ConvNd):
    """Applies conv1d: (N, C_in, L) -> (N, C_out, L_out)."""

    _nd = 1

    def forward(self, input):
        input, padding = self._padded(input)
        return conv1d(input, self.weight, self.bias, self.stride, padding, self.dilation,
                      self.groups)


class Conv2d(_ConvNd):
    """Applies conv2d: (N, C_in, H, W) -> (N, C_out, H_out, W_out)."""

    def forward(self, input):
        input, padding = self._padded(input)
        return conv2d(input, self.weight, self.bias, self.stride, padding, self.dilation,
                      self.groups)


class _ConvTransposeNd(_ConvNd):
    """Transposed convolution modules; weight (C_in, C_out/groups, *k) as in torch."""

    _transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=None):
        if isinstance(padding, str):
            raise ValueError(f"{type(self).__name__} does not support string padding")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype)
        self.output_padding = as_tuple(output_padding, self._nd, "output_padding")

    def forward(self, input, output_size=None):
        output_padding = self.output_padding
        if output_size is not None:
            output_padding = self._output_padding(input, output_size)
        fn = conv_transpose1d if self._nd == 1 else conv_transpose2d
        return fn(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                  self.groups, self.dilation)

    def _output_padding(self, input, output_size):
        """The output_padding that gives `output_size` (torch's `output_size=` argument)."""
        nd = self._nd
        size, in_size = tuple(output_size)[-nd:], input._data.shape[-nd:]
        smallest = tuple((n - 1) * s - 2 * p + d * (k - 1) + 1 for n, s, p, d, k in
                         zip(in_size, self.stride, self.padding, self.dilation,
                             self.kernel_size))
        largest = [lo + max(s, d) - 1 for lo, s, d in zip(smallest, self.stride, self.dilation)]
        if any(not lo <= m <= hi for m, lo, hi in zip(size, smallest, largest)):
            raise ValueError(f"requested an output size of {list(size)}, but valid sizes range "
                             f"from {list(smallest)} to {largest} (for an input of "
                             f"{list(in_size)})")
        return tuple(m - lo for m, lo in zip(size, smallest))


class ConvTranspose1d(_ConvTransposeNd):
    """Applies conv_transpose1d: (N, C_in, L) -> (N, C_out, L_out)."""

    _nd = 1


class ConvTranspose2d(_ConvTransposeNd):
    """Applies conv_transpose2d (a GAN generator's upsampling layer):
    (N, C_in, H, W) -> (N, C_out, H_out, W_out)."""
