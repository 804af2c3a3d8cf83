"""What the backward graph holds: the nodes behind some tensors and the arrays they saved.

A node's saved state is everything backward reads, as `node.saved_state()` answers: what an
op's class declares (`Op.saves`: its inputs, output and stashed arrays), a user Function's
`saved_tensors` and the tensors put on its ctx. Activation checkpointing drops that state
after forward and refills it from a recomputation (`drop_saved`, `take_saved`);
`saved_nbytes` measures it.
"""
from dtrain.autograd.node import Node
from dtrain.core import backend
from dtrain.core.tensor import Tensor


def tensors_in(value):
    """The tensors in `value`: a Tensor, or tuples, lists and dict values holding them."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in tensors_in(v)]
    return []


def nodes_since(tensors, seq):
    """{node.seq: node} for the live nodes behind `tensors` recorded at or after `seq`."""
    found = {}
    stack = [t.grad_fn for t in tensors if t.grad_fn is not None and t.grad_fn.seq >= seq]
    while stack:
        fn = stack.pop()
        if fn.seq in found or fn._freed:
            continue
        found[fn.seq] = fn
        stack.extend(e[0] for e in fn.next_edges
                     if e is not None and isinstance(e[0], Node) and e[0].seq >= seq)
    return found


def _arrays(value, out, params=True):
    """Append to `out` the backend arrays in `value` (tensors' arrays included), in order;
    `params=False` leaves out those of leaves that require grad."""
    if isinstance(value, Tensor):
        if params or value.grad_fn is not None or not value.requires_grad:
            out.append(value._data)
    elif hasattr(value, "__array_interface__") or backend.is_cuda_array(value):
        out.append(value)
    elif isinstance(value, dict):
        _arrays(list(value.values()), out, params)
    elif isinstance(value, (tuple, list)):
        for v in value:
            _arrays(v, out, params)
    return out


def saved_arrays(node, params=True):
    """The arrays that `node` holds for backward, in a fixed order (`params`: see _arrays)."""
    out = []
    for value in node.saved_state().values():
        _arrays(value, out, params)
    return out


def drop_saved(node):
    """Free the arrays `node` holds for backward; `take_saved` puts them back."""
    for name, value in node.saved_state().items():
        if _arrays(value, []):
            setattr(node, name, None)


def take_saved(node, twin):
    """Give `node` the saved state of `twin`, the same op recorded again on equal values."""
    for name, value in twin.saved_state().items():
        setattr(node, name, value)


def saved_nbytes(tensors, exclude=(), params=False):
    """Bytes of the arrays that the live graph behind `tensors` holds for backward: each
    memory block once (views count as their base), the arrays in `exclude` (gathered
    parameters, say) left out, and leaves that require grad (parameters) unless `params`."""
    blocks = {id(a if a.base is None else a.base): 0 for a in exclude}
    for node in nodes_since(tensors_in(tensors), 0).values():
        for a in saved_arrays(node, params=params):
            base = a if a.base is None else a.base
            blocks.setdefault(id(base), base.nbytes)
    return sum(blocks.values())
