"""The trainer each rank runs for a config: model, data, optimizer and scheduler from the
registries; DDP when there are several ranks; evaluation that counts every test sample
exactly once; metrics, atomic checkpoints (newest K kept) and exact resume."""
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

import dtrain as dt
from dtrain import distributed as dist
from dtrain import nn
from dtrain.data import DataLoader, DistributedSampler
from dtrain.data.sampler import Sampler
from dtrain.launcher import registry
from dtrain.launcher.config import ConfigError, check_kwargs
from dtrain.launcher.metrics import MetricsWriter
from dtrain.launcher.models import MODELS


def check_config(cfg, where):
    """Name checks that need the registries (run before any rank starts)."""
    def at(path):
        return where.get(path) or path
    model = cfg["model"]
    if model["name"] is not None and model["name"] not in MODELS:
        raise ConfigError(f"{at('model.name')}: model.name: unknown model {model['name']!r}; "
                          f"built-in models: {', '.join(MODELS)}")
    if cfg["data"]["dataset"] not in registry.DATASETS:
        raise ConfigError(f"{at('data.dataset')}: data.dataset: unknown data set "
                          f"{cfg['data']['dataset']!r}; built-in: "
                          f"{', '.join(registry.DATASETS)}")
    for i, spec in enumerate(cfg["data"]["transforms"]):
        name = spec if isinstance(spec, str) else (next(iter(spec)) if isinstance(spec, dict)
                                                   and len(spec) == 1 else None)
        if name not in registry.TRANSFORMS:
            raise ConfigError(f"{at(f'data.transforms.{i}')}: data.transforms.{i}: unknown "
                              f"transform {spec!r}; built-in: "
                              f"{', '.join(registry.TRANSFORMS)}")
    for section, table in (("optimizer", registry.OPTIMIZERS),
                           ("scheduler", registry.SCHEDULERS)):
        sec = cfg.get(section)
        if sec is None:
            continue
        try:
            cls = registry.lookup(table, sec["name"])
        except KeyError:
            raise ConfigError(f"{at(section + '.name')}: {section}.name: unknown {section} "
                              f"{sec['name']!r}; built-in: {', '.join(table)}") from None
        check_kwargs(sec, cls, section, where)


# -- distributed helpers -----------------------------------------------------------------
class _Resume(Sampler):
    """A sampler's indices from position `skip` on (resuming in the middle of an epoch)."""

    def __init__(self, sampler, skip):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        for i, idx in enumerate(self.sampler):
            if i >= self.skip:
                yield idx

    def __len__(self):
        return max(len(self.sampler) - self.skip, 0)


class _Shard(Sampler):
    """Indices rank, rank + world, ...: every sample exactly once over the ranks (no
    padding, unlike DistributedSampler), for evaluation."""

    def __init__(self, n, rank, world):
        self.indices = range(rank, n, world)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def _sum_over_ranks(values, world):
    t = dt.tensor(np.asarray(values, dtype=np.float64))
    if world > 1:
        dist.all_reduce(t)
    return t.tolist()


# -- checkpoints ------------------------------------------------------------------------------
def _checkpoints(run_dir):
    return sorted(Path(run_dir).glob("checkpoint_*.dtrain"))


def _save_checkpoint(run_dir, state, step, keep_last):
    path = Path(run_dir) / f"checkpoint_{step:09d}.dtrain"
    dt.save(state, path)
    for old in _checkpoints(run_dir)[:-keep_last]:
        old.unlink(missing_ok=True)


def _load_checkpoint(run_dir, resume):
    """The newest complete checkpoint (`auto`), a given path, or None."""
    if resume is None:
        return None
    if resume != "auto":
        return dt.load(resume)
    for path in reversed(_checkpoints(run_dir)):
        try:
            return dt.load(path)
        except Exception as err:  # a torn or corrupt file: fall back to the previous one
            print(f"skipping unreadable checkpoint {path}: {err}", file=sys.stderr)
    return None


# -- progress --------------------------------------------------------------------------------
class Progress:
    """One status line on rank 0: step/total, loss, samples/s, ETA."""

    def __init__(self, total, enabled):
        self.total, self.enabled = total, enabled
        self.tty = enabled and sys.stdout.isatty()
        self.start = time.monotonic()

    def update(self, step, loss, rate, done):
        if not self.enabled:
            return
        eta = (self.total - step) / max(rate, 1e-9) if self.total else 0
        bar = f"step {step}/{self.total} loss {loss:.4f} {rate:,.0f} samples/s ETA {eta:.0f}s"
        if self.tty:
            sys.stdout.write("\r" + bar + (" " * 10) + ("\n" if done else ""))
            sys.stdout.flush()
        elif done or step % max(1, self.total // 10) == 0:
            print(bar, flush=True)


# -- the run ------------------------------------------------------------------------------------
class _Preempted(Exception):
    pass


def main(config_path):
    cfg = yaml.safe_load(Path(config_path).read_text())
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    exp, tcfg, dcfg = cfg["experiment"], cfg["trainer"], cfg["distributed"]
    run_dir = Path(exp["output_dir"])
    if world > 1:
        dist.init_process_group(dcfg["backend"], timeout=dcfg["timeout_s"])
        nodes = [None] * world
        dist.all_gather_object(nodes, os.environ.get("SLURMD_NODENAME") or socket.gethostname())
        if rank == 0:
            print(f"world: {world} ranks on nodes {sorted(set(nodes))}", flush=True)
    device = _device(tcfg["device"], int(os.environ.get("LOCAL_RANK", "0")))
    dt.manual_seed(exp["seed"])
    train_ds, test_ds, in_shape, num_classes, task = registry.build_datasets(cfg["data"],
                                                                             exp["seed"])
    model = _model(cfg["model"], in_shape, num_classes).to(device)
    optimizer = registry.lookup(registry.OPTIMIZERS, cfg["optimizer"]["name"])(
        model.parameters(), **{k: v for k, v in cfg["optimizer"].items() if k != "name"})
    scheduler, interval = _scheduler(cfg.get("scheduler"), optimizer)
    scaler = dt.amp.GradScaler(device.type, enabled=tcfg["amp"])
    wrapped = dist.DistributedDataParallel(model, bucket_cap_mb=dcfg["bucket_cap_mb"]) \
        if world > 1 else model

    batch = cfg["data"]["batch_size"]
    sampler = DistributedSampler(train_ds, world, rank, shuffle=True, seed=exp["seed"])
    steps_per_epoch = math.ceil(len(sampler) / batch)
    total = tcfg["max_steps"] or tcfg["epochs"] * steps_per_epoch

    state = _load_checkpoint(run_dir, tcfg["resume"])
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        dt.set_rng_state(state["rng"])
        step = state["step"]
        if rank == 0:
            print(f"resumed from step {step} of {total}", flush=True)

    preempted = []
    signal.signal(signal.SIGUSR2, lambda *_: preempted.append(True))
    metrics = MetricsWriter(run_dir, enabled=rank == 0)
    progress = Progress(total, rank == 0 and tcfg["progress"])
    loss_fn = nn.CrossEntropyLoss()
    start, seen = time.monotonic(), 0

    def checkpoint():
        if rank == 0:
            _save_checkpoint(run_dir, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict(), "rng": dt.get_rng_state(), "step": step,
                "config": cfg}, step, tcfg["keep_last"])
        if world > 1:
            dist.barrier()

    try:
        while step < total:
            epoch, pos = divmod(step, steps_per_epoch)
            sampler.set_epoch(epoch)
            loader = DataLoader(train_ds, batch_size=batch, num_workers=cfg["data"]["num_workers"],
                                sampler=_Resume(sampler, pos * batch) if pos else sampler)
            wrapped.train()
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                with dt.autocast(device.type, enabled=tcfg["amp"]):
                    out = wrapped(x)
                    loss = _loss(loss_fn, out, y, task)
                optimizer.zero_grad()
                scaler.scale(loss).backward()
                if tcfg["clip_grad_norm"]:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), tcfg["clip_grad_norm"])
                scaler.step(optimizer)
                scaler.update()
                step += 1
                seen += x.shape[0] * world
                if scheduler is not None and interval == "step":
                    scheduler.step()
                rate = seen / (time.monotonic() - start)
                progress.update(step, loss.item(), rate, step == total)
                if step % tcfg["log_every"] == 0 or step == total:
                    metrics.write(step=step, epoch=epoch, split="train", loss=loss.item(),
                                  lr=optimizer.param_groups[0]["lr"], samples_per_s=rate,
                                  elapsed_s=time.monotonic() - start)
                if tcfg["checkpoint_every"] and step % tcfg["checkpoint_every"] == 0:
                    checkpoint()
                if _stop_requested(preempted, world):
                    raise _Preempted
                end_of_epoch = step % steps_per_epoch == 0
                eval_now = (step % tcfg["eval_every"] == 0) if tcfg["eval_every"] else \
                    end_of_epoch
                if eval_now or step == total:
                    _evaluate(wrapped, test_ds, cfg, rank, world, device, task, loss_fn,
                              metrics, step, epoch, start)
                if end_of_epoch and scheduler is not None and interval == "epoch":
                    _epoch_step(scheduler)
                if step >= total:
                    break
    except _Preempted:
        checkpoint()
        if rank == 0:
            print(f"preempted at step {step}: checkpoint written", flush=True)
            job = os.environ.get("SLURM_JOB_ID")
            if job:
                subprocess.run(["scontrol", "requeue", job], check=False)
        return 0
    checkpoint()
    if world > 1:
        dist.destroy_process_group()
    return 0


def _stop_requested(flags, world):
    """Every rank stops at the same step once any rank got the preemption signal."""
    if world == 1:
        return bool(flags)
    return _sum_over_ranks([1.0 if flags else 0.0], world)[0] > 0


def _device(name, local_rank):
    if name == "auto":
        name = "cuda" if dt.cuda.is_available() else "cpu"
    if name == "cuda":
        return dt.device("cuda", local_rank % dt.cuda.device_count())
    return dt.device(name)


def _model(mcfg, in_shape, num_classes):
    if mcfg["name"] is not None:
        return MODELS[mcfg["name"]](in_shape, num_classes, **mcfg["args"])
    module, _, attr = mcfg["target"].partition(":")
    import importlib

    factory = getattr(importlib.import_module(module), attr)
    return factory(**mcfg["args"])


def _scheduler(scfg, optimizer):
    if scfg is None:
        return None, "epoch"
    cls = registry.lookup(registry.SCHEDULERS, scfg["name"])
    kwargs = {k: v for k, v in scfg.items() if k not in ("name", "interval")}
    return cls(optimizer, **kwargs), scfg["interval"]


def _epoch_step(scheduler):
    if isinstance(scheduler, dt.optim.lr_scheduler.ReduceLROnPlateau):
        return  # stepped with the validation loss in _evaluate
    scheduler.step()


def _loss(loss_fn, out, y, task):
    if task == "lm":
        return loss_fn(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    return loss_fn(out, y)


def _evaluate(model, test_ds, cfg, rank, world, device, task, loss_fn, metrics, step, epoch,
              start):
    """Loss and accuracy over the test set, each sample counted exactly once across ranks."""
    model.eval()
    loader = DataLoader(test_ds, batch_size=cfg["data"]["eval_batch_size"] or
                        cfg["data"]["batch_size"], sampler=_Shard(len(test_ds), rank, world))
    total_loss = correct = count = 0.0
    with dt.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out = model.module(x) if hasattr(model, "module") else model(x)
            n = y.numel()
            total_loss += _loss(loss_fn, out, y, task).item() * n
            correct += (out.argmax(-1) == y).sum().item()
            count += n
    total_loss, correct, count = _sum_over_ranks([total_loss, correct, count], world)
    acc = correct / max(count, 1)
    metrics.write(step=step, epoch=epoch, split="test", loss=total_loss / max(count, 1),
                  accuracy=acc, elapsed_s=time.monotonic() - start)
    if rank == 0:
        print(f"step {step}: test loss {total_loss / max(count, 1):.4f} accuracy {acc:.4f} "
              f"({int(count)} samples)", flush=True)
    model.train()
    return acc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
