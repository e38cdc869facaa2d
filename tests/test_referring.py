"""Synthetic referring segmentation: clip/targets shapes, determinism, unique minimal descriptions
(checked by an independent reading of each sentence), distractor rates, objects leaving the frame,
and the shipped byte-level BPE of the grammar."""

import itertools
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from peanut_jax.data import referring, synthetic
from peanut_jax.data.referring import (
    BACKGROUNDS,
    SYNTHETIC_BPE_DIR,
    ReferringRenderer,
    grammar_sentences,
    referring_clip,
    referring_layout,
    referring_vocabulary,
    synthetic_tokenizer,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]

# -- an independent reading of the grammar's sentences ------------------------------------------

_POSITION_WORDS = {
    "on the left": "left",
    "on the right": "right",
    "at the top": "top",
    "at the bottom": "bottom",
    "in the middle": "middle",
}


def read_sentence(sentence):
    """(shape, {kind: value}) of a sentence, from its words alone."""
    words = sentence.split()
    assert words[0] == "the", sentence
    shapes = [w for w in words if w in synthetic.SHAPES]
    assert len(shapes) == 1, sentence
    mods = {}
    colors = [w for w in words if w in synthetic.COLORS]
    if colors:
        (mods["color"],) = colors
    if "small" in words:
        mods["size"] = "small"
    if "large" in words or "big" in words:
        mods["size"] = "large"
    if "not moving" in sentence or "standing still" in sentence:
        mods["motion"] = "still"
    elif "moving" in words:
        mods["motion"] = words[words.index("moving") + 1]
    for phrase, pos in _POSITION_WORDS.items():
        if phrase in sentence:
            assert "position" not in mods, sentence
            mods["position"] = pos
    return shapes[0], mods


def truth(obj, kind, value, h, w):
    """True / False / None: position words hold when every centre is in the third, fail when every
    centre is at least 5% of the side outside it."""
    if kind != "position":
        return obj[kind] == value
    x, y = np.asarray(obj["centers"]).T
    m = 0.05 * min(h, w)
    bx, by = (w / 3 - 0.5, 2 * w / 3 - 0.5), (h / 3 - 0.5, 2 * h / 3 - 0.5)
    inside = {
        "left": x < bx[0],
        "right": x > bx[1],
        "top": y < by[0],
        "bottom": y > by[1],
        "middle": (x > bx[0]) & (x < bx[1]) & (y > by[0]) & (y < by[1]),
    }[value]
    outside = {
        "left": x > bx[0] + m,
        "right": x < bx[1] - m,
        "top": y > by[0] + m,
        "bottom": y < by[1] - m,
        "middle": (x < bx[0] - m) | (x > bx[1] + m) | (y < by[0] - m) | (y > by[1] + m),
    }[value]
    return True if inside.all() else False if outside.all() else None


def singles_out(objects, i, preds, h, w):
    return all(truth(objects[i], k, v, h, w) is True for k, v in preds) and all(
        any(truth(o, k, v, h, w) is False for k, v in preds) for j, o in enumerate(objects) if j != i
    )


def layouts():
    for n, distractors, frames in ((3, True, 8), (4, True, 8), (3, False, 8), (4, True, 1)):
        for seed in range(40 if frames > 1 else 10):
            yield referring_layout(seed, frames, num_objects=n, distractors=distractors)


# -- the clip ------------------------------------------------------------------------------------


def test_shapes_dtypes_and_info():
    clip, sentences, targets = referring_clip(0)
    assert clip.shape == (8, 128, 128, 3) and clip.dtype == np.uint8
    assert targets.shape == (3, 8, 128, 128) and targets.dtype == bool
    assert len(sentences) == 3 and all(isinstance(s, str) and s.startswith("the ") for s in sentences)
    assert targets[:, 0].reshape(3, -1).any(-1).all(), "every object is visible in the first frame"
    assert not (targets.sum(0) > 1).any(), "visible footprints do not overlap"
    clip4, sentences4, targets4, info = referring_clip(1, 5, 64, 96, 4, textured=False, return_info=True)
    assert clip4.shape == (5, 64, 96, 3) and targets4.shape == (4, 5, 64, 96)
    assert info["sentences"] == sentences4 and len(info["subsets"]) == 4
    # flat grey (0.5) wherever no object is
    np.testing.assert_array_equal(clip4[~targets4.any(0)], 128)
    # the re-export from synthetic.py
    assert synthetic.referring_clip is referring_clip and synthetic.referring_vocabulary is referring_vocabulary


def test_deterministic_in_seed():
    a, b = referring_clip(7, 6, 64, 64), referring_clip(7, 6, 64, 64)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[2], b[2])
    assert a[1] == b[1]
    c = referring_clip(8, 6, 64, 64)
    assert not np.array_equal(a[0], c[0])
    # the layout (and so the sentences and masks) does not depend on the background
    d = referring_clip(7, 6, 64, 64, textured=False)
    assert d[1] == a[1]
    np.testing.assert_array_equal(d[2], a[2])


def test_targets_follow_the_described_objects():
    """The tracks in the info are where the pixels are: centroids of unoccluded footprints sit on
    the centres, and the footprint has the named colour."""
    for seed in range(4):
        clip, _, targets, info = referring_clip(seed, num_objects=4, return_info=True)
        h, w = info["height"], info["width"]
        gy, gx = np.mgrid[0:h, 0:w]
        for obj, tgt in zip(info["objects"], targets):
            full = tgt.reshape(len(tgt), -1).sum(-1).max()
            for t, m in enumerate(tgt):
                cx, cy = obj["centers"][t]
                r = 1.2 * obj["radius"] + 1
                inside = r <= cx <= w - 1 - r and r <= cy <= h - 1 - r
                if inside and m.sum() >= 0.98 * full:
                    assert abs(gx[m].mean() - cx) < 1.0 and abs(gy[m].mean() - cy) < 1.0
            rgb = clip[tgt].reshape(-1, 3).astype(np.float64) / 255
            np.testing.assert_allclose(np.median(rgb, 0), synthetic.COLORS[obj["color"]], atol=0.1)


def test_descriptions_are_true_for_the_target_false_for_the_others_and_minimal():
    vocab = set(referring_vocabulary())
    corpus = set(grammar_sentences())
    used = set()
    for info in layouts():
        objects, h, w = info["objects"], info["height"], info["width"]
        for i, sentence in enumerate(info["sentences"]):
            assert sentence in corpus and set(sentence.split()) <= vocab, sentence
            shape, mods = read_sentence(sentence)
            assert shape == objects[i]["shape"]
            assert mods == dict(info["descriptions"][i]), sentence
            preds = [("shape", shape)] + sorted(mods.items())
            assert singles_out(objects, i, preds, h, w), (sentence, i, objects)
            used.update(mods)
            # minimal: no description with fewer modifiers singles the object out
            options = {
                "color": [objects[i]["color"]],
                "size": [objects[i]["size"]],
                "motion": [objects[i]["motion"]],
                "position": list(_POSITION_WORDS.values()),
            }
            for k in range(len(mods)):
                for kinds in itertools.combinations(options, k):
                    for values in itertools.product(*(options[kd] for kd in kinds)):
                        fewer = [("shape", shape)] + list(zip(kinds, values))
                        assert not singles_out(objects, i, fewer, h, w), (sentence, fewer)
    assert used == {"color", "size", "motion", "position"}, "every kind of modifier gets used"


def test_distractor_rates_and_subsets():
    n_clips = 1000
    infos = [referring_layout(s, identical_rate=0.4, colour_rate=0.5) for s in range(n_clips)]
    identical = np.mean([i["has_identical_pair"] for i in infos])
    colour = np.mean([i["has_colour_distractor"] for i in infos])
    assert abs(identical - 0.4) < 0.05 and abs(colour - 0.5) < 0.05, (identical, colour)
    for info in infos:
        objs = info["objects"]
        key = [(o["color"], o["shape"], o["size"]) for o in objs]
        pairs = list(itertools.combinations(range(len(objs)), 2))
        assert info["has_identical_pair"] == any(key[a] == key[b] for a, b in pairs)
        assert info["has_colour_distractor"] == any(key[a][0] == key[b][0] and key[a] != key[b] for a, b in pairs)
        for i in range(len(objs)):
            same_colour = any(key[j][0] == key[i][0] for j in range(len(objs)) if j != i)
            same_look = any(key[j] == key[i] for j in range(len(objs)) if j != i)
            assert info["colour_ambiguous"][i] == same_colour and info["appearance_identical"][i] == same_look
            assert info["subsets"][i] == (
                "appearance-identical" if same_look else "colour-ambiguous" if same_colour else "easy"
            )
    # every identical pair is told apart by motion or position words only
    for info in infos[:200]:
        for i, sub in enumerate(info["subsets"]):
            if sub == "appearance-identical":
                assert {k for k, _ in info["descriptions"][i]} & {"motion", "position"}, info["sentences"][i]
    # the rates are controls: all or nothing
    for s in range(30):
        info = referring_layout(s, num_objects=4, identical_rate=1.0, colour_rate=0.0)
        assert info["has_identical_pair"] and not info["has_colour_distractor"]
        assert sorted(info["subsets"]).count("appearance-identical") == 2
    # easy clips: every colour distinct
    for s in range(30):
        info = referring_layout(s, num_objects=4, distractors=False)
        assert len({o["color"] for o in info["objects"]}) == 4 and set(info["subsets"]) == {"easy"}


def test_objects_leaving_the_frame_have_empty_targets():
    seeds = [s for s in range(60) if any(o["leaves_frame"] for o in referring_layout(s)["objects"])]
    assert len(seeds) >= 5
    for seed in seeds[:3]:
        _, _, targets, info = referring_clip(seed, return_info=True)
        for obj, tgt in zip(info["objects"], targets):
            visible = tgt.reshape(len(tgt), -1).any(-1)
            if obj["leaves_frame"]:
                assert visible[0] and not visible[-1], visible
                assert obj["motion"] != "still"
            elif obj["motion"] == "still":
                assert visible.all()


def test_a_single_frame_has_no_motion():
    for seed in range(20):
        info = referring_layout(seed, num_frames=1, num_objects=4, identical_rate=1.0)
        assert {o["motion"] for o in info["objects"]} == {"still"}
        assert not any("moving" in s or "still" in s for s in info["sentences"]), info["sentences"]


def test_bad_arguments_are_named():
    for kwargs, word in (
        (dict(num_objects=0), "num_objects"),
        (dict(num_objects=7), "num_objects"),
        (dict(height=16), "height"),
        (dict(num_frames=0), "num_frames"),
        (dict(identical_rate=1.5), "identical_rate"),
    ):
        with pytest.raises(ValueError, match=word):
            referring_clip(0, **kwargs)


# -- hard-case options: faster and wrapping motion, frame-by-frame rendering, backgrounds ----------


def test_speed_wrap_and_min_gap_options():
    side, t = 64, 400
    for seed in range(4):
        info = referring_layout(seed, t, side, side, 3, wrap=True, min_gap=0.0, still_rate=0.0)
        for o in info["objects"]:
            assert o["wraps"] and not o["leaves_frame"]
            v = np.hypot(*o["velocity"])
            assert 0.02 * side <= v <= 0.035 * side
            axis = 0 if o["motion"] in ("left", "right") else 1
            a = o["centers"][:, axis]
            reach = 1.2 * o["radius"] + 1.5
            assert a.min() >= -reach - 1e-9 and a.max() <= side - 1 + reach + 1e-9
            step = np.diff(a)
            sign = 1 if o["motion"] in ("right", "down") else -1
            steady = np.isclose(step, sign * v)
            assert steady.mean() > 0.9 and (~steady).sum() >= 1  # constant speed, with wrap-around jumps
            inside = (a >= 0) & (a <= side - 1)
            assert not inside.all() and inside[np.argmax(~inside) :].any()  # leaves, then comes back
    fast = referring_layout(1, 8, 128, 128, 3, speed=(0.06, 0.1), still_rate=0.0, leave_rate=0.0)
    for o in fast["objects"]:
        assert 0.06 * 128 <= np.hypot(*o["velocity"]) <= 0.1 * 128
    for kwargs, word in (
        (dict(speed=(0.0, 0.1)), "speed"),
        (dict(speed=(0.2, 0.1)), "speed"),
        (dict(min_gap=-1), "min_gap"),
    ):
        with pytest.raises(ValueError, match=word):
            referring_layout(0, **kwargs)


def test_renderer_draws_the_clip_frame_by_frame_and_without_an_object():
    clip, _, targets, info = referring_clip(5, 6, 64, 96, 3, return_info=True)
    flat = referring_clip(5, 6, 64, 96, 3, textured=False)[0]
    r = ReferringRenderer(info, 5)
    plain = ReferringRenderer(info, 5, "flat")
    for t in range(6):
        frame, ids = r.frame(t)
        np.testing.assert_array_equal(frame, clip[t])
        np.testing.assert_array_equal(ids[None] == np.arange(3)[:, None, None], targets[:, t])
        np.testing.assert_array_equal(plain.frame(t)[0], flat[t])
        full, clean, ids2, clean_ids = r.frame_and_clean(t, 1)
        np.testing.assert_array_equal(full, clip[t])
        np.testing.assert_array_equal(ids2, ids)
        without, without_ids = r.frame(t, exclude=(1,))
        np.testing.assert_array_equal(clean, without)
        np.testing.assert_array_equal(clean_ids, without_ids)
        assert not (clean_ids == 1).any()
    with pytest.raises(ValueError, match="background"):
        ReferringRenderer(info, 5, "plaid")
    with pytest.raises(IndexError, match="frame 6"):
        r.frame(6)


def test_backgrounds_and_pan():
    info = referring_layout(2, 3, 64, 64, 2)
    seen = []
    for kind in BACKGROUNDS:
        r = ReferringRenderer(info, 2, kind, pan=(2.0, -1.0))
        bg0, bg1 = r.background(0), r.background(1)
        assert bg0.shape == (64, 64, 3) and bg0.dtype == np.float32 and 0 <= bg0.min() and bg0.max() <= 1
        assert tuple(r.flow_forward) == (-2.0, 1.0)
        if kind == "flat":
            assert np.ptp(bg0) == 0
            continue
        assert np.ptp(bg0) > 0.2, kind
        # the pan moves the background by whole pixels: bg1 at p - pan is bg0 at p
        np.testing.assert_allclose(bg1[1:, :-2], bg0[:-1, 2:], atol=1e-4, err_msg=kind)
        seen.append(bg0)
    assert all(not np.allclose(a, b) for a, b in itertools.combinations(seen, 2))


# -- the tokenizer -------------------------------------------------------------------------------


def test_vocabulary_is_exactly_the_words_of_the_grammar():
    words = {w for s in grammar_sentences() for w in s.split()}
    assert words == set(referring_vocabulary())
    assert {"left", "right", "top", "bottom", "middle", "moving", "not", "small", "large", "big"} <= words
    assert set(referring.SHAPES) <= words and set(synthetic.COLORS) <= words


def test_shipped_tokenizer_round_trips_every_word_and_sentence():
    tok = synthetic_tokenizer()
    vocab = json.loads((SYNTHETIC_BPE_DIR / "vocab.json").read_text(encoding="utf-8"))
    assert [vocab[t] for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    assert vocab["<mask>"] == max(vocab.values()) == len(vocab) - 1 and len(vocab) < 512
    for word in referring_vocabulary():
        assert tok.bpe_tokens(word) == [word] and tok.bpe_tokens(" " + word) == ["\u0120" + word], word
        for text in (word, " " + word):
            ids = tok.encode(text)
            assert tok.unk_id not in ids and tok.decode(ids) == text
    sentences = grammar_sentences()[::97] + referring_layout(3)["sentences"]
    ids, padding = tok(sentences)
    for row, pad, sentence in zip(ids, padding, sentences):
        row = row[~pad]
        assert row[0] == 0 and row[-1] == 2 and tok.unk_id not in row
        assert len(row) == len(sentence.split()) + 2  # one token per word
        assert tok.decode(row) == sentence


def test_script_reproduces_the_shipped_files(tmp_path):
    out = tmp_path / "bpe"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train_synthetic_bpe.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    for name in ("vocab.json", "merges.txt"):
        assert (out / name).read_bytes() == (SYNTHETIC_BPE_DIR / name).read_bytes(), name
