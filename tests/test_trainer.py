"""The generic trainer, proven on SPyNet (8 fake CPU devices from conftest.py).

Compilations dominate the cost, so the runs are shared through module-scoped fixtures:
``trajectories`` (1-device mesh, 8-device mesh and 8-device pmap steps from one initial state)
and ``full_run`` (train.py's loop, 8 devices, with checkpoints).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from peanut_jax.train import (
    NonFiniteLossError,
    build_optimizer,
    build_schedule,
    cosine_restart_schedule,
    load_tree,
    loop,
    parallel,
    tasks,
    train_and_evaluate,
)
from peanut_jax.train import logging as log_lib
from peanut_jax.train.tasks import spynet as spynet_task

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from configs import spynet as spynet_config  # noqa: E402

STEPS = 3


def make_config(variant="test", **overrides):
    """configs/spynet.py:<variant> with dotted-key overrides, locked again."""
    c = spynet_config.get_config(variant)
    with c.unlocked():
        for key, value in overrides.items():
            node = c
            *path, last = key.split("__")
            for p in path:
                node = node[p]
            node[last] = value
    return c


def tree_max_diff(a, b) -> float:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))) for x, y in zip(la, lb))


def host(tree):
    return jax.tree.map(lambda x: np.array(x), parallel.to_host_local(tree))


# ---------------------------------------------------------------------------- step equivalence
@pytest.fixture(scope="module")
def trajectories():
    """params/metrics after STEPS steps for each of mesh x1, mesh x8, pmap x8 (same init)."""
    cfg = make_config()  # the config of ``full_run``: its compiled init and 8-device step are reused
    task = spynet_task
    batches = list(zip(range(STEPS), task.train_batches(cfg, 0, 0, 1)))
    init = host(loop.init_train_state(task, cfg, parallel.make_mesh()))
    out = {}
    for name, kind, n_dev in (("mesh1", "mesh", 1), ("mesh8", "mesh", 8), ("pmap8", "pmap", 8)):
        mesh = parallel.make_mesh(jax.devices()[:n_dev])
        strat = loop.build_strategy(task, make_config(parallel=kind), mesh)
        state = strat.put_state(parallel.replicate_host_tree(init, mesh))
        metrics = []
        with strat.context():
            for _, b in batches:
                state, m = strat.train_step(state, strat.put_batch(b))
                metrics.append(parallel.to_host(m))
        final = host(strat.get_state(state))
        out[name] = dict(state=final, metrics=metrics, traces=strat.trace_count)
    out["init"] = init
    return out


def test_mesh_8_devices_equals_1_device(trajectories):
    one, eight = trajectories["mesh1"], trajectories["mesh8"]
    assert int(eight["state"].step) == STEPS
    moved = tree_max_diff(eight["state"].params, trajectories["init"].params)
    assert moved > 1e-4, "training did not change the parameters"
    for m1, m8 in zip(one["metrics"], eight["metrics"]):
        assert abs(m1["loss"] - m8["loss"]) <= 1e-5 * max(1.0, abs(m1["loss"]))
    d_params = tree_max_diff(one["state"].params, eight["state"].params)
    d_opt = tree_max_diff(one["state"].opt_state, eight["state"].opt_state)
    print(f"mesh x8 vs x1 after {STEPS} steps: params {d_params:.2e}, opt_state {d_opt:.2e}")
    # the cross-device gradient sum rounds differently (~1e-7 relative); Adam divides by
    # sqrt(v), which can magnify that for near-zero gradient entries, so parameters are compared
    # at 1% of one learning-rate step (lr 1e-3), the optimizer moments tightly
    assert d_params < 1e-5 and d_opt < 1e-6


def test_pmap_equals_mesh(trajectories):
    mesh, pm = trajectories["mesh8"], trajectories["pmap8"]
    for a, b in zip(mesh["metrics"], pm["metrics"]):
        for k in ("loss", "grad_norm", "lr"):
            assert abs(a[k] - b[k]) <= 1e-5 * max(1.0, abs(a[k])), k
    d_params = tree_max_diff(mesh["state"].params, pm["state"].params)
    print(f"pmap x8 vs mesh x8 after {STEPS} steps: params {d_params:.2e}")
    assert d_params < 2e-6
    assert int(pm["state"].step) == STEPS


def test_no_retrace_across_steps(trajectories):
    for name in ("mesh1", "mesh8", "pmap8"):
        assert trajectories[name]["traces"] == 1, name


# ---------------------------------------------------------------------------------- full loop
@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """Uninterrupted 4-step run, and the same run killed after step 3 then resumed."""
    root = tmp_path_factory.mktemp("trainer")
    cfg = make_config()  # 4 steps, checkpoint every 2, log every 2
    ref = train_and_evaluate(cfg, root / "ref")
    killed = train_and_evaluate(cfg, root / "resumed", stop_at=3)
    killed_steps = sorted(int(p.name) for p in (root / "resumed" / "checkpoints").iterdir() if p.name.isdigit())
    jsonl_after_kill = log_lib.read_jsonl(root / "resumed")
    resumed = train_and_evaluate(cfg, root / "resumed")
    return dict(
        root=root,
        cfg=cfg,
        ref=ref,
        killed=killed,
        killed_steps=killed_steps,
        jsonl_after_kill=jsonl_after_kill,
        resumed=resumed,
    )


def test_kill_and_resume_reproduces_the_uninterrupted_run(full_run):
    ref, resumed = full_run["ref"], full_run["resumed"]
    assert full_run["killed"].step == 3
    assert full_run["killed_steps"] == [2]  # step 3 was not a checkpoint step
    assert ref.step == resumed.step == 4
    a, b = host(ref.state), host(resumed.state)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)  # bitwise
    # the killed run had really diverged from the initial state
    assert tree_max_diff(host(full_run["killed"].state).params, a.params) > 0


def test_sigint_saves_the_current_step_and_resume_is_exact(full_run, monkeypatch):
    """SIGINT while step 3's batch is prepared: step 3 completes, is saved, the loop raises
    TrainingInterrupted; the resume (under the original config: only the loop-only ``prefetch``
    differs) ends bitwise on the uninterrupted run."""
    import signal

    wd = full_run["root"] / "sigint"
    real = spynet_task.train_batches

    def batches(config, start, pi, pc):
        for step, b in enumerate(real(config, start, pi, pc), start + 1):
            if step == 3:
                os.kill(os.getpid(), signal.SIGINT)
            yield b

    monkeypatch.setattr(spynet_task, "train_batches", batches)
    with pytest.raises(loop.TrainingInterrupted) as info:  # prefetch 0: batches on this thread
        train_and_evaluate(make_config(train__prefetch=0), wd)
    assert (info.value.step, info.value.saved) == (3, True)
    assert info.value.checkpoint_dir == wd / "checkpoints"
    steps = sorted(int(p.name) for p in (wd / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [2, 3]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    monkeypatch.setattr(spynet_task, "train_batches", real)
    resumed = train_and_evaluate(full_run["cfg"], wd)
    assert (resumed.start_step, resumed.step) == (3, 4)
    for x, y in zip(jax.tree.leaves(host(full_run["ref"].state)), jax.tree.leaves(host(resumed.state))):
        np.testing.assert_array_equal(x, y)  # bitwise
    assert resumed.trace_count == 1  # the compiled step was reused


def test_config_changes_lists_differing_fields():
    old = {"optim": {"lr": 1e-3, "b1": 0.9}, "train": {"num_steps": 4}, "x": [1, 2]}
    new = {"optim": {"lr": 2e-3, "b1": 0.9}, "train": {"num_steps": 8}, "x": [1, 2], "y": 1}
    assert loop.config_changes(old, new) == [("optim.lr", 1e-3, 2e-3), ("train.num_steps", 4, 8), ("y", "(absent)", 1)]
    assert "train.num_steps" in loop.RESUME_FREE_KEYS and "optim.lr" not in loop.RESUME_FREE_KEYS


def test_jsonl_metrics_config_and_checkpoints(full_run):
    root, cfg = full_run["root"], full_run["cfg"]
    recs = log_lib.read_jsonl(root / "ref")
    train = [r for r in recs if r["split"] == "train"]
    assert [r["step"] for r in train] == [2, 4]
    for r in train:
        assert set(r) >= {"loss", "grad_norm", "lr", "steps_per_sec"}
        assert math.isfinite(r["loss"]) and r["loss"] > 0
    # after the kill the log held step 3; the resume dropped it and continued the trajectory
    assert [r["step"] for r in full_run["jsonl_after_kill"]] == [2, 3]
    resumed = [r for r in log_lib.read_jsonl(root / "resumed") if r["split"] == "train"]
    assert [r["step"] for r in resumed] == [2, 4]
    assert resumed[-1]["loss"] == train[-1]["loss"]
    saved = json.loads((root / "ref" / "config.json").read_text())
    assert saved["data"]["batch_size"] == cfg.data.batch_size and saved["task"] == "spynet"
    # checkpoints readable without the Python structure (tools, infer.py)
    tree = load_tree(root / "ref")
    assert int(tree["step"]) == 4
    rel = os.path.relpath(root / "ref")  # relative workdirs work too (orbax wants absolute)
    assert int(load_tree(rel)["step"]) == 4
    p = host(full_run["ref"].state).params
    np.testing.assert_array_equal(
        tree["params"]["basic_module_5"]["conv_4"]["kernel"], p["basic_module_5"]["conv_4"]["kernel"]
    )
    assert full_run["ref"].trace_count == 1


def test_metric_writer_inactive_off_process_0(tmp_path):
    w = log_lib.MetricWriter(tmp_path, enabled=False)
    w.write(1, {"loss": 1.0})
    w.close()
    assert not (tmp_path / log_lib.METRICS_FILE).exists()
    w = log_lib.MetricWriter(tmp_path, enabled=True, tensorboard=False)
    w.write(1, {"loss": float("nan"), "x": 2.0})
    w.close()
    assert log_lib.read_jsonl(tmp_path) == [{"step": 1, "split": "train", "loss": "nan", "x": 2.0}]


# ------------------------------------------------------------------------------ learning, guards
def test_short_run_lowers_heldout_epe(tmp_path):
    # only loop keys differ from the ``test`` config: the 1-device step compiled above is reused
    cfg = make_config(train__eval_every=4)
    res = train_and_evaluate(cfg, tmp_path, devices=jax.devices()[:1])
    evals = [r for r in log_lib.read_jsonl(tmp_path) if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [0, 4]
    before, after = evals[0]["epe"], evals[1]["epe"]
    print(f"held-out EPE {before:.4f} -> {after:.4f} (zero flow {evals[0]['epe_zero_flow']:.4f})")
    assert after < 0.9 * before, (before, after)
    assert res.eval_metrics["epe"] == after
    assert res.trace_count == 1


def test_nan_guard_stops_and_names_the_step(tmp_path):
    cfg = make_config(train__debug_nan_at_step=2, train__checkpoint_every=1)
    with pytest.raises(NonFiniteLossError, match=r"at step 2: loss=nan.*last checkpoint: step 1"):
        train_and_evaluate(cfg, tmp_path, devices=jax.devices()[:1])
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [1]  # nothing at or after the bad step is saved


def test_bf16_compute_keeps_fp32_params(tmp_path):
    cfg = make_config(model__dtype="bfloat16", train__num_steps=2)
    batch = next(spynet_task.train_batches(cfg, 0, 0, 1))
    model = spynet_task.make_model(cfg)
    params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch["ref"], batch["supp"]))
    jaxpr = str(jax.make_jaxpr(lambda p: model.apply(p, batch["ref"], batch["supp"]))(params))
    assert "bf16" in jaxpr  # the convolutions run in bfloat16
    res = train_and_evaluate(cfg, tmp_path, devices=jax.devices()[:1])
    assert math.isfinite(res.train_metrics["loss"])
    assert {x.dtype for x in jax.tree.leaves(res.state.params)} == {jnp.dtype("float32")}


# ------------------------------------------------------------------------- config and bad input
def test_batch_must_split_over_devices(tmp_path):
    cfg = make_config(data__batch_size=6)
    with pytest.raises(ValueError, match="config.data.batch_size=6"):
        train_and_evaluate(cfg, tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_task_registry():
    assert "spynet" in tasks.names()
    assert tasks.get("spynet") is spynet_task
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        tasks.get("nope")
    with pytest.raises(ValueError, match="unknown variant"):
        spynet_config.get_config("nope")


@pytest.mark.parametrize(
    "args, words",
    [
        (["spynet.py:test", "--config.parallel=bogus"], ["config.parallel", "bogus"]),
        (["spynet.py:test", "--config.optim.nosuchkey=1"], ["--config.optim.nosuchkey=1"]),
        (["spynet.py:huge"], ["unknown variant 'huge'"]),
        (["nosuchfile.py:test"], ["nosuchfile.py"]),
    ],
)
def test_train_py_bad_input_is_one_line_error(tmp_path, args, words):
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "--config",
            str(REPO / "configs" / args[0]),
            "--workdir",
            str(tmp_path / "w"),
            *args[1:],
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("train.py: error:")]
    assert len(lines) == 1 and all(w in lines[0] for w in words), r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "w" / "checkpoints").exists()


# --------------------------------------------------------------------------------- schedules
def test_schedules_and_optimizers():
    def values(sched, steps):  # one compiled evaluation per schedule
        return np.asarray(jax.jit(jax.vmap(sched))(jnp.asarray(steps, jnp.int32)), np.float64)

    s = cosine_restart_schedule(1e-4, periods=(10, 20), restart_weights=(1.0, 0.5), eta_min=1e-7)
    steps = [0, 5, 10, 20, 30, 99]
    half = 1e-7 + 0.5 * (1e-4 - 1e-7)
    # period 1: full cosine from 1e-4; restart at 10 with weight 0.5; then eta_min for good
    expect = [1e-4, half, half, 1e-7 + 0.25 * (1e-4 - 1e-7), 1e-7, 1e-7]
    np.testing.assert_allclose(values(s, steps), expect, rtol=1e-5, atol=1e-12)
    sched = build_schedule(dict(lr=2.0, schedule="multistep", milestones=(3, 6), gamma=0.1), 10)
    np.testing.assert_allclose(values(sched, [0, 2, 3, 5, 6, 9]), [2, 2, 0.2, 0.2, 0.02, 0.02], rtol=1e-6)
    warm = build_schedule(dict(lr=1.0, schedule="warmup_cosine", warmup_steps=4, min_lr=0.1), 12)
    np.testing.assert_allclose(values(warm, [0, 2, 4, 12]), [0.0, 0.5, 1.0, 0.1], atol=1e-6)
    tx, _ = build_optimizer(dict(name="adamw", lr=0.1, weight_decay=0.5, grad_clip_norm=1.0), 10)
    p = {"w": jnp.ones(3)}
    upd, _ = tx.update({"w": jnp.full(3, 100.0)}, tx.init(p), p)
    assert np.all(np.asarray(upd["w"]) < 0)
    with pytest.raises(ValueError, match="optim.name"):
        build_optimizer(dict(name="lamb", lr=1.0), 10)


def test_grouped_optimizer_lr_mult_and_freeze():
    from peanut_jax.train import apply_updates, build_grouped_optimizer

    def labels(params):
        return {k: jax.tree.map(lambda _: "spynet" if k == "spynet" else "default", v) for k, v in params.items()}

    cfg = dict(name="adam", lr=0.1, grad_clip_norm=0.0)
    tx, _ = build_grouped_optimizer(cfg, 10, labels, {"spynet": dict(lr_mult=0.25, frozen_steps=2)})
    params = {"spynet": {"w": jnp.ones(3)}, "gen": {"w": jnp.ones(3)}}
    grads = jax.tree.map(lambda x: jnp.full_like(x, 2.0), params)
    state = tx.init(params)
    step = jax.jit(lambda g, s, p: apply_updates(tx, g, s, p))
    moves = []
    for _ in range(3):
        new, state = step(grads, state, params)
        moves.append(
            (float(params["spynet"]["w"][0] - new["spynet"]["w"][0]), float(params["gen"]["w"][0] - new["gen"]["w"][0]))
        )
        params = new
    # Adam's first bias-corrected step moves by lr; SPyNet waits 2 steps, then moves lr/4
    assert moves[0][0] == moves[1][0] == 0.0
    np.testing.assert_allclose([m[1] for m in moves], 0.1, rtol=1e-5)
    np.testing.assert_allclose(moves[2][0], 0.025, rtol=1e-5)


def test_model_fields_and_build_configured():
    """The one reading of ``config.model`` into constructor arguments: trainer keys and the task's own
    keys left out, lists as tuples (hashable modules), dtypes parsed, unknown dtypes named."""
    import ml_collections

    from peanut_jax.train.config import build_configured, model_fields

    block = {"name": "rife", "dtype": "float32", "param_dtype": "float32", "widths": [1, 2], "init_from": "x"}
    assert model_fields(block, ("init_from",)) == {"widths": (1, 2)}
    assert model_fields(block) == {"widths": (1, 2), "init_from": "x"}
    config = ml_collections.ConfigDict({"model": {"name": "rife", "dtype": "bfloat16", "param_dtype": "float32"}})
    module = build_configured(config)
    assert type(module).__name__ == "IFNet" and module.dtype == jnp.bfloat16
    config.model.param_dtype = "float99"
    with pytest.raises(ValueError, match="config.model.param_dtype: unknown dtype 'float99'"):
        build_configured(config)
