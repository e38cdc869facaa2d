"""STC loss: occlusion-aware warping consistency of adjacent output frames (``DESIGN.md``).

For each pair (t, t+1) of an output video O, frame t+1 is backward-warped onto frame t with the
flow t -> t+1 of the *ground-truth* video (e.g. from a frozen SPyNet), occluded pixels are
removed by a forward-backward consistency check, and the L1 difference is averaged over the
remaining pixels:

    STC = sum_{t,x,c} M_t(x) |O_t(x) - O_{t+1}(x + F_t->t+1(x))|_c / (C * sum_{t,x} M_t(x))

The same quantity (per video) is the Ewarp reported at evaluation.

Occlusion (Sundaram et al. 2010, as used for Ewarp by Lai et al. 2018), in frame t:
``b(x) = F_bw(x + F_fw(x))`` (bilinear, zero padding);
occluded where ``|F_fw + b|^2 > 0.01 (|F_fw|^2 + |b|^2) + 0.5``, or, with
``motion_boundary=True``, where ``|grad u|^2 + |grad v|^2 > 0.01 |F_fw|^2 + 0.002`` (forward
differences of F_fw, 0 at the last row/column).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from peanut_jax.ops import warp

__all__ = ["fb_occlusion", "stc_loss", "warping_l1_map"]

try:  # the shared definition, once the metrics module provides it
    from peanut_jax.metrics.flow import consistency_occlusion as _shared_occlusion  # type: ignore
except ImportError:  # pragma: no cover - depends on the checkout
    _shared_occlusion = None


def fb_occlusion(flow_fw: jax.Array, flow_bw: jax.Array, alpha1: float = 0.01, alpha2: float = 0.5,
                 motion_boundary: bool = True) -> jax.Array:
    """Occlusion mask (N, H, W, 1), 1.0 = occluded, in the frame the forward flow starts from.

    ``flow_fw`` (N, H, W, 2) maps frame t to t+1, ``flow_bw`` (N, H, W, 2) maps t+1 to t (pixels,
    channel 0 = x).  No gradient flows through the mask.
    """
    if flow_fw.shape != flow_bw.shape or flow_fw.ndim != 4 or flow_fw.shape[-1] != 2:
        raise ValueError(f"fb_occlusion: flow_fw {tuple(flow_fw.shape)} and flow_bw {tuple(flow_bw.shape)} must be "
                         f"the same (N, H, W, 2) shape")
    fw = lax.stop_gradient(flow_fw.astype(jnp.float32))
    bw = lax.stop_gradient(flow_bw.astype(jnp.float32))
    bw_w = warp(bw, fw, padding="zeros")
    sq = lambda f: jnp.sum(jnp.square(f), axis=-1, keepdims=True)  # noqa: E731
    occ = sq(fw + bw_w) > alpha1 * (sq(fw) + sq(bw_w)) + alpha2
    if motion_boundary:
        dx = jnp.pad(fw[:, :, 1:] - fw[:, :, :-1], ((0, 0), (0, 0), (0, 1), (0, 0)))
        dy = jnp.pad(fw[:, 1:] - fw[:, :-1], ((0, 0), (0, 1), (0, 0), (0, 0)))
        occ = occ | (sq(dx) + sq(dy) > 0.01 * sq(fw) + 0.002)
    return occ.astype(jnp.float32)


def _occlusion(flow_fw, flow_bw):
    if _shared_occlusion is not None:
        occ = jnp.asarray(_shared_occlusion(flow_fw, flow_bw), jnp.float32)
        return occ if occ.ndim == flow_fw.ndim else occ[..., None]
    return fb_occlusion(flow_fw, flow_bw)


def _check_video(fn, video, flow_fw, flow_bw):
    if video.ndim != 5:
        raise ValueError(f"{fn}: video must be (B, T, H, W, C), got shape {tuple(video.shape)}")
    b, t, h, w, _ = video.shape
    if t < 2:
        raise ValueError(f"{fn}: need at least 2 frames, got T={t}")
    want = (b, t - 1, h, w, 2)
    for nm, f in (("flow_fw", flow_fw), ("flow_bw", flow_bw)):
        if f is not None and tuple(f.shape) != want:
            raise ValueError(f"{fn}: {nm} must be (B, T-1, H, W, 2) = {want} for video {tuple(video.shape)}, "
                             f"got {tuple(f.shape)}")


def warping_l1_map(video: jax.Array, flow_fw: jax.Array) -> jax.Array:
    """``|O_t - warp(O_{t+1}, F_t->t+1)|`` per pixel and channel, (B, T-1, H, W, C)."""
    _check_video("warping_l1_map", video, flow_fw, None)
    b, t, h, w, c = video.shape
    nxt = video[:, 1:].reshape(b * (t - 1), h, w, c)
    fw = lax.stop_gradient(flow_fw).reshape(b * (t - 1), h, w, 2)
    warped = warp(nxt, fw, padding="zeros").reshape(b, t - 1, h, w, c)
    return jnp.abs(video[:, :-1] - warped)


def stc_loss(video: jax.Array, flow_fw: jax.Array, flow_bw: jax.Array, occlusion: jax.Array | None = None) -> jax.Array:
    """The STC loss of ``video`` (B, T, H, W, C) given the ground-truth flows (no gradient).

    ``flow_fw[:, t]`` is the flow from frame t to t+1 and ``flow_bw[:, t]`` from t+1 to t, both
    (B, T-1, H, W, 2).  ``occlusion`` (B, T-1, H, W, 1), 1 = occluded, overrides the
    forward-backward check (e.g. exact masks of synthetic data).  Returns 0 when every pixel is
    occluded.
    """
    _check_video("stc_loss", video, flow_fw, flow_bw)
    b, t, h, w, c = video.shape
    if occlusion is None:
        occlusion = _occlusion(flow_fw.reshape(-1, h, w, 2), flow_bw.reshape(-1, h, w, 2)).reshape(b, t - 1, h, w, 1)
    keep = lax.stop_gradient(1.0 - jnp.asarray(occlusion, jnp.float32))
    err = warping_l1_map(video, flow_fw).astype(jnp.float32)
    den = jnp.sum(keep) * c
    safe = jnp.where(den > 0, den, 1.0)
    return jnp.where(den > 0, jnp.sum(err * keep) / safe, 0.0)
