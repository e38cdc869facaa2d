"""SPyNet optical flow (Ranjan & Black, CVPR 2017) in the two forms the official projects use.

``variant='mmagic'``
    The mmagic / BasicVSR++ / E2FGVI SPyNet: ImageNet normalisation, a fixed 6-level pyramid of
    2x2 average pools, resize of the input to a multiple of 32 (bilinear, align_corners=False)
    and of the flow back to the input size, flow upsampling x2 with align_corners=True, border
    warping.  Checkpoint keys ``basic_module.{L}.basic_module.{j}.conv.*``.
``variant='sniklaus'``
    sniklaus/pytorch-spynet ``run.py``: the same basic modules, but the pyramid depth is dynamic
    (pool while a side exceeds 32, at most 5 times), the coarsest flow starts at half the coarsest
    size and odd sizes are met by replicate-padding the upsampled flow.  The official network reads
    BGR and flips it to RGB in its ``Preprocess``; this module takes RGB directly, so the two flips
    cancel.  With ``internal_resize=True`` (default) it wraps the network like the official
    ``estimate()``: resize to a multiple of 32 and back, rescaling the flow.

``module.apply(variables, ref, supp) -> flow``: ``ref``/``supp`` (N, H, W, 3) RGB in [0, 1]; flow
(N, H, W, 2) from ``ref`` to ``supp`` (it warps ``supp`` onto ``ref``), in pixels, x first.
Flows stay float32 when ``dtype`` is bfloat16 (only the convolutions run in ``dtype``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from peanut_jax.layers import Conv2d
from peanut_jax.ops import avg_pool2d, interpolate, warp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VARIANTS = ("mmagic", "sniklaus")
NUM_LEVELS = 6
MIN_SIZE = 1  # the mmagic variant resizes internally; callers (BasicVSR++) impose their own minimum


class SPyNetBasicModule(nn.Module):
    """Five 7x7 convolutions 8->32->64->32->16->2 with ReLU between them."""

    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        chans = (32, 64, 32, 16, 2)
        for j, c in enumerate(chans):
            x = Conv2d(c, 7, padding=3, dtype=self.dtype, param_dtype=self.param_dtype, name=f"conv_{j}")(x)
            if j < len(chans) - 1:
                x = nn.relu(x)
        return x.astype(jnp.float32)


def ceil32(v: int) -> int:
    return v if v % 32 == 0 else 32 * (v // 32 + 1)


class SPyNet(nn.Module):
    variant: str = "mmagic"
    internal_resize: bool = True  # sniklaus only: False runs the bare ``Network.forward``
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def _normalise(self, x):
        mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
        std = jnp.asarray(IMAGENET_STD, jnp.float32)
        if self.variant == "sniklaus":
            return (x - mean) * jnp.asarray([1.0 / s for s in IMAGENET_STD], jnp.float32)
        return (x - mean) / std

    @nn.compact
    def __call__(self, ref, supp):
        if self.variant not in VARIANTS:
            raise ValueError(f"SPyNet variant must be one of {VARIANTS}, got {self.variant!r}")
        if ref.shape != supp.shape or ref.ndim != 4 or ref.shape[-1] != 3:
            raise ValueError(f"SPyNet: ref and supp must both be (N, H, W, 3); got {ref.shape} and {supp.shape}")
        modules = [SPyNetBasicModule(self.dtype, self.param_dtype, name=f"basic_module_{i}") for i in range(NUM_LEVELS)]
        ref = ref.astype(jnp.float32)
        supp = supp.astype(jnp.float32)
        if self.variant == "sniklaus" and not self.internal_resize:
            return self._sniklaus_network(modules, ref, supp)
        _, h, w, _ = ref.shape
        h_up, w_up = ceil32(h), ceil32(w)
        ref_r = interpolate(ref, size=(h_up, w_up), mode="bilinear", align_corners=False)
        supp_r = interpolate(supp, size=(h_up, w_up), mode="bilinear", align_corners=False)
        if self.variant == "mmagic":
            flow = self._mmagic_pyramid(modules, ref_r, supp_r)
        else:
            flow = self._sniklaus_network(modules, ref_r, supp_r)
        flow = interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        scale = jnp.asarray([float(w) / float(w_up), float(h) / float(h_up)], jnp.float32)
        return flow * scale

    def _mmagic_pyramid(self, modules, ref, supp):
        n, h, w, _ = ref.shape
        refs = [self._normalise(ref)]
        supps = [self._normalise(supp)]
        for _ in range(NUM_LEVELS - 1):
            refs.append(avg_pool2d(refs[-1], 2, 2, count_include_pad=False))
            supps.append(avg_pool2d(supps[-1], 2, 2, count_include_pad=False))
        refs, supps = refs[::-1], supps[::-1]
        flow = jnp.zeros((n, h // 32, w // 32, 2), jnp.float32)
        for level in range(NUM_LEVELS):
            if level == 0:
                flow_up = flow
            else:
                flow_up = interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2.0
            x = jnp.concatenate([refs[level], warp(supps[level], flow_up, padding="border"), flow_up], axis=-1)
            flow = flow_up + modules[level](x)
        return flow

    def _sniklaus_network(self, modules, ref, supp):
        refs = [self._normalise(ref)]
        supps = [self._normalise(supp)]
        for _ in range(NUM_LEVELS - 1):
            if refs[0].shape[1] > 32 or refs[0].shape[2] > 32:
                refs.insert(0, avg_pool2d(refs[0], 2, 2, count_include_pad=False))
                supps.insert(0, avg_pool2d(supps[0], 2, 2, count_include_pad=False))
        if self.is_initializing():
            # small inputs use fewer levels; create every level's parameters all the same
            for m in modules[len(refs) :]:
                m(jnp.zeros((1, 8, 8, 8), jnp.float32))
        n, h0, w0, _ = refs[0].shape
        flow = jnp.zeros((n, h0 // 2, w0 // 2, 2), jnp.float32)
        for level in range(len(refs)):
            up = interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2.0
            if up.shape[1] != refs[level].shape[1]:
                up = jnp.pad(up, ((0, 0), (0, 1), (0, 0), (0, 0)), mode="edge")
            if up.shape[2] != refs[level].shape[2]:
                up = jnp.pad(up, ((0, 0), (0, 0), (0, 1), (0, 0)), mode="edge")
            x = jnp.concatenate([refs[level], warp(supps[level], up, padding="border"), up], axis=-1)
            flow = modules[level](x) + up
        return flow
