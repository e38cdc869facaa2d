"""RIFE training task: schedule and AdamW vs the official formulas / torch, augmentation invariants
(frames and flow stay consistent), data sources, a few real train steps, and a tiny run that beats
frame averaging."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from configs import rife as cfg_lib
from peanut_jax.data import augment as aug
from peanut_jax.train import batching
from peanut_jax.train.tasks import rife as task


def _config(variant="test", **updates):
    c = cfg_lib.get_config(variant).unlock()
    for key, value in updates.items():
        block, name = key.split(".")
        c[block][name] = value
    return c.lock()


def _official_lr(step, total):
    """ECCV ``train.py get_learning_rate`` (before the world_size / 4 factor)."""
    if step < 2000:
        return 3e-4 * step / 2000.0
    mul = math.cos((step - 2000) / (total - 2000.0) * math.pi) * 0.5 + 0.5
    return (3e-4 - 3e-6) * mul + 3e-6


def test_warmup_cosine_schedule_matches_official():
    c = cfg_lib.get_config("official")
    total = c.train.num_steps
    assert total == 228_300 and c.data.batch_size == 64 and c.data.crop == 224
    _, sched = task.make_optimizer(c)
    for step in (0, 1, 999, 2000, 2001, 50_000, 115_150, 200_000, total - 1, total):
        np.testing.assert_allclose(
            float(sched(step)), _official_lr(step, total), rtol=2e-5, atol=1e-12, err_msg=f"step {step}"
        )
    # the official world_size / 4 factor = global batch / 64
    half = _config("official", **{"data.batch_size": 32})
    np.testing.assert_allclose(float(task.make_optimizer(half)[1](2000)), 1.5e-4, rtol=1e-6)
    assert task.peak_lr(_config("official", **{"optim.reference_batch": 0, "data.batch_size": 8})) == 3e-4


def test_adamw_matches_torch():
    torch = pytest.importorskip("torch")
    c = _config("test", **{"optim.warmup_steps": 3, "train.num_steps": 8, "optim.lr": 1e-2, "optim.weight_decay": 1e-1})
    tx, sched = task.make_optimizer(c)
    rng = np.random.default_rng(0)
    p = jnp.asarray(rng.normal(size=(5,)).astype(np.float32))
    state = tx.init(p)
    tp = torch.tensor(np.asarray(p), requires_grad=True)
    opt = torch.optim.AdamW([tp], lr=0.0, weight_decay=1e-1)
    for step in range(8):
        g = rng.normal(size=(5,)).astype(np.float32)
        upd, state = tx.update(jnp.asarray(g), state, p)
        p = optax.apply_updates(p, upd)
        for group in opt.param_groups:
            group["lr"] = float(sched(step))
        tp.grad = torch.tensor(g)
        opt.step()
        np.testing.assert_allclose(np.asarray(p), tp.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_config_variants():
    m = cfg_lib.get_config("rifem")
    assert m.model.timestep_input and m.loss.distill == 0.002
    o = cfg_lib.get_config("official")
    assert (o.loss.l1, o.loss.teacher, o.loss.distill, o.optim.weight_decay, tuple(o.model.widths)) == (
        1.0,
        1.0,
        0.01,
        1e-3,
        (240, 150, 90, 90),
    )
    with pytest.raises(ValueError, match="unknown variant"):
        cfg_lib.get_config("nope")
    with pytest.raises(ValueError, match="only data.source='synthetic'"):
        task._check(_config("official", **{"loss.epe": 1.0, "data.tfds_data_dir": "/x"}))
    with pytest.raises(ValueError, match="vgg_checkpoint"):
        task._check(_config("test", **{"loss.vgg": 1.0}))
    with pytest.raises(ValueError, match="multiples of 32"):
        task._check(_config("test", **{"data.crop": 80}))


# ------------------------------------------------------------------------------ augmentation
def _warp_error(img0, gt, flow):
    from peanut_jax.ops import warp

    w = np.asarray(warp(jnp.asarray(img0[None]), jnp.asarray(flow[None, ..., :2]), padding="border"))[0]
    return np.abs(w - gt).mean(-1)


def test_augment_keeps_frames_and_flow_consistent():
    d = _config("test").data
    img0, gt, img1, flow = task.synthetic_triplet(d, (5, 0, 1, 0), 0.5, with_flow=True)
    base0 = np.sort(_warp_error(img0, gt, flow).ravel())
    base1 = np.sort(_warp_error(img1, gt, flow[..., 2:]).ravel())
    # the exact flow explains the middle frame well (smooth texture; occlusions are a small part)
    assert np.median(base0) < 0.02 and np.median(base1) < 0.02
    kinds = set()
    for seed in range(40):
        r = np.random.default_rng(seed)
        a, g, b, t, f = aug.triplet(img0, gt, img1, 0.5, r, None, None, flow)
        assert a.shape == img0.shape and f.shape == flow.shape and t == 0.5
        # flips, rotations and the temporal swap are permutations: the warping errors are the same
        # multiset of values as before (up to the order of float sums)
        e0 = np.sort(_warp_error(a, g, f).ravel())
        e1 = np.sort(_warp_error(b, g, f[..., 2:]).ravel())
        swapped = np.allclose(e0, base1, atol=1e-5)
        np.testing.assert_allclose(e0, base1 if swapped else base0, atol=1e-5)
        np.testing.assert_allclose(e1, base0 if swapped else base1, atol=1e-5)
        # img0/img1 swap together with their flows, gt keeps its pixels (as a multiset)
        np.testing.assert_allclose(np.sort(g.ravel()), np.sort(gt.ravel()))
        kinds.add((swapped, a.tobytes()[:64]))
    assert len(kinds) > 10


def test_augment_crop_channel_flip_and_rotation_rules():
    rng = np.random.default_rng(0)
    img0, gt, img1 = (rng.random((96, 128, 3)).astype(np.float32) for _ in range(3))
    only = {k: False for k in ("channel_flip", "vflip", "hflip", "temporal_flip", "rotate")}
    for seed in range(10):
        a, g, b, t, _ = aug.triplet(img0, gt, img1, 0.5, np.random.default_rng(seed), (64, 64), only)
        # a pure crop: the same window of all three frames
        pos = np.argwhere(np.all(img0[:, :, None] == a[0, 0][None, None, None], axis=-1))
        y, x = pos[0][:2]
        np.testing.assert_array_equal(a, img0[y : y + 64, x : x + 64])
        np.testing.assert_array_equal(g, gt[y : y + 64, x : x + 64])
        np.testing.assert_array_equal(b, img1[y : y + 64, x : x + 64])
    cf = dict(only, channel_flip=True)
    outs = {aug.triplet(img0, gt, img1, 0.5, np.random.default_rng(s), None, cf)[0][0, 0, 0] for s in range(20)}
    assert outs == {img0[0, 0, 0], img0[0, 0, 2]}
    tf = dict(only, temporal_flip=True)
    for s in range(8):
        a, g, b, t, _ = aug.triplet(img0, gt, img1, 0.25, np.random.default_rng(s), None, tf)
        assert (t == 0.75 and a is not None and np.array_equal(a, img1)) or (t == 0.25 and np.array_equal(a, img0))
    with pytest.raises(ValueError, match="square crops"):
        rot = dict(only, rotate=True)
        for s in range(20):
            aug.triplet(img0, gt, img1, 0.5, np.random.default_rng(s), None, rot)


def test_synthetic_batches_deterministic_with_flow():
    c = _config("test", **{"loss.epe": 0.5})
    b1 = next(task.train_batches(c, 7, 0, 1))
    b2 = next(task.train_batches(c, 7, 0, 1))
    assert set(b1) == {"img0", "img1", "gt", "timestep", "flow"}
    assert b1["img0"].shape == (4, 64, 64, 3) and b1["flow"].shape == (4, 64, 64, 4)
    for k in b1:
        np.testing.assert_array_equal(b1[k], b2[k])
    ev = list(task.eval_batches(c, 0, 1))
    assert len(ev) == 1 and ev[0]["gt"].shape == (4, 64, 64, 3)


def test_vimeo_source(tmp_path):
    from peanut_jax.data.tfds import vsr

    rng = np.random.default_rng(0)
    root = tmp_path / "vimeo_triplet"
    names = [f"00001/{i:04d}" for i in range(1, 5)]
    for n in names:
        for j in (1, 2, 3):
            p = root / "sequences" / n / f"im{j}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)).save(p)
    (root / "tri_trainlist.txt").write_text("\n".join(names) + "\n")
    vsr.build("vimeo90k_triplet", root, tmp_path / "tfds", config=None)
    c = _config(
        "test",
        **{
            "data.source": "vimeo90k",
            "data.tfds_data_dir": str(tmp_path / "tfds"),
            "data.crop": 64,
            "data.batch_size": 2,
            "data.eval_batch_size": 1,
            "data.eval_clips": 0,
        },
    )
    task._open.cache_clear()
    b = next(task.train_batches(c, 0, 0, 1))
    assert b["img0"].shape == (2, 64, 64, 3) and b["img0"].dtype == np.float32 and b["img0"].max() <= 1.0
    ev = list(task.eval_batches(c, 0, 1))  # validation = the last 5% (here 1 of 4)
    assert len(ev) == 1 and ev[0]["gt"].shape == (1, 96, 160, 3)
    # every epoch visits every training triplet (3 = int(0.95 * 4)) once
    src = task._open(batching.config_items(c.data), "train")
    assert len(src) == 3


# ------------------------------------------------------------------------- the real network
def test_a_few_train_steps_finite(tmp_path):
    from peanut_jax.train.loop import train_and_evaluate

    c = _config("test", **{"loss.census": 0.1, "loss.sobel": 0.1, "loss.epe": 0.01})
    res = train_and_evaluate(c, tmp_path / "run", devices=jax.devices()[:1])
    assert res.step == 3
    m = res.train_metrics
    for k in ("loss", "loss_l1", "loss_tea", "loss_distill", "loss_census", "loss_sobel", "loss_epe", "lr"):
        assert np.isfinite(m[k]), (k, m)
    expected = (
        m["loss_l1"]
        + m["loss_tea"]
        + 0.01 * m["loss_distill"]
        + 0.1 * m["loss_census"]
        + 0.1 * m["loss_sobel"]
        + 0.01 * m["loss_epe"]
    )
    np.testing.assert_allclose(m["loss"], expected, rtol=1e-4)
    # the evaluation CLI reads the workdir (model rebuilt from config.json)
    from peanut_jax.evaluate import cli as ev_cli

    out = tmp_path / "eval.json"
    assert (
        ev_cli.main(
            [
                "interpolate",
                "--dataset",
                "synthetic",
                "--workdir",
                str(tmp_path / "run"),
                "--max-items",
                "2",
                "--quiet",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    import json

    r = json.loads(out.read_text())
    assert r["num_items"] == 2 and np.isfinite(r["psnr"]) and np.isfinite(r["psnr_average"])


@pytest.mark.slow
def test_tiny_run_beats_frame_averaging(tmp_path):
    from peanut_jax.train.loop import train_and_evaluate

    c = _config("tiny", **{"train.progress": False, "train.tensorboard": False})
    res = train_and_evaluate(c, tmp_path / "run", devices=jax.devices()[:1])
    ev = res.eval_metrics
    assert ev["psnr"] > ev["psnr_average"] + 1.0, ev


# ------------------------------------------------------------------------------- evaluation
import flax.linen as nn  # noqa: E402


class _AverageStub(nn.Module):
    timestep_input: bool = False

    @nn.compact
    def __call__(self, img0, img1, timestep=0.5, scale_list=(4, 2, 1), tta=False):
        return 0.5 * (img0 + img1)


def test_evaluate_interpolation_layouts(tmp_path):
    from peanut_jax.evaluate import interpolation

    rng = np.random.default_rng(0)
    vroot = tmp_path / "vimeo_interp_test"
    for n in ("00001/0001", "00001/0002"):
        for j in (1, 2, 3):
            p = vroot / "target" / n / f"im{j}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(p)
    (vroot / "tri_testlist.txt").write_text("00001/0001\n00001/0002\n\n")
    uroot = tmp_path / "ucf101_interp_ours"
    for d in ("1", "2", "3"):
        for f in ("frame_00.png", "frame_01_gt.png", "frame_02.png"):
            (uroot / d).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(uroot / d / f)
    for dataset, root, n in (("vimeo90k", vroot, 2), ("ucf101", uroot, 3), ("synthetic", None, 2)):
        res = interpolation.evaluate_interpolation(
            _AverageStub(), {}, interpolation.triplets(dataset, root, 2 if dataset == "synthetic" else None)
        )
        assert res["num_items"] == n
        # the stand-in predicts the average of the inputs: the baseline up to float32 vs float64 ties in
        # the 8-bit rounding (averages of two integers are often exactly k + 0.5)
        np.testing.assert_allclose(res["psnr"], res["psnr_average"], atol=0.03)
        np.testing.assert_allclose(res["ssim"], res["ssim_average"], atol=2e-3)
        assert 0 < res["ssim"] <= 1
    with pytest.raises(FileNotFoundError, match="neither target"):
        interpolation.vimeo_triplets(tmp_path)
    with pytest.raises(ValueError, match="channel_order"):
        interpolation.evaluate_interpolation(_AverageStub(), {}, [], channel_order="bgra")
