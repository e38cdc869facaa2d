"""E2FGVI's bidirectional second-order flow-guided feature propagation (``BidirectionalPropagation``).

``BidirectionalPropagation(channels=128)(x, flows_backward, flows_forward)`` with ``x``
(B, T, H, W, C) and flows (B, T-1, H, W, 2) (pixels, channel 0 = x) returns (B, T, H, W, C).

Two branches run in order ``backward`` then ``forward``.  Each walks over the frames (the backward
branch from the last frame to the first), carrying a propagated feature ``feat_prop``; from the
second step on, ``feat_prop`` and the propagated feature of two steps back are aligned to the
current frame by :class:`~peanut_jax.layers.deform_align.SecondOrderDeformableAlignment` guided by
the flow to the previous step (``flow_n1``) and the composed flow two steps back
(``flow_n2 = flow_n1 + warp(flow_n2_raw, flow_n1)``); then ``feat_prop += backbone(concat[current,
(backward result, forward branch only), feat_prop])``.  Output: ``fusion(concat[backward, forward])
+ x``.  As in the official call, the E2FGVI flow from frame i to i+1 is passed as
``flows_backward`` and the flow from i+1 to i as ``flows_forward``.

Backward-branch flow index (E2FGVI issue #58): the official code reverses the frame order of the
backward branch but not the flow index, so step i (frame T-1-i) is aligned with
``flows_backward[:, i-1]`` (and ``[:, i-2]`` for the second order) instead of
``flows_backward[:, T-1-i]`` (``[:, T-i]``).  The released weights were trained with it, so it is
the default; ``fix_backward_flow_idx=True`` gives the corrected indexing (as in ProPainter).

The steps are unrolled in Python (T is static and small: the local window).  Parameters:
``deform_align_{backward,forward}``, ``backbone_{backward,forward}_{0,2}``, ``fusion`` (torch
``deform_align.{backward_,forward_}``, ``backbone.{backward_,forward_}.{0,2}``, ``fusion``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from peanut_jax.layers.conv import Conv2d, leaky_relu
from peanut_jax.layers.deform_align import SecondOrderDeformableAlignment
from peanut_jax.ops import warp

Dtype = Any
BRANCHES = ("backward", "forward")


def branch_flow_indices(t: int, branch: str, fix_backward_flow_idx: bool = False):
    """Per step i: (frame index, flow index for ``flow_n1``, flow index for ``flow_n2``) or None.

    Indices follow the official loop: ``flow_idx = range(-1, t-1)`` for both branches unless the
    backward branch is fixed (``flow_idx = frame_idx``).  Negative indices count from the end,
    like Python/torch indexing.
    """
    frame_idx = list(range(t))
    flow_idx = list(range(-1, t - 1))
    if branch == "backward":
        frame_idx = frame_idx[::-1]
        if fix_backward_flow_idx:
            flow_idx = frame_idx
    steps = []
    for i, idx in enumerate(frame_idx):
        n1 = flow_idx[i] if i > 0 else None
        n2 = flow_idx[i - 1] if i > 1 else None
        steps.append((idx, n1, n2))
    return steps


class BidirectionalPropagation(nn.Module):
    channels: int = 128
    fix_backward_flow_idx: bool = False
    deform_groups: int = 16
    max_residue_magnitude: float = 10.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None
    kernel_init: Callable | None = None  # all plain convolutions incl. the DCN offset convs (None: torch default)

    def _conv(self, feats, k, name):
        init = self.kernel_init
        return Conv2d(
            feats,
            k,
            padding=k // 2,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
            kernel_init=init,
            bias_init=nn.initializers.zeros if init is not None else None,
            name=name,
        )

    @nn.compact
    def __call__(self, x, flows_backward, flows_forward):
        b, t, h, w, c = x.shape
        if c != self.channels:
            raise ValueError(f"BidirectionalPropagation: x has {c} channels, expected {self.channels}")
        for nm, fl in (("flows_backward", flows_backward), ("flows_forward", flows_forward)):
            if fl.shape != (b, t - 1, h, w, 2):
                raise ValueError(f"BidirectionalPropagation: {nm} must be {(b, t - 1, h, w, 2)}, got {fl.shape}")
        x = x.astype(self.dtype)
        spatial = [x[:, i] for i in range(t)]
        feats: dict[str, list] = {}
        for _bi, branch in enumerate(BRANCHES):
            flows = flows_backward if branch == "backward" else flows_forward
            align = SecondOrderDeformableAlignment(
                self.channels,
                self.deform_groups,
                self.max_residue_magnitude,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                precision=self.precision,
                kernel_init=self.kernel_init,
                name=f"deform_align_{branch}",
            )
            conv0 = self._conv(self.channels, 3, f"backbone_{branch}_0")
            conv2 = self._conv(self.channels, 3, f"backbone_{branch}_2")
            outs = []
            feat_prop = jnp.zeros((b, h, w, c), self.dtype)
            for i, (idx, n1, n2) in enumerate(branch_flow_indices(t, branch, self.fix_backward_flow_idx)):
                feat_current = spatial[idx]
                if i > 0:
                    flow_n1 = flows[:, n1].astype(jnp.float32)
                    cond_n1 = warp(feat_prop, flow_n1)
                    if i > 1:
                        feat_n2 = outs[-2]
                        flow_n2 = flow_n1 + warp(flows[:, n2].astype(jnp.float32), flow_n1)
                        cond_n2 = warp(feat_n2, flow_n2)
                    else:
                        feat_n2 = jnp.zeros_like(feat_prop)
                        flow_n2 = jnp.zeros_like(flow_n1)
                        cond_n2 = jnp.zeros_like(cond_n1)
                    cond = jnp.concatenate([cond_n1, feat_current, cond_n2], axis=-1)
                    feat_prop = align(jnp.concatenate([feat_prop, feat_n2], axis=-1), cond, flow_n1, flow_n2)
                parts = [feat_current] + ([feats["backward"][idx]] if branch == "forward" else []) + [feat_prop]
                feat = jnp.concatenate(parts, axis=-1)
                feat_prop = feat_prop + conv2(leaky_relu(conv0(feat), 0.1))
                outs.append(feat_prop)
            feats[branch] = outs[::-1] if branch == "backward" else outs
        fusion = self._conv(self.channels, 1, "fusion")
        both = jnp.concatenate([jnp.stack(feats["backward"], 1), jnp.stack(feats["forward"], 1)], axis=-1)
        out = fusion(both.reshape(b * t, h, w, 2 * c)).reshape(b, t, h, w, c)
        return out + x
