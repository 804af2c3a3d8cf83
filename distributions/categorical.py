"""Discrete distributions: Categorical, OneHotCategorical and Bernoulli, each given by
`probs` or by `logits` (the other is derived when first read)."""
import numpy as np

import dtrain as dt
import dtrain.nn.functional as F
from dtrain.core.tensor import Size
from dtrain.distributions import constraints
from dtrain.distributions.distribution import Distribution, broadcast_all


def _one_of(probs, logits):
    if (probs is None) == (logits is None):
        raise ValueError("Either `probs` or `logits` must be specified, but not both.")


def _clamped(probs):
    eps = float(np.finfo(probs.dtype.np).eps)
    return probs.clamp(eps, 1 - eps)


class Categorical(Distribution):
    """Draws category indices 0..K-1 with the (normalised) weights of the last dim."""

    arg_constraints = {"probs": constraints.simplex, "logits": constraints.real}

    def __init__(self, probs=None, logits=None, validate_args=None):
        _one_of(probs, logits)
        if probs is not None:
            if probs.dim() < 1:
                raise ValueError("`probs` parameter must be at least one-dimensional.")
            self.probs = probs / probs.sum(-1, keepdim=True)
        else:
            if logits.dim() < 1:
                raise ValueError("`logits` parameter must be at least one-dimensional.")
            self.logits = logits - logits.logsumexp(-1, keepdim=True)
        param = self.__dict__.get("probs", self.__dict__.get("logits"))
        self._num_events = param.shape[-1]
        super().__init__(param.shape[:-1], validate_args=validate_args)

    def __getattr__(self, name):  # the parameter not given, derived on first use
        if name == "probs":
            self.probs = F.softmax(self.logits, dim=-1)
            return self.probs
        if name == "logits":
            self.logits = _clamped(self.probs).log()
            return self.logits
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    @property
    def support(self):
        return constraints.integer_interval(0, self._num_events - 1)

    param_shape = property(lambda self: self.__dict__.get(
        "probs", self.__dict__.get("logits")).shape)
    mean = property(lambda self: dt.full(self._extended_shape(), float("nan"),
                                         dtype=self.probs.dtype))
    variance = mean
    mode = property(lambda self: self.probs.argmax(-1))

    def sample(self, sample_shape=Size()):
        """Gumbel-max: argmax(logits + Gumbel noise) draws index k with probability p_k."""
        with dt.no_grad():
            shape = tuple(sample_shape) + tuple(self._batch_shape) + (self._num_events,)
            u = dt.rand(shape, dtype=self.logits.dtype, device=self.logits.device)
            return (self.logits - (-u.log()).log()).argmax(-1)

    def log_prob(self, value):
        self._validate_sample(value)
        value = value.long().unsqueeze(-1)
        shape = np.broadcast_shapes(tuple(value.shape[:-1]), tuple(self._batch_shape))
        logits = self.logits.expand(*shape, self._num_events)
        return logits.gather(-1, value.expand(*shape, 1)).squeeze(-1)

    def entropy(self):
        logits = self.logits.clamp(min=float(np.finfo(self.logits.dtype.np).min))
        return -(logits * self.probs).sum(-1)

    def enumerate_support(self, expand=True):
        values = dt.arange(self._num_events, device=self.probs.device).view(
            (-1,) + (1,) * len(self._batch_shape))
        return values.expand(-1, *self._batch_shape) if expand else values


class OneHotCategorical(Distribution):
    """Categorical draws as one-hot vectors (event_shape = (K,))."""

    arg_constraints = Categorical.arg_constraints
    support = constraints.one_hot

    def __init__(self, probs=None, logits=None, validate_args=None):
        self._categorical = Categorical(probs, logits, validate_args=validate_args)
        super().__init__(self._categorical.batch_shape,
                         Size((self._categorical._num_events,)), validate_args=False)
        self._validate_args = self._categorical._validate_args

    probs = property(lambda self: self._categorical.probs)
    logits = property(lambda self: self._categorical.logits)
    mean = property(lambda self: self.probs)
    variance = property(lambda self: self.probs * (1 - self.probs))

    def sample(self, sample_shape=Size()):
        index = self._categorical.sample(sample_shape)
        return F.one_hot(index, self._categorical._num_events).to(self.probs.dtype)

    def log_prob(self, value):
        self._validate_sample(value)
        return self._categorical.log_prob(value.argmax(-1))

    def entropy(self):
        return self._categorical.entropy()


class Bernoulli(Distribution):
    """Draws 1 with probability `probs` (or sigmoid(`logits`)), else 0, as floats."""

    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    support = constraints.boolean

    def __init__(self, probs=None, logits=None, validate_args=None):
        _one_of(probs, logits)
        if probs is not None:
            (self.probs,) = broadcast_all(probs)
        else:
            (self.logits,) = broadcast_all(logits)
        param = self.__dict__.get("probs", self.__dict__.get("logits"))
        super().__init__(param.shape, validate_args=validate_args)

    def __getattr__(self, name):
        if name == "probs":
            self.probs = self.logits.sigmoid()
            return self.probs
        if name == "logits":
            p = _clamped(self.probs)
            self.logits = p.log() - (-p).log1p()
            return self.logits
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    mean = property(lambda self: self.probs)
    variance = property(lambda self: self.probs * (1 - self.probs))
    mode = property(lambda self: (self.probs >= 0.5).to(self.probs.dtype))

    def sample(self, sample_shape=Size()):
        with dt.no_grad():
            probs = self.probs.expand(self._extended_shape(sample_shape))
            u = dt.rand(probs.shape, dtype=probs.dtype, device=probs.device)
            return (u < probs).to(probs.dtype)

    def log_prob(self, value):
        self._validate_sample(value)
        logits, value = broadcast_all(self.logits, value)
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none")

    def entropy(self):
        return F.binary_cross_entropy_with_logits(self.logits, self.probs, reduction="none")

    def enumerate_support(self, expand=True):
        values = dt.arange(2, dtype=self.probs.dtype).view((-1,) + (1,) * len(self._batch_shape))
        return values.expand(-1, *self._batch_shape) if expand else values
