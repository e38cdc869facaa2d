"""Video-inpainting evaluation (E2FGVI / E2FGVI-HQ), the official ``evaluate.py`` protocol.

The erase window engine (:mod:`peanut_jax.pipeline.erase_windows`) in its ``'official'`` mode
(every reference frame, as the official ``test.py``) inpaints each video; PSNR
(``20 log10(255 / sqrt(mse))``) and SSIM (skimage ``compare_ssim``, uniform 65x65 window) per frame
against the uint8 ground truth, and the warping error (Ewarp) of the saved frames along the ground
truth's flow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from peanut_jax.pipeline.erase_windows import (
    EraseConfig,
    WindowModel,
    inpaint_arrays,
    processing_size,
    resize_frame,
)

OFFICIAL = EraseConfig(mode="official")

__all__ = ["OFFICIAL", "evaluate", "frame_psnr", "frame_ssim", "spynet_flows"]


def frame_psnr(comp, gt) -> float:
    """E2FGVI's ``calculate_psnr`` of one (H, W, 3) frame on the 0..255 scale (inf if identical)."""
    from peanut_jax.metrics import psnr

    return psnr(comp, gt, 255.0, reduction="all", formula="e2fgvi")


def frame_ssim(comp, gt) -> float:
    """E2FGVI's ``compare_ssim(data_range=255, multichannel=True, win_size=65)`` of one (H, W, 3) frame."""
    from peanut_jax.metrics import ssim

    return ssim(comp, gt, 255.0, window="uniform", window_size=65, reduction="all")


def evaluate(
    module,
    variables,
    dataset: Iterable[dict],
    *,
    config: EraseConfig = OFFICIAL,
    size: tuple[int, int] | None = None,
    flow_fn: Callable | None = None,
    progress: bool = False,
    runner: Callable | None = None,
    model: str | None = None,
) -> dict:
    """PSNR / SSIM / Ewarp of E2FGVI over a dataset, the way the official ``evaluate.py`` does.

    Each item is a dict with ``frames`` (T, H, W, 3) uint8 (the video to inpaint), ``masks``
    (T, H, W) (raw masks: resized and dilated as test.py), optional ``ground_truth`` (T, H, W, 3)
    uint8 (default: ``frames``, the official setting where masks are drawn on clean videos),
    optional ``name``, optional ``flow_forward`` / ``flow_backward`` (T-1, H', W', 2) flows of the
    ground truth at the processing size for Ewarp (e.g. exact synthetic flows), optional
    ``occlusion`` (T-1, H', W') bool.

    Frames are resized to the processing size (E2FGVI 432x240; HQ ``size`` or native) together with
    the ground truth; :func:`frame_psnr` / :func:`frame_ssim` of the official float composites are
    averaged over all frames of all videos.  Ewarp (:func:`peanut_jax.metrics.warping_error`, l1,
    [0, 1], occluded pixels excluded) of the uint8-saved composites with the ground truth's flow:
    the item's flows, else ``flow_fn(gt_frames_float01) -> (fw, bw)``, else the generator's own
    fine-tuned SPyNet (:func:`spynet_flows`); averaged over all frame pairs of all videos.
    ``runner``: the window model (default :class:`~peanut_jax.pipeline.erase_windows.WindowModel` of
    ``module``); ``model``: 'e2fgvi' / 'e2fgvi_hq' (default from ``module.hq``).
    Returns ``{'psnr', 'ssim', 'ewarp', 'frames', 'videos', 'per_video': [...]}``.
    """
    from peanut_jax.metrics import warping_error

    name = model or ("e2fgvi_hq" if getattr(module, "hq", True) else "e2fgvi")
    runner = runner or WindowModel(module, variables)
    psnrs, ssims, ewarps, per_video = [], [], [], []
    items = list(dataset) if progress else dataset
    if progress:
        from tqdm import tqdm

        items = tqdm(items, unit="video", desc="evaluate")
    for k, item in enumerate(items):
        frames = np.asarray(item["frames"])
        masks = np.asarray(item["masks"])
        gt = np.asarray(item.get("ground_truth", frames))
        if frames.dtype != np.uint8 or gt.dtype != np.uint8:
            raise ValueError(f"evaluate: item {k}: frames and ground_truth must be uint8")
        if gt.shape != frames.shape or masks.shape != frames.shape[:3]:
            raise ValueError(
                f"evaluate: item {k}: frames {frames.shape}, masks {masks.shape} and ground truth "
                f"{gt.shape} do not match"
            )
        psize = processing_size(name, frames.shape[1:3], size)
        comps = inpaint_arrays(module, variables, frames, masks, config, size=psize, model=name, runner=runner)
        gts = np.stack([resize_frame(g, psize) for g in gt])
        vp = [frame_psnr(c, g) for c, g in zip(comps, gts)]
        vs = [frame_ssim(c, g) for c, g in zip(comps, gts)]
        saved = np.stack([c.astype(np.uint8) for c in comps]).astype(np.float32) / 255.0
        gtf = gts.astype(np.float32) / 255.0
        occ = item.get("occlusion")
        if "flow_forward" in item:
            fw, bw = np.asarray(item["flow_forward"]), item.get("flow_backward")
        elif flow_fn is not None:
            fw, bw = flow_fn(gtf)
        else:
            fw, bw = spynet_flows(module, variables, gtf)
        ew = np.asarray(warping_error(saved, fw, None if occ is not None else bw, occ, reduce="none"))
        psnrs += vp
        ssims += vs
        ewarps += [float(e) for e in ew if np.isfinite(e)]
        per_video.append(
            {
                "name": item.get("name", str(k)),
                "psnr": float(np.mean(vp)),
                "ssim": float(np.mean(vs)),
                "ewarp": float(np.nanmean(ew)) if np.isfinite(ew).any() else float("nan"),
                "frames": len(vp),
            }
        )
    if not per_video:
        raise ValueError("evaluate: the dataset is empty")
    return {
        "psnr": float(np.mean(psnrs)),
        "ssim": float(np.mean(ssims)),
        "ewarp": float(np.mean(ewarps)) if ewarps else float("nan"),
        "frames": len(psnrs),
        "videos": len(per_video),
        "per_video": per_video,
    }


def spynet_flows(module, variables, frames01: np.ndarray):
    """Forward/backward flows (T-1, H, W, 2) of consecutive frames with the generator's ``update_spynet``."""
    import jax
    import jax.numpy as jnp

    from peanut_jax.models.spynet import SPyNet

    net = SPyNet(variant="mmagic")
    p = {"params": variables["params"]["update_spynet"]}
    fn = jax.jit(lambda p, a, b: net.apply(p, a, b))
    fw, bw = [], []
    for t in range(len(frames01) - 1):
        a, b = jnp.asarray(frames01[t : t + 1]), jnp.asarray(frames01[t + 1 : t + 2])
        pair = fn(p, jnp.concatenate([a, b]), jnp.concatenate([b, a]))
        fw.append(np.asarray(pair[0]))
        bw.append(np.asarray(pair[1]))
    return np.stack(fw), np.stack(bw)
