"""Generic trainer: one loop, one state, one checkpoint wrapper, pluggable tasks.

* :func:`train_and_evaluate` (``loop.py``): the loop behind ``train.py``.
* :class:`TrainState`, :func:`build_optimizer`, :func:`build_schedule`,
  :func:`build_grouped_optimizer` (per-group lr multipliers / freezes) (``state.py``).
* ``parallel.py``: ``('data',)`` mesh + ``jit`` (default) and ``jax.pmap`` step wrappers.
* ``checkpoint.py``: Orbax v0 ``CheckpointManager`` wrapper, :func:`load_tree` for tools.
* ``logging.py``: process-0 JSONL / TensorBoard writer and progress bar.
* ``batching.py``: the deterministic (seed, step, row) sampler every task builds its batches with;
  ``config.py``: the one config lookup.
* ``tasks/``: one file per stage (example -> loss / metrics / evaluation); protocol: ``docs/training.md``.
"""

from peanut_jax.train.checkpoint import Checkpointer, load_tree
from peanut_jax.train.loop import (
    ConfigChangedError,
    NonFiniteLossError,
    TrainingInterrupted,
    TrainResult,
    WorkdirError,
    evaluate,
    train_and_evaluate,
)
from peanut_jax.train.state import (
    TrainState,
    apply_updates,
    build_grouped_optimizer,
    build_optimizer,
    build_schedule,
    cosine_restart_schedule,
    freeze_until,
)

__all__ = [
    "Checkpointer",
    "ConfigChangedError",
    "NonFiniteLossError",
    "TrainResult",
    "TrainState",
    "TrainingInterrupted",
    "WorkdirError",
    "apply_updates",
    "build_grouped_optimizer",
    "build_optimizer",
    "build_schedule",
    "cosine_restart_schedule",
    "evaluate",
    "freeze_until",
    "load_tree",
    "train_and_evaluate",
]
