"""The thread-local state that eager ops consult: grad mode and the observer.

It lives in `core` so that Tensor's host reads (`item`, `tolist`, `numpy`) can report to the
observer without `core` importing anything above it; `dtrain.autograd.grad_mode` and
`dtrain.autograd.observer` are its public faces.
"""
import threading


class _State(threading.local):
    enabled = True   # grad mode: whether ops record the backward graph
    observer = None  # an autograd.observer.Observer that sees every op and effect, or None


state = _State()
