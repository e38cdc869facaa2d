"""fairseq RoBERTa encoder (the text encoder of SAMWISE), batch-first ``(B, L, D)``.

Architecture (fairseq ``RobertaEncoder.sentence_encoder``, a ``TransformerEncoder`` with the
``roberta`` defaults):

* ``embed``: ``embed_tokens(ids)`` (no ``sqrt(d)`` scale) + learned ``embed_positions`` with
  fairseq's padding offset: a token that is not ``padding_idx`` gets position
  ``padding_idx + (number of non-pad tokens up to and including it)``, so real positions start at
  ``padding_idx + 1 = 2``; pad tokens get position ``padding_idx`` (whose row is not special at
  run time, it is just a row of the table).  Positions depend on the token ids, as in fairseq.
  Then ``layernorm_embedding`` (eps 1e-5) and dropout.  Finally the embeddings of padded tokens
  are set to zero, as SAMWISE's ``preprocess_text_features`` does after ``forward_embedding``.
* ``num_layers`` post-LN layers: ``x = LN(x + Drop(MHA(x, key_padding_mask)))``,
  ``x = LN(x + Drop(fc2(GELU(fc1(x)))))`` with the exact (erf) GELU; attention dropout on the
  attention weights.  Pad keys get zero attention weight; pad queries are still computed (their
  values are whatever the layers give them, as in fairseq).

``padding_mask`` is bool ``(B, L)``, **True at padding** (fairseq's ``encoder_padding_mask``);
``None`` means ``input_ids == padding_idx``.  Dropout (0.1 everywhere, as RoBERTa-base) only runs
with ``deterministic=False`` and a ``'dropout'`` rng.

Piecewise use (SAMWISE interleaves layer groups with the vision trunk)::

    x, pm = module.apply(v, ids, pm, method=RobertaEncoder.embed)
    x = module.apply(v, x, pm, 0, 1, method=RobertaEncoder.run_layers)
    x = module.apply(v, x, pm, 1, 4, method=RobertaEncoder.run_layers)

Parameter names follow fairseq: ``embed_tokens``, ``embed_positions``, ``layernorm_embedding``,
``layers_{i}/{self_attn/{q,k,v,out}_proj, self_attn_layer_norm, fc1, fc2, final_layer_norm}``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from peanut_jax.layers.linear import layer_norm
from peanut_jax.ops.attention import attention

Dtype = Any

# fairseq init_bert_params: Linear / Embedding weights N(0, 0.02), biases zero, padding row zero.
_W_INIT = nn.initializers.normal(0.02)


def _embed_init(padding_idx: int):
    def init(key, shape, dtype=jnp.float32):
        w = _W_INIT(key, shape, dtype)
        return w.at[padding_idx].set(0) if padding_idx is not None else w

    return init


def _dense(features: int, name: str, dtype: Dtype, param_dtype: Dtype) -> nn.Dense:
    return nn.Dense(
        features, dtype=dtype, param_dtype=param_dtype, kernel_init=_W_INIT, bias_init=nn.initializers.zeros, name=name
    )


def _layer_norm(name: str, dtype: Dtype, param_dtype: Dtype) -> nn.LayerNorm:
    return layer_norm(1e-5, name=name, dtype=dtype, param_dtype=param_dtype)


def make_positions(input_ids, padding_idx: int = 1):
    """fairseq ``utils.make_positions``: non-pad tokens numbered ``padding_idx + 1, ...``; pads get
    ``padding_idx``."""
    keep = (input_ids != padding_idx).astype(jnp.int32)
    return jnp.cumsum(keep, axis=1) * keep + padding_idx


class SelfAttention(nn.Module):
    """fairseq ``MultiheadAttention`` used as self-attention (separate q/k/v projections, softmax
    scale ``head_dim ** -0.5``, key padding mask, dropout on the attention weights)."""

    dim: int
    heads: int
    attention_dropout: float = 0.1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, padding_mask=None, deterministic: bool = True):
        b, n, _ = x.shape
        if self.dim % self.heads:
            raise ValueError(f"{self.heads} heads do not divide dim {self.dim}")
        hd = self.dim // self.heads
        dt, pdt = self.dtype, self.param_dtype

        def proj(name):
            return _dense(self.dim, name, dt, pdt)(x).reshape(b, n, self.heads, hd)

        q, k, v = proj("q_proj"), proj("k_proj"), proj("v_proj")
        rate = 0.0 if deterministic else self.attention_dropout
        rng = self.make_rng("dropout") if rate > 0.0 else None
        out = attention(q, k, v, None if padding_mask is None else ~padding_mask, dropout_rate=rate, rng=rng).reshape(
            b, n, self.dim
        )
        return _dense(self.dim, "out_proj", dt, pdt)(out)


class EncoderLayer(nn.Module):
    """fairseq ``TransformerEncoderLayer`` with ``normalize_before=False`` (post-LN)."""

    dim: int = 768
    heads: int = 12
    ffn: int = 3072
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, padding_mask=None, deterministic: bool = True):
        dt, pdt = self.dtype, self.param_dtype
        y = SelfAttention(self.dim, self.heads, self.attention_dropout, dt, pdt, name="self_attn")(
            x, padding_mask, deterministic
        )
        y = nn.Dropout(self.dropout)(y, deterministic=deterministic)
        x = _layer_norm("self_attn_layer_norm", dt, pdt)(x + y)
        y = jax.nn.gelu(_dense(self.ffn, "fc1", dt, pdt)(x), approximate=False)
        y = nn.Dropout(self.activation_dropout)(y, deterministic=deterministic)
        y = _dense(self.dim, "fc2", dt, pdt)(y)
        y = nn.Dropout(self.dropout)(y, deterministic=deterministic)
        return _layer_norm("final_layer_norm", dt, pdt)(x + y)


class RobertaEncoder(nn.Module):
    """fairseq RoBERTa(-base) sentence encoder; ``__call__(input_ids (B, L) int, padding_mask (B, L)
    bool True at pads | None, deterministic=True) -> (B, L, dim)``.  See the module docstring."""

    num_layers: int = 12
    dim: int = 768
    heads: int = 12
    ffn: int = 3072
    vocab_size: int = 50265
    max_positions: int = 514  # rows of embed_positions (512 tokens + padding_idx + 1)
    padding_idx: int = 1
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    zero_padded_embeddings: bool = True  # SAMWISE zeroes pad embeddings after forward_embedding
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        dt, pdt = self.dtype, self.param_dtype
        self.embed_tokens = nn.Embed(
            self.vocab_size, self.dim, dtype=dt, param_dtype=pdt, embedding_init=_embed_init(self.padding_idx)
        )
        self.embed_positions = nn.Embed(
            self.max_positions, self.dim, dtype=dt, param_dtype=pdt, embedding_init=_embed_init(self.padding_idx)
        )
        self.layernorm_embedding = _layer_norm("layernorm_embedding", dt, pdt)
        self.embed_dropout = nn.Dropout(self.dropout)
        self.layers = [
            EncoderLayer(
                self.dim,
                self.heads,
                self.ffn,
                self.dropout,
                self.attention_dropout,
                self.activation_dropout,
                dt,
                pdt,
                name=f"layers_{i}",
            )
            for i in range(self.num_layers)
        ]

    def embed(self, input_ids, padding_mask=None, deterministic: bool = True):
        """``forward_embedding`` + SAMWISE's zeroing of pads -> ``(x (B, L, dim), padding_mask)``."""
        input_ids = jnp.asarray(input_ids)
        if padding_mask is None:
            padding_mask = input_ids == self.padding_idx
        padding_mask = jnp.asarray(padding_mask, bool)
        if input_ids.shape[1] > self.max_positions - self.padding_idx - 1:
            raise ValueError(
                f"RobertaEncoder: {input_ids.shape[1]} tokens, at most "
                f"{self.max_positions - self.padding_idx - 1} fit the position table"
            )
        x = self.embed_tokens(input_ids) + self.embed_positions(make_positions(input_ids, self.padding_idx))
        x = self.layernorm_embedding(x)
        x = self.embed_dropout(x, deterministic=deterministic)
        if self.zero_padded_embeddings:
            x = jnp.where(padding_mask[..., None], jnp.zeros((), x.dtype), x)
        return x, padding_mask

    def run_layers(self, x, padding_mask, start: int = 0, end: int | None = None, deterministic: bool = True):
        """Layers ``start .. end-1`` on ``x`` (B, L, dim); ``padding_mask`` True at pads (or None)."""
        end = self.num_layers if end is None else end
        if not 0 <= start <= end <= self.num_layers:
            raise ValueError(f"RobertaEncoder.run_layers: bad range [{start}, {end}) for {self.num_layers} layers")
        for i in range(start, end):
            x = self.layers[i](x, padding_mask, deterministic)
        return x

    def __call__(self, input_ids, padding_mask=None, deterministic: bool = True):
        x, padding_mask = self.embed(input_ids, padding_mask, deterministic)
        return self.run_layers(x, padding_mask, 0, self.num_layers, deterministic)
