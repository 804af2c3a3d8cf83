"""`get_model_state_dict` (`torch.distributed.checkpoint.state_dict`): a model's state dict,
sharded as it lives under `fully_shard` or gathered into full tensors for export."""
from dataclasses import dataclass

from dtrain.core.tensor import Tensor
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
        states = [m._fsdp_state for m in model.modules() if isinstance(m, FSDPModule)]
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
