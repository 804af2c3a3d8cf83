"""Elementwise math (autograd/ops/special.py): values against NumPy and the math module,
PyTorch's special values and dtypes, methods and in-place variants. Gradients are checked by
the registry tests."""
import math

import numpy as np
import pytest

import dtrain as dt

RNG = np.random.default_rng(7)


def t(a, **kw):
    return dt.tensor(np.asarray(a, dtype=np.float64), **kw)


UNARY = {  # name: (NumPy reference, low, high)
    "tan": (np.tan, -1.2, 1.2), "sinh": (np.sinh, -3, 3), "cosh": (np.cosh, -3, 3),
    "asin": (np.arcsin, -1, 1), "acos": (np.arccos, -1, 1), "atan": (np.arctan, -5, 5),
    "asinh": (np.arcsinh, -5, 5), "acosh": (np.arccosh, 1, 5), "atanh": (np.arctanh, -0.99, 0.99),
    "expm1": (np.expm1, -3, 3), "log2": (np.log2, 0.01, 9), "log10": (np.log10, 0.01, 9),
    "exp2": (np.exp2, -4, 4), "deg2rad": (np.deg2rad, -400, 400),
    "rad2deg": (np.rad2deg, -7, 7),
    "frac": (lambda a: a - np.trunc(a), -5, 5), "sgn": (np.sign, -2, 2),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 2)])
def test_unary_matches_numpy(name, shape):
    ref, lo, hi = UNARY[name]
    a = RNG.uniform(lo, hi, shape)
    for got in (getattr(dt, name)(t(a)), getattr(t(a), name)()):
        np.testing.assert_allclose(got.numpy(), ref(a), rtol=1e-13, atol=1e-13)
    if name != "sgn":
        x = t(a)
        assert getattr(x, name + "_")() is x
        np.testing.assert_allclose(x.numpy(), ref(a), rtol=1e-13, atol=1e-13)


def test_arc_aliases_exact_powers_and_float32():
    x = dt.tensor([0.25, -0.5])
    assert dt.arcsin(x).dtype == dt.float32 and dt.equal(dt.arcsin(x), dt.asin(x))
    assert dt.equal(dt.arctan2(x, x), dt.atan2(x, x))
    assert dt.log2(dt.tensor([1024.0, 0.125])).tolist() == [10.0, -3.0]
    assert dt.log10(t([1000.0, 1e-5])).tolist() == [3.0, -5.0]
    assert dt.exp2(dt.tensor([3, -1])).tolist() == [8.0, 0.5]
    assert dt.exp2(dt.tensor([3])).dtype == dt.float32  # integer input: default float
    assert dt.expm1(t([1e-10])).item() == pytest.approx(1e-10, rel=1e-15)
    assert dt.frac(t([-2.75, 3.5])).tolist() == [-0.75, 0.5]
    ints = dt.tensor([1, 2, 3])  # integer input: the default float dtype, as torch
    for fn in (dt.sinh, dt.atan, dt.log2, dt.erf, dt.erfinv, dt.lgamma, dt.digamma):
        assert fn(ints).dtype == dt.float32
    assert dt.lgamma(ints).tolist() == pytest.approx([0.0, 0.0, math.log(2)], abs=1e-7)
    assert dt.polygamma(1, ints).dtype == dt.float32
    with pytest.raises(RuntimeError, match="can't be cast to the desired output type"):
        ints.sinh_()


def test_erf_family_against_math():
    xs = np.array([-6.0, -2.5, -1.0, -0.3, 0.0, 1e-8, 0.7, 1.9, 2.0, 3.3, 5.0, 9.0])
    np.testing.assert_allclose(dt.erf(t(xs)).numpy(), [math.erf(v) for v in xs], rtol=1e-14)
    np.testing.assert_allclose(dt.erfc(t(xs)).numpy(), [math.erfc(v) for v in xs], rtol=2e-14)
    assert t(xs).erfc().numpy()[-1] == pytest.approx(math.erfc(9.0), rel=1e-13)  # no 1 - erf
    assert dt.erfc(dt.tensor([0.5])).dtype == dt.float32


def test_erfinv_inverts_erf_to_float64_precision():
    ys = np.array([-5.5, -3.0, -1.2, -0.4, 0.0, 1e-9, 0.3, 0.6, 1.1, 2.4, 4.0, 5.9])
    xs = np.array([math.erf(v) for v in ys])
    got = dt.erfinv(t(xs)).numpy()
    np.testing.assert_allclose([math.erf(v) for v in got], xs, rtol=1e-15, atol=0)
    near_one = 1 - np.array([1e-3, 1e-8, 1e-13])  # erfc(erfinv(x)) = 1 - x, exact here
    np.testing.assert_allclose([math.erfc(v) for v in dt.erfinv(t(near_one)).numpy()],
                               1 - near_one, rtol=1e-13)
    assert dt.erfinv(t([1.0, -1.0])).tolist() == [math.inf, -math.inf]
    assert np.isnan(dt.erfinv(t([1.5, -2.0, math.nan])).numpy()).all()
    x = dt.tensor([0.5])
    assert x.erfinv().dtype == dt.float32 and x.erfinv_() is x


def test_lgamma_against_math_lgamma():
    xs = np.concatenate([RNG.uniform(-30, 30, 200), [0.5, 1.0, 2.0, 3.0, 1e-7, 171.5, 1e5,
                                                     -0.5, -2.5, -7.25]])
    expect = np.array([math.lgamma(v) for v in xs])
    np.testing.assert_allclose(dt.lgamma(t(xs)).numpy(), expect, rtol=1e-13, atol=4e-15)
    assert dt.lgamma(t([0.0, -1.0, -4.0, math.inf, -math.inf])).tolist() == [math.inf] * 5
    assert dt.tensor([[2.5]]).lgamma().shape == (1, 1)


def test_digamma_and_polygamma():
    euler = 0.5772156649015329
    assert dt.digamma(t([1.0])).item() == pytest.approx(-euler, rel=1e-15)
    assert dt.digamma(t([0.5])).item() == pytest.approx(-euler - 2 * math.log(2), rel=1e-15)
    xs = np.concatenate([RNG.uniform(-9.9, 30, 100), [0.01, 1e3]])
    xs = xs[np.abs(xs - np.round(xs)) > 0.05]
    h = 1e-5  # digamma is the derivative of lgamma: central differences of math.lgamma
    fd = np.array([(math.lgamma(v + h) - math.lgamma(v - h)) / (2 * h) for v in xs])
    np.testing.assert_allclose(dt.digamma(t(xs)).numpy(), fd, rtol=1e-7, atol=1e-7)
    d = dt.special.psi(t([0.0, -1.0, -3.0])).numpy()
    assert d[0] == -math.inf and np.isnan(d[1:]).all()
    zeta3 = 1.2020569031595942
    np.testing.assert_allclose(dt.polygamma(1, t([1.0, 0.5])).numpy(),
                               [math.pi ** 2 / 6, math.pi ** 2 / 2], rtol=1e-14)
    assert dt.polygamma(2, t([1.0])).item() == pytest.approx(-2 * zeta3, rel=1e-14)
    assert t([0.5]).polygamma(3).item() == pytest.approx(math.pi ** 4, rel=1e-14)
    assert dt.polygamma(0, t([3.7])).item() == dt.digamma(t([3.7])).item()
    # psi'(x) at negative x: the recurrence psi'(x) = psi'(x + 1) + 1 / x^2
    assert dt.polygamma(1, t([-2.5])).item() == pytest.approx(
        dt.polygamma(1, t([-1.5])).item() + 1 / 2.5 ** 2, rel=1e-13)
    with pytest.raises(RuntimeError, match="negative n"):
        dt.polygamma(-1, t([1.0]))


def test_binary_functions_match_numpy_with_broadcasting():
    a, b = RNG.uniform(-3, 3, (3, 1, 4)), RNG.uniform(-3, 3, (5, 4))
    cases = {dt.atan2: np.arctan2, dt.hypot: np.hypot, dt.fmod: np.fmod,
             dt.logaddexp: np.logaddexp, dt.logaddexp2: np.logaddexp2,
             dt.copysign: np.copysign, dt.heaviside: np.heaviside}
    for fn, ref in cases.items():
        np.testing.assert_allclose(fn(t(a), t(b)).numpy(), ref(a, b), rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(getattr(t(a), fn.__name__)(t(b)).numpy(), ref(a, b),
                                   rtol=1e-13, atol=1e-14)
    assert dt.fmod(t([-7.0, 7.0]), 3).tolist() == [-1.0, 1.0]  # sign of the dividend
    assert dt.remainder(t([-7.0]), 3).tolist() == [2.0]
    assert dt.copysign(t([2.0, 2.0]), t([-0.0, 0.0])).tolist() == [-2.0, 2.0]
    assert dt.copysign(dt.tensor([1, -2]), -1.0).tolist() == [-1.0, -2.0]
    big = t([1000.0, -math.inf, math.inf])
    np.testing.assert_array_equal(dt.logaddexp(big, big).numpy(),
                                  [1000.0 + math.log(2), -math.inf, math.inf])
    x = t(a[:, 0, :])
    assert x.hypot_(t([3.0])) is x


def test_xlogy_zero_convention_and_gradients_as_torch():
    x = t([0.0, 0.0, 2.0, 0.0], requires_grad=True)
    y = t([0.0, 3.0, 3.0, math.nan], requires_grad=True)
    out = dt.xlogy(x, y)
    got = out.detach().numpy()
    assert got[:2].tolist() == [0.0, 0.0] and np.isnan(got[3])
    assert got[2] == pytest.approx(2 * math.log(3))
    out[:3].sum().backward()
    assert x.grad.tolist()[1:3] == pytest.approx([0.0, math.log(3)])  # torch: 0 at x == 0
    assert y.grad.tolist()[1:3] == pytest.approx([0.0, 2 / 3])
    assert dt.xlogy(2.0, t([math.e])).item() == pytest.approx(2.0)


def test_float_power_is_float64():
    out = dt.float_power(dt.tensor([2, 3]), 2)
    assert out.dtype == dt.float64 and out.tolist() == [4.0, 9.0]
    assert dt.tensor([4.0]).float_power(dt.tensor([0.5])).tolist() == [2.0]


def test_clamp_min_max_logit_nan_to_num():
    x = t([-2.0, 0.5, 3.0])
    assert dt.clamp_min(x, 0.0).tolist() == [0.0, 0.5, 3.0]
    assert x.clamp_max(1.0).tolist() == [-2.0, 0.5, 1.0]
    assert x.clamp_min_(0.0) is x and x.tolist() == [0.0, 0.5, 3.0]
    p = t([0.25, 0.5, 0.0])
    assert dt.logit(p).tolist()[:2] == pytest.approx([math.log(1 / 3), 0.0])
    assert dt.logit(p, eps=0.1).tolist()[2] == pytest.approx(math.log(0.1 / 0.9))
    bad = dt.tensor([math.nan, math.inf, -math.inf, 1.5], requires_grad=True)
    fixed = dt.nan_to_num(bad)
    f32 = np.finfo(np.float32)
    assert fixed.tolist() == [0.0, float(f32.max), float(f32.min), 1.5]
    assert dt.nan_to_num(bad, nan=1.0, posinf=2.0, neginf=-2.0).tolist() == [1, 2, -2, 1.5]
    fixed.sum().backward()
    assert bad.grad.tolist() == [0.0, 0.0, 0.0, 1.0]
    ints = dt.tensor([1, 2])
    assert dt.nan_to_num(ints).tolist() == [1, 2] and dt.nan_to_num(ints) is not ints


def test_special_namespace():
    x = t([0.2, 0.7])
    assert dt.equal(dt.special.expit(x), dt.sigmoid(x))
    assert dt.equal(dt.special.gammaln(x), dt.lgamma(x))
    assert dt.equal(dt.special.xlogy(x, x), dt.xlogy(x, x))
    assert dt.special.logit(dt.special.expit(x)).tolist() == pytest.approx([0.2, 0.7])
    assert dt.special.erfinv is dt.erfinv and dt.special.psi is dt.digamma
