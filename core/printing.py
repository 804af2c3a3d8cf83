"""`repr` of tensors in PyTorch's format: `tensor([1.0000, 2.5000], requires_grad=True)`."""
import numpy as np

from dtrain.core import backend
from dtrain.core import dtype as dtypes

_PREFIX = "tensor("


def _format_array(arr):
    if arr.size == 0:
        return "[]"
    kw = {"separator": ", ", "prefix": _PREFIX, "threshold": 1000, "edgeitems": 3}
    if arr.dtype.kind == "f":
        finite = arr[np.isfinite(arr)]
        integral = finite.size == 0 or bool(np.all(finite == np.round(finite)))
        big = finite.size and float(np.max(np.abs(finite))) >= 1e8
        tiny = finite.size and 0 < float(np.min(np.abs(finite[finite != 0]), initial=np.inf)) < 1e-4
        if integral and not big:
            kw.update(precision=0, floatmode="fixed")
            text = np.array2string(arr, **kw)
        elif big or tiny:
            kw.update(precision=4, floatmode="fixed", formatter={"float_kind": "{:.4e}".format})
            text = np.array2string(arr, **kw)
        else:
            kw.update(precision=4, floatmode="fixed")
            text = np.array2string(arr, **kw)
        return text
    return np.array2string(arr, **kw)


def tensor_repr(t):
    arr = backend.to_device(t._data, backend.CPU)
    parts = [_format_array(arr)]
    if t._data.size == 0 and t._data.ndim != 1:
        parts.append(f"size={tuple(t._data.shape)}")
    if t.is_cuda:
        parts.append(f"device='{t.device}'")
    dt = t.dtype
    if dt not in (dtypes.get_default_dtype(), dtypes.int64, dtypes.bool_):
        parts.append(f"dtype={dt!r}")
    if t.grad_fn is not None:
        parts.append(f"grad_fn=<{t.grad_fn.name()}>")
    elif t.requires_grad:
        parts.append("requires_grad=True")
    return _PREFIX + ", ".join(parts) + ")"
