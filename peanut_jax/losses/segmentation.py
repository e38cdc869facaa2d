"""Mask losses of SAMWISE training (``models/segmentation.py``, ``engine.py``, ``models/model_utils.py``).

* :func:`mask_losses`: predicted logits ``(B, T, h, w)`` against ground truth ``(B, T, H, W)``: the
  ground truth is zero-padded bottom/right to a multiple of ``size_divisibility`` (32), the logits are
  bilinearly resized (``align_corners=False``, no antialias) to that padded size, then
  :func:`sigmoid_focal_loss` and :func:`dice_loss` over each clip's ``t*h*w`` pixels, summed over the
  clips and divided by B (the official ``num_boxes = bs / num_frames``).
* :func:`sigmoid_focal_loss`: RetinaNet focal loss (alpha 0.25, gamma 2) per pixel, mean per clip.
* :func:`dice_loss`: ``1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1)`` per clip, ``p = sigmoid``.
* :func:`same_object_labels`: the conditional memory encoder's training label per frame from the
  with-memory and memory-less masks (``get_same_object_labels``).
* :func:`weighted_cross_entropy`: torch ``F.cross_entropy(weight=..., ignore_index=-1)`` (weighted mean
  over the labelled rows), 0 when no row is labelled or the value is NaN (official ``CME_loss``).

Every function is pure jnp (jit/grad friendly) and returns float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from peanut_jax.ops import interpolate

__all__ = [
    "dice_loss",
    "mask_losses",
    "pad_to_multiple",
    "resize_logits",
    "same_object_labels",
    "sigmoid_focal_loss",
    "weighted_cross_entropy",
]


def _per_clip(x):
    """(B, ...) -> (B, N): every axis after the first flattened."""
    return x.reshape(x.shape[0], -1).astype(jnp.float32)


def _check(fn: str, logits, targets) -> None:
    if logits.shape != targets.shape:
        raise ValueError(f"{fn}: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")
    if logits.ndim < 2:
        raise ValueError(f"{fn}: expected (B, ...) with a leading clip axis, got {tuple(logits.shape)}")


def sigmoid_focal_loss(logits, targets, alpha: float = 0.25, gamma: float = 2.0, region=None):
    """Sigmoid focal loss, mean over each clip's elements, summed over the B clips / B.

    ``ce = BCE_with_logits(x, t)``, ``p_t = p t + (1 - p)(1 - t)``, ``loss = alpha_t ce (1 - p_t)^gamma``
    with ``alpha_t = alpha t + (1 - alpha)(1 - t)`` (``alpha < 0``: no weighting).  ``region``: 0/1
    array broadcastable to ``logits``; the mean is then over each clip's elements inside it (as if
    the arrays were cropped to it)."""
    _check("sigmoid_focal_loss", logits, targets)
    x, t = _per_clip(logits), _per_clip(targets)
    p = jax.nn.sigmoid(x)
    ce = jnp.maximum(x, 0.0) - x * t + jnp.log1p(jnp.exp(-jnp.abs(x)))
    p_t = p * t + (1.0 - p) * (1.0 - t)
    loss = ce * (1.0 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1.0 - alpha) * (1.0 - t)) * loss
    if region is not None:
        w = _per_clip(jnp.broadcast_to(region, logits.shape))
        return jnp.sum(jnp.sum(loss * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)) / x.shape[0]
    return jnp.sum(jnp.mean(loss, axis=1)) / x.shape[0]


def dice_loss(logits, targets, smooth: float = 1.0, region=None):
    """``1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1)`` per clip (``p = sigmoid(logits)``), summed / B;
    ``region`` (0/1, broadcastable): the sums run over its elements only."""
    _check("dice_loss", logits, targets)
    p, t = jax.nn.sigmoid(_per_clip(logits)), _per_clip(targets)
    if region is not None:
        w = _per_clip(jnp.broadcast_to(region, logits.shape))
        p, t = p * w, t * w
    loss = 1.0 - (2.0 * jnp.sum(p * t, axis=1) + smooth) / (jnp.sum(p, axis=1) + jnp.sum(t, axis=1) + smooth)
    return jnp.sum(loss) / p.shape[0]


def pad_to_multiple(masks, multiple: int = 32):
    """Zero-pad the last two axes (h, w) bottom/right up to multiples of ``multiple``
    (``nested_tensor_from_tensor_list(size_divisibility=...)``)."""
    h, w = masks.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if not ph and not pw:
        return masks
    return jnp.pad(masks, [(0, 0)] * (masks.ndim - 2) + [(0, ph), (0, pw)])


def resize_logits(logits, size: tuple[int, int]):
    """Bilinear resize (``align_corners=False``, no antialias) of the last two axes to ``size``."""
    h, w = logits.shape[-2:]
    if (h, w) == tuple(size):
        return logits.astype(jnp.float32)
    lead = logits.shape[:-2]
    x = logits.reshape(-1, h, w, 1).astype(jnp.float32)
    x = interpolate(x, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
    return x[..., 0].reshape(*lead, *x.shape[1:3])


def mask_losses(pred_logits, gt_masks, size_divisibility: int = 32, region_hw=None) -> dict:
    """SAMWISE ``loss_masks``: pred_logits (B, T, h, w) at the input size, gt_masks (B, T, H, W) 0/1 ->
    ``{'loss_mask': focal, 'loss_dice': dice}`` (see the module docstring).

    ``region_hw`` (2,) int, optional (traced values allowed): the losses cover only the top-left
    ``region_hw[0] x region_hw[1]`` pixels of the padded ground truth, as if both arrays were cropped
    to it.  The official collate pads a batch only to its largest clip (e.g. 576x1024 for 16:9 clips
    resized to 1024), while fixed-shape batches pad every clip further (to 1024x1024): the region
    keeps that extra padding out of the losses."""
    if pred_logits.ndim != 4 or gt_masks.ndim != 4 or pred_logits.shape[:2] != gt_masks.shape[:2]:
        raise ValueError(
            f"mask_losses: pred_logits (B, T, h, w) and gt_masks (B, T, H, W) expected, got "
            f"{tuple(pred_logits.shape)} and {tuple(gt_masks.shape)}"
        )
    gt = pad_to_multiple(gt_masks.astype(jnp.float32), size_divisibility)
    pred = resize_logits(pred_logits, gt.shape[-2:])
    region = None
    if region_hw is not None:
        h, w = gt.shape[-2:]
        rows = jnp.arange(h)[:, None] < region_hw[0]
        cols = jnp.arange(w)[None, :] < region_hw[1]
        region = (rows & cols).astype(jnp.float32)
    return {"loss_mask": sigmoid_focal_loss(pred, gt, region=region), "loss_dice": dice_loss(pred, gt, region=region)}


def same_object_labels(
    mask_logits,
    counter_logits,
    counter_scores=None,
    empty_threshold: int = 50,
    min_overlap: float = 0.1,
    empty_is_different: bool = False,
):
    """The CME label of each frame from the with-memory mask and the memory-less (counterpart) mask.

    mask_logits, counter_logits (..., H, W) at the input size (positive = object), counter_scores (...)
    the memory-less object-score logits or None.  Returns int32 (...):

    * -1 (ignored) if the counterpart's object score is < 0, or both masks cover <= ``empty_threshold``
      pixels;
    * 1 ("different object": switch) if intersection / min(area, counterpart area) < ``min_overlap``;
    * 0 otherwise.

    Official quirk, kept by default: when exactly one mask is empty (area 0, the other > 50 pixels)
    the official ratio is 0/0 = NaN, ``NaN < 0.1`` is False and the label is 0, although the code's
    comment says that case should be 1; ``empty_is_different=True`` gives it 1."""
    if mask_logits.shape != counter_logits.shape:
        raise ValueError(
            f"same_object_labels: masks {tuple(mask_logits.shape)} and {tuple(counter_logits.shape)} differ in shape"
        )
    m, c = mask_logits > 0, counter_logits > 0
    area = jnp.sum(m, axis=(-2, -1))
    counter_area = jnp.sum(c, axis=(-2, -1))
    inter = jnp.sum(m & c, axis=(-2, -1))
    ignore = (area <= empty_threshold) & (counter_area <= empty_threshold)
    if counter_scores is not None:
        ignore = ignore | (counter_scores < 0)
    smallest = jnp.minimum(area, counter_area)
    ratio = inter.astype(jnp.float32) / jnp.maximum(smallest, 1).astype(jnp.float32)
    different = (smallest > 0) & (ratio < jnp.float32(min_overlap))
    if empty_is_different:
        different = different | (smallest == 0)
    return jnp.where(ignore, -1, jnp.where(different, 1, 0)).astype(jnp.int32)


def weighted_cross_entropy(logits, labels, weights=(1.0, 2.0), ignore_index: int = -1):
    """torch ``F.cross_entropy(logits, labels, weight=weights, ignore_index=ignore_index)`` (mean
    reduction: ``sum_i w[y_i] nll_i / sum_i w[y_i]`` over the rows whose label is not ignored);
    logits (..., C), labels (...) int.  0 when no row is labelled or the result is NaN (SAMWISE's
    ``CME_loss``)."""
    logits = logits.astype(jnp.float32)
    c = logits.shape[-1]
    w = jnp.asarray(weights, jnp.float32)
    if w.shape != (c,):
        raise ValueError(f"weighted_cross_entropy: {w.shape[0]} class weights for {c} classes")
    logits, labels = logits.reshape(-1, c), jnp.asarray(labels).reshape(-1)
    valid = labels != ignore_index
    safe = jnp.where(valid, labels, 0)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), safe[:, None], axis=1)[:, 0]
    wi = jnp.where(valid, w[safe], 0.0)
    den = jnp.sum(wi)
    loss = jnp.sum(jnp.where(valid, wi * nll, 0.0)) / jnp.where(den > 0, den, 1.0)
    return jnp.where((den > 0) & ~jnp.isnan(loss), loss, 0.0)
