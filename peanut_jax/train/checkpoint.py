"""Checkpoints: a thin wrapper over the Orbax v0 ``CheckpointManager``.

Layout: ``<workdir>/checkpoints/<step>/default/...`` (one Orbax ``StandardSave`` item holding the
whole :class:`~peanut_jax.train.state.TrainState`).  Saves are asynchronous (the device->host copy
happens before ``save`` returns, the write continues in the background, so the next step may
donate the state buffers), atomic (Orbax writes a temporary directory and renames it on commit)
and keep the newest ``max_to_keep``.  All processes call every method; Orbax coordinates the
multi-process write.

Restoring needs the abstract state (shapes, dtypes, shardings), which the loop gets from
``jax.eval_shape`` of the task's ``init_state``.  :func:`load_tree` (``peanut_jax.checkpoints.orbax.read_tree``)
reads a checkpoint *without* knowing its structure (nested dicts of numpy arrays), e.g. for tools.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from peanut_jax.checkpoints.orbax import read_tree as load_tree  # noqa: F401  (the trainer's name for it)


class Checkpointer:
    """Save every ``save_interval_steps`` steps, keep ``max_to_keep``, resume from the latest."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        max_to_keep: int = 3,
        save_interval_steps: int = 1000,
        async_save: bool = True,
    ):
        self.directory = pathlib.Path(directory).absolute()
        if save_interval_steps <= 0:
            raise ValueError(f"checkpoint interval must be positive, got {save_interval_steps}")
        self.save_interval_steps = int(save_interval_steps)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            save_interval_steps=self.save_interval_steps,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._mngr = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def should_save(self, step: int) -> bool:
        return step % self.save_interval_steps == 0

    def save(self, step: int, state, force: bool = False) -> bool:
        """Save ``state`` as ``step`` if it is a save step (or ``force``); returns whether saved."""
        if step in self._mngr.all_steps():
            return False
        return bool(self._mngr.save(int(step), args=ocp.args.StandardSave(state), force=force))

    def restore(self, step: int | None, abstract_state):
        """Restore ``step`` (default: latest) into the structure/shardings of ``abstract_state``
        (a pytree of ``jax.ShapeDtypeStruct`` with ``sharding`` set)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        return self._mngr.restore(int(step), args=ocp.args.StandardRestore(abstract_state))

    def wait_until_finished(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def abstract_like(tree, sharding) -> Any:
    """``ShapeDtypeStruct`` leaves with ``sharding`` for every leaf of ``tree`` (arrays or structs)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def checkpoint_dir(workdir: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(workdir) / "checkpoints"
