"""SAMWISE on the tiny test configuration (CPU): converter round trip and strictness, one clip,
text-padding / batch invariance, and the streaming predictor.  Parity with the official model is in
``test_samwise_parity.py`` (needs PEANUT_REFS)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from peanut_jax.convert.common import CheckpointMismatchError
from peanut_jax.convert.samwise import (
    detect,
    detect_config,
    from_state_dict,
    to_state_dict,
)
from peanut_jax.models.sam2.position_encoding import sine_2d
from peanut_jax.models.samwise import SAMWISE, build_samwise, init_bank, pad_frames
from peanut_jax.pipeline.samwise import SAMWISEPredictor
from peanut_jax.testing import parity_error

S = 128  # tiny_test input size


def random_variables(shapes, seed=0):
    """Host-drawn weights for a ``jax.eval_shape(module.init, ...)`` tree (no minute-long init)."""
    rng = np.random.default_rng(seed)
    flat = {}
    for path, s in flatten_dict(shapes).items():
        if path[-1] == "var":
            v = rng.uniform(0.5, 1.5, s.shape)
        elif path[-1] == "scale":
            v = 1.0 + 0.1 * rng.standard_normal(s.shape)
        else:
            v = 0.2 * rng.standard_normal(s.shape)
        flat[path] = np.asarray(v, s.dtype)
    from flax.traverse_util import unflatten_dict

    return unflatten_dict(flat)


def tiny_variables(module, seed=0):
    """Random host weights for a ``tiny_test`` SAMWISE (an S x S frame initialises every parameter),
    calibrated as in the official dump: objects present (score > 0), else every mask is -1024."""
    shapes = jax.eval_shape(
        module.init,
        jax.random.PRNGKey(0),
        jax.ShapeDtypeStruct((1, S, S, 3), jnp.float32),
        jax.ShapeDtypeStruct((1, 4), jnp.int32),
    )
    v = random_variables(shapes, seed)
    v["params"]["sam"]["sam_mask_decoder"]["pred_obj_score_head"]["layers_2"]["bias"] += 2.0
    return v


@pytest.fixture(scope="module")
def tiny():
    module = build_samwise("tiny_test")
    return module, tiny_variables(module)


@pytest.fixture(scope="module")
def official_sd(tiny):
    """The tiny weights in the official checkpoint layout, with the keys the official file also has."""
    sd = {f"module.{k}": v for k, v in to_state_dict(tiny[1]).items()}
    sd["module.text_encoder._float_tensor"] = np.zeros(1, np.float32)
    sd["module.text_encoder.model.encoder.sentence_encoder.version"] = np.ones(1, np.float32)
    sd["module.text_encoder.model.encoder.lm_head.bias"] = np.zeros(120, np.float32)
    sd["module.cmt_adapters.0.proj_vis_down.1.num_batches_tracked"] = np.zeros((), np.int64)
    return sd


def test_converter_round_trip_bit_exact(tiny, official_sd):
    module, variables = tiny
    assert detect({"model": official_sd}) == "samwise"
    assert detect_config({"model": official_sd})["sam2_size"] == "tiny_test"
    m2, v2 = from_state_dict({"model": official_sd, "epoch": 3})
    assert m2.cfg == module.cfg
    a, b = flatten_dict(variables), flatten_dict(v2)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    back = to_state_dict(v2)
    for k, v in back.items():
        assert np.array_equal(v, official_sd[f"module.{k}"]), k
    assert not any(k.endswith("num_batches_tracked") or "lm_head" in k for k in back)


@pytest.mark.parametrize(
    "key",
    [
        "cmt_adapters.1.hsa.linear.weight",
        "cmt_adapters.2.proj_vis_up.1.running_var",
        "conditional_memory_encoder.decision_token.weight",
        "sam.sam_prompt_encoder.project_text.layers.2.bias",
    ],
)
def test_converter_is_strict(official_sd, key):
    sd = {k: v for k, v in official_sd.items() if k != f"module.{key}"}
    with pytest.raises(CheckpointMismatchError, match="missing keys") as e:
        from_state_dict({"model": sd})
    assert key in str(e.value)


def test_converter_without_cme(official_sd):
    sd = {k: v for k, v in official_sd.items() if "conditional_memory_encoder" not in k}
    with pytest.raises(CheckpointMismatchError, match="conditional_memory_encoder.decision_class_head"):
        from_state_dict({"model": sd})
    module, variables = from_state_dict({"model": sd}, use_cme=False)
    assert not module.cfg.use_cme and "conditional_memory_encoder" not in variables["params"]
    module, variables = from_state_dict({"model": official_sd}, use_cme=False)  # CME weights ignored
    assert "conditional_memory_encoder" not in variables["params"]


class _Tok:
    """Stand-in tokenizer: characters -> ids (the predictor only needs ``tok(prompts) -> (ids, mask)``)."""

    def __call__(self, prompts):
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        rows = [[0] + [4 + ord(c) % 100 for c in p] + [2] for p in prompts]
        n = max(map(len, rows))
        ids = np.array([r + [1] * (n - len(r)) for r in rows], np.int32)
        return ids, ids == 1


@pytest.fixture(scope="module")
def video():
    return np.random.default_rng(3).integers(0, 256, (6, 60, 80, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def clip_runs(tiny, video):
    """``module.apply`` on the first 4 frames (resized 60x80 -> 96x128 as the predictor does) for
    prompt "ab" alone and for the batch ["ab", "cde"] ("ab" padded by one token)."""
    from peanut_jax.pipeline.samwise import IMAGENET_MEAN, IMAGENET_STD, resize_frames

    module, variables = tiny
    run = jax.jit(lambda v, f, i, p: module.apply(v, f, i, p))
    fr = (resize_frames(video[:4], (96, S)).astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    alone_ids, alone_pm = _Tok()("ab")
    batch_ids, batch_pm = _Tok()(["ab", "cde"])
    assert batch_pm[0, -1] and not alone_pm.any()
    return run(variables, fr, alone_ids, alone_pm), run(variables, fr, batch_ids, batch_pm)


def test_clip_padding_and_batch_invariance(clip_runs):
    """A prompt gives the same result alone and padded in a batch with a longer prompt."""
    alone, both = (jax.tree_util.tree_map(np.asarray, r) for r in clip_runs)
    assert alone["pred_masks"].shape == (4, 96, S) and both["pred_masks"].shape == (2, 4, 96, S)
    assert alone["low_res_masks"].shape == (4, 1, S // 4, S // 4)
    assert np.isfinite(alone["pred_masks"]).all()
    assert (alone["low_res_masks"] > -1000).all()  # objects present: informative masks
    # max|Δ| / max(1, |ref|) <= 1e-5 (other shapes reorder float sums; a leak of the padding is >1e-3)
    assert parity_error(both["pred_masks"][0], alone["pred_masks"]) <= 1e-5
    for k in ("low_res_masks", "obj_ptr", "object_score_logits"):
        assert parity_error(both[k][:, :1], alone[k]) <= 1e-5, k
    assert np.abs(both["pred_masks"][1] - both["pred_masks"][0]).max() > 1e-3


def test_predictor_streams_clips(tiny, video, clip_runs):
    module, variables = tiny
    pred = SAMWISEPredictor(module, variables, _Tok(), clip_window=4)
    got = list(pred.segment_video(iter(video), ["ab", "cde"]))
    assert [i for i, _ in got] == list(range(6))
    assert all(x.shape == (2, 60, 80) and x.dtype == np.float32 for _, x in got)
    # the first clip = the module on the same frames, logits resized back to the video size
    from peanut_jax.ops import interpolate

    ref = np.asarray(
        interpolate(
            jnp.asarray(clip_runs[1]["pred_masks"]).reshape(8, 96, S, 1),
            size=(60, 80),
            mode="bilinear",
            align_corners=False,
        )
    ).reshape(2, 4, 60, 80)
    np.testing.assert_allclose(np.stack([x for _, x in got[:4]], axis=1), ref, atol=1e-5)
    # streaming by hand gives the same frames, and the bank keeps its shapes
    state = pred.init_state(["ab", "cde"], 60, 80)
    assert state["in_hw"] == (96, 128)
    first = pred.segment_clip(state, video[:4])
    second = pred.segment_clip(state, video[4:])
    np.testing.assert_allclose(np.concatenate([first, second], 1), np.stack([x for _, x in got], 1), atol=1e-6)
    bank0 = jax.tree_util.tree_map(jnp.shape, init_bank(module.cfg, 2))
    assert jax.tree_util.tree_map(jnp.shape, state["bank"]) == bank0  # memory flat in the video length
    assert int(state["bank"]["frame"]) == 6
    assert pred.masks(first).dtype == bool
    with pytest.raises(ValueError, match="threshold"):
        SAMWISEPredictor(module, variables, _Tok(), threshold=1.5)
    with pytest.raises(ValueError, match="frame size"):
        pred.segment_clip(state, video[:2, :50])


def test_clip_shapes_static(tiny):
    module, _ = tiny
    assert pad_frames(jnp.zeros((2, 96, 128, 3)), S).shape == (2, S, S, 3)
    with pytest.raises(ValueError, match="exceed"):
        pad_frames(jnp.zeros((1, 130, 128, 3)), S)
    assert isinstance(module, SAMWISE)


def _unbounded_reference(module, v, frames, ids, pm, clip_window):
    """The official bookkeeping with a dict memory of every past frame (``memory_bank[frame_idx]``):
    frame f sees frames f-R..f-1 that exist (tpos index k-1 for f-k) and the pointers of frames
    f-1..f-Q; the CME runs when f - last >= window - 1 and f > window.  Eager per-frame calls."""
    cfg = module.cfg
    r, q, win = cfg.num_recent, cfg.num_pointers, cfg.cme_window
    bank, last, out = {}, np.zeros(ids.shape[0], np.int64), []
    for start in range(0, frames.shape[0], clip_window):
        feats, _ = module.apply(v, frames[start : start + clip_window], ids, pm, method=SAMWISE.encode_clip)
        for j in range(feats["vision"].shape[0]):
            f = start + j
            vision, hr, st = feats["vision"][j], (feats["s0"][j], feats["s1"][j]), feats["state"][j]
            p, h, w, d = vision.shape
            no_mem = module.apply(v, vision, method=lambda m, x: m.sam.add_no_memory(x))
            if f == 0:
                pix = no_mem
            else:
                prev = [(k, bank[f - k]) for k in range(r, 0, -1) if f - k in bank]
                ptrs = [bank[f - k][1] for k in range(1, min(f + 1, q + 1))]
                mem = jnp.stack([b[0] for _, b in prev], 1)
                tpos = jnp.asarray([[k - 1 for k, _ in prev]] * p, jnp.int32)
                ptr = jnp.stack(ptrs, 1)
                pos = sine_2d(h, w, d)
                pix = module.apply(
                    v,
                    vision,
                    pos,
                    mem,
                    tpos,
                    ptr,
                    method=lambda m, x, ps, mm, tp, pt: m.sam.condition_on_memory(
                        x,
                        ps,
                        mm,
                        tp,
                        jnp.ones(tp.shape, bool),
                        pt,
                        jnp.zeros(pt.shape[:2]),
                        jnp.ones(pt.shape[:2], bool),
                        1.0,
                    ),
                )
            dec = module.apply(v, pix, hr, st, method=SAMWISE.decode)
            high = module.apply(v, dec["low_res_masks"], method=lambda m, x: m.sam.upsample_masks(x))
            nm = module.apply(v, no_mem, hr, st, method=SAMWISE.decode)
            logits = module.apply(
                v, dec["obj_ptr"], nm["early_token"], method=lambda m, a, b: m.conditional_memory_encoder(a, b)
            )
            switch = (f - last >= win - 1) & (f > win) & (np.argmax(np.asarray(logits), -1) == 1)
            hm = module.apply(v, nm["low_res_masks"], method=lambda m, x: m.sam.upsample_masks(x))
            high = jnp.where(jnp.asarray(switch)[:, None, None], jnp.where(hm > 0, 10 * hm, high), high)
            last = np.where(switch, f, last)
            mm = module.apply(
                v,
                vision,
                high,
                dec["object_score_logits"],
                method=lambda m, x, hh, s: m.sam.encode_memory(x, hh, s, False),
            )
            bank[f] = (mm, dec["obj_ptr"])
            out.append((np.asarray(dec["low_res_masks"]), np.asarray(dec["obj_ptr"]), switch, np.asarray(pix)))
    return out


@pytest.mark.slow
def test_bounded_bank_across_clips_equals_unbounded_reference(tiny):
    """7 frames in clips of 4 + 3 (the bank carried, a short last clip), a small bank (2 frames,
    3 pointers) that wraps, the CME every 3 frames at most (biased to switch): the jitted clip
    function with its fixed-slot bank equals the official dict-memory bookkeeping."""
    import flax

    module = build_samwise("tiny_test", num_recent=2, num_pointers=3, cme_window=3)
    v = flax.core.unfreeze(jax.tree_util.tree_map(np.array, tiny[1]))
    v["params"]["conditional_memory_encoder"]["decision_class_head"]["bias"][1] += 3.0
    frames = pad_frames(jnp.asarray(np.random.default_rng(5).standard_normal((7, 96, S, 3)), jnp.float32), S)
    ids, pm = _Tok()(["ab", "cde"])
    run = jax.jit(lambda vv, fr, b: module.apply(vv, fr, ids, pm, b, True, method=SAMWISE.run_clip)[:2])
    bank = init_bank(module.cfg, 2)
    got = []
    for start in (0, 4):
        outs, bank = run(v, frames[start : start + 4], bank)
        got += [
            (
                np.asarray(outs["low_res_masks"][j]),
                np.asarray(outs["obj_ptr"][j]),
                np.asarray(outs["cme_switch"][j]),
                np.asarray(outs["pix_feat_with_mem"][j]),
            )
            for j in range(outs["obj_ptr"].shape[0])
        ]
    ref = _unbounded_reference(module, v, frames, ids, pm, 4)
    assert len(got) == len(ref) == 7
    switched = [f for f, (_, _, s, _) in enumerate(ref) if s.any()]
    assert switched[:1] == [4] and 5 not in switched, switched  # runs at 4, then not before 6
    for f, ((lo, ptr, sw, pix), (rlo, rptr, rsw, rpix)) in enumerate(zip(got, ref)):
        assert np.array_equal(sw, rsw), f
        errs = [parity_error(a, b) for a, b in ((pix, rpix), (lo, rlo), (ptr, rptr))]
        assert max(errs) <= 1e-4, (f, errs)  # jit vs eager float noise (~2e-5); a wrong memory slot order: 2e-2
        assert (lo > -1000).all(), f  # objects present: the masks carry information
    assert int(bank["frame"]) == 7


def test_fresh_clip_attends_only_the_frames_seen_so_far(tiny):
    """``run_clip(fresh=True)`` (unrolled; frame f attends its min(f, R) memories and min(f, Q)
    pointers, frame 0 none) equals the fixed-slot scan with masked slots on an empty bank: a 5-frame
    clip with a 2-frame, 3-pointer bank that wraps inside it, the CME biased to switch."""
    import flax

    module = build_samwise("tiny_test", num_recent=2, num_pointers=3, cme_window=2)
    v = flax.core.unfreeze(jax.tree_util.tree_map(np.array, tiny[1]))
    v["params"]["conditional_memory_encoder"]["decision_class_head"]["bias"][1] += 3.0
    frames = pad_frames(jnp.asarray(np.random.default_rng(6).standard_normal((5, 96, S, 3)), jnp.float32), S)
    ids, pm = _Tok()(["ab", "cde"])

    def run(vv, fr, fresh):
        outs, bank, _ = module.apply(
            vv, fr, ids, pm, init_bank(module.cfg, 2), True, None, fresh, method=SAMWISE.run_clip
        )
        return outs, bank

    fresh, scan = (jax.jit(run, static_argnums=2)(v, frames, f) for f in (True, False))
    assert np.asarray(fresh[0]["cme_switch"]).any()  # the CME switched
    np.testing.assert_array_equal(np.asarray(fresh[0]["cme_switch"]), np.asarray(scan[0]["cme_switch"]))
    for k in ("pix_feat_with_mem", "low_res_masks", "obj_ptr", "object_score_logits", "maskmem_features"):
        assert parity_error(np.asarray(fresh[0][k]), np.asarray(scan[0][k])) <= 1e-4, k
    for k in ("mem", "ptrs"):
        assert parity_error(np.asarray(fresh[1][k]), np.asarray(scan[1][k])) <= 1e-4, k
    for k in ("mem_valid", "ptr_valid", "last_switch", "frame"):
        np.testing.assert_array_equal(np.asarray(fresh[1][k]), np.asarray(scan[1][k]))


def test_registry_fetch_keeps_batch_stats(tiny, official_sd, tmp_path, monkeypatch):
    """An official SAMWISE file imported through the weight registry: the convert-once cache keeps
    the adapters' BatchNorm statistics (a collection besides ``params``) and loads back exactly."""
    torch = pytest.importorskip("torch")
    from peanut_jax import checkpoints
    from peanut_jax.checkpoints import download, entry, registry

    module, v = tiny
    path = tmp_path / "samwise_test.pth"
    torch.save({"model": {k: torch.from_numpy(np.array(a)) for k, a in official_sd.items()}}, path)
    monkeypatch.setenv("PEANUT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PEANUT_OFFLINE", "1")
    e = registry.register(
        entry.WeightEntry("test_samwise_tiny", "samwise", "samwise_test.pth", manual=True), replace=True
    )
    try:
        download.import_file(e.name, path)
        _, v2 = checkpoints.load(e.name, "samwise")
    finally:
        registry.unregister(e.name)
    assert set(v2) == set(v) == {"params", "batch_stats"}
    for coll in v:
        a, b = flatten_dict(v[coll]), flatten_dict(v2[coll])
        assert a.keys() == b.keys(), coll
        assert all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a), coll
