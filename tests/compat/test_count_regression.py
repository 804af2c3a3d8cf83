"""A PyTorch-style count-regression script, run on dtrain with only the import changed:
negative-binomial regression (its log-likelihood written with torch.lgamma and torch.xlogy,
a learned dispersion), Adam, then an evaluation with torch.quantile, torch.bucketize,
torch.bincount, torch.histc and torch.special. Loss falls, the fit recovers the generating
coefficients, and every statistic equals NumPy's (math.lgamma for the likelihood)."""
import math

import numpy as np

import dtrain as torch
import dtrain.nn.functional as F  # noqa: F401  (as the script would import it)
from dtrain import nn


def nb_nll(y, mu, log_alpha):
    """Negative log-likelihood of counts y under NB(mean mu, dispersion alpha)."""
    r = torch.exp(-log_alpha)
    ll = (torch.lgamma(y + r) - torch.lgamma(r) - torch.lgamma(y + 1)
          + torch.xlogy(r, r / (r + mu)) + torch.xlogy(y, mu / (r + mu)))
    return -ll.mean()


def nb_nll_reference(y, mu, alpha):
    r = 1 / alpha
    return -np.mean([math.lgamma(k + r) - math.lgamma(r) - math.lgamma(k + 1)
                     + r * math.log(r / (r + m)) + (k * math.log(m / (r + m)) if k else 0.0)
                     for k, m in zip(y, mu)])


class CountModel(nn.Module):
    def __init__(self, n_features):
        super().__init__()
        self.linear = nn.Linear(n_features, 1)
        self.log_alpha = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.exp(self.linear(x).squeeze(-1)), self.log_alpha


def make_data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    mu = np.exp(x @ np.array([0.6, -0.4, 0.2]) + 1.0)
    alpha = 0.5  # NB as a gamma-Poisson mixture
    y = rng.poisson(rng.gamma(1 / alpha, alpha * mu))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)


def test_negative_binomial_regression_script():
    torch.manual_seed(0)
    x, y = make_data()
    model = CountModel(3)
    with torch.no_grad():
        model.linear.bias.fill_(math.log(y.mean().item()))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)

    mu0, log_alpha0 = model(x)
    first = nb_nll(y, mu0, log_alpha0)
    expect = nb_nll_reference(y.numpy(), mu0.detach().numpy().astype(np.float64), 1.0)
    assert abs(first.item() - expect) < 1e-4 * abs(expect)

    losses = []
    for _ in range(150):
        opt.zero_grad()
        mu, log_alpha = model(x)
        loss = nb_nll(y, mu, log_alpha)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.2 and all(math.isfinite(v) for v in losses)
    w = model.linear.weight.detach().numpy().ravel()
    np.testing.assert_allclose(w, [0.6, -0.4, 0.2], atol=0.12)
    assert abs(model.linear.bias.item() - 1.0) < 0.15
    assert abs(model.log_alpha.exp().item() - 0.5) < 0.2

    # evaluation, as a script would summarise it
    with torch.no_grad():
        mu, _ = model(x)
    resid = (y - mu) / torch.sqrt(mu)
    qs = torch.tensor([0.05, 0.5, 0.95])
    np.testing.assert_allclose(torch.quantile(resid, qs).numpy(),
                               np.quantile(resid.numpy(), [0.05, 0.5, 0.95]), rtol=1e-6)
    edges = torch.tensor([1.0, 2.0, 4.0, 8.0])
    groups = torch.bucketize(mu, edges)
    np.testing.assert_array_equal(groups.numpy(), np.searchsorted(edges.numpy(), mu.numpy()))
    counts = torch.bincount(groups, minlength=5)
    assert counts.sum().item() == len(y) and counts.tolist() == np.bincount(
        groups.numpy(), minlength=5).tolist()
    hist = torch.histc(y, bins=5, min=0, max=10)
    want, _ = np.histogram(y.numpy(), bins=5, range=(0, 10))
    assert hist.tolist() == want.tolist()
    p_zero = torch.special.expit(torch.special.logit(torch.tensor([0.25])))
    assert abs(p_zero.item() - 0.25) < 1e-6
