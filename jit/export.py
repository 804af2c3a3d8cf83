"""`dt.jit.save` / `dt.jit.load`: a traced graph plus its weights, for serving.

The file is a dtrain checkpoint (`dt.save`: JSON header + raw array bytes, no pickle). It
holds the graph as JSON — each node names its op by its registry name, with params encoded
explicitly (tuples, slices, None, dtypes, NumPy scalars are tagged) — and the captured
tensors (weights) and constants as arrays. `load` rebuilds the graph from the op registry:
the model's Python class is not needed and nothing in the file is executed.
"""
import json

import numpy as np

from dtrain.autograd.grad_mode import state
from dtrain.autograd.registry import REGISTRY
from dtrain.core import dtype as dtypes
from dtrain.core import serialization
from dtrain.core.device import device as Device
from dtrain.core.tensor import Tensor
from dtrain.jit.executor import ArrayRunner, TensorRunner
from dtrain.jit.graph import CAPTURED, Graph, Node, Ref, Value
from dtrain.jit.passes import PASSES, check_passes, optimize

FORMAT, VERSION = "dtrain.jit", 1


def save(traced, f):
    """Write the graph of `traced` (from `dt.jit.trace`, or a `Graph`) and its weights to
    the path or binary file `f`. Only graphs of registry ops (no backward, optimizer or
    in-place effects) can be exported: trace the model's forward, e.g. under `dt.no_grad()`."""
    graph = traced if isinstance(traced, Graph) else getattr(traced, "graph", None)
    if graph is None:
        raise TypeError(f"dt.jit.save expects a traced function or a Graph, got "
                        f"{type(traced).__name__}")
    effects = sorted({n.name() for n in graph.nodes if n.kind != "op"})
    if effects:
        raise ValueError(f"dt.jit.save: the graph has effects that only make sense in this "
                         f"process ({', '.join(effects)}); export a pure forward function "
                         f"(e.g. dt.jit.trace(model.eval(), example) under dt.no_grad())")
    nodes = []
    ops = [m for n in graph.nodes for m in getattr(n.op, "members", (n,))]  # unfused
    for i, n in enumerate(ops):
        name = getattr(n.op, "op_name", None)
        if name is None or REGISTRY.get(name) is None or REGISTRY[name].op is not n.op:
            raise ValueError(f"dt.jit.save: op {n.op.__name__} (step {i}) is not in the op "
                             f"registry")
        nodes.append({"op": name, "args": _enc(n.args, f"{name} args"),
                      "params": _enc(n.params, f"{name} params"), "outs": list(n.outs),
                      "stash": [[k, v] for k, v in n.stash.items()],
                      "aliases": list(n.aliases), "multi": n.multi})
    spec = {"values": [[v.kind, list(v.shape), dtypes.from_np(v.dtype).name, v.device]
                       for v in graph.values],
            "inputs": list(graph.inputs), "nodes": nodes,
            "output": _enc(graph.output, "output")}
    arrays = [[vid, _tensor(obj)] for vid, obj in graph.captured.items()]
    arrays += [[vid, Tensor._make(arr)] for vid, arr in graph.consts.items()]
    serialization.save({"format": FORMAT, "version": VERSION, "graph": json.dumps(spec),
                        "arrays": arrays}, f)


def load(f, map_location=None, passes=PASSES):
    """Rebuild a saved graph as a callable (`.graph`, `.weights`)."""
    obj = serialization.load(f, map_location)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise RuntimeError(f"dt.jit.load: {f} is a dtrain checkpoint but not a saved graph")
    if obj.get("version") != VERSION:
        raise RuntimeError(f"dt.jit.load: unsupported graph format version {obj.get('version')}")
    spec = json.loads(obj["graph"])
    g = Graph()
    g.values = [Value(kind, tuple(shape), dtypes.from_any(dt).np, dev)
                for kind, shape, dt, dev in spec["values"]]
    g.inputs = spec["inputs"]
    for n in spec["nodes"]:
        info = REGISTRY.get(n["op"])
        if info is None or info.op is None:
            raise RuntimeError(f"dt.jit.load: op {n['op']!r} is not in this dtrain's op "
                               f"registry (is the module that registers it imported?)")
        g.nodes.append(Node("op", info.op, _dec(n["args"]), _dec(n["params"]),
                            tuple(n["outs"]), dict(n["stash"]), aliases=tuple(n["aliases"]),
                            multi=n["multi"]))
    g.output = _dec(spec["output"])
    for vid, t in obj["arrays"]:
        if g.values[vid].kind == CAPTURED:
            g.captured[vid] = t
        else:
            g.consts[vid] = t._data
    return LoadedGraph(g, check_passes(passes))


def _tensor(obj):
    return obj.detach() if isinstance(obj, Tensor) else Tensor._make(obj)


class LoadedGraph:
    """A graph loaded by `dt.jit.load`: call it with tensors of the saved signature."""

    def __init__(self, graph, passes):
        self.graph = graph
        self.weights = [t for t in graph.captured.values()]
        self._plan = optimize(graph, passes)
        self._fast = self._grad = None

    def __call__(self, *tensors):
        g = self.graph
        if len(tensors) != len(g.inputs):
            raise TypeError(f"this graph takes {len(g.inputs)} tensors, got {len(tensors)}")
        for i, (t, vid) in enumerate(zip(tensors, g.inputs)):
            v = g.values[vid]
            if not isinstance(t, Tensor) or t._data.shape != v.shape or t._data.dtype != v.dtype:
                got = (f"{t.dtype.name}{list(t.shape)}" if isinstance(t, Tensor)
                       else type(t).__name__)
                raise RuntimeError(f"input {i}: the graph was traced for {v.describe()}, got "
                                   f"{got}")
        if state.enabled and any(t.requires_grad for t in tensors + tuple(self.weights)):
            if self._grad is None:
                self._grad = TensorRunner(g)
            return self._grad(tensors)
        if self._fast is None:
            self._fast = ArrayRunner(g, self._plan)
        return self._fast(tensors)


# -- params as JSON, every non-JSON type tagged ------------------------------------------------
def _enc(obj, where):
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, Ref):
        return {"ref": obj.vid, "tensor": obj.tensor}
    if isinstance(obj, (int, float)):
        return obj
    if isinstance(obj, (tuple, list)):
        return {type(obj).__name__: [_enc(o, where) for o in obj]}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError(f"dt.jit.save: {where}: dict keys must be strings")
        return {"dict": [[k, _enc(v, where)] for k, v in obj.items()]}
    if isinstance(obj, slice):
        return {"slice": [_enc(p, where) for p in (obj.start, obj.stop, obj.step)]}
    if obj is Ellipsis:
        return {"ellipsis": None}
    if isinstance(obj, dtypes.dtype):
        return {"dtype": obj.name}
    if isinstance(obj, np.dtype):
        return {"np_dtype": dtypes.from_np(obj).name}
    if isinstance(obj, np.generic):
        return {"scalar": obj.item(), "dtype": dtypes.from_np(obj.dtype).name}
    if isinstance(obj, Device):
        return {"device": str(obj)}
    raise TypeError(f"dt.jit.save: {where}: cannot export a value of type "
                    f"{type(obj).__name__} ({obj!r})")


def _dec(obj):
    if not isinstance(obj, dict):
        return obj
    if "ref" in obj:
        return Ref(obj["ref"], obj["tensor"])
    if "scalar" in obj:
        return dtypes.from_any(obj["dtype"]).np.type(obj["scalar"])
    (tag, val), = obj.items()
    if tag in ("tuple", "list"):
        items = [_dec(o) for o in val]
        return tuple(items) if tag == "tuple" else items
    if tag == "dict":
        return {k: _dec(v) for k, v in val}
    if tag == "slice":
        return slice(*[_dec(p) for p in val])
    if tag == "ellipsis":
        return Ellipsis
    if tag == "dtype":
        return dtypes.from_any(val)
    if tag == "np_dtype":
        return dtypes.from_any(val).np
    if tag == "device":
        return Device(val)
    raise RuntimeError(f"dt.jit.load: unknown tag {tag!r} in the graph")
