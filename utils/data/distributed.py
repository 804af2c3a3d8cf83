"""`dt.utils.data.distributed`, as `torch.utils.data.distributed`: `DistributedSampler`."""
from dtrain.data.sampler import DistributedSampler  # noqa: F401
