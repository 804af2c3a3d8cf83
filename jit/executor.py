"""Replaying a `Graph`.

`ArrayRunner` runs each op's `forward` on raw arrays (no Tensors, no autograd bookkeeping per
op) and re-executes the effects; with a memory plan (see passes.py) ops write into planned
buffers (`forward(..., out=buffer)`), and their temporaries (`Op.scratch`) live in one
arena shared by all planned nodes (see `Workspace`). `TensorRunner` replays through
`Op.apply`, so that autograd records the ops as usual: used when the caller needs gradients
of the outputs.
"""
import math
import sys

from dtrain.autograd import engine
from dtrain.autograd import tensor_methods as tm
from dtrain.autograd.grad_mode import no_grad
from dtrain.autograd.ops import index
from dtrain.core import backend, creation
from dtrain.core import dtype as dtypes
from dtrain.core.tensor import Tensor
from dtrain.jit.graph import INPUT, Ref, map_refs, refs_in

_new = object.__new__


class _Runner:
    def __init__(self, graph):
        self.graph = graph
        self.n = len(graph.values)
        self.tensors = ()  # the input Tensors of the call being replayed

    def _input_tensor(self, vid):
        return self.tensors[self.graph.inputs.index(vid)]

    def leaf(self, ref):
        """The Tensor object that a graph value stands for (an input or a captured one)."""
        if self.graph.values[ref.vid].kind == INPUT:
            return self._input_tensor(ref.vid)
        return self.graph.captured[ref.vid]

    def wrap_output(self, env):
        g = self.graph

        def out(ref):
            kind = g.values[ref.vid].kind
            if kind == INPUT:
                return self._input_tensor(ref.vid)
            obj = g.captured.get(ref.vid)
            if isinstance(obj, Tensor):
                return obj
            return self.as_output(env[ref.vid], ref.vid in g.consts)
        return map_refs(g.output, out)


class ArrayRunner(_Runner):
    """Replay on arrays. `plan` maps node index -> buffer (array or `Recycled`), passes.py."""

    def __init__(self, graph, plan=None):
        super().__init__(graph)
        self.plan = plan = plan or {}
        self.workspaces = []  # of the planned nodes, shared once every node has run
        self.shared = False
        self.fresh = _fresh_values(graph, plan)
        self.accumulated = set()  # gradient values handed to a leaf's .grad so far
        releases = _releases(graph)
        self.steps = [(self._step(n, plan.get(i)), releases.get(i, ()))
                      for i, n in enumerate(graph.nodes)]
        self.tensor_loads = [(v, t) for v, t in graph.captured.items() if isinstance(t, Tensor)]
        self.array_loads = [(v, a) for v, a in graph.captured.items()
                            if not isinstance(a, Tensor)]
        self.consts = [(v, a, v in graph.mutated) for v, a in graph.consts.items()]

    def __call__(self, tensors):
        self.tensors = tensors
        env = [None] * self.n
        for vid, t in zip(self.graph.inputs, tensors):
            env[vid] = t._data
        for vid, t in self.tensor_loads:
            env[vid] = t._data
        for vid, a in self.array_loads:
            env[vid] = a
        for vid, a, mutated in self.consts:
            env[vid] = a.copy() if mutated else a
        if self.graph.has_backward:
            with engine.backward_pass() as self.run:
                self._run(env)
        else:
            self._run(env)
        out = self.wrap_output(env)  # may return an input tensor: before dropping them
        self.tensors = ()
        if not self.shared:
            share_workspaces(self.workspaces)
            self.shared = True
        return out

    def _run(self, env):
        for step, release in self.steps:
            step(env)
            if release:  # drop values after their last use, as eager frees them
                for vid in release:
                    env[vid] = None

    @staticmethod
    def as_output(arr, shared):
        return Tensor._make(arr.copy() if shared else arr)

    # -- one closure per node ---------------------------------------------------------------
    def _step(self, n, plan):
        if n.kind == "op":
            if plan is None:
                return _op_step(n)
            workspace = Workspace()
            self.workspaces.append(workspace)
            return _planned_step(n, plan, self.graph.values[n.outs[0]].device, workspace)
        return getattr(self, "_" + n.kind)(n)

    def _copy(self, n):
        s, o = n.args[0].vid, n.outs[0]

        def step(env):
            env[o] = env[s].copy()
        return step

    def _written(self, vid):
        """The version counter to bump when replay writes into value `vid` (a captured
        tensor's, so that autograd sees the change as in eager; else a throwaway)."""
        tensor = self.graph.captured.get(vid)
        return tensor._version if isinstance(tensor, Tensor) else [0]

    def _write(self, n):
        t, s = n.args[0].vid, n.args[1].vid
        version = self._written(t)

        def step(env):
            dst = env[t]
            backend.array_module(dst).copyto(dst, env[s], casting="unsafe")
            version[0] += 1
        return step

    def _setitem(self, n):
        t = n.args[0].vid
        value, key = n.args[1], n.params["key"]
        version = self._written(t)

        def step(env):
            dst = env[t]
            k = _resolve(key, env)
            dst[k] = index.fit_value(_resolve(value, env), dst[k])
            version[0] += 1
        return step

    def _accumulate(self, n):
        g, o, target = n.args[0].vid, n.outs[0], n.target
        if g in self.accumulated:  # a second leaf gets this gradient (CSE merged equal ones)
            return self._accumulate_copy(n)
        self.accumulated.add(g)
        shared = g not in self.fresh  # never hand a graph-owned array to a leaf's .grad

        def step(env):
            leaf = self.leaf(target)
            arr = env[g]
            with no_grad():
                self.run.deliver(leaf, Tensor._make(arr.copy() if shared and leaf.grad is None
                                                    else arr))
            env[o] = leaf.grad._data
        return step

    def _accumulate_copy(self, n):
        """Accumulate a gradient that an earlier node handed to another leaf: a copy, as
        eager's engine makes (two leaves' .grad never share memory), into a `Recycled`
        array, so that the replay allocates nothing once the previous .grad was dropped."""
        g, o, target = n.args[0].vid, n.outs[0], n.target
        own = Recycled(self.graph.values[g])

        def step(env):
            leaf = self.leaf(target)
            arr = own.take()
            backend.array_module(arr).copyto(arr, env[g])
            with no_grad():
                self.run.deliver(leaf, Tensor._make(arr))
            env[o] = leaf.grad._data
        return step

    def _callbacks(self, n):
        def step(env):
            with no_grad():
                self.run.run_callbacks()
        return step

    def _call(self, n):
        (owner, method), args, kwargs = n.target, n.args, n.params

        def step(env):
            method(owner, *args, **kwargs)
        return step


RELEASE_BYTES = 16384  # smaller values stay until the call ends (dropping costs time)


def _releases(graph):
    """{node index: values (of at least RELEASE_BYTES) whose last use is that node}."""
    last = {}
    for i, n in enumerate(graph.nodes):
        for vid in n.outs + tuple(n.stash.values()):
            last[vid] = i
    for i, n in enumerate(graph.nodes):
        for r in n.refs():
            if r.vid in last:
                last[r.vid] = i
    keep = {r.vid for r in refs_in(graph.output)}
    out = {}
    for vid, i in last.items():
        v = graph.values[vid]
        if vid not in keep and math.prod(v.shape) * v.dtype.itemsize >= RELEASE_BYTES:
            out.setdefault(i, []).append(vid)
    return out


def _fresh_values(graph, plan):
    """Values that replay computes into an array that nothing else holds (a new one, or a
    free `Recycled` one): not constants, captured values or static buffers, nor views."""
    fresh = set()
    for i, n in enumerate(graph.nodes):
        if n.kind == "copy":
            fresh.update(n.outs)
        if n.kind != "op" or (i in plan and not isinstance(plan[i], Recycled)):
            continue
        if all(n.args[p].vid in fresh for p in n.aliases):
            fresh.update(n.outs)
            if i not in plan:  # a planned node stashes arrays of its workspace
                fresh.update(n.stash.values())
    return fresh


def _resolve(obj, env):
    if isinstance(obj, Ref):
        return env[obj.vid]
    if isinstance(obj, (tuple, list, dict)):
        return map_refs(obj, lambda r: env[r.vid])
    return obj


def _fetch(args):
    """A function env -> list of the positional arrays of a node."""
    refs = [(i, a.vid) for i, a in enumerate(args) if isinstance(a, Ref)]
    if len(refs) == len(args) == 1:
        (_, a), = refs
        return lambda env: (env[a],)
    if len(refs) == len(args) == 2:
        (_, a), (_, b) = refs
        return lambda env: (env[a], env[b])
    if all(not refs_in(a) or isinstance(a, Ref) for a in args):
        template = list(args)

        def fetch(env):
            out = template[:]
            for i, v in refs:
                out[i] = env[v]
            return out
        return fetch
    return lambda env: [_resolve(a, env) for a in args]


def _op_step(n):
    cls, fetch, outs, stash = n.op, _fetch(n.args), n.outs, tuple(n.stash.items())
    fwd, multi = cls.forward, n.multi
    params = n.params
    dynamic = bool(refs_in(params))
    if not n.multi and not stash and not dynamic:
        o, = outs
        if params:
            def step(env):
                env[o] = fwd(_new(cls), *fetch(env), **params)
        else:
            def step(env):
                env[o] = fwd(_new(cls), *fetch(env))
        return step

    def step(env):
        node = _new(cls)
        out = fwd(node, *fetch(env), **(_resolve(params, env) if dynamic else params))
        if not multi:
            env[outs[0]] = out
        else:
            for o, arr in zip(outs, out):
                env[o] = arr
        for attr, vid in stash:
            env[vid] = getattr(node, attr)
    return step


def _planned_step(n, buf, device, workspace):
    """`forward(..., out=)` into `buf` (a static array, or a `Recycled` one), the node's
    temporaries and stashed arrays drawn from `workspace`, kept across replays. A forward
    that is one ufunc of the array module (`forward.ufunc`) is skipped: the step calls the
    ufunc itself (the tiny-op path of graph mode)."""
    cls, fetch, o, stash = n.op, _fetch(n.args), n.outs[0], tuple(n.stash.items())
    fwd, params = cls.forward, n.params
    ufunc = getattr(fwd, "ufunc", None)
    if ufunc is not None and not isinstance(buf, Recycled) and not params and not stash:
        workspace.kept = ()  # no forward, no temporaries
        return _ufunc_step(n, getattr(backend.module_for(backend.device(device)), ufunc), buf)
    dynamic = bool(refs_in(params))
    take = buf.take if isinstance(buf, Recycled) else lambda: buf

    def step(env):
        node = _new(cls)
        node.workspace = workspace
        out = env[o] = fwd(node, *fetch(env), out=take(),
                           **(_resolve(params, env) if dynamic else params))
        for attr, vid in stash:
            env[vid] = getattr(node, attr)
        if workspace.kept is None:  # the first replay: what outlives the node
            workspace.keep([out] + [getattr(node, attr) for attr, _ in stash])
    return step


class Workspace(dict):
    """A planned node's temporaries ({`Op.scratch` name: array}), kept across replays. The
    first replay finds which of them outlive the node (its result, what it stashes for
    backward: `kept`); `share_workspaces` then makes the others views of one arena that all
    nodes share, as they run one at a time: a replay touches less memory (measured on
    benchmarks/compile.py's CNN: 67 MB of temporaries become 25 MB kept plus a 9 MB arena)."""

    kept = None  # names of arrays that outlive the node, known after its first run

    def keep(self, outliving):
        self.kept = {name for name, a in self.items()
                     if any(type(b) is type(a) and backend.array_module(a).may_share_memory(a, b)
                            for b in outliving)}


ARENA_ALIGN = 256  # bytes; also CUDA's allocation alignment


def share_workspaces(workspaces):
    """Rebind the temporaries of `workspaces` (not `kept`) to views of one arena per device,
    as large as the most any one node needs."""
    need, layouts = {}, []
    for ws in workspaces:
        layout, used = [], {}
        for name, a in ws.items():
            if name in ws.kept:
                continue
            dev = str(backend.device_of(a))
            layout.append((name, dev, used.get(dev, 0)))
            used[dev] = used.get(dev, 0) + -(-a.nbytes // ARENA_ALIGN) * ARENA_ALIGN
        for dev, n in used.items():
            need[dev] = max(need.get(dev, 0), n)
        layouts.append((ws, layout))
    arenas = {dev: creation.empty((n,), dtype=dtypes.uint8, device=dev)._data
              for dev, n in need.items()}
    for ws, layout in layouts:
        for name, dev, start in layout:
            a = ws[name]
            ws[name] = arenas[dev][start:start + a.nbytes].view(a.dtype).reshape(a.shape)


def _ufunc_step(n, ufunc, buf):
    o, refs = n.outs[0], [a.vid for a in n.args if isinstance(a, Ref)]
    if len(refs) == len(n.args) == 2:
        a, b = refs

        def step(env):
            env[o] = ufunc(env[a], env[b], out=buf)
    elif len(refs) == len(n.args) == 1:
        a, = refs

        def step(env):
            env[o] = ufunc(env[a], out=buf)
    elif len(refs) == 1 and len(n.args) == 2:  # an array and a Python scalar (x * 1.5)
        a, = refs
        if isinstance(n.args[0], Ref):
            c = n.args[1]

            def step(env):
                env[o] = ufunc(env[a], c, out=buf)
        else:
            c = n.args[0]

            def step(env):
                env[o] = ufunc(c, env[a], out=buf)
    else:
        fetch = _fetch(n.args)

        def step(env):
            env[o] = ufunc(*fetch(env), out=buf)
    return step


class Recycled:
    """The buffer of a value that leaves the graph (returned, or a leaf's `.grad`): replay
    writes into the array of the previous replay when nothing outside holds it any more (its
    reference count shows only this holder), else into a new one."""

    __slots__ = ("value", "array")
    FREE_REFS = 3  # the slot, `take`'s local and getrefcount's argument

    def __init__(self, value):
        self.value, self.array = value, None

    def take(self):
        arr = self.array
        if arr is None or sys.getrefcount(arr) > self.FREE_REFS:
            arr = self.array = empty_buffer(self.value)
        return arr


def _node_of(n, outs, args, params):
    """The Op instance that `Op.apply` made for node `n` (its outputs' grad_fn), or, when
    autograd recorded none, one whose forward runs again on the arrays."""
    node = outs[0].grad_fn
    if isinstance(node, n.op):
        return node
    node = _new(n.op)
    node.forward(*[a._data if isinstance(a, Tensor) else a for a in args], **params)
    return node


class TensorRunner(_Runner):
    """Replay through `Op.apply` (autograd records the ops, gradients flow as in eager)."""

    def __call__(self, tensors):
        g = self.graph
        self.tensors = tensors
        env = [None] * self.n
        for vid, t in zip(g.inputs, tensors):
            env[vid] = t
        for vid, obj in g.captured.items():
            env[vid] = obj if isinstance(obj, Tensor) else Tensor._make(obj)
        for vid, a in g.consts.items():
            env[vid] = Tensor._make(a.copy() if vid in g.mutated else a)

        def get(ref):
            t = env[ref.vid]
            return t if ref.tensor else t._data
        for n in g.nodes:
            if n.kind == "op":
                args, params = map_refs(n.args, get), map_refs(n.params, get)
                out = n.op.apply(*args, **params)
                outs = out if n.multi else (out,)
                for o, t in zip(n.outs, outs):
                    env[o] = t
                if n.stash:  # what later ops read of it (BatchNorm's batch statistics)
                    node = _node_of(n, outs, args, params)
                    for attr, vid in n.stash.items():
                        env[vid] = Tensor._make(getattr(node, attr))
            elif n.kind == "copy":
                s = env[n.args[0].vid]
                env[n.outs[0]] = Tensor._make(s._data.copy(), s.requires_grad, s.grad_fn,
                                              s._output_nr)
            elif n.kind == "write":
                _write_tensor(env[n.args[0].vid], env[n.args[1].vid])
            elif n.kind == "setitem":
                with no_grad():
                    tm.setitem(env[n.args[0].vid], map_refs(n.params["key"], get),
                               map_refs(n.args[1], get))
            else:  # "call"
                owner, method = n.target
                method(owner, *n.args, **n.params)
        out = self.wrap_output(env)  # may return an input tensor: before dropping them
        self.tensors = ()
        return out

    @staticmethod
    def as_output(t, shared):
        return Tensor._make(t._data.copy()) if shared else t


def _write_tensor(dst, src):
    """What `Tensor._write` plus the in-place rebinding of the graph do, on replay."""
    backend.array_module(dst._data).copyto(dst._data, src._data, casting="unsafe")
    dst._version[0] += 1
    if src.requires_grad:
        dst.grad_fn, dst._output_nr, dst.requires_grad = src.grad_fn, src._output_nr, True


def empty_buffer(value):
    """A new array for a planned buffer of `value`'s shape, dtype, device and layout (a
    channels-last value gets a (N, *s, C) array seen as (N, C, *s), as eager made it)."""
    shape = value.shape
    if value.channels_last:
        shape = (shape[0],) + shape[2:] + (shape[1],)
    arr = creation.empty(shape, dtype=dtypes.from_np(value.dtype), device=value.device)._data
    return arr.transpose((0, arr.ndim - 1) + tuple(range(1, arr.ndim - 1))) \
        if value.channels_last else arr
