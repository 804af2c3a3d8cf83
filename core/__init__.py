"""Single-device core: dtypes, devices, array backends, RNG and the Tensor."""
from dtrain.core.creation import (arange, as_tensor, empty, empty_like, eye,  # noqa: F401
                                  from_numpy, full, full_like, get_default_device, linspace,
                                  ones, ones_like, rand, rand_like, randint, randint_like, randn,
                                  randn_like, randperm, set_default_device, tensor, zeros,
                                  zeros_like)
from dtrain.core.device import device  # noqa: F401
from dtrain.core.tensor import Size, Tensor  # noqa: F401
