"""The deterministic sampler the training tasks share: a batch is a pure function of (seed, step, row).

Row ``r`` of global step ``s`` is ``example(seed=(config.seed, TRAIN_STREAM, s, r), item)``: synthetic
data draws everything from that seed (``item`` is None); a dataset of ``n`` items reads item
``order[(s - 1) * batch + r]`` of a seeded grain shuffle that repeats with a new permutation every
epoch.  A process builds only its rows ``[p * b, (p + 1) * b)`` (``b = batch // process count``), so a
resumed or multi-process run sees exactly the batches of the uninterrupted single-process run.
Held-out sets are fixed: built once (seeds ``(eval_seed, EVAL_STREAM, i)``) and sliced the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np

from peanut_jax.train.config import config_get

TRAIN_STREAM, EVAL_STREAM = 0, 1
# the synthetic scene options of a ``data`` block (``peanut_jax.data.synthetic.make_scene`` keywords)
SCENE_KEYS = ("num_objects", "camera_speed", "object_speed", "camera_zoom", "camera_rotation")


def rows(global_batch: int, process_index: int, process_count: int) -> range:
    """This process's rows of a global batch."""
    b = global_batch // process_count
    return range(process_index * b, (process_index + 1) * b)


class Plain(dict):
    """A dict read by attribute: a config block rebuilt from :func:`config_items` (a cache key)."""

    __getattr__ = dict.__getitem__


def config_items(block, keys=None) -> tuple:
    """The block's ``keys`` (default all) as sorted hashable ``(key, value)`` pairs, lists as tuples."""
    keys = block.keys() if keys is None else keys
    return tuple(sorted((k, tuple(block[k]) if isinstance(block[k], (list, tuple)) else block[k]) for k in keys))


def train_source(config, open_split):
    """``(source, length)`` of the configured train split (``open_split(items, split)``), or
    ``(None, None)`` for the procedural synthetic data."""
    d = config.data
    if d.source == "synthetic":
        return None, None
    source = open_split(config_items(d), str(config_get(d, "train_split", "train")))
    return source, len(source)


def scene_kwargs(d) -> dict:
    """The synthetic scene options of a ``data`` block, as ``make_scene`` / ``generate_clip`` keywords."""
    return dict(
        num_objects=int(d.num_objects),
        camera_speed=float(d.camera_speed),
        object_speed=tuple(float(v) for v in d.object_speed),
        camera_zoom=float(d.camera_zoom),
        camera_rotation=float(d.camera_rotation),
    )


def stack(examples: list[dict], dtype=None) -> dict:
    """Stack a list of example dicts along a new batch axis (then cast every key to ``dtype``)."""
    out = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    return out if dtype is None else {k: v.astype(dtype) for k, v in out.items()}


def shuffled(num_items: int, seed: int):
    """``order[i]``: the item read at global position ``i`` (a seeded shuffle, reshuffled every epoch)."""
    import grain

    return grain.MapDataset.range(num_items).shuffle(seed=seed).repeat()


def train_batches(
    config,
    start_step: int,
    process_index: int,
    process_count: int,
    example: Callable[[tuple, int | None], dict],
    num_items: int | None = None,
    dtype=None,
) -> Iterator[dict]:
    """This process's batches of steps ``start_step + 1, start_step + 2, ...`` (see the module docstring).

    ``example(seed, item)`` builds one example; ``num_items``: the dataset size (None: synthetic data,
    ``item`` is None); ``dtype``: cast every key of the stacked batch.
    """
    b = int(config.data.batch_size)
    rs = rows(b, process_index, process_count)
    seed = int(config.seed)
    order = None if num_items is None else shuffled(num_items, seed)
    for step in itertools.count(start_step + 1):
        yield stack(
            [
                example((seed, TRAIN_STREAM, step, r), None if order is None else int(order[(step - 1) * b + r]))
                for r in rs
            ],
            dtype,
        )


def check_eval_clips(n: int, eval_batch_size: int) -> None:
    if n % eval_batch_size:
        raise ValueError(
            f"config.data.eval_clips={n} must be a multiple of config.data.eval_batch_size={eval_batch_size}"
        )


def eval_size(d, available: int, what: str) -> int:
    """How many of a split's ``available`` items are evaluated: ``data.eval_clips`` (<= 0: all), cut
    to a multiple of ``data.eval_batch_size``."""
    eb = int(d.eval_batch_size)
    n = available if int(config_get(d, "eval_clips", 0) or 0) <= 0 else min(int(d.eval_clips), available)
    n -= n % eb
    if n == 0:
        raise ValueError(f"the evaluation split has {available} {what}, fewer than data.eval_batch_size={eb}")
    return n


def slices(data: dict, n: int, eval_batch_size: int, process_index: int, process_count: int) -> Iterator[dict]:
    """This process's rows of consecutive ``eval_batch_size`` batches of a prebuilt set of ``n`` examples."""
    rs = rows(eval_batch_size, process_index, process_count)
    for start in range(0, n, eval_batch_size):
        yield {k: v[[start + r for r in rs]] for k, v in data.items()}


def eval_batches(
    n: int, eval_batch_size: int, process_index: int, process_count: int, example: Callable[[int], dict], dtype=None
) -> Iterator[dict]:
    """This process's part of ``n`` evaluation examples ``example(i)``, in ``eval_batch_size`` batches."""
    rs = rows(eval_batch_size, process_index, process_count)
    for start in range(0, n, eval_batch_size):
        yield stack([example(start + r) for r in rs], dtype)
