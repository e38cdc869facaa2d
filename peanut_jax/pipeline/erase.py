"""The erase stage: video object removal with E2FGVI / E2FGVI-HQ (``infer.py erase``), and its evaluation.

:class:`EraseStage` runs the window engine of :mod:`peanut_jax.pipeline.erase_windows` on the chain's
(frame, mask) records.  ``mode='official'`` reproduces the official ``test.py`` (every reference
frame of the clip); ``mode='streaming'`` (the default of every command) bounds the reference set so
memory stays flat in the clip length.  The protocol details are in ``docs/erase.md``.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from peanut_jax.pipeline.chain import Stage
from peanut_jax.pipeline.erase_windows import (API_NAMES, CHAIN_NAMES, CLI_NAMES, DEFAULT_STREAM_REFS,  # noqa: F401
                                               E2FGVI_SIZE, MIN_HQ_SIZE, MODELS, MODES, PAD_MULTIPLE, ArrayClip,
                                               Blender, Clip, EraseConfig, FolderClip, StreamClip, Window,
                                               WindowModel, blend_weights, composite, final_window, inpaint,
                                               inpaint_arrays, last_use, local_ids, masked_input, nearest_ref_ids,
                                               official_ref_ids, pad_frames, parse_size, plan_windows,
                                               process_mask, processing_size, resize_frame, to_prediction_u8)
from peanut_jax.pipeline.sources import Frame, StreamInfo, mask_coverage_notes  # noqa: F401

__all__ = [
    "MODELS", "E2FGVI_SIZE", "PAD_MULTIPLE", "EraseConfig", "Window", "local_ids", "official_ref_ids",
    "nearest_ref_ids", "plan_windows", "final_window", "blend_weights", "processing_size", "resize_frame",
    "process_mask", "masked_input", "pad_frames", "to_prediction_u8", "composite", "Blender", "Clip",
    "ArrayClip", "FolderClip", "StreamClip", "WindowModel", "inpaint", "inpaint_arrays", "EraseStage",
    "load_eraser", "psnr_e2fgvi", "ssim_e2fgvi", "evaluate",
]


class EraseStage(Stage):
    """E2FGVI / E2FGVI-HQ object removal on the chain's (frame, mask) records.

    ``config``: an :class:`EraseConfig` (default: the official windows and blending with the bounded
    ``streaming`` reference set; ``mode='official'`` reproduces test.py exactly but holds every
    reference frame of the clip).  ``size``: E2FGVI-HQ processing size (default: the native size;
    E2FGVI always runs at 240x432).  Outputs are the official uint8 composites (truncated) at the
    processing size.  ``flags`` names the options in messages (:data:`CHAIN_NAMES` by default).
    """
    name = "erase"
    needs_masks = True

    def __init__(self, module, variables, weights: str = "", config=None, size: tuple[int, int] | None = None,
                 flags: dict | None = None):
        self.flags = CHAIN_NAMES if flags is None else flags
        self.module, self.variables, self.weights = module, variables, weights
        self.model_name = "e2fgvi_hq" if getattr(module, "hq", False) else "e2fgvi"
        self.config = config if config is not None else EraseConfig(mode="streaming")
        self.size = None if size is None else tuple(int(v) for v in size)
        self.runner = WindowModel(module, variables)
        self.max_held = 0

    def psize(self, info: StreamInfo) -> tuple[int, int]:
        return processing_size(self.model_name, (info.height, info.width), self.size, self.flags)

    def check(self, info: StreamInfo) -> None:
        self.psize(info)
        if info.num_frames < 2:
            raise ValueError(f"the clip has {info.num_frames} frame; E2FGVI needs at least 2 (flow completion "
                             f"works on frame pairs)")

    def notes(self, info: StreamInfo) -> list[str]:
        """What to tell the user about this clip before erasing it."""
        out, psize, s = [], self.psize(info), self.config.neighbor_stride
        if info.num_frames < 2 * s + 1:
            out.append(f"note: the clip ({info.num_frames} frames) is shorter than the local window ({2 * s + 1} "
                       f"frames): every window covers the clip")
        if psize != (info.height, info.width):
            out.append(f"note: {self.model_name} runs at {psize[1]}x{psize[0]} (WxH); the {info.width}x{info.height} "
                       f"video is resized (PIL bicubic) and the output has that size")
        return out

    def output_info(self, info):
        h, w = self.psize(info)
        return info.replace(height=h, width=w)

    def compile_jobs(self, info):
        h, w = self.psize(info)
        mh, mw = PAD_MULTIPLE
        hp, wp = -(-h // mh) * mh, -(-w // mw) * mw
        keys = sorted({win.shape_key for win in plan_windows(info.num_frames, self.config)})
        r = self.runner
        return [(("erase", id(r), nt, hp, wp, nl), lambda nl=nl, nt=nt: r(np.zeros((nt, hp, wp, 3), np.float32), nl))
                for nl, nt in keys]

    def __call__(self, frames, info):
        clip = StreamClip(((fr.image, fr.mask) for fr in frames), info.num_frames, self.psize(info),
                          self.config.mask_dilation)
        for i, comp in inpaint(clip, self.runner, self.config):
            yield Frame(np.asarray(comp).astype(np.uint8), None, i)   # the official save: truncation
        self.max_held = max(self.max_held, clip.max_held)


def load_eraser(checkpoint, model: str | None = None, dtype: str = "float32", precision: str | None = None):
    """(model name, module, variables) of E2FGVI(-HQ) weights through the one loading door
    (:func:`peanut_jax.checkpoints.load`); ``model`` refuses weights of the other E2FGVI model
    (default: whichever the checkpoint holds)."""
    from peanut_jax.checkpoints import load
    if checkpoint is None:
        raise ValueError("--checkpoint is required (E2FGVI-CVPR22.pth / E2FGVI-HQ-CVPR22.pth, or an exported "
                         "or orbax directory)")
    if model is not None and model not in MODELS:
        raise ValueError(f"--model must be one of {MODELS}, got {model!r}")
    module, variables = load(checkpoint, model or "e2fgvi", flag="--checkpoint", dtype=dtype, precision=precision)
    got = "e2fgvi_hq" if getattr(module, "hq", False) else "e2fgvi"
    if model is not None and model != got:
        raise ValueError(f"--checkpoint {checkpoint} holds {got} weights but --model {model} was given")
    return got, module, variables


# =============================================================================== evaluation
def psnr_e2fgvi(a, b) -> float:
    """Official ``calculate_psnr``: ``20 log10(255 / sqrt(mean((a - b)^2)))`` in float64, inf if equal."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"psnr_e2fgvi: shapes differ: {a.shape} vs {b.shape}")
    mse = np.mean((a - b) ** 2)
    if mse == 0:
        return float("inf")
    return float(20.0 * np.log10(255.0 / np.sqrt(mse)))


def _box_mean_valid(x: np.ndarray, k: int) -> np.ndarray:
    """Mean over every k x k window fully inside x (H, W) -> (H-k+1, W-k+1), float64 (summed-area table)."""
    s = np.zeros((x.shape[0] + 1, x.shape[1] + 1), np.float64)
    np.cumsum(np.cumsum(x, 0), 1, out=s[1:, 1:])
    return (s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]) / float(k * k)


def ssim_e2fgvi(a, b, data_range: float = 255.0, win_size: int = 65) -> float:
    """SSIM of the official ``evaluate.py``: skimage ``compare_ssim(a, b, data_range=255,
    multichannel=True, win_size=65)``, i.e. a ``win_size`` x ``win_size`` *uniform* window, sample
    covariance (``N / (N - 1)``), K1 = 0.01, K2 = 0.03, the SSIM map averaged over the window
    positions fully inside the image (skimage crops ``(win_size - 1) / 2`` pixels), then over the
    channels.  Not :func:`peanut_jax.metrics.ssim` (the Gaussian 11 x 11 one).  (H, W[, C]) inputs
    in [0, 255], float64 arithmetic."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"ssim_e2fgvi: shapes differ: {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if a.ndim != 3:
        raise ValueError(f"ssim_e2fgvi: images must be (H, W) or (H, W, C), got {a.shape}")
    if win_size % 2 != 1 or min(a.shape[:2]) < win_size:
        raise ValueError(f"ssim_e2fgvi: win_size {win_size} must be odd and at most the image side {a.shape[:2]}")
    np_ = win_size * win_size
    cov_norm = np_ / (np_ - 1.0)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    vals = []
    for c in range(a.shape[-1]):
        x, y = a[..., c], b[..., c]
        ux, uy = _box_mean_valid(x, win_size), _box_mean_valid(y, win_size)
        uxx, uyy, uxy = (_box_mean_valid(x * x, win_size), _box_mean_valid(y * y, win_size),
                         _box_mean_valid(x * y, win_size))
        vx = cov_norm * (uxx - ux * ux)
        vy = cov_norm * (uyy - uy * uy)
        vxy = cov_norm * (uxy - ux * uy)
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
        vals.append(s.mean())
    return float(np.mean(vals))


def evaluate(module, variables, dataset: Iterable[dict], *, config: EraseConfig = EraseConfig(),
             size: tuple[int, int] | None = None, flow_fn: Callable | None = None, progress: bool = False,
             runner: Callable | None = None, model: str | None = None) -> dict:
    """PSNR / SSIM / Ewarp of E2FGVI over a dataset, the way the official ``evaluate.py`` does.

    Each item is a dict with ``frames`` (T, H, W, 3) uint8 (the video to inpaint), ``masks``
    (T, H, W) (raw masks: resized and dilated as test.py), optional ``ground_truth`` (T, H, W, 3)
    uint8 (default: ``frames``, the official setting where masks are drawn on clean videos),
    optional ``name``, optional ``flow_forward`` / ``flow_backward`` (T-1, H', W', 2) flows of the
    ground truth at the processing size for Ewarp (e.g. exact synthetic flows), optional
    ``occlusion`` (T-1, H', W') bool.

    Composites are the official float ones; frames are resized to the processing size (E2FGVI
    432x240; HQ ``size`` or native) together with the ground truth.  PSNR and SSIM
    (:func:`psnr_e2fgvi`, :func:`ssim_e2fgvi`) are per frame against the uint8 ground truth and
    averaged over all frames of all videos; a frame identical to its ground truth has PSNR inf (as
    the official).  Ewarp (:func:`peanut_jax.metrics.warping_error`, l1, frames in [0, 1], occluded
    pixels excluded) of the uint8-saved composites with the ground truth's flow: the item's flows,
    else ``flow_fn(gt_frames_float01) -> (fw, bw)``, else the generator's own fine-tuned SPyNet
    (``update_spynet``) on the ground truth; averaged over all frame pairs of all videos.
    ``runner``: the window model (default :class:`WindowModel` of ``module``; any callable with its
    contract, e.g. in tests); ``model``: 'e2fgvi' / 'e2fgvi_hq' (default from ``module.hq``).
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
            raise ValueError(f"evaluate: item {k}: frames {frames.shape}, masks {masks.shape} and ground truth "
                             f"{gt.shape} do not match")
        psize = processing_size(name, frames.shape[1:3], size)
        comps = inpaint_arrays(module, variables, frames, masks, config, size=psize, model=name, runner=runner)
        gts = np.stack([resize_frame(g, psize) for g in gt])
        vp = [psnr_e2fgvi(c, g) for c, g in zip(comps, gts)]
        vs = [ssim_e2fgvi(c, g) for c, g in zip(comps, gts)]
        saved = np.stack([c.astype(np.uint8) for c in comps]).astype(np.float32) / 255.0
        gtf = gts.astype(np.float32) / 255.0
        occ = item.get("occlusion")
        if "flow_forward" in item:
            fw, bw = np.asarray(item["flow_forward"]), item.get("flow_backward")
        elif flow_fn is not None:
            fw, bw = flow_fn(gtf)
        else:
            fw, bw = _spynet_flows(module, variables, gtf)
        ew = np.asarray(warping_error(saved, fw, None if occ is not None else bw, occ, reduce="none"))
        psnrs += vp
        ssims += vs
        ewarps += [float(e) for e in ew if np.isfinite(e)]
        per_video.append({"name": item.get("name", str(k)), "psnr": float(np.mean(vp)), "ssim": float(np.mean(vs)),
                          "ewarp": float(np.nanmean(ew)) if np.isfinite(ew).any() else float("nan"),
                          "frames": len(vp)})
    if not per_video:
        raise ValueError("evaluate: the dataset is empty")
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)),
            "ewarp": float(np.mean(ewarps)) if ewarps else float("nan"), "frames": len(psnrs),
            "videos": len(per_video), "per_video": per_video}


def _spynet_flows(module, variables, frames01: np.ndarray):
    """Forward/backward flows of consecutive frames with the generator's ``update_spynet``."""
    import jax
    import jax.numpy as jnp

    from peanut_jax.models.spynet import SPyNet
    net = SPyNet(variant="mmagic")
    p = {"params": variables["params"]["update_spynet"]}
    fn = jax.jit(lambda p, a, b: net.apply(p, a, b))
    fw, bw = [], []
    for t in range(len(frames01) - 1):
        a, b = jnp.asarray(frames01[t:t + 1]), jnp.asarray(frames01[t + 1:t + 2])
        pair = fn(p, jnp.concatenate([a, b]), jnp.concatenate([b, a]))
        fw.append(np.asarray(pair[0]))
        bw.append(np.asarray(pair[1]))
    return np.stack(fw), np.stack(bw)
