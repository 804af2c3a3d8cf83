"""`dt.backends`, as `torch.backends`: `cudnn`, `cuda` and `mps` with PyTorch's flags.

The flags are accepted and remembered so that scripts setting them run unchanged, but they
change nothing: CuPy (14) calls no cuDNN, dtrain never computes float32 matmuls in TF32, and
there is no MPS backend.
"""
from dtrain.backends import cuda, cudnn, mps  # noqa: F401
