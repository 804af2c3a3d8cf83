"""Adamax, Adam with the infinity norm (`torch.optim.Adamax`)."""
from dtrain.core.backend import array_module
from dtrain.optim.adam import adam_defaults, moment_buffers
from dtrain.optim.optimizer import Optimizer, count_step, descent_grad, lerp_


def adamax_update(param, grad, exp_avg, exp_inf, step, scratch, *, lr, betas, eps, weight_decay,
                  maximize):
    """One Adamax step (step number `step`, counted from 1) on arrays, in place;
    intermediates go to the work arrays `scratch(name)` shaped like `param`.

        g = ±grad + weight_decay * param;   m += (1 - beta1) * (g - m)
        u = max(beta2 * u, |g| + eps);      param -= lr / (1 - beta1^step) * m / u
    """
    xp = array_module(param)
    beta1, beta2 = betas
    grad = descent_grad(param, grad, weight_decay, maximize, scratch)
    tmp = scratch("tmp")
    lerp_(exp_avg, grad, 1 - beta1, tmp)
    exp_inf *= beta2
    xp.abs(grad, out=tmp)
    tmp += eps
    xp.maximum(exp_inf, tmp, out=exp_inf)
    step_dir = xp.divide(exp_avg, exp_inf, out=tmp)
    step_dir *= lr / (1 - beta1 ** step)
    param -= step_dir


class Adamax(Optimizer):
    """Adam's variant scaled by an exponentially weighted infinity norm (Kingma & Ba,
    section 7); see `adamax_update`."""

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, *,
                 maximize=False):
        super().__init__(params, adam_defaults(lr, betas, eps, weight_decay, maximize=maximize))

    def _update(self, param, state, group):
        step = count_step(state)
        exp_avg, exp_inf = moment_buffers(state, param, ("exp_avg", "exp_inf"))
        adamax_update(param._data, param.grad._data, exp_avg, exp_inf, step,
                      self._scratch(param._data), **self._hyperparameters(group))
