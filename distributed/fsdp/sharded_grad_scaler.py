"""`ShardedGradScaler` (`torch.distributed.fsdp.sharded_grad_scaler`): loss scaling when each
rank holds only part of the gradients."""
import numpy as np

from dtrain.autograd.observer import effect
from dtrain.core import backend
from dtrain.core.tensor import Tensor
from dtrain.distributed import collectives
from dtrain.distributed.process_group import resolve
from dtrain.optim.grad_scaler import GradScaler


class ShardedGradScaler(GradScaler):
    """`GradScaler` for gradients sharded across ranks (`fully_shard`,
    `ZeroRedundancyOptimizer`): a non-finite gradient may sit on one rank only, so the
    found-inf flag of `unscale_` is all-reduced (MAX) over `process_group`; every rank then
    skips the same steps and keeps the same scale (a rank without gradients takes part too).
    """

    def __init__(self, device="cuda", init_scale=2.0 ** 16, backoff_factor=0.5,
                 growth_factor=2.0, growth_interval=2000, enabled=True, process_group=None):
        super().__init__(device, init_scale=init_scale, growth_factor=growth_factor,
                         backoff_factor=backoff_factor, growth_interval=growth_interval,
                         enabled=enabled)
        self.process_group = process_group

    @effect
    def unscale_(self, optimizer):
        """Unscale this rank's gradients, then agree with the other ranks on the flag."""
        super().unscale_(optimizer)
        if not self._enabled:
            return
        state = self._per_optimizer_states[id(optimizer)]
        found = any(bool(f) for f in state["found_inf_per_device"].values())
        flag = Tensor._make(np.array([int(found)], dtype=np.int32))  # host: MPI reduces it
        collectives.all_reduce(flag, op=collectives.ReduceOp.MAX,
                               group=resolve(self.process_group))
        state["found_inf_per_device"] = {backend.CPU: bool(flag._data[0])}
