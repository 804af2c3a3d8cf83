"""Tensor factories with PyTorch's names and arguments (`dt.tensor`, `dt.zeros`, `dt.randn`...)."""
import math
import warnings

import numpy as np

from dtrain.core import backend
from dtrain.core import dtype as dtypes
from dtrain.core.state import state
from dtrain.core.tensor import Size, Tensor


def _shape(size):
    """Accept `f(2, 3)`, `f((2, 3))` and `f([2, 3])`."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for s in size:
        if not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 0:
            raise ValueError(f"sizes must be non-negative integers, got {tuple(size)}")
    return tuple(int(s) for s in size)


def _size(sizes, size):
    """The shape from `f(2, 3)`, `f((2, 3))`, `f([2, 3])` or `f(size=(2, 3))`."""
    if size is None:
        return _shape(sizes)
    if sizes:
        raise TypeError(f"sizes given both positionally {sizes} and as size={size}")
    return _shape((size,) if isinstance(size, (tuple, list)) else (size,))


_default_device = backend.CPU


def set_default_device(device):
    """Device of new tensors when factories get no `device` (as torch.set_default_device)."""
    global _default_device
    _default_device = backend.normalize_device("cpu" if device is None else device)


def get_default_device():
    """The device of new tensors when factories get no `device`."""
    return _default_device


def _placement(device, dtype, default=None):
    dev = backend.normalize_device(device if device is not None else _default_device)
    dt = dtypes.from_any(dtype) if dtype is not None else (default or dtypes.get_default_dtype())
    return dev, backend.module_for(dev), dt.np


def _finish(arr, requires_grad):
    """The new tensor over `arr`, made here from Python values or sizes: graph mode hears of
    it, as a constant of the function that makes it (autograd/observer.py)."""
    t = Tensor._make(arr).requires_grad_(requires_grad) if requires_grad else Tensor._make(arr)
    if state.observer is not None:
        state.observer.created(t)
    return t


def _infer_array(data, dtype=None):
    """A NumPy/CuPy array for `data`, with PyTorch's dtype inference for Python values
    (Python floats become the default dtype unless `dtype` says otherwise)."""
    if isinstance(data, Tensor):
        return data._data
    if isinstance(data, np.ndarray) or backend.is_cuda_array(data):
        arr = data
    else:
        if isinstance(data, (list, tuple)) and any(isinstance(v, Tensor) for v in data):
            data = [v.tolist() if isinstance(v, Tensor) else v for v in data]
        arr = np.asarray(data)
        if arr.dtype == np.float64 and not isinstance(data, np.generic):
            arr = arr.astype(dtypes.get_default_dtype().np if dtype is None else
                             dtypes.to_np(dtype))
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"can't convert data of dtype {arr.dtype} to a tensor; supported: "
                        "bool, integer and floating point numbers")
    if arr.dtype == np.uint64 or arr.dtype == np.uint32 or arr.dtype == np.uint16:
        arr = arr.astype(np.int64)
    return arr


def tensor(data, *, dtype=None, device=None, requires_grad=False):
    """A new tensor that copies `data` (a list, number, array or tensor)."""
    if isinstance(data, Tensor):  # the copy by registry ops, which graph mode records
        out = data.detach().to(device=device, dtype=dtype)
        out = out.clone() if out._data is data._data else out
        return out.requires_grad_(True) if requires_grad else out
    arr = _infer_array(data, dtype)
    if device is not None:
        dev = backend.normalize_device(device)
    elif backend.is_cuda_array(arr):
        dev = backend.device_of(arr)
    else:
        dev = _default_device
    out = backend.to_device(arr, dev)
    if dtype is not None:
        out = out.astype(dtypes.to_np(dtype), copy=False)
    if out is arr:
        out = out.copy()
    return _finish(out, requires_grad)


def as_tensor(data, dtype=None, device=None):
    """Like `tensor`, but shares memory with an array or tensor when no conversion is needed."""
    if isinstance(data, Tensor) and dtype is None and device is None:
        return data
    arr = _infer_array(data, dtype)
    if device is not None:
        arr = backend.to_device(arr, backend.normalize_device(device))
    if dtype is not None:
        arr = arr.astype(dtypes.to_np(dtype), copy=False)
    return Tensor._make(arr)


def from_numpy(array):
    """A CPU tensor sharing memory with a NumPy array."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"expected np.ndarray (got {type(array).__name__})")
    dtypes.from_np(array.dtype)
    return Tensor._make(array)


def _fill(value, size, dtype, device, requires_grad, default=None):
    dev, xp, npd = _placement(device, dtype, default)
    with backend.device_context(dev):
        return _finish(xp.full(_shape(size), value, dtype=npd), requires_grad)


def zeros(*sizes, size=None, dtype=None, device=None, requires_grad=False):
    """A tensor of zeros: `zeros(2, 3)`, `zeros((2, 3))` or `zeros(size=(2, 3))`."""
    return _fill(0, _size(sizes, size), dtype, device, requires_grad)


def ones(*sizes, size=None, dtype=None, device=None, requires_grad=False):
    """A tensor of ones: `ones(2, 3)`, `ones((2, 3))` or `ones(size=(2, 3))`."""
    return _fill(1, _size(sizes, size), dtype, device, requires_grad)


def empty(*sizes, size=None, dtype=None, device=None, requires_grad=False):
    """Of undefined contents, as torch's (zeros here: the same on every call, so that a
    compiled function can make one and fill it): `empty(2, 3)`, `empty((2, 3))` or
    `empty(size=(2, 3))`."""
    dev, xp, npd = _placement(device, dtype)
    with backend.device_context(dev):
        return _finish(xp.zeros(_size(sizes, size), dtype=npd), requires_grad)


def legacy_new(args, dtype, device, name):
    """The array of torch's legacy constructors (`Tensor(2, 3)`, `FloatTensor([1, 2])`):
    integer sizes (or one `Size`) give an uninitialised array, one sequence, array or
    tensor gives a copy of that data, no argument an empty array; all of `dtype`."""
    dev, xp, npd = _placement(device, dtype)
    if len(args) == 1 and not isinstance(args[0], (int, np.integer, Size)):
        data = args[0]
        if isinstance(data, (float, bool, complex)):
            raise TypeError(f"{name}(): data must be a sequence (got {type(data).__name__}); "
                            f"for a 0-d tensor use dt.tensor({data!r})")
        arr = _infer_array(data)
        return backend.to_device(arr, dev).astype(npd)  # astype copies
    if len(args) == 1 and isinstance(args[0], Size):
        args = tuple(args[0])
    if not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in args):
        raise TypeError(f"{name}(): expected integer sizes or one sequence of data, got "
                        f"({', '.join(type(a).__name__ for a in args)})")
    with backend.device_context(dev):
        return xp.empty(_shape(args) if args else (0,), dtype=npd)


class LegacyTensorType(type):
    """The type of `dt.FloatTensor`, `dt.LongTensor`...: calling one makes a CPU Tensor of
    its dtype (sizes or data, as `dt.Tensor`); `isinstance(t, dt.FloatTensor)` is true for
    a CPU float32 Tensor (as torch)."""

    def __call__(cls, *args):
        return Tensor._make(legacy_new(args, cls.dtype, backend.CPU, cls.__name__))

    def __instancecheck__(cls, obj):
        return (isinstance(obj, Tensor) and obj._data.dtype == cls.dtype.np
                and not backend.is_cuda_array(obj._data))

    def __repr__(cls):
        return f"<class 'dtrain.{cls.__name__}'>"


LEGACY_TYPES = {name: LegacyTensorType(name, (), {
    "dtype": d, "__module__": "dtrain",
    "__doc__": f"torch's legacy CPU {d} tensor type: `{name}(2, 3)` or `{name}(data)`."})
    for d, name in dtypes.LEGACY_NAMES.items()}


def full(size, fill_value, *, dtype=None, device=None, requires_grad=False):
    """A tensor of shape `size` filled with `fill_value` (bool and int values keep their dtype)."""
    default = (dtypes.bool_ if isinstance(fill_value, bool) else
               dtypes.int64 if isinstance(fill_value, (int, np.integer)) else None)
    return _fill(fill_value, (size,) if isinstance(size, int) else tuple(size), dtype, device,
                 requires_grad, default)


def eye(n, m=None, *, dtype=None, device=None, requires_grad=False):
    """An (n, m) identity matrix (m defaults to n)."""
    dev, xp, npd = _placement(device, dtype)
    with backend.device_context(dev):
        return _finish(xp.eye(n, m, dtype=npd), requires_grad)


def arange(start, end=None, step=1, *, dtype=None, device=None, requires_grad=False):
    """Values in [start, end) by `step`; int64 when all arguments are integers (as torch)."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise RuntimeError("arange: step must be nonzero")
    ints = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
    dev, xp, npd = _placement(device, dtype, dtypes.int64 if ints else None)
    with backend.device_context(dev):
        return _finish(xp.arange(start, end, step).astype(npd, copy=False), requires_grad)


def range_(start=0, end=None, step=1, *, dtype=None, device=None, requires_grad=False):
    """torch.range (deprecated there): values from start to end INCLUSIVE by `step`, in the
    default float dtype. Prefer arange, whose end is exclusive."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise RuntimeError("range: step must be nonzero")
    warnings.warn("dtrain.range is deprecated and will be removed in a future release because "
                  "its behavior is inconsistent with Python's range builtin. Instead, use "
                  "dtrain.arange, which produces values in [start, end).", UserWarning,
                  stacklevel=2)
    n = math.floor((end - start) / step + 1e-9) + 1
    dev, xp, npd = _placement(device, dtype)
    with backend.device_context(dev):
        values = start + step * xp.arange(max(n, 0), dtype=np.float64)
        return _finish(values.astype(npd, copy=False), requires_grad)


def linspace(start, end, steps, *, dtype=None, device=None, requires_grad=False):
    """`steps` values evenly spaced from start to end inclusive: shape (steps,)."""
    dev, xp, npd = _placement(device, dtype)
    with backend.device_context(dev):
        return _finish(xp.linspace(start, end, steps, dtype=npd), requires_grad)


def logspace(start, end, steps, base=10.0, *, dtype=None, device=None, requires_grad=False):
    """`steps` values from base**start to base**end, evenly spaced in the exponent."""
    dev, xp, npd = _placement(device, dtype)
    with backend.device_context(dev):
        return _finish(xp.logspace(start, end, steps, base=base, dtype=npd), requires_grad)


def _draw(kind, dev, requires_grad, generator, **options):
    """A new tensor from the registry op `Draw` (autograd/ops/sampling.py), so that graph
    mode records the draw and replays draw anew."""
    # NOTE: imported here: the autograd layer imports this module
    from dtrain.autograd.ops.sampling import Draw

    out = Draw.apply(kind=kind, generator=generator, device=dev, **options)
    return out.requires_grad_(True) if requires_grad else out


def _floats(kind, size, generator, dtype, device, requires_grad):
    """Float samples of the sampler `kind`, drawn in float64 then cast."""
    dev, _, npd = _placement(device, dtype)
    if npd.kind != "f":
        raise TypeError(f"expected a floating point dtype for random floats, got {npd}")
    return _draw(kind, dev, requires_grad, generator, shape=_shape(size), dtype=npd)


def rand(*sizes, size=None, generator=None, dtype=None, device=None, requires_grad=False):
    """Uniform samples on [0, 1)."""
    return _floats("rand", _size(sizes, size), generator, dtype, device, requires_grad)


def randn(*sizes, size=None, generator=None, dtype=None, device=None, requires_grad=False):
    """Standard normal samples."""
    return _floats("randn", _size(sizes, size), generator, dtype, device, requires_grad)


def randint(low, high=None, size=None, *, generator=None, dtype=None, device=None,
            requires_grad=False):
    """Integers uniform on [low, high): `randint(high, size)`, `randint(high, size=size)` or
    `randint(low, high, size)`."""
    if size is None:
        low, high, size = 0, low, high
    elif high is None:
        low, high = 0, low
    if size is None:
        raise TypeError("randint() missing required argument 'size'")
    if high <= low:
        raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={low} "
                           f">= to={high}")
    dev, _, npd = _placement(device, dtype, dtypes.int64)
    return _draw("randint", dev, requires_grad, generator, shape=_shape((size,)), dtype=npd,
                 low=low, high=high)


def randperm(n, *, generator=None, dtype=None, device=None, requires_grad=False):
    """A random permutation of 0..n-1."""
    dev, _, npd = _placement(device, dtype, dtypes.int64)
    return _draw("randperm", dev, requires_grad, generator, n=n, dtype=npd)


def _like(factory):
    def like(input, *, dtype=None, device=None, requires_grad=False):
        return factory(input._data.shape, dtype=dtype or input.dtype,
                       device=device or input.device, requires_grad=requires_grad)
    like.__name__ = factory.__name__ + "_like"
    like.__doc__ = f"`{factory.__name__}` with the shape, dtype and device of `input`."
    return like


zeros_like = _like(zeros)
ones_like = _like(ones)
empty_like = _like(empty)
rand_like = _like(rand)
randn_like = _like(randn)


def full_like(input, fill_value, *, dtype=None, device=None, requires_grad=False):
    """`full` with the shape, dtype and device of `input`."""
    return full(input._data.shape, fill_value, dtype=dtype or input.dtype,
                device=device or input.device, requires_grad=requires_grad)


def randint_like(input, low, high=None, *, dtype=None, device=None, requires_grad=False):
    """`randint` with the shape, dtype and device of `input`."""
    return randint(low, high, input._data.shape, dtype=dtype or input.dtype,
                   device=device or input.device, requires_grad=requires_grad)
