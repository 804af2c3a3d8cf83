"""Adagrad with learning-rate decay (`torch.optim.Adagrad`)."""
from dtrain.core.backend import array_module
from dtrain.optim.optimizer import (
    Optimizer,
    buffer,
    check_hyperparameter,
    count_step,
    descent_grad,
    step_tensor,
)


def adagrad_update(param, grad, state_sum, step, scratch, *, lr, lr_decay, weight_decay, eps,
                   maximize):
    """One Adagrad step (step number `step`, counted from 1) on arrays, in place;
    intermediates go to the work arrays `scratch(name)` shaped like `param` (see
    `Optimizer._scratch`).

        g = ±grad + weight_decay * param;   s += g²
        param -= lr / (1 + (step - 1) * lr_decay) * g / (sqrt(s) + eps)
    """
    xp = array_module(param)
    grad = descent_grad(param, grad, weight_decay, maximize, scratch)
    tmp = xp.multiply(grad, grad, out=scratch("tmp"))  # reused for every intermediate
    state_sum += tmp
    std = xp.sqrt(state_sum, out=tmp)
    std += eps
    step_dir = xp.divide(grad, std, out=tmp)
    step_dir *= lr / (1 + (step - 1) * lr_decay)
    param -= step_dir


class Adagrad(Optimizer):
    """Per-coordinate learning rates from the sum of squared gradients (Duchi et al.);
    see `adagrad_update`. State is created for every parameter at construction."""

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10, *, maximize=False):
        check_hyperparameter("learning rate", lr)
        check_hyperparameter("lr_decay value", lr_decay)
        check_hyperparameter("weight_decay value", weight_decay)
        check_hyperparameter("initial_accumulator_value value", initial_accumulator_value)
        check_hyperparameter("epsilon value", eps)
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      eps=eps, maximize=maximize))
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(self.state[p], p, group)

    @staticmethod
    def _init_state(state, param, group):
        step_tensor(state)
        return buffer(state, "sum", param, group["initial_accumulator_value"])

    def _update(self, param, state, group):
        state_sum = self._init_state(state, param, group)
        step = count_step(state)
        adagrad_update(param._data, param.grad._data, state_sum, step, self._scratch(param._data),
                       lr=group["lr"], lr_decay=group["lr_decay"],
                       weight_decay=group["weight_decay"], eps=group["eps"],
                       maximize=group["maximize"])
