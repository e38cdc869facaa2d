"""Process-0 metric writers: JSONL (always), TensorBoard (when ``tensorboardX`` is importable),
and a tqdm progress bar with steps/s and ETA.

Every JSONL line is one record ``{"step": int, "split": "train" | "eval", <metric>: float, ...}``
in ``<workdir>/metrics.jsonl``.  On resume from step ``S`` the records of the interrupted run with
``step > S`` are dropped (atomically: the file is rewritten to a temporary name and renamed), so
the file always describes one trajectory.  On other processes every writer is a no-op.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
from collections.abc import Mapping
from typing import Any

METRICS_FILE = "metrics.jsonl"


def _clean(v: Any):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    if math.isfinite(f):
        return int(f) if isinstance(v, int) else f
    return str(f)  # JSON has no NaN/inf; keep them readable


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All records of a metrics file (empty list when it does not exist)."""
    p = pathlib.Path(path)
    if p.is_dir():
        p = p / METRICS_FILE
    if not p.exists():
        return []
    out = []
    with open(p) as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


class MetricWriter:
    """JSONL (+ optional TensorBoard) writer; inactive unless ``enabled`` (process 0)."""

    def __init__(
        self, workdir: str | os.PathLike, *, enabled: bool = True, resume_step: int = 0, tensorboard: bool = True
    ):
        self.enabled = enabled
        self.path = pathlib.Path(workdir) / METRICS_FILE
        self._file = None
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            keep = [r for r in read_jsonl(self.path) if int(r.get("step", 0)) <= resume_step]
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "w") as f:
                for r in keep:
                    f.write(json.dumps(r) + "\n")
            os.replace(tmp, self.path)
        self._file = open(self.path, "a", buffering=1)
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter  # optional
            except ImportError:
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(self.path.parent / "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, Any], split: str = "train") -> None:
        if not self.enabled:
            return
        rec = {"step": int(step), "split": split}
        rec.update({k: _clean(v) for k, v in metrics.items()})
        self._file.write(json.dumps(rec) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                try:
                    self._tb.add_scalar(f"{split}/{k}", float(v), int(step))
                except (TypeError, ValueError):
                    pass

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


class Progress:
    """tqdm bar over steps (initial = resume step) showing steps/s, ETA and the latest loss."""

    def __init__(self, total: int, initial: int, *, enabled: bool = True, desc: str = "train"):
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
                mininterval=1.0,
                smoothing=0.1,
            )

    def update(self, n: int = 1, **postfix) -> None:
        if self._bar is None:
            return
        if postfix:
            self._bar.set_postfix(
                {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()}, refresh=False
            )
        self._bar.update(n)

    def write(self, msg: str) -> None:
        if self._bar is not None:
            self._bar.write(msg)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
