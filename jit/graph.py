"""The captured graph: values, nodes (registry ops and explicit effects) and outputs.

Every array a traced function touches is a numbered *value*: an input, a captured tensor
(a parameter or buffer, read by reference at replay), a constant, or the output of a node.
Nodes are registry ops (`kind == "op"`: an `Op` class, its arguments and params) or effects
that replay re-executes because they are not ops: in-place writes, gradient accumulation
into a leaf's `.grad`, backward callbacks and calls of `@effect` methods (optimizer steps).
A call node's `args`/`params` are the call's own positional and keyword arguments.
"""
from dataclasses import dataclass, field

from dtrain.core import backend
from dtrain.core import dtype as dtypes

INPUT, CAPTURED, CONST, OP, STASH, EFFECT = "input", "captured", "const", "op", "stash", "effect"
EFFECTS = ("write", "setitem", "accumulate", "callbacks", "call")
OPAQUE = ("callbacks", "call")  # effects whose writes the graph does not see (any tensor)


class Ref:
    """A graph value used as an argument; `tensor` says whether the traced call passed a
    Tensor (True) or its raw array (False)."""

    __slots__ = ("vid", "tensor")

    def __init__(self, vid, tensor=True):
        self.vid, self.tensor = vid, tensor

    def __eq__(self, other):
        return isinstance(other, Ref) and (self.vid, self.tensor) == (other.vid, other.tensor)

    def __hash__(self):
        return hash((Ref, self.vid, self.tensor))

    def __repr__(self):
        return f"%{self.vid}"


@dataclass
class Value:
    kind: str
    shape: tuple
    dtype: object  # numpy dtype
    device: str = "cpu"
    channels_last: bool = False  # stored (N, *s, C) as a conv's output: planned alike

    def describe(self):
        return f"{dtypes.from_np(self.dtype).name}{list(self.shape)}"


@dataclass
class Node:
    """One step of the graph. `args`/`params` hold Refs where graph values are used;
    `outs` are the values it defines; `stash` maps the arrays that the op declares its
    forward leaves on itself for backward (`Op.saves`: masks, indices) to values."""

    kind: str                 # "op" or one of EFFECTS
    op: type = None           # the Op class (kind "op")
    args: tuple = ()
    params: dict = field(default_factory=dict)
    outs: tuple = ()
    stash: dict = field(default_factory=dict)
    target: object = None     # accumulate: the leaf's Ref; call: (object, method function)
    aliases: tuple = ()       # positions of array args the output may share memory with
    multi: bool = False       # forward returns a tuple of outputs

    def refs(self):
        """Every Ref this node reads (args, params, target)."""
        return refs_in((self.args, self.params, self.target))

    def name(self):
        if self.kind == "op":
            return getattr(self.op, "op_name", self.op.__name__.lower())
        if self.kind == "call":
            return f"call {type(self.target[0]).__name__}.{self.target[1].__name__}"
        return self.kind


def refs_in(obj):
    """The Refs inside `obj` (nested tuples/lists/dicts), in order."""
    out = []
    map_refs(obj, out.append)
    return out


def map_refs(obj, fn):
    """`obj` (nested tuples, named tuples, lists, dicts) with every Ref replaced by
    `fn(ref)`."""
    if isinstance(obj, Ref):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        items = [map_refs(o, fn) for o in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    if isinstance(obj, dict):
        return {k: map_refs(v, fn) for k, v in obj.items()}
    return obj


class Graph:
    """A recorded function: `values`, `nodes` in execution order, `inputs` (value ids of
    the flattened tensor arguments), `captured` {vid: Tensor or array read at replay},
    `consts` {vid: array}, `output` (the returned structure with Refs for values)."""

    def __init__(self):
        self.values = []
        self.nodes = []
        self.inputs = []
        self.captured = {}
        self.consts = {}
        self.output = None
        self.has_backward = False  # ops recorded inside backward, or leaf-grad effects
        self.mutated = set()       # values written in place by effects
        self.custom_functions = set()  # autograd.Function nodes met (no autograd replay)

    def new_value(self, kind, arr):
        self.values.append(Value(kind, tuple(arr.shape), arr.dtype, _device(arr),
                                 backend.stored_channels_last(arr)))
        return len(self.values) - 1

    def __str__(self):
        ins = ", ".join(f"%{v}: {self.values[v].describe()}" for v in self.inputs)
        lines = [f"graph({ins}):"]
        for vid, obj in self.captured.items():
            lines.append(f"  %{vid} = captured {self.values[vid].describe()}")
        for vid, arr in self.consts.items():
            lines.append(f"  %{vid} = constant {self.values[vid].describe()}")
        for n in self.nodes:
            lines.append("  " + _node_line(self, n))
        lines.append(f"  return {_fmt(self.output)}")
        return "\n".join(lines)

    __repr__ = __str__


def _node_line(graph, n):
    if n.kind == "accumulate":
        return f"%{n.outs[0]} = accumulate_grad({_fmt(n.target)}.grad, {_fmt(n.args[0])})"
    args = [_fmt(a) for a in n.args]
    args += [f"{k}={_fmt(v)}" for k, v in n.params.items()]
    call = f"{n.name()}({', '.join(args)})"
    if not n.outs:
        return call
    outs = ", ".join(f"%{v}" for v in n.outs)
    types = ", ".join(graph.values[v].describe() for v in n.outs)
    return f"{outs} = {call}  # {types}"


def _fmt(obj):
    if isinstance(obj, tuple):
        return "(" + ", ".join(_fmt(o) for o in obj) + ("," if len(obj) == 1 else "") + ")"
    if isinstance(obj, list):
        return "[" + ", ".join(_fmt(o) for o in obj) + "]"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{k!r}: {_fmt(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, slice):
        return ":".join("" if p is None else str(p) for p in (obj.start, obj.stop, obj.step))
    return repr(obj)


def _device(arr):
    return str(backend.device_of(arr))
