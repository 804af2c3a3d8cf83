"""Distances between batches of vectors: `cosine_similarity`, `pairwise_distance` and their
modules, with torch's names, defaults and eps semantics."""
import numpy as np

from dtrain.autograd.ops.linalg import vector_norm
from dtrain.autograd.registry import Sample, SampleMaker, register_composite
from dtrain.nn.module import Module


def clamp_min_keep_grad(input, eps):
    """`input` with values clamped below at eps, but the gradient of `input` itself (torch's
    `clamp_min_` under no_grad, as in cosine_similarity and gaussian_nll_loss)."""
    return input + (input.clamp(min=eps) - input).detach()


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """sum(x1 / max(||x1||, eps) * x2 / max(||x2||, eps)) along dim, after broadcasting;
    each norm is clamped separately (current torch), the gradient passes the clamp."""
    try:
        shape = np.broadcast_shapes(tuple(x1.shape), tuple(x2.shape))
    except ValueError:
        raise RuntimeError(f"cosine_similarity: the shapes of x1 {list(x1.shape)} and x2 "
                           f"{list(x2.shape)} cannot be broadcast together") from None
    x1, x2 = x1.broadcast_to(shape), x2.broadcast_to(shape)
    n1 = clamp_min_keep_grad(vector_norm(x1, 2, dim, True), eps)
    n2 = clamp_min_keep_grad(vector_norm(x2, 2, dim, True), eps)
    return ((x1 / n1) * (x2 / n2)).sum(dim)


def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    """||x1 - x2 + eps||_p over the last dim (of the broadcast shape)."""
    return vector_norm(x1 - x2 + eps, p, max(x1.dim(), x2.dim()) - 1, keepdim)


def _distance_samples():
    s = SampleMaker("distance")
    return [Sample(cosine_similarity, (s(3, 4), s(3, 4))),
            Sample(lambda a, b: cosine_similarity(a, b, dim=-1, eps=1e-6), (s(3, 4), s(1, 4))),
            Sample(lambda a, b: cosine_similarity(a, b, 0), (s(4, 2, 3), s(4, 1, 3))),
            Sample(pairwise_distance, (s(3, 4), s(3, 4))),
            Sample(lambda a, b: pairwise_distance(a, b, 1.5, keepdim=True), (s(2, 3), s(3))),
            Sample(lambda a, b: pairwise_distance(a, b, 1.0), (s.away(5), s.away(5)))]


register_composite("distance", _distance_samples)


class CosineSimilarity(Module):
    """Cosine similarity of (*, D, *) inputs along `dim`."""

    def __init__(self, dim=1, eps=1e-8):
        super().__init__()
        self.dim = dim
        self.eps = eps

    def forward(self, x1, x2):
        return cosine_similarity(x1, x2, self.dim, self.eps)


class PairwiseDistance(Module):
    """p-norm distance of (N, D) or (D,) inputs along the last dim."""

    def __init__(self, p=2.0, eps=1e-6, keepdim=False):
        super().__init__()
        self.norm = p
        self.eps = eps
        self.keepdim = keepdim

    def forward(self, x1, x2):
        return pairwise_distance(x1, x2, self.norm, self.eps, self.keepdim)
