"""Function transforms in the style of `torch.autograd.functional`: vjp, jvp, jacobian.

Forward mode (`jvp`) uses the double-backward trick, as PyTorch's `functional.jvp` does:
g(u) = J^T u is linear in u, so differentiating <g(u), v> with respect to u gives J v.
It is exact (not a finite difference) and correct for every op whose backward is built
from differentiable ops — which is every op of the registry.
"""
from dtrain.autograd.api import grad
from dtrain.autograd.grad_mode import enable_grad
from dtrain.autograd.ops.shape import stack
from dtrain.core import creation
from dtrain.core.tensor import Tensor


def _tuple(x):
    return (x,) if isinstance(x, Tensor) else tuple(x)


def _prepare(inputs):
    return tuple(t.detach().requires_grad_(True) for t in _tuple(inputs))


def _finish(values, single, create_graph):
    values = tuple(v if v is None or create_graph else v.detach() for v in values)
    return values[0] if single else values


def vjp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(*inputs), v^T J): the vector-Jacobian product at `inputs`."""
    single_in = isinstance(inputs, Tensor)
    with enable_grad():
        xs = _prepare(inputs)
        out = func(*xs)
        outs = _tuple(out)
        vs = None if v is None else _tuple(v)
        grads = grad(outs, xs, vs, create_graph=create_graph, allow_unused=True,
                      materialize_grads=True)
    return _finish(outs, isinstance(out, Tensor), create_graph), \
        _finish(grads, single_in, create_graph)


def jvp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(*inputs), J v): the Jacobian-vector product (forward-mode derivative)."""
    with enable_grad():
        xs = _prepare(inputs)
        vs = _tuple(v) if v is not None else tuple(creation.ones_like(x) for x in xs)
        for x, t in zip(xs, vs):
            if x._data.shape != t._data.shape:
                raise RuntimeError(f"jvp: tangent of shape {list(t._data.shape)} for an input of "
                                   f"shape {list(x._data.shape)}")
        out = func(*xs)
        outs = _tuple(out)
        us = tuple(creation.zeros_like(o).requires_grad_(True) for o in outs)
        g = grad(outs, xs, us, create_graph=True, allow_unused=True)
        pairs = [(gi, vi) for gi, vi in zip(g, vs) if gi is not None and gi.requires_grad]
        if pairs:
            jv = grad([p[0] for p in pairs], us, [p[1] for p in pairs],
                      create_graph=create_graph, allow_unused=True, materialize_grads=True)
        else:
            jv = tuple(creation.zeros_like(o) for o in outs)
    return _finish(outs, isinstance(out, Tensor), create_graph), \
        _finish(jv, isinstance(out, Tensor), create_graph)


def jacobian(func, inputs, create_graph=False):
    """The full Jacobian d func / d inputs, by one vjp per output element."""
    single_in = isinstance(inputs, Tensor)
    with enable_grad():
        xs = _prepare(inputs)
        out = func(*xs)
        outs = _tuple(out)
        rows = []
        for o in outs:
            per_input = [[] for _ in xs]
            flat = o.reshape(-1)
            for k in range(flat._data.shape[0]):
                gs = grad([flat[k]], xs, retain_graph=True, create_graph=create_graph,
                          allow_unused=True, materialize_grads=True)
                for i, g in enumerate(gs):
                    per_input[i].append(g)
            blocks = []
            for x, gs in zip(xs, per_input):
                j = stack(gs) if gs else creation.zeros(0, *x._data.shape, dtype=x.dtype)
                blocks.append(j.reshape(*o._data.shape, *x._data.shape))
            rows.append(blocks[0] if single_in else tuple(blocks))
    return rows[0] if isinstance(out, Tensor) else tuple(rows)
