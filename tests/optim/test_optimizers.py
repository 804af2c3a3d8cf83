"""Optimizers against plain-NumPy re-implementations of the published update rules.

A small linear model is trained for 50 steps on fixed random batches; the reference code
below recomputes the gradients analytically and applies each paper's rule independently of
dtrain. Two parameter groups with different hyperparameters are used throughout.
"""
import math
import re
import textwrap
import warnings

import numpy as np
import pytest

import dtrain as dt
from dtrain.optim import optimizer as optimizer_module

STEPS = 50
_rng = np.random.default_rng(0)
W0, B0 = _rng.standard_normal((4, 3)), _rng.standard_normal(3)
BATCHES = [(_rng.standard_normal((8, 4)), _rng.standard_normal((8, 3))) for _ in range(STEPS)]


class Net(dt.nn.Module):
    def __init__(self, dtype=dt.float64):
        super().__init__()
        self.w = dt.nn.Parameter(dt.tensor(W0, dtype=dtype))
        self.b = dt.nn.Parameter(dt.tensor(B0, dtype=dtype))

    def forward(self, x):
        return x @ self.w + self.b


def loss_fn(model, i, sign=1.0):
    x, y = BATCHES[i]
    r = model(dt.tensor(x, dtype=model.w.dtype)) - dt.tensor(y, dtype=model.w.dtype)
    return (r * r).mean() * sign


def ref_grads(w, b, i):
    x, y = BATCHES[i]
    r = x @ w + b - y
    return [2 * x.T @ r / r.size, 2 * r.sum(0) / r.size]


# -- the published rules, in plain NumPy ----------------------------------------------------
def ref_sgd(p, g, s, t, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    g = g + weight_decay * p
    if momentum:
        s["b"] = g.copy() if t == 1 else momentum * s["b"] + (1 - dampening) * g
        g = g + momentum * s["b"] if nesterov else s["b"]
    return p - lr * g


def ref_adam(p, g, s, t, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
             decoupled=False):
    """Kingma & Ba, Algorithm 1 (+ AMSGrad of Reddi et al.; AdamW of Loshchilov & Hutter)."""
    b1, b2 = betas
    if decoupled:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
    v = s["v"]
    if amsgrad:
        v = s["vmax"] = np.maximum(s.get("vmax", 0.0), s["v"])
    m_hat, v_hat = s["m"] / (1 - b1 ** t), v / (1 - b2 ** t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps)


def ref_rmsprop(p, g, s, t, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                centered=False):
    g = g + weight_decay * p
    s["v"] = alpha * s.get("v", 0.0) + (1 - alpha) * g * g
    v = s["v"]
    if centered:
        s["gm"] = alpha * s.get("gm", 0.0) + (1 - alpha) * g
        v = v - s["gm"] ** 2
    step = g / (np.sqrt(v) + eps)
    if momentum:
        s["buf"] = momentum * s.get("buf", 0.0) + step
        step = s["buf"]
    return p - lr * step


def ref_adagrad(p, g, s, t, lr, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                eps=1e-10):
    g = g + weight_decay * p
    s["sum"] = s.get("sum", initial_accumulator_value) + g * g
    return p - lr / (1 + (t - 1) * lr_decay) * g / (np.sqrt(s["sum"]) + eps)


def run_reference(rule, kwargs, group2, steps=STEPS):
    """(w, b) after `steps` steps; maximize=True on -loss must give the same numbers."""
    params, states = [W0.copy(), B0.copy()], [{}, {}]
    hyper = [kwargs, {**kwargs, **group2}]
    for t in range(1, steps + 1):
        grads = ref_grads(*params, t - 1)
        for k in range(2):
            params[k] = rule(params[k], grads[k], states[k], t, **hyper[k])
    return params


CASES = [
    (dt.optim.SGD, ref_sgd, dict(lr=0.1)),
    (dt.optim.SGD, ref_sgd, dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    (dt.optim.SGD, ref_sgd, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.02)),
    (dt.optim.Adam, ref_adam, dict(lr=0.02)),
    (dt.optim.Adam, ref_adam, dict(lr=0.02, betas=(0.8, 0.99), weight_decay=0.05, amsgrad=True)),
    (dt.optim.AdamW, ref_adam, dict(lr=0.02, amsgrad=True)),
    (dt.optim.AdamW, ref_adam, dict(lr=0.02, betas=(0.85, 0.995), eps=1e-6, weight_decay=0.1)),
    (dt.optim.RMSprop, ref_rmsprop, dict(lr=0.01)),
    (dt.optim.RMSprop, ref_rmsprop, dict(lr=0.01, alpha=0.9, momentum=0.9, centered=True,
                                         weight_decay=0.01)),
    (dt.optim.Adagrad, ref_adagrad, dict(lr=0.1)),
    (dt.optim.Adagrad, ref_adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.05,
                                         initial_accumulator_value=0.3)),
]
IDS = [f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(CASES)]
GROUP2 = {"lr": 0.03, "weight_decay": 0.2}  # the bias group's own hyperparameters


def make(cls, kwargs, model, maximize=False):
    extra = {"maximize": True} if maximize else {}
    return cls([{"params": [model.w]}, {"params": [model.b], **GROUP2}], **kwargs, **extra)


def train(opt, model, start, stop, sign=1.0):
    for i in range(start, stop):
        opt.zero_grad()
        loss_fn(model, i, sign).backward()
        opt.step()


def ref_kwargs(cls, kwargs):
    out = dict(kwargs)
    if cls is dt.optim.AdamW:
        out.setdefault("weight_decay", 1e-2)
        out["decoupled"] = True
    return out


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("cls, rule, kwargs", CASES, ids=IDS)
def test_trajectory_matches_reference(cls, rule, kwargs, maximize):
    model = Net()
    opt = make(cls, kwargs, model, maximize)
    train(opt, model, 0, STEPS, sign=-1.0 if maximize else 1.0)
    w, b = run_reference(rule, ref_kwargs(cls, kwargs), GROUP2)
    np.testing.assert_allclose(model.w.detach().numpy(), w, rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.b.detach().numpy(), b, rtol=0, atol=1e-6)
    assert not np.allclose(w, W0)  # the run really moved


@pytest.mark.parametrize("cls, rule, kwargs", CASES, ids=IDS)
def test_updates_in_blocks_follow_the_reference(cls, rule, kwargs, monkeypatch):
    """Updates split into cache-sized blocks (optimizer.in_blocks) follow the reference too:
    blocks of 5 elements here, so that w's 12 split into 5 + 5 + 2."""
    monkeypatch.setattr(optimizer_module, "BLOCK", 5)
    model = Net()
    train(make(cls, kwargs, model), model, 0, STEPS)
    w, b = run_reference(rule, ref_kwargs(cls, kwargs), GROUP2)
    np.testing.assert_allclose(model.w.detach().numpy(), w, rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.b.detach().numpy(), b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cls, rule, kwargs", CASES, ids=IDS)
def test_resume_from_saved_state_continues_identically(cls, rule, kwargs, tmp_path):
    full = Net()
    train(make(cls, kwargs, full), full, 0, STEPS)

    first = Net()
    opt = make(cls, kwargs, first)
    train(opt, first, 0, 25)
    dt.save({"model": first.state_dict(), "optim": opt.state_dict()}, tmp_path / "ckpt")
    ckpt = dt.load(tmp_path / "ckpt")
    resumed = Net()
    resumed.load_state_dict(ckpt["model"])
    opt2 = make(cls, {"lr": 123.0}, resumed)  # hyperparameters come from the checkpoint
    opt2.load_state_dict(ckpt["optim"])
    train(opt2, resumed, 25, STEPS)
    np.testing.assert_array_equal(resumed.w.detach().numpy(), full.w.detach().numpy())
    np.testing.assert_array_equal(resumed.b.detach().numpy(), full.b.detach().numpy())


def test_float32_parameters_keep_their_dtype_and_track_float64():
    m32, m64 = Net(dt.float32), Net()
    for m in (m32, m64):
        train(dt.optim.Adam(m.parameters(), lr=0.01), m, 0, STEPS)
    assert m32.w.dtype == dt.float32 and m32.w.grad.dtype == dt.float32
    np.testing.assert_allclose(m32.w.detach().numpy(), m64.w.detach().numpy(), atol=1e-5)


# -- state dicts -----------------------------------------------------------------------------
def test_state_dict_format_is_pytorch_like():
    model = Net()
    opt = dt.optim.Adam([{"params": [model.w]}, {"params": [model.b], "lr": 0.5}], lr=0.1)
    train(opt, model, 0, 3)
    sd = opt.state_dict()
    assert sorted(sd) == ["param_groups", "state"]
    assert sorted(sd["state"]) == [0, 1]
    assert list(sd["state"][0]) == ["step", "exp_avg", "exp_avg_sq"]
    assert sd["state"][0]["step"].item() == 3.0 and sd["state"][0]["step"].shape == ()
    assert sd["state"][1]["exp_avg"].shape == (3,)
    g0, g1 = sd["param_groups"]
    assert g0["params"] == [0] and g1["params"] == [1]
    assert g0["lr"] == 0.1 and g1["lr"] == 0.5 and g1["betas"] == (0.9, 0.999)
    assert g0["amsgrad"] is False and g0["weight_decay"] == 0
    plain = dt.optim.SGD(model.parameters(), lr=0.1)
    train(plain, model, 0, 2)
    assert plain.state_dict()["state"] == {}  # no momentum, no state


def test_load_state_dict_copies_and_casts_state():
    model = Net()
    opt = dt.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train(opt, model, 0, 2)
    sd = opt.state_dict()
    before = sd["state"][0]["momentum_buffer"].numpy().copy()
    m32 = Net(dt.float32)
    opt2 = dt.optim.SGD(m32.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(sd)
    assert opt2.state[m32.w]["momentum_buffer"].dtype == dt.float32
    train(opt2, m32, 2, 4)
    np.testing.assert_array_equal(sd["state"][0]["momentum_buffer"].numpy(), before)


def test_load_state_dict_rejects_mismatched_groups():
    model = Net()
    opt = dt.optim.SGD([{"params": [model.w]}, {"params": [model.b]}], lr=0.1)
    other = dt.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="different number of parameter groups"):
        other.load_state_dict(opt.state_dict())
    sizes = dt.optim.SGD([{"params": [model.w, model.b]}, {"params": []}], lr=0.1)
    with pytest.raises(ValueError, match="doesn't match the size"):
        sizes.load_state_dict(opt.state_dict())


def test_adagrad_state_exists_before_the_first_step():
    model = Net()
    opt = dt.optim.Adagrad(model.parameters(), initial_accumulator_value=0.25)
    sd = opt.state_dict()["state"]
    assert sd[0]["step"].item() == 0.0
    np.testing.assert_array_equal(sd[0]["sum"].numpy(), np.full((4, 3), 0.25))


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize("make_opt, message", [
    (lambda p: dt.optim.SGD(p, lr=-0.1), "Invalid learning rate: -0.1"),
    (lambda p: dt.optim.SGD(p, momentum=-0.5), "Invalid momentum value: -0.5"),
    (lambda p: dt.optim.SGD(p, weight_decay=-1), "Invalid weight_decay value: -1"),
    (lambda p: dt.optim.SGD(p, nesterov=True), "Nesterov momentum requires a momentum"),
    (lambda p: dt.optim.SGD(p, momentum=0.9, dampening=0.1, nesterov=True),
     "zero dampening"),
    (lambda p: dt.optim.Adam(p, lr=float("nan")), "Invalid learning rate: nan"),
    (lambda p: dt.optim.Adam(p, eps=-1e-8), "Invalid epsilon value: -1e-08"),
    (lambda p: dt.optim.Adam(p, betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
    (lambda p: dt.optim.AdamW(p, betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
    (lambda p: dt.optim.AdamW(p, weight_decay=-0.01), "Invalid weight_decay value: -0.01"),
    (lambda p: dt.optim.RMSprop(p, alpha=-0.9), "Invalid alpha value: -0.9"),
    (lambda p: dt.optim.RMSprop(p, momentum=-1), "Invalid momentum value: -1"),
    (lambda p: dt.optim.Adagrad(p, lr_decay=-1), "Invalid lr_decay value: -1"),
    (lambda p: dt.optim.Adagrad(p, initial_accumulator_value=-1),
     "Invalid initial_accumulator_value value: -1"),
])
def test_invalid_hyperparameters_are_named(make_opt, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_opt(Net().parameters())


def test_param_group_checks():
    model = Net()
    with pytest.raises(ValueError, match="empty parameter list"):
        dt.optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="iterable of Tensors or dicts"):
        dt.optim.SGD(model.w, lr=0.1)
    with pytest.raises(TypeError, match="ordered collections"):
        dt.optim.SGD([{"params": {model.w}}], lr=0.1)
    with pytest.raises(TypeError, match="can only optimize Tensors"):
        dt.optim.SGD([model.w, 3.0], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        dt.optim.SGD([model.w * 2], lr=0.1)
    opt = dt.optim.SGD([model.w], lr=0.1, momentum=0.5)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [model.b, model.w]})
    with pytest.warns(UserWarning, match="duplicate parameters"):
        opt.add_param_group({"params": [model.b, model.b], "lr": 0.2})
    assert opt.param_groups[1]["lr"] == 0.2 and opt.param_groups[1]["momentum"] == 0.5
    assert opt.param_groups[1]["params"][0] is model.b


def test_zero_grad_and_step_update_in_place():
    model = Net()
    w = model.w
    opt = dt.optim.SGD(model.parameters(), lr=0.1)
    loss_fn(model, 0).backward()
    grad = w.grad
    expected = W0 - 0.1 * grad.numpy()
    opt.step()
    assert model.w is w and model.w.grad is grad
    np.testing.assert_array_equal(w.detach().numpy(), expected)
    opt.zero_grad(set_to_none=False)
    assert w.grad is grad and not grad.numpy().any()
    opt.zero_grad()
    assert w.grad is None and model.b.grad is None
    opt.step()  # no gradients: nothing moves
    np.testing.assert_array_equal(w.detach().numpy(), expected)


def test_step_bumps_the_version_seen_by_autograd():
    model = Net()
    out = (model.w * model.w).sum()
    model.w.grad = dt.ones_like(model.w)
    dt.optim.SGD([model.w], lr=0.1).step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()


def test_closure_runs_with_grad_enabled_and_its_loss_is_returned():
    model = Net()
    opt = dt.optim.SGD(model.parameters(), lr=0.1)

    def closure():
        opt.zero_grad()
        loss = loss_fn(model, 0)
        loss.backward()
        return loss

    with dt.no_grad():
        loss = opt.step(closure)
    expected = ((BATCHES[0][0] @ W0 + B0 - BATCHES[0][1]) ** 2).mean()
    assert math.isclose(loss.item(), expected, rel_tol=1e-12)
    np.testing.assert_allclose(model.w.detach().numpy(), W0 - 0.1 * ref_grads(W0, B0, 0)[0],
                               atol=1e-12)


def test_repr_lists_groups():
    text = repr(dt.optim.SGD(Net().parameters(), lr=0.1))
    assert text.startswith("SGD (\nParameter Group 0\n") and "    lr: 0.1\n" in text


# -- a custom optimizer, as documented in Optimizer's docstring ------------------------------
def docs_example():
    """Run the code block of `Optimizer`'s docstring; return the class it defines."""
    doc = dt.optim.Optimizer.__doc__
    block = doc.split("::\n", 1)[1].split("\n\n    The built-in", 1)[0]
    namespace = {"dt": dt}
    exec(textwrap.dedent(block), namespace)
    return namespace["SignSGD"]


def test_custom_optimizer_from_the_docs():
    SignSGD = docs_example()
    model = Net()
    opt = SignSGD([{"params": [model.w]}, {"params": [model.b], "lr": 0.002}], lr=0.01)
    train(opt, model, 0, STEPS)
    w, b = W0.copy(), B0.copy()
    for i in range(STEPS):
        gw, gb = ref_grads(w, b, i)
        w, b = w - 0.01 * np.sign(gw), b - 0.002 * np.sign(gb)
    np.testing.assert_allclose(model.w.detach().numpy(), w, atol=1e-12)
    np.testing.assert_allclose(model.b.detach().numpy(), b, atol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched = dt.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        sched.step()
    assert opt.param_groups[1]["lr"] == 0.001
