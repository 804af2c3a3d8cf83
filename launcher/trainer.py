"""The trainer each rank runs for a config, in small units: `build` (model, data, optimizer,
scheduler, DDP from the registries), `resume` (a checkpoint's full state),
`forward_backward`, `evaluate` (every sample counted exactly once across ranks),
`save_checkpoint`, and `fit`, the loop that orders them and decides when to stop.

Each optimizer step trains on the next `global_batch` samples of the epoch's global order
(`ResumableDistributedSampler`), dealt round robin to the ranks, and the loss is weighted so
that the gradient is the mean over those samples whatever their split. The checkpoint holds
that position globally (epoch, permutation seed, samples consumed) with the global batch and
every rank's RNG state, so a run resumes on another world size: same sample order from the
next unseen sample, global batch kept (`trainer.elastic_batch`), RNG streams derived from
(seed, step, rank).

Stops are agreed by all ranks at a step boundary with one all-reduce per step: a stop signal
(SIGTERM/SIGINT from `dtrain launch`, SIGHUP, SIGUSR2 from Slurm before the time limit) ends
the run with a checkpoint; a non-finite loss or gradient norm follows
`trainer.on_nonfinite`. `main` returns an `ExitCode`.
"""
import contextlib
import json
import math
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import dtrain as dt
from dtrain import distributed as dist
from dtrain import nn
from dtrain.data import DataLoader, ResumableDistributedSampler, random_split
from dtrain.distributed import checkpoint as dcp
from dtrain.launcher import config as cfgmod
from dtrain.launcher import registry, strategy
from dtrain.launcher.exit_codes import ExitCode
from dtrain.launcher.identity import node_name
from dtrain.launcher.metrics import MetricsWriter
from dtrain.launcher.models import blocks, build_model
from dtrain.launcher.progress import Progress
from dtrain.launcher.rundir import RUN_ID_ENV, Checkpoints, link_latest, load_full

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGUSR2)


class UsageError(Exception):
    """A problem of the config or the machine found as the run starts (exit code 2)."""


# -- what build() makes -------------------------------------------------------------------------
@dataclass
class World:
    rank: int
    size: int
    device: object

    def sum(self, values):
        """Element-wise sum of a list of floats over the ranks."""
        t = dt.tensor(np.asarray(values, dtype=np.float64))
        if self.size > 1:
            dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj):
        """[obj of rank 0, obj of rank 1, ...] on every rank."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out


@dataclass
class Job:
    """Everything a run trains with, and where it is."""

    cfg: cfgmod.Config
    world: World
    run_dir: Path
    model: nn.Module
    wrapped: nn.Module  # DDP around `model` (ddp), `model` sharded in place, or `model`
    optimizer: object
    scheduler: object
    scaler: object
    train_ds: object
    val_ds: object  # None without data.val_split
    test_ds: object
    task: str
    sampler: ResumableDistributedSampler  # holds the data position
    batch_size: int  # per rank and micro-batch (data.batch_size unless a resume adjusted it)
    accum: int  # micro-batches per step (trainer.grad_accum_steps, or adjusted)
    steps_per_epoch: int
    total: int
    step: int = 0
    saved_step: int | None = None  # the step of this run's newest checkpoint
    best: dict = field(default_factory=dict)  # the best evaluation: step, split, accuracy, loss
    last_eval: dict = field(default_factory=dict)

    @property
    def global_batch(self):
        """Samples per optimizer step over all ranks."""
        return self.world.size * self.batch_size * self.accum

    @property
    def eval_split(self):
        """What training-time evaluations measure: the validation split when there is one."""
        return "val" if self.val_ds is not None else "test"


def device_for(name, local_rank):
    if name == "auto":
        name = "cuda" if dt.cuda.is_available() else "cpu"
    if name == "cuda":
        if not dt.cuda.is_available():
            raise UsageError("trainer.device: cuda asked for, but no CUDA GPU is visible on "
                             f"{socket.gethostname()} (CuPy absent or no device); use "
                             "trainer.device=cpu or auto")
        return dt.device("cuda", local_rank % dt.cuda.device_count())
    return dt.device(name)


def build(cfg, world, run_dir):
    """The Job of a validated config on this rank (seeded by experiment.seed)."""
    exp, data, tcfg = cfg.experiment, cfg.data, cfg.trainer
    dt.manual_seed(exp.seed)
    train_ds, test_ds, in_shape, num_classes, task = registry.build_datasets(data, exp.seed)
    val_ds = None
    if data.val_split:
        n_val = max(1, int(round(len(train_ds) * data.val_split)))
        split_rng = dt.Generator().manual_seed(exp.seed)
        train_ds, val_ds = random_split(train_ds, [len(train_ds) - n_val, n_val],
                                        generator=split_rng)
    model = build_model(cfg.model, in_shape, num_classes).to(world.device)
    wrapped = strategy.wrap(model, blocks(cfg.model, model), cfg, world)
    optimizer = strategy.make_optimizer(registry.lookup(registry.OPTIMIZERS, cfg.optimizer.name),
                                        model, cfg, world)
    scheduler = None
    if cfg.scheduler is not None:
        scheduler = registry.lookup(registry.SCHEDULERS, cfg.scheduler.name)(
            optimizer, **cfg.scheduler.kwargs)
    scaler = strategy.make_scaler(cfg, world)
    sampler = ResumableDistributedSampler(train_ds, world.size, world.rank, shuffle=True,
                                          seed=exp.seed)
    job = Job(cfg, world, run_dir, model, wrapped, optimizer, scheduler, scaler, train_ds,
              val_ds, test_ds, task, sampler, data.batch_size, tcfg.grad_accum_steps, 0, 0)
    _schedule(job)
    return job


def _schedule(job):
    """Set steps_per_epoch and total from the global batch and the data position."""
    n, tcfg = len(job.train_ds), job.cfg.trainer
    job.steps_per_epoch = math.ceil(n / job.global_batch)
    left = math.ceil((n - job.sampler.start) / job.global_batch)  # in this epoch
    epochs_left = (tcfg.epochs or 0) - job.sampler.epoch - 1
    job.total = tcfg.max_steps or job.step + left + epochs_left * job.steps_per_epoch


# -- checkpoints -------------------------------------------------------------------------------
def state_of(job):
    """This rank's part of the training state, as `dcp.save` writes it (every rank calls
    it): model and optimizer state keyed by parameter name, sharded as they live (each rank
    writes its shards); the scheduler, scaler, every rank's RNG state (gathered: a few
    numbers), the data position (global, with the global batch and world size it was
    reached with), step, best evaluation and config as non-tensor values."""
    model, optimizer = dcp.get_state_dict(job.model, job.optimizer)
    data = {**job.sampler.state_dict(), "global_batch": job.global_batch,
            "world_size": job.world.size, "batch_size": job.batch_size, "accum": job.accum}
    return {"model": model, "optimizer": optimizer,
            "scheduler": job.scheduler.state_dict() if job.scheduler is not None else None,
            "scaler": job.scaler.state_dict(), "rng": job.world.gather(dt.get_rng_state()),
            "data": data, "step": job.step, "best": job.best, "config": job.cfg.to_dict()}


def load_state(job, path):
    """The training state of the checkpoint folder `path` for this rank: its values, and its
    model (and optimizer, unless the config replaced the optimizer's class) state read into
    this rank's shards at this world size and strategy, as `resume` takes it."""
    state = load_full(path)  # the values
    if _same(state.get("config") or {}, job.cfg, "optimizer"):
        state["model"], state["optimizer"] = dcp.get_state_dict(job.model, job.optimizer)
    else:
        state["model"] = dcp.get_model_state_dict(job.model)
    dcp.load({k: state[k] for k in ("model", "optimizer") if k in state}, checkpoint_id=path)
    return state


def resume(job, state, log=print):
    """Continue from a checkpoint's state, written on any world size: weights, optimizer,
    scheduler, scaler, step, the data position, the global batch and RNG streams. An
    optimizer or scheduler that the config replaced (trainer.resume_allow_changes) starts
    afresh instead of reading another class's state."""
    saved = state.get("config") or {}
    if "data" not in state:
        raise UsageError("the checkpoint has no data position (written by a dtrain before "
                         "elastic resumes); start a fresh run")
    if "optimizer" in state:
        dcp.set_state_dict(job.model, job.optimizer, model_state_dict=state["model"],
                           optim_state_dict=state["optimizer"])
    else:
        dcp.set_model_state_dict(job.model, state["model"])
        log(f"resume: optimizer {job.cfg.optimizer.name!r} replaces the checkpoint's; its state "
            "starts afresh")
    if job.scheduler is not None and state.get("scheduler") is not None:
        if _same(saved, job.cfg, "scheduler"):
            job.scheduler.load_state_dict(state["scheduler"])
        else:
            log("resume: the scheduler changed; it starts afresh")
    job.scaler.load_state_dict(state["scaler"])
    job.step = state["step"]
    job.best = dict(state.get("best") or {})
    data = state["data"]
    job.sampler.load_state_dict(data)
    if (data["world_size"], data["global_batch"]) != (job.world.size, job.global_batch):
        _reshard_batch(job, data, saved, log)
    _schedule(job)
    _restore_rng(job, state["rng"], log)


def _reshard_batch(job, data, saved_cfg, log):
    """The per-rank batch and accumulation after a checkpoint of another world size or
    global batch: the checkpoint's global batch kept (trainer.elastic_batch=global, unless
    the config changed data.batch_size or trainer.grad_accum_steps), or the config's per-rank
    batch (per_rank); said in the log."""
    head = f"resume: world size {data['world_size']} -> {job.world.size}: "
    target = data["global_batch"]
    was = ((saved_cfg.get("data") or {}).get("batch_size"),
           (saved_cfg.get("trainer") or {}).get("grad_accum_steps"))
    if job.cfg.trainer.elastic_batch == "per_rank":
        log(head + f"per-rank batch {job.batch_size} kept (trainer.elastic_batch=per_rank): "
            f"global batch {target} -> {job.global_batch}")
        return
    if was != (job.batch_size, job.accum):
        log(head + f"global batch {target} -> {job.global_batch} (data.batch_size or "
            "trainer.grad_accum_steps changed)")
        return
    job.batch_size, job.accum = split_global_batch(target, job.world.size, job.batch_size,
                                                   job.accum)
    changes = [f"{what} {a} -> {b}" for what, a, b in [
        ("per-rank batch", data["batch_size"], job.batch_size),
        ("gradient accumulation", data["accum"], job.accum)] if a != b]
    changes = ", ".join(changes) or f"per-rank batch {job.batch_size}"
    kept = "kept" if job.global_batch == target else \
        f"-> {job.global_batch}: it does not split evenly over {job.world.size} ranks"
    log(head + f"{changes} (global {target} {kept})")


def split_global_batch(target, world, batch_size, accum):
    """(per-rank batch, accumulation) for a global batch of `target` samples on `world` ranks,
    from a config's (batch_size, accum): the per-rank batch kept and the accumulation
    adjusted when that is exact (the same memory per rank), else the accumulation kept and
    the per-rank batch adjusted (rounded up when `target` does not split evenly)."""
    if target % (world * batch_size) == 0:
        return batch_size, target // (world * batch_size)
    return math.ceil(target / (world * accum)), accum


def rng_seed(seed, step, rank):
    """The seed of rank `rank`'s RNG streams when a run continues at `step` on another
    world size: a function of (seed, step, rank) only."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0])


def _restore_rng(job, states, log):
    """Every rank's RNG state back when the world size is the checkpoint's (the run goes on
    bit for bit), else streams seeded by `rng_seed`."""
    if len(states) == job.world.size:
        dt.set_rng_state(states[job.world.rank])
        return
    dt.manual_seed(rng_seed(job.cfg.experiment.seed, job.step, job.world.rank))
    log(f"resume: each rank's RNG streams derived from (seed {job.cfg.experiment.seed}, "
        f"step {job.step}, rank)")


def _same(saved_cfg, cfg, section):
    """Whether the checkpoint's config names the same optimizer/scheduler class."""
    old = (saved_cfg.get(section) or {}).get("name")
    new = getattr(cfg, section).name
    table = registry.OPTIMIZERS if section == "optimizer" else registry.SCHEDULERS
    return old is None or registry.lookup(table, old) is registry.lookup(table, new)


def save_checkpoint(job, log):
    """Write the state, every rank its shards (refused when a parameter is non-finite on
    any rank: it would rotate good checkpoints out). Returns the path, or None."""
    job.saved_step = job.step
    finite = all(bool(dt.isfinite(p).all()) for p in job.model.parameters())
    if job.world.sum([0.0 if finite else 1.0])[0]:
        log(f"step {job.step}: not writing a checkpoint: the model has non-finite parameters")
        return None
    path = write_checkpoint(job, state_of(job))
    if job.world.size > 1:
        dist.barrier()  # listed by rank 0
    return path


# The one pair of functions that knows how the trainer's checkpoints are stored: a folder
# per step, written by every rank through dcp (rundir.Checkpoints).
def write_checkpoint(job, state):
    """Store this rank's `state` as this run's checkpoint of job.step; returns its path."""
    return Checkpoints(job.run_dir).save(state, job.step, job.cfg.trainer.keep_last,
                                         lister=job.world.rank == 0)


def read_checkpoint(job, log):
    """(state, path, own): this run's newest complete checkpoint that loads (own: True; one
    that fails to load on any rank, e.g. a corrupted shard, is reported and the previous one
    tried), else trainer.resume's checkpoint (a new run branching from it), else (None,
    None, False)."""
    for entry in reversed(Checkpoints(job.run_dir).entries()):
        path = job.run_dir / entry["file"]
        try:
            return _load_everywhere(job, path), path, True
        except RuntimeError as err:
            log(f"skipping unreadable checkpoint {path}: {err}")
    path = job.cfg.trainer.resume_path
    if path is None:
        return None, None, False
    return _load_everywhere(job, path), path, False


def _load_everywhere(job, path):
    """`load_state`, or a RuntimeError on every rank when it failed on any (each rank reads
    its own pieces, so a corrupted one fails on the ranks that read it)."""
    try:
        state, error = load_state(job, path), None
    except (OSError, RuntimeError, KeyError, ValueError) as err:
        state, error = None, f"{type(err).__name__}: {err}"
    errors = [e for e in job.world.gather(error) if e]
    if errors:
        raise RuntimeError(errors[0])
    return state


# -- one step -------------------------------------------------------------------------------------
def _loss(loss_fn, out, y, task):
    if task == "lm":
        return loss_fn(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    return loss_fn(out, y)


def epoch_steps(job):
    """This rank's part of the rest of the epoch, step by step: (micro-batches, count), where
    count is the step's samples over all ranks (the next `global_batch` of the global order,
    fewer in the epoch's last step) and the micro-batches are this rank's share of them
    (round robin), `batch_size` each, padded with empty ones to rank 0's number, so that
    every rank runs as many forwards."""
    mine, world = list(job.sampler), job.world.size
    per_rank = job.batch_size * job.accum
    rest = len(job.train_ds) - job.sampler.start
    steps = []
    for s in range(math.ceil(rest / job.global_batch)):
        count = min(job.global_batch, rest - s * job.global_batch)
        share = mine[s * per_rank:(s + 1) * per_rank]
        micro = [share[i:i + job.batch_size] for i in range(0, len(share), job.batch_size)]
        micro += [[]] * (math.ceil(math.ceil(count / world) / job.batch_size) - len(micro))
        steps.append((micro, count))
    return steps


def forward_backward(job, micro_batches, count, loss_fn):
    """Forward and backward over this rank's micro-batches (x, y, real) of one optimizer step
    (gradients accumulated locally, reduced across ranks on the last). `loss_fn` sums; each
    sample's loss is weighted world/count, so that the ranks' averaged gradient is the mean
    over the step's `count` samples however they were split; a padding micro-batch (real:
    False) weighs 0. Returns this rank's mean loss (0 on a rank that only padded)."""
    device, amp = job.world.device, job.cfg.trainer.amp
    job.optimizer.zero_grad()
    total, samples = 0.0, 0
    for i, (x, y, real) in enumerate(micro_batches):
        x, y = x.to(device), y.to(device)
        last = i == len(micro_batches) - 1
        per_sample = y[0].numel()  # tokens of a sequence (lm), else 1
        weight = job.world.size / (count * per_sample) if real else 0.0
        ddp = isinstance(job.wrapped, dist.DistributedDataParallel)
        with job.wrapped.no_sync() if ddp and not last else contextlib.nullcontext():
            with dt.autocast(device.type, enabled=amp):
                loss = _loss(loss_fn, job.wrapped(x), y, job.task)
            job.scaler.scale(loss * weight).backward()
        if real:
            total += loss.item()
            samples += y.numel()
    strategy.reduce_gradients(job.optimizer)
    return total / samples if samples else 0.0


def grad_norm(job):
    """The global gradient norm (clipped to trainer.clip_grad_norm when set), or None where
    it is not needed (no clipping and non-finite checks off, or AMP, whose scaler skips
    non-finite steps itself)."""
    tcfg = job.cfg.trainer
    params = [p for p in job.model.parameters() if p.grad is not None]
    if tcfg.clip_grad_norm:
        job.scaler.unscale_(job.optimizer)
    elif tcfg.on_nonfinite == "ignore" or tcfg.amp:
        return None
    norm = strategy.grad_norm(params, job.optimizer, job.cfg, job.world)
    if tcfg.clip_grad_norm:
        nn.utils.clip_grads_with_norm_(params, tcfg.clip_grad_norm, norm)
    return norm


def first_nonfinite(loss, norm):
    """The name of the first non-finite value of a step ("loss", "grad_norm"), or None."""
    if not math.isfinite(loss):
        return "loss"
    if norm is not None and not math.isfinite(norm):
        return "grad_norm"
    return None


# -- evaluation ---------------------------------------------------------------------------------
def evaluate(job, dataset, loss_fn):
    """(loss, accuracy, count) over `dataset`, each sample counted once across ranks."""
    world, model = job.world, job.model
    model.eval()
    batch_size = job.cfg.data.eval_batch_size or job.cfg.data.batch_size
    loader = DataLoader(dataset, batch_size=batch_size,
                        sampler=ResumableDistributedSampler(dataset, world.size, world.rank,
                                                            shuffle=False))  # no padding
    batches = loader
    if strategy.sharded(job.cfg, world):  # each forward gathers parameters on every rank
        batches = _even(loader, dataset, math.ceil(len(range(0, len(dataset), world.size)) /
                                                   batch_size))
    total_loss = correct = count = 0.0
    with dt.no_grad():
        for x, y in batches:
            x, y = x.to(world.device), y.to(world.device)
            out = model(x)
            n = y.numel()
            if n == 0:  # a padding batch of _even
                continue
            total_loss += _loss(loss_fn, out, y, job.task).item() * n
            correct += (out.argmax(-1) == y).sum().item()
            count += n
    total_loss, correct, count = world.sum([total_loss, correct, count])
    model.train()
    return total_loss / max(count, 1), correct / max(count, 1), int(count)


def _even(loader, dataset, count):
    """`loader`'s batches, then padding batches up to `count` (one sample of `dataset`, no
    targets), so that every rank runs as many forwards."""
    yield from loader
    if len(loader) < count:
        x, y = next(iter(DataLoader(dataset, batch_size=1)))
        for _ in range(count - len(loader)):
            yield x, y[:0]


# -- stopping ----------------------------------------------------------------------------------
class StopFlags:
    """Stop signals only set a flag here; `agree` turns the flags of every rank into one
    decision at a step boundary (one all-reduce per step)."""

    def __init__(self):
        self.signal = None
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._set)

    def _set(self, signum, frame):
        self.signal = self.signal or signal.Signals(signum)

    def agree(self, world, nonfinite):
        """(stop, nonfinite) as decided by all ranks: any rank's flag counts for all."""
        votes = [1.0 if self.signal else 0.0, 1.0 if nonfinite else 0.0]
        if world.size > 1:
            votes = world.sum(votes)
        return votes[0] > 0, votes[1] > 0


# -- the loop -------------------------------------------------------------------------------------
@dataclass
class Outcome:
    code: ExitCode
    reason: str  # "completed", "target accuracy reached", "stopped by SIGTERM", ...
    checkpoint: Path | None = None


def fit(job, flags, metrics, progress, log):
    """Train from job.step to job.total; returns an Outcome."""
    tcfg, world = job.cfg.trainer, job.world
    loss_fn, train_loss = nn.CrossEntropyLoss(), nn.CrossEntropyLoss(reduction="sum")
    n = len(job.train_ds)
    start, seen = time.monotonic(), 0
    checkpoint = None
    while job.step < job.total:
        if job.sampler.start == n:
            job.sampler.set_epoch(job.sampler.epoch + 1)
        epoch = job.sampler.epoch
        steps = epoch_steps(job)
        # a padding micro-batch loads sample 0, which weighs nothing
        loader = DataLoader(job.train_ds, num_workers=job.cfg.data.num_workers,
                            batch_sampler=[m or [0] for micro, _ in steps for m in micro])
        job.wrapped.train()
        batches = iter(loader)
        for micro, count in steps:
            if job.step >= job.total:
                break
            group = [(x, y, bool(m)) for m, (x, y) in zip(micro, batches)]
            loss = forward_backward(job, group, count, train_loss)
            norm = grad_norm(job)
            bad = first_nonfinite(loss, norm) if tcfg.on_nonfinite != "ignore" else None
            stop, any_bad = flags.agree(world, bad)
            if any_bad and tcfg.on_nonfinite == "stop":
                bad = bad or "loss or gradient norm on another rank"
                metrics.write(step=job.step + 1, epoch=epoch, split="train", loss=loss,
                              grad_norm=norm, elapsed_s=time.monotonic() - start)
                log(f"non-finite {bad} at step {job.step + 1} (epoch {epoch}): loss={loss}, "
                    f"grad_norm={norm}; stopping without a checkpoint "
                    "(trainer.on_nonfinite=stop; skip_step or ignore to go on)", err=True)
                return Outcome(ExitCode.NONFINITE,
                               f"stopped on a non-finite {bad} in step {job.step + 1}")
            if any_bad:  # skip_step: drop this step's gradients, keep the data position
                job.optimizer.zero_grad()
                log(f"step {job.step + 1}: non-finite {bad or 'value on another rank'}: step "
                    "skipped (trainer.on_nonfinite=skip_step)", err=True)
            else:
                job.scaler.step(job.optimizer)
            job.scaler.update()
            job.step += 1
            job.sampler.advance(count)
            if tcfg.log_samples:
                _log_samples(job, epoch, micro)
            seen += count
            if job.scheduler is not None and job.cfg.scheduler.interval == "step":
                job.scheduler.step()
            elapsed = time.monotonic() - start
            rate = seen / max(elapsed, 1e-9)
            progress.update(job.step, epoch, loss, rate)
            if job.step % tcfg.log_every == 0 or job.step == job.total:
                metrics.write(step=job.step, epoch=epoch, split="train", loss=loss,
                              grad_norm=norm, lr=job.optimizer.param_groups[0]["lr"],
                              samples_per_s=rate, elapsed_s=elapsed)
            end_of_epoch = job.sampler.start == n
            due = job.step % tcfg.eval_every == 0 if tcfg.eval_every else end_of_epoch
            if not stop and (due or job.step == job.total):
                acc = _evaluate_and_record(job, loss_fn, metrics, epoch, start, log)
                if tcfg.target_accuracy is not None and acc >= tcfg.target_accuracy:
                    log(f"target accuracy {tcfg.target_accuracy} reached at step {job.step} "
                        f"({job.eval_split} accuracy {acc:.4f})")
                    return _finish(job, "target accuracy reached", checkpoint, metrics, log)
            if end_of_epoch and job.scheduler is not None and \
                    job.cfg.scheduler.interval == "epoch" and not _plateau(job.scheduler):
                job.scheduler.step()
            # after the epoch's end (its scheduler step): a resume starts the next epoch
            if stop or tcfg.checkpoint_every and job.step % tcfg.checkpoint_every == 0:
                checkpoint = save_checkpoint(job, log) or checkpoint
            if stop:
                return _stopped(job, flags.signal, checkpoint, log)
            if end_of_epoch:
                break
    return _finish(job, "completed", checkpoint, metrics, log)


def _log_samples(job, epoch, micro):
    """Append the indices this rank trained on in step job.step (trainer.log_samples)."""
    path = job.run_dir / "samples" / f"rank{job.world.rank}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps({"step": job.step, "epoch": epoch,
                            "indices": [i for m in micro for i in m]}) + "\n")


def _plateau(scheduler):
    return isinstance(scheduler, dt.optim.lr_scheduler.ReduceLROnPlateau)


def _record(job, split, epoch, loss_fn, metrics, log, **extra):
    """Evaluate `split` ("val" or "test"), write and print it; returns (loss, accuracy)."""
    dataset = job.val_ds if split == "val" else job.test_ds
    loss, acc, count = evaluate(job, dataset, loss_fn)
    metrics.write(step=job.step, epoch=epoch, split=split, loss=loss, accuracy=acc, **extra)
    log(f"step {job.step}: {split} loss {loss:.4f} accuracy {acc:.4f} ({count} samples)")
    job.last_eval = {"step": job.step, "split": split, "loss": loss, "accuracy": acc}
    return loss, acc


def _evaluate_and_record(job, loss_fn, metrics, epoch, start, log):
    """A training-time evaluation: it also tracks the best one and steps a plateau
    scheduler."""
    loss, acc = _record(job, job.eval_split, epoch, loss_fn, metrics, log,
                        elapsed_s=time.monotonic() - start)
    if not job.best or acc > job.best["accuracy"]:
        job.best = dict(job.last_eval)
    if job.scheduler is not None and _plateau(job.scheduler):
        job.scheduler.step(loss)
    return acc


def _finish(job, reason, checkpoint, metrics, log):
    """The final checkpoint (unless this step has one) and, with a validation split, the
    test set's figures."""
    if job.saved_step != job.step:  # the same decision on every rank
        checkpoint = save_checkpoint(job, log) or checkpoint
    if job.val_ds is not None:
        _record(job, "test", job.sampler.epoch, nn.CrossEntropyLoss(), metrics, log)
    return Outcome(ExitCode.OK, reason, checkpoint)


def _stopped(job, signum, checkpoint, log):
    """A stop signal (from `dtrain launch`, which requeues a preempted Slurm job itself, or
    Slurm's SIGUSR2 sent to the ranks) ended the run at a checkpoint."""
    name = signal.Signals(signum).name if signum else "a signal on another rank"
    if signum == signal.SIGUSR2:
        log(f"preempted at step {job.step}: checkpoint written ({name})")
    else:
        log(f"stopped by {name} at step {job.step}: checkpoint written")
    return Outcome(ExitCode.OK, f"stopped by {name}", checkpoint)


# -- the rank's entry point ---------------------------------------------------------------------
def run_dir_of(cfg):
    """This run's folder: output_dir/<DTRAIN_RUN_ID> (dtrain launch and job scripts set it)."""
    run_id = os.environ.get(RUN_ID_ENV)
    if not run_id:
        raise UsageError(f"{RUN_ID_ENV} is not set: start the trainer with `dtrain launch "
                         "CONFIG.yaml`, or export it in a job script (it names the run folder)")
    return Path(cfg.experiment.output_dir).resolve() / run_id


def start(config_path, rank):
    """The Job of the resolved config at `config_path` on this rank, its process group up
    and its run folder made (raises UsageError/ConfigError)."""
    cfg, _ = cfgmod.load_config(config_path)
    run_dir = run_dir_of(cfg)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1:
        dist.init_process_group(cfg.distributed.backend, timeout=cfg.distributed.timeout_s)
    world = World(rank, size, device_for(cfg.trainer.device,
                                         int(os.environ.get("LOCAL_RANK", "0"))))
    job = build(cfg, world, run_dir)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / "config.yaml").exists():
            (run_dir / "config.yaml").write_text(cfgmod.dump(cfg))
        link_latest(run_dir)
    return job


def restore(job, log):
    """Resume from this run's newest checkpoint (a restart, or a continued run), else from
    trainer.resume's checkpoint folder (a new run branching from it); returns the checkpoint's
    path, or None for a fresh start. Raises UsageError when it is past the schedule."""
    state, path, own = read_checkpoint(job, log)
    if state is None:
        return None
    resume(job, state, log)
    job.saved_step = job.step if own else None
    if job.step > job.total:
        raise UsageError(f"nothing to train: {path} is at step {job.step}, past the "
                         f"{job.total} steps this config asks for (raise trainer.epochs or "
                         "trainer.max_steps)")
    log(f"resumed from step {job.step} of {job.total} ({path})")
    return path


def main(config_path):
    """Train the resolved config at `config_path` on this rank; returns an ExitCode."""
    rank = int(os.environ.get("RANK", "0"))
    progress = None

    def log(text, err=False):
        """Rank 0's messages (through the progress bar while it is shown)."""
        if rank != 0:
            return
        if progress is not None and not err:
            progress.write(text)
        else:
            print(text, file=sys.stderr if err else sys.stdout, flush=True)
    try:
        flags = StopFlags()
        job = start(config_path, rank)
        world = job.world
        if world.size > 1:
            nodes = [None] * world.size
            dist.all_gather_object(nodes, node_name())
            log(f"world: {world.size} ranks on nodes {sorted(set(nodes))}")
        path = restore(job, log)
        metrics = MetricsWriter(job.run_dir, enabled=rank == 0,
                                through_step=job.step if path else None,
                                tensorboard=job.cfg.trainer.tensorboard)
    except (UsageError, cfgmod.ConfigError) as err:
        log(f"dtrain trainer: {err}", err=True)
        return ExitCode.USAGE
    progress = Progress(job.total, job.steps_per_epoch,
                        enabled=rank == 0 and job.cfg.trainer.progress)
    began = time.monotonic()
    try:
        outcome = fit(job, flags, metrics, progress, log) if job.step < job.total else \
            _finish(job, "already complete", path, metrics, log)
    finally:
        progress.close()
        progress = None
        metrics.close()
    if rank == 0:
        _summary(job, outcome, time.monotonic() - began, log)
    if world.size > 1:
        dist.destroy_process_group()
    return outcome.code


def _summary(job, outcome, wall, log):
    """The closing lines: why it ended, the last and best evaluation, the checkpoint, time."""
    lines = [f"summary: {outcome.reason}; {job.step}/{job.total} steps in {wall:.2f} s; run "
             f"directory {job.run_dir}"]
    if job.last_eval:
        e = job.last_eval
        lines.append(f"  last {e['split']}: loss {e['loss']:.4f} accuracy {e['accuracy']:.4f}"
                     f" (step {e['step']})")
    if job.best:
        b = job.best
        lines.append(f"  best {b['split']}: accuracy {b['accuracy']:.4f} at step {b['step']}")
    if outcome.checkpoint is not None:
        lines.append(f"  checkpoint: {outcome.checkpoint}")
    log("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
