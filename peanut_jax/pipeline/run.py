"""The end-to-end chain: ``infer.py [run] --input VIDEO --masks MASKS --output OUT.mp4``.

Any sub-chain of erase (E2FGVI) -> upscale (BasicVSR++) -> interpolate (RIFE) runs in one process,
streaming:

* frames are decoded lazily by a **reader thread** into a bounded queue (with their masks, from a
  :class:`MaskSource`), so decoding overlaps device compute;
* every stage is a generator that consumes and emits frames (E2FGVI and BasicVSR++ internally in
  bounded windows, RIFE in fixed-size batches of pairs); a frame leaves a stage as soon as it is
  final, so the host holds a bounded number of frames and device memory depends on the window,
  not on the clip length;
* finished frames go through a bounded queue to a **writer thread** (encoding, side-by-side and
  overlay composition); every output is written atomically (a temporary name renamed onto the final
  one only when complete; an error, a full disk or Ctrl-C leaves no partial file under the final
  name);
* between stages frames are rounded to uint8, exactly what a user of the separate official
  projects passes from one tool to the next through image files (so the chain's output equals
  the file-by-file pipeline's, see ``benchmarks/pipeline.py``);
* the output frame rate is the source's times the interpolation factor; an audio track of the
  source container is copied through (remuxed into the temporary file before the final rename).

The mask source is pluggable (:class:`MaskSource`): a folder of PNG masks (:class:`FolderMasks`)
or in-memory arrays (:class:`ArrayMasks`) today; a text-prompt segmenter implements the same
``attach(frames)`` later.

Batch mode: ``--manifest FILE`` (CSV with a header, or JSON list) of ``video, masks, output`` rows
(optional ``side_by_side``, ``overlay``, ``frames_out``); relative paths are relative to the
manifest; the models are loaded and compiled once for all rows.

Python API::

    chain = build_chain(stages=("erase", "upscale"), checkpoints={...})
    summary = chain.run(open_video("in.mp4"), "out.mp4", masks=FolderMasks("masks/"))
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import pathlib
import queue
import resource
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from peanut_jax.pipeline import erase as _erase
from peanut_jax.pipeline.common import enable_compilation_cache  # noqa: F401 - part of this module's API

STAGE_ORDER = ("erase", "upscale", "interpolate")
DEFAULT_CHECKPOINTS = {"erase": "e2fgvi_hq", "upscale": "basicvsr_pp", "interpolate": "rife_hdv3"}
MODEL_FAMILY = {"erase": "e2fgvi", "upscale": "basicvsr_pp", "interpolate": "rife"}
DEFAULT_QUEUE = 8


# ==================================================================================== sources
@dataclasses.dataclass(frozen=True)
class StreamInfo:
    """What a stream of frames looks like: count, (H, W) and frame rate."""
    num_frames: int
    height: int
    width: int
    fps: float


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

    def __init__(self, path, resize: bool = False, object_ids: Sequence[int] | None = None,
                 resize_flag: str = "--resize-masks"):
        from peanut_jax.data.masks import _mask_files
        self.resize_flag = resize_flag
        self.path = pathlib.Path(path)
        self.files = _mask_files(self.path)
        self.resize = resize
        self.object_ids = None if object_ids is None else list(object_ids)
        self.size: tuple[int, int] | None = None

    def describe(self) -> str:
        return f"{self.path} ({len(self.files)} mask file{'s' * (len(self.files) != 1)})"

    def _read(self, i: int) -> np.ndarray:
        from peanut_jax.data.masks import read_masks
        f = self.files[i if len(self.files) > 1 else 0]
        return read_masks(f, size=self.size, object_ids=self.object_ids, resize=self.resize,
                          resize_flag=self.resize_flag)[0]

    def prepare(self, info: StreamInfo) -> None:
        n = len(self.files)
        if n not in (1, info.num_frames):
            missing = "missing for some frames" if n < info.num_frames else "more masks than frames"
            raise ValueError(f"{self.path}: {n} mask files for {info.num_frames} video frames ({missing}); "
                             f"give one mask per frame (sorted by name) or a single mask for all frames")
        self.size = (info.height, info.width)
        self._read(0)   # size / readability of the first mask now, the others as they are reached

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
            raise ValueError(f"{self.name}: mask size {self.masks.shape[1]}x{self.masks.shape[2]} differs from the "
                             f"frame size {info.height}x{info.width}")

    def attach(self, frames):
        for i, frame in enumerate(frames):
            yield frame, self.masks[i if len(self.masks) > 1 else 0]

    def coverage(self) -> tuple[list[bool], list[bool]]:
        m = self.masks.reshape(len(self.masks), -1)
        return list(~m.any(1)), list(m.all(1))


def note_masks(masks, stream=None) -> None:
    """Print (once per mask source) what :func:`peanut_jax.pipeline.erase.mask_coverage_notes` says
    about a prepared mask source that offers ``coverage()`` (all black: nothing is erased; all
    white: nothing visible to fill from)."""
    cover = getattr(masks, "coverage", None)
    if cover is None or getattr(masks, "_noted", False):
        return
    for line in _erase.mask_coverage_notes(*cover()):
        print(line, file=stream or sys.stderr)
    masks._noted = True


def open_source(path, fps: float | None = None):
    """A :class:`~peanut_jax.data.video_io.VideoSource` with a clear error for empty/unreadable input."""
    from peanut_jax.data.video_io import open_video
    src = open_video(path, fps=fps)
    n = len(src)
    if n < 1:
        raise ValueError(f"{path}: the video has no frames")
    return src


# ==================================================================================== stages
def _u8(frame) -> np.ndarray:
    a = np.asarray(frame)
    if a.dtype == np.uint8:
        return a
    return np.clip(np.round(a.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


class Stage:
    """One link of the chain.

    ``check(info)`` refuses inputs the stage cannot take (called before any compute),
    ``output_info(info)`` describes what it emits, and ``__call__(items, info)`` is a generator
    from the incoming stream (uint8 frames; ``(frame, mask)`` pairs for a stage with
    ``needs_masks``) to uint8 frames, each yielded as soon as it is final.
    """
    name = "stage"
    needs_masks = False
    weights = ""

    def output_info(self, info: StreamInfo) -> StreamInfo:
        return info

    def check(self, info: StreamInfo) -> None:
        """Raise ValueError for inputs this stage cannot take."""

    def compile_jobs(self, info: StreamInfo) -> list[tuple[tuple, Callable[[], Any]]]:
        """``[(key, job)]``: one call per jitted shape this stage will use for a clip described by
        ``info`` (``job()`` runs the stage's model once on zeros of that shape, through its public
        entry point, so that JAX compiles it and caches the program for the real calls).
        :meth:`Chain.warmup` runs them in parallel."""
        return []

    def __call__(self, items: Iterator, info: StreamInfo) -> Iterator[np.ndarray]:
        raise NotImplementedError


class StreamClip(_erase.Clip):
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
            self._cache[j] = (_erase.resize_frame(np.asarray(frame), self.size),
                              _erase.process_mask(np.asarray(mask), self.size, self._dilation))
            self.loads += 1
            self.max_held = max(self.max_held, len(self._cache))


class EraseStage(Stage):
    """E2FGVI / E2FGVI-HQ object removal (``peanut_jax.pipeline.erase``) on (frame, mask) pairs.

    ``config``: an ``erase.EraseConfig`` (default: the official windows and blending with the
    bounded ``streaming`` reference set, so memory does not grow with the clip; ``mode='official'``
    reproduces test.py exactly but holds every reference frame of the clip).  ``size``: E2FGVI-HQ
    processing size (default: the native size; E2FGVI always runs at 240x432).  Outputs are the
    official uint8 composites (truncated) at the processing size.
    """
    name = "erase"
    needs_masks = True

    def __init__(self, module, variables, weights: str = "", config=None, size: tuple[int, int] | None = None,
                 flags: dict | None = None):
        E = self.E = _erase
        self.flags = E.CHAIN_NAMES if flags is None else flags   # option names in messages
        self.module, self.variables, self.weights = module, variables, weights
        self.model_name = "e2fgvi_hq" if getattr(module, "hq", False) else "e2fgvi"
        self.config = config if config is not None else E.EraseConfig(mode="streaming")
        self.size = None if size is None else tuple(int(v) for v in size)
        self.runner = E.WindowModel(module, variables)
        self.max_held = 0

    def psize(self, info: StreamInfo) -> tuple[int, int]:
        return self.E.processing_size(self.model_name, (info.height, info.width), self.size, self.flags)

    def check(self, info: StreamInfo) -> None:
        self.psize(info)
        if info.num_frames < 2:
            raise ValueError(f"the clip has {info.num_frames} frame; E2FGVI needs at least 2 (flow completion "
                             f"works on frame pairs)")

    def output_info(self, info):
        h, w = self.psize(info)
        return dataclasses.replace(info, height=h, width=w)

    def compile_jobs(self, info):
        h, w = self.psize(info)
        mh, mw = self.E.PAD_MULTIPLE
        hp, wp = -(-h // mh) * mh, -(-w // mw) * mw
        keys = sorted({win.shape_key for win in self.E.plan_windows(info.num_frames, self.config)})
        r = self.runner
        return [(("erase", id(r), nt, hp, wp, nl), lambda nl=nl, nt=nt: r(np.zeros((nt, hp, wp, 3), np.float32), nl))
                for nl, nt in keys]

    def __call__(self, items, info):
        clip = StreamClip(items, info.num_frames, self.psize(info), self.config.mask_dilation)
        for _, comp in self.E.inpaint(clip, self.runner, self.config):
            yield np.asarray(comp).astype(np.uint8)   # the official save: truncation
        self.max_held = max(self.max_held, clip.max_held)


class UpscaleStage(Stage):
    """BasicVSR++ in overlapping chunks (``peanut_jax.pipeline.upscale``)."""
    name = "upscale"

    def __init__(self, module, variables, weights: str = "", scale: int | None = None, chunk: int | None = 16,
                 overlap: int = 8, blend: int = 0, tile=None):
        from peanut_jax.pipeline.upscale import Upscaler
        self.runner = Upscaler(module, variables, tile=tile)
        if scale is not None and int(scale) != self.runner.scale:
            raise ValueError(f"{weights or 'upscale checkpoint'}: the model produces x{self.runner.scale} output, "
                             f"but --upscale {scale} was requested")
        self.module, self.variables, self.weights = module, variables, weights
        self.chunk, self.overlap, self.blend = chunk, overlap, blend
        self.scale = self.runner.scale

    def output_info(self, info):
        return dataclasses.replace(info, height=info.height * self.scale, width=info.width * self.scale)

    def compile_jobs(self, info):
        import jax.numpy as jnp

        from peanut_jax.pipeline import upscale as U
        r = self.runner
        if r.tile is not None:
            return []   # tile shapes depend on the tiling plan
        n = info.num_frames
        length = n if self.chunk is None else min(n, self.chunk + 2 * self.overlap)
        h, w = info.height, info.width
        hp, wp = r._padded_size(h, w)
        fwd = U.jitted_forward(self.module)   # the runner's shared jitted forward: compile without running

        def job():
            x = jnp.asarray(np.zeros((1, length, hp, wp, 3), np.float32))   # (also compiles the host->device staging)
            fwd.lower(r.variables, x).compile()
        return [(("upscale", id(fwd), length, hp, wp), job)]

    def __call__(self, items, info):
        from peanut_jax.pipeline.upscale import to_uint8, upscale_video
        for f in upscale_video(items, self.module, self.variables, chunk=self.chunk, overlap=self.overlap,
                               blend=self.blend, upscaler=self.runner):
            yield to_uint8(f)


class InterpolateStage(Stage):
    """RIFE frame interpolation x ``multi`` (``peanut_jax.pipeline.interpolate``)."""
    name = "interpolate"

    def __init__(self, module, variables, weights: str = "", multi: int = 2, batch_size: int = 4,
                 scale: float = 1.0, scene_detect: bool = True, flags: dict | None = None):
        from peanut_jax.pipeline.interpolate import CLI_NAMES, _schedule, has_timestep_input
        _schedule(int(multi), None, None, has_timestep_input(module), type(module).__name__,
                  flags if flags is not None else {**CLI_NAMES, "multi": "--interpolate"})   # validates multi
        self.module, self.variables, self.weights = module, variables, weights
        self.multi, self.batch_size, self.scale, self.scene_detect = int(multi), int(batch_size), scale, scene_detect

    def output_info(self, info):
        return dataclasses.replace(info, num_frames=(info.num_frames - 1) * self.multi + 1, fps=info.fps * self.multi)

    def check(self, info):
        if info.num_frames < 2 and self.multi > 1:
            raise ValueError(f"interpolation needs at least 2 frames, the clip has {info.num_frames}")

    def compile_jobs(self, info):
        from peanut_jax.pipeline import interpolate as I
        if self.multi == 1:
            return []
        m = I.model_multiple(self.module, self.scale)
        bs, h, w = self.batch_size, info.height, info.width
        z = np.zeros((bs, h, w, 3), np.float32)
        jobs = [(("interpolate", id(self.module), bs, -(-h // m) * m, -(-w // m) * m),
                 lambda: I.interpolate_pair(self.module, self.variables, z, z, 0.5, scale=self.scale, batch_size=bs))]
        if self.scene_detect:
            jobs.append((("scene_ssim", bs, h, w), lambda: I.scene_ssim(z, z)))
        return jobs

    def __call__(self, items, info):
        from peanut_jax.pipeline.interpolate import interpolate_video
        if self.multi == 1:
            yield from items
            return
        yield from interpolate_video(items, self.module, self.variables, self.multi, scale=self.scale,
                                     batch_size=self.batch_size, scene_detect=self.scene_detect)


def load_stage_model(stage: str, spec, progress: bool = True):
    """(module, variables, label) for a ``--checkpoint-<stage>`` value (registry name, file or folder),
    through the one loading door (:func:`peanut_jax.pipeline.common.load_model`: family check,
    hashable module); errors name the flag."""
    from peanut_jax.pipeline.common import load_model, resolve_weights
    flag = f"--checkpoint-{stage}"
    path = pathlib.Path(resolve_weights(spec, MODEL_FAMILY[stage], flag, progress=progress))
    try:
        module, variables = load_model(MODEL_FAMILY[stage], path)
    except (ValueError, FileNotFoundError) as err:
        msg = str(err)
        msg = msg[len(f"{path}: "):] if msg.startswith(f"{path}: ") else msg
        raise type(err)(f"{flag} {spec}: {msg}") from None
    return module, variables, f"{spec}" if str(spec) == str(path) else f"{spec} ({path})"


# ==================================================================================== threads
_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class Prefetcher:
    """Iterate ``iterable`` in a background thread through a bounded queue (decode overlapped)."""

    def __init__(self, iterable: Iterable, maxsize: int = DEFAULT_QUEUE, name: str = "reader"):
        self._q: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
        self._stop = threading.Event()
        self._it = iterable
        self.wait_seconds = 0.0
        self._thread = threading.Thread(target=self._work, name=f"peanut-{name}", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _work(self):
        it = iter(self._it)
        try:
            for item in it:
                if not self._put(item):
                    break
            else:
                self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(_Failure(exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    def __iter__(self):
        while True:
            t0 = time.perf_counter()
            item = self._q.get()
            self.wait_seconds += time.perf_counter() - t0
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def close(self):
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._q.get_nowait()
        self._thread.join(timeout=10)


class WriterThread:
    """Run write jobs (callables) in order in a background thread, through a bounded queue."""

    def __init__(self, maxsize: int = DEFAULT_QUEUE):
        self._q: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.busy_seconds = 0.0
        self.wait_seconds = 0.0   # time the producer was blocked (back-pressure)
        self._thread = threading.Thread(target=self._work, name="peanut-writer", daemon=True)
        self._thread.start()

    def _work(self):
        while True:
            job = self._q.get()
            if job is _END:
                return
            if self.error is not None or self._stop.is_set():
                continue   # drain
            t0 = time.perf_counter()
            try:
                job()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the producer
                self.error = exc
            self.busy_seconds += time.perf_counter() - t0

    def submit(self, job: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        while True:
            if self.error is not None:
                raise self.error
            try:
                self._q.put(job, timeout=0.05)
                break
            except queue.Full:
                continue
        self.wait_seconds += time.perf_counter() - t0

    def finish(self) -> None:
        """Wait for every job; re-raise the first write error."""
        t0 = time.perf_counter()
        self._q.put(_END)
        self._thread.join()
        self.wait_seconds += time.perf_counter() - t0
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._q.get_nowait()
        self._q.put(_END)
        self._thread.join(timeout=30)


class MemoryMonitor:
    """Peak resident memory of this process during a block (sampled every ``interval`` s), and
    the device's peak bytes in use when the backend reports it (GPU/TPU)."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak_rss = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._thread = None

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _work(self):
        while not self._stop.wait(self.interval):
            self.peak_rss = max(self.peak_rss, self._rss())

    def __enter__(self):
        self.peak_rss = self._rss()
        self._thread = threading.Thread(target=self._work, name="peanut-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, self._rss())

    @staticmethod
    def device_peak() -> int | None:
        try:
            import jax
            stats = jax.devices()[0].memory_stats()
        except Exception:  # noqa: BLE001 - backends without statistics
            return None
        if not stats:
            return None
        return int(stats.get("peak_bytes_in_use", stats.get("bytes_in_use", 0))) or None


# ==================================================================================== metering
class _Meter:
    def __init__(self, name: str, total: int | None, progress: bool, position: int):
        self.name, self.frames, self.inclusive = name, 0, 0.0
        self.upstream: _Meter | None = None
        self.bar = None
        if progress:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=f"{name:>11}", unit="frame", position=position, leave=True,
                            dynamic_ncols=True)

    @property
    def seconds(self) -> float:
        """Time spent in this stage itself (its upstream's time subtracted)."""
        return max(0.0, self.inclusive - (self.upstream.inclusive if self.upstream else 0.0))

    def wrap(self, it: Iterator) -> Iterator:
        it = iter(it)
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                self.inclusive += time.perf_counter() - t0
                return
            self.inclusive += time.perf_counter() - t0
            self.frames += 1
            if self.bar is not None:
                self.bar.update(1)
            yield item

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ==================================================================================== outputs
def check_output(path, overwrite: bool, what: str = "--output", video_only: bool = False,
                 inputs: tuple = ()) -> pathlib.Path:
    """Refuse bad output paths before any compute (:func:`peanut_jax.data.video_io.check_output`)."""
    from peanut_jax.data.video_io import check_output as check
    return check(path, overwrite, what, video_only, inputs)


def has_audio(path) -> bool:
    """True when the container at ``path`` has an audio stream (ffmpeg probe)."""
    from peanut_jax.data.video_io import _ffmpeg_exe
    p = pathlib.Path(path)
    if not p.is_file():
        return False
    r = subprocess.run([_ffmpeg_exe(), "-hide_banner", "-i", str(p)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, errors="replace")
    return any("Stream #" in line and "Audio:" in line for line in r.stderr.splitlines())


def mux_audio(video_path: pathlib.Path, audio_source: pathlib.Path, target: pathlib.Path) -> None:
    """Write ``target``: the video stream of ``video_path`` + the audio of ``audio_source`` (copied;
    re-encoded to AAC when the container cannot hold the original codec)."""
    from peanut_jax.data.video_io import _ffmpeg_exe
    base = [_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(video_path), "-i", str(audio_source),
            "-map", "0:v:0", "-map", "1:a", "-c:v", "copy"]
    tail = ["-movflags", "+faststart"] if target.suffix.lower() in (".mp4", ".mov", ".m4v") else []
    err = ""
    for audio in (["-c:a", "copy"], ["-c:a", "aac", "-b:a", "192k"]):
        r = subprocess.run(base + audio + tail + [str(target)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, errors="replace")
        if r.returncode == 0:
            return
        err = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
    raise ValueError(f"{target}: could not copy the audio of {audio_source}: {err}")


class _Outputs:
    """The writers of one run (main video, frames, side-by-side, overlay), committed together.

    Videos are encoded under hidden temporary names next to their targets; at :meth:`commit` every
    encoder is finished first (and the audio remuxed), then the frame folder is committed and the
    videos are renamed onto their targets, so a failure while encoding leaves none of the outputs.
    """

    def __init__(self, fps: float, in_fps: float, output, frames_out, side_by_side, overlay, overwrite: bool,
                 audio_from: pathlib.Path | None):
        from peanut_jax.data.video_io import VideoWriter
        self.writers: dict[str, Any] = {}
        self.audio_from = audio_from
        self.overwrite = overwrite
        self._moves: list[tuple[str, pathlib.Path, pathlib.Path]] = []   # (key, temporary, target)
        token = uuid.uuid4().hex[:8]
        try:
            for key, target, rate in (("output", output, fps), ("frames", frames_out, fps),
                                      ("side_by_side", side_by_side, fps), ("overlay", overlay, in_fps)):
                if target is None:
                    continue
                t = pathlib.Path(target)
                if t.suffix:   # a video: encoded under a temporary name
                    tmp = t.with_name(f".{t.stem}.{token}.encoding{t.suffix}")
                    self.writers[key] = VideoWriter(tmp, fps=rate, overwrite=False)
                    self._moves.append((key, tmp, t))
                else:          # a frame folder: VideoWriter's own atomic folder commit
                    self.writers[key] = VideoWriter(t, fps=rate, overwrite=overwrite)
        except BaseException:
            self.abort()
            raise

    def commit(self) -> None:
        try:
            for key, _, _ in self._moves:
                self.writers[key].close()
            for key, tmp, target in self._moves:
                if key == "output" and self.audio_from is not None:
                    muxed = tmp.with_name(tmp.name.replace(".encoding", ".mux"))
                    try:
                        mux_audio(tmp, self.audio_from, muxed)
                        os.replace(muxed, tmp)
                    finally:
                        with contextlib.suppress(FileNotFoundError):
                            muxed.unlink()
            for _, _, target in self._moves:
                if target.exists() and not self.overwrite:
                    raise FileExistsError(f"{target} already exists (use --overwrite to replace it)")
            for key, w in self.writers.items():
                if key not in {k for k, _, _ in self._moves}:
                    w.close()
        except BaseException:
            self.abort()
            raise
        for _, tmp, target in self._moves:
            os.replace(tmp, target)

    def abort(self) -> None:
        for w in self.writers.values():
            with contextlib.suppress(Exception):
                w.abort()
        for _, tmp, _ in self._moves:
            for p in (tmp, tmp.with_name(tmp.name.replace(".encoding", ".mux"))):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()


def side_by_side_frame(before: np.ndarray, after: np.ndarray, gap: int = 0) -> np.ndarray:
    """[before resized to ``after``'s size | after] (uint8)."""
    from PIL import Image
    h, w = after.shape[:2]
    if before.shape[:2] != (h, w):
        before = np.asarray(Image.fromarray(before).resize((w, h), Image.BICUBIC))
    parts = [before, after] if not gap else [before, np.zeros((h, gap, 3), np.uint8), after]
    return np.concatenate(parts, axis=1)


# ==================================================================================== chain
@dataclasses.dataclass
class RunSummary:
    input: str
    output: str | None
    frames_in: int
    frames_out: int
    fps_in: float
    fps_out: float
    size_in: tuple
    size_out: tuple
    seconds: float
    stages: list            # [{name, frames, seconds, s_per_frame, weights}]
    compile_seconds: float  # ahead-of-time compilation of the stage shapes (parallel), before streaming
    compiled_shapes: int
    stream_compiles: int    # XLA compilations while streaming (after the warm-up): 0 when every shape was known
    cpu_seconds: float      # CPU time of this process and its ffmpeg children during the run
    read_seconds: float     # main thread waiting for decoded frames
    write_wait_seconds: float  # main thread blocked on the writer (+ final flush / mux)
    encode_seconds: float   # writer thread busy time
    peak_rss_bytes: int
    peak_device_bytes: int | None
    audio: bool
    masks: str | None = None
    outputs: dict = dataclasses.field(default_factory=dict)

    @property
    def s_per_output_frame(self) -> float:
        return self.seconds / max(1, self.frames_out)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["s_per_output_frame"] = self.s_per_output_frame
        return d

    def format(self) -> str:
        lines = [f"{self.input}: {self.frames_in} frames {self.size_in[1]}x{self.size_in[0]} @ {self.fps_in:g} fps "
                 f"-> {self.frames_out} frames {self.size_out[1]}x{self.size_out[0]} (WxH) @ {self.fps_out:g} fps"
                 + (" (+audio)" if self.audio else "")]
        for s in self.stages:
            lines.append(f"  {s['name']:<11} {s['frames']:>6} frames  {s['seconds']:8.2f} s  "
                         f"{1000 * s['s_per_frame']:8.1f} ms/frame" + (f"  [{s['weights']}]" if s.get("weights") else ""))
        if self.compiled_shapes:
            lines.append(f"  {'compile':<11} {self.compiled_shapes:>6} shapes  {self.compile_seconds:8.2f} s "
                         f"(ahead of time, in parallel)")
        if self.stream_compiles:
            lines.append(f"  {'compile':<11} {self.stream_compiles:>6} XLA compilations while streaming")
        lines.append(f"  {'read':<11} {'':>6}         {self.read_seconds:8.2f} s waiting for decoded frames")
        lines.append(f"  {'write':<11} {'':>6}         {self.write_wait_seconds:8.2f} s waiting for the writer "
                     f"(encoding in the background: {self.encode_seconds:.2f} s)")
        mem = f"peak host RSS {self.peak_rss_bytes / 2**20:.0f} MiB"
        if self.peak_device_bytes:
            mem = f"peak device memory {self.peak_device_bytes / 2**20:.0f} MiB, " + mem
        lines.append(f"  total {self.seconds:.2f} s = {1000 * self.s_per_output_frame:.1f} ms per output frame "
                     f"(CPU {self.cpu_seconds:.1f} s); {mem}")
        for k, v in self.outputs.items():
            lines.append(f"  wrote {k}: {v}")
        return "\n".join(lines)


class Chain:
    """An ordered sub-chain of stages (loaded once, reused for every clip of a batch)."""

    def __init__(self, stages: Sequence[Stage], queue_size: int = DEFAULT_QUEUE):
        names = [s.name for s in stages]
        if not stages:
            raise ValueError("no stages to run")
        if sorted(names, key=STAGE_ORDER.index) != names or len(set(names)) != len(names):
            raise ValueError(f"stages must be distinct and in the order {' -> '.join(STAGE_ORDER)}, got {names}")
        self.stages = list(stages)
        self.queue_size = int(queue_size)
        self._compiled = _COMPILED

    @property
    def needs_masks(self) -> bool:
        return any(s.needs_masks for s in self.stages)

    def plan(self, info: StreamInfo) -> list[StreamInfo]:
        """Stream info before every stage and after the last; validates each stage's input."""
        infos = [info]
        for s in self.stages:
            s.check(infos[-1])
            infos.append(s.output_info(infos[-1]))
        return infos

    def warmup(self, info: StreamInfo, workers: int | None = None) -> dict:
        """Compile every jitted shape the stages will use for a clip like ``info``, in parallel
        threads (XLA compiles outside the GIL), instead of one after another as the first frames
        reach each stage.  Shapes warmed before are skipped.  Returns ``{'jobs': n, 'seconds':
        wall}``; a stage whose runner offers no such entry point is compiled at its first call."""
        infos = self.plan(info)
        jobs = []
        for stage, si in zip(self.stages, infos):
            try:
                found = stage.compile_jobs(si)
            except AttributeError:   # a runner without the expected entry point
                found = []
            jobs += [(k, j) for k, j in found if k not in self._compiled]
        t0 = time.perf_counter()
        if jobs:
            workers = workers or min(len(jobs), max(1, os.cpu_count() or 1))
            for k in _run_parallel([j for _, j in jobs], workers):
                self._compiled.add(jobs[k][0])
        return {"jobs": len(jobs), "seconds": time.perf_counter() - t0}

    def run(self, source, output=None, masks: MaskSource | None = None, *, frames_out=None, side_by_side=None,
            overlay=None, overwrite: bool = False, progress: bool = True, copy_audio: bool = True,
            observers: dict[str, Callable[[int, np.ndarray], None]] | None = None,
            output_fps: float | None = None, warmup: bool = True) -> RunSummary:
        """Run the chain on ``source`` (a VideoSource/ArraySource or a path) and write the outputs.

        ``observers``: ``{stage name: fn(index, frame)}`` called with every frame a stage emits
        (the demo measures the erase stage's output this way).  ``warmup``: compile all stage
        shapes in parallel first (:meth:`warmup`).
        """
        if not isinstance(source, (ArraySource,)) and not hasattr(source, "iter_frames"):
            source = open_source(source)
        targets = {"output": output, "frames_out": frames_out, "side_by_side": side_by_side, "overlay": overlay}
        if all(v is None for v in targets.values()):
            raise ValueError("nothing to write: give --output, --frames-out, --side-by-side or --overlay")
        seen = {}
        for what, p in targets.items():
            if p is None:
                continue
            check_output(p, overwrite, f"--{what.replace('_', '-')}", video_only=what in ("side_by_side", "overlay"))
            key = pathlib.Path(p).resolve()
            if key in seen:
                raise ValueError(f"--{what.replace('_', '-')} and --{seen[key].replace('_', '-')} name the same path {p}")
            if isinstance(getattr(source, "path", None), pathlib.Path) and key == source.path.resolve():
                raise ValueError(f"--{what.replace('_', '-')} {p} is the input itself")
            seen[key] = what
        if self.needs_masks and masks is None:
            raise ValueError("the erase stage needs masks: give --masks MASK_DIR")
        if overlay is not None and masks is None:
            raise ValueError("--overlay needs masks (--masks)")
        n = len(source)
        if n < 1:
            raise ValueError(f"{getattr(source, 'path', 'input')}: the video has no frames")
        fps = float(source.fps or 25.0)
        info = StreamInfo(n, source.height, source.width, fps)
        infos = self.plan(info)
        out_info = infos[-1]
        out_fps = float(output_fps or out_info.fps)
        if masks is not None:
            masks.prepare(info)
            if self.needs_masks:
                note_masks(masks)
        audio_src = None
        src_path = getattr(source, "path", None)
        if (copy_audio and output is not None and pathlib.Path(output).suffix and isinstance(src_path, pathlib.Path)
                and src_path.is_file()):
            audio_src = src_path if has_audio(src_path) else None

        meters: list[_Meter] = []
        reader = None
        writer = None
        outs = None
        t_start = time.perf_counter()
        cpu0 = _cpu_seconds()
        warm = {"jobs": 0, "seconds": 0.0}
        with MemoryMonitor() as mem:
            try:
                outs = _Outputs(out_fps, fps, output, frames_out, side_by_side, overlay, overwrite, audio_src)
                frames_it = iter(source)
                items = masks.attach(frames_it) if masks is not None else frames_it
                reader = Prefetcher(items, self.queue_size)   # decoding starts while the stages compile
                if warmup:
                    warm = self.warmup(info)
                compiles0 = backend_compiles()
                writer = WriterThread(self.queue_size)
                read_meter = _Meter("read", n, False, 0)
                kept: dict[int, np.ndarray] = {}       # input frames still needed by the side-by-side view
                overlay_w = outs.writers.get("overlay")

                def tap(it):
                    from peanut_jax.data.masks import overlay_mask
                    for i, item in enumerate(it):
                        frame = item[0] if isinstance(item, tuple) else item
                        if side_by_side is not None:
                            kept[i] = frame
                        if overlay_w is not None:
                            f, m = item
                            writer.submit(lambda f=f, m=m: overlay_w.write(overlay_mask(f, m)))
                        yield item if self.needs_masks else frame

                stream = read_meter.wrap(tap(reader))
                prev = read_meter
                for k, (stage, si) in enumerate(zip(self.stages, infos[1:])):
                    m = _Meter(stage.name, si.num_frames, progress, k)
                    m.upstream = prev
                    meters.append(m)
                    stream = m.wrap(stage(stream, infos[k]))
                    obs = (observers or {}).get(stage.name)
                    if obs is not None:
                        stream = _observed(stream, obs)
                    prev = m
                multi = (out_info.num_frames - 1) / max(1, info.num_frames - 1) if info.num_frames > 1 else 1
                main_w, frames_w, sbs_w = (outs.writers.get(k) for k in ("output", "frames", "side_by_side"))
                count = 0
                for j, frame in enumerate(stream):
                    frame = _u8(frame)
                    if sbs_w is not None:
                        src = min(int(math.floor(j / multi + 1e-9)), info.num_frames - 1) if multi else j
                        before = kept[src]
                        for old in [i for i in kept if i < src]:
                            del kept[old]
                        writer.submit(lambda b=before, a=frame: sbs_w.write(side_by_side_frame(b, a)))
                    if main_w is not None:
                        writer.submit(lambda a=frame: main_w.write(a))
                    if frames_w is not None:
                        writer.submit(lambda a=frame: frames_w.write(a))
                    count += 1
                writer.finish()
                t_fin = time.perf_counter()
                outs.commit()
                writer.wait_seconds += time.perf_counter() - t_fin
            except BaseException:
                if writer is not None:
                    writer.abort()
                if outs is not None:
                    outs.abort()
                raise
            finally:
                if reader is not None:
                    reader.close()
                for m in meters:
                    m.close()
        seconds = time.perf_counter() - t_start
        cpu = _cpu_seconds() - cpu0
        stream_compiles = backend_compiles() - compiles0
        if count != out_info.num_frames:
            # cannot happen with the shipped stages; a custom stage may change counts
            out_info = dataclasses.replace(out_info, num_frames=count)
        stages = [{"name": m.name, "frames": m.frames, "seconds": m.seconds,
                   "s_per_frame": m.seconds / max(1, m.frames), "weights": s.weights}
                  for m, s in zip(meters, self.stages)]
        written = {k: str(v) for k, v in targets.items() if v is not None}
        return RunSummary(
            input=str(getattr(source, "path", "<array>")), output=None if output is None else str(output),
            frames_in=info.num_frames, frames_out=count, fps_in=fps, fps_out=out_fps,
            size_in=(info.height, info.width), size_out=(out_info.height, out_info.width), seconds=seconds,
            stages=stages, compile_seconds=warm["seconds"], compiled_shapes=warm["jobs"],
            stream_compiles=stream_compiles, cpu_seconds=cpu,
            read_seconds=read_meter.inclusive, write_wait_seconds=writer.wait_seconds,
            encode_seconds=writer.busy_seconds, peak_rss_bytes=mem.peak_rss,
            peak_device_bytes=MemoryMonitor.device_peak(), audio=audio_src is not None,
            masks=masks.describe() if masks is not None else None, outputs=written)


def _run_parallel(jobs: Sequence[Callable[[], Any]], workers: int) -> Iterator[int]:
    """Run ``jobs`` in ``workers`` daemon threads; yield the index of each finished job and re-raise
    the first failure.  Daemon threads, so that Ctrl-C does not wait for compilations in flight."""
    todo: queue.Queue = queue.Queue()
    for i in range(len(jobs)):
        todo.put(i)
    done: queue.Queue = queue.Queue()

    def work():
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            try:
                jobs[i]()
                done.put((i, None))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                done.put((i, exc))

    for _ in range(max(1, min(workers, len(jobs)))):
        threading.Thread(target=work, name="peanut-compile", daemon=True).start()
    for _ in range(len(jobs)):
        i, exc = done.get()
        if exc is not None:
            with contextlib.suppress(queue.Empty):
                while True:
                    todo.get_nowait()   # stop the others after their current job
            raise exc
        yield i


def _cpu_seconds() -> float:
    r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


_COMPILES = [0]
_LISTENING = []


def backend_compiles() -> int:
    """XLA backend compilations in this process since the first call (a JAX monitoring listener)."""
    if not _LISTENING:
        import jax
        from jax._src import dispatch

        def count(event, duration, **_):
            if event == dispatch.BACKEND_COMPILE_EVENT:
                _COMPILES[0] += 1

        jax.monitoring.register_event_duration_secs_listener(count)
        _LISTENING.append(count)
    return _COMPILES[0]


# keys of the shapes compiled ahead of time (per runner object; a reused id only means that
# shape is compiled at its first call instead)
_COMPILED: set = set()


def _observed(it, fn):
    for i, item in enumerate(it):
        fn(i, item)
        yield item


# ==================================================================================== building
def parse_stages(spec: str | Sequence[str] | None, upscale: int | None, interpolate: int | None) -> list[str]:
    """Stage names from ``--stages`` (default: erase, plus upscale/interpolate when their factor is given)."""
    if spec is None or spec == "":
        names = ["erase"] + (["upscale"] if upscale else []) + (["interpolate"] if interpolate else [])
    else:
        names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    bad = [s for s in names if s not in STAGE_ORDER]
    if bad:
        raise ValueError(f"--stages: unknown stage {bad[0]!r}; choose from {', '.join(STAGE_ORDER)}")
    if not names:
        raise ValueError("--stages: no stage given")
    if len(set(names)) != len(names):
        raise ValueError(f"--stages: a stage is listed twice ({','.join(names)})")
    return sorted(names, key=STAGE_ORDER.index)


def build_chain(stages: Sequence[str] = ("erase",), checkpoints: dict | None = None, *, upscale: int | None = None,
                interpolate: int | None = None, models: dict | None = None, erase_options: dict | None = None,
                upscale_options: dict | None = None, interpolate_options: dict | None = None,
                progress: bool = True, queue_size: int = DEFAULT_QUEUE) -> Chain:
    """Load the models of ``stages`` and return a :class:`Chain`.

    ``checkpoints``: ``{stage: spec}`` (registry name, official file, exported/orbax folder;
    default :data:`DEFAULT_CHECKPOINTS`).  ``models``: ``{stage: (module, variables[, label])}``
    already in memory (tests, the demo) instead of checkpoints.
    """
    checkpoints = dict(checkpoints or {})
    models = dict(models or {})
    built: list[Stage] = []
    for name in parse_stages(list(stages), upscale, interpolate):
        if name in models:
            module, variables, *label = models[name]
            from peanut_jax.pipeline.common import hashable
            module = hashable(module)
            label = label[0] if label else type(module).__name__
        else:
            module, variables, label = load_stage_model(name, checkpoints.get(name) or DEFAULT_CHECKPOINTS[name],
                                                        progress=progress)
        if name == "erase":
            built.append(EraseStage(module, variables, label, **(erase_options or {})))
        elif name == "upscale":
            built.append(UpscaleStage(module, variables, label, scale=upscale, **(upscale_options or {})))
        else:
            built.append(InterpolateStage(module, variables, label, multi=interpolate or 2,
                                          **(interpolate_options or {})))
    return Chain(built, queue_size=queue_size)


# ==================================================================================== batch
MANIFEST_COLUMNS = ("video", "masks", "output", "side_by_side", "overlay", "frames_out")


def read_manifest(path) -> list[dict]:
    """Rows ``{video, masks, output[, side_by_side, overlay, frames_out]}`` of a CSV (header row) or
    JSON (a list of objects, or ``{"jobs": [...]}``) manifest; relative paths are taken relative to
    the manifest's folder."""
    p = pathlib.Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"manifest not found: {p}")
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(p.read_text())
            rows = data.get("jobs") if isinstance(data, dict) else data
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise ValueError(f"{p}: a JSON manifest must be a list of objects (or {{\"jobs\": [...]}})")
        else:
            with open(p, newline="") as f:
                rows = [dict(r) for r in csv.DictReader(f)]
    except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as err:
        raise ValueError(f"{p}: cannot parse the manifest ({err})") from None
    if not rows:
        raise ValueError(f"{p}: the manifest has no rows")
    out = []
    for i, r in enumerate(rows, start=1):
        r = {str(k).strip().lower().replace("-", "_"): (str(v).strip() if v is not None else "")
             for k, v in r.items() if k is not None}
        extra = sorted(set(r) - set(MANIFEST_COLUMNS))
        if extra:
            raise ValueError(f"{p}: row {i}: unknown column {extra[0]!r} (columns: {', '.join(MANIFEST_COLUMNS)})")
        for col in ("video", "output"):
            if not r.get(col):
                raise ValueError(f"{p}: row {i}: the {col!r} column is empty or missing")
        out.append({k: (str((p.parent / v)) if v and not os.path.isabs(v) else v) or None
                    for k, v in ((c, r.get(c, "")) for c in MANIFEST_COLUMNS)})
    outs = [pathlib.Path(r["output"]).resolve() for r in out]
    if len(set(outs)) != len(outs):
        raise ValueError(f"{p}: two rows write the same output")
    return out


def run_manifest(chain: Chain, manifest, *, overwrite: bool = False, progress: bool = True, fps: float | None = None,
                 resize_masks: bool = False, log=print) -> list[RunSummary]:
    """Run every row of a manifest with one loaded chain.  Inputs and outputs of all rows are
    checked before the first row runs; a failing row stops the batch (rows done stay written)."""
    rows = read_manifest(manifest)
    for i, r in enumerate(rows, start=1):
        try:
            if not pathlib.Path(r["video"]).exists():
                raise FileNotFoundError(f"video not found: {r['video']}")
            if chain.needs_masks and not r.get("masks"):
                raise ValueError("the 'masks' column is empty (the erase stage needs masks)")
            if r.get("masks") and not pathlib.Path(r["masks"]).exists():
                raise FileNotFoundError(f"mask path not found: {r['masks']}")
            for col in ("output", "side_by_side", "overlay", "frames_out"):
                if r.get(col):
                    check_output(r[col], overwrite, col, video_only=col in ("side_by_side", "overlay"))
        except (ValueError, OSError) as err:
            raise type(err)(f"{manifest}: row {i}: {err}") from None
    results = []
    for i, r in enumerate(rows, start=1):
        try:
            src = open_source(r["video"], fps=fps)
            masks = FolderMasks(r["masks"], resize=resize_masks) if r.get("masks") else None
            s = chain.run(src, r["output"], masks if chain.needs_masks or r.get("overlay") else None,
                          frames_out=r.get("frames_out"), side_by_side=r.get("side_by_side"),
                          overlay=r.get("overlay"), overwrite=overwrite, progress=progress)
        except (ValueError, OSError) as err:
            raise type(err)(f"{manifest}: row {i} ({r['video']}): {err}") from None
        results.append(s)
        if log:
            log(f"[{i}/{len(rows)}] " + s.format())
    return results


# ==================================================================================== CLI
def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="the end-to-end chain erase -> upscale -> interpolate (default command)",
        description="Run any sub-chain of erase (E2FGVI) -> upscale (BasicVSR++) -> interpolate (RIFE), streaming.")
    io = p.add_argument_group("input / output")
    io.add_argument("--input", help="video file or frame folder")
    io.add_argument("--masks", help="mask folder (one PNG per frame, sorted by name) or a single mask image")
    io.add_argument("--output", help="output video (.mp4, ...) or a folder name for PNG frames")
    io.add_argument("--manifest", help="batch mode: CSV/JSON of video, masks, output rows")
    io.add_argument("--frames-out", help="also write the final frames as PNGs into this folder")
    io.add_argument("--side-by-side", help="also write a before/after video (input | result)")
    io.add_argument("--overlay", help="also write the input with the masks tinted (mask check)")
    io.add_argument("--fps", type=float, default=None, help="frame rate of frame-folder inputs (default 25)")
    io.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    io.add_argument("--no-audio", action="store_true", help="do not copy the source's audio track")
    st = p.add_argument_group("stages")
    st.add_argument("--stages", default=None,
                    help="comma-separated sub-chain of erase,upscale,interpolate (default: erase, plus upscale/"
                         "interpolate when --upscale/--interpolate is given)")
    st.add_argument("--upscale", type=int, default=None, metavar="S", help="super-resolution factor (e.g. 4)")
    st.add_argument("--interpolate", type=int, default=None, metavar="M", help="frame-rate factor (e.g. 2)")
    for stage in STAGE_ORDER:
        st.add_argument(f"--checkpoint-{stage}", default=None, metavar="SPEC",
                        help=f"{stage} weights: registry name (default {DEFAULT_CHECKPOINTS[stage]}), "
                             "official checkpoint file, or exported/orbax folder")
    st.add_argument("--resize-masks", action="store_true", help="resize masks of another size (nearest)")
    st.add_argument("--erase-mode", choices=_erase.MODES, default="streaming",
                    help="erase: 'streaming' (bounded reference set, flat memory; default) or 'official' (test.py's "
                         "reference set: every 10th frame of the whole clip, held in memory)")
    st.add_argument("--neighbor-stride", type=int, default=5, help="erase: local window step")
    st.add_argument("--ref-length", type=int, default=10, help="erase: reference frame grid step")
    st.add_argument("--num-ref", type=int, default=-1, help="erase: -1 = grid frames (see --erase-mode), k > 0 = "
                                                            "the official windowed rule")
    st.add_argument("--stream-refs", type=int, default=_erase.DEFAULT_STREAM_REFS,
                    help="erase (streaming): reference frames per window")
    st.add_argument("--erase-size", default=None, metavar="HxW",
                    help="erase with e2fgvi_hq: processing size (default: the native size)")
    st.add_argument("--chunk", type=int, default=16, help="upscale: frames per streaming chunk")
    st.add_argument("--overlap", type=int, default=8, help="upscale: context frames on each side of a chunk")
    st.add_argument("--rife-batch", type=int, default=4, help="interpolate: frame pairs per jitted call")
    st.add_argument("--no-scene-detect", action="store_true", help="interpolate: morph across scene cuts too")
    p.add_argument("--demo", action="store_true",
                   help="run the full chain on the bundled synthetic clip with the bundled (or cached official) "
                        "weights and print PSNR/SSIM of the erased region and Ewarp")
    p.add_argument("--demo-weights", choices=("auto", "bundled"), default="auto",
                   help="demo: 'auto' uses official weights from the $PEANUT_HOME cache when present")
    p.add_argument("--summary-json", help="write the run summary (or the demo metrics) to this JSON file")
    p.add_argument("--queue", type=int, default=DEFAULT_QUEUE, help="frames buffered by the reader/writer threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_main)


def _main(args) -> int:
    progress = not args.no_progress and sys.stderr.isatty()
    if args.demo:
        from peanut_jax.pipeline import demo
        return demo.main_from_args(args)
    if args.manifest and (args.input or args.output):
        raise ValueError("--manifest replaces --input/--output; give one or the other")
    if not args.manifest and not args.input:
        raise ValueError("--input is required (or --manifest for batch mode, or --demo)")
    for opt in ("upscale", "interpolate"):
        v = getattr(args, opt)
        if v is not None and v < 1:
            raise ValueError(f"--{opt} must be >= 1, got {v}")
    stages = parse_stages(args.stages, args.upscale, args.interpolate)
    for opt in ("upscale", "interpolate"):
        if getattr(args, opt) is not None and opt not in stages:
            raise ValueError(f"--{opt} {getattr(args, opt)} given but the {opt} stage is not in --stages "
                             f"{','.join(stages)}")
    if "erase" not in stages and args.masks and not args.overlay:
        raise ValueError("--masks given but the erase stage is not in --stages")
    if not args.manifest:
        if args.output is None and not (args.frames_out or args.side_by_side or args.overlay):
            raise ValueError("--output is required")
        if "erase" in stages and not args.masks:
            raise ValueError("the erase stage needs --masks MASK_DIR (or drop it with --stages)")
        # cheap input/output checks before the (slow) model loading
        for what in ("output", "frames_out", "side_by_side", "overlay"):
            v = getattr(args, what)
            if v is not None:
                check_output(v, args.overwrite, f"--{what.replace('_', '-')}",
                             video_only=what in ("side_by_side", "overlay"))
        source = open_source(args.input, fps=args.fps)
        masks = FolderMasks(args.masks, resize=args.resize_masks) if args.masks else None
        if masks is not None:
            masks.prepare(StreamInfo(len(source), source.height, source.width, float(source.fps or 25.0)))
            if "erase" in stages:
                note_masks(masks)
    ckpts = {s: getattr(args, f"checkpoint_{s}") for s in STAGE_ORDER}
    enable_compilation_cache()
    erase_options = dict(config=_erase.EraseConfig(mode=args.erase_mode, neighbor_stride=args.neighbor_stride,
                                                   ref_length=args.ref_length, num_ref=args.num_ref,
                                                   stream_refs=args.stream_refs),
                         size=_erase._parse_size(args.erase_size, "--erase-size"))
    chain = build_chain(stages, ckpts, upscale=args.upscale, interpolate=args.interpolate,
                        erase_options=erase_options, upscale_options=dict(chunk=args.chunk or None, overlap=args.overlap),
                        interpolate_options=dict(batch_size=args.rife_batch, scene_detect=not args.no_scene_detect),
                        progress=progress, queue_size=args.queue)
    if args.manifest:
        results = run_manifest(chain, args.manifest, overwrite=args.overwrite, progress=progress, fps=args.fps,
                               resize_masks=args.resize_masks)
        summary = {"clips": [r.as_dict() for r in results]}
    else:
        s = chain.run(source, args.output, masks, frames_out=args.frames_out, side_by_side=args.side_by_side,
                      overlay=args.overlay, overwrite=args.overwrite, progress=progress, copy_audio=not args.no_audio)
        print(s.format())
        summary = s.as_dict()
    if args.summary_json:
        write_json(args.summary_json, summary)
    return 0


def write_json(path, obj) -> None:
    p = pathlib.Path(path)
    tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    os.replace(tmp, p)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (tuple, pathlib.Path)):
        return list(o) if isinstance(o, tuple) else str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
