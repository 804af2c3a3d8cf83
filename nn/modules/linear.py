"""torch.nn.modules.linear."""
from dtrain.nn.linear import (Bilinear, Identity, Linear,  # noqa: F401
                              NonDynamicallyQuantizableLinear)
from dtrain.nn.linear import LazyLinear  # noqa: F401
