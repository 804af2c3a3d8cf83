"""`dt.cuda.amp`, as `torch.cuda.amp`: `autocast` and `GradScaler` bound to the "cuda" device.

PyTorch keeps these as deprecated spellings of `torch.amp.autocast("cuda", ...)` and
`torch.amp.GradScaler("cuda", ...)`; older scripts still use them.
"""
from dtrain.amp import GradScaler as _GradScaler
from dtrain.amp import autocast as _autocast


class autocast(_autocast):
    """`dt.cuda.amp.autocast(enabled=True, dtype=None)` = `dt.amp.autocast("cuda", ...)`."""

    def __init__(self, enabled=True, dtype=None, cache_enabled=None):
        super().__init__("cuda", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


class GradScaler(_GradScaler):
    """`dt.cuda.amp.GradScaler(init_scale, ...)` = `dt.amp.GradScaler("cuda", init_scale, ...)`."""

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        super().__init__("cuda", init_scale, growth_factor, backoff_factor, growth_interval,
                         enabled)
