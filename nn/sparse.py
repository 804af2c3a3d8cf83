"""`Embedding`: a lookup table of vectors indexed by integer ids, and `one_hot`."""
from dtrain.autograd.grad_mode import no_grad
from dtrain.autograd.node import Op
from dtrain.autograd.ops.index import IndexGrad
from dtrain.autograd.registry import Sample, SampleMaker, register
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

    def name(self):
        return "EmbeddingBackward0"

    def forward(self, weight, indices, padding_idx):
        self.indices, self.padding_idx, self.w_shape = indices, padding_idx, weight.shape
        return array_module(weight).take(weight, indices, axis=0)

    def backward(self, g):
        if self.padding_idx is not None:
            keep = (self.indices != self.padding_idx)[..., None]
            g = g * Tensor._make(keep.astype(g._data.dtype))
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
    if padding_idx is not None:
        if not -num <= padding_idx < num:
            raise ValueError("Padding_idx must be within num_embeddings")
        padding_idx %= num
    if max_norm is not None:
        _renorm_rows(weight, input, max_norm, norm_type)
    return EmbeddingLookup.apply(weight, input._data, padding_idx)


def _renorm_rows(weight, input, max_norm, norm_type):
    """Rescale in place the looked-up rows whose norm exceeds max_norm (as torch)."""
    xp = array_module(weight._data)
    rows = xp.unique(input._data.reshape(-1))
    w = weight._data[rows]
    norms = (xp.abs(w) ** norm_type).sum(axis=1, keepdims=True) ** (1.0 / norm_type)
    scale = xp.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0)
    weight._data[rows] = w * scale.astype(w.dtype)
    weight._version[0] += 1


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
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError("Padding_idx must be within num_embeddings")
            padding_idx %= num_embeddings
        self.padding_idx = padding_idx
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
