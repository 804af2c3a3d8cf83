"""Fully sharded data parallelism with FSDP2's names (`torch.distributed.fsdp`)."""
from dtrain.distributed.fsdp.fully_shard import (FSDPModule, MixedPrecisionPolicy,  # noqa: F401
                                                 fully_shard)
from dtrain.distributed.fsdp.memory import gathered_arrays, memory_stats  # noqa: F401
from dtrain.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler  # noqa: F401
