"""FSDP2's `fully_shard`: parameters sharded along dim 0 across ranks, gathered around each
sharded module's forward and backward (ZeRO-3; ZeRO-2 with `reshard_after_forward=False`).

A sharded module manages the parameters of its subtree that no sharded submodule manages.
Each becomes this rank's rows of it, chunks of ceil(d0 / N) rows as `torch.chunk` cuts them
(the last ranks may hold fewer rows, or none); padding to equal chunks exists only inside
the transfer buffers. The Parameter objects are kept, their arrays replaced by the shards, so
any optimizer on `model.parameters()` updates only the local shards.

Around each call of a sharded module:
- before forward, the shards are all-gathered (one flat buffer per module) by `_Unshard`, an
  autograd Function whose outputs stand in for the parameters while forward runs; its
  backward, which the engine runs once the module's backward is done, reduce-scatters their
  gradients (averaged over ranks) into the shards' `.grad` and frees the full tensors;
- after forward, with `reshard_after_forward` (never for the root, whose backward comes
  first), the full tensors are freed and the outputs pass through `_PreBackward`, whose
  backward gathers them again before the module's backward reads them.
"""
import weakref
from dataclasses import dataclass

from dtrain.autograd.function import Function
from dtrain.core import backend
from dtrain.core import dtype as dtypes
from dtrain.core.tensor import Tensor
from dtrain.distributed import collectives
from dtrain.distributed.ddp import verify_same_model
from dtrain.distributed.process_group import resolve


@dataclass(frozen=True)
class MixedPrecisionPolicy:
    """Compute in `param_dtype` (the gathered parameters, and forward's floating inputs when
    `cast_forward_inputs`), reduce gradients in `reduce_dtype` (default: `param_dtype`), cast
    outputs to `output_dtype`; the shards, their gradients and the optimizer keep the
    parameters' own dtype (float32 master weights). dtrain has no bfloat16."""

    param_dtype: object = None
    reduce_dtype: object = None
    output_dtype: object = None
    cast_forward_inputs: bool = True


class FSDPModule:
    """Mixed into the class of every module given to `fully_shard` (`FSDP<Class>`)."""

    def reshard(self):
        """Free the full parameters that `unshard()` gathered and no forward used yet (those
        of a forward are freed by its backward, or with its graph)."""
        state = self._fsdp_state
        if state.prefetched is not None:
            state.prefetched.free()
            state.prefetched = None

    def unshard(self):
        """Gather the full parameters now; the next forward uses them."""
        state = self._fsdp_state
        if state.prefetched is None:
            state.prefetched = _Call(state)

    def set_requires_gradient_sync(self, requires_gradient_sync, *, recurse=True):
        """False: backward keeps full gradients locally (gradient accumulation without
        communication); the next backward with True reduce-scatters them with its own."""
        for state in self._states(recurse):
            state.requires_gradient_sync = requires_gradient_sync

    def set_reshard_after_forward(self, reshard_after_forward, *, recurse=True):
        for state in self._states(recurse):
            state.reshard_after_forward = reshard_after_forward

    def _states(self, recurse):
        mods = self.modules() if recurse else [self]
        return [m._fsdp_state for m in mods if isinstance(m, FSDPModule)]

    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """This rank's shards by name; `state_dict.shard_metadata[key]` gives the global
        shape and the offsets of the shard in it (for every sharded parameter)."""
        out = super().state_dict(destination, prefix, keep_vars)
        where = {id(s.param): s for state in self._states(True) for s in state.shards}
        out.shard_metadata = {}
        for key, value in super().state_dict(prefix=prefix, keep_vars=True).items():
            s = where.get(id(value))
            if s is not None:
                out.shard_metadata[key] = s.metadata()
        return out


class _Shard:
    """One managed parameter: its global shape and the rows of it this rank holds."""

    def __init__(self, param, rank, world):
        self.param, self.world = param, world
        self.shape = tuple(param._data.shape)
        self.rows = self.shape[0] if self.shape else 1
        self.rest = self.shape[1:]
        self.row_numel = 1
        for d in self.rest:
            self.row_numel *= d
        self.chunk = -(-self.rows // world)
        self.start = min(rank * self.chunk, self.rows)
        self.stop = min(self.start + self.chunk, self.rows)
        self.numel = self.chunk * self.row_numel  # per rank, padded

    def take_rows(self):
        """Replace the parameter's array by this rank's rows of it."""
        full = self.param._data.reshape((self.rows,) + self.rest)
        self.param._data = full[self.start:self.stop].copy()
        self.param.grad = None

    def full(self, gathered, offset):
        """The full parameter from the all-gathered (ranks, per-rank numel) buffer."""
        mine = gathered[:, offset:offset + self.numel].reshape(self.world * self.chunk, -1)
        return mine[:self.rows].reshape(self.shape)

    def into_ranks(self, full, out):
        """Copy the full array `full` (a gradient) into `out` (ranks, numel), each rank's
        chunk of rows in its row and zeros past the last row: one copy, no padded temporary."""
        rows = full.reshape(self.rows, self.row_numel)
        chunks = out.reshape(self.world, self.chunk, self.row_numel)
        for r in range(self.world):
            lo = min(r * self.chunk, self.rows)
            hi = min(lo + self.chunk, self.rows)
            chunks[r, :hi - lo] = rows[lo:hi]
            chunks[r, hi - lo:] = 0

    def metadata(self):
        return {"global_shape": self.shape,
                "offsets": (self.start,) + (0,) * len(self.rest),
                "local_shape": (self.stop - self.start,) + self.rest}


class _Call:
    """One forward call's full parameters: the Tensors the module's forward uses. After
    forward only the graph holds them (weakly referenced here, so no cycle through the
    graph keeps them alive once it is gone)."""

    def __init__(self, state):
        self.state = state
        self.fulls = list(_Unshard.apply(self, *[s.param for s in state.shards]))
        self._weak = None
        state.unsharded.add(self)

    def release(self):
        """Forward is over: keep weak references only."""
        self._weak = [weakref.ref(f) for f in self.fulls]
        self.fulls = None

    def alive(self):
        """(index, Tensor) of the full parameters that still exist."""
        if self.fulls is not None:
            return list(enumerate(self.fulls))
        return [(i, f) for i, f in enumerate(w() for w in self._weak) if f is not None]

    def free(self):
        """Drop the full arrays (the graph keeps the Tensors, now empty)."""
        for _, f in self.alive():
            f._data = backend.array_module(f._data).empty(0, f._data.dtype)
        self.state.unsharded.discard(self)

    def gather_again(self):
        if self not in self.state.unsharded:
            arrays = self.state.gather(self.state.param_dtype)
            for i, f in self.alive():
                f._data = arrays[i]
            self.state.unsharded.add(self)


class _Unshard(Function):
    """Shards -> full parameters (all-gather); backward: full gradients -> shard gradients
    (reduce-scatter, averaged over ranks)."""

    @staticmethod
    def forward(ctx, call, *shards):
        ctx.call = call
        fulls = tuple(Tensor._make(a) for a in call.state.gather(call.state.param_dtype))
        ctx.mark_non_differentiable(*[f for f, s in zip(fulls, shards) if not s.requires_grad])
        return fulls

    @staticmethod
    def backward(ctx, *grads):
        shard_grads = ctx.call.state.reduce_grads([g._data for g in grads])
        ctx.call.free()
        return (None, *shard_grads)


class _PreBackward(Function):
    """Identity on a module's outputs; backward gathers the module's parameters again
    before the module's own backward runs."""

    @staticmethod
    def forward(ctx, call, *outputs):
        ctx.call = call
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(*[o for o in outputs if not o.requires_grad])
        return outputs

    @staticmethod
    def backward(ctx, *grads):
        ctx.call.gather_again()
        return (None, *grads)


class _FSDPState:
    """What `fully_shard` keeps for one module (see the module doc)."""

    def __init__(self, module, group, shards, places, reshard_after_forward, mp_policy):
        self.module, self.group, self.shards, self.places = module, group, shards, places
        self.reshard_after_forward = reshard_after_forward
        self.mp = mp_policy or MixedPrecisionPolicy()
        self.requires_gradient_sync = True
        self.is_root = True       # until a sharded ancestor takes it in
        self.prefetched = None    # the _Call of unshard(), for the next forward
        self.pending = None       # full gradients kept while gradient sync is off
        # the _Calls whose full parameters are held now (a call dies with its graph)
        self.unsharded = weakref.WeakSet()
        own = shards[0].param._data.dtype if shards else None
        self.own_dtype = own
        self.param_dtype = dtypes.to_np(self.mp.param_dtype) if self.mp.param_dtype else own
        reduce = self.mp.reduce_dtype or self.mp.param_dtype
        self.reduce_dtype = dtypes.to_np(reduce) if reduce else own
        grads = [s for s in shards if s.param.requires_grad]
        self.offsets = _offsets(shards)
        self.grad_shards, self.grad_offsets = grads, _offsets(grads)

    def gather(self, dtype):
        """All-gather the shards into full arrays of `dtype`, one flat transfer."""
        first = self.shards[0].param._data
        xp = backend.array_module(first)
        size = sum(s.numel for s in self.shards)
        with backend.device_context(backend.device_of(first)):
            send = xp.zeros(size, dtype)
            recv = xp.empty(size * self.group.size(), dtype)
        for s, off in zip(self.shards, self.offsets):
            local = s.param._data.ravel()
            send[off:off + local.size] = local
        collectives.all_gather_into_tensor(Tensor._make(recv), Tensor._make(send),
                                           group=self.group)
        gathered = recv.reshape(self.group.size(), size)
        return [s.full(gathered, off) for s, off in zip(self.shards, self.offsets)]

    def reduce_grads(self, grads):
        """Shard gradients (None where none) from the full ones: reduce-scatter their
        average, or keep them for later while gradient sync is off."""
        index = {id(s): i for i, s in enumerate(self.shards)}
        full = [grads[index[id(s)]] for s in self.grad_shards]
        if self.pending is not None:
            full = [g + p for g, p in zip(full, self.pending)]
        if not self.requires_gradient_sync:
            self.pending = full
            return (None,) * len(self.shards)
        self.pending = None
        n, xp = self.group.size(), backend.array_module(full[0])
        dtype = self.reduce_dtype
        size = sum(s.numel for s in self.grad_shards)
        with backend.device_context(backend.device_of(full[0])):
            send = xp.empty((n, size), dtype)
            recv = xp.empty(size, dtype)
            for s, off, g in zip(self.grad_shards, self.grad_offsets, full):
                s.into_ranks(g, send[:, off:off + s.numel])
        collectives.reduce_scatter_tensor(Tensor._make(recv), Tensor._make(send.reshape(-1)),
                                          op=collectives.ReduceOp.AVG, group=self.group)
        out = [None] * len(self.shards)
        for s, off in zip(self.grad_shards, self.grad_offsets):
            local = recv[off:off + (s.stop - s.start) * s.row_numel]
            out[index[id(s)]] = Tensor._make(
                local.reshape(s.param._data.shape).astype(s.param._data.dtype))
        return out

    # -- forward hooks ------------------------------------------------------------------------
    def pre_forward(self, module, args, kwargs):
        call, self.prefetched = self.prefetched or _Call(self), None
        self.call = call
        self._install(call.fulls)
        if self.mp.param_dtype is not None and self.mp.cast_forward_inputs:
            args, kwargs = _cast((args, kwargs), self.mp.param_dtype)
        return args, kwargs

    def post_forward(self, module, args, kwargs, output):
        call, self.call = self.call, None
        self._install([s.param for s in self.shards])
        fulls = call.fulls
        call.release()
        if not any(f.requires_grad for f in fulls):  # no backward will come
            call.free()
        elif self.reshard_after_forward and not self.is_root:
            wrapped = _wrap_outputs(output, call)
            if wrapped is not None:  # else (outputs not Tensors) keep them until backward
                output = wrapped
                call.free()
        if self.mp.output_dtype is not None:
            output = _cast(output, self.mp.output_dtype)
        return output

    def _install(self, tensors):
        for places, t in zip(self.places, tensors):
            for mod, name in places:
                mod._parameters[name] = t

    def full_arrays(self):
        """The full parameter arrays this module holds now."""
        return [f._data for c in self.unsharded for _, f in c.alive()]

    def held_bytes(self):
        """Bytes of full parameters and of kept full gradients this module holds now."""
        params = sum(a.nbytes for a in self.full_arrays())
        grads = sum(g.nbytes for g in self.pending or ())
        return params, grads


def _offsets(shards):
    out, total = [], 0
    for s in shards:
        out.append(total)
        total += s.numel
    return out


def _wrap_outputs(output, call):
    """`output` with its Tensors passed through `_PreBackward`; None when it is neither a
    Tensor nor a tuple/list of them."""
    outs = (output,) if isinstance(output, Tensor) else output
    if not isinstance(outs, (tuple, list)) or not all(isinstance(o, Tensor) for o in outs):
        return None
    wrapped = _PreBackward.apply(call, *outs)
    if isinstance(output, Tensor):
        return wrapped[0]
    return type(output)(wrapped)


def _cast(obj, dtype):
    """`obj` (nested tuples/lists/dicts) with its floating point Tensors cast to `dtype`."""
    if isinstance(obj, Tensor):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if isinstance(obj, (tuple, list)):
        return type(obj)(_cast(o, dtype) for o in obj)
    if isinstance(obj, dict):
        return {k: _cast(v, dtype) for k, v in obj.items()}
    return obj


_CLASSES = {}


def fully_shard(module, *, reshard_after_forward=True, mp_policy=None, process_group=None):
    """Shard `module`'s parameters across the ranks of `process_group` (see the module doc);
    apply it to submodules first, then to the root. Returns `module`, now an `FSDPModule`."""
    if isinstance(module, FSDPModule):
        raise RuntimeError(f"fully_shard: this {type(module).__bases__[1].__name__} is already "
                           "sharded (fully_shard was applied to it before); apply it once per "
                           "module, submodules first")
    group = resolve(process_group)
    places, children = {}, []
    stack, seen = [("", module)], set()
    while stack:  # the subtree, minus sharded submodules' subtrees
        prefix, mod = stack.pop(0)
        if id(mod) in seen:
            continue
        seen.add(id(mod))
        for name, p in mod._parameters.items():
            if p is not None:
                places.setdefault(id(p), (f"{prefix}{name}", p, []))[2].append((mod, name))
        for name, child in mod._modules.items():
            if isinstance(child, FSDPModule):
                children.append((f"{prefix}{name}", child))
            elif child is not None:
                stack.append((f"{prefix}{name}.", child))
    _check_not_tied_across(places, children)
    named = [(name, p) for name, p, _ in places.values()]
    verify_same_model(named, group, "fully_shard")
    dtypes_used = {p.dtype.name for _, p in named}
    if len(dtypes_used) > 1:
        raise TypeError(f"fully_shard: the parameters of one sharded module must share a dtype; "
                        f"{type(module).__name__} has {sorted(dtypes_used)} "
                        f"({', '.join(f'{n}: {p.dtype.name}' for n, p in named)}); cast them "
                        "or shard the submodules separately")
    shards = [_Shard(p, group.rank(), group.size()) for _, p in named]
    for s in shards:
        s.take_rows()
    for _, child in children:
        for state in child._states(True):
            state.is_root = False
    state = _FSDPState(module, group, shards, [pl for _, _, pl in places.values()],
                       reshard_after_forward, mp_policy)
    object.__setattr__(module, "_fsdp_state", state)
    cls = type(module)
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"FSDP{cls.__name__}", (FSDPModule, cls), {})
    module.__class__ = _CLASSES[cls]
    if shards:
        module.register_forward_pre_hook(state.pre_forward, with_kwargs=True)
        module.register_forward_hook(state.post_forward, with_kwargs=True)
    return module


def _check_not_tied_across(places, children):
    """A parameter that a sharded submodule manages and that this module uses elsewhere
    (weights tied across sharded modules) cannot be sharded twice."""
    for child_name, child in children:
        for state in child._states(True):
            for s in state.shards:
                if id(s.param) in places:
                    name = places[id(s.param)][0]
                    raise RuntimeError(
                        f"fully_shard: parameter '{name}' is also a parameter of the already "
                        f"sharded submodule '{child_name}' (weights tied across sharded "
                        "modules); apply fully_shard to a module that contains every use of "
                        "the tied parameter instead")
