"""train.py as a user runs it (a subprocess each): a typo'd ``--config.x`` override.

Every run uses ``configs/spynet.py:test`` on one CPU device, with a persistent XLA compilation
cache private to this module, so that the train step is compiled once for all the runs.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "spynet.py") + ":test"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("xla_cache")
    e = dict(os.environ)
    e.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1",
             JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return e


def cmd(workdir, *args):
    return [sys.executable, str(REPO / "train.py"), "--config", CONFIG, "--workdir", str(workdir),
            *args]


def run(env, workdir, *args, timeout=300, **kw):
    return subprocess.run(cmd(workdir, *args), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, **kw)


def one_line(stderr: str) -> str:
    """The only line of ``stderr`` (asserts there is exactly one and no traceback)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    return lines[0]


# --------------------------------------------------------------------------- (c) typo'd override
@pytest.mark.parametrize("override, words", [
    ("--config.optim.lrr=1e-3", ["unknown config field 'optim.lrr'", "'optim.lr'"]),
    ("--config.optimm.lr=1e-3", ["unknown config field 'optimm'", "'optim'"]),
    ("--config.lr=1e-3", ["unknown config field 'lr'", "'optim.lr'"]),
])
def test_unknown_override_is_one_clean_line(env, tmp_path, override, words):
    r = run(env, tmp_path / "w", override)
    assert r.returncode == 2
    line = one_line(r.stderr)
    assert line.startswith("train.py: error:") and all(w in line for w in words), line
    assert "\\n" not in line and "Did you mean" not in line, line      # no raw KeyError repr
    assert not (tmp_path / "w").exists()
