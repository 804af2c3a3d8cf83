"""The Tensor: one backend array plus the autograd fields that the graph needs.

Differentiable operations are attached to this class by `dtrain.autograd` (from its op
registry), so that `core` stays free of any autograd logic and imports nothing above it.
"""
import numpy as np

from dtrain.core import backend
from dtrain.core import dtype as dtypes
from dtrain.core.state import state


class Size(tuple):
    """A tensor's shape: a tuple, printed as `dtrain.Size([2, 3])`."""

    __slots__ = ()

    def __repr__(self):
        return f"dtrain.Size({list(self)})"

    def numel(self):
        """The product of the sizes: a tensor's number of elements."""
        n = 1
        for s in self:
            n *= s
        return n


class layout:
    """How a tensor stores its elements (torch.layout): `strided` (a dense array) or
    `sparse_coo` (indices and values; see dtrain.autograd.ops.sparse)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"dtrain.{self.name}"


strided = layout("strided")
sparse_coo = layout("sparse_coo")


class Tensor:
    """An n-dimensional array on a device, optionally recording operations for autograd.

    Fields: `_data` (the numpy/cupy array; internal), `requires_grad`, `grad`, `grad_fn`
    (the graph node that made it, None for leaves), and a version counter shared with its
    views so that in-place changes to tensors saved for backward are detected.

    `data` is torch's: a Tensor on the same array outside autograd (see `Tensor.data`).
    The backend array itself: `t.numpy()` for a CPU tensor (no copy; `t.detach().numpy()`
    when it requires grad), or `np.asarray(t)`; a CUDA tensor first goes to the host with
    `t.cpu()`, as in torch.
    """

    __slots__ = ("_data", "requires_grad", "grad", "grad_fn", "_output_nr", "_version",
                 "_base", "_view", "_hooks", "_post_hooks", "__weakref__")
    __array_ufunc__ = None  # make `ndarray * Tensor` defer to Tensor.__rmul__
    __hash__ = object.__hash__

    def __init__(self, *args, device=None):
        """torch's legacy constructor, of the default float dtype: `Tensor(2, 3)` (or a
        `Size`) is uninitialised of that shape, `Tensor([1, 2])` copies data, `Tensor()` is
        empty. Use `dt.tensor(data)` to keep the data's dtype."""
        from dtrain.core.creation import legacy_new

        self._init(legacy_new(args, dtypes.get_default_dtype(), device, "Tensor"))

    def _init(self, data):
        """Set the fields of a new leaf on `data` (an array; other data goes through NumPy)."""
        if isinstance(data, Tensor):
            data = data._data
        elif not hasattr(data, "__array_interface__") and not backend.is_cuda_array(data):
            data = np.asarray(data)
            if data.dtype == np.float64:
                data = data.astype(dtypes.get_default_dtype().np)
        self._data = data
        self.requires_grad = False
        self.grad = self.grad_fn = self._base = self._hooks = self._post_hooks = None
        self._output_nr = 0
        self._version = [0]

    # -- fast constructor used by ops ------------------------------------------------------
    @classmethod
    def _make(cls, data, requires_grad=False, grad_fn=None, output_nr=0, version=None):
        if isinstance(data, np.generic):  # NumPy turns 0-d results into scalars
            data = np.asarray(data)
        t = object.__new__(cls)
        t._data = data
        t.requires_grad = requires_grad
        t.grad_fn = grad_fn
        t._output_nr = output_nr
        t._version = [0] if version is None else version
        t.grad = t._base = t._hooks = t._post_hooks = None
        return t

    # -- torch's `.data` --------------------------------------------------------------------
    @property
    def data(self):
        """A new leaf Tensor on the same array (no copy), with `requires_grad=False`.

        Unlike `detach()` it has its own version counter: in-place changes made through it
        (`p.data.add_(...)`, `w.data.uniform_(...)`) are invisible to autograd, so they are
        allowed on a leaf that requires grad and are not checked against tensors saved for
        backward. Setting `t.data = other` makes `t` use `other`'s array (its shape, dtype
        and device follow); `t` keeps its identity, autograd flags and version counter."""
        return Tensor._make(self._data)

    @data.setter
    def data(self, value):
        if not isinstance(value, Tensor):
            raise TypeError(f"Tensor.data must be set to a Tensor, got "
                            f"{type(value).__module__}.{type(value).__name__}: wrap it in a "
                            f"Tensor first (t.data = dt.as_tensor(array))")
        self._data = value._data

    # -- metadata ---------------------------------------------------------------------------
    @property
    def shape(self):
        """The sizes of the dimensions, a `Size`."""
        return Size(self._data.shape)

    def size(self, dim=None):
        """The shape as a `Size`, or the size of dimension `dim`."""
        if dim is None:
            return Size(self._data.shape)
        return self._data.shape[self._wrap_dim(dim)]

    @property
    def ndim(self):
        """The number of dimensions."""
        return self._data.ndim

    def dim(self):
        """The number of dimensions."""
        return self._data.ndim

    def numel(self):
        """The number of elements."""
        return int(self._data.size)

    nelement = numel

    @property
    def dtype(self):
        """The element type, a `dtrain.dtype`."""
        return dtypes.from_np(self._data.dtype)

    @property
    def device(self):
        """Where the data lives, a `dtrain.device`."""
        return backend.device_of(self._data)

    @property
    def is_cuda(self):
        """Whether the data is on a CUDA device."""
        return backend.is_cuda_array(self._data)

    @property
    def is_cpu(self):
        """Whether the data is on the CPU."""
        return not backend.is_cuda_array(self._data)

    @property
    def is_xpu(self):
        """False: dtrain has no XPU, MPS, meta or quantized tensors (for scripts that ask)."""
        return False

    is_mps = is_meta = is_quantized = is_xpu
    is_sparse = False  # True for SparseCooTensor
    layout = strided

    @property
    def is_leaf(self):
        """Whether no recorded operation made this tensor (grad_fn is None)."""
        return self.grad_fn is None

    def is_floating_point(self):
        """Whether the dtype is a floating type."""
        return self._data.dtype.kind == "f"

    def is_contiguous(self):
        """Whether the data is in C order without gaps."""
        return bool(self._data.flags.c_contiguous)

    def element_size(self):
        """Bytes per element."""
        return self._data.itemsize

    @property
    def itemsize(self):
        """Bytes per element."""
        return self._data.itemsize

    @property
    def nbytes(self):
        """Bytes of all elements."""
        return int(self._data.nbytes)

    def is_complex(self):
        """False: dtrain has no complex dtypes."""
        return False  # dtrain has no complex dtypes

    def stride(self, dim=None):
        """Steps between elements along each dim, in elements (torch's strides)."""
        steps = tuple(s // self._data.itemsize for s in self._data.strides)
        return steps if dim is None else steps[self._wrap_dim(dim)]

    def storage_offset(self):
        """Elements from the start of the array this tensor views to its first element."""
        if backend.is_cuda_array(self._data):
            start = self._data.data.mem.ptr
        else:
            root = self._data
            while isinstance(root.base, np.ndarray):
                root = root.base
            start = root.__array_interface__["data"][0]
        return (self.data_ptr() - start) // self._data.itemsize

    def share_memory_(self):
        """No-op, returns self: DataLoader workers get batches by pickling (see
        `__reduce__`), so no tensor is ever read through shared memory."""
        return self

    def pin_memory(self, device=None):
        """Returns self: page-locked host memory only speeds up copies to a GPU, and CuPy
        copies pageable NumPy arrays as well."""
        if backend.is_cuda_array(self._data):
            raise RuntimeError(f"cannot pin '{self.type()}' only dense CPU tensors can be "
                               f"pinned")
        return self

    def is_pinned(self, device=None):
        """False: dtrain never pins host memory (see pin_memory)."""
        return False

    def data_ptr(self):
        """The address of the first element."""
        if backend.is_cuda_array(self._data):
            return self._data.data.ptr
        return self._data.__array_interface__["data"][0]

    def _wrap_dim(self, dim, ndim=None):
        """Turn a possibly negative `dim` into an index, with torch's range error."""
        n = self._data.ndim if ndim is None else ndim
        lo, hi = (-1, 0) if n == 0 else (-n, n - 1)
        if not isinstance(dim, (int, np.integer)) or not lo <= dim <= hi:
            raise IndexError(f"Dimension out of range (expected to be in range of [{lo}, {hi}],"
                             f" but got {dim})")
        return dim % n if n else 0

    # -- autograd flags ---------------------------------------------------------------------
    def requires_grad_(self, requires_grad=True):
        """Set requires_grad on a leaf (in place); returns self."""
        if self.grad_fn is not None:
            if not requires_grad:
                raise RuntimeError("you can only change requires_grad flags of leaf variables. "
                                   "If you want to use a computed variable in a subgraph that "
                                   "doesn't require differentiation use "
                                   "var_no_grad = var.detach().")
            return self
        if requires_grad and self._data.dtype.kind != "f":
            raise RuntimeError(f"only Tensors of floating point dtype can require gradients "
                               f"(got {self.dtype})")
        self.requires_grad = bool(requires_grad)
        return self

    def detach(self):
        """A tensor sharing data (and version counter) with this one, outside the graph."""
        t = Tensor._make(self._data, version=self._version)
        t._base = self._base if self._base is not None else self
        t._view = None  # a view outside the graph: in-place changes to it are not recorded
        return t

    def detach_(self):
        """Make this tensor a leaf outside the graph, in place; returns self."""
        if self._base is not None and self._base.requires_grad:
            raise RuntimeError("Can't detach views in-place. Use detach() instead.")
        self.grad_fn = None
        self.requires_grad = False
        return self

    # -- conversion to Python / NumPy -------------------------------------------------------
    def numpy(self, *, force=False):
        """The CPU data as a NumPy array, without a copy (`force=True`: detached, from any
        device)."""
        if state.observer is not None:  # autograd/observer.py
            state.observer.host_read(self, "numpy")
        if self.requires_grad and not force:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. "
                               "Use tensor.detach().numpy() instead.")
        if backend.is_cuda_array(self._data):
            if not force:
                raise TypeError(f"can't convert {self.device} device type tensor to numpy. "
                                "Use Tensor.cpu() to copy the tensor to host memory first.")
            return self._data.get()
        return self._data

    def __array__(self, dtype=None, copy=None):
        arr = self.numpy()
        return arr if dtype is None else arr.astype(dtype, copy=False)

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if state.observer is not None:  # autograd/observer.py
            state.observer.host_read(self, "item")
        if self._data.size != 1:
            raise RuntimeError(f"a Tensor with {self._data.size} elements cannot be converted "
                               "to Scalar")
        return self._data.reshape(()).item()

    def tolist(self):
        """The values as (nested) Python lists of numbers."""
        if state.observer is not None:  # autograd/observer.py
            state.observer.host_read(self, "tolist")
        return backend.to_device(self._data, backend.CPU).tolist()

    def __len__(self):
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __bool__(self):
        if self._data.size != 1:
            raise RuntimeError(f"Boolean value of Tensor with more than one value is ambiguous"
                               f" (shape {tuple(self._data.shape)})")
        return bool(self.item())

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self._data.dtype.kind not in "iub" or self._data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an "
                            "index")
        return int(self.item())

    def __format__(self, spec):
        """`f"{loss:.4f}"`: a 0-d tensor formats its Python scalar; other tensors take only
        an empty spec (as torch)."""
        if self._data.ndim == 0:
            return format(self.item(), spec)
        if spec:
            raise TypeError(f"unsupported format string {spec!r} passed to Tensor.__format__ "
                            f"(a tensor of shape {list(self._data.shape)}; only 0-d tensors "
                            f"take a format spec: use t.item() or t.tolist())")
        return str(self)

    def __repr__(self):
        from dtrain.core.printing import tensor_repr

        return tensor_repr(self)

    def __reduce__(self):
        # For multiprocessing (DataLoader workers); checkpoints use dt.save, never pickle.
        return (_rebuild, (self.numpy(force=True), str(self.device), self.requires_grad))


def _rebuild(array, device, requires_grad):
    dev = backend.normalize_device(device)
    t = Tensor._make(backend.to_device(array, dev))
    return t.requires_grad_(True) if requires_grad else t


def is_tensor(obj):
    """Whether `obj` is a dtrain Tensor (torch.is_tensor)."""
    return isinstance(obj, Tensor)
