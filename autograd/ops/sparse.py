"""Sparse COO tensors (`layout=dt.sparse_coo`) as graph networks use them: construction,
conversion to and from dense, coalescing, `dt.sparse.sum`, and the sparse @ dense product.

A `SparseCooTensor` holds integer indices (sparse_dim, nnz), a values Tensor
(nnz, *dense_dims) and a size. It is a Tensor (for `isinstance`, metadata and printing) with no
dense array: the values carry autograd, so gradients reach them through `sparse.mm` and
`to_dense()`, and dense ops on the sparse tensor itself raise an error that says to call
`to_dense()`. Everything is index arithmetic on the backend's arrays (`xp`): no SciPy.
"""
import numpy as np

from dtrain.autograd.node import Op
from dtrain.autograd.ops._util import norm_dims
from dtrain.autograd.ops.index import Index, IndexGrad
from dtrain.autograd.registry import Sample, SampleMaker, register, register_composite
from dtrain.core import backend, creation
from dtrain.core.backend import array_module
from dtrain.core.printing import tensor_repr
from dtrain.core.tensor import Size, Tensor, sparse_coo

_DENSE_ONLY = ("this operation needs a dense (strided) tensor, but got a sparse COO tensor; "
               "dtrain's sparse tensors support to_dense(), coalesce(), indices()/values(), "
               "dt.sparse.sum and sparse @ dense products (dt.sparse.mm, dt.mm, dt.matmul, @): "
               "call .to_dense() first")


class SparseCooTensor(Tensor):
    """A sparse COO tensor: `values[k]` at position `indices[:, k]`, zero elsewhere;
    repeated positions add up. Made by `dt.sparse_coo_tensor` or `Tensor.to_sparse()`."""

    __slots__ = ("_idx", "_vals", "_size", "_coalesced")
    is_sparse = True
    layout = sparse_coo

    @property
    def _data(self):
        raise RuntimeError(_DENSE_ONLY)

    # -- metadata -----------------------------------------------------------------------
    shape = property(lambda self: Size(self._size))
    ndim = property(lambda self: len(self._size))
    dtype = property(lambda self: self._vals.dtype)
    device = property(lambda self: self._vals.device)
    is_cuda = property(lambda self: self._vals.is_cuda)
    is_cpu = property(lambda self: self._vals.is_cpu)

    def size(self, dim=None):
        return Size(self._size) if dim is None else self._size[self._wrap_dim(dim, self.ndim)]

    def dim(self):
        return len(self._size)

    def numel(self):
        return Size(self._size).numel()

    def is_floating_point(self):
        return self._vals.is_floating_point()

    def sparse_dim(self):
        return self._idx.shape[0]

    def dense_dim(self):
        return len(self._size) - self._idx.shape[0]

    def _nnz(self):
        return self._idx.shape[1]

    # -- autograd: carried by the values --------------------------------------------------
    requires_grad = property(lambda self: self._vals.requires_grad)
    grad_fn = property(lambda self: self._vals.grad_fn)

    @property
    def grad(self):
        """The gradient of the values, as a sparse tensor on the same indices (or None)."""
        g = self._vals.grad
        return None if g is None else _sparse(self._idx, g, self._size, self._coalesced)

    def requires_grad_(self, requires_grad=True):
        self._vals.requires_grad_(requires_grad)
        return self

    # -- structure ------------------------------------------------------------------------
    def _indices(self):
        return Tensor._make(self._idx)

    def _values(self):
        return self._vals

    def indices(self):
        """The (sparse_dim, nnz) indices of a coalesced tensor."""
        self._require_coalesced("indices")
        return Tensor._make(self._idx)

    def values(self):
        """The (nnz, *dense_dims) values of a coalesced tensor (gradients flow through)."""
        self._require_coalesced("values")
        return self._vals

    def _require_coalesced(self, what):
        if not self._coalesced:
            raise RuntimeError(f"Cannot get {what} on an uncoalesced tensor, please call "
                               f".coalesce() first (or use ._{what}() for the raw {what})")

    def is_coalesced(self):
        return self._coalesced

    def coalesce(self):
        """The same tensor with indices sorted and unique, repeated positions' values summed."""
        if self._coalesced:
            return self
        idx, sd = self._idx, self._idx.shape[0]
        if idx.shape[1] == 0:
            return _sparse(idx, self._vals, self._size, True)
        xp = array_module(idx)
        flat = xp.ravel_multi_index(tuple(idx), self._size[:sd])
        keys, inverse = xp.unique(flat, return_inverse=True)
        new_idx = xp.stack(xp.unravel_index(keys, self._size[:sd]))
        shape = (len(keys),) + tuple(self._vals.shape[1:])
        return _sparse(new_idx, IndexGrad.apply(self._vals, shape, inverse.reshape(-1)),
                       self._size, True)

    def to_dense(self):
        """The dense tensor (repeated positions summed); differentiable in the values."""
        return IndexGrad.apply(self._vals, self._size, tuple(self._idx))

    def to(self, *args, **kwargs):
        """`Tensor.to`'s arguments, applied to the values; the indices follow their device."""
        vals = self._vals.to(*args, **kwargs)
        if vals is self._vals:
            return self
        return _sparse(backend.to_device(self._idx, vals.device), vals, self._size,
                       self._coalesced)

    def __repr__(self):
        def nested(label, text):  # continuation lines aligned under the first
            return label + text.replace("\n", "\n" + " " * len(label))
        tail = [f"size={tuple(self._size)}", f"nnz={self._nnz()}", f"layout={sparse_coo!r}"]
        if self.grad_fn is not None:
            tail.append(f"grad_fn=<{self.grad_fn.name()}>")
        elif self.requires_grad:
            tail.append("requires_grad=True")
        return "\n".join([nested("tensor(indices=", tensor_repr(Tensor._make(self._idx))) + ",",
                          nested("       values=", tensor_repr(self._vals.detach())) + ",",
                          "       " + ", ".join(tail) + ")"])


def _sparse(idx, vals, size, coalesced):
    t = object.__new__(SparseCooTensor)
    t._idx, t._vals, t._size, t._coalesced = idx, vals, tuple(size), coalesced
    t._base = None  # never a view: ops that take it find no base to renew
    return t


def _host(arr):
    return backend.to_device(arr, backend.CPU).tolist()


def sparse_coo_tensor(indices, values, size=None, *, dtype=None, device=None,
                      requires_grad=False, is_coalesced=None):
    """A sparse COO tensor with `values[k]` (values: (nnz, *dense_dims)) at `indices[:, k]`
    (indices: (sparse_dim, nnz) integers). Without `size`, each sparse dim is one past its
    largest index. Repeated indices are kept (and summed by `coalesce()`/`to_dense()`).
    `requires_grad=True` makes it a leaf whose `.grad` is sparse on the same indices."""
    if not isinstance(values, Tensor):
        values = creation.tensor(values)
    if dtype is not None or device is not None:
        values = values.to(device=device, dtype=dtype)
    idx = indices._data if isinstance(indices, Tensor) else np.asarray(indices)
    if idx.dtype.kind not in "iu" or idx.ndim != 2:
        raise RuntimeError(f"sparse_coo_tensor: indices must be a 2-D integer tensor of shape "
                           f"(sparse_dim, nnz), got {idx.dtype} of shape {list(idx.shape)}")
    if values.ndim == 0 or values.shape[0] != idx.shape[1]:
        raise RuntimeError(f"sparse_coo_tensor: indices hold {idx.shape[1]} entries (nnz) but "
                           f"values of shape {list(values.shape)} hold "
                           f"{values.shape[0] if values.ndim else 'no'} along dim 0")
    idx = backend.to_device(idx.astype(np.int64, copy=False), values.device)
    sd, dense = idx.shape[0], tuple(values.shape[1:])
    lo, hi = (_host(idx.min(axis=1)), _host(idx.max(axis=1))) if idx.size else ([], [])
    for d, low in enumerate(lo):
        if low < 0:
            raise RuntimeError(f"sparse_coo_tensor: found negative index {low} for dim {d}")
    if size is None:
        size = tuple(h + 1 for h in hi) if hi else (0,) * sd
        size += dense
    size = tuple(int(n) for n in size)
    if len(size) != sd + len(dense) or size[sd:] != dense:
        raise RuntimeError(f"sparse_coo_tensor: size {list(size)} does not match {sd} sparse "
                           f"dims (indices) followed by the values' dense dims {list(dense)}")
    for d, high in enumerate(hi):
        if high >= size[d]:
            raise RuntimeError(f"sparse_coo_tensor: size is inconsistent with indices: for dim "
                               f"{d}, size is {size[d]} but found index {high}")
    if requires_grad:
        values = values.detach().requires_grad_(True)
    return _sparse(idx, values, size, bool(is_coalesced))


def to_sparse(input, sparse_dim=None):
    """`Tensor.to_sparse`: a coalesced sparse COO tensor of the nonzero elements (or, with
    `sparse_dim` < ndim, of the nonzero slices over the first `sparse_dim` dims)."""
    if isinstance(input, SparseCooTensor):
        return input
    x = input._data
    sd = x.ndim if sparse_dim is None else int(sparse_dim)
    if not 1 <= sd <= x.ndim:
        raise RuntimeError(f"to_sparse: sparse_dim must be in [1, {x.ndim}] for a tensor of "
                           f"shape {list(x.shape)}, got {sparse_dim}")
    nonzero = (x != 0).any(axis=tuple(range(sd, x.ndim)))
    key = array_module(x).nonzero(nonzero)
    idx = array_module(x).stack(key).astype(np.int64, copy=False)
    return _sparse(idx, Index.apply(input, key), x.shape, True)


def to_dense(input):
    """`Tensor.to_dense`: the tensor itself for a dense tensor."""
    return input


def _sparse_mm_samples():
    s = SampleMaker("sparse_mm")
    idx = [[0, 2, 1, 2, 0], [1, 0, 3, 0, 1]]  # (2, 0) and (0, 1) twice: uncoalesced

    def mm(v, d):
        return sparse_mm(sparse_coo_tensor(idx, v, (3, 4)), d)
    fixed_v, fixed_d = s(5, grad=False), s(4, 2, grad=False)
    return [Sample(mm, (s(5), s(4, 2))),
            Sample(lambda d: sparse_coo_tensor(idx, fixed_v, (3, 4)) @ d, (s(4, 3),)),
            Sample(lambda v: mm(v, fixed_d), (s(5),)),
            Sample(lambda v, d: sparse_mm(sparse_coo_tensor(idx, v).coalesce(), d),
                   (s(5), s(4, 2)))]


@register("sparse_mm", _sparse_mm_samples)
class SparseMM(Op):
    """out[rows[k]] += values[k] * dense[cols[k]]: a sparse (n_rows, m) @ dense (m, p)."""

    saves = ("inputs", "rows", "cols")

    def forward(self, values, dense, rows, cols, n_rows):
        xp = array_module(dense)
        self.rows, self.cols = rows, cols
        out = xp.zeros((n_rows, dense.shape[1]), dtype=dense.dtype)
        backend.scatter_add(xp, out, rows, values[:, None] * dense[cols])
        return out

    def backward(self, g):
        values, dense = self.inputs[:2]
        nv, nd = self.needs_input_grad[:2]
        gv = (Index.apply(g, self.rows) * Index.apply(dense, self.cols)).sum(1) if nv else None
        gd = SparseMM.apply(values, g, self.cols, self.rows, dense.shape[0]) if nd else None
        return gv, gd, None, None, None


def sparse_mm(mat1, mat2):
    """sparse (n, m) @ dense (m, p) -> dense (n, p), as `dt.sparse.mm`; gradients flow to
    `mat2` and to `mat1`'s values."""
    if isinstance(mat2, SparseCooTensor):
        raise RuntimeError("mm: sparse @ sparse is not supported by dtrain; call .to_dense() on "
                           "the second operand")
    if mat1.sparse_dim() != 2 or mat1.dense_dim() != 0 or mat2.ndim != 2:
        raise RuntimeError(f"mm: expected a sparse matrix (sparse_dim 2, dense_dim 0) and a "
                           f"dense 2-D matrix, got a sparse tensor of size {list(mat1.shape)} "
                           f"(sparse_dim {mat1.sparse_dim()}) and a dense tensor of shape "
                           f"{list(mat2.shape)}")
    if mat1.shape[1] != mat2.shape[0]:
        raise RuntimeError(f"mm: shapes {tuple(mat1.shape)} (sparse) and {tuple(mat2.shape)} "
                           f"cannot be multiplied ({mat1.shape[1]} != {mat2.shape[0]})")
    if mat1.dtype != mat2.dtype:
        raise RuntimeError(f"mm: the sparse values are {mat1.dtype} but the dense matrix is "
                           f"{mat2.dtype}; convert one with .to(dtype)")
    rows, cols = mat1._idx
    return SparseMM.apply(mat1._vals, mat2, rows, cols, mat1.shape[0])


def sparse_sum(input, dim=None, dtype=None):
    """`dt.sparse.sum`: the sum of all elements (a 0-d dense tensor), or over `dim`: a
    coalesced sparse tensor while some sparse dims remain, else a dense one."""
    if not isinstance(input, SparseCooTensor):
        raise RuntimeError(f"sparse.sum: expected a sparse COO tensor, got a {input.layout!r} "
                           f"one; use dt.sum for dense tensors")
    vals = input._vals if dtype is None else input._vals.to(dtype)
    if dim is None:
        return vals.sum()
    dims, sd = norm_dims(dim, input.ndim, "sparse.sum"), input.sparse_dim()
    dense_axes = tuple(d - sd + 1 for d in dims if d >= sd)
    if dense_axes:
        vals = vals.sum(dense_axes)
    kept = [d for d in range(sd) if d not in dims]
    if not kept:
        return vals.sum(0)
    size = [n for d, n in enumerate(input._size) if d not in dims]
    return _sparse(input._idx[kept], vals, size, False).coalesce()


def _sparse_coo_samples():
    s = SampleMaker("sparse_coo")
    idx = [[0, 2, 1, 2, 0], [1, 0, 3, 0, 1]]
    mask = Tensor._make(s.rng.random((3, 4)) > 0.5)

    def sp(v, size=(3, 4)):
        return sparse_coo_tensor(idx, v, size)
    return [Sample(lambda v: sp(v).to_dense(), (s(5),)),
            Sample(lambda v: sp(v, (3, 4, 2)).to_dense(), (s(5, 2),)),  # hybrid: dense dim
            Sample(lambda v: sp(v).coalesce().values(), (s(5),)),
            Sample(lambda x: (x * mask).to_sparse().values(), (s(3, 4),)),
            Sample(lambda x: x.to_sparse(1).to_dense(), (s(3, 2),)),
            Sample(lambda v: sparse_sum(sp(v), 1).to_dense(), (s(5),)),
            Sample(lambda v: sparse_sum(sp(v, (3, 4, 2)), (0, 2)).to_dense(), (s(5, 2),)),
            Sample(lambda v: sparse_sum(sp(v)), (s(5),))]


register_composite("sparse_coo", _sparse_coo_samples)
