"""Census (ternary) loss of RIFE ``model/loss.py`` ``Ternary`` (NHWC, pure jnp).

grey = 0.2989 R + 0.5870 G + 0.1140 B (channel 0 is taken as R); the 7x7 neighbourhood of every
pixel (zero padding) minus the centre, ``t / sqrt(0.81 + t^2)``; a robust Hamming distance
``mean_49(d / (0.1 + d))`` with ``d = (t0 - t1)^2``; a 1-pixel border set to 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["census_transform", "rgb_to_grey", "ternary_loss"]

GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)
PATCH_SIZE = 7


def rgb_to_grey(rgb: jax.Array) -> jax.Array:
    """(..., 3) -> (..., 1) with RIFE's weights (0.2989, 0.5870, 0.1140)."""
    if rgb.shape[-1] != 3:
        raise ValueError(f"rgb_to_grey: expected 3 channels, got shape {tuple(rgb.shape)}")
    r, g, b = rgb[..., 0:1], rgb[..., 1:2], rgb[..., 2:3]
    return GREY_WEIGHTS[0] * r + GREY_WEIGHTS[1] * g + GREY_WEIGHTS[2] * b


def census_transform(grey: jax.Array, patch_size: int = PATCH_SIZE) -> jax.Array:
    """(N, H, W, 1) -> (N, H, W, patch_size^2): ``t / sqrt(0.81 + t^2)``, t = neighbour - centre.

    Neighbour o is at offset (o // 7 - 3, o % 7 - 3) (the official one-hot ``eye(49)`` kernels);
    outside the image the neighbour is 0.
    """
    if grey.ndim != 4 or grey.shape[-1] != 1:
        raise ValueError(f"census_transform: expected (N, H, W, 1), got shape {tuple(grey.shape)}")
    p = patch_size // 2
    patches = lax.conv_general_dilated_patches(
        grey,
        (patch_size, patch_size),
        (1, 1),
        ((p, p), (p, p)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=lax.Precision.HIGHEST,
    )
    t = patches - grey
    return t / jnp.sqrt(0.81 + jnp.square(t))


def ternary_loss(img0: jax.Array, img1: jax.Array) -> jax.Array:
    """RIFE ``Ternary`` map (N, H, W, 1): robust Hamming distance of the census transforms, 0 on a 1-px border.

    ``img0``/``img1`` (N, H, W, 3) RGB (the official range is [0, 1]); the caller reduces the map.
    """
    if img0.shape != img1.shape or img0.ndim != 4:
        raise ValueError(
            f"ternary_loss: img0 {tuple(img0.shape)} and img1 {tuple(img1.shape)} must be the same (N, H, W, 3) shape"
        )
    n = img0.shape[0]
    t = census_transform(rgb_to_grey(jnp.concatenate([img0, img1], axis=0)))
    d = jnp.square(t[:n] - t[n:])
    dist = jnp.mean(d / (0.1 + d), axis=-1, keepdims=True)
    h, w = img0.shape[1], img0.shape[2]
    valid = jnp.zeros((h, w), dist.dtype).at[1 : h - 1, 1 : w - 1].set(1.0)
    return dist * valid[None, :, :, None]
