"""Distributed optimizers (`torch.distributed.optim`'s names)."""
from dtrain.distributed.optim.zero_redundancy_optimizer import ZeroRedundancyOptimizer  # noqa: F401
