"""Checkpoint save and load time of an MLP of 8.4 M parameters with Adam's state (float32,
~100 MB) at 1, 2 and 4 ranks (`fully_shard` on 2 and 4): the rank-0 gather (full state dicts
gathered, `dt.save` on rank 0; loading: every rank reads the whole file and keeps its rows)
against `dcp.save` (every rank writes its own shards) and `dcp.async_save` (the time the
training step waits: planning and staging copies, and the total until the checkpoint is
complete), and `dcp.load`. Best of REPEAT, in seconds, wall time from a barrier to the last
rank done. Prints JSON.

Run directly: it starts its own ranks with `mpiexec`. `--dir PATH` picks the folder the
checkpoints are written in (default: a temporary folder).
"""
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, run_ranks  # noqa: E402

REPEAT = 3
WIDTHS = (1024, 2048, 2048, 1024, 10)


def worker(directory):
    import numpy as np

    import dtrain as dt
    import dtrain.distributed as dist
    import dtrain.distributed.checkpoint as dcp
    from dtrain import nn
    from dtrain.distributed.fsdp import fully_shard

    dist.init_process_group(backend="mpi")
    n, rank = dist.get_world_size(), dist.get_rank()
    full = dcp.StateDictOptions(full_state_dict=True)

    def build():
        dt.manual_seed(0)
        layers = []
        for a, b in zip(WIDTHS, WIDTHS[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        model = nn.Sequential(*layers[:-1])
        if n > 1:
            for layer in model:
                if isinstance(layer, nn.Linear):
                    fully_shard(layer)
            fully_shard(model)
        opt = dt.optim.Adam(model.parameters(), lr=1e-4)
        x = dt.tensor(np.random.default_rng(rank).standard_normal((8, WIDTHS[0]))
                      .astype(np.float32))
        model(x).sum().backward()
        opt.step()
        return model, opt

    model, opt = build()
    gather_file = os.path.join(directory, "gathered.pt")

    def timed(fn):
        best = float("inf")
        for _ in range(REPEAT):
            dist.barrier()
            t0 = time.perf_counter()
            fn()
            dist.barrier()
            best = min(best, time.perf_counter() - t0)
        return best

    def gather_save():
        msd = dcp.get_model_state_dict(model, options=full)
        osd = dcp.get_optimizer_state_dict(model, opt, options=full)
        if rank == 0:
            dt.save({"model": msd, "optim": osd}, gather_file)

    def gather_load():
        state = dt.load(gather_file)
        dcp.set_model_state_dict(model, state["model"], options=full)
        dcp.set_optimizer_state_dict(model, opt, state["optim"], options=full)

    def state():
        msd, osd = dcp.get_state_dict(model, opt)
        return {"model": msd, "optim": osd, "step": 1}

    def dcp_save():
        dcp.save(state(), checkpoint_id=os.path.join(directory, "dcp"))

    def dcp_load():
        sd = state()
        dcp.load(sd, checkpoint_id=os.path.join(directory, "dcp"))
        dcp.set_state_dict(model, opt, model_state_dict=sd["model"],
                           optim_state_dict=sd["optim"])

    waits = []

    def async_save():
        dist.barrier()
        t0 = time.perf_counter()
        future = dcp.async_save(state(), checkpoint_id=os.path.join(directory, "async"))
        waits.append(time.perf_counter() - t0)
        future.result()

    out = {"world_size": n, "parameters": sum(a * b + b for a, b in zip(WIDTHS, WIDTHS[1:])),
           "rank0_gather_save_s": timed(gather_save), "dcp_save_s": timed(dcp_save),
           "async_save_total_s": timed(async_save)}
    everyone = [None] * n
    dist.all_gather_object(everyone, min(waits))
    out["async_save_step_waits_s"] = max(everyone)  # the slowest rank's best
    out["async_hidden_fraction"] = 1 - out["async_save_step_waits_s"] / out["dcp_save_s"]
    out["rank0_gather_load_s"] = timed(gather_load)
    out["dcp_load_s"] = timed(dcp_load)
    out["checkpoint_bytes"] = sum(f.stat().st_size for f in
                                  Path(directory, "dcp").glob("*.distcp"))
    if rank == 0:
        print("RESULT " + json.dumps(out), flush=True)


def main():
    parent = sys.argv[sys.argv.index("--dir") + 1] if "--dir" in sys.argv else None
    result = {"model": f"MLP {'-'.join(map(str, WIDTHS))} + Adam state, float32",
              "repeat": REPEAT, "load_average": os.getloadavg()[0]}
    for n in (1, 2, 4):
        directory = tempfile.mkdtemp(prefix="dtrain-ckpt-bench-", dir=parent)
        try:
            result[f"{n}_ranks"] = run_ranks(__file__, n, "worker", directory, timeout=1200)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    emit(result)


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker(sys.argv[2])
    else:
        main()
