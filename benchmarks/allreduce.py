"""all_reduce bus bandwidth: dtrain vs raw mpi4py Allreduce on the same buffers, as JSON.

Run directly (it re-launches itself under `mpiexec -n 2`) or as
`mpiexec -n N python benchmarks/allreduce.py`. Sizes: float32 buffers of 1, 25, 100 MB.
Bus bandwidth = 2 (n - 1) / n x bytes / time (the NCCL-tests convention). The two run in
alternating rounds (best time of a round, slowest rank); the ratio is the median over the
rounds of dtrain's throughput relative to mpi4py's in the same round, so a machine shared
with other work slows both sides of a round rather than one side of the comparison.
"""
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402

ROUNDS = 9
REPEATS = {1: 50, 25: 10, 100: 4}  # timed calls per round and size (MB)


def main():
    import statistics
    import time

    from mpi4py import MPI

    import dtrain as dt
    import dtrain.distributed as dist

    dist.init_process_group(backend="mpi")
    comm = MPI.COMM_WORLD
    n = comm.Get_size()

    def round_time(fn, repeats):
        fn()
        times = []
        for _ in range(repeats):
            comm.Barrier()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return comm.allreduce(min(times), op=MPI.MAX)

    results = []
    for mb, repeats in REPEATS.items():
        count = mb * 1024 * 1024 // 4
        t = dt.ones(count)
        raw = t._data
        rounds = [(round_time(lambda: comm.Allreduce(MPI.IN_PLACE, raw, op=MPI.SUM), repeats),
                   round_time(lambda: dist.all_reduce(t), repeats)) for _ in range(ROUNDS)]
        best = {"mpi4py": min(r[0] for r in rounds), "dtrain": min(r[1] for r in rounds)}
        ratios = sorted(theirs / ours for theirs, ours in rounds)
        results.append({"size_mb": mb, "ms": {k: v * 1e3 for k, v in best.items()},
                        "bus_bandwidth_GBps": {k: 2 * (n - 1) / n * count * 4 / v / 1e9
                                               for k, v in best.items()},
                        "ratio_dtrain_vs_mpi4py (target >= 0.95)": statistics.median(ratios),
                        "ratio_range": [ratios[0], ratios[-1]]})
    if comm.Get_rank() == 0:
        emit({"world_size": n, "dtype": "float32", "rounds": ROUNDS, "results": results})
    dist.destroy_process_group()


if __name__ == "__main__":
    from dtrain.distributed.comm import launched_by_mpi

    if launched_by_mpi():
        main()
    else:
        mpiexec = Path(sys.executable).parent / "mpiexec"
        cmd = [str(mpiexec) if mpiexec.exists() else "mpiexec", "-n",
               os.environ.get("NPROC", "2"), sys.executable, __file__]
        sys.exit(subprocess.call(cmd))
