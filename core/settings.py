"""Process-wide switches PyTorch scripts set at startup: float32 matmul precision,
deterministic algorithms, intra-op threads. On NumPy the first two change nothing that can
be computed differently (float32 matmuls are plain float32 GEMMs; CPU ops are
deterministic), so they are recorded and reported back, as scripts read them."""
import os
import warnings

_PRECISIONS = ("highest", "high", "medium")
_state = {"precision": "highest", "deterministic": False, "warn_only": False, "threads": None}


def set_float32_matmul_precision(precision):
    """Record torch's float32 matmul precision: "highest", "high" or "medium" (see above)."""
    if precision not in _PRECISIONS:
        raise RuntimeError(f"Invalid float32 matmul precision {precision!r}; expected one of "
                           f"{', '.join(_PRECISIONS)}")
    _state["precision"] = precision


def get_float32_matmul_precision():
    """The precision set by set_float32_matmul_precision ("highest" by default)."""
    return _state["precision"]


def use_deterministic_algorithms(mode, *, warn_only=False):
    """Record torch's deterministic-algorithms switch (see above)."""
    _state["deterministic"], _state["warn_only"] = bool(mode), bool(warn_only)


def are_deterministic_algorithms_enabled():
    """The mode set by use_deterministic_algorithms."""
    return _state["deterministic"]


def is_deterministic_algorithms_warn_only_enabled():
    """The warn_only flag set by use_deterministic_algorithms."""
    return _state["warn_only"]


def _blas_limits():
    try:
        import threadpoolctl
    except ImportError:
        return None
    return threadpoolctl


def get_num_threads():
    """Threads of the BLAS that runs dtrain's matmuls and convolutions."""
    if _state["threads"] is not None:
        return _state["threads"]
    tpc = _blas_limits()
    if tpc is not None:
        counts = [info["num_threads"] for info in tpc.threadpool_info()
                  if info.get("user_api") == "blas"]
        if counts:
            return max(counts)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def set_num_threads(n):
    """Limit the BLAS to `n` threads (through threadpoolctl; without it, set
    OMP_NUM_THREADS before Python starts: a warning says so)."""
    if not isinstance(n, int) or n < 1:
        raise RuntimeError(f"set_num_threads expects a positive integer, got {n!r}")
    tpc = _blas_limits()
    if tpc is None:
        warnings.warn("dt.set_num_threads needs the threadpoolctl package to limit NumPy's BLAS "
                      "at run time (pip install threadpoolctl); without it, set "
                      "OMP_NUM_THREADS before starting Python", stacklevel=2)
    else:
        tpc.threadpool_limits(n, user_api="blas")
    _state["threads"] = n


def get_num_interop_threads():
    """1: NumPy runs one op at a time."""
    return 1  # NumPy runs one op at a time


def set_num_interop_threads(n):
    """Accept torch's inter-op thread count (dtrain runs one op at a time)."""
    if not isinstance(n, int) or n < 1:
        raise RuntimeError(f"set_num_interop_threads expects a positive integer, got {n!r}")
