"""Schedulers: the chainable (recursive) rates against closed forms written here, resume
through a saved state dict, and PyTorch's argument checks."""
import math
import re

import numpy as np
import pytest

import dtrain as dt
from dtrain.optim import lr_scheduler as L

STEPS = 50
BASE = (0.1, 0.04)  # the two param groups' learning rates


def make_opt(cls=dt.optim.SGD, **kwargs):
    params = [dt.zeros(2, requires_grad=True), dt.zeros(3, requires_grad=True)]
    if cls is dt.optim.SGD:
        kwargs.setdefault("momentum", 0.9)
    return cls([{"params": [params[0]], "lr": BASE[0]}, {"params": [params[1]],
                                                         "lr": BASE[1]}], **kwargs)


def lrs_over(make_sched, steps=STEPS, opt=None, key="lr"):
    """Rates of both groups at epochs 0..steps (after construction, then after each step)."""
    opt = opt or make_opt()
    sched = make_sched(opt)
    out = [[g[key] for g in opt.param_groups]]
    for _ in range(steps):
        opt.step()
        sched.step()
        out.append([g[key] for g in opt.param_groups])
        assert sched.get_last_lr() == [g["lr"] for g in opt.param_groups]
    return np.array(out, dtype=float)


def closed(fn, steps=STEPS):
    return np.array([[fn(base, e) for base in BASE] for e in range(steps + 1)])


def cosine(base, e, T, eta_min=0.0):
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * e / T)) / 2


def linear_factor(e, start, end, total):
    return start + (end - start) * min(e, total) / total


def one_cycle(base_max, e, total, pct, div=25.0, final_div=1e4, three_phase=False, cos=True):
    """1cycle (Smith & Topin) written out phase by phase: returns (lr, momentum)."""
    init, low = base_max / div, base_max / div / final_div
    anneal = ((lambda a, b, p: b + (a - b) * (1 + math.cos(math.pi * p)) / 2) if cos
              else (lambda a, b, p: a + (b - a) * p))
    up = pct * total - 1
    if three_phase:
        phases = [(0, up, init, base_max, 0.95, 0.85),
                  (up, 2 * pct * total - 2, base_max, init, 0.85, 0.95),
                  (2 * pct * total - 2, total - 1, init, low, 0.95, 0.95)]
    else:
        phases = [(0, up, init, base_max, 0.95, 0.85), (up, total - 1, base_max, low, 0.85, 0.95)]
    for k, (s, t, lr0, lr1, m0, m1) in enumerate(phases):
        if e <= t or k == len(phases) - 1:
            p = (e - s) / (t - s)
            return anneal(lr0, lr1, p), anneal(m0, m1, p)


@pytest.mark.parametrize("make_sched, expected", [
    (lambda o: L.StepLR(o, step_size=7, gamma=0.5),
     lambda b, e: b * 0.5 ** (e // 7)),
    (lambda o: L.MultiStepLR(o, milestones=[30, 5, 12, 12], gamma=0.3),
     lambda b, e: b * 0.3 ** sum(e >= m for m in (5, 12, 12, 30))),
    (lambda o: L.ExponentialLR(o, gamma=0.93),
     lambda b, e: b * 0.93 ** e),
    (lambda o: L.CosineAnnealingLR(o, T_max=17, eta_min=0.001),  # past T_max: periodic
     lambda b, e: cosine(b, e, 17, 0.001)),
    (lambda o: L.LinearLR(o, start_factor=0.1, end_factor=0.8, total_iters=20),
     lambda b, e: b * linear_factor(e, 0.1, 0.8, 20)),
    (lambda o: L.LambdaLR(o, lambda e: 1 / (1 + 0.1 * e)),
     lambda b, e: b / (1 + 0.1 * e)),
    (lambda o: L.SequentialLR(o, [L.LinearLR(o, start_factor=0.01, total_iters=5),
                                  L.CosineAnnealingLR(o, T_max=45)], milestones=[5]),
     lambda b, e: b * linear_factor(e, 0.01, 1.0, 5) if e < 5 else cosine(b, e - 5, 45)),
], ids=["step", "multistep", "exponential", "cosine", "linear", "lambda", "sequential"])
def test_chainable_rates_match_closed_form(make_sched, expected):
    np.testing.assert_allclose(lrs_over(make_sched), closed(expected), rtol=0, atol=1e-6)


def test_closed_form_via_step_epoch_warns_and_matches():
    opt = make_opt()
    sched = L.CosineAnnealingLR(opt, T_max=10)
    with pytest.warns(UserWarning, match="epoch parameter"):
        sched.step(7)
    assert sched.last_epoch == 7
    assert sched.get_last_lr() == pytest.approx([cosine(b, 7, 10) for b in BASE], abs=1e-12)


def test_lambda_per_group():
    got = lrs_over(lambda o: L.LambdaLR(o, [lambda e: 0.9 ** e, lambda e: e + 1]), steps=10)
    expect = [[BASE[0] * 0.9 ** e, BASE[1] * (e + 1)] for e in range(11)]
    np.testing.assert_allclose(got, expect, rtol=1e-12)


@pytest.mark.parametrize("kwargs", [
    dict(pct_start=0.3), dict(pct_start=0.25, three_phase=True),
    dict(pct_start=0.4, anneal_strategy="linear"),
    dict(pct_start=0.2, anneal_strategy="linear", three_phase=True)])
def test_one_cycle_lr_and_momentum(kwargs):
    total = STEPS
    maxes = (1.0, 0.5)
    opt = make_opt()
    make = lambda o: L.OneCycleLR(o, max_lr=list(maxes), total_steps=total, **kwargs)  # noqa: E731
    lrs = lrs_over(make, steps=total - 1, opt=opt)
    opt2 = make_opt()
    moms = lrs_over(make, steps=total - 1, opt=opt2, key="momentum")
    cos = kwargs.get("anneal_strategy", "cos") == "cos"
    for e in range(total):
        for g, m in enumerate(maxes):
            lr, mom = one_cycle(m, e, total, kwargs["pct_start"],
                                three_phase=kwargs.get("three_phase", False), cos=cos)
            assert lrs[e, g] == pytest.approx(lr, abs=1e-9)
            assert moms[e, g] == pytest.approx(mom, abs=1e-9)
    sched_past_end = make(make_opt())
    for _ in range(total):
        sched_past_end.step()
    with pytest.raises(ValueError, match="Tried to step 51 times"):
        sched_past_end.step()


def test_one_cycle_cycles_adam_beta1():
    opt = make_opt(dt.optim.Adam, betas=(0.9, 0.99))
    sched = L.OneCycleLR(opt, max_lr=0.5, epochs=5, steps_per_epoch=10)
    assert opt.param_groups[0]["betas"] == (0.95, 0.99)
    for _ in range(14):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["betas"] == pytest.approx((0.85, 0.99))  # at the peak
    assert sched.get_last_lr() == pytest.approx([0.5, 0.5])


def test_reduce_on_plateau_min_rel():
    opt = make_opt()
    sched = L.ReduceLROnPlateau(opt, factor=0.5, patience=2)
    metrics = [10, 9, 9, 9, 9, 8, 8, 8.0, 8, 8, 7.9995]
    lrs = []
    for m in metrics:
        sched.step(m)
        lrs.append(sched.get_last_lr()[0])
    # best 9 at epoch 2; epochs 3-5 are bad, the third (> patience) halves the rate; best 8
    # at epoch 6, halved again at epoch 9; 7.9995 is no relative improvement on 8 (1e-4).
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025,
                                 0.025])


def test_reduce_on_plateau_max_abs_cooldown_min_lr():
    opt = make_opt()
    sched = L.ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=0, threshold=0.5,
                                threshold_mode="abs", cooldown=2, min_lr=[0.002, 0.0])
    got = []
    for m in [1.0, 1.4, 1.4, 1.4, 1.4, 2.0, 2.1, 2.1]:
        sched.step(m)
        got.append(sched.get_last_lr())
    # 1.4 is no improvement on 1.0 (+0.5 needed): cut, then 2 cooldown epochs, cut again
    # (group 0 stops at its min_lr); 2.0 improves, 2.1 does not: cut after the cooldown.
    expect = [[0.1, 0.04], [0.01, 0.004], [0.01, 0.004], [0.01, 0.004], [0.002, 0.0004],
              [0.002, 0.0004], [0.002, 0.0004], [0.002, 0.00004]]
    np.testing.assert_allclose(got, expect, rtol=1e-12)


RESUMABLE = [
    lambda o: L.StepLR(o, 4, 0.7),
    lambda o: L.MultiStepLR(o, [3, 9, 9, 30], 0.5),
    lambda o: L.CosineAnnealingLR(o, 13),
    lambda o: L.LinearLR(o, 0.2, 1.0, 30),
    lambda o: L.OneCycleLR(o, 1.0, total_steps=STEPS),
    lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.1, total_iters=10), L.ExponentialLR(o, 0.9)],
                             [10]),
    lambda o: L.LambdaLR(o, Decay(0.9)),
    lambda o: L.CyclicLR(o, [0.01, 0.004], [0.1, 0.04], 3, 5, mode="triangular2"),
    lambda o: L.CosineAnnealingWarmRestarts(o, 3, 2, 0.001),
    lambda o: L.ChainedScheduler([L.ConstantLR(o, 0.2, 25), L.PolynomialLR(o, 30, 1.5)]),
    lambda o: L.MultiplicativeLR(o, Decay(0.97)),
]


class Decay:
    """A callable object: LambdaLR saves its __dict__ (plain functions are not saved)."""

    def __init__(self, rate):
        self.rate = rate

    def __call__(self, epoch):
        return self.rate ** epoch


@pytest.mark.parametrize("make_sched", RESUMABLE,
                         ids=["step", "multistep", "cosine", "linear", "onecycle", "sequential",
                              "lambda", "cyclic", "warm_restarts", "chained", "multiplicative"])
def test_resume_through_saved_state_dict(make_sched, tmp_path):
    full = lrs_over(make_sched, steps=40)
    opt = make_opt()
    sched = make_sched(opt)
    for _ in range(20):
        opt.step()
        sched.step()
    dt.save({"optim": opt.state_dict(), "sched": sched.state_dict()}, tmp_path / "s")
    ckpt = dt.load(tmp_path / "s")
    opt2 = make_opt()
    sched2 = make_sched(opt2)
    opt2.load_state_dict(ckpt["optim"])
    sched2.load_state_dict(ckpt["sched"])
    got = []
    for _ in range(20):
        opt2.step()
        sched2.step()
        got.append([g["lr"] for g in opt2.param_groups])
    np.testing.assert_array_equal(np.array(got), full[21:])


def test_plateau_resume_keeps_counters(tmp_path):
    opt = make_opt()
    sched = L.ReduceLROnPlateau(opt, patience=3)
    for m in [5, 4, 4, 4]:
        sched.step(m)
    dt.save(sched.state_dict(), tmp_path / "p")
    sched2 = L.ReduceLROnPlateau(make_opt(), patience=3)
    sched2.load_state_dict(dt.load(tmp_path / "p"))
    assert (sched2.best, sched2.num_bad_epochs, sched2.last_epoch) == (4, 2, 4)
    sched2.step(4)
    sched2.step(4)
    assert sched2.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)


def test_lambda_state_dict_saves_callable_objects_only():
    opt = make_opt()
    sched = L.LambdaLR(opt, [Decay(0.5), lambda e: 1.0])
    assert sched.state_dict()["lr_lambdas"] == [{"rate": 0.5}, None]


@pytest.mark.parametrize("build, error, message", [
    (lambda o: L.LinearLR(o, start_factor=0), ValueError, "Starting multiplicative factor"),
    (lambda o: L.LinearLR(o, end_factor=1.5), ValueError, "Ending multiplicative factor"),
    (lambda o: L.StepLR(o, 3, last_epoch=4), KeyError, "param 'initial_lr' is not specified"),
    (lambda o: L.LambdaLR(o, [lambda e: 1.0]), ValueError, "Expected 2 lr_lambdas, but got 1"),
    (lambda o: L.OneCycleLR(o, 1.0, total_steps=0), ValueError,
     "Expected positive integer total_steps, but got 0"),
    (lambda o: L.OneCycleLR(o, 1.0), ValueError, "either total_steps OR"),
    (lambda o: L.OneCycleLR(o, 1.0, total_steps=10, pct_start=1.5), ValueError,
     "pct_start, but got 1.5"),
    (lambda o: L.OneCycleLR(o, 1.0, total_steps=10, anneal_strategy="exp"), ValueError,
     "anneal_strategy must be one of"),
    (lambda o: L.OneCycleLR(o, [1.0], total_steps=10), ValueError,
     "max_lr must have the same length as optimizer.param_groups"),
    (lambda o: L.SequentialLR(o, [L.StepLR(o, 2)], [3]), ValueError,
     "number of schedulers 1 and the number of milestones to be equal to 1"),
    (lambda o: L.SequentialLR(o, [L.StepLR(o, 2), L.StepLR(make_opt(), 2)], [3]), ValueError,
     "belong to the same optimizer"),
    (lambda o: L.SequentialLR(o, [L.StepLR(o, 2), L.ReduceLROnPlateau(o)], [3]), ValueError,
     "does not support `ReduceLROnPlateau`"),
    (lambda o: L.ReduceLROnPlateau(o, factor=1.0), ValueError, "Factor should be < 1.0"),
    (lambda o: L.ReduceLROnPlateau(o, mode="avg"), ValueError, "mode avg is unknown"),
    (lambda o: L.ReduceLROnPlateau(o, threshold_mode="pct"), ValueError,
     "threshold mode pct is unknown"),
    (lambda o: L.StepLR(object(), 3), TypeError, "object is not an Optimizer"),
])
def test_argument_checks(build, error, message):
    with pytest.raises(error, match=re.escape(message)):
        build(make_opt())


def test_cycle_momentum_needs_momentum_or_betas():
    opt = make_opt(dt.optim.Adagrad)
    with pytest.raises(ValueError, match="must support momentum or beta1"):
        L.OneCycleLR(opt, 1.0, total_steps=10)
    L.OneCycleLR(opt, 1.0, total_steps=10, cycle_momentum=False)


def warm_restart(base, e, T_0, T_mult, eta_min):
    """SGDR at a (fractional) epoch: find the period holding e, then cosine within it."""
    start, period = 0.0, T_0
    while e >= start + period:
        start, period = start + period, period * T_mult
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * (e - start) / period)) / 2


def cyclic(e, low, high, up, down, mode, gamma=1.0):
    """Smith's triangular cycle: (rate, scale * factor) at step e."""
    cycle = 1 + e // (up + down)
    pos = e - (cycle - 1) * (up + down)
    factor = pos / up if pos <= up else (up + down - pos) / down
    scale = {"triangular": 1.0, "triangular2": 0.5 ** (cycle - 1), "exp_range": gamma ** e}[mode]
    return low + (high - low) * factor * scale, factor * scale


@pytest.mark.parametrize("make_sched, expected", [
    (lambda o: L.ConstantLR(o, factor=0.25, total_iters=7),
     lambda b, e: b * (0.25 if e < 7 else 1.0)),
    (lambda o: L.MultiplicativeLR(o, lambda e: 0.95),
     lambda b, e: b * 0.95 ** e),
    (lambda o: L.PolynomialLR(o, total_iters=20, power=2.0),
     lambda b, e: b * (1 - min(e, 20) / 20) ** 2),
    (lambda o: L.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2, eta_min=0.001),
     lambda b, e: warm_restart(b, e, 5, 2, 0.001)),
    (lambda o: L.CosineAnnealingWarmRestarts(o, T_0=7),
     lambda b, e: warm_restart(b, e, 7, 1, 0.0)),
    (lambda o: L.ChainedScheduler([L.ConstantLR(o, factor=0.1, total_iters=3),
                                   L.ExponentialLR(o, gamma=0.9)]),
     lambda b, e: b * 0.9 ** e * (0.1 if e < 3 else 1.0)),
], ids=["constant", "multiplicative", "polynomial", "warm_restarts", "warm_restarts_tmult1",
        "chained"])
def test_more_schedulers_match_closed_form(make_sched, expected):
    np.testing.assert_allclose(lrs_over(make_sched), closed(expected), rtol=0, atol=1e-12)


def test_warm_restarts_fractional_epochs():
    opt = make_opt()
    sched = L.CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=2, eta_min=0.01)
    iters = 4
    for epoch in range(15):
        for i in range(iters):
            e = epoch + i / iters
            sched.step(e)
            assert sched.get_last_lr() == pytest.approx(
                [warm_restart(b, e, 3, 2, 0.01) for b in BASE], abs=1e-12)
            assert sched.last_epoch == epoch
    with pytest.raises(ValueError, match="Expected non-negative epoch, but got -1"):
        sched.step(-1)


@pytest.mark.parametrize("mode, gamma", [("triangular", 1.0), ("triangular2", 1.0),
                                         ("exp_range", 0.97)])
def test_cyclic_lr_and_momentum(mode, gamma):
    lows, highs = (0.01, 0.004), (0.1, 0.04)
    make = lambda o: L.CyclicLR(o, list(lows), list(highs), step_size_up=4,  # noqa: E731
                                step_size_down=6, mode=mode, gamma=gamma)
    lrs = lrs_over(make, steps=35)
    moms = lrs_over(make, steps=35, key="momentum")
    for e in range(36):
        for g in range(2):
            lr, height = cyclic(e, lows[g], highs[g], 4, 6, mode, gamma)
            assert lrs[e, g] == pytest.approx(lr, abs=1e-12)
            assert moms[e, g] == pytest.approx(0.9 - 0.1 * height, abs=1e-12)


def test_cyclic_lr_custom_scale_fn_and_adam_beta1():
    opt = make_opt(dt.optim.Adam, betas=(0.9, 0.99))
    sched = L.CyclicLR(opt, 0.1, 1.0, step_size_up=2, scale_fn=lambda x: 0.5,
                       scale_mode="iterations", base_momentum=0.7, max_momentum=0.95)
    assert opt.param_groups[0]["betas"] == (0.95, 0.99)
    opt.step()
    sched.step()  # half way up, amplitude halved
    assert sched.get_last_lr() == pytest.approx([0.1 + 0.9 * 0.5 * 0.5] * 2)
    assert opt.param_groups[1]["betas"] == pytest.approx((0.95 - 0.25 * 0.5 * 0.5, 0.99))
    assert "_scale_fn_custom" not in sched.state_dict()
    with pytest.raises(ValueError, match="mode is invalid and scale_fn is None"):
        L.CyclicLR(make_opt(), 0.1, 1.0, mode="sine")
    with pytest.raises(ValueError, match="must support momentum or beta1"):
        L.CyclicLR(make_opt(dt.optim.Adagrad), 0.1, 1.0)


@pytest.mark.parametrize("build, message", [
    (lambda o: L.ConstantLR(o, factor=1.5), "Constant multiplicative factor expected"),
    (lambda o: L.CosineAnnealingWarmRestarts(o, T_0=0), "Expected positive integer T_0, but got 0"),
    (lambda o: L.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=0.5),
     "Expected integer T_mult >= 1, but got 0.5"),
    (lambda o: L.ChainedScheduler([L.StepLR(o, 2), L.StepLR(make_opt(), 2)]),
     "belong to the same optimizer"),
    (lambda o: L.MultiplicativeLR(o, [lambda e: 1.0]), "Expected 2 lr_lambdas, but got 1"),
])
def test_more_argument_checks(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build(make_opt())
