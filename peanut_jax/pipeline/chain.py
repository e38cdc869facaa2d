"""The chain: ``stream = stage(stream, info)`` for each stage, frames read and written in threads.

A :class:`Stage` is a generator from the incoming stream of :class:`~peanut_jax.pipeline.sources.Frame`
records to its output records, each yielded as soon as it is final, so the host holds a bounded
number of frames whatever the clip length.  :class:`Chain` plans the stream (every stage validates
its input before any compute), compiles every stage's shapes in parallel, then pulls frames from a
reader thread through the stages into a writer thread.  A single-stage command is a chain of one
stage, so validation, I/O, progress and atomic output have one implementation.
"""

from __future__ import annotations

import math
import os
import pathlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from peanut_jax.data.prefetch import Prefetcher
from peanut_jax.pipeline.outputs import (
    DEFAULT_QUEUE,
    Outputs,
    WriterThread,
    check_output,
    has_audio,
    side_by_side_frame,
)
from peanut_jax.pipeline.sources import Frame, MaskSource, StreamInfo, note_masks, open_source
from peanut_jax.pipeline.telemetry import (
    COMPILED,
    MemoryMonitor,
    Meter,
    RunSummary,
    backend_compiles,
    cpu_seconds,
    key_label,
    run_parallel,
)

__all__ = ["STAGE_ORDER", "Stage", "Chain", "Frame", "StreamInfo"]

STAGE_ORDER = ("erase", "upscale", "interpolate")
_TARGETS = ("output", "frames_out", "side_by_side", "overlay")


class Stage:
    """One link of the chain.

    ``check(info)`` refuses inputs the stage cannot take (called before any compute),
    ``output_info(info)`` describes what it emits, ``compile_jobs(info)`` lists ``[(key, job)]``
    (``job()`` compiles one jitted shape the stage will use; :meth:`Chain.warmup` runs them in
    parallel) and ``__call__(frames, info)`` maps the incoming :class:`Frame` records (with masks
    for a stage with ``needs_masks``) to output records, each yielded as soon as it is final.
    """

    name = "stage"
    needs_masks = False
    weights = ""

    def output_info(self, info: StreamInfo) -> StreamInfo:
        return info

    def check(self, info: StreamInfo) -> None:
        """Raise ValueError for inputs this stage cannot take."""

    def compile_jobs(self, info: StreamInfo) -> list[tuple[tuple, Callable[[], Any]]]:
        return []

    def notes(self, info: StreamInfo) -> list[str]:
        """Lines for the user about this input (printed once per run, before streaming)."""
        return []

    def __call__(self, frames: Iterator[Frame], info: StreamInfo) -> Iterator[Frame]:
        raise NotImplementedError


class Chain:
    """An ordered sub-chain of stages (loaded once, reused for every clip of a batch)."""

    def __init__(self, stages: Sequence[Stage], queue_size: int = DEFAULT_QUEUE):
        names = [s.name for s in stages]
        if not stages:
            raise ValueError("no stages to run")
        order = [n for n in STAGE_ORDER if n in names] + [n for n in names if n not in STAGE_ORDER]
        if order != names or len(set(names)) != len(names):
            raise ValueError(f"stages must be distinct and in the order {' -> '.join(STAGE_ORDER)}, got {names}")
        self.stages = list(stages)
        self.queue_size = int(queue_size)
        self._compiled = COMPILED

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
        """Compile every jitted shape the stages will use for a clip like ``info`` in parallel
        threads (XLA compiles outside the GIL); shapes warmed before are skipped.
        Returns ``{'jobs': n, 'seconds': wall}``."""
        jobs = []
        for stage, si in zip(self.stages, self.plan(info)):
            try:
                found = stage.compile_jobs(si)
            except AttributeError:  # a runner without the expected entry point: compiled at its first call
                found = []
            jobs += [(k, j) for k, j in found if k not in self._compiled]
        t0 = time.perf_counter()
        if jobs:
            workers = workers or min(len(jobs), max(1, os.cpu_count() or 1))
            for k in run_parallel([j for _, j in jobs], workers, labels=[key_label(k) for k, _ in jobs]):
                self._compiled.add(jobs[k][0])
        return {"jobs": len(jobs), "seconds": time.perf_counter() - t0}

    def stream(
        self,
        frames: Iterator[Frame],
        infos: Sequence[StreamInfo],
        meters: list[Meter],
        progress: bool = False,
        observers: dict | None = None,
    ) -> Iterator[Frame]:
        """The chain itself: every stage consumes the stream of the one before it."""
        prev = meters[-1] if meters else None
        for k, stage in enumerate(self.stages):
            meter = Meter(stage.name, infos[k + 1].num_frames, progress, k)
            meter.upstream = prev
            meters.append(meter)
            frames = meter.wrap(stage(frames, infos[k]))
            if (observers or {}).get(stage.name) is not None:
                frames = _observed(frames, observers[stage.name])
            prev = meter
        return frames

    def run(
        self,
        source,
        output=None,
        masks: MaskSource | None = None,
        *,
        frames_out=None,
        side_by_side=None,
        overlay=None,
        overwrite: bool = False,
        progress: bool = True,
        copy_audio: bool = True,
        observers: dict[str, Callable[[int, np.ndarray], None]] | None = None,
        output_fps: float | None = None,
        warmup: bool = True,
    ) -> RunSummary:
        """Run the chain on ``source`` (a VideoSource/ArraySource or a path) and write the outputs.

        ``observers``: ``{stage name: fn(index, image)}`` called with every frame a stage emits
        (the demo measures the erase stage's output this way).  ``warmup``: compile all stage
        shapes in parallel first (:meth:`warmup`).
        """
        if not hasattr(source, "iter_frames") and not hasattr(source, "frames"):
            source = open_source(source)
        targets = dict(zip(_TARGETS, (output, frames_out, side_by_side, overlay)))
        self._check_targets(targets, source, overwrite, masks)
        n = len(source)
        if n < 1:
            raise ValueError(f"{getattr(source, 'path', 'input')}: the video has no frames")
        info = StreamInfo(n, source.height, source.width, float(source.fps or 25.0))
        infos = self.plan(info)
        out_fps = float(output_fps or infos[-1].fps)
        if masks is not None:
            masks.prepare(info)
            if self.needs_masks:
                note_masks(masks)
        for stage, si in zip(self.stages, infos):
            for line in stage.notes(si) if hasattr(stage, "notes") else []:
                print(line, file=sys.stderr)
        src_path = getattr(source, "path", None)
        audio_src = None
        if (
            copy_audio
            and output is not None
            and pathlib.Path(output).suffix
            and isinstance(src_path, pathlib.Path)
            and src_path.is_file()
            and has_audio(src_path)
        ):
            audio_src = src_path
        t_start, cpu0 = time.perf_counter(), cpu_seconds()
        with MemoryMonitor() as mem:
            r = self._stream_to_outputs(
                source, masks, infos, targets, out_fps, overwrite, audio_src, progress, observers, warmup
            )
        stages = [
            {
                "name": m.name,
                "frames": m.frames,
                "seconds": m.seconds,
                "s_per_frame": m.seconds / max(1, m.frames),
                "weights": s.weights,
            }
            for m, s in zip(r["meters"], self.stages)
        ]
        return RunSummary(
            input=str(getattr(source, "path", "<array>")),
            output=None if output is None else str(output),
            frames_in=n,
            frames_out=r["count"],
            fps_in=info.fps,
            fps_out=out_fps,
            size_in=(info.height, info.width),
            size_out=(infos[-1].height, infos[-1].width),
            seconds=time.perf_counter() - t_start,
            stages=stages,
            compile_seconds=r["warm"]["seconds"],
            compiled_shapes=r["warm"]["jobs"],
            stream_compiles=backend_compiles() - r["compiles0"],
            cpu_seconds=cpu_seconds() - cpu0,
            read_seconds=r["read"].inclusive,
            write_wait_seconds=r["writer"].wait_seconds,
            encode_seconds=r["writer"].busy_seconds,
            peak_rss_bytes=mem.peak_rss,
            peak_device_bytes=MemoryMonitor.device_peak(),
            audio=audio_src is not None,
            masks=masks.describe() if masks is not None else None,
            outputs={k: str(v) for k, v in targets.items() if v is not None},
        )

    def _check_targets(self, targets: dict, source, overwrite: bool, masks) -> None:
        if all(v is None for v in targets.values()):
            raise ValueError("nothing to write: give --output, --frames-out, --side-by-side or --overlay")
        seen: dict = {}
        for what, p in targets.items():
            if p is None:
                continue
            flag = f"--{what.replace('_', '-')}"
            check_output(p, overwrite, flag, video_only=what in ("side_by_side", "overlay"))
            key = pathlib.Path(p).resolve()
            if key in seen:
                raise ValueError(f"{flag} and --{seen[key].replace('_', '-')} name the same path {p}")
            if isinstance(getattr(source, "path", None), pathlib.Path) and key == source.path.resolve():
                raise ValueError(f"{flag} {p} is the input itself")
            seen[key] = what
        if self.needs_masks and masks is None:
            raise ValueError("the erase stage needs masks: give --masks MASK_DIR")
        if targets["overlay"] is not None and masks is None:
            raise ValueError("--overlay needs masks (--masks)")

    def _stream_to_outputs(
        self, source, masks, infos, targets, out_fps, overwrite, audio_src, progress, observers, warmup
    ) -> dict:
        """Reader thread -> stages -> writer thread; every output committed together at the end."""
        info, meters, reader, writer, outs = infos[0], [], None, None, None
        try:
            outs = Outputs(out_fps, info.fps, *targets.values(), overwrite, audio_src)
            frames = iter(source)
            pairs = masks.attach(frames) if masks is not None else ((f, None) for f in frames)
            reader = Prefetcher((Frame(f, m, i) for i, (f, m) in enumerate(pairs)), self.queue_size)
            warm = self.warmup(info) if warmup else {"jobs": 0, "seconds": 0.0}  # decoding runs meanwhile
            compiles0 = backend_compiles()
            writer = WriterThread(self.queue_size)
            kept: dict[int, np.ndarray] = {}  # input frames still needed by the side-by-side view
            read = Meter("read", info.num_frames, False, 0)
            stream = self.stream(
                read.wrap(_tap(reader, kept, targets["side_by_side"] is not None, outs.writers.get("overlay"), writer)),
                infos,
                meters,
                progress,
                observers,
            )
            count = _write(stream, outs, writer, kept, info, infos[-1])
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
        return {"meters": meters, "count": count, "warm": warm, "compiles0": compiles0, "read": read, "writer": writer}


def _tap(frames: Iterator[Frame], kept: dict, keep: bool, overlay_w, writer: WriterThread) -> Iterator[Frame]:
    """Input frames on their way in: kept for the side-by-side view, tinted into the overlay video."""
    from peanut_jax.data.masks import overlay_mask

    for fr in frames:
        if keep:
            kept[fr.index] = fr.image
        if overlay_w is not None:
            writer.submit(lambda f=fr.image, m=fr.mask: overlay_w.write(overlay_mask(f, m)))
        yield fr


def _write(
    stream: Iterator[Frame], outs: Outputs, writer: WriterThread, kept: dict, info: StreamInfo, out_info: StreamInfo
) -> int:
    """Hand every final frame to the writer thread; returns the number of frames written."""
    multi = (out_info.num_frames - 1) / max(1, info.num_frames - 1) if info.num_frames > 1 else 1
    main_w, frames_w, sbs_w = (outs.writers.get(k) for k in ("output", "frames", "side_by_side"))
    count = 0
    for j, fr in enumerate(stream):
        frame = _u8(fr.image)
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
    return count


def _u8(frame) -> np.ndarray:
    a = np.asarray(frame)
    if a.dtype == np.uint8:
        return a
    return np.clip(np.round(a.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def _observed(frames: Iterator[Frame], fn) -> Iterator[Frame]:
    for i, fr in enumerate(frames):
        fn(i, fr.image)
        yield fr
