"""NAdam, Adam with Nesterov momentum (`torch.optim.NAdam`)."""
from dtrain.core.backend import array_module
from dtrain.optim.adam import adam_defaults, decayed_grad, moment_buffers, update_moments
from dtrain.optim.optimizer import Optimizer, check_hyperparameter, count_step, scalar_state


def nadam_update(param, grad, exp_avg, exp_avg_sq, mu_product, step, scratch, *, lr, betas, eps,
                 weight_decay, momentum_decay, decoupled_weight_decay, maximize):
    """One NAdam step (step number `step`, counted from 1) on arrays, in place, `mu_product`
    (a 0-d array) included; intermediates go to the work arrays `scratch(name)`.

        g as in Adam (L2 or decoupled decay);  m, v as in Adam
        mu_t = beta1 * (1 - 0.96^(t * momentum_decay) / 2);   P = mu_1 * ... * mu_t
        denom = sqrt(v / (1 - beta2^t)) + eps
        param -= lr * (1 - mu_t) / (1 - P) * g / denom + lr * mu_t+1 / (1 - P * mu_t+1) * m / denom
    """
    xp = array_module(param)
    beta1, beta2 = betas
    grad = decayed_grad(param, grad, scratch, lr=lr, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
    mu = beta1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    mu_product *= mu
    product = float(mu_product)
    denom, tmp = scratch("denom"), scratch("tmp")
    update_moments(grad, exp_avg, exp_avg_sq, tmp, betas)
    xp.sqrt(xp.divide(exp_avg_sq, 1 - beta2 ** step, out=denom), out=denom)
    denom += eps
    step_dir = xp.divide(grad, denom, out=tmp)
    step_dir *= lr * (1 - mu) / (1 - product)
    param -= step_dir
    step_dir = xp.divide(exp_avg, denom, out=tmp)
    step_dir *= lr * mu_next / (1 - product * mu_next)
    param -= step_dir


class NAdam(Optimizer):
    """Adam with Nesterov momentum and a momentum schedule (Dozat); see `nadam_update`."""

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, *, maximize=False):
        defaults = adam_defaults(lr, betas, eps, weight_decay, momentum_decay=momentum_decay,
                                 decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
        check_hyperparameter("momentum_decay value", momentum_decay)
        super().__init__(params, defaults)

    def _update(self, param, state, group):
        step = count_step(state)
        mu_product = scalar_state(state, "mu_product", 1.0)
        exp_avg, exp_avg_sq = moment_buffers(state, param)
        nadam_update(param._data, param.grad._data, exp_avg, exp_avg_sq, mu_product._data, step,
                     self._scratch(param._data), **self._hyperparameters(group))
