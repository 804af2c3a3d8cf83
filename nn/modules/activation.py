"""torch.nn.modules.activation: the activation modules and MultiheadAttention."""
from dtrain.nn.activation import (CELU, ELU, GELU, GLU, SELU, Hardsigmoid,  # noqa: F401
                                  Hardswish, Hardtanh, LeakyReLU, LogSigmoid, LogSoftmax, Mish,
                                  PReLU, ReLU, ReLU6, Sigmoid, SiLU, Softmax, Softmin, Softplus,
                                  Softsign, Tanh)
from dtrain.nn.activation import Hardshrink, Softmax2d, Softshrink, Tanhshrink, Threshold  # noqa: F401,E501
from dtrain.nn.attention import MultiheadAttention  # noqa: F401
