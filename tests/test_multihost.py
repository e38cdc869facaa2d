"""Multi-process training on one machine: 2 CPU processes x 2 devices on 127.0.0.1 (gloo).

``train.py`` is launched twice with ``--coordinator_address/--num_processes/--process_id``; each
process feeds only its own rows of every global batch.  The result must equal a single-process
run on 4 devices (same global mesh size, same global batches), and only process 0 may write the
metrics file.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from peanut_jax.train import load_tree
from peanut_jax.train import logging as log_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 900
STEPS = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(num_devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS",) and not k.startswith("JAX_")}
    env.update(
        JAX_PLATFORMS="cpu",
        JAX_NUM_CPU_DEVICES=str(num_devices),
        JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
        PYTHONUNBUFFERED="1",
    )
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def _cmd(workdir: pathlib.Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "train.py"),
        "--config",
        str(REPO / "configs" / "spynet.py") + ":test",
        "--workdir",
        str(workdir),
        f"--config.train.num_steps={STEPS}",
        "--config.train.log_every=1",
        f"--config.train.checkpoint_every={STEPS}",
        *extra,
    ]


def _wait(procs, deadline):
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"multi-process run exceeded {TIMEOUT_S}s")
        outs.append((p.returncode, out, err))
    return outs


def test_two_processes_equal_one_process_with_the_same_devices(tmp_path):
    import jax

    if not hasattr(jax.config, "jax_cpu_collectives_implementation"):
        pytest.skip("this jax has no CPU collectives option (gloo)")
    port = _free_port()
    deadline = time.monotonic() + TIMEOUT_S
    multi = [
        subprocess.Popen(
            _cmd(
                tmp_path / "multi", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"
            ),
            cwd=REPO,
            env=_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    single = subprocess.Popen(
        _cmd(tmp_path / "single"), cwd=REPO, env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    results = _wait(multi + [single], deadline)
    for (rc, _out, err), who in zip(results, ("process 0", "process 1", "single process")):
        if rc != 0 and "gloo" in err.lower() and ("not" in err.lower() or "unavailable" in err.lower()):
            pytest.skip(f"gloo CPU collectives unavailable: {err.strip().splitlines()[-1]}")
        assert rc == 0, f"{who} failed (rc={rc}):\n{err[-3000:]}"
    # both processes finished; only process 0 printed the summary and wrote metrics
    assert f"done at step {STEPS}" in results[0][1]
    assert "done at step" not in results[1][1]
    recs = log_lib.read_jsonl(tmp_path / "multi")
    assert [r["step"] for r in recs if r["split"] == "train"] == list(range(1, STEPS + 1))
    # the 2-process run is the 4-device single-process run
    single_recs = [r for r in log_lib.read_jsonl(tmp_path / "single") if r["split"] == "train"]
    for a, b in zip(recs, single_recs):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 * max(1.0, abs(b["loss"]))
    t_multi, t_single = load_tree(tmp_path / "multi"), load_tree(tmp_path / "single")
    assert int(t_multi["step"]) == int(t_single["step"]) == STEPS
    import jax.tree_util as jtu

    la, lb = jtu.tree_leaves(t_multi["params"]), jtu.tree_leaves(t_single["params"])
    assert len(la) == len(lb) == 60
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(la, lb))
    print(f"2 processes x 2 devices vs 1 process x 4 devices: params max |diff| {diff:.2e}")
    assert diff < 2e-6, diff
