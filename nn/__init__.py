"""Neural-network building blocks with `torch.nn`'s names and semantics."""
from dtrain.nn.attention import (MultiheadAttention, TransformerEncoder,  # noqa: F401
                                  TransformerEncoderLayer)
from dtrain.nn.conv import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d  # noqa: F401
from dtrain.nn.module import Module  # noqa: F401
from dtrain.nn.parameter import Parameter  # noqa: F401
from dtrain.nn.activation import (CELU, ELU, GELU, GLU, SELU, Hardsigmoid,  # noqa: F401
                                  Hardswish, Hardtanh, LeakyReLU, LogSigmoid, LogSoftmax, Mish,
                                  PReLU, ReLU, ReLU6, Sigmoid, SiLU, Softmax, Softmin, Softplus,
                                  Softsign, Tanh)
from dtrain.nn.activation import Hardshrink, Softmax2d, Softshrink, Tanhshrink, Threshold  # noqa: F401,E501
from dtrain.nn.distance import CosineSimilarity, PairwiseDistance  # noqa: F401
from dtrain.nn.containers import (ModuleDict, ModuleList, ParameterDict,  # noqa: F401
                                  ParameterList, Sequential)
from dtrain.nn.dropout import AlphaDropout, Dropout, Dropout1d, Dropout2d, Dropout3d  # noqa: F401
from dtrain.nn.linear import Bilinear, Flatten, Identity, Linear, Unflatten  # noqa: F401
from dtrain.nn.linear import LazyLinear  # noqa: F401
from dtrain.nn.fold import Fold, Unfold  # noqa: F401
from dtrain.nn.pixelshuffle import ChannelShuffle, PixelShuffle, PixelUnshuffle  # noqa: F401
from dtrain.nn.loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss,  # noqa: F401
                            HuberLoss, KLDivLoss, L1Loss, MSELoss, NLLLoss, SmoothL1Loss)
from dtrain.nn.loss import (CosineEmbeddingLoss, GaussianNLLLoss, HingeEmbeddingLoss,  # noqa: F401
                            MarginRankingLoss, MultiLabelMarginLoss, MultiLabelSoftMarginLoss,
                            MultiMarginLoss, PoissonNLLLoss, SoftMarginLoss, TripletMarginLoss)
from dtrain.nn.normalization import (BatchNorm1d, BatchNorm2d, GroupNorm,  # noqa: F401
                                     LayerNorm)
from dtrain.nn.normalization import (InstanceNorm1d, InstanceNorm2d,  # noqa: F401
                                     LocalResponseNorm, RMSNorm)
from dtrain.nn.sparse import Embedding, EmbeddingBag  # noqa: F401
from dtrain.nn import functional, init, utils  # noqa: F401,E402
from dtrain.nn.padding import (CircularPad1d, CircularPad2d, CircularPad3d,  # noqa: F401
                               ConstantPad1d, ConstantPad2d, ConstantPad3d, ReflectionPad1d,
                               ReflectionPad2d, ReflectionPad3d, ReplicationPad1d,
                               ReplicationPad2d, ReplicationPad3d, ZeroPad1d, ZeroPad2d,
                               ZeroPad3d)
from dtrain.nn.pooling import (AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, MaxPool1d,  # noqa: F401
                               MaxPool2d, Upsample)
from dtrain.nn.pooling import (AdaptiveAvgPool1d, AdaptiveMaxPool1d,  # noqa: F401
                               AdaptiveMaxPool2d, LPPool1d, LPPool2d, UpsamplingBilinear2d,
                               UpsamplingNearest2d)
from dtrain.nn.rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell  # noqa: F401
from dtrain.nn.transformer import (Transformer, TransformerDecoder,  # noqa: F401
                                   TransformerDecoderLayer)
from dtrain.nn import modules  # noqa: F401,E402
