"""`Dropout` (elements) and `Dropout1d/2d/3d` (whole channels): zero with probability p in
training, scale the rest by 1 / (1 - p); the identity in eval mode."""
from dtrain.autograd.node import Op
from dtrain.autograd.registry import Sample, SampleMaker, register, register_composite
from dtrain.autograd.tensor_methods import inplace as _inplace
from dtrain.core import backend
from dtrain.core import random as rnd
from dtrain.core.random import manual_seed
from dtrain.nn.module import Module


def _check_p(p):
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")


def _mask_samples():
    s = SampleMaker("dropout_mask")

    def seeded(x, mask_shape=None):
        manual_seed(7)  # the same mask on every call
        return DropoutMask.apply(x, p=0.4, mask_shape=mask_shape)
    return [Sample(seeded, (s(3, 4, grad=False),)),
            Sample(lambda x: seeded(x, (2, 3, 1, 1)), (s(2, 3, 2, 2, grad=False),))]


@register("dropout_mask", _mask_samples, differentiable=False)
class DropoutMask(Op):
    """Dropout's scaled keep-mask: 1 / (1 - p) where a uniform draw from the default
    generator of `x`'s device is >= p, else 0; of `mask_shape` (default `x`'s shape) and
    `x`'s dtype. An op, not NumPy beside the graph, so that dtrain.jit records it and each
    replay draws a fresh mask from the same generator stream as eager calls."""

    differentiable = False
    random = True

    def forward(self, x, p, mask_shape=None, out=None):
        dev = backend.device_of(x)
        shape = mask_shape or x.shape
        scale = x.dtype.type(0.0 if p == 1.0 else 1.0 / (1.0 - p))
        with backend.device_context(dev):
            rng = rnd.default_generator(dev).rng
            if out is None:
                return (rng.random(shape) >= p).astype(x.dtype) * scale
            xp = backend.array_module(x)  # the same draws, into scratch arrays
            draw = rng.random(out=self.scratch("draw", shape, xp.float64, xp))
            keep = xp.greater_equal(draw, p, out=self.scratch("keep", shape, xp.bool_, xp))
            return xp.multiply(keep, scale, out=out)


def _dropout(input, p, mask_shape=None):
    """input * mask, the mask of `mask_shape` (broadcast; default the input's shape)."""
    return input * DropoutMask.apply(input, p=p, mask_shape=mask_shape)


def dropout(input, p=0.5, training=True, inplace=False):
    """In training, zero each element with probability p and scale the rest by 1 / (1 - p);
    the identity otherwise."""
    _check_p(p)
    if not training or p == 0.0:
        return input
    if inplace:
        return _inplace(input, _dropout, (p,), reads_self=False)
    return _dropout(input, p)


def _feature_dropout(name, input, p, training, inplace, spatial):
    """Zero whole channels: (N, C, *spatial) or unbatched (C, *spatial) input."""
    _check_p(p)
    if input.dim() not in (spatial + 1, spatial + 2):
        raise ValueError(f"{name}: Expected {spatial + 1}D or {spatial + 2}D input, but received "
                         f"a {input.dim()}D input")
    if not training or p == 0.0:
        return input
    channels = input.dim() - spatial
    shape = tuple(input.shape[:channels]) + (1,) * spatial
    if inplace:
        return _inplace(input, _dropout, (p, shape), reads_self=False)
    return _dropout(input, p, shape)


def dropout1d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of (N, C, L) or (C, L) input with probability p, scaling the rest by
    1/(1-p)."""
    return _feature_dropout("dropout1d", input, p, training, inplace, 1)


def dropout2d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of (N, C, H, W) or (C, H, W) input with probability p, scaling the rest
    by 1/(1-p)."""
    return _feature_dropout("dropout2d", input, p, training, inplace, 2)


def dropout3d(input, p=0.5, training=True, inplace=False):
    """Zero whole channels of (N, C, D, H, W) or (C, D, H, W) input with probability p, scaling the
    rest by 1/(1-p)."""
    return _feature_dropout("dropout3d", input, p, training, inplace, 3)


_SELU_ALPHA_PRIME = -1.7580993408473766  # -scale * alpha of SELU: where SELU saturates


def alpha_dropout(input, p=0.5, training=False, inplace=False):
    """Dropout for SELU networks: dropped elements take SELU's saturation value and an
    affine map keeps the mean and variance (torch's formula)."""
    _check_p(p)
    if not training or p == 0.0:
        return input
    a = ((1 - p) * (1 + p * _SELU_ALPHA_PRIME ** 2)) ** -0.5
    b = -a * _SELU_ALPHA_PRIME * p
    keep = DropoutMask.apply(input, p=p, mask_shape=None) * (1 - p)  # 0/1
    out = (input * keep + _SELU_ALPHA_PRIME * (1 - keep)) * a + b
    return input.copy_(out.detach()) if inplace else out


def _dropout_samples():
    s = SampleMaker("dropout")

    def seeded(x):
        manual_seed(7)  # the same mask on every call of gradcheck
        return dropout(x, 0.4)
    def seeded2d(x):
        manual_seed(7)
        return dropout2d(x, 0.5)
    return [Sample(seeded, (s(3, 4),)), Sample(seeded2d, (s(2, 3, 2, 2),))]


register_composite("dropout", _dropout_samples)


class Dropout(Module):
    """Dropout in training mode (`model.train()`), identity in eval mode."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        _check_p(p)
        self.p = p
        self.inplace = inplace

    def forward(self, input):
        return dropout(input, self.p, self.training, self.inplace)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class AlphaDropout(Dropout):
    """alpha_dropout in training mode, identity in eval mode."""

    def forward(self, input):
        return alpha_dropout(input, self.p, self.training, self.inplace)


class Dropout1d(Dropout):
    """Zero whole channels of (N, C, L) input in training."""

    def forward(self, input):
        return dropout1d(input, self.p, self.training, self.inplace)


class Dropout2d(Dropout):
    """Zero whole channels of (N, C, H, W) input in training."""

    def forward(self, input):
        return dropout2d(input, self.p, self.training, self.inplace)


class Dropout3d(Dropout):
    """Zero whole channels of (N, C, D, H, W) input in training."""

    def forward(self, input):
        return dropout3d(input, self.p, self.training, self.inplace)
