"""Reshuffles and products against NumPy: flip/roll/rot90, repeat/tile/repeat_interleave,
diagonal/diag_embed/trace, movedim/select/take/take_along_dim/masked_select, stacks, grids,
triangle indices, vander, unfold, einsum (and its gradients), tensordot/inner/kron/mv, the
add-scaled products, addcmul/addcdiv/lerp (in place too), cross, cdist and dist."""
import numpy as np
import pytest

import dtrain as dt

RNG = np.random.default_rng(1)


def _r(*shape):
    return RNG.uniform(-1, 1, shape)


def _t(a, **kw):
    return dt.tensor(a, **kw)


def _eq(t, a):
    np.testing.assert_allclose(t.numpy(), a, rtol=1e-12, atol=1e-12)


def test_flip_roll_rot90():
    a = _r(2, 3, 4)
    x = _t(a)
    _eq(x.flip(0, -1), a[::-1, :, ::-1])
    _eq(dt.flip(x, (0, -1)), a[::-1, :, ::-1])
    _eq(x.flip([1]), np.flip(a, 1))
    _eq(dt.flip(x, dims=[2]), np.flip(a, 2))
    _eq(dt.tile(x, dims=(2, 1, 1)), np.tile(a, (2, 1, 1)))
    _eq(dt.fliplr(x), np.fliplr(a))
    _eq(x.flipud(), np.flipud(a))
    f = x.flip([0])
    f.add_(1.0)
    _eq(x, a)  # a copy, as torch
    _eq(dt.roll(x, 2, 1), np.roll(a, 2, 1))
    _eq(x.roll((1, -3), (0, 2)), np.roll(a, (1, -3), (0, 2)))
    _eq(x.roll(5), np.roll(a, 5))
    for k in (-1, 0, 1, 2, 3, 5):
        _eq(dt.rot90(x, k, (1, 2)), np.rot90(a, k, (1, 2)))
    assert dt.rot90(_t([[1, 2], [3, 4]])).tolist() == [[2, 4], [1, 3]]
    with pytest.raises(RuntimeError, match="expected total rotation dims == 2"):
        dt.rot90(x, 1, (0,))
    with pytest.raises(RuntimeError, match="fliplr: Input must be >= 2-d"):
        dt.fliplr(_t([1.0]))


def test_repeat_tile_repeat_interleave():
    a = _r(2, 3)
    x = _t(a)
    _eq(x.repeat(2, 2), np.tile(a, (2, 2)))
    _eq(x.repeat(3, 1, 2), np.tile(a, (3, 1, 2)))
    _eq(x.repeat((1, 1)), a)
    _eq(dt.tile(x, (2,)), np.tile(a, 2))
    _eq(x.tile(2, 1), np.tile(a, (2, 1)))
    _eq(x.tile((2, 1, 1)), np.tile(a, (2, 1, 1)))
    with pytest.raises(RuntimeError, match="Number of dimensions of repeat dims"):
        x.repeat(2)
    _eq(x.repeat_interleave(2), np.repeat(a, 2))
    _eq(dt.repeat_interleave(x, 3, dim=1), np.repeat(a, 3, 1))
    _eq(x.repeat_interleave(_t([1, 0]), dim=0, output_size=1), a[:1])
    _eq(x.repeat_interleave(_t([2, 1, 0]), dim=-1), np.repeat(a, [2, 1, 0], 1))
    assert dt.repeat_interleave(_t([2, 0, 3])).tolist() == [0, 0, 2, 2, 2]
    _eq(x.repeat_interleave(_t(2)), np.repeat(a, 2))
    with pytest.raises(RuntimeError, match="repeats can not be negative"):
        x.repeat_interleave(_t([1, -1]), dim=0)
    with pytest.raises(RuntimeError, match="repeats must have the same size as input"):
        x.repeat_interleave(_t([1, 2]), dim=1)


def test_diagonal_diag_embed_trace():
    a = _r(2, 3, 4)
    x = _t(a)
    for off, d1, d2 in ((0, 0, 1), (1, 1, 2), (-1, 2, 1), (2, -1, 0), (5, 1, 2)):
        _eq(x.diagonal(off, d1, d2), np.diagonal(a, off, d1, d2))
    v = _r(2, 3)
    out = dt.diag_embed(_t(v))
    assert out.shape == (2, 3, 3)
    _eq(out, np.stack([np.diag(r) for r in v]))
    _eq(_t(v).diag_embed(1), np.stack([np.diag(r, 1) for r in v]))
    _eq(dt.diag_embed(_t(v), -1, 0, 2), np.stack([np.diag(r, -1) for r in v]).transpose(1, 0, 2))
    for off in (0, 1, -2, 4):
        _eq(_t(a).mT.diagonal(off, -2, -1), np.diagonal(a.swapaxes(-1, -2), off, -2, -1))
    m = _r(3, 3)
    assert dt.trace(_t(m)).item() == pytest.approx(np.trace(m))
    k = _t(m)
    k.diagonal().add_(10.0)  # a view, as torch: the jitter lands on k's diagonal
    _eq(k, m + 10 * np.eye(3))
    p = _t(m, requires_grad=True)
    q = p * 1.0
    q.diagonal(1).mul_(_t([2.0, 3.0]))  # in place through the view: q is rebased
    q.sum().backward()
    _eq(p.grad, np.array([[1.0, 2.0, 1.0], [1.0, 1.0, 3.0], [1.0, 1.0, 1.0]]))
    with pytest.raises(RuntimeError, match="trace: expected a matrix"):
        x.trace()
    with pytest.raises(RuntimeError, match="diagonal dimensions cannot be identical"):
        x.diagonal(0, 1, -2)


def test_movedim_select_take_masked_select():
    a = _r(2, 3, 4)
    x = _t(a)
    _eq(x.movedim(0, -1), np.moveaxis(a, 0, -1))
    _eq(dt.moveaxis(x, (0, 1), (2, 0)), np.moveaxis(a, (0, 1), (2, 0)))
    _eq(x.select(1, -1), a[:, -1])
    _eq(dt.select(x, 2, 0), a[..., 0])
    with pytest.raises(IndexError, match="select\\(\\): index 3 out of range"):
        x.select(1, 3)
    idx = np.array([[0, 23], [5, 7]])
    _eq(dt.take(x, _t(idx)), np.take(a, idx))
    ind = RNG.integers(0, 3, (2, 2, 4))
    _eq(x.take_along_dim(_t(ind), 1), np.take_along_axis(a, ind, 1))
    _eq(dt.take_along_dim(x, _t(ind[:, :, :1]), 1), np.take_along_axis(a, ind[:, :, :1], 1))
    _eq(dt.take_along_dim(x, _t(np.array([3, 0]))), a.reshape(-1)[[3, 0]])
    _eq(dt.take_along_dim(x, x.argmax(-1, keepdim=True), -1), a.max(-1, keepdims=True))
    mask = a > 0
    _eq(x.masked_select(_t(mask)), a[mask])
    _eq(dt.masked_select(x, _t(mask[0])), a[np.broadcast_to(mask[0], a.shape)])
    with pytest.raises(RuntimeError, match="expected BoolTensor for mask"):
        x.masked_select(_t(mask.astype(np.int64)))


def test_stacks_grids_broadcast():
    a, b = _r(3), _r(3)
    _eq(dt.hstack([_t(a), _t(b)]), np.hstack([a, b]))
    _eq(dt.vstack([_t(a), _t(b)]), np.vstack([a, b]))
    _eq(dt.row_stack((_t(a), _t(b))), np.vstack([a, b]))
    _eq(dt.dstack([_t(a), _t(b)]), np.dstack([a, b]))
    m = _r(3, 2)
    _eq(dt.column_stack([_t(a), _t(m)]), np.column_stack([a, m]))
    _eq(dt.hstack([_t(m), _t(m)]), np.hstack([m, m]))
    _eq(dt.dstack([_t(m), _t(m)]), np.dstack([m, m]))
    p, q = dt.broadcast_tensors(_t(_r(3, 1)), _t(_r(4)))
    assert p.shape == q.shape == (3, 4)
    with pytest.raises(RuntimeError, match="must match the size"):
        dt.broadcast_tensors(_t(_r(3)), _t(_r(4)))
    u, v, w = _r(3), _r(2), _r(4)
    for idx in ("ij", "xy"):
        for got, want in zip(dt.meshgrid(_t(u), _t(v), _t(w), indexing=idx),
                             np.meshgrid(u, v, w, indexing=idx)):
            _eq(got, want)
    gx, gy = dt.meshgrid([_t(u), _t(v)], indexing="ij")
    assert gx.shape == (3, 2)
    c = dt.cartesian_prod(_t([1, 2]), _t([3, 4, 5]))
    assert c.tolist() == [[1, 3], [1, 4], [1, 5], [2, 3], [2, 4], [2, 5]]


def test_triangle_indices_and_vander():
    for fn, ref in ((dt.tril_indices, np.tril_indices), (dt.triu_indices, np.triu_indices)):
        for r, c, off in ((3, 3, 0), (4, 3, 1), (3, 5, -1)):
            got = fn(r, c, off)
            assert got.dtype == dt.int64
            np.testing.assert_array_equal(got.numpy(), np.stack(ref(r, off, c)))
    x = _t([2.0, 0.0, -1.0])
    _eq(dt.vander(x), np.vander([2.0, 0.0, -1.0]))
    _eq(dt.vander(x, 4, increasing=True), np.vander([2.0, 0.0, -1.0], 4, increasing=True))
    assert dt.vander(_t([2, 3]), 3).tolist() == [[4, 2, 1], [9, 3, 1]]
    xg = _t([2.0, 0.0, 3.0], requires_grad=True)
    dt.vander(xg, 3).sum().backward()  # d/dx (x^2 + x + 1) = 2x + 1, finite at 0
    assert xg.grad.tolist() == [5.0, 1.0, 7.0]


def test_unfold_windows():
    a = np.arange(10.0).reshape(2, 5)
    x = _t(a)
    got = x.unfold(1, 2, 1)
    assert got.shape == (2, 4, 2)
    _eq(got, np.lib.stride_tricks.sliding_window_view(a, 2, axis=1))
    _eq(x.unfold(1, 3, 2), np.lib.stride_tricks.sliding_window_view(a, 3, axis=1)[:, ::2])
    _eq(x.unfold(0, 2, 1), np.moveaxis(a[None], 1, -1))
    with pytest.raises(RuntimeError, match="maximum size for tensor at dimension 1 is 5"):
        x.unfold(1, 6, 1)
    w = x.unfold(1, 2, 2)
    w[0, 1, 0] = -1.0  # a view, as torch: the write reaches x
    assert x[0, 2].item() == -1.0 and w._base is x
    base = _t(np.arange(6.0), requires_grad=True)
    base.unfold(0, 3, 1).sum().backward()  # overlapping windows: gradients sum
    assert base.grad.tolist() == [1.0, 2.0, 3.0, 3.0, 2.0, 1.0]
    base.grad = None
    y = base * 1.0
    y.unfold(0, 2, 2).mul_(_t([1.0, 3.0]))  # in place through the view: y is rebased
    (y * y).sum().backward()
    assert y.tolist() == [0.0, 3.0, 2.0, 9.0, 4.0, 15.0]
    assert base.grad.tolist() == [0.0, 18.0, 4.0, 54.0, 8.0, 90.0]
    assert dt.tensor(3.0).unfold(0, 1, 1).tolist() == [3.0]


@pytest.mark.parametrize("eq, shapes", [
    ("ij,jk->ik", [(2, 3), (3, 4)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("ii->i", [(3, 3)]), ("ii", [(3, 3)]), ("ij->", [(2, 3)]), ("i,j->ij", [(2,), (3,)]),
    ("...ij,...jk", [(2, 1, 3, 4), (5, 4, 2)]), ("b h i d, b h j d -> b h i j",
                                                 [(2, 2, 3, 4), (2, 2, 5, 4)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]), ("ba", [(2, 3)])])
def test_einsum_matches_numpy(eq, shapes):
    arrays = [_r(*s) for s in shapes]
    _eq(dt.einsum(eq, *[_t(a) for a in arrays]), np.einsum(eq.replace(" ", ""), *arrays))
    _eq(dt.einsum(eq, [_t(a) for a in arrays]), np.einsum(eq.replace(" ", ""), *arrays))


def test_einsum_gradients_and_errors():
    a, b = _r(3, 3), _r(3)
    x, v = _t(a, requires_grad=True), _t(b, requires_grad=True)
    dt.einsum("ii,i->", x, v).backward()
    _eq(x.grad, np.diag(b))
    _eq(v.grad, np.diag(a))
    y = _t(_r(1, 4), requires_grad=True)
    dt.einsum("ij,ij->", y, _t(_r(3, 4))).backward()
    assert y.grad.shape == (1, 4)
    with pytest.raises(RuntimeError, match="more operands were provided"):
        dt.einsum("ij", x, x)
    with pytest.raises(RuntimeError, match="does not match the number of dimensions"):
        dt.einsum("ijk", x)
    with pytest.raises(NotImplementedError, match="sublist format"):
        dt.einsum(x, [0, 1])


def test_tensordot_inner_kron_mv():
    a, b = _r(2, 3, 4), _r(3, 4, 5)
    _eq(dt.tensordot(_t(a), _t(b)), np.tensordot(a, b))
    _eq(dt.tensordot(_t(a), _t(b), ([1, 2], [0, 1])), np.tensordot(a, b, 2))
    _eq(dt.tensordot(_t(a), _t(a), ([0, 1], [0, 1])), np.tensordot(a, a, ([0, 1], [0, 1])))
    _eq(dt.tensordot(_t(a), _t(b), 1 - 1), np.tensordot(a, b, 0))
    c, d = _r(2, 3), _r(4, 3)
    _eq(dt.inner(_t(c), _t(d)), np.inner(c, d))
    _eq(_t(c).inner(_t(2.0)), 2 * c)
    with pytest.raises(RuntimeError, match="the last dimension must match"):
        dt.inner(_t(c), _t(a))
    e, f = _r(2, 3), _r(3, 1, 2)
    _eq(dt.kron(_t(e), _t(f)), np.kron(e, f))
    _eq(_t(e).kron(_t(e)), np.kron(e, e))
    _eq(_t(c).mv(_t(np.ones(3))), c.sum(1))
    _eq(dt.mv(_t(c), _t(np.arange(3.0))), c @ np.arange(3.0))
    with pytest.raises(RuntimeError, match="mv"):
        dt.mv(_t(c), _t(c))


def test_add_scaled_products():
    c, m1, m2 = _r(4), _r(3, 2), _r(2, 4)
    _eq(dt.addmm(_t(c), _t(m1), _t(m2)), c + m1 @ m2)
    _eq(_t(c).addmm(_t(m1), _t(m2), beta=0.5, alpha=-2), 0.5 * c - 2 * (m1 @ m2))
    nan = _t(np.full((3, 4), np.nan))
    _eq(dt.addmm(nan, _t(m1), _t(m2), beta=0), m1 @ m2)  # beta=0 ignores NaN, as torch
    v = _r(2)
    one = _r(1)
    _eq(dt.addmv(_t(one), _t(m1), _t(v), alpha=3), one + 3 * (m1 @ v))  # broadcast input
    base = _r(3)
    _eq(dt.addmv(_t(base), _t(m1), _t(v), beta=2, alpha=3), 2 * base + 3 * (m1 @ v))
    b1, b2, inp = _r(5, 3, 2), _r(5, 2, 4), _r(3, 4)
    _eq(dt.baddbmm(_t(inp), _t(b1), _t(b2), beta=0.5), 0.5 * inp + b1 @ b2)
    _eq(_t(inp).addbmm(_t(b1), _t(b2), alpha=2), inp + 2 * (b1 @ b2).sum(0))
    with pytest.raises(RuntimeError, match="baddbmm: batch1 must be a 3-D tensor"):
        dt.baddbmm(_t(inp), _t(m1), _t(m2))


def test_addcmul_addcdiv_lerp_and_in_place():
    x, a, b = _r(3, 4), _r(3, 4), _r(4) + 2
    _eq(dt.addcmul(_t(x), _t(a), _t(b), value=0.5), x + 0.5 * a * b)
    _eq(_t(x).addcdiv(_t(a), _t(b), value=-2), x - 2 * a / b)
    _eq(dt.lerp(_t(x), _t(a), 0.25), x + 0.25 * (a - x))
    w = _r(3, 1)
    _eq(_t(x).lerp(_t(a), _t(w)), x + w * (a - x))
    y = _t(x)
    assert y.addcmul_(_t(a), _t(b), value=2) is y
    _eq(y, x + 2 * a * b)
    y.addcdiv_(_t(a), _t(b)).lerp_(_t(a), 0.5)
    _eq(y, ((x + 2 * a * b + a / b) + a) / 2)
    with pytest.raises(RuntimeError, match="Integer division with addcdiv"):
        dt.addcdiv(_t(x), _t([1, 2, 3, 4]), _t([1, 1, 1, 1]))
    # the Adam-style update on a parameter's moment, under autograd: gradients flow
    p = _t(x, requires_grad=True)
    m = p * 1.0
    m.lerp_(_t(a), 0.1).addcmul_(p, p, value=1.0)
    m.sum().backward()
    _eq(p.grad, 0.9 + 2 * x)


def test_cross_cdist_dist():
    a, b = _r(4, 3), _r(4, 3)
    _eq(dt.cross(_t(a), _t(b)), np.cross(a, b))
    _eq(_t(a).cross(_t(b), dim=1), np.cross(a, b))
    _eq(dt.linalg.cross(_t(a.T.copy()), _t(b.T.copy()), dim=0), np.cross(a, b).T)
    _eq(dt.linalg.cross(_t(a), _t(b[:1])), np.cross(a, b[:1]))
    with pytest.raises(RuntimeError, match="must have length 3"):
        dt.linalg.cross(_t(_r(3, 2)), _t(_r(3, 2)))
    x1, x2 = _r(2, 5, 3), _r(2, 4, 3)
    diff = x1[:, :, None] - x2[:, None]
    _eq(dt.cdist(_t(x1), _t(x2)), np.sqrt((diff ** 2).sum(-1)))
    _eq(dt.cdist(_t(x1), _t(x2), p=1), np.abs(diff).sum(-1))
    _eq(dt.cdist(_t(x1), _t(x2), p=3), (np.abs(diff) ** 3).sum(-1) ** (1 / 3))
    _eq(dt.cdist(_t(x1), _t(x2), p=float("inf")), np.abs(diff).max(-1))
    big1, big2 = _r(30, 3), _r(4, 3)  # more than 25 rows: the matrix-product path
    want = np.sqrt(((big1[:, None] - big2[None]) ** 2).sum(-1))
    np.testing.assert_allclose(dt.cdist(_t(big1), _t(big2)).numpy(), want, rtol=1e-10)
    np.testing.assert_allclose(dt.cdist(_t(x1), _t(x2), compute_mode="use_mm_for_euclid_dist")
                               .numpy(), np.sqrt((diff ** 2).sum(-1)), rtol=1e-10)
    with pytest.raises(ValueError, match="is not a valid value for compute_mode"):
        dt.cdist(_t(x1), _t(x2), compute_mode="fast")
    with pytest.raises(RuntimeError, match="X1 and X2 must have the same number of columns"):
        dt.cdist(_t(x1), _t(_r(4, 2)))
    same = _t(x1[0], requires_grad=True)
    dt.cdist(same, same).sum().backward()  # zero distances: finite gradient
    assert np.isfinite(same.grad.numpy()).all()
    _eq(dt.dist(_t(a), _t(b)), np.linalg.norm(a - b))
    _eq(_t(a).dist(_t(b), 1), np.abs(a - b).sum())
