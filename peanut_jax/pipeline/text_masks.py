"""SAMWISE text-prompt masks: sentences -> masks for the chain and ``infer.py mask --prompt``.

:class:`TextPromptMasks` is a mask source (``prepare`` / ``attach`` / ``attach_labels`` /
``describe``, the shape of :class:`~peanut_jax.pipeline.mask.PromptMasks`).  All sentences run in
one batched pass (object id = sentence index + 1); every frame is segmented; frames stream through
:class:`~peanut_jax.pipeline.samwise.SAMWISEPredictor` clip by clip, so memory is flat in the
video length.  The tokenizer (``--tokenizer SPEC``) is a weight-registry entry of tokenizer files
(default ``gpt2_bpe``: ``python -m peanut_jax.weights fetch gpt2_bpe`` puts fairseq's
``encoder.json`` + ``vocab.bpe`` + ``dict.txt`` in ``$PEANUT_HOME/gpt2_bpe/``) or a folder holding
the Hugging Face ``vocab.json`` + ``merges.txt`` or those three fairseq files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from peanut_jax.pipeline.mask import LabelMaskSource, label_map
from peanut_jax.text.files import DEFAULT_TOKENIZER, LAYOUTS, load_tokenizer, tokenizer_dir

__all__ = [
    "DEFAULT_CHECKPOINT",
    "DEFAULT_TOKENIZER",
    "TextPromptMasks",
    "add_arguments",
    "load_tokenizer",
    "tokenizer_dir",
]

DEFAULT_CHECKPOINT = "samwise_mevis"
#: bundled checkpoints trained with their own tokenizer: the tokenizer used when none is given
BUNDLED_TOKENIZERS = {"mask_demo": "synthetic_bpe"}


def default_tokenizer(checkpoint):
    """The tokenizer of ``checkpoint`` when it is a bundled one with its own (the bundled tiny SAMWISE
    reads the synthetic grammar's BPE, ``peanut_jax/assets/synthetic_bpe``), else None (the default)."""
    name = BUNDLED_TOKENIZERS.get(checkpoint) if isinstance(checkpoint, str) else None
    if name is None:
        return None
    from peanut_jax.pipeline.common import bundled_asset

    return bundled_asset(name)


def load_samwise(checkpoint=DEFAULT_CHECKPOINT, *, flag: str = "--checkpoint", progress: bool = True):
    """(module, variables) of a SAMWISE checkpoint through the one loading door; errors name ``flag``."""
    from peanut_jax.checkpoints import load

    return load(checkpoint, "samwise", flag=flag, progress=progress)


class TextPromptMasks(LabelMaskSource):
    """Masks of the objects the sentences describe, segmented by SAMWISE: a mask source.

    ``sentences``: one object per sentence (id = index + 1).  The model comes from ``checkpoint``
    (default :data:`DEFAULT_CHECKPOINT`) or ``module``/``variables``; the tokenizer from
    ``tokenizer`` (a :class:`~peanut_jax.text.RobertaTokenizer`, a registry name or a folder, see
    :func:`load_tokenizer`; default :data:`DEFAULT_TOKENIZER`).  ``attach`` yields ``(frame,
    mask)`` with the union of the objects, ``attach_labels`` ``(frame, labels)`` with object ids
    (uint8, 0 = none; a pixel claimed by several objects takes the highest logit).  Other options
    (``use_cme``, ``clip_window``) go to :class:`~peanut_jax.pipeline.samwise.SAMWISEPredictor`.

    ``predictor``: an existing :class:`~peanut_jax.pipeline.samwise.SAMWISEPredictor` to segment with
    (its model, weights, tokenizer and options; its compiled clip function is reused, so evaluating
    many clips compiles once per clip shape); then give no ``checkpoint``, ``module``, ``variables``,
    ``tokenizer`` or predictor options.  ``threshold`` stays this source's own.
    """

    def __init__(
        self,
        sentences: str | Sequence[str],
        checkpoint=None,
        *,
        module=None,
        variables=None,
        tokenizer=None,
        threshold: float = 0.5,
        progress: bool = False,
        checkpoint_flag: str = "--checkpoint-text",
        tokenizer_flag: str = "--tokenizer",
        prompt_flag: str = "--prompt",
        predictor=None,
        **predictor_options,
    ):
        if predictor is not None:
            mine = dict(checkpoint=checkpoint, module=module, variables=variables, tokenizer=tokenizer)
            given = [k for k, v in {**mine, **predictor_options}.items() if v is not None]
            if given:
                raise ValueError(
                    f"TextPromptMasks: predictor= holds the model, weights, tokenizer and options; "
                    f"do not also give {', '.join(given)}"
                )
            module, variables, tokenizer = predictor.module, predictor.variables, predictor.tokenizer
        if (module is None) != (variables is None):
            raise ValueError("TextPromptMasks: give both module and variables, or neither")
        self.sentences = [sentences] if isinstance(sentences, str) else list(sentences)
        self.checkpoint = checkpoint or (DEFAULT_CHECKPOINT if module is None else None)
        self.threshold = float(threshold)
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.progress = progress
        self.checkpoint_flag, self.tokenizer_flag, self.prompt_flag = checkpoint_flag, tokenizer_flag, prompt_flag
        self.options = predictor_options
        self._model = (module, variables) if module is not None else None
        self._tokenizer = tokenizer if tokenizer is not None else default_tokenizer(self.checkpoint)
        self._predictor = predictor
        self.info = None

    @property
    def object_ids(self) -> list[int]:
        return list(range(1, len(self.sentences) + 1))

    def describe(self) -> str:
        n = len(self.sentences)
        said = "; ".join(repr(s) for s in self.sentences)
        return f"SAMWISE text prompt{'s' * (n != 1)} ({said}; {self.checkpoint or 'given model'})"

    def _check_sentences(self, tok, cfg=None) -> None:
        vocab_size = getattr(cfg, "vocab_size", None)
        limit = min(tok.max_tokens, getattr(cfg, "max_positions", tok.max_tokens + 2) - 2)  # padding_idx + 1
        if not self.sentences:
            raise ValueError(f'no text prompt: give {self.prompt_flag} "a sentence"')
        if len(self.sentences) > 255:
            raise ValueError(f"{self.prompt_flag}: {len(self.sentences)} sentences, at most 255 (palette PNG ids)")
        for s in self.sentences:
            if not isinstance(s, str) or not s.strip():
                raise ValueError(
                    f"{self.prompt_flag} {s!r}: the sentence is empty; say in words which object to segment"
                )
            n = len(tok.encode(s))
            if n > limit:
                short = s if len(s) <= 40 else s[:37] + "..."
                raise ValueError(
                    f"{self.prompt_flag} {short!r}: the sentence is {n} tokens with <s> and </s>, at most {limit}"
                )
        if vocab_size is not None and getattr(tok, "vocab_size", 0) > vocab_size:
            ids = np.concatenate([np.asarray(tok.encode(s)) for s in self.sentences])
            if ids.max() >= vocab_size:
                raise ValueError(
                    f"{self.tokenizer_flag}: token id {int(ids.max())} is outside the model's vocabulary "
                    f"of {vocab_size}; the tokenizer does not belong to this checkpoint"
                )

    def prepare(self, info) -> None:
        """Check the sentences, the tokenizer files and the checkpoint (it loads here, before any
        frame is processed); ``info``: num_frames, height, width."""
        if self._tokenizer is None or isinstance(self._tokenizer, (str, os.PathLike)):
            self._tokenizer = load_tokenizer(self._tokenizer, flag=self.tokenizer_flag)
        self._check_sentences(self._tokenizer)  # sentence errors before the weights load
        if self._model is None:
            self._model = load_samwise(self.checkpoint, flag=self.checkpoint_flag, progress=self.progress)
        self._check_sentences(self._tokenizer, getattr(self._model[0], "cfg", None))
        if int(info.num_frames) < 1 or int(info.height) < 1 or int(info.width) < 1:
            raise ValueError(f"{self.describe()}: the video is empty")
        self.info = info

    @property
    def predictor(self):
        """The :class:`~peanut_jax.pipeline.samwise.SAMWISEPredictor` (built on first use)."""
        if self._predictor is None:
            from peanut_jax.pipeline.samwise import SAMWISEPredictor

            if self.info is None:
                raise RuntimeError("TextPromptMasks.prepare(info) must run first")
            self._predictor = SAMWISEPredictor(*self._model, self._tokenizer, threshold=self.threshold, **self.options)
        return self._predictor

    def attach_labels(self, frames: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(frame, labels)`` in order, ``labels`` (H, W) uint8 object ids (0 = background)."""
        if self.info is None:
            raise RuntimeError("TextPromptMasks.prepare(info) must run before attach()")
        pred, n = self.predictor, self.info.num_frames
        shift = float(np.log(self.threshold / (1.0 - self.threshold)))
        ids = self.object_ids
        state, clip, seen = None, [], 0
        for frame in frames:
            frame = np.asarray(frame)
            seen += 1
            if seen > n:
                raise ValueError(f"{self.describe()}: more frames than the {n} prepared")
            if state is None:
                state = pred.init_state(self.sentences, *frame.shape[:2])
            clip.append(frame)
            if len(clip) == pred.clip_window or seen == n:
                logits = pred.segment_clip(state, np.stack(clip))  # (P, T, H, W)
                for j, f in enumerate(clip):
                    yield f, label_map(logits[:, j] - shift, ids)
                clip = []
        if seen != n:
            raise ValueError(f"{self.describe()}: {seen} frames given, {n} prepared")

    def close(self) -> None:
        """Nothing to clean up (no temporary files); here for the mask-source protocol."""


def add_arguments(parser, *, checkpoint_flag: str | None = "--checkpoint-text") -> None:
    """``--prompt`` (repeatable), ``--tokenizer SPEC`` and, unless None, the SAMWISE checkpoint flag
    (dest ``text_checkpoint``)."""
    g = parser.add_argument_group("text prompts (SAMWISE; repeatable, one object per sentence)")
    g.add_argument(
        "--prompt",
        action="append",
        default=[],
        metavar="SENTENCE",
        help='the object to segment, in words ("the man in the red shirt on the left")',
    )
    g.add_argument(
        "--tokenizer",
        default=None,
        metavar="SPEC",
        help=f"tokenizer files: a registry name or a folder with {LAYOUTS} (default {DEFAULT_TOKENIZER}, "
        f"once 'python -m peanut_jax.weights fetch {DEFAULT_TOKENIZER}' has cached it)",
    )
    if checkpoint_flag:
        g.add_argument(
            checkpoint_flag,
            dest="text_checkpoint",
            default=None,
            metavar="SPEC",
            help=f"SAMWISE weights: registry name, official .pth or converted folder (default {DEFAULT_CHECKPOINT})",
        )
