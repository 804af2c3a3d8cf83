"""DistributedDataParallel: gradients averaged over ranks by bucketed, overlapped all-reduce.

Parameters are grouped in reverse registration order (roughly the order backward produces
their gradients) into flat buckets of at most `bucket_cap_mb` (the first at most 1 MiB).
When a parameter's gradient is accumulated, a post-accumulate-grad hook copies it into its
bucket; a full bucket starts
its all-reduce asynchronously (in bucket order on every rank), and the end of backward waits
for all of them and points each `.grad` at its averaged slice of the bucket.
"""
from contextlib import contextmanager

from dtrain.autograd import engine
from dtrain.autograd.grad_mode import no_grad
from dtrain.autograd.observer import effect
from dtrain.core import backend
from dtrain.core.tensor import Tensor
from dtrain.distributed import collectives
from dtrain.distributed.comm_hooks import Future, GradBucket, allreduce_hook
from dtrain.distributed.process_group import resolve
from dtrain.nn.module import Module


class _Bucket:
    def __init__(self, index, params, offsets, numel, dtype, device):
        self.index, self.params, self.offsets, self.numel = index, params, offsets, numel
        self.dtype, self.device = dtype, device
        self.flat = self.views = None
        self.reset()

    def reset(self):
        self.ready = set()
        self.future = None

    def allocate(self):
        """The flat buffer, and per parameter the view of it that holds its gradient."""
        if self.flat is None:
            xp = backend.module_for(self.device)
            with backend.device_context(self.device):
                self.flat = xp.zeros(self.numel, dtype=self.dtype)
            self.views = [self.flat[off:off + p._data.size].reshape(p._data.shape)
                          for p, off in zip(self.params, self.offsets)]


class DistributedDataParallel(Module):
    """Wrap `module` so that `loss.backward()` leaves every rank with the gradient of the
    average loss over all ranks' batches (see the module doc)."""

    def __init__(self, module, device_ids=None, output_device=None, dim=0,
                 broadcast_buffers=True, process_group=None, bucket_cap_mb=25,
                 find_unused_parameters=False, check_reduction=False,
                 gradient_as_bucket_view=False, static_graph=False):
        super().__init__()
        if bucket_cap_mb is None or bucket_cap_mb <= 0:
            raise ValueError(f"bucket_cap_mb must be positive, got {bucket_cap_mb}")
        self.module = module
        group = resolve(process_group)
        object.__setattr__(self, "process_group", group)
        self.broadcast_buffers = broadcast_buffers
        self.find_unused_parameters = find_unused_parameters
        self.require_backward_grad_sync = True
        self._hook_state, self._hook = group, allreduce_hook
        self._inv_world = 1.0 / group.size()
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self._names = {id(p): n for n, p in named}
        verify_same_model(module.named_parameters(), group, "DistributedDataParallel")
        self._sync_states(module.parameters())
        self._sync_states(module.buffers())
        self._buckets = _make_buckets([p for _, p in reversed(named)], bucket_cap_mb)
        self._where = {id(p): (b, i) for b in self._buckets for i, p in enumerate(b.params)}
        self._next_launch = 0
        self._pass_started = False
        for _, p in named:
            p.register_post_accumulate_grad_hook(self._grad_ready)

    # -- forward -------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        if self.broadcast_buffers and self.process_group.size() > 1:
            self._sync_states(self.module.buffers())
        return self.module(*args, **kwargs)

    def _sync_states(self, tensors):
        if self.process_group.size() == 1:
            return
        with no_grad():
            for t in tensors:
                collectives.broadcast(t, src=self.process_group.ranks[0],
                                      group=self.process_group)

    @contextmanager
    def no_sync(self):
        """Accumulate gradients locally (no communication) inside this context; the first
        backward after it reduces the accumulated gradients."""
        previous = self.require_backward_grad_sync
        self._set_grad_sync(False)
        try:
            yield
        finally:
            self._set_grad_sync(previous)

    @effect  # graph mode replays the switch where the step made it (autograd/observer.py)
    def _set_grad_sync(self, sync):
        self.require_backward_grad_sync = sync

    def register_comm_hook(self, state, hook):
        """Replace the bucket reduction: `hook(state, GradBucket) -> Future`."""
        if self._hook is not allreduce_hook:
            raise RuntimeError("register_comm_hook can only be called once")
        self._hook_state, self._hook = state, hook

    # -- backward ----------------------------------------------------------------------------
    def _grad_ready(self, p):
        if not self.require_backward_grad_sync:
            return
        if not self._pass_started:
            self._pass_started = True
            engine.queue_callback(self._finish_pass)
        bucket, i = self._where[id(p)]
        bucket.allocate()
        view = bucket.views[i]
        if self._hook is allreduce_hook:  # NOTE: the average's 1/world rides on this pass
            backend.array_module(view).multiply(p.grad._data, self._inv_world, out=view)
        elif p.grad._data is not view:
            view[...] = p.grad._data
        bucket.ready.add(i)
        self._launch_ready()
        for b in self._buckets[:self._next_launch]:  # give MPI a chance to progress
            if b.future is not None:
                b.future.done()

    def _launch_ready(self):
        while self._next_launch < len(self._buckets):
            b = self._buckets[self._next_launch]
            if len(b.ready) < len(b.params):
                return
            flat = Tensor._make(b.flat)
            if self._hook is allreduce_hook:  # already scaled by 1/world: a plain sum
                work = collectives.all_reduce(flat, group=self.process_group, async_op=True)
                b.future = Future(work, lambda flat=flat: flat)
            else:
                b.future = self._hook(self._hook_state, GradBucket(
                    b.index, flat, b.params, b.index == len(self._buckets) - 1))
            self._next_launch += 1

    def _finish_pass(self):
        self._pass_started = False
        used = None
        missing = [(b, i) for b in self._buckets for i in range(len(b.params))
                   if i not in b.ready]
        if missing and not self.find_unused_parameters:
            names = [self._names[id(b.params[i])] for b, i in missing]
            for b in self._buckets:
                b.reset()
            self._next_launch = 0
            raise RuntimeError(f"DistributedDataParallel: parameters {names} received no "
                               "gradient in this backward pass. Pass find_unused_parameters="
                               "True to DistributedDataParallel, or make every parameter take "
                               "part in the loss.")
        if self.find_unused_parameters:
            used = self._used_everywhere(missing)
            for b, i in missing:
                b.allocate()
                b.views[i][...] = 0
                b.ready.add(i)
            self._launch_ready()
        for b in self._buckets:
            b.future.wait()
            for i, p in enumerate(b.params):
                if used is not None and not used[id(p)]:
                    continue
                view = b.views[i]
                if p.grad is None or p.grad._data is not view:
                    p.grad = Tensor._make(view)
            b.reset()
        self._next_launch = 0

    def _used_everywhere(self, missing):
        """{param id: used on some rank} (one small all-reduce of a usage map)."""
        params = [p for b in self._buckets for p in b.params]
        unused_here = {id(b.params[i]) for b, i in missing}
        xp = backend.array_module(params[0]._data) if params else None
        flags = Tensor._make(xp.array([0 if id(p) in unused_here else 1 for p in params],
                                      dtype="int32"))
        collectives.all_reduce(flags, group=self.process_group)
        return {id(p): bool(f) for p, f in zip(params, flags._data.tolist())}


FIRST_BUCKET_BYTES = 1024 * 1024  # as PyTorch: a small first bucket starts talking early


def _make_buckets(params, cap_mb):
    """Group parameters (already in reverse order) into buckets of at most `cap_mb` (the
    first one at most 1 MiB)."""
    cap_all = cap_mb * 1024 * 1024
    buckets, current, size = [], [], 0

    def close():
        if current:
            offsets, total = [], 0
            for p in current:
                offsets.append(total)
                total += p._data.size
            first = current[0]
            buckets.append(_Bucket(len(buckets), list(current), offsets, total,
                                   first._data.dtype, first.device))
    for p in params:
        nbytes = p._data.nbytes
        cap = min(cap_all, FIRST_BUCKET_BYTES) if not buckets else cap_all
        if current and (size + nbytes > cap or p._data.dtype != current[0]._data.dtype
                        or p.device != current[0].device):
            close()
            current, size = [], 0
        current.append(p)
        size += nbytes
    close()
    return buckets


def verify_same_model(named_params, group, who):
    """Every rank must hold the same parameter names, shapes and dtypes (one small
    all-gather); `who` names the caller in the error."""
    mine = [(n, tuple(p._data.shape), p.dtype.name) for n, p in named_params]
    everyone = [None] * group.size()
    collectives.all_gather_object(everyone, mine, group=group)
    reference = everyone[0]
    problems = []
    for r, theirs in enumerate(everyone):
        if theirs == reference:
            continue
        ref = dict((n, (s, d)) for n, s, d in reference)
        got = dict((n, (s, d)) for n, s, d in theirs)
        for n in sorted(set(ref) | set(got)):
            if ref.get(n) != got.get(n):
                problems.append(f"rank {group.ranks[r]}: parameter '{n}' is "
                                f"{_describe(got.get(n))} but on rank {group.ranks[0]} it is "
                                f"{_describe(ref.get(n))}")
    if problems:
        raise RuntimeError(f"{who}: the ranks' models differ:\n  " +
                           "\n  ".join(problems))


def _describe(entry):
    return "missing" if entry is None else f"{entry[1]}{list(entry[0])}"
