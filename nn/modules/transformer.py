"""torch.nn.modules.transformer."""
from dtrain.nn.attention import TransformerEncoder, TransformerEncoderLayer  # noqa: F401
from dtrain.nn.transformer import (Transformer, TransformerDecoder,  # noqa: F401
                                   TransformerDecoderLayer)
