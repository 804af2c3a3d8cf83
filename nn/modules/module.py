"""torch.nn.modules.module."""
from dtrain.nn.module import Module  # noqa: F401
