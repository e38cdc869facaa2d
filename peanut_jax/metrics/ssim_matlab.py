"""``ssim_matlab``: the SSIM of RIFE's ``pytorch_msssim`` (ECCV benchmarks, CogVideoX's frame
de-duplication / scene-cut rule), NHWC.

It differs from the usual per-channel SSIM: the RGB channels are treated as a *volume*, i.e. the
statistics come from an 11x11x11 Gaussian window (sigma 1.5) over (C, H, W) after replicate padding
by 5 on all three axes; C1 = (0.01 L)^2, C2 = (0.03 L)^2 with the data-dependent range
``L = (255 if max(img1) > 128 else 1) - (-1 if min(img1) < -0.5 else 0)`` unless ``val_range``
is given.  The window is ``min(11, H, W)`` per side (the padding stays 5).
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

__all__ = ["gaussian_window", "ssim_matlab"]


def gaussian_window(size: int, sigma: float = 1.5) -> np.ndarray:
    """Normalised 1-D Gaussian as the official code builds it (float32 values, float32 sum)."""
    g = np.asarray([math.exp(-((x - size // 2) ** 2) / float(2 * sigma ** 2)) for x in range(size)], np.float32)
    return g / g.sum(dtype=np.float32)


def _filter_axis(x, g: np.ndarray, axis: int):
    n_out = x.shape[axis] - len(g) + 1
    out = None
    for k, wk in enumerate(g):
        sl = [slice(None)] * x.ndim
        sl[axis] = slice(k, k + n_out)
        term = x[tuple(sl)] * jnp.float32(wk)
        out = term if out is None else out + term
    return out


def ssim_matlab(img1, img2, val_range: float | None = None, window_size: int = 11, reduce: str = "mean"):
    """SSIM of two NHWC batches (N, H, W, C).

    ``reduce='mean'``: one scalar over the batch (the official return value; the data-dependent
    range is taken over the whole ``img1`` batch).  ``reduce='none'``: one value per sample (range
    per sample), i.e. what N separate official calls return.
    """
    if reduce not in ("mean", "none"):
        raise ValueError(f"ssim_matlab: reduce must be 'mean' or 'none', got {reduce!r}")
    img1 = jnp.asarray(img1, jnp.float32)
    img2 = jnp.asarray(img2, jnp.float32)
    if img1.ndim != 4 or img1.shape != img2.shape:
        raise ValueError(f"ssim_matlab: expected two NHWC arrays of the same shape, got {img1.shape} and {img2.shape}")
    n, h, w, _ = img1.shape
    axes = (1, 2, 3) if reduce == "none" else (0, 1, 2, 3)
    if val_range is None:
        mx = jnp.max(img1, axis=axes, keepdims=True)
        mn = jnp.min(img1, axis=axes, keepdims=True)
        big = jnp.where(mx > 128, 255.0, 1.0)
        small = jnp.where(mn < -0.5, -1.0, 0.0)
        L = big - small
    else:
        L = jnp.float32(val_range)
    g = gaussian_window(min(window_size, h, w))

    def blur(x):  # (N, H, W, C) volume over (H, W, C), replicate padding 5 on each axis
        x = jnp.pad(x, ((0, 0), (5, 5), (5, 5), (5, 5)), mode="edge")
        for ax in (3, 1, 2):
            x = _filter_axis(x, g, ax)
        return x

    mu1, mu2 = blur(img1), blur(img2)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq = blur(img1 * img1) - mu1_sq
    sigma2_sq = blur(img2 * img2) - mu2_sq
    sigma12 = blur(img1 * img2) - mu1_mu2
    c1 = (0.01 * L) ** 2
    c2 = (0.03 * L) ** 2
    v1 = 2.0 * sigma12 + c2
    v2 = sigma1_sq + sigma2_sq + c2
    ssim_map = ((2 * mu1_mu2 + c1) * v1) / ((mu1_sq + mu2_sq + c1) * v2)
    if reduce == "none":
        return jnp.mean(ssim_map, axis=(1, 2, 3))
    return jnp.mean(ssim_map)
