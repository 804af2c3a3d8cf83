"""Recording a function into a `Graph` while it runs eagerly: the `Tracer` observer.

While a `Tracer` observes the thread (autograd/observer.py), every registry op application,
in-place write, leaf-gradient accumulation, backward callback, host read and `@effect` call
reaches it. Arrays are identified by object identity: an array an op produced is that op's
value; one never seen before is *captured* (a parameter, buffer or constant, read by
reference at replay). An effect (optimizer/scheduler `step()`, `zero_grad()`, GradScaler's
`unscale_`/`step`/`update`) is recorded as one call, replayed by calling it again; what it
does inside is not recorded.

Reading a traced value into Python (`.item()`, `bool()`, `.tolist()`, `.numpy()`) cannot be
captured: the tracer raises `TraceError`, or with `fallback="eager"` stops recording and lets
the call finish eagerly.
"""
import inspect
import sys
from contextlib import contextmanager

import numpy as np

from dtrain.autograd.grad_mode import state
from dtrain.autograd.node import Op
from dtrain.autograd.observer import Observer, observing
from dtrain.core import backend
from dtrain.core.tensor import Tensor
from dtrain.jit.graph import CAPTURED, CONST, EFFECT, INPUT, OP, STASH, Graph, Node, Ref, refs_in

# Op params that only pass a cache of work the op can redo itself (conv backward hands its
# GEMM layouts to the ops it calls): when the array was made outside the registry, the graph
# passes None and replay recomputes it. TODO(nn): declare this on the op classes instead.
CACHE_PARAMS = {"conv_transpose": ("gt",), "conv_weight": ("cols", "gt")}


class TraceError(RuntimeError):
    """The function cannot be captured as a graph (the message says why and where)."""


def is_array(x):
    return isinstance(x, np.ndarray) or backend.is_cuda_array(x)


class Tracer(Observer):
    """Records one call. Use as a context manager around the eager call, then `finish`."""

    def __init__(self, inputs, fallback="error", watch=()):
        self.graph = Graph()
        # in-place change check, by version counter (a detached tensor shares its base's):
        # {id(counter): (a tensor, the version expected at the end)}
        self.versions = {id(t._version): (t, t._version[0]) for t in watch}
        self.ids = {}          # id(array) -> value id
        self.keep = []         # arrays kept alive so that their ids stay unique
        self.candidates = {}   # captured value id -> the Tensor or array first seen
        self.initial = {}      # captured value id -> its data before a recorded write
        self.made = set()      # id(array) of the tensors the function made (`created`)
        self.made_vids = set()  # captured value ids of those: constants, not state
        self.suspended = 0     # > 0: inside an effect (nothing is recorded)
        self.abandoned = None  # why recording stopped (fallback="eager")
        self.fallback = fallback
        for t in inputs:
            vid = self.ids.get(id(t._data))
            self.graph.inputs.append(self._define(t._data, INPUT) if vid is None else vid)

    # -- activation -------------------------------------------------------------------------
    def __enter__(self):
        if state.observer is not None:
            raise TraceError("dtrain.jit records one function at a time per thread")
        self._observing = observing(self)
        self._observing.__enter__()
        return self

    def __exit__(self, *exc):
        self._observing.__exit__(*exc)

    def finish(self, result):
        """Set the graph's output from the function's return value; returns the graph."""
        self.graph.output = self.lift(result)
        for t, version in self.versions.values():
            if t._version[0] != version:
                self.unsupported(
                    f"a tensor the function did not create ({t.dtype.name}"
                    f"{list(t.shape)}) was modified in place outside the op registry (e.g. "
                    f"on its backend array, as SyncBatchNorm's running statistics in "
                    f"training mode); replay would not repeat it")
                break
        return self.graph

    def _seen(self, t):
        """Take the current version of `t` as the expected one (a recorded change)."""
        self.versions[id(t._version)] = (t, t._version[0])

    def _mutating(self, vid, t):
        """Value `vid` (Tensor `t`) is about to be changed in place by a recorded write: keep
        a captured value's data from before its first change (`initial`: a tensor that the
        function creates starts from it on every call), expect the version after it."""
        self.graph.mutated.add(vid)
        if vid in self.candidates and vid not in self.initial:
            self.initial[vid] = t._data.copy()
        self.versions[id(t._version)] = (t, t._version[0] + 1)

    # -- values -----------------------------------------------------------------------------
    def _define(self, arr, kind):
        vid = self.graph.new_value(kind, arr)
        self.ids[id(arr)] = vid
        self.keep.append(arr)
        return vid

    def ref(self, x, tensor=True):
        arr = x._data if tensor else x
        vid = self.ids.get(id(arr))
        if vid is None:
            vid = self._define(arr, CAPTURED)
            self.candidates[vid] = x
            if id(arr) in self.made:
                self.made_vids.add(vid)
            if tensor:
                self.versions.setdefault(id(x._version), (x, x._version[0]))
        return Ref(vid, tensor)

    def lift(self, obj):
        """`obj` with Tensors and arrays replaced by Refs (nested tuples, named tuples,
        lists, dicts)."""
        if isinstance(obj, Tensor):
            return self.ref(obj, True)
        if is_array(obj):
            return self.ref(obj, False)
        if type(obj) in (tuple, list):
            return type(obj)(self.lift(o) for o in obj)
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # (values, indices) of sort...
            return type(obj)(*(self.lift(o) for o in obj))
        if type(obj) is dict:
            return {k: self.lift(v) for k, v in obj.items()}
        return obj

    @contextmanager
    def paused(self):
        self.suspended += 1
        try:
            yield
        finally:
            self.suspended -= 1

    def unsupported(self, why):
        """Stop: raise TraceError, or (fallback="eager") stop recording for this call."""
        if self.fallback != "eager":
            raise TraceError(why)
        if self.abandoned is None:
            self.abandoned = why
            self.suspended += 1  # for the rest of this call

    # -- the observer protocol (autograd/observer.py) ---------------------------------------
    def op(self, node, args, params, result):
        if self.suspended:
            return
        cls = type(node)
        for a in args:
            if isinstance(a, Tensor) and a.grad_fn is not None and not isinstance(a.grad_fn, Op):
                self.graph.custom_functions.add(a.grad_fn.name())
        drop = CACHE_PARAMS.get(getattr(cls, "op_name", None), ())
        if drop:
            params = {k: None if k in drop and is_array(v) and id(v) not in self.ids else v
                      for k, v in params.items()}
        n = Node("op", cls, self.lift(args), self.lift(params))
        if any(self.graph.values[r.vid].kind not in (CONST, CAPTURED)
               for i in node.shape_from_data for r in refs_in(n.args[i])):
            return self.unsupported(
                f"{cls.op_name} ({_caller(user=True)}) gives a result whose shape depends on "
                f"the values of its input (nonzero, unique, indexing with a boolean mask, "
                f"masked_select): a graph replays static shapes. Use shape-preserving ops "
                f"(dt.where(mask, x, 0), x * mask), move the call out of the compiled "
                f"function, or compile with fallback='eager'")
        n.multi = isinstance(result, tuple)
        outs = result if n.multi else (result,)
        in_arrays = [(i, a._data if isinstance(a, Tensor) else a) for i, a in enumerate(args)
                     if isinstance(a, Tensor) or is_array(a)]
        n.aliases = tuple(i for i, a in in_arrays
                          if any(_may_share(o._data, a) for o in outs))
        n.outs = tuple(self._define(o._data, OP) for o in outs)
        n.stash = {k: self._define(v, STASH) for k, v in node.saved_state().items()
                   if is_array(v) and id(v) not in self.ids}
        self.graph.nodes.append(n)

    def backward(self, create_graph):
        if self.suspended:
            return
        if create_graph:
            self.unsupported("backward(create_graph=True) inside a compiled function is not "
                             "supported by dtrain.jit")
        self.graph.has_backward = True

    def accumulate(self, leaf, grad, apply):
        """A leaf's gradient reaches it in backward: accumulate into `.grad`, run hooks."""
        if self.suspended:
            return apply()
        n = Node("accumulate", args=(self.ref(grad),), target=self.ref(leaf))
        with self.paused():
            apply()
        n.outs = (self._define(leaf.grad._data, EFFECT),)
        self.graph.nodes.append(n)

    def callbacks(self, run):
        """Run the backward pass's queued callbacks (e.g. DDP's final wait) as one effect."""
        if not self.suspended:
            self.graph.nodes.append(Node("callbacks"))
        with self.paused():
            run()

    def write(self, tensor, array):
        if self.suspended:
            return
        n = Node("write", args=(self.ref(tensor), self.ref(array, False)))
        self._mutating(n.args[0].vid, tensor)
        self.graph.nodes.append(n)

    def setitem(self, tensor, key, value):
        if self.suspended:
            return
        n = Node("setitem", args=(self.ref(tensor), self.lift(value)),
                 params={"key": self.lift(key)})
        self._mutating(n.args[0].vid, tensor)
        self.graph.nodes.append(n)

    def created(self, tensor):
        if not self.suspended:
            self.made.add(id(tensor._data))
            self.keep.append(tensor._data)  # its id stays its own while recording

    def snapshot(self, tensor, copy):
        if self.suspended:
            return
        n = Node("copy", args=(self.ref(tensor),))
        n.outs = (self._define(copy._data, OP),)
        self.graph.nodes.append(n)

    def host_read(self, tensor, what):
        if self.suspended:
            return
        vid = self.ids.get(id(tensor._data))
        if vid is None:
            # Never seen by the trace: state of the compiled module, or something computed
            # from traced data outside the op registry (NumPy code on tensor data).
            if id(tensor._version) in self.versions:
                return
            subject = "a tensor computed outside the op registry (e.g. NumPy code on data)"
        elif self.graph.values[vid].kind in (CAPTURED, CONST):
            return
        else:
            subject = f"a traced tensor (%{vid}, {self.graph.values[vid].describe()})"
        self.unsupported(
            f"Tensor.{what}() was called on {subject} inside the compiled function "
            f"({_where()}): its value "
            f"is only known when the function runs, so Python code that depends on it "
            f"(if/while on a tensor, bool(), int(), float(), .item(), .tolist(), .numpy()) "
            f"cannot be captured in a graph. Keep the computation in tensor ops (e.g. dt.where "
            f"instead of if), move it out of the compiled function, or compile with "
            f"fallback='eager' to run such calls eagerly")

    def state_write(self, owner, key):
        if self.suspended:  # inside an effect (a scheduler's step): replayed with it
            return
        self.unsupported(
            f"{type(owner).__name__}[{key!r}] was assigned inside the compiled function "
            f"({_caller(user=True)}): a replay does not repeat Python assignments, so the "
            f"value would stay the recorded one. Step an LR scheduler (replayed as an "
            f"effect), or assign outside the compiled function")

    def effect(self, owner, method, args, kwargs):
        """An `@effect` method (optimizer step...): recorded as one call, run unrecorded."""
        if self.suspended:
            return method(owner, *args, **kwargs)
        bound = inspect.signature(method).bind(owner, *args, **kwargs).arguments
        stale = [k for k, v in list(bound.items())[1:]
                 if isinstance(v, Tensor) or is_array(v) or callable(v)]
        n = Node("call", args=args, params=kwargs, target=(owner, method))
        if stale:
            self.unsupported(f"{n.name()}({', '.join(k + '=...' for k in stale)}) cannot be "
                             f"replayed: a graph calls it again with the same arguments, and a "
                             f"closure or tensor argument would be stale; call it outside the "
                             f"compiled function")
            return method(owner, *args, **kwargs)
        self.graph.nodes.append(n)
        with self.paused():
            result = method(owner, *args, **kwargs)
        for t, _ in list(self.versions.values()):  # the call's changes are replayed
            self._seen(t)
        return result


def _caller(user=False):
    """'function (file:line)' of the code that read a tensor: the innermost frame outside
    Tensor's conversions (core/tensor.py) and this module; with `user`, outside dtrain."""
    skip = (__file__, sys.modules[Tensor.__module__].__file__)
    frame = sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename in skip or user and
                                 frame.f_globals.get("__name__", "").startswith("dtrain.")):
        frame = frame.f_back
    if frame is None:
        return "caller unknown"
    code = frame.f_code
    return f"in {code.co_name}, {code.co_filename}:{frame.f_lineno}"


def _where():
    """The code that read a tensor and, when that is inside dtrain, the user's line that
    called it."""
    inner, user = _caller(), _caller(user=True)
    return inner if inner == user else f"{inner}, called {user}"


def _may_share(a, b):
    try:
        return bool(backend.array_module(a).may_share_memory(a, b))
    except TypeError:  # arrays of different backends
        return False


# -- checking two recordings of one signature against each other -----------------------------
def settle(tracer, other=None):
    """Decide what the captured values of `tracer`'s graph are, and return the graph.

    With `other` (a second recording of the same signature): a captured object that is the
    same in both, or a Tensor over the same array in both (`p.detach()` of a parameter), is
    read by reference at replay (parameters, buffers); one that differs but
    holds equal data is a constant; one whose data differs was computed outside the op
    registry from changing data (a mask drawn with NumPy, NumPy code on the inputs) ->
    TraceError.
    Without `other`, every captured object is read by reference, but for the tensors the
    function made (`created`), which are constants either way."""
    g = tracer.graph
    if other is not None:
        _compare(other.graph, g)
    for vid, obj in tracer.candidates.items():
        seen = None if other is None else other.candidates.get(vid)
        if other is not None and seen is not obj and not (
                isinstance(seen, Tensor) and isinstance(obj, Tensor) and seen._data is obj._data):
            if seen is None or not _equal_data(other.initial.get(vid, seen),
                                               tracer.initial.get(vid, obj)):
                raise TraceError(
                    f"%{vid} ({g.values[vid].describe()}), used by {_user(g, vid)}, was "
                    f"computed outside the op registry and changed between two calls with the "
                    f"same signature (e.g. a random mask drawn with NumPy, NumPy code on the "
                    f"data, or a tensor built from Python values); it cannot be a constant of "
                    f"the graph")
            g.consts[vid] = tracer.initial.get(vid, obj._data if isinstance(obj, Tensor) else obj)
            g.values[vid].kind = CONST
        elif vid in tracer.made_vids:  # made by the function: starts afresh on every call
            g.consts[vid] = tracer.initial.get(vid, obj._data if isinstance(obj, Tensor) else obj)
            g.values[vid].kind = CONST
        else:
            g.captured[vid] = obj
    for n in g.nodes:
        if n.kind == "accumulate" and g.values[n.target.vid].kind not in (INPUT, CAPTURED):
            raise TraceError(f"backward accumulated a gradient into a leaf tensor created "
                             f"inside the function (%{n.target.vid}); create it outside")
    return g


def _compare(a, b):
    if a.inputs != b.inputs or len(a.values) != len(b.values) or len(a.nodes) != len(b.nodes):
        raise TraceError(f"two calls with the same signature ran different ops ({len(a.nodes)} "
                         f"vs {len(b.nodes)} steps): the function's control flow depends on "
                         f"something other than the shapes, dtypes and flags of its inputs")
    for i, (x, y) in enumerate(zip(a.nodes, b.nodes)):
        if (x.kind, x.op, x.outs, x.stash, x.aliases) != (y.kind, y.op, y.outs, y.stash,
                                                          y.aliases) \
                or not _same((x.args, x.params), (y.args, y.params)) \
                or not _same_target(x.target, y.target):
            raise TraceError(f"two calls with the same signature differ at step {i}: "
                             f"{x.name()} with {_brief(x)} vs {y.name()} with {_brief(y)} "
                             f"(Python values computed from data or drawn with Python's or "
                             f"NumPy's random numbers, or control flow): pass such a value as a "
                             f"tensor argument, or draw it with dtrain's random functions")
    if not _same(a.output, b.output):
        raise TraceError("two calls with the same signature returned different structures")


def _same(x, y):
    if type(x) is not type(y):
        return False
    if isinstance(x, (tuple, list)):
        return len(x) == len(y) and all(_same(p, q) for p, q in zip(x, y))
    if isinstance(x, dict):
        return x.keys() == y.keys() and all(_same(x[k], y[k]) for k in x)
    try:
        return bool(x == y)
    except (TypeError, ValueError):
        return x is y


def _same_target(x, y):
    if isinstance(x, tuple):  # (owner, method) of an opaque call
        return x[0] is y[0] and x[1] == y[1]
    return x == y


def _equal_data(x, y):
    a = x._data if isinstance(x, Tensor) else x
    b = y._data if isinstance(y, Tensor) else y
    if a.shape != b.shape or a.dtype != b.dtype or type(a) is not type(b):
        return False
    return bool(backend.array_module(a).array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def _brief(n):
    return f"args {n.args!r}, params {n.params!r}"


def _user(g, vid):
    for i, n in enumerate(g.nodes):
        if any(r.vid == vid for r in n.refs()):
            return f"step {i} ({n.name()})"
    return "the output"
