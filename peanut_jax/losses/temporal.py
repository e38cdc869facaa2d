"""STC loss: occlusion-aware warping consistency of adjacent output frames (``DESIGN.md``).

For each pair (t, t+1) of an output video O, frame t+1 is backward-warped onto frame t with the
flow t -> t+1 of the *ground-truth* video (e.g. from a frozen SPyNet), pixels that the
forward-backward consistency check marks as occluded (or whose target leaves the frame) are
dropped, and the channel-mean L1 difference is averaged over the remaining pixels of the pair;
the loss is the mean over pairs:

    STC = mean_t [ sum_x v_t(x) mean_c |O_t(x) - O_{t+1}(x + F_t->t+1(x))| / sum_x v_t(x) ]

This is exactly the L1 warping error Ewarp reported at evaluation: the loss calls
:func:`peanut_jax.metrics.flow.warping_error` (one implementation of the warp, the occlusion check
:func:`peanut_jax.metrics.flow.consistency_occlusion` (alpha1 0.01, alpha2 0.5) and the
normalisation), adding only that the flows and the occlusion mask get no gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["stc_loss"]


def stc_loss(
    video: jax.Array,
    flow_fw: jax.Array,
    flow_bw: jax.Array | None = None,
    occlusion: jax.Array | None = None,
    check_bounds: bool = True,
) -> jax.Array:
    """The STC loss of ``video`` (B, T, H, W, C) given ground-truth flows (see the module docstring).

    ``flow_fw[:, t]`` is the flow from frame t to t+1 and ``flow_bw[:, t]`` from t+1 to t, both
    (B, T-1, H, W, 2) in pixels (channel 0 = x).  ``occlusion`` (B, T-1, H, W) bool, True =
    occluded, replaces the forward-backward check (e.g. the exact masks of synthetic data); with
    neither, only targets outside the frame are dropped.  Pairs without a valid pixel are skipped
    (0 when none has one).  Differentiable in ``video`` only.
    """
    from peanut_jax.metrics.flow import warping_error

    if video.ndim != 5:
        raise ValueError(f"stc_loss: video must be (B, T, H, W, C), got shape {tuple(video.shape)}")
    b, t, h, w, _ = video.shape
    if t < 2:
        raise ValueError(f"stc_loss: need at least 2 frames, got T={t}")
    want = (b, t - 1, h, w, 2)
    for nm, f in (("flow_fw", flow_fw), ("flow_bw", flow_bw)):
        if f is not None and tuple(f.shape) != want:
            raise ValueError(
                f"stc_loss: {nm} must be (B, T-1, H, W, 2) = {want} for video {tuple(video.shape)}, "
                f"got {tuple(f.shape)}"
            )
    flow_fw = lax.stop_gradient(jnp.asarray(flow_fw, jnp.float32))
    if flow_bw is not None:
        flow_bw = lax.stop_gradient(jnp.asarray(flow_bw, jnp.float32))
    if occlusion is not None:
        occlusion = lax.stop_gradient(jnp.asarray(occlusion))
    return warping_error(video, flow_fw, flow_bw, occlusion, norm="l1", check_bounds=check_bounds, reduce="mean")
