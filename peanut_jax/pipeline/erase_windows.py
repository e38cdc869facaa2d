"""The E2FGVI window engine: which frames each window reads, the official pre/post-processing,
lazy clips that hold only the frames a current or future window needs, the jitted window call and
:func:`inpaint`, which yields every composite as soon as no later window covers it.

Split from :mod:`peanut_jax.pipeline.erase` (the stage, loading, evaluation) because this is the
part that reproduces the official ``test.py`` numerically; the protocol and the streaming rules are
written down in ``docs/erase.md``.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

MODELS = ("e2fgvi", "e2fgvi_hq")
E2FGVI_SIZE = (240, 432)  # (H, W) the non-HQ model is tied to (the official 432x240)
PAD_MULTIPLE = (60, 108)  # official mirror padding of the model input
MIN_HQ_SIZE = (30, 54)  # mirror padding repeats the frame at most once
MODES = ("official", "streaming")
DEFAULT_STREAM_REFS = 6


# =============================================================================== configuration
@dataclasses.dataclass(frozen=True)
class EraseConfig:
    """Inference protocol parameters (windows, blending and masks as the official ``test.py``).

    ``mode``: ``'streaming'`` (default: bounded reference set, flat memory, fixed window shapes) or
    ``'official'`` (test.py's reference set: every ``ref_length``-th frame of the whole clip; what
    the evaluation protocol uses).  ``num_ref``: -1 = every ``ref_length``-th frame (official) / the
    ``stream_refs`` nearest grid frames (streaming); ``k > 0`` = the official windowed rule in both
    modes.  ``mask_dilation``: iterations of the 3x3 cross dilation.  ``fixed_shapes`` (streaming
    only): pad every window to one of two shapes whatever the clip length (:func:`plan_windows`).
    """

    mode: str = "streaming"
    neighbor_stride: int = 5
    ref_length: int = 10
    num_ref: int = -1
    stream_refs: int = DEFAULT_STREAM_REFS
    mask_dilation: int = 4
    fixed_shapes: bool = True

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


def official_ref_ids(
    f: int, neighbor_ids: Sequence[int], length: int, ref_length: int = 10, num_ref: int = -1
) -> list[int]:
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
        if len(refs) > num_ref:  # the official test (never reached: the window is too short)
            break
        if i < length:  # the official script would fail with an IndexError here
            refs.append(i)
    return refs


def nearest_ref_ids(
    f: int, neighbor_ids: Sequence[int], length: int, ref_length: int = 10, count: int = DEFAULT_STREAM_REFS
) -> list[int]:
    """Streaming references: the ``count`` frames of the grid ``0, ref_length, 2*ref_length, ...``
    nearest to ``f`` (ties: the earlier frame) that are not local, in increasing order.
    ``count=-1`` (or at least the number of grid frames) gives the official ``num_ref=-1`` set."""
    nbr = set(neighbor_ids)
    cand = [i for i in range(0, length, ref_length) if i not in nbr]
    if count == -1 or count >= len(cand):
        return cand
    return sorted(sorted(cand, key=lambda i: (abs(i - f), i))[:count])


def ref_count(config: EraseConfig) -> int | None:
    """The number of reference frames of an interior window of a long clip in streaming mode (what
    ``fixed_shapes`` pads every window to); None when it grows with the clip (``stream_refs=-1``)."""
    if config.num_ref == -1:
        return None if config.stream_refs == -1 else int(config.stream_refs)
    s, rl = config.neighbor_stride, config.ref_length
    f = s * (-(-rl * config.num_ref // s) + 1)  # far enough from the start for the whole +-range
    length = 2 * f + 1
    return len(official_ref_ids(f, local_ids(f, length, s), length, rl, config.num_ref))


def fill_refs(refs: Sequence[int], f: int, neighbor_ids: Sequence[int], length: int, count: int) -> list[int]:
    """``refs`` topped up to ``count`` frames for a fixed window shape: first the non-local frames
    nearest to ``f`` that are not references yet (ties: the earlier frame), then, when the clip has
    too few frames, repeats (of the references, or of the local frames nearest to ``f`` when there
    is no other frame).  Increasing order; ``refs`` is returned as is when it already has ``count``."""
    out = list(refs)
    if len(out) >= count:
        return out
    taken = set(neighbor_ids) | set(out)
    near = sorted((i for i in range(length) if i not in taken), key=lambda i: (abs(i - f), i))
    out += near[: count - len(out)]
    pool = list(out) or sorted(neighbor_ids, key=lambda i: (abs(i - f), i))
    k = 0
    while len(out) < count:
        out.append(pool[k % len(pool)])
        k += 1
    return sorted(out)


@dataclasses.dataclass(frozen=True)
class Window:
    """One model call: ``local`` frames (outputs kept), ``pad`` (frames appended to the local
    frames to keep the window shape; their outputs are discarded), then ``refs`` (context only)."""

    f: int
    local: tuple[int, ...]
    refs: tuple[int, ...]
    pad: tuple[int, ...] = ()

    @property
    def ids(self) -> tuple[int, ...]:
        return self.local + self.pad + self.refs

    @property
    def num_local(self) -> int:
        """The model's ``num_local_frames``: local frames and their padding."""
        return len(self.local) + len(self.pad)

    @property
    def shape_key(self) -> tuple[int, int]:
        """(num_local, num_frames): what the compiled function depends on."""
        return self.num_local, len(self.ids)


def plan_windows(length: int, config: EraseConfig = EraseConfig()) -> list[Window]:
    """The windows of a clip of ``length`` frames, in processing order.

    Streaming mode with ``fixed_shapes`` (the default) gives every window one of two shapes,
    whatever the clip length: ``s + 1`` local frames (the first window, and a last one cut to at
    most ``s + 1`` by the clip end) or ``2s + 1`` (``s`` = ``neighbor_stride``), each with
    :func:`ref_count` references.  A local window cut by the clip end is padded with the frames
    before the end in mirror order (``T-2, T-3, ...``; their outputs are discarded) and a reference
    set the clip is too short for is topped up by :func:`fill_refs`.  Windows that need neither
    are the unpadded ones (same frames, same outputs); padded windows give slightly different
    outputs for their real frames, since E2FGVI mixes all frames of a window (``docs/erase.md``).
    """
    if length < 1:
        raise ValueError(f"the clip has no frames (length {length})")
    s, out = config.neighbor_stride, []
    fixed = config.mode == "streaming" and config.fixed_shapes
    count = ref_count(config) if fixed else None
    for f in range(0, length, s):
        nbr = local_ids(f, length, s)
        if config.num_ref > 0 or config.mode == "official":
            refs = official_ref_ids(f, nbr, length, config.ref_length, config.num_ref)
        else:
            refs = nearest_ref_ids(f, nbr, length, config.ref_length, config.stream_refs)
        pad: tuple[int, ...] = ()
        if fixed:
            want = s + 1 if len(nbr) <= s + 1 else 2 * s + 1  # the first window's shape, or a full one
            pad = tuple(int(i) for i in np.pad(np.asarray(nbr), (0, want - len(nbr)), mode="reflect")[len(nbr) :])
            if count is not None:
                refs = fill_refs(refs, f, nbr, length, count)
        out.append(Window(f, tuple(nbr), tuple(refs), pad))
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


def processing_size(
    model: str, frame_size: tuple[int, int], size: tuple[int, int] | None = None, flags: dict | None = None
) -> tuple[int, int]:
    """(H, W) the model runs at: E2FGVI 240x432 always; HQ ``size`` or the native frame size.
    ``flags`` names the options in error messages (see :data:`API_NAMES`)."""
    f = {**API_NAMES, **(flags or {})}
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    if model == "e2fgvi":
        if size is not None and tuple(size) != E2FGVI_SIZE:
            raise ValueError(
                f"{f['size']}: e2fgvi runs at {E2FGVI_SIZE[1]}x{E2FGVI_SIZE[0]} (WxH) only (its learned "
                f"positional bias is tied to it); use {f['model']} for other sizes"
            )
        return E2FGVI_SIZE
    h, w = (int(size[0]), int(size[1])) if size is not None else tuple(frame_size)
    if h < MIN_HQ_SIZE[0] or w < MIN_HQ_SIZE[1]:
        raise ValueError(
            f"frame size {w}x{h} (WxH) is smaller than the e2fgvi_hq minimum {MIN_HQ_SIZE[1]}x"
            f"{MIN_HQ_SIZE[0]} (mirror padding to multiples of {PAD_MULTIPLE[1]}x{PAD_MULTIPLE[0]} "
            f"can at most double a side); upscale the video or pass {f['size']}"
        )
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

    def __init__(self, frames, masks, size: tuple[int, int] | None = None, dilation: int = 4, processed: bool = False):
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

    def __init__(
        self,
        video,
        mask_files: Sequence[pathlib.Path],
        size: tuple[int, int],
        dilation: int = 4,
        resize_masks: bool = True,
    ):
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
                    raise ValueError(
                        f"--masks {path}: mask size {img.width}x{img.height} differs from the frame "
                        f"size {self.video.size[1]}x{self.video.size[0]} (WxH); pass --resize-masks "
                        f"to resize masks (nearest neighbour, as the official script)"
                    )
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
                    raise ValueError(
                        f"{self.video.path}: the video ended after {nxt} frames, expected {self.length}"
                    ) from None
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
def inpaint(
    clip: Clip,
    model: Callable[[np.ndarray, int], np.ndarray],
    config: EraseConfig = EraseConfig(),
    on_window: Callable[[int, Window], None] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
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
            out = model(x, win.num_local)[: len(win.local), :h, :w]  # padding outputs discarded
            pred = to_prediction_u8(out)
            for k, i in enumerate(win.local):
                blender.add(i, composite(pred[k], frames[k], masks[k]))
        for i in win.ids:
            if last[i] == wi:
                clip.release(i)
        while nxt < n and final[nxt] <= wi:
            yield nxt, blender.pop(nxt)
            nxt += 1


def inpaint_arrays(
    module,
    variables,
    frames,
    masks,
    config: EraseConfig = EraseConfig(),
    size: tuple[int, int] | None = None,
    model: str | None = None,
    processed: bool = False,
    runner: WindowModel | None = None,
) -> list[np.ndarray]:
    """Whole-clip convenience: composites (official float/uint8 values) of in-memory frames/masks,
    with the streaming windows by default (``config=EraseConfig(mode='official')`` for test.py's).

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


class StreamClip(Clip):
    """The chain's (frame, mask) stream as an ``erase.Clip`` read forward only: frames resized to
    the processing size and masks processed as the official test.py (nearest resize, dilation) on
    arrival; the erase engine releases every frame after its last use."""

    sequential = True

    def __init__(self, items: Iterable, length: int, size: tuple[int, int], dilation: int):
        super().__init__(length, size)
        self._it = iter(items)
        self._next = 0
        self._dilation = dilation

    def _read(self, i: int, ahead: bool = False) -> None:
        """Decode forward up to frame ``i`` (frames on the way are kept: later windows need them)."""
        self._read_until(i)

    def _read_until(self, i: int) -> None:
        if i < self._next:
            raise RuntimeError(f"erase: frame {i} was needed again after its release (streaming schedule)")
        while self._next <= i:
            try:
                frame, mask = next(self._it)
            except StopIteration:
                raise ValueError(f"the input ended after {self._next} frames, expected {self.length}") from None
            j = self._next
            self._next += 1
            if j in self._released and j != i:
                continue
            self._cache[j] = (
                resize_frame(np.asarray(frame), self.size),
                process_mask(np.asarray(mask), self.size, self._dilation),
            )
            self.loads += 1
            self.max_held = max(self.max_held, len(self._cache))


def parse_size(text: str | None, flag: str = "--size"):
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"{flag} must be HxW (e.g. 240x432), got {text!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"{flag} must be positive, got {text!r}")
    return h, w
