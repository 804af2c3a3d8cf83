"""Random draws (bernoulli, multinomial, normal, poisson, the in-place fills, dt.seed): the
distributions' statistics, exact values where a draw is a transform of randn, seeding and
`generator=`, and PyTorch's errors."""
import numpy as np
import pytest

import dtrain as dt

N = 40000


def _seeded(fn, seed=5):
    dt.manual_seed(seed)
    return fn()


def test_manual_seed_and_generator_repeat_every_draw():
    draws = [lambda g=None: dt.bernoulli(dt.full((50,), 0.4), generator=g),
             lambda g=None: dt.multinomial(dt.tensor([1.0, 2.0, 3.0]), 10, True, generator=g),
             lambda g=None: dt.multinomial(dt.tensor([1.0, 2.0, 3.0, 4.0]), 3, generator=g),
             lambda g=None: dt.normal(dt.zeros(5), dt.ones(5), generator=g),
             lambda g=None: dt.normal(0.0, 1.0, (5,), generator=g),
             lambda g=None: dt.poisson(dt.full((5,), 2.0), generator=g),
             lambda g=None: dt.empty(5).exponential_(generator=g),
             lambda g=None: dt.empty(5).random_(0, 100, generator=g),
             lambda g=None: dt.empty(5).bernoulli_(0.5, generator=g)]
    for draw in draws:
        a, b = _seeded(draw), _seeded(draw)
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        g1, g2 = dt.Generator().manual_seed(3), dt.Generator().manual_seed(3)
        np.testing.assert_array_equal(draw(g1).numpy(), draw(g2).numpy())
    s = dt.seed()
    assert isinstance(s, int) and dt.initial_seed() == s
    first = dt.rand(3)
    dt.manual_seed(s)
    np.testing.assert_array_equal(dt.rand(3).numpy(), first.numpy())


def test_bernoulli_draws_zeros_and_ones_with_probability_p():
    p = dt.tensor([0.0, 0.25, 0.9, 1.0], dtype=dt.float64).expand(N, 4)
    out = _seeded(lambda: dt.bernoulli(p))
    assert out.dtype == dt.float64 and set(np.unique(out.numpy())) <= {0.0, 1.0}
    np.testing.assert_allclose(out.numpy().mean(0), [0.0, 0.25, 0.9, 1.0], atol=0.01)
    assert abs(dt.bernoulli(dt.zeros(N), 0.3).mean().item() - 0.3) < 0.01
    assert abs(p.bernoulli().mean().item() - 0.5375) < 0.01
    x = dt.zeros(N, dtype=dt.int64).bernoulli_(0.7)
    assert x.dtype == dt.int64 and abs(x.double().mean().item() - 0.7) < 0.01
    probs = dt.tensor([0.0, 1.0]).expand(N, 2)
    np.testing.assert_array_equal(dt.empty(N, 2).bernoulli_(probs).numpy(), probs.numpy())
    with pytest.raises(RuntimeError, match=r"p to be in \[0, 1\], but got p=1.5"):
        dt.zeros(3).bernoulli_(1.5)
    with pytest.raises(RuntimeError, match=r"probabilities p must be in \[0, 1\]"):
        dt.bernoulli(dt.tensor([0.5, -0.1]))


def test_bernoulli_of_a_tensor_needing_grad_gives_no_gradient():
    p = dt.full((4,), 0.5, requires_grad=True)
    out = dt.bernoulli(p)
    assert not out.requires_grad and out.grad_fn is None


def test_multinomial_with_replacement_matches_the_weights():
    w = dt.tensor([[1.0, 0.0, 6.0, 3.0], [0.0, 0.0, 2.0, 0.0]])
    out = _seeded(lambda: dt.multinomial(w, N, replacement=True))
    assert out.shape == (2, N) and out.dtype == dt.int64
    freq = np.stack([np.bincount(r, minlength=4) for r in out.numpy()]) / N
    np.testing.assert_allclose(freq, [[0.1, 0.0, 0.6, 0.3], [0, 0, 1, 0]], atol=0.01)
    one = w[0].multinomial(5, True)
    assert one.shape == (5,) and not (one == 1).any()


def test_multinomial_without_replacement_draws_distinct_categories():
    w = dt.tensor([1.0, 0.0, 2.0, 3.0, 4.0])
    rows = _seeded(lambda: dt.multinomial(w.expand(N, 5), 4))
    r = rows.numpy()
    assert rows.shape == (N, 4)
    np.testing.assert_array_equal(np.sort(r, axis=1), np.tile([0, 2, 3, 4], (N, 1)))
    # the first draw has the weights' probabilities; the second is drawn from the rest
    np.testing.assert_allclose(np.bincount(r[:, 0], minlength=5) / N, [0.1, 0, 0.2, 0.3, 0.4],
                               atol=0.01)
    second_after_4 = np.bincount(r[r[:, 0] == 4, 1], minlength=5) / (r[:, 0] == 4).sum()
    np.testing.assert_allclose(second_after_4, [1 / 6, 0, 2 / 6, 3 / 6, 0], atol=0.015)


@pytest.mark.parametrize("args, match", [
    ((dt.ones(2, 2, 2), 1), "prob_dist must be 1 or 2 dim"),
    ((dt.ones(3, dtype=dt.int64), 1), "only supports floating-point dtypes for input, got"),
    ((dt.ones(3), 0), "cannot sample n_sample <= 0 samples"),
    ((dt.ones(3), 4), r"cannot sample n_sample > prob_dist.size\(-1\) samples without"),
    ((dt.tensor([1.0, -1.0]), 1), "contains either `inf`, `nan` or element < 0"),
    ((dt.tensor([1.0, float("nan")]), 1), "contains either `inf`, `nan` or element < 0"),
    ((dt.tensor([[1.0, 0.0], [0.0, 0.0]]), 1), r"sum of probabilities <= 0"),
    ((dt.tensor([1.0, 0.0, 0.0]), 2), "not enough non-negative category to sample"),
])
def test_multinomial_errors(args, match):
    with pytest.raises(RuntimeError, match=match):
        dt.multinomial(*args)


def test_normal_overloads_are_shifted_scaled_standard_normals():
    mean = dt.tensor([[0.0], [10.0]], dtype=dt.float64)
    std = dt.tensor([1.0, 2.0, 0.5], dtype=dt.float64)
    z = _seeded(lambda: dt.randn(2, 3, dtype=dt.float64)).numpy()
    np.testing.assert_allclose(_seeded(lambda: dt.normal(mean, std)).numpy(),
                               z * std.numpy() + mean.numpy(), rtol=1e-12)
    z1 = _seeded(lambda: dt.randn(2, 1, dtype=dt.float64)).numpy()
    np.testing.assert_allclose(_seeded(lambda: dt.normal(mean, 3.0)).numpy(), z1 * 3 + mean.numpy())
    z3 = _seeded(lambda: dt.randn(3, dtype=dt.float64)).numpy()
    np.testing.assert_allclose(_seeded(lambda: dt.normal(2.0, std)).numpy(), z3 * std.numpy() + 2)
    out = _seeded(lambda: dt.normal(2.0, 3.0, size=(2, 2)))
    np.testing.assert_allclose(out.numpy(), _seeded(lambda: dt.randn(2, 2)).numpy() * 3 + 2,
                               rtol=1e-6)
    assert out.dtype == dt.float32 and dt.normal(0.0, 1.0, (2,), requires_grad=True).requires_grad
    assert dt.normal(dt.zeros(2, dtype=dt.float16), 1.0).dtype == dt.float16
    big = dt.normal(5.0, 2.0, (N,), dtype=dt.float64).numpy()
    assert abs(big.mean() - 5) < 0.05 and abs(big.std() - 2) < 0.05
    with pytest.raises(TypeError, match="give the size"):
        dt.normal(0.0, 1.0)
    with pytest.raises(RuntimeError, match="normal expects std >= 0.0, but found std -1.0"):
        dt.normal(dt.zeros(2), -1.0)
    with pytest.raises(RuntimeError, match="all elements of std >= 0.0"):
        dt.normal(dt.zeros(2), dt.tensor([1.0, -1.0]))


def test_poisson_and_the_in_place_fills_have_their_moments():
    rates = dt.tensor([0.0, 1.0, 4.0], dtype=dt.float64).expand(N, 3)
    counts = _seeded(lambda: dt.poisson(rates)).numpy()
    assert np.all(counts == np.round(counts)) and np.all(counts[:, 0] == 0)
    np.testing.assert_allclose(counts.mean(0), [0, 1, 4], atol=0.05)
    np.testing.assert_allclose(counts.var(0), [0, 1, 4], atol=0.15)
    e = dt.empty(N, dtype=dt.float64).exponential_(lambd=4.0).numpy()
    assert e.min() >= 0 and abs(e.mean() - 0.25) < 0.01
    g = dt.empty(N).geometric_(0.25).numpy()
    assert g.min() >= 1 and np.all(g == np.round(g)) and abs(g.mean() - 4) < 0.1
    c = dt.empty(N, dtype=dt.float64).cauchy_(median=3.0, sigma=2.0).numpy()
    assert abs(np.median(c) - 3) < 0.1 and abs(np.percentile(c, 75) - 5) < 0.15
    ln = np.log(dt.empty(N, dtype=dt.float64).log_normal_(mean=1.0, std=0.5).numpy())
    assert abs(ln.mean() - 1) < 0.02 and abs(ln.std() - 0.5) < 0.02
    with pytest.raises(RuntimeError, match="exponential_ expects lambda > 0.0"):
        dt.empty(2).exponential_(0.0)
    with pytest.raises(RuntimeError, match=r"geometric_ expects p to be in \(0, 1\)"):
        dt.empty(2).geometric_(1.5)
    with pytest.raises(RuntimeError, match="poisson: expected non-negative rates"):
        dt.poisson(dt.tensor([-1.0]))


def test_random_fills_integers_in_torchs_ranges():
    r = dt.empty(N, dtype=dt.float64).random_(3, 7).numpy()
    assert set(np.unique(r)) == {3.0, 4.0, 5.0, 6.0}
    assert set(np.unique(dt.empty(N).random_(4).numpy())) == {0.0, 1.0, 2.0, 3.0}
    assert set(np.unique(dt.empty(N, dtype=dt.int64).random_(-2, to=1).numpy())) == {-2, -1, 0}
    i8 = dt.empty(N, dtype=dt.int8).random_().numpy()
    assert i8.min() == 0 and i8.max() == 127
    f16 = dt.empty(N, dtype=dt.float16).random_().numpy()
    assert f16.min() >= 0 and f16.max() <= 2 ** 11 and np.all(f16 == np.round(f16))
    assert set(np.unique(dt.empty(100, dtype=dt.bool).random_().numpy())) == {False, True}
    with pytest.raises(RuntimeError, match="expects 'from' to be less than 'to'"):
        dt.empty(2).random_(5, 5)


def test_fills_refuse_a_leaf_that_requires_grad_outside_no_grad():
    w = dt.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        w.exponential_()
    with dt.no_grad():
        w.exponential_()
    assert (w.detach().numpy() > 0).all()
