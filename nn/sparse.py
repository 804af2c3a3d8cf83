"""`Embedding`: a lookup table of vectors indexed by integer ids, and `one_hot`."""
import math

import numpy as np

from dtrain.autograd.grad_mode import no_grad
from dtrain.autograd.node import Op
from dtrain.autograd.ops.index import IndexGrad
from dtrain.autograd.ops.pointwise import where
from dtrain.autograd.registry import Sample, SampleMaker, register, register_composite
from dtrain.core import creation
from dtrain.core.backend import array_module
from dtrain.core.tensor import Tensor
from dtrain.nn import init
from dtrain.nn.module import Module
from dtrain.nn.parameter import Parameter


def _embedding_samples():
    s = SampleMaker("embedding")
    idx = Tensor._make(s.rng.integers(0, 3, (2, 3)))
    idx._data[0, 0] = idx._data[1, 2] = 1  # repeated rows accumulate
    # The padding row gets no gradient by design (not the true derivative), so it is left
    # out of the indices here; tests/nn checks that it stays without gradient.
    return [Sample(lambda w: embedding(idx, w), (s(4, 3),)),
            Sample(lambda w: embedding(idx, w, padding_idx=3), (s(4, 3),))]


@register("embedding", _embedding_samples)
class EmbeddingLookup(Op):
    """weight[indices]; the gradient is scattered back to the rows (repeats summed), except
    to `padding_idx`, which gets none (as torch)."""

    saves = ("indices",)

    def name(self):
        return "EmbeddingBackward0"

    def forward(self, weight, indices, padding_idx):
        self.indices, self.padding_idx, self.w_shape = indices, padding_idx, weight.shape
        return array_module(weight).take(weight, indices, axis=0)

    def backward(self, g):
        if self.padding_idx is not None:
            keep = Tensor._make(self.indices) != self.padding_idx
            g = g * keep.unsqueeze(-1).to(g.dtype)
        return IndexGrad.apply(g, self.w_shape, self.indices), None, None


def _check_indices(input, num):
    idx = input._data
    if idx.dtype.kind not in "iu":
        raise RuntimeError(f"Expected tensor for argument #1 'indices' to have one of the "
                           f"following scalar types: Long, Int; but got {input.dtype} instead")
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= num):
        raise IndexError(f"index out of range in self (indices must lie in [0, {num}), got "
                         f"min {int(idx.min())}, max {int(idx.max())})")


def embedding(input, weight, padding_idx=None, max_norm=None, norm_type=2.0,
              scale_grad_by_freq=False, sparse=False):
    """Rows of `weight` (num_embeddings, embedding_dim) at integer `input` (any shape)."""
    if scale_grad_by_freq or sparse:
        raise NotImplementedError("embedding: scale_grad_by_freq and sparse gradients are not "
                                  "supported by dtrain")
    num = weight.shape[0]
    _check_indices(input, num)
    padding_idx = _padding_index(padding_idx, num)
    if max_norm is not None:
        _renorm_rows(weight, input, max_norm, norm_type)
    return EmbeddingLookup.apply(weight, input._data, padding_idx)


def _padding_index(padding_idx, num):
    """padding_idx in [0, num) (negative counts from the end), or None."""
    if padding_idx is None:
        return None
    if not -num <= padding_idx < num:
        raise ValueError("Padding_idx must be within num_embeddings")
    return padding_idx % num


def _bags(input, offsets, include_last_offset):
    """(flat indices, bag of each index, number of bags) for 2-D input (one bag per row) or
    1-D input with the bags' start `offsets`."""
    xp = array_module(input._data)
    if input.dim() == 2:
        if offsets is not None:
            raise ValueError("if input is 2D, then offsets has to be None, as input is treated "
                             "is a mini-batch of fixed length sequences. However, found "
                             f"offsets of type {type(offsets).__name__}")
        b, n = input.shape
        return input.reshape(-1), xp.repeat(xp.arange(b), n), b
    if input.dim() != 1:
        raise ValueError(f"input has to be 1D or 2D Tensor, but got Tensor of dimension "
                         f"{input.dim()}")
    if offsets is None or offsets.dim() != 1:
        raise ValueError("offsets has to be a 1D Tensor but got None" if offsets is None else
                         f"offsets has to be a 1D Tensor but got a {offsets.dim()}D Tensor")
    starts = offsets._data[:-1] if include_last_offset else offsets._data
    if starts.size and int(starts[0]) != 0:
        raise ValueError(f"offsets[0] has to be 0, i.e., the first sequence in the mini-batch "
                         f"has to start from position 0. However, got {int(starts[0])}")
    bag = xp.searchsorted(starts, xp.arange(input.shape[0]), side="right") - 1
    return input, bag, starts.size


def embedding_bag(input, weight, offsets=None, max_norm=None, norm_type=2, scale_grad_by_freq=False,
                  mode="mean", sparse=False, per_sample_weights=None, include_last_offset=False,
                  padding_idx=None):
    """Sums, means or maxima of bags of embedding rows, without materialising the lookups
    per bag: rows are scattered into their bag. Entries equal to padding_idx are left out
    (also from a mean's count); empty bags give zeros. (B, D) out."""
    if mode not in ("sum", "mean", "max"):
        raise ValueError(f"mode has to be one of sum, mean or max, got {mode!r}")
    if per_sample_weights is not None and mode != "sum":
        raise NotImplementedError(f"embedding_bag: per_sample_weights was not None. "
                                  f"per_sample_weights is only supported for mode='sum' (got "
                                  f"mode='{mode}'). Please open a feature request on GitHub.")
    if per_sample_weights is not None and per_sample_weights.shape != input.shape:
        raise ValueError(f"embedding_bag: If per_sample_weights ({list(per_sample_weights.shape)}"
                         f") is not None, then it must have the same shape as the input "
                         f"({list(input.shape)})")
    flat, bag, n_bags = _bags(input, offsets, include_last_offset)
    rows = embedding(flat, weight, None, max_norm, norm_type, scale_grad_by_freq, sparse)
    xp = array_module(rows._data)
    padding_idx = _padding_index(padding_idx, weight.shape[0])
    keep = xp.ones(flat.shape, bool) if padding_idx is None else flat._data != padding_idx
    dim = weight.shape[1]
    if mode == "max":
        return _bag_max(rows, bag, keep, n_bags)
    scale = Tensor._make(keep.astype(rows._data.dtype))
    if per_sample_weights is not None:
        scale = scale * per_sample_weights.reshape(-1)
    index = Tensor._make(xp.broadcast_to(bag[:, None], rows.shape))
    out = creation.zeros(n_bags, dim, dtype=rows.dtype, device=rows.device)
    out = out.scatter_add(0, index, rows * scale.unsqueeze(1))
    if mode == "mean":
        count = xp.bincount(bag[keep], minlength=n_bags)
        out = out / Tensor._make(xp.maximum(count, 1).astype(rows._data.dtype)[:, None])
    return out


def _bag_max(rows, bag, keep, n_bags):
    """Per-bag maxima: each bag's rows gathered into (bags, longest bag, D), the missing and
    padding slots masked to -inf; 0 for bags without rows."""
    xp = array_module(rows._data)
    length = xp.bincount(bag, minlength=n_bags)
    start = xp.concatenate([xp.zeros(1, length.dtype), xp.cumsum(length)[:-1]])
    longest = max(int(length.max()) if length.size else 0, 1)
    slot = start[:, None] + xp.arange(longest)
    valid = xp.arange(longest) < length[:, None]
    slot = xp.where(valid, slot, 0)
    valid &= keep[slot]
    picked = rows.index_select(0, Tensor._make(slot.reshape(-1))).reshape(n_bags, longest, -1)
    out = where(Tensor._make(valid[:, :, None]), picked, -math.inf).amax(1)
    return where(Tensor._make(valid.any(1)[:, None]), out, 0.0)


def _renorm_rows(weight, input, max_norm, norm_type):
    """Rescale in place the looked-up rows whose norm exceeds max_norm (as torch)."""
    xp = array_module(weight._data)
    rows = xp.unique(input._data.reshape(-1))
    w = weight._data[rows]
    norms = (xp.abs(w) ** norm_type).sum(axis=1, keepdims=True) ** (1.0 / norm_type)
    scale = xp.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0)
    weight._data[rows] = w * scale.astype(w.dtype)
    weight._version[0] += 1


def _embedding_bag_samples():
    s = SampleMaker("embedding_bag")
    idx = Tensor._make(np.array([1, 3, 1, 0, 2, 2, 4]))
    offsets = Tensor._make(np.array([0, 3, 3, 5]))  # bag 1 is empty
    idx2 = Tensor._make(np.array([[1, 3, 0], [0, 0, 0], [2, 4, 2]]))  # row 1: all padding
    psw = s(7)
    return [Sample(lambda w: embedding_bag(idx, w, offsets), (s(5, 3),)),
            Sample(lambda w, p: embedding_bag(idx, w, offsets, mode="sum",
                                              per_sample_weights=p), (s(5, 3), psw)),
            Sample(lambda w: embedding_bag(idx2, w, mode="max", padding_idx=0),
                   (s.distinct(5, 3),)),
            Sample(lambda w: embedding_bag(idx, w, Tensor._make(np.array([0, 2, 7])),
                                           include_last_offset=True, padding_idx=2),
                   (s(5, 3),))]


register_composite("embedding_bag", _embedding_bag_samples)


def _one_hot_samples():
    s = SampleMaker("one_hot")
    return [Sample(lambda i: one_hot(i, 4), (s.ints(4, 5),)),
            Sample(lambda i: one_hot(i, 3), (s.ints(3, 2, 3),))]


@register("one_hot", _one_hot_samples, differentiable=False)
class OneHot(Op):
    """int64 (*, num_classes): 1 where the last index equals the input's value."""

    differentiable = False

    def forward(self, idx, num_classes):
        xp = array_module(idx)
        if idx.size:  # checked here, so that graph replays check each call's values too
            low, high = int(idx.min()), int(idx.max())
            if low < 0:
                raise RuntimeError(f"one_hot: Class values must be non-negative (got {low})")
            if high >= num_classes:
                raise RuntimeError(f"one_hot: Class values must be smaller than num_classes "
                                   f"(got {high} with num_classes={num_classes})")
        return (idx[..., None] == xp.arange(num_classes)).astype("int64")


def one_hot(tensor, num_classes=-1):
    """int64 tensor of shape (*, num_classes) with a 1 at each index of `tensor`; with
    num_classes=-1, one more than the largest index (no gradient)."""
    if tensor._data.dtype.kind not in "iu":
        raise RuntimeError(f"one_hot is only applicable to index tensor of type LongTensor "
                           f"(got {tensor.dtype})")
    if num_classes == -1:
        if not tensor._data.size:
            raise RuntimeError("one_hot: Can not infer total number of classes from empty "
                               "tensor.")
        num_classes = int(tensor.max()) + 1
    return OneHot.apply(tensor, int(num_classes))


class Embedding(Module):
    """A table of num_embeddings vectors of size embedding_dim, initialised N(0, 1) with
    the padding_idx row zero."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None,
                 norm_type=2.0, scale_grad_by_freq=False, sparse=False, _weight=None,
                 _freeze=False, device=None, dtype=None):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = _padding_index(padding_idx, num_embeddings)
        self.max_norm = max_norm
        self.norm_type = norm_type
        self.scale_grad_by_freq = scale_grad_by_freq
        self.sparse = sparse
        if _weight is None:
            self.weight = Parameter(creation.empty(num_embeddings, embedding_dim, device=device,
                                                   dtype=dtype), requires_grad=not _freeze)
            self.reset_parameters()
        else:
            if list(_weight.shape) != [num_embeddings, embedding_dim]:
                raise ValueError("Shape of weight does not match num_embeddings and "
                                 "embedding_dim")
            self.weight = Parameter(_weight, requires_grad=not _freeze)

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx] = 0

    def forward(self, input):
        return embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                         self.scale_grad_by_freq, self.sparse)

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        return s

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None, max_norm=None,
                        norm_type=2.0, scale_grad_by_freq=False, sparse=False):
        """An Embedding holding `embeddings` (2-D); frozen unless freeze=False."""
        if embeddings.dim() != 2:
            raise ValueError("Embeddings parameter is expected to be 2-dimensional")
        rows, cols = embeddings.shape
        return cls(rows, cols, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse,
                   _weight=embeddings, _freeze=freeze)


class EmbeddingBag(Module):
    """Sums, means or maxima (`mode`) of bags of embeddings, the table initialised N(0, 1)
    with the padding_idx row zero; forward(input, offsets=None, per_sample_weights=None)."""

    def __init__(self, num_embeddings, embedding_dim, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, mode="mean", sparse=False, _weight=None,
                 include_last_offset=False, padding_idx=None, device=None, dtype=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.max_norm, self.norm_type = max_norm, norm_type
        self.scale_grad_by_freq, self.mode, self.sparse = scale_grad_by_freq, mode, sparse
        self.include_last_offset = include_last_offset
        self.padding_idx = _padding_index(padding_idx, num_embeddings)
        if _weight is None:
            self.weight = Parameter(creation.empty(num_embeddings, embedding_dim, device=device,
                                                   dtype=dtype))
            self.reset_parameters()
        else:
            self.weight = Parameter(_weight)

    reset_parameters = Embedding.reset_parameters

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, max_norm=None, norm_type=2.0,
                        scale_grad_by_freq=False, mode="mean", sparse=False,
                        include_last_offset=False, padding_idx=None):
        """An EmbeddingBag holding `embeddings` (2-D); frozen unless freeze=False."""
        if embeddings.dim() != 2:
            raise ValueError("Embeddings parameter is expected to be 2-dimensional")
        bag = cls(*embeddings.shape, max_norm, norm_type, scale_grad_by_freq, mode, sparse,
                  embeddings, include_last_offset, padding_idx)
        bag.weight.requires_grad_(not freeze)
        return bag

    def forward(self, input, offsets=None, per_sample_weights=None):
        return embedding_bag(input, self.weight, offsets, self.max_norm, self.norm_type,
                             self.scale_grad_by_freq, self.mode, self.sparse, per_sample_weights,
                             self.include_last_offset, self.padding_idx)

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        s += f", mode={self.mode!r}"  # torch: mode repr'd, then padding_idx
        return s if self.padding_idx is None else s + f", padding_idx={self.padding_idx}"
