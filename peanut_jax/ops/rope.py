"""Axial rotary position encoding (SAM 2 ``RoPEAttention``) with real cos/sin tables.

Token ``t`` of a row-major ``h x w`` map has ``x = t % w`` and ``y = t // w``.  For a head width
``D`` there are ``D/2`` channel pairs ``(x[2j], x[2j+1])``; pair ``j < D/4`` turns by ``x * f[j]``,
pair ``j >= D/4`` by ``y * f[j - D/4]``, with ``f[i] = 1 / theta^(4i/D)``.  A pair is rotated as the
complex number ``a + ib`` times ``exp(i*angle)``:

    out[2j] = a*cos - b*sin,    out[2j+1] = a*sin + b*cos.

Key sequences that hold several maps (memory frames) reuse the table once per map, i.e. the table
is **tiled** over the sequence (not ``repeat``-ed element-wise), and trailing object-pointer
tokens (``num_exclude_tail``) are left unrotated.  The rotation runs in float32 and casts back.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=32)
def _tables(h: int, w: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    if head_dim % 4:
        raise ValueError(f"axial RoPE needs a head width divisible by 4, got {head_dim}")
    q = head_dim // 4
    # frequencies and angles in float32, like the official tables; cos/sin of those angles rounded once
    freqs = (
        np.float32(1.0)
        / (np.float32(theta) ** (np.arange(0, head_dim, 4, dtype=np.float32)[:q] / np.float32(head_dim)))
    ).astype(np.float32)
    t = np.arange(h * w)
    tx = (t % w).astype(np.float32)
    ty = (t // w).astype(np.float32)
    ang = np.concatenate([tx[:, None] * freqs[None], ty[:, None] * freqs[None]], axis=1)  # float32
    ang = ang.astype(np.float64)
    cos = np.cos(ang).astype(np.float32)
    sin = np.sin(ang).astype(np.float32)
    cos.setflags(write=False)
    sin.setflags(write=False)
    return cos, sin


def axial_rope_tables(h: int, w: int, head_dim: int, theta: float = 10000.0):
    """(cos, sin), each float32 (h*w, head_dim // 2), for a row-major ``h x w`` token map.

    Built on the host once per static shape (cached)."""
    cos, sin = _tables(int(h), int(w), int(head_dim), float(theta))
    return jnp.asarray(cos), jnp.asarray(sin)


def apply_rope(x, cos, sin, num_exclude_tail: int = 0):
    """Rotate ``x`` (..., L, D) by the (n, D/2) tables.

    The first ``L - num_exclude_tail`` tokens must be a whole number ``r`` of ``n``-token maps; the
    table is tiled ``r`` times over them.  The last ``num_exclude_tail`` tokens are returned as is.
    Computed in float32, returned in ``x.dtype``.
    """
    L, D = x.shape[-2], x.shape[-1]
    n = cos.shape[0]
    if cos.shape != (n, D // 2) or sin.shape != cos.shape:
        raise ValueError(f"RoPE tables {cos.shape}/{sin.shape} do not fit a head width of {D}")
    num_exclude_tail = int(num_exclude_tail)
    n_rot = L - num_exclude_tail
    if n_rot < 0:
        raise ValueError(f"cannot leave {num_exclude_tail} of {L} tokens unrotated")
    if n_rot == 0:
        return x
    if n_rot % n:
        raise ValueError(f"{n_rot} rotated tokens are not a whole number of {n}-token maps")
    r = n_rot // n
    if r > 1:
        cos = jnp.tile(cos, (r, 1))
        sin = jnp.tile(sin, (r, 1))
    head = x[..., :n_rot, :].astype(jnp.float32)
    a, b = head[..., 0::2], head[..., 1::2]
    c, s = cos.astype(jnp.float32), sin.astype(jnp.float32)
    rot = jnp.stack([a * c - b * s, a * s + b * c], axis=-1).reshape(head.shape).astype(x.dtype)
    if num_exclude_tail == 0:
        return rot
    return jnp.concatenate([rot, x[..., n_rot:, :]], axis=-2)
