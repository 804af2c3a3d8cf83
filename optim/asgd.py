"""Averaged SGD (`torch.optim.ASGD`)."""
from dtrain.core.backend import array_module
from dtrain.optim.optimizer import (
    Optimizer,
    buffer,
    check_hyperparameter,
    count_step,
    descent_grad,
    lerp_,
    scalar_state,
)


def asgd_update(param, grad, ax, scratch, *, eta, mu, lambd, weight_decay, maximize):
    """One ASGD step with step size `eta` and averaging weight `mu` on arrays, in place;
    intermediates go to the work arrays `scratch(name)` shaped like `param`.

        g = ±grad + weight_decay * param;   param = param * (1 - lambd * eta) - eta * g
        ax += mu * (param - ax)   (ax = param while mu is 1, i.e. before averaging starts)
    """
    xp = array_module(param)
    grad = descent_grad(param, grad, weight_decay, maximize, scratch)
    tmp = scratch("tmp")
    param *= 1 - lambd * eta
    param -= xp.multiply(grad, eta, out=tmp)
    if mu != 1:
        lerp_(ax, param, mu, tmp)
    else:
        xp.copyto(ax, param)


class ASGD(Optimizer):
    """SGD with a decaying step size that keeps a running average of the iterates from step
    `t0` on (Polyak & Juditsky), in `state[p]["ax"]`; see `asgd_update`. After step t,
    eta = lr / (1 + lambd * lr * t)^alpha and mu = 1 / max(1, t - t0)."""

    def __init__(self, params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0, *,
                 maximize=False):
        check_hyperparameter("learning rate", lr)
        check_hyperparameter("weight_decay value", weight_decay)
        super().__init__(params, dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0,
                                      weight_decay=weight_decay, maximize=maximize))

    def _update(self, param, state, group):
        step = count_step(state)
        eta = scalar_state(state, "eta", group["lr"])
        mu = scalar_state(state, "mu", 1.0)
        ax = buffer(state, "ax", param)
        asgd_update(param._data, param.grad._data, ax, self._scratch(param._data),
                    eta=float(eta._data), mu=float(mu._data), lambd=group["lambd"],
                    weight_decay=group["weight_decay"], maximize=group["maximize"])
        lr = group["lr"]
        eta._data[...] = lr / (1 + group["lambd"] * lr * step) ** group["alpha"]
        mu._data[...] = 1 / max(1, step - group["t0"])
