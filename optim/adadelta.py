"""Adadelta (`torch.optim.Adadelta`)."""
from dtrain.core.backend import array_module
from dtrain.optim.optimizer import Optimizer, buffer, check_hyperparameter, count_step, descent_grad


def adadelta_update(param, grad, square_avg, acc_delta, scratch, *, lr, rho, eps, weight_decay,
                    maximize):
    """One Adadelta step on arrays, in place; intermediates go to the work arrays
    `scratch(name)` shaped like `param` (see `Optimizer._scratch`).

        g = ±grad + weight_decay * param;   v = rho * v + (1 - rho) * g²
        delta = sqrt(u + eps) / sqrt(v + eps) * g;   u = rho * u + (1 - rho) * delta²
        param -= lr * delta
    """
    xp = array_module(param)
    grad = descent_grad(param, grad, weight_decay, maximize, scratch)
    tmp, delta = scratch("tmp"), scratch("delta")
    xp.multiply(grad, grad, out=tmp)
    tmp *= 1 - rho
    square_avg *= rho
    square_avg += tmp
    std = xp.sqrt(xp.add(square_avg, eps, out=tmp), out=tmp)
    xp.sqrt(xp.add(acc_delta, eps, out=delta), out=delta)
    delta /= std
    delta *= grad
    xp.multiply(delta, delta, out=tmp)
    tmp *= 1 - rho
    acc_delta *= rho
    acc_delta += tmp
    delta *= lr
    param -= delta


class Adadelta(Optimizer):
    """Per-coordinate steps scaled by running RMS of past updates over that of gradients
    (Zeiler); see `adadelta_update`."""

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, *, maximize=False):
        check_hyperparameter("learning rate", lr)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        check_hyperparameter("epsilon value", eps)
        check_hyperparameter("weight_decay value", weight_decay)
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                                      maximize=maximize))

    def _update(self, param, state, group):
        count_step(state)
        square_avg = buffer(state, "square_avg", param)
        acc_delta = buffer(state, "acc_delta", param)
        adadelta_update(param._data, param.grad._data, square_avg, acc_delta,
                        self._scratch(param._data), **self._hyperparameters(group))
