"""Optimization passes on a captured `Graph`, each switchable by name:

- "dce": dead-code elimination (ops whose values nothing uses; effects are always kept);
- "fold": constant folding (ops whose inputs are all constants run once, at compile time);
- "cse": common-subexpression elimination (the same op on the same values runs once, unless
  an opaque effect, such as an optimizer step, runs between the two: it may have changed
  the values in place);
- "relu_pool": relu's gradient mask taken after a following max pool's, on the pooled
  gradient (jit/rewrites.py; exact);
- "memory_plan": every op that can write its result into a given array (the table of
  memory_plan.py) gets one: values that stay inside the graph share buffers allocated once,
  by disjoint lifetimes; values that leave it (returned, handed to a leaf's `.grad`) get a
  buffer that is reused once nothing outside holds it any more. After warm-up, a replay allocates no
  new arrays for those ops;
- "fusion": chains of elementwise ops are evaluated in place (an op writes into the
  buffer of an input that dies there) — CPU and CUDA alike through the backend's ufuncs.
  On CUDA, each chain of single-ufunc ops is first compiled into one kernel by `cupy.fuse`
  (jit/fusion.py; that path is untested without a GPU).
Random ops (`Op.random`) are never folded, merged or dropped: each replay draws anew, in
eager order. Kept ops (`Op.kept`: checks that raise on invalid values) are never dropped.
"""
from dtrain.core import backend
from dtrain.jit.executor import Recycled, empty_buffer
from dtrain.jit.fusion import fuse_elementwise
from dtrain.jit.graph import CONST, OPAQUE, Ref, map_refs, refs_in
from dtrain.jit.memory_plan import COPY, IN_PLACE, out_mode
from dtrain.jit.rewrites import relu_pool

PASSES = ("dce", "fold", "cse", "relu_pool", "memory_plan", "fusion")


def check_passes(passes):
    unknown = [p for p in passes if p not in PASSES]
    if unknown:
        raise ValueError(f"unknown dtrain.jit pass(es) {unknown}; available: {list(PASSES)}")
    return tuple(passes)


def optimize(graph, passes):
    """Run the graph passes in `passes` on `graph` (in place); returns the memory plan
    {node index: buffer (an array or a `Recycled`)} for `ArrayRunner` ({} without
    "memory_plan")."""
    if "fold" in passes:
        fold(graph)
    if "cse" in passes:
        cse(graph)
    if "relu_pool" in passes:
        relu_pool(graph)
    if "dce" in passes:
        dce(graph)
    if "fusion" in passes and graph.values \
            and all(v.device.startswith("cuda") for v in graph.values):
        fuse_elementwise(graph, backend.require_cuda().fuse)
    if "memory_plan" in passes:
        return plan_memory(graph, fuse="fusion" in passes)
    return {}


def dce(g):
    live = {r.vid for r in refs_in(g.output)}
    keep = []
    for n in reversed(g.nodes):
        if n.kind in ("op", "copy") and not (n.kind == "op" and (n.op.random or n.op.kept)):
            if not any(o in live for o in n.outs) and not any(
                    v in live for v in n.stash.values()):
                continue
            n.stash = {k: v for k, v in n.stash.items() if v in live}
        live.update(r.vid for r in n.refs())
        keep.append(n)
    g.nodes = keep[::-1]
    g.consts = {v: a for v, a in g.consts.items() if v in live}
    g.captured = {v: t for v, t in g.captured.items() if v in live}


def fold(g):
    const = set(g.consts) - g.mutated
    keep = []
    for n in g.nodes:
        if n.kind == "op" and not n.op.random and all(r.vid in const for r in n.refs()) \
                and not g.mutated.intersection(n.outs):
            node = object.__new__(n.op)
            try:
                out = node.forward(*map_refs(n.args, lambda r: g.consts[r.vid]),
                                   **map_refs(n.params, lambda r: g.consts[r.vid]))
            except Exception:  # leave it to replay, which reports errors as eager does
                keep.append(n)
                continue
            results = list(zip(n.outs, out if n.multi else (out,)))
            results += [(vid, getattr(node, attr)) for attr, vid in n.stash.items()]
            for vid, arr in results:
                g.consts[vid] = arr
                g.values[vid].kind = CONST
                const.add(vid)
            continue
        keep.append(n)
    g.nodes = keep


def cse(g):
    seen, rename = {}, {}

    def rn(r):
        return Ref(rename.get(r.vid, r.vid), r.tensor)
    keep, epoch = [], 0
    for n in g.nodes:
        n.args, n.params = map_refs(n.args, rn), map_refs(n.params, rn)
        if isinstance(n.target, Ref):
            n.target = rn(n.target)
        epoch += n.kind in OPAQUE  # parameters read after an optimizer step are new values
        key = None
        if n.kind == "op" and not n.op.random \
                and not g.mutated.intersection(r.vid for r in n.refs()) \
                and not g.mutated.intersection(n.outs):
            key = _freeze((epoch, n.op, n.args, n.params))
        prev = seen.get(key) if key is not None else None
        if prev is None:
            if key is not None:
                seen[key] = n
            keep.append(n)
            continue
        rename.update(zip(n.outs, prev.outs))
        for attr, vid in n.stash.items():
            if attr in prev.stash:
                rename[vid] = prev.stash[attr]
            else:
                prev.stash[attr] = vid
    g.nodes = keep
    g.output = map_refs(g.output, rn)


class _Unhashable(Exception):
    pass


def _freeze(obj):
    """A hashable key for op arguments (None if some argument cannot be compared)."""
    try:
        return _frozen(obj)
    except _Unhashable:
        return None


def _frozen(obj):
    if isinstance(obj, Ref):
        return ("ref", obj.vid, obj.tensor)
    if isinstance(obj, (tuple, list)):
        return (type(obj).__name__,) + tuple(_frozen(o) for o in obj)
    if isinstance(obj, dict):
        return ("dict",) + tuple((k, _frozen(v)) for k, v in obj.items())
    if isinstance(obj, slice):
        return ("slice", _frozen(obj.start), _frozen(obj.stop), _frozen(obj.step))
    try:
        hash(obj)
    except TypeError:
        raise _Unhashable from None
    return (type(obj).__name__, obj)


# -- memory plan --------------------------------------------------------------------------
def _plannable(g, n):
    """Whether op node `n` can write into a planned buffer: its op takes `out=`, it has one
    output, and a view op (COPY) copied when it was recorded, into a C-contiguous result.
    (What it stashes for backward, and its other temporaries, come from the node's scratch
    workspace: see `Op.scratch`.)"""
    if n.kind != "op" or n.multi:
        return False
    mode = out_mode(n.op)
    if mode == COPY:
        return not n.aliases and not g.values[n.outs[0]].channels_last
    return mode is not None


def plan_memory(g, fuse):
    """{node index: buffer} for the ops that write their result into a given array.

    A value escapes when it (or a view of it) is returned, handed to a leaf's `.grad`,
    stored by an in-place write, or itself written in place: it gets a `Recycled` buffer.
    Other values share static buffers: one is free again once the last use of its value
    (and of views of it) has passed; with `fuse`, an elementwise op may write into the
    buffer of an input that dies at that very node (in-place evaluation of chains)."""
    nodes = g.nodes
    planned = {i for i, n in enumerate(nodes) if _plannable(g, n)}
    last = {}
    for i, n in enumerate(nodes):
        for r in n.refs():
            last[r.vid] = i
    end = len(nodes)
    escaping = {r.vid for r in refs_in(g.output)} | set(g.mutated)
    for n in nodes:
        if n.kind in ("accumulate", "setitem"):
            escaping.update(r.vid for r in n.refs())
    # roots[v]: planned outputs that value v may share memory with (through views)
    roots = {}
    for i, n in enumerate(nodes):
        if i in planned:
            roots[n.outs[0]] = {n.outs[0]}
        elif n.kind == "op":
            shared = set()
            for p in n.aliases:
                shared |= roots.get(n.args[p].vid, set())
            stash_shared = set().union(*(roots.get(r.vid, set()) for r in n.refs()))
            for o in n.outs:
                roots[o] = shared
            for v in n.stash.values():
                roots[v] = stash_shared
    life = {nodes[i].outs[0]: i for i in planned}
    leaving = set()
    for v, rs in roots.items():
        for root in rs:
            life[root] = max(life[root], end if v in escaping else last.get(v, 0))
            if v in escaping:
                leaving.add(root)
    plan, pool, owner, frees = {}, {}, {}, {}
    for i, n in enumerate(nodes):
        if i in planned:
            o = n.outs[0]
            value = g.values[o]
            if o in leaving:
                plan[i] = Recycled(value)
            else:
                key = (value.shape, value.dtype, value.device, value.channels_last)
                buf = _dying_input(n, i, key, owner, life, roots, frees) \
                    if fuse and out_mode(n.op) == IN_PLACE else None
                if buf is None:
                    free = pool.get(key)
                    buf = free.pop() if free else empty_buffer(value)
                owner[o] = entry = (key, buf)
                plan[i] = buf
                frees.setdefault(life[o], []).append(entry)
        for key, buf in frees.pop(i, ()):
            pool.setdefault(key, []).append(buf)
    return plan


def _dying_input(n, i, key, owner, life, roots, frees):
    """The buffer of an input of elementwise node `n` (index i) that dies at this node and
    that no other argument views, so that the node can write its result there."""
    args = [a for a in n.args if isinstance(a, Ref)]
    for r in args:
        if r.vid not in owner or life[r.vid] != i or owner[r.vid][0] != key:
            continue
        if any(a.vid != r.vid and r.vid in roots.get(a.vid, ()) for a in args):
            continue
        entry = owner[r.vid]
        frees[i] = [e for e in frees[i] if e is not entry]
        return entry[1]
    return None
