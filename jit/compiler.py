"""`dt.compile` and `dt.jit.trace`: record a function once per input signature, replay it.

A signature is what the graph depends on besides data: the structure of the arguments, each
tensor's shape, dtype, device, requires_grad and aliasing, non-tensor arguments' values,
grad mode, autocast state, and (for a module) every submodule's train/eval flag. The first
call with a new signature runs eagerly while recording; the second records again and checks
that both recordings agree (which exposes values computed outside the op registry from
changing data, e.g. masks drawn with NumPy or NumPy code on the inputs); later calls
replay. Captured tensors (parameters, buffers) are read by reference, so in-place optimizer
updates are seen; a change of their shape, dtype or requires_grad, a hook added to or
removed from a tensor or module anywhere, or a new module, parameter or optimizer where the
function names one (a replaced head, a new optimizer: see `_state_ids`) triggers a new
recording.
"""
import warnings

from dtrain.autograd import autocast as _autocast
from dtrain.autograd.grad_mode import state
from dtrain.autograd.node import StateHookHandle
from dtrain.core.tensor import Tensor
from dtrain.jit.executor import ArrayRunner, TensorRunner
from dtrain.jit.passes import PASSES, check_passes, optimize
from dtrain.jit.tracer import TraceError, Tracer, settle
from dtrain.nn.module import Module
from dtrain.optim.optimizer import Optimizer

FALLBACKS = ("error", "eager")


def flatten(obj, leaves):
    """Append the leaves of nested tuples/lists/dicts in `obj` to `leaves`; returns the
    structure (a hashable description of the nesting)."""
    if isinstance(obj, (tuple, list)):
        return (type(obj).__name__,) + tuple(flatten(o, leaves) for o in obj)
    if isinstance(obj, dict):
        return ("dict",) + tuple((k, flatten(v, leaves)) for k, v in obj.items())
    leaves.append(obj)
    return "*"


def _leaf_key(x, seen):
    if isinstance(x, Tensor):
        d = x._data
        return (d.shape, d.dtype, type(d), x.requires_grad, seen.setdefault(id(d), len(seen)))
    try:
        hash(x)
    except TypeError:
        return ("id", id(x))
    return (type(x), x)


class _Entry:
    """What is known about one signature: a first recording, a runner, or 'run eagerly'."""

    def __init__(self):
        self.first = None
        self.graph = self.runner = None
        self.guards = ()
        self.hooks = None  # StateHookHandle.epoch at the end of the last recording
        self.state_ids = ()
        self.eager = False

    def build(self, graph, passes, grad_enabled, tensors):
        captured = [t for t in graph.captured.values() if isinstance(t, Tensor)]
        needs_grad = grad_enabled and not graph.has_backward and any(
            t.requires_grad for t in list(tensors) + captured)
        if needs_grad and graph.custom_functions:
            names = ", ".join(sorted(graph.custom_functions))
            raise TraceError(f"autograd.Function nodes ({names}) cannot be replayed with "
                             f"gradients by dtrain.jit")
        if needs_grad:
            optimize(graph, [p for p in passes if p not in ("memory_plan", "fusion")])
            self.runner = TensorRunner(graph)
        else:
            self.runner = ArrayRunner(graph, optimize(graph, passes))
        self.graph = graph
        self.guards = [(t, t._data.shape, t._data.dtype, type(t._data), t.requires_grad)
                       for t in captured]

    def guards_hold(self):
        for t, shape, dtype, kind, rg in self.guards:
            d = t._data
            if d.shape != shape or d.dtype != dtype or type(d) is not kind \
                    or t.requires_grad != rg:
                return False
        return True


class CompiledFunction:
    """The callable `dt.compile` returns (see the module doc). `.graphs` lists the graphs
    recorded so far; attribute access falls through to a compiled module."""

    def __init__(self, fn, fallback="error", passes=PASSES, check=True):
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
        if not callable(fn):
            raise TypeError(f"dt.compile expects a function or module, got {type(fn).__name__}")
        self.__dict__.update(fn=fn, fallback=fallback, passes=check_passes(passes),
                             check=check, entries={})
        self.module = fn if hasattr(fn, "training") and hasattr(fn, "modules") else None

    def __getattr__(self, name):
        fn = self.__dict__.get("fn")
        if fn is None:
            raise AttributeError(name)
        return getattr(fn, name)

    @property
    def graphs(self):
        return [e.graph for e in self.entries.values() if e.graph is not None]

    def signature(self, args, kwargs):
        """(key, input tensors) of a call."""
        leaves = []
        structure = flatten((args, kwargs), leaves)
        seen = {}
        key = tuple(_leaf_key(x, seen) for x in leaves)
        flags = (state.enabled, tuple(_autocast._state.dtype.values()), structure)
        if self.module is not None:
            flags += (tuple(m.training for m in self.module.modules()),)
        return (key, flags), [x for x in leaves if isinstance(x, Tensor)]

    def __call__(self, *args, **kwargs):
        if state.observer is not None:  # inside another recording: inline
            return self.fn(*args, **kwargs)
        key, tensors = self.signature(args, kwargs)
        entry = self.entries.get(key)
        if entry is None or entry.hooks not in (None, StateHookHandle.epoch):
            entry = self.entries[key] = _Entry()  # new, or a hook was added or removed since
        if entry.runner is not None:
            if entry.guards_hold() and entry.state_ids == self._state_ids():
                return entry.runner(tensors)
            self.entries[key] = entry = _Entry()  # a captured tensor changed: record again
        if entry.eager:
            return self.fn(*args, **kwargs)
        return self._record(entry, args, kwargs, tensors)

    def _record(self, entry, args, kwargs, tensors):
        watch = self._state()
        entry.state_ids = self._state_ids()
        tracer = Tracer(tensors, self.fallback, watch)
        with tracer:
            out = self.fn(*args, **kwargs)
        tracer.finish(out)
        entry.hooks = StateHookHandle.epoch
        if tracer.abandoned:
            self._go_eager(entry, tracer.abandoned)
            return out
        if self.check and entry.first is None:
            entry.first = tracer
            return out
        try:
            graph = settle(tracer, entry.first)
            entry.build(graph, self.passes, state.enabled, tensors)
        except TraceError as err:
            if self.fallback != "eager":
                raise
            self._go_eager(entry, str(err))
        finally:
            entry.first = None
        return out

    def _state(self):
        """A compiled module's parameters and buffers (replacing one records again)."""
        if self.module is None:
            return []
        return list(self.module.parameters()) + list(self.module.buffers())

    def _state_ids(self):
        """Identities of what a graph was recorded against: a compiled module's parameters
        and buffers; for a function, the modules and optimizers it reads by name (globals,
        closure cells, a bound method's object and its attributes), with their parameters
        and buffers. Replacing one (a new head, a new optimizer) records again."""
        if self.module is not None:
            return tuple(map(id, self._state()))
        ids = []
        for obj in self._bound():
            ids.append(id(obj))
            if isinstance(obj, Module):
                ids.extend(id(t) for t in obj.parameters())
                ids.extend(id(t) for t in obj.buffers())
            else:  # an optimizer
                ids.extend(id(p) for g in obj.param_groups for p in g["params"])
        return tuple(ids)

    def _bound(self):
        """The modules and optimizers that the function names in its code: as globals,
        closure cells, or a bound method's object and its instance attributes (read from
        its `__dict__`, so that no property runs on every call; a module's submodules are
        covered by its parameters)."""
        fn = self.fn
        owner = getattr(fn, "__self__", None)
        fn = getattr(fn, "__func__", fn)
        code = getattr(fn, "__code__", None)
        if code is None:
            return []
        scope = getattr(fn, "__globals__", {})
        candidates = [scope.get(name) for name in code.co_names]
        candidates += [c.cell_contents for c in fn.__closure__ or () if _filled(c)]
        if owner is not None:
            attrs = getattr(owner, "__dict__", {})
            candidates += [owner] + [attrs.get(name) for name in code.co_names]
        return [obj for obj in candidates if isinstance(obj, (Module, Optimizer))]

    def _go_eager(self, entry, why):
        entry.eager = True
        name = getattr(self.fn, "__qualname__", type(self.fn).__name__)
        warnings.warn(f"dt.compile({name}): running eagerly for this input signature, as it "
                      f"cannot be captured: {why}", RuntimeWarning, stacklevel=3)


def compile(model=None, *, fallback="error", passes=PASSES, check=True):
    """Compile a function or module: `dt.compile(fn)` or `@dt.compile(fallback="eager")`.

    `fallback`: "error" raises `dt.jit.TraceError` when a call cannot be captured
    (data-dependent Python control flow, values computed outside the op registry that change
    between calls); "eager" runs such signatures eagerly and warns once.
    `passes`: the graph passes to run (see `dt.jit.PASSES`); `()` turns all off.
    `check`: record twice per signature and compare (see the module doc)."""
    if model is None:
        return lambda fn: compile(fn, fallback=fallback, passes=passes, check=check)
    if isinstance(model, Module):
        return CompiledModule(model, fallback, passes, check)
    return CompiledFunction(model, fallback, passes, check)


def _filled(cell):
    try:
        cell.cell_contents
    except ValueError:  # a closure variable not assigned yet
        return False
    return True


class CompiledModule(Module):
    """What `dt.compile(module)` returns, as torch.compile's OptimizedModule: a Module (a
    child of another module, wrapped by DDP; its state dict keys start with `_orig_mod.`)
    whose calls replay graphs of the module's calls. Other attributes read through to the
    module."""

    def __init__(self, module, fallback="error", passes=PASSES, check=True):
        super().__init__()
        self._orig_mod = module
        self.__dict__["_compiled"] = CompiledFunction(module, fallback, passes, check)

    def forward(self, *args, **kwargs):
        return self._compiled(*args, **kwargs)

    @property
    def graphs(self):
        return self._compiled.graphs

    @property
    def entries(self):
        return self._compiled.entries

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_modules"]["_orig_mod"], name)


class TracedFunction:
    """A single-signature graph (from `dt.jit.trace`): `.graph`, callable on inputs of the
    traced signature only."""

    def __init__(self, compiled, key):
        self.compiled, self.key = compiled, key
        self.entry = compiled.entries[key]

    @property
    def graph(self):
        return self.entry.graph

    def __call__(self, *args, **kwargs):
        key, tensors = self.compiled.signature(args, kwargs)
        if key != self.key:
            raise RuntimeError(f"this function was traced for inputs {_describe(self.key)}, "
                               f"got {_describe(key)}; trace it again (or use dt.compile, "
                               f"which records one graph per signature)")
        if not self.entry.guards_hold() or self.entry.state_ids != self.compiled._state_ids():
            raise RuntimeError("a tensor captured by the trace changed shape, dtype, device "
                               "or requires_grad, or a module's parameter was replaced, since "
                               "it was traced; trace again")
        return self.entry.runner(tensors)


def _describe(key):
    leaves = [k for k in key[0] if len(k) == 5]
    return ", ".join(f"[{', '.join(map(str, k[0]))}] {k[1]}" + (" requires_grad" if k[3] else "")
                     for k in leaves)


def trace(fn, example_inputs, *, check_trace=True, passes=PASSES):
    """Record `fn(*example_inputs)` into a graph (`.graph`) and return a callable replaying
    it. As `torch.jit.trace`, `check_trace=True` runs `fn` a second time and checks that the
    recordings agree; side effects of `fn` (optimizer steps...) happen on both runs."""
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    compiled = CompiledFunction(fn, "error", passes, check_trace)
    compiled(*inputs)
    if check_trace:
        compiled(*inputs)
    key, _ = compiled.signature(inputs, {})
    return TracedFunction(compiled, key)
