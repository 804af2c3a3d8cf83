"""Exact rewrites of recorded graphs that eager code cannot make, as it runs one op at a time.

`relu_pool(graph)`: the gradient through relu followed by max pooling. Backward of
`p = max_pool(y), y = relu(x)` records

    gy = max_pool_grad(gp, taps)        # the pooled gradient scattered to full size
    gx = gy * (y > 0)                   # relu's mask, over the full size

Each window's gradient goes to its winning tap t, where y[t] is the window's maximum p[j],
so the mask can be taken on the pooled side instead: `gx = max_pool_grad(gp * (p > 0),
taps)`, the same values (sums of overlapping windows too: every term reaching t carries
the mask of y[t]), whatever made y (relu's backward is this mask). For 2x2 pools the mask
and the product run on a quarter of the elements, and two full-size passes go: measured on
benchmarks/compile.py's CNN, its two pools' gradients 11.3 -> 6.8 ms, the compiled step
0.94-0.97 -> 0.86-0.88 of eager. Not the same only where a window holds a NaN (its maximum
is NaN, whose mask is 0, while its winning tap may be a number).
"""
from dataclasses import replace

import numpy as np

from dtrain.jit.graph import OP, Node, Ref, refs_in


def relu_pool(g):
    """Rewrite every relu -> max_pool gradient of `g` in place (see the module doc)."""
    producer, uses = {}, {}
    for i, n in enumerate(g.nodes):
        for o in n.outs:
            producer[o] = i
        for r in n.refs():
            uses[r.vid] = uses.get(r.vid, 0) + 1
    for r in refs_in(g.output):
        uses[r.vid] = uses.get(r.vid, 0) + 1
    pooled_from = {n.stash["taps"]: n for n in g.nodes
                   if n.kind == "op" and _is(n, "max_pool") and "taps" in n.stash}
    replaced = {}
    for i, n in enumerate(g.nodes):
        found = _match(g, n, producer, uses, pooled_from)
        if found is not None:
            replaced[i] = found
    if not replaced:
        return
    dropped = {j for found in replaced.values() for j in found[1]}
    nodes = []
    for i, n in enumerate(g.nodes):
        if i in replaced:
            nodes.extend(replaced[i][0])
        elif i not in dropped:
            nodes.append(n)
    g.nodes = nodes


def _is(n, name):
    return getattr(n.op, "op_name", None) == name


def _match(g, mul, producer, uses, pooled_from):
    """(new nodes, indices of the nodes they replace) when `mul` is `max_pool_grad(...) *
    (y > 0)` with y the input of the pool that gave the taps; else None."""
    if mul.kind != "op" or not _is(mul, "mul") or mul.params or len(mul.args) != 2 or \
            not all(isinstance(a, Ref) for a in mul.args) or g.mutated & set(mul.outs):
        return None
    for grad, mask in (mul.args, mul.args[::-1]):
        gi, mi = producer.get(grad.vid), producer.get(mask.vid)
        if gi is None or mi is None or uses.get(grad.vid) != 1 or uses.get(mask.vid) != 1:
            continue
        scatter, gt = g.nodes[gi], g.nodes[mi]
        if not (scatter.kind == gt.kind == "op" and _is(scatter, "max_pool_grad")
                and _is(gt, "gt") and not gt.params and len(gt.args) == 2
                and isinstance(gt.args[0], Ref) and gt.args[1] in (0, 0.0)
                and isinstance(scatter.params.get("taps"), Ref)):
            continue
        pool = pooled_from.get(scatter.params["taps"].vid)
        if pool is None or pool.args[0] != gt.args[0] or scatter.args[0].vid in g.mutated:
            continue
        pooled_grad, pooled = scatter.args[0], Ref(pool.outs[0])
        # both laid out as the pooled gradient: a product of a bool array and a float one
        # in different layouts is ~10x slower (numpy's buffered cast of a strided walk)
        pooled_mask = _new_value(g, pooled_grad.vid, bool)
        masked = _new_value(g, pooled_grad.vid, g.values[mul.outs[0]].dtype)
        new = [Node("op", gt.op, (pooled, 0), outs=(pooled_mask,)),
               Node("op", mul.op, (pooled_grad, Ref(pooled_mask)), outs=(masked,)),
               replace(scatter, args=(Ref(masked),), outs=mul.outs)]
        return new, (gi, mi)
    return None


def _new_value(g, like, dtype):
    """A new op value shaped and laid out like value `like`, of `dtype`."""
    g.values.append(replace(g.values[like], kind=OP, dtype=np.dtype(dtype)))
    return len(g.values) - 1
