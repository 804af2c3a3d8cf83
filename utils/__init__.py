"""`dt.utils`, as `torch.utils`: `dt.utils.data` is the data package under PyTorch's path."""
from dtrain.utils import data  # noqa: F401
