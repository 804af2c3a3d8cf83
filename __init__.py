"""dtrain: deep-learning training on one GPU, many GPUs and many nodes, with PyTorch's names.

    import dtrain as dt
    x = dt.randn(3, 4, requires_grad=True)
    (x @ x.T).sum().backward()
"""
import sys as _sys

from dtrain import autograd  # noqa: F401  (installs Tensor methods)
from dtrain.autograd import enable_grad, inference_mode, is_grad_enabled, no_grad  # noqa: F401
from dtrain.autograd import set_grad_enabled  # noqa: F401
from dtrain.autograd.autocast import (autocast, get_autocast_dtype,  # noqa: F401
                                     is_autocast_enabled)
from dtrain.autograd.ops.index import (gather, index_select, masked_fill,  # noqa: F401
                                       scatter_add)
from dtrain.autograd.ops.linalg import (bmm, diag, dot, matmul, mm, norm, outer,  # noqa: F401
                                        tril, triu)
from dtrain.autograd.ops.matrix import (cholesky, det, inverse, logdet,  # noqa: F401
                                        matrix_power, pinverse, slogdet, svd)
from dtrain.autograd.ops.pointwise import (abs, add, allclose, bitwise_and,  # noqa: F401
                                           bitwise_not, bitwise_or, ceil, clamp, clip, cos, div,
                                           divide, eq, equal, exp, floor, floor_divide, ge, gt,
                                           isclose, isfinite, isinf, isnan, le, log, log1p,
                                           logical_and, logical_not, logical_or, logical_xor, lt,
                                           maximum, minimum, mul, multiply, ne, neg, negative,
                                           nonzero, pow, reciprocal, relu, remainder, round,
                                           rsqrt, sigmoid, sign, sin, sqrt, square, sub, subtract,
                                           tanh, true_divide, trunc, where)
from dtrain.autograd.ops.reduce import (all, amax, amin, any, argmax, argmin,  # noqa: F401
                                        count_nonzero, log_softmax, logsumexp, max, mean, min,
                                        prod, softmax, std, std_mean, sum, var, var_mean)
from dtrain.autograd.ops.sparse import sparse_coo_tensor  # noqa: F401
from dtrain.autograd.ops.products import (addbmm, addcdiv, addcmul, addmm, addmv,  # noqa: F401
                                          baddbmm, cdist, cross, dist, einsum, inner, kron,
                                          lerp, mv, tensordot)
from dtrain.autograd.ops.rearrange import (broadcast_tensors, cartesian_prod,  # noqa: F401
                                           column_stack, diag_embed, diagonal, dstack, flip,
                                           fliplr, flipud, hstack, masked_select, meshgrid,
                                           moveaxis, movedim, repeat_interleave, roll, rot90,
                                           row_stack, select, take, take_along_dim, tile, trace,
                                           tril_indices, triu_indices, vander, vstack)
from dtrain.autograd.ops.scan import (cummax, cummin, cumprod, cumsum, diff,  # noqa: F401
                                      logcumsumexp, trapezoid, trapz)
from dtrain.autograd.ops.sorting import (argsort, kthvalue, median, mode, msort,  # noqa: F401
                                         nanmedian, sort, topk, unique, unique_consecutive)
from dtrain.autograd.ops.special import (acos, acosh, arccos, arccosh, arcsin,  # noqa: F401
                                         arcsinh, arctan, arctan2, arctanh, asin, asinh, atan,
                                         atan2, atanh, clamp_max, clamp_min, copysign, cosh,
                                         deg2rad, digamma, erf, erfc, erfinv, exp2, expm1,
                                         float_power, fmod, frac, heaviside, hypot, lgamma,
                                         log2, log10, logaddexp, logaddexp2, logit, nan_to_num,
                                         polygamma, rad2deg, sgn, sinh, tan, xlogy)
from dtrain.autograd.ops.stats import (bincount, bucketize, histc, isin, nanmean,  # noqa: F401
                                       nanquantile, nansum, quantile, searchsorted)
from dtrain.autograd.ops.pointwise import argwhere  # noqa: F401
from dtrain.autograd.ops.shape import broadcast_shapes  # noqa: F401
from dtrain.autograd.ops.shape import (broadcast_to, cat, chunk, clone, concat,  # noqa: F401
                                       concatenate, expand, flatten, narrow, pad, permute,
                                       reshape, split, squeeze, stack, swapaxes, swapdims, t,
                                       transpose, unbind, unflatten, unsqueeze, view)
from dtrain.core.creation import (arange, as_tensor, empty, empty_like, eye,  # noqa: F401
                                  get_default_device, set_default_device,
                                  from_numpy, full, full_like, linspace, logspace, ones,
                                  ones_like, rand,
                                  rand_like, randint, randint_like, randn, randn_like, randperm,
                                  tensor, zeros, zeros_like)
from dtrain.core.device import device  # noqa: F401
from dtrain.core.dtype import bool_ as bool  # noqa: F401
from dtrain.core.dtype import dtype, get_default_dtype, set_default_dtype  # noqa: F401
from dtrain.core.dtype import float16, float32, float64, int8, int16, int32, int64, uint8  # noqa: F401
from dtrain.core.dtype import float16 as half  # noqa: F401
from dtrain.core.dtype import float32 as float  # noqa: F401
from dtrain.core.dtype import float64 as double  # noqa: F401
from dtrain.core.dtype import int32 as int  # noqa: F401
from dtrain.core.dtype import int64 as long  # noqa: F401
from dtrain.core.random import (Generator, get_rng_state, initial_seed,  # noqa: F401
                                manual_seed, set_rng_state)
from dtrain.core.serialization import load, save  # noqa: F401
from dtrain.core.creation import range_ as range  # noqa: F401  (torch.range, deprecated there)
from dtrain.core.settings import (are_deterministic_algorithms_enabled,  # noqa: F401
                                  get_float32_matmul_precision, get_num_interop_threads,
                                  get_num_threads, is_deterministic_algorithms_warn_only_enabled,
                                  set_float32_matmul_precision, set_num_interop_threads,
                                  set_num_threads, use_deterministic_algorithms)
from dtrain.core.tensor import Size, Tensor, layout, sparse_coo, strided  # noqa: F401
from dtrain.core.creation import LEGACY_TYPES as _LEGACY_TYPES

globals().update(_LEGACY_TYPES)  # dt.FloatTensor, dt.LongTensor, ... (torch's legacy types)

# torch.finfo, torch.is_tensor, torch.set_printoptions, ...
from dtrain.core.dtype import bfloat16, can_cast, finfo, iinfo  # noqa: E402,F401
from dtrain.core.dtype import promote_types, result_type  # noqa: E402,F401
from dtrain.core.printing import set_printoptions  # noqa: E402,F401
from dtrain.core.tensor import is_tensor  # noqa: E402,F401
from dtrain.core.random import seed  # noqa: E402,F401
from dtrain.autograd.ops.sampling import bernoulli, multinomial, normal, poisson  # noqa: E402,F401
from dtrain.autograd.ops.index import (index_add, index_copy, index_fill,  # noqa: E402,F401
                                       index_put, masked_scatter, put, scatter,
                                       scatter_reduce)

is_floating_point, is_complex, numel = Tensor.is_floating_point, Tensor.is_complex, Tensor.numel

from dtrain import data, distributed, linalg, nn, optim, sparse, special  # noqa: E402,F401
from dtrain import amp, jit  # noqa: E402,F401
from dtrain.nn import parallel as _nn_parallel  # noqa: E402,F401  (dt.nn.parallel)
from dtrain import accelerator, backends, distributions, testing, utils  # noqa: E402,F401

spmm = sparse.mm  # torch.spmm
compile = jit.compile  # dt.compile(fn_or_module): graph mode (see dtrain/jit)

nn.SyncBatchNorm = distributed.SyncBatchNorm  # torch's name; defined above nn in the layers
from dtrain.nn.distance import cosine_similarity, pairwise_distance  # noqa: E402,F401
from dtrain.nn.activation import hardshrink, threshold, threshold_  # noqa: E402,F401
from dtrain.nn.normalization import rms_norm  # noqa: E402,F401
from dtrain.nn.pixelshuffle import (channel_shuffle, pixel_shuffle,  # noqa: E402,F401
                                    pixel_unshuffle)

__version__ = "0.1.0"


def _module_path(name, module):
    """Serve `module` as `dtrain.<name>` (`import dtrain.<name>` finds it).

    NOTE: `dtrain.cuda` and `dtrain.multiprocessing` cannot be folders at the repository
    root, which is the package: where the root is on sys.path (`python -m pytest` run there)
    they would shadow the standard library's multiprocessing and CUDA Python's `cuda`
    namespace, which CuPy imports."""
    _sys.modules[f"dtrain.{name}"] = module
    return module


from dtrain.core import serialization  # noqa: E402
from dtrain.core import cuda  # noqa: E402
from dtrain.distributed import spawn as _spawn  # noqa: E402
from dtrain.amp import cuda as _cuda_amp  # noqa: E402

cuda.amp = _module_path("cuda.amp", _cuda_amp)
cuda = _module_path("cuda", cuda)
multiprocessing = _module_path("multiprocessing", _spawn)
serialization = _module_path("serialization", serialization)  # torch.serialization's place
from dtrain.jit import onnx_export as _onnx_export  # noqa: E402

onnx = _module_path("onnx", _onnx_export)  # a root folder would shadow the onnx package
