"""Optimizer updates, as JSON: milliseconds per `opt.step()` over the parameters of the
784-1024-1024-10 MLP of train_step.py (1.86 M floats) with fresh gradients, for SGD, SGD
with momentum and Adam: dtrain as shipped (updates in cache-sized blocks), dtrain on whole
arrays (one NumPy call per arithmetic step, `optim.optimizer.BLOCK` set past the largest
parameter) and PyTorch's default (for-loop) update when importable. Runs alternate; each
figure is the best over the rounds, the ratios medians of the rounds' ratios.
Usage: optimizer_update.py [rounds]"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from _common import IDLE_PAUSE, alternate, emit, machine_load, try_torch  # noqa: E402
from train_step import mlp  # noqa: E402

import dtrain as dt  # noqa: E402
from dtrain.optim import optimizer as optimizer_module  # noqa: E402

OPTIMIZERS = {"sgd": ("SGD", dict(lr=0.01)),
              "sgd_momentum": ("SGD", dict(lr=0.01, momentum=0.9)),
              "adam": ("Adam", dict(lr=1e-3))}


def stepper(lib, name, block=None):
    """A callable running one `step()` of optimizer `name` on the MLP's parameters; with
    `block`, dtrain's BLOCK is set to it during the step."""
    cls, kwargs = OPTIMIZERS[name]
    lib.manual_seed(0)
    params = list(mlp(lib.nn).parameters())
    rng = np.random.default_rng(0)
    for p in params:
        p.grad = lib.tensor(rng.standard_normal(tuple(p.shape)).astype(np.float32))
    opt = getattr(lib.optim, cls)(params, **kwargs)
    opt.step()  # creates the state

    def step():
        saved = optimizer_module.BLOCK
        if block is not None:
            optimizer_module.BLOCK = block
        try:
            opt.step()
        finally:
            optimizer_module.BLOCK = saved
    return step


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    torch = try_torch()
    result = {"unit": "ms per step() (best of the rounds); ratios: medians", "params": 1863690,
              "machine": machine_load()}
    for name in OPTIMIZERS:
        fns = [stepper(dt, name), stepper(dt, name, block=1 << 40)]
        if torch is not None:
            fns.append(stepper(torch, name))
        times, ratios = alternate(fns, rounds=rounds, repeat=3, warmup=2, pause=IDLE_PAUSE)
        entry = {"dtrain": times[0] * 1e3, "dtrain_whole_arrays": times[1] * 1e3,
                 "blocks/whole_arrays": ratios[1] ** -1}
        if torch is not None:
            entry["torch"] = times[2] * 1e3
            entry["dtrain/torch"] = ratios[2] ** -1
        result[name] = entry
    emit(result)


if __name__ == "__main__":
    main()
