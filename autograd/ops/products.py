"""Products: einsum (a primitive whose gradients are einsums too) and what composes from it
or from matmul (tensordot, inner, kron, mv, the add-scaled products addmm/addmv/baddbmm/
addbmm), pointwise blends (addcmul, addcdiv, lerp), cross products and distances."""
from dtrain.autograd.node import Op
from dtrain.autograd.ops._util import norm_dim
from dtrain.autograd.ops.linalg import matmul, vector_norm
from dtrain.autograd.ops.rearrange import _broadcast_shape
from dtrain.autograd.ops.shape import expand
from dtrain.autograd.registry import Sample, SampleMaker, register, register_composite
from dtrain.core.backend import array_module
from dtrain.core.tensor import Tensor

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _einsum_samples():
    s = SampleMaker("einsum")
    return [Sample(lambda a, b: einsum("ij,jk->ik", a, b), (s(2, 3), s(3, 4))),
            Sample(lambda a, b: einsum("bij,bkj->bik", a, b), (s(2, 3, 2), s(2, 4, 2))),
            Sample(lambda a: einsum("ii->i", a), (s(3, 3),)),
            Sample(lambda a: einsum("iji", a), (s(3, 2, 3),)),
            Sample(lambda a, b: einsum("i,j", a, b), (s(3), s(2))),
            Sample(lambda a, b: einsum("...ij,j->...i", a, b), (s(2, 1, 3, 2), s(2))),
            Sample(lambda a, b, c: einsum("ij,jk,k->i", a, b, c), (s(2, 3), s(3, 2), s(2))),
            Sample(lambda a, b: einsum("ij,ij->", a, b), (s(3, 1), s(3, 4)))]


@register("einsum", _einsum_samples)
class Einsum(Op):
    """`einsum(subs[0],...,subs[-1] -> to)` on operands whose shared letters have equal
    sizes (the public `einsum` broadcasts beforehand)."""

    saves = ("inputs",)

    def forward(self, *arrays, subs, to):
        self.subs, self.out = subs, to
        return array_module(arrays[0]).einsum(f"{','.join(subs)}->{to}", *arrays,
                                              optimize=len(arrays) > 1)

    def backward(self, g):
        ops, grads = self.inputs, []
        for i, need in enumerate(self.needs_input_grad):
            grads.append(self._operand_grad(g, ops, i) if need else None)
        return tuple(grads)

    def _operand_grad(self, g, ops, i):
        """One einsum of `g` with the other operands; a letter that operand i repeats is
        spread over its diagonal by an identity, one that only it has is summed by a ones
        vector (its gradient is constant along that letter)."""
        xp = array_module(g._data)
        target, fresh = self.subs[i], iter(c for c in _LETTERS if c not in
                                           "".join(self.subs) + self.out)
        others = [(s, t) for j, (s, t) in enumerate(zip(self.subs, ops)) if j != i]
        have = set(self.out + "".join(s for s, _ in others))
        shape = ops[i]._data.shape
        dt = g._data.dtype
        subs, args, letters = [self.out] + [s for s, _ in others], [g] + [t for _, t in others], ""
        for c, n in zip(target, shape):
            if c in letters:  # a repeat: a fresh letter tied to c by an identity
                f = next(fresh)
                subs.append(c + f)
                args.append(Tensor._make(xp.eye(n, dtype=dt)))
                letters += f
                continue
            if c not in have:
                subs.append(c)
                args.append(Tensor._make(xp.ones(n, dtype=dt)))
                have.add(c)
            letters += c
        return Einsum.apply(*args, subs=tuple(subs), to=letters)


def _parse_einsum(equation, operands):
    """The operands' subscripts and the output's, with '...' spelled out in fresh letters."""
    eq = equation.replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    subs = lhs.split(",")
    if len(subs) != len(operands):
        more = "more" if len(operands) > len(subs) else "fewer"
        raise RuntimeError(f"einsum(): {more} operands were provided than specified in the "
                           f"equation ({equation!r} with {len(operands)} operands)")
    fresh = [c for c in _LETTERS if c not in eq]
    n_ell = max((t._data.ndim - len(s.replace("...", "")) for s, t in zip(subs, operands)
                 if "..." in s), default=0)
    ell = "".join(fresh[:n_ell])
    spelled = []
    for s, t in zip(subs, operands):
        if "..." in s:
            k = t._data.ndim - len(s.replace("...", ""))
            s = s.replace("...", ell[n_ell - k:] if k else "")
        if any(c not in _LETTERS for c in s):
            raise RuntimeError(f"einsum(): invalid subscript given in equation {equation!r}; "
                               f"subscripts must be in [a-zA-Z]")
        if len(s) != t._data.ndim:
            raise RuntimeError(f"einsum(): the number of subscripts in the equation "
                               f"({len(s)}) does not match the number of dimensions "
                               f"({t._data.ndim}) for operand {len(spelled)}")
        spelled.append(s)
    if arrow:
        out = out.replace("...", ell)
    else:  # implicit: the letters used once, in order, after the ellipsis dims
        joined = "".join(spelled)
        out = ell + "".join(sorted(c for c in set(joined) if joined.count(c) == 1
                                   and c not in ell))
    return spelled, out


def einsum(equation, *operands):
    """Einstein summation as torch.einsum: `einsum("ij,jk->ik", a, b)`, with '...',
    implicit outputs and size-1 broadcasting. The gradient of each operand is an einsum of
    the output's gradient with the other operands."""
    if not isinstance(equation, str):
        raise NotImplementedError("einsum(): the sublist format (operand, [dims], ...) is not "
                                  "supported; pass an equation string such as 'ij,jk->ik'")
    if len(operands) == 1 and not isinstance(operands[0], Tensor):
        operands = tuple(operands[0])
    subs, out = _parse_einsum(equation, operands)
    sizes = {}
    for s, t in zip(subs, operands):
        for c, n in zip(s, t._data.shape):
            if sizes.get(c, 1) not in (1, n) and n != 1:
                raise RuntimeError(f"einsum(): operands do not broadcast with remapped shapes "
                                   f"(subscript {c!r} has sizes {sizes[c]} and {n})")
            sizes[c] = max(sizes.get(c, 1), n)
    operands = [expand(t, *(sizes[c] for c in s)) for s, t in zip(subs, operands)]
    for c in out:
        if c not in sizes:
            raise RuntimeError(f"einsum(): output subscript {c} does not appear in the equation "
                               f"for any input operand")
    return Einsum.apply(*operands, subs=tuple(subs), to=out)


def tensordot(a, b, dims=2):
    """Sum of products over the last `dims` dims of `a` and the first of `b`, or over the
    pairs of dims `dims = (dims_a, dims_b)`."""
    na, nb = a._data.ndim, b._data.ndim
    if isinstance(dims, int):
        if dims < 0:
            raise RuntimeError(f"tensordot expects dims >= 0, but got dims={dims}")
        da, db = list(range(na - dims, na)), list(range(dims))
    else:
        da, db = ([d] if isinstance(d, int) else list(d) for d in dims)
    da = [norm_dim(d, na, "tensordot") for d in da]
    db = [norm_dim(d, nb, "tensordot") for d in db]
    if len(da) != len(db):
        raise RuntimeError(f"both dimension lists should have same length ({da} and {db})")
    for i, j in zip(da, db):
        if a._data.shape[i] != b._data.shape[j]:
            raise RuntimeError(f"contracted dimensions need to match, but first has size "
                               f"{a._data.shape[i]} in dim {i} and second has size "
                               f"{b._data.shape[j]} in dim {j}")
    sa = _LETTERS[:na]
    sb = [None] * nb
    for i, j in zip(da, db):
        sb[j] = sa[i]
    extra = iter(_LETTERS[na:])
    sb = "".join(c or next(extra) for c in sb)
    out = "".join(c for i, c in enumerate(sa) if i not in da) + \
        "".join(c for j, c in enumerate(sb) if j not in db)
    return Einsum.apply(a, b, subs=(sa, sb), to=out)


def inner(input, other):
    """Sum of products over the last dims (a scalar operand multiplies)."""
    if input._data.ndim == 0 or other._data.ndim == 0:
        return input * other
    if input._data.shape[-1] != other._data.shape[-1]:
        raise RuntimeError(f"inner() the last dimension must match on both input tensors but "
                           f"got shapes {list(input._data.shape)} and {list(other._data.shape)}")
    return tensordot(input, other, ([-1], [-1]))


def kron(input, other):
    """The Kronecker product: blocks of `other` scaled by each element of `input`."""
    nd = max(input._data.ndim, other._data.ndim)
    sa = (1,) * (nd - input._data.ndim) + input._data.shape
    sb = (1,) * (nd - other._data.ndim) + other._data.shape
    a = input.reshape(tuple(v for n in sa for v in (n, 1)))
    b = other.reshape(tuple(v for n in sb for v in (1, n)))
    return (a * b).reshape(tuple(m * n for m, n in zip(sa, sb)))


def mv(input, vec):
    """Matrix (n, m) times vector (m,)."""
    if input._data.ndim != 2 or vec._data.ndim != 1:
        raise RuntimeError(f"vector + matrix @ vector expected, got {input._data.ndim}, "
                           f"{vec._data.ndim} (mv: a 2-D matrix and a 1-D vector)")
    return matmul(input, vec)


def _scaled(input, product, beta, alpha):
    """beta * input + alpha * product; beta = 0 ignores input (even NaN in it), as torch."""
    if alpha != 1:
        product = product * alpha
    if beta == 0:
        return expand(product, *_broadcast_shape(input._data.shape, product._data.shape))
    return product + (input if beta == 1 else input * beta)


def _check_ndim(op, *pairs):
    for name, t, nd in pairs:
        if t._data.ndim != nd:
            raise RuntimeError(f"{op}: {name} must be a {nd}-D tensor, got "
                               f"{t._data.ndim}-D (shape {list(t._data.shape)})")


def addmm(input, mat1, mat2, *, beta=1, alpha=1):
    """beta * input + alpha * (mat1 @ mat2), input broadcast to (n, p)."""
    _check_ndim("addmm", ("mat1", mat1, 2), ("mat2", mat2, 2))
    return _scaled(input, matmul(mat1, mat2), beta, alpha)


def addmv(input, mat, vec, *, beta=1, alpha=1):
    """beta * input + alpha * (mat @ vec)."""
    _check_ndim("addmv", ("mat", mat, 2), ("vec", vec, 1))
    return _scaled(input, matmul(mat, vec), beta, alpha)


def baddbmm(input, batch1, batch2, *, beta=1, alpha=1):
    """beta * input + alpha * (batch1 @ batch2), batch by batch."""
    _check_ndim("baddbmm", ("batch1", batch1, 3), ("batch2", batch2, 3))
    return _scaled(input, matmul(batch1, batch2), beta, alpha)


def addbmm(input, batch1, batch2, *, beta=1, alpha=1):
    """beta * input + alpha * (the sum over the batch of batch1[i] @ batch2[i])."""
    _check_ndim("addbmm", ("batch1", batch1, 3), ("batch2", batch2, 3))
    b, n, m = batch1._data.shape
    # one matrix product: the batch folded into the contracted dim
    flat1 = batch1.permute(1, 0, 2).reshape(n, b * m)
    return _scaled(input, matmul(flat1, batch2.reshape(b * batch2._data.shape[1], -1)), beta,
                   alpha)


def addcmul(input, tensor1, tensor2, *, value=1):
    """input + value * tensor1 * tensor2."""
    prod = tensor1 * tensor2
    return input + (prod if value == 1 else prod * value)


def addcdiv(input, tensor1, tensor2, *, value=1):
    """input + value * tensor1 / tensor2 (floating point only)."""
    if tensor1._data.dtype.kind != "f" and tensor2._data.dtype.kind != "f":
        raise RuntimeError("Integer division with addcdiv is no longer supported, and in a "
                           "future release addcdiv will perform a true division of tensor1 and "
                           "tensor2. Use a floating point tensor1 or tensor2.")
    quot = tensor1 / tensor2
    return input + (quot if value == 1 else quot * value)


def lerp(input, end, weight):
    """input + weight * (end - input)."""
    return input + weight * (end - input)


def _blend_samples():
    s = SampleMaker("products_blends")
    return [Sample(lambda a, b: tensordot(a, b), (s(2, 3, 4), s(3, 4, 2))),
            Sample(lambda a, b: tensordot(a, b, ([0, 2], [1, 0])), (s(2, 3, 4), s(4, 2))),
            Sample(lambda a, b: inner(a, b), (s(2, 3), s(4, 3))),
            Sample(lambda a, b: kron(a, b), (s(2, 3), s(3, 1, 2))),
            Sample(lambda a, v: a.mv(v), (s(2, 3), s(3))),
            Sample(lambda c, a, b: c.addmm(a, b, beta=0.5, alpha=2), (s(4), s(3, 2), s(2, 4))),
            Sample(lambda c, a, v: addmv(c, a, v), (s(3), s(3, 2), s(2))),
            Sample(lambda c, a, b: c.baddbmm(a, b, alpha=-1), (s(2, 3, 4), s(2, 3, 2),
                                                               s(2, 2, 4))),
            Sample(lambda c, a, b: addbmm(c, a, b, beta=2), (s(3, 4), s(2, 3, 2), s(2, 2, 4))),
            Sample(lambda c, a, b: c.addcmul(a, b, value=0.5), (s(3, 4), s(4), s(3, 1))),
            Sample(lambda c, a, b: c.addcdiv(a, b, value=2), (s(3, 4), s(3, 4),
                                                               s(3, 4, low=0.5, high=2))),
            Sample(lambda a, b, w: a.lerp(b, w), (s(3, 4), s(4), s(3, 1))),
            Sample(lambda a, b: a.lerp(b, 0.3), (s(3, 4), s(3, 4)))]


register_composite("products_blends", _blend_samples)


def cross(input, other, dim=None):
    """The cross product of 3-vectors along `dim` (default: the first dim of size 3)."""
    shape = _broadcast_shape(input._data.shape, other._data.shape)
    if dim is None:
        dim = next((d for d, n in enumerate(shape) if n == 3), None)
        if dim is None:
            raise RuntimeError(f"no dimension of size 3 in input (shapes "
                               f"{list(input._data.shape)} and {list(other._data.shape)})")
    return linalg_cross(input, other, dim=dim)


def linalg_cross(input, other, *, dim=-1):
    """`dt.linalg.cross`: the cross product along `dim` (default the last), broadcasting."""
    d = norm_dim(dim, max(input._data.ndim, other._data.ndim), "linalg.cross")
    a_n, b_n = (t._data.shape[d - max(input._data.ndim, other._data.ndim) + t._data.ndim]
                for t in (input, other))
    if a_n != 3 or b_n != 3:
        raise RuntimeError(f"linalg.cross: inputs dimension {dim} must have length 3. Got "
                           f"{a_n} and {b_n}")
    a, b = expand(input, *_broadcast_shape(input._data.shape, other._data.shape)), other
    xp = array_module(input._data)
    i1, i2 = Tensor._make(xp.array([1, 2, 0])), Tensor._make(xp.array([2, 0, 1]))
    b = expand(b, *a._data.shape)
    return a.index_select(d, i1) * b.index_select(d, i2) - a.index_select(d, i2) * \
        b.index_select(d, i1)


_CDIST_MODES = ("use_mm_for_euclid_dist_if_necessary", "use_mm_for_euclid_dist",
                "donot_use_mm_for_euclid_dist")


def cdist(x1, x2, p=2.0, compute_mode="use_mm_for_euclid_dist_if_necessary"):
    """The p-norm distance between each row of x1 (..., P, M) and each of x2 (..., R, M):
    (..., P, R). For p = 2 with more than 25 rows on either side (or `compute_mode`
    'use_mm_for_euclid_dist'), as torch: from |a|^2 + |b|^2 - 2 a.b, one matrix product."""
    if x1._data.ndim < 2 or x2._data.ndim < 2:
        raise RuntimeError(f"cdist only supports at least 2D tensors, X1 got: "
                           f"{x1._data.ndim}D, X2 got: {x2._data.ndim}D")
    if x1._data.shape[-1] != x2._data.shape[-1]:
        raise RuntimeError(f"X1 and X2 must have the same number of columns. X1: "
                           f"{x1._data.shape[-1]} X2: {x2._data.shape[-1]}")
    if p < 0:
        raise RuntimeError("cdist only supports non-negative p values")
    if compute_mode not in (None,) + _CDIST_MODES:
        raise ValueError(f"{compute_mode} is not a valid value for compute_mode")
    rows = max(x1._data.shape[-2], x2._data.shape[-2])
    if p == 2 and (compute_mode == _CDIST_MODES[1] or (compute_mode in (None, _CDIST_MODES[0])
                                                       and rows > 25)):
        sq = (x1 * x1).sum(-1, keepdim=True) + (x2 * x2).sum(-1).unsqueeze(-2) \
            - 2 * matmul(x1, x2.mT)
        return sq.clamp(min=1e-30).sqrt()  # NOTE: as torch: rounding can make sq <= 0
    # NOTE: the norm of all pairwise differences: exact for every p, with a zero subgradient
    # at equal rows, at O(P * R * M) memory
    return vector_norm(x1.unsqueeze(-2) - x2.unsqueeze(-3), p, -1)


def dist(input, other, p=2):
    """The p-norm of input - other."""
    return vector_norm(input - other, p)


def _geometry_samples():
    s = SampleMaker("cross_cdist")
    return [Sample(lambda a, b: cross(a, b), (s(2, 3), s(2, 3))),
            Sample(lambda a, b: linalg_cross(a, b, dim=0), (s(3, 2), s(3, 1))),
            Sample(lambda a, b: cdist(a, b), (s(3, 2), s(4, 2))),
            Sample(lambda a, b: cdist(a, b, p=1.5), (s(2, 3, 2), s(2, 4, 2))),
            Sample(lambda a, b: cdist(a, b, compute_mode="use_mm_for_euclid_dist"),
                   (s(3, 2), s(4, 2))),
            Sample(lambda a, b: cdist(a, b), (s(26, 2), s(2, 2))),
            Sample(lambda a, b: dist(a, b, 3), (s(3, 2), s(2)))]


register_composite("cross_cdist", _geometry_samples)
