"""`dt.autograd.backward` and `dt.autograd.grad`: argument checks around the engine."""
from dtrain.autograd import engine
from dtrain.core import creation
from dtrain.core.tensor import Tensor


def _as_list(x):
    return [x] if isinstance(x, Tensor) else list(x)


def _root_grads(outputs, grads, create_graph):
    out = []
    grads = [None] * len(outputs) if grads is None else _as_list(grads)
    if len(grads) != len(outputs):
        raise RuntimeError(f"got {len(grads)} gradients for {len(outputs)} outputs")
    for i, (t, g) in enumerate(zip(outputs, grads)):
        if not t.requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not have "
                               "a grad_fn")
        if g is None:
            if t._data.size != 1:
                raise RuntimeError(f"grad can be implicitly created only for scalar outputs "
                                   f"(output {i} has shape {list(t._data.shape)})")
            g = creation.ones_like(t)
        elif not isinstance(g, Tensor):
            g = creation.tensor(g, dtype=t.dtype, device=t.device)
        elif g._data.shape != t._data.shape:
            raise RuntimeError(f"Mismatch in shape: grad_output[{i}] has a shape of "
                               f"{list(g._data.shape)} and output[{i}] has a shape of "
                               f"{list(t._data.shape)}.")
        elif not create_graph:
            g = g.detach()
        out.append(g)
    return out


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """Accumulate gradients of `tensors` into the `.grad` of the leaves (or of `inputs`)."""
    tensors = _as_list(tensors)
    grads = _root_grads(tensors, grad_tensors, create_graph)
    accumulate = None
    if inputs is not None:
        accumulate = set(_as_list(inputs))
        if any(t.grad_fn is not None for t in accumulate):
            raise RuntimeError("backward(inputs=...) supports leaf tensors only in dtrain")
    engine.execute(tensors, grads, create_graph if retain_graph is None else retain_graph,
                   create_graph, accumulate=accumulate)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False, materialize_grads=False):
    """Gradients of `outputs` with respect to `inputs`, returned instead of accumulated."""
    outputs = _as_list(outputs)
    inputs = _as_list(inputs)
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            raise RuntimeError(f"One of the differentiated Tensors (input {i}) does not require "
                               "grad")
    grads = _root_grads(outputs, grad_outputs, create_graph)
    keys = [t if t.grad_fn is None else (t.grad_fn, t._output_nr) for t in inputs]
    captured = engine.execute(outputs, grads,
                              create_graph if retain_graph is None else retain_graph,
                              create_graph, capture=set(keys))
    result = []
    for i, (k, t) in enumerate(zip(keys, inputs)):
        g = captured.get(k)
        if g is None:
            if materialize_grads:
                g = creation.zeros_like(t)
            elif not allow_unused:
                raise RuntimeError(f"One of the differentiated Tensors (input {i}) appears to "
                                   "not have been used in the graph. Set allow_unused=True if "
                                   "this is the desired behavior.")
        result.append(g)
    return tuple(result)
