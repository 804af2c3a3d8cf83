"""Checks a config must pass before any rank starts, beyond the schema's types and values:
the names it gives (models, data sets, transforms, optimizers, schedulers and their
keywords), `model.target`'s import, the device, the resume path and a writable output
folder. Every failure is a `ConfigError` naming `file:line: key: problem` (exit code 2)."""
import os
import traceback
from pathlib import Path

import dtrain as dt
from dtrain.launcher import registry
from dtrain.launcher.config import ConfigError, check_kwargs
from dtrain.launcher.models import MODELS, import_target


def check_names(cfg, where):
    """Registry names and keyword arguments (the `dtrain config`, `slurm` and `launch` check)."""
    def at(path):
        return where.get(path) or path
    model = cfg.model
    if model.name is not None and model.name not in MODELS:
        raise ConfigError(f"{at('model.name')}: model.name: unknown model {model.name!r}; "
                          f"built-in models: {', '.join(MODELS)}")
    if cfg.data.dataset not in registry.DATASETS:
        raise ConfigError(f"{at('data.dataset')}: data.dataset: unknown data set "
                          f"{cfg.data.dataset!r}; built-in: {', '.join(registry.DATASETS)}")
    for i, spec in enumerate(cfg.data.transforms):
        name = spec if isinstance(spec, str) else (next(iter(spec)) if isinstance(spec, dict)
                                                   and len(spec) == 1 else None)
        if name not in registry.TRANSFORMS:
            raise ConfigError(f"{at(f'data.transforms.{i}')}: data.transforms.{i}: unknown "
                              f"transform {spec!r}; built-in: {', '.join(registry.TRANSFORMS)}")
    for section, table in (("optimizer", registry.OPTIMIZERS),
                           ("scheduler", registry.SCHEDULERS)):
        sec = getattr(cfg, section)
        if sec is None:
            continue
        try:
            cls = registry.lookup(table, sec.name)
        except KeyError:
            raise ConfigError(f"{at(section + '.name')}: {section}.name: unknown {section} "
                              f"{sec.name!r}; built-in: {', '.join(table)}") from None
        check_kwargs(sec.kwargs, cls, section, where)


def check_launch(cfg, where):
    """What `dtrain launch` checks on this machine before starting ranks: the model target
    imports, CUDA is there when asked for, the output folder is writable."""
    def at(path):
        return where.get(path) or path
    target = cfg.model.target
    if target is not None:
        try:
            obj = import_target(target)
        except Exception as err:  # the user's module may raise anything while importing
            last = traceback.format_exception_only(type(err), err)[-1].strip()
            raise ConfigError(f"{at('model.target')}: model.target: cannot import {target!r}: "
                              f"{last}") from None
        if not callable(obj):
            raise ConfigError(f"{at('model.target')}: model.target: {target!r} is not "
                              "callable")
    if cfg.trainer.device == "cuda" and not dt.cuda.is_available():
        raise ConfigError(f"{at('trainer.device')}: trainer.device: cuda asked for, but no "
                          "CUDA GPU is visible here (CuPy absent or no device); use cpu or auto")
    check_paths(cfg, where)


def check_paths(cfg, where):
    """A resume path that exists and a writable output folder (also before `dtrain slurm`
    submits: the job would fail on them after waiting in the queue)."""
    def at(path):
        return where.get(path) or path
    resume = cfg.trainer.resume
    if resume not in (None, "auto", "latest") and not Path(resume).expanduser().exists():
        raise ConfigError(f"{at('trainer.resume')}: trainer.resume: {resume}: no such "
                          "checkpoint file or run directory")
    out = Path(cfg.experiment.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK | os.X_OK):
            raise PermissionError("not writable")
    except OSError as err:
        reason = err.strerror or str(err)
        raise ConfigError(f"{at('experiment.output_dir')}: experiment.output_dir: cannot write "
                          f"to {out}: {reason}") from None
