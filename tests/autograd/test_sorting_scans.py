"""Sorting, selection by rank and scans against NumPy: sort/argsort/msort (stable, descending,
NaN), topk, kthvalue, median/nanmedian (lower median), mode, unique/unique_consecutive,
cumsum/cumprod (and the gradient at zeros), cummax/cummin, logcumsumexp, diff, trapezoid."""
import numpy as np
import pytest

import dtrain as dt
from dtrain.core import backend

RNG = np.random.default_rng(0)
SHAPES_DIMS = [((5,), 0), ((3, 4), 1), ((3, 4), 0), ((2, 3, 4), -1), ((2, 3, 4), -2)]


def _t(a, **kw):
    return dt.tensor(a, **kw)


@pytest.mark.parametrize("shape, dim", SHAPES_DIMS)
def test_sort_argsort_topk_kthvalue_match_numpy(shape, dim):
    a = RNG.integers(0, 4, shape).astype(np.float64)  # many ties: stability shows
    x = _t(a)
    v, i = dt.sort(x, dim)
    np.testing.assert_array_equal(i.numpy(), np.argsort(a, dim, kind="stable"))
    np.testing.assert_array_equal(v.numpy(), np.sort(a, dim))
    assert i.dtype == dt.int64 and x.argsort(dim).tolist() == i.tolist()
    vd, idd = x.sort(dim=dim, descending=True, stable=True)
    np.testing.assert_array_equal(vd.numpy(), -np.sort(-a, dim))
    np.testing.assert_array_equal(idd.numpy(), np.argsort(-a, dim, kind="stable"))
    k = min(3, a.shape[dim])
    top = x.topk(k, dim)
    np.testing.assert_array_equal(top.values.numpy(),
                                  np.take(-np.sort(-a, dim), range(k), axis=dim))
    np.testing.assert_array_equal(np.take_along_axis(a, top.indices.numpy(), dim),
                                  top.values.numpy())
    low = dt.topk(x, k, dim, largest=False)
    np.testing.assert_array_equal(low[0].numpy(), np.take(np.sort(a, dim), range(k), axis=dim))
    kv = x.kthvalue(2, dim, keepdim=True)
    np.testing.assert_array_equal(kv.values.numpy(), np.take(np.sort(a, dim), [1], axis=dim))
    assert kv.indices.shape == kv.values.shape


def test_sort_hand_values_nan_and_misuse():
    x = _t([3.0, float("nan"), 1.0, 3.0, 2.0])
    v, i = x.sort()
    assert i.tolist() == [2, 4, 0, 3, 1] and np.isnan(v[-1].item())
    v, i = x.sort(descending=True)
    assert i.tolist() == [1, 0, 3, 4, 2]  # NaN largest; equal 3s keep their order
    assert dt.msort(_t([[2, 1], [0, 5]])).tolist() == [[0, 1], [2, 5]]
    assert dt.argsort(_t(7.0)).item() == 0 and dt.sort(_t(7.0)).values.item() == 7.0
    with pytest.raises(RuntimeError, match="selected index k out of range"):
        x.topk(6)
    with pytest.raises(RuntimeError, match="kthvalue.*out of range"):
        x.kthvalue(0)
    with pytest.raises(IndexError, match="Dimension out of range"):
        x.sort(1)


def test_sort_values_carry_gradients_to_the_picked_elements():
    x = _t([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]], requires_grad=True)
    v, _ = x.topk(2, dim=1)
    (v * _t([1.0, 10.0])).sum().backward()
    assert x.grad.tolist() == [[1.0, 0.0, 10.0], [0.0, 1.0, 10.0]]
    assert not x.argsort().requires_grad and x.sort()[1].grad_fn is None


def test_median_is_the_lower_median():
    a = np.array([[4.0, 1.0, 3.0, 2.0], [9.0, 8.0, 7.0, 6.0], [1.0, 1.0, 5.0, 5.0]])
    x = _t(a)
    assert x.median().item() == 4.0  # 12 values: the 6th smallest, not the mean of two
    m = x.median(1)
    assert m.values.tolist() == [2.0, 7.0, 1.0]
    np.testing.assert_array_equal(a[np.arange(3), m.indices.numpy()], m.values.numpy())
    assert dt.median(x, 0, keepdim=True).values.tolist() == [[4.0, 1.0, 5.0, 5.0]]
    assert dt.median(x, -2).values.tolist() == [4.0, 1.0, 5.0, 5.0]
    assert np.isnan(dt.median(dt.zeros(0)).item())


def test_nanmedian_skips_nan():
    nan = float("nan")
    x = _t([[1.0, nan, 3.0, 2.0], [nan, nan, nan, nan], [5.0, 4.0, nan, nan]])
    v, i = x.nanmedian(1)
    assert v[0].item() == 2.0 and np.isnan(v[1].item()) and v[2].item() == 4.0
    assert i[0].item() == 3 and i[2].item() == 1
    assert dt.nanmedian(x).item() == 3.0  # of [1, 2, 3, 4, 5]
    assert dt.nanmedian(_t([1.0, 2.0])).item() == dt.median(_t([1.0, 2.0])).item() == 1.0
    v, i = x.median(1)  # median propagates NaN, with the index of one
    assert np.isnan(v.numpy()).all() and np.isnan(x.numpy()[[0, 1, 2], i.numpy()]).all()
    assert np.isnan(x.median().item())
    assert dt.median(_t([[5, 1, 3, 2]]), 1).values.tolist() == [2]


def test_mode_most_frequent_smallest_on_ties_last_index():
    x = _t([[1, 2, 2, 3, 3], [5, 5, 4, 4, 4], [7, 6, 8, 9, 0]])
    v, i = x.mode(1)
    assert v.tolist() == [2, 4, 0] and i.tolist() == [2, 4, 4]
    v, i = dt.mode(x.t(), 0, keepdim=True)
    assert v.tolist() == [[2, 4, 0]] and i.tolist() == [[2, 4, 4]]


def test_unique_and_unique_consecutive():
    x = _t([[3, 1, 3], [2, 1, 1]])
    u, inv, cnt = dt.unique(x, return_inverse=True, return_counts=True)
    assert u.tolist() == [1, 2, 3] and cnt.tolist() == [3, 1, 2]
    assert inv.tolist() == [[2, 0, 2], [1, 0, 0]] and inv.dtype == dt.int64
    assert x.unique().tolist() == [1, 2, 3]
    rows = _t([[1, 2], [0, 5], [1, 2]])
    u, inv = rows.unique(dim=0, return_inverse=True)
    assert u.tolist() == [[0, 5], [1, 2]] and inv.tolist() == [1, 0, 1]
    y = _t([1, 1, 2, 2, 3, 1, 1, 2])
    u, inv, cnt = y.unique_consecutive(return_inverse=True, return_counts=True)
    assert u.tolist() == [1, 2, 3, 1, 2] and cnt.tolist() == [2, 2, 1, 2, 1]
    assert inv.tolist() == [0, 0, 1, 1, 2, 3, 3, 4]
    cols = _t([[1, 1, 2], [3, 3, 4]])
    assert dt.unique_consecutive(cols, dim=1).tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize("shape, dim", SHAPES_DIMS)
def test_scans_match_numpy(shape, dim):
    a = RNG.uniform(-1, 1, shape)
    x = _t(a)
    np.testing.assert_allclose(x.cumsum(dim).numpy(), np.cumsum(a, dim))
    np.testing.assert_allclose(dt.cumprod(x, dim).numpy(), np.cumprod(a, dim))
    v, i = x.cummax(dim)
    np.testing.assert_array_equal(v.numpy(), np.maximum.accumulate(a, dim))
    np.testing.assert_array_equal(np.take_along_axis(a, i.numpy(), dim), v.numpy())
    np.testing.assert_array_equal(dt.cummin(x, dim)[0].numpy(), np.minimum.accumulate(a, dim))
    np.testing.assert_allclose(x.logcumsumexp(dim).numpy(),
                               np.logaddexp.accumulate(a, axis=dim))
    np.testing.assert_allclose(x.diff(dim=dim).numpy(), np.diff(a, axis=dim))
    np.testing.assert_allclose(dt.trapezoid(x, dim=dim).numpy(), np.trapezoid(a, axis=dim))


def test_scan_dtypes_indices_and_ties():
    assert dt.cumsum(_t([1, 2, 3], dtype=dt.int32), 0).dtype == dt.int64
    assert _t([True, True, False]).cumsum(0).tolist() == [1, 2, 2]
    assert _t([1, 2]).cumsum(0, dtype=dt.float32).dtype == dt.float32
    v, i = _t([1.0, 3.0, 3.0, 2.0, 5.0]).cummax(0)
    assert v.tolist() == [1.0, 3.0, 3.0, 3.0, 5.0] and i.tolist() == [0, 1, 2, 2, 4]
    v, i = _t([2.0, 1.0, 1.0, 4.0]).cummin(0)
    assert v.tolist() == [2.0, 1.0, 1.0, 1.0] and i.tolist() == [0, 1, 2, 2]
    v, i = _t([1.0, float("nan"), 3.0, float("nan"), 0.0]).cummax(0)
    assert np.isnan(v.numpy()[1:]).all() and i.tolist() == [0, 1, 1, 3, 3]
    with pytest.raises(TypeError, match="missing required argument 'dim'"):
        dt.cumsum(_t([1.0]), None)
    wide = _t([-1000.0, 0.0, 800.0, float("-inf"), -5.0])
    np.testing.assert_allclose(wide.logcumsumexp(0).numpy(),
                               np.logaddexp.accumulate(wide.numpy()))
    assert dt.logcumsumexp(_t(-1000.0), 0).item() == -1000.0
    y = _t([1.0, 2.0, 3.0])
    y.cumsum_(0)
    assert y.tolist() == [1.0, 3.0, 6.0]


def test_cumprod_gradient_with_zeros_is_exact():
    a = np.array([2.0, 0.0, 3.0, 0.0, 5.0])
    x = _t(a, requires_grad=True)
    g = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    x.cumprod(0).backward(_t(g))
    expected = [sum(g[j] * np.prod([a[i] for i in range(j + 1) if i != k])
                    for j in range(k, 5)) for k in range(5)]
    assert x.grad.tolist() == expected == [1.0, 2 * 2 + 3 * 2 * 3, 0.0, 0.0, 0.0]


def test_diff_and_trapezoid_options():
    x = _t([1.0, 4.0, 9.0, 16.0])
    assert dt.diff(x, 2).tolist() == [2.0, 2.0]
    assert x.diff(prepend=_t([0.0]), append=_t([20.0])).tolist() == [1.0, 3.0, 5.0, 7.0, 4.0]
    assert _t([True, False, False]).diff().tolist() == [True, False]
    pts = _t([0.0, 1.0, 3.0, 6.0])
    assert dt.trapezoid(x, pts).item() == np.trapezoid([1, 4, 9, 16], [0, 1, 3, 6])
    assert dt.trapz(x, dx=0.5).item() == 0.5 * (2.5 + 6.5 + 12.5)
    assert dt.trapezoid(_t([[1.0, 2.0], [3.0, 4.0]]), dim=0).tolist() == [2.0, 3.0]


class _OtherBackend:
    """NumPy under another name: takes the path of a backend without ufunc.accumulate."""

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_running_extremes_log_step_scan_equals_accumulate(axis):
    a = RNG.integers(0, 20, (3, 11, 4))
    for fn in ("maximum", "minimum"):
        np.testing.assert_array_equal(backend.running(_OtherBackend(), fn, a, axis),
                                      getattr(np, fn).accumulate(a, axis=axis))
