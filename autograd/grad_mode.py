"""The grad-mode switch: whether ops record the graph (thread-local, as in PyTorch)."""
import functools

from dtrain.core.state import state


def is_grad_enabled():
    """Whether operations record a graph for backward now."""
    return state.enabled


class _Mode:
    """Context manager and decorator that runs its body with grad mode set to `mode`."""

    mode = True

    def __new__(cls, func=None):
        self = super().__new__(cls)
        self._prev = []
        if callable(func):  # bare decorator use: @dt.no_grad
            return self(func)
        return self

    def __init__(self, func=None):
        pass

    def __enter__(self):
        self._prev.append(state.enabled)
        state.enabled = self.mode

    def __exit__(self, *exc):
        state.enabled = self._prev.pop()

    def __call__(self, func):
        mode_cls = type(self)

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with mode_cls():
                return func(*args, **kwargs)
        return wrapper


class no_grad(_Mode):
    """Disable graph recording: `with dt.no_grad():` or `@dt.no_grad()`."""

    mode = False


class enable_grad(_Mode):
    """Enable graph recording inside a `no_grad` region."""

    mode = True


inference_mode = no_grad


class set_grad_enabled:
    """Set grad mode now; as a context manager, restore the previous mode on exit."""

    def __init__(self, mode):
        self._prev = state.enabled
        state.enabled = bool(mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        state.enabled = self._prev

    def __call__(self, func):
        mode = state.enabled
        state.enabled = self._prev

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(mode):
                return func(*args, **kwargs)
        return wrapper
