"""`dt.accelerator`: PyTorch's (>= 2.6) device-agnostic accelerator API.

dtrain's only accelerator is CUDA (through CuPy), so every call answers for CUDA. Without a
usable GPU, `is_available()` is False, `device_count()` 0 and `current_accelerator()` None
(with `check_available=False` it still names "cuda" where CuPy is installed, as PyTorch names
the accelerator it was built with); the calls that need a device raise a RuntimeError.
"""
from dtrain.core import backend
from dtrain.core import cuda as _cuda
from dtrain.core.device import device

is_available = backend.cuda_is_available
device_count = backend.cuda_device_count


def current_accelerator(check_available=False):
    """`dt.device("cuda")`, or None where there is none (or none usable, if `check_available`)."""
    usable = is_available() if check_available else backend.cuda_is_built()
    return device("cuda") if usable else None


def current_device_index():
    """The index of the current accelerator device."""
    return _cuda.current_device()


def set_device_index(dev):
    """Make `dev` (an index, "cuda:N" or a device) the current accelerator device."""
    _cuda.set_device(dev)


def synchronize(dev=None):
    """Wait for all work on accelerator device `dev` (the current one by default)."""
    _cuda.synchronize(dev)


current_device_idx = current_device_index  # the names PyTorch 2.6 deprecated
set_device_idx = set_device_index
