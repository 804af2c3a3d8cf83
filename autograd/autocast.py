"""Autocast: run matrix products in float16 inside a region, as `torch.autocast` does.

The state is thread-local and kept per device type ("cpu", "cuda"). Ops on the
lower-precision list (matmul, mm, bmm, and later linear/conv) pass their inputs through
`autocast_args`, which casts float32 tensors of an autocast-enabled device type to the
autocast dtype with a differentiable cast, so gradients flow back in the inputs' dtype.
float64 tensors are never cast (PyTorch's eligibility rule), which keeps float64 gradient
checks exact. NumPy has no bfloat16, so float16 is the only autocast dtype on either device.
"""
import functools
import threading
import warnings

from dtrain.core import backend
from dtrain.core import dtype as dtypes
from dtrain.core.tensor import Tensor

_DEVICE_TYPES = ("cpu", "cuda")


class _State(threading.local):
    def __init__(self):
        self.dtype = {"cpu": None, "cuda": None}  # None: autocast disabled for that type
        self.any = False


_state = _State()


def is_autocast_enabled(device_type="cuda"):
    """Whether autocast is on for `device_type` ("cuda" or "cpu")."""
    return _state.dtype[_check_device_type(device_type)] is not None


def get_autocast_dtype(device_type):
    """The dtype autocast uses for `device_type` (float16 whether or not it is enabled)."""
    _check_device_type(device_type)
    return dtypes.float16


def _check_device_type(device_type):
    if not isinstance(device_type, str):
        raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
    if device_type not in _DEVICE_TYPES:
        raise RuntimeError(f"User specified an unsupported autocast device_type "
                           f"'{device_type}' (dtrain supports {', '.join(_DEVICE_TYPES)})")
    return device_type


class autocast:
    """`with dt.autocast(device_type="cuda"):` runs matmul-like ops on float32 tensors of that
    device type in float16; outside the region (or with enabled=False) nothing changes.

    Also usable as a decorator. `dtype` defaults to float16; any other dtype warns and
    disables autocast, as PyTorch does for an unsupported dtype. `cache_enabled` is accepted
    for PyTorch compatibility; casts are not cached.
    """

    def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
        self.device_type = _check_device_type(device_type)
        self.fast_dtype = dtypes.float16 if dtype is None else dtypes.from_any(dtype)
        self._enabled = bool(enabled)
        if self._enabled and self.fast_dtype != dtypes.float16:
            warnings.warn(f"In {device_type} autocast, but the target dtype "
                          f"{self.fast_dtype} is not supported (dtrain autocasts to "
                          "float16 only). Disabling autocast.", stacklevel=2)
            self._enabled = False
        self._prev = []

    def __enter__(self):
        self._prev.append(dict(_state.dtype))
        _state.dtype[self.device_type] = self.fast_dtype.np if self._enabled else None
        _state.any = any(d is not None for d in _state.dtype.values())
        return self

    def __exit__(self, *exc):
        _state.dtype = self._prev.pop()
        _state.any = any(d is not None for d in _state.dtype.values())

    def __call__(self, func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with autocast(self.device_type, self.fast_dtype, self._enabled):
                return func(*args, **kwargs)
        return wrapper


def autocast_args(*args):
    """The inputs of a lower-precision op, float32 tensors cast to the autocast dtype of
    their device type when autocast is on for it (a no-op tuple pass-through otherwise)."""
    if not _state.any:
        return args
    return tuple(_cast(a) for a in args)


def _cast(a):
    if not isinstance(a, Tensor) or a._data.dtype != dtypes.float32.np:
        return a
    target = _state.dtype["cuda" if backend.is_cuda_array(a._data) else "cpu"]
    return a if target is None else a.to(target)
