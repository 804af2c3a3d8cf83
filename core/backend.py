"""Array backends: NumPy for "cpu", CuPy for "cuda". The one place that knows both.

Ops receive arrays and ask `array_module(x)` for their `xp`; nothing else imports CuPy.
CuPy is imported lazily, the first time a CUDA device is asked for, so that a machine
without CuPy or without a GPU runs everything on the CPU and reports CUDA requests clearly.
"""
import ctypes
import importlib.util
import os
import sys
from contextlib import nullcontext

import numpy as np

from dtrain.core.device import CPU, device


def _keep_freed_memory():
    """Tune glibc malloc for training loops (Linux only; DTRAIN_MALLOC_TUNING=0 disables).

    NOTE: every step frees and reallocates the same large activation and gradient arrays.
    By default glibc returns them to the kernel (mmap above 128 KiB, heap trimming), and
    each reuse then page-faults the memory back in: about 3,500 faults per CNN step here,
    a third of its time. Serving arrays below 32 MiB from the heap and not trimming it
    keeps the process at its peak footprint instead, as a caching allocator would."""
    if not sys.platform.startswith("linux") or os.environ.get("DTRAIN_MALLOC_TUNING") == "0":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 1 << 30)


_keep_freed_memory()

_cupy = None
_cuda_error = None


def _load_cupy():
    """Import CuPy and check that a GPU answers; cache the outcome either way."""
    global _cupy, _cuda_error
    if _cupy is not None or _cuda_error is not None:
        return _cupy
    try:
        import cupy
    except ImportError as err:
        _cuda_error = f"CuPy is not installed ({err}); install dtrain[cuda]"
        return None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDARuntimeError without driver or GPU
        _cuda_error = f"CuPy found no usable GPU: {type(err).__name__}: {err}"
        return None
    if count == 0:
        _cuda_error = "CuPy reports 0 CUDA devices"
        return None
    _cupy = cupy
    return cupy


def cuda_is_available():
    return _load_cupy() is not None


def cuda_is_built():
    """Whether CuPy is installed (a GPU may still be missing): PyTorch's "built with CUDA"."""
    return importlib.util.find_spec("cupy") is not None


def cuda_device_count():
    return _cupy.cuda.runtime.getDeviceCount() if _load_cupy() else 0


def require_cuda(dev=None):
    """Return the cupy module, or raise a RuntimeError that says why CUDA is unusable."""
    cp = _load_cupy()
    if cp is None:
        raise RuntimeError(f"CUDA device {str(dev) if dev else 'cuda'} was requested but CUDA "
                           f"is not available: {_cuda_error}")
    if dev is not None and dev.index is not None and dev.index >= cp.cuda.runtime.getDeviceCount():
        raise RuntimeError(f"CUDA error: invalid device ordinal {dev.index} (this machine has "
                           f"{cp.cuda.runtime.getDeviceCount()} CUDA devices)")
    return cp


def array_module(x):
    """numpy or cupy, whichever owns array `x` (the `xp` of an op)."""
    if type(x) is np.ndarray or _cupy is None:
        return np
    return _cupy.get_array_module(x)


def is_cuda_array(x):
    return _cupy is not None and isinstance(x, _cupy.ndarray)


def device_of(x):
    """The dtrain device on which array `x` lives."""
    if type(x) is np.ndarray or not is_cuda_array(x):
        return CPU
    return device("cuda", x.device.id)


def normalize_device(spec):
    """A `device` from a spec; "cuda" means the current CUDA device. Checks availability."""
    dev = spec if isinstance(spec, device) else device(spec)
    if dev.type == "cuda":
        cp = require_cuda(dev)
        if dev.index is None:
            dev = device("cuda", cp.cuda.runtime.getDevice())
    return dev


def module_for(dev):
    """The array module that serves device `dev` (already normalized)."""
    return np if dev.type == "cpu" else require_cuda(dev)


def device_context(dev):
    """Context in which new CuPy arrays are allocated on `dev`; a no-op on the CPU."""
    if dev.type == "cpu":
        return nullcontext()
    return require_cuda(dev).cuda.Device(dev.index)


def to_device(x, dev):
    """Copy array `x` to device `dev` (returns `x` itself when it is already there)."""
    if dev.type == "cpu":
        return x.get() if is_cuda_array(x) else x
    cp = require_cuda(dev)
    if isinstance(x, cp.ndarray) and x.device.id == dev.index:
        return x
    with cp.cuda.Device(dev.index):
        return cp.asarray(x)


def scatter_reduce(xp, target, index, values, ufunc):
    """target[index] = ufunc(target[index], values) for `ufunc` "maximum", "minimum" or
    "multiply", repeated indices reduced in turn (np.ufunc.at semantics)."""
    if xp is np:
        getattr(np, ufunc).at(target, index, values)
        return
    import cupyx

    scatter = {"maximum": cupyx.scatter_max, "minimum": cupyx.scatter_min}.get(ufunc)
    if scatter is None:
        raise NotImplementedError(f"scatter_reduce with {ufunc} is not implemented on CUDA "
                                  f"(CuPy has no scatter for it); reduce on the CPU")
    scatter(target, index, values)


def scatter_add(xp, target, index, values):
    """target[index] += values, accumulating repeated indices (np.add.at semantics)."""
    if xp is np:
        np.add.at(target, index, values)
    else:
        import cupyx

        cupyx.scatter_add(target, index, values)


def channels_last(a):
    """(N, C, *s) -> the (N, *s, C) view of the same memory."""
    return a.transpose((0, *range(2, a.ndim), 1))  # NOTE: moveaxis costs 7x more (3.4 us)


def channels_first(a):
    """(N, *s, C) -> the (N, C, *s) view of the same memory."""
    return a.transpose((0, a.ndim - 1, *range(1, a.ndim - 1)))


def stored_channels_last(arr):
    """Whether (N, C, *s) `arr` is stored dense channels-last (as dtrain's conv and pool
    outputs) and not also C-contiguous."""
    return arr.ndim >= 3 and not arr.flags.c_contiguous and \
        channels_last(arr).flags.c_contiguous


def strided_view(xp, x, shape, strides):
    """A view of `x`'s memory with the given shape and byte strides, whose `base` is `x`'s
    memory owner as for any NumPy view (so that dtrain tracks it as a view of `x`);
    `as_strided` alone hides the owner behind a wrapper object."""
    owner = x if x.base is None else x.base
    if xp is not np or not isinstance(owner, np.ndarray):
        return xp.lib.stride_tricks.as_strided(x, shape, strides)
    offset = x.__array_interface__["data"][0] - owner.__array_interface__["data"][0]
    view = np.ndarray(shape, x.dtype, buffer=owner, offset=offset, strides=strides)
    view.flags.writeable = x.flags.writeable
    return view


def running(xp, ufunc, a, axis):
    """`ufunc` (maximum, minimum, ...) accumulated along `axis`, as NumPy's
    `ufunc.accumulate`; CuPy accumulates only add and multiply, so there it is a
    log-step scan: ceil(log2(n)) whole-array steps, each combining with the value `k` back."""
    fn = getattr(xp, ufunc)
    if xp is np:
        return fn.accumulate(a, axis=axis)
    out, n, k = a.copy(), a.shape[axis], 1
    lead = (slice(None),) * (axis % a.ndim)
    while k < n:
        out[lead + (slice(k, None),)] = fn(out[lead + (slice(k, None),)],
                                           out[lead + (slice(None, n - k),)])
        k *= 2
    return out
