"""SAM 2 memory encoder (NHWC): fuses a frame's stride-16 features with its predicted mask.

Official ``MemoryEncoder`` (``sam2/modeling/memory_encoder.py``) in the configuration of every
official SAM 2 / 2.1 model:

* ``mask_downsampler.encoder``: 4 x [Conv 3x3 stride 2 pad 1 -> LayerNorm2d (eps 1e-6) -> GELU]
  (total stride 16; each conv multiplies the channels by stride^2 = 4: 1 -> 4 -> 16 -> 64 -> 256,
  whatever the model width), then a 1x1 conv to ``cfg.fuser_dim``.  Sequential indices
  0/1/(2) 3/4/(5) 6/7/(8) 9/10/(11) 12, kept as submodule names ``encoder_{i}``.
* ``pix_feat_proj``: 1x1 conv on the raw stride-16 features; the downsampled mask is added.
* ``fuser.layers_{j}`` (``cfg.fuser_layers`` ConvNeXt blocks): depthwise 7x7 -> LayerNorm (1e-6)
  -> ``pwconv1`` (x4) -> GELU -> ``pwconv2`` -> ``* gamma`` -> residual.
* ``out_proj``: 1x1 conv to ``cfg.mem_dim`` (absent when ``mem_dim == fuser_dim``).
* position encoding: ``sine_2d(h, w, mem_dim)`` of the output grid, broadcast over the batch.

``masks`` are image-size (B, H, W, 1); they go through a sigmoid unless ``skip_mask_sigmoid``
(the SAM 2 model passes already-scaled masks, ``sigmoid * 20 - 10``, with ``skip_mask_sigmoid=True``).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from peanut_jax.layers.conv import Conv2d
from peanut_jax.layers.linear import layer_norm, linear
from peanut_jax.models.sam2.config import SAM2Config
from peanut_jax.models.sam2.position_encoding import sine_2d

Dtype = Any


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)


def _ln(name, dtype, param_dtype):
    return layer_norm(1e-6, name=name, dtype=dtype, param_dtype=param_dtype)


class MaskDownSampler(nn.Module):
    """(B, H, W, 1) -> (B, H/total_stride, W/total_stride, embed_dim)."""

    embed_dim: int = 256
    kernel_size: int = 3
    stride: int = 2
    padding: int = 1
    total_stride: int = 16
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        num_layers = int(math.log2(self.total_stride) // math.log2(self.stride))
        if self.stride**num_layers != self.total_stride:
            raise ValueError(f"total_stride {self.total_stride} is not a power of stride {self.stride}")
        conv = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        chans, idx = 1, 0
        for _ in range(num_layers):
            chans *= self.stride**2
            x = Conv2d(chans, self.kernel_size, self.stride, self.padding, name=f"encoder_{idx}", **conv)(x)
            x = _gelu(_ln(f"encoder_{idx + 1}", self.dtype, self.param_dtype)(x))
            idx += 3
        return Conv2d(self.embed_dim, 1, name=f"encoder_{idx}", **conv)(x)


class CXBlock(nn.Module):
    """ConvNeXt block: dwconv 7x7 -> LN (1e-6) -> Linear x4 -> GELU -> Linear -> * gamma -> + input."""

    dim: int
    kernel_size: int = 7
    padding: int = 3
    layer_scale_init_value: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        y = Conv2d(
            self.dim,
            self.kernel_size,
            padding=self.padding,
            groups=self.dim,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
            name="dwconv",
        )(x)
        y = _ln("norm", self.dtype, self.param_dtype)(y)
        y = linear(
            4 * self.dim,
            self.dim,
            name="pwconv1",
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
        )(y)
        y = _gelu(y)
        y = linear(
            self.dim,
            4 * self.dim,
            name="pwconv2",
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
        )(y)
        gamma = self.param(
            "gamma", nn.initializers.constant(self.layer_scale_init_value), (self.dim,), self.param_dtype
        )
        return x + gamma.astype(y.dtype) * y


class Fuser(nn.Module):
    dim: int
    num_layers: int = 2
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        for j in range(self.num_layers):
            x = CXBlock(
                self.dim, dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision, name=f"layers_{j}"
            )(x)
        return x


class MemoryEncoder(nn.Module):
    """``(pix_feat (B,h,w,d), masks (B,H,W,1), skip_mask_sigmoid) -> (features (B,h,w,mem_dim),
    pos (B,h,w,mem_dim))`` with H, W = 16 h, 16 w."""

    cfg: SAM2Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, pix_feat, masks, skip_mask_sigmoid: bool = False):
        cfg = self.cfg
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        masks = masks.astype(self.dtype)
        if not skip_mask_sigmoid:
            masks = jax.nn.sigmoid(masks)
        masks = MaskDownSampler(cfg.fuser_dim, name="mask_downsampler", **kw)(masks)
        x = Conv2d(cfg.fuser_dim, 1, name="pix_feat_proj", **kw)(pix_feat.astype(self.dtype))
        if x.shape != masks.shape:
            raise ValueError(
                f"features {x.shape} and downsampled masks {masks.shape} differ (masks must be 16x the feature size)"
            )
        x = Fuser(cfg.fuser_dim, cfg.fuser_layers, name="fuser", **kw)(x + masks)
        if cfg.mem_dim != cfg.fuser_dim:
            x = Conv2d(cfg.mem_dim, 1, name="out_proj", **kw)(x)
        b, h, w, c = x.shape
        pos = jnp.broadcast_to(sine_2d(h, w, c, dtype=x.dtype), (b, h, w, c))
        return x, pos
