"""`dt.distributions`, as `torch.distributions`: parameterised distributions with sample,
rsample (reparameterised, differentiable), log_prob, entropy and kl_divergence."""
from dtrain.distributions import constraints  # noqa: F401
from dtrain.distributions.categorical import Bernoulli, Categorical, OneHotCategorical  # noqa: F401
from dtrain.distributions.distribution import Distribution  # noqa: F401
from dtrain.distributions.independent import Independent  # noqa: F401
from dtrain.distributions.kl import kl_divergence, register_kl  # noqa: F401
from dtrain.distributions.normal import Exponential, Laplace, Normal, Uniform  # noqa: F401
