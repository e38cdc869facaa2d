"""BasicVSR++ training task: optimiser (SPyNet lr multiplier and freezing vs torch), schedule, data
pipeline invariants, a few real train steps, and (slow) a tiny run that beats bicubic."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from configs import basicvsr_pp as cfg_lib
from peanut_jax.data import augment as aug
from peanut_jax.train import batching
from peanut_jax.train.tasks import basicvsr_pp as task


def _config(variant="test", **updates):
    c = cfg_lib.get_config(variant).unlock()
    for key, value in updates.items():
        block, name = key.split(".")
        c[block][name] = value
    return c.lock()


# ------------------------------------------------------------------------------- optimizer
def _toy_params():
    rng = np.random.default_rng(0)
    return {
        "spynet": {"basic_module_0": {"kernel": rng.normal(size=(3, 2)).astype(np.float32)}},
        "feat_extract": {"kernel": rng.normal(size=(4,)).astype(np.float32)},
        "upsample1": {"bias": rng.normal(size=(2,)).astype(np.float32)},
    }


def _toy_grads(step, params):
    rng = np.random.default_rng(100 + step)
    return jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)


def test_param_labels():
    labels = task.param_labels(_toy_params())
    assert labels["spynet"]["basic_module_0"]["kernel"] == "spynet"
    assert labels["feat_extract"]["kernel"] == "default" and labels["upsample1"]["bias"] == "default"


def test_optimizer_matches_torch_adam_param_groups_with_freezing():
    """SPyNet lr x0.25, frozen for fix_iter steps with untouched Adam state (torch requires_grad=False),
    CosineRestart schedule: parameters equal torch.optim.Adam with two groups over 9 steps."""
    torch = pytest.importorskip("torch")
    fix_iter, steps, lr = 3, 9, 1e-2
    cfg = _config(
        "test",
        **{
            "optim.fix_iter": fix_iter,
            "optim.lr": lr,
            "optim.schedule": "cosine_restarts",
            "optim.periods": (4, 5),
            "optim.restart_weights": (1.0, 0.5),
            "optim.min_lr": 1e-4,
            "train.num_steps": steps,
        },
    )
    tx, sched = task.build_vsr_optimizer(cfg)
    params = jax.tree.map(jnp.asarray, _toy_params())
    state = tx.init(params)
    flat = [(jax.tree_util.keystr(p), v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]]
    tp = {k: torch.tensor(np.asarray(v)) for k, v in flat}
    spy_keys = [k for k in tp if "spynet" in k]
    for k in tp:
        tp[k].requires_grad_(k not in spy_keys)
    opt = torch.optim.Adam(
        [
            {"params": [tp[k] for k in tp if k not in spy_keys], "lr_mult": 1.0},
            {"params": [tp[k] for k in spy_keys], "lr_mult": 0.25},
        ],
        lr=lr,
        betas=(0.9, 0.99),
    )
    for step in range(steps):
        g = _toy_grads(step, params)
        # our side
        updates, state = tx.update(jax.tree.map(jnp.asarray, g), state, params)
        params = optax.apply_updates(params, updates)
        # torch side (mmagic: unfreeze at step_counter == fix_iter; lr set per iteration by the scheduler)
        if step == fix_iter:
            for k in spy_keys:
                tp[k].requires_grad_(True)
        base = float(sched(step))
        for group in opt.param_groups:
            group["lr"] = base * group["lr_mult"]
        flat_g = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(g)[0]}
        for k, t in tp.items():
            t.grad = torch.tensor(flat_g[k]) if t.requires_grad else None
        opt.step()
        ours = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
        for k, t in tp.items():
            np.testing.assert_allclose(ours[k], t.detach().numpy(), rtol=2e-5, atol=1e-6, err_msg=f"{k} @ {step}")
        if step < fix_iter:
            np.testing.assert_array_equal(ours[spy_keys[0]], _toy_params()["spynet"]["basic_module_0"]["kernel"])


def test_spynet_update_is_quarter_of_default_on_first_trainable_step():
    cfg = _config("test", **{"optim.fix_iter": 2, "optim.lr": 1e-2, "train.num_steps": 10})
    tx, _ = task.build_vsr_optimizer(cfg)
    params = jax.tree.map(jnp.asarray, _toy_params())
    state = tx.init(params)
    ones = jax.tree.map(jnp.ones_like, params)
    deltas = []
    for _ in range(3):
        updates, state = tx.update(ones, state, params)
        deltas.append(updates)
    assert float(jnp.abs(deltas[0]["spynet"]["basic_module_0"]["kernel"]).max()) == 0.0
    assert float(jnp.abs(deltas[1]["spynet"]["basic_module_0"]["kernel"]).max()) == 0.0
    # Adam's first step is lr * sign(g); SPyNet's first (unfrozen) step is a fresh first step at lr/4
    np.testing.assert_allclose(deltas[0]["feat_extract"]["kernel"], -1e-2, rtol=1e-5)
    np.testing.assert_allclose(deltas[2]["spynet"]["basic_module_0"]["kernel"], -0.25e-2, rtol=1e-5)


def test_official_schedule_and_spynet_modes():
    c = cfg_lib.get_config("official")
    _, sched = task.build_vsr_optimizer(c)
    for step in (0, 1, 150_000, 300_000, 599_999):
        want = 1e-7 + 0.5 * (1e-4 - 1e-7) * (1 + math.cos(math.pi * step / 600_000))
        np.testing.assert_allclose(float(sched(step)), want, rtol=1e-5)
    np.testing.assert_allclose(float(sched(600_000)), 1e-7, rtol=1e-5)
    assert (
        c.optim.fix_iter,
        c.optim.spynet_lr_mult,
        c.optim.b2,
        c.data.num_frames,
        c.data.lq_size,
        c.data.batch_size,
    ) == (5000, 0.25, 0.99, 30, 64, 8)
    assert task.spynet_mode(c) == "cond"
    assert task.spynet_mode(_config("official", **{"optim.skip_frozen_backward": False})) == "mask"
    assert task.spynet_mode(cfg_lib.get_config("vimeo_bi")) == "train"
    assert task.spynet_mode(cfg_lib.get_config("tiny")) == "frozen"
    v = cfg_lib.get_config("vimeo_bd")
    assert (v.data.source, v.data.degradation, v.data.mirror_sequence, tuple(v.optim.periods)) == (
        "vimeo90k",
        "BD",
        True,
        (300_000,),
    )
    with pytest.raises(ValueError, match="unknown variant"):
        cfg_lib.get_config("nope")


# ------------------------------------------------------------------------------------ data
def _blocky_clip(rng, t, h, w, s=4):
    lq = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    return lq, np.kron(lq, np.ones((1, s, s, 1), np.uint8))


def test_crop_and_augment_keep_lq_gt_aligned():
    rng = np.random.default_rng(0)
    lq, gt = _blocky_clip(rng, 3, 10, 12)
    seen = set()
    for seed in range(24):
        r = np.random.default_rng(seed)
        a, b = aug.paired_random_crop(lq, gt, 6, 4, r)
        a, b = aug.flip_transpose(a, b, r)
        assert a.shape == (3, 6, 6, 3) and b.shape == (3, 24, 24, 3)
        np.testing.assert_array_equal(a, b[:, ::4, ::4])  # LR pixel = its GT block, after every transform
        seen.add(a.tobytes())
    assert len(seen) > 12  # crops/flips actually vary
    x = np.arange(24).reshape(1, 2, 3, 4)
    flips = {aug.flip_transpose(x, x, np.random.default_rng(s))[0].tobytes() for s in range(64)}
    assert len(flips) == 8  # the 8 flip/transpose combinations
    m = aug.mirror_sequence(np.arange(3)[:, None])
    assert m[:, 0].tolist() == [0, 1, 2, 2, 1, 0]
    with pytest.raises(ValueError, match="smaller than the crop"):
        aug.paired_random_crop(lq, gt, 11, 4, rng)


def test_synthetic_batches_deterministic_and_bi_degraded():
    from peanut_jax.data.degrade import imresize

    c = _config("test", **{"data.batch_size": 2})
    b1 = next(task.train_batches(c, 4, 0, 1))
    b2 = next(task.train_batches(c, 4, 0, 1))
    assert b1["lq"].shape == (2, 3, 64, 64, 3) and b1["gt"].shape == (2, 3, 256, 256, 3)
    np.testing.assert_array_equal(b1["lq"], b2["lq"])
    assert not np.array_equal(b1["lq"][0], b1["lq"][1])
    # the second process reads row 1 of the same global batch
    half = next(task.train_batches(_config("test", **{"data.batch_size": 2}), 4, 1, 2))
    np.testing.assert_array_equal(half["gt"][0], b1["gt"][1])
    # BI: LR = MATLAB imresize of the uint8 GT (after the same flips, which commute with it up to
    # the kernel's symmetry: check the un-augmented clip)
    lq, gt = task.synthetic_clip(c.data, (0, 0, 1, 0), 4)
    np.testing.assert_array_equal(lq[1], imresize(gt[1], 0.25))
    ev = list(task.eval_batches(c, 0, 1))
    assert len(ev) == 1 and set(ev[0]) == {"lq", "gt", "bicubic"}
    from peanut_jax.metrics import psnr

    p_bic = float(np.mean(psnr(ev[0]["bicubic"], ev[0]["gt"])))
    p_near = float(np.mean(psnr(np.repeat(np.repeat(ev[0]["lq"], 4, 2), 4, 3), ev[0]["gt"])))
    assert p_bic > p_near + 1.0 and 20 < p_bic < 45


def test_data_config_errors():
    with pytest.raises(ValueError, match="data.source"):
        next(task.train_batches(_config("test", **{"data.source": "kinetics"}), 0, 0, 1))
    with pytest.raises(ValueError, match="tfds_data_dir"):
        next(task.train_batches(_config("test", **{"data.source": "reds"}), 0, 0, 1))
    with pytest.raises(ValueError, match="at least 64"):
        next(task.train_batches(_config("test", **{"data.lq_size": 32}), 0, 0, 1))


def _png(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def test_reds_source_windows_crops_and_eval(tmp_path):
    from peanut_jax.data.tfds import vsr

    rng = np.random.default_rng(1)
    root = tmp_path / "REDS"
    for clip in ("000", "003", "007"):
        lq, gt = _blocky_clip(rng, 6, 16, 20)
        lq[:, 0, 0, 0] = np.arange(6)  # frame index marker
        gt = np.kron(lq, np.ones((1, 4, 4, 1), np.uint8))
        for i in range(6):
            _png(root / "train_sharp" / clip / f"{i:08d}.png", gt[i])
            _png(root / "train_sharp_bicubic" / "X4" / clip / f"{i:08d}.png", lq[i])
    vsr.build("reds_vsr", root, tmp_path / "tfds", config="bi")
    c = _config(
        "test",
        **{
            "data.source": "reds",
            "data.tfds_data_dir": str(tmp_path / "tfds"),
            "data.num_frames": 4,
            "data.lq_size": 8,
            "data.batch_size": 2,
            "data.eval_batch_size": 1,
            "data.eval_num_frames": 5,
        },
    )
    task._open.cache_clear()
    # lq_size 8 < 64 is refused for the model, so check the example pipeline directly
    source = task._open(batching.config_items(c.data), "train")
    assert [x[0] for x in source.items] == ["003", "007"]
    for seed in range(6):
        ex = task.train_example(c, source, source[seed % 2], (0, 0, seed, 0))
        lq, gt = ex["lq"], ex["gt"]
        assert lq.shape == (4, 8, 8, 3) and gt.shape == (4, 32, 32, 3)
        np.testing.assert_array_equal(lq, gt[:, ::4, ::4])
    ev = task._open(batching.config_items(c.data), "reds4")
    lq, gt = ev.load(ev[0], 5, None, first=0)
    assert ev[0][0] == "000" and lq.shape == (5, 16, 20, 3)
    # windows are consecutive frames of one clip (marker = frame index, before augmentation)
    lq, _ = source.load(source[0], 4, np.random.default_rng(3))
    d = np.diff(lq[:, 0, 0, 0].astype(int))
    assert np.all(d == 1)


# ------------------------------------------------------------------------- the real network
FAST_CPU = {"xla_llvm_disable_expensive_passes": True}


def _compiled_step(config, batch, state):
    fn = jax.jit(lambda s, b: task.train_step(s, b, config, lambda g: g))
    return fn.lower(state, batch).compile(FAST_CPU)


@pytest.fixture(scope="module")
def tiny_state():
    c = _config("test")
    sample = task.sample_batch(c)
    init = (
        jax.jit(lambda: task.init_state(jax.random.PRNGKey(0), c, sample))
        .lower()
        .compile({"xla_backend_optimization_level": 0, **FAST_CPU})
    )
    return c, init()


def test_init_state_zero_flow_spynet_and_shapes(tiny_state):
    c, state = tiny_state
    for level in range(6):
        assert float(jnp.abs(state.params["spynet"][f"basic_module_{level}"]["conv_4"]["kernel"]).max()) == 0.0
    assert state.params["feat_extract"]["conv_in"]["kernel"].shape == (3, 3, 3, 16)
    assert int(state.step) == 0


def test_a_few_train_steps_finite_and_spynet_frozen(tiny_state):
    c, state = tiny_state
    batch = jax.tree.map(jnp.asarray, next(task.train_batches(c, 0, 0, 1)))
    step = _compiled_step(c, batch, state)
    spy0 = jax.tree.map(np.asarray, state.params["spynet"])
    other0 = np.asarray(state.params["recon"]["conv_last"]["kernel"])
    losses = []
    for _i in range(2):
        state, m = step(state, batch)
        state = state.replace(step=state.step + 1)
        assert all(np.isfinite(float(v)) for v in m.values()), m
        assert float(m["spynet_frozen"]) == 1.0 and float(m["lr_spynet"]) == 0.0
        losses.append(float(m["loss"]))
    jax.tree.map(np.testing.assert_array_equal, spy0, jax.tree.map(np.asarray, state.params["spynet"]))
    assert not np.array_equal(other0, np.asarray(state.params["recon"]["conv_last"]["kernel"]))
    assert losses[1] < losses[0]  # same batch twice: the step descends


@pytest.mark.slow
def test_tiny_run_beats_bicubic(tmp_path):
    """``configs/basicvsr_pp.py:tiny`` through train.py's loop: PSNR on held-out clips above bicubic."""
    from peanut_jax.train.loop import train_and_evaluate

    c = _config("tiny", **{"train.progress": False, "train.tensorboard": False})
    res = train_and_evaluate(c, tmp_path / "run", devices=jax.devices()[:1])
    ev = res.eval_metrics
    assert np.isfinite(ev["psnr"]) and ev["psnr"] > ev["psnr_bicubic"] + 0.3, ev


# ------------------------------------------------------------------------------- evaluation
import flax.linen as nn  # noqa: E402


class _NearestStub(nn.Module):
    """x4 nearest upsampling + t/100 on frame t: a parameter-free stand-in for BasicVSR++."""

    is_low_res_input: bool = True
    scale: int = 4

    @property
    def output_scale(self):
        return 4

    @nn.compact
    def __call__(self, lqs, is_mirror_extended=None):
        up = jnp.repeat(jnp.repeat(lqs, 4, 2), 4, 3)
        return up + jnp.arange(lqs.shape[1], dtype=lqs.dtype)[None, :, None, None, None] / 100


def test_evaluate_vsr_layouts_metrics_and_center_rule(tmp_path):
    from peanut_jax.data.degrade import imresize
    from peanut_jax.evaluate import cli as ev_cli
    from peanut_jax.evaluate import common as ev_common
    from peanut_jax.evaluate import vsr
    from peanut_jax.metrics import psnr, ssim

    rng = np.random.default_rng(0)
    root = tmp_path / "REDS"
    for c in vsr.REDS4:
        for i in range(2):
            lq = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
            _png(root / "train_sharp" / c / f"{i:08d}.png", np.kron(lq, np.ones((4, 4, 1), np.uint8)))
            _png(root / "train_sharp_bicubic" / "X4" / c / f"{i:08d}.png", lq)
    stub = _NearestStub()
    res = vsr.evaluate_vsr(stub, {}, vsr.vsr_clips("reds4", root), crop_border=2)
    assert res["num_clips"] == 4 and set(res["clips"]) == set(vsr.REDS4)
    lq, gt = vsr.reds4_clips(root)[1].load()
    out = ev_common.quantize(np.kron(lq / 255.0, np.ones((4, 4, 1))) + np.arange(2)[:, None, None, None] / 100)
    want = np.mean(psnr(out, gt / 255.0, crop_border=2))
    np.testing.assert_allclose(res["clips"]["011"]["psnr"], want, rtol=1e-9)
    np.testing.assert_allclose(
        res["clips"]["011"]["ssim_y"], np.mean(ssim(out, gt / 255.0, crop_border=2, y_channel=True)), rtol=1e-9
    )
    bic = ev_common.quantize(np.stack([imresize(f / 255.0, 4.0) for f in lq]))
    np.testing.assert_allclose(
        res["clips"]["011"]["psnr_bicubic"], np.mean(psnr(bic, gt / 255.0, crop_border=2)), rtol=1e-6
    )
    # Vimeo-90K-T: 7 LR frames mirrored to 14, centre output 0.5 * (out[3] + out[10]) against im4
    vroot = tmp_path / "vimeo_septuplet"
    for j in range(1, 8):
        _png(vroot / "sequences" / "00001/0001" / f"im{j}.png", rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
    (vroot / "sep_testlist.txt").write_text("00001/0001\n")
    vres = vsr.evaluate_vsr(stub, {}, vsr.vsr_clips("vimeo90k_t", vroot), bicubic=False)
    lq, gt = vsr.vimeo90k_t_clips(vroot)[0].load()
    assert gt.shape == (1, 32, 40, 3)
    out = ev_common.quantize(np.kron(lq[3] / np.float32(255.0), np.ones((4, 4, 1))) + (3 + 10) / 200)
    np.testing.assert_allclose(vres["psnr_y"], float(psnr(out, gt[0] / 255.0, y_channel=True)), rtol=1e-6)
    # the CLI: one-line errors, exit code 2
    assert (
        ev_cli.main(
            [
                "upscale",
                "--dataset",
                "reds4",
                "--root",
                str(tmp_path / "nope"),
                "--checkpoint",
                str(tmp_path / "none.pth"),
            ]
        )
        == 2
    )
    with pytest.raises(FileNotFoundError, match="train_sharp"):
        vsr.reds4_clips(tmp_path / "nope")


class _FakeVSR(nn.Module):
    """A two-part x4 'network' with a ``spynet`` sub-tree, to exercise the freezing modes cheaply."""

    is_low_res_input: bool = True

    @nn.compact
    def __call__(self, lqs, is_mirror_extended=None):
        b, t, h, w, c = lqs.shape
        x = lqs.reshape(b * t, h, w, c)
        y = nn.Dense(3, name="body")(x + jnp.tanh(nn.Dense(3, name="spynet")(x)))
        y = jnp.repeat(jnp.repeat(y, 4, 1), 4, 2)
        return y.reshape(b, t, 4 * h, 4 * w, 3)


@pytest.mark.parametrize("skip", [True, False])
def test_freezing_modes_in_train_step(monkeypatch, skip):
    """fix_iter=2 of 5 steps: 'cond' (skip_frozen_backward) and 'mask' give the same numbers; SPyNet
    is untouched for two steps and its gradient is zero while frozen, then it trains."""
    monkeypatch.setattr(task, "make_model", lambda config: _FakeVSR())
    c = _config(
        "test", **{"optim.fix_iter": 2, "train.num_steps": 5, "optim.skip_frozen_backward": skip, "optim.lr": 1e-2}
    )
    assert task.spynet_mode(c) == ("cond" if skip else "mask")
    rng = np.random.default_rng(0)
    batch = {
        "lq": jnp.asarray(rng.random((1, 2, 4, 4, 3), np.float32)),
        "gt": jnp.asarray(rng.random((1, 2, 16, 16, 3), np.float32)),
    }
    state = task.init_state(jax.random.PRNGKey(0), c, None)
    step = jax.jit(lambda s, b: task.train_step(s, b, c, lambda g: g))
    spy = [np.asarray(state.params["spynet"]["kernel"])]
    frozen = []
    for _ in range(4):
        state, m = step(state, batch)
        state = state.replace(step=state.step + 1)
        spy.append(np.asarray(state.params["spynet"]["kernel"]))
        frozen.append(float(m["spynet_frozen"]))
    assert frozen == [1.0, 1.0, 0.0, 0.0]
    np.testing.assert_array_equal(spy[0], spy[2])
    assert not np.array_equal(spy[2], spy[3])
    # first trainable SPyNet step: fresh Adam, lr * 0.25 * sign(g) (constant lr)
    np.testing.assert_allclose(np.abs(spy[3] - spy[2]), 0.25e-2, rtol=1e-3)
    test_freezing_modes_in_train_step.results[skip] = spy[-1]
    if len(test_freezing_modes_in_train_step.results) == 2:
        np.testing.assert_allclose(*test_freezing_modes_in_train_step.results.values(), rtol=1e-6)


test_freezing_modes_in_train_step.results = {}
