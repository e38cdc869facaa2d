"""Train a stage: ``python train.py --config configs/spynet.py:tiny --workdir runs/spynet``.

Overrides: ``--config.optim.lr=3e-4 --config.parallel=pmap --config.model.dtype=bfloat16``.
Re-running with the same ``--workdir`` resumes from its latest checkpoint; a config that differs
from the workdir's ``config.json`` is refused (the message lists the fields) unless only the
loop-only keys changed or ``--allow-config-change`` is given.  Ctrl-C (SIGINT) finishes the current
step, saves a checkpoint at it and exits with status 130 (a second Ctrl-C quits at once; in
multi-process runs SIGINT just stops the process, resume is from the last periodic checkpoint).
Compiled programs are kept in JAX's persistent compilation cache (``$PEANUT_HOME/xla_cache``, or
``$PEANUT_XLA_CACHE``), so a resumed or repeated run skips most of the compilation;
``--no-compile-cache`` (or ``PEANUT_XLA_CACHE=0``) turns it off.

Multi-host (TPU pod slices, GPU clusters, several CPU processes): every process runs the same
command.  ``jax.distributed.initialize`` is called first when ``--coordinator_address`` /
``--num_processes`` / ``--process_id`` are given, or the environment variables
``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` are set, or (with
``--distributed=auto``, the default) a multi-process cluster is detected (Cloud TPU pod slice,
SLURM with several tasks, Open MPI), in which case JAX fills in the parameters itself;
``--distributed=on`` always initialises, ``off`` never.  Each process then reads its own share
of every batch, and only process 0 logs and writes metrics.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/spynet.py:tiny.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl and config.json.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs).")
flags.DEFINE_integer("process_id", None, "Index of this process (multi-process runs).")
flags.DEFINE_enum(
    "distributed",
    "auto",
    ["auto", "on", "off"],
    "Call jax.distributed.initialize: auto = when flags/env/cluster say so.",
)
# keep in sync with peanut_jax.train.loop.RESUME_FREE_KEYS (tests/test_train_cli.py checks)
flags.DEFINE_bool(
    "allow-config-change",
    False,
    "Resume a --workdir whose config.json differs from this config (the old one is kept as "
    "config.step<N>.json).  Not needed when only these loop-only keys differ: "
    "train.num_steps, train.log_every, train.eval_every, train.checkpoint_every, "
    "train.keep_checkpoints, train.async_checkpoint, train.prefetch, train.data_workers, train.progress, "
    "train.tensorboard, train.eval_at_start, train.debug_nan_at_step (a schedule defined over "
    "train.num_steps, e.g. cosine, follows the new length from the resume step on).",
)
flags.DEFINE_bool(
    "no-compile-cache",
    False,
    "Do not keep compiled programs between runs (default: JAX's persistent compilation cache in "
    "$PEANUT_HOME/xla_cache, or $PEANUT_XLA_CACHE; same as PEANUT_XLA_CACHE=0).",
)
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def _env_int(name):
    v = os.environ.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"environment variable {name}={v!r} is not an integer") from None


def _cluster_detected() -> bool:
    """A multi-process launcher JAX can read its parameters from."""
    env = os.environ
    hosts = env.get("TPU_WORKER_HOSTNAMES", "")
    if "," in hosts or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return True
    if "SLURM_JOB_ID" in env and int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1")) or 1) > 1:
        return True
    return int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1


def maybe_initialize_distributed(mode: str, coordinator_address=None, num_processes=None, process_id=None) -> bool:
    """Call ``jax.distributed.initialize`` when asked to (see the module docstring)."""
    import jax

    addr = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    nproc = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    pid = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    explicit = any(v is not None for v in (addr, nproc, pid))
    if mode == "off":
        return False
    if mode == "on" or explicit or (mode == "auto" and _cluster_detected()):
        jax.distributed.initialize(coordinator_address=addr, num_processes=nproc, process_id=pid)
        return True
    return False


def _fail(msg, code: int = 1):
    lines = [ln for ln in str(msg).splitlines() if ln.strip()]
    if any(ln.lstrip().startswith("Traceback") for ln in lines):  # keep the head and the cause
        lines = [lines[0].split("Traceback")[0], lines[-1]]
    print("train.py: error: " + " ".join(" ".join(lines).split()), file=sys.stderr)
    sys.exit(code)


def _exc_text(e: BaseException) -> str:
    """The message of ``e`` (a KeyError's str() is the repr of its message)."""
    if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
        return e.args[0]
    return str(e)


def _config_arg(argv):
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            return a[len("--config=") :]
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _unknown_override(argv):
    """One line naming the first ``--config.a.b`` override that names no field of the config
    (with close matches), or None when they all exist (or the config cannot be loaded here)."""
    spec = _config_arg(argv)
    if not spec:
        return None
    path, _, arg = spec.partition(":")
    try:
        mod_spec = importlib.util.spec_from_file_location("_train_py_config", path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
        config = module.get_config(*([arg] if arg else []))
        leaves = list(config.to_dict().items())
    except Exception:  # noqa: BLE001 -- the caller falls back to the original error
        return None

    def paths(tree, prefix=""):
        for k, v in tree:
            if isinstance(v, dict) and v:
                yield from paths(v.items(), f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}"

    all_paths = list(paths(leaves))
    for a in argv[1:]:
        if not a.startswith("--config."):
            continue
        field = a[len("--config.") :].split("=", 1)[0]
        if "[" in field:
            return None
        node, parts = config, field.split(".")
        for i, part in enumerate(parts):
            here = ".".join(parts[: i + 1])
            if not hasattr(node, "keys"):
                return f"config field {'.'.join(parts[:i])!r} has no sub-field {part!r} (in {a})"
            if part in node.keys():
                node = node[part]
                continue
            prefix = ".".join(parts[:i])
            near = [
                f"{prefix}.{k}" if prefix else k
                for k in difflib.get_close_matches(part, list(node.keys()), n=3, cutoff=0.6)
            ]
            if not near:  # the right name in another group, e.g. --config.lr for optim.lr
                near = [p for p in all_paths if p.rsplit(".", 1)[-1] == part][:3]
            hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
            return f"unknown config field {here!r} (in {a}){hint}"
    return None


def parse_flags(argv):
    """absl flag parsing, with config-file and ``--config.*`` override errors as one line."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        _fail(f"{str(e).strip()} (see --helpshort)", 2)
    except (AttributeError, KeyError, TypeError, ValueError, OSError) as e:
        unknown = _unknown_override(argv) if isinstance(e, (AttributeError, KeyError)) else None
        if unknown:
            _fail(unknown, 2)
        overrides = [a for a in argv[1:] if a.startswith("--config.")]
        _fail(f"bad --config or override ({' '.join(overrides) or 'none'}): {_exc_text(e)}", 2)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import jax

    from peanut_jax.pipeline.common import enable_compilation_cache
    from peanut_jax.train.loop import NonFiniteLossError, TrainingInterrupted, WorkdirError, train_and_evaluate

    try:
        config = FLAGS.config
        config.get("task")  # a config file that failed to load raises here
    except (OSError, AttributeError, KeyError, ValueError) as e:
        _fail(f"cannot load --config: {e}", 2)
    try:
        maybe_initialize_distributed(
            FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
        )
        enable_compilation_cache(off=FLAGS["no-compile-cache"].value)
        if jax.process_index() != 0 or not FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)  # the progress bar reports; -v 0 for INFO logs
        result = train_and_evaluate(config, FLAGS.workdir, allow_config_change=FLAGS["allow-config-change"].value)
    except (ValueError, FileNotFoundError, NonFiniteLossError, WorkdirError) as e:
        _fail(e)
    except TrainingInterrupted as e:
        latest = e.step if e.saved else e.latest
        resume = (
            f"run the same command again to resume from step {latest}"
            if latest is not None
            else f"no checkpoint in {e.checkpoint_dir} yet"
        )
        print(f"train.py: {e}; {resume}", file=sys.stderr, flush=True)
        sys.exit(130)
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the loop could catch it
        print(
            "train.py: interrupted before a checkpoint of this run's last steps was saved; run "
            f"the same command again to resume from the latest checkpoint in {FLAGS.workdir} "
            "(if any)",
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        os._exit(130)  # now: an interpreter shutdown under a half-done compilation can crash
    if jax.process_index() == 0:
        summary = {
            **{f"train/{k}": v for k, v in result.train_metrics.items()},
            **{f"eval/{k}": v for k, v in result.eval_metrics.items()},
        }
        resumed = f" (resumed from step {result.start_step})" if result.start_step else ""
        print(
            f"done at step {result.step}{resumed}: " + ", ".join(f"{k}={v:.5g}" for k, v in summary.items()), flush=True
        )


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
