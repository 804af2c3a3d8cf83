"""The backward engine: iterative, deterministic reverse-mode differentiation.

Nodes run in reverse creation order (a heap keyed by sequence number), each once all the
gradients flowing into it are summed; no Python recursion, so chains of any length work.
Every gradient a node passes on is summed down to the shape of the input it belongs to when
that input was broadcast (a recorded SumToSize), then cast to its dtype (as PyTorch: in
`a32 * b64`, a's gradient is float32), so no op's backward has to do either.
Saved tensors are released as each node finishes unless the graph is retained.
"""
import heapq
import itertools
import threading
from contextlib import contextmanager

from dtrain.autograd.anomaly_mode import check_grads, is_anomaly_check_nan_enabled
from dtrain.autograd.grad_mode import state
from dtrain.autograd.node import Node
from dtrain.autograd.ops.convert import Cast
from dtrain.autograd.ops.shape import SumToSize
from dtrain.core.tensor import Tensor


def _dependencies(roots):
    """How many graph edges point at each node or leaf reachable from `roots`."""
    deps = dict.fromkeys(roots, 0)
    stack = list(deps)
    while stack:
        fn = stack.pop()
        edges = fn.next_edges
        for e in edges:
            if e is None:
                continue
            obj = e[0]
            n = deps.get(obj)
            if n is None:
                deps[obj] = 1
                if isinstance(obj, Node):
                    stack.append(obj)
            else:
                deps[obj] = n + 1
    return deps


def _add(grads, obj, nr, g):
    if obj.n_outputs == 1:
        old = grads.get(obj)
        grads[obj] = g if old is None else old + g
    else:
        slots = grads.get(obj)
        if slots is None:
            slots = grads[obj] = [None] * obj.n_outputs
        slots[nr] = g if slots[nr] is None else slots[nr] + g


def _run_hooks(hooks, g):
    for hook in list(hooks.values()):
        r = hook(g)
        if r is not None:
            g = r
    return g


_NONES = itertools.repeat(None)  # the gradients of a node that received none
_current = threading.local()  # the backward pass running on this thread, if any


def queue_callback(fn):
    """Run `fn()` once the current backward pass has finished (e.g. DDP's final wait)."""
    run = getattr(_current, "run", None)
    if run is None:
        raise RuntimeError("queue_callback can only be called during the backward pass")
    run.callbacks.append(fn)


class _Run:
    """One backward pass: gradients in flight, captures for autograd.grad, aliasing guard."""

    def __init__(self, create_graph, capture, accumulate):
        self.create_graph = create_graph
        self.capture = capture          # {leaf or (node, nr): slot} for autograd.grad
        self.captured = {}
        self.accumulate = accumulate    # None: every leaf; else a set of leaves
        self.stored = set()             # ids of arrays handed to leaves' .grad in this pass
        self.callbacks = []             # queue_callback functions, run at the end

    def finish_leaf(self, leaf, g):
        if leaf._hooks:
            g = _run_hooks(leaf._hooks, g)
        if self.capture is not None:
            if leaf in self.capture:
                self.captured[leaf] = g
            return
        if self.accumulate is not None and leaf not in self.accumulate:
            return
        if state.observer is not None:  # autograd/observer.py
            state.observer.accumulate(leaf, g, lambda: self.deliver(leaf, g))
        else:
            self.deliver(leaf, g)

    def deliver(self, leaf, g):
        """Accumulate `g` into `leaf.grad`, then run the leaf's post-accumulate hooks."""
        self._accumulate_grad(leaf, g)
        if leaf._post_hooks:
            for hook in list(leaf._post_hooks.values()):
                hook(leaf)

    def run_callbacks(self):
        """Run the queued callbacks in order (one may queue another)."""
        while self.callbacks:
            self.callbacks.pop(0)()

    def _accumulate_grad(self, leaf, g):
        if g._data.shape != leaf._data.shape:
            raise RuntimeError(f"gradient of shape {tuple(g._data.shape)} computed for a leaf of "
                               f"shape {tuple(leaf._data.shape)}")
        if self.create_graph:
            leaf.grad = g if leaf.grad is None else leaf.grad + g
            return
        arr = g._data
        if leaf.grad is not None:
            leaf.grad._data += arr
            return
        base = arr.base
        if id(arr) in self.stored or (base is not None and id(base) in self.stored):
            arr = arr.copy()  # never let two leaves' .grad share memory
        self.stored.add(id(arr))
        if arr.base is not None:
            self.stored.add(id(arr.base))
        leaf.grad = Tensor._make(arr)


@contextmanager
def backward_pass():
    """A backward pass without the graph walk, as a context: `run.deliver(leaf, grad)` and
    `run.run_callbacks()` do what the engine does, and `queue_callback` works inside (graph
    mode replays a recorded backward this way)."""
    run = _Run(False, None, None)
    prev = getattr(_current, "run", None)
    _current.run = run
    try:
        yield run
    finally:
        _current.run = prev


def execute(roots, grad_roots, retain_graph=False, create_graph=False, capture=None,
            accumulate=None):
    """Back-propagate `grad_roots` from `roots`; returns {captured key: grad} for `capture`."""
    run = _Run(create_graph, capture, accumulate)
    grads = {}
    for g in grad_roots:
        run.stored.add(id(g._data))
    nodes = [t.grad_fn for t in roots if t.grad_fn is not None]
    deps = _dependencies(nodes)
    for t, g in zip(roots, grad_roots):
        _add(grads, t if t.grad_fn is None else t.grad_fn, t._output_nr, g)
    heap = [(-fn.seq, fn) for fn in dict.fromkeys(nodes) if deps[fn] == 0]
    heapq.heapify(heap)
    prev_mode, prev_run = state.enabled, getattr(_current, "run", None)
    state.enabled = create_graph
    _current.run = run
    observer = state.observer
    try:
        if observer is not None:  # autograd/observer.py
            observer.backward(create_graph)
        for t in roots:
            if t.grad_fn is None and deps.get(t, 0) == 0 and t in grads:
                run.finish_leaf(t, grads.pop(t))
        heappop, heappush = heapq.heappop, heapq.heappush
        plain = run.capture is None
        # NOTE: summing gradients on raw arrays skips an op dispatch per extra use of a
        # tensor; only create_graph (the sum must be differentiable) and jit tracing (the
        # sum must be observed) need the Tensor op.
        raw_sum = not create_graph and observer is None
        check_nan = is_anomaly_check_nan_enabled()
        while heap:
            fn = heappop(heap)[1]
            g = grads.pop(fn, None)
            if g is None:
                in_grads = ()
            elif plain and not fn._pre_hooks and fn.n_outputs == 1:
                in_grads = fn.backward(g)
            else:
                in_grads = _call(fn, g, run)
            if check_nan:
                check_grads(fn, in_grads)
            if not retain_graph:
                fn.release()
            edges = fn.next_edges
            for e, ig, shape, want in zip(edges, in_grads or _NONES, fn.in_shapes,
                                          fn.in_dtypes):
                if e is None:
                    continue
                obj = e[0]
                if ig is not None:
                    if ig._data.shape != shape:  # the input was broadcast
                        ig = SumToSize.apply(ig, shape)
                    if ig._data.dtype != want:  # each input's gradient has its dtype
                        ig = (Tensor._make(ig._data.astype(want)) if raw_sum
                              else Cast.apply(ig, want))
                    if obj.n_outputs == 1:
                        old = grads.get(obj)
                        grads[obj] = ig if old is None else (
                            Tensor._make(old._data + ig._data) if raw_sum else old + ig)
                    else:
                        _add(grads, obj, e[1], ig)
                n = deps[obj] - 1
                deps[obj] = n
                if n == 0:
                    if isinstance(obj, Node):
                        heappush(heap, (-obj.seq, obj))
                    else:
                        g_leaf = grads.pop(obj, None)
                        if g_leaf is not None:
                            run.finish_leaf(obj, g_leaf)
        if run.callbacks:
            if observer is not None:
                observer.callbacks(run.run_callbacks)
            else:
                run.run_callbacks()
    finally:
        state.enabled = prev_mode
        _current.run = prev_run
    return run.captured


def _call(fn, g, run):
    """Run one node's backward on its output gradient(s), hooks and captures included."""
    multi = fn.n_outputs > 1
    if fn._pre_hooks:
        for nr, hooks in fn._pre_hooks.items():
            if multi:
                if g[nr] is not None:
                    g[nr] = _run_hooks(hooks, g[nr])
            else:
                g = _run_hooks(hooks, g)
    if run.capture is not None:
        for nr in range(fn.n_outputs):
            if (fn, nr) in run.capture:
                run.captured[(fn, nr)] = g[nr] if multi else g
    return fn.backward(*g) if multi else fn.backward(g)

