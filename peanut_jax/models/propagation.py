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

Each branch runs its first step (nothing to align yet) directly and the others under ``nn.scan``
(one traced step whatever T: compile time does not grow with the window); the numbers are those of
the official per-frame loop.  Parameters:
``deform_align_{backward,forward}``, ``backbone_{backward,forward}_{0,2}``, ``fusion`` (torch
``deform_align.{backward_,forward_}``, ``backbone.{backward_,forward_}.{0,2}``, ``fusion``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

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

    def _conv(self, feats, k):
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
        )

    def _align(self):
        return SecondOrderDeformableAlignment(
            self.channels,
            self.deform_groups,
            self.max_residue_magnitude,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
            kernel_init=self.kernel_init,
        )

    def setup(self):
        # attribute names are the parameter names (the torch module tree, see the module docstring)
        self.deform_align_backward = self._align()
        self.deform_align_forward = self._align()
        self.backbone_backward_0 = self._conv(self.channels, 3)
        self.backbone_backward_2 = self._conv(self.channels, 3)
        self.backbone_forward_0 = self._conv(self.channels, 3)
        self.backbone_forward_2 = self._conv(self.channels, 3)
        self.fusion = self._conv(self.channels, 1)

    def _backbone(self, branch, feat_current, extra, feat_prop):
        """``feat_prop + backbone(concat[current, (backward result), feat_prop])``."""
        conv0 = getattr(self, f"backbone_{branch}_0")
        conv2 = getattr(self, f"backbone_{branch}_2")
        feat = jnp.concatenate([feat_current, *extra, feat_prop], axis=-1)
        return feat_prop + conv2(leaky_relu(conv0(feat), 0.1))

    def _step(self, branch, carry, xs):
        """One aligned step (step i >= 1) of a branch.

        carry = (output of step i-1, output of step i-2 (zeros at step 1), ``flow_n1`` of step i-1);
        xs = (current feature, (backward result at this frame,) or (), ``flow_n1`` of this step,
        whether the second-order term exists (i > 1)).  At step 1 the official loop uses zeros for
        ``feat_n2``, ``flow_n2`` and ``cond_n2``: the zero carry gives the first (and, warped, the
        third); ``flow_n2`` is zeroed explicitly."""
        prev, prev2, flow_prev = carry
        feat_current, extra, flow_n1, second = xs
        cond_n1 = warp(prev, flow_n1)
        flow_n2 = jnp.where(second, flow_n1 + warp(flow_prev, flow_n1), 0.0)
        cond_n2 = warp(prev2, flow_n2)
        cond = jnp.concatenate([cond_n1, feat_current, cond_n2], axis=-1)
        align = getattr(self, f"deform_align_{branch}")
        feat_prop = align(jnp.concatenate([prev, prev2], axis=-1), cond, flow_n1, flow_n2)
        out = self._backbone(branch, feat_current, extra, feat_prop)
        return (out, prev, flow_n1), out

    def _branch(self, branch, x_t, flows_t, backward_t=None):
        """Run one branch over time-major features ``x_t`` (T, B, H, W, C) and flows ``flows_t``
        (T-1, B, H, W, 2); returns (T, B, H, W, C) in frame order.  Step 0 has nothing to align
        and runs outside the scan; steps 1..T-1 run under ``nn.scan`` (one traced step, whatever T)."""
        t = x_t.shape[0]
        steps = branch_flow_indices(t, branch, self.fix_backward_flow_idx)
        frame_idx = np.array([idx for idx, _, _ in steps])
        extra_t = () if backward_t is None else (backward_t[frame_idx],)
        cur_t = x_t[frame_idx]
        zeros = jnp.zeros_like(x_t[0])
        out0 = self._backbone(branch, cur_t[0], tuple(e[0] for e in extra_t), zeros)
        if t == 1:
            return out0[None]
        n1 = np.array([n for _, n, _ in steps[1:]]) % (t - 1)
        xs = (cur_t[1:], tuple(e[1:] for e in extra_t), flows_t[n1].astype(jnp.float32), np.arange(1, t) > 1)
        carry = (out0, zeros, jnp.zeros(flows_t.shape[1:], jnp.float32))
        scan = nn.scan(
            lambda mdl, c, s: mdl._step(branch, c, s),
            variable_broadcast="params",
            split_rngs={"params": False},
            in_axes=0,
            out_axes=0,
        )
        _, outs = scan(self, carry, xs)
        outs = jnp.concatenate([out0[None], outs], axis=0)  # step order
        return outs[np.argsort(frame_idx)]

    def __call__(self, x, flows_backward, flows_forward):
        b, t, h, w, c = x.shape
        if c != self.channels:
            raise ValueError(f"BidirectionalPropagation: x has {c} channels, expected {self.channels}")
        for nm, fl in (("flows_backward", flows_backward), ("flows_forward", flows_forward)):
            if fl.shape != (b, t - 1, h, w, 2):
                raise ValueError(f"BidirectionalPropagation: {nm} must be {(b, t - 1, h, w, 2)}, got {fl.shape}")
        x = x.astype(self.dtype)
        x_t = jnp.swapaxes(x, 0, 1)
        backward = self._branch("backward", x_t, jnp.swapaxes(flows_backward, 0, 1))
        forward = self._branch("forward", x_t, jnp.swapaxes(flows_forward, 0, 1), backward)
        both = jnp.swapaxes(jnp.concatenate([backward, forward], axis=-1), 0, 1)
        out = self.fusion(both.reshape(b * t, h, w, 2 * c)).reshape(b, t, h, w, c)
        return out + x
