"""Neural-network building blocks with `torch.nn`'s names and semantics."""
from dtrain.nn.module import Module  # noqa: F401
from dtrain.nn.parameter import Parameter  # noqa: F401
