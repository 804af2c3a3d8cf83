"""Experiment configs: YAML files with `defaults:` includes, `${env:VAR,default}`
interpolation and Hydra-style overrides, validated before any rank starts into frozen,
typed sections.

The section dataclasses below are the schema: each key's types, default, value check, help
and whether it changes the numbers a run computes (`result`, read when a resume compares
configs) are declared once, in the field's metadata. Every error names the file, the line
and the key path (with the closest valid key for a typo) and is a `ConfigError`; the CLI
turns it into exit code 2.

Override grammar (Hydra's): `key.path=value` sets a key (an unknown one is then reported by
validation, with the closest valid key); `+key.path=value` adds a key the file lacks and
refuses to replace one it has; `++key.path=value` adds or sets; `~key.path` (or
`~key.path=value`, only if it has that value) deletes a key. Values are YAML: `1e-3`,
`[64, 32]`, `{hidden: [32]}`, `null`.
"""
import copy
import dataclasses
import difflib
import inspect
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class _Loader(yaml.SafeLoader):
    """YAML 1.2's numbers: `1e-3` and `5E+2` are floats (PyYAML's YAML 1.1 resolver needs a
    dot and reads them as strings; OmegaConf and Hydra accept them)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+][0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def parse(text):
    """One YAML document with `_Loader`'s numbers."""
    return yaml.load(text, Loader=_Loader)


class ConfigError(Exception):
    """A config problem, with where it is: `file:line: key.path: message`."""


@dataclass(frozen=True)
class Where:
    file: str
    line: int

    def __str__(self):
        return f"{self.file}:{self.line}" if self.line else self.file


# -- loading ----------------------------------------------------------------------------
def _marks(node, path, file, out):
    """Record where every key path of a composed YAML node tree is defined."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            p = f"{path}.{key.value}" if path else str(key.value)
            out[p] = Where(file, key.start_mark.line + 1)
            _marks(value, p, file, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            p = f"{path}.{i}"
            out[p] = Where(file, item.start_mark.line + 1)
            _marks(item, p, file, out)


def _read(path):
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text()
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = parse(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: invalid YAML: "
                          f"{getattr(err, 'problem', None) or err}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the top level of a config must be a mapping of sections")
    where = {}
    if node is not None:
        _marks(node, "", str(path), where)
    return data, where


def _merge(base, top, base_where, top_where, prefix=""):
    """Deep-merge `top` over `base` (both dicts), keeping the origin of every key."""
    for key, value in top.items():
        p = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, base_where, top_where, p)
        else:
            base[key] = copy.deepcopy(value)
            for k in [k for k in base_where if k == p or k.startswith(p + ".")]:
                del base_where[k]
            base_where.update({k: v for k, v in top_where.items()
                               if k == p or k.startswith(p + ".")})


def load(path, overrides=(), _seen=None):
    """The merged, interpolated config dict of `path` (+ overrides) and key origins."""
    path = Path(path).resolve()
    seen = set() if _seen is None else _seen
    if path in seen:
        raise ConfigError(f"{path}: `defaults` include cycle")
    seen.add(path)
    data, where = _read(path)
    includes = data.pop("defaults", []) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list):
        raise ConfigError(f"{where.get('defaults', Where(str(path), 1))}: defaults: expected a "
                          "list of YAML files to include")
    merged, merged_where = {}, {}
    for inc in includes:
        inc_data, inc_where = load(path.parent / inc, (), seen)
        _merge(merged, inc_data, merged_where, inc_where)
    _merge(merged, data, merged_where, where)
    for item in overrides:
        _apply_override(merged, merged_where, item)
    _interpolate(merged, merged_where)
    return merged, merged_where


def _apply_override(data, where, item):
    """Apply one override (grammar in the module docstring) to the merged dict."""
    origin = Where(f"command line override '{item}'", 0)
    mode = "delete" if item.startswith("~") else "force" if item.startswith("++") else \
        "add" if item.startswith("+") else "set"
    body = item.lstrip("~+")
    key, sep, raw = body.partition("=")
    if not key or (not sep and mode != "delete"):
        raise ConfigError(f"{origin.file}: expected key.path=value, +key.path=value, "
                          "++key.path=value or ~key.path")
    try:
        value = parse(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    *parents, last = key.split(".")
    node = data
    for i, part in enumerate(parents):
        child = node.get(part)
        if child is None and mode != "delete":
            child = node[part] = {}
        if not isinstance(child, dict):
            what = "has no key" if child is None else "is not a section"
            raise ConfigError(f"{origin.file}: '{'.'.join(parents[:i + 1])}' {what}")
        node = child
    present = last in node
    if mode == "delete":
        if not present:
            raise ConfigError(f"{origin.file}: cannot delete {key}: no such key in the config")
        if sep and node[last] != value:
            raise ConfigError(f"{origin.file}: cannot delete {key}: its value is "
                              f"{node[last]!r}, not {value!r}")
        del node[last]
        for k in [k for k in where if k == key or k.startswith(key + ".")]:
            del where[k]
        return
    if mode == "add" and present:
        raise ConfigError(f"{origin.file}: cannot add {key}: it is already set (to "
                          f"{node[last]!r}); write {key}=... or ++{key}=...")
    node[last] = value
    where[key] = origin


_ENV = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?:,([^}]*))?\}")


def _interpolate(node, where, path=""):
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in list(items):
        p = f"{path}.{key}" if path else str(key)
        if isinstance(value, (dict, list)):
            _interpolate(value, where, p)
        elif isinstance(value, str) and "${" in value:
            node[key] = _substitute(value, where.get(p, Where("?", 0)), p)


def _substitute(text, origin, path):
    def repl(m):
        var, default = m.group(1), m.group(2)
        if var in os.environ:
            return os.environ[var]
        if default is None:
            raise ConfigError(f"{origin}: {path}: environment variable {var} is not set and "
                              "has no default (write ${env:" + var + ",default})")
        return default
    out = _ENV.sub(repl, text)
    if "${" in out:
        raise ConfigError(f"{origin}: {path}: unsupported interpolation in {text!r}; only "
                          "${env:VAR} and ${env:VAR,default} are supported")
    full = _ENV.fullmatch(text)
    if full:  # a whole-value interpolation is typed like a YAML scalar
        try:
            return parse(out)
        except yaml.YAMLError:
            return out
    return out


# -- the schema: frozen, typed sections ---------------------------------------------------
REQUIRED = object()
NONE = type(None)


def positive(v):
    return None if v > 0 else "must be > 0"


def non_negative(v):
    return None if v >= 0 else "must be >= 0"


def one_of(*choices):
    def check(v):
        return None if v in choices else f"must be one of {list(choices)}"
    return check


def key(types, default=None, check=None, help="", result=True):
    """A config key: accepted `types`, `default` (REQUIRED: none), a value `check` returning
    a problem or None, and `result`: whether changing it changes what the run computes (a
    resume with such a change is refused unless trainer.resume_allow_changes)."""
    types = types if isinstance(types, tuple) else (types,)
    meta = {"types": types, "check": check, "help": help, "result": result,
            "required": default is REQUIRED}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=None if default is REQUIRED else default, metadata=meta)


@dataclass(frozen=True)
class Experiment:
    name: str = key(str, "experiment", result=False)
    seed: int = key(int, 0)
    output_dir: str = key((str, NONE), None, result=False,
                          help="where runs go, one folder each (default runs/<name>)")


@dataclass(frozen=True)
class Model:
    name: str | None = key((str, NONE), None, help="a built-in model")
    target: str | None = key((str, NONE), None, help="package.module:Callable")
    args: dict = key(dict, {})


@dataclass(frozen=True)
class Data:
    dataset: str = key(str, REQUIRED)
    root: str = key(str, "data", result=False)
    batch_size: int = key(int, 64, positive, help="per rank")
    eval_batch_size: int | None = key((int, NONE), None, positive, result=False)
    num_workers: int = key(int, 0, non_negative, result=False)
    transforms: list = key(list, [])
    val_split: float = key((int, float), 0.0, lambda v: None if 0 <= v < 1 else
                           "must be in [0, 1)", help="fraction of the training set held out "
                           "for validation")
    download: bool = key(bool, False, result=False)
    args: dict = key(dict, {})


@dataclass(frozen=True)
class Optimizer:
    name: str = key(str, "sgd")
    lr: float = key((int, float), REQUIRED, positive)
    kwargs: dict = key(dict, {}, help="any other keyword argument of the optimizer")


@dataclass(frozen=True)
class Scheduler:
    name: str = key(str, REQUIRED)
    interval: str = key(str, "epoch", one_of("epoch", "step"))
    kwargs: dict = key(dict, {}, help="any other keyword argument of the scheduler")


@dataclass(frozen=True)
class Trainer:
    epochs: int | None = key((int, NONE), None, positive, result=False)
    max_steps: int | None = key((int, NONE), None, positive, result=False)
    grad_accum_steps: int = key(int, 1, positive)
    clip_grad_norm: float | None = key((int, float, NONE), None, positive)
    amp: bool = key(bool, False)
    eval_every: int | None = key((int, NONE), None, positive, result=False,
                                 help="steps between evaluations (default: each epoch)")
    log_every: int = key(int, 10, positive, result=False)
    checkpoint_every: int | None = key((int, NONE), None, positive, result=False)
    keep_last: int = key(int, 3, positive, result=False)
    resume: str | None = key((str, NONE), None, result=False,
                             help="null (a fresh run) | auto | latest | PATH")
    resume_allow_changes: bool = key(bool, False, result=False,
                                     help="resume even when keys that change the result "
                                          "differ from the checkpoint's config")
    on_nonfinite: str = key(str, "stop", one_of("stop", "skip_step", "ignore"), result=False)
    target_accuracy: float | None = key((int, float, NONE), None, lambda v: None if 0 < v <= 1
                                        else "must be in (0, 1]", result=False,
                                        help="stop once evaluation accuracy reaches it")
    device: str = key(str, "auto", one_of("auto", "cpu", "cuda"), result=False)
    activation_checkpointing: bool = key(bool, False, result=False,
                                         help="recompute each block's activations in "
                                              "backward instead of keeping them")
    elastic_batch: str = key(str, "global", one_of("global", "per_rank"), result=False,
                             help="on a resume with another world size: keep the global "
                                  "batch (per-rank batch or grad_accum_steps adjusted) or "
                                  "the per-rank batch (the global batch changes)")
    log_samples: bool = key(bool, False, result=False,
                            help="each rank appends the dataset indices it trains on, step "
                                 "by step, to samples/rank<R>.jsonl in the run directory")
    progress: bool = key(bool, True, result=False)
    tensorboard: bool = key(bool, False, result=False,
                            help="also write loss, accuracy, lr, throughput and gradient norm "
                                 "as TensorBoard events into the run directory (rank 0; needs "
                                 "dtrain[tensorboard])")

    @property
    def resume_path(self):
        """`resume` as a path (a run folder or a checkpoint folder), or None for null, auto and
        latest."""
        return None if self.resume in (None, "auto", "latest") else \
            Path(self.resume).expanduser().resolve()


STRATEGIES = ("ddp", "zero1", "zero2", "fsdp")
SHARDED_STRATEGIES = ("zero2", "fsdp")  # parameters and gradients sharded


@dataclass(frozen=True)
class Distributed:
    backend: str | None = key((str, NONE), None, one_of("mpi", "nccl"), result=False)
    nproc_per_node: int = key(int, 1, positive, result=False,
                              help="a resume on another world size keeps the global batch "
                                   "(trainer.elastic_batch)")
    nnodes: int = key(int, 1, positive, result=False)
    hostfile: str | None = key((str, NONE), None, result=False)
    bucket_cap_mb: float = key((int, float), 25, positive, result=False)
    timeout_s: float = key((int, float), 1800, positive, result=False)
    mpiexec: str | None = key((str, NONE), None, result=False)
    launcher: str = key(str, "mpiexec", one_of("mpiexec", "srun"), result=False,
                        help="how ranks start inside a Slurm allocation")
    strategy: str = key(str, "ddp", one_of(*STRATEGIES), result=False,
                        help="ddp | zero1 (optimizer state sharded) | zero2 (+ gradients) | "
                             "fsdp (+ parameters); checkpoints hold full state under each")


@dataclass(frozen=True)
class Slurm:
    nodes: int = key(int, 1, positive, result=False)
    ntasks_per_node: int | None = key((int, NONE), None, positive, result=False)
    gpus_per_node: int = key(int, 0, non_negative, result=False)
    cpus_per_task: int | None = key((int, NONE), None, positive, result=False)
    time: str = key(str, "01:00:00", result=False)
    partition: str | None = key((str, NONE), None, result=False)
    account: str | None = key((str, NONE), None, result=False)
    job_name: str | None = key((str, NONE), None, result=False)
    requeue: bool = key(bool, True, result=False)
    signal_before_s: int = key(int, 120, positive, result=False)
    extra: list = key(list, [], result=False)


SECTIONS = {"experiment": Experiment, "model": Model, "data": Data, "optimizer": Optimizer,
            "scheduler": Scheduler, "trainer": Trainer, "distributed": Distributed,
            "slurm": Slurm}
OPTIONAL_SECTIONS = {"scheduler", "slurm"}
OPEN_SECTIONS = {"optimizer", "scheduler"}  # other keys go to `kwargs` (checked by the class)


@dataclass(frozen=True)
class Config:
    """A validated config: one frozen section each (`scheduler`/`slurm` may be None)."""

    experiment: Experiment
    model: Model
    data: Data
    optimizer: Optimizer
    scheduler: Scheduler | None
    trainer: Trainer
    distributed: Distributed
    slurm: Slurm | None

    def to_dict(self):
        """The plain nested dict (open sections' kwargs inline), as written to YAML."""
        out = {}
        for name in SECTIONS:
            section = getattr(self, name)
            if section is None:
                out[name] = None
                continue
            values = {f.name: copy.deepcopy(getattr(section, f.name))
                      for f in dataclasses.fields(section)}
            if name in OPEN_SECTIONS:
                values.update(values.pop("kwargs"))
            out[name] = values
        return out


def result_keys(cfg_dict):
    """{"section.key": value} for every key that changes what a run computes (open sections'
    keywords included), from a config dict (`Config.to_dict()` or a checkpoint's copy)."""
    out = {}
    for name, cls in SECTIONS.items():
        section = cfg_dict.get(name) or {}
        declared = {f.name: f for f in dataclasses.fields(cls)}
        for k, value in section.items():
            f = declared.get(k)
            if f is None and name in OPEN_SECTIONS or f is not None and f.metadata["result"]:
                out[f"{name}.{k}"] = value
    return out


def config_changes(saved, current):
    """Lines `key: saved -> current` for result-changing keys that differ between two config
    dicts (a key missing on one side counts as its schema default)."""
    old, new = result_keys(saved), result_keys(current)
    lines = []
    for k in sorted(old.keys() | new.keys()):
        a, b = old.get(k, _default(k)), new.get(k, _default(k))
        if a != b:
            lines.append(f"{k}: {a!r} -> {b!r}")
    return lines


def _default(path):
    section, _, name = path.partition(".")
    f = {f.name: f for f in dataclasses.fields(SECTIONS[section])}.get(name)
    return None if f is None else _field_default(f)


def _field_default(f):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _type_name(types):
    names = {int: "integer", float: "number", str: "string", bool: "true/false", list: "list",
             dict: "mapping", type(None): "null", object: "any value"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _is_type(value, types):
    if object in types:
        return True
    if isinstance(value, bool) and bool not in types:
        return False  # YAML true/false is not an integer here
    return isinstance(value, types)


def _suggest(key, valid):
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"


def validate(data, where, source):
    """Check `data` against the schema; return a `Config` with every default filled in."""
    def at(path):
        w = where.get(path)
        return str(w) if w else f"{source}"
    for k in data:
        if k not in SECTIONS:
            raise ConfigError(f"{at(k)}: {k}: unknown section{_suggest(k, list(SECTIONS))}")
    sections = {}
    for section, cls in SECTIONS.items():
        raw = data.get(section)
        if raw is None and section in OPTIONAL_SECTIONS:
            sections[section] = None
            continue
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise ConfigError(f"{at(section)}: {section}: expected a mapping of keys, got "
                              f"{type(raw).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "kwargs"
                  or section not in OPEN_SECTIONS}
        values, extra = {}, {}
        for k, value in raw.items():
            path = f"{section}.{k}"
            f = fields.get(k)
            if f is None:
                if section in OPEN_SECTIONS:
                    extra[k] = value
                    continue
                raise ConfigError(f"{at(path)}: {path}: unknown key"
                                  f"{_suggest(str(k), list(fields))}")
            meta = f.metadata
            if not _is_type(value, meta["types"]):
                raise ConfigError(f"{at(path)}: {path}: expected {_type_name(meta['types'])}, "
                                  f"got {value!r}")
            problem = meta["check"](value) if meta["check"] and value is not None else None
            if problem:
                raise ConfigError(f"{at(path)}: {path}: {value!r} {problem}")
            values[k] = value
        for k, f in fields.items():
            if k not in values and f.metadata["required"]:
                raise ConfigError(f"{at(section)}: {section}.{k}: missing required value"
                                  + (f" ({f.metadata['help']})" if f.metadata["help"] else ""))
        if section in OPEN_SECTIONS:
            values["kwargs"] = extra
        sections[section] = cls(**values)
    _cross_checks(sections, at)
    return Config(**sections)


def _cross_checks(s, at):
    model = s["model"]
    if (model.name is None) == (model.target is None):
        raise ConfigError(f"{at('model')}: model: give exactly one of model.name (a built-in "
                          "model) or model.target ('package.module:Callable')")
    if model.target is not None and not re.fullmatch(r"[\w.]+:[\w.]+", model.target):
        raise ConfigError(f"{at('model.target')}: model.target: {model.target!r} is not "
                          "'package.module:Callable'")
    if s["trainer"].activation_checkpointing and model.target is not None:
        raise ConfigError(f"{at('trainer.activation_checkpointing')}: "
                          "trainer.activation_checkpointing: needs a built-in model (model.name),"
                          " whose blocks are known; a model.target can call "
                          "dtrain.utils.checkpoint.checkpoint itself")
    if s["trainer"].epochs is None and s["trainer"].max_steps is None:
        raise ConfigError(f"{at('trainer')}: trainer: set trainer.epochs or trainer.max_steps")
    if s["experiment"].output_dir is None:
        s["experiment"] = dataclasses.replace(s["experiment"],
                                              output_dir=f"runs/{s['experiment'].name}")


def defaults(section):
    """A section's keys with their default values (for an optional section left out)."""
    return {f.name: _field_default(f) for f in dataclasses.fields(SECTIONS[section])
            if f.name != "kwargs"}


def check_kwargs(kwargs, cls, path, where):
    """Check an open section's other keys against `cls`'s keyword parameters (optimizer or
    scheduler classes)."""
    params = inspect.signature(cls).parameters
    valid = [p for p in params if p not in ("params", "optimizer")]
    for key in kwargs:
        if key not in params:
            w = where.get(f"{path}.{key}")
            raise ConfigError(f"{w or path}: {path}.{key}: unknown key for "
                              f"{cls.__name__}{_suggest(key, valid)}")


def load_config(path, overrides=()):
    """Load, merge, interpolate and validate: (`Config`, key origins)."""
    data, where = load(path, overrides)
    return validate(data, where, str(path)), where


def dump(cfg):
    """YAML text of a `Config` (or of a config dict)."""
    return yaml.safe_dump(cfg.to_dict() if isinstance(cfg, Config) else cfg, sort_keys=False)
