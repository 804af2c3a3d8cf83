"""The registry ops and the public functions built on them (re-exported as `dtrain.*`)."""
from dtrain.autograd.ops import (convert, index, linalg, pointwise, reduce, shape,  # noqa: F401
                                 matrix, sparse, special, stats)
from dtrain.autograd.ops import products, rearrange, scan, sorting  # noqa: F401
