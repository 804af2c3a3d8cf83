"""`dt.nn.parallel`, as `torch.nn.parallel`: `DistributedDataParallel`.

The class is defined in `dtrain.distributed` (a layer above `nn`); `dtrain.nn` does not import
this module, the package does once `distributed` is loaded, so `nn` stays below it.
"""
from dtrain.distributed.ddp import DistributedDataParallel  # noqa: F401
