"""`dt.sparse`: torch.sparse's names for sparse COO tensors (see autograd/ops/sparse.py)."""
from dtrain.autograd.ops.linalg import mm  # noqa: F401  (a sparse first operand: sparse @ dense)
from dtrain.autograd.ops.sparse import sparse_sum as sum  # noqa: F401
