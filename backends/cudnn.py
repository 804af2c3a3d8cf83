"""`dt.backends.cudnn`: PyTorch's cuDNN switches, accepted and inert (dtrain calls no cuDNN).

`benchmark`, `deterministic`, `enabled` and `allow_tf32` may be set (`cudnn.benchmark = True`)
and read back; convolutions are the same either way.
"""
benchmark = False
deterministic = False
enabled = True
allow_tf32 = True


def is_available():
    """False: dtrain's CUDA backend (CuPy) has no cuDNN."""
    return False


def version():
    """None, as PyTorch answers where cuDNN is unavailable."""
    return None
