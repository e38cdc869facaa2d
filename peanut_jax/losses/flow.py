"""Flow losses (NHWC, flows (..., H, W, 2) in pixels, channel 0 = x; pure jnp).

- :func:`epe`: RIFE ``EPE``: per-pixel end-point error ``sqrt(sum_c (flow - gt)^2 + 1e-6) * mask``.
- :func:`sobel`: RIFE ``SOBEL``: per-pixel, per-channel L1 between Sobel gradients.
- :func:`flow_l1` / :func:`flow_completion_loss` / :func:`e2fgvi_flow_targets`: E2FGVI's
  ``FlowCompletionLoss`` (L1 to the flows of a frozen SPyNet on the quarter-size ground truth).
- :func:`flow_distillation_term` / :func:`flow_distillation_loss`: the teacher-student flow
  distillation inside RIFE's ``IFNet.forward`` (the caller applies the 0.01 weight).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "e2fgvi_flow_targets",
    "epe",
    "flow_completion_loss",
    "flow_distillation_loss",
    "flow_distillation_term",
    "flow_l1",
    "sobel",
    "SOBEL_X",
]

# RIFE's kernelX (applied as cross-correlation, like torch conv2d); kernelY is its transpose.
SOBEL_X = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], np.float32)


def epe(flow: jax.Array, gt: jax.Array, loss_mask: jax.Array | float = 1.0, eps: float = 1e-6) -> jax.Array:
    """Per-pixel end-point error map (..., H, W, 1): ``sqrt(sum_c (flow - sg(gt))^2 + eps) * loss_mask``.

    ``loss_mask`` broadcasts to (..., H, W, 1); the caller reduces the map (RIFE: ``.mean()``).
    ``gt`` receives no gradient (as the official ``gt.detach()``).
    """
    if flow.shape != gt.shape:
        raise ValueError(f"epe: flow {tuple(flow.shape)} and gt {tuple(gt.shape)} must have the same shape")
    d = jnp.square(flow - lax.stop_gradient(gt))
    return jnp.sqrt(jnp.sum(d, axis=-1, keepdims=True) + eps) * loss_mask


def _sobel_xy(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Sobel responses of each channel of (N, H, W, C), zero padding 1 (cross-correlation)."""
    c = x.shape[-1]
    k = np.stack([SOBEL_X, SOBEL_X.T], axis=-1)  # (3, 3, 2): output 0 = X, 1 = Y
    k = jnp.asarray(np.tile(k[:, :, None, :], (1, 1, 1, c)), x.dtype)  # (3,3,1,2C): channel c -> (2c, 2c+1)
    y = lax.conv_general_dilated(
        x,
        k,
        (1, 1),
        ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=c,
        precision=lax.Precision.HIGHEST,
    )
    return y[..., 0::2], y[..., 1::2]


def sobel(pred: jax.Array, gt: jax.Array | float) -> jax.Array:
    """RIFE ``SOBEL`` map (N, H, W, C): ``|Sx*pred - Sx*gt| + |Sy*pred - Sy*gt|`` for each channel.

    ``pred`` (N, H, W, C) (images or flows); ``gt`` broadcasts to it (HDv3 uses ``gt = 0`` as a
    flow-smoothness term: ``sobel(flow, 0).mean() * 0.1``).  The official returns (N*C, 1, H, W);
    this is the same numbers in NHWC.
    """
    if pred.ndim != 4:
        raise ValueError(f"sobel: pred must be (N, H, W, C), got shape {tuple(pred.shape)}")
    gt = jnp.broadcast_to(jnp.asarray(gt, pred.dtype), pred.shape)
    return _sobel(pred, gt)


@jax.jit
def _sobel(pred, gt):
    n = pred.shape[0]
    sx, sy = _sobel_xy(jnp.concatenate([pred, gt], axis=0))
    return jnp.abs(sx[:n] - sx[n:]) + jnp.abs(sy[:n] - sy[n:])


def flow_l1(pred_flow: jax.Array, gt_flow: jax.Array) -> jax.Array:
    """``mean|pred - sg(gt)|`` (E2FGVI's ``nn.L1Loss`` on flows; the target is a frozen network's output)."""
    if pred_flow.shape != gt_flow.shape:
        raise ValueError(
            f"flow_l1: pred {tuple(pred_flow.shape)} and gt {tuple(gt_flow.shape)} must have the same shape"
        )
    return jnp.mean(jnp.abs(pred_flow - lax.stop_gradient(gt_flow)))


def flow_completion_loss(
    pred_forward: jax.Array, pred_backward: jax.Array, gt_forward: jax.Array, gt_backward: jax.Array
) -> jax.Array:
    """E2FGVI ``FlowCompletionLoss``: ``L1(pred_fwd, gt_fwd) + L1(pred_bwd, gt_bwd)``.

    Flows (B, T-1, H/4, W/4, 2); the targets come from :func:`e2fgvi_flow_targets`.
    """
    return flow_l1(pred_forward, gt_forward) + flow_l1(pred_backward, gt_backward)


def e2fgvi_flow_targets(
    flow_fn: Callable[[jax.Array, jax.Array], jax.Array], local_frames: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Ground-truth flows of E2FGVI's flow loss: (forward, backward), each (B, T-1, H//4, W//4, 2).

    ``local_frames`` (B, T, H, W, 3) are the *unmasked* local ground-truth frames in [0, 1]
    (E2FGVI: ``(frames[:, :l_t] + 1) / 2``); they are resized by 1/4 (bilinear,
    ``align_corners=True``, ``recompute_scale_factor=True``) and ``flow_fn(ref, supp)`` (a frozen
    SPyNet: ``lambda a, b: spynet.apply({'params': p}, a, b)``) is run on (t, t+1) for forward and
    (t+1, t) for backward.  The result is gradient-free.
    """
    from peanut_jax.ops import interpolate

    if local_frames.ndim != 5:
        raise ValueError(f"e2fgvi_flow_targets: local_frames must be (B, T, H, W, C), got {tuple(local_frames.shape)}")
    b, t, h, w, c = local_frames.shape
    if t < 2:
        raise ValueError(f"e2fgvi_flow_targets: need at least 2 local frames, got T={t}")
    x = interpolate(
        local_frames.reshape(b * t, h, w, c),
        scale_factor=0.25,
        mode="bilinear",
        align_corners=True,
        recompute_scale_factor=True,
    )
    x = lax.stop_gradient(x.reshape(b, t, h // 4, w // 4, c))
    f1 = x[:, :-1].reshape(-1, h // 4, w // 4, c)
    f2 = x[:, 1:].reshape(-1, h // 4, w // 4, c)
    fwd = flow_fn(f1, f2).reshape(b, t - 1, h // 4, w // 4, 2)
    bwd = flow_fn(f2, f1).reshape(b, t - 1, h // 4, w // 4, 2)
    return lax.stop_gradient(fwd), lax.stop_gradient(bwd)


def flow_distillation_term(
    flow: jax.Array,
    flow_teacher: jax.Array,
    merged: jax.Array,
    merged_teacher: jax.Array,
    gt: jax.Array,
    margin: float = 0.01,
) -> jax.Array:
    """One level of RIFE's distillation: ``mean(sqrt(mean_c (sg(flow_tea) - flow)^2) * loss_mask)``.

    ``loss_mask = mean_c|merged - gt| > mean_c|merged_teacher - gt| + margin`` (float, no gradient):
    the student is pulled towards the teacher only where the teacher's frame is better.  The mean over
    channels runs over all flow channels (4 for RIFE's bidirectional flow).  The square root has no
    epsilon, as the official (its gradient is NaN where the student equals the teacher exactly).
    Shapes: flows (N, H, W, Cf), frames (N, H, W, 3).
    """
    if flow.shape != flow_teacher.shape:
        raise ValueError(
            f"flow_distillation_term: flow {tuple(flow.shape)} and flow_teacher "
            f"{tuple(flow_teacher.shape)} must have the same shape"
        )
    if merged.shape != gt.shape or merged_teacher.shape != gt.shape:
        raise ValueError(
            f"flow_distillation_term: merged {tuple(merged.shape)}, merged_teacher "
            f"{tuple(merged_teacher.shape)} and gt {tuple(gt.shape)} must have the same shape"
        )
    err_s = jnp.mean(jnp.abs(merged - gt), axis=-1, keepdims=True)
    err_t = jnp.mean(jnp.abs(merged_teacher - gt), axis=-1, keepdims=True)
    loss_mask = lax.stop_gradient((err_s > err_t + margin).astype(flow.dtype))
    d = jnp.mean(jnp.square(lax.stop_gradient(flow_teacher) - flow), axis=-1, keepdims=True)
    return jnp.mean(jnp.sqrt(d) * loss_mask)


def flow_distillation_loss(
    flow_list: Sequence[jax.Array],
    flow_teacher: jax.Array,
    merged_list: Sequence[jax.Array],
    merged_teacher: jax.Array,
    gt: jax.Array,
    margin: float = 0.01,
) -> jax.Array:
    """RIFE ``loss_distill``: :func:`flow_distillation_term` summed over the student levels.

    ``merged_list`` are the *unrefined* blended frames of each level (the official computes the
    term before the refinement U-Net); the caller multiplies by 0.01 (``RIFE.update``).
    """
    if len(flow_list) != len(merged_list):
        raise ValueError(f"flow_distillation_loss: {len(flow_list)} flows but {len(merged_list)} merged frames")
    return sum(
        flow_distillation_term(f, flow_teacher, m, merged_teacher, gt, margin) for f, m in zip(flow_list, merged_list)
    )
