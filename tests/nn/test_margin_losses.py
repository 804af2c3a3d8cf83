"""Distances, margin/embedding/likelihood losses and shrink activations against NumPy
formulas written out here (float64), their modules, reductions and errors."""
import math

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn.functional as F
from dtrain import nn

rng = np.random.default_rng(7)


def t(a, grad=False):
    a = np.asarray(a)
    return dt.tensor(a, dtype=dt.float64, requires_grad=grad) if a.dtype.kind == "f" \
        else dt.tensor(a)


def red(loss, reduction):
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


@pytest.mark.parametrize("shape1, shape2, dim", [((4, 5), (4, 5), 1), ((2, 3, 4), (3, 4), -1),
                                                 ((3, 2), (1, 2), 0), ((5,), (5,), 0)])
def test_cosine_similarity_and_pairwise_distance(shape1, shape2, dim):
    a, b = rng.standard_normal(shape1), rng.standard_normal(shape2)
    a, b = np.broadcast_arrays(a, b)
    cos = (a * b).sum(dim) / (np.linalg.norm(a, axis=dim) * np.linalg.norm(b, axis=dim))
    np.testing.assert_allclose(F.cosine_similarity(t(a), t(b), dim).numpy(), cos, rtol=1e-12)
    np.testing.assert_allclose(dt.cosine_similarity(t(a), t(b), dim=dim).numpy(), cos,
                               rtol=1e-12)
    np.testing.assert_allclose(nn.CosineSimilarity(dim)(t(a), t(b)).numpy(), cos, rtol=1e-12)
    for p in (2.0, 1.0, 3.0, math.inf):
        d = np.linalg.norm(a - b + 1e-6, ord=p, axis=-1, keepdims=True)
        np.testing.assert_allclose(F.pairwise_distance(t(a), t(b), p, keepdim=True).numpy(), d,
                                   rtol=1e-12)
        np.testing.assert_allclose(nn.PairwiseDistance(p)(t(a), t(b)).numpy(), d[..., 0],
                                   rtol=1e-12)
    assert F.pairwise_distance(t(a), t(b)).shape == a.shape[:-1]


def test_cosine_similarity_clamps_each_norm_and_lets_the_gradient_pass():
    x = np.array([[3e-9, 4e-9], [3.0, 4.0]])
    y = np.array([[1.0, 0.0], [0.0, 2.0]])
    xt = t(x, grad=True)
    out = F.cosine_similarity(xt, t(y), dim=1, eps=1e-8)
    # row 0: ||x|| = 5e-9 is clamped to 1e-8 (not the product of the norms)
    np.testing.assert_allclose(out.detach().numpy(), [3e-9 / 1e-8, 0.8], rtol=1e-12)
    out.sum().backward()
    # d/dx (x . yhat / n) with n = 1e-8 in value but dn/dx = x / ||x|| (torch's no_grad clamp)
    yhat = y / np.linalg.norm(y, axis=1, keepdims=True)
    n = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)
    nx = np.linalg.norm(x, axis=1, keepdims=True)
    expected = yhat / n - (x * yhat).sum(1, keepdims=True) / n ** 2 * x / nx
    np.testing.assert_allclose(xt.grad.numpy(), expected, rtol=1e-10)
    with pytest.raises(RuntimeError, match="cannot be broadcast"):
        F.cosine_similarity(t(x), t(np.ones((3, 2))))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_margin_and_embedding_losses(reduction):
    x1, x2 = rng.standard_normal(6), rng.standard_normal(6)
    y = np.array([1.0, -1.0, 1.0, -1.0, -1.0, 1.0])
    got = F.margin_ranking_loss(t(x1), t(x2), t(y), 0.3, reduction=reduction)
    np.testing.assert_allclose(got.numpy(), red(np.maximum(0, -y * (x1 - x2) + 0.3), reduction))
    assert nn.MarginRankingLoss(0.3, reduction=reduction)(t(x1), t(x2), t(y)).numpy() == \
        pytest.approx(got.numpy())

    x = rng.standard_normal((3, 4))
    ys = rng.choice([-1.0, 1.0], (3, 4))
    hinge = np.where(ys == 1, x, np.maximum(0, 0.7 - x))
    np.testing.assert_allclose(F.hinge_embedding_loss(t(x), t(ys), 0.7, reduction=reduction)
                               .numpy(), red(hinge, reduction), rtol=1e-12)
    np.testing.assert_allclose(nn.SoftMarginLoss(reduction=reduction)(t(x), t(ys)).numpy(),
                               red(np.log1p(np.exp(-ys * x)), reduction), rtol=1e-12)

    a, b = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    cos = (a * b).sum(1) / np.sqrt(((a * a).sum(1) + 1e-12) * ((b * b).sum(1) + 1e-12))
    emb = np.where(y[:5] == 1, 1 - cos, np.maximum(0, cos - 0.1))
    np.testing.assert_allclose(nn.CosineEmbeddingLoss(0.1, reduction=reduction)(
        t(a), t(b), t(y[:5])).numpy(), red(emb, reduction), rtol=1e-12)


@pytest.mark.parametrize("swap", [False, True])
def test_triplet_margin_loss(swap):
    a, p, n = (rng.standard_normal((4, 3)) for _ in range(3))
    d = lambda u, v, q: (np.abs(u - v + 1e-6) ** q).sum(-1) ** (1 / q)  # noqa: E731
    for q in (2, 1):
        neg = np.minimum(d(a, n, q), d(p, n, q)) if swap else d(a, n, q)
        expected = np.maximum(d(a, p, q) - neg + 0.5, 0).mean()
        got = F.triplet_margin_loss(t(a), t(p), t(n), margin=0.5, p=q, swap=swap)
        assert got.item() == pytest.approx(expected, rel=1e-12)
        assert nn.TripletMarginLoss(0.5, q, swap=swap)(t(a), t(p), t(n)).item() == \
            pytest.approx(expected, rel=1e-12)
    with pytest.raises(RuntimeError, match="same number of dimensions"):
        F.triplet_margin_loss(t(a), t(p), t(n[0]))
    with pytest.raises(ValueError, match="greater than 0"):
        nn.TripletMarginLoss(margin=0.0)


def test_multilabel_and_multiclass_margin_losses():
    x = rng.standard_normal((3, 4))
    labels = rng.integers(0, 2, (3, 4)).astype(float)
    w = rng.uniform(0.5, 2, 4)
    sig = 1 / (1 + np.exp(-x))
    per = -(labels * np.log(sig) + (1 - labels) * np.log(1 - sig)) * w
    np.testing.assert_allclose(F.multilabel_soft_margin_loss(t(x), t(labels), t(w),
                                                             reduction="none").numpy(),
                               per.mean(1), rtol=1e-12)
    assert nn.MultiLabelSoftMarginLoss()(t(x), t(labels)).item() == pytest.approx(
        (-(labels * np.log(sig) + (1 - labels) * np.log(1 - sig))).mean(1).mean(), rel=1e-12)

    y = np.array([2, 0, 3])
    for p in (1, 2):
        loss = []
        for i in range(3):
            h = np.maximum(0, 0.6 - x[i, y[i]] + x[i]) ** p
            h[y[i]] = 0
            loss.append(h.sum() / 4 * w[y[i]])
        got = nn.MultiMarginLoss(p, 0.6, t(w), reduction="none")(t(x), t(y))
        np.testing.assert_allclose(got.numpy(), loss, rtol=1e-12)
    assert F.multi_margin_loss(t(x[1]), t(y[1])).item() == pytest.approx(
        (np.maximum(0, 1 - x[1, 0] + x[1])[1:]).sum() / 4, rel=1e-12)
    with pytest.raises(ValueError, match="p == 1 and p == 2"):
        F.multi_margin_loss(t(x), t(y), p=3)

    # torch's documented example: targets 3 and 0, ended by -1: loss 0.85
    xd = t(np.array([[0.1, 0.2, 0.4, 0.8]]))
    yd = t(np.array([[3, 0, -1, 1]]))
    assert nn.MultiLabelMarginLoss()(xd, yd).item() == pytest.approx(0.85, rel=1e-12)
    assert F.multilabel_margin_loss(xd[0], yd[0], reduction="sum").item() == \
        pytest.approx(0.85, rel=1e-12)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_poisson_and_gaussian_nll(reduction):
    x = rng.standard_normal((3, 4))
    k = rng.integers(0, 5, (3, 4)).astype(float)
    stirling = np.where(k > 1, k * np.log(np.maximum(k, 1)) - k
                        + 0.5 * np.log(2 * np.pi * np.maximum(k, 1)), 0)
    np.testing.assert_allclose(F.poisson_nll_loss(t(x), t(k), full=True, reduction=reduction)
                               .numpy(), red(np.exp(x) - k * x + stirling, reduction),
                               rtol=1e-12)
    rate = np.abs(x) + 0.1
    np.testing.assert_allclose(nn.PoissonNLLLoss(log_input=False, reduction=reduction)(
        t(rate), t(k)).numpy(), red(rate - k * np.log(rate + 1e-8), reduction), rtol=1e-12)

    mu, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    var = rng.uniform(0.0, 1.0, 3)
    var[0] = 1e-9  # clamped at eps for the value
    v = np.maximum(var, 1e-6)[:, None]
    expected = 0.5 * (np.log(v) + (mu - y) ** 2 / v) + 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(nn.GaussianNLLLoss(full=True, reduction=reduction)(
        t(mu), t(y), t(var)).numpy(), red(expected, reduction), rtol=1e-12)
    with pytest.raises(ValueError, match="incorrect size"):
        F.gaussian_nll_loss(t(mu), t(y), t(var[:2]))
    with pytest.raises(ValueError, match="negative"):
        F.gaussian_nll_loss(t(mu), t(y), t(-var))


def test_shrink_and_threshold_activations():
    x = np.array([[-2.0, -0.5, -0.1, 0.0], [0.1, 0.4, 0.6, 3.0]])
    np.testing.assert_array_equal(F.threshold(t(x), 0.1, 20.0).numpy(), np.where(x > 0.1, x, 20))
    np.testing.assert_array_equal(nn.Hardshrink(0.4)(t(x)).numpy(),
                                  np.where(np.abs(x) > 0.4, x, 0))
    np.testing.assert_allclose(nn.Softshrink(0.4)(t(x)).numpy(),
                               np.where(x > 0.4, x - 0.4, np.where(x < -0.4, x + 0.4, 0)))
    np.testing.assert_allclose(nn.Tanhshrink()(t(x)).numpy(), x - np.tanh(x))
    assert dt.threshold is F.threshold and dt.hardshrink is F.hardshrink
    np.testing.assert_array_equal(t(x).hardshrink(0.4).numpy(), np.where(np.abs(x) > 0.4, x, 0))
    z = t(x)
    assert F.threshold_(z, 0.5, 0.0) is z and (z.numpy() == np.where(x > 0.5, x, 0)).all()
    y = t(x)
    assert nn.Threshold(0.0, -1.0, inplace=True)(y) is y
    np.testing.assert_array_equal(y.numpy(), np.where(x > 0, x, -1))
    assert repr(nn.Threshold(0.1, 20)) == "Threshold(threshold=0.1, value=20)"
    assert repr(nn.Softshrink(0.3)) == "Softshrink(0.3)"
    with pytest.raises(RuntimeError, match="lambda must be greater or equal to 0"):
        F.softshrink(t(x), -1.0)
