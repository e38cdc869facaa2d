"""The deterministic sampler the training tasks share: a batch is a pure function of (seed, step, row).

Row ``r`` of global step ``s`` is ``example(seed=(config.seed, TRAIN_STREAM, s, r), item)``: synthetic
data draws everything from that seed (``item`` is None); a dataset of ``n`` items reads item
``order[(s - 1) * batch + r]`` of a seeded grain shuffle that repeats with a new permutation every
epoch.  A process builds only its rows ``[p * b, (p + 1) * b)`` (``b = batch // process count``), so a
resumed or multi-process run sees exactly the batches of the uninterrupted single-process run.
Held-out sets are fixed: built once (seeds ``(eval_seed, EVAL_STREAM, i)``) and sliced the same way.

``config.train.data_workers = n > 0`` builds the training batches in ``n`` grain worker processes
(``mp_prefetch``, spawned): the first batch of a run in this process, then worker ``k`` the batches of
steps ``start + 2 + k``, ``start + 2 + k + n``, ... (handed over in step order).  A batch is still the
pure function of (seed, step, row) above, so the batches are bit-identical to the in-process ones
(``0``) for every worker count, and a resume starts the workers at the resume step.  Workers never
initialise a JAX backend (``jax_platforms`` is set to ``cpu`` in them before anything is unpickled;
the example functions are numpy); ``example`` must be picklable by cloudpickle, and a script that
trains with workers needs the ``if __name__ == "__main__":`` guard (spawn re-imports it).  An example
that fails, in either path, raises its error with the step, row and item prefixed to the message.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator

import numpy as np

from peanut_jax.train.config import config_get

TRAIN_STREAM, EVAL_STREAM = 0, 1
# ``config.train.data_workers`` when the config has no such key (see :func:`data_workers`)
DEFAULT_DATA_WORKERS = 0
# the end of the worker pipeline's step range (training never gets there)
_LAST_STEP = 2**62
_PROFILING_FLAG = "grain_enable_multiprocess_worker_profiling"
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


def data_workers(config) -> int:
    """``config.train.data_workers`` (absent: :data:`DEFAULT_DATA_WORKERS`): worker processes that build
    the training batches (0: in this process)."""
    train = config_get(config, "train", None)
    n = config_get(train, "data_workers", DEFAULT_DATA_WORKERS) if train is not None else DEFAULT_DATA_WORKERS
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"config.train.data_workers must be an integer >= 0, got {n!r}")
    return n


def _named(exc: Exception, where: str) -> Exception:
    """``exc`` with ``where`` prefixed to its message (same type when it takes a message; else a
    ``RuntimeError`` naming the type)."""
    text = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else exc
    msg = f"{where}: {text}"
    try:
        named = type(exc)(msg)
        if named.args == (msg,):
            return named
    except Exception:  # noqa: BLE001 - a type with another constructor: fall back
        pass
    return RuntimeError(f"{where}: {type(exc).__name__}: {text}")


class StepBatch:
    """``step -> batch``: this process's rows of the global batch of ``step`` (picklable: the worker
    processes get a copy)."""

    def __init__(self, seed: int, batch_size: int, rows_: range, example, order, dtype, stop_file: str = ""):
        self.seed, self.batch_size, self.rows, self.example = seed, batch_size, rows_, example
        self.order, self.dtype = order, dtype
        self.stop_file = stop_file  # workers: stop between examples once this file exists

    def __call__(self, step: int) -> dict:
        examples = []
        for r in self.rows:
            if self.stop_file and os.path.exists(self.stop_file):
                raise _Stopped(f"stopped before step {step}")
            item = None if self.order is None else int(self.order[(step - 1) * self.batch_size + r])
            try:
                examples.append(self.example((self.seed, TRAIN_STREAM, step, r), item))
            except Exception as e:  # noqa: BLE001 - re-raised with the example named
                what = f"training example of step {step}, row {r}" + ("" if item is None else f" (item {item})")
                raise _named(e, what) from e
        return stack(examples, self.dtype)


class _Stopped(Exception):
    """A worker noticed the stop file (the consumer has gone; nobody reads this)."""


def _worker_init(index: int, count: int) -> None:
    """In a worker process, before the dataset is unpickled: never initialise an accelerator."""
    if "jax" in sys.modules:
        sys.modules["jax"].config.update("jax_platforms", "cpu")
    else:
        os.environ["JAX_PLATFORMS"] = "cpu"


def worker_batches(make: StepBatch, start_step: int, workers: int) -> Iterator[dict]:
    """``make(step)`` for steps ``start_step + 1, ...`` built in ``workers`` grain processes (in step
    order); the processes stop when the generator is closed or garbage collected."""
    import grain
    from absl import flags

    # grain reads this absl flag when it starts workers; outside an absl app (tests, notebooks) the
    # flags are unparsed: let it read its default
    if not flags.FLAGS.is_parsed() and _PROFILING_FLAG in flags.FLAGS:
        flags.FLAGS[_PROFILING_FLAG].present = True
    # grain stops a worker only between elements (a whole batch, seconds): on close the workers see
    # this file between two examples and give up their batch
    stop_dir = tempfile.mkdtemp(prefix="peanut-workers-")
    stop_file = os.path.join(stop_dir, "stop")
    ds = (
        grain.MapDataset.range(start_step + 1, _LAST_STEP)
        .map(StepBatch(make.seed, make.batch_size, make.rows, make.example, make.order, make.dtype, stop_file))
        # one batch at a time in each worker: the processes are the parallelism
        .to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
        .mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=1), _worker_init)
    )
    it = iter(ds)
    try:
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except Exception as e:  # noqa: BLE001 - the worker's error, without grain's rebuilt traceback
                if hasattr(e, "__notes__"):
                    del e.__notes__
                raise e.with_traceback(None) from None
            # plain arrays (views of grain's shared-memory blocks, freed with the last view)
            yield {k: np.asarray(v) for k, v in batch.items()}
    finally:
        with open(stop_file, "w"):
            pass
        it.close()
        shutil.rmtree(stop_dir, ignore_errors=True)


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
    ``item`` is None); ``dtype``: cast every key of the stacked batch.  With ``config.train.data_workers
    > 0`` ``example`` must be picklable by cloudpickle (closures over the config and a data source are).
    """
    b = int(config.data.batch_size)
    seed = int(config.seed)
    order = None if num_items is None else shuffled(num_items, seed)
    make = StepBatch(seed, b, rows(b, process_index, process_count), example, order, dtype)
    workers = data_workers(config)
    if workers > 0:
        # the first batch is built here: a caller that takes one batch (the loop's sample batch) starts
        # no process, and the workers' start-up overlaps this batch
        yield make(start_step + 1)
        yield from worker_batches(make, start_step + 1, workers)
        return
    for step in itertools.count(start_step + 1):
        yield make(step)


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
