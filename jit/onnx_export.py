"""`dt.onnx.export`: a model's graph-mode trace written as an ONNX model (served as
`dtrain.onnx`; see `_module_path` in dtrain/__init__.py for why it is not a root folder).

The model is traced in eval mode under `no_grad` (`dt.jit.trace`), so Dropout is gone and
BatchNorm reads its running statistics. Each registry op of the graph becomes ONNX operators
through one table, `ONNX_OPS`, keyed by the ops' registry names; an op without an entry is an
error naming it. Parameters, buffers and constants become initializers.

Dynamic axes. A trace holds concrete sizes: a reshape to (N, -1, 4, 4) bakes in the batch
size N, as do split sizes, slice bounds and zero initial states made for N. For each named
dynamic axis the model is traced again with that axis one longer; both graphs must have the
same ops, and every integer that differs is written as base + step * size, with `size` read
from the input at run time (Shape, Mul, Add, Concat). A captured array whose shape follows an
axis (an RNN's zero initial state) becomes ConstantOfShape when it holds one value, and is an
error otherwise.
"""
import inspect
import math
import os

import numpy as np

from dtrain.autograd.grad_mode import no_grad
from dtrain.core import backend
from dtrain.core.tensor import Tensor
from dtrain.jit.compiler import trace
from dtrain.jit.graph import Ref

DEFAULT_OPSET, MIN_OPSET = 17, 17
INT64_MAX, INT64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min
JOINT = object()  # the variant trace with every dynamic axis one longer


def export(model, args, f, *, input_names=None, output_names=None, dynamic_axes=None,
           opset_version=None):
    """Write `model(*args)` (a Module or function of tensors) to the path or binary file `f`
    as an ONNX model. `input_names`/`output_names` name the flattened tensor inputs and
    outputs (default input_i / output_i); `dynamic_axes` maps such a name to a list of axes or
    to {axis: dim_name} (axes with one dim_name share a size); `opset_version` defaults to 17.
    As torch.onnx.export with training=EVAL: the model runs in eval mode, restored after."""
    try:
        import onnx
    except ImportError:
        raise ImportError("dt.onnx.export needs the onnx package: pip install "
                          "'dtrain[onnx]'") from None
    opset = DEFAULT_OPSET if opset_version is None else opset_version
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"dt.onnx.export: opset_version must be in [{MIN_OPSET}, {newest}] "
                         f"(the installed onnx package's newest), got {opset}")
    fn, args = _flat_call(model, args if isinstance(args, tuple) else (args,))
    input_names = list(input_names or [f"input_{i}" for i in range(len(args))])
    if len(input_names) != len(args):
        raise ValueError(f"dt.onnx.export: {len(input_names)} input_names for {len(args)} "
                         f"inputs")
    groups = _axis_groups(dynamic_axes or {}, input_names)
    modes = [(m, m.training) for m in model.modules()] if hasattr(model, "modules") else []
    if modes:
        model.eval()
    try:
        base = _trace(fn, args)
        variants = {name: _trace(fn, _grown(args, axes)) for name, axes in groups.items()
                    if axes[0][0] is not None}
        if len(variants) > 1:  # all grown at once: checks that sizes are linear in each
            variants[JOINT] = _trace(fn, _grown(args, [m for d in variants
                                                       for m in groups[d]]))
    finally:
        for m, training in modes:
            m.training = training
    names = _weight_names(model)
    proto = _Builder(base, variants, groups, opset, onnx).build(input_names, output_names,
                                                                 names)
    onnx.checker.check_model(proto)
    if isinstance(f, (str, os.PathLike)):
        onnx.save(proto, f)
    else:
        f.write(proto.SerializeToString())


def _flat_call(model, args):
    """(a callable on flat tensors, the flat tensors) for `model(*args)`: arguments and
    results nesting tuples of tensors (an RNN's (h, c) state) are flattened in order, as
    torch's exporter names and feeds them."""
    if all(isinstance(a, Tensor) for a in args):
        return model, args

    def flat_model(*flat):
        return tuple(_flatten(model(*_rebuild(args, iter(flat))), "the outputs"))
    return flat_model, tuple(_flatten(args, "args"))


def _flatten(value, what):
    """The tensors of `value` (a Tensor, or tuples/lists nesting them), in order: torch's
    exporter names and feeds flattened inputs and outputs the same way."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _flatten(v, what)]
    raise TypeError(f"dt.onnx.export: {what} must be tensors or tuples/lists of tensors, got "
                    f"{type(value).__name__}")


def _rebuild(structure, flat):
    """`structure` (nested tuples/lists of tensors) with its tensors taken from `flat`."""
    if isinstance(structure, Tensor):
        return next(flat)
    return type(structure)(_rebuild(v, flat) for v in structure)


def _trace(model, args):
    with no_grad():
        return trace(model, args, check_trace=False, passes=()).graph


def _axis_groups(dynamic_axes, input_names):
    """{dim_name: [(input position or None for an output, axis), ...]}: axes named alike
    share one size; list-form axes get torch's own names (<name>_dynamic_axes_<i>)."""
    groups = {}
    for name, axes in dynamic_axes.items():
        named = axes if isinstance(axes, dict) else {
            a: f"{name}_dynamic_axes_{i + 1}" for i, a in enumerate(axes)}
        pos = input_names.index(name) if name in input_names else None
        for axis, dim in named.items():
            groups.setdefault(dim, []).append((pos, axis, name))
    for dim, members in groups.items():
        members.sort(key=lambda m: m[0] is None)  # inputs first: the size is read from one
    return groups


def _grown(args, axes):
    """`args` with each input axis of `axes` one longer (its entries repeated cyclically,
    so that indices stay valid)."""
    grown = list(args)
    for pos, axis, _ in axes:
        if pos is not None:
            x = grown[pos]._data
            idx = backend.array_module(x).arange(x.shape[axis] + 1) % x.shape[axis]
            grown[pos] = Tensor._make(x.take(idx, axis))
    return tuple(grown)


def _weight_names(model):
    if not hasattr(model, "named_parameters"):
        return {}
    named = list(model.named_parameters()) + list(model.named_buffers())
    return {id(t): name for name, t in named}


# -- symbolic integers ------------------------------------------------------------------------
class Sym:
    """An integer that follows dynamic axes: `base` at the traced sizes, plus `step` for each
    unit that a dim grows."""

    def __init__(self, base, steps):
        self.base, self.steps = base, steps  # steps: {dim_name: int}

    def __repr__(self):
        return " + ".join([str(self.base)] + [f"{s}*{d}" for d, s in self.steps.items()])


class _Mismatch(Exception):
    pass


class _Nonlinear(Exception):
    pass


def _without_joint(obj):
    """Merged `obj` without the JOINT steps, checked to equal the sum of the others (a size
    such as batch * length is not linear in each axis)."""
    if isinstance(obj, Sym):
        joint = obj.steps.pop(JOINT, 0)
        if joint != sum(obj.steps.values()):
            raise _Nonlinear(obj)
        return obj if obj.steps else obj.base
    if isinstance(obj, (tuple, list)):
        return type(obj)(_without_joint(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _without_joint(v) for k, v in obj.items()}
    if isinstance(obj, slice):
        return slice(*_without_joint((obj.start, obj.stop, obj.step)))
    return obj


def _merge(a, others):
    """`a` (from the base trace) with each integer that differs in `others` ({dim: the same
    object traced with that dim one longer}) replaced by a Sym."""
    if isinstance(a, (bool, np.bool_)) or a is None or isinstance(a, (str, float)):
        if any(o != a for o in others.values()):
            raise _Mismatch(a)
        return a
    if isinstance(a, (int, np.integer)):
        if any(isinstance(o, (bool, np.bool_)) or not isinstance(o, (int, np.integer))
               for o in others.values()):
            raise _Mismatch(a)
        steps = {d: int(o) - int(a) for d, o in others.items() if o != a}
        return Sym(int(a), steps) if steps else a
    if isinstance(a, (tuple, list)):
        if any(type(o) is not type(a) or len(o) != len(a) for o in others.values()):
            raise _Mismatch(a)
        return type(a)(_merge(x, {d: o[i] for d, o in others.items()})
                       for i, x in enumerate(a))
    if isinstance(a, dict):
        if any(not isinstance(o, dict) or o.keys() != a.keys() for o in others.values()):
            raise _Mismatch(a)
        return {k: _merge(v, {d: o[k] for d, o in others.items()}) for k, v in a.items()}
    if isinstance(a, slice):
        parts = _merge((a.start, a.stop, a.step),
                       {d: (o.start, o.stop, o.step) for d, o in others.items()})
        return slice(*parts)
    if any(type(o) is not type(a) or o != a for o in others.values()):  # Refs, dtypes...
        raise _Mismatch(a)
    return a


# -- building the ONNX graph ------------------------------------------------------------------
class _Builder:
    def __init__(self, graph, variants, groups, opset, onnx):
        self.g, self.variants, self.groups, self.opset, self.onnx = graph, variants, groups, \
            opset, onnx
        self.nodes, self.inits, self.names, self.sizes, self.terms = [], [], {}, {}, {}
        self.count = 0

    def fresh(self, hint):
        self.count += 1
        return f"{hint}_{self.count}"

    def add(self, op, inputs, n_out=1, **attrs):
        """Append an ONNX node; returns its output name (a list when n_out > 1)."""
        outs = [self.fresh(op) for _ in range(n_out)]
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), outs,
                                                     name=self.fresh(op + "_node"), **attrs))
        return outs if n_out > 1 else outs[0]

    def const(self, arr, hint="const"):
        name = self.fresh(hint)
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def value(self, x, dtype=None):
        """The ONNX name of an argument: a graph value (cast to `dtype` if given and
        different) or a Python/NumPy scalar as a constant of `dtype`."""
        if isinstance(x, Ref):
            name, have = self.names[x.vid], self.g.values[x.vid].dtype
            if dtype is None or np.dtype(have) == np.dtype(dtype):
                return name
            return self.add("Cast", [name], to=_onnx_type(self.onnx, dtype))
        if dtype is None:
            raise _Unsupported(f"a {type(x).__name__} argument where a tensor is expected")
        return self.const(np.asarray(x, dtype=dtype))

    def dtype(self, x):
        return np.dtype(self.g.values[x.vid].dtype) if isinstance(x, Ref) else None

    def size(self, dim):
        """An int64[1] tensor: the run-time size of dynamic dim `dim`."""
        if dim not in self.sizes:
            pos, axis, _ = self.groups[dim][0]
            self.sizes[dim] = self.add("Shape", [self.inputs[pos]], start=axis, end=axis + 1)
        return self.sizes[dim]

    def term(self, v):
        """An int64[1] tensor: Sym `v` at the run-time sizes (its base is its value at the
        traced sizes)."""
        key = (v.base, tuple(v.steps.items()))
        if key not in self.terms:
            offset = v.base - sum(step * self.traced[d] for d, step in v.steps.items())
            term = self.const(np.array([offset], np.int64))
            for dim, step in v.steps.items():
                scaled = self.add("Mul", [self.size(dim), self.const(np.array([step], np.int64))])
                term = self.add("Add", [term, scaled])
            self.terms[key] = term
        return self.terms[key]

    def ints(self, values):
        """An int64 1-D tensor holding `values` (ints and Syms)."""
        pieces, static = [], []
        for v in values:
            if not isinstance(v, Sym):
                static.append(int(v))
                continue
            if static:
                pieces.append(self.const(np.array(static, np.int64)))
                static = []
            pieces.append(self.term(v))
        if static or not pieces:
            pieces.append(self.const(np.array(static, np.int64)))
        return pieces[0] if len(pieces) == 1 else self.add("Concat", pieces, axis=0)

    def reduce(self, op, x, axes, keepdims):
        """Reduce `x` over `axes` (None: all); axes are an input from opset 18 (13 for Sum)."""
        if axes is None:
            return self.add(op, [x], keepdims=int(keepdims))
        axes = [axes] if isinstance(axes, int) else list(axes)
        if op == "ReduceSum" or self.opset >= 18:
            return self.add(op, [x, self.ints(axes)], keepdims=int(keepdims))
        return self.add(op, [x], axes=axes, keepdims=int(keepdims))

    # -- the whole graph ---------------------------------------------------------------------
    def build(self, input_names, output_names, weight_names):
        onnx, g = self.onnx, self.g
        self.inputs = input_names
        self.traced = {dim: g.values[g.inputs[members[0][0]]].shape[members[0][1]]
                       for dim, members in self.groups.items() if members[0][0] is not None}
        shapes = self._shapes()
        graph_inputs = []
        for name, vid in zip(input_names, g.inputs):
            self.names[vid] = name
            graph_inputs.append(self._info(name, vid, shapes[vid]))
        for vid in list(g.captured) + list(g.consts):
            self._initializer(vid, shapes[vid], weight_names)
        for step, (node, others) in enumerate(self._aligned()):
            name = node.name()
            emit = ONNX_OPS.get(name)
            if emit is None:
                raise NotImplementedError(
                    f"dt.onnx.export: op {name!r} (step {step}) has no ONNX mapping; "
                    f"supported: {', '.join(sorted(ONNX_OPS))}")
            try:
                args = _bind(node.op, self.merge(node.args, {d: o.args for d, o in others.items()}),
                             self.merge(node.params, {d: o.params for d, o in others.items()}))
            except _Mismatch:
                raise ValueError(self._structure_error(step, name)) from None
            except _Nonlinear as e:
                raise NotImplementedError(_nonlinear_error(e, f" at op {name!r} (step {step})")) \
                    from None
            try:
                outs = emit(self, node, args)
            except _Unsupported as e:
                raise NotImplementedError(f"dt.onnx.export: op {name!r} (step {step}): {e}") \
                    from None
            outs = outs if isinstance(outs, list) else [outs]
            for vid, out in zip(node.outs, outs):
                self.names[vid] = out
        flat = _refs(g.output)
        output_names = list(output_names or [f"output_{i}" for i in range(len(flat))])
        if len(output_names) != len(flat):
            raise ValueError(f"dt.onnx.export: {len(output_names)} output_names for "
                             f"{len(flat)} outputs")
        unknown = sorted({owner for members in self.groups.values() for pos, _, owner in members
                          if pos is None and owner not in output_names})
        if unknown:
            raise ValueError(f"dt.onnx.export: dynamic_axes names {unknown}, which are neither "
                             f"input_names {input_names} nor output_names {output_names}")
        outs = []
        for name, ref in zip(output_names, flat):
            self.nodes.append(onnx.helper.make_node("Identity", [self.names[ref.vid]], [name]))
            outs.append(self._info(name, ref.vid, shapes[ref.vid]))
        graph = onnx.helper.make_graph(self.nodes, "dtrain", graph_inputs, outs, self.inits)
        return onnx.helper.make_model(graph, producer_name="dtrain",
                                      opset_imports=[onnx.helper.make_opsetid("", self.opset)])

    def _aligned(self):
        """The base graph's nodes, each with the same node of every variant trace."""
        for dim, other in self.variants.items():
            if len(other.nodes) != len(self.g.nodes):
                raise ValueError(self._structure_error(None, None, dim))
        for i, node in enumerate(self.g.nodes):
            others = {d: o.nodes[i] for d, o in self.variants.items()}
            for d, o in others.items():
                if o.name() != node.name() or o.outs != node.outs:
                    raise ValueError(self._structure_error(i, node.name(), d))
            yield node, others

    def _structure_error(self, step, name, dim=None):
        where = f" at op {name!r} (step {step})" if name else ""
        dim = dim if isinstance(dim, str) else "a dynamic dim"
        return (f"dt.onnx.export: the model's graph changes with a dynamic axis{where} "
                f"({dim} one longer traces other ops); it cannot be exported with that axis "
                f"dynamic")

    def _shapes(self):
        n = len(self.g.values)
        if any(len(o.values) != n for o in self.variants.values()):
            raise ValueError(self._structure_error(None, None))
        try:
            return [self.merge(v.shape, {d: o.values[i].shape for d, o in self.variants.items()})
                    for i, v in enumerate(self.g.values)]
        except _Mismatch:
            raise ValueError(self._structure_error(None, None)) from None
        except _Nonlinear as e:
            raise NotImplementedError(_nonlinear_error(e, "")) from None

    def merge(self, a, others):
        """`_merge`, then the check against the trace with every axis grown (if any)."""
        merged = _merge(a, others)
        return _without_joint(merged) if JOINT in self.variants else merged

    def _info(self, name, vid, shape):
        dims = []
        named = {axis: dim for dim, members in self.groups.items()
                 for _, axis, owner in members if owner == name}
        for i, s in enumerate(shape):
            if i in named:
                dims.append(named[i])
            elif isinstance(s, Sym):
                (dim, step), = s.steps.items() if len(s.steps) == 1 else ((None, 0),)
                exact = step == 1 and s.base == self.traced.get(dim)
                dims.append(dim if exact else f"{name}_dim_{i}")
            else:
                dims.append(s)
        return self.onnx.helper.make_tensor_value_info(
            name, _onnx_type(self.onnx, self.g.values[vid].dtype), dims)

    def _initializer(self, vid, shape, weight_names):
        obj = self.g.captured.get(vid, self.g.consts.get(vid))
        arr = _host(obj._data if isinstance(obj, Tensor) else obj)
        if not any(isinstance(s, Sym) for s in shape):
            self.inits.append(self.onnx.numpy_helper.from_array(
                np.ascontiguousarray(arr), weight_names.get(id(obj), f"captured_{vid}")))
            self.names[vid] = self.inits[-1].name
            return
        flat = arr.reshape(-1)
        if flat.size == 0 or (flat != flat[0]).any():
            raise ValueError(f"dt.onnx.export: a constant {list(arr.shape)} made outside the "
                             f"op registry follows a dynamic axis and is not filled with one "
                             f"value; it cannot be expressed for other sizes")
        fill = self.onnx.numpy_helper.from_array(flat[:1].copy(), self.fresh("fill"))
        self.names[vid] = self.add("ConstantOfShape", [self.ints(shape)], value=fill)


class _Unsupported(Exception):
    """A use of a mapped op that ONNX cannot express (the message says which)."""


def _nonlinear_error(err, where):
    return (f"dt.onnx.export: a size{where} is not linear in each dynamic axis (e.g. a "
            f"reshape to batch * length; traced as {err.args[0].base}); export with one of "
            f"those axes static")


def _refs(obj):
    if isinstance(obj, Ref):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [r for o in obj for r in _refs(o)]
    if isinstance(obj, dict):
        return [r for o in obj.values() for r in _refs(o)]
    raise TypeError(f"dt.onnx.export: the model returned a {type(obj).__name__}; ONNX outputs "
                    f"are tensors")


def _host(arr):
    return arr if isinstance(arr, np.ndarray) else arr.get()


def _onnx_type(onnx, dtype):
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


_SIGNATURES = {}


def _bind(op, args, params):
    """{forward parameter name: value} for an op node."""
    sig = _SIGNATURES.get(op)
    if sig is None:
        sig = _SIGNATURES[op] = inspect.signature(op.forward)
    bound = sig.bind(None, *args, **params)
    bound.apply_defaults()
    return bound.arguments


def _static(v, what):
    if isinstance(v, Sym):
        raise _Unsupported(f"{what} follows a dynamic axis ({v}); ONNX takes it as a constant "
                           f"attribute")
    return v


# -- the table: registry op name -> emitter(builder, node, bound arguments) -------------------
def _unary(onnx_op):
    return lambda b, n, a: b.add(onnx_op, [b.value(n.args[0])])


def _elementwise(onnx_op):
    """Tensors and scalars cast to the result's dtype (NumPy's promotion is already done)."""
    def emit(b, n, a):
        dtype = b.g.values[n.outs[0]].dtype
        return b.add(onnx_op, [b.value(x, dtype) for x in n.args])
    return emit


def _compare(onnx_op, negate=False):
    def emit(b, n, a):
        dtype = np.result_type(*[b.dtype(x) for x in n.args if isinstance(x, Ref)])
        out = b.add(onnx_op, [b.value(x, dtype) for x in n.args])
        return b.add("Not", [out]) if negate else out
    return emit


def _linear(b, n, a):
    x, w, bias = b.value(a["x"]), b.value(a["weight"]), a["bias"]
    if len(b.g.values[a["x"].vid].shape) == 2:
        inputs = [x, w] + ([b.value(bias)] if bias is not None else [])
        return b.add("Gemm", inputs, transB=1)
    y = b.add("MatMul", [x, b.add("Transpose", [w], perm=[1, 0])])
    return y if bias is None else b.add("Add", [y, b.value(bias)])


def _pads(padding):
    return [lo for lo, _ in padding] + [hi for _, hi in padding]


def _conv(b, n, a):
    inputs = [b.value(a["x"]), b.value(a["w"])] + ([b.value(a["b"])] if a["b"] is not None
                                                   else [])
    ksize = b.g.values[a["w"].vid].shape[2:]
    return b.add("Conv", inputs, kernel_shape=list(ksize), strides=list(a["stride"]),
                 pads=_pads(a["padding"]), dilations=list(a["dilation"]), group=a["groups"])


def _conv_transpose(b, n, a):
    inputs = [b.value(a["g"]), b.value(a["w"])] + ([b.value(a["b"])] if a["b"] is not None
                                                   else [])
    ksize = b.g.values[a["w"].vid].shape[2:]
    in_size = b.g.values[a["g"].vid].shape[2:]
    # ONNX: out = stride (in - 1) + output_padding + dilation (k - 1) + 1 - pad_lo - pad_hi
    extra = [o - (s * (i - 1) + d * (k - 1) + 1 - lo - hi) for o, s, i, d, k, (lo, hi)
             in zip(a["out_size"], a["stride"], in_size, a["dilation"], ksize, a["padding"])]
    return b.add("ConvTranspose", inputs, kernel_shape=list(ksize), strides=list(a["stride"]),
                 pads=_pads(a["padding"]), dilations=list(a["dilation"]), group=a["groups"],
                 output_padding=extra)


def _max_pool(b, n, a):
    if a.get("taps") is not None:
        raise _Unsupported("max pooling at given taps (a double-backward graph)")
    # dtrain's padding already holds ceil_mode's extra cells, so ONNX's floor rule matches
    return b.add("MaxPool", [b.value(a["x"])], kernel_shape=list(a["ksize"]),
                 strides=list(a["stride"]), pads=_pads(a["padding"]),
                 dilations=list(a["dilation"]))


def _reshape(b, n, a):
    return b.add("Reshape", [b.value(a["x"]), b.ints(a["shape"])])


def _expand(b, n, a):
    return b.add("Expand", [b.value(a["x"]), b.ints(a["shape"])])


def _permute(b, n, a):
    return b.add("Transpose", [b.value(a["x"])], perm=[_static(d, "a permutation")
                                                       for d in a["dims"]])


def _cat(b, n, a):
    dtype = b.g.values[n.outs[0]].dtype
    return b.add("Concat", [b.value(x, dtype) for x in a["arrays"]],
                 axis=_static(a["dim"], "cat's dim"))


def _split(b, n, a):
    outs = b.add("Split", [b.value(a["x"]), b.ints(a["sizes"])], n_out=len(n.outs),
                 axis=_static(a["dim"], "split's dim"))
    return outs if isinstance(outs, list) else [outs]


def _index(b, n, a):
    """Basic indexing (ints, slices, None, ...) as Slice/Squeeze/Unsqueeze, and one integer
    array index as Gather."""
    key = a["key"] if isinstance(a["key"], tuple) else (a["key"],)
    ndim = len(b.g.values[a["x"].vid].shape)
    if sum(k is Ellipsis for k in key) > 1:
        raise _Unsupported("more than one Ellipsis")
    if any(k is Ellipsis for k in key):
        i = next(j for j, k in enumerate(key) if k is Ellipsis)
        fill = ndim - sum(k is not None and k is not Ellipsis for k in key)
        key = key[:i] + (slice(None),) * fill + key[i + 1:]
    starts, ends, axes, steps, squeeze, unsqueeze, gather = [], [], [], [], [], [], None
    dim = out = 0
    for k in key:
        if k is None:
            unsqueeze.append(out)
            out += 1
            continue
        if isinstance(k, Ref):
            if gather is not None or np.dtype(b.dtype(k)).kind not in "iu":
                raise _Unsupported("only one integer array index is expressible (no boolean "
                                   "masks)")
            gather = (k, dim)
            out += len(b.g.values[k.vid].shape)
        elif isinstance(k, slice):
            step = 1 if k.step is None else _static(k.step, "a slice step")
            if k != slice(None):
                starts.append(k.start if k.start is not None else
                              (0 if step > 0 else INT64_MAX))
                ends.append(k.stop if k.stop is not None else
                            (INT64_MAX if step > 0 else INT64_MIN))
                axes.append(dim)
                steps.append(step)
            out += 1
        else:
            starts.append(k)
            ends.append(INT64_MAX if isinstance(k, int) and k == -1 else k + 1)
            axes.append(dim)
            steps.append(1)
            squeeze.append(dim)
        dim += 1
    if gather is not None and squeeze:
        raise _Unsupported("an integer array index mixed with integer indices")
    y = b.value(a["x"])
    if axes:
        y = b.add("Slice", [y, b.ints(starts), b.ints(ends), b.ints(axes), b.ints(steps)])
    if squeeze:
        y = b.add("Squeeze", [y, b.ints(squeeze)])
    if gather is not None:
        y = b.add("Gather", [y, b.value(gather[0])], axis=gather[1])
    if unsqueeze:
        y = b.add("Unsqueeze", [y, b.ints(unsqueeze)])
    return y


def _scalar_const(b, n, v):
    return b.const(np.asarray(v, dtype=b.g.values[n.outs[0]].dtype))


def _log1p(b, n, a):
    return b.add("Log", [b.add("Add", [b.value(n.args[0]), _scalar_const(b, n, 1)])])


def _gelu(b, n, a):
    x = b.value(a["x"])
    cdf = b.add("Erf", [b.add("Mul", [x, _scalar_const(b, n, 1 / math.sqrt(2))])])
    cdf = b.add("Mul", [b.add("Add", [cdf, _scalar_const(b, n, 1)]), _scalar_const(b, n, 0.5)])
    return b.add("Mul", [x, cdf])


def _softplus(b, n, a):
    x = b.value(a["x"])
    z = b.add("Mul", [x, _scalar_const(b, n, a["beta"])])
    soft = b.add("Div", [b.add("Softplus", [z]), _scalar_const(b, n, a["beta"])])
    return b.add("Where", [b.add("Greater", [z, _scalar_const(b, n, a["threshold"])]), x, soft])


def _standardize(b, n, a):
    """LayerNormalization (scale 1, no bias) over trailing axes, otherwise its formula."""
    x, shape = b.value(a["x"]), b.g.values[a["x"].vid].shape
    axes = sorted(d % len(shape) for d in a["axes"])
    if axes == list(range(axes[0], len(shape))):
        ones = _scalar_const(b, n, np.ones(shape[axes[0]:]))
        return b.add("LayerNormalization", [x, ones], axis=axes[0], epsilon=a["eps"])
    d = b.add("Sub", [x, b.reduce("ReduceMean", x, axes, True)])
    var = b.reduce("ReduceMean", b.add("Mul", [d, d]), axes, True)
    std = b.add("Sqrt", [b.add("Add", [var, _scalar_const(b, n, a["eps"])])])
    return b.add("Div", [d, std])


def _batch_norm(b, n, a):
    """BatchNormalization with the running statistics (eval mode); absent affine parameters
    as ones and zeros."""
    if a["training"]:
        raise _Unsupported("batch norm with batch statistics (training mode)")
    c = b.g.values[a["x"].vid].shape[1]
    scale = b.value(a["weight"]) if a["weight"] is not None else \
        _scalar_const(b, n, np.ones(c))
    bias = b.value(a["bias"]) if a["bias"] is not None else _scalar_const(b, n, np.zeros(c))
    return b.add("BatchNormalization", [b.value(a["x"]), scale, bias,
                                        b.value(a["running_mean"]), b.value(a["running_var"])],
                 epsilon=a["eps"])


def _reduction(onnx_op):
    def emit(b, n, a):
        return b.reduce(onnx_op, b.value(a["x"]), a["dim"], a["keepdim"])
    return emit


def _arg_extreme(onnx_op):
    """argmax/argmin over `dim`, or over the flattened input when dim is None."""
    def emit(b, n, a):
        x = b.value(a["x"])
        if a["dim"] is not None:
            return b.add(onnx_op, [x], axis=a["dim"], keepdims=int(a["keepdim"]))
        flat = b.add(onnx_op, [b.add("Reshape", [x, b.ints([-1])])], axis=0, keepdims=0)
        if not a["keepdim"]:
            return flat
        ndim = len(b.g.values[n.args[0].vid].shape)
        return b.add("Reshape", [flat, b.ints([1] * ndim)])
    return emit


def _clamp(b, n, a):
    dtype = b.g.values[n.outs[0]].dtype
    y = b.value(a["x"], dtype)
    if a["lo"] is not None:
        y = b.add("Max", [y, b.value(a["lo"], dtype)])
    if a["hi"] is not None:
        y = b.add("Min", [y, b.value(a["hi"], dtype)])
    return y


def _where(b, n, a):
    dtype = b.g.values[n.outs[0]].dtype
    return b.add("Where", [b.value(a["cond"], np.bool_), b.value(a["a"], dtype),
                           b.value(a["b"], dtype)])


def _pad(b, n, a):
    pad, ndim = a["pad"], len(b.g.values[a["x"].vid].shape)
    widths = [(0, 0)] * (ndim - len(pad) // 2)
    widths += [(pad[2 * i], pad[2 * i + 1]) for i in reversed(range(len(pad) // 2))]
    return b.add("Pad", [b.value(a["x"]), b.ints(_pads(widths)),
                         _scalar_const(b, n, a["value"])])


ONNX_OPS = {
    "add": _elementwise("Add"), "sub": _elementwise("Sub"), "mul": _elementwise("Mul"),
    "div": _elementwise("Div"), "pow": _elementwise("Pow"), "maximum": _elementwise("Max"),
    "minimum": _elementwise("Min"),
    "neg": _unary("Neg"), "exp": _unary("Exp"), "log": _unary("Log"), "sqrt": _unary("Sqrt"),
    "abs": _unary("Abs"), "sin": _unary("Sin"), "cos": _unary("Cos"), "tanh": _unary("Tanh"),
    "sigmoid": _unary("Sigmoid"), "relu": _unary("Relu"), "clone": _unary("Identity"),
    "log1p": _log1p, "gelu": _gelu, "softplus": _softplus, "clamp": _clamp, "where": _where,
    "eq": _compare("Equal"), "ne": _compare("Equal", negate=True), "lt": _compare("Less"),
    "le": _compare("LessOrEqual"), "gt": _compare("Greater"),
    "ge": _compare("GreaterOrEqual"),
    "cast": lambda b, n, a: b.add("Cast", [b.value(a["x"])],
                                  to=_onnx_type(b.onnx, a["np_dtype"])),
    "to_device": lambda b, n, a: b.add("Identity", [b.value(a["x"])]),
    "linear": _linear, "matmul": lambda b, n, a: b.add("MatMul", [b.value(a["a"]),
                                                                   b.value(a["b"])]),
    "conv": _conv, "conv_transpose": _conv_transpose, "max_pool": _max_pool,
    "max_pool_values": _max_pool,
    "standardize": _standardize, "batch_norm": _batch_norm,
    "softmax": lambda b, n, a: b.add("Softmax", [b.value(a["x"])], axis=a["dim"]),
    "log_softmax": lambda b, n, a: b.add("LogSoftmax", [b.value(a["x"])], axis=a["dim"]),
    "sum": _reduction("ReduceSum"), "prod": _reduction("ReduceProd"),
    "amax": _reduction("ReduceMax"), "amin": _reduction("ReduceMin"),
    "logsumexp": _reduction("ReduceLogSumExp"),
    "argmax": _arg_extreme("ArgMax"), "argmin": _arg_extreme("ArgMin"),
    "reshape": _reshape, "expand": _expand, "permute": _permute, "cat": _cat,
    "split": _split, "index": _index, "pad": _pad,
    "embedding": lambda b, n, a: b.add("Gather", [b.value(a["weight"]),
                                                  b.value(a["indices"])], axis=0),
    "gather": lambda b, n, a: b.add("GatherElements", [b.value(a["x"]), b.value(a["index"])],
                                    axis=a["dim"]),
    "cumsum": lambda b, n, a: b.add("CumSum", [b.value(a["x"]),
                                               b.const(np.array(a["dim"], np.int64))]),
}
