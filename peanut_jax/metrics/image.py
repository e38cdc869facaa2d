"""PSNR and SSIM as in mmagic / BasicSR (``calculate_psnr`` / ``calculate_ssim``).

Images are (..., H, W, C) channel-last; every leading axis is a batch axis and the result has the
leading shape (one value per image; average them yourself, as mmagic averages over frames).
``data_range`` is the value of white (1.0 for [0, 1] floats, 255 for uint8).

* ``crop_border``: pixels removed from each side before measuring.
* ``y_channel``: measure the ITU-R BT.601 luma of RGB input instead of the RGB channels,
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for R, G, B in [0, 1] (Y in [16, 235] on the
  0..255 scale, mmagic ``rgb2ycbcr(y_only=True)``), expressed on the input's scale (``Y / 255 *
  data_range``).
* SSIM: Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03, over the *valid* region (the
  5-pixel margin where the window leaves the image is dropped, as mmagic crops
  ``cv2.filter2D`` output by 5), computed per channel and averaged over channels.  This is not
  the MATLAB ``ssim`` of the RIFE/Vimeo benchmarks, nor E2FGVI's ``compare_ssim(win_size=65)``.

Both functions run in float64 numpy for numpy inputs, and in float32 ``jax.numpy`` (usable under
``jax.jit``, differentiable) when any input is a JAX array.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
_Y_COEFFS = (65.481, 128.553, 24.966)


def _xp(*arrays):
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def gaussian_kernel_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian taps, float64 (= ``cv2.getGaussianKernel(size, sigma)``)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def rgb_to_y(img, data_range: float = 1.0):
    """BT.601 luma (..., H, W, 1) of RGB (..., H, W, 3), on the input's scale (see module docstring)."""
    xp = _xp(img)
    if img.shape[-1] != 3:
        raise ValueError(f"rgb_to_y: expected RGB (..., H, W, 3), got shape {tuple(img.shape)}")
    x = img / data_range
    r, g, b = _Y_COEFFS
    y = (16.0 + r * x[..., 0] + g * x[..., 1] + b * x[..., 2]) * (data_range / 255.0)
    return xp.expand_dims(y, -1)


def _prepare(xp, a, b, crop_border: int, y_channel: bool, data_range: float, what: str):
    dtype = xp.float64 if xp is np else jnp.float32
    a = xp.asarray(a, dtype)
    b = xp.asarray(b, dtype)
    if a.shape != b.shape:
        raise ValueError(f"{what}: image shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim < 3:
        raise ValueError(f"{what}: images must be (..., H, W, C), got shape {tuple(a.shape)}")
    if data_range <= 0:
        raise ValueError(f"{what}: data_range must be > 0, got {data_range}")
    h, w = a.shape[-3], a.shape[-2]
    if crop_border < 0 or 2 * crop_border >= min(h, w):
        raise ValueError(f"{what}: crop_border={crop_border} is invalid for {h}x{w} images")
    if crop_border:
        a = a[..., crop_border:h - crop_border, crop_border:w - crop_border, :]
        b = b[..., crop_border:h - crop_border, crop_border:w - crop_border, :]
    if y_channel:
        a = rgb_to_y(a, data_range)
        b = rgb_to_y(b, data_range)
    return a, b


def psnr(a, b, data_range: float = 1.0, crop_border: int = 0, y_channel: bool = False):
    """Peak signal-to-noise ratio in dB per image: ``10 log10(data_range^2 / MSE)``; inf if identical."""
    args = (float(data_range), int(crop_border), bool(y_channel))
    if _xp(a, b) is jnp:
        return _psnr_jnp(a, b, *args)
    return _psnr(np, a, b, *args)


def ssim(a, b, data_range: float = 1.0, crop_border: int = 0, y_channel: bool = False):
    """Structural similarity per image (mmagic/BasicSR ``calculate_ssim``; see module docstring)."""
    args = (float(data_range), int(crop_border), bool(y_channel))
    if _xp(a, b) is jnp:
        return _ssim_jnp(a, b, *args)
    return _ssim(np, a, b, *args)


def _psnr(xp, a, b, data_range, crop_border, y_channel):
    a, b = _prepare(xp, a, b, crop_border, y_channel, data_range, "psnr")
    mse = xp.mean((a - b) ** 2, axis=(-3, -2, -1))
    with np.errstate(divide="ignore"):
        return 10.0 * xp.log10(data_range ** 2 / mse)


def _filter_valid_np(x, g):
    """Separable 'valid' correlation of (..., H, W, C) with taps g along H and W (float64)."""
    k = len(g)
    h, w = x.shape[-3], x.shape[-2]
    y = sum(g[i] * x[..., i:i + h - k + 1, :, :] for i in range(k))
    return sum(g[i] * y[..., :, i:i + w - k + 1, :] for i in range(k))


def _filter_valid_jnp(x, g):
    """Same as :func:`_filter_valid_np` with two depthwise convolutions (float32, HIGHEST)."""
    lead, (h, w, c), k = x.shape[:-3], x.shape[-3:], len(g)
    taps = jnp.asarray(g, x.dtype)
    y = x.reshape((-1, h, w, c))
    for kernel in (jnp.tile(taps.reshape(k, 1, 1, 1), (1, 1, 1, c)),
                   jnp.tile(taps.reshape(1, k, 1, 1), (1, 1, 1, c))):
        y = jax.lax.conv_general_dilated(y, kernel, (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         feature_group_count=c,
                                         precision=jax.lax.Precision.HIGHEST)
    return y.reshape(lead + y.shape[1:])


def _ssim(xp, a, b, data_range, crop_border, y_channel):
    a, b = _prepare(xp, a, b, crop_border, y_channel, data_range, "ssim")
    h, w = a.shape[-3], a.shape[-2]
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"ssim: images of {h}x{w} (after cropping) are smaller than the "
                         f"{SSIM_WINDOW}x{SSIM_WINDOW} window")
    g = gaussian_kernel_1d()
    filt = _filter_valid_np if xp is np else _filter_valid_jnp
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mu1 = filt(a, g)
    mu2 = filt(b, g)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = filt(a * a, g) - mu1_sq
    s2 = filt(b * b, g) - mu2_sq
    s12 = filt(a * b, g) - mu12
    ssim_map = ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    return xp.mean(ssim_map, axis=(-3, -2, -1))   # = mean over channels of per-channel means


_psnr_jnp = jax.jit(functools.partial(_psnr, jnp), static_argnums=(2, 3, 4))
_ssim_jnp = jax.jit(functools.partial(_ssim, jnp), static_argnums=(2, 3, 4))
