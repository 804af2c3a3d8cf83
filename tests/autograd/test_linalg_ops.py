"""diag, tril/triu, the norms (`norm`, `dt.linalg`) and `F.one_hot`: values against NumPy,
torch's gradient at a zero norm, and the errors. (Gradients are checked by the registry.)"""
import math

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn.functional as F

INF = math.inf
A = np.array([[1.0, -2.0, 3.0, 0.0], [-4.0, 5.0, 0.5, 2.0], [0.0, 1.0, -7.0, 1.0]])


@pytest.mark.parametrize("k", [0, 1, 2, -1, -2])
def test_diag(device, k):
    v = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(dt.diag(dt.tensor(v, device=device), k).cpu().numpy(),
                                  np.diag(v, k))
    np.testing.assert_array_equal(dt.tensor(A, device=device).diag(k).cpu().numpy(),
                                  np.diag(A, k))
    np.testing.assert_array_equal(dt.tensor(A.T, device=device).diag(diagonal=k).cpu().numpy(),
                                  np.diag(A.T, k))


def test_diag_copies_and_backward_fills_the_diagonal():
    a = dt.tensor(A, requires_grad=True)
    d = a.diag(1)
    d.backward(dt.tensor([1.0, 2.0, 3.0], dtype=dt.float64))
    expected = np.zeros_like(A)
    expected[[0, 1, 2], [1, 2, 3]] = [1, 2, 3]
    np.testing.assert_array_equal(a.grad.numpy(), expected)
    b = dt.tensor(A)
    b.diag()[0] = 100.0
    assert b[0, 0].item() == 1.0


def test_diag_rejects_other_ranks():
    with pytest.raises(RuntimeError, match=r"expected a 1-D or 2-D tensor, got 3-D"):
        dt.diag(dt.zeros(2, 2, 2))


@pytest.mark.parametrize("name", ["tril", "triu"])
@pytest.mark.parametrize("k", [0, 1, -1, 5])
def test_tril_triu(device, name, k):
    x = np.arange(24.0).reshape(2, 3, 4)
    got = getattr(dt, name)(dt.tensor(x, device=device), k).cpu().numpy()
    np.testing.assert_array_equal(got, getattr(np, name)(x, k))
    method = getattr(dt.tensor(A, device=device), name)(diagonal=k).cpu().numpy()
    np.testing.assert_array_equal(method, getattr(np, name)(A, k))
    with pytest.raises(RuntimeError, match=f"{name}: input tensor must have at least 2 dim"):
        getattr(dt, name)(dt.zeros(3))


def _np_vector_norm(x, p, axis=None, keepdims=False):
    a = np.abs(x)
    if p == 0:
        return (x != 0).sum(axis=axis, keepdims=keepdims).astype(x.dtype)
    if p == INF:
        return a.max(axis=axis, keepdims=keepdims)
    if p == -INF:
        return a.min(axis=axis, keepdims=keepdims)
    return (a ** p).sum(axis=axis, keepdims=keepdims) ** (1 / p)


@pytest.mark.parametrize("p", [2, 1, INF, -INF, 0, 3, 0.5])
@pytest.mark.parametrize("dim, keepdim", [(None, False), (1, False), (0, True), ((0, 1), True)])
def test_norm_values(device, p, dim, keepdim):
    x = dt.tensor(A, device=device)
    axis = dim if dim is None or isinstance(dim, int) else tuple(dim)
    want = _np_vector_norm(A, p, axis, keepdim)
    for got in (x.norm(p, dim, keepdim), dt.norm(x, p=p, dim=dim, keepdim=keepdim),
                dt.linalg.vector_norm(x, p, dim, keepdim)):
        assert got.dtype == dt.float64
        np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-12)


def test_norm_defaults_and_fro():
    x = dt.tensor(A, dtype=dt.float32)
    assert x.norm().dtype == dt.float32
    np.testing.assert_allclose(x.norm().item(), np.linalg.norm(A), rtol=1e-6)
    np.testing.assert_allclose(x.norm("fro", 1).numpy(), np.linalg.norm(A, axis=1), rtol=1e-6)
    np.testing.assert_allclose(dt.linalg.norm(x).item(), np.linalg.norm(A), rtol=1e-6)
    assert dt.norm(x, dtype=dt.float64).dtype == dt.float64


@pytest.mark.parametrize("ord", ["fro", 1, -1, INF, -INF])
def test_matrix_norm(device, ord):
    x = dt.tensor(A, device=device)
    want = np.linalg.norm(A, ord)
    np.testing.assert_allclose(dt.linalg.matrix_norm(x, ord).item(), want, rtol=1e-12)
    np.testing.assert_allclose(dt.linalg.norm(x, ord).item(), want, rtol=1e-12)
    batch = np.stack([A, -2 * A])  # (2, 3, 4); matrices over dims (0, 2): (2, 4) each
    got = dt.linalg.matrix_norm(dt.tensor(batch, device=device), ord, (0, 2), keepdim=True)
    want = np.stack([np.linalg.norm(batch[:, i, :], ord) for i in range(3)])
    np.testing.assert_allclose(got.cpu().numpy(), want.reshape(1, 3, 1), rtol=1e-12)


def test_linalg_norm_picks_vector_or_matrix():
    x = dt.tensor(A)
    np.testing.assert_allclose(dt.linalg.norm(x, 1, dim=1).numpy(), np.abs(A).sum(1))
    np.testing.assert_allclose(dt.linalg.norm(x, INF, dim=(0, 1)).item(), np.linalg.norm(A, INF))
    np.testing.assert_allclose(dt.linalg.norm(x[0], 3).item(), np.linalg.norm(A[0], 3))
    x3 = dt.tensor(np.stack([A, A]))
    np.testing.assert_allclose(dt.linalg.norm(x3).item(), np.sqrt(2) * np.linalg.norm(A))
    with pytest.raises(RuntimeError, match="the input must be 1D or 2D. Got 3D"):
        dt.linalg.norm(x3, 1)
    with pytest.raises(RuntimeError, match="must be of length 1 or 2"):
        dt.linalg.norm(x3, dim=(0, 1, 2))
    assert dt.linalg.matmul is dt.matmul


def test_norm_errors():
    with pytest.raises(NotImplementedError, match="ord='nuc' needs singular values"):
        dt.tensor(A).norm("nuc")
    with pytest.raises(NotImplementedError, match="ord=2 needs singular values"):
        dt.linalg.matrix_norm(dt.tensor(A), 2)
    with pytest.raises(RuntimeError, match=r"expected a floating point input, got dtrain.int64"):
        dt.tensor([1, 2]).norm()
    with pytest.raises(RuntimeError, match="p must be a number, 'fro' or 'nuc', got 'bad'"):
        dt.tensor(A).norm("bad")
    with pytest.raises(RuntimeError, match="ord must be a number"):
        dt.linalg.vector_norm(dt.tensor(A), "fro")
    with pytest.raises(RuntimeError, match="expected a tensor of 2 or more dims"):
        dt.linalg.matrix_norm(dt.tensor(A[0]))


@pytest.mark.parametrize("p", [2, 3, 1, INF, 0])
def test_norm_gradient_at_zero_is_zero_as_torch(p):
    x = dt.zeros(2, 3, dtype=dt.float64, requires_grad=True)
    x.norm(p).backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((2, 3)))
    y = dt.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=dt.float64, requires_grad=True)
    y.norm(dim=1).sum().backward()  # one row's norm is 0, the other's 5
    np.testing.assert_allclose(y.grad.numpy(), [[0.0, 0.0], [0.6, 0.8]])


def test_inf_norm_shares_the_gradient_among_ties():
    x = dt.tensor([3.0, -3.0, 1.0], dtype=dt.float64, requires_grad=True)
    x.norm(INF).backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.5, -0.5, 0.0])


def test_one_hot(device):
    idx = dt.tensor([[0, 2], [1, 2]], device=device)
    out = F.one_hot(idx, 4)
    assert (out.dtype, out.shape, out.requires_grad) == (dt.int64, (2, 2, 4), False)
    np.testing.assert_array_equal(out.cpu().numpy(), np.eye(4, dtype=np.int64)[idx.cpu().numpy()])
    assert F.one_hot(idx).shape == (2, 2, 3)
    assert F.one_hot(dt.zeros(0, dtype=dt.int64), 3).shape == (0, 3)
    with pytest.raises(RuntimeError, match=r"index tensor of type LongTensor \(got dtrain.float32"):
        F.one_hot(dt.tensor([0.0]))
    with pytest.raises(RuntimeError, match=r"smaller than num_classes \(got 2 with num_classes=2"):
        F.one_hot(dt.tensor([0, 2]), 2)
    with pytest.raises(RuntimeError, match=r"non-negative \(got -1\)"):
        F.one_hot(dt.tensor([-1, 0]), 2)
    with pytest.raises(RuntimeError, match="Can not infer total number of classes"):
        F.one_hot(dt.zeros(0, dtype=dt.int64))


def test_one_hot_is_a_graph_op():
    def f(idx):
        return F.one_hot(idx, 3) * 2

    g = dt.compile(f)
    idx = dt.tensor([2, 0, 1])
    np.testing.assert_array_equal(g(idx).numpy(), 2 * np.eye(3, dtype=np.int64)[[2, 0, 1]])
    np.testing.assert_array_equal(g(dt.tensor([1, 1, 0])).numpy(),
                                  2 * np.eye(3, dtype=np.int64)[[1, 1, 0]])
