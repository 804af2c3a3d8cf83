"""Matrix products with NumPy/PyTorch semantics (1-D operands, batch broadcasting), matrix
structure (`diag`, `tril`, `triu`) and norms (`norm`, and `dt.linalg`'s vector and matrix
norms)."""
import math

from dtrain.autograd.autocast import autocast_args
from dtrain.autograd.node import Op
from dtrain.autograd.ops._util import float_dtype_of
from dtrain.autograd.ops.index import IndexPut
from dtrain.autograd.ops.reduce import _Reduction, amax, amin
from dtrain.autograd.ops.sparse import SparseCooTensor, sparse_mm
from dtrain.autograd.registry import Sample, SampleMaker, register, register_composite
from dtrain.core.backend import array_module
from dtrain.core.tensor import Tensor


def _matmul_samples():
    s = SampleMaker("matmul")
    mm = lambda a, b: a @ b  # noqa: E731
    return [Sample(mm, (s(3, 4), s(4, 2))),
            Sample(mm, (s(2, 3, 4), s(4, 5))),          # batched @ matrix
            Sample(mm, (s(2, 1, 3, 4), s(3, 4, 2))),    # batch broadcasting
            Sample(mm, (s(4), s(4, 3))),                # vector @ matrix
            Sample(mm, (s(2, 3, 4), s(4))),             # batched matrix @ vector
            Sample(mm, (s(4), s(4)))]                   # dot


@register("matmul", _matmul_samples)
class Matmul(Op):
    saves = ("inputs",)

    def forward(self, a, b, out=None):
        if a.ndim == 0 or b.ndim == 0:
            raise RuntimeError(f"both arguments to matmul need to be at least 1D, but they are "
                               f"{a.ndim}D and {b.ndim}D")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise RuntimeError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be "
                               f"multiplied ({a.shape[-1]} != {b.shape[-2 if b.ndim > 1 else 0]})")
        return array_module(a).matmul(a, b, out=out)

    def backward(self, g):
        a, b = self.inputs
        na, nb = self.needs_input_grad
        # Treat 1-D operands as matrices (a row, b a column) and g accordingly.
        a2 = a.unsqueeze(0) if a._data.ndim == 1 else a
        b2 = b.unsqueeze(-1) if b._data.ndim == 1 else b
        if b._data.ndim == 1:
            g = g.unsqueeze(-1)
        if a._data.ndim == 1:
            g = g.unsqueeze(-2)
        ga = (g @ b2.mT).sum_to_size(a2._data.shape).reshape(a._data.shape) if na else None
        gb = (a2.mT @ g).sum_to_size(b2._data.shape).reshape(b._data.shape) if nb else None
        return ga, gb


def matmul(input, other):
    """Matrix product with torch's rules: (n) @ (n), (b.., n, m) @ (b.., m, p) broadcast over batch
    dims."""
    if isinstance(input, SparseCooTensor):
        return sparse_mm(input, other)
    return Matmul.apply(*autocast_args(input, other))


def mm(input, mat2):
    """input (n, m) @ mat2 (m, p); a sparse COO `input` gives `dt.sparse.mm`'s product."""
    if isinstance(input, SparseCooTensor):
        return sparse_mm(input, mat2)
    if input._data.ndim != 2 or mat2._data.ndim != 2:
        raise RuntimeError(f"mm: expected 2-D tensors, got {input._data.ndim}-D and "
                           f"{mat2._data.ndim}-D")
    return Matmul.apply(*autocast_args(input, mat2))


def bmm(input, mat2):
    """Batched product: (b, n, m) @ (b, m, p) -> (b, n, p)."""
    if input._data.ndim != 3 or mat2._data.ndim != 3:
        raise RuntimeError(f"bmm: expected 3-D tensors, got {input._data.ndim}-D and "
                           f"{mat2._data.ndim}-D")
    if input._data.shape[0] != mat2._data.shape[0]:
        raise RuntimeError(f"bmm: batch sizes differ: {input._data.shape[0]} and "
                           f"{mat2._data.shape[0]}")
    return Matmul.apply(*autocast_args(input, mat2))


def dot(input, other):
    """Inner product of two 1-D tensors of the same length: a 0-d tensor."""
    if input._data.ndim != 1 or other._data.ndim != 1:
        raise RuntimeError("1D tensors expected, but got "
                           f"{input._data.ndim}D and {other._data.ndim}D tensors")
    return Matmul.apply(input, other)


def outer(input, vec2):
    """Outer product: (n), (m) -> (n, m)."""
    return input.unsqueeze(1) * vec2


# -- matrix structure --------------------------------------------------------------------------
def _diag_samples():
    s = SampleMaker("diag")
    return [Sample(lambda v: v.diag(), (s(3),)), Sample(lambda v: v.diag(1), (s(3),)),
            Sample(lambda v: v.diag(-2), (s(2),)), Sample(lambda x: x.diag(), (s(3, 3),)),
            Sample(lambda x: x.diag(1), (s(3, 4),)), Sample(lambda x: x.diag(-1), (s(4, 2),))]


@register("diag", _diag_samples)
class Diag(Op):
    """1-D input: the square matrix with it on diagonal `diagonal`; 2-D: that diagonal."""

    def forward(self, x, diagonal):
        xp = array_module(x)
        self.in_shape, self.diagonal = x.shape, diagonal
        if x.ndim == 1:
            return xp.diag(x, diagonal)
        return xp.diagonal(x, diagonal).copy()

    def backward(self, g):
        if len(self.in_shape) == 1:
            return Diag.apply(g, self.diagonal), None
        # the diagonal's gradient written into zeros of the input's shape
        xp = array_module(g._data)
        i = xp.arange(g._data.shape[0])
        rows, cols = (i, i + self.diagonal) if self.diagonal >= 0 else (i - self.diagonal, i)
        zeros = Tensor._make(xp.zeros(self.in_shape, g._data.dtype))
        return IndexPut.apply(zeros, g, (rows, cols)), None


def diag(input, diagonal=0):
    """A 1-D input as the diagonal `diagonal` of a square matrix (0: main, > 0 above, < 0
    below); a 2-D input's diagonal `diagonal` as a 1-D tensor."""
    if input._data.ndim not in (1, 2):
        raise RuntimeError(f"diag(): expected a 1-D or 2-D tensor, got {input._data.ndim}-D "
                           f"(shape {list(input._data.shape)}); use diagonal() for batches")
    return Diag.apply(input, int(diagonal))


def _triangle_samples(name):
    def samples():
        s = SampleMaker(name)
        f = getattr(Tensor, name)
        return [Sample(lambda x: f(x), (s(3, 3),)), Sample(lambda x: f(x, 1), (s(3, 4),)),
                Sample(lambda x: f(x, -1), (s(2, 4, 3),))]
    return samples


class _Triangle(Op):
    def _run(self, x, diagonal):
        self.diagonal = diagonal
        return getattr(array_module(x), self.op_name)(x, diagonal)

    def backward(self, g):
        return type(self).apply(g, self.diagonal), None


@register("tril", _triangle_samples("tril"))
class Tril(_Triangle):
    """The lower triangle (on and below diagonal `diagonal`) of the last two dims."""

    def forward(self, x, diagonal):
        return self._run(x, diagonal)


@register("triu", _triangle_samples("triu"))
class Triu(_Triangle):
    """The upper triangle (on and above diagonal `diagonal`) of the last two dims."""

    def forward(self, x, diagonal):
        return self._run(x, diagonal)


def _triangle(cls):
    def fn(input, diagonal=0):
        if input._data.ndim < 2:
            raise RuntimeError(f"{cls.op_name}: input tensor must have at least 2 dimensions, "
                               f"got shape {list(input._data.shape)}")
        return cls.apply(input, int(diagonal))
    fn.__name__ = cls.op_name
    fn.__doc__ = cls.__doc__ + " Other elements are zero."
    return fn


tril = _triangle(Tril)
triu = _triangle(Triu)


# -- norms ------------------------------------------------------------------------------------
def _vector_norm_samples():
    s = SampleMaker("vector_norm")

    def vn(ord, dim=None, keepdim=False):
        return lambda x: vector_norm(x, ord, dim, keepdim)
    return [Sample(vn(2), (s(3, 4),)), Sample(vn(2, 1, True), (s(3, 4),)),
            Sample(vn(1, 0), (s.away(3, 4),)), Sample(vn(math.inf, -1), (s.distinct(3, 4),)),
            Sample(vn(-math.inf), (s.distinct(3, 4),)), Sample(vn(0, 1), (s.away(2, 3),)),
            Sample(vn(3, (0, 2)), (s.away(2, 3, 2),)), Sample(vn(0.5), (s.away(4),))]


@register("vector_norm", _vector_norm_samples)
class VectorNorm(_Reduction):
    """The `ord` norm over the reduced axes."""

    # NOTE: one op for every order rather than a composition of abs, pow and sum: the
    # composition's gradient at a zero norm is 0 * inf = nan; torch's (and this op's) is the
    # subgradient 0.

    saves = ("inputs", "output")

    def forward(self, x, ord, dim, keepdim):
        axes = self._axes(x, dim, "linalg.vector_norm")
        xp = array_module(x)
        self.ord, self.keepdim = ord, keepdim
        if ord == 0:
            return (x != 0).sum(axis=axes, keepdims=keepdim).astype(x.dtype)
        if ord == 2:
            return xp.sqrt(xp.sum(x * x, axis=axes, keepdims=keepdim))
        a = xp.abs(x)
        if math.isinf(ord):
            return (xp.max if ord > 0 else xp.min)(a, axis=axes, keepdims=keepdim)
        if ord == 1:
            return xp.sum(a, axis=axes, keepdims=keepdim)
        return xp.sum(a ** ord, axis=axes, keepdims=keepdim) ** (1 / ord)

    def backward(self, g):
        x, p = self.inputs[0], self.ord
        g = self._expand_grad(g, self.keepdim)
        n = self._expand_grad(self.output, self.keepdim)
        if p == 0:
            return Tensor._make(array_module(x._data).zeros_like(x._data)), None, None, None
        if math.isinf(p):  # shared evenly among the elements at the extreme, as amax
            mask = (x.abs() == n).to(x.dtype)
            weights = mask / mask.sum(self.axes, keepdim=True)
            return g * x.sign() * weights, None, None, None
        if p == 1:
            return g * x.sign(), None, None, None
        safe = n.masked_fill(n == 0, 1.0)  # where the norm is 0, so is x: the gradient is 0
        if p == 2:
            return g * x / safe, None, None, None
        return g * x.sign() * x.abs() ** (p - 1) / safe ** (p - 1), None, None, None


def _dims(dim):
    return dim if dim is None or isinstance(dim, int) else tuple(dim)


def vector_norm(x, ord=2, dim=None, keepdim=False, *, dtype=None):
    """The `ord` norm of `x` over `dim` (default: all dims, as one vector): `inf`/`-inf`
    max/min |x|, 0 the number of nonzeros, other p (sum |x|^p)^(1/p)."""
    if dtype is not None:
        x = x.to(dtype)
    float_dtype_of(x, "linalg.vector_norm")
    if isinstance(ord, (str, bool)):
        raise RuntimeError(f"linalg.vector_norm: ord must be a number, got {ord!r} (use "
                           f"matrix_norm for 'fro' and 'nuc')")
    return VectorNorm.apply(x, float(ord), _dims(dim), keepdim)


def _matrix_norm_samples():
    s = SampleMaker("matrix_norm")
    return [Sample(lambda a, o=ord: matrix_norm(a, o), (s.distinct(3, 4),))
            for ord in ("fro", 1, -1, math.inf, -math.inf)] + [
            Sample(lambda a: matrix_norm(a, 1, (0, 2), keepdim=True), (s.distinct(3, 2, 4),))]


def matrix_norm(A, ord="fro", dim=(-2, -1), keepdim=False, *, dtype=None):
    """The `ord` norm of the matrices over the two dims `dim`: 'fro' (Frobenius), 1/-1 the
    max/min column sum of |A|, inf/-inf the max/min row sum. 'nuc' and 2/-2 need singular
    values, which dtrain does not compute yet."""
    ndim = A._data.ndim
    dims = tuple(dim)
    if ndim < 2 or len(dims) != 2:
        raise RuntimeError(f"linalg.matrix_norm: expected a tensor of 2 or more dims and two "
                           f"dims to reduce, got shape {list(A._data.shape)} and dim={dim}")
    if ord == "fro":
        return vector_norm(A, 2, dims, keepdim, dtype=dtype)
    if ord in ("nuc", 2, -2):
        raise NotImplementedError(f"linalg.matrix_norm: ord={ord!r} needs singular values "
                                  f"(SVD), which dtrain does not implement; supported: 'fro', "
                                  f"1, -1, inf, -inf")
    if ord not in (1, -1, math.inf, -math.inf):
        raise RuntimeError(f"linalg.matrix_norm: Order {ord!r} not supported")
    rows, cols = (d % ndim for d in dims)
    summed, over = (rows, cols) if abs(ord) == 1 else (cols, rows)  # 1: column sums
    out = (amax if ord > 0 else amin)(vector_norm(A, 1, summed, True, dtype=dtype), over, True)
    if keepdim:
        return out
    return out.reshape([n for i, n in enumerate(out._data.shape) if i not in (rows, cols)])


register_composite("matrix_norm", _matrix_norm_samples)


def linalg_norm(A, ord=None, dim=None, keepdim=False, *, dtype=None):
    """`dt.linalg.norm`: a vector norm when `dim` is an int (or `A` is 1-D), a matrix norm
    when `dim` is a pair (or `A` is 2-D); with neither `ord` nor `dim`, the 2-norm of all
    elements."""
    if dim is not None:
        dims = (dim,) if isinstance(dim, int) else tuple(dim)
        if len(dims) == 1:
            return vector_norm(A, 2 if ord is None else ord, dims, keepdim, dtype=dtype)
        if len(dims) == 2:
            return matrix_norm(A, "fro" if ord is None else ord, dims, keepdim, dtype=dtype)
        raise RuntimeError(f"linalg.norm: If dim is specified, it must be of length 1 or 2. "
                           f"Got {list(dims)}")
    if ord is None:
        return vector_norm(A, 2, None, keepdim, dtype=dtype)
    if A._data.ndim == 1:
        return vector_norm(A, ord, None, keepdim, dtype=dtype)
    if A._data.ndim == 2:
        return matrix_norm(A, ord, (-2, -1), keepdim, dtype=dtype)
    raise RuntimeError(f"linalg.norm: If dim is not specified but ord is, the input must be 1D "
                       f"or 2D. Got {A._data.ndim}D.")


def norm(input, p="fro", dim=None, keepdim=False, dtype=None):
    """`dt.norm` / `Tensor.norm`: the `p` norm over `dim` (default: all elements), as one
    vector: p 'fro' is the 2-norm, a number as `linalg.vector_norm`; 'nuc' as matrix_norm."""
    if p == "nuc":
        return matrix_norm(input, p, (-2, -1) if dim is None else dim, keepdim, dtype=dtype)
    if isinstance(p, str) and p != "fro":
        raise RuntimeError(f"norm: p must be a number, 'fro' or 'nuc', got {p!r}")
    return vector_norm(input, 2 if p == "fro" else p, dim, keepdim, dtype=dtype)
