"""Anomaly detection, as `torch.autograd.detect_anomaly`: while enabled, backward checks
every gradient a node returns and raises, naming the node, at the first NaN."""
import functools
import threading


class _Anomaly(threading.local):
    enabled = False
    check_nan = True


anomaly = _Anomaly()


def is_anomaly_enabled():
    return anomaly.enabled


def is_anomaly_check_nan_enabled():
    return anomaly.enabled and anomaly.check_nan


class set_detect_anomaly:
    """Turn anomaly detection on or off: a call, or a context manager that restores the
    previous setting on exit."""

    def __init__(self, mode, check_nan=True):
        self._prev = (anomaly.enabled, anomaly.check_nan)
        anomaly.enabled, anomaly.check_nan = bool(mode), bool(check_nan)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        anomaly.enabled, anomaly.check_nan = self._prev


class detect_anomaly:
    """Context manager and decorator enabling anomaly detection for its body."""

    def __init__(self, check_nan=True):
        self.check_nan = check_nan
        self._prev = []

    def __enter__(self):
        self._prev.append(set_detect_anomaly(True, self.check_nan))

    def __exit__(self, *exc):
        self._prev.pop().__exit__(*exc)

    def __call__(self, func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with detect_anomaly(self.check_nan):
                return func(*args, **kwargs)
        return wrapper


def check_grads(fn, in_grads):
    """Raise if node `fn` returned a NaN gradient (called by the engine while enabled)."""
    for i, g in enumerate(in_grads or ()):
        if g is not None and g._data.dtype.kind in "fc" and bool((g._data != g._data).any()):
            raise RuntimeError(f"Function '{fn.name()}' returned nan values in its {i}th "
                               f"output.")
