"""NOF-Eraser: video object removal with E2FGVI / E2FGVI-HQ (``infer.py erase``), and its evaluation.

Protocol (the official ``test.py`` of MCG-NKU/E2FGVI; facts in
``shared/reference/spynet_e2fgvi_basicvsrpp.md`` section 7.10), reproduced by ``mode='official'``:

* frames: E2FGVI is forced to 432x240 (PIL bicubic, the ``Image.resize`` default of the Pillow the
  official environment pins); E2FGVI-HQ keeps the native size unless ``size`` is given (the
  official ``--set_size``); pixels to [-1, 1] as ``float32(u8) / 255 * 2 - 1``;
* masks: sorted files, PIL ``NEAREST`` resize to the processing size, ``.convert('L') > 0`` (all
  palette objects merged), ``cv2.dilate`` with the 3x3 cross, 4 iterations
  (:func:`peanut_jax.data.masks.dilate_masks`);
* windows: for ``f in range(0, T, neighbor_stride)`` the local frames
  ``range(max(0, f - s), min(T, f + s + 1))`` (:func:`local_ids`) and reference frames
  (:func:`official_ref_ids`): every ``ref_length``-th frame of the whole clip that is not local
  (``num_ref=-1``), or the official windowed rule for ``num_ref > 0``: grid
  ``range(max(0, f - L*(num_ref//2)), min(T, f + L*(num_ref//2)) + 1, L)`` (``L`` = ``ref_length``)
  minus the local frames, with the loop's ``len > num_ref`` stop test (which would allow
  ``num_ref + 1`` references, but that window never holds more than ``num_ref`` non-local grid
  frames; an odd ``num_ref`` gives ``num_ref - 1``);
* model input ``frames * (1 - mask)``, mirror padding (numpy ``symmetric``) bottom/right to
  multiples of 60 x 108, output cropped back;
* ``pred = (out + 1) / 2 * 255`` truncated with ``astype(uint8)``, composited
  ``pred * m + frame * (1 - m)`` on the dilated mask; the first window that covers a frame stores
  the uint8 composite, every later one blends ``0.5 * comp + 0.5 * new`` in float32 (sequentially:
  a frame covered three times ends with weights 1/4, 1/4, 1/2; :func:`blend_weights`); frames are
  saved with ``astype(uint8)`` (truncation).

Deviation: for ``num_ref > 0`` the official range end ``min(T, ...) + 1`` is one past the clip
and can yield index ``T``, where the official script stops with an IndexError; such indices are
dropped here.

``mode='streaming'`` uses the same local windows and blending, and a bounded reference set, so a
clip of any length runs in constant memory: with ``num_ref=-1`` the ``stream_refs`` frames of the
``ref_length`` grid nearest to the window (:func:`nearest_ref_ids`; ``stream_refs=-1`` or a value
covering every grid frame of the clip gives exactly the official set), with ``num_ref > 0`` the
official windowed rule (already bounded).  Frames are decoded lazily; a frame is written as soon
as no later window covers it; the host holds only the frames that a current or future window still
needs: the current window and the reference frames (a video file is decoded forward by two
decoders, one for the local windows and one running ahead to the reference frames), never the
clip.  The ``official`` mode runs the same engine with the official reference set, so it holds
every grid frame of the clip (T / ``ref_length`` frames) until its last use and its windows grow
with the clip (the official script holds the whole clip on the device).

Static shapes: E2FGVI mixes all frames of a window (flow completion and propagation over the local
frames, attention over all frames), so padding a window with extra frames changes the outputs of
the real frames (``tests/test_erase_pipeline.py`` checks this).  Each distinct window shape
``(num_local, num_frames)`` is therefore compiled once and cached (:class:`WindowModel`); there are
only a few: the first window (``s + 1`` local frames), the interior windows, at most two shorter
tail windows and, with ``num_ref=-1`` in the official mode, the few reference counts that occur.
The streaming mode has a fixed reference count (``stream_refs``), so it compiles at most 4 shapes.

Evaluation (:func:`evaluate`) follows the official ``evaluate.py``: float composites (before the
final uint8 truncation) against uint8 ground truth, PSNR ``20 log10(255 / sqrt(mse))`` and the
skimage SSIM variant with a 65 x 65 uniform window (:func:`ssim_e2fgvi`), per frame, averaged over
all frames of all videos; plus the warping error (Ewarp, :func:`peanut_jax.metrics.warping_error`,
the STC definition of DESIGN.md) of the composites against the flow of the ground truth.
The official numbers (E2FGVI 33.01 / 0.9721 on DAVIS, 33.71 / 0.9700 on YouTube-VOS) use the fixed
per-video ``test_masks`` that the E2FGVI README distributes "for reproducing paper results"
(``datasets/<davis|youtube-vos>/test_masks/<video>/<frame>.png``, dilated as above) at 432x240.
"""
from __future__ import annotations

import dataclasses
import pathlib
import sys
import time
import warnings
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

__all__ = [
    "MODELS", "E2FGVI_SIZE", "PAD_MULTIPLE", "EraseConfig", "Window", "local_ids", "official_ref_ids",
    "nearest_ref_ids", "plan_windows", "final_window", "blend_weights", "processing_size", "resize_frame",
    "process_mask", "masked_input", "pad_frames", "to_prediction_u8", "composite", "Blender", "Clip",
    "ArrayClip", "FolderClip", "WindowModel", "inpaint", "inpaint_arrays", "erase_video", "erase_batch",
    "psnr_e2fgvi", "ssim_e2fgvi", "evaluate", "register_cli",
]

MODELS = ("e2fgvi", "e2fgvi_hq")
E2FGVI_SIZE = (240, 432)        # (H, W) the non-HQ model is tied to (the official 432x240)
PAD_MULTIPLE = (60, 108)        # official mirror padding of the model input
MIN_HQ_SIZE = (30, 54)          # mirror padding repeats the frame at most once
MODES = ("official", "streaming")
DEFAULT_STREAM_REFS = 6


# =============================================================================== configuration
@dataclasses.dataclass(frozen=True)
class EraseConfig:
    """Inference protocol parameters (defaults = the official ``test.py``).

    ``mode``: ``'official'`` or ``'streaming'`` (module docstring).  ``num_ref``: -1 = every
    ``ref_length``-th frame (official) / the ``stream_refs`` nearest grid frames (streaming);
    ``k > 0`` = the official windowed rule in both modes.  ``mask_dilation``: iterations of the
    3x3 cross dilation.
    """
    mode: str = "official"
    neighbor_stride: int = 5
    ref_length: int = 10
    num_ref: int = -1
    stream_refs: int = DEFAULT_STREAM_REFS
    mask_dilation: int = 4

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("neighbor_stride", "ref_length"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not isinstance(self.num_ref, (int, np.integer)) or (self.num_ref < 1 and self.num_ref != -1):
            raise ValueError(f"num_ref must be -1 (all reference frames) or >= 1, got {self.num_ref!r}")
        if not isinstance(self.stream_refs, (int, np.integer)) or (self.stream_refs < 0 and self.stream_refs != -1):
            raise ValueError(f"stream_refs must be -1 (all) or >= 0, got {self.stream_refs!r}")
        if not isinstance(self.mask_dilation, (int, np.integer)) or self.mask_dilation < 0:
            raise ValueError(f"mask_dilation must be an integer >= 0, got {self.mask_dilation!r}")


# =============================================================================== window schedule
def local_ids(f: int, length: int, neighbor_stride: int) -> list[int]:
    """Local (neighbour) frames of the window at ``f``: ``range(max(0, f - s), min(T, f + s + 1))``."""
    return list(range(max(0, f - neighbor_stride), min(length, f + neighbor_stride + 1)))


def official_ref_ids(f: int, neighbor_ids: Sequence[int], length: int, ref_length: int = 10,
                     num_ref: int = -1) -> list[int]:
    """The official ``get_ref_index`` (test.py), indices >= ``length`` dropped (module docstring)."""
    nbr = set(neighbor_ids)
    if num_ref == -1:
        return [i for i in range(0, length, ref_length) if i not in nbr]
    refs: list[int] = []
    start = max(0, f - ref_length * (num_ref // 2))
    end = min(length, f + ref_length * (num_ref // 2))
    for i in range(start, end + 1, ref_length):
        if i in nbr:
            continue
        if len(refs) > num_ref:   # the official test (never reached: the window is too short)
            break
        if i < length:            # the official script would fail with an IndexError here
            refs.append(i)
    return refs


def nearest_ref_ids(f: int, neighbor_ids: Sequence[int], length: int, ref_length: int = 10,
                    count: int = DEFAULT_STREAM_REFS) -> list[int]:
    """Streaming references: the ``count`` frames of the grid ``0, ref_length, 2*ref_length, ...``
    nearest to ``f`` (ties: the earlier frame) that are not local, in increasing order.
    ``count=-1`` (or at least the number of grid frames) gives the official ``num_ref=-1`` set."""
    nbr = set(neighbor_ids)
    cand = [i for i in range(0, length, ref_length) if i not in nbr]
    if count == -1 or count >= len(cand):
        return cand
    return sorted(sorted(cand, key=lambda i: (abs(i - f), i))[:count])


@dataclasses.dataclass(frozen=True)
class Window:
    """One model call: ``local`` frames (outputs kept) then ``refs`` (context only)."""
    f: int
    local: tuple[int, ...]
    refs: tuple[int, ...]

    @property
    def ids(self) -> tuple[int, ...]:
        return self.local + self.refs

    @property
    def shape_key(self) -> tuple[int, int]:
        """(num_local, num_frames): what the compiled function depends on."""
        return len(self.local), len(self.local) + len(self.refs)


def plan_windows(length: int, config: EraseConfig = EraseConfig()) -> list[Window]:
    """The windows of a clip of ``length`` frames, in processing order."""
    if length < 1:
        raise ValueError(f"the clip has no frames (length {length})")
    s, out = config.neighbor_stride, []
    for f in range(0, length, s):
        nbr = local_ids(f, length, s)
        if config.num_ref > 0 or config.mode == "official":
            refs = official_ref_ids(f, nbr, length, config.ref_length, config.num_ref)
        else:
            refs = nearest_ref_ids(f, nbr, length, config.ref_length, config.stream_refs)
        out.append(Window(f, tuple(nbr), tuple(refs)))
    return out


def final_window(windows: Sequence[Window], length: int) -> np.ndarray:
    """(T,) index of the last window in which each frame is local (it is final after that one)."""
    last = np.full(length, -1, np.int64)
    for w, win in enumerate(windows):
        last[list(win.local)] = w
    if (last < 0).any():
        raise ValueError(f"frames {np.flatnonzero(last < 0)[:5].tolist()} are in no window")
    return last


def last_use(windows: Sequence[Window], length: int) -> np.ndarray:
    """(T,) index of the last window that reads each frame (as local or reference)."""
    last = np.full(length, -1, np.int64)
    for w, win in enumerate(windows):
        last[list(win.ids)] = w
    return last


def blend_weights(windows: Sequence[Window], length: int) -> list[list[tuple[int, float]]]:
    """Per frame, ``[(window index, weight)]`` of the official sequential 0.5/0.5 blending
    (weights sum to 1; the last window that covers a frame weighs 1/2, the first two 1/2^(n-1))."""
    visits: list[list[int]] = [[] for _ in range(length)]
    for w, win in enumerate(windows):
        for i in win.local:
            visits[i].append(w)
    out = []
    for v in visits:
        n = len(v)
        out.append([(w, 0.5 ** (n - 1) if k == 0 else 0.5 ** (n - k)) for k, w in enumerate(v)])
    return out


# =============================================================================== pre/post-processing
#: how the size/model options are named in messages: the Python API's names by default; the
#: commands pass their flags (``infer.py erase``: --size/--model; the chain: --erase-size)
API_NAMES = {"size": "size=(H, W)", "model": "model='e2fgvi_hq'"}
CLI_NAMES = {"size": "--size", "model": "--model e2fgvi_hq"}
CHAIN_NAMES = {"size": "--erase-size", "model": "E2FGVI-HQ weights (--checkpoint-erase)"}


def processing_size(model: str, frame_size: tuple[int, int], size: tuple[int, int] | None = None,
                    flags: dict | None = None) -> tuple[int, int]:
    """(H, W) the model runs at: E2FGVI 240x432 always; HQ ``size`` or the native frame size.
    ``flags`` names the options in error messages (see :data:`API_NAMES`)."""
    f = {**API_NAMES, **(flags or {})}
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if model == "e2fgvi":
        if size is not None and tuple(size) != E2FGVI_SIZE:
            raise ValueError(f"{f['size']}: e2fgvi runs at {E2FGVI_SIZE[1]}x{E2FGVI_SIZE[0]} (WxH) only (its learned "
                             f"positional bias is tied to it); use {f['model']} for other sizes")
        return E2FGVI_SIZE
    h, w = (int(size[0]), int(size[1])) if size is not None else tuple(frame_size)
    if h < MIN_HQ_SIZE[0] or w < MIN_HQ_SIZE[1]:
        raise ValueError(f"frame size {w}x{h} (WxH) is smaller than the e2fgvi_hq minimum {MIN_HQ_SIZE[1]}x"
                         f"{MIN_HQ_SIZE[0]} (mirror padding to multiples of {PAD_MULTIPLE[1]}x{PAD_MULTIPLE[0]} "
                         f"can at most double a side); upscale the video or pass {f['size']}")
    return h, w


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 RGB frame -> (H, W) = ``size`` with PIL bicubic (the official ``Image.resize(size)``)."""
    from PIL import Image
    if frame.shape[:2] == tuple(size):
        return frame
    return np.asarray(Image.fromarray(frame).resize((size[1], size[0]), Image.BICUBIC))


def process_mask(mask_image, size: tuple[int, int], dilation: int = 4) -> np.ndarray:
    """A mask (PIL image, or an array of labels/booleans) -> (H, W) bool as ``read_mask`` of test.py:
    NEAREST resize to ``size``, ``.convert('L') > 0``, cross dilation ``dilation`` times."""
    from PIL import Image

    from peanut_jax.data.masks import dilate_masks
    if isinstance(mask_image, Image.Image):
        img = mask_image
        if (img.height, img.width) != tuple(size):
            img = img.resize((size[1], size[0]), Image.NEAREST)
        m = np.asarray(img.convert("L")) > 0
    else:
        a = np.asarray(mask_image)
        if a.ndim == 3:
            a = a.any(-1)
        m = a > 0 if a.dtype != bool else a
        if m.shape != tuple(size):
            m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((size[1], size[0]), Image.NEAREST)) > 0
    return dilate_masks(m, dilation) if dilation else m


def masked_input(frames_u8: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 and (T, H, W) bool -> the model input ``(u8 / 255 * 2 - 1) * (1 - m)``, float32."""
    x = frames_u8.astype(np.float32) / np.float32(255.0) * np.float32(2.0) - np.float32(1.0)
    x[np.asarray(masks, bool)] = 0.0
    return x


def pad_frames(x: np.ndarray, multiple: tuple[int, int] = PAD_MULTIPLE) -> np.ndarray:
    """Bottom/right mirror padding with the edge repeated (official flip-concat) of (..., H, W, C)."""
    h, w = x.shape[-3], x.shape[-2]
    ph, pw = (-h) % multiple[0], (-w) % multiple[1]
    if ph == 0 and pw == 0:
        return x
    if ph > h or pw > w:
        raise ValueError(f"frame {h}x{w} is too small to mirror-pad to a multiple of {multiple[0]}x{multiple[1]}")
    pad = [(0, 0)] * (x.ndim - 3) + [(0, ph), (0, pw), (0, 0)]
    return np.pad(x, pad, mode="symmetric")


def to_prediction_u8(out: np.ndarray) -> np.ndarray:
    """Model output in [-1, 1] -> ``((out + 1) / 2 * 255).astype(uint8)`` (float32, truncation)."""
    p = (np.asarray(out, np.float32) + np.float32(1.0)) / np.float32(2.0) * np.float32(255.0)
    return p.astype(np.uint8)


def composite(pred_u8: np.ndarray, frame_u8: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``pred * m + frame * (1 - m)`` on a binary mask, uint8 (the official compositing)."""
    return np.where(np.asarray(mask, bool)[..., None], pred_u8, frame_u8)


class Blender:
    """The official sequential blending: first visit stores the uint8 composite, later visits
    ``comp = 0.5 * comp + 0.5 * img`` in float32.  ``pop(i)`` hands a frame out (uint8 or float32)."""

    def __init__(self):
        self._comp: dict[int, np.ndarray] = {}

    def add(self, i: int, img: np.ndarray) -> None:
        prev = self._comp.get(i)
        if prev is None:
            self._comp[i] = img
        else:
            self._comp[i] = prev.astype(np.float32) * np.float32(0.5) + img.astype(np.float32) * np.float32(0.5)

    def pop(self, i: int) -> np.ndarray:
        return self._comp.pop(i)

    def __len__(self) -> int:
        return len(self._comp)


# =============================================================================== lazy clips
class Clip:
    """A clip whose processed frames and masks are loaded on demand and kept until released.

    ``get(i, ahead=False)`` -> (frame uint8 (H, W, 3), mask bool (H, W)) at the processing size;
    ``ahead=True`` marks a reference frame beyond the current local window.  Subclasses implement
    ``_load(i)`` (random access) or, with ``sequential = True`` (video files, decoded forward only),
    ``_read(i, ahead)``.  ``held`` / ``max_held``: frames currently / at most held (the streaming
    memory bookkeeping); ``loads``: frames decoded and processed.
    """
    sequential = False

    def __init__(self, length: int, size: tuple[int, int]):
        self.length = int(length)
        self.size = tuple(size)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._released: set[int] = set()
        self.max_held = 0
        self.loads = 0

    def __len__(self) -> int:
        return self.length

    @property
    def held(self) -> int:
        return len(self._cache)

    def get(self, i: int, ahead: bool = False) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= i < self.length:
            raise IndexError(f"frame {i} outside the clip of {self.length} frames")
        item = self._cache.get(i)
        if item is None:
            if self.sequential:
                self._read(i, ahead)
                item = self._cache[i]
            else:
                item = self._load(i)
                self.loads += 1
                self._cache[i] = item
            self.max_held = max(self.max_held, len(self._cache))
        return item

    def release(self, i: int) -> None:
        self._cache.pop(i, None)
        self._released.add(i)

    def _load(self, i: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self, i: int, ahead: bool):  # pragma: no cover - abstract
        raise NotImplementedError

    def mask_is_empty(self, i: int) -> bool:
        """Whether frame ``i``'s processed mask is empty (default: load it)."""
        return not self.get(i)[1].any()

    def close(self) -> None:
        """Stop any decoder (a no-op for random-access clips)."""


class ArrayClip(Clip):
    """Frames and masks given as arrays (or lazily indexable sequences) of the original size.

    ``frames``: (T, H, W, 3) uint8 (grayscale (T, H, W) is converted to RGB); ``masks``: (T, H, W)
    bool/labels, already processed if ``processed=True`` (then no resize and no dilation).
    """

    def __init__(self, frames, masks, size: tuple[int, int] | None = None, dilation: int = 4,
                 processed: bool = False):
        if len(frames) != len(masks):
            raise ValueError(f"{len(masks)} masks but {len(frames)} frames")
        if len(frames) == 0:
            raise ValueError("the clip has no frames")
        f0 = np.asarray(frames[0])
        super().__init__(len(frames), size if size is not None else f0.shape[:2])
        self._frames, self._masks = frames, masks
        self._dilation, self._processed = dilation, processed

    def _load(self, i):
        f = np.asarray(self._frames[i])
        if f.ndim == 2:
            f = np.repeat(f[..., None], 3, -1)
        if f.dtype != np.uint8:
            raise ValueError(f"frame {i}: frames must be uint8, got {f.dtype}")
        f = resize_frame(f, self.size)
        m = np.asarray(self._masks[i])
        if self._processed:
            m = m.astype(bool)
            if m.shape != self.size:
                raise ValueError(f"mask {i}: processed mask {m.shape} must be {self.size}")
        else:
            m = process_mask(m, self.size, self._dilation)
        return f, m


class FolderClip(Clip):
    """Frames from a video file or a frame folder (:func:`peanut_jax.data.video_io.open_video`),
    masks from a folder of images (sorted) or one image for every frame; processed as test.py."""

    def __init__(self, video, mask_files: Sequence[pathlib.Path], size: tuple[int, int], dilation: int = 4,
                 resize_masks: bool = True):
        super().__init__(len(video), size)
        self.video = video
        self.mask_files = list(mask_files)
        self._dilation = dilation
        self._resize_masks = resize_masks
        self.sequential = video.kind == "video"
        self._cursors: dict[str, tuple[Any, int]] = {}
        self._empty: dict[int, bool] = {}
        self._full: dict[int, bool] = {}
        self._mask_cache: dict[pathlib.Path, np.ndarray] = {}

    def _mask(self, i: int) -> np.ndarray:
        from PIL import Image
        path = self.mask_files[i if len(self.mask_files) > 1 else 0]
        if len(self.mask_files) == 1 and path in self._mask_cache:
            return self._mask_cache[path]
        try:
            with Image.open(path) as img:
                img.load()
                if not self._resize_masks and (img.height, img.width) != self.video.size:
                    raise ValueError(f"--masks {path}: mask size {img.width}x{img.height} differs from the frame "
                                     f"size {self.video.size[1]}x{self.video.size[0]} (WxH); pass --resize-masks "
                                     f"to resize masks (nearest neighbour, as the official script)")
                m = process_mask(img, self.size, self._dilation)
        except (OSError, SyntaxError) as err:
            raise ValueError(f"{path}: cannot read mask image ({err})") from None
        if len(self.mask_files) == 1:
            self._mask_cache[path] = m
        return m

    def mask_is_empty(self, i: int) -> bool:
        if i not in self._empty:
            m = self._mask(i)
            self._empty[i] = not m.any()
            self._full[i] = bool(m.all())
        return self._empty[i]

    def mask_is_full(self, i: int) -> bool:
        self.mask_is_empty(i)
        return self._full[i]

    def _frame(self, raw: np.ndarray) -> np.ndarray:
        return resize_frame(raw, self.size)

    def _load(self, i):
        # frame folders: random access, one file (the reader checks the frame size)
        it = self.video.iter_frames(i)
        try:
            raw = next(it)
        finally:
            it.close()
        return self._frame(raw), self._mask(i)

    def _cursor(self, which: str, i: int):
        """The decoder ``which`` ('main' / 'ahead') positioned at or before frame ``i``."""
        it, nxt = self._cursors.get(which, (None, 0))
        if it is None or nxt > i:
            # (re)start: only happens for a frame requested again after its release, which the
            # schedules of this module never do
            if it is not None:
                it.close()
            it, nxt = self.video.iter_frames(0), 0
        return it, nxt

    def _read(self, i, ahead):
        """Two forward decoders: 'main' reads every frame in order for the local windows (keeping
        each, as all are needed soon); 'ahead' runs forward to reference frames beyond the local
        window and keeps only those, so read-ahead costs decoding time, not memory."""
        which = "ahead" if ahead and i >= self._cursors.get("main", (None, 0))[1] else "main"
        it, nxt = self._cursor(which, i)
        try:
            while nxt <= i:
                try:
                    raw = next(it)
                except StopIteration:
                    raise ValueError(f"{self.video.path}: the video ended after {nxt} frames, "
                                     f"expected {self.length}") from None
                j, nxt = nxt, nxt + 1
                keep = j == i or (which == "main" and j not in self._released)
                if keep and j not in self._cache:
                    self._cache[j] = (self._frame(raw), self._mask(j))
                    self.loads += 1
                    self.max_held = max(self.max_held, len(self._cache))
        finally:
            self._cursors[which] = (it, nxt)

    def close(self):
        for it, _ in self._cursors.values():
            if it is not None:
                it.close()
        self._cursors = {}


# =============================================================================== the model call
_JITTED = []


def _apply_window(module, variables, x, num_local):
    frames, _ = module.apply(variables, x[None], num_local)
    return frames[0, :num_local]


def _window_fn():
    """One jitted window function for the process (compilations are shared by equal modules)."""
    if not _JITTED:
        import jax
        _JITTED.append(jax.jit(_apply_window, static_argnums=(0, 3)))
    return _JITTED[0]


class WindowModel:
    """Jitted E2FGVI window call with a compilation cache per window shape.

    ``__call__(x, num_local)``: ``x`` (T, Hp, Wp, 3) float32 masked input in [-1, 1] (padded),
    returns the model output of the ``num_local`` local frames (num_local, Hp, Wp, 3), float32.
    One jitted function; JAX compiles it once per distinct ``(T, Hp, Wp, num_local)`` (recorded in
    ``shapes``).  ``variables`` are placed on the device once.
    """

    def __init__(self, module, variables):
        import jax
        self.module = module
        self.variables = jax.device_put(variables)
        self.shapes: set[tuple] = set()
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, x: np.ndarray, num_local: int) -> np.ndarray:
        import jax.numpy as jnp
        self.shapes.add((x.shape, int(num_local)))
        t0 = time.perf_counter()
        out = np.asarray(_window_fn()(self.module, self.variables, jnp.asarray(x, jnp.float32), int(num_local)))
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


# =============================================================================== the engine
def inpaint(clip: Clip, model: Callable[[np.ndarray, int], np.ndarray], config: EraseConfig = EraseConfig(),
            on_window: Callable[[int, Window], None] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Run the windows over ``clip`` and yield ``(i, comp)`` in frame order, each as soon as final.

    ``comp`` is the official composite before the final cast: uint8 for a frame one window
    covered, float32 for a blended one (use ``comp.astype(np.uint8)`` to save, as the official).
    ``model(x, num_local)`` is a :class:`WindowModel` (or any callable with its contract).
    Windows whose local frames all have empty masks are not run: their composites are the frames
    themselves, which is what the model would give.
    """
    n = len(clip)
    windows = plan_windows(n, config)
    final = final_window(windows, n)
    last = last_use(windows, n)
    blender, nxt = Blender(), 0
    h, w = clip.size
    for wi, win in enumerate(windows):
        if on_window is not None:
            on_window(wi, win)
        if all(clip.mask_is_empty(i) for i in win.local):
            for i in win.local:
                blender.add(i, clip.get(i)[0])
        else:
            items = [clip.get(i, ahead=i > win.local[-1]) for i in win.ids]
            frames = np.stack([it[0] for it in items])
            masks = np.stack([it[1] for it in items])
            x = pad_frames(masked_input(frames, masks))
            out = model(x, len(win.local))[:, :h, :w]
            pred = to_prediction_u8(out)
            for k, i in enumerate(win.local):
                blender.add(i, composite(pred[k], frames[k], masks[k]))
        for i in win.ids:
            if last[i] == wi:
                clip.release(i)
        while nxt < n and final[nxt] <= wi:
            yield nxt, blender.pop(nxt)
            nxt += 1


def inpaint_arrays(module, variables, frames, masks, config: EraseConfig = EraseConfig(),
                   size: tuple[int, int] | None = None, model: str | None = None, processed: bool = False,
                   runner: WindowModel | None = None) -> list[np.ndarray]:
    """Whole-clip convenience: composites (official float/uint8 values) of in-memory frames/masks.

    ``frames`` (T, H, W, 3) uint8, ``masks`` (T, H, W); resized to the processing size of ``model``
    (default from ``module.hq``) and processed as test.py unless ``processed=True``.
    """
    name = model or ("e2fgvi_hq" if getattr(module, "hq", True) else "e2fgvi")
    psize = processing_size(name, np.asarray(frames[0]).shape[:2], size)
    clip = ArrayClip(frames, masks, psize, config.mask_dilation, processed=processed)
    runner = runner or WindowModel(module, variables)
    out = [None] * len(clip)
    for i, comp in inpaint(clip, runner, config):
        out[i] = comp
    return out


# =============================================================================== files and CLI
def _note(msg: str) -> None:
    print(f"note: {msg}", file=sys.stderr)


def mask_coverage_notes(empty: Sequence[bool], full: Sequence[bool]) -> list[str]:
    """What to tell the user about a mask set before erasing (one flag per frame: the mask selects
    nothing / everything): ``note:`` lines for an all-black set (nothing is erased) and ``warning:``
    lines for masks covering whole frames (nothing visible to fill the hole from)."""
    n = len(empty)
    if n and all(empty):
        return ["note: every mask is empty (black): nothing is erased, the output is the input video"]
    k = sum(bool(x) for x in full)
    if n and k == n:
        return ["warning: every mask covers the whole frame (all white): nothing of the video is visible to fill "
                "the hole from, so the output is invented; white (non-zero) pixels mark what to remove"]
    if k:
        return [f"warning: {k} of {n} masks cover the whole frame: those frames are filled only from the others"]
    return []


def _mask_files(masks_path: pathlib.Path) -> list[pathlib.Path]:
    from peanut_jax.data.masks import MASK_EXTENSIONS, list_images
    if not masks_path.exists():
        raise FileNotFoundError(f"--masks: mask path not found: {masks_path}")
    if masks_path.is_file():
        return [masks_path]
    files = list_images(masks_path)
    if not files:
        raise ValueError(f"--masks {masks_path}: no mask images ({', '.join(MASK_EXTENSIONS)}) in the folder")
    return files


def _image_size(path: pathlib.Path) -> tuple[int, int]:
    from PIL import Image
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, ValueError, SyntaxError) as err:
        raise ValueError(f"{path}: cannot read image ({err})") from None


def _frame_mode_note(video) -> None:
    """Say once when frames are not RGB (grayscale / alpha / palette) and are converted."""
    if video.kind != "frames":
        return
    from PIL import Image

    from peanut_jax.data.video_io import FRAME_EXTENSIONS
    from peanut_jax.data.masks import list_images
    with Image.open(list_images(video.path, FRAME_EXTENSIONS)[0]) as img:
        mode = img.mode
    if mode not in ("RGB",):
        what = {"L": "grayscale", "LA": "grayscale with alpha", "RGBA": "RGBA", "P": "palette", "1": "1-bit",
                "CMYK": "CMYK"}.get(mode, f"PIL mode {mode}")
        _note(f"{video.path}: frames are {what}; converted to RGB"
              + (" (alpha dropped)" if "A" in mode else ""))


def load_eraser(checkpoint, model: str | None = None, dtype: str = "float32", precision: str | None = None):
    """(model name, module, variables) from an official E2FGVI(-HQ) file, an exported or orbax dir.

    ``model=None`` detects E2FGVI vs E2FGVI-HQ from an official file (``sc.bias`` vs ``sc.bias_conv``)."""
    import jax.numpy as jnp

    from peanut_jax.pipeline.common import load_model
    if checkpoint is None:
        raise ValueError("--checkpoint is required (E2FGVI-CVPR22.pth / E2FGVI-HQ-CVPR22.pth, or an exported "
                         "or orbax directory)")
    from peanut_jax.pipeline.common import resolve_weights
    path = pathlib.Path(resolve_weights(checkpoint, model or "e2fgvi"))
    if not path.exists():
        raise FileNotFoundError(f"--checkpoint: file not found: {path}")
    overrides: dict[str, Any] = {}
    if dtype != "float32":
        overrides["dtype"] = jnp.dtype(dtype)
    if precision not in (None, "default"):
        overrides["precision"] = precision
    if path.is_file():
        from peanut_jax.convert import from_official
        from peanut_jax.convert import e2fgvi as conv
        from peanut_jax.convert.reader import load_checkpoint
        obj = load_checkpoint(path)
        found = conv.detect(obj)
        if found not in MODELS:
            what = "a T-PatchGAN discriminator" if found else "not an E2FGVI generator checkpoint"
            raise ValueError(f"--checkpoint {path}: {what} (expected E2FGVI-CVPR22.pth or E2FGVI-HQ-CVPR22.pth)")
        if model is not None and model != found:
            raise ValueError(f"--checkpoint {path} holds {found} weights but --model {model} was given")
        from peanut_jax.pipeline.common import hashable
        module, variables = from_official(found, obj, **overrides)
        return found, hashable(module), variables
    name = model or "e2fgvi"
    if (path / "model.json").exists():
        import json
        from peanut_jax.pipeline.common import check_family
        found = json.loads((path / "model.json").read_text()).get("model")
        check_family(str(found), "e2fgvi", f"--checkpoint {path}")
        if found not in MODELS:
            raise ValueError(f"--checkpoint {path}: holds weights of model {found!r}, not an E2FGVI generator")
        if model is not None and model != found:
            raise ValueError(f"--checkpoint {path} holds {found} weights but --model {model} was given")
        name = found
    if name not in MODELS:
        raise ValueError(f"--model must be one of {MODELS}, got {name!r}")
    module, variables = load_model(name, path, **overrides)
    got = "e2fgvi_hq" if getattr(module, "hq", False) else "e2fgvi"   # an orbax workdir records its model
    if model is not None and model != got:
        raise ValueError(f"--checkpoint {path} holds {got} weights but --model {model} was given")
    return got, module, variables


def erase_video(input_path, masks_path, output, *, checkpoint=None, model: str | None = None,
                config: EraseConfig = EraseConfig(), size: tuple[int, int] | None = None,
                resize_masks: bool = False, overwrite: bool = False, fps: float | None = None,
                progress: bool = True, loaded=None, dtype: str = "float32", precision: str | None = None,
                flags: dict | None = None) -> dict:
    """The ``infer.py erase`` job for one video: validate, run, write ``output`` atomically.

    ``loaded``: an already loaded ``(name, module, variables[, runner])`` (batch mode reuses it).
    Returns a summary dict.  Raises ValueError / FileNotFoundError with one-line messages on bad
    input before anything is written.
    """
    from tqdm import tqdm

    from peanut_jax.data.video_io import VideoWriter, check_output, open_video
    input_path, masks_path, output = pathlib.Path(input_path), pathlib.Path(masks_path), pathlib.Path(output)
    flags = CLI_NAMES if flags is None else flags
    check_output(output, overwrite, "--output", inputs=(input_path, masks_path))   # before loading anything
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        video = open_video(input_path, fps=fps)
        n = len(video)
    for wmsg in caught:
        _note(str(wmsg.message))
    _frame_mode_note(video)
    if n < 2:
        raise ValueError(f"--input {input_path}: the clip has {n} frame; E2FGVI needs at least 2 "
                         f"(flow completion works on frame pairs)")
    files = _mask_files(masks_path)
    if len(files) not in (1, n):
        raise ValueError(f"--masks {masks_path}: {len(files)} mask files but the video has {n} frames")
    msize = _image_size(files[0])
    if msize != video.size and not resize_masks:
        raise ValueError(f"--masks {files[0]}: mask size {msize[1]}x{msize[0]} differs from the frame size "
                         f"{video.size[1]}x{video.size[0]} (WxH); pass --resize-masks to resize masks "
                         f"(nearest neighbour, as the official script)")
    if loaded is None:
        loaded = load_eraser(checkpoint, model, dtype, precision)
    name, module, variables = loaded[:3]
    runner = loaded[3] if len(loaded) > 3 else WindowModel(module, variables)
    psize = processing_size(name, video.size, size, flags)
    if n < 2 * config.neighbor_stride + 1:
        _note(f"the clip ({n} frames) is shorter than the local window ({2 * config.neighbor_stride + 1} "
              f"frames): every window covers the clip")
    if psize != video.size:
        _note(f"{name} runs at {psize[1]}x{psize[0]} (WxH); the {video.size[1]}x{video.size[0]} video is resized "
              f"(PIL bicubic) and the output has that size")
    clip = FolderClip(video, files, psize, config.mask_dilation, resize_masks=resize_masks)
    empty = [clip.mask_is_empty(i) for i in range(n)]   # reads (and checks) every mask once
    for line in mask_coverage_notes(empty, [clip.mask_is_full(i) for i in range(n)]):
        print(line + (" (resized)" if all(empty) and psize != video.size else ""), file=sys.stderr)
    out_fps = video.fps or fps or 24.0
    t0 = time.perf_counter()
    bar = tqdm(total=n, unit="frame", desc=f"erase {input_path.name}", disable=not progress)
    try:
        with warnings.catch_warnings(), VideoWriter(output, fps=out_fps, overwrite=overwrite) as writer:
            warnings.filterwarnings("ignore", message=".*alpha channel.*")   # already said once
            for i, comp in inpaint(clip, runner, config):
                writer.write(comp.astype(np.uint8))
                bar.update(1)
    finally:
        bar.close()
        clip.close()
    return {"output": str(output), "frames": n, "model": name, "size": psize, "mode": config.mode,
            "seconds": time.perf_counter() - t0, "model_seconds": runner.seconds, "windows": runner.calls,
            "compiled_shapes": len(runner.shapes), "max_frames_held": clip.max_held,
            "empty_masks": int(sum(empty))}


def _batch_items(input_dir: pathlib.Path, masks_dir: pathlib.Path):
    """Pairs (name, video path, mask folder) of a batch: videos/frame folders in ``input_dir`` and
    mask folders with the same name (video file stem or folder name) in ``masks_dir``."""
    from peanut_jax.data.video_io import FRAME_EXTENSIONS, VIDEO_EXTENSIONS
    items = []
    for p in sorted(input_dir.iterdir(), key=lambda q: q.name):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            name = p.stem
        elif p.is_dir():
            name = p.name
        else:
            continue
        m = masks_dir / name
        if not m.exists():
            raise FileNotFoundError(f"--masks {masks_dir}: no mask folder {name!r} for {p.name}")
        items.append((name, p, m))
    if not items:
        raise ValueError(f"--input {input_dir}: no videos ({', '.join(VIDEO_EXTENSIONS)}) or frame folders")
    return items


def _is_frame_folder(path: pathlib.Path) -> bool:
    from peanut_jax.data.video_io import FRAME_EXTENSIONS
    return path.is_dir() and any(p.is_file() and p.suffix.lower() in FRAME_EXTENSIONS for p in path.iterdir())


def erase_batch(input_dir, masks_dir, output_dir, *, checkpoint=None, model=None, suffix: str = ".mp4",
                **kwargs) -> list[dict]:
    """Erase every video / frame folder of ``input_dir`` with the masks ``masks_dir/<name>``, writing
    ``output_dir/<name><suffix>``.  The model is loaded once.  A failing video is reported and the
    others still run; raises ValueError at the end if any failed."""
    input_dir, masks_dir, output_dir = pathlib.Path(input_dir), pathlib.Path(masks_dir), pathlib.Path(output_dir)
    from peanut_jax.data.video_io import VIDEO_EXTENSIONS
    if output_dir.suffix.lower() in VIDEO_EXTENSIONS or output_dir.is_file():
        raise ValueError(f"--output {output_dir}: batch mode (--input is a folder of videos) writes a folder")
    if not masks_dir.is_dir():
        raise FileNotFoundError(f"--masks {masks_dir}: batch mode needs a folder of mask folders")
    items = _batch_items(input_dir, masks_dir)
    from peanut_jax.data.video_io import check_output
    if output_dir.is_dir():   # every output location is usable before loading anything
        for name, video, _ in items:
            check_output(output_dir / f"{name}{suffix}", kwargs.get("overwrite", False), "--output", inputs=(video,))
    else:
        check_output(output_dir, True, "--output")
    output_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_eraser(checkpoint, model, kwargs.pop("dtype", "float32"), kwargs.pop("precision", None))
    loaded = (*loaded, WindowModel(loaded[1], loaded[2]))
    results, failed = [], []
    for name, video, masks in items:
        try:
            results.append(erase_video(video, masks, output_dir / f"{name}{suffix}", loaded=loaded, **kwargs))
        except (ValueError, FileNotFoundError, FileExistsError, OSError) as err:
            msg = str(err).strip().splitlines()
            print(f"error: {name}: {msg[0] if msg else type(err).__name__}", file=sys.stderr)
            failed.append(name)
    if failed:
        raise ValueError(f"{len(failed)} of {len(items)} videos failed: {', '.join(failed)}")
    return results


def _parse_size(text: str | None, flag: str = "--size"):
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"{flag} must be HxW (e.g. 240x432), got {text!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"{flag} must be positive, got {text!r}")
    return h, w


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "erase", help="remove masked objects from a video with E2FGVI / E2FGVI-HQ",
        description="Video object removal with E2FGVI(-HQ). --input a video or frame folder and --masks a folder of "
                    "mask images (one per frame, sorted; any non-zero pixel is the object), or --input a folder of "
                    "videos / frame folders and --masks a folder of mask folders with the same names (batch).")
    p.add_argument("--input", required=True, help="video file, frame folder, or (batch) a folder of them")
    p.add_argument("--masks", required=True,
                   help="mask folder (or one mask image for all frames); batch: folder of mask folders")
    p.add_argument("--output", required=True,
                   help="output .mp4 (or a folder name for PNG frames); batch: output folder")
    p.add_argument("--model", choices=MODELS, default=None,
                   help="e2fgvi (432x240) or e2fgvi_hq (any size); default: detected from the checkpoint")
    p.add_argument("--checkpoint", required=True,
                   help="registry name (e2fgvi, e2fgvi_hq), official E2FGVI-CVPR22.pth / E2FGVI-HQ-CVPR22.pth, "
                        "or an exported/orbax directory")
    p.add_argument("--mode", choices=MODES, default="official",
                   help="official: the official test.py protocol; streaming: bounded references and memory")
    p.add_argument("--neighbor-stride", type=int, default=5, help="local window step (window = 2*stride+1 frames)")
    p.add_argument("--ref-length", type=int, default=10, help="reference frame grid step")
    p.add_argument("--num-ref", type=int, default=-1,
                   help="-1: all grid frames (official) / nearest --stream-refs (streaming); k>0: official window rule")
    p.add_argument("--stream-refs", type=int, default=DEFAULT_STREAM_REFS,
                   help="streaming: reference frames per window (nearest grid frames; -1 = all)")
    p.add_argument("--size", default=None,
                   help="e2fgvi_hq: run at HxW instead of the native size (official --set_size)")
    p.add_argument("--resize-masks", action="store_true", help="resize masks of another size (nearest neighbour)")
    p.add_argument("--fps", type=float, default=None, help="output frame rate (default: the input's, or 24 for frames)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_main)


def _main(args) -> int:
    config = EraseConfig(mode=args.mode, neighbor_stride=args.neighbor_stride, ref_length=args.ref_length,
                         num_ref=args.num_ref, stream_refs=args.stream_refs)
    size = _parse_size(args.size)
    inp = pathlib.Path(args.input)
    if not inp.exists():
        raise FileNotFoundError(f"--input: not found: {inp}")
    kw = dict(config=config, size=size, resize_masks=args.resize_masks, overwrite=args.overwrite, fps=args.fps,
              progress=not args.no_progress, dtype=args.dtype)
    if inp.is_dir() and not _is_frame_folder(inp):
        rows = erase_batch(inp, args.masks, args.output, checkpoint=args.checkpoint, model=args.model, **kw)
        for s in rows:
            print(f"wrote {s['output']}: {s['frames']} frames ({s['model']}, {s['size'][1]}x{s['size'][0]}, "
                  f"{s['mode']}) in {s['seconds']:.1f} s")
        return 0
    s = erase_video(inp, args.masks, args.output, checkpoint=args.checkpoint, model=args.model, **kw)
    print(f"wrote {s['output']}: {s['frames']} frames ({s['model']}, {s['size'][1]}x{s['size'][0]}, {s['mode']}) "
          f"in {s['seconds']:.1f} s ({s['windows']} windows, {s['compiled_shapes']} compiled shapes)")
    return 0


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
