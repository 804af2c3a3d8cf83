"""Normalization layers: `BatchNorm1d/2d`, `LayerNorm`, `GroupNorm` and their functional forms.

All standardize over some axes, (x - mean) / sqrt(var + eps) with the biased variance,
then apply an affine map; the standardization is one op, `Standardize`, except for batch
norm, whose standardization and per-channel affine map are one op, `BatchNorm`.
"""
import numbers
import warnings

import numpy as np

from dtrain.autograd.grad_mode import no_grad, state
from dtrain.autograd.node import Op
from dtrain.autograd.ops.shape import pad
from dtrain.autograd.registry import Sample, SampleMaker, register, register_composite
from dtrain.core import creation
from dtrain.core import dtype as dtypes
from dtrain.core.backend import array_module
from dtrain.core.tensor import Tensor
from dtrain.nn.channel_ops import (
    ChannelLinear,
    ChannelSum,
    channel_sum,
    channel_views,
)
from dtrain.nn.conv_kernels import is_channels_last, layout_scratch
from dtrain.nn.module import Module
from dtrain.nn.parameter import Parameter
from dtrain.nn.pooling import avg_pool2d


def _standardize_samples():
    s = SampleMaker("standardize")
    return [Sample(lambda x: standardize(x, (0,), 1e-5), (s(4, 3),)),
            Sample(lambda x: standardize(x, (0, 2), 1e-5), (s(3, 2, 2),)),
            Sample(lambda x: standardize(x, (-1,), 0.1), (s(2, 5),))]


@register("standardize", _standardize_samples)
class Standardize(Op):
    """(x - mean) * invstd over `axes`, the statistics taken from x itself.

    NOTE: fused: one node instead of about ten, and backward is the closed form
    invstd * (g - mean(g) - xhat * mean(g * xhat)). For first-order backward xhat and
    invstd are constants saved by forward; under create_graph they are rebuilt from x with
    Tensor ops, so that higher derivatives see their dependence on x."""

    saves = ("inputs", "output", "mean", "var", "invstd")

    def forward(self, x, axes, eps):
        xp = array_module(x)
        mean = x.mean(axis=axes, keepdims=True)
        d = x - mean
        var = (d * d).mean(axis=axes, keepdims=True)
        self.mean, self.var = mean, var
        self.invstd = 1 / xp.sqrt(var + eps)
        d *= self.invstd
        return d

    def backward(self, g):
        x, axes, eps = self.inputs
        if state.enabled:
            d = x - x.mean(axes, keepdim=True)
            invstd = ((d * d).mean(axes, keepdim=True) + eps).rsqrt()
            xhat = d * invstd
        else:
            xhat, invstd = self.output, Tensor._make(self.invstd)
        gx = g - g.mean(axes, keepdim=True) - xhat * (g * xhat).mean(axes, keepdim=True)
        return gx * invstd, None, None


def standardize(input, axes, eps):
    """(input - mean) / sqrt(var + eps), mean and biased var over `axes` (kept as size 1)."""
    axes = tuple(a % input.dim() for a in axes)
    return Standardize.apply(input, axes, eps)


def _channel_shape(input):
    return (1, -1) + (1,) * (input.dim() - 2)


def _batch_norm_samples():
    s = SampleMaker("batch_norm")
    rm, rv = s(3, grad=False), s(3, low=0.5, high=1.5, grad=False)
    return [Sample(lambda x, w, b: batch_norm(x, None, None, w, b, True), (s(4, 3), s(3), s(3))),
            Sample(lambda x, w, b: batch_norm(x, None, None, w, b, True, eps=0.1),
                   (s(2, 3, 2, 2), s(3), s(3))),
            Sample(lambda x: batch_norm(x.permute(0, 3, 1, 2), None, None, training=True),
                   (s(2, 2, 2, 3),)),  # channels-last
            Sample(lambda x, w, b: batch_norm(x, rm, rv, w, b, False), (s(2, 3, 2), s(3), s(3))),
            Sample(lambda x, w: batch_norm(x.permute(0, 3, 1, 2), rm, rv, w),
                   (s(2, 2, 2, 3), s(3)))]


@register("batch_norm", _batch_norm_samples)
class BatchNorm(Op):
    """Batch norm of x (N, C, *s): per channel, xhat = (x - mean) / sqrt(var + eps), then
    weight * xhat + bias (each None or (C,)); mean and biased var of the batch when
    `training`, else running_mean and running_var. The output keeps x's memory layout.

    Backward is the closed form: gb = sum(g), gw = sum(g * xhat), and
    gx = weight * invstd * (g - (xhat * gw + gb) / n) in training, weight * invstd * g
    otherwise, with xhat = (x - mean) * invstd. For first-order backward x - mean and invstd
    are the arrays forward kept; under create_graph they are rebuilt from x with Tensor
    ops, so that higher derivatives see their dependence on x.

    NOTE: fused, as PyTorch's native_batch_norm: one node instead of Standardize, Mul and
    Add, whose per-channel reductions (theirs and their backwards' sums to size) NumPy
    walked along strided axes, five times slower channels-last; here each is a GEMV
    (`channel_sum`), and the elementwise passes run in place over long rows
    (`channel_views`). Measured on a channels-last (64, 16, 32, 32) float32 conv output (1
    thread): train forward + backward 25 -> 7 ms, eval forward 3.9 -> 0.9 ms."""

    saves = ("inputs", "mean", "var", "invstd", "d")

    def forward(self, x, weight, bias, running_mean, running_var, training, eps, out=None):
        xp = array_module(x)
        self.training, self.eps = training, eps
        if out is None:
            out = xp.empty_like(x)  # x's layout
        # the statistics go to scratch vectors: a replayed step allocates none
        vector = lambda name, dtype: self.scratch(name, x.shape[1:2], dtype, xp)  # noqa: E731
        if training:
            n = x.size // x.shape[1]
            self.mean = channel_sum(x, out=vector("mean", x.dtype))
            self.mean /= n
            self.d = layout_scratch(self, "d", x.shape, x.dtype, xp, is_channels_last(x))
            (xv, dv, ov), coef = channel_views(x, self.d, out)
            xp.subtract(xv, coef(self.mean), out=dv)
            xp.multiply(dv, dv, out=ov)
            self.var = channel_sum(out, out=vector("var", x.dtype))
            self.var /= n
            var = self.var
        else:
            (dv, ov), coef = channel_views(x, out)
            var = running_var
        self.invstd = xp.add(var, eps, out=vector("invstd", var.dtype))
        xp.sqrt(self.invstd, out=self.invstd)
        xp.divide(1, self.invstd, out=self.invstd)
        scale = self.invstd if weight is None else xp.multiply(
            self.invstd, weight, out=vector("scale", xp.result_type(self.invstd, weight)))
        shift = bias if training else -running_mean * scale + (0 if bias is None else bias)
        xp.multiply(dv, coef(scale), out=ov)
        if shift is not None:
            ov += coef(shift)
        return out

    def backward(self, g):
        x, weight, _, running_mean, running_var = self.inputs
        nx, nw, nb = self.needs_input_grad[:3]
        if not self.training:
            invstd = (running_var + self.eps).rsqrt()
            d = x - running_mean.reshape(_channel_shape(x)) if nw else None
        elif state.enabled:
            axes = (0,) + tuple(range(2, x.dim()))
            d = x - x.mean(axes, keepdim=True)
            invstd = ((d * d).mean(axes) + self.eps).rsqrt()
        else:
            d, invstd = Tensor._make(self.d), Tensor._make(self.invstd)
        scale = invstd if weight is None else invstd * weight
        train_x = nx and self.training
        gb = ChannelSum.apply(g) if nb or train_x else None
        gw = ChannelSum.apply(g * d) * invstd if nw or train_x else None
        gx = None
        if train_x:  # scale * (g - (xhat * gw + gb) / n), xhat = d * invstd
            n = g.numel() // g.shape[1]
            gx = ChannelLinear.apply(g, d, scale, -scale * invstd * gw / n, -scale * gb / n)
        elif nx:
            gx = g * scale.reshape(_channel_shape(g))
        return gx, gw if nw else None, gb if nb else None, None, None


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-05):
    """Normalize each channel (dim 1) with batch statistics (training) or the running ones.

    In training, running_mean/var (when given) are updated in place:
    r = (1 - momentum) * r + momentum * batch_stat, with the unbiased batch variance."""
    if input.dim() < 2:
        raise ValueError(f"batch_norm: expected at least 2D input (got {input.dim()}D input)")
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: running_mean and running_var are required when "
                             "training=False")
        return BatchNorm.apply(input, weight, bias, running_mean, running_var, training=False,
                               eps=eps)
    axes = (0,) + tuple(range(2, input.dim()))
    n = input.numel() // input.shape[1]
    if n <= 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input "
                         f"size {list(input.shape)}")
    out = BatchNorm.apply(input, weight, bias, None, None, training=True, eps=eps)
    if running_mean is not None or running_var is not None:
        mean, var = _batch_stats(out, input, axes, eps)
        with no_grad():
            if running_mean is not None:
                _update(running_mean, mean.reshape(-1), momentum)
            if running_var is not None:
                _update(running_var, var.reshape(-1) * (n / (n - 1)), momentum)
    return out


def _channel_affine(out, weight, bias):
    """out * weight + bias, both per channel (dim 1) when given."""
    shape = _channel_shape(out)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


def _batch_stats(out, input, axes, eps):
    """(mean, biased var) of the batch as tensors: the op node's stashed statistics when it
    recorded one (no recomputation), else computed with ops (e.g. training under no_grad)."""
    node = out.grad_fn
    if isinstance(node, (Standardize, BatchNorm)):
        return Tensor._make(node.mean), Tensor._make(node.var)
    x = input.detach()
    mean = x.mean(axes, keepdim=True)
    d = x - mean
    return mean, (d * d).mean(axes, keepdim=True)


def _update(running, stat, momentum):
    """running = (1 - momentum) running + momentum stat, in place with tensor ops (so graph
    mode records the update)."""
    running.mul_(1 - momentum).add_(stat.to(running.dtype) * momentum)


def _trailing_dims(input, normalized_shape):
    """The last len(normalized_shape) dims of input, checked to have that shape."""
    normalized_shape = _as_shape(normalized_shape)
    k = len(normalized_shape)
    if tuple(input.shape[input.dim() - k:]) != normalized_shape:
        raise RuntimeError(f"Given normalized_shape={list(normalized_shape)}, expected input with "
                           f"shape [*, {', '.join(map(str, normalized_shape))}], but got input "
                           f"of size{list(input.shape)}")
    return tuple(range(input.dim() - k, input.dim()))


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-05):
    """Normalize over the last len(normalized_shape) dims, then scale and shift."""
    out = Standardize.apply(input, _trailing_dims(input, normalized_shape), eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-05):
    """Normalize each group of num_channels / num_groups channels per sample."""
    if input.dim() < 2 or input.shape[1] % num_groups:
        raise RuntimeError(f"Expected number of channels in input to be divisible by "
                           f"num_groups, but got input of shape {list(input.shape)} and "
                           f"num_groups={num_groups}")
    n = input.shape[0]
    out = Standardize.apply(input.reshape(n, num_groups, -1), (2,), eps).reshape(input.shape)
    return _channel_affine(out, weight, bias)


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-05):
    """Normalize each (sample, channel) of (N, C, *spatial) over its spatial dims, or with
    the running statistics when not `use_input_stats`; with input statistics, given running
    buffers are updated with the batch averages of the per-instance mean and unbiased var."""
    if input.dim() < 3:
        raise ValueError(f"instance_norm: expected (N, C, *spatial) input of 3 or more dims, "
                         f"got {list(input.shape)}")
    if not use_input_stats:
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    axes = tuple(range(2, input.dim()))
    n = input.numel() // (input.shape[0] * input.shape[1])
    if n <= 1:
        raise ValueError(f"Expected more than 1 spatial element when training, got input size "
                         f"{list(input.shape)}")
    out = Standardize.apply(input, axes, eps)
    if running_mean is not None or running_var is not None:
        mean, var = _batch_stats(out, input, axes, eps)
        with no_grad():
            if running_mean is not None:
                _update(running_mean, mean.mean(0).reshape(-1), momentum)
            if running_var is not None:
                _update(running_var, var.mean(0).reshape(-1) * (n / (n - 1)), momentum)
    return _channel_affine(out, weight, bias)


def rms_norm(input, normalized_shape, weight=None, eps=None):
    """x / sqrt(mean(x^2) + eps) over the last len(normalized_shape) dims, times weight;
    eps None is the machine epsilon of the input's dtype (as torch)."""
    dims = _trailing_dims(input, normalized_shape)
    if eps is None:
        eps = float(np.finfo(input._data.dtype).eps)
    out = input * ((input * input).mean(dims, keepdim=True) + eps).rsqrt()
    return out if weight is None else out * weight


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """x_c / (k + alpha / size * sum of x^2 over channels c - size//2 .. c + (size-1)//2)^beta
    (zeros beyond the edges), over dim 1 of (N, C, *) input (Krizhevsky et al.)."""
    if input.dim() < 3:
        raise ValueError(f"Expected 3D or higher dimensionality input (got {input.dim()} "
                         f"dimensions)")
    if input.numel() == 0:
        return input
    n, c = input.shape[:2]
    sq = (input * input).reshape(n, 1, c, -1)
    sq = pad(sq, (0, 0, size // 2, (size - 1) // 2))
    div = avg_pool2d(sq, (size, 1), stride=1).reshape(input.shape)
    return input / (div * alpha + k) ** beta


def _norm_samples():
    s = SampleMaker("normalization")
    rm, rv = s(3, grad=False), s(3, low=0.5, high=1.5, grad=False)
    return [Sample(lambda x, w, b: layer_norm(x, (2, 3), w, b), (s(2, 2, 3), s(2, 3), s(2, 3))),
            Sample(lambda x, w, b: group_norm(x, 2, w, b), (s(2, 4, 2), s(4), s(4))),
            Sample(lambda x, w, b: instance_norm(x, None, None, w, b), (s(2, 3, 4), s(3), s(3))),
            Sample(lambda x: instance_norm(x, rm, rv, use_input_stats=False), (s(2, 3, 2, 2),)),
            Sample(lambda x, w: rms_norm(x, (2, 3), w, 1e-3), (s(2, 2, 3), s(2, 3))),
            Sample(lambda x: rms_norm(x, 4), (s(3, 4),)),
            Sample(lambda x: local_response_norm(x, 3, 0.5, 0.7, 2.0), (s(2, 5, 3),)),
            Sample(lambda x: local_response_norm(x, 2), (s(1, 3, 2, 2),))]


register_composite("normalization", _norm_samples)


def _as_shape(shape):
    return (shape,) if isinstance(shape, numbers.Integral) else tuple(shape)


def _factory(device, dtype):
    return {"device": device, "dtype": dtype}


def _affine_params(module, affine, bias, shape, kw):
    """weight = ones(shape) and bias = zeros(shape) when affine (bias only if `bias`)."""
    module.register_parameter("weight", Parameter(creation.ones(*shape, **kw)) if affine
                              else None)
    module.register_parameter("bias", Parameter(creation.zeros(*shape, **kw))
                              if affine and bias else None)


class _NormBase(Module):
    """Affine parameters (weight ones, bias zeros) and running statistics buffers."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        kw = _factory(device, dtype)
        _affine_params(self, affine, bias, (num_features,), kw)
        if track_running_stats:
            self.register_buffer("running_mean", creation.zeros(num_features, **kw))
            self.register_buffer("running_var", creation.ones(num_features, **kw))
            self.register_buffer("num_batches_tracked", creation.zeros(
                (), dtype=dtypes.int64, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self):
        if self.track_running_stats:
            with no_grad():
                self.running_mean.zero_()
                self.running_var.fill_(1)
                self.num_batches_tracked.zero_()

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            with no_grad():
                self.weight.fill_(1)
                if self.bias is not None:
                    self.bias.zero_()

    def _check_input_dim(self, input):
        raise NotImplementedError

    def forward(self, input):
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            with no_grad():
                self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked.item())
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        keep = not self.training or self.track_running_stats
        return batch_norm(input, self.running_mean if keep else None,
                          self.running_var if keep else None, self.weight, self.bias,
                          use_batch, factor, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_NormBase):
    """Batch norm over (N, C) or (N, C, L) input, statistics per channel C."""

    def _check_input_dim(self, input):
        if input.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {input.dim()}D input)")


class BatchNorm2d(_NormBase):
    """Batch norm over (N, C, H, W) input, statistics per channel C."""

    def _check_input_dim(self, input):
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (got {input.dim()}D input)")


class LayerNorm(Module):
    """Normalize over the trailing `normalized_shape`; weight ones, bias zeros."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=None):
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        _affine_params(self, elementwise_affine, bias, self.normalized_shape,
                       _factory(device, dtype))

    def forward(self, input):
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


class GroupNorm(Module):
    """Normalize groups of channels per sample; weight ones, bias zeros (per channel)."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None,
                 dtype=None, *, bias=True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError("num_channels must be divisible by num_groups")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        _affine_params(self, affine, bias, (num_channels,), _factory(device, dtype))

    def forward(self, input):
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")



class _InstanceNorm(_NormBase):
    """Instance norm modules: affine and running statistics off by default; unbatched input
    (no N) is accepted."""

    _dims = None  # input dims without and with the batch dim

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)

    def forward(self, input):
        if input.dim() not in self._dims:
            raise ValueError(f"expected {self._dims[0]}D or {self._dims[1]}D input (got "
                             f"{input.dim()}D input)")
        unbatched = input.dim() == self._dims[0]
        x = input.unsqueeze(0) if unbatched else input
        if x.shape[1] != self.num_features:
            feature_dim = 0 if unbatched else 1
            if self.affine:
                raise ValueError(f"expected input's size at dim={feature_dim} to match "
                                 f"num_features ({self.num_features}), but got: {x.shape[1]}.")
            warnings.warn(f"input's size at dim={feature_dim} does not match num_features. You "
                          "can silence this warning by not passing in num_features, which is "
                          "not used because affine=False", stacklevel=2)
        out = instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training or not self.track_running_stats,
                            0.0 if self.momentum is None else self.momentum, self.eps)
        return out.squeeze(0) if unbatched else out


class InstanceNorm1d(_InstanceNorm):
    """Instance norm of (N, C, L) or (C, L) input."""

    _dims = (2, 3)


class InstanceNorm2d(_InstanceNorm):
    """Instance norm of (N, C, H, W) or (C, H, W) input."""

    _dims = (3, 4)


class RMSNorm(Module):
    """RMS-normalize over the trailing `normalized_shape`; weight ones, no bias."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None,
                 dtype=None):
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.register_parameter("weight", Parameter(creation.ones(
            *self.normalized_shape, **_factory(device, dtype))) if elementwise_affine else None)

    def forward(self, input):
        return rms_norm(input, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class LocalResponseNorm(Module):
    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"

    def forward(self, input):
        return local_response_norm(input, self.size, self.alpha, self.beta, self.k)
