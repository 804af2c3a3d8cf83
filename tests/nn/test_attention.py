"""Attention against NumPy references: scaled_dot_product_attention (bool/float/causal
masks), MultiheadAttention (torch's mask conventions, batch_first, weights), the transformer
encoder layer (post- and pre-norm), and a tiny transformer that overfits one batch."""
import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.nn.attention import scaled_dot_product_attention

RNG = np.random.default_rng(0)


def softmax(v):
    e = np.exp(v - v.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def ref_sdpa(q, k, v, add_mask=None, scale=None):
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    w = softmax(s if add_mask is None else s + add_mask)
    return w @ v, w


@pytest.mark.parametrize("kind", ["none", "bool", "float", "causal", "scale"])
def test_sdpa_matches_reference(kind):
    q, k, v = (RNG.standard_normal((2, 3, 4, 5)), RNG.standard_normal((2, 3, 6, 5)),
               RNG.standard_normal((2, 3, 6, 2)))
    allowed = RNG.random((4, 6)) > 0.4
    allowed[:, 0] = True
    kwargs, add = {}, None
    if kind == "bool":
        kwargs, add = {"attn_mask": dt.tensor(allowed)}, np.where(allowed, 0, -np.inf)
    elif kind == "float":
        m = RNG.standard_normal((4, 6))
        kwargs, add = {"attn_mask": dt.tensor(m)}, m
    elif kind == "causal":
        kwargs, add = {"is_causal": True}, np.where(np.tril(np.ones((4, 6))) > 0, 0, -np.inf)
    elif kind == "scale":
        kwargs = {"scale": 0.7}
    y = scaled_dot_product_attention(dt.tensor(q), dt.tensor(k), dt.tensor(v), **kwargs)
    ref, _ = ref_sdpa(q, k, v, add, kwargs.get("scale"))
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_sdpa_dropout_and_errors():
    q = dt.randn(2, 4, 8)
    with pytest.raises(RuntimeError, match="attn_mask should not be set"):
        scaled_dot_product_attention(q, q, q, attn_mask=dt.ones(4, 4, dtype=dt.bool),
                                     is_causal=True)
    a = scaled_dot_product_attention(q, q, q, dropout_p=0.5).numpy()
    b = scaled_dot_product_attention(q, q, q).numpy()
    assert not np.allclose(a, b)


def ref_mha(mha, q, k, v, add_mask=None):
    """q (N, L, E), k/v (N, S, E); add_mask broadcast to (N, H, L, S). Returns (out, w)."""
    sd = {name: t.numpy() for name, t in mha.state_dict().items()}
    e, h = mha.embed_dim, mha.num_heads
    w, b = sd["in_proj_weight"], sd["in_proj_bias"]
    proj = [x @ w[i * e:(i + 1) * e].T + b[i * e:(i + 1) * e] for i, x in enumerate((q, k, v))]
    heads = [p.reshape(p.shape[0], p.shape[1], h, e // h).transpose(0, 2, 1, 3) for p in proj]
    out, weights = ref_sdpa(*heads, add_mask)
    out = out.transpose(0, 2, 1, 3).reshape(q.shape[0], q.shape[1], e)
    return out @ sd["out_proj.weight"].T + sd["out_proj.bias"], weights


def test_mha_parameters_follow_torch():
    mha = nn.MultiheadAttention(8, 2)
    assert [(n, tuple(p.shape)) for n, p in mha.named_parameters()] == [
        ("in_proj_weight", (24, 8)), ("in_proj_bias", (24,)), ("out_proj.weight", (8, 8)),
        ("out_proj.bias", (8,))]
    assert np.all(mha.in_proj_bias.detach().numpy() == 0)
    assert np.all(mha.out_proj.bias.detach().numpy() == 0)
    bound = np.sqrt(6 / (24 + 8))  # xavier_uniform_ on (3E, E)
    assert np.abs(mha.in_proj_weight.detach().numpy()).max() <= bound
    cross = nn.MultiheadAttention(8, 2, kdim=3, vdim=5)
    assert [n for n, _ in cross.named_parameters()][:3] == ["q_proj_weight", "k_proj_weight",
                                                           "v_proj_weight"]
    out, w = cross(dt.randn(4, 2, 8), dt.randn(6, 2, 3), dt.randn(6, 2, 5))
    assert out.shape == (4, 2, 8) and w.shape == (2, 4, 6)


@pytest.mark.parametrize("batch_first", [False, True])
def test_mha_self_attention_with_masks_matches_reference(batch_first):
    mha = nn.MultiheadAttention(8, 2, batch_first=batch_first).double()
    x = RNG.standard_normal((3, 5, 8))  # (N, L, E)
    pad = np.zeros((3, 5), dtype=bool)
    pad[1, 3:] = True  # the second sequence has 2 padding positions
    causal = np.triu(np.ones((5, 5), dtype=bool), 1)  # True = masked (MHA convention)
    xin = x if batch_first else x.transpose(1, 0, 2)
    t = dt.tensor(xin)
    out, w = mha(t, t, t, key_padding_mask=dt.tensor(pad), attn_mask=dt.tensor(causal),
                 average_attn_weights=False)
    add = np.where(causal, -np.inf, 0)[None, None] + np.where(pad, -np.inf, 0)[:, None, None]
    ref_out, ref_w = ref_mha(mha, x, x, x, add)
    got = out.detach().numpy() if batch_first else out.detach().numpy().transpose(1, 0, 2)
    np.testing.assert_allclose(got, ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w.detach().numpy(), ref_w, rtol=1e-10, atol=1e-12)
    _, avg = mha(t, t, t, key_padding_mask=dt.tensor(pad))
    np.testing.assert_allclose(avg.detach().numpy(),
                               ref_mha(mha, x, x, x, np.where(pad, -np.inf, 0)[:, None, None])[1]
                               .mean(1), rtol=1e-10, atol=1e-12)


def test_mha_cross_attention_float_mask_per_head_and_unbatched():
    mha = nn.MultiheadAttention(6, 3, batch_first=True).double()
    q, kv = RNG.standard_normal((2, 4, 6)), RNG.standard_normal((2, 5, 6))
    m = RNG.standard_normal((2 * 3, 4, 5))
    out, w = mha(dt.tensor(q), dt.tensor(kv), dt.tensor(kv), attn_mask=dt.tensor(m),
                 need_weights=False)
    assert w is None
    ref_out, _ = ref_mha(mha, q, kv, kv, m.reshape(2, 3, 4, 5))
    np.testing.assert_allclose(out.detach().numpy(), ref_out, rtol=1e-10, atol=1e-12)
    out1, w1 = mha(dt.tensor(q[0]), dt.tensor(kv[0]), dt.tensor(kv[0]))
    np.testing.assert_allclose(out1.detach().numpy(), ref_mha(mha, q, kv, kv)[0][0], rtol=1e-10)
    assert w1.shape == (4, 5)
    with pytest.raises(RuntimeError, match="shape of the attn_mask"):
        mha(dt.tensor(q), dt.tensor(kv), dt.tensor(kv), attn_mask=dt.tensor(m[:1]))


def ref_layer_norm(x, weight, bias, eps=1e-5):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * weight + bias


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_matches_reference(norm_first):
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.1, batch_first=True,
                                       norm_first=norm_first).double().eval()
    sd = {name: t.numpy() for name, t in layer.state_dict().items()}
    x = RNG.standard_normal((2, 5, 8))
    pad = np.zeros((2, 5), dtype=bool)
    pad[0, 4] = True
    add = np.where(pad, -np.inf, 0)[:, None, None]

    def norm(v, i):
        return ref_layer_norm(v, sd[f"norm{i}.weight"], sd[f"norm{i}.bias"])

    def ff(v):
        hid = np.maximum(v @ sd["linear1.weight"].T + sd["linear1.bias"], 0)
        return hid @ sd["linear2.weight"].T + sd["linear2.bias"]

    def sa(v):
        return ref_mha(layer.self_attn, v, v, v, add)[0]
    if norm_first:
        ref = x + sa(norm(x, 1))
        ref = ref + ff(norm(ref, 2))
    else:
        ref = norm(x + sa(x), 1)
        ref = norm(ref + ff(ref), 2)
    got = layer(dt.tensor(x), src_key_padding_mask=dt.tensor(pad))
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-9, atol=1e-10)


def test_encoder_stacks_independent_copies():
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, activation="gelu")
    enc = nn.TransformerEncoder(layer, num_layers=3, norm=nn.LayerNorm(8))
    names = [n for n, _ in enc.named_parameters()]
    assert names[0] == "layers.0.self_attn.in_proj_weight" and names[-1] == "norm.bias"
    assert len(names) == 3 * 12 + 2
    p0, p1 = enc.layers[0].linear1.weight, enc.layers[1].linear1.weight
    assert isinstance(p1, nn.Parameter) and p0 is not p1
    np.testing.assert_array_equal(p0.detach().numpy(), p1.detach().numpy())
    with dt.no_grad():
        p0.add_(1.0)
    assert not np.allclose(p0.detach().numpy(), p1.detach().numpy())
    assert enc(dt.randn(5, 2, 8)).shape == (5, 2, 8)


def test_tiny_transformer_overfits_one_batch():
    dt.manual_seed(0)
    rng = np.random.default_rng(0)
    tokens = dt.tensor(rng.integers(0, 10, (4, 6)))
    targets = dt.tensor(rng.integers(0, 5, (4, 6)))
    emb, pos = nn.Embedding(10, 16), nn.Embedding(6, 16)  # positions tell equal tokens apart
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0,
                                                           batch_first=True), 2)
    head = nn.Linear(16, 5)
    params = [*emb.parameters(), *pos.parameters(), *enc.parameters(), *head.parameters()]
    opt = dt.optim.Adam(params, lr=0.01)
    for _ in range(100):
        opt.zero_grad()
        h = enc(emb(tokens) + pos(dt.arange(6)))
        loss = F.cross_entropy(head(h).reshape(-1, 5), targets.reshape(-1))
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
