"""Graph mode vs eager, as JSON: dtrain eager vs `dt.compile`, and PyTorch eager vs
`torch.compile` when importable (torch.compile needs a working C++ toolchain; its error is
reported when it fails).

(a) the tiny-op chain of op_overhead.py (1,000 elementwise ops on 16 floats, forward +
    backward): microseconds per op;
(b) one training step (zero_grad, forward, cross-entropy loss, backward, SGD step with
    momentum) of train_step.py's MLP (784-1024-1024-10, batch 128) and CNN (64x3x32x32),
    on new inputs and new labels every step (a cycle of 4 batches): ms per step.
Each step also reports the peak of extra traced memory (NumPy arrays and Python objects)
during one step after warm-up (tracemalloc), eager vs compiled: the memory plan's claim
that a replayed step allocates no arrays.
"""
import itertools
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from _common import best_time, emit, try_torch  # noqa: E402
from op_overhead import N_OPS, chain  # noqa: E402
from train_step import CASES  # noqa: E402

import dtrain as dt  # noqa: E402


def chain_step(x, w):
    chain(x, w).backward()


def chain_us(make, compile_fn=None):
    x = make(np.random.default_rng(0).standard_normal(16).astype(np.float32))
    w = make(np.full(16, 0.9, np.float32))
    fn = chain_step if compile_fn is None else compile_fn(chain_step)

    def step():
        x.grad = w.grad = None
        fn(x, w)
    return best_time(step, repeat=7, warmup=3) / N_OPS * 1e6


def torch_chain_us(torch):
    """torch.compile of the forward chain (AOTAutograd compiles its backward too)."""
    x = torch.tensor(np.random.default_rng(0).standard_normal(16).astype(np.float32),
                     requires_grad=True)
    w = torch.tensor(np.full(16, 0.9, np.float32), requires_grad=True)
    fwd = torch.compile(chain)

    def step():
        x.grad = w.grad = None
        fwd(x, w).backward()
    return best_time(step, repeat=7, warmup=3) / N_OPS * 1e6


def train_case(lib, build, shape, compile_fn=None, n_batches=4):
    rng = np.random.default_rng(0)
    batches = itertools.cycle([(lib.tensor(rng.standard_normal(shape).astype(np.float32)),
                                lib.tensor(rng.integers(0, 10, shape[0])))
                               for _ in range(n_batches)])
    model = build(lib.nn)
    opt = lib.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = lib.nn.functional.cross_entropy
    if compile_fn is not None and lib is not dt:  # torch: compile the model only
        model = compile_fn(model)

    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss
    fn = compile_fn(step) if compile_fn is not None and lib is dt else step
    return (lambda: fn(*next(batches))), fn


def step_ms(lib, build, shape, compile_fn=None, repeat=10):
    run, _ = train_case(lib, build, shape, compile_fn)
    return best_time(run, repeat=repeat, warmup=3) * 1e3


def numpy_peak_kb(run):
    """Peak NumPy memory above the start of one step, after warm-up (tracemalloc)."""
    for _ in range(3):
        run()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        run()
        return (tracemalloc.get_traced_memory()[1] - before) / 1024
    finally:
        tracemalloc.stop()


def attempt(fn):
    t0 = time.perf_counter()
    try:
        return fn()
    except Exception as err:  # torch.compile without a toolchain, ...
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}",
                "seconds_until_failure": round(time.perf_counter() - t0, 1)}


def main():
    def dmake(arr):
        return dt.tensor(arr, requires_grad=True)
    d = {"chain_us_per_op": {"eager": chain_us(dmake), "compiled": chain_us(dmake, dt.compile)}}
    for name, (build, shape) in CASES.items():
        dt.manual_seed(0)
        eager, compiled = (step_ms(dt, build, shape), step_ms(dt, build, shape, dt.compile))
        d[name] = {"eager_ms": eager, "compiled_ms": compiled,
                   "numpy_peak_kb_per_step": {
                       "eager": numpy_peak_kb(train_case(dt, build, shape)[0]),
                       "compiled": numpy_peak_kb(train_case(dt, build, shape, dt.compile)[0])}}
    ratios = {"chain compiled/eager (target <= 0.3)":
              d["chain_us_per_op"]["compiled"] / d["chain_us_per_op"]["eager"]}
    for name in CASES:
        ratios[f"{name} compiled/eager (target <= 0.95)"] = \
            d[name]["compiled_ms"] / d[name]["eager_ms"]
    result = {"dtrain": d, "ratios": ratios, "torch": None}
    torch = try_torch()
    if torch is not None:
        def tmake(arr):
            return torch.tensor(arr, requires_grad=True)
        t = {"version": torch.__version__, "threads": torch.get_num_threads(),
             "chain_us_per_op": {"eager": chain_us(tmake),
                                 "compiled": attempt(lambda: torch_chain_us(torch))}}
        for name, (build, shape) in CASES.items():
            torch.manual_seed(0)
            t[name] = {"eager_ms": step_ms(torch, build, shape),
                       "compiled_ms": attempt(lambda b=build, s=shape: step_ms(
                           torch, b, s, torch.compile, repeat=5))}
        result["torch"] = t
    emit(result)


if __name__ == "__main__":
    main()
