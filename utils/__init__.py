"""`dt.utils`, as `torch.utils`: `dt.utils.data` is the data package under PyTorch's path,
`dt.utils.checkpoint` activation checkpointing, `dt.utils.tensorboard` TensorBoard's
SummaryWriter (tensorboardX is imported only when a writer is made)."""
from dtrain.utils import checkpoint, data, tensorboard  # noqa: F401
