"""Training tasks: one file per stage, ``peanut_jax/train/tasks/<name>.py``.

``get(name)`` imports ``peanut_jax.train.tasks.<name>`` and returns it; ``config.task`` selects
the task for ``train.py``.  Adding a stage means adding one file here (no registry to edit).

The task protocol
=================
A task module (or any object) defines these five functions.  ``config`` is the run's locked
``ml_collections.ConfigDict`` (hashable Python: it is closed over, never traced).  The generic
keys the loop itself reads are ``seed``, ``parallel``, ``data.batch_size`` (global batch) and the
``train.*`` block (see ``configs/spynet.py``); everything else (``model``, ``data``, ``optim``,
...) belongs to the task.

``init_state(rng, config, sample_batch) -> TrainState``
    Build the initial :class:`~peanut_jax.train.state.TrainState` (``step=0``): initialise the
    model(s) with ``rng`` (a legacy ``uint32[2]`` key), the optimizer state(s) and whatever goes
    into ``extra`` (e.g. ``{'disc_params': ..., 'disc_opt_state': ...}`` for a GAN), and store
    a base key in ``state.rng``.  Must be pure and traceable: the loop runs it under
    ``jax.eval_shape`` (to build the abstract state for checkpoint restore) and under
    ``jax.jit(out_shardings=replicated)``.  ``sample_batch`` is one host example batch (leading
    dimension 1, numpy) from ``train_batches``: use it for shapes only.

``train_step(state, batch, config, grad_reduce) -> (state, metrics)``
    One pure training iteration on this device's part of the batch.  Compute losses as *means
    over the examples of the batch*, take gradients, pass every gradient pytree through
    ``grad_reduce`` **before** the optimizer update (identity under the ``mesh`` strategy, where
    the batch is one global array; ``lax.pmean`` over ``'data'`` under ``pmap``), then update.
    A GAN does its discriminator step first, then the generator step, each with its own optimizer
    from :func:`~peanut_jax.train.state.build_optimizer` and ``grad_reduce`` applied to each
    (keep the discriminator's params/opt state in ``state.extra``).  Per-group learning-rate
    multipliers and freezes (BasicVSR++: SPyNet x0.25, frozen for ``fix_iter`` steps) come from
    :func:`~peanut_jax.train.state.build_grouped_optimizer`; schedules (constant, cosine,
    warm-up + cosine, mmagic cosine restarts, multistep) from ``optim.schedule``.
    Use ``state.step_rng(tag)`` for randomness.  Do **not** increment ``state.step``: the loop
    does.  ``metrics`` is a flat dict of float32 scalars (example means); it must contain
    ``'loss'`` — the loop stops with :class:`~peanut_jax.train.loop.NonFiniteLossError` naming
    the step when any metric is NaN/inf.  The loop averages metrics across devices itself.
    ``batch`` leaves have the per-device (pmap) or global (mesh) leading batch dimension; never
    rely on the batch size being the global one.

``eval_step(state, batch, config) -> metrics``
    Pure evaluation on a batch (means over its examples), e.g. EPE / PSNR.  Gets the whole
    state so that tasks with EMA weights or normalisation statistics in ``extra`` can use them.

``train_batches(config, start_step, process_index, process_count) -> Iterator[dict]``
    Host numpy batches for global steps ``start_step + 1, start_step + 2, ...`` (forever or at
    least up to ``train.num_steps``), each holding **this process's** ``batch_size //
    process_count`` rows: rows ``[process_index * b, (process_index + 1) * b)`` of the global
    batch.  The data of step ``s`` must be a pure function of ``(config.seed, s, row)`` — no
    iterator state — so a resumed run sees exactly the batches the uninterrupted run saw, and a
    run on 2 processes sees the same global batches as one process.  (Synthetic data: seed the
    generator with ``(seed, s, row)``; datasets: a ``grain.MapDataset`` indexed by
    ``s * batch_size + row`` over a seeded global shuffle.)

``eval_batches(config, process_index, process_count) -> Iterable[dict]``
    The fixed held-out set, in batches of ``data.eval_batch_size`` global rows (a multiple of
    the device count), this process's rows only, same rule as above.

A task may also define ``describe(config) -> str`` (a one-line summary the loop logs) and
``sample_batch(config) -> dict`` (the batch ``init_state`` gets; default: the first train batch).

Using the loop from Python (tests, notebooks)::

    from peanut_jax.train import train_and_evaluate
    result = train_and_evaluate(config, workdir)          # resumes from workdir if possible
    result.state.params, result.eval_metrics, result.steps_per_sec, result.trace_count

``peanut_jax.train.loop.init_train_state(task, config, mesh)`` and ``build_strategy(task,
config, mesh)`` give the loop's initial state and compiled step wrapper for step-level tests
(e.g. "8-device step == 1-device step"); identical (task, config, devices) reuse the compiled
programs within a process.
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
