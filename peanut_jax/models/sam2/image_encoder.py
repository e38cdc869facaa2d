"""SAM 2 image encoder: Hiera trunk + FPN neck (``sam2/modeling/backbones/image_encoder.py``), NHWC.

``FpnNeck``: 1x1 lateral convs ``convs_{i}`` to ``d_model``, with ``convs_0`` on the **lowest**
resolution (the trunk's last stage) and ``convs_{n-1}`` on stride 4.  Going from low to high
resolution, a level in ``fpn_top_down_levels`` adds the nearest x2 upsampling of the previous
(lower-resolution) level's output to its lateral (the sum in float32, like the official
``prev_features.to(float32)``, then cast to ``dtype``); other levels are lateral only.  Every level gets the normalised
sine position encoding ``sine_2d(h, w, d_model)``.

``ImageEncoder`` returns the official ``forward`` dict after dropping the ``scalp`` lowest levels:
``backbone_fpn`` (highest resolution first: [s4, s8, s16] for scalp=1), ``vision_pos_enc`` (the
matching encodings, each (1, h, w, d_model): the same for every image, broadcast against the
batch) and ``vision_features`` = ``backbone_fpn[-1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from peanut_jax.layers.conv import Conv2d
from peanut_jax.models.sam2.config import SAM2Config
from peanut_jax.models.sam2.hiera import Hiera
from peanut_jax.models.sam2.position_encoding import sine_2d

Dtype = Any

__all__ = ["FpnNeck", "ImageEncoder"]


def upsample_nearest2x(x):
    """``F.interpolate(x, scale_factor=2.0, mode='nearest')`` on NHWC ``x`` (a pixel repeat)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class FpnNeck(nn.Module):
    """Official ``FpnNeck`` (fuse 'sum', nearest top-down).  ``backbone_channel_list`` is lowest
    resolution first; ``__call__`` takes the trunk outputs highest resolution first."""

    d_model: int
    backbone_channel_list: tuple[int, ...]
    fpn_top_down_levels: tuple[int, ...] | None = None  # None = all levels
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    def setup(self):
        self.convs = [
            Conv2d(
                self.d_model,
                1,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                precision=self.precision,
                name=f"convs_{i}",
            )
            for i in range(len(self.backbone_channel_list))
        ]

    def __call__(self, xs: Sequence[jnp.ndarray]):
        """(features, pos): two lists, highest resolution first, one entry per level; features
        (B, h, w, d_model), pos (1, h, w, d_model)."""
        n = len(self.convs) - 1
        if len(xs) != n + 1:
            raise ValueError(f"FpnNeck: expected {n + 1} feature maps, got {len(xs)}")
        levels = range(n + 1) if self.fpn_top_down_levels is None else tuple(self.fpn_top_down_levels)
        out, pos = [None] * (n + 1), [None] * (n + 1)
        prev = None
        for i in range(n, -1, -1):
            lateral = self.convs[n - i](xs[i])
            if i in levels and prev is not None:
                prev = (lateral.astype(jnp.float32) + upsample_nearest2x(prev.astype(jnp.float32))).astype(self.dtype)
            else:
                prev = lateral
            out[i] = prev
            pos[i] = sine_2d(*prev.shape[1:3], self.d_model, dtype=prev.dtype)[None]
        return out, pos


class ImageEncoder(nn.Module):
    """``trunk`` (Hiera) + ``neck`` (FpnNeck) + scalp.  Input: normalised image (B, S, S, 3) NHWC."""

    cfg: SAM2Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        self.trunk = Hiera(self.cfg.hiera, name="trunk", **kw)
        self.neck = FpnNeck(
            self.cfg.d_model, self.cfg.backbone_channel_list, self.cfg.fpn_top_down_levels, name="neck", **kw
        )

    def neck_from_trunk(self, stage_feats: Sequence[jnp.ndarray]) -> dict:
        """The output dict from the 4 trunk stage maps (highest resolution first), e.g. stage
        features modified by an adapter outside the trunk (SAMWISE)."""
        feats, pos = self.neck(stage_feats)
        if self.cfg.scalp > 0:
            feats, pos = feats[: -self.cfg.scalp], pos[: -self.cfg.scalp]
        return {"vision_features": feats[-1], "vision_pos_enc": pos, "backbone_fpn": feats}

    def embed(self, img):
        """``trunk.embed``: patch + position embedding."""
        return self.trunk.embed(img)

    def run_blocks(self, x, start: int, end: int):
        """``trunk.run_blocks``: Hiera blocks start..end-1."""
        return self.trunk.run_blocks(x, start, end)

    def __call__(self, img) -> dict:
        return self.neck_from_trunk(self.trunk(img))
