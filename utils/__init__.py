"""`dt.utils`, as `torch.utils`: `dt.utils.data` is the data package under PyTorch's path,
`dt.utils.checkpoint` activation checkpointing."""
from dtrain.utils import checkpoint, data  # noqa: F401
