"""torch.nn.modules.sparse."""
from dtrain.nn.sparse import Embedding, EmbeddingBag  # noqa: F401
