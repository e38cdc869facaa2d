"""Inference: the chain (``chain.py``: ``stream = stage(stream, info)``), where frames come from
(``sources.py``) and go to (``outputs.py``), what a run measures (``telemetry.py``), how a chain is
assembled (``build.py``), and one module per stage with its window engine and its Stage (mask,
erase, upscale, interpolate, flow).  The commands are in :mod:`peanut_jax.cli`.

The names below are the pipeline's public API (``from peanut_jax import pipeline as P; P.Chain(...)``),
imported on first use so that ``import peanut_jax.pipeline`` stays cheap."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "chain": ("STAGE_ORDER", "Chain", "Stage"),
    "sources": (
        "ArrayMasks",
        "ArraySource",
        "FolderMasks",
        "Frame",
        "MaskSource",
        "StreamInfo",
        "note_masks",
        "open_source",
    ),
    "outputs": ("check_output", "has_audio", "mux_audio", "side_by_side_frame"),
    "telemetry": ("MemoryMonitor", "RunSummary", "backend_compiles"),
    "build": ("DEFAULT_CHECKPOINTS", "build_chain", "load_stage_model", "make_stage", "parse_stages"),
    "erase": ("EraseStage", "inpaint_arrays"),
    "upscale": ("UpscaleStage", "upscale_video"),
    "interpolate": ("InterpolateStage", "interpolate_video"),
    "flow": ("FlowStage", "estimate_flows"),
    "mask": ("PromptMasks", "run_mask"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
