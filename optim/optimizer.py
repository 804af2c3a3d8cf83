"""`Optimizer`: parameter groups, per-parameter state and PyTorch-format state dicts.

The concrete optimizers are thin classes over pure update functions that work in place on
whole backend arrays (see sgd.py, adam.py, ...); this base class owns the rest, including the
scratch arrays those functions write their intermediates into, so that after the first step
a step allocates no new arrays (what graph mode's replay of a training step relies on).
"""
import warnings
from collections import defaultdict
from copy import deepcopy
from itertools import chain

from dtrain.autograd.grad_mode import enable_grad, no_grad
from dtrain.autograd.observer import effect, mark_effects
from dtrain.core import dtype as dtypes
from dtrain.core.backend import array_module, device_of
from dtrain.core.creation import zeros
from dtrain.core.state import state
from dtrain.core.tensor import Tensor


class ParamGroup(dict):
    """One parameter group (a dict, as torch's) whose item assignments graph mode hears
    of: a hyperparameter set by Python code inside a compiled step (a manual warm-up) would
    not be set again by a replay, so recording refuses it (autograd/observer.py)."""

    def __setitem__(self, key, value):
        if state.observer is not None:
            state.observer.state_write(self, key)
        super().__setitem__(key, value)


class Optimizer:
    """Base class of all optimizers, with `torch.optim.Optimizer`'s interface.

    `params` is an iterable of Tensors, or of dicts (parameter groups) with a "params" entry
    and per-group hyperparameters; `defaults` fills the hyperparameters a group leaves out.
    `state[param]` holds per-parameter buffers; `state_dict()` keys them by the parameter's
    index across all groups, as PyTorch does, so a resumed run continues the same trajectory.

    A custom optimizer, written exactly as for PyTorch (sign descent)::

        class SignSGD(dt.optim.Optimizer):
            def __init__(self, params, lr=0.01):
                if lr < 0.0:
                    raise ValueError(f"Invalid learning rate: {lr}")
                super().__init__(params, dict(lr=lr))

            @dt.no_grad()
            def step(self, closure=None):
                loss = None
                if closure is not None:
                    with dt.enable_grad():
                        loss = closure()
                for group in self.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            p.sub_(group["lr"] * p.grad.sign())
                return loss

    The built-in optimizers instead implement `_update(param, state, group)`, which the
    default `step` calls for every parameter that has a gradient (a dtrain shortcut that a
    custom optimizer may use too).
    """

    def __init__(self, params, defaults):
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            f"Tensors or dicts, but got {type(params).__name__}")
        self.defaults = defaults
        self.state = defaultdict(dict)
        self._scratch_arrays = {}  # see _scratch; never part of state or state_dict()
        self.param_groups = []
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        mark_effects(cls, ("step", "zero_grad"))  # an override is one effect, as the base's

    def add_param_group(self, param_group):
        """Add a group of parameters with its own hyperparameters (missing ones default)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        params = param_group["params"] = list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is "
                                f"{type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        for name, default in self.defaults.items():
            param_group.setdefault(name, default)
        ids = [id(p) for p in params]
        if len(ids) != len(set(ids)):
            warnings.warn("optimizer contains a parameter group with duplicate parameters; "
                          "each duplicate is updated once per occurrence", stacklevel=3)
        taken = {id(p) for group in self.param_groups for p in group["params"]}
        if not taken.isdisjoint(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(ParamGroup(param_group))

    @effect  # graph mode replays it as one call (autograd/observer.py)
    def zero_grad(self, set_to_none=True):
        """Reset the gradients: drop them (default) or fill them with zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    if p.grad.grad_fn is not None:
                        p.grad.detach_()
                    else:
                        p.grad.requires_grad_(False)
                    p.grad.zero_()

    @effect
    def step(self, closure=None):
        """One update of every parameter that has a gradient. `closure` re-evaluates the
        model and returns the loss (run with grad enabled); its value is returned."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        state = self.state.get(p, {})
                        self._update(p, state, group)
                        if state:  # as in PyTorch, stateless updates leave no entry
                            self.state[p] = state
                        p._version[0] += 1  # in-place change, seen by autograd's checks
        return loss

    def _update(self, param, state, group):
        """Update `param._data` in place from `param.grad`, with `group`'s hyperparameters."""
        raise NotImplementedError(f"{type(self).__name__} must implement step() or _update()")

    def _hyperparameters(self, group):
        """`group`'s values of the optimizer's hyperparameters (the keys of `defaults`), as
        keyword arguments for an update function that takes exactly those."""
        return {name: group[name] for name in self.defaults}

    def _scratch(self, like):
        """The `scratch` argument of the update functions for a parameter array `like`:
        `scratch(name)` is a work array shaped like `like`, one per (name, shape, dtype,
        device), created on first use and reused by every later update. Parameters of one
        shape share it, so an update must be done with it before the next one starts."""
        def scratch(name):
            key = (name, like.shape, like.dtype, device_of(like))
            arr = self._scratch_arrays.get(key)
            if arr is None:
                arr = self._scratch_arrays[key] = array_module(like).empty_like(like, order="C")
            return arr
        return scratch

    # -- state dicts ------------------------------------------------------------------------
    def state_dict(self):
        """{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}, indices
        numbering the parameters across groups in order. Holds references, as PyTorch."""
        index = {}
        groups = []
        for group in self.param_groups:
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {index[id(k)] if isinstance(k, Tensor) else k: v for k, v in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load state from `state_dict()`'s output: group hyperparameters are replaced and
        state tensors copied onto each parameter's device (floating ones to its dtype)."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has a different number of parameter groups "
                             f"({len(saved_groups)}) than the optimizer "
                             f"({len(self.param_groups)})")
        for i, (g, s) in enumerate(zip(self.param_groups, saved_groups)):
            missing = sorted(k for k in self.defaults if k not in s)
            if missing:
                raise ValueError(f"loaded state dict lacks {type(self).__name__}'s "
                                 f"hyperparameters {missing} (group {i}): it was saved by "
                                 "another optimizer class")
            if len(g["params"]) != len(s["params"]):
                raise ValueError(f"loaded state dict contains a parameter group that doesn't "
                                 f"match the size of optimizer's group (group {i}: "
                                 f"{len(s['params'])} saved, {len(g['params'])} here)")
        id_map = dict(zip(chain.from_iterable(s["params"] for s in saved_groups),
                          chain.from_iterable(g["params"] for g in self.param_groups)))
        state = defaultdict(dict)
        for k, v in state_dict["state"].items():
            if k in id_map:
                state[id_map[k]] = _cast_state(id_map[k], v)
            else:
                state[k] = v
        groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            groups.append(ParamGroup({**{k: deepcopy(v) for k, v in saved.items()
                                         if k != "params"}, "params": group["params"]}))
        self.state = state
        self.param_groups = groups

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {group[k]}" for k in sorted(group) if k != "params"]
        return "\n".join(lines) + "\n)"


def _cast_state(param, value, key=None):
    """A copy of saved state `value` placed like `param` (PyTorch's policy: "step" stays
    as saved, floating tensors take the parameter's dtype and device, others its device)."""
    if isinstance(value, Tensor):
        if key == "step":
            return value.clone()
        cast = param.is_floating_point() and value.is_floating_point()
        out = value.to(device=param.device, dtype=param.dtype if cast else None)
        return out.clone() if out._data is value._data else out
    if isinstance(value, dict):
        return {k: _cast_state(param, v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cast_state(param, v) for v in value)
    return value


# -- helpers for the update functions' callers -----------------------------------------------
def check_hyperparameter(what, value, low=0.0):
    """ValueError naming `what` and the bad value unless `value >= low` (rejects NaN too)."""
    if not value >= low:
        raise ValueError(f"Invalid {what}: {value}")


def check_betas(betas):
    """ValueError naming the index and value unless both betas lie in [0, 1)."""
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta}")


def descent_grad(param, grad, weight_decay, maximize, scratch):
    """The gradient to descend: -grad when maximizing, plus weight_decay * param (L2).
    `grad` itself when neither applies, else computed into `scratch("grad")`."""
    if weight_decay == 0 and not maximize:
        return grad
    xp = array_module(param)
    out = scratch("grad")
    if weight_decay == 0:
        return xp.negative(grad, out=out)
    decay = xp.multiply(param, weight_decay, out=out)
    # decay ± grad is ±grad + decay bit for bit (IEEE: a - b is a + -b, and + commutes)
    return (xp.subtract if maximize else xp.add)(decay, grad, out=out)


def scalar_state(state, name, value):
    """`state[name]`: a 0-d float tensor on the CPU as PyTorch keeps its step counts and
    scalars (float64 when that is the default dtype, else float32), created as `value`."""
    t = state.get(name)
    if t is None:
        wide = dtypes.get_default_dtype() == dtypes.float64
        t = state[name] = zeros((), dtype=dtypes.float64 if wide else dtypes.float32)
        t._data[...] = value
    return t


def step_tensor(state):
    """`state["step"]`: a 0-d float tensor on the CPU as in PyTorch, created as 0."""
    return scalar_state(state, "step", 0.0)


def count_step(state):
    """Increment `state["step"]` and return its new value as a float."""
    t = step_tensor(state)
    t._data += 1
    return float(t._data)


def lerp_(target, end, weight, tmp):
    """target += weight * (end - target), in place, with the work array `tmp`."""
    delta = array_module(target).subtract(end, target, out=tmp)
    delta *= weight
    target += delta


# NOTE: an update's NumPy calls each pass over whole arrays; run on blocks of this many
# elements (3-5 arrays of 256 KiB: in L2), its intermediates stay in cache and each array
# passes through memory about once. Measured on the 784-1024-1024-10 MLP's parameters
# (benchmarks/optimizer_update.py, 4 runs): SGD 1.1-1.4x, SGD with momentum 1.0-1.2x, Adam
# 1.1-1.2x faster updates; its training step with Adam 1.18x faster.
BLOCK = 1 << 16


def in_blocks(update, arrays, scratch_for):
    """Call `update(*blocks, scratch)` on matching blocks of BLOCK elements of `arrays`
    (each C-contiguous, of one size, or None), where `scratch = scratch_for(block)` gives
    work arrays the size of a block; one call on the whole arrays when they are not NumPy
    arrays or fit in two blocks. For elementwise updates only."""
    first = arrays[0]
    n = first.size
    flat = [a.reshape(-1) if a is not None else None for a in arrays]
    if n <= 2 * BLOCK or not all(a is None or a.flags.c_contiguous for a in arrays) or \
            device_of(first).type != "cpu":
        update(*arrays, scratch_for(first))
        return
    for start in range(0, n, BLOCK):
        blocks = [a[start:start + BLOCK] if a is not None else None for a in flat]
        update(*blocks, scratch_for(blocks[0]))


def buffer(state, name, param, fill=0.0):
    """The array of `state[name]`, created like `param` and filled with `fill` on first use."""
    t = state.get(name)
    if t is None:
        data = array_module(param._data).full_like(param._data, fill)
        t = state[name] = Tensor._make(data)
    return t._data
