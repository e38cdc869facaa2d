"""Read a ``train.py`` orbax checkpoint without knowing its structure (nested dicts of numpy
arrays), so that inference tools load trained weights without importing the trainer."""

from __future__ import annotations

import os
import pathlib


def read_tree(path: str | os.PathLike, step: int | None = None) -> dict:
    """The saved ``TrainState`` fields of a training checkpoint as a dict (``{'params': ...,
    'opt_state': ..., 'step': ..., ...}``).  ``path`` is a workdir, its ``checkpoints`` folder or
    one step folder; ``step`` picks a step (default: the latest)."""
    p = pathlib.Path(path).expanduser().absolute()  # orbax wants absolute paths
    if not p.exists():
        raise FileNotFoundError(f"checkpoint path does not exist: {p}")
    if (p / "checkpoints").is_dir():
        p = p / "checkpoints"
    if (p / "default").is_dir():
        item = p / "default"
    else:
        steps = sorted(int(d.name) for d in p.iterdir() if d.is_dir() and d.name.isdigit())
        if not steps:
            raise FileNotFoundError(f"no orbax checkpoint steps under {p}")
        chosen = steps[-1] if step is None else step
        if chosen not in steps:
            raise FileNotFoundError(f"checkpoint step {step} not in {p} (have {steps})")
        item = p / str(chosen) / "default"
    import jax
    import numpy as np
    import orbax.checkpoint as ocp
    from etils import epath

    handler = ocp.PyTreeCheckpointHandler()
    try:
        meta = handler.metadata(epath.Path(item))
        tree = getattr(meta, "tree", meta)
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return handler.restore(epath.Path(item), args=ocp.args.PyTreeRestore(restore_args=restore_args))
    finally:
        handler.close()


#: Flax variable collections of the trained module other than ``params``: a task keeps them in
#: ``TrainState.extra`` under the collection's name (SAMWISE: the adapters' BatchNorm ``batch_stats``).
#: Nothing else in ``extra`` (discriminators, optimizer states, frozen helper networks) is a variable
#: of the trained module.
MODEL_COLLECTIONS = ("batch_stats",)


def read_params(path: str | os.PathLike, step: int | None = None):
    """The ``params`` item of an orbax training checkpoint (see :func:`read_tree`)."""
    return read_variables(path, step)["params"]


def read_variables(path: str | os.PathLike, step: int | None = None) -> dict:
    """The variables of the trained module in an orbax training checkpoint: ``{'params': ...}`` plus
    each of :data:`MODEL_COLLECTIONS` the state's ``extra`` holds (see :func:`read_tree`)."""
    return variables_of(read_tree(path, step), path)


def variables_of(tree: dict, path="checkpoint") -> dict:
    """The trained module's variables in a :func:`read_tree` dict (see :func:`read_variables`)."""
    if "params" not in tree:
        raise ValueError(f"{path}: orbax checkpoint has no 'params' item")
    extra = tree.get("extra") if isinstance(tree.get("extra"), dict) else {}
    return {"params": tree["params"], **{c: extra[c] for c in MODEL_COLLECTIONS if c in extra}}
