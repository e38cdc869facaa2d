"""Helpers shared by the stages and the commands: bundled assets, the persistent compilation cache
(the notices while a compilation runs are in :mod:`peanut_jax.pipeline.telemetry`), and a clean Ctrl-C.
(Loading and exporting weights live in :mod:`peanut_jax.checkpoints`.)"""

from __future__ import annotations

import os
import pathlib
import sys


def bundled_asset(*parts) -> pathlib.Path:
    """Path of a file shipped inside the package (demo weights)."""
    return pathlib.Path(__file__).resolve().parents[1].joinpath("assets", *parts)


# ------------------------------------------------------------------------------------ compilation
def enable_compilation_cache(path=None, *, off: bool = False) -> pathlib.Path | None:
    """Turn on JAX's persistent compilation cache so that later runs (of any process) load the
    compiled stage programs instead of compiling them again.  ``path``: the cache folder; default
    ``$PEANUT_XLA_CACHE``, else ``$PEANUT_HOME/xla_cache``; ``PEANUT_XLA_CACHE=0`` turns it off.
    ``off=True`` (the ``--no-compile-cache`` flag of ``infer.py`` and ``train.py``) sets
    ``PEANUT_XLA_CACHE=0`` for this process, so that later calls keep it off too.
    Returns the folder used (None when off)."""
    if off:
        os.environ["PEANUT_XLA_CACHE"] = "0"
        return None
    env = os.environ.get("PEANUT_XLA_CACHE")
    if path is None:
        if env is not None and env.strip().lower() in ("0", "", "off", "false", "no"):
            return None
        if env:
            path = env
        else:
            from peanut_jax.checkpoints.registry import home

            path = home() / "xla_cache"
    path = pathlib.Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: run without the cache
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return path


# ------------------------------------------------------------------------------------ Ctrl-C
class InterruptExit:
    """Prompt exit on Ctrl-C for the command-line tools.

    Python delivers ``KeyboardInterrupt`` to the main thread only between bytecodes; while it sits in
    one long native call (an XLA compilation) that is minutes away.  This watcher learns of the
    signal at once (``signal.set_wakeup_fd``: CPython's C handler writes the signal number to a
    pipe); if the main thread has not reacted (:meth:`handled`) within ``grace`` seconds it removes
    every partial output (:func:`peanut_jax.data.video_io.discard_partial_outputs`), prints the
    one-line message and ends the process with status 130."""

    def __init__(self, grace: float = 2.0, message: str = "error: interrupted; no partial output was kept"):
        import signal
        import threading

        self.grace, self.message = grace, message
        self._handled = threading.Event()
        self._r, w = os.pipe()
        os.set_blocking(w, False)
        self._old = signal.set_wakeup_fd(w)
        self._w = w
        threading.Thread(target=self._watch, name="peanut-interrupt", daemon=True).start()

    def handled(self) -> None:
        """The main thread got the KeyboardInterrupt: it cleans up and exits by itself."""
        self._handled.set()

    def _watch(self) -> None:
        import signal
        import time

        while True:
            try:
                data = os.read(self._r, 64)
            except OSError:
                return
            if not data:
                return
            if signal.SIGINT in data:
                break
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline:
            if self._handled.wait(0.05):
                return
        from peanut_jax.data.video_io import discard_partial_outputs

        discard_partial_outputs()
        try:
            print(self.message, file=sys.stderr, flush=True)
        finally:
            os._exit(130)
