"""ZeRO-1 (`torch.distributed.optim.ZeroRedundancyOptimizer`): optimizer state sharded.

The parameters of each group are assigned to ranks greedily, largest first, each to the rank
with the fewest elements so far (PyTorch's partition). Each rank builds `optimizer_class` on
its partition only, so it holds and updates the state of about 1/N of the parameters; after
its step every rank broadcasts the parameters it updated (one flat bucket per dtype and
device, ordered by owner), and all ranks end with the same parameters. Gradients are
expected to be averaged already (DistributedDataParallel does that), unless
`reduce_scatter_gradients=True` averages them itself.
"""
from collections import defaultdict

from dtrain.autograd.grad_mode import no_grad
from dtrain.core import backend
from dtrain.core.tensor import Tensor
from dtrain.distributed import collectives
from dtrain.distributed.comm import offsets
from dtrain.distributed.process_group import resolve
from dtrain.optim.optimizer import Optimizer


class _Bucket:
    """The parameters that share a dtype and device, ordered by owner rank, in one flat
    buffer (their arrays are views of it with `parameters_as_bucket_view`, and when the
    optimizer reduce-scatters the gradients: the all-gather then needs no unpacking); rank r
    updates the `counts[r]` elements from `at[r]`."""

    def __init__(self, owners, params, size, as_view):
        first = params[0]._data
        self.owners, self.params, self.as_view = owners, params, as_view
        self.counts = [sum(p._data.size for p, o in zip(params, owners) if o == r)
                       for r in range(size)]
        self.at = offsets(self.counts)
        self.xp = backend.array_module(first)
        self.device = backend.device_of(first)
        self.flat = self._empty(self.at[-1])
        self.packed = None  # the gradients' flat buffer, kept between steps (see below)
        self.views = []
        for p, start in zip(params, offsets(p._data.size for p in params)):
            view = self.flat._data[start:start + p._data.size].reshape(p._data.shape)
            view[...] = p._data
            if as_view:
                p._data = view
            self.views.append(view)

    def _empty(self, n):
        with backend.device_context(self.device):
            return Tensor._make(self.xp.empty(n, self.params[0]._data.dtype))

    def _part(self, rank):
        return Tensor._make(self.flat._data[self.at[rank]:self.at[rank + 1]])

    def share(self, group, gather):
        """Send each owner's parameters to every rank: one all-gather of uneven parts
        (`gather`) or one broadcast per owner."""
        me = group.rank()
        owned = [owner == me for owner in self.owners]
        if not self.as_view:
            for p, view, mine in zip(self.params, self.views, owned):
                if mine:
                    view[...] = p._data
        if gather:
            collectives.all_gather_v(self.flat, Tensor._make(self._part(me)._data.copy()),
                                     self.counts, group=group)
        else:
            for rank, count in enumerate(self.counts):
                if count:
                    collectives.broadcast(self._part(rank), src=group.ranks[rank], group=group)
        for p, view, mine in zip(self.params, self.views, owned):
            if not mine:
                if not self.as_view:
                    p._data[...] = view
                p._version[0] += 1

    def reduce_scatter_gradients(self, group):
        """Average the gradients over ranks into the `.grad` of the parameters this rank
        owns (a gradient missing on a rank counts as zeros; a parameter without one on every
        rank keeps none, as under DDP)."""
        # NOTE: kept: a fresh buffer of all the parameters' size each step cost ~15 ms of
        # page faults per rank at 8.4 M parameters (the same memory as the flat parameter
        # copy that share() would otherwise pack and unpack)
        if self.packed is None:
            self.packed = self._empty(self.at[-1])
        grads = self.packed
        me = group.rank()
        with backend.device_context(self.device):
            used = Tensor._make(self.xp.array([p.grad is not None for p in self.params],
                                              dtype="int32"))
        flags = collectives.all_reduce(used, group=group, async_op=True)
        reduced = self._empty(self.counts[me])
        scale = 1.0 / group.size()  # NOTE: the average's 1/N rides on the packing, as in DDP
        for p, start in zip(self.params, offsets(p._data.size for p in self.params)):
            part = grads._data[start:start + p._data.size]
            if p.grad is None:
                part[...] = 0
            else:
                self.xp.multiply(p.grad._data.reshape(-1), scale, out=part)
        collectives.reduce_scatter_v(reduced, grads, self.counts, group=group)
        flags.wait()
        mine = [(p, u) for p, u, owner in zip(self.params, used._data.tolist(), self.owners)
                if owner == me]
        for (p, u), start in zip(mine, offsets(p._data.size for p, _ in mine)):
            if u:  # the gradient becomes a view of the reduced part, as DDP's of its bucket
                p.grad = Tensor._make(reduced._data[start:start + p._data.size]
                                      .reshape(p._data.shape))


class ZeroRedundancyOptimizer(Optimizer):
    """Wrap `optimizer_class(params, **defaults)` so that each rank keeps the state of its
    partition of the parameters only (see the module doc); `param_groups` are the global
    groups (their hyperparameters reach the local optimizer at every step).

    `reduce_scatter_gradients=True` (dtrain's; PyTorch has no such flag) takes local, not
    averaged, gradients (no DDP): they are reduce-scattered to their owners and the updated
    parameters all-gathered, 2 parameter sizes moved per step instead of DDP's all-reduce (2)
    plus the broadcasts (1); the parameters' arrays become views of the gathered buffer, as
    with `parameters_as_bucket_view` (whose partition stays PyTorch's, largest first)."""

    def __init__(self, params, optimizer_class, process_group=None,
                 parameters_as_bucket_view=False, overlap_with_ddp=False,
                 reduce_scatter_gradients=False, **defaults):
        if overlap_with_ddp:
            raise NotImplementedError("ZeroRedundancyOptimizer(overlap_with_ddp=True) is not "
                                      "supported by dtrain: step after backward instead")
        self.process_group = resolve(process_group)
        self.parameters_as_bucket_view = parameters_as_bucket_view
        self.reduce_scatter, self._reduced = reduce_scatter_gradients, False
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
                by_key[(p._data.dtype.str, str(p.device))].append(p)
        self._buckets = []
        for _, params in sorted(by_key.items()):
            params.sort(key=lambda p: self._owner[id(p)])  # stable: group order within a rank
            self._buckets.append(_Bucket([self._owner[id(p)] for p in params], params,
                                         self.process_group.size(),
                                         self.parameters_as_bucket_view or self.reduce_scatter))

    def reduce_scatter_gradients(self):
        """With `reduce_scatter_gradients=True`: average the gradients over ranks into the
        parameters this rank owns (call it before clipping them; `step()` calls it unless it
        ran since the last `step()` or `zero_grad()`). Other parameters keep their local
        gradients."""
        if not self.reduce_scatter:
            raise RuntimeError("reduce_scatter_gradients() needs ZeroRedundancyOptimizer("
                               "..., reduce_scatter_gradients=True); without it the gradients "
                               "are expected to be averaged already (e.g. by DDP)")
        with no_grad():
            for bucket in self._buckets:
                bucket.reduce_scatter_gradients(self.process_group)
        self._reduced = True

    def zero_grad(self, set_to_none=True):
        super().zero_grad(set_to_none)
        self._reduced = False

    def step(self, closure=None):
        """Step the local optimizer on this rank's partition (after reducing the gradients
        with `reduce_scatter_gradients=True`), then share every rank's updated parameters."""
        if closure is not None and self.reduce_scatter:
            raise ValueError("ZeroRedundancyOptimizer(reduce_scatter_gradients=True).step() "
                             "takes no closure: gradients must be reduced before the step")
        if self.reduce_scatter and not self._reduced:
            self.reduce_scatter_gradients()
        self._reduced = False
        for group, local in zip(self.param_groups, self.optim.param_groups):
            local.update(_hyper(group))
        loss = self.optim.step(closure)
        with no_grad():
            for bucket in self._buckets:
                bucket.share(self.process_group, gather=self.reduce_scatter)
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
