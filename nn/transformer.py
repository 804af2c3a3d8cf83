"""The transformer decoder (`TransformerDecoderLayer`, `TransformerDecoder`) and the
encoder-decoder `Transformer`, with torch's arguments, defaults and parameter names. They
build on nn/attention.py's MultiheadAttention and encoder, and compose existing ops."""
from dtrain.core import creation
from dtrain.core.backend import array_module
from dtrain.nn import attention
from dtrain.nn.activation import relu
from dtrain.nn.attention import TransformerEncoder, TransformerEncoderLayer
from dtrain.nn.init import xavier_uniform_
from dtrain.nn.module import Module
from dtrain.nn.normalization import LayerNorm


class TransformerDecoderLayer(Module):
    """Self-attention on the target, attention over the encoder's `memory`, then a
    feed-forward block; each with a residual connection and a LayerNorm (after by default,
    before with norm_first=True), as torch's layer."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation=relu,
                 layer_norm_eps=1e-5, batch_first=False, norm_first=False, bias=True,
                 device=None, dtype=None):
        super().__init__()
        attention._build_layer(self, ("self_attn", "multihead_attn"), 3, d_model, nhead,
                               dim_feedforward, dropout, activation, layer_norm_eps,
                               batch_first, norm_first, bias, {"device": device, "dtype": dtype})

    _sa_block = TransformerEncoderLayer._sa_block

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False):
        x = tgt
        sa = (tgt_mask, tgt_key_padding_mask, bool(tgt_is_causal))
        mha = (memory, memory_mask, memory_key_padding_mask, bool(memory_is_causal))
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), *sa)
            x = x + self._mha_block(self.norm2(x), *mha)
            return x + attention._feed_forward(self, self.norm3(x), self.dropout3)
        x = self.norm1(x + self._sa_block(x, *sa))
        x = self.norm2(x + self._mha_block(x, *mha))
        return self.norm3(x + attention._feed_forward(self, x, self.dropout3))

    def _mha_block(self, x, memory, attn_mask, key_padding_mask, is_causal):
        x = self.multihead_attn(x, memory, memory, attn_mask=attn_mask,
                                key_padding_mask=key_padding_mask, need_weights=False,
                                is_causal=is_causal)[0]
        return self.dropout2(x)


class TransformerDecoder(Module):
    """`num_layers` independent copies of `decoder_layer` (`layers.0`, ...), each attending
    to the same `memory`, then the optional final `norm`."""

    def __init__(self, decoder_layer, num_layers, norm=None):
        super().__init__()
        self.layers = attention._clones(decoder_layer, num_layers)
        self.num_layers, self.norm = num_layers, norm

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False):
        x = tgt
        for layer in self.layers:
            x = layer(x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask,
                      memory_key_padding_mask=memory_key_padding_mask,
                      tgt_is_causal=bool(tgt_is_causal), memory_is_causal=memory_is_causal)
        return x if self.norm is None else self.norm(x)


class Transformer(Module):
    """Encoder-decoder transformer: `encoder` (TransformerEncoder with a final LayerNorm, or
    `custom_encoder`) over src, `decoder` (likewise) over tgt attending to its output.
    forward(src (S, N, E), tgt (T, N, E)) -> (T, N, E); (N, S, E) etc. with batch_first.
    Matrices are initialised xavier_uniform_, as torch."""

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
                 dim_feedforward=2048, dropout=0.1, activation=relu, custom_encoder=None,
                 custom_decoder=None, layer_norm_eps=1e-5, batch_first=False, norm_first=False,
                 bias=True, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        layer_args = (d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                      batch_first, norm_first, bias)

        def default(stack, layer, num_layers):  # layers plus a final LayerNorm, as torch
            return stack(layer(*layer_args, **kw), num_layers,
                         LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw))
        self.encoder = custom_encoder if custom_encoder is not None else \
            default(TransformerEncoder, TransformerEncoderLayer, num_encoder_layers)
        self.decoder = custom_decoder if custom_decoder is not None else \
            default(TransformerDecoder, TransformerDecoderLayer, num_decoder_layers)
        for p in self.parameters():
            if p.dim() > 1:
                xavier_uniform_(p)
        self.d_model, self.nhead, self.batch_first = d_model, nhead, batch_first

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None,
                src_key_padding_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
                memory_is_causal=False):
        if src.dim() == 3 and src.shape[0 if self.batch_first else 1] != \
                tgt.shape[0 if self.batch_first else 1]:
            raise RuntimeError(f"the batch number of src and tgt must be equal, got src "
                               f"{list(src.shape)} and tgt {list(tgt.shape)} (batch_first="
                               f"{self.batch_first})")
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise RuntimeError(f"the feature number of src and tgt must be equal to d_model="
                               f"{self.d_model}, got {src.shape[-1]} and {tgt.shape[-1]}")
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask,
                              is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask,
                            tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)

    @staticmethod
    def generate_square_subsequent_mask(sz, device=None, dtype=None):
        """(sz, sz) float mask for causal attention: 0 on and below the diagonal, -inf
        above (position i attends to positions 0..i)."""
        zeros = creation.zeros(sz, sz, device=device, dtype=dtype)
        return zeros + attention._causal(array_module(zeros._data), sz, sz, zeros._data.dtype)
