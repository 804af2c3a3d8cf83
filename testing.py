"""`dt.testing.assert_close`, as `torch.testing.assert_close`: compare tensors (and numbers,
sequences, mappings of them) with dtype-dependent default tolerances."""
from collections.abc import Mapping, Sequence

import numpy as np

from dtrain.core import backend
from dtrain.core import dtype as dtypes
from dtrain.core.tensor import Tensor

# dtype name -> (rtol, atol): PyTorch's defaults; integers and bool compare exactly
_TOLERANCES = {"float16": (1e-3, 1e-5), "float32": (1.3e-6, 1e-5), "float64": (1e-7, 1e-7)}


def assert_close(actual, expected, *, allow_subclasses=True, rtol=None, atol=None,
                 equal_nan=False, check_device=True, check_dtype=True, check_layout=True,
                 check_stride=False, msg=None):
    """Raise AssertionError unless `actual` and `expected` are close elementwise:
    |actual - expected| <= atol + rtol * |expected|. Tensors must agree in shape and (by
    default) dtype and device; numbers compare as 0-d tensors; sequences and mappings
    compare item by item. `rtol` and `atol` go together; without them each dtype's
    default applies."""
    if (rtol is None) != (atol is None):
        raise ValueError(f"Both 'rtol' and 'atol' must be either specified or omitted, but got "
                         f"no {'rtol' if rtol is None else 'atol'}.")
    _compare(actual, expected, "", dict(rtol=rtol, atol=atol, equal_nan=equal_nan,
                                        check_device=check_device, check_dtype=check_dtype,
                                        check_layout=check_layout, msg=msg))


def _compare(actual, expected, where, opts):
    if isinstance(actual, Mapping) and isinstance(expected, Mapping):
        if set(actual) != set(expected):
            _fail(f"The keys of the mappings do not match{where}: {sorted(map(str, actual))} "
                  f"!= {sorted(map(str, expected))}", opts)
        for k in expected:
            _compare(actual[k], expected[k], f"{where}[{k!r}]", opts)
        return
    if _is_sequence(actual) and _is_sequence(expected):
        if len(actual) != len(expected):
            _fail(f"The length of the sequences mismatch{where}: {len(actual)} != "
                  f"{len(expected)}", opts)
        for i, (a, e) in enumerate(zip(actual, expected)):
            _compare(a, e, f"{where}[{i}]", opts)
        return
    _compare_tensors(_as_tensor(actual, where), _as_tensor(expected, where), where, opts)


def _is_sequence(x):
    return isinstance(x, Sequence) and not isinstance(x, str)


def _as_tensor(x, where):
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (bool, int, float, np.ndarray, np.generic)):
        return Tensor._make(np.asarray(x))
    raise TypeError(f"No comparison pair was able to handle inputs of type {type(x)}{where}.")


def _compare_tensors(actual, expected, where, opts):
    if opts["check_layout"] and actual.layout != expected.layout:
        _fail(f"The values for attribute 'layout' do not match{where}: {actual.layout} != "
              f"{expected.layout}.", opts)
    if actual.is_sparse or expected.is_sparse:
        actual, expected = actual.to_dense(), expected.to_dense()
    if tuple(actual.shape) != tuple(expected.shape):
        _fail(f"The values for attribute 'shape' do not match{where}: {actual.shape} != "
              f"{expected.shape}.", opts)
    if opts["check_device"] and actual.device != expected.device:
        _fail(f"The values for attribute 'device' do not match{where}: {actual.device} != "
              f"{expected.device}.", opts)
    if opts["check_dtype"] and actual.dtype != expected.dtype:
        _fail(f"The values for attribute 'dtype' do not match{where}: {actual.dtype} != "
              f"{expected.dtype}.", opts)
    a = backend.to_device(actual.detach()._data, backend.CPU)
    e = backend.to_device(expected.detach()._data, backend.CPU)
    rtol, atol = opts["rtol"], opts["atol"]
    if rtol is None:
        rtol, atol = max((_TOLERANCES.get(dtypes.from_np(x.dtype).name, (0.0, 0.0))
                          for x in (a, e)), key=lambda t: t[0])
    if a.dtype.kind == "b" or e.dtype.kind == "b":
        a, e = a.astype(np.int64), e.astype(np.int64)
    close = np.isclose(a, e, rtol=rtol, atol=atol, equal_nan=opts["equal_nan"])
    if close.all():
        return
    a64, e64 = np.atleast_1d(a.astype(np.float64)), np.atleast_1d(e.astype(np.float64))
    close = np.atleast_1d(close)
    diff = np.abs(a64 - e64)
    diff[close] = 0
    rel = np.divide(diff, np.abs(e64), out=np.full_like(diff, np.inf), where=e64 != 0)
    rel[close] = 0
    bad = int((~close).sum())
    what = "Scalars are" if a.ndim == 0 else "Tensor-likes are"
    lines = [f"{what} not close{where}!", "",
             f"Mismatched elements: {bad} / {close.size} ({100 * bad / close.size:.1f}%)"]
    for name, arr, allowed in (("absolute", diff, atol), ("relative", rel, rtol)):
        at = np.unravel_index(int(np.nanargmax(np.where(np.isnan(arr), np.inf, arr))),
                              arr.shape)
        value = arr[at]
        index = f" at index {tuple(int(i) for i in at)}" if a.ndim else ""
        lines.append(f"Greatest {name} difference: {value}{index} (up to {allowed} allowed)")
    _fail("\n".join(lines), opts)


def _fail(message, opts):
    msg = opts["msg"]
    raise AssertionError(msg(message) if callable(msg) else (msg or message))
