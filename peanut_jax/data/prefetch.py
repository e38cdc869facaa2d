"""The one background prefetcher: iterate a producer in a daemon thread through a bounded queue.

Used by the inference chain (frames decoded while the stages compute) and by the trainer (batches
built while the device steps).  It lives in ``data/`` because ``pipeline`` and ``train`` must not
import each other.  Order is preserved, a producer error is re-raised in the consumer at the point
it occurred, and :meth:`Prefetcher.close` (or leaving a :func:`prefetch` generator) stops the
producer thread.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterable, Iterator

__all__ = ["Prefetcher", "prefetch"]

_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class Prefetcher:
    """Iterate ``iterable`` in a background thread, at most ``maxsize`` items ahead.

    ``wait_seconds``: time the consumer spent waiting for items (what the producer did not hide).
    """

    def __init__(self, iterable: Iterable, maxsize: int = 8, name: str = "reader"):
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

    def __iter__(self) -> Iterator:
        while True:
            t0 = time.perf_counter()
            item = self._q.get()
            self.wait_seconds += time.perf_counter() - t0
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def close(self) -> None:
        """Stop the producer (items not consumed are dropped) and wait for its thread."""
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._q.get_nowait()
        self._thread.join(timeout=10)


def prefetch(iterable: Iterable, size: int, name: str = "prefetch") -> Iterator:
    """Generator form: ``size <= 0`` iterates in the caller's thread; otherwise a :class:`Prefetcher`
    that is closed when the generator is exhausted, fails or is closed."""
    if size <= 0:
        yield from iterable
        return
    p = Prefetcher(iterable, size, name)
    try:
        yield from p
    finally:
        p.close()
