"""Small Flax building blocks with PyTorch semantics (explicit padding, per-channel PReLU, ...)."""

from peanut_jax.layers.conv import Conv2d, ConvTranspose2d, PReLU, leaky_relu
from peanut_jax.layers.deform_align import SecondOrderDeformableAlignment
from peanut_jax.layers.linear import layer_norm, linear
from peanut_jax.layers.spectral_norm import Conv3d, l2_normalize, power_iteration, spectral_sigma

__all__ = [
    "Conv2d",
    "ConvTranspose2d",
    "Conv3d",
    "PReLU",
    "SecondOrderDeformableAlignment",
    "l2_normalize",
    "layer_norm",
    "leaky_relu",
    "linear",
    "power_iteration",
    "spectral_sigma",
]
