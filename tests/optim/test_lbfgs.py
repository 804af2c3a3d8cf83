"""L-BFGS: convergence with the strong-Wolfe line search, the fixed-step iteration against a
float64 NumPy two-loop reference, the iteration and evaluation limits, the tolerances, and
resumption from a state dict (the history carries over between `step` calls)."""
import re

import numpy as np
import pytest

import dtrain as dt

_rng = np.random.default_rng(0)
A, B = _rng.standard_normal((30, 4)), _rng.standard_normal(30)
LABELS = (_rng.random(30) < 0.5).astype(float)
X0 = _rng.standard_normal(4)


def make_closure(opt, loss_fn):
    calls = []

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        calls.append(loss.item())
        return loss
    return closure, calls


def rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def test_strong_wolfe_minimizes_rosenbrock():
    x = dt.nn.Parameter(dt.tensor([-1.5, 2.0], dtype=dt.float64))
    # the default tolerance_change (1e-9) stops at |x - 1| ~ 3e-6, where gtd is ~ -1e-10
    opt = dt.optim.LBFGS([x], line_search_fn="strong_wolfe", tolerance_change=1e-14)
    closure, calls = make_closure(opt, lambda: rosenbrock(x))
    first = opt.step(closure)
    assert first.item() == calls[0] == pytest.approx(2.5 ** 2 + 100 * 0.25 ** 2)  # f(x0)
    for _ in range(5):
        opt.step(closure)
    np.testing.assert_allclose(x.detach().numpy(), [1.0, 1.0], rtol=0, atol=1e-6)
    assert opt.state[x]["func_evals"] == len(calls)


def least_squares(w):
    r = dt.tensor(A) @ w - dt.tensor(B)
    return (r * r).sum()


@pytest.mark.parametrize("line_search_fn", ["strong_wolfe", None])
def test_least_squares_reaches_the_closed_form_solution(line_search_fn):
    w = dt.nn.Parameter(dt.zeros(4, dtype=dt.float64))
    opt = dt.optim.LBFGS([w], lr=1, max_iter=50, line_search_fn=line_search_fn,
                         tolerance_grad=1e-12, tolerance_change=1e-15)
    closure, _ = make_closure(opt, lambda: least_squares(w))
    opt.step(closure)
    np.testing.assert_allclose(w.detach().numpy(), np.linalg.lstsq(A, B, rcond=None)[0],
                               rtol=0, atol=1e-8)


# -- the fixed-step iteration against the published two-loop recursion ----------------------
def logistic(x):
    """Regularized logistic loss and its gradient (NumPy)."""
    z = A @ x
    return (np.logaddexp(0, z) - LABELS * z).sum() + 0.5 * x @ x, \
        A.T @ (1 / (1 + np.exp(-z)) - LABELS) + x


def ref_lbfgs(x, lr, iters, history_size):
    """Nocedal & Wright, Algorithm 7.5 with a fixed step: direction -H g from the two-loop
    recursion over the last `history_size` pairs (s, y) with s.y > 1e-10, H0 = s.y / y.y
    of the newest; the first step is -g scaled by lr * min(1, 1 / |g|_1)."""
    g = logistic(x)[1]
    pairs, gamma = [], 1.0
    d, t = -g, lr * min(1.0, 1 / np.abs(g).sum())
    for k in range(iters):
        if k > 0:
            q, alphas = g.copy(), []
            for s_i, y_i in reversed(pairs):
                alphas.append(s_i @ q / (y_i @ s_i))
                q = q - alphas[-1] * y_i
            r = gamma * q
            for (s_i, y_i), a in zip(pairs, reversed(alphas)):
                r = r + (a - y_i @ r / (y_i @ s_i)) * s_i
            d, t = -r, lr
        x_new = x + t * d
        g_new = logistic(x_new)[1]
        s, y = x_new - x, g_new - g
        if s @ y > 1e-10:
            pairs = (pairs + [(s, y)])[-history_size:]
            gamma = s @ y / (y @ y)
        x, g = x_new, g_new
    return x


def logistic_loss(x):
    z = dt.tensor(A) @ x
    return (dt.log(1 + dt.exp(z)) - dt.tensor(LABELS) * z).sum() + 0.5 * (x * x).sum()


def test_fixed_step_iterations_match_reference_across_calls_and_a_checkpoint(tmp_path):
    x = dt.nn.Parameter(dt.tensor(X0))
    opt = dt.optim.LBFGS([x], lr=0.8, max_iter=4, history_size=3)
    closure, calls = make_closure(opt, lambda: logistic_loss(x))
    opt.step(closure)
    assert len(calls) == 4  # no evaluation after the last iteration
    sd = opt.state_dict()
    assert list(sd["state"]) == [0] and set(sd["state"][0]) == {
        "func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag",
        "prev_flat_grad", "prev_loss", "al"}
    dt.save({"x": x.detach(), "optim": sd}, tmp_path / "ckpt")
    opt.step(closure)

    ckpt = dt.load(tmp_path / "ckpt")
    y = dt.nn.Parameter(ckpt["x"])
    resumed = dt.optim.LBFGS([y], lr=5.0)  # hyperparameters come from the checkpoint
    resumed.load_state_dict(ckpt["optim"])
    assert resumed.param_groups[0]["history_size"] == 3
    resumed.step(make_closure(resumed, lambda: logistic_loss(y))[0])
    np.testing.assert_array_equal(y.detach().numpy(), x.detach().numpy())

    expected = ref_lbfgs(X0, 0.8, 8, 3)  # 8 iterations in all, the history holding 3 pairs
    np.testing.assert_allclose(x.detach().numpy(), expected, rtol=0, atol=1e-10)
    assert np.abs(expected - ref_lbfgs(X0, 0.8, 8, 100)).max() > 1e-5  # the history matters
    assert len(opt.state[x]["old_dirs"]) == 3 and opt.state[x]["n_iter"] == 8
    assert opt.state[x]["func_evals"] == len(calls) == 8
    assert logistic(expected)[0] < logistic(X0)[0] - 8  # 27.5 -> 19.47


def test_max_eval_and_tolerances_stop_early():
    x = dt.nn.Parameter(dt.tensor(X0))
    opt = dt.optim.LBFGS([x], max_iter=10, max_eval=3)
    closure, calls = make_closure(opt, lambda: logistic_loss(x))
    opt.step(closure)
    assert len(calls) == 3 and opt.state[x]["n_iter"] == 2

    # the first step (along -g, g.g ~ 84) lowers the loss by ~5: below tolerance_change
    opt = dt.optim.LBFGS([x], max_iter=10, tolerance_change=10)
    closure, calls = make_closure(opt, lambda: logistic_loss(x))
    opt.step(closure)
    assert len(calls) == 2 and opt.state[x]["n_iter"] == 1

    at_minimum = dt.nn.Parameter(dt.tensor(np.linalg.lstsq(A, B, rcond=None)[0]))
    opt = dt.optim.LBFGS([at_minimum], tolerance_grad=1e-6)
    closure, calls = make_closure(opt, lambda: least_squares(at_minimum))
    before = at_minimum.detach().numpy().copy()
    assert opt.step(closure).item() == calls[0]
    assert len(calls) == 1 and opt.state[at_minimum]["n_iter"] == 0  # gradient already ~0
    np.testing.assert_array_equal(at_minimum.detach().numpy(), before)


def test_defaults_and_validation():
    x = dt.nn.Parameter(dt.tensor(X0))
    group = dt.optim.LBFGS([x]).param_groups[0]
    assert {k: v for k, v in group.items() if k != "params"} == dict(
        lr=1, max_iter=20, max_eval=25, tolerance_grad=1e-7, tolerance_change=1e-9,
        history_size=100, line_search_fn=None)
    for kwargs, message in [(dict(lr=-1.0), "Invalid learning rate: -1.0"),
                            (dict(max_iter=0), "Invalid max_iter value: 0"),
                            (dict(history_size=0), "Invalid history_size value: 0"),
                            (dict(line_search_fn="backtracking"),
                             "Invalid line_search_fn: 'backtracking'")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            dt.optim.LBFGS([x], **kwargs)
    other = dt.nn.Parameter(dt.zeros(2))
    with pytest.raises(ValueError, match="doesn't support per-parameter options"):
        dt.optim.LBFGS([{"params": [x]}, {"params": [other]}])
    with pytest.raises(RuntimeError, match="needs a closure"):
        dt.optim.LBFGS([x]).step(None)


@pytest.mark.parametrize("t0", [1.0, 1e-6], ids=["zoom", "extrapolate"])
def test_line_search_returns_a_strong_wolfe_step(t0):
    from dtrain.optim.lbfgs import _strong_wolfe

    def f_and_grad(x):  # Rosenbrock
        return ((1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2,
                np.array([-2 * (1 - x[0]) - 400 * x[0] * (x[1] - x[0] ** 2),
                          200 * (x[1] - x[0] ** 2)]))
    x = np.array([-1.5, 2.0])
    f, g = f_and_grad(x)
    d = -g
    evaluated = []

    def evaluate(t):
        evaluated.append(t)
        return f_and_grad(x + t * d)
    f_t, g_t, t, evals = _strong_wolfe(evaluate, t0, d, f, g, g @ d)
    assert evals == len(evaluated) >= 2 and t in evaluated
    assert (f_t, list(g_t)) == (f_and_grad(x + t * d)[0], list(f_and_grad(x + t * d)[1]))
    assert f_t <= f + 1e-4 * t * (g @ d)  # sufficient decrease
    assert abs(g_t @ d) <= 0.9 * abs(g @ d)  # curvature
    assert (t < t0) if t0 == 1.0 else (t > t0)
