"""Constraints on distribution parameters and supports (`torch.distributions.constraints`):
each says whether values satisfy it, elementwise, for argument validation."""
import math


class Constraint:
    event_dim = 0  # trailing dims that form one event (simplex: 1)

    def check(self, value):
        """A boolean Tensor: which values (which events, for event_dim > 0) satisfy it."""
        raise NotImplementedError

    def __repr__(self):
        return type(self).__name__.lstrip("_").capitalize() + "()"


class _Real(Constraint):
    def check(self, value):
        return value == value  # not NaN


class _GreaterThan(Constraint):
    def __init__(self, lower_bound):
        self.lower_bound = lower_bound

    def check(self, value):
        return value > self.lower_bound

    def __repr__(self):
        return f"GreaterThan(lower_bound={self.lower_bound})"


class _Interval(Constraint):
    def __init__(self, lower_bound, upper_bound, closed=True):
        self.lower_bound, self.upper_bound, self.closed = lower_bound, upper_bound, closed

    def check(self, value):
        if self.closed:
            return (value >= self.lower_bound) & (value <= self.upper_bound)
        return (value >= self.lower_bound) & (value < self.upper_bound)

    def __repr__(self):
        kind = "Interval" if self.closed else "HalfOpenInterval"
        return f"{kind}(lower_bound={self.lower_bound}, upper_bound={self.upper_bound})"


class _Boolean(Constraint):
    def check(self, value):
        return (value == 0) | (value == 1)


class _IntegerInterval(Constraint):
    def __init__(self, lower_bound, upper_bound):
        self.lower_bound, self.upper_bound = lower_bound, upper_bound

    def check(self, value):
        return (value % 1 == 0) & (value >= self.lower_bound) & (value <= self.upper_bound)

    def __repr__(self):
        return f"IntegerInterval(lower_bound={self.lower_bound}, upper_bound={self.upper_bound})"


class _Simplex(Constraint):
    event_dim = 1

    def check(self, value):
        return (value >= 0).all(dim=-1) & ((value.sum(-1) - 1).abs() < 1e-6)


class _OneHot(Constraint):
    event_dim = 1

    def check(self, value):
        return ((value == 0) | (value == 1)).all(dim=-1) & (value.sum(-1) == 1)


real = _Real()
positive = _GreaterThan(0.0)
unit_interval = _Interval(0.0, 1.0)
boolean = _Boolean()
simplex = _Simplex()
one_hot = _OneHot()
greater_than = _GreaterThan
interval = _Interval
integer_interval = _IntegerInterval


def half_open_interval(lower_bound, upper_bound):
    return _Interval(lower_bound, upper_bound, closed=False)


nonnegative = _Interval(0.0, math.inf)
