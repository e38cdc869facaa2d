"""The generic training loop: ``train_and_evaluate(config, workdir)``.

One loop for every stage; a stage plugs in as a task (``peanut_jax/train/tasks/<name>.py``, the
protocol is documented in ``docs/training.md``).  What the loop does:

1. builds a ``('data',)`` mesh over all devices of all processes and the step wrapper chosen by
   ``config.parallel`` (``'mesh'``: ``jit`` + ``NamedSharding``; ``'pmap'``: ``jax.pmap`` +
   ``lax.pmean``; both give the single-device numbers);
2. checks that the workdir can be created and written (:class:`WorkdirError` otherwise, before
   anything is compiled); when it holds a checkpoint, compares the config with its ``config.json``
   and refuses a resume under a different config (:class:`ConfigChangedError`) unless the only
   differences are in :data:`RESUME_FREE_KEYS` or ``allow_config_change``;
   then resumes from the latest Orbax checkpoint in ``<workdir>/checkpoints`` (restored straight into
   replicated shardings), or initialises with ``jit(task.init_state, out_shardings=P())``;
3. runs steps ``start+1 .. train.num_steps``: host batches from ``task.train_batches`` (this
   process's rows, a pure function of the step; prefetched on a background thread) are stitched
   into global arrays, the step is ``jit(..., donate_argnums=0)``;
4. checks every step's metrics for NaN/inf (one step behind, so the host never stalls the
   device; synchronously before any checkpoint) and raises :class:`NonFiniteLossError` naming
   the step and the offending metrics; nothing after the bad step is saved;
5. logs the mean training metrics every ``train.log_every`` steps with steps/s (process 0:
   ``metrics.jsonl`` + TensorBoard if ``tensorboardX`` is importable, a tqdm bar with ETA);
6. evaluates ``task.eval_step`` on ``task.eval_batches`` every ``train.eval_every`` steps (and at
   step 0 of a fresh run, and at the end);
7. saves every ``train.checkpoint_every`` steps and at the end (async, keep
   ``train.keep_checkpoints``), and waits for the writes before returning;
8. on SIGINT (Ctrl-C; single-process runs, main thread) finishes the current step, saves a
   checkpoint at it, waits for the write and raises :class:`TrainingInterrupted`; a second SIGINT
   interrupts at once (plain ``KeyboardInterrupt``, nothing more saved).

Generic config keys: ``task``, ``seed``, ``parallel``, ``data.batch_size``, ``train.{num_steps,
log_every, eval_every, checkpoint_every, keep_checkpoints, async_checkpoint, prefetch, progress,
tensorboard, eval_at_start, debug_nan_at_step}``.  ``debug_nan_at_step = k > 0`` replaces the
floating inputs of step ``k`` by NaN (to exercise the guard).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import pathlib
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from peanut_jax.data.prefetch import prefetch
from peanut_jax.train import checkpoint as ckpt_lib
from peanut_jax.train import logging as log_lib
from peanut_jax.train import parallel
from peanut_jax.train import tasks as tasks_lib
from peanut_jax.train.config import config_get


class NonFiniteLossError(RuntimeError):
    """A training metric became NaN or infinite; the message names the step and the metrics."""


class WorkdirError(OSError):
    """The workdir cannot be created or written to; the message names it."""


class ConfigChangedError(ValueError):
    """Resuming a workdir whose ``config.json`` differs from the config (outside
    :data:`RESUME_FREE_KEYS`); the message lists the fields."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT stopped training.  ``step``: the last completed step; ``saved``: whether a
    checkpoint at ``step`` was written (in ``checkpoint_dir``); ``latest``: the newest complete
    checkpoint step (None when there is none)."""

    def __init__(self, step: int, checkpoint_dir, saved: bool, latest: int | None):
        self.step, self.checkpoint_dir, self.saved, self.latest = step, checkpoint_dir, saved, latest
        if saved:
            msg = f"interrupted at step {step}; checkpoint saved in {checkpoint_dir / str(step)}"
        else:
            msg = f"interrupted before step {step + 1}; nothing new to save"
        super().__init__(msg)

    def __str__(self) -> str:
        return str(self.args[0])


@dataclasses.dataclass
class TrainResult:
    state: Any  # canonical TrainState (global arrays replicated over the mesh)
    step: int  # last completed step
    train_metrics: dict  # last logged training metrics (interval means)
    eval_metrics: dict  # last evaluation (empty when none ran)
    steps_per_sec: float | None  # mean over the run, excluding the first (compiling) step and eval
    trace_count: int  # times the (cached) train step was traced: 1 = never retraced
    start_step: int = 0  # the step this run started from (> 0: resumed)


CONFIG_FILE = "config.json"


def _config_json(config) -> str:
    to_json = getattr(config, "to_json_best_effort", None) or config.to_json
    return to_json(indent=2, sort_keys=True) + "\n"


def _write_config(text: str, workdir: pathlib.Path) -> None:
    tmp = workdir / (CONFIG_FILE + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, workdir / CONFIG_FILE)


def prepare_workdir(workdir: pathlib.Path) -> None:
    """Create ``workdir`` and check that it (and its ``checkpoints`` folder, when present) can be
    written to; :class:`WorkdirError` naming the folder otherwise."""
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise WorkdirError(f"workdir {workdir} exists and is not a directory") from None
    except OSError as e:
        raise WorkdirError(f"cannot create workdir {workdir}: {e.strerror or e}") from None
    for d in (workdir, ckpt_lib.checkpoint_dir(workdir)):
        if d != workdir and not d.is_dir():
            continue
        probe = d / f".write_test.{os.getpid()}.{jax.process_index()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            what = "workdir" if d == workdir else "checkpoint folder"
            raise WorkdirError(f"{what} {d} is not writable: {e.strerror or e}") from None


def _flatten(tree, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


_ABSENT = "(absent)"


def config_changes(saved: dict, current: dict) -> list[tuple[str, Any, Any]]:
    """``(dotted key, saved value, current value)`` for every field that differs between two
    configs given as JSON-like dicts (a field missing on one side shows as ``'(absent)'``)."""
    a, b = _flatten(saved), _flatten(current)
    return [
        (k, a.get(k, _ABSENT), b.get(k, _ABSENT))
        for k in sorted(set(a) | set(b))
        if a.get(k, _ABSENT) != b.get(k, _ABSENT)
    ]


def _fmt_changes(changes, limit: int = 6) -> str:
    def v(x):
        return x if x is _ABSENT else json.dumps(x)

    shown = [f"{k} {v(old)} -> {v(new)}" for k, old, new in changes[:limit]]
    more = len(changes) - limit
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _nonfinite(metrics: dict) -> dict:
    bad = {}
    for k, v in metrics.items():
        try:
            if not math.isfinite(float(v)):
                bad[k] = float(v)
        except (TypeError, ValueError):
            continue
    return bad


def _first_batch(task, config, process_index, process_count):
    fn = getattr(task, "sample_batch", None)
    if callable(fn):
        batch = fn(config)
    else:
        batch = next(iter(task.train_batches(config, 0, process_index, process_count)))
    return jax.tree.map(lambda x: np.asarray(x)[:1], batch)


# In-process cache of compiled programs, keyed by (task, full config, devices): calling
# train_and_evaluate again with an identical config (a resume in the same process, notebooks,
# tests) reuses the compiled init and step instead of compiling them again.
_COMPILED: collections.OrderedDict[tuple, tuple] = collections.OrderedDict()
_COMPILED_MAX = 8
# Init runs once, so on CPU it is compiled without the expensive LLVM passes (about half the
# compile time; the values are integer threefry + a few float ops, identical in every process).
_FAST_COMPILE_CPU = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


# ``train.*`` keys that only steer the host-side loop: they never change a compiled program.
LOOP_ONLY_KEYS = (
    "log_every",
    "eval_every",
    "checkpoint_every",
    "keep_checkpoints",
    "async_checkpoint",
    "prefetch",
    "data_workers",
    "progress",
    "tensorboard",
    "eval_at_start",
    "debug_nan_at_step",
)
# Config fields a resume may change without ``allow_config_change``: the loop-only keys and the
# number of steps (to extend or shorten a run; schedules defined over ``num_steps``, e.g. cosine,
# then follow the new length from the resume step on).  train.py's --allow-config-change help
# lists them too.
RESUME_FREE_KEYS = tuple(f"train.{k}" for k in ("num_steps",) + LOOP_ONLY_KEYS)


class _SigintFlag:
    """While active (main thread, single process, SIGINT not ignored): the first SIGINT only sets
    a flag, which the loop checks between steps, and puts the previous handler back, so that a
    second SIGINT raises ``KeyboardInterrupt`` at once."""

    def __init__(self, enabled: bool):
        self._event = threading.Event()
        self._prev = None
        self._enabled = enabled

    def __enter__(self):
        if self._enabled and threading.current_thread() is threading.main_thread():
            prev = signal.getsignal(signal.SIGINT)
            if prev not in (signal.SIG_IGN, None):
                self._prev = prev
                signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self._event.set()
        if self._prev is not None:
            signal.signal(signal.SIGINT, self._prev)

    def is_set(self) -> bool:
        return self._event.is_set()

    def __exit__(self, *exc):
        if self._prev is not None:
            signal.signal(signal.SIGINT, self._prev)
            self._prev = None


def _run_key(task, config, mesh) -> tuple:
    d = config.to_dict()
    if isinstance(d.get("train"), dict):
        d["train"] = {k: v for k, v in d["train"].items() if k not in LOOP_ONLY_KEYS}
    return (
        id(task),
        json.dumps(d, sort_keys=True, default=repr),
        tuple(d_.id for d_ in mesh.devices.flat),
        jax.process_index(),
        jax.process_count(),
    )


def _memo(key: tuple, task, build):
    hit = _COMPILED.get(key)
    if hit is not None and hit[0] is task:
        _COMPILED.move_to_end(key)
        return hit[1]
    value = build()
    _COMPILED[key] = (task, value)
    while len(_COMPILED) > _COMPILED_MAX:
        _COMPILED.popitem(last=False)
    return value


def _compile_init(init_fn, mesh):
    jitted = jax.jit(init_fn, out_shardings=parallel.replicated(mesh))
    if all(d.platform == "cpu" for d in mesh.devices.flat):
        return jitted.lower().compile(compiler_options=_FAST_COMPILE_CPU)
    return jitted


def _init_fn(task, config):
    rng = jax.random.PRNGKey(int(config.seed))
    sample = _first_batch(task, config, jax.process_index(), jax.process_count())
    return lambda: task.init_state(rng, config, sample)


def abstract_train_state(task, config, mesh):
    """``jax.eval_shape`` of the task's initial state (shapes/dtypes, no compilation)."""
    return _memo(("abstract",) + _run_key(task, config, mesh), task, lambda: jax.eval_shape(_init_fn(task, config)))


def init_train_state(task, config, mesh):
    """The task's initial state as global arrays replicated over ``mesh`` (compiled once per
    (task, config, devices) in this process)."""
    init = _memo(("init",) + _run_key(task, config, mesh), task, lambda: _compile_init(_init_fn(task, config), mesh))
    return init()


def build_strategy(task, config, mesh):
    """The step wrapper ``config.parallel`` selects, around the task's train/eval steps
    (cached: an identical (task, config, devices) reuses the compiled step)."""
    return _memo(
        ("strategy",) + _run_key(task, config, mesh),
        task,
        lambda: parallel.make_strategy(config.parallel, mesh, make_train_fn(task, config), make_eval_fn(task, config)),
    )


def _poison(host_batch):
    """``train.debug_nan_at_step``: the floating inputs of that step become NaN (host side, so
    the compiled step is the normal one)."""

    def bad(x):
        x = np.asarray(x)
        return np.full_like(x, np.nan) if np.issubdtype(x.dtype, np.floating) else x

    return jax.tree.map(bad, host_batch)


def make_train_fn(task, config):
    """The step the strategies wrap: the task's step, then ``step + 1`` and float32 metrics."""

    def train_fn(state, batch, grad_reduce):
        new_state, metrics = task.train_step(state, batch, config, grad_reduce)
        if "loss" not in metrics:
            raise KeyError("train_step metrics must contain 'loss'")
        new_state = new_state.replace(step=state.step + 1)
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        return new_state, metrics

    return train_fn


def make_eval_fn(task, config):
    def eval_fn(state, batch):
        return {k: jnp.asarray(v, jnp.float32) for k, v in task.eval_step(state, batch, config).items()}

    return eval_fn


def evaluate(
    strategy, task, dev_state, config, process_index: int | None = None, process_count: int | None = None
) -> dict:
    """Mean of ``task.eval_step`` over ``task.eval_batches`` (batches weighted by their rows)."""
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    sums: dict[str, float] = {}
    total = 0
    for host_batch in task.eval_batches(config, pi, pc):
        rows = int(jax.tree.leaves(host_batch)[0].shape[0]) * pc
        m = parallel.to_host(strategy.eval_step(dev_state, strategy.put_batch(host_batch)))
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + float(v) * rows
        total += rows
    if total == 0:
        return {}
    return {k: v / total for k, v in sums.items()}


def train_and_evaluate(
    config,
    workdir: str | os.PathLike,
    *,
    task=None,
    devices=None,
    stop_at: int | None = None,
    allow_config_change: bool = False,
    handle_sigint: bool = True,
) -> TrainResult:
    """Train ``config.task`` in ``workdir`` (resuming from its latest checkpoint).

    ``task``: a task object/module overriding ``config.task``; ``devices``: the devices to use
    (default all; tests pass ``jax.devices()[:1]`` for a one-device reference); ``stop_at``:
    stop after this step as if killed (no final checkpoint; the in-flight ones complete);
    ``allow_config_change``: resume even when ``config`` differs from the workdir's
    ``config.json`` outside :data:`RESUME_FREE_KEYS` (the old file is kept as
    ``config.step<N>.json``); ``handle_sigint``: save and raise :class:`TrainingInterrupted`
    on SIGINT (single-process runs; otherwise SIGINT keeps its usual meaning).
    """
    task = tasks_lib.get(config.task) if task is None else task
    tasks_lib.check(task, getattr(task, "__name__", "task"))
    workdir = pathlib.Path(workdir).absolute()
    pi, pc = jax.process_index(), jax.process_count()
    is_main = pi == 0
    tcfg = config.train
    num_steps = int(tcfg.num_steps)
    log_every = max(int(config_get(tcfg, "log_every", 50)), 1)
    eval_every = int(config_get(tcfg, "eval_every", 0))
    if num_steps < 0:
        raise ValueError(f"config.train.num_steps must be >= 0, got {num_steps}")
    if config.parallel not in parallel.STRATEGIES:
        raise ValueError(f"config.parallel must be one of {parallel.STRATEGIES}, got {config.parallel!r}")

    mesh = parallel.make_mesh(devices)
    parallel.local_batch_size(int(config.data.batch_size), mesh, "config.data.batch_size")
    if int(config.data.batch_size) % pc:
        raise ValueError(
            f"config.data.batch_size={config.data.batch_size} must be a multiple of the process count ({pc})"
        )

    prepare_workdir(workdir)
    ckpt = ckpt_lib.Checkpointer(
        ckpt_lib.checkpoint_dir(workdir),
        max_to_keep=int(config_get(tcfg, "keep_checkpoints", 3)),
        save_interval_steps=int(config_get(tcfg, "checkpoint_every", 1000)),
        async_save=bool(config_get(tcfg, "async_checkpoint", True)),
    )
    writer = progress = batches = None
    interrupt = _SigintFlag(enabled=handle_sigint and pc == 1)
    try:
        interrupt.__enter__()
        latest = ckpt.latest_step()
        config_text = _config_json(config)
        changed_note = _check_resume_config(workdir, latest, config_text, allow_config_change, write=is_main)
        if is_main:
            _write_config(config_text, workdir)
        abstract = abstract_train_state(task, config, mesh)
        if latest is not None:
            state = ckpt.restore(latest, ckpt_lib.abstract_like(abstract, parallel.replicated(mesh)))
            start = int(parallel.to_host(state.step))
            if start != latest:
                raise ValueError(f"checkpoint {latest} in {ckpt.directory} holds step {start}")
        else:
            state = init_train_state(task, config, mesh)
            start = 0
        n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))
        progress = log_lib.Progress(num_steps, start, enabled=is_main and bool(config_get(tcfg, "progress", True)))
        if is_main:
            describe = getattr(task, "describe", None)
            msg = (
                f"{describe(config) if callable(describe) else getattr(task, '__name__', task)}"
                f": {n_params:,} params, {mesh.devices.size} device(s) on {pc} process(es), "
                f"{config.parallel}, "
                + (f"resuming at step {start}" if start else "fresh start")
                + f" -> {workdir}"
                + (f" (config changed: {changed_note})" if changed_note else "")
            )
            logging.info(msg)
            progress.write(msg)

        strategy = build_strategy(task, config, mesh)
        writer = log_lib.MetricWriter(
            workdir, enabled=is_main, resume_step=start, tensorboard=bool(config_get(tcfg, "tensorboard", True))
        )
        last_eval: dict = {}
        last_train: dict = {}
        end = num_steps if stop_at is None else min(num_steps, int(stop_at))

        with strategy.context():
            dev_state = strategy.put_state(state)
            del state
            if (
                start == 0
                and eval_every > 0
                and bool(config_get(tcfg, "eval_at_start", True))
                and not interrupt.is_set()
            ):
                last_eval = evaluate(strategy, task, dev_state, config, pi, pc)
                writer.write(0, last_eval, "eval")
                if is_main:
                    logging.info("eval @0: %s", _fmt(last_eval))
                    progress.write(f"eval @0: {_fmt(last_eval)}")
            batches = prefetch(
                task.train_batches(config, start, pi, pc), int(config_get(tcfg, "prefetch", 2)), "train-batches"
            )
            acc: dict[str, float] = {}
            acc_n = 0
            pending = None  # (step, device metrics) not yet checked
            t_first = None  # wall time when the first step of this run finished
            t_excl = 0.0  # eval time to exclude from steps/s
            t_log, steps_log, excl_log = None, 0, 0.0

            def consume(step, dev_metrics):
                nonlocal acc_n
                m = parallel.to_host(dev_metrics)
                bad = _nonfinite(m)
                if bad:
                    ckpt.wait_until_finished()
                    latest_ok = ckpt.latest_step()
                    shown = {"loss": m.get("loss"), **bad}
                    raise NonFiniteLossError(
                        f"non-finite training metrics at step {step}: "
                        + ", ".join(f"{k}={v}" for k, v in shown.items())
                        + "; stopping (last checkpoint: "
                        + (f"step {latest_ok})" if latest_ok is not None else "none)")
                    )
                for k, v in m.items():
                    acc[k] = acc.get(k, 0.0) + float(v)
                acc_n += 1

            step = start

            def stop_if_interrupted():
                """At a step boundary after SIGINT: save this step, then raise."""
                nonlocal pending, acc_n
                if not interrupt.is_set():
                    return
                if step > start:
                    if pending is not None:
                        consume(*pending)  # never save a non-finite state
                        pending = None
                    if acc_n:  # the partial logging interval
                        writer.write(step, {k: v / acc_n for k, v in acc.items()}, "train")
                        acc.clear()
                        acc_n = 0
                    ckpt.save(step, strategy.get_state(dev_state), force=True)
                    ckpt.wait_until_finished()
                raise TrainingInterrupted(step, ckpt.directory, saved=step > start, latest=ckpt.latest_step())

            stop_if_interrupted()
            nan_step = int(config_get(tcfg, "debug_nan_at_step", -1))
            for step in range(start + 1, end + 1):
                host_batch = next(batches)
                if step == nan_step:
                    host_batch = _poison(host_batch)
                with jax.profiler.StepTraceAnnotation("train", step_num=step):
                    dev_state, dev_metrics = strategy.train_step(dev_state, strategy.put_batch(host_batch))
                if pending is not None:
                    consume(*pending)
                pending = (step, dev_metrics)
                is_log = step % log_every == 0 or step == end
                is_eval = eval_every > 0 and (step % eval_every == 0 or step == num_steps)
                is_save = ckpt.should_save(step) or step == num_steps
                if t_first is None or is_log or is_eval or is_save:
                    consume(*pending)
                    pending = None
                if t_first is None:
                    t_first = t_log = time.perf_counter()
                    steps_log, excl_log = 0, 0.0
                else:
                    steps_log += 1
                if is_log:
                    now = time.perf_counter()
                    last_train = {k: v / max(acc_n, 1) for k, v in acc.items()}
                    if steps_log > 0 and now - t_log - excl_log > 0:
                        last_train["steps_per_sec"] = steps_log / (now - t_log - excl_log)
                    writer.write(step, last_train, "train")
                    acc.clear()
                    acc_n = 0
                    t_log, steps_log, excl_log = now, 0, 0.0
                if is_save:
                    ckpt.save(step, strategy.get_state(dev_state), force=step == num_steps)
                if is_eval:
                    t0 = time.perf_counter()
                    last_eval = evaluate(strategy, task, dev_state, config, pi, pc)
                    writer.write(step, last_eval, "eval")
                    if is_main:
                        logging.info("eval @%d: %s", step, _fmt(last_eval))
                        progress.write(f"eval @{step}: {_fmt(last_eval)}")
                    dt = time.perf_counter() - t0
                    t_excl += dt
                    excl_log += dt
                progress.update(1, **({"loss": last_train.get("loss")} if "loss" in last_train else {}))
                if step < end:
                    stop_if_interrupted()
            if pending is not None:
                consume(*pending)
            sps = None
            if t_first is not None and step > start + 1:
                sps = (step - start - 1) / max(time.perf_counter() - t_first - t_excl, 1e-9)
            final_state = strategy.get_state(dev_state)
            ckpt.wait_until_finished()
        return TrainResult(
            state=final_state,
            step=step,
            train_metrics=last_train,
            eval_metrics=last_eval,
            steps_per_sec=sps,
            trace_count=strategy.trace_count,
            start_step=start,
        )
    finally:
        interrupt.__exit__(None, None, None)
        if batches is not None:
            batches.close()
        if progress is not None:
            progress.close()
        if writer is not None:
            writer.close()
        ckpt.close()


def _check_resume_config(workdir: pathlib.Path, latest: int | None, config_text: str, allow: bool, write: bool) -> str:
    """Compare the config with the ``config.json`` of a workdir that holds a checkpoint.

    Raises :class:`ConfigChangedError` when fields outside :data:`RESUME_FREE_KEYS` differ and
    ``allow`` is false; with ``allow`` the old file is kept as ``config.step<latest>.json``
    (``write``: on this process).  Returns a description of the accepted changes ('' if none).
    """
    path = workdir / CONFIG_FILE
    if latest is None or not path.exists():
        return ""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        logging.warning("cannot compare with %s (%s); it will be replaced", path, e)
        return ""
    changes = config_changes(saved, json.loads(config_text))
    if not changes:
        return ""
    strict = [c for c in changes if c[0] not in RESUME_FREE_KEYS]
    if strict and not allow:
        raise ConfigChangedError(
            f"workdir {workdir} holds a run (checkpoint at step {latest}) with a different "
            f"config: {_fmt_changes(strict)}; resume with the same config, pass "
            "--allow-config-change (allow_config_change=True) to resume anyway, or use a new "
            "--workdir"
        )
    if strict:
        keep = workdir / f"config.step{latest}.json"
        if write and not keep.exists():
            os.replace(path, keep)
        logging.warning(
            "resuming %s at step %d under a changed config (%s); the previous config is kept as %s",
            workdir,
            latest,
            _fmt_changes(strict),
            keep.name,
        )
    return _fmt_changes(changes)


def _fmt(m: dict) -> str:
    return ", ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items())
