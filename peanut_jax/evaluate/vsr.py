"""Video super-resolution evaluation (BasicVSR++ x4), mmagic's protocol.

The whole clip in one pass (the official ``restoration_video_inference``; ``chunk`` switches to the
streaming upscaler), output clamped to [0, 1] and rounded to 8 bits (``tensor2img``), PSNR and SSIM
per frame on RGB and on the BT.601 Y channel with ``crop_border`` pixels removed (mmagic's configs
use 0), averaged over the frames of a clip, then over clips; mmagic reports REDS4 on RGB and Vid4 /
Vimeo-90K-T on Y, both are returned, with the MATLAB bicubic upsampling alongside (``*_bicubic``).
Layouts (folders as distributed / as mmagic expects them):

* ``reds4``: ``root/train_sharp/<clip>/*.png`` + ``root/train_sharp_bicubic/X4/<clip>/*.png`` for
  clips 000, 011, 015, 020 (BI; for ``degradation='BD'`` the LR is computed from the GT);
* ``vid4``: ``root/GT/<clip>/*.png`` + ``root/BIx4|BDx4/<clip>/*.png`` (LR computed when absent);
* ``vimeo90k_t``: ``root/sequences/<a>/<b>/im1..7.png`` + ``root/sep_testlist.txt`` (+ optional
  ``root/BIx4|BDx4``): 7 LR frames mirror-extended to 14 (mmagic ``MirrorSequence``), the output
  for the centre frame is ``0.5 * (out[3] + out[10])`` against ``im4`` (``BasicVSR.forward_inference``);
* ``synthetic``: procedural clips (``peanut_jax.data.synthetic``) degraded on the fly.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from collections.abc import Callable, Sequence

import numpy as np

from peanut_jax.evaluate.common import (
    image_files,
    mean,
    quantize,
    read_list,
    stack_images,
)

REDS4 = ("000", "011", "015", "020")
VID4 = ("calendar", "city", "foliage", "walk")
VIMEO_SEPTUPLET_FRAMES = tuple(f"im{i}.png" for i in range(1, 8))
SCALE = 4
DATASETS = ("reds4", "vid4", "vimeo90k_t", "synthetic")

__all__ = [
    "DATASETS",
    "REDS4",
    "SCALE",
    "VID4",
    "VSRClip",
    "evaluate_vsr",
    "frame_metrics",
    "reds4_clips",
    "synthetic_vsr_clips",
    "vid4_clips",
    "vimeo90k_t_clips",
    "vsr_clips",
]


@dataclasses.dataclass
class VSRClip:
    """One evaluation clip: ``load() -> (lq uint8 (T, h, w, 3), gt uint8 (T', H, W, 3))``;
    ``center_only``: Vimeo-90K-T (mirror-extend the 7 LR frames, compare the centre frame)."""

    name: str
    load: Callable[[], tuple[np.ndarray, np.ndarray]]
    center_only: bool = False


def _degrade(gt: np.ndarray, kind: str) -> np.ndarray:
    from peanut_jax.data.degrade import degrade_uint8

    return np.stack([degrade_uint8(f, kind) for f in gt])


def _paired_loader(gt_dir: pathlib.Path, lq_dir: pathlib.Path | None, kind: str, max_frames: int | None):
    def load():
        gpaths = image_files(gt_dir)[:max_frames]
        gt = stack_images(gpaths)
        if lq_dir is None:
            return _degrade(gt, kind), gt
        lpaths = image_files(lq_dir)[:max_frames]
        if [p.name for p in lpaths] != [p.name for p in gpaths]:
            raise ValueError(f"{lq_dir}: LR frame names differ from {gt_dir}")
        lq = stack_images(lpaths)
        if lq.shape[1] * SCALE != gt.shape[1] or lq.shape[2] * SCALE != gt.shape[2]:
            raise ValueError(
                f"{lq_dir}: LR {lq.shape[1]}x{lq.shape[2]} is not GT {gt.shape[1]}x{gt.shape[2]} / {SCALE}"
            )
        return lq, gt

    return load


def reds4_clips(root, degradation: str = "BI", max_frames: int | None = None) -> list[VSRClip]:
    root = pathlib.Path(root)
    out = []
    for c in REDS4:
        gt_dir = root / "train_sharp" / c
        if not gt_dir.is_dir():
            raise FileNotFoundError(
                f"{gt_dir}: missing (REDS layout: train_sharp/<clip>, train_sharp_bicubic/X4/<clip>)"
            )
        lq_dir = root / "train_sharp_bicubic" / "X4" / c
        lq_dir = lq_dir if degradation == "BI" and lq_dir.is_dir() else None
        out.append(VSRClip(c, _paired_loader(gt_dir, lq_dir, degradation, max_frames)))
    return out


def vid4_clips(root, degradation: str = "BI", max_frames: int | None = None) -> list[VSRClip]:
    root = pathlib.Path(root)
    gt_root = root / "GT"
    if not gt_root.is_dir():
        raise FileNotFoundError(f"{gt_root}: missing (Vid4 layout: GT/<clip>, BIx4/<clip>, BDx4/<clip>)")
    names = [n for n in VID4 if (gt_root / n).is_dir()] or sorted(p.name for p in gt_root.iterdir() if p.is_dir())
    lq_root = root / f"{degradation}x4"
    return [
        VSRClip(n, _paired_loader(gt_root / n, (lq_root / n) if lq_root.is_dir() else None, degradation, max_frames))
        for n in names
    ]


def vimeo90k_t_clips(root, degradation: str = "BI", max_clips: int | None = None) -> list[VSRClip]:
    root = pathlib.Path(root)
    names = read_list(root / "sep_testlist.txt")[:max_clips]
    lq_root = root / f"{degradation}x4"

    def loader(name):
        def load():
            gt = stack_images([root / "sequences" / name / f for f in VIMEO_SEPTUPLET_FRAMES])
            if lq_root.is_dir():
                lq = stack_images([lq_root / name / f for f in VIMEO_SEPTUPLET_FRAMES])
            else:
                lq = _degrade(gt, degradation)
            return lq, gt[3:4]

        return load

    return [VSRClip(n, loader(n), center_only=True) for n in names]


def synthetic_vsr_clips(
    num_clips: int = 4, num_frames: int = 7, lq_size: int = 64, degradation: str = "BI", seed: int = 1000, **scene
) -> list[VSRClip]:
    """Procedural clips (GT ``4 * lq_size`` square, quantised to uint8) degraded on the fly; the same
    seeds ``(seed, 1, i)`` as the training task's held-out set."""
    from peanut_jax.data.synthetic import generate_clip

    scene = {
        "num_objects": 3,
        "camera_speed": 0.01,
        "object_speed": (0.005, 0.02),
        "camera_zoom": 0.005,
        "camera_rotation": 0.005,
        **scene,
    }

    def loader(i):
        def load():
            c = generate_clip((seed, 1, i), num_frames, lq_size * SCALE, lq_size * SCALE, **scene)
            gt = np.round(np.clip(c.frames, 0.0, 1.0) * 255.0).astype(np.uint8)
            return _degrade(gt, degradation), gt

        return load

    return [VSRClip(f"synthetic_{i:03d}", loader(i)) for i in range(num_clips)]


def vsr_clips(
    dataset: str, root=None, degradation: str = "BI", max_clips: int | None = None, max_frames: int | None = None, **kw
) -> list[VSRClip]:
    if degradation not in ("BI", "BD"):
        raise ValueError(f"degradation must be 'BI' or 'BD', got {degradation!r}")
    if dataset == "synthetic":
        return synthetic_vsr_clips(max_clips or 4, max_frames or 7, degradation=degradation, **kw)
    if root is None:
        raise ValueError(f"dataset {dataset!r} needs --root")
    if dataset == "reds4":
        return reds4_clips(root, degradation, max_frames)[:max_clips]
    if dataset == "vid4":
        return vid4_clips(root, degradation, max_frames)[:max_clips]
    if dataset == "vimeo90k_t":
        return vimeo90k_t_clips(root, degradation, max_clips)
    raise ValueError(f"unknown VSR dataset {dataset!r}; known: reds4, vid4, vimeo90k_t, synthetic")


def frame_metrics(out: np.ndarray, gt: np.ndarray, crop_border: int) -> dict:
    """Per-frame PSNR / SSIM on RGB and Y (mmagic), (T,) arrays each."""
    from peanut_jax.metrics import psnr, ssim

    return {
        "psnr": psnr(out, gt, crop_border=crop_border),
        "ssim": ssim(out, gt, crop_border=crop_border),
        "psnr_y": psnr(out, gt, crop_border=crop_border, y_channel=True),
        "ssim_y": ssim(out, gt, crop_border=crop_border, y_channel=True),
    }


def evaluate_vsr(
    module,
    variables,
    clips: Sequence[VSRClip],
    *,
    crop_border: int = 0,
    chunk: int | None = None,
    overlap: int = 8,
    bicubic: bool = True,
    progress: bool = False,
) -> dict:
    """Mean metrics over ``clips`` (see the module docstring) and per-clip results under ``'clips'``."""
    from peanut_jax.data.degrade import bicubic_upsample
    from peanut_jax.pipeline.upscale import Upscaler, upscale_video

    scale = int(getattr(module, "output_scale", SCALE))
    if scale != SCALE:
        raise ValueError(f"the model upscales x{scale}; the VSR benchmarks are x{SCALE}")
    runner = Upscaler(module, variables)
    per_clip = {}
    for k, clip in enumerate(clips):
        lq_u8, gt_u8 = clip.load()
        lq = lq_u8.astype(np.float32) / 255.0
        gt = gt_u8.astype(np.float64) / 255.0
        if clip.center_only:
            lq_in = np.concatenate([lq, lq[::-1]], 0)
            out = runner(lq_in)
            t = out.shape[0]
            out = 0.5 * (out[t // 4] + out[-1 - t // 4])
            out = out[None]
            bic = bicubic_upsample(lq[3:4], SCALE) if bicubic else None
        else:
            if chunk:
                out = np.stack(
                    list(
                        upscale_video(lq, module, variables, chunk=chunk, overlap=overlap, clip=False, upscaler=runner)
                    )
                )
            else:
                out = runner(lq)
            bic = bicubic_upsample(lq, SCALE) if bicubic else None
        if out.shape != gt.shape:
            raise ValueError(f"clip {clip.name}: output {out.shape} does not match the GT {gt.shape}")
        m = {k2: mean(v) for k2, v in frame_metrics(quantize(out), gt, crop_border).items()}
        if bic is not None:
            m.update({f"{k2}_bicubic": mean(v) for k2, v in frame_metrics(quantize(bic), gt, crop_border).items()})
        m["frames"] = int(gt.shape[0])
        per_clip[clip.name] = m
        if progress:
            print(
                f"[{k + 1}/{len(clips)}] {clip.name}: "
                + ", ".join(f"{a}={b:.4f}" for a, b in m.items() if a != "frames"),
                file=sys.stderr,
            )
    if not per_clip:
        raise ValueError("no clips to evaluate")
    keys = [k for k in next(iter(per_clip.values())) if k != "frames"]
    result = {k: mean([m[k] for m in per_clip.values()]) for k in keys}
    result["num_clips"] = len(per_clip)
    result["clips"] = per_clip
    return result
