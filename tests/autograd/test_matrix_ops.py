"""inverse, det, slogdet, logdet, cholesky, matrix_power, svd, pinverse (top level, methods,
dt.linalg): values against NumPy, batches, PyTorch's return types and errors. Gradients are
checked by the registry tests."""
import math

import numpy as np
import pytest

import dtrain as dt

RNG = np.random.default_rng(5)


def t(a, **kw):
    return dt.tensor(np.asarray(a, dtype=np.float64), **kw)


@pytest.mark.parametrize("shape", [(3, 3), (2, 4, 4), (2, 1, 2, 2)])
def test_inverse_det_slogdet_match_numpy(shape):
    a = RNG.normal(size=shape)
    for got in (dt.inverse(t(a)), t(a).inverse(), dt.linalg.inv(t(a))):
        np.testing.assert_allclose(got.numpy(), np.linalg.inv(a), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dt.det(t(a)).numpy(), np.linalg.det(a), rtol=1e-12)
    np.testing.assert_allclose(t(a).det().numpy(), np.linalg.det(a), rtol=1e-12)
    sign, logabs = dt.linalg.slogdet(t(a))
    np.testing.assert_array_equal(sign.numpy(), np.linalg.slogdet(a)[0])
    np.testing.assert_allclose(t(a).slogdet().logabsdet.numpy(), np.linalg.slogdet(a)[1],
                               rtol=1e-12)
    logdet = dt.logdet(t(a)).numpy()
    d = np.linalg.det(a)
    np.testing.assert_allclose(logdet[d > 0], np.log(d[d > 0]), rtol=1e-12)
    assert np.isnan(logdet[d < 0]).all()


def test_det_gradient_is_cofactor_and_logdet_special_values():
    a = t([[2.0, 1.0], [1.0, 3.0]], requires_grad=True)
    dt.det(a).backward()
    np.testing.assert_allclose(a.grad.numpy(), [[3.0, -1.0], [-1.0, 2.0]])  # det * A^-T
    assert dt.logdet(t([[1.0, 2.0], [2.0, 4.0]])).item() == -math.inf
    assert dt.slogdet(t([[0.0, 1.0], [1.0, 0.0]])).sign.item() == -1.0
    x = t([[2.0, 0.0], [0.0, 3.0]], requires_grad=True)
    s = dt.slogdet(x)
    assert not s.sign.requires_grad and s.logabsdet.requires_grad
    s.logabsdet.backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0.5, 0.0], [0.0, 1 / 3]])


def test_cholesky():
    x = RNG.normal(size=(2, 4, 4))
    a = x @ x.transpose(0, 2, 1) + np.eye(4)
    L = dt.cholesky(t(a))
    np.testing.assert_allclose(L.numpy(), np.linalg.cholesky(a), rtol=1e-12)
    U = t(a).cholesky(upper=True)
    np.testing.assert_allclose(U.numpy(), np.linalg.cholesky(a).transpose(0, 2, 1), rtol=1e-12)
    np.testing.assert_allclose(dt.linalg.cholesky(t(a), upper=True).numpy(), U.numpy())
    with pytest.raises(RuntimeError, match="linalg.cholesky: .*not positive-definite"):
        dt.cholesky(t([[1.0, 2.0], [2.0, 1.0]]))


@pytest.mark.parametrize("n", [0, 1, 2, 5, -1, -3])
def test_matrix_power(n):
    a = RNG.normal(size=(2, 3, 3)) + 2 * np.eye(3)
    got = dt.matrix_power(t(a), n)
    np.testing.assert_allclose(got.numpy(), np.linalg.matrix_power(a, n), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(t(a).matrix_power(n).numpy(), got.numpy())
    np.testing.assert_allclose(dt.linalg.matrix_power(t(a), n).numpy(), got.numpy())


def test_errors():
    with pytest.raises(RuntimeError, match="linalg.inv: A must be batches of square matrices, "
                                           "but they are 2 by 3 matrices"):
        dt.inverse(dt.zeros(2, 3))
    with pytest.raises(RuntimeError, match="linalg.inv: the input matrix is singular"):
        dt.inverse(t([[1.0, 2.0], [2.0, 4.0]]))
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        dt.det(dt.zeros(3))
    with pytest.raises(RuntimeError, match="Expected a floating point tensor"):
        dt.det(dt.tensor([[1, 2], [3, 4]]))
    with pytest.raises(TypeError, match="'n' must be int"):
        dt.matrix_power(dt.eye(2), 0.5)


@pytest.mark.parametrize("shape", [(4, 3), (3, 5), (2, 3, 3)])
def test_svd_conventions_against_numpy(shape):
    a = RNG.normal(size=shape)
    U, S, Vh = dt.linalg.svd(t(a), full_matrices=False)
    nu, ns, nvh = np.linalg.svd(a, full_matrices=False)
    np.testing.assert_allclose(S.numpy(), ns, rtol=1e-12)
    np.testing.assert_allclose((U * S.unsqueeze(-2) @ Vh).numpy(), a, atol=1e-12)
    np.testing.assert_allclose(np.abs(U.numpy()), np.abs(nu), atol=1e-10)
    full = dt.linalg.svd(t(a))
    assert full.U.shape == np.linalg.svd(a)[0].shape and full.Vh.shape[-1] == shape[-1]
    u, s, v = dt.svd(t(a))  # torch.svd: V, reduced by default (some=True)
    np.testing.assert_allclose((u * s.unsqueeze(-2) @ v.mT).numpy(), a, atol=1e-12)
    assert v.shape == shape[:-2] + (shape[-1], min(shape[-2:]))
    assert t(a).svd(some=False).U.shape[-1] == shape[-2]
    no_uv = dt.svd(t(a), compute_uv=False)
    assert not no_uv.U.numpy().any() and not no_uv.V.numpy().any()
    np.testing.assert_allclose(no_uv.S.numpy(), ns, rtol=1e-12)
    np.testing.assert_allclose(dt.linalg.svdvals(t(a)).numpy(), ns, rtol=1e-12)


def test_svd_gradient_of_singular_values_and_full_matrices_error():
    a = t([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]], requires_grad=True)
    dt.linalg.svdvals(a).sum().backward()  # d(sum s)/dA = U V^T
    np.testing.assert_allclose(a.grad.numpy(), [[1, 0], [0, 1], [0, 0]], atol=1e-12)
    b = t(RNG.normal(size=(3, 2)), requires_grad=True)
    with pytest.raises(RuntimeError, match="full_matrices=True .* use full_matrices=False"):
        dt.linalg.svd(b).U.sum().backward()


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5)])
def test_pinverse_matches_numpy(shape):
    a = RNG.normal(size=shape)
    np.testing.assert_allclose(dt.pinverse(t(a)).numpy(), np.linalg.pinv(a), atol=1e-12)
    np.testing.assert_allclose(t(a).pinverse().numpy(), np.linalg.pinv(a), atol=1e-12)
    np.testing.assert_allclose(dt.linalg.pinv(t(a)).numpy(), np.linalg.pinv(a), atol=1e-12)
    rank1 = np.outer([1.0, 2.0, 3.0], [1.0, -1.0])
    np.testing.assert_allclose(dt.pinverse(t(rank1)).numpy(), np.linalg.pinv(rank1),
                               atol=1e-12)
    np.testing.assert_allclose(dt.linalg.pinv(t(a), atol=1e9).numpy(), 0 * a.swapaxes(-1, -2))
