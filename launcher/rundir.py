"""Run directories and their checkpoints.

An experiment's `output_dir` holds one folder per run: `version_N` for each fresh launch (N
taken atomically, so concurrent launches never share one), or the name given by
`DTRAIN_RUN_ID` (Slurm jobs use `slurm-<job id>`, so a requeued job continues its own run).
`output_dir/latest` links to the newest run.

A checkpoint is a folder `checkpoint_<step>` written by every rank in parallel through
`dtrain.distributed.checkpoint` (each rank its own shards, no gather to rank 0); it is
complete once dcp's metadata file is committed, after every rank's data. A run's checkpoints
are listed, in write order, in its `checkpoints.json`; the run's checkpoints are the listed
ones that are complete (`Checkpoints.entries`, the one notion of "newest complete" that
rotation, resume and the elastic launcher share), so folders of other runs, stray files and
interrupted saves are never loaded, kept or deleted by mistake.
"""
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import dtrain as dt
import dtrain.distributed.checkpoint as dcp
from dtrain.distributed.checkpoint import metadata
from dtrain.launcher.config import ConfigError, config_changes

MANIFEST = "checkpoints.json"
RUN_ID_ENV = "DTRAIN_RUN_ID"


def is_complete(path):
    """Whether the folder `path` holds a complete checkpoint (dcp's metadata committed)."""
    return (Path(path) / metadata.NAME).is_file()


def load_full(path, sections=()):
    """A checkpoint's non-tensor values (step, config, data position, ...) and, for each
    section of `sections` (e.g. "model"), its tensors in full ({name: tensor}), read in this
    one process: for export, inspection and the checks made before ranks start."""
    meta = metadata.read(path)
    state = {k: v for k, v in meta["values"].items() if "." not in k}
    template = {section: {} for section in sections}
    for key, record in meta["tensors"].items():
        section, _, name = key.partition(".")
        if section in template:
            template[section][name] = dt.tensor(np.empty(record["shape"], record["dtype"]))
    if template:  # (the values alone need no second read of the metadata)
        dcp.load(template, checkpoint_id=path)
    return {**state, **template}


# -- checkpoints of one run ---------------------------------------------------------------------
class Checkpoints:
    """The checkpoints of the run in `run_dir`, oldest first."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self.manifest = self.run_dir / MANIFEST

    def _listed(self):
        try:
            return json.loads(self.manifest.read_text())["checkpoints"]
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError) as err:
            raise RuntimeError(f"{self.manifest} is unreadable ({err}); move it away to start "
                               "this run's checkpoint list anew") from None

    def entries(self, listed=None):
        """[{"file", "step", "time"}] of the run's complete checkpoints in write order ([]
        for a run without any), of `listed` when the caller has read the manifest."""
        return [e for e in (self._listed() if listed is None else listed)
                if is_complete(self.run_dir / e["file"])]

    def _write(self, entries):
        tmp = self.manifest.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"checkpoints": entries}, indent=1) + "\n")
        os.replace(tmp, self.manifest)

    def save(self, state, step, keep_last, lister=True):
        """Write `state` as this run's checkpoint of `step` (every rank calls it: `dcp.save`
        of each rank's `state`); then the `lister` rank lists it and deletes the oldest
        listed ones beyond `keep_last`. Returns its path."""
        name = f"checkpoint_{step:09d}"
        path = self.run_dir / name
        dcp.save(state, checkpoint_id=path)
        if lister:
            listed = self._listed()
            entries = [e for e in self.entries(listed) if e["file"] != name]
            entries.append({"file": name, "step": step, "time": time.time()})
            keep = entries[-keep_last:]
            self._write(keep)
            for e in listed:
                if e not in keep and e["file"] != name:
                    shutil.rmtree(self.run_dir / e["file"], ignore_errors=True)
        return path

    def newest(self):
        """The path of the newest complete checkpoint, or None."""
        entries = self.entries()
        return self.run_dir / entries[-1]["file"] if entries else None

    def newest_time(self):
        entries = self.entries()
        return entries[-1]["time"] if entries else None


# -- choosing the run directory of a launch -----------------------------------------------------
@dataclass(frozen=True)
class RunPlan:
    """Where a launch writes (`run_dir`, named `run_id`) and what it starts from: its own
    newest checkpoint when `continuing`, else the checkpoint folder `resume_from`, else fresh."""

    run_dir: Path
    run_id: str
    continuing: bool
    resume_from: Path | None


def runs(output_dir):
    """The run directories under `output_dir` (folders holding a config.yaml)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()
            and (p / "config.yaml").exists()]


def _new_version(output_dir):
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[8:]) for p in root.glob("version_*") if p.name[8:].isdigit()]
    n = max(taken, default=-1) + 1
    while True:
        try:
            (root / f"version_{n}").mkdir()  # exclusive: a concurrent launch takes the next
            return root / f"version_{n}"
        except FileExistsError:
            n += 1


def link_latest(run_dir):
    """Point `output_dir/latest` at `run_dir` (replaced atomically)."""
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, link)


def _newest_with_checkpoint(output_dir):
    timed = [(Checkpoints(r).newest_time(), r) for r in runs(output_dir)]
    timed = [(t, r) for t, r in timed if t is not None]
    return max(timed, key=lambda tr: tr[0])[1] if timed else None


def plan(cfg, environ=os.environ):
    """The RunPlan for a config that passed `checks.check_paths` (raises ConfigError, before
    any rank starts)."""
    output_dir = Path(cfg.experiment.output_dir).resolve()
    resume, path = cfg.trainer.resume, cfg.trainer.resume_path
    where = "trainer.resume"
    if environ.get(RUN_ID_ENV):
        run_dir = output_dir / environ[RUN_ID_ENV]
        if Checkpoints(run_dir).entries():
            return RunPlan(run_dir, run_dir.name, True, None)
        return RunPlan(run_dir, run_dir.name, False, path)
    if resume in ("auto", "latest"):
        found = _newest_with_checkpoint(output_dir)
        if found is not None:
            return RunPlan(found, found.name, True, None)
        if resume == "latest":
            raise ConfigError(f"{where}: latest: no run under {output_dir} has a checkpoint "
                              "to resume from (trainer.resume=auto starts fresh instead)")
    elif path is not None and path.is_dir() and not is_complete(path):
        if not Checkpoints(path).entries():
            raise ConfigError(f"{where}: {resume}: this run directory has no checkpoint "
                              f"(no {MANIFEST})")
        return RunPlan(path, path.name, True, None)
    run_dir = _new_version(output_dir)
    return RunPlan(run_dir, run_dir.name, False, path)


def check_resume(plan_, cfg_dict):
    """Refuse (ConfigError) to resume when keys that change the result differ from the config
    the checkpoint was written with, unless trainer.resume_allow_changes."""
    path = Checkpoints(plan_.run_dir).newest() if plan_.continuing else plan_.resume_from
    if path is None:
        if plan_.continuing:
            raise ConfigError(f"trainer.resume: {plan_.run_dir} has no complete checkpoint")
        return
    try:
        state = load_full(path)
    except (OSError, RuntimeError) as err:
        raise ConfigError(f"trainer.resume: {err}") from None
    changes = config_changes(state.get("config") or {}, cfg_dict)
    if changes and not cfg_dict["trainer"]["resume_allow_changes"]:
        raise ConfigError(
            f"trainer.resume: {path} was written with a different config; these keys change "
            "the result:\n  " + "\n  ".join(changes) + "\nstart a fresh run (trainer.resume="
            "null), or resume anyway with trainer.resume_allow_changes=true")
