"""`dt.linalg`: torch.linalg's names for the norms, products and matrix functions dtrain
has."""
from dtrain.autograd.ops.linalg import linalg_norm as norm  # noqa: F401
from dtrain.autograd.ops.linalg import matmul, matrix_norm, vector_norm  # noqa: F401
from dtrain.autograd.ops.matrix import cholesky, det, matrix_power, slogdet  # noqa: F401
from dtrain.autograd.ops.matrix import inverse as inv  # noqa: F401
from dtrain.autograd.ops.products import linalg_cross as cross  # noqa: F401
