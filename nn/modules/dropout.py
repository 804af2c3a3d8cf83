"""torch.nn.modules.dropout."""
from dtrain.nn.dropout import Dropout, Dropout1d, Dropout2d, Dropout3d  # noqa: F401
