"""`dt.cuda`: the CUDA device queries and controls that PyTorch scripts call (via CuPy).

Without CUDA, the queries answer (`is_available()` False, `device_count()` 0) and the
calls PyTorch makes safe without a GPU are no-ops (`manual_seed`, `manual_seed_all`,
`empty_cache`); those that need a device (`current_device`, `set_device`, `synchronize`,
`get_device_name`) raise the RuntimeError that says why CUDA is unusable.
Registered as the module `dtrain.cuda` by the package (see dtrain/__init__.py).
"""
from dtrain.core import backend
from dtrain.core import random as _random
from dtrain.core.device import device

is_available = backend.cuda_is_available
device_count = backend.cuda_device_count


def _index(dev):
    """The CUDA device index `dev` (None, int, "cuda:N" or a device) names."""
    cp = backend.require_cuda()
    if dev is None:
        return cp.cuda.runtime.getDevice()
    dev = device(dev)
    if dev.type != "cuda":
        raise ValueError(f"Expected a cuda device, but got: {dev}")
    return cp.cuda.runtime.getDevice() if dev.index is None else dev.index


def current_device():
    """The index of the current CUDA device."""
    return _index(None)


def set_device(dev):
    """Make CUDA device `dev` (int, "cuda:N" or a device) the current one."""
    backend.require_cuda().cuda.runtime.setDevice(_index(dev))


def synchronize(dev=None):
    """Wait for all kernels on CUDA device `dev` (the current one by default) to finish."""
    backend.require_cuda().cuda.Device(_index(dev)).synchronize()


def get_device_name(dev=None):
    props = backend.require_cuda().cuda.runtime.getDeviceProperties(_index(dev))
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else name


def empty_cache():
    """Return the cached blocks of CuPy's memory pools to the driver; a no-op without CUDA."""
    if is_available():
        cp = backend.require_cuda()
        cp.get_default_memory_pool().free_all_blocks()
        cp.get_default_pinned_memory_pool().free_all_blocks()


def manual_seed(seed):
    """Seed the current CUDA device's default generator; a no-op without CUDA."""
    if is_available():
        _random.default_generator(device("cuda", current_device())).manual_seed(seed)


def manual_seed_all(seed):
    """Seed every CUDA device's default generator; a no-op without CUDA."""
    for i in range(device_count()):
        _random.default_generator(device("cuda", i)).manual_seed(seed)
