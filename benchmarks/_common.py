"""Shared by the benchmark scripts: timing, optional PyTorch, JSON output, runs on MPI
ranks."""
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# NOTE: a library's BLAS/OpenMP threads spin for a while after a call (OpenBLAS ~0.1 s), so a
# call of the other library made meanwhile shares the cores with them: PyTorch's 1024x1024
# matmul took 13-22 ms right after NumPy's, 8.5 ms after a 0.3 s pause; its CNN training
# step 46-51 ms instead of 26. Runs that alternate libraries pause this long before each turn.
IDLE_PAUSE = 0.25


def best_time(fn, repeat=5, warmup=1, clock=time.perf_counter):
    """Best time of `fn()` on `clock` over `repeat` runs (after `warmup` runs), in seconds."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def alternate(fns, rounds=7, repeat=3, warmup=1, pause=0.0, clock=time.perf_counter):
    """Time the callables `fns` in turn, `rounds` times (best of `repeat` runs each per
    round), so that a changing machine load hits all of them alike. With `pause` (runs of
    different libraries: see IDLE_PAUSE), each turn starts with that many seconds of sleep
    and one untimed call. Returns (best time of each over all rounds in seconds, median over
    rounds of each one's time divided by the first's): on a loaded machine the median ratio
    is the stable figure."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(rounds):
        for fn, ts in zip(fns, times):
            if pause:
                time.sleep(pause)
            ts.append(best_time(fn, repeat=repeat, warmup=1 if pause else 0, clock=clock))
    ratios = [statistics.median(t / t0 for t, t0 in zip(ts, times[0])) for ts in times]
    return [min(ts) for ts in times], ratios


def machine_load():
    """The CPU count and 1-minute load average: figures taken on a loaded machine (load above
    the CPU count) vary from run to run, ratios of alternated runs much less."""
    return {"cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2)}


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


def run_ranks(script, n, *args, timeout=600):
    """Run `python script args` on `n` MPI ranks (the cores split between them) and return
    the JSON that a rank printed after "RESULT "."""
    local = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(local) if local.exists() else "mpiexec"
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // n))}
    proc = subprocess.run([mpiexec, "-n", str(n), sys.executable, script, *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{Path(script).name} {' '.join(map(str, args))} on {n} ranks "
                       f"failed:\n{proc.stdout}\n{proc.stderr}")
