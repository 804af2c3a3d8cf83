"""dt.distributions against closed forms computed here with NumPy, sample statistics with a
fixed seed, gradients through rsample/log_prob, and a REINFORCE script as users write it."""
import math

import numpy as np
import pytest

import dtrain as dt
from dtrain.distributions import (
    Bernoulli,
    Categorical,
    Exponential,
    Independent,
    Laplace,
    Normal,
    OneHotCategorical,
    Uniform,
    kl_divergence,
)


def _np(t):
    return t.detach().numpy()


def test_normal_log_prob_entropy_cdf_and_rsample_gradient():
    loc = dt.tensor([0.5, -1.0], dtype=dt.float64, requires_grad=True)
    scale = dt.tensor([2.0, 0.5], dtype=dt.float64, requires_grad=True)
    d = Normal(loc, scale)
    v = dt.tensor([1.0, 0.0], dtype=dt.float64)
    lv, ls = np.array([0.5, -1.0]), np.array([2.0, 0.5])
    expected = (-((1 - lv[0]) ** 2) / (2 * ls[0] ** 2) - math.log(ls[0])
                - 0.5 * math.log(2 * math.pi))
    np.testing.assert_allclose(_np(d.log_prob(v))[0], expected, rtol=1e-12)
    np.testing.assert_allclose(_np(d.entropy()), 0.5 + 0.5 * np.log(2 * np.pi) + np.log(ls))
    np.testing.assert_allclose(_np(d.cdf(loc.detach())), [0.5, 0.5])
    dt.manual_seed(0)
    x = d.rsample((4000,))
    assert x.shape == (4000, 2)
    np.testing.assert_allclose(_np(x).mean(0), lv, atol=0.1)
    np.testing.assert_allclose(_np(x).std(0), ls, rtol=0.05)
    x.mean().backward()  # d x / d loc = 1: the mean over draws moves one-for-one
    np.testing.assert_allclose(_np(loc.grad), [0.5, 0.5], rtol=1e-12)


def test_categorical_from_probs_or_logits():
    probs = dt.tensor([0.2, 0.5, 0.3], dtype=dt.float64)
    for d in (Categorical(probs * 10), Categorical(logits=probs.log() + 3)):
        np.testing.assert_allclose(_np(d.probs), [0.2, 0.5, 0.3], rtol=1e-12)
        np.testing.assert_allclose(_np(d.log_prob(dt.tensor([0, 1, 2]))), np.log([.2, .5, .3]))
        p = np.array([0.2, 0.5, 0.3])
        np.testing.assert_allclose(float(d.entropy()), -(p * np.log(p)).sum(), rtol=1e-12)
    dt.manual_seed(0)
    draws = Categorical(probs).sample((20000,))
    assert draws.dtype == dt.int64
    np.testing.assert_allclose(np.bincount(draws.numpy(), minlength=3) / 20000, [.2, .5, .3],
                               atol=0.015)
    with pytest.raises(ValueError, match="Either `probs` or `logits`"):
        Categorical(probs, logits=probs)
    with pytest.raises(ValueError, match="within the support"):
        Categorical(probs).log_prob(dt.tensor([3]))


def test_batched_categorical_log_prob_broadcasts_values():
    logits = dt.tensor(np.log([[0.1, 0.9], [0.6, 0.4]]))
    d = Categorical(logits=logits)
    assert d.batch_shape == (2,) and d.event_shape == ()
    np.testing.assert_allclose(_np(d.log_prob(dt.tensor([1, 0]))), np.log([0.9, 0.6]))
    np.testing.assert_allclose(_np(d.log_prob(dt.tensor([[1], [0]]))),
                               np.log([[0.9, 0.4], [0.1, 0.6]]))
    assert d.sample((5,)).shape == (5, 2)


def test_bernoulli_and_one_hot():
    d = Bernoulli(probs=dt.tensor([0.3, 0.8], dtype=dt.float64))
    np.testing.assert_allclose(_np(d.log_prob(dt.tensor([1.0, 0.0], dtype=dt.float64))),
                               np.log([0.3, 0.2]), rtol=1e-12)
    p = np.array([0.3, 0.8])
    np.testing.assert_allclose(_np(d.entropy()), -(p * np.log(p) + (1 - p) * np.log(1 - p)))
    np.testing.assert_allclose(_np(Bernoulli(logits=d.logits).probs), p, rtol=1e-12)
    dt.manual_seed(1)
    np.testing.assert_allclose(_np(d.sample((20000,))).mean(0), p, atol=0.015)
    oh = OneHotCategorical(dt.tensor([0.0, 1.0, 0.0]))
    np.testing.assert_array_equal(_np(oh.sample((2,))), [[0, 1, 0], [0, 1, 0]])
    assert oh.event_shape == (3,)


def test_uniform_exponential_laplace():
    u = Uniform(dt.tensor([0.0]), dt.tensor([4.0]))
    np.testing.assert_allclose(_np(u.log_prob(dt.tensor([1.0]))), [-math.log(4)], rtol=1e-6)
    with pytest.raises(ValueError, match="within the support"):
        u.log_prob(dt.tensor([5.0]))
    e = Exponential(dt.tensor([2.0], dtype=dt.float64))
    np.testing.assert_allclose(_np(e.log_prob(dt.tensor([0.5], dtype=dt.float64))),
                               [math.log(2) - 1.0])
    la = Laplace(dt.tensor(0.0, dtype=dt.float64), dt.tensor(1.0, dtype=dt.float64))
    np.testing.assert_allclose(float(la.log_prob(dt.tensor(1.0, dtype=dt.float64))),
                               -math.log(2) - 1)
    dt.manual_seed(2)
    np.testing.assert_allclose(_np(e.sample((20000,))).mean(), 0.5, rtol=0.03)
    np.testing.assert_allclose(_np(la.sample((20000,))).var(), 2.0, rtol=0.05)


def test_independent_sums_the_reinterpreted_dims():
    base = Normal(dt.zeros(3, 2, dtype=dt.float64), dt.ones(3, 2, dtype=dt.float64))
    d = Independent(base, 1)
    assert d.batch_shape == (3,) and d.event_shape == (2,)
    v = dt.ones(3, 2, dtype=dt.float64)
    np.testing.assert_allclose(_np(d.log_prob(v)), _np(base.log_prob(v).sum(-1)))


def test_kl_divergence_closed_forms():
    p, q = Normal(0.0, 1.0), Normal(1.0, 2.0)
    np.testing.assert_allclose(float(kl_divergence(p, q)), math.log(2) + (1 + 1) / 8 - 0.5,
                               rtol=1e-6)
    pc, qc = Categorical(dt.tensor([0.5, 0.5])), Categorical(dt.tensor([0.9, 0.1]))
    np.testing.assert_allclose(float(kl_divergence(pc, qc)),
                               0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1), rtol=1e-6)
    pb, qb = Bernoulli(dt.tensor(0.3)), Bernoulli(dt.tensor(0.6))
    np.testing.assert_allclose(float(kl_divergence(pb, qb)),
                               0.3 * math.log(0.3 / 0.6) + 0.7 * math.log(0.7 / 0.4), rtol=1e-5)
    ind = kl_divergence(Independent(Normal(dt.zeros(2), dt.ones(2)), 1),
                        Independent(Normal(dt.ones(2), dt.ones(2)), 1))
    np.testing.assert_allclose(float(ind), 1.0, rtol=1e-6)
    with pytest.raises(NotImplementedError, match="No KL"):
        kl_divergence(p, pc)


def test_invalid_parameters_name_the_constraint():
    with pytest.raises(ValueError, match=r"Expected parameter scale .* GreaterThan\(lower_bound"
                                         r"=0.0\)"):
        Normal(0.0, -1.0)
    Normal(0.0, -1.0, validate_args=False)  # as torch: no check when asked not to


def test_reinforce_on_a_bandit_learns_the_best_arm():
    """The REINFORCE pattern of PyTorch's examples: sample an action from Categorical,
    keep log_prob, weight it by the reward, step the policy."""
    import dtrain as torch
    from dtrain import nn
    from dtrain.distributions import Categorical as Cat

    torch.manual_seed(0)
    policy = nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 3), nn.Softmax(dim=-1))
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.05)
    rewards = torch.tensor([0.1, 1.0, 0.3])
    mean_rewards = []
    for _ in range(60):
        probs = policy(torch.ones(32, 1))
        m = Cat(probs)
        action = m.sample()
        reward = rewards[action]
        loss = (-m.log_prob(action) * (reward - reward.mean())).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        mean_rewards.append(reward.mean().item())
    assert mean_rewards[0] < 0.6 and np.mean(mean_rewards[-5:]) > 0.9
    assert policy(torch.ones(1, 1))[0, 1].item() > 0.9


def test_reinforce_step_compiled_equals_eager_and_replays_check_parameters():
    """The same REINFORCE step under dt.compile: the action drawn anew on every replay, the
    parameter check recorded (no Python branch on data), so a replay with an invalid
    scale still raises ValueError naming the constraint."""
    from dtrain import nn

    def make():
        dt.manual_seed(0)
        policy = nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 3))
        opt = dt.optim.Adam(policy.parameters(), lr=0.05)
        rewards = dt.tensor([0.1, 1.0, 0.3])

        def step(obs):
            m = Categorical(logits=policy(obs))
            action = m.sample()
            reward = rewards[action]
            loss = (-m.log_prob(action) * (reward - reward.mean())).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            return reward.mean()
        return policy, step

    (eager_policy, eager), (policy, compiled) = make(), make()
    compiled = dt.compile(compiled)
    got, want = [], []
    for i in range(12):
        obs = dt.full((32, 1), 1.0 + 0.1 * i)
        dt.manual_seed(50 + i)
        want.append(float(eager(obs)))
        dt.manual_seed(50 + i)
        got.append(float(compiled(obs)))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert len(set(want)) > 1
    for p, q in zip(policy.parameters(), eager_policy.parameters()):
        np.testing.assert_allclose(_np(p), _np(q), rtol=1e-5, atol=1e-6)

    noisy = dt.compile(lambda loc, scale: Normal(loc, scale).rsample())
    for _ in range(3):
        assert noisy(dt.zeros(2), dt.ones(2)).shape == (2,)
    with pytest.raises(ValueError, match="Expected parameter scale .* GreaterThan"):
        noisy(dt.zeros(2), dt.tensor([1.0, -1.0]))
