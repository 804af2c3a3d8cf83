"""Helpers shared by the op modules: dims, dtype promotion, gradient un-broadcasting,
forwards of single-ufunc ops."""
import numpy as np

from dtrain.core import dtype as dtypes
from dtrain.core.backend import array_module
from dtrain.core.tensor import Tensor

_SCALARS = (int, float, bool)
_CATEGORY = dtypes.CATEGORY


def torch_dtype(out, a, b):
    """Cast NumPy's result to PyTorch's promotion: an int/bool operand never widens a float
    operand's dtype, a Python float meeting integers gives the default float dtype, and a
    0-d tensor acts like a Python scalar of its category next to a dimensioned tensor."""
    od = out.dtype
    da = None if type(a) in _SCALARS else a.dtype
    db = None if type(b) in _SCALARS else b.dtype
    if da is not None and od == da and (db is None or od == db):
        return out  # the common case: NumPy already agrees with PyTorch
    if da is not None and db is not None and (a.ndim == 0) != (b.ndim == 0):
        dim_dt, zero_dt = (db, da) if a.ndim == 0 else (da, db)
        if _CATEGORY[zero_dt.kind] <= _CATEGORY[dim_dt.kind]:
            return out if od == dim_dt else out.astype(dim_dt)
    if (da is not None and od == da) or od.kind != "f":
        return out
    if db is not None and od == db:
        return out
    floats = [d for d in (da, db) if d is not None and d.kind == "f"]
    target = max(floats, key=lambda d: d.itemsize) if floats else dtypes.get_default_dtype().np
    return out.astype(target, copy=False)


def binary_forward(operator, ufunc):
    """The forward of an op that is one binary ufunc (`operator` applies it eagerly, e.g.
    `operator.add`; `ufunc` names it in the array module): PyTorch's result dtype, written
    into `out` when the graph's memory plan gives one (its dtype is that result dtype)."""
    def forward(self, a, b, out=None):
        if out is None:
            return torch_dtype(operator(a, b), a, b)
        return getattr(array_module(out), ufunc)(a, b, out=out)
    forward.ufunc = ufunc  # graph replay calls the ufunc directly when it plans `out`
    return forward


def ufunc_forward(ufunc):
    """The forward of an op that is one ufunc of the array module (NumPy's result dtype)."""
    def forward(self, *arrays, out=None):
        return getattr(array_module(arrays[0] if out is None else out), ufunc)(*arrays, out=out)
    forward.ufunc = ufunc
    return forward


def norm_dims(dim, ndim, op):
    """`dim` (None, int or sequence, possibly negative) as a sorted tuple of axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    out = []
    for d in dims:
        lo, hi = (-1, 0) if ndim == 0 else (-ndim, ndim - 1)
        if not isinstance(d, (int, np.integer)) or not lo <= d <= hi:
            raise IndexError(f"{op}: Dimension out of range (expected to be in range of "
                             f"[{lo}, {hi}], but got {d})")
        d = int(d) % ndim if ndim else 0
        if d in out:
            raise RuntimeError(f"{op}: dim {d} appears multiple times in the list of dims")
        out.append(d)
    return tuple(sorted(out))


def norm_dim(dim, ndim, op):
    return norm_dims(dim, ndim, op)[0] if ndim or dim in (0, -1) else 0


def keep_shape(shape, axes):
    """`shape` with the reduced `axes` kept as size 1."""
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def as_array_arg(v):
    """Unwrap a Tensor used as a constant (index, mask, bound) into its array."""
    return v._data if isinstance(v, Tensor) else v


def float_dtype_of(t, op):
    if t._data.dtype.kind != "f":
        raise RuntimeError(f"{op}(): expected a floating point input, got {t.dtype}")
