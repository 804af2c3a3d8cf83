"""torch.nn.modules.conv."""
from dtrain.nn.conv import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d  # noqa: F401
