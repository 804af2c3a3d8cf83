"""The op registry: every differentiable op, with sample inputs that check its gradient.

Each entry names an `Op` class (a primitive) or a composite function, and a `samples`
callable that builds float64 inputs for it. The test suite runs gradcheck (reverse mode) and
a JVP check (forward mode) on every sample, and fails for any `Op` subclass that is not
registered — so no op ships without a gradient check. Later layers (nn) register their
composite functions here too.
"""
import zlib
from dataclasses import dataclass, field

import numpy as np

from dtrain.core.tensor import Tensor


@dataclass
class Sample:
    """One call to check: `fn(*args, **kwargs)`; float64 tensors that require grad are
    the inputs that gradients are checked for."""

    fn: object
    args: tuple
    kwargs: dict = field(default_factory=dict)
    tol: dict = field(default_factory=dict)  # eps/atol/rtol overrides for gradcheck

    def __call__(self, *args):
        return self.fn(*args, **self.kwargs)


@dataclass
class OpInfo:
    name: str
    op: type | None
    samples: object  # () -> list[Sample]
    differentiable: bool = True  # False: outputs never require grad (comparisons, rounding)


REGISTRY: dict[str, OpInfo] = {}


def register(name, samples, differentiable=True):
    """Class decorator: register Op subclass `cls` under `name` with its samples."""
    def deco(cls):
        _add(OpInfo(name, cls, samples, differentiable))
        cls.op_name = name
        return cls
    return deco


def register_composite(name, samples):
    """Register a composite (non-primitive) differentiable function for checking."""
    _add(OpInfo(name, None, samples))


def _add(info):
    if info.name in REGISTRY:
        raise ValueError(f"op {info.name!r} is registered twice")
    REGISTRY[info.name] = info


class SampleMaker:
    """Deterministic float64 sample tensors for one op (seeded by the op's name)."""

    def __init__(self, name):
        self.rng = np.random.default_rng(zlib.crc32(name.encode()))

    def __call__(self, *shape, low=-1.0, high=1.0, grad=True):
        arr = self.rng.uniform(low, high, shape)
        return Tensor._make(arr).requires_grad_(grad)

    def away(self, *shape, gap=0.2):
        """Values in ±[gap, 1]: away from kinks at zero (abs, relu, clamp...)."""
        arr = self.rng.uniform(gap, 1.0, shape) * self.rng.choice([-1.0, 1.0], shape)
        return Tensor._make(arr).requires_grad_(True)

    def distinct(self, *shape):
        """A permutation of well separated values (no ties for max/min/sort)."""
        n = int(np.prod(shape))
        arr = (self.rng.permutation(n) - n / 2) / n * 2 + self.rng.uniform(-0.01, 0.01, n)
        return Tensor._make(arr.reshape(shape)).requires_grad_(True)

    def ints(self, high, *shape):
        return Tensor._make(self.rng.integers(0, high, shape))
