"""Losses with torch's names, arguments and reductions ("none", "mean", "sum"): the
functional forms (`cross_entropy`, `mse_loss`, ...) and the modules (`CrossEntropyLoss`...).

Everything that takes logits goes through log-softmax or a log-sum-exp form, so logits of
1e4 neither overflow nor lose the gradient.
"""
import math
import warnings

import numpy as np

from dtrain.autograd.ops.index import gather
from dtrain.autograd.ops.pointwise import Where, eq, lt, minimum, ne, where
from dtrain.autograd.registry import Sample, SampleMaker, register_composite
from dtrain.core.backend import array_module
from dtrain.core.tensor import Tensor
from dtrain.nn.activation import SoftplusOp, log_softmax
from dtrain.nn.distance import clamp_min_keep_grad, pairwise_distance
from dtrain.nn.module import Module
from dtrain.nn.sparse import one_hot


# -- reductions ----------------------------------------------------------------------------
def _legacy_reduction(size_average, reduce, reduction):
    """The `reduction` string, from the deprecated size_average/reduce flags when given."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    return ("mean" if size_average else "sum") if reduce else "none"


def _reduce(loss, reduction):
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"{reduction} is not a valid value for reduction")


def _weighted(loss, weight, reduction, by_weight_sum):
    """Elementwise-weighted reduction: a mean divides by weight.sum() when `by_weight_sum`."""
    if weight is None:
        return _reduce(loss, reduction)
    if weight.shape != loss.shape:
        raise ValueError("Weights and input must have the same size.")
    loss = loss * weight
    if reduction == "mean" and by_weight_sum:
        return loss.sum() / weight.sum()
    return _reduce(loss, reduction)


def _warn_size(input, target):
    if input.shape != target.shape:
        warnings.warn(f"Using a target size ({target.shape}) that is different to the input size "
                      f"({input.shape}). This will likely lead to incorrect results due to "
                      "broadcasting. Please ensure they have the same size.", stacklevel=3)


# -- regression losses ---------------------------------------------------------------------
def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """(input - target)^2, reduced."""
    _warn_size(input, target)
    d = input - target
    return _weighted(d * d, weight, _legacy_reduction(size_average, reduce, reduction), True)


def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """|input - target|, reduced."""
    _warn_size(input, target)
    return _weighted((input - target).abs(), weight,
                     _legacy_reduction(size_average, reduce, reduction), True)


def _quadratic_then_linear(d, limit, quad_scale, lin_scale):
    """quad_scale * d^2 / 2 where |d| < limit, else lin_scale * (|d| - limit / 2)."""
    a = d.abs()
    return Where.apply(lt(a, limit), d * d * (0.5 * quad_scale), (a - 0.5 * limit) * lin_scale)


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """0.5 d^2 where |d| < delta, else delta (|d| - delta / 2), with d = input - target."""
    _warn_size(input, target)
    loss = _quadratic_then_linear(input - target, delta, 1.0, delta)
    return _weighted(loss, weight, reduction, False)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """0.5 d^2 / beta where |d| < beta, else |d| - beta / 2 (the L1 loss when beta = 0)."""
    _warn_size(input, target)
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if beta == 0.0:
        return _reduce((input - target).abs(), reduction)
    return _reduce(_quadratic_then_linear(input - target, beta, 1.0 / beta, 1.0), reduction)


# -- classification losses -----------------------------------------------------------------
def _nll_samples():
    s = SampleMaker("nll_loss")
    t1 = s.ints(4, 3)
    t2 = s.ints(3, 2, 2)
    t2._data[0, 1] = -100
    w = Tensor._make(s.rng.uniform(0.5, 2.0, 4))
    return [Sample(lambda x: nll_loss(x, t1), (s(3, 4),)),
            Sample(lambda x: nll_loss(x, t1, w, reduction="sum"), (s(3, 4),)),
            Sample(lambda x: nll_loss(x, t2, reduction="none"), (s(2, 3, 2),)),
            Sample(lambda x: nll_loss(x, t1[0]), (s(4),))]


register_composite("nll_loss", _nll_samples)


def _class_weights(input, target, weight, ignore_index):
    """(target with ignored entries set to class 0, per-element weights: weight[target],
    0 where ignored), computed with registry ops (graph mode records them instead of
    freezing them); checks shapes, dtypes and the range of targets."""
    t = target._data
    if t.dtype.kind not in "iu":
        raise RuntimeError(f"expected scalar type Long but found {target.dtype} (class index "
                           f"targets must be integers; pass probabilities as floats)")
    n_classes = input.shape[1]
    if tuple(t.shape) != tuple(input.shape[:1] + input.shape[2:]):
        raise ValueError(f"Expected target size {list(input.shape[:1] + input.shape[2:])}, got "
                         f"{list(t.shape)} (input {list(input.shape)})")
    if weight is not None and tuple(weight.shape) != (n_classes,):
        raise RuntimeError(f"weight tensor should be defined either for all {n_classes} classes "
                           f"or no classes but got weight tensor of shape: {list(weight.shape)}")
    bad = (t != ignore_index) & ((t < 0) | (t >= n_classes))
    if bool(bad.any()):
        raise IndexError(f"Target {int(t[bad].reshape(-1)[0])} is out of bounds (classes 0 to "
                         f"{n_classes - 1}).")
    valid = ne(target, ignore_index)
    safe = where(valid, target, 0)
    dtype = input.dtype
    w = valid.to(dtype) if weight is None else weight.detach().to(dtype)[safe] * valid
    return safe, w


def _batched(input, target):
    """Treat an unbatched (C,) input with a 0-d target as a batch of one."""
    if input.dim() == 1:
        return input.unsqueeze(0), target.reshape(1), True
    return input, target, False


def _nll(logp, target, weight, ignore_index, reduction):
    logp, target, unbatched = _batched(logp, target)
    safe, w = _class_weights(logp, target, weight, ignore_index)
    # A gather, whose backward scatters into zeros: the gradient needs no one-hot matrix
    # and no array math outside the registry (graph mode replays it for new targets).
    loss = -(w * gather(logp, 1, safe.unsqueeze(1)).squeeze(1))
    if reduction == "none":
        return loss.reshape(()) if unbatched else loss
    if reduction == "mean":
        return loss.sum() / w.sum()
    return _reduce(loss, reduction)


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """Negative log likelihood of class indices: input (N, C, *) log-probabilities, target
    (N, *) integers; "mean" divides by the summed weights of the non-ignored targets."""
    return _nll(input, target, weight, ignore_index,
                _legacy_reduction(size_average, reduce, reduction))


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100,
                  reduce=None, reduction="mean", label_smoothing=0.0):
    """log_softmax over dim 1 (dim 0 for unbatched input) followed by the NLL of class
    indices, or by -sum(target * logp) for class probabilities (float target, same shape)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    class_dim = 0 if input.dim() == 1 else 1
    n_classes = input.shape[class_dim]
    logp = log_softmax(input, class_dim)
    wshape = (-1,) + (1,) * (input.dim() - class_dim - 1)
    if target.is_floating_point():
        return _cross_entropy_probs(logp, target, weight, ignore_index, reduction,
                                    label_smoothing, class_dim, wshape)
    loss = _nll(logp, target, weight, ignore_index, reduction)
    if label_smoothing == 0.0:
        return loss
    # As torch: (1 - eps) * nll + eps / C * sum_c(-w_c logp_c), normalised like the nll.
    smooth = -(logp if weight is None else logp * weight.reshape(wshape)).sum(class_dim)
    lp, tb, _ = _batched(logp, target)
    _, w = _class_weights(lp, tb, weight, ignore_index)
    smooth = smooth * ne(tb, ignore_index).reshape(smooth.shape).to(w.dtype)
    if reduction == "mean":  # w sums the weights of the non-ignored targets (1 each without)
        smooth = smooth.sum() / w.sum()
    else:
        smooth = _reduce(smooth, reduction)
    return loss * (1 - label_smoothing) + smooth * (label_smoothing / n_classes)


def _cross_entropy_probs(logp, target, weight, ignore_index, reduction, label_smoothing,
                         class_dim, wshape):
    if ignore_index != -100:
        raise RuntimeError("ignore_index is not supported for floating point target")
    if target.shape != logp.shape:
        raise RuntimeError(f"Expected floating point target of the same shape as input "
                           f"{list(logp.shape)}, got {list(target.shape)}")
    n_classes = logp.shape[class_dim]
    if label_smoothing > 0:
        target = target * (1 - label_smoothing) + label_smoothing / n_classes
    prod = logp * target
    if weight is not None:
        prod = prod * weight.reshape(wshape)
    if reduction == "mean":
        return -prod.sum() / (logp.numel() // n_classes)
    return _reduce(-prod.sum(class_dim), reduction)


def _check_binary_shapes(input, target):
    if target.shape != input.shape:
        raise ValueError(f"Using a target size ({target.shape}) that is different to the input "
                         f"size ({input.shape}) is deprecated. Please ensure they have the same "
                         "size.")


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction="mean"):
    """-(t log p + (1 - t) log(1 - p)) for probabilities p; logs clamped at -100 (as torch)."""
    _check_binary_shapes(input, target)
    x = input._data
    if bool(((x < 0) | (x > 1)).any()):
        raise RuntimeError("all elements of input should be between 0 and 1")
    # log(clamp(p, e^-100)) equals max(log p, -100), with a finite, zero gradient at p = 0.
    floor = math.exp(-100)
    log_p = input.clamp(min=floor).log()
    log_q = (1 - input).clamp(min=floor).log()
    loss = -(target * log_p + (1 - target) * log_q)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction))


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None,
                                     reduce=None, reduction="mean", pos_weight=None):
    """BCE of sigmoid(input) computed stably: (1 - t) x + (1 + (pos_weight - 1) t) *
    softplus(-x), with softplus(z) = log1p(exp(-|z|)) + max(z, 0)."""
    if target.shape != input.shape:
        raise ValueError(f"Target size ({target.shape}) must be the same as input size "
                         f"({input.shape})")
    log_sig_neg = SoftplusOp.apply(-input, 1.0, math.inf)  # -log(sigmoid(x))
    if pos_weight is None:
        loss = (1 - target) * input + log_sig_neg
    else:
        loss = (1 - target) * input + ((pos_weight - 1) * target + 1) * log_sig_neg
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction))


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """Pointwise target * (log target - input), input being log-probabilities (target too
    when log_target); "batchmean" divides the sum by the batch size."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if log_target:
        loss = target.exp() * (target - input)
    else:
        tiny = float(np.finfo(target._data.dtype).tiny)
        # target * log(target), 0 where target is 0 (xlogy), without 0 * -inf.
        loss = target * target.clamp(min=tiny).log() - target * input
    if reduction == "batchmean":
        return loss.sum() / input.shape[0] if input.dim() else loss.sum()
    if reduction == "mean":
        warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the "
                      "support size.'batchmean' divides only by the batch size, and aligns with "
                      "the KL div math definition.'mean' will be changed to behave the same as "
                      "'batchmean' in the next major release.", stacklevel=2)
    return _reduce(loss, reduction)



# -- margin, embedding and likelihood losses -----------------------------------------------
def _same_dims(name, *tensors):
    if len({t.dim() for t in tensors}) != 1:
        shapes = ", ".join(f"{list(t.shape)}" for t in tensors)
        raise RuntimeError(f"{name}: all input tensors should have the same dimension, but got "
                           f"sizes {shapes}")


def margin_ranking_loss(input1, input2, target, margin=0.0, size_average=None, reduce=None,
                        reduction="mean"):
    """max(0, -target * (input1 - input2) + margin), target in {1, -1}."""
    _same_dims("margin_ranking_loss", input1, input2, target)
    loss = (-target * (input1 - input2) + margin).clamp(min=0)
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction))


def hinge_embedding_loss(input, target, margin=1.0, size_average=None, reduce=None,
                         reduction="mean"):
    """input where target is 1, max(0, margin - input) where target is -1."""
    loss = (where(ne(target, 1), (margin - input).clamp(min=0), 0.0)
            + where(ne(target, -1), input, 0.0))
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction))


def soft_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """log(1 + exp(-target * input)), computed without overflow."""
    loss = SoftplusOp.apply(-target * input, 1.0, math.inf)
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction))


def multilabel_soft_margin_loss(input, target, weight=None, size_average=None, reduce=None,
                                reduction="mean"):
    """-(t log sigmoid(x) + (1 - t) log sigmoid(-x)), weighted, averaged over the classes
    (the last dim): one value per sample before the reduction."""
    loss = (target * SoftplusOp.apply(-input, 1.0, math.inf)
            + (1 - target) * SoftplusOp.apply(input, 1.0, math.inf))
    if weight is not None:
        loss = loss * weight
    loss = loss.mean(input.dim() - 1)
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction))


def cosine_embedding_loss(input1, input2, target, margin=0.0, size_average=None, reduce=None,
                          reduction="mean"):
    """1 - cos(x1, x2) where target is 1, max(0, cos(x1, x2) - margin) where it is -1; cos
    over the last dim with 1e-12 added to each squared norm (as torch)."""
    if input1.dim() not in (1, 2) or input1.shape != input2.shape:
        raise RuntimeError(f"cosine_embedding_loss: expected 1D or 2D inputs of the same shape, "
                           f"got {list(input1.shape)} and {list(input2.shape)}")
    if target.dim() != input1.dim() - 1:
        raise RuntimeError(f"cosine_embedding_loss: expected a target of {input1.dim() - 1} "
                           f"dims for inputs of {input1.dim()}, got {target.dim()}")
    prod = (input1 * input2).sum(-1)
    mag = ((input1 * input1).sum(-1) + 1e-12) * ((input2 * input2).sum(-1) + 1e-12)
    cos = prod / mag.sqrt()
    loss = where(eq(target, 1), 1 - cos, 0.0) + where(eq(target, -1), (cos - margin).clamp(min=0),
                                                       0.0)
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction))


def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2, eps=1e-6, swap=False,
                        size_average=None, reduce=None, reduction="mean"):
    """max(d(a, p) - d(a, n) + margin, 0) with the pairwise p-norm distance d; `swap` uses
    min(d(a, n), d(p, n)) as the negative distance."""
    if not anchor.dim() == positive.dim() == negative.dim() or anchor.dim() not in (1, 2):
        raise RuntimeError(f"The anchor, positive, and negative tensors are expected to have the "
                           f"same number of dimensions (1 or 2), but got: anchor {anchor.dim()}D, "
                           f"positive {positive.dim()}D, and negative {negative.dim()}D inputs")
    d_pos = pairwise_distance(anchor, positive, p, eps)
    d_neg = pairwise_distance(anchor, negative, p, eps)
    if swap:
        d_neg = minimum(d_neg, pairwise_distance(positive, negative, p, eps))
    loss = (d_pos - d_neg + margin).clamp(min=0)
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction))


def multi_margin_loss(input, target, p=1, margin=1.0, weight=None, size_average=None,
                      reduce=None, reduction="mean"):
    """sum over j != y of max(0, margin - x[y] + x[j])^p / C (times weight[y]), for input
    (N, C) or (C,) and class indices y."""
    if p not in (1, 2):
        raise ValueError("only p == 1 and p == 2 supported")
    x, y, unbatched = _batched(input, target)
    if x.dim() != 2 or tuple(y.shape) != (x.shape[0],):
        raise RuntimeError(f"multi_margin_loss: expected input (N, C) or (C,) and target (N,) "
                           f"or (), got {list(input.shape)} and {list(target.shape)}")
    picked = x.gather(1, y.unsqueeze(1))
    hinge = (x - picked + margin).clamp(min=0)
    if p == 2:
        hinge = hinge * hinge
    others = ne(y.unsqueeze(1), Tensor._make(array_module(y._data).arange(x.shape[1])))
    loss = (hinge * others.to(x.dtype)).sum(1) / x.shape[1]
    if weight is not None:
        loss = loss * weight[y]
    if unbatched:
        loss = loss.reshape(())
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction))


def poisson_nll_loss(input, target, log_input=True, full=False, size_average=None, eps=1e-8,
                     reduce=None, reduction="mean"):
    """exp(input) - target * input (log_input), else input - target * log(input + eps);
    `full` adds Stirling's target log target - target + log(2 pi target) / 2 where target > 1."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    if log_input:
        loss = input.exp() - target * input
    else:
        loss = input - target * (input + eps).log()
    if full:
        big = target > 1
        safe = where(big, target, 1.0)
        stirling = safe * safe.log() - safe + (2 * math.pi * safe).log() * 0.5
        loss = loss + stirling * big.to(stirling.dtype)
    return _reduce(loss, reduction)


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):
    """(log(var) + (input - target)^2 / var) / 2 (+ log(2 pi) / 2 when `full`); var is
    clamped at eps for the value only, and may omit the last dim or have it 1."""
    if var.shape != input.shape:
        if tuple(input.shape[:-1]) == tuple(var.shape):
            var = var.unsqueeze(-1)
        elif not (input.shape[:-1] == var.shape[:-1] and var.shape[-1] == 1):
            raise ValueError(f"var is of incorrect size: {list(var.shape)} for input "
                             f"{list(input.shape)}")
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"{reduction} is not valid")
    if bool((var._data < 0).any()):
        raise ValueError("var has negative entry/entries")
    var = clamp_min_keep_grad(var, eps)
    d = input - target
    loss = (var.log() + d * d / var) * 0.5
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return _reduce(loss, reduction)


def multilabel_margin_loss(input, target, size_average=None, reduce=None, reduction="mean"):
    """sum over target classes j and non-target classes i of max(0, 1 - (x[j] - x[i])) / C;
    each row of target lists class indices, ended by the first -1."""
    x, t = (input.unsqueeze(0), target.unsqueeze(0)) if input.dim() == 1 else (input, target)
    if x.dim() != 2 or t.shape != x.shape:
        raise RuntimeError(f"multilabel_margin_loss: expected input and target of the same shape "
                           f"(C,) or (N, C), got {list(input.shape)} and {list(target.shape)}")
    c = x.shape[1]
    # NOTE: the masks are registry ops on the target (not array code), so that a compiled
    # step recomputes them for each batch's labels
    valid = lt(t, 0).long().cumsum(1) == 0  # entries before the first -1
    hits = one_hot(where(valid, t, 0), c) * valid.unsqueeze(-1).long()  # (n, slot, class)
    is_target = hits.sum(1).clamp(max=1).to(x.dtype)  # (n, class)
    pairs = is_target.unsqueeze(2) * (1 - is_target).unsqueeze(1)  # (n, j, i)
    hinge = (1 - x.unsqueeze(2) + x.unsqueeze(1)).clamp(min=0)
    loss = (hinge * pairs).sum((1, 2)) / c
    if input.dim() == 1:
        loss = loss.reshape(())
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction))


def _loss_samples():
    s = SampleMaker("losses")
    t_idx = s.ints(4, 3)
    t_idx._data[1] = 2
    t_prob = Tensor._make(s.rng.dirichlet([1.0] * 4, 3))
    w = Tensor._make(s.rng.uniform(0.5, 2.0, 4))
    y = Tensor._make(s.rng.uniform(0, 1, (3, 4)))
    pw = Tensor._make(s.rng.uniform(0.5, 3.0, 4))
    t_ign = Tensor._make(t_idx._data.copy())
    t_ign[0] = 1
    return [Sample(lambda a, b: mse_loss(a, b), (s(3, 4), s(3, 4))),
            Sample(lambda a: l1_loss(a, y, reduction="sum"), (s(3, 4, low=-2, high=2),)),
            Sample(lambda a: huber_loss(a, y, delta=0.5), (s(3, 4, low=-2, high=2),)),
            Sample(lambda a: smooth_l1_loss(a, y, beta=0.5, reduction="none"),
                   (s(3, 4, low=-2, high=2),)),
            Sample(lambda x: cross_entropy(x, t_idx), (s(3, 4, low=-3, high=3),)),
            Sample(lambda x: cross_entropy(x, t_ign, w, ignore_index=1, label_smoothing=0.2),
                   (s(3, 4, low=-3, high=3),)),
            Sample(lambda x: cross_entropy(x, t_prob, w, label_smoothing=0.1),
                   (s(3, 4, low=-3, high=3),)),
            Sample(lambda x: cross_entropy(x, t_idx, reduction="none"), (s(3, 4),)),
            Sample(lambda p: binary_cross_entropy(p, y), (s(3, 4, low=0.05, high=0.95),)),
            Sample(lambda x: binary_cross_entropy_with_logits(x, y, pos_weight=pw),
                   (s(3, 4, low=-3, high=3),)),
            Sample(lambda x, t: kl_div(x, t, reduction="batchmean"),
                   (s(3, 4, low=-2, high=0), s(3, 4, low=0.1, high=1))),
            Sample(lambda x, t: kl_div(x, t, reduction="sum", log_target=True),
                   (s(3, 4, low=-2, high=0), s(3, 4, low=-2, high=0))),
            *_margin_loss_samples(s)]


def _margin_loss_samples(s):
    sign = Tensor._make(s.rng.choice([-1.0, 1.0], 5))
    sign2 = Tensor._make(s.rng.choice([-1.0, 1.0], (3, 4)))
    labels = Tensor._make(s.rng.integers(0, 2, (3, 4)).astype(float))
    counts = Tensor._make(s.rng.integers(0, 4, (3, 4)).astype(float))
    t_idx = Tensor._make(np.array([0, 3, 2]))
    w = Tensor._make(s.rng.uniform(0.5, 2.0, 4))
    ml = Tensor._make(np.array([[3, 0, -1, 1], [1, 2, 3, 0], [-1, 1, 2, 0]]))
    return [Sample(lambda a, b: margin_ranking_loss(a, b, sign, 0.1), (s(5), s(5))),
            Sample(lambda x: hinge_embedding_loss(x, sign2, 0.5, reduction="sum"),
                   (s(3, 4, low=-2, high=2),)),
            Sample(lambda x: soft_margin_loss(x, sign2), (s(3, 4, low=-3, high=3),)),
            Sample(lambda x: multilabel_soft_margin_loss(x, labels, w, reduction="none"),
                   (s(3, 4, low=-3, high=3),)),
            Sample(lambda a, b: cosine_embedding_loss(a, b, sign[:3], 0.2), (s(3, 4), s(3, 4))),
            Sample(lambda a, p, n: triplet_margin_loss(a, p, n, 1.5, swap=True),
                   (s(3, 4), s(3, 4), s(3, 4))),
            Sample(lambda x: multi_margin_loss(x, t_idx, 2, 0.8, w), (s(3, 4),)),
            Sample(lambda x: multi_margin_loss(x, t_idx[1]), (s(4),)),
            Sample(lambda x: poisson_nll_loss(x, counts, full=True), (s(3, 4),)),
            Sample(lambda x: poisson_nll_loss(x, counts, log_input=False, reduction="sum"),
                   (s(3, 4, low=0.2, high=2),)),
            Sample(lambda x, v: gaussian_nll_loss(x, labels, v, full=True),
                   (s(3, 4), s(3, low=0.2))),
            Sample(lambda x: multilabel_margin_loss(x, ml), (s(3, 4),))]


register_composite("losses", _loss_samples)


# -- modules ---------------------------------------------------------------------------------
class _Loss(Module):
    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__()
        self.reduction = _legacy_reduction(size_average, reduce, reduction)

    def extra_repr(self):
        return ""


class _WeightedLoss(_Loss):
    """A loss with a per-class `weight`, registered as a buffer (so it is in state_dict)."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)


class MSELoss(_Loss):
    def forward(self, input, target):
        return mse_loss(input, target, reduction=self.reduction)


class L1Loss(_Loss):
    def forward(self, input, target):
        return l1_loss(input, target, reduction=self.reduction)


class HuberLoss(_Loss):
    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction=reduction)
        self.delta = delta

    def forward(self, input, target):
        return huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class SmoothL1Loss(_Loss):
    def __init__(self, size_average=None, reduce=None, reduction="mean", beta=1.0):
        super().__init__(size_average, reduce, reduction)
        self.beta = beta

    def forward(self, input, target):
        return smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class NLLLoss(_WeightedLoss):
    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean"):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index,
                        reduction=self.reduction)


class CrossEntropyLoss(_WeightedLoss):
    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean", label_smoothing=0.0):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                             reduction=self.reduction, label_smoothing=self.label_smoothing)


class BCELoss(_WeightedLoss):
    def forward(self, input, target):
        return binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean",
                 pos_weight=None):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input, target):
        return binary_cross_entropy_with_logits(input, target, self.weight,
                                                pos_weight=self.pos_weight,
                                                reduction=self.reduction)


class KLDivLoss(_Loss):
    def __init__(self, size_average=None, reduce=None, reduction="mean", log_target=False):
        super().__init__(size_average, reduce, reduction)
        self.log_target = log_target

    def forward(self, input, target):
        return kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


class MarginRankingLoss(_Loss):
    def __init__(self, margin=0.0, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.margin = margin

    def forward(self, input1, input2, target):
        return margin_ranking_loss(input1, input2, target, self.margin, reduction=self.reduction)


class HingeEmbeddingLoss(_Loss):
    def __init__(self, margin=1.0, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.margin = margin

    def forward(self, input, target):
        return hinge_embedding_loss(input, target, self.margin, reduction=self.reduction)


class _PlainLoss(_Loss):
    """A loss `fn(input, target, reduction=...)` without further arguments."""

    fn = None

    def forward(self, input, target):
        return type(self).fn(input, target, reduction=self.reduction)


class SoftMarginLoss(_PlainLoss):
    fn = staticmethod(soft_margin_loss)


class MultiLabelMarginLoss(_PlainLoss):
    fn = staticmethod(multilabel_margin_loss)


class MultiLabelSoftMarginLoss(_WeightedLoss):
    def forward(self, input, target):
        return multilabel_soft_margin_loss(input, target, self.weight, reduction=self.reduction)


class CosineEmbeddingLoss(_Loss):
    def __init__(self, margin=0.0, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.margin = margin

    def forward(self, input1, input2, target):
        return cosine_embedding_loss(input1, input2, target, self.margin,
                                     reduction=self.reduction)


class TripletMarginLoss(_Loss):
    def __init__(self, margin=1.0, p=2.0, eps=1e-6, swap=False, size_average=None, reduce=None,
                 reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        if margin <= 0:
            raise ValueError(f"TripletMarginLoss: expected margin to be greater than 0, got "
                             f"{margin} instead")
        self.margin, self.p, self.eps, self.swap = margin, p, eps, swap

    def forward(self, anchor, positive, negative):
        return triplet_margin_loss(anchor, positive, negative, self.margin, self.p, self.eps,
                                   self.swap, reduction=self.reduction)


class MultiMarginLoss(_WeightedLoss):
    def __init__(self, p=1, margin=1.0, weight=None, size_average=None, reduce=None,
                 reduction="mean"):
        super().__init__(weight, size_average, reduce, reduction)
        if p not in (1, 2):
            raise ValueError("only p == 1 and p == 2 supported")
        self.p, self.margin = p, margin

    def forward(self, input, target):
        return multi_margin_loss(input, target, self.p, self.margin, self.weight,
                                 reduction=self.reduction)


class PoissonNLLLoss(_Loss):
    def __init__(self, log_input=True, full=False, size_average=None, eps=1e-8, reduce=None,
                 reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.log_input, self.full, self.eps = log_input, full, eps

    def forward(self, log_input, target):
        return poisson_nll_loss(log_input, target, self.log_input, self.full, eps=self.eps,
                                reduction=self.reduction)


class GaussianNLLLoss(_Loss):
    def __init__(self, *, full=False, eps=1e-6, reduction="mean"):
        super().__init__(reduction=reduction)
        self.full, self.eps = full, eps

    def forward(self, input, target, var):
        return gaussian_nll_loss(input, target, var, self.full, self.eps, self.reduction)
