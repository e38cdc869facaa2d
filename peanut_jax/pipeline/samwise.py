"""Text-prompted video segmentation with SAMWISE: ``SAMWISEPredictor``.

Frames (uint8 RGB (H, W, 3), any iterable, read lazily) are cut into clips of ``clip_window``
frames; every frame is segmented (the official demo subsamples to 10 fps).  Each clip goes through
one jitted function: host resize as the official ``VideoEvalDataset`` (``Resize(1020,
max_size=1024)``, PIL bilinear with antialias), then on the device ImageNet normalisation, zero
padding to the square input, the SAMWISE clip (text + early-fusion backbone, ``lax.scan`` over the
frames with a bounded memory bank carried from clip to clip), and logits resized back to the
video's size.  Several prompts run in one batched pass (the official demo re-runs the video per
prompt); results do not depend on the other prompts or on padding (padded text keys are masked).
Memory stays flat in the video length: the bank holds 6 frames + 15 pointers per prompt.

A short last clip runs at its own length T (as official: the adapters' time embedding depends
on T), which compiles one more shape.

With a model built with ``motion_prompt=True`` (off in every released model), ``init_state`` marks
each prompt's verb tokens (:func:`peanut_jax.text.verbs.verb_token_mask`: spaCy ``en_core_web_sm``
when installed, else the built-in word list; ``verbs=`` picks a :class:`~peanut_jax.text.verbs.VerbSelector`)
and the clip function gets that mask; when no prompt has a verb it gets none and runs the released
3-token decode, as the official code does for a caption without a verb.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from peanut_jax.models.samwise import SAMWISE, init_bank, pad_frames

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def resized_size(height: int, width: int, short: int = 1020, max_size: int = 1024) -> tuple[int, int]:
    """torchvision ``Resize(short, max_size=max_size)``: the shorter side to ``short`` unless the
    longer side would exceed ``max_size``, then the longer side to ``max_size``.  -> (h, w)."""
    lo, hi = min(height, width), max(height, width)
    new_lo, new_hi = short, int(short * hi / lo)
    if new_hi > max_size:
        new_lo, new_hi = int(max_size * new_lo / new_hi), max_size
    return (new_lo, new_hi) if height <= width else (new_hi, new_lo)


def resize_frames(frames_u8: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, h, w, 3) uint8 with PIL bilinear (antialiased), as torchvision on PIL."""
    from PIL import Image

    h, w = size
    if frames_u8.shape[1:3] == (h, w):
        return frames_u8
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in frames_u8])


class SAMWISEPredictor:
    """``SAMWISEPredictor(module, variables, tokenizer, threshold=0.5, use_cme=True, clip_window=8)``.

    * ``segment_video(frames, prompts)`` yields ``(frame_idx, logits[n_prompts, H, W])``;
    * ``init_state(prompts, height, width)`` + ``segment_clip(state, frames_u8[T, H, W, 3])`` ->
      ``logits[n_prompts, T, H, W]`` (streaming; the bank carries across calls);
    * ``masks(logits)``: ``sigmoid(logits) > threshold``.

    ``verbs``: the verb selector of the motion prompt (default ``VerbSelector()``; used only when the
    module has ``motion_prompt``, which needs a tokenizer with ``token_offsets``).
    """

    def __init__(
        self,
        module: SAMWISE,
        variables,
        tokenizer,
        *,
        threshold: float = 0.5,
        use_cme: bool = True,
        clip_window: int = 8,
        short_side: int = 1020,
        verbs=None,
    ):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if clip_window < 1:
            raise ValueError(f"clip_window must be >= 1, got {clip_window}")
        if use_cme and "conditional_memory_encoder" not in variables["params"]:
            raise ValueError("use_cme=True but the weights have no conditional memory encoder")
        if use_cme != module.cfg.use_cme:
            module = module.clone(cfg=dataclasses.replace(module.cfg, use_cme=use_cme))
        # on the device once (host arrays would be copied in on every clip)
        self.module, self.variables, self.tokenizer = module, jax.device_put(variables), tokenizer
        self.threshold, self.clip_window, self.short_side = float(threshold), int(clip_window), int(short_side)
        self.verbs = None
        if module.cfg.motion_prompt:
            from peanut_jax.text.verbs import VerbSelector

            if not hasattr(tokenizer, "token_offsets"):
                raise TypeError("motion_prompt needs a tokenizer with token_offsets(text) (peanut_jax.text)")
            if "project_motion_prompts" not in variables["params"]:
                raise ValueError("the model has motion_prompt=True but the weights have no project_motion_prompts")
            self.verbs = VerbSelector() if verbs is None else verbs
        self._run = jax.jit(self._clip_fn, static_argnums=(6, 7, 8))

    # ------------------------------------------------------------------ device function
    def _clip_fn(self, variables, frames_u8, ids, padding_mask, bank, motion_mask, in_hw, out_hw, fresh):
        m = self.module
        x = (frames_u8.astype(jnp.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        x = pad_frames(x, m.cfg.sam2.image_size)
        outs, bank, _ = m.apply(
            variables, x, ids, padding_mask, bank, False, motion_mask, fresh, method=SAMWISE.run_clip
        )
        logits = m.apply(variables, outs["low_res_masks"], in_hw, out_hw, method=SAMWISE.postprocess)
        return jnp.swapaxes(logits, 0, 1), bank  # (P, T, H, W)

    # ------------------------------------------------------------------ streaming API
    def init_state(self, prompts: str | Sequence[str], height: int, width: int) -> dict:
        """Tokenise the prompts (errors name the bad prompt) and start an empty memory bank; with the
        motion prompt, ``motion_mask`` marks the verb tokens (None when no prompt has a verb)."""
        if int(height) < 1 or int(width) < 1:
            raise ValueError(f"frame size must be positive, got {height}x{width}")
        ids, pm = self.tokenizer(prompts)
        motion_mask = None
        if self.verbs is not None:
            from peanut_jax.text.verbs import verb_token_mask

            mask = verb_token_mask(prompts, self.tokenizer, self.verbs, length=ids.shape[1]) & ~np.asarray(pm)
            motion_mask = jnp.asarray(mask) if mask.any() else None
        size = self.module.cfg.sam2.image_size
        in_hw = resized_size(int(height), int(width), min(self.short_side, size), size)
        return {
            "ids": jnp.asarray(ids),
            "padding_mask": jnp.asarray(pm),
            "motion_mask": motion_mask,
            "bank": init_bank(self.module.cfg, len(ids)),
            "size": (int(height), int(width)),
            "in_hw": in_hw,
            "frames_done": 0,
        }

    def segment_clip(self, state: dict, frames_u8) -> np.ndarray:
        """One clip (T, H, W, 3) uint8 of the state's video -> logits (P, T, H, W) float32; the bank
        in ``state`` moves on by T frames."""
        frames_u8 = np.asarray(frames_u8)
        if frames_u8.ndim != 4 or frames_u8.shape[-1] != 3 or frames_u8.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames_u8.dtype} {frames_u8.shape}")
        if tuple(frames_u8.shape[1:3]) != state["size"]:
            raise ValueError(f"frame size {frames_u8.shape[1:3]} differs from the video's {state['size']}")
        x = resize_frames(frames_u8, state["in_hw"])
        logits, state["bank"] = self._run(
            self.variables,
            x,
            state["ids"],
            state["padding_mask"],
            state["bank"],
            state.get("motion_mask"),
            state["in_hw"],
            state["size"],
            state["frames_done"] == 0,  # the first clip: memory attention over the frames seen so far
        )
        state["frames_done"] += frames_u8.shape[0]
        return np.asarray(logits)

    def segment_video(
        self, frames: Iterable[np.ndarray], prompts: str | Sequence[str]
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(frame_idx, logits[n_prompts, H, W])`` for every frame, clip by clip."""
        state, clip, idx = None, [], 0
        for frame in frames:
            frame = np.asarray(frame)
            if state is None:
                if frame.ndim != 3 or frame.shape[-1] != 3:
                    raise ValueError(f"frames must be (H, W, 3) uint8, got shape {frame.shape}")
                state = self.init_state(prompts, *frame.shape[:2])
            clip.append(frame)
            if len(clip) == self.clip_window:
                yield from self._emit(state, clip, idx)
                idx += len(clip)
                clip = []
        if clip:
            yield from self._emit(state, clip, idx)

    def _emit(self, state, clip, start):
        logits = self.segment_clip(state, np.stack(clip))
        for j in range(logits.shape[1]):
            yield start + j, logits[:, j]

    def masks(self, logits) -> np.ndarray:
        """``sigmoid(logits) > threshold`` (bool)."""
        return np.asarray(logits) > float(np.log(self.threshold / (1.0 - self.threshold)))


def __getattr__(name):
    """``TextPromptMasks`` (the text mask source) lives in :mod:`peanut_jax.pipeline.text_masks`;
    it is reachable here too (the issue's entry point), loaded on first use."""
    if name == "TextPromptMasks":
        from peanut_jax.pipeline import text_masks

        return text_masks.TextPromptMasks
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
