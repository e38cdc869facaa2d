"""Video super-resolution degradations (numpy, host side): BI (MATLAB bicubic) and BD (blur + subsample).

``imresize``
    MATLAB ``imresize(img, scale)`` / ``imresize(img, [h w])`` with the default bicubic kernel
    (Keys, a = -0.5), which the VSR benchmarks (REDS, Vimeo-90K, Vid4 "BI") were made with and
    which differs from PIL / torch / OpenCV bicubic: when *downscaling*, the kernel is stretched by
    1/scale (antialiasing), borders are handled by symmetric (edge-repeating) index reflection,
    weights are normalised per output pixel, and the axis with the smaller scale is resized first.
    Computed in float64 like MATLAB; uint8 input gives rounded, clipped uint8 output, float input
    float output (not clipped).  mmagic's ``MATLABLikeResize`` is the same algorithm with float32
    weights (differences ~1e-6).
``bd_downsample``
    The "BD" degradation of the BasicVSR papers: Gaussian blur with sigma 1.6, then keep every
    4th pixel.  ``variant='matlab'`` (default): a 13x13 kernel (``fspecial('gaussian', 13, 1.6)``),
    ``imfilter(..., 'replicate')``, ``lr = blurred(1:4:end, 1:4:end)``.  ``variant='mmagic'``:
    mmagic's ``tools/dataset_converters/vimeo90k`` ``bd_downsample`` (a 12x12 kernel on a
    half-pixel-centred grid, replicate border, samples at 1, 5, 9, ... so that each LR pixel is
    the blur at the centre of its 4x4 block, and ``[1:-1:4]`` slicing).

Images are (H, W) or (H, W, C); a leading frame axis (T, H, W, C) is accepted by
:func:`degrade_clip`.  :func:`degrade_uint8` is the official LR of a dataset frame,
:func:`bicubic_upsample` the bicubic baseline of an LR clip.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "bd_downsample",
    "bicubic_upsample",
    "cubic_kernel",
    "degrade_clip",
    "degrade_uint8",
    "gaussian_kernel1d",
    "imresize",
    "resize_weights",
]


def cubic_kernel(x, a: float = -0.5):
    """Keys cubic convolution kernel (MATLAB uses a = -0.5)."""
    x = np.abs(np.asarray(x, np.float64))
    x2, x3 = x * x, x * x * x
    return ((a + 2) * x3 - (a + 3) * x2 + 1) * (x <= 1) + (a * x3 - 5 * a * x2 + 8 * a * x - 4 * a) * (
        (x > 1) & (x <= 2)
    )


def resize_weights(in_len: int, out_len: int, scale: float, kernel_width: float = 4.0, antialias: bool = True):
    """MATLAB ``contributions``: (weights (out, P), indices (out, P)) along one axis, 0-based indices."""
    if scale < 1 and antialias:

        def h(x):
            return scale * cubic_kernel(scale * x)

        width = kernel_width / scale
    else:
        h = cubic_kernel
        width = kernel_width
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate of each output pixel
    left = np.floor(u - width / 2)
    p = int(math.ceil(width)) + 2
    ind = left[:, None] + np.arange(p)[None, :]  # 1-based
    weights = h(u[:, None] - ind)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # symmetric (edge-repeating) reflection of out-of-range indices, as MATLAB
    aux = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    indices = aux[np.mod(ind.astype(np.int64) - 1, aux.size)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], indices[:, keep]


def _resize_axis(img: np.ndarray, axis: int, weights: np.ndarray, indices: np.ndarray) -> np.ndarray:
    moved = np.moveaxis(img, axis, 0)  # (L, ...)
    out = np.zeros((weights.shape[0],) + moved.shape[1:], np.float64)
    for j in range(weights.shape[1]):
        w = weights[:, j].reshape((-1,) + (1,) * (moved.ndim - 1))
        out += w * moved[indices[:, j]]
    return np.moveaxis(out, 0, axis)


def imresize(
    img, scale: float | None = None, output_shape: tuple[int, int] | None = None, antialias: bool = True
) -> np.ndarray:
    """MATLAB-compatible bicubic ``imresize`` of an (H, W) or (H, W, C) image.

    Give ``scale`` (output size ``ceil(scale * size)``, as MATLAB) or ``output_shape`` (h, w).
    """
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize: image must be (H, W) or (H, W, C), got shape {img.shape}")
    if (scale is None) == (output_shape is None):
        raise ValueError("imresize: give exactly one of scale and output_shape")
    in_hw = img.shape[:2]
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"imresize: scale must be positive, got {scale}")
        scales = (float(scale), float(scale))
        out_hw = tuple(int(math.ceil(scale * s)) for s in in_hw)
    else:
        out_hw = tuple(int(s) for s in output_shape)
        if len(out_hw) != 2 or min(out_hw) < 1:
            raise ValueError(f"imresize: output_shape must be two positive ints, got {output_shape}")
        scales = tuple(o / i for o, i in zip(out_hw, in_hw))
    is_uint8 = img.dtype == np.uint8
    out = img.astype(np.float64)
    for axis in np.argsort(np.asarray(scales), kind="stable"):  # smaller scale first, as MATLAB
        axis = int(axis)
        if out_hw[axis] == in_hw[axis] and scales[axis] == 1.0:
            continue
        w, idx = resize_weights(in_hw[axis], out_hw[axis], scales[axis], antialias=antialias)
        out = _resize_axis(out, axis, w, idx)
    if is_uint8:
        return np.clip(np.round(out), 0, 255).astype(np.uint8)
    return out.astype(img.dtype) if np.issubdtype(img.dtype, np.floating) else out


def gaussian_kernel1d(size: int, sigma: float, centred_grid: bool = True) -> np.ndarray:
    """Normalised sampled Gaussian with ``size`` taps at positions -(size-1)/2 .. (size-1)/2."""
    pos = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    k = np.exp(-0.5 * (pos / sigma) ** 2)
    return k / k.sum()


_PAD_MODES = {"replicate": "edge", "symmetric": "symmetric", "reflect": "reflect"}


def _correlate_axis(img: np.ndarray, w: np.ndarray, anchor: int, axis: int, border: str) -> np.ndarray:
    """out[i] = sum_k w[k] * img[i + k - anchor] along ``axis``, borders padded by ``border``."""
    n = img.shape[axis]
    before, after = anchor, len(w) - 1 - anchor
    pad = [(0, 0)] * img.ndim
    pad[axis] = (before, after)
    padded = np.pad(img, pad, mode=_PAD_MODES[border])
    out = np.zeros(img.shape, np.float64)
    for k, wk in enumerate(w):
        out += wk * np.take(padded, np.arange(k, k + n), axis=axis)
    return out


def bd_downsample(
    img,
    scale: int = 4,
    sigma: float = 1.6,
    variant: str = "matlab",
    kernel_size: int | None = None,
    border: str = "replicate",
) -> np.ndarray:
    """BD degradation of an (H, W) or (H, W, C) image: Gaussian blur, then subsample by ``scale``.

    ``variant='matlab'``: ``kernel_size`` (default 13) odd taps centred on the pixel, samples at
    0, scale, 2*scale, ... (MATLAB ``1:scale:end``).  ``variant='mmagic'``: mmagic's converter
    (kernel size ``ceil(3*sigma)*2+2``, half-pixel-centred, anchor ``(size-1)//2``, samples
    ``[scale//2-1 : -scale//2+1 : scale]``).  ``border``: 'replicate' (default, both variants),
    'symmetric' or 'reflect'.  uint8 input gives rounded uint8 output; float input float64.
    """
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"bd_downsample: image must be (H, W) or (H, W, C), got shape {img.shape}")
    if border not in _PAD_MODES:
        raise ValueError(f"bd_downsample: border must be one of {sorted(_PAD_MODES)}, got {border!r}")
    if int(scale) != scale or scale < 1:
        raise ValueError(f"bd_downsample: scale must be a positive integer, got {scale}")
    scale = int(scale)
    is_uint8 = img.dtype == np.uint8
    x = img.astype(np.float64)
    if variant == "matlab":
        size = 13 if kernel_size is None else int(kernel_size)
        if size % 2 == 0:
            raise ValueError(f"bd_downsample(variant='matlab'): kernel_size must be odd, got {size}")
        anchor = size // 2
        start, stop = 0, None
    elif variant == "mmagic":
        size = math.ceil(sigma * 3) * 2 + 2 if kernel_size is None else int(kernel_size)
        anchor = (size - 1) // 2
        start, stop = scale // 2 - 1, -(scale // 2) + 1
        stop = stop if stop != 0 else None
    else:
        raise ValueError(f"bd_downsample: variant must be 'matlab' or 'mmagic', got {variant!r}")
    k = gaussian_kernel1d(size, sigma)
    for axis in (0, 1):
        x = _correlate_axis(x, k, anchor, axis, border)
    x = x[start:stop:scale, start:stop:scale]
    if is_uint8:
        return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)
    return x


def degrade_clip(frames, kind: str = "BI", scale: int = 4, **kw) -> np.ndarray:
    """Degrade every frame of a (T, H, W, C) clip: ``kind`` 'BI' (``imresize(1/scale)``) or 'BD'."""
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise ValueError(f"degrade_clip: frames must be (T, H, W, C), got shape {frames.shape}")
    if kind == "BI":
        return np.stack([imresize(f, 1.0 / scale, **kw) for f in frames])
    if kind == "BD":
        return np.stack([bd_downsample(f, scale, **kw) for f in frames])
    raise ValueError(f"degrade_clip: kind must be 'BI' or 'BD', got {kind!r}")


def degrade_uint8(gt: np.ndarray, kind: str, scale: int = 4) -> np.ndarray:
    """The official LR of a uint8 (H, W, 3) GT frame: ``'BI'`` MATLAB ``imresize(gt, 1/scale)``
    (uint8 in, rounded uint8 out) or ``'BD'`` Gaussian blur sigma 1.6 + subsampling (MATLAB variant)."""
    h, w = gt.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"GT frame of {h}x{w} is not divisible by the scale {scale}")
    if kind == "BI":
        return imresize(gt, 1.0 / scale)
    if kind == "BD":
        return bd_downsample(gt, scale)
    raise ValueError(f"degradation must be 'BI' or 'BD', got {kind!r}")


def bicubic_upsample(lq: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB bicubic ``imresize(lq, scale)`` of float (T, h, w, 3) frames, clamped to [0, 1] (float32):
    the baseline a super-resolution network must beat."""
    out = np.stack([imresize(np.asarray(f, np.float64), float(scale)) for f in lq])
    return np.clip(out, 0.0, 1.0).astype(np.float32)
