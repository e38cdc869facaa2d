"""Flow metrics: end-point error, forward-backward occlusion check, warping error (Ewarp).

Flows are (..., H, W, 2) in pixels, channel 0 = x; ``flow_fw`` maps a pixel of frame t to frame
t + 1 and ``flow_bw`` a pixel of frame t + 1 to frame t.  Everything is ``jax.numpy`` (jit-able;
the warping error is differentiable in the frames, so it doubles as the STC loss of DESIGN.md).
Backward warping uses the package's single warp, :func:`peanut_jax.ops.warp` (bilinear,
``grid_sample(align_corners=True)`` semantics).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _warp(img, flow, padding="zeros"):
    """Backward warp with leading axes flattened: img (..., H, W, C), flow (..., H, W, 2)."""
    # imported here to keep `import peanut_jax.metrics` light
    from peanut_jax.ops import warp

    lead = img.shape[:-3]
    h, w, c = img.shape[-3:]
    out = warp(img.reshape((-1, h, w, c)), flow.reshape((-1, h, w, 2)), padding=padding)
    return out.reshape(lead + (h, w, c))


def _check_flow(name, flow):
    if flow.ndim < 3 or flow.shape[-1] != 2:
        raise ValueError(f"{name} must be (..., H, W, 2), got shape {tuple(flow.shape)}")


def epe(flow, gt, mask=None) -> jax.Array:
    """Mean end-point error ``mean ||flow - gt||_2`` over all pixels (and leading axes).

    ``mask`` (..., H, W) (bool or weights) restricts / weights the mean; an all-zero mask gives NaN.
    """
    flow = jnp.asarray(flow, jnp.float32)
    gt = jnp.asarray(gt, jnp.float32)
    _check_flow("epe: flow", flow)
    if flow.shape != gt.shape:
        raise ValueError(f"epe: flow {tuple(flow.shape)} and gt {tuple(gt.shape)} differ in shape")
    err = jnp.sqrt(jnp.sum((flow - gt) ** 2, axis=-1))
    if mask is None:
        return jnp.mean(err)
    mask = jnp.asarray(mask, jnp.float32)
    if mask.shape != err.shape:
        raise ValueError(f"epe: mask shape {tuple(mask.shape)} must be the flow's {tuple(err.shape)}")
    return jnp.sum(err * mask) / jnp.sum(mask)


def out_of_frame(flow) -> jax.Array:
    """(..., H, W) bool: pixel + flow lies outside [0, W-1] x [0, H-1]."""
    h, w = flow.shape[-3], flow.shape[-2]
    gy, gx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    x = gx + flow[..., 0]
    y = gy + flow[..., 1]
    return (x < 0) | (x > w - 1) | (y < 0) | (y > h - 1)


def consistency_occlusion(
    flow_fw, flow_bw, alpha1: float = 0.01, alpha2: float = 0.5, check_bounds: bool = True
) -> jax.Array:
    """Occlusion mask (..., H, W) bool of ``flow_fw`` by the forward-backward consistency check.

    With ``b = warp(flow_bw, flow_fw)`` (the backward flow read at each pixel's forward target),
    a pixel is *occluded* (True) unless
    ``|flow_fw + b|^2 < alpha1 (|flow_fw|^2 + |b|^2) + alpha2``
    (Sundaram et al. 2010, Ruder et al. 2016: alpha1 = 0.01, alpha2 = 0.5).  With
    ``check_bounds`` a target outside the frame also counts as occluded.
    """
    fw = jnp.asarray(flow_fw, jnp.float32)
    bw = jnp.asarray(flow_bw, jnp.float32)
    _check_flow("consistency_occlusion: flow_fw", fw)
    if fw.shape != bw.shape:
        raise ValueError(
            f"consistency_occlusion: flow_fw {tuple(fw.shape)} and flow_bw {tuple(bw.shape)} differ in shape"
        )
    return _consistency(fw, bw, float(alpha1), float(alpha2), bool(check_bounds))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _consistency(fw, bw, alpha1, alpha2, check_bounds):
    b = _warp(bw, fw)
    lhs = jnp.sum((fw + b) ** 2, -1)
    rhs = alpha1 * (jnp.sum(fw**2, -1) + jnp.sum(b**2, -1)) + alpha2
    occ = lhs >= rhs
    if check_bounds:
        occ = occ | out_of_frame(fw)
    return occ


def warping_error(
    frames,
    flow_forward,
    flow_backward=None,
    occlusion=None,
    *,
    norm: str = "l1",
    check_bounds: bool = True,
    reduce: str = "mean",
) -> jax.Array:
    """Temporal warping error (Ewarp) of a video against the flow of its ground truth.

    ``frames`` (..., T, H, W, C) is the video to judge (e.g. an inpainting result);
    ``flow_forward`` (..., T-1, H, W, 2) is the flow t -> t+1 of the *ground-truth* video.
    For each adjacent pair, frame t+1 is backward-warped onto frame t,
    ``w_t(p) = frames[t+1](p + flow_forward[t](p))`` (bilinear, zero padding), and

        E_t = sum_p v_t(p) d_t(p) / sum_p v_t(p)

    over the valid (non-occluded) pixels ``v_t``, where ``d_t(p)`` is
    ``mean_c |frames[t](p) - w_t(p)|`` for ``norm='l1'`` (default, the STC loss) or
    ``sum_c (frames[t](p) - w_t(p))^2`` for ``norm='l2sq'`` (Lai et al. 2018).  Occluded pixels
    come from ``occlusion`` ((..., T-1, H, W) bool, True = occluded) if given, else from
    :func:`consistency_occlusion` of ``flow_forward`` and ``flow_backward`` (flow t+1 -> t) if
    given, else none; with ``check_bounds`` targets outside the frame are always excluded.

    ``reduce='mean'`` returns the mean of E_t over the pairs (and leading axes) that have valid
    pixels; ``reduce='none'`` returns E_t, shape (..., T-1), NaN for a pair without valid pixels.
    The value is in the frames' units (e.g. [0, 1] images).
    """
    if norm not in ("l1", "l2sq"):
        raise ValueError(f"warping_error: norm must be 'l1' or 'l2sq', got {norm!r}")
    if reduce not in ("mean", "none"):
        raise ValueError(f"warping_error: reduce must be 'mean' or 'none', got {reduce!r}")
    frames = jnp.asarray(frames)
    if not jnp.issubdtype(frames.dtype, jnp.floating):
        frames = frames.astype(jnp.float32)
    fw = jnp.asarray(flow_forward, jnp.float32)
    if frames.ndim < 4 or frames.shape[-4] < 2:
        raise ValueError(f"warping_error: frames must be (..., T>=2, H, W, C), got {tuple(frames.shape)}")
    pair_shape = frames.shape[:-4] + (frames.shape[-4] - 1,) + frames.shape[-3:-1]
    if fw.shape != pair_shape + (2,):
        raise ValueError(
            f"warping_error: flow_forward must have shape {pair_shape + (2,)} for frames "
            f"{tuple(frames.shape)}, got {tuple(fw.shape)}"
        )
    if occlusion is not None:
        occlusion = jnp.asarray(occlusion, bool)
        if occlusion.shape != pair_shape:
            raise ValueError(f"warping_error: occlusion must have shape {pair_shape}, got {tuple(occlusion.shape)}")
    if flow_backward is not None:
        flow_backward = jnp.asarray(flow_backward, jnp.float32)
        if flow_backward.shape != fw.shape:
            raise ValueError(
                f"warping_error: flow_backward must have shape {tuple(fw.shape)}, got {tuple(flow_backward.shape)}"
            )
    return _warping_error(frames, fw, flow_backward, occlusion, norm, bool(check_bounds), reduce)


@functools.partial(jax.jit, static_argnums=(4, 5, 6))
def _warping_error(frames, fw, bw, occlusion, norm, check_bounds, reduce):
    if occlusion is not None:
        occ = occlusion | out_of_frame(fw) if check_bounds else occlusion
    elif bw is not None:
        occ = _consistency(fw, bw, 0.01, 0.5, check_bounds)
    else:
        occ = out_of_frame(fw) if check_bounds else jnp.zeros(fw.shape[:-1], bool)
    warped = _warp(frames[..., 1:, :, :, :], fw)
    diff = frames[..., :-1, :, :, :] - warped
    d = jnp.mean(jnp.abs(diff), -1) if norm == "l1" else jnp.sum(diff * diff, -1)
    valid = (~occ).astype(d.dtype)
    count = jnp.sum(valid, axis=(-2, -1))
    has = count > 0
    # divide by max(count, 1) so that gradients stay finite when a pair has no valid pixel
    per_pair = jnp.sum(d * valid, axis=(-2, -1)) / jnp.maximum(count, 1.0)
    if reduce == "none":
        return jnp.where(has, per_pair, jnp.nan)
    return jnp.sum(jnp.where(has, per_pair, 0.0)) / jnp.maximum(jnp.sum(has), 1)
