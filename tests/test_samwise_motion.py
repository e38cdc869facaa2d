"""SAMWISE's optional motion prompt (official ``--motion_prompt``) on the tiny test configuration (CPU):
the flag-off path is the released one bit for bit, the motion token acts only when a prompt has a
verb and comes from its first verb token's final state, the converter reads/writes
``project_motion_prompts`` strictly, verb selection (word list; spaCy when installed) and BPE
alignment, and the predictor's verb masks.  With PEANUT_REFS set, the sparse prompt with a motion
token is compared with the official ``PromptEncoder`` + ``MaskDecoder`` (random weights)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from test_samwise import _Tok, tiny_variables

from peanut_jax.convert.common import CheckpointMismatchError
from peanut_jax.convert.samwise import from_state_dict, to_state_dict
from peanut_jax.models.samwise import SAMWISE, build_samwise
from peanut_jax.pipeline.samwise import SAMWISEPredictor
from peanut_jax.testing import parity_error
from peanut_jax.text import RobertaTokenizer
from peanut_jax.text.verbs import VerbSelector, is_listed_verb, verb_token_mask

S = 128  # tiny_test input size
PROMPTS = ["dog walking", "red car"]
MOTION_KEYS = [
    f"sam.sam_prompt_encoder.project_motion_prompts.layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")
]


class CharTok(_Tok):
    """``test_samwise._Tok`` (characters -> ids ``4 + ord % 100`` between ``<s>`` = 0 and ``</s>`` = 2,
    padding 1) with the character span of each id (what the verb alignment needs from a tokenizer)."""

    def token_offsets(self, text):
        return [None] + [(i, i + 1) for i in range(len(text))] + [None]


@pytest.fixture(scope="module")
def tiny_motion():
    on = build_samwise("tiny_test", motion_prompt=True)
    v_on = tiny_variables(on, seed=7)
    v_off = {
        "params": {k: p for k, p in v_on["params"].items() if k != "project_motion_prompts"},
        "batch_stats": v_on["batch_stats"],
    }
    return on, v_on, build_samwise("tiny_test"), v_off


@pytest.fixture(scope="module")
def runs(tiny_motion):
    """One 2-frame clip for PROMPTS through the flag-on model (one compiled function) with several verb
    masks ("empty": no verb anywhere, the 3-token decode up to rounding: test_flag_off_is_the_released_path)."""
    on, v_on, _, _ = tiny_motion
    ids, pm = CharTok()(PROMPTS)
    frames = jnp.asarray(np.random.default_rng(11).standard_normal((2, 64, S, 3)), jnp.float32)
    mask = verb_token_mask(PROMPTS, CharTok(), VerbSelector("wordlist"), length=ids.shape[1])
    w = np.flatnonzero(mask[0])
    assert w.tolist() == list(range(5, 12)) and not mask[1].any()  # "walking" = characters 4..10
    with_mask = jax.jit(lambda v, m: on.apply(v, frames, ids, pm, debug=True, motion_mask=m))
    masks = {"verb": mask, "first": np.zeros_like(mask), "second": np.zeros_like(mask), "empty": np.zeros_like(mask)}
    masks["first"][0, w[0]] = True
    masks["second"][0, w[1]] = True
    out = {k: jax.tree_util.tree_map(np.asarray, with_mask(v_on, m)) for k, m in masks.items()}
    out["first_verb_token"] = int(w[0])
    return out


OUT_KEYS = ("pred_masks", "low_res_masks", "ious", "obj_ptr", "object_score_logits")


def test_flag_off_is_the_released_path(tiny_motion):
    """motion_prompt=False refuses a verb mask; the flag-on model without a mask (the predictor's call
    when no prompt has a verb) decodes bit-identically to the flag-off model, and its clip features
    carry no motion.  (The flag-off clip itself is covered by test_samwise*.py.)"""
    on, v_on, off, v_off = tiny_motion
    sc = on.cfg.sam2
    h, d = sc.embedding_size, sc.d_model
    rng = np.random.default_rng(2)
    pix = jnp.asarray(rng.standard_normal((2, h, h, d)), jnp.float32)
    hr = (
        jnp.asarray(rng.standard_normal((2, 4 * h, 4 * h, d // 8)), jnp.float32),
        jnp.asarray(rng.standard_normal((2, 2 * h, 2 * h, d // 4)), jnp.float32),
    )
    state = jnp.asarray(rng.standard_normal((2, on.cfg.text_dim)), jnp.float32)

    def three(v_off, v_on):
        return (
            off.apply(v_off, pix, hr, state, method=SAMWISE.decode),
            on.apply(v_on, pix, hr, state, method=SAMWISE.decode),
            on.apply(v_on, pix, hr, state, 3 * state, jnp.array([False, True]), method=SAMWISE.decode),
        )

    ref, got, hidden = jax.jit(three)(v_off, v_on)
    for k in ref:
        assert np.array_equal(np.asarray(ref[k]), np.asarray(got[k])), k
        assert parity_error(np.asarray(hidden[k][0]), np.asarray(ref[k][0])) <= 1e-5, k  # hidden motion slot
    assert np.abs(np.asarray(hidden["low_res_masks"][1] - ref["low_res_masks"][1])).max() > 1e-3
    ids, pm = CharTok()(PROMPTS)
    feats = jax.eval_shape(lambda v: on.apply(v, jnp.zeros((1, S, S, 3)), ids, pm, method=SAMWISE.encode_clip)[0], v_on)
    assert set(feats) == {"vision", "s0", "s1", "state"}
    with pytest.raises(ValueError, match="motion_prompt=False"):
        jax.eval_shape(lambda v: off.apply(v, jnp.zeros((1, 64, S, 3)), ids, pm, motion_mask=ids > 9), v_off)
    with pytest.raises(ValueError, match="must match input_ids"):
        jax.eval_shape(lambda v: on.apply(v, jnp.zeros((1, 64, S, 3)), ids, pm, motion_mask=ids[:, :3] > 9), v_on)


def test_motion_token_acts_only_with_a_verb(runs):
    """The prompt with a verb changes; the one without keeps its 3-token result (its motion slot is
    hidden from every attention: equal up to float rounding) in the batch.  The CME's
    memory-less decode never has the motion token (official ``compute_decoder_out_no_mem``)."""
    empty, verb = runs["empty"], runs["verb"]
    for k in ("nomem_low_res_masks", "nomem_early_obj_ptr", "nomem_object_score_logits"):
        assert parity_error(verb[k], empty[k]) <= 1e-5, k
    assert np.abs(verb["pred_masks"][0] - empty["pred_masks"][0]).max() > 1e-3
    assert np.abs(verb["obj_ptr"][:, 0] - empty["obj_ptr"][:, 0]).max() > 1e-3
    for k in OUT_KEYS:
        a = verb[k][1] if k == "pred_masks" else verb[k][:, 1]
        b = empty[k][1] if k == "pred_masks" else empty[k][:, 1]
        assert parity_error(a, b) <= 1e-5, k


def test_motion_is_the_first_verb_token_after_the_last_adapter(runs):
    """Official: frame idx takes row idx of the caption's verb-token states repeated T times, i.e. the
    first verb token; its state is RoBERTa's last group plus the last CMT adapter's text update."""
    verb, first, second = runs["verb"], runs["first"], runs["second"]
    for k in OUT_KEYS:
        assert np.array_equal(verb[k], first[k]), k  # only the first marked token counts
    assert np.abs(second["pred_masks"][0] - verb["pred_masks"][0]).max() > 1e-3
    inter = verb["intermediates"]
    txt = inter["txt_layers_3_3"] + inter["cmt2_txt_out"]  # tiny_test text groups (0,1),(1,2),(2,3),(3,4)
    pos = runs["first_verb_token"]
    np.testing.assert_array_equal(inter["motion_state"][0], txt[0, pos])
    np.testing.assert_array_equal(inter["state"], txt[:, 0])


def test_converter_round_trip_and_strictness(tiny_motion):
    on, v_on, _, _ = tiny_motion
    sd = {f"module.{k}": v for k, v in to_state_dict(v_on).items()}
    assert all(f"module.{k}" in sd for k in MOTION_KEYS)
    m2, v2 = from_state_dict({"model": sd}, motion_prompt=True)
    assert m2.cfg == on.cfg
    a, b = flatten_dict(v_on), flatten_dict(v2)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    back = to_state_dict(v2, module=m2)
    assert all(np.array_equal(v, sd[f"module.{k}"]) for k, v in back.items()) and set(MOTION_KEYS) <= set(back)
    # flag off (the default, also for a file that has the keys): they are ignored, as before
    m3, v3 = from_state_dict({"model": sd})
    assert not m3.cfg.motion_prompt and "project_motion_prompts" not in v3["params"]
    # a released-style file without them: refused with the flag, every missing key named
    released = {k: v for k, v in sd.items() if "project_motion_prompts" not in k}
    with pytest.raises(CheckpointMismatchError, match="missing keys \\(6\\)") as e:
        from_state_dict({"model": released}, motion_prompt=True)
    assert all(k in str(e.value) for k in MOTION_KEYS)
    assert not from_state_dict({"model": released})[0].cfg.motion_prompt
    # official main.py's initialisation: a copy of project_text
    _, v4 = from_state_dict({"model": released}, motion_prompt=True, motion_from_text=True)
    pt, pm = flatten_dict(v4["params"]["project_text"]), flatten_dict(v4["params"]["project_motion_prompts"])
    assert pt.keys() == pm.keys() and all(np.array_equal(pt[k], pm[k]) for k in pt)
    with pytest.raises(ValueError, match="needs motion_prompt=True"):
        from_state_dict({"model": released}, motion_from_text=True)


@pytest.mark.parametrize(
    "text, verbs",
    [
        ("a man walking a dog", ["walking"]),
        ("the bear that turns around and runs away", ["turns", "runs"]),
        ("Monkey jumped and carried its baby", ["jumped", "carried"]),
        ("cows that eat grass", ["eat"]),
        ("the person who is holding a cup", ["holding"]),  # "is": an auxiliary, not a verb
        ("two ducks standing still", ["standing"]),
        ("girl lying on the bed with watches", ["lying"]),
        ("car parked next to the park", ["parked"]),
        ("the white building on the left", []),
    ],
)
def test_word_list_verbs(text, verbs):
    assert VerbSelector("wordlist").words(text) == verbs


def test_word_list_forms():
    assert all(is_listed_verb(w) for w in ("run", "runs", "running", "ran", "moves", "moved", "Skiing", "goes"))
    assert not any(is_listed_verb(w) for w in ("duck", "flies", "watches", "left", "building", "being", "has"))
    with pytest.raises(ValueError, match="backend"):
        VerbSelector("nltk")


def test_spacy_verbs():
    spacy = pytest.importorskip("spacy")
    try:
        spacy.load("en_core_web_sm")
    except OSError:
        pytest.skip("spaCy's en_core_web_sm model is not installed")
    sel = VerbSelector("spacy")
    assert sel.backend == "spacy" and sel.words("a man walking a dog") == ["walking"]


def _mini_roberta():
    """A byte-level BPE vocabulary of the 256 base symbols plus the merges of ' dog', ' walk', 'ing'."""
    from tokenizers import pre_tokenizers

    merges = [("Ġ", "d"), ("Ġd", "o"), ("Ġdo", "g"), ("Ġ", "w"), ("Ġw", "a"), ("Ġwa", "l"), ("Ġwal", "k")]
    merges += [("i", "n"), ("in", "g")]
    vocab = {t: i for i, t in enumerate(("<s>", "<pad>", "</s>", "<unk>"))}
    for c in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[c] = len(vocab)
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab, merges)


def test_bpe_alignment():
    """Offsets exclude the space of a 'Ġ' token; every piece inside a verb is marked, nothing else."""
    tok = _mini_roberta()
    text = "a dog walking"
    assert tok.bpe_tokens(text) == ["a", "Ġdog", "Ġwalk", "ing"]
    assert tok.token_offsets(text) == [None, (0, 1), (2, 5), (6, 10), (10, 13), None]
    ids, _ = tok([text, "dog"])
    mask = verb_token_mask([text, "dog"], tok, VerbSelector("wordlist"), length=ids.shape[1])
    assert mask.tolist() == [[False, False, False, True, True, False], [False] * 6]
    with pytest.raises(ValueError, match="shorter"):
        verb_token_mask([text], tok, VerbSelector("wordlist"), length=3)
    with pytest.raises(TypeError, match="token_offsets"):
        verb_token_mask([text], object())


def test_predictor_verb_masks(tiny_motion):
    on, v_on, off, v_off = tiny_motion
    pred = SAMWISEPredictor(on, v_on, CharTok(), verbs=VerbSelector("wordlist"))
    state = pred.init_state(PROMPTS, 60, 80)
    assert np.flatnonzero(np.asarray(state["motion_mask"])[0]).tolist() == list(range(5, 12))
    assert not np.asarray(state["motion_mask"])[1].any()
    assert pred.init_state(["red car", "the cat"], 60, 80)["motion_mask"] is None  # no verb: the 3-token decode
    assert SAMWISEPredictor(off, v_off, CharTok()).init_state(PROMPTS, 60, 80)["motion_mask"] is None
    with pytest.raises(ValueError, match="project_motion_prompts"):
        SAMWISEPredictor(on, v_off, CharTok())
    with pytest.raises(TypeError, match="token_offsets"):
        SAMWISEPredictor(on, v_on, lambda p: CharTok()(p))


@pytest.mark.slow
def test_predictor_with_motion_equals_module(tiny_motion):
    """The predictor's first clip = the module with the same verb mask (resize, normalise, pad)."""
    from peanut_jax.ops import interpolate
    from peanut_jax.pipeline.samwise import IMAGENET_MEAN, IMAGENET_STD, resize_frames

    on, v_on, _, _ = tiny_motion
    video = np.random.default_rng(3).integers(0, 256, (3, 60, 80, 3), dtype=np.uint8)
    pred = SAMWISEPredictor(on, v_on, CharTok(), clip_window=3, verbs=VerbSelector("wordlist"))
    got = np.stack([x for _, x in pred.segment_video(iter(video), PROMPTS)], 1)
    ids, pm = CharTok()(PROMPTS)
    mask = verb_token_mask(PROMPTS, CharTok(), VerbSelector("wordlist"), length=ids.shape[1])
    fr = (resize_frames(video, (96, S)).astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    ref = jax.jit(lambda v: on.apply(v, jnp.asarray(fr), ids, pm, motion_mask=mask)["pred_masks"])(v_on)
    ref = interpolate(ref.reshape(6, 96, S, 1), size=(60, 80), mode="bilinear", align_corners=False)
    # jit-graph float noise is ~3e-5 here; a dropped motion token moves the prompt's logits by > 1e-2
    assert parity_error(got, np.asarray(ref).reshape(2, 3, 60, 80)) <= 1e-4


# ---------------------------------------------------------------------------------- official parity
REFS = os.environ.get("PEANUT_REFS")


@pytest.mark.skipif(not REFS, reason="PEANUT_REFS is not set (official SAMWISE sources)")
def test_decode_with_motion_matches_official(tiny_motion):
    """Our ``decode`` with a motion token vs the official ``PromptEncoder(motion_prompt=True)`` +
    ``MaskDecoder`` (SAMWISE's modified SAM 2 files, tiny sizes, our random weights through
    ``to_state_dict``): the 4-token sparse prompt, the ``project_motion_prompts`` key mapping, outputs.
    (The sparse tokens' order cannot be checked this way: the results do not depend on it.)"""
    torch = pytest.importorskip("torch")
    root = Path(REFS) / "ClaudiaCuttano+SAMWISE"
    if not (root / "models/sam2/modeling/sam/prompt_encoder.py").is_file():
        pytest.skip(f"no SAMWISE sources under {root}")
    sys.path.insert(0, str(root))
    try:
        from models.sam2.modeling.sam.mask_decoder import MaskDecoder
        from models.sam2.modeling.sam.prompt_encoder import PromptEncoder
        from models.sam2.modeling.sam.transformer import TwoWayTransformer
    finally:
        sys.path.remove(str(root))
    on, v_on, _, _ = tiny_motion
    sc, cfg = on.cfg.sam2, on.cfg
    h, d = sc.embedding_size, sc.d_model
    pe = PromptEncoder(
        embed_dim=d,
        image_embedding_size=(h, h),
        input_image_size=(S, S),
        mask_in_chans=16,
        motion_prompt=True,
        text_encoder_embed_dim=cfg.text_dim,
    )
    md = MaskDecoder(
        transformer_dim=d,
        transformer=TwoWayTransformer(depth=2, embedding_dim=d, mlp_dim=sc.decoder_mlp_dim, num_heads=sc.decoder_heads),
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=int(
            v_on["params"]["sam"]["sam_mask_decoder"]["iou_prediction_head"]["layers_0"]["kernel"].shape[1]
        ),
        use_high_res_features=True,
        iou_prediction_use_sigmoid=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        use_multimask_token_for_obj_ptr=True,
    )
    sd = to_state_dict(v_on)
    for mod, prefix in ((pe, "sam.sam_prompt_encoder."), (md, "sam.sam_mask_decoder.")):
        part = {k[len(prefix) :]: torch.from_numpy(np.array(v)) for k, v in sd.items() if k.startswith(prefix)}
        mod.load_state_dict(part, strict=True)
    rng = np.random.default_rng(5)
    pix = rng.standard_normal((2, h, h, d)).astype(np.float32)
    s0 = rng.standard_normal((2, 4 * h, 4 * h, d // 8)).astype(np.float32)
    s1 = rng.standard_normal((2, 2 * h, 2 * h, d // 4)).astype(np.float32)
    state = rng.standard_normal((2, cfg.text_dim)).astype(np.float32)
    motion = rng.standard_normal((2, cfg.text_dim)).astype(np.float32)
    with jax.default_matmul_precision("highest"):
        ours = on.apply(v_on, pix, (s0, s1), state, motion, method=SAMWISE.decode)
    ref_masks, ref_scores = [], []
    with torch.no_grad():
        for i in range(2):  # the official decode is per caption (B = 1; text embeddings are unsqueezed to (1, 1, C))
            t = lambda a: torch.from_numpy(np.moveaxis(a[i : i + 1], -1, 1))  # noqa: E731
            sparse, dense = pe(
                points=(torch.zeros(1, 1, 2), -torch.ones(1, 1, dtype=torch.int32)),
                boxes=None,
                masks=None,
                text=torch.from_numpy(state[i : i + 1]),
                motion=torch.from_numpy(motion[i : i + 1]),
            )
            assert sparse.shape == (1, 4, d)
            out = md(
                image_embeddings=t(pix),
                image_pe=pe.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
                repeat_image=False,
                high_res_features=[t(s0), t(s1)],
            )
            ref_masks.append(out[0][0, 0].numpy())
            ref_scores.append(out[-1][0].numpy())
    assert parity_error(np.asarray(ours["object_score_logits"]), np.stack(ref_scores)) <= 2e-4
    assert (np.stack(ref_scores) > 0).all()  # objects present: the masks are not replaced
    assert parity_error(np.asarray(ours["low_res_masks"]), np.stack(ref_masks)) <= 2e-4
