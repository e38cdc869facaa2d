"""Training augmentations as pure numpy functions of the arrays and a ``np.random.Generator``.

Each one reproduces an official data pipeline (mmagic for BasicVSR++, RIFE's ``VimeoDataset``, E2FGVI's
``TrainDataset``) including the order in which it draws its random numbers, so an example stays a pure
function of its seed.  Clips are (T, H, W, C); frames (H, W, C).
"""

from __future__ import annotations

import numpy as np


# ------------------------------------------------------------------------------------------ clips
def sample_indices(rng: np.random.Generator, length: int, num_local: int, num_ref: int) -> list[int]:
    """E2FGVI's ``_sample_index``: a run of ``num_local`` consecutive frames at a random pivot, then
    ``num_ref`` sorted frames drawn without replacement from the others."""
    if length < num_local + num_ref:
        raise ValueError(
            f"a video of {length} frames is shorter than num_local_frames + num_ref_frames = {num_local + num_ref}"
        )
    pivot = int(rng.integers(0, length - num_local + 1))
    local = list(range(pivot, pivot + num_local))
    remain = [i for i in range(length) if i < pivot or i >= pivot + num_local]
    ref = sorted(int(i) for i in rng.choice(remain, size=num_ref, replace=False)) if num_ref else []
    return local + ref


def random_hflip(rng: np.random.Generator, *clips: np.ndarray) -> tuple[np.ndarray, ...]:
    """With p = 0.5 (one draw) mirror every clip left-right (the same flip for all)."""
    if rng.random() < 0.5:
        return tuple(c[:, :, ::-1] for c in clips)
    return clips


def flip_transpose(lq: np.ndarray, gt: np.ndarray, rng: np.random.Generator, flip: bool = True, transpose: bool = True):
    """mmagic ``Flip`` (horizontal, then vertical) and ``RandomTransposeHW``, p = 0.5 each, the same
    for every frame of the (T, H, W, C) clips ``lq`` and ``gt`` (three draws, always)."""
    u = rng.random(3)
    if flip and u[0] < 0.5:
        lq, gt = lq[:, :, ::-1], gt[:, :, ::-1]
    if flip and u[1] < 0.5:
        lq, gt = lq[:, ::-1], gt[:, ::-1]
    if transpose and u[2] < 0.5:
        lq, gt = lq.transpose(0, 2, 1, 3), gt.transpose(0, 2, 1, 3)
    return np.ascontiguousarray(lq), np.ascontiguousarray(gt)


def paired_random_crop(
    lq: np.ndarray, gt: np.ndarray, lq_size: int, scale: int, rng: np.random.Generator, where: str = "clip"
):
    """mmagic ``PairedRandomCrop``: an ``lq_size`` LR patch at a random position and the aligned
    ``scale * lq_size`` GT patch."""
    h, w = lq.shape[1:3]
    if gt.shape[1:3] != (h * scale, w * scale):
        raise ValueError(f"{where}: GT {gt.shape[1]}x{gt.shape[2]} is not {scale} x LR {h}x{w}")
    if h < lq_size or w < lq_size:
        raise ValueError(f"{where}: LR frames {h}x{w} are smaller than the crop data.lq_size={lq_size}")
    top, left = int(rng.integers(0, h - lq_size + 1)), int(rng.integers(0, w - lq_size + 1))
    s = scale
    return (
        lq[:, top : top + lq_size, left : left + lq_size],
        gt[:, top * s : (top + lq_size) * s, left * s : (left + lq_size) * s],
    )


def paired_center_crop(lq: np.ndarray, gt: np.ndarray, size: int, scale: int):
    """The centre ``size`` LR patch (each side at most ``size``) and the aligned GT patch; ``size`` 0 or
    frames no larger than it: unchanged."""
    h, w = lq.shape[1:3]
    if not size or (h <= size and w <= size):
        return lq, gt
    sh, sw = min(size, h), min(size, w)
    top, left = (h - sh) // 2, (w - sw) // 2
    return (
        lq[:, top : top + sh, left : left + sw],
        gt[:, top * scale : (top + sh) * scale, left * scale : (left + sw) * scale],
    )


def mirror_sequence(x: np.ndarray) -> np.ndarray:
    """mmagic ``MirrorSequence``: the clip followed by its reverse (T -> 2T)."""
    return np.concatenate([x, x[::-1]], axis=0)


# --------------------------------------------------------------------------------------- triplets
TRIPLET_FLAGS = ("channel_flip", "vflip", "hflip", "temporal_flip", "rotate")


def triplet(
    img0: np.ndarray,
    gt: np.ndarray,
    img1: np.ndarray,
    t: float,
    rng: np.random.Generator,
    crop: tuple[int, int] | None,
    flags=None,
    flow: np.ndarray | None = None,
):
    """RIFE's ``VimeoDataset.__getitem__`` augmentation of (H, W, 3) frames, in order: random ``crop``
    (rows, then columns), then one draw of 5 uniforms for channel flip (RGB <-> BGR), vertical flip,
    horizontal flip, temporal swap of img0 and img1 (t -> 1 - t), each p = 0.5, and rotation by 90 CW /
    180 / 90 CCW with p = 0.25 each.  ``flags`` (a mapping, e.g. the ``data`` config block) may switch
    any of :data:`TRIPLET_FLAGS` off; missing keys are on.  Returns ``(img0, gt, img1, t, flow)``.

    ``flow`` (H, W, 4) (from ``gt`` to img0 in channels 0:2, to img1 in 2:4, x first) is transformed
    consistently: cropped, flipped and rotated as a field *and* as vectors, halves swapped by the
    temporal swap (so ``warp(img0, flow[..., :2]) ~ gt`` still holds after augmentation).
    """
    on = (lambda k: bool(flags.get(k, True))) if flags is not None else (lambda k: True)  # noqa: E731
    if crop is not None:
        ch, cw = crop
        h, w = img0.shape[:2]
        if h < ch or w < cw:
            raise ValueError(f"frames of {h}x{w} are smaller than the crop {ch}x{cw} (data.crop)")
        x, y = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        img0, gt, img1 = (a[x : x + ch, y : y + cw] for a in (img0, gt, img1))
        if flow is not None:
            flow = flow[x : x + ch, y : y + cw]
    u = rng.random(5)
    if on("channel_flip") and u[0] < 0.5:
        img0, gt, img1 = img0[:, :, ::-1], gt[:, :, ::-1], img1[:, :, ::-1]
    if on("vflip") and u[1] < 0.5:
        img0, gt, img1 = img0[::-1], gt[::-1], img1[::-1]
        if flow is not None:
            flow = flow[::-1] * np.array([1, -1, 1, -1], flow.dtype)
    if on("hflip") and u[2] < 0.5:
        img0, gt, img1 = img0[:, ::-1], gt[:, ::-1], img1[:, ::-1]
        if flow is not None:
            flow = flow[:, ::-1] * np.array([-1, 1, -1, 1], flow.dtype)
    if on("temporal_flip") and u[3] < 0.5:
        img0, img1, t = img1, img0, 1.0 - t
        if flow is not None:
            flow = np.concatenate([flow[..., 2:], flow[..., :2]], -1)
    if on("rotate"):
        p = u[4]
        k = 3 if p < 0.25 else 2 if p < 0.5 else 1 if p < 0.75 else 0  # cv2 90 CW / 180 / 90 CCW / none
        if k:
            if k % 2 and img0.shape[0] != img0.shape[1]:
                raise ValueError(f"90-degree rotations need square crops, got {img0.shape[0]}x{img0.shape[1]}")
            img0, gt, img1 = (np.rot90(a, k) for a in (img0, gt, img1))
            if flow is not None:
                flow = np.rot90(flow, k)
                fx, fy = flow[..., 0::2], flow[..., 1::2]
                # np.rot90 by k=1 (counter-clockwise) maps a displacement (dx, dy) to (dy, -dx)
                for _ in range(k):
                    fx, fy = fy, -fx
                flow = np.stack([fx[..., 0], fy[..., 0], fx[..., 1], fy[..., 1]], -1)
    c = np.ascontiguousarray
    return c(img0), c(gt), c(img1), float(t), (None if flow is None else c(flow, dtype=np.float32))
