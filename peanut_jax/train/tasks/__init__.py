"""Training tasks, one module per stage: ``get(name)`` returns ``peanut_jax.train.tasks.<name>``.

A task defines ``init_state``, ``train_step``, ``eval_step``, ``train_batches`` and ``eval_batches``
(optionally ``describe`` and ``sample_batch``); batches are a pure function of (seed, step, row)
(:mod:`peanut_jax.train.batching`).  The protocol in full: ``docs/training.md``.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

REQUIRED = ("init_state", "train_step", "eval_step", "train_batches", "eval_batches")


def names() -> list[str]:
    """Names of the task modules present in this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get(name: str) -> ModuleType:
    """The task module ``peanut_jax.train.tasks.<name>`` (checked against the protocol)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"config.task must be a task name, got {name!r}")
    if name not in names():
        raise ValueError(f"unknown task {name!r}; known: {', '.join(names())}")
    mod = importlib.import_module(f"{__name__}.{name}")
    check(mod, name)
    return mod


def check(task, name: str = "task") -> None:
    """Raise ``TypeError`` naming the missing functions when ``task`` breaks the protocol."""
    missing = [f for f in REQUIRED if not callable(getattr(task, f, None))]
    if missing:
        raise TypeError(f"task {name!r} does not define {', '.join(missing)}")
