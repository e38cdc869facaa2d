"""The erase stage: video object removal with E2FGVI / E2FGVI-HQ (``infer.py erase``), and its evaluation.

:class:`EraseStage` runs the window engine of :mod:`peanut_jax.pipeline.erase_windows` on the chain's
(frame, mask) records.  ``mode='official'`` reproduces the official ``test.py`` (every reference
frame of the clip; what the evaluation protocol uses); ``mode='streaming'`` (the default everywhere)
bounds the reference set so that memory and work per frame stay flat in the clip length, and pads
windows to two fixed shapes so that clips of any length reuse the same compiled programs.  The
protocol details are in ``docs/erase.md``.
"""

from __future__ import annotations

import numpy as np

from peanut_jax.pipeline.chain import Stage
from peanut_jax.pipeline.erase_windows import (
    CHAIN_NAMES,
    DEFAULT_STREAM_REFS,  # noqa: F401
    E2FGVI_SIZE,
    MODELS,
    PAD_MULTIPLE,
    ArrayClip,
    Blender,
    Clip,
    EraseConfig,
    FolderClip,
    StreamClip,
    Window,
    WindowModel,
    blend_weights,
    composite,
    fill_refs,
    final_window,
    inpaint,
    inpaint_arrays,
    local_ids,
    masked_input,
    nearest_ref_ids,
    official_ref_ids,
    pad_frames,
    plan_windows,
    process_mask,
    processing_size,
    ref_count,
    resize_frame,
    to_prediction_u8,
)
from peanut_jax.pipeline.sources import Frame, StreamInfo, mask_coverage_notes  # noqa: F401

__all__ = [
    "MODELS",
    "E2FGVI_SIZE",
    "PAD_MULTIPLE",
    "EraseConfig",
    "Window",
    "local_ids",
    "official_ref_ids",
    "nearest_ref_ids",
    "ref_count",
    "fill_refs",
    "plan_windows",
    "final_window",
    "blend_weights",
    "processing_size",
    "resize_frame",
    "process_mask",
    "masked_input",
    "pad_frames",
    "to_prediction_u8",
    "composite",
    "Blender",
    "Clip",
    "ArrayClip",
    "FolderClip",
    "StreamClip",
    "WindowModel",
    "inpaint",
    "inpaint_arrays",
    "EraseStage",
    "load_eraser",
]


class EraseStage(Stage):
    """E2FGVI / E2FGVI-HQ object removal on the chain's (frame, mask) records.

    ``config``: an :class:`EraseConfig` (default: the official windows and blending with the bounded
    ``streaming`` reference set and two window shapes whatever the clip length; ``mode='official'``
    reproduces test.py exactly but holds every reference frame of the clip and its windows grow
    with it).  ``size``: E2FGVI-HQ processing size (default: the native size;
    E2FGVI always runs at 240x432).  Outputs are the official uint8 composites (truncated) at the
    processing size.  ``flags`` names the options in messages (:data:`CHAIN_NAMES` by default).
    """

    name = "erase"
    needs_masks = True

    def __init__(
        self,
        module,
        variables,
        weights: str = "",
        config=None,
        size: tuple[int, int] | None = None,
        flags: dict | None = None,
    ):
        self.flags = CHAIN_NAMES if flags is None else flags
        self.module, self.variables, self.weights = module, variables, weights
        self.model_name = "e2fgvi_hq" if getattr(module, "hq", False) else "e2fgvi"
        self.config = config if config is not None else EraseConfig()
        self.size = None if size is None else tuple(int(v) for v in size)
        self.runner = WindowModel(module, variables)
        self.max_held = 0

    def psize(self, info: StreamInfo) -> tuple[int, int]:
        return processing_size(self.model_name, (info.height, info.width), self.size, self.flags)

    def check(self, info: StreamInfo) -> None:
        self.psize(info)
        if info.num_frames < 2:
            raise ValueError(
                f"the clip has {info.num_frames} frame; E2FGVI needs at least 2 (flow completion works on frame pairs)"
            )

    def notes(self, info: StreamInfo) -> list[str]:
        """What to tell the user about this clip before erasing it."""
        out, psize, s = [], self.psize(info), self.config.neighbor_stride
        if info.num_frames < 2 * s + 1:
            padded = self.config.mode == "streaming" and self.config.fixed_shapes
            out.append(
                f"note: the clip ({info.num_frames} frames) is shorter than the local window ({2 * s + 1} "
                f"frames): every window covers the clip"
                + (" (padded with repeated frames to the usual window shape)" if padded else "")
            )
        if psize != (info.height, info.width):
            out.append(
                f"note: {self.model_name} runs at {psize[1]}x{psize[0]} (WxH); the {info.width}x{info.height} "
                f"video is resized (PIL bicubic) and the output has that size"
            )
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
        return [
            (("erase", id(r), nt, hp, wp, nl), lambda nl=nl, nt=nt: r(np.zeros((nt, hp, wp, 3), np.float32), nl))
            for nl, nt in keys
        ]

    def __call__(self, frames, info):
        clip = StreamClip(
            ((fr.image, fr.mask) for fr in frames), info.num_frames, self.psize(info), self.config.mask_dilation
        )
        for i, comp in inpaint(clip, self.runner, self.config):
            yield Frame(np.asarray(comp).astype(np.uint8), None, i)  # the official save: truncation
        self.max_held = max(self.max_held, clip.max_held)


def load_eraser(checkpoint, model: str | None = None, dtype: str = "float32", precision: str | None = None):
    """(model name, module, variables) of E2FGVI(-HQ) weights through the one loading door
    (:func:`peanut_jax.checkpoints.load`); ``model`` refuses weights of the other E2FGVI model
    (default: whichever the checkpoint holds)."""
    from peanut_jax.checkpoints import load

    if checkpoint is None:
        raise ValueError(
            "--checkpoint is required (E2FGVI-CVPR22.pth / E2FGVI-HQ-CVPR22.pth, or an exported or orbax directory)"
        )
    if model is not None and model not in MODELS:
        raise ValueError(f"--model must be one of {MODELS}, got {model!r}")
    module, variables = load(checkpoint, model or "e2fgvi", flag="--checkpoint", dtype=dtype, precision=precision)
    got = "e2fgvi_hq" if getattr(module, "hq", False) else "e2fgvi"
    if model is not None and model != got:
        raise ValueError(f"--checkpoint {checkpoint} holds {got} weights but --model {model} was given")
    return got, module, variables
