"""Evaluation metrics, each defined once: PSNR / SSIM (every protocol as arguments), EPE, warping error,
J&F of the DAVIS-2017 protocol (``metrics.jf``)."""

from peanut_jax.metrics.flow import (
    consistency_occlusion,
    epe,
    out_of_frame,
    warping_error,
)
from peanut_jax.metrics.image import (
    box_region,
    gaussian_kernel_1d,
    psnr,
    rgb_to_y,
    ssim,
)
from peanut_jax.metrics.jf import f_measure, j_and_f, j_and_f_many, jaccard
from peanut_jax.metrics.ssim_matlab import ssim_matlab

__all__ = [
    "box_region",
    "consistency_occlusion",
    "epe",
    "f_measure",
    "gaussian_kernel_1d",
    "j_and_f",
    "j_and_f_many",
    "jaccard",
    "out_of_frame",
    "psnr",
    "rgb_to_y",
    "ssim",
    "ssim_matlab",
    "warping_error",
]
