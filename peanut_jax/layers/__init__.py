"""Small Flax building blocks with PyTorch semantics (explicit padding, per-channel PReLU, ...)."""
from peanut_jax.layers.conv import Conv2d, ConvTranspose2d, PReLU, leaky_relu

__all__ = ["Conv2d", "ConvTranspose2d", "PReLU", "leaky_relu"]
