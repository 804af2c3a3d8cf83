"""torch.nn.modules.dropout."""
from dtrain.nn.dropout import AlphaDropout, Dropout, Dropout1d, Dropout2d, Dropout3d  # noqa: F401
