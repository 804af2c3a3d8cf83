"""nn.Transformer, TransformerDecoderLayer and TransformerDecoder: torch's defaults and
state_dict keys, shapes, the layer equations, causal masks (equal to decoding prefixes step
by step), padding masks, generate_square_subsequent_mask; torch.nn.modules' import paths."""
import inspect
import math

import numpy as np
import pytest

import dtrain as dt
import dtrain.nn as nn
import dtrain.nn.functional as F
from dtrain.nn.modules.linear import NonDynamicallyQuantizableLinear

RNG = np.random.default_rng(0)


def rand(*shape):
    return dt.tensor(RNG.standard_normal(shape))


def arr(t):
    return t.detach().numpy()


def model(**kw):
    dt.manual_seed(0)
    args = dict(d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=2,
                dim_feedforward=16)
    args.update(kw)
    return nn.Transformer(**args).double().eval()


def test_defaults_are_torchs():
    defaults = {k: p.default for k, p in inspect.signature(nn.Transformer).parameters.items()}
    assert defaults == dict(d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
                            dim_feedforward=2048, dropout=0.1, activation=F.relu,
                            custom_encoder=None, custom_decoder=None, layer_norm_eps=1e-5,
                            batch_first=False, norm_first=False, bias=True, device=None,
                            dtype=None)
    forward = list(inspect.signature(nn.Transformer.forward).parameters)
    assert forward == ["self", "src", "tgt", "src_mask", "tgt_mask", "memory_mask",
                       "src_key_padding_mask", "tgt_key_padding_mask",
                       "memory_key_padding_mask", "src_is_causal", "tgt_is_causal",
                       "memory_is_causal"]
    m = nn.Transformer(d_model=16, nhead=4, num_encoder_layers=1, num_decoder_layers=3,
                       dim_feedforward=8)
    assert len(m.encoder.layers) == 1 and len(m.decoder.layers) == 3
    assert m.decoder.layers[0].dropout.p == 0.1 and m.decoder.layers[0].norm1.eps == 1e-5


def test_state_dict_keys_equal_torchs():
    attn = ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    ff = ["linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"]
    norms = [f"norm{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")]
    expected = ([f"encoder.layers.0.self_attn.{k}" for k in attn]
                + [f"encoder.layers.0.{k}" for k in ff + norms[:4]]
                + ["encoder.norm.weight", "encoder.norm.bias"]
                + [f"decoder.layers.0.self_attn.{k}" for k in attn]
                + [f"decoder.layers.0.multihead_attn.{k}" for k in attn]
                + [f"decoder.layers.0.{k}" for k in ff + norms]
                + ["decoder.norm.weight", "decoder.norm.bias"])
    m = nn.Transformer(8, 2, 1, 1, 16)
    assert list(m.state_dict()) == expected
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes["decoder.layers.0.multihead_attn.in_proj_weight"] == (24, 8)
    assert shapes["encoder.layers.0.linear1.weight"] == (16, 8)
    assert "bias" not in " ".join(nn.Transformer(8, 2, 1, 1, 16, bias=False).state_dict())


def test_shapes_and_layouts():
    m = model()
    src, tgt = rand(5, 3, 8), rand(4, 3, 8)
    out = m(src, tgt)
    assert out.shape == (4, 3, 8)
    mb = model(batch_first=True)
    np.testing.assert_allclose(arr(mb(src.transpose(0, 1), tgt.transpose(0, 1))),
                               arr(out.transpose(0, 1)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(arr(m(src[:, 1], tgt[:, 1])), arr(out[:, 1]), rtol=0,
                               atol=1e-12)  # unbatched
    with pytest.raises(RuntimeError, match="batch number of src and tgt"):
        m(src, rand(4, 2, 8))
    with pytest.raises(RuntimeError, match="d_model=8"):
        m(rand(5, 3, 6), rand(4, 3, 6))


def test_forward_is_encoder_then_decoder():
    m = model()
    src, tgt = rand(5, 2, 8), rand(3, 2, 8)
    memory = m.encoder(src)
    np.testing.assert_array_equal(arr(m(src, tgt)), arr(m.decoder(tgt, memory)))
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 1)
    decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(8, 2, 16), 1)
    custom = nn.Transformer(8, 2, custom_encoder=encoder, custom_decoder=decoder)
    assert custom.encoder is encoder and custom.decoder is decoder
    assert encoder.norm is None and len(list(custom.parameters())) == 12 + 18
    custom.double().eval()
    np.testing.assert_array_equal(arr(custom(src, tgt)),
                                  arr(decoder(tgt, encoder(src))))


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_equations(norm_first):
    dt.manual_seed(1)
    layer = nn.TransformerDecoderLayer(8, 2, 16, activation="gelu", norm_first=norm_first,
                                       batch_first=True).double().eval()
    tgt, memory = rand(2, 4, 8), rand(2, 5, 8)
    mask = nn.Transformer.generate_square_subsequent_mask(4, dtype=dt.float64)

    def sa(x):
        return layer.self_attn(x, x, x, attn_mask=mask)[0]

    def ca(x):
        return layer.multihead_attn(x, memory, memory)[0]

    def ff(x):
        return layer.linear2(F.gelu(layer.linear1(x)))
    x = tgt
    if norm_first:
        x = x + sa(layer.norm1(x))
        x = x + ca(layer.norm2(x))
        x = x + ff(layer.norm3(x))
    else:
        x = layer.norm1(x + sa(x))
        x = layer.norm2(x + ca(x))
        x = layer.norm3(x + ff(x))
    np.testing.assert_allclose(arr(layer(tgt, memory, tgt_mask=mask, tgt_is_causal=True)),
                               arr(x), rtol=0, atol=1e-12)


def test_decoder_norm_and_layers_are_independent_copies():
    layer = nn.TransformerDecoderLayer(8, 2, 16)
    dec = nn.TransformerDecoder(layer, 2, norm=nn.LayerNorm(8))
    assert dec.layers[0].linear1.weight is not dec.layers[1].linear1.weight
    assert np.array_equal(arr(dec.layers[0].linear1.weight), arr(layer.linear1.weight))
    x, memory = rand(3, 1, 8).float(), rand(2, 1, 8).float()
    dec.eval()
    y = dec.layers[1](dec.layers[0](x, memory), memory)
    np.testing.assert_allclose(arr(dec(x, memory)), arr(dec.norm(y)), rtol=0, atol=1e-6)


def test_causal_decoding_equals_step_by_step_prefixes():
    m = model()
    src, tgt = rand(5, 2, 8), rand(6, 2, 8)
    mask = m.generate_square_subsequent_mask(6, dtype=dt.float64)
    memory = m.encoder(src)
    full = m.decoder(tgt, memory, tgt_mask=mask, tgt_is_causal=True)
    np.testing.assert_allclose(arr(m(src, tgt, tgt_mask=mask)), arr(full), rtol=0, atol=1e-12)
    for t in range(1, 7):  # greedy decoding re-runs the decoder on the prefix so far
        prefix = m.decoder(tgt[:t], memory, tgt_mask=m.generate_square_subsequent_mask(
            t, dtype=dt.float64))
        np.testing.assert_allclose(arr(prefix), arr(full[:t]), rtol=0, atol=1e-12)
    one = nn.TransformerDecoderLayer(8, 2, 16).double().eval()
    full = one(tgt, memory, tgt_mask=mask)
    for t in range(1, 7):  # one layer: the last position of the bare prefix sees all of it
        np.testing.assert_allclose(arr(one(tgt[:t], memory)[-1]), arr(full[t - 1]), rtol=0,
                                   atol=1e-12)
    unmasked = m.decoder(tgt, memory)
    assert np.abs(arr(unmasked[0]) - arr(full[0])).max() > 1e-3


def test_padding_masks_leave_unpadded_outputs_unchanged():
    m = model(batch_first=True)
    src, tgt = rand(2, 5, 8), rand(2, 4, 8)
    src_pad = dt.tensor([[False] * 5, [False, False, False, True, True]])
    tgt_pad = dt.tensor([[False] * 4, [False, False, True, True]])
    kw = dict(src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad,
              memory_key_padding_mask=src_pad,
              tgt_mask=m.generate_square_subsequent_mask(4, dtype=dt.float64))
    out = m(src, tgt, **kw)
    src2, tgt2 = src.clone(), tgt.clone()
    src2[1, 3:] = 100.0
    tgt2[1, 2:] = -50.0
    out2 = m(src2, tgt2, **kw)
    np.testing.assert_allclose(arr(out2[0]), arr(out[0]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(arr(out2[1, :2]), arr(out[1, :2]), rtol=0, atol=1e-12)
    # the sequence alone, unpadded, gives the same outputs
    alone = m(src[1:, :3], tgt[1:, :2], tgt_mask=m.generate_square_subsequent_mask(
        2, dtype=dt.float64))
    np.testing.assert_allclose(arr(alone[0]), arr(out[1, :2]), rtol=0, atol=1e-12)
    # without the masks the padded values leak in
    assert np.abs(arr(m(src2, tgt2)[1, :2]) - arr(m(src, tgt)[1, :2])).max() > 1e-3


def test_generate_square_subsequent_mask():
    mask = nn.Transformer.generate_square_subsequent_mask(4)
    assert mask.dtype == dt.float32 and mask.shape == (4, 4)
    expect = np.where(np.arange(4)[None, :] > np.arange(4)[:, None], -np.inf, 0.0)
    np.testing.assert_array_equal(mask.numpy(), expect)
    assert nn.Transformer.generate_square_subsequent_mask(2, dtype=dt.float64).dtype == \
        dt.float64


def test_gradients_reach_every_parameter():
    m = model(dropout=0.0).train()
    out = m(rand(3, 2, 8), rand(4, 2, 8), tgt_mask=m.generate_square_subsequent_mask(
        4, dtype=dt.float64))
    out.pow(2).sum().backward()
    missing = [k for k, p in m.named_parameters() if p.grad is None or
               not np.abs(arr(p.grad)).max() > 0]
    assert missing == []


def test_activation_choices_and_encoder_options():
    assert nn.TransformerDecoderLayer(8, 2, 16, activation="gelu").activation is F.gelu
    layer = nn.TransformerDecoderLayer(8, 2, 16, activation=nn.GELU())
    assert "activation" in dict(layer.named_children())  # a Module is registered, as torch
    with pytest.raises(RuntimeError, match="activation should be relu/gelu, not tanh"):
        nn.TransformerDecoderLayer(8, 2, 16, activation="tanh")
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, norm_first=True,
                                                           activation="gelu"), 2,
                                enable_nested_tensor=False, mask_check=False)
    assert enc.layers[1].norm_first and enc.layers[1].activation is F.gelu


def test_multihead_attention_out_proj_class_and_module_paths():
    mha = nn.MultiheadAttention(4, 2)
    assert type(mha.out_proj) is NonDynamicallyQuantizableLinear
    assert isinstance(mha.out_proj, nn.Linear)
    assert "(out_proj): NonDynamicallyQuantizableLinear(in_features=4, out_features=4, " \
           "bias=True)" in repr(mha)
    from dtrain.nn.modules import activation, linear, module, rnn, transformer
    assert activation.MultiheadAttention is nn.MultiheadAttention
    assert linear.Linear is nn.Linear and module.Module is nn.Module
    assert rnn.LSTM is nn.LSTM and transformer.Transformer is nn.Transformer
    assert transformer.TransformerEncoderLayer is nn.TransformerEncoderLayer
    assert math.isclose(nn.modules.sparse.Embedding(3, 2).weight.shape[0], 3)
