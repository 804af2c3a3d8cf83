"""safetensors files for `dt.save` / `dt.load` (a path ending in `.safetensors`, or
`format="safetensors"`), through the `safetensors` package's NumPy API.

A safetensors file holds one flat mapping of string keys to arrays and optional string
metadata, so it fits a model's `state_dict()` (the keys are PyTorch's, so weights published in
this format load with `load_state_dict`) but not an optimizer's nested state nor plain
values: those stay in dtrain's own format, which remains the checkpoint default.
"""
import os

import numpy as np

from dtrain.core import backend
from dtrain.core.serialization import _SAVABLE, _atomic_write, _place
from dtrain.core.tensor import Tensor


def _module():
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError("safetensors files need the safetensors package: pip install "
                          "'dtrain[safetensors]'") from None
    return safetensors


def _flat(obj):
    """`obj` as {str: contiguous host array}; anything safetensors cannot hold raises
    TypeError naming the key."""
    if not isinstance(obj, dict):
        raise TypeError(f"dt.save: a safetensors file holds a dict of str -> Tensor (a "
                        f"state_dict), not {type(obj).__name__}; save other objects in "
                        "dtrain's format (a path not ending in .safetensors)")
    out = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise TypeError(f"dt.save: safetensors keys must be str, got {key!r} "
                            f"({type(key).__name__})")
        if isinstance(value, Tensor):
            value = value.detach()._data
        elif not isinstance(value, np.ndarray):
            nested = " (nested state, such as an optimizer's)" if isinstance(
                value, (dict, list, tuple)) else ""
            raise TypeError(f"dt.save: cannot store {type(value).__name__} at key {key!r} in "
                            f"a safetensors file{nested}: it holds only tensors; save this "
                            "object in dtrain's format (a path not ending in .safetensors)")
        out[key] = np.asarray(backend.to_device(value, backend.CPU), order="C")  # keeps 0-d
    return out


def save(obj, f, metadata=None):
    """Write the state dict `obj` to the path (atomically) or binary file `f`, with optional
    `metadata` ({str: str}, stored in the header's "__metadata__")."""
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str)
                                        for k, v in metadata.items()):
        raise TypeError(f"dt.save: safetensors metadata must map str to str, got {metadata!r}")
    data = _module().numpy.save(_flat(obj), metadata=metadata)
    if isinstance(f, (str, os.PathLike)):
        _atomic_write(os.fspath(f), lambda out: out.write(data))
    else:
        f.write(data)


def load(f, map_location=None):
    """The dict of Tensors in the safetensors file `f` (a path or binary file), placed by
    `map_location` as `dt.load` places them."""
    st = _module()
    name = os.fspath(f) if isinstance(f, (str, os.PathLike)) else getattr(f, "name", repr(f))
    try:
        arrays = st.numpy.load_file(f) if isinstance(f, (str, os.PathLike)) else \
            st.numpy.load(f.read())
    except st.SafetensorError as err:
        raise RuntimeError(f"dt.load: {name} is not a readable safetensors file ({err})") \
            from None
    for key, arr in arrays.items():
        if arr.dtype not in _SAVABLE:
            raise TypeError(f"dt.load: {name}: tensor {key!r} has dtype {arr.dtype}, which "
                            "dtrain has no dtype for")
    return {k: _place(arr, "cpu", False, map_location) for k, arr in arrays.items()}
