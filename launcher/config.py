"""Experiment configs: YAML files with `defaults:` includes, `${env:VAR,default}`
interpolation and `a.b=value` overrides, validated before any rank starts.

Every error names the file, the line and the key path (with the closest valid key for a
typo) and is a `ConfigError`; the CLI turns it into exit code 2.
"""
import copy
import difflib
import inspect
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml


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
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
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
    key, sep, raw = item.partition("=")
    origin = Where(f"command line override '{item}'", 0)
    if not sep or not key:
        raise ConfigError(f"{origin.file}: expected key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{origin.file}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value
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
            return yaml.safe_load(out)
        except yaml.YAMLError:
            return out
    return out


# -- validation -----------------------------------------------------------------------------
class Field:
    """One config key: its type(s), default (`REQUIRED` if none) and a value check."""

    def __init__(self, types, default=None, check=None, help=""):
        self.types = types if isinstance(types, tuple) else (types,)
        self.default = default
        self.check = check
        self.help = help


REQUIRED = object()


def positive(v):
    return None if v > 0 else "must be > 0"


def non_negative(v):
    return None if v >= 0 else "must be >= 0"


def one_of(*choices):
    def check(v):
        return None if v in choices else f"must be one of {list(choices)}"
    return check


SCHEMA = {
    "experiment": {
        "name": Field(str, "experiment"),
        "seed": Field(int, 0),
        "output_dir": Field(str, None, help="default: runs/<name>"),
    },
    "model": {
        "name": Field((str, type(None)), None),
        "target": Field((str, type(None)), None, help="package.module:Callable"),
        "args": Field(dict, {}),
    },
    "data": {
        "dataset": Field(str, REQUIRED),
        "root": Field(str, "data"),
        "batch_size": Field(int, 64, positive),
        "eval_batch_size": Field((int, type(None)), None),
        "num_workers": Field(int, 0, non_negative),
        "transforms": Field(list, []),
        "val_split": Field((int, float), 0.0, lambda v: None if 0 <= v < 1 else
                           "must be in [0, 1)"),
        "download": Field(bool, False),
        "args": Field(dict, {}),
    },
    "optimizer": {
        "name": Field(str, "sgd"),
        "lr": Field((int, float), REQUIRED, positive),
        "*": Field(object, None, help="any keyword argument of the optimizer"),
    },
    "scheduler": {
        "name": Field(str, REQUIRED),
        "interval": Field(str, "epoch", one_of("epoch", "step")),
        "*": Field(object, None, help="any keyword argument of the scheduler"),
    },
    "trainer": {
        "epochs": Field((int, type(None)), None),
        "max_steps": Field((int, type(None)), None),
        "grad_accum_steps": Field(int, 1, positive),
        "clip_grad_norm": Field((int, float, type(None)), None),
        "amp": Field(bool, False),
        "eval_every": Field((int, type(None)), None),
        "log_every": Field(int, 10, positive),
        "checkpoint_every": Field((int, type(None)), None),
        "keep_last": Field(int, 3, positive),
        "resume": Field((str, type(None)), "auto"),
        "device": Field(str, "auto", help="auto | cpu | cuda"),
        "progress": Field(bool, True),
        "target_accuracy": Field((int, float, type(None)), None),
    },
    "distributed": {
        "backend": Field((str, type(None)), None, one_of("mpi", "nccl")),
        "nproc_per_node": Field(int, 1, positive),
        "nnodes": Field(int, 1, positive),
        "hostfile": Field((str, type(None)), None),
        "bucket_cap_mb": Field((int, float), 25, positive),
        "timeout_s": Field((int, float), 1800, positive),
        "mpiexec": Field((str, type(None)), None),
        "launcher": Field(str, "mpiexec", one_of("mpiexec", "srun"),
                          help="how ranks start inside a Slurm allocation"),
    },
    "slurm": {
        "nodes": Field(int, 1, positive),
        "ntasks_per_node": Field((int, type(None)), None),
        "gpus_per_node": Field(int, 0, non_negative),
        "cpus_per_task": Field((int, type(None)), None),
        "time": Field(str, "01:00:00"),
        "partition": Field((str, type(None)), None),
        "account": Field((str, type(None)), None),
        "job_name": Field((str, type(None)), None),
        "requeue": Field(bool, True),
        "signal_before_s": Field(int, 120, positive),
        "extra": Field(list, []),
    },
}
OPTIONAL_SECTIONS = {"scheduler", "slurm"}


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
    """Check `data` against SCHEMA; return a new dict with every default filled in."""
    def at(path):
        w = where.get(path)
        return str(w) if w else f"{source}"
    out = {}
    for key in data:
        if key not in SCHEMA:
            raise ConfigError(f"{at(key)}: {key}: unknown section{_suggest(key, list(SCHEMA))}")
    for section, fields in SCHEMA.items():
        raw = data.get(section)
        if raw is None:
            if section in OPTIONAL_SECTIONS:
                out[section] = None
                continue
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{at(section)}: {section}: expected a mapping of keys, got "
                              f"{type(raw).__name__}")
        values = {}
        for key, value in raw.items():
            path = f"{section}.{key}"
            spec = fields.get(key) or fields.get("*")
            if spec is None:
                valid = [k for k in fields if k != "*"]
                raise ConfigError(f"{at(path)}: {path}: unknown key{_suggest(str(key), valid)}")
            if not _is_type(value, spec.types):
                raise ConfigError(f"{at(path)}: {path}: expected {_type_name(spec.types)}, got "
                                  f"{value!r}")
            problem = spec.check(value) if spec.check and value is not None else None
            if problem:
                raise ConfigError(f"{at(path)}: {path}: {value!r} {problem}")
            values[key] = value
        for key, spec in fields.items():
            if key == "*" or key in values:
                continue
            if spec.default is REQUIRED:
                raise ConfigError(f"{at(section)}: {section}.{key}: missing required value"
                                  + (f" ({spec.help})" if spec.help else ""))
            values[key] = copy.deepcopy(spec.default)
        out[section] = values
    _cross_checks(out, at)
    return out


def _cross_checks(cfg, at):
    model = cfg["model"]
    if (model["name"] is None) == (model["target"] is None):
        raise ConfigError(f"{at('model')}: model: give exactly one of model.name (a built-in "
                          "model) or model.target ('package.module:Callable')")
    trainer = cfg["trainer"]
    if trainer["epochs"] is None and trainer["max_steps"] is None:
        raise ConfigError(f"{at('trainer')}: trainer: set trainer.epochs or trainer.max_steps")
    if cfg["experiment"]["output_dir"] is None:
        cfg["experiment"]["output_dir"] = f"runs/{cfg['experiment']['name']}"


def defaults(section):
    """A section's keys with their default values (for an optional section left out)."""
    return {k: copy.deepcopy(f.default) for k, f in SCHEMA[section].items() if k != "*"}


def check_kwargs(cfg_section, cls, path, where, skip=("name", "interval")):
    """Check a section's extra keys against `cls`'s keyword parameters (optimizer or
    scheduler classes)."""
    params = inspect.signature(cls).parameters
    valid = [p for p in params if p not in ("params", "optimizer")]
    for key in cfg_section:
        if key in skip:
            continue
        if key not in params:
            w = where.get(f"{path}.{key}")
            raise ConfigError(f"{w or path}: {path}.{key}: unknown key for "
                              f"{cls.__name__}{_suggest(key, valid)}")


def load_config(path, overrides=()):
    """Load, merge, interpolate and validate: (config dict, key origins)."""
    data, where = load(path, overrides)
    return validate(data, where, str(path)), where


def dump(cfg):
    return yaml.safe_dump(cfg, sort_keys=False)
