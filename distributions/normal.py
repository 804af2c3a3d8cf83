"""Normal, Uniform, Exponential and Laplace: continuous, reparameterizable."""
import math

import dtrain as dt
from dtrain.autograd.ops.pointwise import check_all
from dtrain.core.tensor import Size
from dtrain.distributions import constraints
from dtrain.distributions.distribution import Distribution, broadcast_all


class _LocScale(Distribution):
    """A real-valued family centred at `loc` with a positive `scale` (broadcast together),
    whose mean and mode are `loc`."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = True

    def __init__(self, loc, scale, validate_args=None):
        self.loc, self.scale = broadcast_all(loc, scale)
        super().__init__(self.loc.shape, validate_args=validate_args)

    mean = property(lambda self: self.loc)
    mode = property(lambda self: self.loc)


class Normal(_LocScale):
    """N(loc, scale^2), parameters broadcast together."""

    stddev = property(lambda self: self.scale)
    variance = property(lambda self: self.scale.pow(2))

    def rsample(self, sample_shape=Size()):
        eps = dt.randn(self._extended_shape(sample_shape), dtype=self.loc.dtype,
                       device=self.loc.device)
        return self.loc + eps * self.scale

    def log_prob(self, value):
        self._validate_sample(value)
        return (-((value - self.loc) ** 2) / (2 * self.variance) - self.scale.log()
                - math.log(math.sqrt(2 * math.pi)))

    def cdf(self, value):
        self._validate_sample(value)
        return 0.5 * (1 + dt.erf((value - self.loc) / (self.scale * math.sqrt(2))))

    def entropy(self):
        return 0.5 + 0.5 * math.log(2 * math.pi) + self.scale.log()


class Uniform(Distribution):
    """Uniform on [low, high)."""

    arg_constraints = {"low": constraints.real, "high": constraints.real}
    has_rsample = True

    def __init__(self, low, high, validate_args=None):
        self.low, self.high = broadcast_all(low, high)
        if validate_args is None or validate_args:
            check_all(self.low < self.high, "Uniform is not defined when low >= high (low)",
                      self.low)
        super().__init__(self.low.shape, validate_args=validate_args)

    @property
    def support(self):
        return _Between(self.low, self.high)

    mean = property(lambda self: (self.high + self.low) / 2)
    variance = property(lambda self: (self.high - self.low).pow(2) / 12)

    def rsample(self, sample_shape=Size()):
        u = dt.rand(self._extended_shape(sample_shape), dtype=self.low.dtype,
                    device=self.low.device)
        return self.low + u * (self.high - self.low)

    def log_prob(self, value):
        self._validate_sample(value)
        inside = ((value >= self.low) & (value < self.high)).to(self.low.dtype)
        return inside.log() - (self.high - self.low).log()

    def cdf(self, value):
        self._validate_sample(value)
        return ((value - self.low) / (self.high - self.low)).clamp(0, 1)

    def entropy(self):
        return (self.high - self.low).log()


class _Between(constraints.Constraint):
    """[low, high) with tensor bounds (Uniform's support)."""

    def __init__(self, low, high):
        self.low, self.high = low, high

    def check(self, value):
        return (value >= self.low) & (value < self.high)

    def __repr__(self):
        return "HalfOpenInterval(lower_bound=low, upper_bound=high)"


class Exponential(Distribution):
    """Exponential with `rate`."""

    arg_constraints = {"rate": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True

    def __init__(self, rate, validate_args=None):
        (self.rate,) = broadcast_all(rate)
        super().__init__(self.rate.shape, validate_args=validate_args)

    mean = property(lambda self: self.rate.reciprocal())
    mode = property(lambda self: dt.zeros_like(self.rate))
    variance = property(lambda self: self.rate.pow(-2))

    def rsample(self, sample_shape=Size()):
        u = dt.rand(self._extended_shape(sample_shape), dtype=self.rate.dtype,
                    device=self.rate.device)
        return -(1 - u).log() / self.rate  # 1 - u lies in (0, 1]: no log(0)

    def log_prob(self, value):
        self._validate_sample(value)
        return self.rate.log() - self.rate * value

    def cdf(self, value):
        self._validate_sample(value)
        return 1 - (-self.rate * value).exp()

    def entropy(self):
        return 1.0 - self.rate.log()


class Laplace(_LocScale):
    """Laplace(loc, scale)."""

    variance = property(lambda self: 2 * self.scale.pow(2))

    def rsample(self, sample_shape=Size()):
        eps = 1e-7 if self.loc.dtype == dt.float32 else 1e-15
        u = dt.rand(self._extended_shape(sample_shape), dtype=self.loc.dtype,
                    device=self.loc.device) * (2 - 2 * eps) - (1 - eps)  # in (-1, 1)
        return self.loc - self.scale * u.sign() * (1 - u.abs()).log()

    def log_prob(self, value):
        self._validate_sample(value)
        return -(2 * self.scale).log() - (value - self.loc).abs() / self.scale

    def entropy(self):
        return 1 + (2 * self.scale).log()
