"""Matrix functions over the last two dims (batched): inverse, determinants, Cholesky, SVD,
pseudo-inverse and matrix powers, with PyTorch's names (`dt.inverse`, `dt.det`, ... and
`dt.linalg.inv`, ...).
Backwards are written with these ops and matmul, so higher orders record."""
from collections import namedtuple

from dtrain.autograd.grad_mode import state
from dtrain.autograd.node import Op
from dtrain.autograd.ops.linalg import matmul, tril
from dtrain.autograd.ops.pointwise import log, where
from dtrain.autograd.registry import Sample, SampleMaker, register, register_composite
from dtrain.core.backend import array_module
from dtrain.core.tensor import Tensor

SignLogAbsDet = namedtuple("SignLogAbsDet", ["sign", "logabsdet"])
SVD = namedtuple("SVD", ["U", "S", "Vh"])  # torch.linalg.svd
SVDV = namedtuple("SVD", ["U", "S", "V"])  # torch.svd


def _square(A, op):
    """Check `A` is a float batch of square matrices (PyTorch's messages)."""
    a = A._data
    if a.ndim < 2:
        raise RuntimeError(f"{op}: The input tensor A must have at least 2 dimensions.")
    if a.shape[-1] != a.shape[-2]:
        raise RuntimeError(f"{op}: A must be batches of square matrices, but they are "
                           f"{a.shape[-2]} by {a.shape[-1]} matrices")
    if a.dtype.kind != "f":
        raise RuntimeError(f"{op}: Expected a floating point tensor as input. Got {A.dtype}")


def _lapack(op, fn, what):
    """Run `fn()`, turning the array module's LinAlgError into PyTorch's RuntimeError."""
    try:
        return fn()
    except Exception as err:  # numpy.linalg.LinAlgError / cupy's, without importing either
        if type(err).__name__ != "LinAlgError":
            raise
        raise RuntimeError(f"{op}: {what} ({err})") from None


def _well_conditioned(s, *batch, n=3):
    """A float64 batch of n x n matrices near 2 * identity, far from singular."""
    return s(*batch, n, n, low=-0.4, high=0.4)


def _inverse_samples():
    s = SampleMaker("inverse")
    return [Sample(lambda a: inverse(a + 2 * _eye_like(a)), (_well_conditioned(s),)),
            Sample(lambda a: inverse(a + 2 * _eye_like(a)), (_well_conditioned(s, 2),))]


def _eye_like(a):
    xp = array_module(a._data)
    return Tensor._make(xp.eye(a._data.shape[-1], dtype=a._data.dtype))


@register("inverse", _inverse_samples)
class Inverse(Op):
    """A^-1; d(A^-1) = -A^-1 dA A^-1, so gA = -A^-T g A^-T."""

    saves = ("output",)

    def forward(self, a):
        xp = array_module(a)
        return _lapack("linalg.inv", lambda: xp.linalg.inv(a),
                       "the input matrix is singular, so it has no inverse")

    def backward(self, g):
        inv_t = self.output.mT
        return (-matmul(matmul(inv_t, g), inv_t),)


def inverse(input):
    """The inverse of each square matrix in the batch `(*, n, n)`."""
    _square(input, "linalg.inv")
    return Inverse.apply(input)


def _det_samples():
    s = SampleMaker("det")
    return [Sample(det, (s(3, 3),)), Sample(det, (s(2, 4, 4),))]


@register("det", _det_samples)
class Det(Op):
    """det(A); d det = det * tr(A^-1 dA), so gA = g det A^-T (needs A invertible)."""

    saves = ("inputs", "output")

    def forward(self, a):
        return array_module(a).linalg.det(a)

    def backward(self, g):
        scale = (g * self.output).unsqueeze(-1).unsqueeze(-1)
        return (scale * inverse(self.inputs[0]).mT,)


def _slogdet_samples():
    s = SampleMaker("slogdet")
    return [Sample(lambda a: slogdet(a).logabsdet, (s(2, 3, 3),)),
            Sample(lambda a: logdet(a + 2 * _eye_like(a)), (_well_conditioned(s),))]


@register("slogdet", _slogdet_samples)
class Slogdet(Op):
    """(sign(det A), log|det A|); only the second has a gradient: g A^-T."""

    n_outputs = 2
    saves = ("inputs",)

    def forward(self, a):
        return tuple(array_module(a).linalg.slogdet(a))

    def backward(self, g_sign, g):
        return (g.unsqueeze(-1).unsqueeze(-1) * inverse(self.inputs[0]).mT,)


def det(input):
    """The determinant of each square matrix in the batch `(*, n, n)`."""
    _square(input, "linalg.det")
    return Det.apply(input)


def slogdet(input):
    """(sign, logabsdet) of the determinants, a named tuple; only logabsdet has a gradient."""
    _square(input, "linalg.slogdet")
    sgn, logabs = Slogdet.apply(input)
    return SignLogAbsDet(sgn.detach(), logabs)


def logdet(input):
    """log(det A): NaN where det < 0, -inf where det = 0."""
    sgn, logabs = slogdet(input)
    return logabs + log(sgn)  # log(1) = 0, log(-1) = NaN, log(0) = -inf


def _cholesky_samples():
    s = SampleMaker("cholesky")

    def spd(x):  # symmetric positive definite, whatever x
        return matmul(x, x.mT) + _eye_like(x)
    return [Sample(lambda x: cholesky(spd(x)), (s(3, 3),)),
            Sample(lambda x: cholesky(spd(x), upper=True), (s(2, 4, 4),))]


@register("cholesky", _cholesky_samples)
class Cholesky(Op):
    """The lower factor L of A = L L^T. Backward as PyTorch's cholesky_backward:
    Phi = tril(L^T gL) with its diagonal halved, S = L^-T Phi L^-1, gA = (S + S^T) / 2."""

    saves = ("output",)

    def forward(self, a):
        xp = array_module(a)
        return _lapack("linalg.cholesky", lambda: xp.linalg.cholesky(a),
                       "The factorization could not be completed because the input is not "
                       "positive-definite")

    def backward(self, g):
        L = self.output
        phi = tril(matmul(L.mT, g))
        phi = phi - phi * _eye_like(L) * 0.5
        L_inv = inverse(L)
        S = matmul(matmul(L_inv.mT, phi), L_inv)
        return ((S + S.mT) * 0.5,)


def cholesky(input, upper=False):
    """The Cholesky factor of each symmetric positive-definite matrix: lower L with
    A = L L^T, or upper U = L^T with A = U^T U."""
    _square(input, "linalg.cholesky")
    L = Cholesky.apply(input)
    return L.mT if upper else L


def matrix_power(input, n):
    """A^n for integer n by repeated squaring (n < 0: of the inverse; n = 0: identity)."""
    _square(input, "linalg.matrix_power")
    if not isinstance(n, int):
        raise TypeError(f"matrix_power(): argument 'n' must be int, not {type(n).__name__}")
    if n == 0:
        return _eye_like(input).expand(input._data.shape).clone()
    base, result = (inverse(input) if n < 0 else input), None
    n = abs(n)
    while n:
        if n & 1:
            result = base if result is None else matmul(result, base)
        n >>= 1
        if n:
            base = matmul(base, base)
    return result


def _matrix_power_samples():
    s = SampleMaker("matrix_power")
    return [Sample(lambda a: matrix_power(a, 3), (s(3, 3),)),
            Sample(lambda a: matrix_power(a, 6), (s(2, 3, 3),)),
            Sample(lambda a: matrix_power(a + 2 * _eye_like(a), -2), (_well_conditioned(s),))]


register_composite("matrix_power", _matrix_power_samples)


def _svd_samples():
    s = SampleMaker("svd")

    def polar(a):  # U Vh and the leading rank-1 term: unchanged by the signs SVD picks
        U, _, Vh = linalg_svd(a, full_matrices=False)
        return U @ Vh, U[..., :, :1] @ Vh[..., :1, :]
    return [Sample(svdvals, (s(4, 3),)), Sample(polar, (s(4, 3),)), Sample(polar, (s(2, 3, 5),)),
            Sample(lambda a: linalg_svd(a).S, (s(3, 3),)),
            Sample(lambda a: (lambda r: r.U @ r.V.mT)(svd(a)), (s(3, 3),)),
            Sample(pinverse, (s(3, 4),)), Sample(pinverse, (s(2, 4, 2),))]


@register("svd", _svd_samples)
class Svd(Op):
    """A = U diag(S) Vh, singular values descending. Backward (real case) as in PyTorch's
    svd_backward: with F_ij = 1 / (s_j^2 - s_i^2) off the diagonal,
    gA = U [diag(gS) + (F o (U^T gU - gU^T U)) S + S (F o (V^T gV - gV^T V))] Vh
         + (I - U U^T) gU S^-1 Vh + U S^-1 gV^T (I - V V^T).
    NOTE: under create_graph the factors are recomputed by this op, so that they are
    functions of A and higher orders record; plain backward reuses the saved arrays."""

    saves = ("inputs", "usv")
    n_outputs = 3

    def forward(self, a, full_matrices):
        xp = array_module(a)
        self.full = full_matrices and a.shape[-1] != a.shape[-2]
        self.usv = xp.linalg.svd(a, full_matrices=full_matrices)
        return self.usv

    def backward(self, gU, gS, gVh):
        A = self.inputs[0]
        if self.full and (gU is not None or gVh is not None):
            raise RuntimeError("linalg.svd: the derivative of U or Vh with full_matrices=True "
                               "is only implemented for square matrices; use "
                               "full_matrices=False")
        if state.enabled:
            U, S, Vh = Svd.apply(A, False)
        else:
            U, S, Vh = (Tensor._make(x) for x in self.usv)
        eye = _eye_like(S)
        inner = 0.0 if gS is None else gS.unsqueeze(-1) * eye
        s2 = (S * S).unsqueeze(-2)
        F = (s2 - s2.mT + eye).reciprocal() * (1 - eye)
        s_row, s_inv = S.unsqueeze(-2), S.reciprocal().unsqueeze(-2)
        gA = 0.0
        if gU is not None:
            UtgU = matmul(U.mT, gU)
            inner = inner + F * (UtgU - UtgU.mT) * s_row
            if A._data.shape[-2] > S._data.shape[-1]:  # the part of gU outside span(U)
                gA = matmul((gU - matmul(U, UtgU)) * s_inv, Vh)
        if gVh is not None:
            VtgV = matmul(Vh, gVh.mT)
            inner = inner + s_row.mT * (F * (VtgV - VtgV.mT))
            if A._data.shape[-1] > S._data.shape[-1]:
                gA = gA + matmul(U, s_inv.mT * (gVh - matmul(VtgV.mT, Vh)))
        return (gA + matmul(matmul(U, inner), Vh), None)


def linalg_svd(A, full_matrices=True):
    """torch.linalg.svd: (U, S, Vh) with A = U diag(S) Vh, S descending."""
    if A._data.ndim < 2:
        raise RuntimeError("linalg.svd: The input tensor A must have at least 2 dimensions.")
    if A._data.dtype.kind != "f":
        raise RuntimeError(f"linalg.svd: Expected a floating point tensor as input. Got "
                           f"{A.dtype}")
    return SVD(*Svd.apply(A, bool(full_matrices)))


def svdvals(A):
    """The singular values of A, descending."""
    return linalg_svd(A, full_matrices=False).S


def svd(input, some=True, compute_uv=True):
    """torch.svd: (U, S, V) with input = U diag(S) V^T (V, not Vh); some=False gives full
    U and V; compute_uv=False gives zero-filled U and V, as torch."""
    U, S, Vh = linalg_svd(input, full_matrices=not some)
    if not compute_uv:
        U, Vh = U.detach() * 0, Vh.detach() * 0
    return SVDV(U, S, Vh.mT)


def _pinv(A, atol, rtol):
    """The pseudo-inverse V diag(1/S) U^T, dropping singular values at or below
    max(atol, rtol * largest)."""
    U, S, Vh = linalg_svd(A, full_matrices=False)
    cutoff = S.detach().amax(-1, keepdim=True) * rtol
    if atol is not None:
        cutoff = cutoff.clamp(min=atol)
    keep = S > cutoff
    s_inv = where(keep, S, 1.0).reciprocal() * keep
    return matmul(Vh.mT * s_inv.unsqueeze(-2), U.mT)


def pinverse(input, rcond=1e-15):
    """torch.pinverse: the Moore-Penrose pseudo-inverse (singular values at or below
    rcond * the largest count as zero)."""
    return _pinv(input, None, rcond)


def pinv(A, *, atol=None, rtol=None, hermitian=False):
    """torch.linalg.pinv; rtol defaults to eps * max(m, n) when atol is not given (else 0)."""
    if rtol is None:
        xp = array_module(A._data)
        rtol = 0.0 if atol is not None else float(xp.finfo(A._data.dtype).eps) * max(
            A._data.shape[-2:])
    return _pinv(A, atol, rtol)
