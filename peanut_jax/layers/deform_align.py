"""Second-order flow-guided deformable alignment (BasicVSR++, also used by E2FGVI), NHWC.

``SecondOrderDeformableAlignment(channels)`` aligns the concatenation of two propagated feature
maps (the previous one and the one before it, 2*C channels) to the current frame with a modulated
deformable convolution (mmcv ``ModulatedDeformConv2d`` semantics, 16 deform groups) whose offsets
are the two optical flows plus a learned residual bounded by ``max_residue_magnitude``:

1. ``out = conv_offset(concat[extra_feat, flow_1, flow_2])`` (four 3x3 convolutions, LeakyReLU 0.1
   between them; the last one outputs ``27 * deform_groups`` channels);
2. ``o1, o2, m = split(out, 3)``; ``offset = max_residue_magnitude * tanh(concat[o1, o2])``;
3. the first half of the offsets (deform groups ``0 .. G/2-1``, which read the first C input
   channels) gets ``flow_1`` added, the second half ``flow_2``, in the (dy, dx) tap order of the
   mmcv offset layout;
4. ``mask = sigmoid(m)``; ``out = modulated_deform_conv2d(x, offset, mask, kernel, bias)``.

Flows are (N, H, W, 2) in pixels with channel 0 = x (the official NCHW flows have the same channel
order), ``extra_feat`` is the conditioning features (the official ``cond``: 3C channels), ``x`` the
2C features to align.  Parameters: ``kernel`` (3, 3, 2C, C) and ``bias`` (C,) of the deformable
convolution (torch ``weight``/``bias`` of the module) and ``conv_offset_{0,2,4,6}`` (torch
``conv_offset.{0,2,4,6}``).  The initialisation follows the official one: mmcv's
U(+-1/sqrt(2C*9)) for the deformable kernel, zero bias, and a zero last offset convolution, so that
at initialisation the offsets equal the flows and the mask is 0.5.  ``kernel_init`` (optional)
initialises ``conv_offset_{0,2,4}`` (with zero biases); E2FGVI's generator uses normal(0, 0.02).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from peanut_jax.layers.conv import Conv2d, leaky_relu
from peanut_jax.ops import modulated_deform_conv2d

Dtype = Any


class SecondOrderDeformableAlignment(nn.Module):
    """See the module docstring.  ``channels`` = C (the output channels; the input has 2C)."""

    channels: int
    deform_groups: int = 16
    max_residue_magnitude: float = 10.0
    kernel_size: int = 3
    padding: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None
    kernel_init: Callable | None = None  # conv_offset_{0,2,4} (None: torch default; E2FGVI: normal 0.02)

    @nn.compact
    def __call__(self, x, extra_feat, flow_1, flow_2):
        c = self.channels
        g = self.deform_groups
        k = self.kernel_size
        kk = k * k
        if x.shape[-1] != 2 * c:
            raise ValueError(f"{self.name}: x must have 2*channels = {2 * c} channels, got {x.shape[-1]}")
        if flow_1.shape[-1] != 2 or flow_2.shape[-1] != 2 or flow_1.shape[:3] != x.shape[:3]:
            raise ValueError(
                f"{self.name}: flows must be (N, H, W, 2) matching x {x.shape[:3]}; "
                f"got {flow_1.shape} and {flow_2.shape}"
            )
        if g % 2:
            raise ValueError(f"{self.name}: deform_groups must be even, got {g}")
        zeros = nn.initializers.zeros
        conv = lambda feats, name, init=self.kernel_init, b_init=None: Conv2d(  # noqa: E731
            feats,
            3,
            padding=1,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
            kernel_init=init,
            bias_init=b_init or (zeros if init is not None else None),
            name=name,
        )
        h = jnp.concatenate(
            [extra_feat.astype(self.dtype), flow_1.astype(self.dtype), flow_2.astype(self.dtype)], axis=-1
        )
        h = leaky_relu(conv(c, "conv_offset_0")(h), 0.1)
        h = leaky_relu(conv(c, "conv_offset_2")(h), 0.1)
        h = leaky_relu(conv(c, "conv_offset_4")(h), 0.1)
        out = conv(3 * g * kk, "conv_offset_6", zeros, zeros)(h).astype(jnp.float32)
        n_off = g * kk  # channels of o1 (= of o2, = of the mask)
        o12, m = out[..., : 2 * n_off], out[..., 2 * n_off :]
        offset = self.max_residue_magnitude * jnp.tanh(o12)
        half = n_off  # offsets of deform groups 0..G/2-1 (2*K per group)
        reps = half // 2
        f1 = jnp.tile(flow_1.astype(jnp.float32)[..., ::-1], (1, 1, 1, reps))  # (dy, dx) pairs
        f2 = jnp.tile(flow_2.astype(jnp.float32)[..., ::-1], (1, 1, 1, reps))
        offset = jnp.concatenate([offset[..., :half] + f1, offset[..., half:] + f2], axis=-1)
        mask = jax.nn.sigmoid(m)

        fan_in = 2 * c * kk
        bound = 1.0 / fan_in**0.5
        kernel = self.param(
            "kernel", lambda key, s, d: jax.random.uniform(key, s, d, -bound, bound), (k, k, 2 * c, c), self.param_dtype
        )
        bias = self.param("bias", zeros, (c,), self.param_dtype)
        y = modulated_deform_conv2d(
            x.astype(self.dtype),
            offset,
            mask.astype(self.dtype),
            kernel.astype(self.dtype),
            bias.astype(self.dtype),
            stride=1,
            padding=self.padding,
            dilation=1,
            groups=1,
            deform_groups=g,
            precision=self.precision,
        )
        return y.astype(self.dtype)
