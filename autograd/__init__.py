"""Reverse-mode autograd on a dynamic graph, forward mode (JVP), user Functions and checks."""
from dtrain.autograd import functional  # noqa: F401
from dtrain.autograd import tensor_methods
from dtrain.autograd.anomaly_mode import (detect_anomaly, is_anomaly_check_nan_enabled,  # noqa: F401
                                          is_anomaly_enabled, set_detect_anomaly)
from dtrain.autograd.api import backward, grad  # noqa: F401
from dtrain.autograd.function import Function, FunctionCtx, once_differentiable  # noqa: F401
from dtrain.autograd.gradcheck import GradcheckError, gradcheck, gradgradcheck, jvpcheck  # noqa: F401
from dtrain.autograd.grad_mode import (enable_grad, inference_mode, is_grad_enabled,  # noqa: F401
                                       no_grad, set_grad_enabled)
from dtrain.autograd.variable import Variable  # noqa: F401

tensor_methods.install()
