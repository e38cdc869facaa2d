"""train.py as a user runs it (a subprocess each): the error paths of a workdir that cannot be
written, a typo'd ``--config.x`` override, Ctrl-C, and a resume under a changed config.

Every run uses ``configs/spynet.py:test`` on one CPU device, with a persistent XLA compilation
cache private to this module, so that the train step is compiled once for all the runs.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "spynet.py") + ":test"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("xla_cache")
    e = dict(os.environ)
    e.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
        JAX_COMPILATION_CACHE_DIR=str(cache),
        PEANUT_XLA_CACHE=str(cache),  # train.py keeps its compile cache here, not in the home folder
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    return e


def cmd(workdir, *args):
    return [sys.executable, str(REPO / "train.py"), "--config", CONFIG, "--workdir", str(workdir), *args]


def run(env, workdir, *args, timeout=300, **kw):
    return subprocess.run(cmd(workdir, *args), cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, **kw)


def one_line(stderr: str) -> str:
    """The only line of ``stderr`` (asserts there is exactly one and no traceback)."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    return lines[0]


def steps_in(workdir) -> list[int]:
    d = pathlib.Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


# ------------------------------------------------------------------------------ (a) the workdir
def _immutable(path: pathlib.Path, on: bool) -> bool:
    if os.geteuid() != 0:  # a plain read-only folder stops a normal user
        path.chmod(0o555 if on else 0o755)
        return True
    try:  # root: only an immutable folder stops it
        r = subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True)
    except OSError:
        return False
    return r.returncode == 0


@pytest.mark.parametrize("kind", ["read-only", "read-only-parent", "under-a-file"])
def test_unwritable_workdir_is_one_line_before_compiling(env, tmp_path, kind):
    if kind == "under-a-file":
        (tmp_path / "file").write_text("x")
        workdir, locked = tmp_path / "file" / "w", None
    else:
        locked = tmp_path / "ro"
        locked.mkdir()
        workdir = locked if kind == "read-only" else locked / "w"
        if not _immutable(locked, True):
            pytest.skip("cannot make a folder read-only for this user here")
    try:
        # JAX_LOG_COMPILES prints a line for every compilation: one stderr line = none happened
        r = run(dict(env, JAX_LOG_COMPILES="1"), workdir)
    finally:
        if locked is not None:
            _immutable(locked, False)
    assert r.returncode == 1
    line = one_line(r.stderr)
    assert line.startswith("train.py: error:") and str(workdir) in line, line
    assert not (workdir / "checkpoints").exists()


# --------------------------------------------------------------------------- (c) typo'd override
@pytest.mark.parametrize(
    "override, words",
    [
        ("--config.optim.lrr=1e-3", ["unknown config field 'optim.lrr'", "'optim.lr'"]),
        ("--config.optimm.lr=1e-3", ["unknown config field 'optimm'", "'optim'"]),
        ("--config.lr=1e-3", ["unknown config field 'lr'", "'optim.lr'"]),
    ],
)
def test_unknown_override_is_one_clean_line(env, tmp_path, override, words):
    r = run(env, tmp_path / "w", override)
    assert r.returncode == 2
    line = one_line(r.stderr)
    assert line.startswith("train.py: error:") and all(w in line for w in words), line
    assert "\\n" not in line and "Did you mean" not in line, line  # no raw KeyError repr
    assert not (tmp_path / "w").exists()


def test_allow_config_change_help_lists_the_resume_free_keys(env):
    r = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--helpshort"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = " ".join(r.stdout.split())
    from peanut_jax.train.loop import RESUME_FREE_KEYS

    assert "--[no]allow-config-change" in text
    for key in RESUME_FREE_KEYS:
        assert key in text, key


# ---------------------------------------------------------------------------------- (b) Ctrl-C
def test_sigint_saves_a_checkpoint_and_the_same_command_resumes(env, tmp_path):
    w = tmp_path / "w"
    args = ["--config.train.log_every=1", "--config.train.checkpoint_every=1000"]
    p = subprocess.Popen(
        cmd(w, *args, "--config.train.num_steps=100000"),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (w / "metrics.jsonl").exists() or not (w / "metrics.jsonl").read_text().strip():
            assert p.poll() is None, p.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no training step within 240 s"
            time.sleep(0.1)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 130, err[-3000:]
    line = one_line(err)
    m = re.fullmatch(
        r"train\.py: interrupted at step (\d+); checkpoint saved in (\S+); run the "
        r"same command again to resume from step (\d+)",
        line,
    )
    assert m, line
    k = int(m.group(1))
    assert k >= 1 and m.group(3) == str(k)
    assert pathlib.Path(m.group(2)) == w / "checkpoints" / str(k)
    assert steps_in(w) == [k]  # checkpoint_every=1000: only the interrupt saved
    assert (w / "checkpoints" / str(k) / "default").is_dir()
    # the same command, only the number of steps changed (a loop-only key: no refusal)
    r = run(env, w, *args, f"--config.train.num_steps={k + 1}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"done at step {k + 1} (resumed from step {k}):" in r.stdout, r.stdout
    assert steps_in(w) == [k, k + 1]
    assert json.loads((w / "config.json").read_text())["train"]["num_steps"] == k + 1


# ------------------------------------------------------------------ (d) resume, changed config
def test_resume_under_a_changed_config_is_refused_unless_allowed(env, tmp_path):
    w = tmp_path / "w"
    r = run(env, w, "--config.train.num_steps=1")
    assert r.returncode == 0, r.stderr[-3000:]
    saved = (w / "config.json").read_text()
    # data.eval_seed: not a loop-only key, and it leaves the compiled train step unchanged
    changed = ["--config.data.eval_seed=7", "--config.data.batch_size=4"]
    r = run(dict(env, JAX_LOG_COMPILES="1"), w, *changed, "--config.train.num_steps=2")
    assert r.returncode == 1
    line = one_line(r.stderr)  # and nothing was compiled
    assert line.startswith("train.py: error:"), line
    for words in ("data.eval_seed 1000 -> 7", "data.batch_size 8 -> 4", "--allow-config-change", str(w)):
        assert words in line, line
    assert "train.num_steps" not in line  # loop-only: allowed, so not listed
    assert (w / "config.json").read_text() == saved
    assert steps_in(w) == [1]

    r = run(env, w, "--config.data.eval_seed=7", "--config.train.num_steps=2", "--allow-config-change")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "done at step 2 (resumed from step 1):" in r.stdout
    assert json.loads((w / "config.json").read_text())["data"]["eval_seed"] == 7
    assert (w / "config.step1.json").read_text() == saved  # the old config is kept
    assert steps_in(w) == [1, 2]
