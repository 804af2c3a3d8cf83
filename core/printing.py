"""`repr` of tensors in PyTorch's format: `tensor([1.0000, 2.5000], requires_grad=True)`."""
import sys

import numpy as np

from dtrain.core import backend
from dtrain.core import dtype as dtypes

_PREFIX = "tensor("

_PROFILES = {"default": {"precision": 4, "threshold": 1000, "edgeitems": 3, "linewidth": 80},
             "short": {"precision": 2, "threshold": 1000, "edgeitems": 2, "linewidth": 80},
             "full": {"precision": 4, "threshold": float("inf"), "edgeitems": 3,
                      "linewidth": 80}}
_options = {**_PROFILES["default"], "sci_mode": None}


def set_printoptions(precision=None, threshold=None, edgeitems=None, linewidth=None,
                     profile=None, sci_mode=None):
    """Options of tensor printing, as torch.set_printoptions: `profile` ("default", "short",
    "full") resets the four numbers before the others apply; `sci_mode` True/False forces or
    forbids scientific notation (None: chosen from the values)."""
    if profile is not None:
        if profile not in _PROFILES:
            raise ValueError(f"set_printoptions: unknown profile {profile!r}; expected one of "
                             f"{', '.join(_PROFILES)}")
        _options.update(_PROFILES[profile])
    for name, value in (("precision", precision), ("threshold", threshold),
                        ("edgeitems", edgeitems), ("linewidth", linewidth)):
        if value is not None:
            _options[name] = value
    _options["sci_mode"] = sci_mode


def _format_array(arr):
    if arr.size == 0:
        return "[]"
    threshold = _options["threshold"]
    kw = {"separator": ", ", "prefix": _PREFIX, "edgeitems": _options["edgeitems"],
          "threshold": sys.maxsize if threshold == float("inf") else int(threshold),
          "max_line_width": _options["linewidth"]}
    if arr.dtype.kind == "f":
        digits, sci = _options["precision"], _options["sci_mode"]
        finite = arr[np.isfinite(arr)]
        integral = finite.size == 0 or bool(np.all(finite == np.round(finite)))
        big = finite.size and float(np.max(np.abs(finite))) >= 1e8
        tiny = finite.size and 0 < float(np.min(np.abs(finite[finite != 0]), initial=np.inf)) < 1e-4
        if sci or (sci is None and (big or (tiny and not integral))):
            kw.update(precision=digits, floatmode="fixed",
                      formatter={"float_kind": f"{{:.{digits}e}}".format})
        else:
            kw.update(precision=0 if integral else digits, floatmode="fixed",
                      suppress_small=sci is False)  # False: fixed point, whatever the range
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
