"""``ssim_matlab``: RIFE's ``pytorch_msssim`` SSIM (Vimeo/UCF benchmarks, scene-cut rule), NHWC.

A named protocol of the one SSIM, :func:`peanut_jax.metrics.image.ssim` with ``window='matlab'``
(the RGB channels as a volume, 11x11x11 Gaussian after replicate padding 5, data-dependent range).
"""

from __future__ import annotations

import numpy as np

from peanut_jax.metrics.image import matlab_window as gaussian_window
from peanut_jax.metrics.image import ssim

__all__ = ["gaussian_window", "ssim_matlab"]


def ssim_matlab(img1, img2, val_range: float | None = None, window_size: int = 11, reduce: str = "mean"):
    """SSIM of two NHWC batches (N, H, W, C).

    ``reduce='mean'``: one scalar over the batch (the official return value; the data-dependent
    range is taken over the whole ``img1`` batch).  ``reduce='none'``: one value per sample (range
    per sample), i.e. what N separate official calls return.
    """
    if reduce not in ("mean", "none"):
        raise ValueError(f"ssim_matlab: reduce must be 'mean' or 'none', got {reduce!r}")
    if np.ndim(img1) != 4 or np.shape(img1) != np.shape(img2):
        raise ValueError(
            f"ssim_matlab: expected two NHWC arrays of the same shape, got {np.shape(img1)} and {np.shape(img2)}"
        )
    return ssim(
        img1,
        img2,
        val_range,
        window="matlab",
        window_size=window_size,
        reduction="all" if reduce == "mean" else "sample",
    )
