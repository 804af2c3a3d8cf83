"""`dt.backends.cuda`: `is_built()` and the matmul precision flags (accepted, inert).

`dt.backends.cuda.matmul.allow_tf32 = True` and the reduced-precision-reduction flags may be
set and read back; dtrain's float32 matmuls stay float32 either way.
"""
from types import SimpleNamespace

from dtrain.core import backend

matmul = SimpleNamespace(allow_tf32=False, allow_fp16_reduced_precision_reduction=True,
                         allow_bf16_reduced_precision_reduction=True)


def is_built():
    """Whether CuPy is installed (PyTorch: whether it was built with CUDA)."""
    return backend.cuda_is_built()
