"""What a run measures: memory peaks, per-stage meters, compile counts and notices, and the run summary.

Kept apart from the chain so that :mod:`peanut_jax.pipeline.chain` reads as the streaming idea only;
everything here observes a run without changing its outputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = [
    "MemoryMonitor",
    "Meter",
    "RunSummary",
    "run_parallel",
    "cpu_seconds",
    "backend_compiles",
    "announce_compiles",
    "compile_label",
    "key_label",
    "COMPILED",
]


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


class Meter:
    def __init__(self, name: str, total: int | None, progress: bool, position: int):
        self.name, self.frames, self.inclusive = name, 0, 0.0
        self.upstream: Meter | None = None
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, desc=f"{name:>11}", unit="frame", position=position, leave=True, dynamic_ncols=True
            )

    @property
    def seconds(self) -> float:
        """Time spent in this stage itself (its upstream's time subtracted)."""
        return max(0.0, self.inclusive - (self.upstream.inclusive if self.upstream else 0.0))

    def wrap(self, it: Iterator) -> Iterator:
        it = iter(it)
        while True:
            t0 = time.perf_counter()
            try:
                with compile_label(self.name):  # names a compilation the stage triggers itself
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
    stages: list  # [{name, frames, seconds, s_per_frame, weights}]
    compile_seconds: float  # ahead-of-time compilation of the stage shapes (parallel), before streaming
    compiled_shapes: int
    stream_compiles: int  # XLA compilations while streaming (after the warm-up): 0 when every shape was known
    cpu_seconds: float  # CPU time of this process and its ffmpeg children during the run
    read_seconds: float  # main thread waiting for decoded frames
    write_wait_seconds: float  # main thread blocked on the writer (+ final flush / mux)
    encode_seconds: float  # writer thread busy time
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
        lines = [
            f"{self.input}: {self.frames_in} frames {self.size_in[1]}x{self.size_in[0]} @ {self.fps_in:g} fps "
            f"-> {self.frames_out} frames {self.size_out[1]}x{self.size_out[0]} (WxH) @ {self.fps_out:g} fps"
            + (" (+audio)" if self.audio else "")
        ]
        for s in self.stages:
            lines.append(
                f"  {s['name']:<11} {s['frames']:>6} frames  {s['seconds']:8.2f} s  "
                f"{1000 * s['s_per_frame']:8.1f} ms/frame" + (f"  [{s['weights']}]" if s.get("weights") else "")
            )
        if self.compiled_shapes:
            lines.append(
                f"  {'compile':<11} {self.compiled_shapes:>6} shapes  {self.compile_seconds:8.2f} s "
                f"(ahead of time, in parallel)"
            )
        if self.stream_compiles:
            lines.append(f"  {'compile':<11} {self.stream_compiles:>6} XLA compilations while streaming")
        lines.append(f"  {'read':<11} {'':>6}         {self.read_seconds:8.2f} s waiting for decoded frames")
        lines.append(
            f"  {'write':<11} {'':>6}         {self.write_wait_seconds:8.2f} s waiting for the writer "
            f"(encoding in the background: {self.encode_seconds:.2f} s)"
        )
        mem = f"peak host RSS {self.peak_rss_bytes / 2**20:.0f} MiB"
        if self.peak_device_bytes:
            mem = f"peak device memory {self.peak_device_bytes / 2**20:.0f} MiB, " + mem
        lines.append(
            f"  total {self.seconds:.2f} s = {1000 * self.s_per_output_frame:.1f} ms per output frame "
            f"(CPU {self.cpu_seconds:.1f} s); {mem}"
        )
        for k, v in self.outputs.items():
            lines.append(f"  wrote {k}: {v}")
        return "\n".join(lines)


def run_parallel(jobs: Sequence[Callable[[], Any]], workers: int, labels: Sequence[str] | None = None) -> Iterator[int]:
    """Run ``jobs`` in ``workers`` daemon threads; yield the index of each finished job and re-raise
    the first failure.  Daemon threads, so that Ctrl-C does not wait for compilations in flight.
    ``labels``: what each job compiles (:func:`compile_label`), for the compile notices."""
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
                with compile_label(labels[i] if labels is not None else None):
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
                    todo.get_nowait()  # stop the others after their current job
            raise exc
        yield i


def cpu_seconds() -> float:
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


# ------------------------------------------------------------------------------- compile notices
_LABEL = threading.local()


@contextlib.contextmanager
def compile_label(label: str | None):
    """Name what this thread compiles inside the block (the compile notices say it); nests."""
    old = getattr(_LABEL, "text", None)
    _LABEL.text = label if label is not None else old
    try:
        yield
    finally:
        _LABEL.text = old


def key_label(key: tuple) -> str:
    """A readable label of a compiled-shape key of :meth:`Stage.compile_jobs`: its name and sizes
    (object ids and flags dropped), e.g. ``('erase', id, 16, 240, 432, 11)`` -> ``erase (16, 240, 432, 11)``."""
    sizes = [str(v) for v in key[1:] if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**20]
    return f"{key[0]} ({', '.join(sizes)})" if sizes else str(key[0])


_NOTICES: dict = {}


def announce_compiles(cache_dir=None, *, stream=None, min_seconds: float = 1.0, enabled: bool = True) -> None:
    """Tell the user, on stderr, what is being compiled while it is: a compilation of a jitted
    function (lowering + XLA compile, or a persistent-cache load) still running after
    ``min_seconds`` prints ``compiling <what> (first run only; cached in <dir>) ...``, and
    ``compiled <what> in N s`` (or ``loaded <what> from the cache in N s``) when it is done.  Whole
    lines, so that parallel compilations, XLA's own warnings or a Ctrl-C message never run into an
    unfinished one.  Quick compiles and cache loads stay silent; a function already compiled for a
    shape is not compiled again, so each compiled function gets one notice.

    ``<what>`` is the :func:`compile_label` of the compiling thread (the stage and its shape) and the
    function's name.  Process-wide (JAX monitoring listeners, installed once); a later call updates
    ``cache_dir`` (None: the cache is off), ``stream`` (default ``sys.stderr`` at print time) and
    ``min_seconds``; ``enabled=False`` silences it."""
    _NOTICES.update(cache_dir=cache_dir, stream=stream, min_seconds=float(min_seconds), enabled=enabled)
    if "lock" in _NOTICES:
        return
    import jax
    from jax._src import dispatch

    lock = _NOTICES["lock"] = threading.Lock()
    local = threading.local()

    def write(line: str) -> None:
        out = _NOTICES["stream"] or sys.stderr
        out.write(line + "\n")
        out.flush()

    def start_line(job: dict) -> None:
        with lock:
            if job["done"] or job["said"]:
                return
            job["said"] = True
            where = _NOTICES["cache_dir"]
            note = f"first run only; cached in {where}" if where else "the compile cache is off"
            write(f"compiling {job['what']} ({note}) ...")

    def end_line(job: dict) -> None:
        with lock:
            job["done"] = True
            if job["timer"] is not None:
                job["timer"].cancel()
            if job["said"]:
                seconds = time.perf_counter() - job["t0"]
                how = f"loaded {job['what']} from the cache" if job["hit"] else f"compiled {job['what']}"
                write(f"{how} in {seconds:.1f} s")

    def on_start(event, value, fun_name="", **_):
        if event != dispatch.JAXPR_TO_MLIR_MODULE_EVENT or not _NOTICES["enabled"]:
            return
        fun = fun_name[4:-1] if fun_name.startswith("jit(") else fun_name
        fun = "" if fun.startswith("<") else fun.lstrip("_")
        label = getattr(_LABEL, "text", None)
        what = f"{label}: {fun}" if label and fun else (label or fun or "a function")
        job = {"what": what, "t0": time.perf_counter(), "said": False, "done": False, "hit": False, "timer": None}
        stale = getattr(local, "job", None)  # a lowering that was never compiled (``.lower()`` alone)
        if stale is not None:
            with lock:
                stale["done"] = True
                if stale["timer"] is not None:
                    stale["timer"].cancel()
        local.job = job
        if _NOTICES["min_seconds"] <= 0:
            start_line(job)
        else:
            job["timer"] = threading.Timer(_NOTICES["min_seconds"], start_line, (job,))
            job["timer"].daemon = True
            job["timer"].start()

    def on_event(event, **_):
        job = getattr(local, "job", None)
        if job is not None and event == "/jax/compilation_cache/cache_hits":
            job["hit"] = True

    def on_duration(event, duration, **_):
        job = getattr(local, "job", None)
        if job is not None and event == dispatch.BACKEND_COMPILE_EVENT:
            local.job = None
            end_line(job)

    jax.monitoring.register_scalar_listener(on_start)
    jax.monitoring.register_event_listener(on_event)
    jax.monitoring.register_event_duration_secs_listener(on_duration)


# keys of the shapes compiled ahead of time (per runner object; a reused id only means that
# shape is compiled at its first call instead)
COMPILED: set = set()
