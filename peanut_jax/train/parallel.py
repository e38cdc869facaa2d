"""Data-parallel step wrappers: ``jit`` over a ``('data',)`` mesh (default) and ``jax.pmap``.

Both wrap the same task functions and must give the same numbers as a single device:

``mesh`` (:class:`MeshStrategy`)
    One global ``Mesh`` over all devices of all processes with the axis ``'data'``.  Train state
    is replicated (``P()``); every batch leaf is sharded on its leading axis (``P('data')``) and
    built from each process's local rows with ``jax.make_array_from_process_local_data``.  The
    step is ``jax.jit(step, donate_argnums=0)`` with explicit in/out shardings; XLA inserts the
    gradient all-reduce, so the task's ``grad_reduce`` is the identity.
``pmap`` (:class:`PmapStrategy`)
    The maintenance-mode ``jax.pmap`` (built on ``jit(shard_map)`` since JAX 0.10).  State is
    stacked along a leading local-device axis, each device gets ``batch / n_devices`` rows and
    ``grad_reduce`` is ``lax.pmean(..., 'data')``.

The loop only talks to the strategy interface: ``put_state`` (canonical replicated state ->
device form), ``get_state`` (back, for checkpoints and the final result), ``put_batch`` (host
numpy batch of this process -> device form), ``train_step`` and ``eval_step`` (metrics come back
as replicated scalars; :func:`to_host` turns them into Python floats).

A *canonical* state is a pytree of global ``jax.Array`` replicated over the mesh (``P()``); it is
what checkpoints store, so the two strategies resume from each other's checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
STRATEGIES = ("mesh", "pmap")


def make_mesh(devices=None) -> Mesh:
    """A 1-D ``('data',)`` mesh over ``devices`` (default: all devices of all processes).

    Devices keep JAX's global order (process-major), so process ``p`` owns a contiguous block of
    rows of every global batch.  The axis is ``Auto`` so that model code needs no sharding
    annotations.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("make_mesh: no devices given")
    return Mesh(np.asarray(devices, dtype=object), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def local_batch_size(global_batch: int, mesh: Mesh, what: str = "batch_size") -> int:
    """Rows of a global batch that this process feeds; checks divisibility with a clear message."""
    n_dev = mesh.devices.size
    n_proc = jax.process_count()
    if global_batch <= 0 or global_batch % n_dev:
        raise ValueError(f"{what}={global_batch} must be a positive multiple of the number of devices ({n_dev})")
    return global_batch // n_proc


def to_host(tree) -> Any:
    """Replicated (or fully addressable) arrays -> numpy / Python scalars on every process."""

    def get(x):
        if isinstance(x, jax.Array):
            if not x.is_fully_addressable:
                if not x.is_fully_replicated:
                    raise ValueError("to_host: array is neither addressable nor replicated")
                x = x.addressable_data(0)
            x = np.asarray(x)
        x = np.asarray(x)
        return x.item() if x.ndim == 0 else x

    return jax.tree.map(get, tree)


def replicate_host_tree(tree, mesh: Mesh):
    """Host values (identical on every process) -> global arrays replicated over ``mesh``."""
    sh = replicated(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sh, np.asarray(x)), tree)


def _identity(tree):
    return tree


def _pmean(tree):
    return jax.lax.pmean(tree, DATA_AXIS)


class MeshStrategy:
    """``jit`` + ``NamedSharding`` data parallelism (the default)."""

    name = "mesh"

    def __init__(self, mesh: Mesh, train_fn: Callable, eval_fn: Callable | None = None):
        """``train_fn(state, batch, grad_reduce) -> (state, metrics)``;
        ``eval_fn(state, batch) -> metrics``."""
        self.mesh = mesh
        self.trace_count = 0
        repl, data = replicated(mesh), batch_sharding(mesh)
        self._data = data

        def step(state, batch):
            self.trace_count += 1  # runs at trace time only: counts compilations
            return train_fn(state, batch, _identity)

        self._train = jax.jit(step, donate_argnums=0, in_shardings=(repl, data), out_shardings=(repl, repl))
        self._eval = None
        if eval_fn is not None:
            self._eval = jax.jit(eval_fn, in_shardings=(repl, data), out_shardings=repl)

    # state ---------------------------------------------------------------------------------
    def put_state(self, state):
        return state

    def get_state(self, dev_state):
        return dev_state

    # data ----------------------------------------------------------------------------------
    def put_batch(self, host_batch):
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self._data, np.asarray(x)), host_batch)

    # steps ---------------------------------------------------------------------------------
    def train_step(self, dev_state, batch):
        return self._train(dev_state, batch)

    def eval_step(self, dev_state, batch):
        return self._eval(dev_state, batch)

    def context(self):
        """Context manager active around the loop (sets the mesh for sharding-aware code)."""
        return jax.set_mesh(self.mesh)


class PmapStrategy:
    """``jax.pmap`` data parallelism with ``lax.pmean`` (kept as an alternative wrapper)."""

    name = "pmap"

    def __init__(self, mesh: Mesh, train_fn: Callable, eval_fn: Callable | None = None):
        self.mesh = mesh
        self.trace_count = 0
        self._local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
        self.n_local = len(self._local)
        devices = list(mesh.devices.flat)

        def step(state, batch):
            self.trace_count += 1
            state, metrics = train_fn(state, batch, _pmean)
            return state, _pmean(metrics)

        self._train = jax.pmap(step, axis_name=DATA_AXIS, donate_argnums=0, devices=devices)
        # places host values exactly as the step returns them (same sharding: no retrace)
        self._put = jax.pmap(lambda x: x, axis_name=DATA_AXIS, devices=devices)
        self._eval = None
        if eval_fn is not None:
            self._eval = jax.pmap(lambda s, b: _pmean(eval_fn(s, b)), axis_name=DATA_AXIS, devices=devices)

    def put_state(self, state):
        n = self.n_local
        local = to_host_local(state)
        return self._put(jax.tree.map(lambda x: np.broadcast_to(x, (n,) + x.shape), local))

    def get_state(self, dev_state):
        # every device holds the same values after pmean'd updates; take the first local copy
        first = jax.tree.map(lambda x: np.asarray(x[0]), dev_state)
        return replicate_host_tree(first, self.mesh)

    def put_batch(self, host_batch):
        n = self.n_local

        def split(x):
            x = np.asarray(x)
            if x.shape[0] % n:
                raise ValueError(f"per-process batch of {x.shape[0]} rows does not split over {n} local devices")
            return x.reshape((n, x.shape[0] // n) + x.shape[1:])

        return jax.tree.map(split, host_batch)

    def train_step(self, dev_state, batch):
        state, metrics = self._train(dev_state, batch)
        return state, jax.tree.map(lambda m: m[0], metrics)

    def eval_step(self, dev_state, batch):
        return jax.tree.map(lambda m: m[0], self._eval(dev_state, batch))

    def context(self):
        import contextlib

        return contextlib.nullcontext()


def to_host_local(tree):
    """Canonical (replicated) global arrays -> numpy copies held by this process."""

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            x = x.addressable_data(0)
        return np.asarray(x)

    return jax.tree.map(get, tree)


def make_strategy(kind: str, mesh: Mesh, train_fn: Callable, eval_fn: Callable | None = None):
    """``'mesh'`` -> :class:`MeshStrategy`, ``'pmap'`` -> :class:`PmapStrategy`."""
    if kind == "mesh":
        return MeshStrategy(mesh, train_fn, eval_fn)
    if kind == "pmap":
        return PmapStrategy(mesh, train_fn, eval_fn)
    raise ValueError(f"config.parallel must be one of {STRATEGIES}, got {kind!r}")
