"""Per-op overhead and matmul throughput, dtrain vs PyTorch (when importable), as JSON.

(a) a 1,000-op chain of tiny elementwise ops on a 16-element tensor that requires grad,
    forward + backward: microseconds per op;
(a') the same for a chain of tensor add/mul only, on 10 elements (the cheapest ops: the
    overhead with nothing to hide it);
(b) a 1024x1024 float32 matmul, forward + backward (3 GEMMs): GFLOP/s.
The chains of both libraries run in turn, and their ratios are medians over rounds.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from _common import IDLE_PAUSE, alternate, best_time, emit, machine_load, try_torch  # noqa: E402

import dtrain as dt  # noqa: E402

N_OPS = 1000


def chain(x, w):
    # 4 ops per round: mul by a tensor, add a scalar, tanh, mul by a scalar
    for _ in range(N_OPS // 4):
        x = (x * w + 0.01).tanh() * 1.5
    return x.sum()


def add_mul_chain(x, w):
    # 2 ops per round: mul by a tensor, add a tensor
    for _ in range(N_OPS // 2):
        x = x * w + w
    return x.sum()


def chain_run(make, fn=chain, size=16):
    """One forward + backward of `fn` on fresh gradients (a callable)."""
    x = make(np.random.default_rng(0).standard_normal(size).astype(np.float32))
    w = make(np.full(size, 0.9, np.float32))

    def run():
        x.grad = w.grad = None
        fn(x, w).backward()
    return run


CHAINS = {"op_chain_us_per_op": (chain, 16), "add_mul_10_us_per_op": (add_mul_chain, 10)}


def matmul_gflops(make, n=1024):
    rng = np.random.default_rng(0)
    a = make(rng.standard_normal((n, n)).astype(np.float32))
    b = make(rng.standard_normal((n, n)).astype(np.float32))

    def step():
        a.grad = b.grad = None
        (a @ b).sum().backward()
    time.sleep(IDLE_PAUSE)  # the other library's threads go idle
    return 6 * n ** 3 / best_time(step, repeat=5, warmup=1) / 1e9


def main():
    """The chains of dtrain and torch run in turn (`alternate`), so that a loaded machine slows
    both alike: the ratios are medians over rounds, the times the best of all rounds."""
    result = {"n_ops": N_OPS, "dtrain": {}, "torch": None, "machine": machine_load()}
    torch = try_torch()

    def dmake(arr):
        return dt.tensor(arr, requires_grad=True)

    def tmake(arr):
        return torch.tensor(arr, requires_grad=True)
    ratios = {}
    for name, (fn, size) in CHAINS.items():
        runs = [chain_run(dmake, fn, size)] + ([] if torch is None else
                                               [chain_run(tmake, fn, size)])
        best, ratio = alternate(runs, rounds=7, warmup=2, pause=IDLE_PAUSE)
        result["dtrain"][name] = best[0] / N_OPS * 1e6
        if torch is not None:
            result.setdefault("torch_chains", {})[name] = best[1] / N_OPS * 1e6
            ratios[name] = 1 / ratio[1]  # dtrain/torch time
    result["dtrain"]["matmul_1024_gflops"] = matmul_gflops(dmake)
    if torch is not None:
        result["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads(),
                           **result.pop("torch_chains"),
                           "matmul_1024_gflops": matmul_gflops(tmake)}
        d, t = result["dtrain"], result["torch"]
        result["ratio_vs_torch"] = {
            "op_overhead (dtrain/torch time, target <= 1.5)": ratios["op_chain_us_per_op"],
            "add_mul_10 (dtrain/torch time)": ratios["add_mul_10_us_per_op"],
            "matmul (torch/dtrain time, target <= 1.1)":
                t["matmul_1024_gflops"] / d["matmul_1024_gflops"]}
    emit(result)


if __name__ == "__main__":
    main()
