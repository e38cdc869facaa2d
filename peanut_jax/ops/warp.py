"""Bilinear sampling and flow warping (NHWC), with torch ``grid_sample`` semantics.

One sampler serves the whole package: :func:`sample_bilinear` reads an image at arbitrary pixel
coordinates; :func:`warp` (optical-flow backward warping) and the deformable convolution are built
on it.  Coordinates are *pixel* positions, i.e. what torch's ``grid_sample(align_corners=True)``
samples after un-normalising its grid; computing them directly in pixels avoids torch's ~1e-4
normalise/un-normalise round-off.

Padding modes
  ``'zeros'``  each of the four bilinear corners outside the image contributes 0
               (= ``grid_sample(padding_mode='zeros', align_corners=True)``).
  ``'border'`` the coordinate is clamped to the image first
               (= ``grid_sample(padding_mode='border', align_corners=True)``).

Sampling coordinates are always computed in float32, whatever the image dtype: bf16/fp16 cannot
represent pixel positions above 256/2048 exactly (the cause of the high-resolution artefacts users
report for half-precision RIFE).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

PADDINGS = ("zeros", "border")
METHODS = ("gather", "map_coordinates")
# Chosen by measurement (benchmarks/ops.py, RESULTS.md): the NHWC gather is as fast forward and
# several times faster backward than map_coordinates on CPU.
DEFAULT_METHOD = "gather"


def coord_dtype(*arrays):
    """At least float32 for sampling coordinates (float64 stays float64 for gradient checks)."""
    return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def _check_padding(padding: str) -> None:
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")


def sample_bilinear(img: jax.Array, y: jax.Array, x: jax.Array, padding: str = "zeros") -> jax.Array:
    """Bilinearly sample ``img`` (N, H, W, C) at pixel coordinates ``y``, ``x`` (N, *S).

    Returns (N, *S, C) in ``img.dtype``.  Each sample gathers whole C-vectors (one flat index per
    corner and pixel), which keeps the backward pass a single scatter-add per corner.
    """
    _check_padding(padding)
    if img.ndim != 4:
        raise ValueError(f"sample_bilinear: img must be (N, H, W, C), got shape {img.shape}")
    if y.shape != x.shape or y.shape[0] != img.shape[0]:
        raise ValueError(f"sample_bilinear: y {y.shape} and x {x.shape} must match and start with N={img.shape[0]}")
    n, h, w, c = img.shape
    sample_shape = y.shape[1:]
    cdt = coord_dtype(y, x)
    y = y.astype(cdt).reshape(n, -1)
    x = x.astype(cdt).reshape(n, -1)
    if padding == "border":
        y = jnp.clip(y, 0.0, h - 1.0)
        x = jnp.clip(x, 0.0, w - 1.0)
    y0f = jnp.floor(y)
    x0f = jnp.floor(x)
    wy1 = y - y0f
    wx1 = x - x0f
    wy0 = 1.0 - wy1
    wx0 = 1.0 - wx1
    y0 = y0f.astype(jnp.int32)
    x0 = x0f.astype(jnp.int32)
    flat = img.reshape(n, h * w, c)
    take = jax.vmap(lambda f, i: jnp.take(f, i, axis=0, mode="clip"))

    out = None
    for dy, wy in ((0, wy0), (1, wy1)):
        for dx, wx in ((0, wx0), (1, wx1)):
            yi = y0 + dy
            xi = x0 + dx
            wgt = wy * wx
            if padding == "zeros":
                valid = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
                wgt = jnp.where(valid, wgt, 0.0)
            idx = jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)
            term = take(flat, idx).astype(cdt) * wgt[..., None]
            out = term if out is None else out + term
    return out.reshape((n,) + sample_shape + (c,)).astype(img.dtype)


def _sample_map_coordinates(img, y, x, padding):
    mode = "constant" if padding == "zeros" else "nearest"

    def one(im_hw, yy, xx):  # im (H, W), coords (*S)
        return jax.scipy.ndimage.map_coordinates(im_hw, [yy, xx], order=1, mode=mode, cval=0.0)

    per_channel = jax.vmap(one, in_axes=(2, None, None), out_axes=-1)
    cdt = coord_dtype(img, y, x)
    out = jax.vmap(per_channel)(img.astype(cdt), y.astype(cdt), x.astype(cdt))
    return out.astype(img.dtype)


def base_grid(h: int, w: int, dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """Pixel-centre coordinate grids (gy, gx), each (H, W)."""
    gy, gx = jnp.meshgrid(jnp.arange(h, dtype=dtype), jnp.arange(w, dtype=dtype), indexing="ij")
    return gy, gx


def warp(img: jax.Array, flow: jax.Array, padding: str = "zeros", method: str | None = None) -> jax.Array:
    """Backward-warp ``img`` (N, H, W, C) with ``flow`` (N, H, W, 2) (pixels, channel 0 = x).

    ``out[n, y, x] = img[n, y + flow[n, y, x, 1], x + flow[n, y, x, 0]]`` (bilinear), the mmagic /
    E2FGVI / RIFE ``flow_warp`` with ``grid_sample(align_corners=True)``.
    ``method``: ``'gather'`` (NHWC gather sampler) or ``'map_coordinates'``
    (``jax.scipy.ndimage.map_coordinates``); both give the same numbers.
    """
    _check_padding(padding)
    method = method or DEFAULT_METHOD
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if img.ndim != 4 or flow.ndim != 4 or flow.shape[-1] != 2 or flow.shape[:3] != img.shape[:3]:
        raise ValueError(
            f"warp: flow must have shape (N, H, W, 2) matching img (N, H, W, C) = {tuple(img.shape)}; "
            f"got flow {tuple(flow.shape)}"
        )
    _, h, w, _ = img.shape
    cdt = coord_dtype(flow)
    gy, gx = base_grid(h, w, cdt)
    flow = flow.astype(cdt)
    y = gy[None] + flow[..., 1]
    x = gx[None] + flow[..., 0]
    if method == "gather":
        return sample_bilinear(img, y, x, padding)
    return _sample_map_coordinates(img, y, x, padding)
