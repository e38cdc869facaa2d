"""Pure-jnp operators shared by every model (NHWC, torch-compatible semantics)."""

from peanut_jax.ops.attention import attention
from peanut_jax.ops.deform_conv import modulated_deform_conv2d
from peanut_jax.ops.patches import fold, pixel_shuffle, pixel_unshuffle, unfold
from peanut_jax.ops.resize import avg_pool2d, interpolate, resize_bilinear
from peanut_jax.ops.rope import apply_rope, axial_rope_tables
from peanut_jax.ops.warp import base_grid, sample_bilinear, warp

__all__ = [
    "apply_rope",
    "attention",
    "avg_pool2d",
    "axial_rope_tables",
    "base_grid",
    "fold",
    "interpolate",
    "modulated_deform_conv2d",
    "pixel_shuffle",
    "pixel_unshuffle",
    "resize_bilinear",
    "sample_bilinear",
    "unfold",
    "warp",
]
