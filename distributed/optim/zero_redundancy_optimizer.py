"""ZeRO-1 (`torch.distributed.optim.ZeroRedundancyOptimizer`): optimizer state sharded.

The parameters of each group are assigned to ranks greedily, largest first, each to the rank
with the fewest elements so far (PyTorch's partition). Each rank builds `optimizer_class` on
its partition only, so it holds and updates the state of about 1/N of the parameters; after
its step every rank broadcasts the parameters it updated, one flat bucket per dtype and
device, and all ranks end with the same parameters. Gradients are expected to be averaged
already (DistributedDataParallel does that).
"""
from collections import defaultdict

from dtrain.autograd.grad_mode import no_grad
from dtrain.core import backend
from dtrain.core.tensor import Tensor
from dtrain.distributed import collectives
from dtrain.distributed.process_group import resolve
from dtrain.optim.optimizer import Optimizer


class _Bucket:
    """The parameters one rank updates that share a dtype and device, in one flat buffer
    (their arrays are views of it with `parameters_as_bucket_view`)."""

    def __init__(self, owner, params, as_view):
        first = params[0]._data
        self.owner, self.params, self.as_view = owner, params, as_view
        xp = backend.array_module(first)
        with backend.device_context(backend.device_of(first)):
            self.flat = Tensor._make(xp.empty(sum(p._data.size for p in params), first.dtype))
        self.views, offset = [], 0
        for p in params:
            view = self.flat._data[offset:offset + p._data.size].reshape(p._data.shape)
            view[...] = p._data
            if as_view:
                p._data = view
            self.views.append(view)
            offset += p._data.size

    def broadcast(self, group):
        """Send the owner's parameters to every rank (packed into, unpacked from `flat`)."""
        mine = group.rank() == self.owner
        if mine and not self.as_view:
            for p, view in zip(self.params, self.views):
                view[...] = p._data
        collectives.broadcast(self.flat, src=group.ranks[self.owner], group=group)
        if not mine:
            for p, view in zip(self.params, self.views):
                if not self.as_view:
                    p._data[...] = view
                p._version[0] += 1


class ZeroRedundancyOptimizer(Optimizer):
    """Wrap `optimizer_class(params, **defaults)` so that each rank keeps the state of its
    partition of the parameters only (see the module doc); `param_groups` are the global
    groups (their hyperparameters reach the local optimizer at every step)."""

    def __init__(self, params, optimizer_class, process_group=None,
                 parameters_as_bucket_view=False, overlap_with_ddp=False, **defaults):
        if overlap_with_ddp:
            raise NotImplementedError("ZeroRedundancyOptimizer(overlap_with_ddp=True) is not "
                                      "supported by dtrain: step after backward instead")
        self.process_group = resolve(process_group)
        self.parameters_as_bucket_view = parameters_as_bucket_view
        self.optim = None
        self._consolidated = None
        super().__init__(params, defaults)
        self._partition()
        self.optim = optimizer_class(
            [{**_hyper(g), "params": mine} for g, mine in zip(self.param_groups, self._local)],
            **defaults)
        for group, local in zip(self.param_groups, self.optim.param_groups):
            group.update(_hyper(local))  # the optimizer class's defaults, for state_dict()
        self._make_buckets()

    def add_param_group(self, param_group):
        """Add a group; its parameters are partitioned and this rank's part joins the local
        optimizer (earlier groups keep their partition)."""
        super().add_param_group(param_group)
        if self.optim is None:  # still in __init__
            return
        self._partition()
        self.optim.add_param_group({**_hyper(self.param_groups[-1]), "params": self._local[-1]})
        self.param_groups[-1].update(_hyper(self.optim.param_groups[-1]))
        self._make_buckets()

    def _partition(self):
        """`_owner[id(p)]`: the group rank updating p; `_local[i]`: this rank's part of group i."""
        loads = [0] * self.process_group.size()
        self._owner, self._local = {}, []
        for group in self.param_groups:
            params = group["params"]
            owners = assign_ranks([p._data.size for p in params], loads,
                                  largest_first=not self.parameters_as_bucket_view)
            self._owner.update((id(p), rank) for p, rank in zip(params, owners))
            me = self.process_group.rank()
            self._local.append([p for p in params if self._owner[id(p)] == me])

    def _make_buckets(self):
        by_key = defaultdict(list)
        for group in self.param_groups:
            for p in group["params"]:
                by_key[(self._owner[id(p)], p._data.dtype.str, str(p.device))].append(p)
        self._buckets = [_Bucket(key[0], params, self.parameters_as_bucket_view)
                         for key, params in sorted(by_key.items())]

    def step(self, closure=None):
        """Step the local optimizer on this rank's partition, then broadcast every rank's
        updated parameters."""
        for group, local in zip(self.param_groups, self.optim.param_groups):
            local.update(_hyper(group))
        loss = self.optim.step(closure)
        with no_grad():
            for bucket in self._buckets:
                bucket.broadcast(self.process_group)
        return loss

    # -- state dicts ------------------------------------------------------------------------
    def _global_index(self):
        params = [p for group in self.param_groups for p in group["params"]]
        return {id(p): i for i, p in enumerate(params)}

    def consolidate_state_dict(self, to=0):
        """Collect every rank's optimizer state on global rank `to` (all ranks must call it);
        `state_dict()` there then returns the full one."""
        index = self._global_index()
        local = self.optim.state_dict()
        mine = [p for group in self.optim.param_groups for p in group["params"]]
        state = {index[id(mine[i])]: s for i, s in local["state"].items()}
        everyone = [None] * self.process_group.size()
        collectives.all_gather_object(everyone, state, group=self.process_group)
        self._consolidated = None
        if self.process_group.global_rank == to:
            self._consolidated = {k: v for part in everyone for k, v in part.items()}

    def state_dict(self):
        """The full state dict (PyTorch's format, indices over all ranks' parameters); only on
        the rank that `consolidate_state_dict(to=...)` named."""
        if self._consolidated is None:
            raise RuntimeError(f"Optimizer state has not been consolidated on this rank "
                               f"(global rank {self.process_group.global_rank}). Please call "
                               "`consolidate_state_dict(to=...)` on all ranks beforehand if "
                               "you meant to save the global state.")
        full = super().state_dict()
        full["state"] = dict(sorted(self._consolidated.items()))
        return full

    def load_state_dict(self, state_dict):
        """Load a full state dict: hyperparameters go to every group, and each rank keeps
        the state of its own partition only."""
        super().load_state_dict(state_dict)
        local = {"state": {}, "param_groups": []}
        i = 0
        for group, mine in zip(self.param_groups, self._local):
            indices = []
            for p in mine:
                if p in self.state:
                    local["state"][i] = self.state[p]
                indices.append(i)
                i += 1
            local["param_groups"].append({**_hyper(group), "params": indices})
        self.optim.load_state_dict(local)
        self.state = defaultdict(dict)  # the full state stays with its owners only


def assign_ranks(sizes, loads, largest_first=True):
    """The owner rank of each of `sizes` (in their order): each in turn (the largest first)
    goes to the rank with the least so far; `loads` (one number per rank) is updated."""
    order = range(len(sizes))
    if largest_first:
        order = sorted(order, key=lambda i: sizes[i], reverse=True)
    owners = [0] * len(sizes)
    for i in order:
        owners[i] = loads.index(min(loads))
        loads[owners[i]] += sizes[i]
    return owners


def _hyper(group):
    return {k: v for k, v in group.items() if k != "params"}
