"""SAMWISE configuration (``opts.py`` defaults of the released video models) and a tiny test config.

One frozen dataclass so that a config can be a Flax module field.  ``sam2`` is the SAM 2 part: the
v1.0 (``"2.0"``) configuration SAMWISE builds with hydra directly, i.e. without
``apply_postprocessing`` (no dynamic multimask fallback).  ``tiny_test`` is a made-up miniature for
CPU tests (same code paths, small widths, 128-pixel input, 4 text layers).

``motion_prompt`` (official ``--motion_prompt``; off in every released model and in the demo) adds
one sparse prompt token per prompt: the state of the prompt's first verb token through
``project_motion_prompts`` (see ``SAMWISE.decode``; verbs from :mod:`peanut_jax.text.verbs`).
"""

from __future__ import annotations

import dataclasses

from peanut_jax.models.sam2.config import SAM2Config
from peanut_jax.models.sam2.config import get_config as sam2_config

SWITCH_MODES = ("reweight", "all_mask", "avg")


@dataclasses.dataclass(frozen=True)
class SAMWISEConfig:
    sam2_size: str = "base_plus"
    # CMT adapters (one after each of Hiera stages 2, 3, 4)
    hsa: bool = True
    hsa_patch_sizes: tuple[int, int, int] = (8, 4, 2)
    adapter_dim: int = 256
    adapter_heads: int = 8
    fusion_stages_txt: tuple[int, int, int] = (4, 8, 12)  # text layer cut points after layer 0
    attend_text_padding: bool = False  # True = official batched behaviour (pads attended in ca_V2T)
    # conditional memory encoder
    use_cme: bool = True
    cme_window: int = 4
    cme_heads: int = 8
    cme_ffn: int = 128
    switch_mem: str = "reweight"
    # SAM 2 object-score head (False = --disable_pred_obj_score, image pretraining: score 10, no gating)
    pred_obj_scores: bool = True
    # memory bank (SAM 2 v1.0: num_maskmem 7 -> 6 previous frames; 16 pointers -> 15 previous)
    num_recent: int = 6
    num_pointers: int = 15
    # text encoder (fairseq RoBERTa-base)
    text_layers: int = 12
    text_dim: int = 768
    text_heads: int = 12
    text_ffn: int = 3072
    vocab_size: int = 50265
    max_positions: int = 514
    # official --motion_prompt: an extra sparse token from the first verb token's state (off when released)
    motion_prompt: bool = False

    @property
    def sam2(self) -> SAM2Config:
        return sam2_config(self.sam2_size, "2.0", dynamic_multimask_via_stability=False)

    @property
    def text_cuts(self) -> tuple[int, ...]:
        """Text layer groups run in lockstep with the Hiera stages: (0, 1, *fusion_stages_txt)."""
        return (0, 1, *self.fusion_stages_txt)

    def check(self) -> SAMWISEConfig:
        if self.switch_mem not in SWITCH_MODES:
            raise ValueError(f"samwise: switch_mem must be one of {SWITCH_MODES}, got {self.switch_mem!r}")
        cuts = self.text_cuts
        if list(cuts) != sorted(cuts) or cuts[-1] != self.text_layers:
            raise ValueError(
                f"samwise: fusion_stages_txt {self.fusion_stages_txt} must increase to text_layers={self.text_layers}"
            )
        if len(self.sam2.hiera.stages) != 4 or len(self.hsa_patch_sizes) != 3:
            raise ValueError("samwise: 4 Hiera stages and 3 HSA patch sizes expected")
        return self


TINY_TEST = dict(
    sam2_size="tiny_test",
    hsa_patch_sizes=(4, 2, 2),
    adapter_dim=16,
    adapter_heads=2,
    fusion_stages_txt=(2, 3, 4),
    cme_heads=2,
    cme_ffn=16,
    text_layers=4,
    text_dim=32,
    text_heads=2,
    text_ffn=64,
    vocab_size=120,
    max_positions=40,
)


def get_config(sam2_size: str = "base_plus", **overrides) -> SAMWISEConfig:
    """The released configuration with Hiera ``sam2_size`` ('tiny', 'base_plus', 'large'; 'tiny_test'
    gives the CPU test miniature), updated by field ``overrides``."""
    kw = dict(TINY_TEST) if sam2_size == "tiny_test" else {"sam2_size": sam2_size}
    kw.update(overrides)
    return SAMWISEConfig(**kw).check()
