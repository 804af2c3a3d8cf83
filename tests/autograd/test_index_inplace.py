"""The in-place indexing family (index_add/copy/fill/put, put, masked_scatter, scatter,
scatter_reduce) against NumPy, their in-place variants (also on views while recording),
gradients at ties and zeros, and PyTorch's errors."""
import numpy as np
import pytest

import dtrain as dt

rng = np.random.default_rng(0)


def _t(*shape):
    return dt.tensor(rng.standard_normal(shape))


def _along(arr, dim):
    return (slice(None),) * (dim % arr.ndim)


@pytest.mark.parametrize("shape, dim", [((5,), 0), ((4, 3), 0), ((3, 4), 1), ((2, 4, 3), -2)])
def test_index_add_copy_fill_against_numpy(shape, dim):
    x = _t(*shape)
    n = shape[dim]
    idx = np.array([n - 1, 0, n - 1])  # a repeat: index_add accumulates it
    src_shape = list(shape)
    src_shape[dim] = 3
    src = _t(*src_shape)
    want = x.numpy().copy()
    np.add.at(want, _along(want, dim) + (idx,), 2.5 * src.numpy())
    np.testing.assert_allclose(dt.index_add(x, dim, dt.tensor(idx), src, alpha=2.5).numpy(), want)
    uniq = np.array([n - 1, 0])
    src2 = dt.tensor(src.numpy()[_along(want, dim) + (slice(0, 2),)])
    want = x.numpy().copy()
    want[_along(want, dim) + (uniq,)] = src2.numpy()
    np.testing.assert_array_equal(x.index_copy(dim, dt.tensor(uniq), src2).numpy(), want)
    want = x.numpy().copy()
    want[_along(want, dim) + (uniq,)] = -7.0
    np.testing.assert_array_equal(x.index_fill(dim, dt.tensor(uniq), -7.0).numpy(), want)
    np.testing.assert_array_equal(x.index_fill(dim, dt.tensor(uniq), dt.tensor(-7.0)).numpy(),
                                  want)
    y = x.clone()
    assert y.index_fill_(dim, dt.tensor(uniq), -7.0) is y
    np.testing.assert_array_equal(y.numpy(), want)


def test_index_put_put_and_masked_scatter_against_numpy():
    x = _t(3, 4)
    rows, cols = np.array([0, 2, 0]), np.array([1, 3, 1])
    v = _t(3)
    want = x.numpy().copy()
    np.add.at(want, (rows, cols), v.numpy())
    got = x.index_put((dt.tensor(rows), dt.tensor(cols)), v, accumulate=True)
    np.testing.assert_allclose(got.numpy(), want)
    want = x.numpy().copy()
    want[[2, 0]] = 9.0
    np.testing.assert_array_equal(
        dt.index_put(x, (dt.tensor([2, 0]),), dt.tensor(9.0, dtype=dt.float64)).numpy(), want)
    mask = x.numpy() > 0
    y = x.clone()
    y.index_put_((dt.tensor(mask),), dt.tensor(0.0, dtype=dt.float64))
    np.testing.assert_array_equal(y.numpy(), np.where(mask, 0.0, x.numpy()))
    flat = dt.tensor([0, -1, 5, 5])
    src = dt.tensor([1.0, 2.0, 3.0, 4.0], dtype=dt.float64)
    want = x.numpy().copy().ravel()
    np.add.at(want, [0, -1, 5, 5], src.numpy())
    np.testing.assert_allclose(x.put(flat, src, accumulate=True).numpy(), want.reshape(3, 4))
    z = dt.zeros(2, 3, dtype=dt.int64)
    z.put_(dt.tensor([[5, 0]]), dt.tensor([7, 8]))
    assert z.tolist() == [[8, 0, 0], [0, 0, 7]]
    m = dt.tensor([True, False, True, True])  # broadcast over the rows
    src = dt.arange(20.0).double().reshape(4, 5)
    want = x.numpy().copy()
    want[np.broadcast_to(m.numpy(), (3, 4))] = np.arange(9.0)
    np.testing.assert_array_equal(x.masked_scatter(m, src).numpy(), want)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_scatter_and_scatter_reduce_against_numpy(dim):
    x = _t(3, 4)
    d = dim % 2
    index = rng.integers(0, x.shape[d], (2, 3))
    src = _t(3, 4)
    idx = dt.tensor(index)
    picks = tuple(index if k == d else np.arange(n).reshape((-1, 1) if k == 0 else (1, -1))
                  for k, n in enumerate(index.shape))
    block = src.numpy()[:2, :3]
    for reduce, ufunc in (("sum", np.add), ("prod", np.multiply), ("amax", np.maximum),
                          ("amin", np.minimum)):
        want = x.numpy().copy()
        ufunc.at(want, picks, block)
        np.testing.assert_allclose(x.scatter_reduce(dim, idx, src, reduce).numpy(), want)
        want = x.numpy().copy()
        want[picks] = {"sum": 0.0, "prod": 1.0, "amax": -np.inf, "amin": np.inf}[reduce]
        ufunc.at(want, picks, block)
        np.testing.assert_allclose(
            dt.scatter_reduce(x, dim, idx, src, reduce, include_self=False).numpy(), want)
    total, count = x.numpy().copy(), np.ones((3, 4))
    np.add.at(total, picks, block)
    np.add.at(count, picks, 1.0)
    np.testing.assert_allclose(x.scatter_reduce(dim, idx, src, "mean").numpy(), total / count)
    want = x.numpy().copy()
    want[picks] = 4.0
    np.testing.assert_array_equal(x.scatter(dim, idx, 4.0).numpy(), want)
    np.testing.assert_array_equal(dt.scatter(x, dim, idx, value=4.0).numpy(), want)
    want = x.numpy().copy()
    np.add.at(want, picks, block)
    np.testing.assert_allclose(x.scatter(dim, idx, src, reduce="add").numpy(), want)
    want = x.numpy().copy()
    np.multiply.at(want, picks, 2.0)
    np.testing.assert_allclose(x.clone().scatter_(dim, idx, 2.0, reduce="multiply").numpy(), want)


def test_scatter_writes_the_classic_one_hot():
    labels = dt.tensor([2, 0, 1])
    one_hot = dt.zeros(3, 4).scatter_(1, labels.unsqueeze(1), 1.0)
    assert one_hot.tolist() == [[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0]]


def test_scatter_reduce_integer_mean_floors_and_amax_shares_ties():
    x = dt.tensor([10, 0, 5])
    got = x.scatter_reduce(0, dt.tensor([0, 0, 1]), dt.tensor([1, 2, 7]), "mean")
    assert got.tolist() == [4, 3, 5]  # (10 + 1 + 2) // 3, (0 + 7) // 2
    a = dt.tensor([1.0, 5.0], dtype=dt.float64, requires_grad=True)
    s = dt.tensor([5.0, 2.0, 5.0], dtype=dt.float64, requires_grad=True)
    out = a.scatter_reduce(0, dt.tensor([1, 1, 1]), s, "amax")
    assert out.tolist() == [1.0, 5.0]
    out.backward(dt.tensor([1.0, 3.0], dtype=dt.float64))
    assert a.grad.tolist() == [1.0, 1.0] and s.grad.tolist() == [1.0, 0.0, 1.0]


def test_scatter_reduce_prod_gradient_with_zeros():
    a = dt.tensor([2.0, 3.0, 4.0], dtype=dt.float64, requires_grad=True)
    s = dt.tensor([0.0, 5.0, 0.0, 0.0, 6.0], dtype=dt.float64, requires_grad=True)
    # group 0: 2 * 0 * 5 (one zero); group 1: 3 * 0 * 0 (two zeros); group 2: 4 * 6
    out = a.scatter_reduce(0, dt.tensor([0, 0, 1, 1, 2]), s, "prod")
    assert out.tolist() == [0.0, 0.0, 24.0]
    out.sum().backward()
    assert a.grad.tolist() == [0.0, 0.0, 6.0]
    assert s.grad.tolist() == [10.0, 0.0, 0.0, 0.0, 4.0]


def test_in_place_variants_record_on_views():
    w = dt.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    v = dt.tensor(rng.standard_normal((3, 2)), requires_grad=True)
    y = w * 1.0
    y[:, 1:].index_add_(1, dt.tensor([0, 2]), v, alpha=3.0)  # a view of y
    (y * y).sum().backward()
    want_y = w.detach().numpy().copy()
    want_y[:, [1, 3]] += 3 * v.detach().numpy()
    np.testing.assert_allclose(y.detach().numpy(), want_y)
    np.testing.assert_allclose(w.grad.numpy(), 2 * want_y)
    np.testing.assert_allclose(v.grad.numpy(), 6 * want_y[:, [1, 3]])
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        w.scatter_(0, dt.tensor([[0]]), 1.0)
    z = w * 1.0
    z.masked_scatter_(dt.tensor([[True, False, False, False]]).expand(3, 4), v)
    z.sum().backward()
    assert v.grad.tolist() == (6 * want_y[:, [1, 3]] + np.array([[1, 1], [1, 0], [0, 0]])).tolist()


@pytest.mark.parametrize("call, error, match", [
    (lambda x: x.index_add(0, dt.tensor([0, 1]), dt.ones(3, 4)), RuntimeError,
     r"Number of indices \(2\) should be equal to source.size\(dim\) \(3\)"),
    (lambda x: x.index_add(0, dt.tensor([0]), dt.ones(1, 3)), RuntimeError,
     "source tensor shape must match self tensor shape"),
    (lambda x: x.index_copy(0, dt.tensor([0]), dt.ones(1, 4, dtype=dt.float64)), RuntimeError,
     r"self \(dtrain.float32\) and source \(dtrain.float64\) must have the same scalar type"),
    (lambda x: x.index_fill(0, dt.tensor([[0]]), 1.0), IndexError, "supposed to be a vector"),
    (lambda x: x.index_fill(0, dt.tensor([0]), dt.ones(2)), RuntimeError,
     "only supports a 0-dimensional value tensor"),
    (lambda x: x.index_put((dt.tensor([0]),), dt.ones(4, dtype=dt.float64)), RuntimeError,
     "Index put requires the source and destination dtypes match"),
    (lambda x: x.put(dt.tensor([0, 1]), dt.ones(3)), RuntimeError,
     "same number of elements, but got source.numel"),
    (lambda x: x.masked_scatter(dt.ones(3, 4, dtype=dt.int64), dt.ones(12)), RuntimeError,
     "only supports boolean masks"),
    (lambda x: x.masked_scatter(dt.ones(3, 4, dtype=dt.bool), dt.ones(5)), RuntimeError,
     r"Number of elements of source \(5\) < number of ones in mask \(12\)"),
    (lambda x: x.scatter(1, dt.tensor([[0]]), dt.ones(1, 1), reduce="max"), RuntimeError,
     "reduce argument must be either add or multiply"),
    (lambda x: x.scatter_reduce(1, dt.tensor([[0]]), dt.ones(1, 1), "max"), RuntimeError,
     "reduce argument must be either sum, prod, mean, amax, amin"),
    (lambda x: x.scatter(1, dt.tensor([[0]]), dt.ones(1, 1, dtype=dt.float64)), RuntimeError,
     "Expected self.dtype to be equal to src.dtype"),
    (lambda x: x.scatter(1, dt.tensor([0]), 1.0), RuntimeError,
     "Index tensor must have the same number of dimensions"),
    (lambda x: x.scatter(1, dt.tensor([[0]])), TypeError, "expected src"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(dt.zeros(3, 4))
