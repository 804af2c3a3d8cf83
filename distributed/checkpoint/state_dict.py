"""`torch.distributed.checkpoint.state_dict`'s get/set functions: a model's and an
optimizer's state dicts, sharded as they live under `fully_shard` or as full tensors (for
export, and for checkpoints that load at any world size)."""
from dataclasses import dataclass

import numpy as np

from dtrain.core.tensor import Tensor
from dtrain.distributed import collectives
from dtrain.distributed.fsdp.fully_shard import FSDPModule


@dataclass
class StateDictOptions:
    """`full_state_dict`: gather full tensors (else this rank's shards, with their
    `shard_metadata`); `cpu_offload`: values on the CPU, and with `full_state_dict` only
    rank 0 of each sharded module's group gets them (the other ranks get an empty dict), as
    PyTorch."""

    full_state_dict: bool = False
    cpu_offload: bool = False


def get_model_state_dict(model, *, options=None):
    """The state dict of `model` (sharded with `fully_shard` or not) per `options`; every
    rank must call it when `full_state_dict` gathers."""
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
    return model.load_state_dict(model_state_dict)


def get_optimizer_state_dict(model, optimizers, *, options=None):
    """`optimizers.state_dict()`; with `full_state_dict`, the state of the parameters that
    `fully_shard` manages in `model` is all-gathered into full tensors (every rank calls it
    and gets the same dict)."""
    options = options or StateDictOptions()
    out = optimizers.state_dict()
    shards = _shards(model)
    if not options.full_state_dict or not shards:
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
    """Load `optim_state_dict` into `optimizers`; with `full_state_dict` the state of the
    parameters that `fully_shard` manages is first cut to this rank's rows."""
    options = options or StateDictOptions()
    if options.full_state_dict:
        shards = _shards(model)
        params = [p for group in optimizers.param_groups for p in group["params"]]
        optim_state_dict = {**optim_state_dict, "state": {
            i: {k: _rows(v, shards.get(id(params[i]))) for k, v in state.items()}
            for i, state in optim_state_dict["state"].items()}}
    optimizers.load_state_dict(optim_state_dict)


def _shards(model):
    """{id(parameter): its `_Shard`} for the parameters `fully_shard` manages in `model`."""
    return {id(s.param): s for m in model.modules() if isinstance(m, FSDPModule)
            for s in m._fsdp_state.shards}


def _rows(value, shard):
    """This rank's rows of a full tensor shaped as `shard`'s parameter (others unchanged)."""
    if shard is None or not isinstance(value, Tensor) or tuple(value.shape) != shard.shape:
        return value
    return value.reshape((shard.rows,) + shard.rest)[shard.start:shard.stop]
