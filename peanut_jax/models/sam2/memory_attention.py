"""SAM 2 memory attention: the current frame's stride-16 tokens attend to the memory bank.

Official ``MemoryAttention`` (``sam2/modeling/memory_attention.py``) with the configuration of every
official SAM 2 / 2.1 model: ``pos_enc_at_input`` (``x = curr + 0.1 * curr_pos``), then
``cfg.memattn_layers`` pre-norm layers

    x += self_attn(q = k = v = norm1(x))                       RoPE on q and k
    x += cross_attn_image(q = norm2(x), k = memory + memory_pos, v = memory)
                                                               RoPE on q and on the spatial keys
    x += linear2(relu(linear1(norm3(x))))

and a final LayerNorm ``norm`` (all LayerNorms eps 1e-5).  Both attentions are ``RoPEAttention``
with one head of width ``d_model``; the cross attention's k/v projections read ``mem_dim``-wide
memory (``kv_in_dim``).  The keys of the cross attention are ``[memory frames x N tokens ...,
num_obj_ptr_tokens pointer tokens]``: the RoPE table of the current map is tiled over the frames and
the trailing pointer tokens are not rotated.

The official code uses a ``sqrt(N) x sqrt(N)`` RoPE grid whatever the real map shape (a 36 x 64
SAMWISE map is rotated as 48 x 48); we do the same and require ``N`` to be a perfect square.

Differences in form only: token sequences are batch-first (B, N, C) (the official module takes
sequence-first tensors); ``memory_valid`` (B, M) masks keys out of the softmax, so a fixed-size
memory bank with empty slots gives exactly the attention over its valid keys; the attention is
computed in chunks of ``query_chunk`` queries to bound memory (4096 x ~28.7k logits per object at
1024 px).  Dropout (rate ``dropout``, official 0.1, on the attention weights, the FFN hidden layer
and the three residual branches) is active only when ``deterministic=False``.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from peanut_jax.layers.linear import layer_norm, linear
from peanut_jax.models.sam2.config import SAM2Config
from peanut_jax.ops.attention import attention
from peanut_jax.ops.rope import apply_rope, axial_rope_tables

Dtype = Any


def _dense(features: int, fan_in: int, name: str, dtype, param_dtype, precision):
    return linear(features, fan_in, name=name, dtype=dtype, param_dtype=param_dtype, precision=precision)


def rope_grid(num_tokens: int) -> tuple[int, int]:
    """The (h, w) grid the official RoPE assumes for ``num_tokens`` query tokens: square."""
    side = math.isqrt(int(num_tokens))
    if side * side != num_tokens:
        raise ValueError(f"SAM 2 RoPE assumes a square token map; {num_tokens} tokens is not a square")
    return side, side


class RoPEAttention(nn.Module):
    """Official ``RoPEAttention``: q/k/v projections (k/v read any input width, ``kv_in_dim``),
    axial RoPE on q and on the first ``Nk - num_k_exclude_rope`` keys, SDPA, ``out_proj``.

    ``rope_k_repeat`` allows the keys to hold several query-sized maps (the table is tiled)."""

    embedding_dim: int
    num_heads: int = 1
    downsample_rate: int = 1
    rope_theta: float = 10000.0
    rope_k_repeat: bool = False
    dropout: float = 0.0
    query_chunk: int | None = 1024
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, q, k, v, num_k_exclude_rope: int = 0, key_valid=None, deterministic: bool = True):
        internal = self.embedding_dim // self.downsample_rate
        if internal % self.num_heads:
            raise ValueError(f"{self.num_heads} heads do not divide {internal}")

        def dense(f, fan_in, name):
            return _dense(f, fan_in, name, self.dtype, self.param_dtype, self.precision)

        q = dense(internal, q.shape[-1], "q_proj")(q)
        k = dense(internal, k.shape[-1], "k_proj")(k)
        v = dense(internal, v.shape[-1], "v_proj")(v)

        def heads(x):  # (B, heads, N, D): RoPE rotates along the token axis
            b, n, c = x.shape
            return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(0, 2, 1, 3)

        q, k, v = heads(q), heads(k), heads(v)
        nq, nk = q.shape[2], k.shape[2]
        if nq != nk and not self.rope_k_repeat:
            raise ValueError(f"{nk} keys for {nq} queries needs rope_k_repeat")
        cos, sin = axial_rope_tables(*rope_grid(nq), q.shape[-1], self.rope_theta)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin, num_exclude_tail=num_k_exclude_rope)

        rate = 0.0 if deterministic else self.dropout
        rng = self.make_rng("dropout") if rate > 0.0 else None
        q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
        out = attention(
            q, k, v, key_valid, precision=self.precision, dropout_rate=rate, rng=rng, query_chunk=self.query_chunk
        )
        b, n, h, c = out.shape
        out = out.reshape(b, n, h * c)
        return dense(self.embedding_dim, internal, "out_proj")(out)


class MemoryAttentionLayer(nn.Module):
    """One pre-norm layer: RoPE self-attention, RoPE cross-attention to the memory, ReLU FFN."""

    d_model: int = 256
    dim_feedforward: int = 2048
    num_heads: int = 1
    rope_theta: float = 10000.0
    dropout: float = 0.1
    query_chunk: int | None = 1024
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(
        self, tgt, memory, memory_pos, num_k_exclude_rope: int = 0, memory_valid=None, deterministic: bool = True
    ):
        ln = lambda name: layer_norm(1e-5, name=name, dtype=self.dtype, param_dtype=self.param_dtype)  # noqa: E731
        drop = lambda x: nn.Dropout(self.dropout)(x, deterministic=deterministic)  # noqa: E731
        attn = dict(
            embedding_dim=self.d_model,
            num_heads=self.num_heads,
            rope_theta=self.rope_theta,
            dropout=self.dropout,
            query_chunk=self.query_chunk,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
        )

        t2 = ln("norm1")(tgt)
        t2 = RoPEAttention(name="self_attn", **attn)(t2, t2, t2, deterministic=deterministic)
        tgt = tgt + drop(t2)

        t2 = ln("norm2")(tgt)
        t2 = RoPEAttention(name="cross_attn_image", rope_k_repeat=True, **attn)(
            t2,
            memory + memory_pos,
            memory,
            num_k_exclude_rope=num_k_exclude_rope,
            key_valid=memory_valid,
            deterministic=deterministic,
        )
        tgt = tgt + drop(t2)

        t2 = ln("norm3")(tgt)
        t2 = _dense(self.dim_feedforward, self.d_model, "linear1", self.dtype, self.param_dtype, self.precision)(t2)
        t2 = drop(jax.nn.relu(t2))
        t2 = _dense(self.d_model, self.dim_feedforward, "linear2", self.dtype, self.param_dtype, self.precision)(t2)
        return tgt + drop(t2)


class MemoryAttention(nn.Module):
    """``(curr (B,N,d), curr_pos (B,N,d), memory (B,M,mem_dim), memory_pos (B,M,mem_dim),
    num_obj_ptr_tokens, memory_valid (B,M) bool | None) -> (B,N,d)``.

    ``num_obj_ptr_tokens`` (static) trailing memory tokens are object-pointer tokens (not rotated);
    the ``M - num_obj_ptr_tokens`` others must be whole ``N``-token frames."""

    cfg: SAM2Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    dropout: float = 0.1
    query_chunk: int | None = 1024
    precision: Any = None

    @nn.compact
    def __call__(
        self,
        curr,
        curr_pos,
        memory,
        memory_pos,
        num_obj_ptr_tokens: int = 0,
        memory_valid=None,
        deterministic: bool = True,
    ):
        cfg = self.cfg
        if curr.shape[0] != memory.shape[0]:
            raise ValueError(f"batch sizes differ: curr {curr.shape}, memory {memory.shape}")
        x = (curr + 0.1 * curr_pos).astype(self.dtype)
        memory = memory.astype(self.dtype)
        memory_pos = memory_pos.astype(self.dtype)
        for i in range(cfg.memattn_layers):
            x = MemoryAttentionLayer(
                d_model=cfg.d_model,
                dim_feedforward=cfg.memattn_ffn,
                rope_theta=cfg.rope_theta,
                dropout=self.dropout,
                query_chunk=self.query_chunk,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                precision=self.precision,
                name=f"layers_{i}",
            )(
                x,
                memory,
                memory_pos,
                num_k_exclude_rope=int(num_obj_ptr_tokens),
                memory_valid=memory_valid,
                deterministic=deterministic,
            )
        return layer_norm(1e-5, name="norm", dtype=self.dtype, param_dtype=self.param_dtype)(x)
