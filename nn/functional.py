"""`dt.nn.functional` (usually imported as F): the functional forms of the layers, with
torch's names and argument names. Each lives beside its module; this is the namespace."""
from dtrain.autograd.ops.shape import pad  # noqa: F401
from dtrain.autograd.registry import Sample, SampleMaker, register_composite
from dtrain.nn.activation import (  # noqa: F401
    celu,
    elu,
    gelu,
    glu,
    gumbel_softmax,
    hardshrink,
    hardsigmoid,
    hardswish,
    hardtanh,
    leaky_relu,
    log_softmax,
    logsigmoid,
    mish,
    prelu,
    relu,
    relu6,
    selu,
    sigmoid,
    silu,
    softmax,
    softmin,
    softplus,
    softshrink,
    softsign,
    tanh,
    tanhshrink,
    threshold,
    threshold_,
)
from dtrain.nn.attention import scaled_dot_product_attention  # noqa: F401
from dtrain.nn.conv import conv1d, conv2d, conv_transpose1d, conv_transpose2d  # noqa: F401
from dtrain.nn.distance import cosine_similarity, pairwise_distance  # noqa: F401
from dtrain.nn.dropout import alpha_dropout, dropout, dropout1d, dropout2d, dropout3d  # noqa: F401
from dtrain.nn.fold import fold, unfold  # noqa: F401
from dtrain.nn.linear import bilinear, linear  # noqa: F401
from dtrain.nn.loss import (  # noqa: F401
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cosine_embedding_loss,
    cross_entropy,
    gaussian_nll_loss,
    hinge_embedding_loss,
    huber_loss,
    kl_div,
    l1_loss,
    margin_ranking_loss,
    mse_loss,
    multi_margin_loss,
    multilabel_margin_loss,
    multilabel_soft_margin_loss,
    nll_loss,
    poisson_nll_loss,
    smooth_l1_loss,
    soft_margin_loss,
    triplet_margin_loss,
)
from dtrain.nn.normalization import (  # noqa: F401
    batch_norm,
    group_norm,
    instance_norm,
    layer_norm,
    local_response_norm,
    rms_norm,
)
from dtrain.nn.pixelshuffle import channel_shuffle, pixel_shuffle, pixel_unshuffle  # noqa: F401
from dtrain.nn.pooling import (  # noqa: F401
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    avg_pool1d,
    avg_pool2d,
    interpolate,
    lp_pool1d,
    lp_pool2d,
    max_pool1d,
    max_pool2d,
    upsample,
)
from dtrain.nn.sparse import embedding, embedding_bag, one_hot  # noqa: F401


def normalize(input, p=2.0, dim=1, eps=1e-12, out=None):
    """input / max(||input||_p along dim, eps)."""
    if out is not None:
        raise NotImplementedError("normalize: out= is not supported by dtrain")
    if p == 2.0:
        norm = (input * input).sum(dim, keepdim=True).sqrt()
    else:
        norm = (input.abs() ** p).sum(dim, keepdim=True) ** (1.0 / p)
    return input / norm.clamp(min=eps)


def _normalize_samples():
    s = SampleMaker("normalize")
    return [Sample(normalize, (s(3, 4),)), Sample(lambda x: normalize(x, 1.0, 0), (s.away(3, 2),))]


register_composite("normalize", _normalize_samples)
