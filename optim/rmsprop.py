"""RMSprop with momentum and the centered variant (`torch.optim.RMSprop`)."""
from dtrain.core.backend import array_module
from dtrain.optim.optimizer import Optimizer, buffer, check_hyperparameter, count_step, descent_grad


def rmsprop_update(param, grad, square_avg, grad_avg, momentum_buffer, scratch, *, lr, alpha,
                   eps, weight_decay, momentum, centered, maximize):
    """One RMSprop step on arrays, in place (`grad_avg` used only when centered,
    `momentum_buffer` only when momentum > 0); intermediates go to the work arrays
    `scratch(name)` shaped like `param` (see `Optimizer._scratch`).

        g = ±grad + weight_decay * param;   v = alpha * v + (1 - alpha) * g²
        centered: a += (1 - alpha) * (g - a), avg = sqrt(v - a²) + eps; else sqrt(v) + eps
        momentum: b = momentum * b + g / avg, param -= lr * b;  else param -= lr * g / avg
    """
    xp = array_module(param)
    grad = descent_grad(param, grad, weight_decay, maximize, scratch)
    tmp = xp.multiply(grad, grad, out=scratch("tmp"))  # reused for every intermediate
    tmp *= 1 - alpha
    square_avg *= alpha
    square_avg += tmp
    if centered:
        xp.subtract(grad, grad_avg, out=tmp)
        tmp *= 1 - alpha
        grad_avg += tmp
        xp.multiply(grad_avg, grad_avg, out=tmp)
        avg = xp.sqrt(xp.subtract(square_avg, tmp, out=tmp), out=tmp)
    else:
        avg = xp.sqrt(square_avg, out=tmp)
    avg += eps
    step_dir = xp.divide(grad, avg, out=tmp)
    if momentum > 0:
        momentum_buffer *= momentum
        momentum_buffer += step_dir
        step_dir = xp.multiply(momentum_buffer, lr, out=tmp)
    else:
        step_dir *= lr
    param -= step_dir


class RMSprop(Optimizer):
    """Divide the gradient by a running root mean square of recent gradients (Hinton);
    see `rmsprop_update`."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, *, maximize=False):
        check_hyperparameter("learning rate", lr)
        check_hyperparameter("epsilon value", eps)
        check_hyperparameter("momentum value", momentum)
        check_hyperparameter("weight_decay value", weight_decay)
        check_hyperparameter("alpha value", alpha)
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))

    def _update(self, param, state, group):
        count_step(state)
        square_avg = buffer(state, "square_avg", param)
        mom = buffer(state, "momentum_buffer", param) if group["momentum"] > 0 else None
        grad_avg = buffer(state, "grad_avg", param) if group["centered"] else None
        rmsprop_update(param._data, param.grad._data, square_avg, grad_avg, mom,
                       self._scratch(param._data), lr=group["lr"], alpha=group["alpha"],
                       eps=group["eps"], weight_decay=group["weight_decay"],
                       momentum=group["momentum"], centered=group["centered"],
                       maximize=group["maximize"])
