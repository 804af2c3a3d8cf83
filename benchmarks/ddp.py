"""DDP training step: the MLP 784-1024-1024-10 step with 2 ranks x batch 64 against 1 rank x
batch 128, the fraction of all-reduce time hidden behind backward, and PyTorch DDP (gloo)
side by side when torch is importable. Prints JSON.

Run directly: it starts its own ranks with `mpiexec` (the 1-rank and 2-rank runs, dtrain
and torch, one after another).
"""
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, run_ranks, try_torch  # noqa: E402

STEPS, WARMUP = 30, 5


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def dtrain_worker(batch):
    import numpy as np

    import dtrain as dt
    import dtrain.distributed as dist
    from dtrain import nn

    dist.init_process_group(backend="mpi")
    world = dist.get_world_size()
    dt.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                          nn.Linear(1024, 10))
    ddp = dist.DistributedDataParallel(model) if world > 1 else model
    opt = dt.optim.SGD(model.parameters(), lr=0.01)
    rng = np.random.default_rng(dist.get_rank())
    x = dt.tensor(rng.standard_normal((batch, 784)).astype(np.float32))
    y = dt.tensor(rng.integers(0, 10, batch))
    loss_fn = nn.CrossEntropyLoss()

    def step(net):
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()

    def timed(net, sync):
        times = []
        for i in range(STEPS + WARMUP):
            dist.barrier()
            t0 = time.perf_counter()
            if sync or world == 1:
                step(net)
            else:
                with ddp.no_sync():
                    step(net)
            if i >= WARMUP:
                times.append(time.perf_counter() - t0)
        return _median(times)

    t_step = timed(ddp, True)
    out = {"world_size": world, "batch_per_rank": batch, "step_ms": t_step * 1e3}
    if world > 1:
        t_local = timed(ddp, False)
        flat = dt.zeros(sum(p.numel() for p in model.parameters()))
        comm = []
        for _ in range(10):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(flat)
            comm.append(time.perf_counter() - t0)
        t_comm = _median(comm)
        exposed = max(t_step - t_local, 0.0)
        out.update(step_without_comm_ms=t_local * 1e3, allreduce_all_grads_ms=t_comm * 1e3,
                   hidden_fraction=max(0.0, min(1.0, 1 - exposed / t_comm)))
    if dist.get_rank() == 0:
        print("RESULT " + json.dumps(out), flush=True)


def torch_worker(batch):
    import torch
    import torch.distributed as tdist

    rank, world = int(os.environ["PMI_RANK"]), int(os.environ["PMI_SIZE"])
    tdist.init_process_group("gloo", init_method="tcp://127.0.0.1:29517", rank=rank,
                             world_size=world)
    torch.manual_seed(0)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    model = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, 10))
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(batch, 784), torch.randint(0, 10, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for i in range(STEPS + WARMUP):
        tdist.barrier()
        t0 = time.perf_counter()
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()
        if i >= WARMUP:
            times.append(time.perf_counter() - t0)
    if rank == 0:
        print("RESULT " + json.dumps({"world_size": world, "batch_per_rank": batch,
                                      "step_ms": _median(times) * 1e3}), flush=True)
    tdist.destroy_process_group()


def _run(kind, n, batch):
    return run_ranks(__file__, n, kind, batch)


def main():
    result = {"model": "MLP 784-1024-1024-10, SGD, float32", "global_batch": 128,
              "dtrain": {"1_rank": _run("dtrain", 1, 128), "2_ranks": _run("dtrain", 2, 64)}}
    if try_torch() is not None:
        result["torch_gloo"] = {"1_rank": _run("torch", 1, 128), "2_ranks": _run("torch", 2, 64)}
        result["ratio_2_ranks_dtrain_vs_torch (target <= 1.0)"] = (
            result["dtrain"]["2_ranks"]["step_ms"] / result["torch_gloo"]["2_ranks"]["step_ms"])
    emit(result)


if __name__ == "__main__":
    if len(sys.argv) == 3:
        (dtrain_worker if sys.argv[1] == "dtrain" else torch_worker)(int(sys.argv[2]))
    else:
        main()
