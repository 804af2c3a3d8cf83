"""nansum/nanmean, quantile/nanquantile, histc, bincount, searchsorted/bucketize, isin and
logspace: values against NumPy and PyTorch's documented examples, dtypes and errors.
Gradients are checked by the registry tests."""
import math

import numpy as np
import pytest

import dtrain as dt

RNG = np.random.default_rng(11)
NAN = math.nan


def t(a, **kw):
    return dt.tensor(np.asarray(a, dtype=np.float64), **kw)


@pytest.mark.parametrize("dim, keepdim", [(None, False), (1, False), (-1, True), ((0, 2), True)])
def test_nansum_nanmean_match_numpy(dim, keepdim):
    a = RNG.normal(size=(3, 4, 5))
    a[RNG.random(a.shape) < 0.3] = NAN
    axis = dim if dim is None or isinstance(dim, tuple) else dim
    np.testing.assert_allclose(dt.nansum(t(a), dim, keepdim).numpy(),
                               np.nansum(a, axis=axis, keepdims=keepdim), rtol=1e-13)
    np.testing.assert_allclose(t(a).nanmean(dim, keepdim=keepdim).numpy(),
                               np.nanmean(a, axis=axis, keepdims=keepdim), rtol=1e-13)


def test_nan_reductions_gradient_dtypes_and_errors():
    x = t([1.0, NAN, 3.0], requires_grad=True)
    dt.nanmean(x).backward()
    assert x.grad.tolist() == [0.5, 0.0, 0.5]
    assert dt.nansum(dt.tensor([1, 2], dtype=dt.int32)).dtype == dt.int64
    assert np.isnan(dt.nanmean(t([NAN, NAN])).item())
    with pytest.raises(RuntimeError, match="nanmean.*floating point dtype but got .*int64"):
        dt.nanmean(dt.tensor([1, 2]))


@pytest.mark.parametrize("interpolation", ["linear", "lower", "higher", "midpoint", "nearest"])
@pytest.mark.parametrize("dim, keepdim", [(None, False), (None, True), (0, False), (-1, True)])
def test_quantile_matches_numpy(interpolation, dim, keepdim):
    a = RNG.normal(size=(4, 7))
    q = np.array([0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
    for qs in (q, 0.3):
        got = dt.quantile(t(a), t(qs) if isinstance(qs, np.ndarray) else qs, dim, keepdim,
                          interpolation=interpolation)
        want = np.quantile(a, qs, axis=dim, keepdims=keepdim, method=interpolation)
        assert got.shape == want.shape
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-13, atol=1e-15)


def test_quantile_nan_rules_and_gradient():
    a = np.array([[1.0, NAN, 3.0, 2.0], [4.0, 0.0, 8.0, 6.0], [NAN, NAN, NAN, NAN]])
    q = t([0.25, 0.5])
    got = dt.quantile(t(a), q, dim=1)
    assert np.isnan(got.numpy()[:, [0, 2]]).all()  # any NaN in a row: NaN
    np.testing.assert_allclose(got.numpy()[:, 1], np.quantile(a[1], [0.25, 0.5]))
    nq = t(a).nanquantile(q, dim=1).numpy()
    np.testing.assert_allclose(nq[:, :2], np.nanquantile(a[:2], [0.25, 0.5], axis=1))
    assert np.isnan(nq[:, 2]).all()
    x = t([3.0, 1.0, 4.0, 1.5], requires_grad=True)  # sorted 1, 1.5, 3, 4: rank 1.5 for q=.5
    x.quantile(0.5).backward()
    assert x.grad.tolist() == [0.5, 0.0, 0.0, 0.5]
    inf = dt.quantile(t([1.0, math.inf]), 1.0, interpolation="lower")
    assert inf.item() == math.inf


def test_quantile_errors():
    x = t([1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"q values must be in the range \[0, 1\]"):
        dt.quantile(x, 1.5)
    with pytest.raises(RuntimeError, match="must be either float or double"):
        dt.quantile(dt.tensor([1, 2]), 0.5)
    with pytest.raises(RuntimeError, match="q tensor must be same dtype"):
        dt.quantile(x, dt.tensor([0.5]))
    with pytest.raises(ValueError, match="interpolation must be one of"):
        dt.quantile(x, 0.5, interpolation="cubic")
    with pytest.raises(IndexError, match="Dimension out of range"):
        dt.quantile(x, 0.5, dim=1)


def test_histc():
    assert dt.histc(dt.tensor([1.0, 2, 1]), bins=4, min=0, max=3).tolist() == [0, 2, 1, 0]
    a = RNG.normal(size=1000)
    got = dt.histc(t(a), bins=10, min=-2, max=2)
    want, _ = np.histogram(a, bins=10, range=(-2, 2))
    assert got.dtype == dt.float64 and got.tolist() == want.tolist()
    auto = dt.tensor(a.astype(np.float32)).histc(7)  # min == max: the data's range
    assert auto.dtype == dt.float32 and auto.sum().item() == 1000
    assert dt.histc(dt.tensor([2.0, 2.0]), bins=2).tolist() == [0.0, 2.0]  # range [1, 3]
    with pytest.raises(RuntimeError, match="max must be larger than min"):
        dt.histc(dt.tensor([1.0]), min=2, max=1)
    with pytest.raises(RuntimeError, match="bins must be > 0"):
        dt.histc(dt.tensor([1.0]), bins=0)


def test_bincount():
    x = dt.tensor([4, 3, 6, 3, 4])
    assert dt.bincount(x).tolist() == [0, 0, 0, 2, 2, 0, 1]
    assert dt.bincount(x).dtype == dt.int64
    w = dt.linspace(0, 1, steps=5)
    got = x.bincount(w)
    assert got.dtype == dt.float32 and got.tolist() == [0, 0, 0, 1.0, 1.0, 0, 0.5]
    assert dt.bincount(x, t([1, 1, 1, 1, 1])).dtype == dt.float64
    assert dt.bincount(dt.tensor([], dtype=dt.int64), minlength=3).tolist() == [0, 0, 0]
    for bad in (dt.tensor([-1, 2]), dt.tensor([[1]]), dt.tensor([1.0])):
        with pytest.raises(RuntimeError, match="1-d non-negative integral"):
            dt.bincount(bad)


def test_searchsorted_and_bucketize():
    seq = dt.tensor([[1, 3, 5, 7, 9], [2, 4, 6, 8, 10]])
    v = dt.tensor([[3, 6, 9], [3, 6, 9]])
    assert dt.searchsorted(seq, v).tolist() == [[1, 3, 4], [1, 2, 4]]  # torch docs
    assert dt.searchsorted(seq, v, right=True).tolist() == [[2, 3, 5], [1, 3, 4]]
    assert dt.searchsorted(seq, v, side="right").tolist() == [[2, 3, 5], [1, 3, 4]]
    assert dt.searchsorted(seq[0], v).tolist() == [[1, 3, 4], [1, 3, 4]]
    assert dt.searchsorted(seq[0], 5).item() == 2
    out = dt.searchsorted(seq[0], v, out_int32=True)
    assert out.dtype == dt.int32
    unsorted = dt.tensor([9, 1, 5])
    assert dt.searchsorted(unsorted, dt.tensor([4, 10]),
                           sorter=dt.tensor([1, 2, 0])).tolist() == [1, 3]
    a = RNG.normal(size=(3, 8))
    s = np.sort(a[:, :4], axis=-1)
    got = dt.searchsorted(t(s), t(a), right=True).numpy()
    assert got.tolist() == [np.searchsorted(r, x, "right").tolist() for r, x in zip(s, a)]
    b = dt.tensor([1, 3, 5, 7, 9])
    assert dt.bucketize(v, b).tolist() == [[1, 3, 4], [1, 3, 4]]
    assert dt.bucketize(v, b, right=True).tolist() == [[2, 3, 5], [2, 3, 5]]
    with pytest.raises(RuntimeError, match="side and right can't be set to opposites"):
        dt.searchsorted(b, v, right=True, side="left")
    with pytest.raises(RuntimeError, match="side can only be 'left' or 'right'"):
        dt.searchsorted(b, v, side="up")
    with pytest.raises(RuntimeError, match="first N-1 dimensions .* must match"):
        dt.searchsorted(seq, dt.tensor([[1], [2], [3]]))
    with pytest.raises(RuntimeError, match="boundaries tensor must be 1 dimension"):
        dt.bucketize(v, seq)


def test_isin():
    x = dt.tensor([[1, 2], [3, 4]])
    assert dt.isin(x, dt.tensor([2, 3])).tolist() == [[False, True], [True, False]]
    assert x.isin(dt.tensor([2, 3]), invert=True).tolist() == [[True, False], [False, True]]
    assert dt.isin(3, dt.tensor([2, 3])).item() is True
    assert dt.isin(x, 4).tolist() == [[False, False], [False, True]]


def test_logspace():
    assert dt.logspace(-10, 10, steps=5).tolist() == pytest.approx([1e-10, 1e-5, 1, 1e5, 1e10])
    assert dt.logspace(0, 3, 4, base=2).tolist() == [1, 2, 4, 8]
    assert dt.logspace(0, 1, 2).dtype == dt.float32
    assert dt.logspace(0, 1, 2, dtype=dt.float64, requires_grad=True).requires_grad
