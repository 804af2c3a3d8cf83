"""Checks a config must pass before any rank starts, beyond the schema's types and values:
the names it gives (models, data sets, transforms, optimizers, schedulers and their
keywords), `model.target`'s import, the device, TensorBoard's writer, the resume path and a writable
output folder. Every failure is a `ConfigError` naming `file:line: key: problem` (exit code 2)."""
import importlib.util
import os
import traceback
from pathlib import Path

import dtrain as dt
from dtrain.launcher import registry
from dtrain.launcher.config import ConfigError, check_kwargs
from dtrain.launcher.models import MODELS, import_target


def _error(where, key, message):
    """`origin: key: message`, the origin being where `key` was set (file:line, or the
    command-line override)."""
    return ConfigError(f"{where.get(key) or key}: {key}: {message}")


def check_names(cfg, where):
    """Registry names and keyword arguments (the `dtrain config`, `slurm` and `launch` check)."""
    model = cfg.model
    if model.name is not None and model.name not in MODELS:
        raise _error(where, "model.name", f"unknown model {model.name!r}; built-in models: "
                                          f"{', '.join(MODELS)}")
    if cfg.data.dataset not in registry.DATASETS:
        raise _error(where, "data.dataset", f"unknown data set {cfg.data.dataset!r}; built-in: "
                                            f"{', '.join(registry.DATASETS)}")
    for i, spec in enumerate(cfg.data.transforms):
        name = spec if isinstance(spec, str) else (next(iter(spec)) if isinstance(spec, dict)
                                                   and len(spec) == 1 else None)
        if name not in registry.TRANSFORMS:
            raise _error(where, f"data.transforms.{i}", f"unknown transform {spec!r}; built-in: "
                                                        f"{', '.join(registry.TRANSFORMS)}")
    for section, table in (("optimizer", registry.OPTIMIZERS),
                           ("scheduler", registry.SCHEDULERS)):
        sec = getattr(cfg, section)
        if sec is None:
            continue
        try:
            cls = registry.lookup(table, sec.name)
        except KeyError:
            raise _error(where, f"{section}.name", f"unknown {section} {sec.name!r}; built-in: "
                                                   f"{', '.join(table)}") from None
        check_kwargs(sec.kwargs, cls, section, where)


def check_launch(cfg, where):
    """What `dtrain launch` checks on this machine before starting ranks: the model target
    imports, CUDA is there when asked for, tensorboardX with trainer.tensorboard, the output
    folder is writable."""
    target = cfg.model.target
    if target is not None:
        try:
            obj = import_target(target)
        except Exception as err:  # the user's module may raise anything while importing
            last = traceback.format_exception_only(type(err), err)[-1].strip()
            raise _error(where, "model.target", f"cannot import {target!r}: {last}") from None
        if not callable(obj):
            raise _error(where, "model.target", f"{target!r} is not callable")
    if cfg.trainer.device == "cuda" and not dt.cuda.is_available():
        raise _error(where, "trainer.device", "cuda asked for, but no CUDA GPU is visible here "
                                              "(CuPy absent or no device); use cpu or auto")
    if cfg.trainer.tensorboard and importlib.util.find_spec("tensorboardX") is None:
        raise _error(where, "trainer.tensorboard", "TensorBoard events need tensorboardX: pip "
                                                   "install 'dtrain[tensorboard]'")
    check_paths(cfg, where)


def check_paths(cfg, where):
    """A resume path that exists and a writable output folder (also before `dtrain slurm`
    submits: the job would fail on them after waiting in the queue)."""
    resume = cfg.trainer.resume_path
    if resume is not None and not resume.exists():
        raise _error(where, "trainer.resume", f"{cfg.trainer.resume}: no such checkpoint or "
                                              "run directory")
    check_output_dir(cfg, where)


def check_output_dir(cfg, where):
    """The output folder exists (made if missing) and is writable."""
    out = Path(cfg.experiment.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK | os.X_OK):
            raise PermissionError("not writable")
    except OSError as err:
        reason = err.strerror or str(err)
        raise _error(where, "experiment.output_dir", f"cannot write to {out}: {reason}") from None
