"""SAM 2's two-way transformer (mask decoder trunk), NHWC / (B, N, C) tokens.

``TwoWayTransformer(depth, heads, mlp_dim, downsample)``: ``depth`` ``TwoWayAttentionBlock``s then a
final token->image attention and LayerNorm.  Each block (tokens = queries, image = keys):

1. token self-attention: block 0 (``skip_first_layer_pe``) replaces the tokens by
   ``self_attn(t, t, t)`` (no PE, no residual); later blocks add ``self_attn(t+pe, t+pe, t)``;
   then ``norm1``;
2. tokens -> image cross-attention ``(t+pe, img+img_pe, img)``, residual, ``norm2``;
3. ReLU MLP, residual, ``norm3``;
4. image -> tokens cross-attention ``(img+img_pe, t+pe, t)``, residual on the image, ``norm4``.

Cross-attentions project to ``dim // downsample_rate`` channels; every LayerNorm has eps 1e-5.

``token_mask`` (B, N) bool, optional, True = real token: masked tokens are removed as **keys**
(token self-attention and image->token attention), so the other tokens and the image see exactly
what they would see without them.  This is an addition for static-shape padding; the official
code has no mask (``None`` reproduces it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from peanut_jax.layers.linear import layer_norm, linear
from peanut_jax.ops.attention import attention

Dtype = Any


def dense(features: int, name: str, dtype: Dtype, param_dtype: Dtype):
    """torch-initialised Linear whose fan-in is the input's last axis (``layers.linear``)."""
    return lambda x: linear(features, x.shape[-1], name=name, dtype=dtype, param_dtype=param_dtype)(x)


class MLP(nn.Module):
    """SAM 2's ``MLP``: ``num_layers`` Linear layers ``layers_{i}``, activation between them
    (ReLU by default), optional sigmoid on the output."""

    hidden_dim: int
    output_dim: int
    num_layers: int
    activation: Callable = jax.nn.relu
    sigmoid_output: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            x = dense(self.output_dim if last else self.hidden_dim, f"layers_{i}", self.dtype, self.param_dtype)(x)
            if not last:
                x = self.activation(x)
        return jax.nn.sigmoid(x) if self.sigmoid_output else x


def _ln(name: str, dtype: Dtype, param_dtype: Dtype):
    return layer_norm(1e-5, name=name, dtype=dtype, param_dtype=param_dtype)


class Attention(nn.Module):
    """Multi-head attention with projections to ``dim // downsample_rate`` channels
    (``q_proj``/``k_proj``/``v_proj``/``out_proj``); softmax(q k^T / sqrt(head_dim)) v.
    ``key_mask`` (B, Nk) bool: False keys get zero weight."""

    embedding_dim: int
    num_heads: int
    downsample_rate: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, q, k, v, key_mask=None):
        internal = self.embedding_dim // self.downsample_rate
        if internal % self.num_heads:
            raise ValueError(f"{self.num_heads} heads do not divide the internal width {internal}")
        hd = internal // self.num_heads
        q = dense(internal, "q_proj", self.dtype, self.param_dtype)(q)
        k = dense(internal, "k_proj", self.dtype, self.param_dtype)(k)
        v = dense(internal, "v_proj", self.dtype, self.param_dtype)(v)
        q = q.reshape(*q.shape[:2], self.num_heads, hd)
        k = k.reshape(*k.shape[:2], self.num_heads, hd)
        v = v.reshape(*v.shape[:2], self.num_heads, hd)
        out = attention(q, k, v, key_mask).reshape(*q.shape[:2], internal)
        return dense(self.embedding_dim, "out_proj", self.dtype, self.param_dtype)(out)


class TwoWayAttentionBlock(nn.Module):
    embedding_dim: int
    num_heads: int
    mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    skip_first_layer_pe: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, queries, keys, query_pe, key_pe, token_mask=None):
        d, h, dt, pdt = self.embedding_dim, self.num_heads, self.dtype, self.param_dtype
        rate = self.attention_downsample_rate
        self_attn = Attention(d, h, 1, dt, pdt, name="self_attn")
        if self.skip_first_layer_pe:
            queries = self_attn(queries, queries, queries, token_mask)
        else:
            q = queries + query_pe
            queries = queries + self_attn(q, q, queries, token_mask)
        queries = _ln("norm1", dt, pdt)(queries)

        q = queries + query_pe
        k = keys + key_pe
        queries = queries + Attention(d, h, rate, dt, pdt, name="cross_attn_token_to_image")(q, k, keys)
        queries = _ln("norm2", dt, pdt)(queries)

        queries = queries + MLP(self.mlp_dim, d, 2, dtype=dt, param_dtype=pdt, name="mlp")(queries)
        queries = _ln("norm3", dt, pdt)(queries)

        q = queries + query_pe
        k = keys + key_pe
        keys = keys + Attention(d, h, rate, dt, pdt, name="cross_attn_image_to_token")(k, q, queries, token_mask)
        keys = _ln("norm4", dt, pdt)(keys)
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``__call__(image_embedding (B, h, w, C), image_pe (B|1, h, w, C), point_embedding (B, N, C),
    token_mask=None) -> (tokens (B, N, C), image tokens (B, h*w, C))``."""

    depth: int
    embedding_dim: int
    num_heads: int
    mlp_dim: int
    attention_downsample_rate: int = 2
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, image_embedding, image_pe, point_embedding, token_mask=None):
        b, h, w, c = image_embedding.shape
        keys = image_embedding.reshape(b, h * w, c)
        key_pe = jnp.broadcast_to(image_pe, (b, h, w, c)).reshape(b, h * w, c)
        queries = point_embedding
        for i in range(self.depth):
            queries, keys = TwoWayAttentionBlock(
                self.embedding_dim,
                self.num_heads,
                self.mlp_dim,
                self.attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"layers_{i}",
            )(queries, keys, point_embedding, key_pe, token_mask)
        q = queries + point_embedding
        k = keys + key_pe
        queries = queries + Attention(
            self.embedding_dim,
            self.num_heads,
            self.attention_downsample_rate,
            self.dtype,
            self.param_dtype,
            name="final_attn_token_to_image",
        )(q, k, keys)
        queries = _ln("norm_final_attn", self.dtype, self.param_dtype)(queries)
        return queries, keys
