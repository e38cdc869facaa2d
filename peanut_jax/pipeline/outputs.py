"""Where a run's frames go: atomic writers (main video, frame folder, side-by-side, mask overlay),
the background writer thread, the source's audio track, and JSON summaries.

Every output is encoded under a hidden temporary name and renamed onto its target only when the
whole run succeeded, so an error, a full disk or Ctrl-C leaves no partial file under a final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import queue
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["check_output", "has_audio", "mux_audio", "Outputs", "side_by_side_frame", "WriterThread", "write_json"]

DEFAULT_QUEUE = 8
_END = object()


def check_output(
    path, overwrite: bool, what: str = "--output", video_only: bool = False, inputs: tuple = ()
) -> pathlib.Path:
    """Refuse bad output paths before any compute (:func:`peanut_jax.data.video_io.check_output`)."""
    from peanut_jax.data.video_io import check_output as check

    return check(path, overwrite, what, video_only, inputs)


def has_audio(path) -> bool:
    """True when the container at ``path`` has an audio stream (ffmpeg probe)."""
    from peanut_jax.data.video_io import ffmpeg_exe

    p = pathlib.Path(path)
    if not p.is_file():
        return False
    r = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(p)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    return any("Stream #" in line and "Audio:" in line for line in r.stderr.splitlines())


def mux_audio(video_path: pathlib.Path, audio_source: pathlib.Path, target: pathlib.Path) -> None:
    """Write ``target``: the video stream of ``video_path`` + the audio of ``audio_source`` (copied;
    re-encoded to AAC when the container cannot hold the original codec)."""
    from peanut_jax.data.video_io import ffmpeg_exe

    base = [
        ffmpeg_exe(),
        "-y",
        "-loglevel",
        "error",
        "-i",
        str(video_path),
        "-i",
        str(audio_source),
        "-map",
        "0:v:0",
        "-map",
        "1:a",
        "-c:v",
        "copy",
    ]
    tail = ["-movflags", "+faststart"] if target.suffix.lower() in (".mp4", ".mov", ".m4v") else []
    err = ""
    for audio in (["-c:a", "copy"], ["-c:a", "aac", "-b:a", "192k"]):
        r = subprocess.run(
            base + audio + tail + [str(target)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        if r.returncode == 0:
            return
        err = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
    raise ValueError(f"{target}: could not copy the audio of {audio_source}: {err}")


class Outputs:
    """The writers of one run (main video, frames, side-by-side, overlay), committed together.

    Videos are encoded under hidden temporary names next to their targets; at :meth:`commit` every
    encoder is finished first (and the audio remuxed), then the frame folder is committed and the
    videos are renamed onto their targets, so a failure while encoding leaves none of the outputs.
    """

    def __init__(
        self,
        fps: float,
        in_fps: float,
        output,
        frames_out,
        side_by_side,
        overlay,
        overwrite: bool,
        audio_from: pathlib.Path | None,
    ):
        from peanut_jax.data.video_io import VideoWriter

        self.writers: dict[str, Any] = {}
        self.audio_from = audio_from
        self.overwrite = overwrite
        self._moves: list[tuple[str, pathlib.Path, pathlib.Path]] = []  # (key, temporary, target)
        token = uuid.uuid4().hex[:8]
        try:
            for key, target, rate in (
                ("output", output, fps),
                ("frames", frames_out, fps),
                ("side_by_side", side_by_side, fps),
                ("overlay", overlay, in_fps),
            ):
                if target is None:
                    continue
                t = pathlib.Path(target)
                if t.suffix:  # a video: encoded under a temporary name
                    tmp = t.with_name(f".{t.stem}.{token}.encoding{t.suffix}")
                    self.writers[key] = VideoWriter(tmp, fps=rate, overwrite=False)
                    self._moves.append((key, tmp, t))
                else:  # a frame folder: VideoWriter's own atomic folder commit
                    self.writers[key] = VideoWriter(t, fps=rate, overwrite=overwrite)
        except BaseException:
            self.abort()
            raise

    def commit(self) -> None:
        try:
            for key, _, _ in self._moves:
                self.writers[key].close()
            for key, tmp, _ in self._moves:
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


class WriterThread:
    """Run write jobs (callables) in order in a background thread, through a bounded queue."""

    def __init__(self, maxsize: int = DEFAULT_QUEUE):
        self._q: queue.Queue = queue.Queue(maxsize=max(1, maxsize))
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self.busy_seconds = 0.0
        self.wait_seconds = 0.0  # time the producer was blocked (back-pressure)
        self._thread = threading.Thread(target=self._work, name="peanut-writer", daemon=True)
        self._thread.start()

    def _work(self):
        while True:
            job = self._q.get()
            if job is _END:
                return
            if self.error is not None or self._stop.is_set():
                continue  # drain
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
