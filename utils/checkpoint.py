"""Activation checkpointing, as `torch.utils.checkpoint`: trade compute for memory.

`checkpoint(fn, *args)` runs `fn` and returns its outputs, but the graph nodes recorded
inside `fn` free the arrays they saved for backward as soon as `fn` returns. When backward
first reaches one of them, `fn` runs again on the same inputs (with the random generators
and autocast state of the first run, so dropout draws the same masks) and each node takes
the saved state of its twin in the recomputation. Backward then goes on through the
original nodes: the gradients are the ones an unchecked run computes, float op for float
op, and hooks (DDP's included) fire once, as without checkpointing.
"""
import threading
import warnings
import weakref

from dtrain.autograd import graph
from dtrain.autograd import node as _node
from dtrain.autograd.autocast import autocast, is_autocast_enabled
from dtrain.autograd.grad_mode import enable_grad, no_grad, state
from dtrain.core import random
from dtrain.core.tensor import Tensor

_CHECKS = ("default", "none")
_REENTRANT_WARNING = (
    "torch.utils.checkpoint: the use_reentrant parameter should be passed explicitly. "
    "Starting in PyTorch 2.9, calling checkpoint without use_reentrant will raise an "
    "exception. use_reentrant=False is recommended, but if you need to preserve the current "
    "default behavior, you can pass use_reentrant=True. Refer to docs for more details on "
    "the differences between the two variants.")


class CheckpointError(RuntimeError):
    """The recomputation of a checkpointed function did not repeat its first run."""


def checkpoint(function, *args, use_reentrant=None, context_fn=None, preserve_rng_state=True,
               determinism_check="default", **kwargs):
    """Run `function(*args, **kwargs)` without keeping its activations for backward (see the
    module doc); returns what `function` returns (tensors, tuples of them, other values).

    `use_reentrant`: pass it. None warns as PyTorch does and means True. True (PyTorch's
    reentrant variant) refuses `kwargs` and, when no tensor in `args` requires grad, warns
    and records nothing, so parameters used inside get no gradient; False passes `kwargs`
    on and gradients reach every tensor used inside. `context_fn()` (use_reentrant=False
    only) returns two context managers, entered around the first run and around the
    recomputation. `preserve_rng_state=False` skips restoring the generators.
    `determinism_check="default"` raises CheckpointError when the recomputation saves
    arrays of other shapes or dtypes than the first run; "none" skips that comparison.
    """
    if use_reentrant is None:
        warnings.warn(_REENTRANT_WARNING, stacklevel=2)
        use_reentrant = True
    if determinism_check not in _CHECKS:
        raise ValueError(f"determinism_check should be one of {list(_CHECKS)}, but got "
                         f"{determinism_check!r}")
    if use_reentrant:
        if context_fn is not None:
            raise ValueError("Passing `context_fn` is only supported when "
                             "use_reentrant=False.")
        if kwargs:
            raise ValueError("Unexpected keyword arguments: " + ",".join(kwargs))
        if not any(isinstance(a, Tensor) and a.requires_grad for a in args):
            warnings.warn("None of the inputs have requires_grad=True. Gradients will be None",
                          stacklevel=2)
            with no_grad():
                return function(*args)
    if not state.enabled or _running.depth:  # nothing recorded, or an outer region frees it
        return function(*args, **kwargs)
    segment = _Segment(function, args, kwargs, context_fn, preserve_rng_state,
                       determinism_check == "default")
    return segment.run()


def checkpoint_sequential(functions, segments, input, use_reentrant=None, **kwargs):
    """Run `functions` (a list, or an `nn.Sequential`'s children) one after another on
    `input`, in `segments` chunks: all but the last chunk are checkpointed. `kwargs` takes
    `preserve_rng_state` only."""
    if use_reentrant is None:
        warnings.warn(_REENTRANT_WARNING, stacklevel=2)
        use_reentrant = True
    preserve = kwargs.pop("preserve_rng_state", True)
    if kwargs:
        raise ValueError("Unexpected keyword arguments: " + ",".join(kwargs))
    if hasattr(functions, "children"):
        functions = list(functions.children())
    size = len(functions) // segments
    end = 0
    for start in range(0, size * (segments - 1), size):
        end = start + size
        input = checkpoint(_chain(functions[start:end]), input, use_reentrant=use_reentrant,
                           preserve_rng_state=preserve)
    return _chain(functions[end:])(input)


def _chain(functions):
    def forward(x):
        for f in functions:
            x = f(x)
        return x
    return forward


class _Running(threading.local):
    """How many checkpointed functions run (first run or recomputation) on this thread: a
    checkpoint nested in another runs plainly, its nodes freed and refilled by the outer."""

    depth = 0

    def __enter__(self):
        self.depth += 1

    def __exit__(self, *exc):
        self.depth -= 1


_running = _Running()


class _Segment:
    """One checkpointed call: its inputs, what to restore for the recomputation, and
    (weakly) the nodes of its first run, keyed by their order of recording."""

    def __init__(self, function, args, kwargs, context_fn, preserve_rng_state, check):
        self.function, self.args, self.kwargs = function, args, kwargs
        self.versions = [a._version[0] if isinstance(a, Tensor) else None for a in args]
        self.context_fn = context_fn
        self.recompute_context = None
        devices = {a.device for a in args if isinstance(a, Tensor) and a.is_cuda}
        self.rng = random.get_states(devices) if preserve_rng_state else None
        self.autocast = {t: is_autocast_enabled(t) for t in ("cpu", "cuda")}
        self.check = check
        self.nodes = self.meta = self.handles = None

    def _call(self, context):
        if context is None:
            return self.function(*self.args, **self.kwargs)
        with context:
            return self.function(*self.args, **self.kwargs)

    def run(self):
        """The first run: record, then free what the recorded nodes saved."""
        first, self.recompute_context = (self.context_fn() if self.context_fn is not None
                                         else (None, None))
        start = next(_node._seq)
        with _running:
            out = self._call(first)
        nodes = graph.nodes_since(graph.tensors_in(out), start)
        if not nodes:
            return out
        self.meta = {seq - start: _meta(n) for seq, n in nodes.items()} if self.check else None
        self.nodes = {seq - start: weakref.ref(n) for seq, n in nodes.items()}
        self.handles = []
        for n in nodes.values():
            graph.drop_saved(n)
            self.handles += [n.register_prehook(nr, self._recompute) for nr in range(n.n_outputs)]
        return out

    def _recompute(self, grad):
        """Pre-hook of every node of the first run: the first one reached in backward runs
        the function again and refills them all."""
        if self.nodes is None:
            return
        for h in self.handles:
            h.remove()
        nodes, self.nodes = self.nodes, None
        for i, (a, v) in enumerate(zip(self.args, self.versions)):
            if isinstance(a, Tensor) and a._version[0] != v:
                raise RuntimeError(
                    f"torch.utils.checkpoint: argument {i} of {_name(self.function)} "
                    f"({a.dtype} {list(a.shape)}) was modified by an inplace operation after "
                    f"the checkpointed call (version {a._version[0]}; expected {v}), so its "
                    f"recomputation would not repeat the first run. Hint: modify a clone.")
        with random.fork_rng(self.rng.keys() if self.rng else (), self.rng is not None), \
                enable_grad(), _running, \
                autocast("cpu", enabled=self.autocast["cpu"]), \
                autocast("cuda", enabled=self.autocast["cuda"]):
            if self.rng is not None:
                random.set_states(self.rng)
            start = next(_node._seq)
            out = self._call(self.recompute_context)
        twins = graph.nodes_since(graph.tensors_in(out), start)
        for i, ref in nodes.items():
            n = ref()
            if n is None or n._freed:
                continue
            twin = twins.get(start + i)
            if twin is None or type(twin) is not type(n):
                raise CheckpointError(
                    f"torch.utils.checkpoint: the recomputation of {_name(self.function)} did "
                    f"not record {n.name()} (op {i} of the first run); the function must run "
                    f"the same ops on every call")
            if self.check and _meta(twin) != self.meta[i]:
                raise CheckpointError(
                    f"torch.utils.checkpoint: Recomputed values for {n.name()} (op {i} of "
                    f"{_name(self.function)}) have different metadata than during the forward "
                    f"pass: saved {self.meta[i]}, recomputed {_meta(twin)}. Pass "
                    f"determinism_check='none' to skip this check.")
            graph.take_saved(n, twin)
        self.function = self.args = self.kwargs = self.rng = self.meta = None


def _meta(node):
    """(shape, dtype) of each array `node` saved, as the determinism check compares them."""
    return [(tuple(a.shape), a.dtype) for a in graph.saved_arrays(node)]


def _name(function):
    return getattr(function, "__qualname__", type(function).__name__)
