"""torch.nn.modules.container."""
from dtrain.nn.containers import (ModuleDict, ModuleList, ParameterDict,  # noqa: F401
                                  ParameterList, Sequential)
