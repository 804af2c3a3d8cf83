"""`dt.amp`: mixed precision, as `torch.amp`: the `autocast` region and `GradScaler`."""
from dtrain.autograd.autocast import autocast, get_autocast_dtype, is_autocast_enabled  # noqa: F401
from dtrain.optim.grad_scaler import GradScaler  # noqa: F401
