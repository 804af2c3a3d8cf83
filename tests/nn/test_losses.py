"""Losses against independent NumPy formulas (float64), reductions, stability and errors."""
import numpy as np
import pytest

import dtrain as dt
import dtrain.nn.functional as F

rng = np.random.default_rng(1234)
X = rng.standard_normal((6, 5))
Y = rng.standard_normal((6, 5))
T = np.array([0, 4, 2, 2, 1, 3])
W = rng.uniform(0.5, 2.0, 5)


def t(a, grad=False):
    return dt.tensor(a, dtype=dt.float64, requires_grad=grad) if np.asarray(a).dtype.kind == "f" \
        else dt.tensor(a)


def np_log_softmax(x, axis=1):
    m = x.max(axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis, keepdims=True))


def reduce_np(loss, reduction):
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_regression_losses(reduction):
    d = X - Y
    a = np.abs(d)
    cases = {
        "mse": (F.mse_loss(t(X), t(Y), reduction=reduction), d * d),
        "l1": (F.l1_loss(t(X), t(Y), reduction=reduction), a),
        "huber": (F.huber_loss(t(X), t(Y), reduction=reduction, delta=0.7),
                  np.where(a < 0.7, 0.5 * d * d, 0.7 * (a - 0.35))),
        "smooth_l1": (F.smooth_l1_loss(t(X), t(Y), reduction=reduction, beta=0.7),
                      np.where(a < 0.7, 0.5 * d * d / 0.7, a - 0.35)),
        "smooth_l1_beta0": (F.smooth_l1_loss(t(X), t(Y), reduction=reduction, beta=0.0), a),
    }
    for name, (got, pointwise) in cases.items():
        np.testing.assert_allclose(got.numpy(), reduce_np(pointwise, reduction), rtol=1e-12,
                                   err_msg=name)


def test_elementwise_weight_mean_divides_by_weight_sum():
    w = rng.uniform(0.1, 1.0, X.shape)
    got = F.mse_loss(t(X), t(Y), weight=t(w)).item()
    assert got == pytest.approx(((X - Y) ** 2 * w).sum() / w.sum(), rel=1e-12)
    got = F.huber_loss(t(X), t(Y), weight=t(w)).item()  # huber: a plain mean (as torch)
    d = np.abs(X - Y)
    assert got == pytest.approx((np.where(d < 1, 0.5 * d * d, d - 0.5) * w).mean(), rel=1e-12)


def np_cross_entropy(x, target, weight=None, ignore_index=-100, smoothing=0.0):
    """Per-sample losses and the mean's denominator, from the textbook definition."""
    n, c = x.shape
    lp = np_log_softmax(x)
    w = np.ones(c) if weight is None else weight
    valid = target != ignore_index
    safe = np.where(valid, target, 0)
    nll = -w[safe] * lp[np.arange(n), safe] * valid
    smooth = -(lp * w).sum(1) * valid
    loss = (1 - smoothing) * nll + smoothing / c * smooth
    return loss, (w[safe] * valid).sum()


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.25])
@pytest.mark.parametrize("ignore", [-100, 2])
def test_cross_entropy_class_indices(weighted, smoothing, ignore):
    weight = W if weighted else None
    loss, denom = np_cross_entropy(X, T, weight, ignore, smoothing)
    kw = dict(weight=t(W) if weighted else None, ignore_index=ignore, label_smoothing=smoothing)
    np.testing.assert_allclose(F.cross_entropy(t(X), t(T), reduction="none", **kw).numpy(), loss,
                               rtol=1e-12)
    assert F.cross_entropy(t(X), t(T), reduction="sum", **kw).item() == \
        pytest.approx(loss.sum(), rel=1e-12)
    assert F.cross_entropy(t(X), t(T), **kw).item() == pytest.approx(loss.sum() / denom, rel=1e-12)
    module = dt.nn.CrossEntropyLoss(**kw)
    assert module(t(X), t(T)).item() == pytest.approx(loss.sum() / denom, rel=1e-12)


def test_cross_entropy_gradient_is_softmax_minus_onehot():
    x = t(X, grad=True)
    F.cross_entropy(x, t(T), reduction="sum").backward()
    p = np.exp(np_log_softmax(X))
    np.testing.assert_allclose(x.grad.numpy(), p - np.eye(5)[T], rtol=1e-12, atol=1e-15)


def test_cross_entropy_probabilities():
    probs = rng.dirichlet(np.ones(5), 6)
    lp = np_log_softmax(X)
    for eps in (0.0, 0.2):
        target = probs * (1 - eps) + eps / 5
        per = -(lp * target * W).sum(1)
        got = F.cross_entropy(t(X), t(probs), weight=t(W), label_smoothing=eps)
        assert got.item() == pytest.approx(per.sum() / 6, rel=1e-12)  # mean over samples
        np.testing.assert_allclose(F.cross_entropy(t(X), t(probs), weight=t(W), reduction="none",
                                                   label_smoothing=eps).numpy(), per, rtol=1e-12)
    with pytest.raises(RuntimeError, match="ignore_index is not supported"):
        F.cross_entropy(t(X), t(probs), ignore_index=1)


def test_cross_entropy_spatial_and_unbatched():
    x = rng.standard_normal((2, 5, 3))
    target = rng.integers(0, 5, (2, 3))
    target[1, 2] = -100
    lp = np_log_softmax(x)
    i, j = np.nonzero(target != -100)
    expect = -lp[i, target[i, j], j].mean()
    assert F.cross_entropy(t(x), t(target)).item() == pytest.approx(expect, rel=1e-12)
    one = F.cross_entropy(t(X[0]), t(np.array(3)))
    assert one.shape == () and one.item() == pytest.approx(-np_log_softmax(X[:1])[0, 3])


def test_nll_loss_and_errors():
    lp = np_log_softmax(X)
    got = F.nll_loss(t(lp), t(T), weight=t(W)).item()
    assert got == pytest.approx((-W[T] * lp[np.arange(6), T]).sum() / W[T].sum(), rel=1e-12)
    assert dt.nn.NLLLoss(reduction="sum")(t(lp), t(T)).item() == \
        pytest.approx(-lp[np.arange(6), T].sum(), rel=1e-12)
    with pytest.raises(IndexError, match="Target 7 is out of bounds"):
        F.nll_loss(t(lp), t(np.array([0, 7, 1, 1, 1, 1])))
    with pytest.raises(RuntimeError, match="expected scalar type Long"):
        F.nll_loss(t(X), t(T.astype(np.float64)))
    with pytest.raises(RuntimeError, match="floating point target of the same shape"):
        F.cross_entropy(t(X), t(T.astype(np.float64)[:, None]))
    with pytest.raises(ValueError, match="Expected target size"):
        F.cross_entropy(t(X), t(T[:4]))
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        F.mse_loss(t(X), t(Y), reduction="avg")


def test_binary_cross_entropy_losses():
    y = rng.uniform(0, 1, X.shape)
    p = 1 / (1 + np.exp(-X))
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert F.binary_cross_entropy(t(p), t(y)).item() == pytest.approx(bce.mean(), rel=1e-12)
    assert dt.nn.BCELoss(weight=t(W), reduction="sum")(t(p), t(y)).item() == \
        pytest.approx((bce * W).sum(), rel=1e-12)
    pw = rng.uniform(0.5, 3.0, 5)
    with_pw = -(pw * y * np.log(p) + (1 - y) * np.log(1 - p))
    got = dt.nn.BCEWithLogitsLoss(pos_weight=t(pw))(t(X), t(y))
    assert got.item() == pytest.approx(with_pw.mean(), rel=1e-12)
    # log(0) is clamped at -100, as in torch
    edge = F.binary_cross_entropy(t(np.array([0.0, 1.0])), t(np.array([1.0, 0.0])),
                                  reduction="none")
    np.testing.assert_allclose(edge.numpy(), [100.0, 100.0])
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        F.binary_cross_entropy(t(X), t(y))


def test_kl_div():
    p = rng.dirichlet(np.ones(5), 6)
    q = rng.dirichlet(np.ones(5), 6)
    p[0, 1] = 0.0  # 0 * log 0 counts as 0
    pointwise = np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0) - p * np.log(q)
    got = F.kl_div(t(np.log(q)), t(p), reduction="batchmean").item()
    assert got == pytest.approx(pointwise.sum() / 6, rel=1e-12)
    got = dt.nn.KLDivLoss(reduction="sum", log_target=True)(t(np.log(q)), t(np.log(q[::-1])))
    assert got.item() == pytest.approx((q[::-1] * (np.log(q[::-1]) - np.log(q))).sum(), rel=1e-12)


def test_logits_of_1e4_do_not_overflow():
    x = t(np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3]]), grad=True)
    loss = F.cross_entropy(x, t(np.array([1, 1])), reduction="none")
    np.testing.assert_allclose(loss.detach().numpy(), [2e4, 0.0])
    loss.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[1, -1, 0], [0, 0, 0]], atol=1e-12)
    xf = dt.tensor([[1e4, -1e4]], requires_grad=True)  # float32 as well
    F.cross_entropy(xf, dt.tensor([0])).backward()
    assert np.isfinite(xf.grad.numpy()).all()
    z = t(np.array([1e4, -1e4, 1e4, -1e4]), grad=True)
    y = t(np.array([1.0, 0.0, 0.0, 1.0]))
    bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    np.testing.assert_allclose(bce.detach().numpy(), [0, 0, 1e4, 1e4])
    bce.sum().backward()
    np.testing.assert_allclose(z.grad.numpy(), [0, 0, 1, -1])


def test_size_mismatch_warns():
    with pytest.warns(UserWarning, match="different to the input size"):
        F.mse_loss(t(X), t(Y[:, :1]))
