"""Adam and AdamW (`torch.optim.Adam`, `torch.optim.AdamW`), with AMSGrad."""
from dtrain.core.backend import array_module
from dtrain.optim.optimizer import (
    Optimizer,
    buffer,
    check_betas,
    check_hyperparameter,
    count_step,
    descent_grad,
    in_blocks,
    lerp_,
)


def adam_defaults(lr, betas, eps, weight_decay, **others):
    """The hyperparameters of an optimizer of the Adam family, validated as PyTorch does."""
    check_hyperparameter("learning rate", lr)
    check_hyperparameter("epsilon value", eps)
    check_betas(betas)
    check_hyperparameter("weight_decay value", weight_decay)
    return dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, **others)


def moment_buffers(state, param, names=("exp_avg", "exp_avg_sq")):
    """The arrays of `state[name]` for `names`, created as zeros like `param` in order."""
    return [buffer(state, name, param) for name in names]


def decayed_grad(param, grad, scratch, *, lr, weight_decay, decoupled_weight_decay, maximize):
    """The gradient the Adam family descends: ±grad, plus weight_decay * param (L2) unless
    the decay is decoupled, which instead shrinks `param` in place by 1 - lr * weight_decay."""
    if decoupled_weight_decay and weight_decay != 0:
        param *= 1 - lr * weight_decay
    l2 = 0 if decoupled_weight_decay else weight_decay
    return descent_grad(param, grad, l2, maximize, scratch)


def update_moments(grad, exp_avg, exp_avg_sq, tmp, betas):
    """Adam's moment estimates, in place (`tmp` is a work array):
    m += (1 - beta1) * (g - m);   v = beta2 * v + (1 - beta2) * g²."""
    beta1, beta2 = betas
    lerp_(exp_avg, grad, 1 - beta1, tmp)
    array_module(grad).multiply(grad, grad, out=tmp)
    tmp *= 1 - beta2
    exp_avg_sq *= beta2
    exp_avg_sq += tmp


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, scratch, *, lr, betas,
                eps, weight_decay, amsgrad, maximize, decoupled_weight_decay):
    """One Adam step (step number `step`, counted from 1) on arrays, in place; intermediates
    go to the work arrays `scratch(name)` shaped like `param` (see `Optimizer._scratch`).

        g = ±grad (+ weight_decay * param unless decoupled; decoupled: param *= 1 - lr*wd)
        m += (1 - beta1) * (g - m);   v = beta2 * v + (1 - beta2) * g²;   vmax = max(vmax, v)
        param -= lr / (1 - beta1^step) * m / (sqrt(v or vmax) / sqrt(1 - beta2^step) + eps)
    """
    xp = array_module(param)
    beta1, beta2 = betas
    grad = decayed_grad(param, grad, scratch, lr=lr, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
    tmp = scratch("tmp")  # reused for every intermediate
    update_moments(grad, exp_avg, exp_avg_sq, tmp, betas)
    if amsgrad:
        xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        exp_avg_sq = max_exp_avg_sq
    denom = xp.sqrt(exp_avg_sq, out=tmp)
    denom /= (1 - beta2 ** step) ** 0.5
    denom += eps
    step_dir = xp.divide(exp_avg, denom, out=tmp)
    step_dir *= lr / (1 - beta1 ** step)
    param -= step_dir


class Adam(Optimizer):
    """Adam with L2 weight decay added to the gradient (decoupled when
    `decoupled_weight_decay=True`, which is AdamW); see `adam_update`."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, maximize=False, decoupled_weight_decay=False):
        super().__init__(params, adam_defaults(lr, betas, eps, weight_decay, amsgrad=amsgrad,
                                               maximize=maximize,
                                               decoupled_weight_decay=decoupled_weight_decay))

    def _update(self, param, state, group):
        step = count_step(state)
        exp_avg, exp_avg_sq = moment_buffers(state, param)
        max_sq = buffer(state, "max_exp_avg_sq", param) if group["amsgrad"] else None
        hyper = self._hyperparameters(group)
        in_blocks(lambda p, g, m, v, vmax, scratch: adam_update(p, g, m, v, vmax, step, scratch,
                                                                **hyper),
                  (param._data, param.grad._data, exp_avg, exp_avg_sq, max_sq), self._scratch)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), default weight_decay=1e-2."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)
