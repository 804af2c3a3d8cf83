"""all_reduce bus bandwidth: dtrain vs raw mpi4py Allreduce on the same buffers, as JSON.

Run directly (it re-launches itself under `mpiexec -n 2`) or as
`mpiexec -n N python benchmarks/allreduce.py`. Sizes: float32 buffers of 1, 25, 100 MB.
Bus bandwidth = 2 (n - 1) / n x bytes / time (the NCCL-tests convention).
"""
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402


def main():
    import time

    from mpi4py import MPI

    import dtrain as dt
    import dtrain.distributed as dist

    dist.init_process_group(backend="mpi")
    comm = MPI.COMM_WORLD
    n = comm.Get_size()
    results = []
    for mb in (1, 25, 100):
        count = mb * 1024 * 1024 // 4
        t = dt.ones(count)
        raw = t.data

        def ours():
            dist.all_reduce(t)

        def theirs():
            comm.Allreduce(MPI.IN_PLACE, raw, op=MPI.SUM)

        best = {}
        for name, fn in (("mpi4py", theirs), ("dtrain", ours)) * 2:  # interleaved, twice
            fn()
            comm.Barrier()
            times = []
            for _ in range({1: 50, 25: 10}.get(mb, 4)):
                comm.Barrier()
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            worst_rank = comm.allreduce(min(times), op=MPI.MAX)
            best[name] = min(best.get(name, float("inf")), worst_rank)
        busbw = {k: 2 * (n - 1) / n * count * 4 / v / 1e9 for k, v in best.items()}
        results.append({"size_mb": mb, "ms": {k: v * 1e3 for k, v in best.items()},
                        "bus_bandwidth_GBps": busbw,
                        "ratio_dtrain_vs_mpi4py (target >= 0.95)":
                            busbw["dtrain"] / busbw["mpi4py"]})
    if comm.Get_rank() == 0:
        emit({"world_size": n, "dtype": "float32", "results": results})
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
