"""`torch.distributed.checkpoint.state_dict`'s get/set functions: a model's and an
optimizer's state dicts, sharded as they live under `fully_shard` or as full tensors (for
export, and for checkpoints that load at any world size).

The optimizer's state is keyed by parameter name, as PyTorch's, so that `dcp.save` /
`dcp.load` reshard it like the parameters: {"state": {name: {"exp_avg": ..., "step": ...}},
"param_groups": [{"lr": ..., "params": [names]}]}."""
from dataclasses import dataclass

import numpy as np

from dtrain.core.tensor import Tensor
from dtrain.distributed import collectives
from dtrain.distributed.checkpoint.planner import ShardedTensor
from dtrain.distributed.ddp import DistributedDataParallel
from dtrain.distributed.fsdp.fully_shard import FSDPModule
from dtrain.distributed.optim.zero_redundancy_optimizer import ZeroRedundancyOptimizer


@dataclass
class StateDictOptions:
    """`full_state_dict`: gather full tensors (else this rank's shards, with their
    `shard_metadata`); `cpu_offload`: values on the CPU, and with `full_state_dict` only
    rank 0 of each sharded module's group gets them (the other ranks get an empty dict), as
    PyTorch."""

    full_state_dict: bool = False
    cpu_offload: bool = False


def get_model_state_dict(model, *, options=None):
    """The state dict of `model` (sharded with `fully_shard` or not) per `options`: by
    default the rows of sharded parameters as `ShardedTensor`s (as PyTorch's DTensors), the
    form `dcp.save` writes; every rank must call it when `full_state_dict` gathers."""
    options = options or StateDictOptions()
    out = model.state_dict()
    if options.full_state_dict:
        states = [m._fsdp_state for m in model.modules()
                  if isinstance(m, FSDPModule) and m._fsdp_state.shards]
        full = {}
        for state in states:
            for s, arr in zip(state.shards, state.gather(state.own_dtype)):
                full[id(s.param)] = Tensor._make(arr)
        out = {k: full.get(id(v), out[k]) for k, v in model.state_dict(keep_vars=True).items()}
        if options.cpu_offload and states and states[0].group.rank() != 0:
            return {}
    if options.cpu_offload:
        for k in out:
            out[k] = out[k].cpu()
    if not options.full_state_dict:
        shards = _shard_metadata(model)
        live = model.state_dict(keep_vars=True)  # (the root itself need not be sharded)
        out = {k: _sharded(v, shards.get(id(live[k]))) for k, v in out.items()}
    return out


def set_model_state_dict(model, model_state_dict, *, options=None):
    """Load `model_state_dict` into `model`; with `full_state_dict` its full tensors are first
    cut to this rank's rows where `fully_shard` manages the parameter. Returns
    `load_state_dict`'s (missing_keys, unexpected_keys)."""
    options = options or StateDictOptions()
    if options.full_state_dict:
        shards = _shards(model)
        live = model.state_dict(keep_vars=True)
        model_state_dict = {k: _rows(v, shards.get(id(live.get(k))))
                            for k, v in model_state_dict.items()}
    return model.load_state_dict({k: _local(v) for k, v in model_state_dict.items()})


def get_optimizer_state_dict(model, optimizers, *, options=None):
    """The state of `optimizers` (an optimizer or a ZeroRedundancyOptimizer) keyed by
    parameter name, as PyTorch's: {"state": {name: {"exp_avg": ..., "step": ...}},
    "param_groups": [{"lr": ..., "params": [names]}]}, so that it reshards like the
    parameters. By default the state of the parameters `fully_shard` manages in `model` is
    this rank's rows as `ShardedTensor`s (a ZeroRedundancyOptimizer's: its partition), and
    the state is first created (a step with zero gradients and lr 0) if no step made it yet,
    so that a fresh optimizer's state dict can be loaded into. `full_state_dict` all-gathers
    full tensors instead (every rank calls it and gets the same dict)."""
    options = options or StateDictOptions()
    module = _unwrap(model)
    if not options.full_state_dict:
        _init_optim_state(optimizers)
        shards = _shard_metadata(module)
        return _named_optim_state(module, optimizers, shards)
    if isinstance(optimizers, ZeroRedundancyOptimizer):
        osd = _named_optim_state(module, optimizers, {})
        everyone = [None] * optimizers.process_group.size()  # every rank's partition
        collectives.all_gather_object(everyone, osd["state"], group=optimizers.process_group)
        return {**osd, "state": {k: v for part in everyone for k, v in part.items()}}
    return _by_name(module, optimizers, _gathered(module, optimizers))


def _gathered(model, optimizers):
    """`optimizers.state_dict()` (keyed by index) with the state of the parameters that
    `fully_shard` manages in `model` all-gathered into full tensors."""
    out = optimizers.state_dict()
    shards = _shards(model)
    if not shards:
        return out
    params = [p for group in optimizers.param_groups for p in group["params"]]
    mine = {}
    for i, state in out["state"].items():
        s = shards.get(id(params[i]))
        mine[i] = {k: v.cpu().numpy() for k, v in state.items()
                   if s is not None and isinstance(v, Tensor) and v.dim() > 0
                   and tuple(v.shape) == s.metadata()["local_shape"]}
    group = next(m._fsdp_state.group for m in model.modules() if isinstance(m, FSDPModule))
    everyone = [None] * group.size()
    collectives.all_gather_object(everyone, mine, group=group)
    state = {i: dict(values) for i, values in out["state"].items()}  # not the live ones
    for i, values in state.items():
        s = shards.get(id(params[i]))
        for k in mine[i]:
            rows = np.concatenate([part[i][k] for part in everyone])
            values[k] = Tensor._make(rows.reshape(s.shape)).to(values[k].device)
    return {**out, "state": state}


def set_optimizer_state_dict(model, optimizers, optim_state_dict, *, options=None):
    """Load `optim_state_dict` (keyed by parameter name, as `get_optimizer_state_dict`
    returns it, filled by `dcp.load` or full) into `optimizers`; with `full_state_dict` the
    state of the parameters that `fully_shard` manages is first cut to this rank's rows, and
    a ZeroRedundancyOptimizer keeps the state of its own partition."""
    options = options or StateDictOptions()
    module = _unwrap(model)
    names = _names(module)
    index = {}
    for group in optimizers.param_groups:
        for p in group["params"]:
            index.setdefault(names[id(p)], len(index))
    unknown = sorted(set(optim_state_dict["state"]) - set(index))
    if unknown:
        raise KeyError(f"set_optimizer_state_dict: the optimizer state names parameters the "
                       f"optimizer does not have: {', '.join(map(str, unknown[:8]))}")
    indexed = {"state": {index[name]: {k: _local(v) for k, v in values.items()}
                         for name, values in optim_state_dict["state"].items()},
               "param_groups": [{**g, "params": [index[n] for n in g["params"]]}
                                for g in optim_state_dict["param_groups"]]}
    if options.full_state_dict and not isinstance(optimizers, ZeroRedundancyOptimizer):
        shards = _shards(module)
        params = [p for group in optimizers.param_groups for p in group["params"]]
        indexed["state"] = {i: {k: _rows(v, shards.get(id(params[i]))) for k, v in
                                state.items()} for i, state in indexed["state"].items()}
    optimizers.load_state_dict(indexed)


def _shards(model):
    """{id(parameter): its `_Shard`} for the parameters `fully_shard` manages in `model`."""
    return {id(s.param): s for m in model.modules() if isinstance(m, FSDPModule)
            for s in m._fsdp_state.shards}


def _shard_metadata(model):
    """{id(parameter): its shard's metadata} for the parameters `fully_shard` manages."""
    return {pid: s.metadata() for pid, s in _shards(model).items()}


def _rows(value, shard):
    """This rank's rows of a full tensor shaped as `shard`'s parameter (others unchanged)."""
    if shard is None or not isinstance(value, Tensor) or tuple(value.shape) != shard.shape:
        return value
    return value.reshape((shard.rows,) + shard.rest)[shard.start:shard.stop]


def get_state_dict(model, optimizers, *, options=None):
    """(model state dict, optimizer state dict keyed by parameter name) of `model` (plain,
    DDP-wrapped, or with `fully_shard`ed modules) and `optimizers` (an optimizer or a
    ZeroRedundancyOptimizer), the form `dcp.save` writes: `get_model_state_dict` and
    `get_optimizer_state_dict` with `options`."""
    module = _unwrap(model)
    return (get_model_state_dict(module, options=options),
            get_optimizer_state_dict(module, optimizers, options=options))


def _named_optim_state(module, optimizers, shards):
    """The optimizer's own state by parameter name (a ZeroRedundancyOptimizer's: this
    rank's partition), the rows of parameters in `shards` ({id: metadata}) as
    ShardedTensors."""
    inner = optimizers.optim if isinstance(optimizers, ZeroRedundancyOptimizer) else optimizers
    names = _names(module)
    state = {names[id(p)]: {k: _sharded(v, shards.get(id(p))) for k, v in values.items()}
             for p, values in inner.state.items()}
    groups = [{**{k: v for k, v in g.items() if k != "params"},
               "params": [names[id(p)] for p in g["params"]]} for g in optimizers.param_groups]
    return {"state": state, "param_groups": groups}


def set_state_dict(model, optimizers, *, model_state_dict, optim_state_dict, options=None):
    """Load what `get_state_dict` returned (filled by `dcp.load`, or full tensors with
    `options.full_state_dict`) into `model` and `optimizers`. Returns the model's
    (missing, unexpected) keys."""
    module = _unwrap(model)
    result = set_model_state_dict(module, model_state_dict, options=options)
    set_optimizer_state_dict(module, optimizers, optim_state_dict, options=options)
    return result


def _unwrap(model):
    return model.module if isinstance(model, DistributedDataParallel) else model


def _names(module):
    """{id(parameter): its name in `module`} (the first name of a tied parameter)."""
    names = {}
    for name, p in module.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), name)
    return names


def _by_name(module, optimizers, indexed):
    """An index-keyed optimizer state dict keyed by parameter name instead."""
    names = _names(module)
    params = [names[id(p)] for g in optimizers.param_groups for p in g["params"]]
    return {"state": {params[i]: v for i, v in indexed["state"].items()},
            "param_groups": [{**g, "params": [params[i] for i in g["params"]]}
                             for g in indexed["param_groups"]]}


def _sharded(value, meta):
    """`value` as a ShardedTensor where it is a parameter's rows (`meta`), else itself."""
    if meta is None or not isinstance(value, Tensor) or \
            tuple(value.shape) != tuple(meta["local_shape"]):
        return value
    return ShardedTensor(value, tuple(meta["global_shape"]), tuple(meta["offsets"]))


def _local(value):
    return value.local if isinstance(value, ShardedTensor) else value


def _init_optim_state(optimizer):
    """Create an optimizer's state, as PyTorch does: one step with zero gradients and lr 0
    (every rank, for ZeRO), unless it has state or some parameter has a gradient."""
    inner = optimizer.optim if isinstance(optimizer, ZeroRedundancyOptimizer) else optimizer
    params = [p for g in optimizer.param_groups for p in g["params"]]
    has_state = bool(inner.state) or any(p.grad is not None for p in params)
    if isinstance(optimizer, ZeroRedundancyOptimizer):  # a rank may own no parameter
        everyone = [None] * optimizer.process_group.size()
        collectives.all_gather_object(everyone, has_state, group=optimizer.process_group)
        has_state = any(everyone)
    if has_state:
        return
    for p in params:
        if p.requires_grad:
            p.grad = Tensor._make(p._data * 0)
    lrs = [g.get("lr") for g in optimizer.param_groups]
    for g in optimizer.param_groups:
        if "lr" in g:
            g["lr"] = 0.0
    optimizer.step()
    for g, lr in zip(optimizer.param_groups, lrs):
        if lr is not None:
            g["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
