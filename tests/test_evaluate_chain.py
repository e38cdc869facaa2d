"""Hard-case presets (``data.hardcases``) and ``python -m peanut_jax.pipeline.evaluate_chain``.

Presets are deterministic and their ground truth exact (the target mask is where the target's shape
was drawn, recomputed here from its track; the clean background equals the clip outside it; the
clean background moves by the stated flow).  The measuring is checked with stand-in erase stages
(one returns the clean background, one the input), then the command runs with the shipped demo
eraser and ground-truth masks, and end to end with a tiny random SAMWISE exported to a folder.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_samwise import tiny_variables

from peanut_jax.data import synthetic
from peanut_jax.data.hardcases import PRESETS, make_case
from peanut_jax.data.referring import synthetic_tokenizer
from peanut_jax.pipeline import evaluate_chain
from peanut_jax.pipeline.chain import Chain, Stage
from peanut_jax.pipeline.erase_windows import EraseConfig
from peanut_jax.pipeline.sources import Frame

T = 5  # clips of <= 5 frames compile one E2FGVI window shape
TINY = dict(num_frames=T, height=64, width=64)
ARGS = ["--num-frames", str(T), "--height", "64", "--width", "64"]


def target_drawn(case, t):
    """Where the target's shape has alpha > 0 in frame t (its signed distance < 0.5 px)."""
    obj = case.info["objects"][0]
    gy, gx = np.mgrid[0 : case.height, 0 : case.width].astype(np.float32)
    cx, cy = obj["centers"][t]
    r = np.float32(obj["radius"])
    lx, ly = gx - np.float32(cx), gy - np.float32(cy)
    return r * synthetic.shape_sdf(obj["shape"], lx / r, ly / r) < 0.5


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_deterministic_with_exact_ground_truth(name):
    case = make_case(name, 3, **TINY)
    a = case.arrays()
    b = make_case(name, 3, **TINY).arrays()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not np.array_equal(a["frames"], make_case(name, 4, **TINY).arrays()["frames"])
    assert a["frames"].shape == (T, 64, 64, 3) and a["masks"].shape == (T, 64, 64)
    assert case.sentence == case.sentences[0] and case.sentence.startswith("the ")
    for t in range(T):
        np.testing.assert_array_equal(a["masks"][t], target_drawn(case, t))
        outside = ~a["masks"][t]
        np.testing.assert_array_equal(a["frames"][t][outside], a["clean"][t][outside])
    inside = a["masks"]
    assert inside.any() and (a["frames"][inside] != a["clean"][inside]).any(-1).mean() > 0.9
    # the clean background moves by the stated flow (whole pixels), away from the other objects
    fx, fy = (int(v) for v in case.flow_forward)
    assert (fx, fy) == tuple(-np.asarray(case.pan))
    for t in range(T - 1):
        c0, c1 = a["clean"][t].astype(int), a["clean"][t + 1].astype(int)
        keep = ~(a["others"][t] | a["others"][t + 1])
        y0, y1 = max(0, -fy), 64 - max(0, fy)
        x0, x1 = max(0, -fx), 64 - max(0, fx)
        moved = c1[y0 + fy : y1 + fy, x0 + fx : x1 + fx]
        ok = keep[y0:y1, x0:x1] & keep[y0 + fy : y1 + fy, x0 + fx : x1 + fx]
        assert np.abs(c0[y0:y1, x0:x1] - moved)[ok].max() <= 1


def test_with_target_keeps_the_clip_and_moves_the_ground_truth():
    case = make_case("similar_distractors", 2, **TINY)
    base = case.arrays()
    masks = []
    for k in range(len(case.sentences)):
        c = case.with_target(k)
        a = c.arrays()
        np.testing.assert_array_equal(a["frames"], base["frames"])  # the same clip whichever the target
        assert c.sentence == case.sentences[k] and c.subset == case.info["subsets"][k] and c.target == k
        assert c.describe()["target"]["shape"] == case.info["objects"][k]["shape"]
        assert a["masks"].any()
        masks.append(a["masks"])
    np.testing.assert_array_equal(masks[0], base["masks"])
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert not (masks[i] & masks[j]).any()  # visible footprints
    with pytest.raises(ValueError, match="target 4 outside the clip's 4 objects"):
        case.with_target(4)


def test_preset_settings_hold():
    assert (PRESETS["hires"].height, PRESETS["hires"].width) == (1080, 1920)
    assert PRESETS["long"].num_frames >= 1000
    # similar distractors: the target shares its colour with others (appearance-identical on even seeds)
    for seed in range(4):
        case = make_case("similar_distractors", seed, **TINY)
        want = "appearance-identical" if seed % 2 == 0 else "colour-ambiguous"
        assert case.subset == want
        same = [o for o in case.info["objects"][1:] if o["color"] == case.info["objects"][0]["color"]]
        assert len(same) >= 1
    # fast motion: everything moves at >= 6% of the side per frame, the camera pans
    case = make_case("fast_motion", 0, **TINY)
    assert all(np.hypot(*o["velocity"]) >= 0.06 * 64 for o in case.info["objects"])
    assert any(case.pan)
    assert make_case("textured_background", 0, **TINY).background in ("stripes", "checkerboard", "noise")
    # long: 1000 frames drawn one at a time, wrapping motion keeps moving objects coming back
    case = make_case("long", 0, height=64, width=64)
    assert len(case) == PRESETS["long"].num_frames
    last = list(case.frames(start=len(case) - 2))
    assert [r.index for r in last] == [len(case) - 2, len(case) - 1]
    assert all(o["wraps"] for o in case.info["objects"] if o["motion"] != "still")
    # hires: a 1080p frame
    rec = next(make_case("hires", 0, num_frames=2).frames())
    assert rec.image.shape == (1080, 1920, 3) and rec.mask.any()


class StandIn(Stage):
    """An 'erase' stage that returns the clean background (oracle) or the input (identity)."""

    name = "erase"
    needs_masks = True

    def __init__(self, case, oracle):
        self.case, self.oracle, self.config = case, oracle, EraseConfig(mode="streaming")

    def psize(self, info):
        return (info.height, info.width)

    def __call__(self, frames, info):
        for fr, rec in zip(frames, self.case.frames()):
            yield Frame(rec.clean if self.oracle else fr.image, None, fr.index)


@pytest.mark.parametrize("name", ["fast_motion", "textured_background"])
def test_measures_with_stand_in_erasers(name):
    case = make_case(name, 1, **TINY)
    best = evaluate_chain.evaluate_case(case, Chain([StandIn(case, True)]), "gt")
    assert best["JF"] == 1.0 and best["frames_out"] == T
    assert best["psnr_region"] == pytest.approx(100.0) and best["ssim_region"] == pytest.approx(1.0)
    assert best["ewarp"] == best["ewarp_clean"] < 1e-3  # the stated flow carries the clean background
    assert best["psnr_region_input"] < 30 and best["ewarp_input"] > best["ewarp_clean"]
    same = evaluate_chain.evaluate_case(case, Chain([StandIn(case, False)]), "gt")
    assert same["psnr_region"] == same["psnr_region_input"] == best["psnr_region_input"]
    assert same["ssim_region"] == same["ssim_region_input"] and same["ewarp"] == same["ewarp_input"]


def test_gt_masks_with_the_demo_eraser_write_json_and_table(tmp_path, capsys):
    out = tmp_path / "res"
    rc = evaluate_chain.main(["--preset", "similar_distractors", "--masks", "gt", *ARGS, "--out", str(out)])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["evaluate_chain.json", "evaluate_chain.md"]
    res = json.loads((out / "evaluate_chain.json").read_text())
    m = res["presets"]["similar_distractors"]["mean"]
    assert m["JF"] == 1.0 and m["frames"] == T
    for k in ("psnr_region", "ssim_region", "ewarp", "psnr_region_input", "ewarp_clean"):
        assert np.isfinite(m[k]), k
    assert m["psnr_region"] > m["psnr_region_input"] + 3  # the object is gone from the region
    clip = res["presets"]["similar_distractors"]["clips"][0]
    assert clip["sentence"] == make_case("similar_distractors", 0, **TINY).sentence
    table = (out / "evaluate_chain.md").read_text()
    assert f"| similar_distractors | 1 | {T} | 64x64 | gt | 1.000 |" in table
    assert table.strip() in capsys.readouterr().out


@pytest.fixture(scope="module")
def tiny_samwise(tmp_path_factory):
    from peanut_jax.checkpoints.export import export_weights, module_kwargs
    from peanut_jax.models import build

    module = build("samwise", sam2_size="tiny_test", vocab_size=synthetic_tokenizer().vocab_size)
    v = tiny_variables(module, seed=1)
    d = tmp_path_factory.mktemp("samwise")
    rest = {k: x for k, x in v.items() if k != "params"}
    return export_weights(d, "samwise", module_kwargs("samwise", module), v["params"], collections=rest)


def test_text_masks_from_a_tiny_samwise_end_to_end(tmp_path, tiny_samwise):
    out = tmp_path / "res"
    rc = evaluate_chain.main(
        ["--preset", "fast_motion", "--text-checkpoint", str(tiny_samwise), *ARGS, "--out", str(out)]
    )
    assert rc == 0
    res = json.loads((out / "evaluate_chain.json").read_text())
    assert res["settings"]["masks"] == "text" and res["weights"]["text"] == str(tiny_samwise)
    m = res["presets"]["fast_motion"]["mean"]
    assert 0.0 <= m["JF"] <= 1.0 and m["frames"] == T
    for k in ("J", "F", "psnr_region", "ssim_region", "ewarp"):
        assert np.isfinite(m[k]), k


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--preset", "no_such_preset", "--masks", "gt"], "--preset"),
        (["--masks", "gt"], "--preset"),
        (["--preset", "long"], "--text-checkpoint"),
        (["--preset", "long", "--masks", "gt", "--num-clips", "0"], "--num-clips"),
        (["--preset", "long", "--masks", "gt", "--erase-checkpoint", "/no/such/weights"], "--erase-checkpoint"),
    ],
)
def test_bad_input_is_one_line_and_keeps_old_results(tmp_path, capsys, argv, flag):
    out = tmp_path / "res"
    out.mkdir()
    old = out / "evaluate_chain.json"
    old.write_text('{"old": true}\n')
    rc = evaluate_chain.main([*argv, *ARGS, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and flag in err, err
    assert sorted(p.name for p in out.iterdir()) == ["evaluate_chain.json"] and old.read_text() == '{"old": true}\n'
