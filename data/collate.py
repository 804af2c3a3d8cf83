"""Turning a list of samples into a batch, as `torch.utils.data.default_collate`."""
import collections.abc
import numbers

import numpy as np

from dtrain.autograd.ops.shape import stack
from dtrain.core.backend import array_module, is_cuda_array
from dtrain.core.creation import as_tensor
from dtrain.core.tensor import Tensor

_ERR = ("default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; "
        "found {}")


def _is_array(elem):
    return isinstance(elem, np.ndarray) or is_cuda_array(elem)


def _is_numeric_array(elem):
    return _is_array(elem) and elem.dtype.kind in "biuf"


def _rebuild(elem, values):
    """A container like `elem` holding `values` (plain dict/list when the type won't take it)."""
    try:
        return type(elem)(values)
    except TypeError:
        return dict(values) if isinstance(elem, collections.abc.Mapping) else list(values)


def default_collate(batch):
    """Stack a list of samples into a batch, recursing into containers.

    dt Tensors and numeric NumPy arrays are stacked along a new first dimension into a dt
    Tensor; Python floats become a float64 tensor, ints an int64 tensor, bools a bool tensor
    (NumPy scalars keep their dtype); strings stay a list. Dicts collate per key,
    namedtuples per field, and tuples/lists per position (tuples come back as lists, as in
    torch).
    """
    elem = batch[0]
    if isinstance(elem, Tensor):
        if any(t.requires_grad for t in batch):
            return stack(batch, 0)
        # NOTE: samples rarely need gradients; stacking their arrays skips one graph node
        # per sample.
        return Tensor._make(array_module(elem._data).stack([t._data for t in batch], 0))
    if isinstance(elem, (str, bytes)):
        return batch
    if _is_numeric_array(elem):
        return as_tensor(array_module(elem).stack(batch, 0))
    if _is_array(elem):
        raise TypeError(_ERR.format(elem.dtype))
    if isinstance(elem, float):
        return as_tensor(np.asarray(batch, dtype=np.float64))
    if isinstance(elem, (numbers.Number, np.generic)):
        return as_tensor(np.asarray(batch))
    if isinstance(elem, collections.abc.Mapping):
        return _rebuild(elem, {key: default_collate([d[key] for d in batch]) for key in elem})
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):
        return type(elem)(*(default_collate(list(s)) for s in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        size = len(elem)
        if any(len(e) != size for e in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        columns = [default_collate(list(s)) for s in zip(*batch)]
        return columns if isinstance(elem, tuple) else _rebuild(elem, columns)
    raise TypeError(_ERR.format(type(elem)))


def default_convert(data):
    """Numeric NumPy arrays to dt Tensors, recursing into containers (no batching)."""
    if _is_numeric_array(data):
        return as_tensor(data)
    if isinstance(data, collections.abc.Mapping):
        return _rebuild(data, {key: default_convert(v) for key, v in data.items()})
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, collections.abc.Sequence) and not isinstance(data, (str, bytes)):
        return _rebuild(data, [default_convert(d) for d in data])
    return data
