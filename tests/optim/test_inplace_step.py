"""After warm-up, `optimizer.step()` allocates no new arrays (graph mode's replay relies on it).

Intermediates go to scratch arrays the optimizer caches per (shape, dtype, device) and shares
between parameters of one shape; the value test uses several same-shaped parameters so that
any leak of one parameter's intermediates into the next one's update would show.
"""
import tracemalloc

import numpy as np
import pytest

import dtrain as dt

CONFIGS = [
    (dt.optim.SGD, dict(lr=0.1)),
    (dt.optim.SGD, dict(lr=0.1, weight_decay=0.01, maximize=True)),
    (dt.optim.SGD, dict(lr=0.1, momentum=0.9)),
    (dt.optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.02)),
    (dt.optim.SGD, dict(lr=0.1, momentum=0.8, nesterov=True, weight_decay=0.02, maximize=True)),
    (dt.optim.Adam, dict(lr=0.01)),
    (dt.optim.Adam, dict(lr=0.01, weight_decay=0.1, amsgrad=True, maximize=True)),
    (dt.optim.AdamW, dict(lr=0.01)),
    (dt.optim.AdamW, dict(lr=0.01, weight_decay=0.05, amsgrad=True, maximize=True)),
    (dt.optim.RMSprop, dict(lr=0.01, maximize=True)),
    (dt.optim.RMSprop, dict(lr=0.01, centered=True, weight_decay=0.1)),
    (dt.optim.RMSprop, dict(lr=0.01, momentum=0.9, centered=True, weight_decay=0.1)),
    (dt.optim.Adagrad, dict(lr=0.1)),
    (dt.optim.Adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.1,
                            initial_accumulator_value=0.5, maximize=True)),
]
IDS = [f"{cls.__name__}-{i}" for i, (cls, _) in enumerate(CONFIGS)]
# checked against their references, with shared scratch, in test_optimizer_variants.py
VARIANTS = [
    (dt.optim.Adadelta, dict(lr=0.5, weight_decay=0.1, maximize=True)),
    (dt.optim.Adamax, dict(lr=0.01, weight_decay=0.1)),
    (dt.optim.NAdam, dict(lr=0.01, weight_decay=0.1)),
    (dt.optim.NAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True,
                          maximize=True)),
    (dt.optim.RAdam, dict(lr=0.01, weight_decay=0.1)),  # rectified from step 6
    (dt.optim.RAdam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    (dt.optim.ASGD, dict(lr=0.1, weight_decay=0.1)),
    (dt.optim.ASGD, dict(lr=0.1, t0=1, maximize=True)),  # averaging (mu < 1) from step 4
    (dt.optim.Rprop, dict(lr=0.05, maximize=True)),
]
ALL, ALL_IDS = CONFIGS + VARIANTS, IDS + [f"{c.__name__}-v{i}" for i, (c, _) in
                                          enumerate(VARIANTS)]


def make_params(shapes, dtype, seed=0):
    """Parameters with random values and gradients."""
    rng = np.random.default_rng(seed)
    params = [dt.nn.Parameter(dt.tensor(rng.standard_normal(s), dtype=dtype)) for s in shapes]
    for p in params:
        p.grad = dt.tensor(rng.standard_normal(p.shape), dtype=dtype)
    return params


@pytest.mark.parametrize("cls, kwargs", ALL, ids=ALL_IDS)
def test_step_after_warmup_allocates_no_arrays(cls, kwargs):
    params = make_params([(256, 256), (256, 256), (256,)], dt.float32)  # 256 KiB each matrix
    opt = cls(params, **kwargs)
    for _ in range(6):  # the 7th step is measured: RAdam rectifies from step 6 on
        opt.step()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        opt.step()
        extra = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert extra < 16 * 1024, f"step allocated {extra} bytes at peak"


# -- the update rules, independently in float64 NumPy (torch.optim's documented algorithms) --
def ref_step(cls, kwargs, p, g, s, t):
    """`p` after step `t` (from 1) with gradient `g`; `s` holds this parameter's state."""
    k = {"weight_decay": 1e-2 if cls is dt.optim.AdamW else 0.0, **kwargs}
    if k.get("maximize"):
        g = -g
    if cls is dt.optim.AdamW:
        p = p * (1 - k["lr"] * k["weight_decay"])
    else:
        g = g + k["weight_decay"] * p
    if cls is dt.optim.SGD:
        mu = k.get("momentum", 0.0)
        if mu:
            s["b"] = g if t == 1 else mu * s["b"] + (1 - k.get("dampening", 0.0)) * g
            g = g + mu * s["b"] if k.get("nesterov") else s["b"]
        return p - k["lr"] * g
    if cls is dt.optim.Adagrad:
        s["sum"] = s.get("sum", k.get("initial_accumulator_value", 0.0)) + g ** 2
        clr = k["lr"] / (1 + (t - 1) * k.get("lr_decay", 0.0))
        return p - clr * g / (np.sqrt(s["sum"]) + k.get("eps", 1e-10))
    if cls is dt.optim.RMSprop:
        alpha, mu = k.get("alpha", 0.99), k.get("momentum", 0.0)
        s["v"] = alpha * s.get("v", 0.0) + (1 - alpha) * g ** 2
        var = s["v"]
        if k.get("centered"):
            s["a"] = alpha * s.get("a", 0.0) + (1 - alpha) * g
            var = var - s["a"] ** 2
        d = g / (np.sqrt(var) + k.get("eps", 1e-8))
        if mu:
            d = s["buf"] = mu * s.get("buf", 0.0) + d
        return p - k["lr"] * d
    b1, b2 = k.get("betas", (0.9, 0.999))  # Adam, AdamW
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g ** 2
    v = s["vmax"] = np.maximum(s.get("vmax", 0.0), s["v"]) if k.get("amsgrad") else s["v"]
    m_hat, v_hat = s["m"] / (1 - b1 ** t), v / (1 - b2 ** t)
    return p - k["lr"] * m_hat / (np.sqrt(v_hat) + k.get("eps", 1e-8))


@pytest.mark.parametrize("cls, kwargs", CONFIGS, ids=IDS)
def test_values_with_shared_scratch_match_reference(cls, kwargs):
    shapes = [(4, 5), (4, 5), (4, 5), (3,)]  # three parameters share one set of scratch
    params = make_params(shapes, dt.float64)
    expected = [p.detach().numpy().copy() for p in params]
    states = [{} for _ in params]
    opt = cls(params, **kwargs)
    rng = np.random.default_rng(1)
    for t in range(1, 4):
        grads = [rng.standard_normal(s) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = dt.tensor(g)
        opt.step()
        expected = [ref_step(cls, kwargs, e, g, s, t)
                    for e, g, s in zip(expected, grads, states)]
    for p, e, p0 in zip(params, expected, make_params(shapes, dt.float64)):
        np.testing.assert_allclose(p.detach().numpy(), e, rtol=1e-12, atol=1e-14)
        assert not np.allclose(e, p0.detach().numpy())  # the steps really moved


STATE_KEYS = {dt.optim.SGD: {"momentum_buffer"},
              dt.optim.Adam: {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
              dt.optim.AdamW: {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
              dt.optim.RMSprop: {"step", "square_avg", "momentum_buffer", "grad_avg"},
              dt.optim.Adagrad: {"step", "sum"},
              dt.optim.Adadelta: {"step", "square_avg", "acc_delta"},
              dt.optim.Adamax: {"step", "exp_avg", "exp_inf"},
              dt.optim.NAdam: {"step", "mu_product", "exp_avg", "exp_avg_sq"},
              dt.optim.RAdam: {"step", "exp_avg", "exp_avg_sq"},
              dt.optim.ASGD: {"step", "eta", "mu", "ax"},
              dt.optim.Rprop: {"step", "prev", "step_size"}}


@pytest.mark.parametrize("cls, kwargs", ALL, ids=ALL_IDS)
def test_state_dict_holds_no_scratch_and_resumes_identically(cls, kwargs):
    shapes = [(4, 5), (4, 5), (3,)]
    params = make_params(shapes, dt.float32)
    opt = cls(params, **kwargs)
    opt.step()
    opt.step()
    sd = opt.state_dict()
    work = list(opt._scratch_arrays.values())
    assert work  # the updates did use scratch
    for entry in sd["state"].values():
        assert set(entry) <= STATE_KEYS[cls]
        for value in entry.values():
            assert not any(np.shares_memory(value._data, w) for w in work)

    copies = make_params(shapes, dt.float32)
    for c, p in zip(copies, params):
        c._data[...] = p._data
    resumed = cls(copies, **kwargs)
    resumed.load_state_dict(sd)
    assert resumed._scratch_arrays == {}
    for _ in range(2):
        opt.step()
        resumed.step()
    for c, p in zip(copies, params):
        np.testing.assert_array_equal(c.detach().numpy(), p.detach().numpy())
