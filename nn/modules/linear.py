"""torch.nn.modules.linear."""
from dtrain.nn.linear import (Bilinear, Identity, Linear,  # noqa: F401
                              NonDynamicallyQuantizableLinear)
