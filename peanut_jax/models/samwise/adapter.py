"""SAMWISE's trainable parts: the CMT adapter and the conditional memory encoder (CME), NHWC.

``MultiheadAttention``: torch ``nn.MultiheadAttention`` (packed ``in_proj_weight`` q|k|v, stored
transposed (E, 3E) with ``in_proj_bias``; ``out_proj``; scale ``head_dim ** -0.5``), batch-first.

``CMTAdapter`` (``models/CMT_adapter.py``), on one fusion stage for P prompts x T frames:

* ``proj_vis_down``: 1x1 conv (no bias) -> BatchNorm -> ReLU to ``dim``; ``proj_text_down`` Linear.
* HSA (``hsa=True``): the map is cut into ``patch x patch`` patches; each patch position gets the
  clip's 1-D sine time embedding (positions 1..T / T, x 2 pi, interleaved sin/cos) plus a learned
  ``spatial_pos_embed``; ``norm_pre_HSA`` LayerNorm; self-attention over the T*patch^2 tokens of
  one patch across the clip, then ``hsa/linear``; ``x_atten = x + hsa``.
* ``ca_V2T``: ``x_atten *= MHA(q=x_atten, k=v=text)``; padded text keys are masked unless
  ``attend_text_padding`` (the official code has no key mask, so pads count when captions of a
  batch differ in length).  ``ca_T2V``: ``t *= MHA(q=t, k=v=mean_T(x))`` (x before HSA).
* ``proj_vis_up``: 1x1 transposed conv (no bias) -> BatchNorm -> ReLU; ``proj_text_up`` Linear.

BatchNorm runs on its running statistics (``batch_stats``) unless ``use_running_average=False``
(training, as official ``model.train()``: batch statistics over every axis but the channels, i.e. the
whole batch of clips x frames x pixels; ``bn_axis_name`` also averages them over a ``pmap`` axis, as
SyncBatchNorm; under ``jit`` with a sharded batch the mean is already global).  ``deterministic=False``
turns on the official training dropout: 0.1 on the HSA attention weights (``ca_V2T``/``ca_T2V`` have
none) and, in the CME block, on the attention weights, after the attention, in the FFN and after it.

``ConditionalMemoryEncoder``: ``[decision_token, obj_ptr (with memory), early token (no memory)]``
-> post-norm self-attention block (SA, add, ``norm1``, ReLU FFN, add, ``norm3``; ``norm2`` exists
but is unused, as official) -> ``decision_class_head`` on token 0 -> 2 logits ("switch" = 1).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from peanut_jax.layers.linear import layer_norm, linear
from peanut_jax.ops.attention import attention

Dtype = Any
BN_EPS = 1e-5


def time_embedding(t: int, dim: int, temperature: float = 10000.0) -> np.ndarray:
    """``PositionEmbeddingSine1D(dim, normalize=True)`` over a clip of ``t`` frames: (t, dim)."""
    pos = np.arange(1, t + 1, dtype=np.float32)
    pos = pos / (pos[-1:] + np.float32(1e-6)) * np.float32(2 * math.pi)
    i = np.arange(dim, dtype=np.float32)
    dim_t = np.float32(temperature) ** (2 * (i // 2) / np.float32(dim))
    x = pos[:, None] / dim_t
    return np.stack([np.sin(x[:, 0::2]), np.cos(x[:, 1::2])], axis=2).reshape(t, dim).astype(np.float32)


class MultiheadAttention(nn.Module):
    """torch ``nn.MultiheadAttention``, batch-first: ``(q (B,Nq,E), k (B,Nk,E), v (B,Nk,E),
    key_valid (B,Nk) bool | None, deterministic) -> (B,Nq,E)``; ``dropout`` on the attention weights
    when ``deterministic=False`` (rng stream ``'dropout'``)."""

    dim: int
    heads: int
    query_chunk: int | None = None
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, q, k, v, key_valid=None, deterministic: bool = True):
        e, h = self.dim, self.heads
        w = self.param("in_proj_weight", nn.initializers.xavier_uniform(), (e, 3 * e), self.param_dtype)
        b = self.param("in_proj_bias", nn.initializers.zeros, (3 * e,), self.param_dtype)
        w, b = w.astype(self.dtype), b.astype(self.dtype)

        def proj(x, j):
            y = jnp.einsum("bnc,cd->bnd", x.astype(self.dtype), w[:, j * e : (j + 1) * e]) + b[j * e : (j + 1) * e]
            return y.reshape(*y.shape[:2], h, e // h)

        rate = 0.0 if deterministic else self.dropout
        rng = self.make_rng("dropout") if rate > 0.0 else None
        out = attention(
            proj(q, 0), proj(k, 1), proj(v, 2), key_valid, dropout_rate=rate, rng=rng, query_chunk=self.query_chunk
        )
        out = out.reshape(*out.shape[:2], e)
        return linear(e, e, name="out_proj", dtype=self.dtype, param_dtype=self.param_dtype)(out)


def _bn(name, use_running_average, dtype, param_dtype, axis_name=None):
    return nn.BatchNorm(
        use_running_average=use_running_average,
        momentum=0.9,
        epsilon=BN_EPS,
        axis_name=axis_name,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )


class CMTAdapter(nn.Module):
    """``(vis (P, T, H, W, C), txt (P, L, D), padding_mask (P, L) True at pads) -> (v_out (P, T, H, W, C),
    t_out (P, L, D))``; see the module docstring."""

    vis_dim: int
    txt_dim: int
    dim: int = 256
    heads: int = 8
    patch: int = 8
    hsa: bool = True
    attend_text_padding: bool = False
    use_running_average: bool = True
    hsa_query_chunk: int | None = 128
    deterministic: bool = True
    hsa_dropout: float = 0.1
    bn_axis_name: str | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, vis, txt, padding_mask=None):
        p_, t_, hh, ww, c = vis.shape
        d, dt, pdt = self.dim, self.dtype, self.param_dtype
        bn = lambda name: _bn(name, self.use_running_average, dt, pdt, self.bn_axis_name)
        x = nn.Dense(d, use_bias=False, dtype=dt, param_dtype=pdt, name="proj_vis_down_0")(vis)
        x = jax.nn.relu(bn("proj_vis_down_1")(x))  # (P, T, H, W, d)
        t = nn.Dense(d, use_bias=False, dtype=dt, param_dtype=pdt, name="proj_text_down_0")(txt)
        x_att = x
        if self.hsa:
            p = self.patch
            if hh % p or ww % p:
                raise ValueError(f"CMT adapter: a {hh}x{ww} map is not a multiple of the HSA patch {p}")
            n = (hh // p) * (ww // p)
            pos = self.param("spatial_pos_embed", nn.initializers.truncated_normal(0.02), (p * p, d), pdt)
            xh = x.reshape(p_, t_, hh // p, p, ww // p, p, d).transpose(0, 1, 2, 4, 3, 5, 6)
            xh = xh.reshape(p_, t_, n, p * p, d)
            xh = xh + jnp.asarray(time_embedding(t_, d), dt)[None, :, None, None, :] + pos.astype(dt)
            xh = xh.transpose(0, 2, 1, 3, 4).reshape(p_ * n, t_ * p * p, d)  # (b N), (t p)
            xh = layer_norm(1e-5, name="norm_pre_HSA", dtype=dt, param_dtype=pdt)(xh)
            xh = MultiheadAttention(
                d, self.heads, self.hsa_query_chunk, self.hsa_dropout, dt, pdt, name="hsa_self_attn"
            )(xh, xh, xh, deterministic=self.deterministic)
            xh = linear(d, d, name="hsa_linear", dtype=dt, param_dtype=pdt)(xh)
            xh = xh.reshape(p_, n, t_, p * p, d).transpose(0, 2, 1, 3, 4)
            xh = xh.reshape(p_, t_, hh // p, ww // p, p, p, d).transpose(0, 1, 2, 4, 3, 5, 6)
            x_att = x + xh.reshape(p_, t_, hh, ww, d)
        key_valid = None
        if padding_mask is not None and not self.attend_text_padding:
            key_valid = ~jnp.asarray(padding_mask, bool)
        q = x_att.reshape(p_, t_ * hh * ww, d)  # every frame of prompt b sees text b
        q = q * MultiheadAttention(d, self.heads, None, 0.0, dt, pdt, name="ca_V2T")(q, t, t, key_valid)
        x_mean = x.mean(axis=1).reshape(p_, hh * ww, d)
        t_att = t * MultiheadAttention(d, self.heads, None, 0.0, dt, pdt, name="ca_T2V")(t, x_mean, x_mean)
        v = nn.Dense(c, use_bias=False, dtype=dt, param_dtype=pdt, name="proj_vis_up_0")(q.reshape(p_, t_, hh, ww, d))
        v = jax.nn.relu(bn("proj_vis_up_1")(v))
        t_out = nn.Dense(self.txt_dim, use_bias=False, dtype=dt, param_dtype=pdt, name="proj_text_up_0")(t_att)
        return v, t_out


class SelfAttentionBlock(nn.Module):
    """SAMWISE ``SelfAttentionBlock`` (post-norm, ReLU FFN), batch-first; ``dropout`` (official 0.1)
    only when ``deterministic=False``."""

    dim: int
    heads: int
    ffn: int = 128
    dropout: float = 0.1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        drop = lambda y: nn.Dropout(self.dropout)(y, deterministic=deterministic)  # noqa: E731
        sa = MultiheadAttention(self.dim, self.heads, dropout=self.dropout, name="self_attn", **kw)
        x = layer_norm(1e-5, name="norm1", **kw)(x + drop(sa(x, x, x, deterministic=deterministic)))
        if self.is_initializing():  # unused in the forward pass, but part of the checkpoint
            layer_norm(1e-5, name="norm2", **kw)(x)
        y = linear(self.dim, self.ffn, name="linear2", **kw)(
            drop(jax.nn.relu(linear(self.ffn, self.dim, name="linear1", **kw)(x)))
        )
        return layer_norm(1e-5, name="norm3", **kw)(x + drop(y))


class ConditionalMemoryEncoder(nn.Module):
    """``(obj_ptr_with_memory (B, d), early_token_no_memory (B, d), deterministic) -> logits (B, 2)``."""

    dim: int = 256
    heads: int = 8
    ffn: int = 128
    dropout: float = 0.1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, obj_ptr, early_token, deterministic: bool = True):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        tok = self.param("decision_token", nn.initializers.normal(1.0), (1, self.dim), self.param_dtype)
        b = obj_ptr.shape[0]
        seq = jnp.concatenate(
            [
                jnp.broadcast_to(tok.astype(self.dtype)[None], (b, 1, self.dim)),
                obj_ptr[:, None].astype(self.dtype),
                early_token[:, None].astype(self.dtype),
            ],
            1,
        )
        block = SelfAttentionBlock(self.dim, self.heads, self.ffn, self.dropout, name="transformerBlock", **kw)
        out = block(seq, deterministic=deterministic)
        return linear(2, self.dim, name="decision_class_head", **kw)(out[:, 0])
