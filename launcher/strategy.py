"""`distributed.strategy`: how the trainer spreads a model over its ranks.

- ddp: DistributedDataParallel (every rank holds everything);
- zero1: ZeroRedundancyOptimizer(reduce_scatter_gradients=True) without DDP (each rank keeps
  the optimizer state of its part, gets the averaged gradients of that part by a
  reduce-scatter and all-gathers the parameters it updated: 2 parameter sizes moved per step,
  as DDP);
- zero2: `fully_shard(reshard_after_forward=False)` on each block of the model, then the root
  (parameters gathered for forward and kept until backward; gradients and state sharded);
- fsdp: the same with `reshard_after_forward=True` (ZeRO-3: parameters freed after forward).

`trainer.activation_checkpointing` runs each call of a block under
`checkpoint(use_reentrant=False)`, fully_shard's gathering included, so that the recomputation
in backward sees the full parameters.

Checkpoints are written by every rank in parallel through `dtrain.distributed.checkpoint`
(each rank its shards, keyed by parameter name) and load under any strategy and world size.
"""
import math

from dtrain import distributed as dist
from dtrain import nn
from dtrain.amp import GradScaler
from dtrain.distributed.fsdp import ShardedGradScaler, fully_shard
from dtrain.distributed.optim import ZeroRedundancyOptimizer
from dtrain.launcher.config import SHARDED_STRATEGIES
from dtrain.utils.checkpoint import checkpoint


def sharded(cfg, world):
    """Whether the model's parameters and gradients are sharded across ranks."""
    return world.size > 1 and cfg.distributed.strategy in SHARDED_STRATEGIES


def wrap(model, blocks, cfg, world):
    """The module the trainer calls: `model` sharded in place (zero2, fsdp; `blocks` first),
    DDP around it (ddp), or `model` itself (zero1, one rank); `blocks` checkpointed with
    trainer.activation_checkpointing."""
    if sharded(cfg, world):
        reshard = cfg.distributed.strategy == "fsdp"
        for block in blocks:
            fully_shard(block, reshard_after_forward=reshard)
        fully_shard(model, reshard_after_forward=reshard)
    if cfg.trainer.activation_checkpointing:
        for block in blocks:
            block.__class__ = _checkpointed(type(block))
    if world.size == 1 or cfg.distributed.strategy != "ddp":
        return model
    return dist.DistributedDataParallel(model, bucket_cap_mb=cfg.distributed.bucket_cap_mb)


_CHECKPOINTED = {}


def _checkpointed(cls):
    """A subclass of `cls` whose calls (hooks and forward) run under `checkpoint`."""
    if cls not in _CHECKPOINTED:
        def __call__(self, *args, **kwargs):
            return checkpoint(nn.Module.__call__, self, *args, use_reentrant=False, **kwargs)
        _CHECKPOINTED[cls] = type(f"Checkpointed{cls.__name__}", (cls,), {"__call__": __call__})
    return _CHECKPOINTED[cls]


def make_optimizer(cls, model, cfg, world):
    """`cls` over the model's parameters (the shards under zero2/fsdp), inside a
    ZeroRedundancyOptimizer that reduces the gradients under zero1."""
    kwargs = {"lr": cfg.optimizer.lr, **cfg.optimizer.kwargs}
    if world.size > 1 and cfg.distributed.strategy == "zero1":
        return ZeroRedundancyOptimizer(model.parameters(), cls, reduce_scatter_gradients=True,
                                       **kwargs)
    return cls(model.parameters(), **kwargs)


def make_scaler(cfg, world):
    """trainer.amp's gradient scaler: a ShardedGradScaler (the found-inf flag agreed by all
    ranks) where each rank's optimizer steps its part of the gradients (zero1, zero2, fsdp),
    else a GradScaler."""
    sharded_grads = world.size > 1 and cfg.distributed.strategy != "ddp"
    cls = ShardedGradScaler if sharded_grads else GradScaler
    return cls(world.device.type, enabled=cfg.trainer.amp)


def reduce_gradients(optimizer):
    """Average the gradients over ranks where backward did not (zero1: into the part of
    the parameters each rank updates)."""
    if isinstance(optimizer, ZeroRedundancyOptimizer):
        optimizer.reduce_scatter_gradients()


def grad_norm(params, optimizer, cfg, world):
    """The 2-norm of all gradients of the model (over every rank's shards when sharded, or
    its partition's reduced gradients under zero1)."""
    zero1 = isinstance(optimizer, ZeroRedundancyOptimizer)
    if zero1:
        params = [p for g in optimizer.optim.param_groups for p in g["params"]
                  if p.grad is not None]
    norm = nn.utils.get_total_norm([p.grad for p in params]).item()
    if zero1 or sharded(cfg, world):
        norm = math.sqrt(world.sum([norm * norm])[0])
    return norm
