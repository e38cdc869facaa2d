"""Sine position encodings of SAM 2 (NHWC), computed in float32 like the official code.

``sine_2d(h, w, dim)`` is ``PositionEmbeddingSine(dim, normalize=True, scale=2*pi)``: per axis,
positions 1..n divided by ``n + 1e-6``, times 2*pi, over ``T^(2*(i//2)/(dim/2))``, with sin and cos
**interleaved**; the output is ``concat(pos_y, pos_x)`` on the channel axis.  ``sine_1d`` is
``get_1d_sine_pe`` (object-pointer temporal encoding): ``concat(sin, cos)``, not interleaved.
Both depend only on static shapes, so ``sine_2d`` is built on the host and cached.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np


def _dim_t(num_feats: int, temperature: float, xp):
    i = xp.arange(num_feats, dtype=xp.float32)
    return xp.asarray(temperature, xp.float32) ** (2 * (i // 2) / num_feats).astype(xp.float32)


@functools.lru_cache(maxsize=32)
def _sine_2d(h: int, w: int, dim: int, temperature: float) -> np.ndarray:
    if dim % 2:
        raise ValueError(f"sine position encoding needs an even width, got {dim}")
    n = dim // 2
    scale = np.float32(2 * math.pi)
    y = np.arange(1, h + 1, dtype=np.float32)
    x = np.arange(1, w + 1, dtype=np.float32)
    y = y / (y[-1] + np.float32(1e-6)) * scale
    x = x / (x[-1] + np.float32(1e-6)) * scale
    dim_t = _dim_t(n, temperature, np)
    px = x[:, None] / dim_t  # (w, n)
    py = y[:, None] / dim_t  # (h, n)
    px = np.stack((np.sin(px[:, 0::2]), np.cos(px[:, 1::2])), axis=2).reshape(w, n)
    py = np.stack((np.sin(py[:, 0::2]), np.cos(py[:, 1::2])), axis=2).reshape(h, n)
    out = np.concatenate([np.broadcast_to(py[:, None], (h, w, n)), np.broadcast_to(px[None], (h, w, n))], -1)
    out = np.ascontiguousarray(out, dtype=np.float32)
    out.setflags(write=False)
    return out


def sine_2d(h: int, w: int, dim: int, temperature: float = 10000.0, dtype=jnp.float32) -> jnp.ndarray:
    """(h, w, dim) sine encoding of an h x w grid (``PositionEmbeddingSine``, normalised)."""
    return jnp.asarray(_sine_2d(int(h), int(w), int(dim), float(temperature)), dtype)


def sine_1d(pos, dim: int, temperature: float = 10000.0) -> jnp.ndarray:
    """``get_1d_sine_pe``: (..., dim) = concat(sin(pos / dim_t), cos(pos / dim_t)), float32."""
    pos = jnp.asarray(pos, jnp.float32)
    dim_t = _dim_t(dim // 2, temperature, jnp)
    e = pos[..., None] / dim_t
    return jnp.concatenate([jnp.sin(e), jnp.cos(e)], axis=-1)
