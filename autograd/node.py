"""Graph nodes. An `Op` subclass is the rule for one operation (forward on arrays, backward
on Tensors, side by side); an instance is one recorded application of it, the `grad_fn` of
its output. Backward formulas are written with Tensor ops, so that with `create_graph=True`
they are themselves recorded and higher-order gradients come for free.
"""
import itertools

from dtrain.autograd.grad_mode import state
from dtrain.core import state as core_state
from dtrain.core.tensor import Tensor

_seq = itertools.count()

FREED = ("Trying to backward through the graph a second time (or directly access saved "
         "tensors after they have already been freed). Saved intermediate values of the graph "
         "are freed when you call .backward() or autograd.grad(). Specify retain_graph=True if "
         "you need to backward through the graph a second time or if you need to access saved "
         "tensors after calling backward.")


def edge_of(t):
    """Where the gradient of tensor `t` goes: (its grad_fn, output index), (leaf, 0) or None."""
    if not isinstance(t, Tensor) or not t.requires_grad:
        return None
    fn = t.grad_fn
    return (t, 0) if fn is None else (fn, t._output_nr)


def pack(values, node=None):
    """What a node keeps of the values it saves for backward (an Op's inputs, a user
    Function's saved tensors): the values and each tensor's version now (None for a
    non-tensor); an output of `node` is kept by `pack_output`. `unpack` gives them back."""
    if node is None:  # an Op's inputs: the args tuple itself
        return values, [x._version[0] if isinstance(x, Tensor) else None for x in values]
    kept, versions = [], []
    for x in values:
        if isinstance(x, Tensor):
            versions.append(x._version[0])
            if x.grad_fn is node:
                x = pack_output(x)
        else:
            versions.append(None)
        kept.append(x)
    return kept, versions


def unpack(packed, node):
    """The values `pack` kept for `node`, as a tuple, checked against in-place changes made
    since (the version error)."""
    kept, versions = packed
    if type(kept) is tuple:  # an Op's inputs: no output of `node` among them
        for x, saved in zip(kept, versions):
            if saved is not None and x._version[0] != saved:
                raise version_error(x, node, saved)
        return kept
    values = kept
    for i, saved in enumerate(versions):
        if saved is not None:
            x = kept[i]
            if type(x) is tuple:  # an output of `node`
                if values is kept:
                    values = list(kept)
                values[i] = unpack_output(x, node)
            elif x._version[0] != saved:
                raise version_error(x, node, saved)
    return tuple(values)


def pack_output(t):
    """An output of the node that saves it, kept as raw parts (array, version counter, output
    index, version now) rather than the Tensor: no node <-> tensor reference cycle."""
    return t._data, t._version, t._output_nr, t._version[0]


def unpack_output(kept, node):
    """The Tensor `pack_output` kept, linked to `node` again, checked against in-place
    changes made since."""
    data, version, nr, saved = kept
    t = Tensor._make(data, True, node, nr, version)
    if version[0] != saved:
        raise version_error(t, node, saved)
    return t


def version_error(t, node, expected):
    return RuntimeError(
        f"one of the variables needed for gradient computation has been modified by an "
        f"inplace operation: [{t.dtype} {list(t._data.shape)}], saved by {node.name()}, is at "
        f"version {t._version[0]}; expected version {expected} instead. Hint: replace the "
        f"in-place operation (e.g. `x += y`, `x.mul_(2)`, `x[i] = v`) by an out-of-place one.")


class Node:
    """A node of the backward graph (see module doc); also the `ctx` of user Functions."""

    __slots__ = ("next_edges", "needs_input_grad", "in_shapes", "in_dtypes", "seq", "_inputs",
                 "_out", "_pre_hooks", "_freed", "__dict__", "__weakref__")
    n_outputs = 1

    def _record(self, args):
        """Link this node to the producers of `args` (called only when recording)."""
        edges = tuple(edge_of(a) for a in args)
        self.next_edges = edges
        self.needs_input_grad = tuple(e is not None for e in edges)
        self.in_shapes = tuple(a._data.shape if isinstance(a, Tensor) else () for a in args)
        self.in_dtypes = tuple(a._data.dtype if isinstance(a, Tensor) else None for a in args)
        self.seq = next(_seq)
        self._pre_hooks = None
        self._freed = False

    def name(self):
        return f"{type(self).__name__}Backward0"

    def __repr__(self):
        return f"<{self.name()} object at {id(self):#x}>"

    @property
    def next_functions(self):
        return tuple(None if e is None else e for e in self.next_edges)

    def register_prehook(self, output_nr, hook, key=None):
        """Run `hook(grad)` on the gradient of output `output_nr` before this node's backward."""
        if self._pre_hooks is None:
            self._pre_hooks = {}
        hooks = self._pre_hooks.setdefault(output_nr, {})
        return HookHandle(hooks, hook, key)

    def release(self):
        """Free what backward saved; a later access raises the 'backward twice' error."""
        self._inputs = self._out = None
        self.__dict__.clear()
        self._freed = True

    def saved_state(self):
        """{attribute: value} of everything backward may read (for graph mode's stash and
        activation checkpointing, autograd/graph.py): here the whole `__dict__`; an `Op`
        answers what its class declares."""
        return dict(self.__dict__)

    def __getattr__(self, name):
        if not name.startswith("__") and getattr(self, "_freed", False):
            raise RuntimeError(FREED)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")


class HookHandle:
    """Returned by hook registration; `.remove()` unregisters the hook."""

    _ids = itertools.count()

    def __init__(self, hooks, hook, key=None):
        self._hooks = hooks
        self.id = next(self._ids) if key is None else key
        hooks[self.id] = hook

    def remove(self):
        self._hooks.pop(self.id, None)


class StateHookHandle(HookHandle):
    """The handle of a hook on lasting state (a leaf tensor, a module): registering or
    removing one moves `epoch`, which compiled functions guard on (their graphs replay
    the hooks that existed when they recorded)."""

    epoch = 0

    def __init__(self, hooks, hook, key=None):
        super().__init__(hooks, hook, key)
        StateHookHandle.epoch += 1

    def remove(self):
        super().remove()
        StateHookHandle.epoch += 1


class Op(Node):
    """Base of registry ops. Subclasses define:

    `forward(self, *arrays, **params) -> array` (or a tuple when `n_outputs > 1`): the
    computation on backend arrays.
    `backward(self, *grads) -> tuple` of one Tensor gradient (or None) per positional input;
    a gradient may have the shape of the output that broadcast the input: the engine sums it
    down to the input's shape (`self.in_shapes`, `()` for Python scalars).
    `saves`: what backward keeps, declared, never discovered: "inputs" (backward reads
    `self.inputs`), "output" (`self.output`), and the names of the arrays forward stores on
    `self` for it (a mask, the winning taps of a max). Graph mode stashes exactly these, and
    activation checkpointing drops and refills them (`saved_state`); a registry test fails
    for an array attribute forward sets that is not declared.
    Flags: `is_view` (the output may share memory with input 0), `random` (forward draws
    from a random generator: graph passes never fold, merge or drop it), `differentiable`.
    Which forwards take `out=` (a buffer graph replay preallocates) is graph mode's table,
    jit/memory_plan.py; such forwards take their temporaries from `self.scratch`.
    """

    saves = ()
    _keeps_inputs = _keeps_output = False
    is_view = False
    random = False
    kept = False  # True: graph mode runs it though nothing reads its result (a check)
    differentiable = True  # False: never recorded, outputs never require grad
    # The positions of the arguments whose values decide the output's shape (on the class,
    # or set by forward): nonzero's input, a boolean mask in an index. A graph replays
    # static shapes, so graph mode refuses such an op unless those are constants.
    shape_from_data = ()
    workspace = None  # graph replay gives each planned node a dict that outlives the call

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not (isinstance(cls.saves, tuple) and all(isinstance(n, str) for n in cls.saves)):
            raise TypeError(f"{cls.__name__}.saves must be a tuple of names, got {cls.saves!r}")
        # read once here, not per call in apply
        cls._keeps_inputs, cls._keeps_output = "inputs" in cls.saves, "output" in cls.saves

    def saved_state(self):
        """{attribute: value} for what `saves` declares, the parts that are set: the packed
        inputs (`_inputs`) and output (`_out`), and the stashed arrays."""
        found = {}
        for name in self.saves:
            attr = _SAVED_ATTRS.get(name, name)
            try:  # NOTE: not getattr: Node.__getattr__ answers an unset slot of a freed node
                found[attr] = object.__getattribute__(self, attr)
            except AttributeError:
                pass
        return found

    def scratch(self, name, shape, dtype, xp):
        """A temporary array for forward: a new one in eager mode; in graph replay, the same
        array on every replay of this node (kept in its `workspace`), so that a replayed
        step allocates nothing. Its contents are undefined."""
        ws = self.workspace
        if ws is None:
            return xp.empty(shape, dtype)
        arr = ws.get(name)
        if arr is None:
            arr = ws[name] = xp.empty(shape, dtype)
        return arr

    @classmethod
    def apply(cls, *args, **params):
        node = object.__new__(cls)
        if not (state.enabled and cls.differentiable):  # nothing is recorded (e.g. in backward)
            arrays = [a._data if isinstance(a, Tensor) else a for a in args]
            try:
                out = node.forward(*arrays, **params)
            except (ValueError, TypeError) as err:
                raise _forward_error(node, args, err) from err
            if cls.n_outputs == 1:
                result = Tensor._make(out)
                if cls.is_view:
                    _mark_view(result, args[0], cls, args, params)
            else:
                result = tuple(Tensor._make(o, False, None, i) for i, o in enumerate(out))
                if cls.is_view:
                    for t in result:
                        _mark_view(t, args[0], cls, args, params)
            if core_state.observed and state.observer is not None:  # autograd/observer.py
                state.observer.op(node, args, params, result)
            return result
        # NOTE: Node._record's edge logic, inlined with the unwrapping loop: one pass over
        # the arguments on the hottest path of the library. Measured (cachegrind, CPU
        # instructions per op, forward + backward, over 10,000 ops of op_overhead.py's chains,
        # PYTHONHASHSEED=0) against this loop unwrapping only and then calling `_record`:
        # 1,000-op chain 81,639 vs 85,066 (-4.0%); add/mul chain 85,693 vs 85,473 (+0.3%).
        arrays = []
        edges = []
        shapes = []
        dtypes = []  # the engine casts each input's gradient to its dtype
        needs = []
        record = False
        for a in args:
            if isinstance(a, Tensor):
                # is_differentiable_view(a), inlined on the hottest path
                if a._base is not None and a._view is not None:
                    refresh_view(a)
                d = a._data
                arrays.append(d)
                shapes.append(d.shape)
                dtypes.append(d.dtype)
                if a.requires_grad:
                    record = True
                    fn = a.grad_fn
                    edges.append((a, 0) if fn is None else (fn, a._output_nr))
                    needs.append(True)
                    continue
            else:
                arrays.append(a)
                shapes.append(())
                dtypes.append(None)
            edges.append(None)
            needs.append(False)
        try:
            out = node.forward(*arrays, **params)
        except (ValueError, TypeError) as err:
            raise _forward_error(node, args, err) from err
        if cls.n_outputs == 1:
            t = result = Tensor._make(out, record, node if record else None)
            if cls.is_view:
                _mark_view(t, args[0], cls, args, params)
        else:
            result = tuple(Tensor._make(o, record, node if record else None, i)
                           for i, o in enumerate(out))
            if cls.is_view:
                for t in result:
                    _mark_view(t, args[0], cls, args, params)
        if record:
            node.next_edges = edges
            node.in_shapes = shapes
            node.in_dtypes = dtypes
            node.needs_input_grad = needs
            node.seq = next(_seq)
            node._pre_hooks = None
            node._freed = False
            if cls._keeps_inputs:
                node._inputs = pack(args)
            if cls._keeps_output:
                node._out = pack_output(t)
        if core_state.observed and state.observer is not None:  # autograd/observer.py
            state.observer.op(node, args, params, result)
        return result

    @property
    def inputs(self):
        """The input tensors (and constants) of forward, checked against in-place changes."""
        if self._freed:
            raise RuntimeError(FREED)
        return unpack(self._inputs, self)

    @property
    def output(self):
        """The output of forward, as a Tensor that is still linked to this node."""
        if self._freed:
            raise RuntimeError(FREED)
        return unpack_output(self._out, self)


_SAVED_ATTRS = {"inputs": "_inputs", "output": "_out"}  # where Op keeps them (packed)


def _mark_view(t, src, cls, args, params):
    """Make `t` a view of `src`'s base when its array aliases `src`'s: it shares the version
    counter, and `t._view` = (steps from the base to `t`, the base's grad_fn they were taken
    from), so an in-place change of `t` can rebase the base's history
    (`tensor_methods._commit`) and a change of the base's history can renew `t`'s
    (`refresh_view`). A view of a detached tensor is not differentiable (`_view` None), as in
    PyTorch."""
    if isinstance(src, Tensor):
        owner, d = t._data.base, src._data
        if owner is not None and (owner is d or owner is d.base):
            t._version = src._version
            step = (cls, args[1:], params, t._output_nr)
            if src._base is None:
                t._base, t._view = src, ((step,), src.grad_fn)
            else:
                t._base = src._base
                t._view = None if src._view is None else (src._view[0] + (step,),
                                                          src._base.grad_fn)


def is_differentiable_view(t):
    """Whether `t` is a differentiable view of another tensor (not a detached alias)."""
    return t._base is not None and t._view is not None


def replay_view(x, steps):
    """Apply view `steps` (from `_mark_view`) to `x`: a Tensor (recorded ops) or an array."""
    for cls, extra, params, i in steps:
        if isinstance(x, Tensor):
            x = cls.apply(x, *extra, **params)
        else:
            extra = [e._data if isinstance(e, Tensor) else e for e in extra]
            x = object.__new__(cls).forward(x, *extra, **params)
        if isinstance(x, tuple):
            x = x[i]
    return x


def refresh_view(t):
    """Renew view `t`'s history after its base's changed (an in-place op on the base or on
    another view of it): `t` becomes a view of the base as it is now."""
    steps, seen = t._view
    base = t._base
    if base.grad_fn is not seen:
        fresh = replay_view(base, steps)
        t.grad_fn, t._output_nr, t.requires_grad = fresh.grad_fn, fresh._output_nr, \
            fresh.requires_grad
        t._view = (steps, base.grad_fn)


class CheckError(ValueError):
    """A check op found invalid values (its message is the whole error)."""


def _forward_error(node, args, err):
    """The error to raise for a backend failure in `node.forward`: mixed devices, or the
    backend's message with the op and its inputs named."""
    if len({type(a._data) for a in args if isinstance(a, Tensor)}) > 1:
        return _device_error(type(node), args)
    if isinstance(err, (TypeError, CheckError)):
        return err
    return RuntimeError(f"{type(node).__name__.lower()}: {err} (inputs: {_describe(args)})")


def _describe(args):
    return ", ".join(f"{a.dtype.name}{list(a._data.shape)}" if isinstance(a, Tensor)
                     else repr(a) for a in args)


def _device_error(cls, args):
    devices = sorted({str(a.device) for a in args if isinstance(a, Tensor)})
    return RuntimeError(f"Expected all tensors to be on the same device, but found at least two "
                        f"devices, {devices[0]} and {devices[1]}! (in {cls.__name__.lower()})")
