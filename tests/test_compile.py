"""Compile time and its user-facing side: E2FGVI's scanned propagation equals the per-frame loop,
the persistent compilation cache switch (``--no-compile-cache`` / ``PEANUT_XLA_CACHE=0``) of
``infer.py`` and ``train.py``, and the ``compiling <what> ...`` notices."""

import io
import os
import pathlib
import subprocess
import sys
import threading

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

from peanut_jax.layers.conv import leaky_relu
from peanut_jax.models.propagation import BidirectionalPropagation, branch_flow_indices
from peanut_jax.ops import warp
from peanut_jax.pipeline import telemetry
from peanut_jax.pipeline.common import enable_compilation_cache

REPO = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ E2FGVI propagation: scan == loop
def _loop_reference(mdl, x, flows_backward, flows_forward):
    """The official per-frame loop (E2FGVI ``BidirectionalPropagation.forward``), step by step, on the
    bound submodules of ``mdl``: step 0 unaligned, step 1 with zero second-order terms."""
    b, t, h, w, c = x.shape
    feats = {}
    for branch in ("backward", "forward"):
        flows = flows_backward if branch == "backward" else flows_forward
        align = getattr(mdl, f"deform_align_{branch}")
        conv0, conv2 = getattr(mdl, f"backbone_{branch}_0"), getattr(mdl, f"backbone_{branch}_2")
        outs = []
        feat_prop = jnp.zeros((b, h, w, c))
        for i, (idx, n1, n2) in enumerate(branch_flow_indices(t, branch, mdl.fix_backward_flow_idx)):
            cur = x[:, idx]
            if i > 0:
                flow_n1 = flows[:, n1]
                cond_n1 = warp(feat_prop, flow_n1)
                if i > 1:
                    feat_n2 = outs[-2]
                    flow_n2 = flow_n1 + warp(flows[:, n2], flow_n1)
                    cond_n2 = warp(feat_n2, flow_n2)
                else:
                    feat_n2, flow_n2, cond_n2 = (
                        jnp.zeros_like(feat_prop),
                        jnp.zeros_like(flow_n1),
                        jnp.zeros_like(cond_n1),
                    )
                cond = jnp.concatenate([cond_n1, cur, cond_n2], -1)
                feat_prop = align(jnp.concatenate([feat_prop, feat_n2], -1), cond, flow_n1, flow_n2)
            extra = [feats["backward"][idx]] if branch == "forward" else []
            feat_prop = feat_prop + conv2(leaky_relu(conv0(jnp.concatenate([cur, *extra, feat_prop], -1)), 0.1))
            outs.append(feat_prop)
        feats[branch] = outs[::-1] if branch == "backward" else outs
    both = jnp.concatenate([jnp.stack(feats["backward"], 1), jnp.stack(feats["forward"], 1)], -1)
    return mdl.fusion(both.reshape(b * t, h, w, 2 * c)).reshape(b, t, h, w, c) + x


def _propagation_case(t, fix, c=8, h=6, w=8):
    """(module, random parameters, inputs): every parameter random, the last offset convolution
    included (non-zero learned offsets and masks)."""
    rng = np.random.default_rng(t)
    x = jnp.asarray(rng.standard_normal((2, t, h, w, c)), jnp.float32)
    fb = jnp.asarray(2.0 * rng.standard_normal((2, t - 1, h, w, 2)), jnp.float32)
    ff = jnp.asarray(2.0 * rng.standard_normal((2, t - 1, h, w, 2)), jnp.float32)
    m = BidirectionalPropagation(c, fix_backward_flow_idx=fix, deform_groups=2)
    shapes = flatten_dict(jax.eval_shape(m.init, jax.random.key(0), x, fb, ff)["params"])
    names = {"fusion"} | {f"backbone_{b}_{j}" for b in ("backward", "forward") for j in (0, 2)}
    if t > 1:
        names |= {"deform_align_backward", "deform_align_forward"}
    assert {k[0] for k in shapes} == names  # the torch module tree (the converters rely on it)
    params = unflatten_dict(
        {
            k: jnp.asarray(rng.standard_normal(s.shape) / np.sqrt(max(1, np.prod(s.shape[:-1]))), jnp.float32)
            for k, s in shapes.items()
        }
    )
    scan = jax.jit(lambda p: m.apply({"params": p}, x, fb, ff))
    loop = jax.jit(lambda p: nn.apply(_loop_reference, m)({"params": p}, x, fb, ff))
    return params, scan, loop


@pytest.mark.parametrize("t,fix", [(1, False), (3, False), (5, True)])
def test_scanned_propagation_equals_the_per_frame_loop(t, fix):
    params, scan, loop = _propagation_case(t, fix)
    np.testing.assert_allclose(np.asarray(scan(params)), np.asarray(loop(params)), rtol=0, atol=1e-5)


@pytest.mark.slow  # the loop's backward pass takes a minute to compile on 2 shared CPU cores
def test_scanned_propagation_gradients_equal_the_loop():
    params, scan, loop = _propagation_case(3, False)
    g_scan = jax.jit(jax.grad(lambda p: (scan(p) ** 2).mean()))(params)
    g_loop = jax.jit(jax.grad(lambda p: (loop(p) ** 2).mean()))(params)
    for a, b in zip(jax.tree.leaves(g_scan), jax.tree.leaves(g_loop)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------ persistent compilation cache
def test_compile_cache_helper_and_off_switch(tmp_path, monkeypatch):
    monkeypatch.setenv("PEANUT_XLA_CACHE", "")
    monkeypatch.setenv("PEANUT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PEANUT_XLA_CACHE")
    assert enable_compilation_cache() == tmp_path / "home" / "xla_cache"  # the default: under $PEANUT_HOME
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "home" / "xla_cache")
    assert enable_compilation_cache(off=True) is None
    assert os.environ["PEANUT_XLA_CACHE"] == "0"
    assert enable_compilation_cache() is None  # later calls in this process (the demo's) stay off


def test_infer_commands_enable_the_cache_unless_told_not_to(tmp_path, monkeypatch):
    from peanut_jax.cli import main
    from peanut_jax.cli.parser import COMMANDS, build_parser

    parser = build_parser()
    for command in COMMANDS:  # one flag, on every command
        assert parser.parse_args([command, "--no-compile-cache"]).no_compile_cache
        assert not parser.parse_args([command]).no_compile_cache
    monkeypatch.setenv("PEANUT_XLA_CACHE", str(tmp_path / "on"))
    assert main(["upscale"]) == 2  # stops at "--input is required", after the cache is set up
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "on") and (tmp_path / "on").is_dir()
    jax.config.update("jax_compilation_cache_dir", None)
    monkeypatch.setenv("PEANUT_XLA_CACHE", str(tmp_path / "off"))
    assert main(["mask", "--no-compile-cache"]) == 2
    assert jax.config.jax_compilation_cache_dir is None and not (tmp_path / "off").exists()
    assert os.environ["PEANUT_XLA_CACHE"] == "0"


def test_train_py_enables_the_cache_unless_told_not_to(tmp_path):
    """train.py sets the cache up before training (a workdir that is a file stops it right after);
    the two runs go side by side."""
    blocker = tmp_path / "workdir_is_a_file"
    blocker.write_text("")
    cmd = [sys.executable, str(REPO / "train.py"), "--config", str(REPO / "configs" / "spynet.py") + ":test"]
    cmd += ["--workdir", str(blocker)]
    runs = {}
    for name, extra in (("on", []), ("off", ["--no-compile-cache"])):
        env = dict(os.environ, JAX_PLATFORMS="cpu", PEANUT_HOME=str(tmp_path / name))
        env.pop("PEANUT_XLA_CACHE", None)
        runs[name] = subprocess.Popen(cmd + extra, env=env, stderr=subprocess.PIPE, text=True)
    for proc in runs.values():
        err = proc.communicate(timeout=180)[1]
        assert proc.returncode == 1 and "train.py: error:" in err and str(blocker) in err, err[-2000:]
    assert (tmp_path / "on" / "xla_cache").is_dir() and not (tmp_path / "off" / "xla_cache").exists()


# ------------------------------------------------------------------------------------- compile notices
@pytest.fixture
def notices():
    out = io.StringIO()
    telemetry.announce_compiles("/cache/dir", stream=out, min_seconds=0)
    yield out
    telemetry.announce_compiles(None, enabled=False)


def _lines(out, label):
    return [ln for ln in out.getvalue().splitlines() if label in ln]


def test_compile_notice_once_per_compiled_function(notices):
    @jax.jit
    def double_it(a):
        return a * 2

    with telemetry.compile_label("erase (5, 60, 108, 3)"):
        double_it(jnp.ones(3))
        double_it(jnp.ones(3) + 1)  # compiled already: no second notice
    what = "erase (5, 60, 108, 3): double_it"
    lines = _lines(notices, "double_it")
    assert len(lines) == 2, notices.getvalue()
    assert lines[0] == f"compiling {what} (first run only; cached in /cache/dir) ..."
    assert lines[1].startswith(f"compiled {what} in ") and lines[1].endswith(" s")
    double_it(jnp.ones(4))  # a new shape is a new compilation: its own notice, named by the function alone
    assert _lines(notices, "double_it")[2] == "compiling double_it (first run only; cached in /cache/dir) ..."
    telemetry.announce_compiles(None, stream=notices, min_seconds=0)
    jax.jit(lambda a: a - 1)(jnp.ones(2))
    assert "compiling a function (the compile cache is off) ..." in notices.getvalue().splitlines()


def test_compile_notices_of_parallel_jobs_each_finish(notices):
    """Chain.warmup compiles in threads (``run_parallel``, labels from the shape keys): every job's
    notice names it, in whole lines however they interleave."""
    barrier = threading.Barrier(2, timeout=30)

    def job(n):
        a = jnp.ones(n + 3)

        def sine_job():
            barrier.wait()
            jax.jit(lambda v: jnp.sin(v) * n)(a)

        return sine_job

    keys = [("upscale", id(job), 7, 64, 64), ("scene_ssim", 4, 64, 64)]
    assert telemetry.key_label(keys[0]) == "upscale (7, 64, 64)"
    assert telemetry.key_label(("interpolate", id(job), 4, 64, 96, True)) == "interpolate (4, 64, 96)"
    done = list(telemetry.run_parallel([job(1), job(2)], 2, labels=[telemetry.key_label(k) for k in keys]))
    assert sorted(done) == [0, 1]
    lines = notices.getvalue().splitlines()
    for label in ("upscale (7, 64, 64)", "scene_ssim (4, 64, 64)"):
        assert lines.count(f"compiling {label} (first run only; cached in /cache/dir) ...") == 1, lines
        assert len([ln for ln in lines if ln.startswith(f"compiled {label} in ")]) == 1, lines
    assert len([ln for ln in lines if "upscale" in ln or "scene_ssim" in ln]) == 4, lines
