"""The evaluation protocols of peanut_jax.evaluate: inpainting (same numbers as the erase module's
evaluation), VSR and interpolation on tiny stand-in models, and the moved CLI."""

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from peanut_jax.data.synthetic import generate_clip
from peanut_jax.evaluate import inpainting, interpolation, vsr
from peanut_jax.evaluate.common import quantize
from peanut_jax.metrics import psnr, ssim, ssim_matlab, warping_error


def fake_window_model(x, num_local):
    """Stand-in for the E2FGVI window call: every output depends on every frame of the window."""
    x = np.asarray(x, np.float32)
    k = np.arange(num_local, dtype=np.float32)[:, None, None, None]
    return np.tanh(0.6 * x[:num_local] + 0.9 * x.mean(0, keepdims=True) + 0.05 * k)


def _items(n_frames=6):
    to8 = lambda a: np.clip(np.round(a * 255), 0, 255).astype(np.uint8)
    out = []
    for seed in (0, 1):
        c = generate_clip(seed, num_frames=n_frames, height=66, width=112, num_objects=1)
        out.append(
            {
                "name": f"clip{seed}",
                "frames": to8(c.frames),
                "masks": c.object_mask,
                "ground_truth": to8(c.background),
                "flow_forward": c.background_flow_forward,
                "occlusion": c.background_occlusion_forward,
            }
        )
    return out


def test_inpainting_protocol_from_first_principles():
    from peanut_jax.pipeline import erase_windows as engine

    items = _items()
    cfg = engine.EraseConfig(mode="official", neighbor_stride=2, ref_length=3)
    new = inpainting.evaluate(None, None, items, config=cfg, runner=fake_window_model, model="e2fgvi_hq")
    # the numbers from first principles: official composites, per-frame metrics, Ewarp of the saved frames
    psnrs, ssims, ews = [], [], []
    for it in items:
        comps = engine.inpaint_arrays(
            None, None, it["frames"], it["masks"], cfg, model="e2fgvi_hq", runner=fake_window_model
        )
        gt = it["ground_truth"].astype(np.float64)
        for c, g in zip(comps, gt):
            mse = np.mean((np.asarray(c, np.float64) - g) ** 2)
            psnrs.append(20 * np.log10(255 / np.sqrt(mse)))
            ssims.append(ssim(np.asarray(c, np.float64), g, 255.0, window="uniform", window_size=65))
        saved = np.stack([c.astype(np.uint8) for c in comps]).astype(np.float32) / 255
        ews += list(np.asarray(warping_error(saved, it["flow_forward"], None, it["occlusion"], reduce="none")))
    assert new["frames"] == 12 and new["videos"] == 2
    assert new["psnr"] == pytest.approx(np.mean(psnrs), rel=1e-12)
    assert new["ssim"] == pytest.approx(np.mean(ssims), rel=1e-12) and 0 < new["ssim"] < 1
    assert new["ewarp"] == pytest.approx(np.nanmean(ews), rel=1e-6) and new["ewarp"] > 0
    # the default protocol is the official one, whatever the erase default becomes
    assert inpainting.OFFICIAL.mode == "official"
    with pytest.raises(ValueError, match="uint8"):
        inpainting.evaluate(
            None,
            None,
            [dict(items[0], frames=items[0]["frames"].astype(np.float32))],
            runner=fake_window_model,
            model="e2fgvi_hq",
        )
    with pytest.raises(ValueError, match="empty"):
        inpainting.evaluate(None, None, [], runner=fake_window_model, model="e2fgvi_hq")


def test_inpainting_a_better_model_scores_better_on_every_metric():
    from peanut_jax.pipeline import erase_windows as engine

    cfg = engine.EraseConfig(mode="official", neighbor_stride=2, ref_length=3)
    items = _items()
    grey = inpainting.evaluate(None, None, items, config=cfg, runner=fake_window_model, model="e2fgvi_hq")

    class CopyGT:
        """Outputs the (padded) ground truth of each window in [-1, 1]."""

        def __init__(self, gt):
            self.queue = [
                engine.pad_frames(gt[list(w.local)].astype(np.float32) / 127.5 - 1 + 1e-4)
                for w in engine.plan_windows(len(gt), cfg)
            ]

        def __call__(self, x, num_local):
            return self.queue.pop(0)

    for it, g in zip(items, grey["per_video"]):
        b = inpainting.evaluate(None, None, [it], config=cfg, runner=CopyGT(it["ground_truth"]), model="e2fgvi_hq")
        assert b["psnr"] > g["psnr"] + 3 and b["ssim"] > g["ssim"] and b["ewarp"] < g["ewarp"]


def test_inpainting_flow_fn_is_used_without_item_flows():
    items = [{k: v for k, v in _items(4)[0].items() if k not in ("flow_forward", "occlusion")}]
    calls = []

    def zero_flow(gt01):
        calls.append(gt01.shape)
        z = np.zeros(gt01.shape[:-1] + (2,), np.float32)[1:]
        return z, z

    res = inpainting.evaluate(None, None, items, runner=fake_window_model, model="e2fgvi_hq", flow_fn=zero_flow)
    assert calls == [(4, 66, 112, 3)] and np.isfinite(res["ewarp"])


class _NearestStub(nn.Module):
    """x4 nearest upsampling + t/100 on frame t (a parameter-free stand-in for BasicVSR++)."""

    is_low_res_input: bool = True

    @property
    def output_scale(self):
        return 4

    @nn.compact
    def __call__(self, lqs, is_mirror_extended=None):
        up = jnp.repeat(jnp.repeat(lqs, 4, 2), 4, 3)
        return up + jnp.arange(lqs.shape[1], dtype=lqs.dtype)[None, :, None, None, None] / 100


def test_vsr_protocol_on_synthetic_clips():
    clips = vsr.vsr_clips("synthetic", max_clips=2, max_frames=3, lq_size=16)
    res = vsr.evaluate_vsr(_NearestStub(), {}, clips, crop_border=1)
    assert res["num_clips"] == 2 and set(res["clips"]) == {"synthetic_000", "synthetic_001"}
    lq, gt = clips[1].load()
    out = quantize(np.kron(lq / np.float32(255.0), np.ones((4, 4, 1))) + np.arange(3)[:, None, None, None] / 100)
    assert res["clips"]["synthetic_001"]["psnr_y"] == pytest.approx(
        np.mean(psnr(out, gt / 255.0, crop_border=1, y_channel=True)), rel=1e-6
    )
    assert res["clips"]["synthetic_001"]["frames"] == 3
    assert res["psnr_bicubic"] > res["psnr"]  # nearest + offsets is worse than bicubic
    with pytest.raises(ValueError, match="degradation"):
        vsr.vsr_clips("synthetic", degradation="XX")
    with pytest.raises(ValueError, match="needs --root"):
        vsr.vsr_clips("reds4")
    with pytest.raises(ValueError, match="no clips"):
        vsr.evaluate_vsr(_NearestStub(), {}, [])


class _AverageStub(nn.Module):
    timestep_input: bool = False

    @nn.compact
    def __call__(self, img0, img1, timestep=0.5, scale_list=(4, 2, 1), tta=False):
        return 0.5 * (img0 + img1)


def test_interpolation_protocol_uses_rife_formulas():
    items = interpolation.triplets("synthetic", max_items=2, height=32, width=48)
    res = interpolation.evaluate_interpolation(_AverageStub(), {}, items, channel_order="rgb")
    assert res["num_items"] == 2
    i0, gt_u8, i1 = items[0].load()
    pred = quantize(0.5 * (i0.astype(np.float32) / 255 + i1.astype(np.float32) / 255))
    gt = gt_u8 / 255.0
    mse = float(np.mean((pred - gt) ** 2))
    m = res["items"]["synthetic_000"]
    assert m["psnr"] == pytest.approx(-10 * math.log10(mse), rel=1e-12)
    assert m["ssim"] == pytest.approx(float(ssim_matlab(gt[None], pred[None])), rel=1e-6)
    assert res["psnr"] == pytest.approx(np.mean([v["psnr"] for v in res["items"].values()]), rel=1e-12)
    with pytest.raises(ValueError, match="channel_order"):
        interpolation.evaluate_interpolation(_AverageStub(), {}, items, channel_order="bgra")
    with pytest.raises(ValueError, match="unknown interpolation dataset"):
        interpolation.triplets("vimeo", root=".")
