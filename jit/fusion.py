"""Elementwise fusion: a connected group of single-ufunc ops becomes one graph node.

`fuse_elementwise(graph, wrap)` replaces each maximal group of ops whose forward is one ufunc
of the array module (`forward.ufunc`: add, mul, exp, tanh, comparisons...) by one node that
evaluates the group's program over its external inputs. `wrap` compiles the program: on
CUDA, `cupy.fuse` turns the whole chain into one kernel (one launch, no intermediate arrays
in GPU memory); tests on the CPU pass the identity, which evaluates the same program with
NumPy ufuncs.

A group has one result (the value of its last node). Its other values (intermediates) are
read only inside the group: not returned, not written in place, not read by effects or by
other ops. All its values have one shape and one device, and each step's dtype, as NumPy
resolves it for the arguments, equals the recorded (eager) dtype, so the fused program
computes what eager does. A group never spans an effect node (an in-place write, an
optimizer call...), which could change an input between the group's first and last op.
"""
import numpy as np

from dtrain.core import backend
from dtrain.jit.graph import EFFECTS, Node, Ref, refs_in

_SCALARS = (int, float, bool)


def fuse_elementwise(graph, wrap):
    """Fuse the elementwise groups of `graph` in place (see the module docstring); each
    group of n >= 2 nodes becomes one node at the position of its last node. `wrap` takes
    the group's program function (arrays -> array) and returns the callable to run."""
    g, nodes = graph, graph.nodes
    producer, users, segment, seg = {}, {}, [], 0
    for i, n in enumerate(nodes):
        seg += n.kind in EFFECTS
        segment.append(seg)
        for o in n.outs:
            producer[o] = i
        for r in n.refs():
            users.setdefault(r.vid, set()).add(i)
    pinned = {r.vid for r in refs_in(g.output)} | set(g.mutated)
    for n in nodes:
        if n.kind != "op":
            pinned.update(r.vid for r in n.refs())
    fusible = {i for i, n in enumerate(nodes) if _fusible(g, n)}
    groups, taken = {}, set()
    for last in sorted(fusible, reverse=True):
        if last in taken:
            continue
        group = _grow(g, nodes, last, fusible - taken, producer, users, pinned, segment)
        if len(group) >= 2:
            taken |= group
            groups[last] = sorted(group)
    if not groups:
        return
    merged = set().union(*groups.values())
    out = []
    for i, n in enumerate(nodes):
        if i in groups:
            out.append(_fused_node(g, [nodes[j] for j in groups[i]], wrap))
        elif i not in merged:
            out.append(n)
    g.nodes = out


def _fusible(g, n):
    """Whether op node `n` is one ufunc with array/Python-scalar arguments, whose dtype NumPy
    resolves as eager recorded it."""
    name = getattr(getattr(n.op, "forward", None), "ufunc", None) if n.kind == "op" else None
    if name is None or n.params or n.stash or n.multi or n.op.random:
        return False
    if not all(isinstance(a, Ref) or type(a) in _SCALARS for a in n.args):
        return False
    ufunc = getattr(np, name, None)
    if not isinstance(ufunc, np.ufunc) or ufunc.nout != 1 or ufunc.nin != len(n.args):
        return False
    dtypes = tuple(g.values[a.vid].dtype if isinstance(a, Ref) else type(a) for a in n.args)
    try:
        resolved = ufunc.resolve_dtypes(dtypes + (None,))
    except (TypeError, ValueError):  # no loop for these dtypes: leave it to the op
        return False
    return resolved[-1] == g.values[n.outs[0]].dtype


def _grow(g, nodes, last, free, producer, users, pinned, segment):
    """The group that ends at node `last`: producers of its arguments join while all their
    users are in the group and nothing pins their value."""
    value = g.values[nodes[last].outs[0]]
    group, todo = {last}, [last]
    while todo:
        for r in nodes[todo.pop()].refs():
            i = producer.get(r.vid)
            if i is None or i in group or i not in free or segment[i] != segment[last] \
                    or r.vid in pinned or not users[r.vid] <= group:
                continue
            v = g.values[r.vid]
            if (v.shape, v.device) != (value.shape, value.device):
                continue
            group.add(i)
            # the new member may complete the users of values already looked at
            todo.extend(group)
    return group


def _fused_node(g, members, wrap):
    """One op node computing `members` (in order) from their external inputs."""
    inside = {n.outs[0]: k for k, n in enumerate(members)}
    inputs, slots, steps = [], {}, []
    for n in members:
        args = []
        for a in n.args:
            if not isinstance(a, Ref):
                args.append(("const", a))
            elif a.vid in inside:
                args.append(("tmp", inside[a.vid]))
            else:
                if a.vid not in slots:
                    slots[a.vid] = len(inputs)
                    inputs.append(a)
                args.append(("in", slots[a.vid]))
        steps.append((n.op.forward.ufunc, tuple(args)))
    result = members[-1].outs[0]
    xp = backend.module_for(backend.device(g.values[result].device))
    name = "fused[" + ",".join(n.name() for n in members) + "]"
    return Node("op", _fused_op(name, _program(xp, steps), wrap, members), tuple(inputs),
                outs=(result,))


def _program(xp, steps):
    """arrays -> array: the group's ufuncs of `xp`, applied in order. A plain Python function
    of its arguments, as `cupy.fuse` requires (it traces it with symbolic arrays)."""
    ops = [(getattr(xp, name), args) for name, args in steps]

    def program(*arrays):
        tmps = []
        for ufunc, args in ops:
            tmps.append(ufunc(*[v if kind == "const" else (arrays if kind == "in" else tmps)[v]
                                for kind, v in args]))
        return tmps[-1]
    return program


def _fused_op(name, program, wrap, members):
    """A graph-only op class (not a registry `Op`: it has no backward, and graphs that need
    gradients replay through `TensorRunner`, which fusion never sees). `members` keeps the
    fused nodes, which `dt.jit.save` exports instead."""
    run = wrap(program)

    def forward(self, *arrays, out=None):
        result = run(*arrays)
        if out is None:
            return result
        # NOTE: CuPy documents no `out=` for a fused function, so the result is copied into
        # the planned buffer (one extra elementwise pass; the intermediates are still gone).
        backend.array_module(out).copyto(out, result)
        return out
    return type("FusedElementwise", (), {
        "forward": forward, "op_name": name, "random": False, "members": tuple(members),
        "__doc__": f"Graph-only fused op {name}."})
