"""Timing helpers for the benchmark scripts: medians after warm-up, side by side in one run."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time


def pin_threads(n: int) -> None:
    """Give ours the cores the official side gets: pin the process to the first ``n`` cores (XLA's
    CPU client starts its own thread pool whatever the flags say) and ask XLA for ``n`` threads.
    Call before importing jax; the caller sets torch's thread count to ``n`` too."""
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:n]))
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_cpu_multi_thread_eigen={n > 1} intra_op_parallelism_threads={n}"
    ).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def median_time(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time (s) of ``fn()`` over ``repeats`` calls after ``warmup`` calls.

    ``fn`` must block until its result is ready (call ``jax.block_until_ready`` inside)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> str:
    import jax

    dev = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    return (
        f"{dev.platform}:{getattr(dev, 'device_kind', '')} | {os.cpu_count()} cores {cpu} | "
        f"jax {jax.__version__} | {time.strftime('%Y-%m-%d')}"
    )


def report(rows: list[dict], title: str, path: str | None = None) -> None:
    print(f"\n## {title}\n{machine()}\n")
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |")
    if path:
        with open(path, "w") as f:
            json.dump({"title": title, "machine": machine(), "rows": rows}, f, indent=1)
