"""Adadelta, Adamax, NAdam, RAdam and ASGD against float64 NumPy re-implementations of their
published update rules (as `torch.optim` documents them), state-dict resumption, and the
validation of their hyperparameters.

Several parameters share a shape, so they share the optimizer's scratch arrays: a leak of one
parameter's intermediates into the next one's update would show in the trajectories.
"""
import re

import numpy as np
import pytest

import dtrain as dt

SHAPES = [(4, 5), (4, 5), (4, 5), (3,)]
STEPS = 8  # RAdam's rectified branch starts at step 6 (rho_t > 5)
GROUP2 = {"lr": 0.03, "weight_decay": 0.2}  # the last parameter's group


@pytest.fixture
def float64_default():
    """Float64 state scalars (step, NAdam's mu_product, ASGD's eta and mu), as PyTorch keeps
    them in the default dtype; the reference computes them in float64."""
    dt.set_default_dtype(dt.float64)
    try:
        yield
    finally:
        dt.set_default_dtype(dt.float32)


# -- the published rules, in plain NumPy ----------------------------------------------------
def l2_or_decoupled(p, g, lr, weight_decay, decoupled_weight_decay):
    if decoupled_weight_decay:
        return p * (1 - lr * weight_decay), g
    return p, g + weight_decay * p


def moments(g, s, betas):
    b1, b2 = betas
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
    return s["m"], s["v"]


def ref_adadelta(p, g, s, t, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0):
    """Zeiler, Algorithm 1 (with a learning rate, as PyTorch)."""
    g = g + weight_decay * p
    s["v"] = rho * s.get("v", 0.0) + (1 - rho) * g * g
    delta = np.sqrt(s.get("u", 0.0) + eps) / np.sqrt(s["v"] + eps) * g
    s["u"] = rho * s.get("u", 0.0) + (1 - rho) * delta * delta
    return p - lr * delta


def ref_adamax(p, g, s, t, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    """Kingma & Ba, Algorithm 2 (eps inside the max, as PyTorch)."""
    b1, b2 = betas
    g = g + weight_decay * p
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    s["u"] = np.maximum(b2 * s.get("u", 0.0), np.abs(g) + eps)
    return p - lr / (1 - b1 ** t) * s["m"] / s["u"]


def ref_nadam(p, g, s, t, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
              momentum_decay=4e-3, decoupled_weight_decay=False):
    """Dozat's NAdam with the momentum schedule mu_t = beta1 (1 - 0.96^(t psi) / 2)."""
    p, g = l2_or_decoupled(p, g, lr, weight_decay, decoupled_weight_decay)
    b1, b2 = betas
    m, v = moments(g, s, betas)
    mu = b1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    s["prod"] = s.get("prod", 1.0) * mu
    denom = np.sqrt(v / (1 - b2 ** t)) + eps
    return (p - lr * (1 - mu) / (1 - s["prod"]) * g / denom
            - lr * mu_next / (1 - s["prod"] * mu_next) * m / denom)


def ref_radam(p, g, s, t, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
              decoupled_weight_decay=False):
    """Liu et al., Algorithm 2 (eps added to sqrt(v) before the bias correction)."""
    p, g = l2_or_decoupled(p, g, lr, weight_decay, decoupled_weight_decay)
    b1, b2 = betas
    m, v = moments(g, s, betas)
    m_hat = m / (1 - b1 ** t)
    rho_inf = 2 / (1 - b2) - 1
    rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
    if rho <= 5:
        return p - lr * m_hat
    r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
    return p - lr * r * m_hat * np.sqrt(1 - b2 ** t) / (np.sqrt(v) + eps)


def ref_asgd(p, g, s, t, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0):
    """Polyak & Juditsky averaging with eta_t = lr / (1 + lambd lr t)^alpha and
    mu_t = 1 / max(1, t - t0); `s["ax"]` is the running average."""
    g = g + weight_decay * p
    eta, mu = s.get("eta", lr), s.get("mu", 1.0)
    p = p * (1 - lambd * eta) - eta * g
    s["ax"] = s.get("ax", 0.0) + mu * (p - s.get("ax", 0.0))
    s["eta"] = lr / (1 + lambd * lr * t) ** alpha
    s["mu"] = 1 / max(1, t - t0)
    return p


def ref_rprop(p, g, s, t, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), weight_decay=0.0):
    """Riedmiller & Braun without weight backtracking (PyTorch's Rprop): grow the step
    while the gradient keeps its sign, shrink it and skip the move when the sign flips.
    Rprop has no weight decay: GROUP2's entry is kept in the group and unused (as torch)."""
    prod = g * s.get("prev", 0.0)
    factor = np.where(prod > 0, etas[1], np.where(prod < 0, etas[0], 1.0))
    s["step"] = np.clip(s.get("step", lr) * factor, *step_sizes)
    g = np.where(prod < 0, 0.0, g)
    s["prev"] = g
    return p - np.sign(g) * s["step"]


CASES = [
    (dt.optim.Rprop, ref_rprop, dict()),
    (dt.optim.Rprop, ref_rprop, dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(0.01, 0.08))),
    (dt.optim.Adadelta, ref_adadelta, dict()),
    (dt.optim.Adadelta, ref_adadelta, dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.05)),
    (dt.optim.Adamax, ref_adamax, dict(lr=0.02)),
    (dt.optim.Adamax, ref_adamax, dict(lr=0.02, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.1)),
    (dt.optim.NAdam, ref_nadam, dict(lr=0.02)),
    (dt.optim.NAdam, ref_nadam, dict(lr=0.02, betas=(0.8, 0.99), weight_decay=0.1,
                                     momentum_decay=0.5)),
    (dt.optim.NAdam, ref_nadam, dict(lr=0.02, weight_decay=0.1, decoupled_weight_decay=True)),
    (dt.optim.RAdam, ref_radam, dict(lr=0.02)),
    (dt.optim.RAdam, ref_radam, dict(lr=0.02, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.1)),
    (dt.optim.RAdam, ref_radam, dict(lr=0.02, weight_decay=0.1, decoupled_weight_decay=True)),
    (dt.optim.ASGD, ref_asgd, dict(lr=0.1)),
    (dt.optim.ASGD, ref_asgd, dict(lr=0.1, lambd=0.05, alpha=0.6, t0=3, weight_decay=0.1)),
]
IDS = [f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(CASES)]


def make_params(dtype=dt.float64, seed=0):
    rng = np.random.default_rng(seed)
    return [dt.nn.Parameter(dt.tensor(rng.standard_normal(s), dtype=dtype)) for s in SHAPES]


def make_opt(cls, kwargs, params, **extra):
    return cls([{"params": params[:3]}, {"params": params[3:], **GROUP2}], **kwargs, **extra)


def grads_at(t, sign=1.0):
    rng = np.random.default_rng(100 + t)
    return [sign * rng.standard_normal(s) for s in SHAPES]


def run(opt, params, start, stop, sign=1.0):
    for t in range(start, stop):
        for p, g in zip(params, grads_at(t, sign)):
            p.grad = dt.tensor(g, dtype=p.dtype)
        opt.step()


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("cls, rule, kwargs", CASES, ids=IDS)
def test_trajectory_matches_reference(cls, rule, kwargs, maximize, float64_default):
    params = make_params()
    opt = make_opt(cls, kwargs, params, maximize=maximize)
    run(opt, params, 1, STEPS + 1, sign=-1.0 if maximize else 1.0)  # maximize: ascend -g
    expected = [p.detach().numpy().copy() for p in make_params()]
    states = [{} for _ in SHAPES]
    hyper = [kwargs] * 3 + [{**kwargs, **GROUP2}]
    for t in range(1, STEPS + 1):
        expected = [rule(e, g, s, t, **h)
                    for e, g, s, h in zip(expected, grads_at(t), states, hyper)]
    for p, e, p0 in zip(params, expected, make_params()):
        np.testing.assert_allclose(p.detach().numpy(), e, rtol=0, atol=1e-10)
        assert np.abs(e - p0.detach().numpy()).max() > 1e-4  # the steps really moved
    if cls is dt.optim.ASGD:
        for p, s in zip(params, states):
            np.testing.assert_allclose(opt.state[p]["ax"].numpy(), s["ax"], rtol=0, atol=1e-10)


def test_asgd_ax_is_the_average_of_the_iterates_once_averaging_starts(float64_default):
    # mu after step t is 1 / max(1, t - t0) and weighs step t + 1: with t0=2, ax holds x_4
    # after step 4 and the running mean of x_4 ... x_t after each later step t
    params = make_params()
    opt = dt.optim.ASGD(params, lr=0.1, t0=2)
    iterates = []
    for t in range(1, 8):
        run(opt, params, t, t + 1)
        iterates.append([p.detach().numpy().copy() for p in params])
        ax = [opt.state[p]["ax"].numpy() for p in params]
        since = iterates[3:] if t >= 4 else iterates[-1:]
        for k in range(len(params)):
            np.testing.assert_allclose(ax[k], np.mean([x[k] for x in since], axis=0),
                                       rtol=0, atol=1e-12)
    assert opt.state[params[0]]["mu"].item() == 1 / 5
    assert opt.state[params[0]]["eta"].item() == pytest.approx(0.1 / (1 + 1e-5 * 7) ** 0.75,
                                                               rel=1e-15)


STATE_KEYS = {dt.optim.Rprop: ["step", "prev", "step_size"],
              dt.optim.Adadelta: ["step", "square_avg", "acc_delta"],
              dt.optim.Adamax: ["step", "exp_avg", "exp_inf"],
              dt.optim.NAdam: ["step", "mu_product", "exp_avg", "exp_avg_sq"],
              dt.optim.RAdam: ["step", "exp_avg", "exp_avg_sq"],
              dt.optim.ASGD: ["step", "eta", "mu", "ax"]}


@pytest.mark.parametrize("cls, rule, kwargs", CASES, ids=IDS)
def test_resume_from_saved_state_continues_identically(cls, rule, kwargs, tmp_path):
    full = make_params(dt.float32)
    run(make_opt(cls, kwargs, full), full, 1, STEPS + 1)

    first = make_params(dt.float32)
    opt = make_opt(cls, kwargs, first)
    run(opt, first, 1, 5)
    sd = opt.state_dict()
    assert list(sd["state"][0]) == STATE_KEYS[cls]
    scalars = [k for k in STATE_KEYS[cls] if sd["state"][0][k].shape == ()]
    assert all(sd["state"][0][k].dtype == dt.float32 for k in scalars)  # default dtype
    assert sd["state"][0]["step"].item() == 4.0
    assert sd["param_groups"][1]["lr"] == GROUP2["lr"] and sd["param_groups"][1]["params"] == [3]
    dt.save({"params": [p.detach() for p in first], "optim": sd}, tmp_path / "ckpt")
    ckpt = dt.load(tmp_path / "ckpt")
    resumed = [dt.nn.Parameter(t) for t in ckpt["params"]]
    opt2 = make_opt(cls, {"lr": 123.0}, resumed)  # hyperparameters come from the checkpoint
    opt2.load_state_dict(ckpt["optim"])
    run(opt2, resumed, 5, STEPS + 1)
    for r, f in zip(resumed, full):
        np.testing.assert_array_equal(r.detach().numpy(), f.detach().numpy())


def test_defaults_are_pytorchs():
    p = make_params()
    groups = {cls: cls(p).param_groups[0] for cls in STATE_KEYS}
    assert {k: v for k, v in groups[dt.optim.Rprop].items() if k != "params"} == dict(
        lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), maximize=False)
    assert {k: v for k, v in groups[dt.optim.Adadelta].items() if k != "params"} == dict(
        lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, maximize=False)
    assert {k: v for k, v in groups[dt.optim.Adamax].items() if k != "params"} == dict(
        lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, maximize=False)
    assert {k: v for k, v in groups[dt.optim.NAdam].items() if k != "params"} == dict(
        lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, momentum_decay=4e-3,
        decoupled_weight_decay=False, maximize=False)
    assert {k: v for k, v in groups[dt.optim.RAdam].items() if k != "params"} == dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, decoupled_weight_decay=False,
        maximize=False)
    assert {k: v for k, v in groups[dt.optim.ASGD].items() if k != "params"} == dict(
        lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0, maximize=False)


@pytest.mark.parametrize("make, message", [
    (lambda p: dt.optim.Rprop(p, lr=-1.0), "Invalid learning rate: -1.0"),
    (lambda p: dt.optim.Rprop(p, etas=(1.2, 0.5)), "Invalid eta values: 1.2, 0.5"),
    (lambda p: dt.optim.Adadelta(p, lr=-1.0), "Invalid learning rate: -1.0"),
    (lambda p: dt.optim.Adadelta(p, rho=1.5), "Invalid rho value: 1.5"),
    (lambda p: dt.optim.Adadelta(p, eps=-1e-6), "Invalid epsilon value: -1e-06"),
    (lambda p: dt.optim.Adadelta(p, weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
    (lambda p: dt.optim.Adamax(p, betas=(0.9, 1.0)), "Invalid beta parameter at index 1: 1.0"),
    (lambda p: dt.optim.Adamax(p, eps=float("nan")), "Invalid epsilon value: nan"),
    (lambda p: dt.optim.NAdam(p, momentum_decay=-4e-3), "Invalid momentum_decay value: -0.004"),
    (lambda p: dt.optim.NAdam(p, betas=(-0.1, 0.9)), "Invalid beta parameter at index 0: -0.1"),
    (lambda p: dt.optim.NAdam(p, weight_decay=-1), "Invalid weight_decay value: -1"),
    (lambda p: dt.optim.RAdam(p, lr=-0.01), "Invalid learning rate: -0.01"),
    (lambda p: dt.optim.RAdam(p, betas=(0.9, 1.5)), "Invalid beta parameter at index 1: 1.5"),
    (lambda p: dt.optim.ASGD(p, lr=-0.1), "Invalid learning rate: -0.1"),
    (lambda p: dt.optim.ASGD(p, weight_decay=-0.5), "Invalid weight_decay value: -0.5"),
])
def test_invalid_hyperparameters_are_named(make, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make(make_params())


def test_launcher_knows_them_by_name():
    from dtrain.launcher import registry
    for name, cls in [("adadelta", dt.optim.Adadelta), ("nadam", dt.optim.NAdam),
                      ("radam", dt.optim.RAdam), ("adamax", dt.optim.Adamax),
                      ("asgd", dt.optim.ASGD)]:
        assert registry.lookup(registry.OPTIMIZERS, name) is cls
    with pytest.raises(KeyError):
        registry.lookup(registry.OPTIMIZERS, "lbfgs")  # needs a closure: not for the trainer
