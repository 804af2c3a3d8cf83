"""`dt.linalg`: torch.linalg's names for the norms, products and matrix functions dtrain
has."""
from dtrain.autograd.ops.linalg import linalg_norm as norm
from dtrain.autograd.ops.linalg import matmul, matrix_norm, vector_norm
from dtrain.autograd.ops.matrix import cholesky, det, matrix_power, pinv, slogdet, svdvals
from dtrain.autograd.ops.matrix import inverse as inv
from dtrain.autograd.ops.matrix import linalg_svd as svd
from dtrain.autograd.ops.products import linalg_cross as cross

__all__ = ["cholesky", "cross", "det", "inv", "matmul", "matrix_norm", "matrix_power", "norm",
           "pinv", "slogdet", "svd", "svdvals", "vector_norm"]
