"""Sharded data parallelism: DDP, ZeRO-1 (ZeroRedundancyOptimizer reduce-scattering the
gradients itself, no DDP), ZeRO-2 (fully_shard(reshard_after_forward=False)) and FSDP
(fully_shard) on an MLP of 8.4 M parameters with Adam in float32, at 2 and 4 ranks: step time
(and its ratio to DDP in the same run), bytes held per rank after a step (measured, and
predicted from 4 + 4 + 8 bytes per parameter), bytes communicated per step. Prints JSON.

Run directly: it starts its own ranks with `mpiexec`.
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, run_ranks  # noqa: E402

STEPS, WARMUP, BATCH = 8, 2, 32
WIDTHS = (1024, 2048, 2048, 1024, 10)


def _predicted(strategy, psi, n):
    """Bytes per rank after a step: float32 parameters and gradients, Adam's two moments."""
    full, shard = 4 * psi, 4 * psi / n
    return {"ddp": 4 * full, "zero1": 2 * full + 2 * shard}.get(strategy, 4 * shard)


def worker():
    import numpy as np

    import dtrain as dt
    import dtrain.distributed as dist
    from dtrain import nn
    from dtrain.distributed.fsdp import fully_shard, memory_stats

    dist.init_process_group(backend="mpi")
    n = dist.get_world_size()

    def mlp():
        dt.manual_seed(0)
        layers = []
        for a, b in zip(WIDTHS, WIDTHS[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*layers[:-1])

    def sharded(reshard):
        model = mlp()
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, reshard_after_forward=reshard)
        return fully_shard(model, reshard_after_forward=reshard)

    def adam(model):
        return dt.optim.Adam(model.parameters(), lr=1e-4)

    build = {
        "ddp": lambda: (lambda m: (m, adam(m)))(dist.DistributedDataParallel(mlp())),
        "zero1": lambda: (lambda m: (m, dist.optim.ZeroRedundancyOptimizer(
            m.parameters(), dt.optim.Adam, reduce_scatter_gradients=True, lr=1e-4)))(mlp()),
        "zero2": lambda: (lambda m: (m, adam(m)))(sharded(False)),
        "fsdp": lambda: (lambda m: (m, adam(m)))(sharded(True)),
    }
    psi = sum(p.numel() for p in mlp().parameters())
    rng = np.random.default_rng(dist.get_rank())
    x = dt.tensor(rng.standard_normal((BATCH, WIDTHS[0])).astype(np.float32))
    y = dt.tensor(rng.integers(0, WIDTHS[-1], BATCH))
    loss_fn = nn.CrossEntropyLoss()
    out = {"world_size": n, "parameters": psi}

    def step(model, opt):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    for name, make in build.items():
        model, opt = make()
        times = []
        for i in range(STEPS + WARMUP):
            dist.barrier()
            t0 = time.perf_counter()
            if i == STEPS + WARMUP - 1:
                with dist.CommCounter() as comm:
                    step(model, opt)
            else:
                step(model, opt)
            if i >= WARMUP:
                times.append(time.perf_counter() - t0)
        mem = memory_stats(model, opt)
        out[name] = {"step_ms": sorted(times)[len(times) // 2] * 1e3,
                     "bytes_per_rank": mem,
                     "bytes_per_rank_predicted": _predicted(name, psi, n),
                     "comm_bytes_per_step": comm.bytes,
                     "comm_volume_per_step_in_psi": comm.volume() / (4 * psi)}
        del model, opt
    for name in build:
        out[name]["step_ratio_to_ddp"] = out[name]["step_ms"] / out["ddp"]["step_ms"]
    if dist.get_rank() == 0:
        print("RESULT " + json.dumps(out), flush=True)


def main():
    emit({"model": f"MLP {'-'.join(map(str, WIDTHS))}, Adam, float32",
          "batch_per_rank": BATCH, "2_ranks": run_ranks(__file__, 2, "worker", timeout=1200),
          "4_ranks": run_ranks(__file__, 4, "worker", timeout=1200)})


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        worker()
    else:
        main()
