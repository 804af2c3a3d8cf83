"""Sparse COO tensors: construction and its errors, coalescing, conversions, printing,
dt.sparse.sum, and sparse @ dense through every name, equal to the dense path in values and
gradients."""
import numpy as np
import pytest

import dtrain as dt

IDX = [[0, 2, 1, 2, 0], [1, 0, 3, 0, 1]]  # (2, 0) and (0, 1) twice
VALS = [1.0, 2.0, 3.0, 4.0, 5.0]
DENSE = np.array([[0, 6, 0, 0], [0, 0, 0, 3], [6, 0, 0, 0]], dtype=np.float32)


def test_construction_metadata_and_to_dense():
    s = dt.sparse_coo_tensor(IDX, VALS, (3, 4))
    assert isinstance(s, dt.Tensor) and s.is_sparse and s.layout is dt.sparse_coo
    assert dt.ones(2).layout is dt.strided and not dt.ones(2).is_sparse
    assert s.shape == (3, 4) and s.size(-1) == 4 and s.dim() == 2 and s.numel() == 12
    assert (s.sparse_dim(), s.dense_dim(), s._nnz()) == (2, 0, 5)
    assert s.dtype == dt.float32 and str(s.device) == "cpu" and not s.is_coalesced()
    np.testing.assert_array_equal(s.to_dense().numpy(), DENSE)
    assert s._indices().tolist() == IDX and s._values().tolist() == VALS
    # size inferred from the largest index; integer values keep their dtype
    inferred = dt.sparse_coo_tensor(dt.tensor(IDX), dt.tensor([1, 2, 3, 4, 5]))
    assert inferred.shape == (3, 4) and inferred.dtype == dt.int64
    cast = dt.sparse_coo_tensor(IDX, VALS, (3, 5), dtype=dt.float64, device="cpu")
    assert cast.dtype == dt.float64 and cast.to_dense()[:, 4].tolist() == [0, 0, 0]


def test_hybrid_values_have_dense_dims():
    s = dt.sparse_coo_tensor([[0, 2]], [[1.0, 2.0], [3.0, 4.0]])
    assert s.shape == (3, 2) and (s.sparse_dim(), s.dense_dim()) == (1, 1)
    assert s.to_dense().tolist() == [[1, 2], [0, 0], [3, 4]]


@pytest.mark.parametrize("indices, values, size, match", [
    ([[0, 3]], [1.0, 2.0], (3,), "for dim 0, size is 3 but found index 3"),
    ([[0, -1]], [1.0, 2.0], None, "negative index -1 for dim 0"),
    ([[0.0, 1.0]], [1.0, 2.0], None, "indices must be a 2-D integer tensor"),
    ([0, 1], [1.0, 2.0], None, "indices must be a 2-D integer tensor"),
    ([[0, 1]], [1.0, 2.0, 3.0], None, r"indices hold 2 entries \(nnz\) but values"),
    ([[0, 1]], [1.0, 2.0], (3, 2), r"size \[3, 2\] does not match 1 sparse dims"),
])
def test_construction_errors_name_the_problem(indices, values, size, match):
    with pytest.raises(RuntimeError, match=match):
        dt.sparse_coo_tensor(indices, values, size)


def test_coalesce_sorts_and_sums_duplicates():
    s = dt.sparse_coo_tensor(IDX, VALS, (3, 4))
    for raw in (s.indices, s.values):
        with pytest.raises(RuntimeError, match="uncoalesced tensor, please call .coalesce()"):
            raw()
    c = s.coalesce()
    assert c.is_coalesced() and c.coalesce() is c
    assert c.indices().tolist() == [[0, 1, 2], [1, 3, 0]] and c.values().tolist() == [6, 3, 6]
    np.testing.assert_array_equal(c.to_dense().numpy(), DENSE)
    empty = dt.sparse_coo_tensor(dt.zeros(2, 0, dtype=dt.int64), dt.zeros(0), (2, 2))
    assert empty.coalesce()._nnz() == 0 and empty.to_dense().tolist() == [[0, 0], [0, 0]]


def test_to_sparse_round_trips_and_is_coalesced():
    x = dt.tensor(DENSE)
    s = x.to_sparse()
    assert s.is_coalesced() and s.to_sparse() is s and x.to_dense() is x
    assert s.indices().tolist() == [[0, 1, 2], [1, 3, 0]] and s.values().tolist() == [6, 3, 6]
    rows = dt.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]).to_sparse(1)
    assert rows.indices().tolist() == [[1]] and rows.values().tolist() == [[1, 0]]
    with pytest.raises(RuntimeError, match=r"sparse_dim must be in \[1, 2\]"):
        x.to_sparse(3)


def test_repr_matches_torch_layout():
    s = dt.tensor([[1.0, 0, 2], [0, 3, 0]]).to_sparse().requires_grad_()
    assert repr(s) == ("tensor(indices=tensor([[0, 0, 1],\n"
                       "                       [0, 2, 1]]),\n"
                       "       values=tensor([1., 2., 3.]),\n"
                       "       size=(2, 3), nnz=3, layout=dtrain.sparse_coo, requires_grad=True)")


@pytest.mark.parametrize("product", [
    dt.sparse.mm, dt.spmm, dt.mm, dt.matmul, lambda a, b: a @ b, lambda a, b: a.mm(b)])
def test_sparse_dense_product_equals_dense_in_values_and_gradients(product):
    rng = np.random.default_rng(0)
    d = rng.standard_normal((4, 3))
    vals = dt.tensor(VALS, dtype=dt.float64, requires_grad=True)
    x = dt.tensor(d, requires_grad=True)
    out = product(dt.sparse_coo_tensor(IDX, vals, (3, 4)), x)
    weights = dt.tensor(rng.standard_normal((3, 3)))
    (out * weights).sum().backward()

    dense = dt.tensor(DENSE, dtype=dt.float64, requires_grad=True)
    x_ref = dt.tensor(d, requires_grad=True)
    ref = dense @ x_ref
    (ref * weights).sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), x_ref.grad.numpy(), rtol=1e-12)
    # each stored value's gradient is the dense gradient at its position (repeats included)
    rows, cols = np.array(IDX)
    np.testing.assert_allclose(vals.grad.numpy(), dense.grad.numpy()[rows, cols], rtol=1e-12)


def test_leaf_sparse_tensor_gets_a_sparse_grad():
    a = dt.sparse_coo_tensor([[0, 0, 1], [0, 2, 1]], [1.0, 2.0, 3.0], (2, 3),
                             requires_grad=True)
    b = dt.tensor([[0, 1.0], [2, 0], [0, 0]], requires_grad=True)
    dt.sparse.mm(a, b).sum().backward()
    assert a.requires_grad and a.is_leaf and a.grad.is_sparse
    assert a.grad._indices().tolist() == [[0, 0, 1], [0, 2, 1]]
    assert a.grad._values().tolist() == [1, 0, 2] and b.grad.tolist() == [[1, 1], [3, 3], [2, 2]]


def test_sparse_sum():
    s = dt.sparse_coo_tensor(IDX, VALS, (3, 4))
    assert dt.sparse.sum(s).item() == 15.0
    rows = dt.sparse.sum(s, 1)
    assert rows.is_sparse and rows.shape == (3,) and rows.is_coalesced()
    assert rows.to_dense().tolist() == [6, 3, 6]
    both = dt.sparse.sum(s, (0, 1))
    assert not both.is_sparse and both.item() == 15.0
    hybrid = dt.sparse_coo_tensor([[0, 2, 0]], [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], (3, 2))
    assert dt.sparse.sum(hybrid, 1).to_dense().tolist() == [14, 0, 7]
    assert dt.sparse.sum(hybrid, 0).tolist() == [9, 12]
    with pytest.raises(RuntimeError, match="sparse.sum: expected a sparse COO tensor"):
        dt.sparse.sum(dt.ones(2))


def test_conversions_keep_sparsity():
    s = dt.sparse_coo_tensor(IDX, VALS, (3, 4))
    d = s.double()
    assert d.is_sparse and d.dtype == dt.float64 and d._indices().tolist() == IDX
    assert s.cpu() is s and s.to("cpu") is s and s.float() is s


def test_errors_for_what_sparse_tensors_do_not_support():
    s = dt.sparse_coo_tensor(IDX, VALS, (3, 4))
    with pytest.raises(RuntimeError, match="needs a dense .* call .to_dense"):
        dt.relu(s)
    with pytest.raises(RuntimeError, match="needs a dense"):
        dt.ones(2, 3) @ s
    with pytest.raises(RuntimeError, match="sparse @ sparse is not supported"):
        dt.sparse.mm(s, s)
    with pytest.raises(RuntimeError, match=r"shapes \(3, 4\) \(sparse\) and \(3, 2\)"):
        s @ dt.ones(3, 2)
    with pytest.raises(RuntimeError, match="values are dtrain.float32 but the dense matrix is "
                                           "dtrain.float64"):
        s @ dt.ones(4, 2, dtype=dt.float64)
    with pytest.raises(RuntimeError, match="sparse matrix .sparse_dim 2, dense_dim 0."):
        dt.sparse_coo_tensor([[0, 1]], [1.0, 2.0]) @ dt.ones(2, 2)
