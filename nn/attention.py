"""Attention: `scaled_dot_product_attention`, `MultiheadAttention`, and the transformer
encoder (`TransformerEncoderLayer`, `TransformerEncoder`), with torch's names, parameter
names and mask conventions. All are compositions of existing ops (matmul, softmax, linear).

Mask conventions differ, as in torch: in `scaled_dot_product_attention` a boolean mask
is True where attention is ALLOWED; in `MultiheadAttention` (attn_mask, key_padding_mask)
True means the position is MASKED OUT. Float masks are added to the scores in both.
"""
import copy
import math

import numpy as np

from dtrain.autograd.registry import Sample, SampleMaker, register_composite
from dtrain.core import creation
from dtrain.core import dtype as dtypes
from dtrain.core.backend import array_module
from dtrain.core.tensor import Tensor
from dtrain.nn import init
from dtrain.nn.activation import gelu, relu
from dtrain.nn.containers import ModuleList
from dtrain.nn.dropout import Dropout, dropout
from dtrain.nn.linear import Linear, NonDynamicallyQuantizableLinear, linear
from dtrain.nn.module import Module
from dtrain.nn.normalization import LayerNorm
from dtrain.nn.parameter import Parameter


def _additive(mask, dtype, masked_when):
    """A float mask to add to attention scores: `mask` itself when it is float, else -inf
    where the boolean mask equals `masked_when` and 0 elsewhere."""
    if mask._data.dtype.kind == "b":
        xp = array_module(mask._data)
        hit = mask._data if masked_when else ~mask._data
        return Tensor._make(xp.where(hit, -xp.inf, 0.0).astype(dtype))
    if mask._data.dtype.kind != "f":
        raise RuntimeError(f"attention masks must be bool or float, got {mask.dtype}")
    return mask


def _causal(xp, n_query, n_key, dtype):
    """Additive causal mask: query i sees keys 0..i (torch's tril(ones(L, S)))."""
    allowed = xp.tril(xp.ones((n_query, n_key), dtype=bool))
    return Tensor._make(xp.where(allowed, 0.0, -xp.inf).astype(dtype))


def _attend(q, k, v, mask, dropout_p, scale):
    """softmax(q k^T * scale + mask) (dropped out) @ v; returns (output, weights)."""
    scores = (q * scale) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores + mask
    weights = scores.softmax(-1)
    if dropout_p > 0.0:
        weights = dropout(weights, dropout_p)
    return weights @ v, weights


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False):
    """softmax(Q K^T / sqrt(E) + mask) V on (..., L, E) queries and (..., S, E) keys/values.
    A boolean `attn_mask` is True where attention may happen; a float one is added."""
    if enable_gqa:
        raise NotImplementedError("scaled_dot_product_attention: enable_gqa=True")
    if query._data.ndim < 2 or key._data.ndim < 2 or value._data.ndim < 2:
        raise RuntimeError("scaled_dot_product_attention: query, key and value must be at "
                           "least 2-D (..., L, E)")
    if query._data.shape[-1] != key._data.shape[-1] or key._data.shape[-2] != value._data.shape[-2]:
        raise RuntimeError(f"scaled_dot_product_attention: incompatible shapes query "
                           f"{list(query.data.shape)}, key {list(key.data.shape)}, value "
                           f"{list(value._data.shape)}")
    n_query, n_key = query._data.shape[-2], key._data.shape[-2]
    scale = 1.0 / math.sqrt(query._data.shape[-1]) if scale is None else scale
    dtype = query._data.dtype
    mask = None
    if is_causal:
        if attn_mask is not None:
            raise RuntimeError("_scaled_dot_product_attention: Explicit attn_mask should not be "
                               "set when is_causal=True")
        mask = _causal(array_module(query._data), n_query, n_key, dtype)
    elif attn_mask is not None:
        mask = _additive(attn_mask, dtype, masked_when=False)
    return _attend(query, key, value, mask, dropout_p, scale)[0]


def _sdpa_samples():
    s = SampleMaker("scaled_dot_product_attention")
    allowed = Tensor._make(s.rng.random((3, 4)) > 0.3)
    allowed._data[:, 0] = True  # every query sees at least one key
    float_mask = s(3, 4, grad=False)
    return [Sample(scaled_dot_product_attention, (s(2, 3, 4), s(2, 4, 4), s(2, 4, 3))),
            Sample(lambda q, k, v: scaled_dot_product_attention(q, k, v, allowed),
                   (s(3, 2), s(4, 2), s(4, 2))),
            Sample(lambda q, k, v: scaled_dot_product_attention(q, k, v, float_mask, scale=0.3),
                   (s(3, 2), s(4, 2), s(4, 2))),
            Sample(lambda q, k, v: scaled_dot_product_attention(q, k, v, is_causal=True),
                   (s(1, 3, 2), s(1, 3, 2), s(1, 3, 2)))]


register_composite("scaled_dot_product_attention", _sdpa_samples)


class MultiheadAttention(Module):
    """Multi-head attention with torch's parameters (`in_proj_weight` (3E, E),
    `in_proj_bias`, `out_proj`; `q/k/v_proj_weight` when kdim/vdim differ from E).
    forward(query, key, value) -> (output, weights or None); inputs are (L, N, E), or
    (N, L, E) with batch_first=True, or unbatched (L, E)."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False, device=None,
                 dtype=None):
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be greater than 0, got "
                             f"embed_dim={embed_dim} and num_heads={num_heads} instead")
        if embed_dim % num_heads:
            raise AssertionError("embed_dim must be divisible by num_heads")
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError("MultiheadAttention: add_bias_kv / add_zero_attn")
        kw = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.batch_first, self.head_dim = batch_first, embed_dim // num_heads
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(creation.empty(3 * embed_dim, embed_dim, **kw))
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.q_proj_weight = Parameter(creation.empty(embed_dim, embed_dim, **kw))
            self.k_proj_weight = Parameter(creation.empty(embed_dim, self.kdim, **kw))
            self.v_proj_weight = Parameter(creation.empty(embed_dim, self.vdim, **kw))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(creation.empty(3 * embed_dim, **kw))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = NonDynamicallyQuantizableLinear(embed_dim, embed_dim, bias=bias, **kw)
        self._reset_parameters()

    def _reset_parameters(self):
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)

    def _project(self, query, key, value):
        e, b = self.embed_dim, self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else (b[:e], b[e:2 * e], b[2 * e:])
        if self._qkv_same_embed_dim:
            if query is key and key is value:  # self-attention: one GEMM for q, k and v
                return linear(query, self.in_proj_weight, b).chunk(3, -1)
            w = self.in_proj_weight
            wq, wk, wv = w[:e], w[e:2 * e], w[2 * e:]
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        return linear(query, wq, bq), linear(key, wk, bk), linear(value, wv, bv)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint. You may use "
                               "the Transformer module method `generate_square_subsequent_mask`"
                               " to create this mask.")
        same = query is key and key is value  # self-attention: one fused in-projection
        unbatched = query._data.ndim == 2
        if unbatched:  # (L, E) -> (1, L, E)
            query, key, value = (t.unsqueeze(0) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif query._data.ndim != 3:
            raise AssertionError(f"query should be unbatched 2D or batched 3D tensor but "
                                 f"received {query._data.ndim}-D query tensor")
        elif not self.batch_first:  # work in (N, L, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if same:
            key = value = query
        n, n_query, e = query._data.shape
        if e != self.embed_dim:
            raise AssertionError(f"was expecting embedding dimension of {self.embed_dim}, but "
                                 f"got {e}")
        n_key = key._data.shape[1]
        q, k, v = self._project(query, key, value)
        h, hd = self.num_heads, self.head_dim
        q, k, v = (t.reshape(n, -1, h, hd).transpose(1, 2) for t in (q, k, v))
        mask = self._mask(key_padding_mask, attn_mask, n, n_query, n_key, query._data.dtype)
        p = self.dropout if self.training else 0.0
        out, weights = _attend(q, k, v, mask, p, 1.0 / math.sqrt(hd))
        out = self.out_proj(out.transpose(1, 2).reshape(n, n_query, e))
        out = out.squeeze(0) if unbatched else out if self.batch_first else out.transpose(0, 1)
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = weights.mean(1)
        return out, (weights.squeeze(0) if unbatched else weights)

    def _mask(self, key_padding_mask, attn_mask, n, n_query, n_key, dtype):
        """The additive mask for scores (N, H, L, S), or None."""
        mask = None
        if attn_mask is not None:
            mask = _additive(attn_mask, dtype, masked_when=True)
            shape = tuple(mask._data.shape)
            if shape == (n * self.num_heads, n_query, n_key):
                mask = mask.reshape(n, self.num_heads, n_query, n_key)
            elif shape != (n_query, n_key):
                raise RuntimeError(f"The shape of the attn_mask is {list(shape)}, but should be "
                                   f"{[n_query, n_key]} or "
                                   f"{[n * self.num_heads, n_query, n_key]}.")
        if key_padding_mask is not None:
            if tuple(key_padding_mask._data.shape) != (n, n_key):
                raise AssertionError(f"expecting key_padding_mask shape of {(n, n_key)}, but "
                                     f"got {tuple(key_padding_mask._data.shape)}")
            kpm = _additive(key_padding_mask, dtype, masked_when=True).reshape(n, 1, 1, n_key)
            mask = kpm if mask is None else mask + kpm
        return mask


def _mha_samples():
    s = SampleMaker("multihead_attention")
    mha = MultiheadAttention(4, 2, batch_first=True).to(dtypes.float64)
    kpm = Tensor._make(s.rng.random((2, 3)) > 0.6)
    kpm._data[:, 0] = False  # every query keeps a key
    causal = Tensor._make(~np.tril(np.ones((3, 3), dtype=bool)))
    mha.requires_grad_(False)  # the projections' gradients are checked by linear/matmul
    return [Sample(lambda x: mha(x, x, x, key_padding_mask=kpm)[0], (s(2, 3, 4),)),
            Sample(lambda q, kv: mha(q, kv, kv, attn_mask=causal)[1], (s(2, 3, 4), s(2, 3, 4)))]


register_composite("multihead_attention", _mha_samples)


def _activation(name):
    if callable(name):
        return name
    if name == "relu":
        return relu
    if name == "gelu":
        return gelu
    raise RuntimeError(f"activation should be relu/gelu, not {name}")


def _build_layer(layer, attentions, n_norms, d_model, nhead, dim_feedforward, dropout,
                 activation, layer_norm_eps, batch_first, norm_first, bias, kw):
    """A transformer layer's sub-modules in torch's order (so state_dict keys match): the
    `attentions` (names), linear1, dropout, linear2, norm1..n and dropout1..n."""
    for name in attentions:
        setattr(layer, name, MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                                batch_first=batch_first, **kw))
    layer.linear1 = Linear(d_model, dim_feedforward, bias=bias, **kw)
    layer.dropout = Dropout(dropout)
    layer.linear2 = Linear(dim_feedforward, d_model, bias=bias, **kw)
    layer.norm_first = norm_first
    for i in range(1, n_norms + 1):
        setattr(layer, f"norm{i}", LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw))
    for i in range(1, n_norms + 1):
        setattr(layer, f"dropout{i}", Dropout(dropout))
    layer.activation = _activation(activation)


def _feed_forward(layer, x, out_dropout):
    """linear2(dropout(activation(linear1(x)))), then `out_dropout`."""
    return out_dropout(layer.linear2(layer.dropout(layer.activation(layer.linear1(x)))))


def _clones(layer, n):
    """`n` independent deep copies of `layer` (`layers.0`, `layers.1`, ...)."""
    return ModuleList([copy.deepcopy(layer) for _ in range(n)])


class TransformerEncoderLayer(Module):
    """Self-attention then a feed-forward block, each with a residual connection and a
    LayerNorm (after by default, before with norm_first=True), as torch's layer.
    `activation` is "relu", "gelu" or a callable."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation=relu,
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True,
                 device=None, dtype=None):
        super().__init__()
        _build_layer(self, ("self_attn",), 2, d_model, nhead, dim_feedforward, dropout,
                     activation, layer_norm_eps, batch_first, norm_first, bias,
                     {"device": device, "dtype": dtype})

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + _feed_forward(self, self.norm2(x), self.dropout2)
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + _feed_forward(self, x, self.dropout2))

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False, is_causal=is_causal)[0]
        return self.dropout1(x)


class TransformerEncoder(Module):
    """`num_layers` independent copies of `encoder_layer` (`layers.0`, `layers.1`, ...),
    then the optional final `norm`. enable_nested_tensor and mask_check are accepted for
    torch's signature; they only steer torch's nested-tensor fast path, absent here."""

    def __init__(self, encoder_layer, num_layers, norm=None, enable_nested_tensor=True,
                 mask_check=True):
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)
        self.num_layers, self.norm = num_layers, norm

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        x = src
        for layer in self.layers:
            x = layer(x, src_mask=mask, src_key_padding_mask=src_key_padding_mask,
                      is_causal=bool(is_causal))
        return x if self.norm is None else self.norm(x)
