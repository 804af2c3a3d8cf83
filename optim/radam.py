"""RAdam, Adam with a rectified adaptive learning rate (`torch.optim.RAdam`)."""
import math

from dtrain.core.backend import array_module
from dtrain.optim.adam import adam_defaults, decayed_grad, moment_buffers, update_moments
from dtrain.optim.optimizer import Optimizer, count_step


def radam_update(param, grad, exp_avg, exp_avg_sq, step, scratch, *, lr, betas, eps,
                 weight_decay, decoupled_weight_decay, maximize):
    """One RAdam step (step number `step`, counted from 1) on arrays, in place;
    intermediates go to the work arrays `scratch(name)` shaped like `param`.

        g as in Adam (L2 or decoupled decay);  m, v as in Adam;  m_hat = m / (1 - beta1^t)
        rho_inf = 2 / (1 - beta2) - 1;   rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
        rho_t > 5: r = sqrt((rho_t-4)(rho_t-2) rho_inf / ((rho_inf-4)(rho_inf-2) rho_t)),
                   param -= lr * r * m_hat * sqrt(1 - beta2^t) / (sqrt(v) + eps)
        else:      param -= lr * m_hat   (too little variance information to adapt yet)
    """
    xp = array_module(param)
    beta1, beta2 = betas
    grad = decayed_grad(param, grad, scratch, lr=lr, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
    tmp = scratch("tmp")
    update_moments(grad, exp_avg, exp_avg_sq, tmp, betas)
    correction1, correction2 = 1 - beta1 ** step, 1 - beta2 ** step
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * beta2 ** step / correction2
    if rho_t > 5:
        rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                         / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        denom = xp.sqrt(exp_avg_sq, out=tmp)
        denom += eps
        step_dir = xp.divide(exp_avg, denom, out=tmp)
        step_dir *= lr * rect * math.sqrt(correction2) / correction1
    else:
        step_dir = xp.multiply(exp_avg, lr / correction1, out=tmp)
    param -= step_dir


class RAdam(Optimizer):
    """Adam whose adaptive step is rectified by its variance (Liu et al.), plain momentum
    SGD for the first steps; see `radam_update`."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=False, *, maximize=False):
        super().__init__(params, adam_defaults(lr, betas, eps, weight_decay,
                                               decoupled_weight_decay=decoupled_weight_decay,
                                               maximize=maximize))

    def _update(self, param, state, group):
        step = count_step(state)
        exp_avg, exp_avg_sq = moment_buffers(state, param)
        radam_update(param._data, param.grad._data, exp_avg, exp_avg_sq, step,
                     self._scratch(param._data), **self._hyperparameters(group))
