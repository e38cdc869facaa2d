"""PSNR and SSIM, each defined once; every protocol the project measures is a choice of arguments.

Images are (..., H, W, C) channel-last, ``data_range`` is the value of white.  Numpy inputs are
measured in float64 numpy, inputs with any JAX array in float32 ``jax.numpy`` (jit-able,
differentiable).  The protocols and the arguments that reproduce them are listed in
:func:`psnr` and :func:`ssim`; the variants differ only in the
last floating-point bits, kept so that every reported number stays what it was.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
BOX_MIN_SIDE = 16  # box-region SSIM: each crop side is at least this (>= the 11 window)
PSNR_FORMULAS = ("mmagic", "e2fgvi", "rife")
SSIM_WINDOWS = ("gaussian", "uniform", "matlab")
REDUCTIONS = ("image", "sample", "all")
_Y_COEFFS = (65.481, 128.553, 24.966)


def _xp(*arrays):
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def gaussian_kernel_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian taps, float64 (= ``cv2.getGaussianKernel(size, sigma)``)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def matlab_window(size: int, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """1-D Gaussian as RIFE's ``pytorch_msssim`` builds it (float32 values, float32 sum)."""
    g = np.asarray([math.exp(-((x - size // 2) ** 2) / float(2 * sigma**2)) for x in range(size)], np.float32)
    return g / g.sum(dtype=np.float32)


def rgb_to_y(img, data_range: float = 1.0):
    """BT.601 luma (..., H, W, 1) of RGB (..., H, W, 3): ``Y = 16 + 65.481 R + 128.553 G + 24.966 B``
    for R, G, B in [0, 1] (mmagic ``rgb2ycbcr(y_only=True)``), on the input's scale (``Y / 255 * data_range``)."""
    xp = _xp(img)
    if img.shape[-1] != 3:
        raise ValueError(f"rgb_to_y: expected RGB (..., H, W, 3), got shape {tuple(img.shape)}")
    x = img / data_range
    r, g, b = _Y_COEFFS
    y = (16.0 + r * x[..., 0] + g * x[..., 1] + b * x[..., 2]) * (data_range / 255.0)
    return xp.expand_dims(y, -1)


def _prepare(xp, a, b, crop_border: int, y_channel: bool, data_range, what: str, mask=None):
    dtype = xp.float64 if xp is np else jnp.float32
    a = xp.asarray(a, dtype)
    b = xp.asarray(b, dtype)
    if a.shape != b.shape:
        raise ValueError(f"{what}: image shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim < 3:
        raise ValueError(f"{what}: images must be (..., H, W, C), got shape {tuple(a.shape)}")
    if data_range is not None and data_range <= 0:
        raise ValueError(f"{what}: data_range must be > 0, got {data_range}")
    h, w = a.shape[-3], a.shape[-2]
    if crop_border < 0 or 2 * crop_border >= min(h, w):
        raise ValueError(f"{what}: crop_border={crop_border} is invalid for {h}x{w} images")
    if mask is not None:
        mask = _mask(xp, mask, a, what)
    if crop_border:
        a = a[..., crop_border : h - crop_border, crop_border : w - crop_border, :]
        b = b[..., crop_border : h - crop_border, crop_border : w - crop_border, :]
        if mask is not None:
            mask = mask[..., crop_border : h - crop_border, crop_border : w - crop_border, :]
    if y_channel:
        if data_range is None:
            raise ValueError(f"{what}: y_channel needs a data_range")
        a = rgb_to_y(a, data_range)
        b = rgb_to_y(b, data_range)
    return a, b, mask


def _mask(xp, mask, a, what):
    """(..., H, W) or (..., H, W, 1|C) -> (..., H, W, 1|C); numpy keeps it boolean, jnp as a.dtype weights."""
    mask = xp.asarray(mask)
    if mask.ndim == a.ndim - 1:
        mask = mask[..., None]
    if mask.ndim != a.ndim or mask.shape[-3:-1] != a.shape[-3:-1]:
        raise ValueError(f"{what}: mask {tuple(mask.shape)} does not fit images {tuple(a.shape)}")
    try:
        np.broadcast_shapes(mask.shape, a.shape)
    except ValueError:
        raise ValueError(f"{what}: mask {tuple(mask.shape)} does not broadcast to images {tuple(a.shape)}") from None
    if xp is np:
        if mask.dtype != bool:
            raise ValueError(f"{what}: a numpy mask must be boolean, got {mask.dtype}")
        return mask
    return mask.astype(a.dtype)


def _check(name, value, allowed, what):
    if value not in allowed:
        raise ValueError(f"{what}: {name} must be one of {allowed}, got {value!r}")


def _axes(ndim: int, reduction: str):
    return {"image": (-3, -2, -1), "sample": tuple(range(1, ndim)), "all": None}[reduction]


# ============================================================================================ PSNR
def psnr(
    a,
    b,
    data_range: float = 1.0,
    crop_border: int = 0,
    y_channel: bool = False,
    *,
    mask=None,
    reduction: str = "image",
    formula: str = "mmagic",
    mse_floor: float | None = None,
    empty: float = math.inf,
):
    """Peak signal-to-noise ratio in dB from the mean squared error; inf for identical images.

    ``crop_border``: pixels removed from each side; ``y_channel``: measure BT.601 luma (:func:`rgb_to_y`).
    ``mask`` (..., H, W[, 1|C]): the MSE over the masked pixels only (numpy: boolean selection;
    jnp: ``sum(m d^2) / max(sum(m), 1)``, so weights work under jit); ``empty``: the value where a
    mask selects nothing.  ``reduction``: ``'image'`` one value per (H, W, C) image, ``'sample'``
    per index of axis 0 (e.g. per clip of (B, T, H, W, C)), ``'all'`` one value (numpy: a Python
    float).  ``mse_floor``: ``max(mse, floor)`` first (1e-10 caps at 100 dB).  ``formula``, the
    same number written as each source writes it (they differ in the last bits):

    * ``'mmagic'``: ``10 log10(R^2 / mse)`` (mmagic / BasicSR; VSR evaluation, demo region PSNR);
    * ``'e2fgvi'``: ``20 log10(R / sqrt(mse))`` (E2FGVI ``evaluate.py``; R = 255 for uint8 values);
    * ``'rife'``: ``-10 log10(mse / R^2)`` (RIFE ``benchmark/*.py``; numpy ``'all'`` uses
      ``math.log10`` of the Python float as the official does).
    """
    what = "psnr"
    _check("reduction", reduction, REDUCTIONS, what)
    _check("formula", formula, PSNR_FORMULAS, what)
    if mse_floor is not None and not mse_floor > 0:
        raise ValueError(f"psnr: mse_floor must be > 0, got {mse_floor}")
    args = (
        float(data_range),
        int(crop_border),
        bool(y_channel),
        reduction,
        formula,
        None if mse_floor is None else float(mse_floor),
        float(empty),
    )
    if _xp(a, b, mask) is jnp:
        return _psnr_jnp(a, b, mask, *args)
    return _psnr_np(a, b, mask, *args)


def _db(xp, mse, data_range, formula, scalar: bool):
    if formula == "mmagic":
        return 10.0 * xp.log10(data_range**2 / mse)
    if formula == "e2fgvi":
        return 20.0 * xp.log10(data_range / xp.sqrt(mse))
    if data_range != 1.0:
        mse = mse / data_range**2
    if scalar:
        return math.inf if mse == 0 else -10.0 * math.log10(mse)
    return -10.0 * xp.log10(mse)


def _psnr_np(a, b, mask, data_range, crop_border, y_channel, reduction, formula, mse_floor, empty):
    a, b, mask = _prepare(np, a, b, crop_border, y_channel, data_range, "psnr", mask)
    scalar = reduction == "all"
    if mask is None:
        mse = np.mean((a - b) ** 2, axis=_axes(a.ndim, reduction))
    elif scalar:
        return _masked_psnr_np(a, b, mask, data_range, formula, mse_floor, empty)
    else:
        lead = a.shape[:-3] if reduction == "image" else a.shape[:1]
        mask = np.broadcast_to(mask, lead + mask.shape[len(lead) :])
        out = np.empty(lead, np.float64)
        for idx in np.ndindex(*lead):
            out[idx] = _masked_psnr_np(a[idx], b[idx], mask[idx], data_range, formula, mse_floor, empty)
        return out if lead else out[()]
    if mse_floor is not None:
        mse = np.maximum(mse, mse_floor)
    with np.errstate(divide="ignore"):
        v = _db(np, mse, data_range, formula, scalar)
    return float(v) if scalar else v


def _masked_psnr_np(a, b, mask, data_range, formula, mse_floor, empty):
    """One value over the selected pixels: ``(a - b)[mask]`` (a (..., H, W) mask selects whole pixels)."""
    if mask.shape[-1] == 1:
        d = (a - b)[np.broadcast_to(mask[..., 0], a.shape[:-1])]
    else:
        d = (a - b)[np.broadcast_to(mask, a.shape)]
    if d.size == 0:
        return float(empty)
    mse = np.mean(d**2)
    if mse_floor is not None:
        mse = np.maximum(mse, mse_floor)
    with np.errstate(divide="ignore"):
        return float(_db(np, mse, data_range, formula, True))


def _psnr_jnp_impl(a, b, mask, data_range, crop_border, y_channel, reduction, formula, mse_floor, empty):
    a, b, mask = _prepare(jnp, a, b, crop_border, y_channel, data_range, "psnr", mask)
    axes = _axes(a.ndim, reduction)
    if mask is None:
        mse = jnp.mean(jnp.square(a - b), axis=axes)
    else:
        m = jnp.broadcast_to(mask, a.shape)
        num = jnp.sum(m * jnp.square(a - b), axis=axes)
        den = jnp.sum(m, axis=axes)
        mse = num / jnp.maximum(den, 1.0)
    if mse_floor is not None:
        mse = jnp.maximum(mse, mse_floor)
    v = _db(jnp, mse, data_range, formula, False)
    return v if mask is None else jnp.where(den > 0, v, empty)


_psnr_jnp = jax.jit(_psnr_jnp_impl, static_argnums=tuple(range(3, 10)))


# ============================================================================================ SSIM
def ssim(
    a,
    b,
    data_range: float | None = 1.0,
    crop_border: int = 0,
    y_channel: bool = False,
    *,
    window: str = "gaussian",
    window_size: int | None = None,
    sigma: float = SSIM_SIGMA,
    mask=None,
    box_margin: int | None = None,
    reduction: str = "image",
):
    """Structural similarity (K1 = 0.01, K2 = 0.03); ``crop_border`` / ``y_channel`` as in :func:`psnr`.

    ``window``:

    * ``'gaussian'`` (default; mmagic / BasicSR ``calculate_ssim``, E2FGVI training eval): separable
      ``window_size`` (11) Gaussian, ``sigma`` 1.5, over the *valid* positions (no padding), per
      channel; the map is averaged over (H, W, C);
    * ``'uniform'`` (E2FGVI ``evaluate.py`` = skimage ``compare_ssim(win_size=65)``): uniform
      window (default 7, as skimage), sample covariance ``N / (N - 1)``, valid positions, the mean
      of each channel's map, then the mean over channels; numpy float64 only;
    * ``'matlab'`` (RIFE ``pytorch_msssim``: Vimeo/UCF benchmarks, scene-cut detection): the RGB
      channels form a volume blurred by an ``min(11, H, W)``-tap Gaussian over (H, W, C) after
      replicate padding 5; ``data_range=None`` takes ``L = (255 if max(a) > 128 else 1) - (-1 if
      min(a) < -0.5 else 0)`` over the batch (``'all'``) or each sample (``'sample'``); (N, H, W, C)
      inputs, always float32 jnp, no mask.

    ``mask`` (gaussian): the map averaged over the mask (cropped like the map, ``window_size // 2``
    per side), 0 where it selects nothing.  ``box_margin`` (with ``mask``, numpy): each image
    measured on the bounding box of its mask grown by ``box_margin`` pixels (each side at least
    :data:`BOX_MIN_SIDE`), images with an empty mask skipped (NaN per image; ``'all'``: the mean
    of the others, NaN if none).  ``reduction``: ``'image'``, ``'sample'``, ``'all'`` as in
    :func:`psnr`, or ``'map'`` (gaussian/uniform: the SSIM map (..., H', W', C)).
    """
    what = "ssim"
    _check("window", window, SSIM_WINDOWS, what)
    _check("reduction", reduction, REDUCTIONS + ("map",), what)
    if data_range is None and window != "matlab":
        raise ValueError("ssim: data_range=None (data-dependent range) exists only for window='matlab'")
    if window_size is None:
        window_size = 7 if window == "uniform" else SSIM_WINDOW
    if not isinstance(window_size, (int, np.integer)) or window_size < 1:
        raise ValueError(f"ssim: window_size must be an integer >= 1, got {window_size!r}")
    if window == "uniform" and window_size % 2 != 1:
        raise ValueError(f"ssim: the uniform window_size {window_size} must be odd")
    dr = None if data_range is None else float(data_range)
    if box_margin is not None:
        if mask is None:
            raise ValueError("ssim: box_margin needs a mask")
        return _box_ssim(
            a,
            b,
            dr,
            int(crop_border),
            bool(y_channel),
            window,
            int(window_size),
            float(sigma),
            mask,
            int(box_margin),
            reduction,
        )
    if window == "matlab":
        if mask is not None or reduction in ("map",):
            raise ValueError("ssim: window='matlab' supports no mask and no 'map' reduction")
        return _ssim_matlab(a, b, dr, int(crop_border), bool(y_channel), int(window_size), reduction)
    if window == "uniform":
        if mask is not None:
            raise ValueError("ssim: window='uniform' supports no mask (use box_margin)")
        return _ssim_uniform(a, b, dr, int(crop_border), bool(y_channel), int(window_size), reduction)
    args = (dr, int(crop_border), bool(y_channel), int(window_size), float(sigma), reduction)
    if _xp(a, b, mask) is jnp:
        return _ssim_gauss_jnp(a, b, mask, *args)
    return _ssim_gauss(np, a, b, mask, *args)


def _formula(mu1, mu2, e11, e22, e12, c1, c2, cov_norm=None):
    """The SSIM map from local means ``mu`` and local second moments ``e``."""
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = e11 - mu1_sq
    s2 = e22 - mu2_sq
    s12 = e12 - mu12
    if cov_norm is not None:
        s1, s2, s12 = cov_norm * s1, cov_norm * s2, cov_norm * s12
    return ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))


def _check_size(a, k, what="ssim"):
    h, w = a.shape[-3], a.shape[-2]
    if min(h, w) < k:
        raise ValueError(f"{what}: images of {h}x{w} (after cropping) are smaller than the {k}x{k} window")


def _filter_valid_np(x, g):
    """Separable 'valid' correlation of (..., H, W, C) with taps g along H and W (float64)."""
    k = len(g)
    h, w = x.shape[-3], x.shape[-2]
    y = sum(g[i] * x[..., i : i + h - k + 1, :, :] for i in range(k))
    return sum(g[i] * y[..., :, i : i + w - k + 1, :] for i in range(k))


def _filter_valid_jnp(x, g):
    """Same as :func:`_filter_valid_np` with two depthwise convolutions (float32, HIGHEST)."""
    lead, (h, w, c), k = x.shape[:-3], x.shape[-3:], len(g)
    taps = jnp.asarray(g, x.dtype)
    y = x.reshape((-1, h, w, c))
    for kernel in (jnp.tile(taps.reshape(k, 1, 1, 1), (1, 1, 1, c)), jnp.tile(taps.reshape(1, k, 1, 1), (1, 1, 1, c))):
        y = jax.lax.conv_general_dilated(
            y,
            kernel,
            (1, 1),
            "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=c,
            precision=jax.lax.Precision.HIGHEST,
        )
    return y.reshape(lead + y.shape[1:])


def _ssim_gauss(xp, a, b, mask, data_range, crop_border, y_channel, window_size, sigma, reduction):
    a, b, mask = _prepare(xp, a, b, crop_border, y_channel, data_range, "ssim", mask)
    _check_size(a, window_size)
    g = gaussian_kernel_1d(window_size, sigma)
    filt = _filter_valid_np if xp is np else _filter_valid_jnp
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    smap = _formula(filt(a, g), filt(b, g), filt(a * a, g), filt(b * b, g), filt(a * b, g), c1, c2)
    if reduction == "map":
        return smap
    axes = _axes(smap.ndim, reduction)
    if mask is None:
        return xp.mean(smap, axis=axes)  # 'image' = mean over channels of per-channel means
    r = window_size // 2
    h, w = mask.shape[-3], mask.shape[-2]
    m = xp.broadcast_to(mask[..., r : h - r, r : w - r, :], smap.shape).astype(smap.dtype)
    return xp.sum(smap * m, axis=axes) / xp.maximum(xp.sum(m, axis=axes), 1.0)


_ssim_gauss_jnp = jax.jit(functools.partial(_ssim_gauss, jnp), static_argnums=tuple(range(3, 9)))


def _box_mean_valid(x: np.ndarray, k: int) -> np.ndarray:
    """Mean over every k x k window fully inside x (H, W) -> (H-k+1, W-k+1), float64 (summed-area table)."""
    s = np.zeros((x.shape[0] + 1, x.shape[1] + 1), np.float64)
    np.cumsum(np.cumsum(x, 0), 1, out=s[1:, 1:])
    return (s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]) / float(k * k)


def _ssim_uniform(a, b, data_range, crop_border, y_channel, k, reduction):
    a, b, _ = _prepare(np, np.asarray(a), np.asarray(b), crop_border, y_channel, data_range, "ssim")
    _check_size(a, k)
    n = k * k
    cov_norm = n / (n - 1.0)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    lead = a.shape[:-3]
    maps = np.empty(lead + (a.shape[-3] - k + 1, a.shape[-2] - k + 1, a.shape[-1]), np.float64)
    values = np.empty(lead, np.float64)
    for idx in np.ndindex(*lead):
        vals = []
        for c in range(a.shape[-1]):
            x, y = a[idx][..., c], b[idx][..., c]
            s = _formula(
                _box_mean_valid(x, k),
                _box_mean_valid(y, k),
                _box_mean_valid(x * x, k),
                _box_mean_valid(y * y, k),
                _box_mean_valid(x * y, k),
                c1,
                c2,
                cov_norm,
            )
            maps[idx][..., c] = s
            vals.append(s.mean())
        values[idx] = np.mean(vals)
    if reduction == "map":
        return maps
    if reduction == "all":
        return float(values[()] if not lead else np.mean(values))
    if reduction == "sample" and len(lead) > 1:
        return np.mean(values, axis=tuple(range(1, len(lead))))
    return values if lead else values[()]


def _ssim_matlab(a, b, data_range, crop_border, y_channel, window_size, reduction):
    a, b, _ = _prepare(jnp, a, b, crop_border, y_channel, data_range, "ssim")
    if a.ndim != 4:
        raise ValueError(f"ssim: window='matlab' needs (N, H, W, C) arrays of the same shape, got {a.shape}")
    h, w = a.shape[1:3]
    per_sample = reduction != "all"
    axes = (1, 2, 3) if per_sample else (0, 1, 2, 3)
    if data_range is None:
        mx = jnp.max(a, axis=axes, keepdims=True)
        mn = jnp.min(a, axis=axes, keepdims=True)
        big = jnp.where(mx > 128, 255.0, 1.0)
        small = jnp.where(mn < -0.5, -1.0, 0.0)
        L = big - small
    else:
        L = jnp.float32(data_range)
    g = matlab_window(min(window_size, h, w))

    def axis_filter(x, ax):
        n_out = x.shape[ax] - len(g) + 1
        out = None
        for k, wk in enumerate(g):
            sl = [slice(None)] * x.ndim
            sl[ax] = slice(k, k + n_out)
            term = x[tuple(sl)] * jnp.float32(wk)
            out = term if out is None else out + term
        return out

    def blur(x):  # (N, H, W, C) volume over (H, W, C), replicate padding 5 on each axis
        x = jnp.pad(x, ((0, 0), (5, 5), (5, 5), (5, 5)), mode="edge")
        for ax in (3, 1, 2):
            x = axis_filter(x, ax)
        return x

    c1 = (0.01 * L) ** 2
    c2 = (0.03 * L) ** 2
    smap = _formula(blur(a), blur(b), blur(a * a), blur(b * b), blur(a * b), c1, c2)
    return jnp.mean(smap, axis=(1, 2, 3)) if per_sample else jnp.mean(smap)


def box_region(mask2d: np.ndarray, margin: int, min_side: int = BOX_MIN_SIDE):
    """(y0, y1, x0, x1) of the bounding box of ``mask2d`` (H, W) grown by ``margin``, each side at
    least ``min_side`` (clipped to the image); None for an empty mask."""
    ys, xs = np.nonzero(mask2d)
    if ys.size == 0:
        return None
    h, w = mask2d.shape
    y0, y1 = max(0, ys.min() - margin), min(h, ys.max() + 1 + margin)
    x0, x1 = max(0, xs.min() - margin), min(w, xs.max() + 1 + margin)
    if y1 - y0 < min_side:
        y0, y1 = max(0, min(y0, h - min_side)), min(h, max(y1, min_side))
    if x1 - x0 < min_side:
        x0, x1 = max(0, min(x0, w - min_side)), min(w, max(x1, min_side))
    return y0, y1, x0, x1


def _box_ssim(a, b, data_range, crop_border, y_channel, window, window_size, sigma, mask, margin, reduction):
    if reduction not in ("image", "all"):
        raise ValueError(f"ssim: box_margin supports the reductions 'image' and 'all', got {reduction!r}")
    if _xp(a, b, mask) is jnp:
        raise ValueError("ssim: box_margin needs numpy inputs (the crops differ per image)")
    a, b = np.asarray(a), np.asarray(b)
    mask = np.asarray(mask, bool)
    if mask.ndim == a.ndim:
        mask = mask[..., 0]
    if a.shape != b.shape or mask.shape != a.shape[:-1]:
        raise ValueError(f"ssim: images {a.shape}, {b.shape} and mask {mask.shape} do not match")
    lead = a.shape[:-3]
    values = np.full(lead, np.nan)
    for idx in np.ndindex(*lead):
        box = box_region(mask[idx], margin)
        if box is not None:
            y0, y1, x0, x1 = box
            values[idx] = float(
                ssim(
                    a[idx][y0:y1, x0:x1].astype(np.float64),
                    b[idx][y0:y1, x0:x1].astype(np.float64),
                    data_range,
                    crop_border,
                    y_channel,
                    window=window,
                    window_size=window_size,
                    sigma=sigma,
                )
            )
    if reduction == "image":
        return values if lead else values[()]
    vals = [float(v) for v in values.reshape(-1) if not np.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")
