"""SAMWISE: text-prompted video segmentation on SAM 2 (``model.py``; adapters/CME in ``adapter.py``)."""

from peanut_jax.models.samwise.config import SAMWISEConfig, get_config
from peanut_jax.models.samwise.model import (
    SAMWISE,
    build_samwise,
    init_bank,
    pad_frames,
)

__all__ = ["SAMWISE", "SAMWISEConfig", "build_samwise", "get_config", "init_bank", "pad_frames"]
