"""Shared by the benchmark scripts: timing, optional PyTorch, JSON output."""
import json
import sys
import time


def best_time(fn, repeat=5, warmup=1):
    """Best wall time of `fn()` over `repeat` runs (after `warmup` runs), in seconds."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def try_torch():
    """The torch module when importable (for side-by-side figures), else None."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(torch.get_num_threads())
    return torch


def emit(result):
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
