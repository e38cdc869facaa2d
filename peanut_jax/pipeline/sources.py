"""What flows into a chain: the stream description, the frame record, video/array sources and
the pluggable mask sources (a folder of PNGs, in-memory arrays; a segmenter implements the same
:class:`MaskSource` protocol).

Sources validate against the video before any compute so that a bad input fails in one line,
before models load.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "StreamInfo",
    "Frame",
    "ArraySource",
    "MaskSource",
    "FolderMasks",
    "ArrayMasks",
    "note_masks",
    "mask_coverage_notes",
    "open_source",
]


@dataclasses.dataclass(frozen=True)
class StreamInfo:
    """What a stream of frames looks like: count, (H, W) and frame rate."""

    num_frames: int
    height: int
    width: int
    fps: float

    def replace(self, **changes) -> StreamInfo:
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class Frame:
    """One frame of a stream, the record that flows between stages: ``image`` (H, W, 3) uint8,
    ``mask`` (H, W) bool (True = remove) or None, and its ``index`` in the stream."""

    image: np.ndarray
    mask: np.ndarray | None = None
    index: int = 0

    def replace(self, **changes) -> Frame:
        return dataclasses.replace(self, **changes)


class ArraySource:
    """In-memory frames (T, H, W, 3) uint8 (or float [0, 1]) as a lazily iterated video source."""

    def __init__(self, frames, fps: float = 25.0, name: str = "<array>"):
        a = np.asarray(frames)
        if a.ndim != 4 or a.shape[-1] != 3 or a.shape[0] < 1:
            raise ValueError(f"{name}: frames must be a non-empty (T, H, W, 3) array, got shape {a.shape}")
        if a.dtype != np.uint8:
            if not np.issubdtype(a.dtype, np.floating):
                raise ValueError(f"{name}: frames must be uint8 or float in [0, 1], got {a.dtype}")
            a = np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)
        self.frames, self.fps, self.path = a, float(fps), name
        self.height, self.width = a.shape[1:3]

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self):
        return iter(self.frames)


@runtime_checkable
class MaskSource(Protocol):
    """Where the erase stage's masks come from.

    ``prepare(info)`` validates against the video before any compute (count, size) and raises
    ValueError/FileNotFoundError with a one-line message; ``attach(frames)`` takes the lazily
    decoded uint8 frames and yields ``(frame, mask)`` pairs in order, ``mask`` a (H, W) bool array
    (True = remove).  A folder source ignores the pixels; a text-prompt source (a segmenter run on
    the frames) implements the same two methods.  ``describe()`` names the source for the summary.
    """

    def prepare(self, info: StreamInfo) -> None: ...

    def attach(self, frames: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...

    def describe(self) -> str: ...


class FolderMasks:
    """Masks from a folder of images (sorted by name; binary {0, 255} or DAVIS palette PNGs, any
    non-zero pixel is the object, E2FGVI's rule) or one image repeated over all frames.  Files are
    read lazily, one per frame.  ``resize=True`` resizes masks of another size (nearest)."""

    def __init__(
        self, path, resize: bool = False, object_ids: Sequence[int] | None = None, resize_flag: str = "--resize-masks"
    ):
        from peanut_jax.data.masks import mask_files

        self.resize_flag = resize_flag
        self.path = pathlib.Path(path)
        self.files = mask_files(self.path)
        self.resize = resize
        self.object_ids = None if object_ids is None else list(object_ids)
        self.size: tuple[int, int] | None = None

    def describe(self) -> str:
        return f"{self.path} ({len(self.files)} mask file{'s' * (len(self.files) != 1)})"

    def _read(self, i: int) -> np.ndarray:
        from peanut_jax.data.masks import read_masks

        f = self.files[i if len(self.files) > 1 else 0]
        return read_masks(
            f, size=self.size, object_ids=self.object_ids, resize=self.resize, resize_flag=self.resize_flag
        )[0]

    def prepare(self, info: StreamInfo) -> None:
        n = len(self.files)
        if n not in (1, info.num_frames):
            missing = "missing for some frames" if n < info.num_frames else "more masks than frames"
            raise ValueError(
                f"{self.path}: {n} mask files for {info.num_frames} video frames ({missing}); "
                f"give one mask per frame (sorted by name) or a single mask for all frames"
            )
        self.size = (info.height, info.width)
        self._read(0)  # size / readability of the first mask now, the others as they are reached

    def coverage(self) -> tuple[list[bool], list[bool]]:
        """(empty, full) per mask file: it selects nothing / every pixel (read once, cached)."""
        if getattr(self, "_coverage", None) is None:
            ms = [self._read(i) for i in range(len(self.files))]
            self._coverage = ([not m.any() for m in ms], [bool(m.all()) for m in ms])
        return self._coverage

    def attach(self, frames):
        for i, frame in enumerate(frames):
            if i >= len(self.files) and len(self.files) > 1:
                raise ValueError(f"{self.path}: no mask for frame {i} (only {len(self.files)} mask files)")
            yield frame, self._read(i)


class ArrayMasks:
    """In-memory masks (T, H, W) (or (H, W) for all frames), bool or {0, 1}/{0, 255}."""

    def __init__(self, masks, name: str = "<masks>"):
        m = np.asarray(masks)
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3:
            raise ValueError(f"{name}: masks must be (T, H, W) or (H, W), got shape {m.shape}")
        self.masks, self.name = m > 0, name

    def describe(self) -> str:
        return f"{self.name} ({len(self.masks)} masks)"

    def prepare(self, info: StreamInfo) -> None:
        n = len(self.masks)
        if n not in (1, info.num_frames):
            raise ValueError(f"{self.name}: {n} masks for {info.num_frames} video frames")
        if self.masks.shape[1:] != (info.height, info.width):
            raise ValueError(
                f"{self.name}: mask size {self.masks.shape[1]}x{self.masks.shape[2]} differs from the "
                f"frame size {info.height}x{info.width}"
            )

    def attach(self, frames):
        for i, frame in enumerate(frames):
            yield frame, self.masks[i if len(self.masks) > 1 else 0]

    def coverage(self) -> tuple[list[bool], list[bool]]:
        m = self.masks.reshape(len(self.masks), -1)
        return list(~m.any(1)), list(m.all(1))


def mask_coverage_notes(empty: Sequence[bool], full: Sequence[bool]) -> list[str]:
    """What to tell the user about a mask set before erasing (one flag per frame: the mask selects
    nothing / everything): ``note:`` lines for an all-black set (nothing is erased) and ``warning:``
    lines for masks covering whole frames (nothing visible to fill the hole from)."""
    n = len(empty)
    if n and all(empty):
        return ["note: every mask is empty (black): nothing is erased, the output is the input video"]
    k = sum(bool(x) for x in full)
    if n and k == n:
        return [
            "warning: every mask covers the whole frame (all white): nothing of the video is visible to fill "
            "the hole from, so the output is invented; white (non-zero) pixels mark what to remove"
        ]
    if k:
        return [f"warning: {k} of {n} masks cover the whole frame: those frames are filled only from the others"]
    return []


def note_masks(masks, stream=None) -> None:
    """Print (once per mask source) what :func:`mask_coverage_notes` says
    about a prepared mask source that offers ``coverage()`` (all black: nothing is erased; all
    white: nothing visible to fill from)."""
    cover = getattr(masks, "coverage", None)
    if cover is None or getattr(masks, "_noted", False):
        return
    for line in mask_coverage_notes(*cover()):
        print(line, file=stream or sys.stderr)
    masks._noted = True


def open_source(path, fps: float | None = None):
    """A :class:`~peanut_jax.data.video_io.VideoSource` with a clear error for empty/unreadable input;
    what the reader converts (alpha dropped, grayscale/palette frames made RGB) is said once on
    stderr as a ``note:`` line."""
    import warnings

    from peanut_jax.data.video_io import open_video

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        src = open_video(path, fps=fps)
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    if len(src) < 1:
        raise ValueError(f"{path}: the video has no frames")
    _frame_mode_note(src)
    return src


def _frame_mode_note(video) -> None:
    """Say once when the frames of a folder are not RGB (grayscale / alpha / palette) and are converted."""
    if video.kind != "frames":
        return
    from PIL import Image

    from peanut_jax.data.masks import list_images
    from peanut_jax.data.video_io import FRAME_EXTENSIONS

    with Image.open(list_images(video.path, FRAME_EXTENSIONS)[0]) as img:
        mode = img.mode
    if mode != "RGB":
        what = {
            "L": "grayscale",
            "LA": "grayscale with alpha",
            "RGBA": "RGBA",
            "P": "palette",
            "1": "1-bit",
            "CMYK": "CMYK",
        }.get(mode, f"PIL mode {mode}")
        print(
            f"note: {video.path}: frames are {what}; converted to RGB" + (" (alpha dropped)" if "A" in mode else ""),
            file=sys.stderr,
        )
