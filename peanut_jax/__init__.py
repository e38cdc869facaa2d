"""peanut_jax: PEANUT in JAX/Flax — text/prompt masks (SAM 2, SAMWISE), flow-guided video inpainting
(E2FGVI), video restoration (BasicVSR++) and frame interpolation (RIFE), official checkpoints included.

    import peanut_jax as pj
    module, variables = pj.load("rife_hdv3")          # registry name, official file, exported folder, workdir
    frames_out = pj.interpolate_video(frames, module, variables, multi=2)

The public API below is imported on first use (``import peanut_jax`` stays cheap)."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "peanut_jax.checkpoints": ("load",),
    "peanut_jax.models": ("build",),
    "peanut_jax.convert": ("from_official", "to_official"),
    "peanut_jax.pipeline.erase": ("inpaint_arrays",),
    "peanut_jax.pipeline.upscale": ("upscale_video",),
    "peanut_jax.pipeline.interpolate": ("interpolate_video", "interpolate_pair"),
    "peanut_jax.pipeline.flow": ("estimate_flows",),
    "peanut_jax.pipeline.sam2": ("SAM2ImagePredictor", "SAM2VideoPredictor"),
    "peanut_jax.pipeline.chain": ("Chain",),
    "peanut_jax.pipeline.build": ("build_chain",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
