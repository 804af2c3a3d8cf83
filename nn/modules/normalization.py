"""torch.nn.modules.normalization (and batchnorm's classes, which dtrain keeps here too)."""
from dtrain.nn.normalization import (BatchNorm1d, BatchNorm2d, GroupNorm,  # noqa: F401
                                     LayerNorm)
from dtrain.nn.normalization import (InstanceNorm1d, InstanceNorm2d,  # noqa: F401
                                     LocalResponseNorm, RMSNorm)
