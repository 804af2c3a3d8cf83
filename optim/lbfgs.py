"""L-BFGS with an optional strong-Wolfe line search (`torch.optim.LBFGS`)."""
import math

from dtrain.autograd.grad_mode import enable_grad, no_grad
from dtrain.core.backend import array_module
from dtrain.core.tensor import Tensor
from dtrain.optim.optimizer import Optimizer, check_hyperparameter


class LBFGS(Optimizer):
    """Limited-memory BFGS (Nocedal & Wright, Algorithm 7.4/7.5), as `torch.optim.LBFGS`.

    `step(closure)` runs up to `max_iter` iterations (`max_eval` closure calls) on all the
    parameters as one flat vector; `closure` must zero the gradients, compute the loss, call
    backward and return the loss. Without a line search every iteration moves by `lr` times
    the quasi-Newton direction (the first by at most `lr / |grad|_1`); with
    `line_search_fn="strong_wolfe"` the step length satisfies the strong Wolfe conditions.
    It stops early when the largest gradient entry is <= `tolerance_grad`, or the step or the
    change of the loss is below `tolerance_change`. One parameter group; the state, with
    PyTorch's keys under the first parameter, carries over between calls of `step` (the
    direction, last gradient and history pairs are tensors; the scalars ro, al, H_diag, t
    are Python floats where PyTorch keeps some of them as 0-d tensors).
    """

    def __init__(self, params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, history_size=100, line_search_fn=None):
        check_hyperparameter("learning rate", lr)
        check_hyperparameter("max_iter value", max_iter, low=1)
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        check_hyperparameter("max_eval value", max_eval, low=1)
        check_hyperparameter("history_size value", history_size, low=1)
        if line_search_fn not in (None, "strong_wolfe"):
            raise ValueError(f"Invalid line_search_fn: {line_search_fn!r} (only 'strong_wolfe' "
                             "or None are supported)")
        super().__init__(params, dict(lr=lr, max_iter=max_iter, max_eval=max_eval,
                                      tolerance_grad=tolerance_grad,
                                      tolerance_change=tolerance_change,
                                      history_size=history_size, line_search_fn=line_search_fn))
        self._params = self.param_groups[0]["params"]

    def add_param_group(self, param_group):
        if self.param_groups:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        super().add_param_group(param_group)

    # -- the parameters as one flat vector ---------------------------------------------------
    def _flat_grad(self):
        xp = array_module(self._params[0]._data)
        return xp.concatenate([xp.zeros(p._data.size, p._data.dtype) if p.grad is None
                               else p.grad._data.ravel() for p in self._params])

    def _move(self, step_size, direction):
        """param += step_size * direction (flat), in place."""
        offset = 0
        for p in self._params:
            n = p._data.size
            p._data += step_size * direction[offset:offset + n].reshape(p._data.shape)
            p._version[0] += 1
            offset += n

    def _set_params(self, arrays):
        for p, a in zip(self._params, arrays):
            p._data[...] = a
            p._version[0] += 1

    def _evaluate(self, closure):
        """(loss as a float, flat gradient) at the current parameters."""
        with enable_grad():
            loss = float(closure())
        return loss, self._flat_grad()

    def _directional_evaluate(self, closure, x, t, d):
        """Loss and flat gradient at x + t * d; the parameters are left at `x`."""
        self._move(t, d)
        loss, grad = self._evaluate(closure)
        self._set_params(x)
        return loss, grad

    def step(self, closure):
        """Run the iterations of one L-BFGS call; returns the closure's first loss."""
        if closure is None:
            raise RuntimeError("LBFGS.step needs a closure that re-evaluates the model and "
                               "returns the loss")
        with no_grad():
            return self._step(closure)

    def _step(self, closure):
        group = self.param_groups[0]
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        history_size = group["history_size"]
        state = self.state[self._params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        with enable_grad():
            orig_loss = closure()
        loss = float(orig_loss)
        flat_grad = self._flat_grad()
        xp = array_module(flat_grad)
        evals = 1
        state["func_evals"] += 1
        if float(xp.abs(flat_grad).max()) <= tolerance_grad:
            return orig_loss

        d, prev_flat_grad = (state[k]._data if k in state else None
                             for k in ("d", "prev_flat_grad"))
        old_dirs = [y._data for y in state.get("old_dirs", [])]
        old_stps = [s._data for s in state.get("old_stps", [])]
        t, ro, h_diag = state.get("t"), list(state.get("ro", [])), state.get("H_diag")
        prev_loss = state.get("prev_loss")
        al = state.setdefault("al", [None] * history_size)

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs, old_stps, ro, h_diag = [], [], [], 1.0
            else:
                # curvature pair of the last step; skipped unless it keeps H positive definite
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = float(y @ s)
                if ys > 1e-10:
                    if len(old_dirs) == history_size:
                        del old_dirs[0], old_stps[0], ro[0]
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    h_diag = ys / float(y @ y)
                d = self._two_loop(flat_grad, old_dirs, old_stps, ro, h_diag, al)
            prev_flat_grad = flat_grad  # never changed in place
            prev_loss = loss

            if state["n_iter"] == 1:
                t = min(1.0, 1.0 / float(xp.abs(flat_grad).sum())) * lr
            else:
                t = lr
            gtd = float(flat_grad @ d)
            if gtd > -tolerance_change:  # not a descent direction
                break

            if group["line_search_fn"] is not None:
                x_init = [p._data.copy() for p in self._params]
                loss, flat_grad, t, ls_evals = _strong_wolfe(
                    lambda t_: self._directional_evaluate(closure, x_init, t_, d),
                    t, d, loss, flat_grad, gtd)
                self._move(t, d)
            else:
                self._move(t, d)
                ls_evals = 0
                if n_iter != max_iter:  # no need to re-evaluate after the last iteration
                    loss, flat_grad = self._evaluate(closure)
                    ls_evals = 1
            evals += ls_evals
            state["func_evals"] += ls_evals

            if (n_iter == max_iter or evals >= max_eval
                    or float(xp.abs(flat_grad).max()) <= tolerance_grad
                    or float(xp.abs(d).max()) * abs(t) <= tolerance_change
                    or abs(loss - prev_loss) < tolerance_change):
                break

        state.update(d=Tensor._make(d), t=t, old_dirs=[Tensor._make(a) for a in old_dirs],
                     old_stps=[Tensor._make(a) for a in old_stps], ro=ro, H_diag=h_diag,
                     prev_flat_grad=Tensor._make(prev_flat_grad), prev_loss=prev_loss)
        return orig_loss

    @staticmethod
    def _two_loop(flat_grad, old_dirs, old_stps, ro, h_diag, al):
        """The L-BFGS direction -H grad by the two-loop recursion over the stored pairs
        (y = old_dirs, s = old_stps, ro = 1 / y.s), H_0 = h_diag * I; fills `al`."""
        q = -flat_grad
        for i in range(len(old_dirs) - 1, -1, -1):
            al[i] = float(old_stps[i] @ q) * ro[i]
            q -= al[i] * old_dirs[i]
        r = q
        r *= h_diag
        for i in range(len(old_dirs)):
            be_i = float(old_dirs[i] @ r) * ro[i]
            r += (al[i] - be_i) * old_stps[i]
        return r


def _cubic_minimizer(x1, f1, g1, x2, f2, g2, bounds=None):
    """Minimizer of the cubic through (x1, f1) and (x2, f2) with slopes g1, g2, clamped to
    `bounds` (default: between x1 and x2); their midpoint when the cubic has no minimum
    (Nocedal & Wright, eq. 3.59)."""
    low, high = bounds if bounds is not None else (min(x1, x2), max(x1, x2))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 * d1 - g1 * g2
    if d2_square < 0:
        return (low + high) / 2
    d2 = math.sqrt(d2_square)
    if x1 <= x2:
        x = x2 - (x2 - x1) * (g2 + d2 - d1) / (g2 - g1 + 2 * d2)
    else:
        x = x1 - (x1 - x2) * (g1 + d2 - d1) / (g1 - g2 + 2 * d2)
    return min(max(x, low), high)


def _strong_wolfe(evaluate, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """Step length along `d` satisfying the strong Wolfe conditions, by bracketing then
    zooming with cubic interpolation (Nocedal & Wright, Algorithms 3.5 and 3.6, as minFunc
    and PyTorch do it). `evaluate(t)` returns (loss, flat gradient) at x + t d; `f`, `g`,
    `gtd` are the loss, gradient and directional derivative at t = 0. Returns
    (loss, gradient, t, number of evaluations)."""
    d_norm = float(array_module(d).abs(d).max())
    f_new, g_new = evaluate(t)
    evals = 1
    gtd_new = float(g_new @ d)
    t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
    done = False
    ls_iter = 0
    # bracketing: find an interval that contains a step satisfying the conditions
    while ls_iter < max_ls:
        too_high = f_new > f + c1 * t * gtd or (ls_iter > 1 and f_new >= f_prev)
        if not too_high and abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if too_high or gtd_new >= 0:
            bracket = [t_prev, t]
            bracket_f, bracket_g = [f_prev, f_new], [g_prev, g_new]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        # extrapolate between 1.01 t and 10 t
        t_next = _cubic_minimizer(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
                                  bounds=(t + 0.01 * (t - t_prev), t * 10))
        t_prev, f_prev, g_prev, gtd_prev = t, f_new, g_new, gtd_new
        t = t_next
        f_new, g_new = evaluate(t)
        evals += 1
        gtd_new = float(g_new @ d)
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0.0, t], [f, f_new], [g, g_new]

    # zoom: shrink the bracket until a point satisfies the conditions
    insufficient_progress = False
    low, high = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_minimizer(bracket[0], bracket_f[0], bracket_gtd[0],
                             bracket[1], bracket_f[1], bracket_gtd[1])
        # keep away from the bracket's ends: a point there makes little progress
        lo, hi = min(bracket), max(bracket)
        eps = 0.1 * (hi - lo)
        if min(hi - t, t - lo) < eps:
            if insufficient_progress or t >= hi or t <= lo:
                t = hi - eps if abs(t - hi) < abs(t - lo) else lo + eps
                insufficient_progress = False
            else:
                insufficient_progress = True
        else:
            insufficient_progress = False
        f_new, g_new = evaluate(t)
        evals += 1
        gtd_new = float(g_new @ d)
        ls_iter += 1
        if f_new > f + c1 * t * gtd or f_new >= bracket_f[low]:
            bracket[high], bracket_f[high], bracket_g[high], bracket_gtd[high] = (
                t, f_new, g_new, gtd_new)
            low, high = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high] - bracket[low]) >= 0:
                bracket[high], bracket_f[high], bracket_g[high], bracket_gtd[high] = (
                    bracket[low], bracket_f[low], bracket_g[low], bracket_gtd[low])
            bracket[low], bracket_f[low], bracket_g[low], bracket_gtd[low] = (
                t, f_new, g_new, gtd_new)
    return bracket_f[low], bracket_g[low], bracket[low], evals
