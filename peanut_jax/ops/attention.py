"""Scaled dot-product attention, torch ``F.scaled_dot_product_attention`` semantics, one place for
every model (Hiera, the SAM decoder, SAM 2 memory attention, RoBERTa).

``attention(q, k, v)`` on (B, N, heads, D) arrays: ``softmax(q k^T / sqrt(D)) v``, logits and
softmax in float32.  ``key_valid`` (B, Nk) bool: False keys get zero weight (a row with no valid key
averages all keys instead of giving NaN).  ``dropout_rate`` with ``rng``: dropout on the weights.
``query_chunk``: queries are processed that many at a time (``lax.map``), so the (Nq, Nk) logits of
long memories never exist at once.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def attention(
    q, k, v, key_valid=None, *, precision=None, dropout_rate: float = 0.0, rng=None, query_chunk: int | None = None
):
    scale = 1.0 / math.sqrt(q.shape[-1])
    valid = None if key_valid is None else key_valid[:, None, None, :]

    def attend(qc, key):
        logits = jnp.einsum("bqhd,bkhd->bhqk", qc, k, precision=precision, preferred_element_type=jnp.float32) * scale
        if valid is not None:
            logits = jnp.where(valid, logits, jnp.float32(-1e30))
        w = jax.nn.softmax(logits, axis=-1)
        if dropout_rate > 0.0 and key is not None:
            keep = jax.random.bernoulli(key, 1.0 - dropout_rate, w.shape)
            w = jnp.where(keep, w / (1.0 - dropout_rate), 0.0)
        return jnp.einsum("bhqk,bkhd->bqhd", w.astype(v.dtype), v, precision=precision)

    n = q.shape[1]
    if query_chunk is None or n <= query_chunk:
        return attend(q, rng)
    n_chunks = -(-n // query_chunk)
    pad = n_chunks * query_chunk - n
    qp = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0))) if pad else q
    qs = jnp.moveaxis(qp.reshape(q.shape[0], n_chunks, query_chunk, *q.shape[2:]), 1, 0)
    if rng is None:
        out = jax.lax.map(lambda qc: attend(qc, None), qs)
    else:
        out = jax.lax.map(lambda a: attend(*a), (qs, jax.random.split(rng, n_chunks)))
    out = jnp.moveaxis(out, 0, 1).reshape(q.shape[0], n_chunks * query_chunk, *out.shape[3:])
    return out[:, :n]
