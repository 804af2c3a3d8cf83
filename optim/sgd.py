"""SGD with momentum, dampening, Nesterov momentum and L2 weight decay (`torch.optim.SGD`)."""
import functools

from dtrain.core.backend import array_module
from dtrain.core.tensor import Tensor
from dtrain.optim.optimizer import Optimizer, check_hyperparameter, descent_grad, in_blocks


def sgd_update(param, grad, momentum_buffer, scratch, *, lr, momentum, dampening, weight_decay,
               nesterov, maximize):
    """One SGD step on arrays, in place on `param` (and on `momentum_buffer`); intermediates
    go to the work arrays `scratch(name)` shaped like `param` (see `Optimizer._scratch`).

        g = ±grad + weight_decay * param
        b = g (first step), else momentum * b + (1 - dampening) * g
        g = g + momentum * b (nesterov), else b;      param -= lr * g

    Returns the momentum buffer: a new array on the first step with momentum, the one given
    afterwards, None without momentum.
    """
    xp = array_module(param)
    tmp = scratch("tmp")
    grad = descent_grad(param, grad, weight_decay, maximize, scratch)
    if momentum != 0:
        if momentum_buffer is None:
            momentum_buffer = grad.copy()
        else:
            momentum_buffer *= momentum
            damped = grad if dampening == 0 else xp.multiply(grad, 1 - dampening, out=tmp)
            momentum_buffer += damped
        if nesterov:
            grad = xp.add(grad, xp.multiply(momentum_buffer, momentum, out=tmp), out=tmp)
        else:
            grad = momentum_buffer
    param -= xp.multiply(grad, lr, out=tmp)
    return momentum_buffer


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum; see `sgd_update`."""

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, *, maximize=False):
        check_hyperparameter("learning rate", lr)
        check_hyperparameter("momentum value", momentum)
        check_hyperparameter("weight_decay value", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def _update(self, param, state, group):
        old = state.get("momentum_buffer")
        hyper = self._hyperparameters(group)
        if old is None and group["momentum"] != 0:  # the first step makes the buffer
            state["momentum_buffer"] = Tensor._make(sgd_update(
                param._data, param.grad._data, None, self._scratch(param._data), **hyper))
        else:
            in_blocks(functools.partial(sgd_update, **hyper),
                      (param._data, param.grad._data, None if old is None else old._data),
                      self._scratch)
