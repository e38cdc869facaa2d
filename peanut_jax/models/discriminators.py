"""Discriminators.

``TPatchGANDiscriminator``: E2FGVI's (and FuseFormer/STTN's) temporal PatchGAN.  Six 3D
convolutions with kernel (3, 5, 5) and stride (1, 2, 2), channels in -> nf -> 2nf -> 4nf -> 4nf ->
4nf -> 4nf (nf = 32), padding 1 for the first and (1, 2, 2) for the others, LeakyReLU(0.2) between
them; the first five are spectral-normalised without bias (torch ``spectral_norm`` semantics, see
``peanut_jax.layers.spectral_norm``), the last is a plain convolution with bias.  No sigmoid for the
hinge loss (``use_sigmoid=False``, the official default for hinge).

``module.apply(variables, clips, update_stats=False)``: ``clips`` (B, T, H, W, C) (E2FGVI feeds
frames in [-1, 1]) -> (B, T, H', W', 4nf) patch scores (the strided-conv sizes: 240x432 -> 4x7).
Variables: ``params`` (``conv_{0,2,4,6,8,10}/kernel``, ``conv_10/bias``) and ``spectral``
(``conv_{0..8}/{u,v}``).  Training (torch ``train()`` mode) is ``update_stats=True`` with
``mutable=['spectral']``: one power iteration per call, the new u, v returned.

Official initialisation: normal(0, 0.02) weights, zero bias.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from peanut_jax.layers.conv import leaky_relu
from peanut_jax.layers.spectral_norm import Conv3d

Dtype = Any


class TPatchGANDiscriminator(nn.Module):
    in_channels: int = 3
    nf: int = 32
    use_sigmoid: bool = False
    use_spectral_norm: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, clips, update_stats: bool = False):
        if clips.ndim != 5 or clips.shape[-1] != self.in_channels:
            raise ValueError(
                f"TPatchGANDiscriminator: clips must be (B, T, H, W, {self.in_channels}), got {clips.shape}"
            )
        nf = self.nf
        chans = (nf, 2 * nf, 4 * nf, 4 * nf, 4 * nf, 4 * nf)
        x = clips.astype(self.dtype)
        for li, c in enumerate(chans):
            last = li == len(chans) - 1
            sn = self.use_spectral_norm and not last
            x = Conv3d(
                c,
                (3, 5, 5),
                (1, 2, 2),
                1 if li == 0 else (1, 2, 2),
                use_bias=not sn,
                spectral_norm=sn,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_init=nn.initializers.normal(0.02),
                bias_init=nn.initializers.zeros,
                precision=self.precision,
                name=f"conv_{2 * li}",
            )(x, update_stats=update_stats)
            if not last:
                x = leaky_relu(x, 0.2)
        if self.use_sigmoid:
            x = jax.nn.sigmoid(x)
        return x
