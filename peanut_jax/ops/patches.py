"""``unfold``/``fold`` in torch's channel-major order, and pixel (un)shuffle, for NHWC tensors.

torch ``F.unfold`` returns (N, C*kh*kw, L) with feature index ``c*kh*kw + i*kw + j``; here the
patches stay on a grid: (N, Lh, Lw, C*kh*kw) with the same feature order (the torch layout is
``out.reshape(N, L, -1).transpose(0, 2, 1)``).  ``fold`` is the exact linear transpose of ``unfold``
(a sum over overlaps, like torch, not normalised).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def unfold(x, kernel_size, stride=1, padding=0, dilation=1):
    """(N, H, W, C) -> (N, Lh, Lw, C*kh*kw), channel-major patch features (torch order)."""
    kh, kw = _pair(kernel_size)
    ph, pw = _pair(padding)
    return lax.conv_general_dilated_patches(
        x, (kh, kw), _pair(stride), ((ph, ph), (pw, pw)), rhs_dilation=_pair(dilation),
        dimension_numbers=("NHWC", "OIHW", "NHWC"), precision=lax.Precision.HIGHEST)


@functools.lru_cache(maxsize=None)
def _fold_transpose(shape, dtype, kernel_size, stride, padding, dilation):
    f = functools.partial(unfold, kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation)
    return jax.linear_transpose(f, jax.ShapeDtypeStruct(shape, dtype))


def fold(cols, output_size, kernel_size, stride=1, padding=0, dilation=1):
    """(N, Lh, Lw, C*kh*kw) -> (N, H, W, C): sums overlapping patches (torch ``F.fold``)."""
    kh, kw = _pair(kernel_size)
    h, w = _pair(output_size)
    n, _, _, ckk = cols.shape
    if ckk % (kh * kw):
        raise ValueError(f"fold: feature size {ckk} not divisible by kernel {kh}x{kw}")
    c = ckk // (kh * kw)
    t = _fold_transpose((n, h, w, c), jnp.dtype(cols.dtype), (kh, kw), _pair(stride), _pair(padding), _pair(dilation))
    (out,) = t(cols)
    return out


def pixel_shuffle(x, r: int):
    """torch ``pixel_shuffle`` in NHWC: (N, H, W, C*r*r) -> (N, H*r, W*r, C), channel order (C, r, r)."""
    n, h, w, c = x.shape
    if c % (r * r):
        raise ValueError(f"pixel_shuffle: {c} channels not divisible by r^2={r * r}")
    co = c // (r * r)
    return x.reshape(n, h, w, co, r, r).transpose(0, 1, 4, 2, 5, 3).reshape(n, h * r, w * r, co)


def pixel_unshuffle(x, r: int):
    """Inverse of :func:`pixel_shuffle`: (N, H*r, W*r, C) -> (N, H, W, C*r*r)."""
    n, hr, wr, c = x.shape
    if hr % r or wr % r:
        raise ValueError(f"pixel_unshuffle: size {hr}x{wr} not divisible by {r}")
    h, w = hr // r, wr // r
    return x.reshape(n, h, r, w, r, c).transpose(0, 1, 3, 5, 2, 4).reshape(n, h, w, c * r * r)
