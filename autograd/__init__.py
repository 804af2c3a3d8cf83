"""Reverse-mode autograd on a dynamic graph, forward mode (JVP), user Functions and checks."""
from dtrain.autograd import functional  # noqa: F401
from dtrain.autograd import tensor_methods
from dtrain.autograd.api import backward, grad  # noqa: F401
from dtrain.autograd.function import Function, FunctionCtx, once_differentiable  # noqa: F401
from dtrain.autograd.gradcheck import GradcheckError, gradcheck, gradgradcheck, jvpcheck  # noqa: F401
from dtrain.autograd.grad_mode import (enable_grad, inference_mode, is_grad_enabled,  # noqa: F401
                                       no_grad, set_grad_enabled)

tensor_methods.install()
