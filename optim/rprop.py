"""Rprop, resilient backpropagation (`torch.optim.Rprop`)."""
from dtrain.core.backend import array_module
from dtrain.optim.optimizer import Optimizer, buffer, check_hyperparameter, count_step


def rprop_update(param, grad, prev, step_size, scratch, *, lr, etas, step_sizes, maximize):
    """One Rprop step on arrays, in place (Riedmiller & Braun; torch's variant without
    weight backtracking). `lr` only seeds `step_size` and is unused here.

        s = sign(g * prev);  step_size *= etaplus (s > 0), etaminus (s < 0), 1 (s = 0),
        clamped to step_sizes;  g = 0 where s < 0;  param -= sign(g) * step_size;  prev = g
    """
    xp = array_module(param)
    etaminus, etaplus = etas
    g, sign, factor, tmp = (scratch(name) for name in ("grad", "sign", "factor", "tmp"))
    if maximize:
        xp.negative(grad, out=g)
    else:
        xp.copyto(g, grad)
    xp.sign(xp.multiply(g, prev, out=sign), out=sign)
    # factor = etaplus^[s > 0] * etaminus^[s < 0], the indicators as (|s| ± s) / 2: exact
    # powers (x^1 = x, x^0 = 1) with no temporary arrays.
    xp.abs(sign, out=tmp)
    tmp += sign
    tmp *= 0.5
    xp.power(etaplus, tmp, out=factor)
    xp.abs(sign, out=tmp)
    tmp -= sign
    tmp *= 0.5
    step_size *= factor
    xp.power(etaminus, tmp, out=factor)
    step_size *= factor
    xp.clip(step_size, step_sizes[0], step_sizes[1], out=step_size)
    tmp *= -1  # 1 - [s < 0]: no move where the sign flipped
    tmp += 1
    g *= tmp
    xp.sign(g, out=tmp)
    tmp *= step_size
    param -= tmp
    xp.copyto(prev, g)


class Rprop(Optimizer):
    """Per-coordinate steps that grow by etas[1] while the gradient keeps its sign and shrink
    by etas[0] when it flips (the step is then skipped); see `rprop_update`."""

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50), *,
                 maximize=False):
        check_hyperparameter("learning rate", lr)
        if not 0.0 < etas[0] < 1.0 < etas[1]:
            raise ValueError(f"Invalid eta values: {etas[0]}, {etas[1]}")
        super().__init__(params, dict(lr=lr, etas=tuple(etas), step_sizes=tuple(step_sizes),
                                      maximize=maximize))

    def _update(self, param, state, group):
        count_step(state)
        prev = buffer(state, "prev", param)
        step_size = buffer(state, "step_size", param, group["lr"])
        rprop_update(param._data, param.grad._data, prev, step_size,
                     self._scratch(param._data), **self._hyperparameters(group))
