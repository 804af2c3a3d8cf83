"""`GradScaler`: dynamic loss scaling for mixed precision, as `torch.amp.GradScaler`.

Typical loop::

    scaler = dt.amp.GradScaler("cuda")          # or "cpu"
    with dt.autocast("cuda"):
        loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)                      # unscales; skips the step on inf/nan grads
    scaler.update()                             # backs off after a skip, grows when stable

The scale is a 0-d float32 tensor, made on the device of the first scaled output (as
PyTorch's): `scale(loss)` multiplies by it with a registry op, so that a compiled step reads
the scale of the moment (graph state), and `update()` writes the new scale into it in place.
`scale(loss)` keeps the loss's dtype; each step synchronizes once, on the inf check.
"""
import warnings
from collections import defaultdict
from enum import Enum

from dtrain.autograd.observer import effect
from dtrain.core import backend
from dtrain.core import dtype as dtypes
from dtrain.core.creation import full
from dtrain.core.tensor import Tensor

_f32 = dtypes.float32.np.type  # rounds a Python float to float32, like PyTorch's scale tensor
_F32_OVERFLOW = 2.0 ** 128 - 2.0 ** 103  # from here up, rounding to float32 gives inf


class OptState(Enum):
    READY = 0
    UNSCALED = 1
    STEPPED = 2


def _fresh_state():
    return {"stage": OptState.READY, "found_inf_per_device": {}}


class GradScaler:
    """Multiply the loss by `scale` so small float16 gradients do not flush to zero; divide
    the gradients back before the optimizer step, skip the step if any is inf/nan and then
    multiply the scale by `backoff_factor`; after `growth_interval` clean steps in a row,
    multiply it by `growth_factor`. `device` "cuda" (default) disables the scaler with a
    warning when CUDA is unavailable, as PyTorch does; use "cpu" on a CPU-only machine."""

    def __init__(self, device="cuda", init_scale=2.0 ** 16, growth_factor=2.0,
                 backoff_factor=0.5, growth_interval=2000, enabled=True):
        if device not in ("cpu", "cuda"):
            raise ValueError(f"GradScaler: device must be 'cpu' or 'cuda', got {device!r}")
        self._device = device
        self._enabled = enabled
        if device == "cuda" and enabled and not backend.cuda_is_available():
            warnings.warn("dt.amp.GradScaler is enabled, but CUDA is not available.  "
                          "Disabling.", stacklevel=2)
            self._enabled = False
        if self._enabled:
            if growth_factor <= 1.0:
                raise AssertionError(f"The growth factor must be > 1.0 (got {growth_factor}).")
            if backoff_factor >= 1.0:
                raise AssertionError(f"The backoff factor must be < 1.0 (got "
                                     f"{backoff_factor}).")
            self._init_scale = float(_f32(init_scale))
            self._scale = None  # the 0-d float32 scale tensor, made by the first scale()
            self._growth_factor = growth_factor
            self._backoff_factor = backoff_factor
            self._growth_interval = growth_interval
            self._growth_tracker = 0
            self._per_optimizer_states = defaultdict(_fresh_state)

    def scale(self, outputs):
        """`outputs` (a Tensor, or a list/tuple/iterable of them) times the scale."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, Tensor):
            if self._scale is None:
                self._scale = full((), self._init_scale, dtype=dtypes.float32,
                                   device=outputs.device)
            return outputs * self._scale.to(outputs.dtype)
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(v) for v in outputs)
        if hasattr(outputs, "__iter__") and not isinstance(outputs, (str, bytes)):
            return map(self.scale, outputs)
        raise ValueError("outputs must be a Tensor or an iterable of Tensors")

    @effect  # graph mode replays it as one call (autograd/observer.py), as step and update
    def unscale_(self, optimizer):
        """Divide `optimizer`'s gradients by the scale in place (once per step, e.g. before
        gradient clipping) and record whether any of them is inf/nan."""
        if not self._enabled:
            return
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] is OptState.UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since the "
                               "last update().")
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        inv_scale = float(_f32(1.0 / self.get_scale()))
        flags = defaultdict(list)  # device -> per-gradient "has a non-finite value" flags
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad._data
                if g.dtype == dtypes.float16.np:
                    raise ValueError("Attempting to unscale FP16 gradients.")
                xp = backend.array_module(g)
                flags[backend.device_of(g)].append(xp.logical_not(xp.isfinite(g).all()))
                g *= inv_scale
        state["found_inf_per_device"] = {
            dev: backend.array_module(fs[0]).stack(fs).any() for dev, fs in flags.items()}
        state["stage"] = OptState.UNSCALED

    @effect
    def step(self, optimizer, *args, **kwargs):
        """Unscale (unless `unscale_` ran) and call `optimizer.step(*args, **kwargs)` unless
        a gradient is inf/nan. Returns the step's return value, or None when skipped."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is "
                               "enabled.")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] is OptState.READY:
            self.unscale_(optimizer)
        if not state["found_inf_per_device"]:
            raise AssertionError("No inf checks were recorded for this optimizer (none of its "
                                 "parameters has a gradient).")
        retval = None
        if not any(bool(found) for found in state["found_inf_per_device"].values()):
            retval = optimizer.step(*args, **kwargs)
        state["stage"] = OptState.STEPPED
        return retval

    @effect
    def update(self, new_scale=None):
        """Adjust the scale after the iteration's steps (or set it to `new_scale`)."""
        if not self._enabled:
            return
        scale = self.get_scale()
        if new_scale is not None:
            scale = float(_f32(float(new_scale)))
        else:
            found = [bool(f) for state in self._per_optimizer_states.values()
                     for f in state["found_inf_per_device"].values()]
            if not found:
                raise AssertionError("No inf checks were recorded prior to update.")
            if any(found):
                scale = float(_f32(scale * self._backoff_factor))
                self._growth_tracker = 0
            elif self._growth_tracker + 1 == self._growth_interval:
                grown = scale * self._growth_factor
                if grown < _F32_OVERFLOW:  # never grow past float32's range
                    scale = float(_f32(grown))
                self._growth_tracker = 0
            else:
                self._growth_tracker += 1
        self._set_scale(scale)
        self._per_optimizer_states = defaultdict(_fresh_state)

    def _set_scale(self, value):
        """Write `value` into the scale tensor in place (a compiled step reads it there)."""
        if self._scale is None:
            self._init_scale = value
        else:
            self._scale._data[...] = value

    def get_scale(self):
        """The scale as a Python float (1.0 when disabled)."""
        if not self._enabled:
            return 1.0
        return self._init_scale if self._scale is None else float(self._scale._data)

    def get_growth_factor(self):
        return self._growth_factor

    def set_growth_factor(self, new_factor):
        self._growth_factor = new_factor

    def get_backoff_factor(self):
        return self._backoff_factor

    def set_backoff_factor(self, new_factor):
        self._backoff_factor = new_factor

    def get_growth_interval(self):
        return self._growth_interval

    def set_growth_interval(self, new_interval):
        self._growth_interval = new_interval

    def is_enabled(self):
        return self._enabled

    def state_dict(self):
        """scale, growth/backoff factors, growth interval and tracker ({} when disabled)."""
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor,
                "growth_interval": self._growth_interval,
                "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state_dict):
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved "
                               "from a disabled instance of GradScaler.")
        self._set_scale(float(state_dict["scale"]))
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._growth_tracker = int(state_dict["_growth_tracker"])
