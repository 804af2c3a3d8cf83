"""The one seam between eager execution and graph mode: an observer on the thread-local state.

Eager code calls `state.observer` (None when nothing observes: one attribute test) wherever
something happens to arrays, as JAX's `bind` hands every primitive to the current
interpreter. The events, with what eager code does when nothing observes:

    op(node, args, params, result)      after each registry op application (`Op.apply`)
    write(tensor, array)                an array about to be copied into a tensor in place
    setitem(tensor, key, value)         `tensor[key] = value` outside autograd, about to run
    snapshot(tensor, copy)              the copy of a tensor that an in-place op saves
    created(tensor)                     a tensor made from Python values or sizes (zeros,
                                        full, tensor([...])): a constant, not state
    backward(create_graph)              a backward pass starts
    accumulate(leaf, grad, apply)       a leaf's gradient arrives: `apply()` accumulates it
                                        into `.grad` and runs its post hooks
    callbacks(run)                      the backward pass ends: `run()` runs queued callbacks
    host_read(tensor, what)             Python reads a tensor's values (item, tolist, numpy)
    state_write(owner, key)             Python assigns `owner[key]` (an optimizer's
                                        hyperparameter), which a graph cannot replay
    effect(owner, method, args, kwargs) a method marked `@effect` (optimizer and scheduler
                                        steps, zero_grad, GradScaler): returns its result

`Observer` is the protocol with eager behavior; dtrain.jit's Tracer records instead.
"""
import functools

from dtrain.core.state import observing, state  # noqa: F401  (observing: the public name)


class Observer:
    """What eager execution reports (see the module doc); every method defaults to eager."""

    def op(self, node, args, params, result):
        pass

    def write(self, tensor, array):
        pass

    def setitem(self, tensor, key, value):
        pass

    def snapshot(self, tensor, copy):
        pass

    def created(self, tensor):
        pass

    def backward(self, create_graph):
        pass

    def accumulate(self, leaf, grad, apply):
        apply()

    def callbacks(self, run):
        run()

    def host_read(self, tensor, what):
        pass

    def state_write(self, owner, key):
        pass

    def effect(self, owner, method, args, kwargs):
        return method(owner, *args, **kwargs)


def effect(method):
    """Mark `method` as one unit that graph mode replays by calling it again (with the same
    arguments) instead of recording what it does: optimizer and scheduler steps, zero_grad."""
    if getattr(method, "is_effect", False):
        return method

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        observer = state.observer
        if observer is None:
            return method(self, *args, **kwargs)
        return observer.effect(self, method, args, kwargs)
    wrapper.is_effect = True
    return wrapper


def mark_effects(cls, names):
    """Make the methods `names` that `cls` defines itself effects (for `__init_subclass__`,
    so that a subclass's override of `step` is an effect as the base's is)."""
    for name in names:
        method = cls.__dict__.get(name)
        if callable(method):
            setattr(cls, name, effect(method))
