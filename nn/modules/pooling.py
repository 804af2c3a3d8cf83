"""torch.nn.modules.pooling."""
from dtrain.nn.pooling import (AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, MaxPool1d,  # noqa: F401
                               MaxPool2d)
from dtrain.nn.pooling import (AdaptiveAvgPool1d, AdaptiveMaxPool1d,  # noqa: F401
                               AdaptiveMaxPool2d, LPPool1d, LPPool2d)
