"""``python -m peanut_jax.pipeline.evaluate_rvos``: synthetic held-out clips with a tiny random-weight
SAMWISE (exported folder, the synthetic BPE), predictions mode, baselines, Ref-DAVIS17 / MeViS
valid_u protocols and the submission zip on tiny generated TFDS datasets, bad input.

One model run (one compile of the tiny model); everything else reads masks from folders."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image
from test_samwise import tiny_variables

from peanut_jax.data.referring import SUBSETS, referring_clip
from peanut_jax.metrics.jf import j_and_f
from peanut_jax.pipeline import evaluate_rvos
from peanut_jax.pipeline.evaluate_rvos import EVAL_STREAM, DavisLabelMaps, davis_unsupervised, main

SIZE, CLIPS, OBJECTS = 64, 2, 3
SYN = ["--dataset", "synthetic", "--num-clips", str(CLIPS), "--height", str(SIZE), "--width", str(SIZE), "--quiet"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from peanut_jax.checkpoints.export import export_weights, module_kwargs
    from peanut_jax.models import build

    module = build("samwise", sam2_size="tiny_test", vocab_size=408)  # the synthetic BPE has 408 ids
    v = tiny_variables(module, seed=3)
    d = tmp_path_factory.mktemp("ckpt") / "samwise_tiny"
    extra = {k: x for k, x in v.items() if k != "params"}
    return export_weights(d, "samwise", module_kwargs("samwise", module), v["params"], collections=extra)


@pytest.fixture(scope="module")
def model_run(ckpt, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    rc = main([*SYN, "--checkpoint", str(ckpt), "--save-masks", str(root / "masks"), "--out", str(root / "out")])
    assert rc == 0
    return root, json.loads((root / "out" / "rvos_synthetic.json").read_text())


def _clip(i):
    return referring_clip((1000, EVAL_STREAM, i), 8, SIZE, SIZE, OBJECTS, True, return_info=True)


def _read(path):
    return np.asarray(Image.open(path)) > 0


def _write_masks(root, video, exp_id, masks, names=None):
    d = root / video / exp_id
    d.mkdir(parents=True, exist_ok=True)
    for t, m in enumerate(masks):
        name = names[t] if names else f"{t:05d}"
        Image.fromarray(np.where(m, 255, 0).astype(np.uint8), "L").save(d / f"{name}.png")


def _mean(entries, key="JF"):
    return float(np.mean([e[key] for e in entries]))


def test_eval_seeds_are_the_trainers_held_out_stream():
    from peanut_jax.train.batching import EVAL_STREAM as TRAIN_EVAL_STREAM

    assert EVAL_STREAM == TRAIN_EVAL_STREAM


def test_synthetic_model_run_json(model_run, capsys):
    root, res = model_run
    assert res["dataset"] == "synthetic" and res["checkpoint"].endswith("samwise_tiny")
    assert res["num_videos"] == CLIPS and res["num_expressions"] == CLIPS * OBJECTS
    for key in ("J", "F", "JF", "per_expression", "baselines", "swapped_sentences", "subsets", "settings"):
        assert key in res, key
    assert set(res["subsets"]) == set(SUBSETS)
    assert sum(s["count"] for s in res["subsets"].values()) == res["num_expressions"]
    per = res["per_expression"]
    assert res["JF"] == pytest.approx((_mean(per, "J") + _mean(per, "F")) / 2)
    for i in range(CLIPS):
        clip, sentences, gts, info = _clip(i)
        ents = [e for e in per if e["video"] == f"clip_{i:04d}"]
        assert [e["exp"] for e in ents] == sentences
        assert [e["subset"] for e in ents] == info["subsets"]
        preds = [
            np.stack([_read(root / "masks" / e["video"] / e["exp_id"] / f"{t:05d}.png") for t in range(8)])
            for e in ents
        ]
        for k, e in enumerate(ents):
            got = j_and_f(preds[k], gts[k])  # the saved masks are the scored masks
            assert (e["J"], e["F"], e["JF"]) == pytest.approx((got["J"], got["F"], got["JF"]), abs=1e-12)
            # baselines from the ground truth alone
            rand = [j_and_f(gts[j], gts[k]) for j in range(OBJECTS)]
            assert e["random_object"]["JF"] == pytest.approx(_mean(rand))
            assert e["union_of_objects"]["JF"] == pytest.approx(j_and_f(gts.any(0), gts[k])["JF"])
            src = (k + 1) % OBJECTS
            assert e["swapped"]["exp"] == sentences[src]
            assert e["swapped"]["JF"] == pytest.approx(j_and_f(preds[src], gts[k])["JF"])
    b = res["baselines"]
    assert b["random_object"]["JF"] == pytest.approx(
        (_mean([e["random_object"] for e in per], "J") + _mean([e["random_object"] for e in per], "F")) / 2
    )
    assert 0 < b["random_object"]["JF"] < 1 and 0 < b["union_of_objects"]["JF"] < 1


def test_predictions_mode_equals_model_mode(model_run, tmp_path, capsys):
    root, res = model_run
    assert main([*SYN, "--predictions", str(root / "masks"), "--out", str(tmp_path)]) == 0
    got = json.loads((tmp_path / "rvos_synthetic.json").read_text())
    assert got["checkpoint"] is None and got["predictions"] == str(root / "masks")
    drop = ("checkpoint", "predictions", "settings")
    assert {k: v for k, v in got.items() if k not in drop} == {k: v for k, v in res.items() if k not in drop}
    out = capsys.readouterr().out
    assert "random object" in out and "appearance-identical" in out


def test_ground_truth_scores_one_and_swapped_drops_to_baseline(tmp_path, capsys):
    for i in range(CLIPS):
        _, sentences, gts, _ = _clip(i)
        for k in range(len(sentences)):
            _write_masks(tmp_path / "gt", f"clip_{i:04d}", str(k), gts[k])
    assert main([*SYN, "--predictions", str(tmp_path / "gt"), "--out", str(tmp_path / "o")]) == 0
    res = json.loads((tmp_path / "o" / "rvos_synthetic.json").read_text())
    assert res["JF"] == 1.0 and all(e["JF"] == 1.0 for e in res["per_expression"])
    # perfect text use, sentences swapped: every object gets another object's mask
    assert res["swapped_sentences"]["JF"] < res["baselines"]["random_object"]["JF"] < 1.0


def test_missing_frame_is_a_one_line_error(model_run, tmp_path, capsys):
    root, res = model_run
    shutil.copytree(root / "masks", tmp_path / "p")
    (tmp_path / "p" / "clip_0001" / "2" / "00005.png").unlink()
    assert main([*SYN, "--predictions", str(tmp_path / "p"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "clip_0001" in err and "expression '2'" in err and "frame '00005'" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "kinetics", "--checkpoint", "x"], "--dataset kinetics: unknown dataset; known: synthetic"),
        (["--dataset", "synthetic", "--num-clips", "1"], "give --checkpoint SPEC"),
        (["--dataset", "synthetic", "--checkpoint", "{tmp}/nothing_here"], "--checkpoint {tmp}/nothing_here"),
        (["--dataset", "synthetic", "--checkpoint", "a", "--predictions", "b"], "not both"),
        (["--dataset", "ref_davis17", "--predictions", "{tmp}", "--data-dir", "{tmp}"], "needs the TFDS dataset built"),
        (["--dataset", "ref_youtube_vos", "--predictions", "{tmp}"], "give --submission out.zip"),
        (["--dataset", "synthetic", "--predictions", "{tmp}", "--threshold", "1.5"], "--threshold"),
    ],
)
def test_bad_input(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main([*argv, "--quiet", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message.replace("{tmp}", str(tmp_path)) in err, err
    assert not (tmp_path / "o").exists()


def test_davis_unsupervised_matches_objects():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 3, (4, 20, 24))
    swapped = np.choose(gt, [0, 2, 1])  # ids 1 and 2 exchanged: the assignment undoes it
    rows = davis_unsupervised(swapped, gt, None)
    assert [(r["J"], r["F"]) for r in rows] == [(1.0, 1.0), (1.0, 1.0)]
    rows = davis_unsupervised(np.where(gt == 2, 0, gt), gt, None)  # object 2 missed
    assert sorted(r["J"] for r in rows) == [0.0, 1.0]


def test_davis_label_maps_follow_the_official_argmax():
    rng = np.random.default_rng(1)
    n_obj, t, h, w = 3, 2, 6, 7
    probs = rng.choice([0.0, 0.3, 0.5, 0.7, 0.9, 1.0], (n_obj * 4, t, h, w)).astype(np.float32)
    maps = DavisLabelMaps.new(t, h, w)
    for e in range(n_obj * 4):
        maps.add(e, probs[e])
    for a in range(4):  # inference_davis.py: p < 0.5 -> 0, background 0.1, argmax (first on ties)
        p = probs[a::4].copy()
        p[p < 0.5] = 0.0
        want = np.argmax(np.concatenate([np.full((1, t, h, w), 0.1, np.float32), p]), axis=0)
        np.testing.assert_array_equal(maps.labels[a], want)


# ----------------------------------------------------------------------------------- TFDS datasets
def _fixtures():
    """The generated-tree helpers of test_tfds_rvos (skips without tensorflow_datasets)."""
    pytest.importorskip("tensorflow_datasets")
    import test_tfds_rvos

    return test_tfds_rvos


def _build(*args):
    from peanut_jax.data.tfds import rvos

    rvos.build(*args)


DH, DW, DT = 32, 48, 3
DNAMES = [f"{t:05d}" for t in range(DT)]


def _davis_label(t):
    lab = np.zeros((DH, DW), np.uint8)
    lab[2 + t : 12 + t, 3:14] = 1
    lab[16:28, 20 + 3 * t : 32 + 3 * t] = 2
    lab[0, :] = 255  # void
    return lab


@pytest.fixture(scope="module")
def davis(tmp_path_factory):
    fx = _fixtures()
    root = tmp_path_factory.mktemp("davis")
    rng = np.random.default_rng(0)
    exps = {}
    for obj in (1, 2):
        for a in range(4):
            exps[str(len(exps))] = {"exp": f"object {obj} by annotator {a}", "obj_id": str(obj)}
    for t, name in enumerate(DNAMES):
        fx._write(root / "m" / "valid" / "JPEGImages" / "dv" / f"{name}.jpg", fx._jpeg(rng))
        fx._palette_png(root / "m" / "valid" / "Annotations" / "dv" / f"{name}.png", _davis_label(t))
    meta = {"videos": {"dv": {"expressions": exps, "frames": DNAMES}}}
    fx._json(root / "m" / "meta_expressions" / "valid" / "meta_expressions.json", meta)
    _build("ref_davis17", root / "m", root / "d")
    return root


def test_ref_davis17_protocol(davis, tmp_path, capsys):
    labels = np.stack([_davis_label(t) for t in range(DT)])
    void = labels == 255
    for e in range(8):
        obj, a = e // 4 + 1, e % 4
        pred = labels == obj
        if a == 0:
            pred = pred | void  # void pixels are not scored
        if a == 1:
            pred = labels == 3 - obj  # annotator 1 names the objects the other way round
        _write_masks(tmp_path / "p", "dv", str(e), pred, DNAMES)
    argv = ["--dataset", "ref_davis17", "--data-dir", str(davis / "d"), "--predictions", str(tmp_path / "p")]
    assert main([*argv, "--quiet", "--out", str(tmp_path / "o")]) == 0
    res = json.loads((tmp_path / "o" / "rvos_ref_davis17.json").read_text())
    per = res["per_expression"]
    assert [e["annotator"] for e in per] == [0, 1, 2, 3] * 2
    assert [e["JF"] == 1.0 for e in per] == [True, False, True, True] * 2
    # the official protocol matches predicted to ground-truth objects: annotator 1 scores 1 too
    rows = res["davis17_unsupervised"]["per_annotator"]
    assert [r["JF"] for r in rows] == [1.0] * 4 and res["JF"] == 1.0
    assert res["per_expression_mean"]["JF"] < 1.0
    # an object missed by annotator 2: that annotator drops, the others stay
    _write_masks(tmp_path / "p", "dv", "6", np.zeros_like(void), DNAMES)
    assert main([*argv, "--quiet", "--out", str(tmp_path / "o")]) == 0
    rows = json.loads((tmp_path / "o" / "rvos_ref_davis17.json").read_text())["davis17_unsupervised"]["per_annotator"]
    assert [r["JF"] == 1.0 for r in rows] == [True, True, False, True]
    assert rows[2]["J"] == pytest.approx(0.5)  # one of two objects found


def test_mevis_valid_u_union_targets_and_text_keyed_mean(tmp_path, capsys):
    fx = _fixtures()
    rng = np.random.default_rng(2)
    fx._mevis_tree(tmp_path / "m", rng, "valid_u")
    meta = tmp_path / "m" / "valid_u" / "meta_expressions.json"
    data = json.loads(meta.read_text())
    data["videos"]["m1"]["expressions"]["2"] = {"exp": "moving left", "obj_id": [1], "anno_id": [11]}
    meta.write_text(json.dumps(data))
    _build("mevis", tmp_path / "m", tmp_path / "d")
    names = data["videos"]["m1"]["frames"]
    m10 = [fx._obj_mask(0, 10), np.zeros_like(fx._obj_mask(0, 10)), fx._obj_mask(2, 10)]
    m11 = [fx._obj_mask(t, 11) for t in range(3)]
    _write_masks(tmp_path / "p", "m1", "0", np.zeros((3, *m10[0].shape), bool), names)  # wrong
    _write_masks(tmp_path / "p", "m1", "1", np.stack(m10) | np.stack(m11), names)  # union of two objects
    _write_masks(tmp_path / "p", "m1", "2", np.stack(m11), names)
    argv = ["--dataset", "mevis_valid_u", "--data-dir", str(tmp_path / "d"), "--predictions", str(tmp_path / "p")]
    assert main([*argv, "--quiet", "--out", str(tmp_path / "o")]) == 0
    res = json.loads((tmp_path / "o" / "rvos_mevis_valid_u.json").read_text())
    assert [e["JF"] == 1.0 for e in res["per_expression"]] == [False, True, True]
    # inference_mevis.py keys its results by text: the later "moving left" replaces the earlier
    assert res["num_distinct_texts"] == 2 and res["JF"] == 1.0 and res["per_expression_mean"]["JF"] < 1.0


def test_submission_zip(tmp_path, capsys):
    fx = _fixtures()
    rng = np.random.default_rng(3)
    fx._ytvos_tree(tmp_path / "m", rng)
    fx._ytvos_tree(tmp_path / "m", rng, "valid", {"vidC": {"0": ("a cat", None), "1": ("a dog", None)}}, masks=False)
    _build("ref_youtube_vos", tmp_path / "m", tmp_path / "d")
    names = sorted(["00010", "00000", "00005"])
    masks = np.zeros((3, 32, 48), bool)
    masks[:, 4:9, 5:20] = True
    _write_masks(tmp_path / "p", "vidC", "0", masks, names)
    _write_masks(tmp_path / "p", "vidC", "1", ~masks, names)
    argv = ["--dataset", "ref_youtube_vos", "--data-dir", str(tmp_path / "d"), "--predictions", str(tmp_path / "p")]
    assert main([*argv, "--quiet", "--submission", str(tmp_path / "sub.zip")]) == 0
    with zipfile.ZipFile(tmp_path / "sub.zip") as z:
        assert sorted(z.namelist()) == sorted(f"Annotations/vidC/{e}/{n}.png" for e in "01" for n in names)
        with z.open("Annotations/vidC/1/00005.png") as f:
            got = np.asarray(Image.open(f))
    assert set(np.unique(got)) == {0, 255} and np.array_equal(got > 0, ~masks[1])
    # a failing run leaves no zip behind
    (tmp_path / "p" / "vidC" / "1" / "00010.png").unlink()
    assert main([*argv, "--quiet", "--submission", str(tmp_path / "sub2.zip")]) == 2
    assert not (tmp_path / "sub2.zip").exists() and not list(tmp_path.glob(".sub2.zip*"))
    assert "vidC" in capsys.readouterr().err


def test_tfds_videos_frames_decode(davis):
    (item,) = list(evaluate_rvos.tfds_videos("ref_davis17", davis / "d"))
    frames = item.frames()
    want = np.asarray(Image.open(davis / "m" / "valid" / "JPEGImages" / "dv" / "00001.jpg").convert("RGB"))
    assert frames.shape == (DT, DH, DW, 3) and np.array_equal(frames[1], want)
    assert np.array_equal(item.target(5), np.stack([_davis_label(t) == 2 for t in range(DT)]))
    assert item.void().sum() == DT * DW
