"""`dt.special`: torch.special's names for the functions dtrain has."""
from dtrain.autograd.ops.pointwise import log1p, round  # noqa: F401
from dtrain.autograd.ops.pointwise import sigmoid as expit  # noqa: F401
from dtrain.autograd.ops.reduce import log_softmax, logsumexp, softmax  # noqa: F401
from dtrain.autograd.ops.special import (  # noqa: F401
    digamma,
    erf,
    erfc,
    erfinv,
    exp2,
    expm1,
    logit,
    polygamma,
    psi,
    xlogy,
)
from dtrain.autograd.ops.special import lgamma as gammaln  # noqa: F401
