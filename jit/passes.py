"""Optimization passes on a captured `Graph`, each switchable by name:

- "dce": dead-code elimination (ops whose values nothing uses; effects are always kept);
- "fold": constant folding (ops whose inputs are all constants run once, at compile time);
- "cse": common-subexpression elimination (the same op on the same values runs once);
- "memory_plan": elementwise ops, relu (when backward does not read its mask), matmul and
  linear become backend kernels (`ufunc(..., out=)`) writing into buffers allocated once
  and shared by values whose lifetimes do not overlap, so that a replay after warm-up
  allocates no new arrays for them;
- "fusion": chains of elementwise kernels are evaluated in place (a kernel writes into the
  buffer of an input that dies there) — CPU and CUDA alike through the backend's ufuncs.
  (Generating fused CUDA kernels with `cupy.fuse` / `ElementwiseKernel` is not done.)
"""
from numbers import Real

from dtrain.autograd.ops import linalg, pointwise
from dtrain.core import backend
from dtrain.jit.executor import empty_buffer
from dtrain.jit.graph import CONST, Ref, map_refs, refs_in
from dtrain.nn.linear import Addmm

PASSES = ("dce", "fold", "cse", "memory_plan", "fusion")

P = pointwise
ELEMENTWISE = {P.Add: "add", P.Sub: "subtract", P.Mul: "multiply", P.Div: "true_divide",
               P.Neg: "negative", P.Exp: "exp", P.Log: "log", P.Tanh: "tanh", P.Sqrt: "sqrt",
               P.Sin: "sin", P.Cos: "cos", P.Abs: "absolute", P.Relu: "relu"}
MATRIX = {linalg.Matmul: "matmul", Addmm: "linear"}  # kernels that never run in place


def _relu(xp):
    def relu(x, out=None):
        return xp.maximum(x, 0, out=out)
    return relu


def _linear(xp):
    def linear(x, weight, bias, out=None):
        y = xp.matmul(x, weight.T, out=out)
        if bias is not None:
            y += bias
        return y
    return linear


def kernel_for(name, device):
    """The backend function for kernel `name` on `device` (all take `out=`)."""
    xp = backend.module_for(backend.normalize_device(device))
    return {"relu": _relu, "linear": _linear}.get(name, lambda xp: getattr(xp, name))(xp)


def check_passes(passes):
    unknown = [p for p in passes if p not in PASSES]
    if unknown:
        raise ValueError(f"unknown dtrain.jit pass(es) {unknown}; available: {list(PASSES)}")
    return tuple(passes)


def optimize(graph, passes):
    """Run the graph passes in `passes` on `graph` (in place); returns the memory plan
    {node index: (kernel, buffer or None)} for `ArrayRunner` ({} without "memory_plan")."""
    if "fold" in passes:
        fold(graph)
    if "cse" in passes:
        cse(graph)
    if "dce" in passes:
        dce(graph)
    if "memory_plan" in passes:
        return plan_memory(graph, fuse="fusion" in passes)
    return {}


def dce(g):
    live = {r.vid for r in refs_in(g.output)}
    keep = []
    for n in reversed(g.nodes):
        if n.kind in ("op", "copy"):
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
        if n.kind == "op" and all(r.vid in const for r in n.refs()) \
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
    keep = []
    for n in g.nodes:
        n.args, n.params = map_refs(n.args, rn), map_refs(n.params, rn)
        if isinstance(n.target, Ref):
            n.target = rn(n.target)
        key = None
        if n.kind == "op" and not g.mutated.intersection(r.vid for r in n.refs()) \
                and not g.mutated.intersection(n.outs):
            key = _freeze((n.op, n.args, n.params))
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
def _kernel(g, n):
    """The backend kernel name for op node `n`, or None when its forward must run."""
    name = ELEMENTWISE.get(n.op) or MATRIX.get(n.op)
    if name is None or n.stash or n.multi or n.params:
        return None
    out = g.values[n.outs[0]]
    if out.dtype.kind != "f":
        return None
    for a in n.args:
        if isinstance(a, Ref):
            if g.values[a.vid].dtype != out.dtype:
                return None
        elif name in MATRIX.values() and a is None:  # linear without bias
            continue
        elif isinstance(a, bool) or not isinstance(a, Real):
            return None
    if name in MATRIX.values() and any(
            not isinstance(a, Ref) or len(g.values[a.vid].shape) < 2 for a in n.args[:2]):
        return None
    return name


def plan_memory(g, fuse):
    """{node index: (kernel, buffer)}: kernels write into shared, preallocated buffers.

    A kernel's output gets a buffer unless it escapes: it (or a view of it) is returned,
    handed to a leaf's `.grad`, stored by an in-place write, or itself written in place.
    A buffer is free again once the last use of its value (and of views of it) has passed;
    with `fuse`, an elementwise kernel may write into the buffer of an input that dies at
    that very node (in-place evaluation of elementwise chains)."""
    nodes = g.nodes
    kernels = {i: _kernel(g, n) for i, n in enumerate(nodes) if n.kind == "op"}
    kernels = {i: k for i, k in kernels.items() if k is not None}
    last = {}
    for i, n in enumerate(nodes):
        for r in n.refs():
            last[r.vid] = i
    end = len(nodes)
    escaping = {r.vid for r in refs_in(g.output)} | set(g.mutated)
    for n in nodes:
        if n.kind in ("accumulate", "setitem"):
            escaping.update(r.vid for r in n.refs())
    # roots[v]: kernel outputs that value v may share memory with (through views)
    roots = {}
    for i, n in enumerate(nodes):
        if i in kernels:
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
    life = {o: i for i, n in enumerate(nodes) if i in kernels for o in n.outs}
    dead = set()
    for v, rs in roots.items():
        for root in rs:
            life[root] = max(life[root], end if v in escaping else last.get(v, 0))
            if v in escaping:
                dead.add(root)
    plan, pool, owner, frees = {}, {}, {}, {}
    for i, n in enumerate(nodes):
        name = kernels.get(i)
        if name is not None:
            o = n.outs[0]
            value = g.values[o]
            kernel = kernel_for(name, value.device)
            if o in dead:
                plan[i] = (kernel, None)
            else:
                key = (value.shape, value.dtype, value.device)
                buf = _dying_input(n, i, key, owner, life, roots, frees) if fuse and \
                    name not in MATRIX.values() else None
                if buf is None:
                    free = pool.get(key)
                    buf = free.pop() if free else empty_buffer(value)
                owner[o] = entry = (key, buf)
                plan[i] = (kernel, buf)
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
