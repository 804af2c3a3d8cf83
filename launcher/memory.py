"""`dtrain estimate-memory CONFIG.yaml`: the bytes one rank holds under each
`distributed.strategy`, predicted from the config on one process and, with `--measure`,
measured in one training step on real ranks.

Predictions, with P the parameters' bytes, G the gradients', O the optimizer state's, N ranks
(one rank: ddp for all), S the bytes of the parameters that the graph saves for backward and
S_root those of them outside the model's blocks:
  ddp    P + G + O              zero2  P/N + S (gathered, kept by the graph) + G/N + O/N
  zero1  P + G + O_0            fsdp   P/N + S_root (the root is not resharded) + G/N + O/N
where O_0 is the state of the largest ZeroRedundancyOptimizer partition (whole parameters,
assigned as it assigns them). Parameters are counted between forward and backward (where the
strategies differ), gradients and optimizer state after the step. The optimizer state comes
from stepping the optimizer class once on a tiny parameter (state bytes per element and per
parameter); activations and S are `saved_nbytes`
of a forward and loss on 2 and on 4 samples, activations extended linearly to
data.batch_size.
Measured: each rank runs the trainer's build and one step: `memory_stats` after forward
(parameters) and after the step (gradients, optimizer), `saved_nbytes` after forward without
the gathered parameters; the largest figure over the ranks is shown.
"""
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

import dtrain as dt
from dtrain import distributed as dist
from dtrain import nn
from dtrain.autograd.graph import saved_nbytes
from dtrain.data import DataLoader
from dtrain.distributed.fsdp import gathered_arrays, memory_stats
from dtrain.distributed.optim.zero_redundancy_optimizer import assign_ranks
from dtrain.launcher import config as cfgmod
from dtrain.launcher import registry, strategy, trainer
from dtrain.launcher.models import blocks, build_model

COLUMNS = ("parameters", "gradients", "optimizer", "activations")


def _nbytes(params):
    return sum(p.numel() * p.element_size() for p in params)


def state_bytes(cls, cfg, params):
    """Bytes of `cls`'s state for each of `params` (0 without gradients), from one step of
    `cls` on a tiny parameter of their dtype: state shaped like the parameter costs per
    element, any other state per parameter."""
    trained = [p for p in params if p.requires_grad]
    if not trained:
        return [0] * len(params)
    probe = nn.Parameter(dt.zeros(3, dtype=trained[0].dtype))
    probe.grad = dt.ones(3, dtype=trained[0].dtype)
    opt = cls([probe], lr=cfg.optimizer.lr, **cfg.optimizer.kwargs)
    opt.step()
    per_element = per_param = 0
    for value in opt.state[probe].values():
        if isinstance(value, dt.Tensor):
            if tuple(value.shape) == tuple(probe.shape):
                per_element += value.element_size()
            else:
                per_param += value.numel() * value.element_size()
    return [p.numel() * per_element + per_param if p.requires_grad else 0 for p in params]


@dataclasses.dataclass
class Sizes:
    """What the predictions are made of (bytes; `activations` for data.batch_size)."""

    numels: list  # of each parameter
    parameters: int
    gradients: int
    optimizer: list  # the state of each parameter
    saved_params: int
    saved_root_params: int
    activations: int


def sizes(cfg):
    """The `Sizes` of a config, from its model and optimizer built on this process (CPU)."""
    dt.manual_seed(cfg.experiment.seed)
    train_ds, _, in_shape, num_classes, task = registry.build_datasets(cfg.data,
                                                                       cfg.experiment.seed)
    model = build_model(cfg.model, in_shape, num_classes)
    units = blocks(cfg.model, model)
    params = list(model.parameters())
    inside = {id(p) for b in units for p in b.parameters()}
    cls = registry.lookup(registry.OPTIMIZERS, cfg.optimizer.name)
    one = trainer.World(0, 1, dt.device("cpu"))
    wrapped = strategy.wrap(model, units, cfg, one)  # activation checkpointing, if asked for
    saved = []
    for b in (2, 4):
        x, y = next(iter(DataLoader(train_ds, batch_size=b)))
        loss = trainer._loss(nn.CrossEntropyLoss(), wrapped(x), y, task)
        saved.append(saved_nbytes(loss))
    per_sample = (saved[1] - saved[0]) / 2
    in_blocks = [p._data for p in params if id(p) in inside]
    return Sizes([p.numel() for p in params], _nbytes(params),
                 _nbytes(p for p in params if p.requires_grad),
                 state_bytes(cls, cfg, params),
                 saved_nbytes(loss, params=True) - saved[1],
                 saved_nbytes(loss, exclude=in_blocks, params=True) - saved[1],
                 round(saved[1] + (cfg.data.batch_size - 4) * per_sample))


def predict(s, name, n):
    """{column: bytes} that the most loaded of `n` ranks holds under strategy `name`."""
    state = sum(s.optimizer)
    if n == 1 or name == "ddp":
        held = (s.parameters, s.gradients, state)
    elif name == "zero1":
        parts = [0] * n
        for rank, b in zip(assign_ranks(s.numels, [0] * n), s.optimizer):
            parts[rank] += b
        held = (s.parameters, s.gradients, max(parts))
    elif name == "zero2":
        held = (s.parameters / n + s.saved_params, s.gradients / n, state / n)
    else:
        held = (s.parameters / n + s.saved_root_params, s.gradients / n, state / n)
    return _with_total(dict(zip(COLUMNS, [round(v) for v in held] + [s.activations])))


def _with_total(figures):
    return {**figures, "total": sum(figures[c] for c in COLUMNS)}


# -- measuring on real ranks ---------------------------------------------------------------------
def measure(cfg, n):
    """{strategy: {column: bytes}} measured on `n` real ranks (one `dtrain launch`-style job
    per strategy); raises RuntimeError when a job fails."""
    from dtrain.launcher import run

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in cfgmod.STRATEGIES:
            job_cfg = dataclasses.replace(cfg, distributed=dataclasses.replace(
                cfg.distributed, strategy=name))
            path, result = Path(tmp) / f"{name}.yaml", Path(tmp) / f"{name}.json"
            path.write_text(cfgmod.dump(job_cfg))
            spec = run.JobSpec([__file__, str(path), str(result)], nproc_per_node=n,
                               mpiexec=cfg.distributed.mpiexec, rank0_only=True)
            code = run.launch(spec)
            if code != 0 or not result.exists():
                raise RuntimeError(f"measuring {name} on {n} ranks failed (exit code {code})")
            out[name] = json.loads(result.read_text())
    return out


def _rank_main(config_path, result_path):
    """One rank of a measuring job: the trainer's build of the config, one training step."""
    cfg, _ = cfgmod.load_config(config_path)
    rank, size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1:
        dist.init_process_group(cfg.distributed.backend, timeout=cfg.distributed.timeout_s)
    world = trainer.World(rank, size, trainer.device_for(
        cfg.trainer.device, int(os.environ.get("LOCAL_RANK", "0"))))
    job = trainer.build(cfg, world, Path(tempfile.gettempdir()))
    x, y = next(iter(DataLoader(job.train_ds, batch_size=cfg.data.batch_size,
                                sampler=job.sampler)))
    x, y = x.to(world.device), y.to(world.device)
    job.optimizer.zero_grad()
    loss = trainer._loss(nn.CrossEntropyLoss(), job.wrapped(x), y, job.task)
    params = memory_stats(job.model)["parameters"]
    activations = saved_nbytes(loss, exclude=gathered_arrays(job.model))
    loss.backward()
    job.optimizer.step()
    after = memory_stats(job.model, job.optimizer)
    mine = {"parameters": params, "gradients": after["gradients"],
            "optimizer": after["optimizer"], "activations": activations}
    everyone = [mine]
    if size > 1:
        everyone = [None] * size
        dist.all_gather_object(everyone, mine)
    if rank == 0:
        Path(result_path).write_text(json.dumps(_with_total(
            {c: max(r[c] for r in everyone) for c in COLUMNS})))
    if size > 1:
        dist.destroy_process_group()


# -- the command -----------------------------------------------------------------------------------
def report(cfg, n, measured=None):
    """The estimate as a JSON-ready dict."""
    s = sizes(cfg)
    out = {"model": cfg.model.name or cfg.model.target, "parameters": sum(s.numels),
           "optimizer": cfg.optimizer.name, "world_size": n,
           "batch_size_per_rank": cfg.data.batch_size,
           "activation_checkpointing": cfg.trainer.activation_checkpointing, "strategies": {}}
    for name in cfgmod.STRATEGIES:
        entry = {"predicted": predict(s, name, n)}
        if measured is not None:
            entry["measured"] = measured[name]
        out["strategies"][name] = entry
    return out


def _size(b):
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if b >= scale:
            return f"{b / scale:.2f} {unit}"
    return f"{b} B"


def table(est):
    """The estimate as a text table (measured rows and their error when measured)."""
    head = (f"{est['model']}: {est['parameters']:,} parameters, {est['optimizer']}, "
            f"{est['world_size']} rank(s), batch {est['batch_size_per_rank']} per rank"
            + (", activation checkpointing" if est["activation_checkpointing"] else ""))
    cols = [*COLUMNS, "total"]
    lines = [head, f"{'strategy':<9}{'':<10}" + "".join(f"{c:>13}" for c in cols)]
    for name, entry in est["strategies"].items():
        pred = entry["predicted"]
        lines.append(f"{name:<9}{'predicted':<10}" + "".join(f"{_size(pred[c]):>13}"
                                                            for c in cols))
        if "measured" in entry:
            got = entry["measured"]
            lines.append(f"{'':<9}{'measured':<10}" + "".join(f"{_size(got[c]):>13}"
                                                             for c in cols))
            lines.append(f"{'':<9}{'error':<10}" + "".join(
                f"{(pred[c] - got[c]) / got[c]:>+13.1%}" if got[c] else f"{'-':>13}"
                for c in cols))
    return "\n".join(lines)


def main(cfg, world_size, do_measure, as_json):
    """Print the estimate of a validated config; returns an exit code."""
    n = world_size or cfg.distributed.nproc_per_node * cfg.distributed.nnodes
    measured = measure(cfg, n) if do_measure else None
    est = report(cfg, n, measured)
    print(json.dumps(est, indent=2) if as_json else table(est))
    return 0


if __name__ == "__main__":
    _rank_main(*sys.argv[1:])
