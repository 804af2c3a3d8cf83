"""The thread-local state that eager ops consult: grad mode and the observer.

It lives in `core` so that Tensor's host reads (`item`, `tolist`, `numpy`) can report to the
observer without `core` importing anything above it; `dtrain.autograd.grad_mode` and
`dtrain.autograd.observer` are its public faces.
"""
import threading
from contextlib import contextmanager


class _State(threading.local):
    enabled = True   # grad mode: whether ops record the backward graph
    observer = None  # an autograd.observer.Observer that sees every op and effect, or None


state = _State()
# NOTE: how many threads have an observer now. Op.apply reads this module attribute before
# the thread-local slot: ~40 ns against ~200 ns for a threading.local attribute (measured
# here under load), on the library's hottest path (benchmarks/op_overhead.py).
observed = 0
_lock = threading.Lock()


@contextmanager
def observing(observer):
    """Make `observer` see everything this thread runs inside the block (one at a time)."""
    global observed
    if state.observer is not None:
        raise RuntimeError(f"{type(state.observer).__name__} is already observing this thread")
    with _lock:
        observed += 1
    state.observer = observer
    try:
        yield observer
    finally:
        state.observer = None
        with _lock:
            observed -= 1
