"""Bytes a rank holds per class of training state: what the sharding claims are checked
against (and what a memory estimator compares its predictions with)."""
from dtrain.core.tensor import Tensor
from dtrain.distributed.fsdp.fully_shard import FSDPModule


def memory_stats(model, optimizer=None):
    """{"parameters", "gradients", "optimizer", "total"}: bytes this rank holds now.

    Parameters are `model.parameters()` (the shards under `fully_shard`) plus any full
    parameters a sharded module holds; gradients their `.grad` plus full gradients kept while
    gradient sync is off; optimizer every Tensor in `optimizer.state` (a
    ZeroRedundancyOptimizer's: its local optimizer's). Arrays are counted once each."""
    seen = set()

    def size(arrays):
        total = 0
        for a in arrays:
            base = a if a.base is None else a.base
            if id(base) not in seen:
                seen.add(id(base))
                total += base.nbytes
        return total

    params = list(model.parameters())
    held_params = held_grads = 0
    for m in model.modules():
        if isinstance(m, FSDPModule):
            p, g = m._fsdp_state.held_bytes()
            held_params, held_grads = held_params + p, held_grads + g
    stats = {"parameters": size(p._data for p in params) + held_params,
             "gradients": size(p.grad._data for p in params if p.grad is not None) + held_grads,
             "optimizer": 0}
    if optimizer is not None:
        state = getattr(optimizer, "optim", optimizer).state
        stats["optimizer"] = size(v._data for s in state.values() for v in s.values()
                                  if isinstance(v, Tensor))
    stats["total"] = stats["parameters"] + stats["gradients"] + stats["optimizer"]
    return stats


def gathered_arrays(model):
    """The full parameter arrays that the sharded modules of `model` hold now (what
    `memory_stats` counts as parameters beyond the shards)."""
    return [a for m in model.modules() if isinstance(m, FSDPModule)
            for a in m._fsdp_state.full_arrays()]
