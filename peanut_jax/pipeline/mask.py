"""SAM 2 prompt masks: click / box / mask prompts -> tracked masks for the chain and ``infer.py mask``.

:class:`PromptMasks` is a mask source (``prepare`` / ``attach`` / ``describe``) that tracks the
prompted objects with :class:`~peanut_jax.pipeline.sam2.SAM2VideoPredictor` (official semantics:
forward from the earliest prompted frame, then reverse).  Prompts only on frame 0 stream in one
pass over the chain's frames; otherwise a first pass writes one label PNG per frame to a temporary
folder, read back lazily.  :func:`run_mask` writes the masks (binary or DAVIS palette PNGs).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shutil
import tempfile
import types
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

__all__ = [
    "DEFAULT_CHECKPOINT",
    "LabelMaskSource",
    "Prompt",
    "PromptMasks",
    "add_arguments",
    "davis_palette",
    "label_map",
    "load_sam2",
    "parse_prompt",
    "parse_prompts",
    "prompts_from_args",
    "run_mask",
    "write_masks",
    "tint",
]

DEFAULT_CHECKPOINT = "sam2.1_hiera_base_plus"
SYNTAX = {"--click": "X,Y[,LABEL]@FRAME[:OBJ]", "--box": "X0,Y0,X1,Y1@FRAME[:OBJ]", "--mask-prompt": "PNG@FRAME[:OBJ]"}
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


# ==================================================================================== prompts
@dataclasses.dataclass(frozen=True)
class Prompt:
    """One prompt flag: a click (``xy``, ``label`` 1 positive / 0 negative), a box (``box`` x0, y0,
    x1, y1) or a mask image (``mask`` path) for object ``obj`` on ``frame``; ``text`` is the flag
    as given (error messages name it)."""

    kind: str  # "click" | "box" | "mask"
    frame: int
    obj: int = 1
    xy: tuple[float, float] | None = None
    label: int = 1
    box: tuple[float, float, float, float] | None = None
    mask: str | None = None
    text: str = ""

    @property
    def flag(self) -> str:
        return {"click": "--click", "box": "--box", "mask": "--mask-prompt"}[self.kind]


def parse_prompt(flag: str, value: str) -> Prompt:
    """``--click X,Y[,LABEL]@FRAME[:OBJ]``, ``--box X0,Y0,X1,Y1@FRAME[:OBJ]`` or
    ``--mask-prompt PNG@FRAME[:OBJ]`` -> :class:`Prompt` (ValueError naming the flag)."""
    if flag not in SYNTAX:
        raise ValueError(f"unknown prompt flag {flag!r}; use one of {', '.join(SYNTAX)}")
    text = f"{flag} {value}"
    what, at, where = str(value).rpartition("@")
    m = re.fullmatch(r"\s*(\d+)\s*(?::\s*(\d+)\s*)?", where)
    if not at or not what or m is None:
        raise ValueError(f"{text}: expected {flag} {SYNTAX[flag]} (FRAME and OBJ are integers)")
    frame, obj = int(m.group(1)), int(m.group(2) or 1)
    if not 1 <= obj <= 255:
        raise ValueError(f"{text}: object id {obj} must be 1..255 (it is the palette index of the mask PNGs)")
    if flag == "--mask-prompt":
        return Prompt("mask", frame, obj, mask=what, text=text)
    nums = what.split(",")
    if not all(re.fullmatch(rf"\s*{_NUM}\s*", v) for v in nums):
        raise ValueError(f"{text}: expected {flag} {SYNTAX[flag]} with numbers, got {what!r}")
    v = [float(x) for x in nums]
    if flag == "--box":
        if len(v) != 4:
            raise ValueError(f"{text}: a box is 4 numbers X0,Y0,X1,Y1, got {len(v)}")
        if not (v[0] < v[2] and v[1] < v[3]):
            raise ValueError(f"{text}: the box needs x0 < x1 and y0 < y1")
        return Prompt("box", frame, obj, box=tuple(v), text=text)
    if len(v) not in (2, 3):
        raise ValueError(f"{text}: a click is X,Y or X,Y,LABEL, got {len(v)} numbers")
    label = 1 if len(v) == 2 else v[2]
    if label not in (0, 1):
        raise ValueError(f"{text}: LABEL must be 1 (positive) or 0 (negative), got {nums[2].strip()}")
    return Prompt("click", frame, obj, xy=(v[0], v[1]), label=int(label), text=text)


def parse_prompts(clicks: Iterable[str] = (), boxes: Iterable[str] = (), masks: Iterable[str] = ()) -> list[Prompt]:
    """All prompt flags, parsed, in the order given per kind."""
    return (
        [parse_prompt("--click", c) for c in clicks or ()]
        + [parse_prompt("--box", b) for b in boxes or ()]
        + [parse_prompt("--mask-prompt", m) for m in masks or ()]
    )


@dataclasses.dataclass
class _Group:
    """The prompts of one object on one frame: what one predictor call gets."""

    frame: int
    obj: int
    points: list = dataclasses.field(default_factory=list)
    labels: list = dataclasses.field(default_factory=list)
    box: Prompt | None = None
    mask: Prompt | None = None
    first: Prompt | None = None


def group_prompts(prompts: Sequence[Prompt]) -> list[_Group]:
    """Clicks of one object on one frame form one prompt with several points, plus at most one box
    (``add_new_points_or_box``); a mask prompt stands alone.  Sorted by (frame, object)."""
    groups: dict[tuple[int, int], _Group] = {}
    for p in prompts:
        g = groups.setdefault((p.frame, p.obj), _Group(p.frame, p.obj, first=p))
        if g.mask is not None or (p.kind == "mask" and g.first is not p):
            mask, other = (g.mask, p) if g.mask is not None else (p, g.first)
            raise ValueError(
                f"{mask.text}: a mask prompt replaces every other prompt of object {p.obj} on "
                f"frame {p.frame} ({other.text}); give one or the other"
            )
        if p.kind == "mask":
            g.mask = p
        elif p.kind == "box":
            if g.box is not None:
                raise ValueError(
                    f"{p.text}: object {p.obj} already has a box on frame {p.frame} ({g.box.text}); "
                    f"one box per object and frame"
                )
            g.box = p
        else:
            g.points.append(p.xy)
            g.labels.append(p.label)
    return [groups[k] for k in sorted(groups)]


def check_prompts(prompts: Sequence[Prompt], num_frames: int, height: int, width: int, max_objects: int = 16) -> dict:
    """Check the prompts against the video before any compute; returns ``{mask path: (H, W) bool}``
    of the mask prompts.  ValueError / FileNotFoundError naming the flag and value."""
    from peanut_jax.data.masks import read_masks

    if not prompts:
        raise ValueError("no prompt: give --click, --box or --mask-prompt")
    masks = {}
    for p in prompts:
        if not 0 <= p.frame < num_frames:
            raise ValueError(f"{p.text}: frame {p.frame} is outside the video (frames 0..{num_frames - 1})")
        if p.kind == "click" and not (0 <= p.xy[0] < width and 0 <= p.xy[1] < height):
            raise ValueError(f"{p.text}: the click is outside the {width}x{height} frame")
        if p.kind == "box" and not (0 <= p.box[0] and 0 <= p.box[1] and p.box[2] <= width and p.box[3] <= height):
            raise ValueError(f"{p.text}: the box is outside the {width}x{height} frame")
        if p.kind == "mask" and p.mask not in masks:
            path = pathlib.Path(p.mask).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"{p.text}: mask image {path} not found")
            try:
                m = read_masks(path)[0]
            except ValueError as err:
                raise ValueError(f"{p.text}: {err}") from None
            if m.shape != (height, width):
                raise ValueError(f"{p.text}: the mask is {m.shape[1]}x{m.shape[0]} but the video is {width}x{height}")
            masks[p.mask] = m
    group_prompts(prompts)
    objs = sorted({p.obj for p in prompts})
    if len(objs) > max_objects:
        p = next(p for p in prompts if p.obj == objs[max_objects])
        raise ValueError(f"{p.text}: {len(objs)} objects but at most max_objects={max_objects} can be tracked")
    return masks


# ==================================================================================== outputs
def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC palette (256, 3) uint8: index k's colour from the bits of k."""
    pal = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, rgb = i, [0, 0, 0]
        for j in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - j)
            c >>= 3
        pal[i] = rgb
    return pal


def label_map(logits: np.ndarray, obj_ids: Sequence[int]) -> np.ndarray:
    """(n_obj, H, W) logits -> (H, W) uint8 object ids (0 = none); a pixel claimed by several
    objects (logit > 0) takes the one with the highest logit."""
    logits = np.asarray(logits)
    if logits.shape[0] == 0:
        return np.zeros(logits.shape[1:], np.uint8)
    pos = logits > 0
    best = np.argmax(np.where(pos, logits, -np.inf), axis=0)
    return np.where(pos.any(0), np.asarray(obj_ids, np.uint8)[best], 0).astype(np.uint8)


def _png(labels: np.ndarray, per_object: bool) -> Image.Image:
    if not per_object:
        return Image.fromarray(np.where(labels > 0, 255, 0).astype(np.uint8), "L")
    img = Image.fromarray(labels.astype(np.uint8), "P")
    img.putpalette(davis_palette().ravel().tolist())
    return img


def _save(img: Image.Image, path: pathlib.Path) -> None:
    """PNG written under a temporary name, then renamed (never a half-written file)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)


def tint(frame_u8: np.ndarray, labels: np.ndarray, per_object: bool = False, alpha: float = 0.5) -> np.ndarray:
    """The frame with the masked pixels tinted: red (the union), or each object in its DAVIS
    palette colour (``per_object``)."""
    from peanut_jax.data.masks import overlay_mask

    if not per_object:
        return overlay_mask(frame_u8, labels > 0, alpha=alpha)
    pal, out = davis_palette(), frame_u8
    for k in np.unique(labels[labels > 0]):
        out = overlay_mask(out, labels == k, color=tuple(int(c) for c in pal[k]), alpha=alpha)
    return out


# ==================================================================================== model
def load_sam2(checkpoint=DEFAULT_CHECKPOINT, *, flag: str = "--checkpoint", progress: bool = True):
    """(module, variables) of a SAM 2 checkpoint (registry name, official ``.pt``, converted
    folder) through the one loading door; errors name ``flag``."""
    from peanut_jax.checkpoints import load

    return load(checkpoint, "sam2", flag=flag, progress=progress)


# ==================================================================================== mask source
class LabelMaskSource:
    """A mask source that yields object-id maps (``attach_labels``); ``attach`` gives the chain their
    union (True = remove)."""

    def attach(self, frames: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(frame, mask)`` in order, ``mask`` (H, W) bool: the union of the objects (True = remove)."""
        for frame, labels in self.attach_labels(frames):
            yield frame, labels > 0


class PromptMasks(LabelMaskSource):
    """Masks of the prompted objects, tracked by SAM 2: a mask source for the chain.

    ``prompts``: :class:`Prompt` records (see :func:`parse_prompts`).  The model comes from
    ``checkpoint`` (:func:`load_sam2`), from ``module``/``variables``, or a ready ``predictor``.
    ``video``: the source (path, uint8 array or the chain's source object), needed when a prompt
    sits after frame 0 (a first pass tracks forward then backward before the chain's pass; the
    masks wait in a temporary folder under ``workdir``, one PNG per frame).  ``attach`` yields
    ``(frame, mask)`` with the union of the objects; ``attach_labels`` yields ``(frame, labels)``
    with object ids (uint8, 0 = none).
    Predictor options (``fill_hole_area``, ``max_objects``, ``dtype``, ...) go to
    :class:`~peanut_jax.pipeline.sam2.SAM2VideoPredictor`.
    """

    def __init__(
        self,
        prompts: Sequence[Prompt],
        checkpoint=None,
        *,
        module=None,
        variables=None,
        predictor=None,
        video=None,
        workdir=None,
        progress: bool = False,
        checkpoint_flag: str = "--checkpoint",
        **predictor_options,
    ):
        self.prompts = list(prompts)
        self.checkpoint = checkpoint or (DEFAULT_CHECKPOINT if module is None and predictor is None else None)
        self.video = video
        self.workdir = workdir
        self.progress = progress
        self.checkpoint_flag = checkpoint_flag
        self.options = predictor_options
        self.max_objects = predictor.max_objects if predictor is not None else predictor_options.get("max_objects", 16)
        self._predictor = predictor
        self._model = (module, variables) if module is not None else None
        if (module is None) != (variables is None):
            raise ValueError("PromptMasks: give both module and variables, or neither")
        self.info = None
        self.masks: dict = {}
        self.groups: list[_Group] = []
        self._tmp: pathlib.Path | None = None
        self._cleanup = None

    @property
    def object_ids(self) -> list[int]:
        return sorted({p.obj for p in self.prompts})

    @property
    def first_frame(self) -> int:
        return min(p.frame for p in self.prompts)

    @property
    def single_pass(self) -> bool:
        """Every prompt on frame 0: tracked while the chain reads the frames (no first pass)."""
        return all(p.frame == 0 for p in self.prompts)

    def describe(self) -> str:
        n = len(self.object_ids)
        return (
            f"SAM 2 prompts ({len(self.prompts)} prompt{'s' * (len(self.prompts) != 1)}, {n} object"
            f"{'s' * (n != 1)}, {self.checkpoint or 'given model'})"
        )

    def prepare(self, info) -> None:
        """Check the prompts against ``info`` (num_frames, height, width) before any compute."""
        self.masks = check_prompts(self.prompts, info.num_frames, info.height, info.width, self.max_objects)
        self.groups = group_prompts(self.prompts)
        if not self.single_pass and self.video is None:
            p = next(p for p in self.prompts if p.frame > 0)
            raise ValueError(
                f"{p.text}: prompts after frame 0 need the video itself (PromptMasks(video=...)) "
                f"for a first tracking pass"
            )
        self.info = info

    @property
    def predictor(self):
        """The :class:`~peanut_jax.pipeline.sam2.SAM2VideoPredictor` (the model is loaded on first use)."""
        if self._predictor is None:
            from peanut_jax.pipeline.sam2 import SAM2VideoPredictor

            if self._model is None:
                self._model = load_sam2(self.checkpoint, flag=self.checkpoint_flag, progress=self.progress)
            self._predictor = SAM2VideoPredictor(*self._model, **self.options)
        return self._predictor

    def _add_prompts(self, state, groups) -> np.ndarray | None:
        """All prompt groups into ``state``; the last call's logits (every object on its frame)."""
        logits = None
        for g in groups:
            if g.mask is not None:
                _, _, logits = self.predictor.add_new_mask(state, g.frame, g.obj, self.masks[g.mask.mask])
            else:
                pts = np.asarray(g.points, np.float32) if g.points else None
                labels = np.asarray(g.labels, np.int32) if g.points else None
                _, _, logits = self.predictor.add_new_points_or_box(
                    state, g.frame, g.obj, points=pts, labels=labels, box=None if g.box is None else g.box.box
                )
        return logits

    def attach_labels(self, frames: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(frame, labels)`` in order, ``labels`` (H, W) uint8 object ids (0 = background)."""
        if self.info is None:
            raise RuntimeError("PromptMasks.prepare(info) must run before attach()")
        n = self.info.num_frames
        if self.single_pass:
            yield from self._stream(frames, n)
            return
        try:
            if self._tmp is None:
                self._first_pass()
            i = -1
            for i, frame in enumerate(frames):
                if i >= n:
                    raise ValueError(f"{self.describe()}: more frames than the {n} prepared")
                with Image.open(self._tmp / f"{i:05d}.png") as img:
                    labels = np.asarray(img)
                yield frame, labels
            if i + 1 != n:
                raise ValueError(f"{self.describe()}: {i + 1} frames given, {n} prepared")
        finally:
            self.close()

    def _stream(self, frames, n):
        """Prompts on frame 0 only: live tracking over the given frames (one pass, bounded state)."""
        pred = self.predictor
        state = pred.init_state(None, num_frames=n)
        for i, frame in enumerate(frames):
            if i >= n:
                raise ValueError(f"{self.describe()}: more frames than the {n} prepared")
            frame = np.asarray(frame)
            if i == 0:
                pred.track(state, frame)
                logits = self._add_prompts(state, self.groups)
            else:
                _, _, logits = pred.track(state, frame)
            yield frame, label_map(logits, state.obj_ids)

    def _first_pass(self) -> None:
        """Track forward from the earliest prompted frame, then backward from it (the official
        ``propagate_in_video`` order), writing one label PNG per frame."""
        pred = self.predictor
        self._tmp = pathlib.Path(tempfile.mkdtemp(prefix="peanut_masks_", dir=self.workdir))
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._tmp), True)
        state = pred.init_state(_video_input(self.video))
        if (state.num_frames, *state.video_hw) != (self.info.num_frames, self.info.height, self.info.width):
            raise ValueError(
                f"{self.video}: {state.num_frames} frames of {state.video_hw[1]}x{state.video_hw[0]}, "
                f"but the stream has {self.info.num_frames} of {self.info.width}x{self.info.height}"
            )
        self._add_prompts(state, self.groups)
        bar = _bar(self.progress, self.info.num_frames, "tracking")
        for reverse in (False, True):
            for f, ids, logits in pred.propagate_in_video(state, reverse=reverse):
                if not reverse or f < self.first_frame:
                    _save(Image.fromarray(label_map(logits, ids), "L"), self._tmp / f"{f:05d}.png")
                    bar.update(1)
        bar.close()

    def close(self) -> None:
        """Remove the first pass's temporary folder (also done when the source is dropped)."""
        if self._cleanup is not None:
            self._cleanup()
        self._tmp = self._cleanup = None


def _video_input(video):
    """What the predictor reads: a uint8 array (also an in-memory source's ``frames``) or a path
    (also a lazily decoded source's ``path``)."""
    if isinstance(getattr(video, "frames", None), np.ndarray):
        video = video.frames
    if isinstance(video, np.ndarray):
        return video
    return os.fspath(getattr(video, "path", video))


def _bar(progress: bool, total: int, desc: str):
    if progress:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="frame", leave=False)
    return types.SimpleNamespace(update=lambda n: None, close=lambda: None)


# ==================================================================================== infer.py mask
def _commit_folder(tmp: pathlib.Path, out: pathlib.Path, overwrite: bool) -> None:
    from peanut_jax.data.video_io import check_target

    check_target(out, overwrite, "--output")  # again: something may have appeared meanwhile
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.old")
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)  # check_target: it held only frame files


def run_mask(
    input,
    output,
    prompts: Sequence[Prompt],
    *,
    checkpoint=None,
    per_object: bool = False,
    overlay=None,
    overwrite: bool = False,
    progress: bool = True,
    fps: float | None = None,
    module=None,
    variables=None,
    predictor=None,
    **predictor_options,
) -> pathlib.Path:
    """Track the prompted objects through ``input`` (video file or frame folder) and write one PNG
    per frame (``00000.png``, ...) to the folder ``output``: the union as binary {0, 255}, or with
    ``per_object`` a DAVIS palette PNG (index = object id).  ``overlay``: also an mp4 of the input
    with the masks tinted.  ``checkpoint``: SAM 2 weights (default :data:`DEFAULT_CHECKPOINT`),
    or give ``module``/``variables`` or a ``predictor``.  Everything is checked before the model
    loads; outputs appear only complete (temporary names renamed at the end)."""
    masks = PromptMasks(
        prompts,
        checkpoint,
        module=module,
        variables=variables,
        predictor=predictor,
        video=input,
        progress=progress,
        **predictor_options,
    )
    return write_masks(
        input, output, masks, per_object=per_object, overlay=overlay, overwrite=overwrite, progress=progress, fps=fps
    )


def write_masks(
    input,
    output,
    masks,
    *,
    per_object: bool = False,
    overlay=None,
    overwrite: bool = False,
    progress: bool = True,
    fps: float | None = None,
) -> pathlib.Path:
    """The one mask writer of ``infer.py mask``: run the (not yet prepared) mask source ``masks``
    (:class:`PromptMasks`, :class:`~peanut_jax.pipeline.text_masks.TextPromptMasks`, ...) over
    ``input`` and write one PNG per frame to the folder ``output`` (binary union, or DAVIS palette
    with ``per_object``), plus the tinted ``overlay`` video.  The outputs are checked before
    ``masks.prepare`` (which may load a model); they appear only complete."""
    from peanut_jax.data.video_io import VideoWriter, check_output, open_video

    out = pathlib.Path(output)
    if out.suffix:
        raise ValueError(f"--output {out}: give a folder name (no extension) for the mask PNGs")
    check_output(out, overwrite, "--output", inputs=(input,))
    if overlay is not None:
        check_output(overlay, overwrite, "--overlay", video_only=True, inputs=(input,))
    src = open_video(input, fps=fps)
    if len(src) < 1:
        raise ValueError(f"{input}: the video has no frames")
    info = types.SimpleNamespace(num_frames=len(src), height=src.height, width=src.width, fps=src.fps or 25.0)
    masks.prepare(info)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.partial")
    tmp.mkdir()
    writer = None
    try:
        writer = VideoWriter(overlay, fps=info.fps, overwrite=overwrite) if overlay is not None else None
        bar = _bar(progress, info.num_frames, "masks")
        for i, (frame, labels) in enumerate(masks.attach_labels(src)):
            _png(labels, per_object).save(tmp / f"{i:05d}.png", format="PNG")
            if writer is not None:
                writer.write(tint(frame, labels, per_object))
            bar.update(1)
        bar.close()
        if writer is not None:
            writer.close()
        _commit_folder(tmp, out, overwrite)
    except BaseException:
        if writer is not None:
            writer.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        masks.close()
    return out


# ==================================================================================== flags
def add_arguments(parser, *, checkpoint_flag: str = "--checkpoint", outputs: bool = True) -> None:
    """The prompt flags (``--click``, ``--box``, ``--mask-prompt``, repeatable) and the SAM 2
    checkpoint flag (dest ``sam2_checkpoint``); with ``outputs`` also ``--per-object`` and
    ``--overlay`` (``infer.py mask``; the chain has its own ``--overlay``)."""
    g = parser.add_argument_group("SAM 2 prompts (repeatable; OBJ defaults to 1)")
    for flag, what in (
        ("--click", "a click on FRAME (LABEL 1 = on the object, default; 0 = not on it)"),
        ("--box", "a box around the object"),
        ("--mask-prompt", "a mask image of the object on FRAME (any non-zero pixel is the object)"),
    ):
        g.add_argument(flag, action="append", default=[], metavar=SYNTAX[flag], help=what)
    g.add_argument(
        checkpoint_flag,
        dest="sam2_checkpoint",
        default=DEFAULT_CHECKPOINT,
        metavar="CKPT",
        help=f"SAM 2 weights: registry name, official .pt or converted folder (default {DEFAULT_CHECKPOINT})",
    )
    if outputs:
        g.add_argument(
            "--per-object",
            action="store_true",
            help="write DAVIS palette PNGs (index = object id) instead of the binary union",
        )
        g.add_argument("--overlay", metavar="MP4", help="also write the input with the masks tinted")


def prompts_from_args(args) -> list[Prompt]:
    """The parsed prompts of :func:`add_arguments`' flags (empty when none was given)."""
    return parse_prompts(getattr(args, "click", ()), getattr(args, "box", ()), getattr(args, "mask_prompt", ()))
