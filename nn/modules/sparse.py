"""torch.nn.modules.sparse."""
from dtrain.nn.sparse import Embedding  # noqa: F401
