"""J&F of the DAVIS-2017 protocol (semi-supervised VOS, Ref-DAVIS17 / MeViS referring VOS).

Region similarity J (Jaccard index) and contour accuracy F (boundary F-measure) with the
conventions of the official ``davis2017-evaluation`` code (``davis2017/metrics.py``):

* A mask is "foreground where nonzero"; ``void`` (optional, same shape) marks pixels that are ignored
  (DAVIS label 255; the official ``unsupervised`` task passes them, ``semi-supervised`` does not).
* J = |pred & gt| / |pred | gt| over non-void pixels; an empty union (both masks empty) gives J = 1.
* F: both masks (void pixels cleared) are turned into 1-pixel boundary maps (the BSDS ``seg2bmap``
  rule: a pixel is on the boundary when it differs from its east, south or south-east neighbour,
  with the last row / column compared only along the image edge and the bottom-right pixel never
  on it; a mask that fills the whole image therefore has no boundary).  Each boundary map is
  dilated by a disk of radius ``r = bound_th`` if ``bound_th >= 1`` else
  ``ceil(bound_th * sqrt(H**2 + W**2))`` (r = 8 at 480x854), the disk being the integer offsets
  with ``dy**2 + dx**2 <= r**2`` (as ``skimage.morphology.disk(r)``), applied as ``cv2.dilate``
  does (anchor at the kernel centre, nothing switched on from outside the image).
  precision = matched pred-boundary pixels / pred-boundary pixels, recall likewise for gt;
  no pred boundary and some gt boundary -> P = 1, R = 0; some pred boundary and no gt boundary ->
  P = 0, R = 1; neither -> P = R = 1; F = 2PR / (P + R), and 0 when P + R = 0.
* Over a sequence (one object / one referring expression), J and F are the plain means of the
  per-frame values and J&F = (J + F) / 2.  A frame whose gt is empty is kept in the mean: it scores
  J = F = 1 if the prediction is empty there too and J = F = 0 otherwise.  Over several sequences
  (objects / expressions) J and F are the means of the per-sequence values and J&F their average,
  as ``evaluation_method.py`` reports ``J&F-Mean``.

Everything is numpy (the disk and the dilation included), so no OpenCV / scikit-image is needed;
``tests/test_metrics_jf.py`` checks the numbers against the official functions.
:func:`jaccard_jax` and :func:`f_measure_jax` are the same per-frame measures in ``jax.numpy`` (no
void), for jitted evaluation steps: they run on the device, also under ``pmap`` / sharded ``jit``,
without a host callback, and equal the numpy functions (float32 ratios).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "boundary_map",
    "boundary_radius",
    "disk",
    "f_measure",
    "f_measure_jax",
    "j_and_f",
    "j_and_f_many",
    "jaccard",
    "jaccard_jax",
]


def _masks(name, pred, gt, void=None, min_ndim=2):
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.ndim < min_ndim:
        raise ValueError(f"{name}: pred must have at least {min_ndim} axes (..., H, W), got shape {pred.shape}")
    if pred.shape != gt.shape:
        raise ValueError(f"{name}: pred {pred.shape} and gt {gt.shape} differ in shape")
    if void is not None:
        void = np.asarray(void)
        if void.shape != gt.shape:
            raise ValueError(f"{name}: void {void.shape} must have the gt's shape {gt.shape}")
        void = void.astype(bool)
    return pred.astype(bool), gt.astype(bool), void


def jaccard(pred, gt, void=None):
    """Region similarity J of binary masks (..., H, W): a float for one frame, else an array (...).

    ``|pred & gt| / |pred | gt|`` counted over the pixels where ``void`` is False; 1.0 where the
    union is empty (both masks empty).
    """
    pred, gt, void = _masks("jaccard", pred, gt, void)
    keep = True if void is None else ~void
    inter = np.sum(pred & gt & keep, axis=(-2, -1))
    union = np.sum((pred | gt) & keep, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inter / union
    j = np.where(union == 0, 1.0, j)
    return float(j) if j.ndim == 0 else j


def boundary_map(mask) -> np.ndarray:
    """1-pixel boundary map (H, W) bool of a binary mask, the ``seg2bmap`` rule (module docstring)."""
    seg = np.asarray(mask).astype(bool)
    if seg.ndim != 2:
        raise ValueError(f"boundary_map: mask must be (H, W), got shape {seg.shape}")
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    b[-1, :] = seg[-1, :] ^ east[-1, :]
    b[:, -1] = seg[:, -1] ^ south[:, -1]
    b[-1, -1] = False
    return b


def disk(radius) -> np.ndarray:
    """Disk footprint: offsets ``arange(-radius, radius + 1)`` on both axes with ``y**2 + x**2 <= radius**2``.

    Same as ``skimage.morphology.disk(radius)`` (a non-integer radius gives offsets at
    ``-radius, -radius + 1, ...``, as there).
    """
    if radius < 0:
        raise ValueError(f"disk: radius must be >= 0, got {radius}")
    off = np.arange(-radius, radius + 1)
    return (off[:, None] ** 2 + off[None, :] ** 2) <= radius**2


def _or_shifted(dst: np.ndarray, src: np.ndarray, dy: int, dx: int) -> None:
    """dst[y, x] |= src[y + dy, x + dx] where that pixel exists."""
    h, w = src.shape
    if abs(dy) >= h or abs(dx) >= w:
        return
    dst[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)] |= src[
        max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)
    ]


def _dilate(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Binary dilation as ``cv2.dilate(mask, footprint)``: out[y, x] = OR of mask[y + i - ay, x + j - ax]
    over the footprint's set (i, j), anchor (ay, ax) = (kh // 2, kw // 2), outside pixels off.

    Row by row: footprint rows with the same column set share one horizontal dilation, and the
    horizontal dilations are built from each other when the sets nest (they do for a disk), so a
    disk of radius r costs about 4r + 2 shifted ORs instead of ~3r**2.
    """
    kh, kw = footprint.shape
    ay, ax = kh // 2, kw // 2
    groups: dict[tuple, list[int]] = {}
    for i in range(kh):
        cols = tuple(int(j) for j in np.nonzero(footprint[i])[0])
        if cols:
            groups.setdefault(cols, []).append(i - ay)
    out = np.zeros_like(mask)
    done: set[int] = set()
    horiz = np.zeros_like(mask)
    for cols in sorted(groups, key=len):
        if not done <= set(cols):
            done, horiz = set(), np.zeros_like(mask)
        for j in set(cols) - done:
            _or_shifted(horiz, mask, 0, j - ax)
        done = set(cols)
        for dy in groups[cols]:
            _or_shifted(out, horiz, dy, 0)
    return out


def boundary_radius(shape: Sequence[int], bound_th: float = 0.008) -> float:
    """Dilation radius in pixels for an (H, W) image: ``bound_th`` if >= 1 else ``ceil(bound_th * hypot(H, W))``."""
    if not bound_th >= 0:
        raise ValueError(f"boundary_radius: bound_th must be >= 0, got {bound_th}")
    return bound_th if bound_th >= 1 else float(np.ceil(bound_th * np.linalg.norm(shape)))


def _f_frame(pred: np.ndarray, gt: np.ndarray, void, bound_th: float) -> float:
    if void is not None:
        pred = pred & ~void
        gt = gt & ~void
    pred_b = boundary_map(pred)
    gt_b = boundary_map(gt)
    fp = disk(boundary_radius(pred.shape, bound_th))
    n_pred = int(np.sum(pred_b))
    n_gt = int(np.sum(gt_b))
    if n_pred == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_pred > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = int(np.sum(pred_b & _dilate(gt_b, fp))) / float(n_pred)
        recall = int(np.sum(gt_b & _dilate(pred_b, fp))) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def f_measure(pred, gt, bound_th: float = 0.008, void=None):
    """Contour accuracy F of binary masks (..., H, W): a float for one frame, else an array (...).

    ``bound_th`` < 1 is a fraction of the image diagonal, >= 1 a radius in pixels (module docstring).
    """
    pred, gt, void = _masks("f_measure", pred, gt, void)
    if not bound_th >= 0:
        raise ValueError(f"f_measure: bound_th must be >= 0, got {bound_th}")
    if pred.ndim == 2:
        return _f_frame(pred, gt, void, bound_th)
    lead = pred.shape[:-2]
    p = pred.reshape((-1,) + pred.shape[-2:])
    g = gt.reshape(p.shape)
    v = None if void is None else void.reshape(p.shape)
    out = [_f_frame(p[k], g[k], None if v is None else v[k], bound_th) for k in range(p.shape[0])]
    return np.asarray(out, np.float64).reshape(lead)


def j_and_f(pred, gt, bound_th: float = 0.008, void=None, drop_first_last: bool = False) -> dict:
    """J, F and J&F of one object / referring expression over a sequence: pred, gt (T, H, W).

    J and F are the plain means of the per-frame values over the T frames, J&F = (J + F) / 2; a frame
    with an empty gt counts (1 if pred is empty there too, else 0).  ``drop_first_last=True``
    leaves out frames 0 and T - 1 first, as the official ``semi-supervised`` task does (the first
    mask is given, the last is not scored); the ``unsupervised`` task (used for Ref-DAVIS17 by
    SAMWISE) keeps all frames and passes the void mask (T, H, W).  Returns floats
    ``{"J", "F", "JF"}``.
    """
    pred, gt, void = _masks("j_and_f", pred, gt, void, min_ndim=3)
    if pred.ndim != 3:
        raise ValueError(f"j_and_f: pred and gt must be (T, H, W), got shape {pred.shape}")
    if drop_first_last:
        if pred.shape[0] < 3:
            raise ValueError(f"j_and_f: drop_first_last needs T >= 3 frames, got {pred.shape[0]}")
        pred, gt = pred[1:-1], gt[1:-1]
        void = None if void is None else void[1:-1]
    if pred.shape[0] == 0:
        raise ValueError("j_and_f: pred and gt have no frames")
    j = float(np.mean(jaccard(pred, gt, void)))
    f = float(np.mean(f_measure(pred, gt, bound_th, void)))
    return {"J": j, "F": f, "JF": (j + f) / 2}


def j_and_f_many(
    preds: Sequence, gts: Sequence, bound_th: float = 0.008, voids: Sequence | None = None, drop_first_last=False
) -> dict:
    """J&F over several sequences (objects / referring expressions), each (T_i, H_i, W_i).

    Returns ``{"J", "F", "JF", "per_sequence": [j_and_f(...) of each]}`` with J and F the means of the
    per-sequence values and JF = (J + F) / 2 (the official ``J&F-Mean``).
    """
    preds, gts = list(preds), list(gts)
    if len(preds) != len(gts) or not preds:
        raise ValueError(f"j_and_f_many: need as many preds as gts (>= 1), got {len(preds)} and {len(gts)}")
    voids = [None] * len(gts) if voids is None else list(voids)
    if len(voids) != len(gts):
        raise ValueError(f"j_and_f_many: voids has {len(voids)} entries for {len(gts)} sequences")
    per = [j_and_f(p, g, bound_th, v, drop_first_last) for p, g, v in zip(preds, gts, voids)]
    j = float(np.mean([r["J"] for r in per]))
    f = float(np.mean([r["F"] for r in per]))
    return {"J": j, "F": f, "JF": (j + f) / 2, "per_sequence": per}


# ------------------------------------------------------------------------------------- jax.numpy
def jaccard_jax(pred, gt):
    """:func:`jaccard` of bool masks (..., H, W) in ``jax.numpy`` (no void): float32 (...)."""
    import jax.numpy as jnp

    pred, gt = jnp.asarray(pred).astype(bool), jnp.asarray(gt).astype(bool)
    inter = jnp.sum(pred & gt, axis=(-2, -1)).astype(jnp.float32)
    union = jnp.sum(pred | gt, axis=(-2, -1)).astype(jnp.float32)
    return jnp.where(union > 0, inter / jnp.maximum(union, 1.0), 1.0)


def _boundary_map_jax(seg):
    import jax.numpy as jnp

    def shift(a, dy, dx):  # a[y + dy, x + dx], False outside
        a = jnp.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, dy), (0, dx)])
        return a[..., dy:, dx:]

    east, south, south_east = shift(seg, 0, 1), shift(seg, 1, 0), shift(seg, 1, 1)
    b = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    h, w = seg.shape[-2:]
    b = b.at[..., h - 1, :].set(seg[..., h - 1, :] ^ east[..., h - 1, :])
    b = b.at[..., :, w - 1].set(seg[..., :, w - 1] ^ south[..., :, w - 1])
    return b.at[..., h - 1, w - 1].set(False)


def _dilate_jax(mask, footprint: np.ndarray):
    """:func:`_dilate` on (..., H, W) bool: per footprint row, a horizontal window max shifted
    vertically (the footprint rows must be contiguous, as a disk's are)."""
    import jax
    import jax.numpy as jnp

    kh, kw = footprint.shape
    ay, ax = kh // 2, kw // 2
    h, w = mask.shape[-2:]
    lead = [(0, 0)] * (mask.ndim - 2)
    m = mask.astype(jnp.int8)
    out = jnp.zeros_like(m)
    for i in range(kh):
        cols = np.nonzero(footprint[i])[0]
        if cols.size == 0:
            continue
        j0, j1 = int(cols[0]) - ax, int(cols[-1]) - ax  # out[y, x] |= max mask[y + dy, x + j0 .. x + j1]
        if cols.size != j1 - j0 + 1:
            raise ValueError("f_measure_jax: footprint rows must be contiguous")
        dy = i - ay
        if abs(dy) >= h:
            continue
        pad = jnp.pad(m, lead + [(0, 0), (max(0, -j0), max(0, j1))])
        row = jax.lax.reduce_window(
            pad, jnp.int8(0), jax.lax.max, (1,) * (m.ndim - 1) + (j1 - j0 + 1,), (1,) * m.ndim, "VALID"
        )
        row = row[..., max(0, j0) : max(0, j0) + w]  # column x covers x + j0 .. x + j1
        # vertical shift: out[y] |= row[y + dy]
        shifted = jnp.pad(row, lead + [(max(0, -dy), max(0, dy)), (0, 0)])[..., max(0, dy) : max(0, dy) + h, :]
        out = jnp.maximum(out, shifted)
    return out.astype(bool)


def f_measure_jax(pred, gt, bound_th: float = 0.008):
    """:func:`f_measure` of bool masks (..., H, W) in ``jax.numpy`` (no void): float32 (...)."""
    import jax.numpy as jnp

    if not bound_th >= 0:
        raise ValueError(f"f_measure_jax: bound_th must be >= 0, got {bound_th}")
    pred, gt = jnp.asarray(pred).astype(bool), jnp.asarray(gt).astype(bool)
    if pred.shape != gt.shape or pred.ndim < 2:
        raise ValueError(f"f_measure_jax: pred {pred.shape} and gt {gt.shape} must be equal (..., H, W) shapes")
    fp = disk(boundary_radius(pred.shape[-2:], bound_th))
    pb, gb = _boundary_map_jax(pred), _boundary_map_jax(gt)
    n_pred = jnp.sum(pb, axis=(-2, -1)).astype(jnp.float32)
    n_gt = jnp.sum(gb, axis=(-2, -1)).astype(jnp.float32)
    hit_p = jnp.sum(pb & _dilate_jax(gb, fp), axis=(-2, -1)).astype(jnp.float32)
    hit_g = jnp.sum(gb & _dilate_jax(pb, fp), axis=(-2, -1)).astype(jnp.float32)
    precision = jnp.where(n_pred > 0, hit_p / jnp.maximum(n_pred, 1.0), 1.0)
    recall = jnp.where(n_gt > 0, hit_g / jnp.maximum(n_gt, 1.0), 1.0)
    precision = jnp.where((n_pred > 0) & (n_gt == 0), 0.0, precision)
    recall = jnp.where((n_pred == 0) & (n_gt > 0), 0.0, recall)
    s = precision + recall
    return jnp.where(s > 0, 2 * precision * recall / jnp.where(s > 0, s, 1.0), 0.0)
