"""SAM 2 prompt encoder, two-way transformer and mask decoder.

CI (``tiny_test`` config): key map round trip, float64 numpy references of the prompt encoder and of
the whole mask decoder written from the official formulas, the stability fallback, shapes, and what
padding points (label -1) do.  PEANUT_REFS: parity with the official dump (``c1_image_1024``).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ref_dump
from flax.traverse_util import flatten_dict, unflatten_dict

from peanut_jax.convert.common import KeyMap
from peanut_jax.convert.sam2 import _mask_decoder_rules, _prompt_encoder_rules
from peanut_jax.models.sam2.config import get_config
from peanut_jax.models.sam2.mask_decoder import MaskDecoder, dynamic_multimask_via_stability, stability_scores
from peanut_jax.models.sam2.prompt_encoder import PromptEncoder

CFG = get_config("tiny_test")
D, HW, S = CFG.d_model, CFG.embedding_size, CFG.image_size


def _keymap(cfg):
    km = KeyMap()
    _prompt_encoder_rules(km, cfg)
    _mask_decoder_rules(km, cfg)
    return km


def _random_params(shapes, seed):
    """Random values for every parameter (LayerNorm scales/biases included) so that each one matters;
    shapes come from ``jax.eval_shape`` (no compiled initialisers: fast)."""
    r = np.random.default_rng(seed)
    out = {}
    for path, sds in flatten_dict(shapes).items():
        shape, name = sds.shape, path[-1]
        if name == "kernel":
            v = r.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
        elif name == "scale":
            v = 1 + 0.1 * r.normal(size=shape)
        elif name == "bias":
            v = 0.1 * r.normal(size=shape)
        else:  # embeddings, Gaussian PE matrix
            v = r.normal(size=shape)
        out[path] = jnp.asarray(v, sds.dtype)
    return unflatten_dict(out)


@pytest.fixture(scope="module")
def tiny():
    pe, md = PromptEncoder(CFG), MaskDecoder(CFG)
    k = jax.random.PRNGKey(0)
    pp = jax.eval_shape(lambda: pe.init(k, (jnp.zeros((1, 1, 2)), jnp.ones((1, 1), jnp.int32))))["params"]
    h = HW
    img = jnp.zeros((1, h, h, D))
    high = (jnp.zeros((1, 4 * h, 4 * h, D // 8)), jnp.zeros((1, 2 * h, 2 * h, D // 4)))
    mp = jax.eval_shape(lambda: md.init(k, img, jnp.zeros((h, h, D)), jnp.zeros((1, 2, D)), img, False, False, high))[
        "params"
    ]
    params = _random_params({"sam_prompt_encoder": pp, "sam_mask_decoder": mp}, 1)
    sd = {k: v.astype(np.float64) for k, v in _keymap(CFG).invert(params).items()}
    return pe, md, params, sd


def _inputs(seed, b=1):
    r = np.random.default_rng(seed)
    h = HW
    emb = r.normal(size=(b, h, h, D)).astype(np.float32)
    s0 = r.normal(size=(b, 4 * h, 4 * h, D // 8)).astype(np.float32)
    s1 = r.normal(size=(b, 2 * h, 2 * h, D // 4)).astype(np.float32)
    return emb, s0, s1


# ------------------------------------------------------------------ key map
def _official_keys(cfg):
    d, i_d, mlp = cfg.d_model, cfg.d_model // cfg.attention_downsample_rate, cfg.decoder_mlp_dim
    pe = {
        "pe_layer.positional_encoding_gaussian_matrix": (2, d // 2),
        "not_a_point_embed.weight": (1, d),
        "no_mask_embed.weight": (1, d),
        "mask_downscaling.0.weight": (4, 1, 2, 2),
        "mask_downscaling.0.bias": (4,),
        "mask_downscaling.1.weight": (4,),
        "mask_downscaling.1.bias": (4,),
        "mask_downscaling.3.weight": (16, 4, 2, 2),
        "mask_downscaling.3.bias": (16,),
        "mask_downscaling.4.weight": (16,),
        "mask_downscaling.4.bias": (16,),
        "mask_downscaling.6.weight": (d, 16, 1, 1),
        "mask_downscaling.6.bias": (d,),
    }
    pe.update({f"point_embeddings.{i}.weight": (1, d) for i in range(4)})
    md = {
        "iou_token.weight": (1, d),
        "mask_tokens.weight": (4, d),
        "obj_score_token.weight": (1, d),
        "output_upscaling.0.weight": (d, d // 4, 2, 2),
        "output_upscaling.0.bias": (d // 4,),
        "output_upscaling.1.weight": (d // 4,),
        "output_upscaling.1.bias": (d // 4,),
        "output_upscaling.3.weight": (d // 4, d // 8, 2, 2),
        "output_upscaling.3.bias": (d // 8,),
        "conv_s0.weight": (d // 8, d, 1, 1),
        "conv_s0.bias": (d // 8,),
        "conv_s1.weight": (d // 4, d, 1, 1),
        "conv_s1.bias": (d // 4,),
    }

    def lin(prefix, o, i):
        md[f"{prefix}.weight"], md[f"{prefix}.bias"] = (o, i), (o,)

    def att(prefix, inner):
        for p in "qkv":
            lin(f"{prefix}.{p}_proj", inner, d)
        lin(f"{prefix}.out_proj", d, inner)

    for layer in range(cfg.decoder_depth):
        t = f"transformer.layers.{layer}"
        att(f"{t}.self_attn", d)
        att(f"{t}.cross_attn_token_to_image", i_d)
        att(f"{t}.cross_attn_image_to_token", i_d)
        lin(f"{t}.mlp.layers.0", mlp, d)
        lin(f"{t}.mlp.layers.1", d, mlp)
        for n in range(1, 5):
            md[f"{t}.norm{n}.weight"] = md[f"{t}.norm{n}.bias"] = (d,)
    att("transformer.final_attn_token_to_image", i_d)
    md["transformer.norm_final_attn.weight"] = md["transformer.norm_final_attn.bias"] = (d,)
    for m in range(4):
        for j, (o, i) in enumerate([(d, d), (d, d), (d // 8, d)]):
            lin(f"output_hypernetworks_mlps.{m}.layers.{j}", o, i)
    for j, (o, i) in enumerate([(d, d), (d, d), (4, d)]):
        lin(f"iou_prediction_head.layers.{j}", o, i)
    for j, (o, i) in enumerate([(d, d), (d, d), (1, d)]):
        lin(f"pred_obj_score_head.layers.{j}", o, i)
    return {
        **{f"sam_prompt_encoder.{k}": v for k, v in pe.items()},
        **{f"sam_mask_decoder.{k}": v for k, v in md.items()},
    }


def test_keymap_round_trip(tiny):
    _, _, params, _ = tiny
    km = _keymap(CFG)
    sd = km.invert(params)
    want = _official_keys(CFG)
    assert set(sd) == set(want)
    assert {k: tuple(v.shape) for k, v in sd.items()} == want
    back = km.apply(sd, params)
    fa, fb = flatten_dict(params), flatten_dict(back)
    assert set(fa) == set(fb)
    for p in fa:
        assert np.array_equal(np.asarray(fa[p]), np.asarray(fb[p])), p


# ------------------------------------------------------------------ prompt encoder vs float64 numpy
def _np_pe(coords01, g):
    f = 2 * np.pi * ((2 * coords01 - 1) @ g)
    return np.concatenate([np.sin(f), np.cos(f)], -1)


def _np_points(sd, coords, labels, pad):
    p = "sam_prompt_encoder."
    coords = coords.astype(np.float64) + 0.5
    if pad:
        coords = np.concatenate([coords, np.zeros((coords.shape[0], 1, 2))], 1)
        labels = np.concatenate([labels, -np.ones((labels.shape[0], 1), labels.dtype)], 1)
    out = _np_pe(coords / S, sd[p + "pe_layer.positional_encoding_gaussian_matrix"])
    for b, n in np.ndindex(labels.shape):
        lab = labels[b, n]
        if lab == -1:
            out[b, n] = sd[p + "not_a_point_embed.weight"][0]
        elif 0 <= lab <= 3:
            out[b, n] += sd[p + f"point_embeddings.{lab}.weight"][0]
    return out


def test_dense_pe_matches_numpy(tiny):
    pe, _, params, sd = tiny
    got = np.asarray(pe.apply({"params": params["sam_prompt_encoder"]}, method="dense_pe"))
    c = (np.arange(HW) + 0.5) / HW
    grid = np.stack(np.meshgrid(c, c, indexing="xy"), -1)  # (h, w, (x, y))
    ref = _np_pe(grid, sd["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"])
    assert got.shape == (HW, HW, D)
    np.testing.assert_allclose(got, ref, atol=2e-5)


def test_point_and_box_embedding_matches_numpy(tiny):
    pe, _, params, sd = tiny
    v = {"params": params["sam_prompt_encoder"]}
    r = np.random.default_rng(3)
    coords = r.uniform(0, S, size=(2, 6, 2)).astype(np.float32)
    labels = np.array([[-1, 0, 1, 2, 3, 1], [1, 1, -1, 0, 3, 2]], np.int32)
    sparse, dense = pe.apply(v, (jnp.asarray(coords), jnp.asarray(labels)))
    np.testing.assert_allclose(np.asarray(sparse), _np_points(sd, coords, labels, True), atol=2e-5)
    no_mask = sd["sam_prompt_encoder.no_mask_embed.weight"][0]
    assert dense.shape == (2, HW, HW, D)
    np.testing.assert_allclose(np.asarray(dense), np.broadcast_to(no_mask, dense.shape), atol=1e-7)
    # boxes argument: two corner tokens labelled 2/3 after the points, and no padding point
    boxes = np.array([[10, 20, 90, 100], [0, 5, 127, 64]], np.float32)
    sparse, _ = pe.apply(v, (jnp.asarray(coords), jnp.asarray(labels)), jnp.asarray(boxes))
    ref = np.concatenate(
        [_np_points(sd, coords, labels, False), _np_points(sd, boxes.reshape(2, 2, 2), np.array([[2, 3]] * 2), False)],
        1,
    )
    np.testing.assert_allclose(np.asarray(sparse), ref, atol=2e-5)
    # the image predictor's way (box as 2 points, labels 2/3) = the boxes argument + one padding token
    sparse2, _ = pe.apply(v, (jnp.asarray(boxes.reshape(2, 2, 2)), jnp.asarray(np.array([[2, 3]] * 2))))
    np.testing.assert_allclose(
        np.asarray(sparse2)[:, :2], np.asarray(pe.apply(v, None, jnp.asarray(boxes))[0]), atol=1e-6
    )
    assert pe.apply(v, None, None, None)[0].shape == (1, 0, D)


def _np_gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _np_ln(x, sd, p, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * sd[p + ".weight"] + sd[p + ".bias"]


def _np_conv_s2k2(x, w, b):
    """Conv 2x2 stride 2 (torch weight (O, I, 2, 2)), NHWC."""
    B, H, W, C = x.shape
    patches = x.reshape(B, H // 2, 2, W // 2, 2, C)
    return np.einsum("bhiwjc,ocij->bhwo", patches, w) + b


def _np_convT_s2k2(x, w, b):
    """ConvTranspose 2x2 stride 2 (torch weight (I, O, 2, 2)), NHWC."""
    B, H, W, _ = x.shape
    y = np.einsum("bhwc,coij->bhiwjo", x, w)
    return y.reshape(B, 2 * H, 2 * W, w.shape[1]) + b


def test_mask_embedding_matches_numpy(tiny):
    pe, _, params, sd = tiny
    p = "sam_prompt_encoder.mask_downscaling"
    m = np.random.default_rng(4).normal(size=(2, 4 * HW, 4 * HW, 1)).astype(np.float32) * 3
    _, dense = pe.apply({"params": params["sam_prompt_encoder"]}, masks=jnp.asarray(m))
    x = _np_conv_s2k2(m.astype(np.float64), sd[p + ".0.weight"], sd[p + ".0.bias"])
    x = _np_gelu(_np_ln(x, sd, p + ".1", 1e-6))
    x = _np_gelu(_np_ln(_np_conv_s2k2(x, sd[p + ".3.weight"], sd[p + ".3.bias"]), sd, p + ".4", 1e-6))
    ref = x @ sd[p + ".6.weight"][:, :, 0, 0].T + sd[p + ".6.bias"]
    assert dense.shape == (2, HW, HW, D)
    np.testing.assert_allclose(np.asarray(dense), ref, atol=5e-5)


# ------------------------------------------------------------------ mask decoder vs float64 numpy
def _np_lin(x, sd, p):
    return x @ sd[p + ".weight"].T + sd[p + ".bias"]


def _np_attn(sd, p, q, k, v, heads):
    q, k, v = _np_lin(q, sd, p + ".q_proj"), _np_lin(k, sd, p + ".k_proj"), _np_lin(v, sd, p + ".v_proj")
    B, Nq, C = q.shape
    hd = C // heads
    q = q.reshape(B, Nq, heads, hd).transpose(0, 2, 1, 3)
    k = k.reshape(B, -1, heads, hd).transpose(0, 2, 1, 3)
    v = v.reshape(B, -1, heads, hd).transpose(0, 2, 1, 3)
    a = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    a = np.exp(a - a.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    out = (a @ v).transpose(0, 2, 1, 3).reshape(B, Nq, C)
    return _np_lin(out, sd, p + ".out_proj")


def _np_mlp(sd, p, x, n, sigmoid=False):
    for j in range(n):
        x = _np_lin(x, sd, f"{p}.layers.{j}")
        if j < n - 1:
            x = np.maximum(x, 0)
    return 1 / (1 + np.exp(-x)) if sigmoid else x


def _np_decoder(sd, emb, pe, sparse, dense, s0, s1):
    """predict_masks of the official MaskDecoder in float64 -> (masks (B,4,H,W), iou (B,4), tokens, obj)."""
    p, t, heads = "sam_mask_decoder.", "sam_mask_decoder.transformer.", CFG.decoder_heads
    B = sparse.shape[0]
    out_tok = np.concatenate(
        [sd[p + "obj_score_token.weight"], sd[p + "iou_token.weight"], sd[p + "mask_tokens.weight"]], 0
    )
    tokens = np.concatenate([np.broadcast_to(out_tok, (B, *out_tok.shape)), sparse], 1)
    src = emb + dense
    _, h, w, c = src.shape
    keys, kpe = src.reshape(B, h * w, c), np.broadcast_to(pe.reshape(1, h * w, c), (B, h * w, c))
    queries, qpe = tokens, tokens
    for i in range(CFG.decoder_depth):
        L = f"{t}layers.{i}"
        if i == 0:
            queries = _np_attn(sd, L + ".self_attn", queries, queries, queries, heads)
        else:
            q = queries + qpe
            queries = queries + _np_attn(sd, L + ".self_attn", q, q, queries, heads)
        queries = _np_ln(queries, sd, L + ".norm1", 1e-5)
        queries = queries + _np_attn(sd, L + ".cross_attn_token_to_image", queries + qpe, keys + kpe, keys, heads)
        queries = _np_ln(queries, sd, L + ".norm2", 1e-5)
        queries = _np_ln(queries + _np_mlp(sd, L + ".mlp", queries, 2), sd, L + ".norm3", 1e-5)
        keys = keys + _np_attn(sd, L + ".cross_attn_image_to_token", keys + kpe, queries + qpe, queries, heads)
        keys = _np_ln(keys, sd, L + ".norm4", 1e-5)
    queries = queries + _np_attn(sd, t + "final_attn_token_to_image", queries + qpe, keys + kpe, keys, heads)
    hs = _np_ln(queries, sd, t + "norm_final_attn", 1e-5)
    src = keys.reshape(B, h, w, c)
    up = _np_convT_s2k2(src, sd[p + "output_upscaling.0.weight"], sd[p + "output_upscaling.0.bias"]) + s1
    up = _np_gelu(_np_ln(up, sd, p + "output_upscaling.1", 1e-6))
    up = _np_gelu(_np_convT_s2k2(up, sd[p + "output_upscaling.3.weight"], sd[p + "output_upscaling.3.bias"]) + s0)
    hyper = np.stack([_np_mlp(sd, f"{p}output_hypernetworks_mlps.{m}", hs[:, 2 + m], 3) for m in range(4)], 1)
    masks = np.einsum("bmc,bhwc->bmhw", hyper, up)
    iou = _np_mlp(sd, p + "iou_prediction_head", hs[:, 1], 3, sigmoid=True)
    obj = _np_mlp(sd, p + "pred_obj_score_head", hs[:, 0], 3)
    return masks, iou, hs[:, 2:6], obj


# The decoder tests share one batch (2) and one prompt length (2 points + padding = 3 tokens) so
# that eager execution reuses its compiled ops.
_COORDS = np.array([[[30.0, 40.0], [90.0, 20.0]], [[64.0, 64.0], [5.0, 120.0]]], np.float32)
_LABELS = np.array([[1, 0], [1, 1]], np.int32)


def _setup(tiny, seed, b=2):
    pe, md, params, _ = tiny
    vp, vd = {"params": params["sam_prompt_encoder"]}, {"params": params["sam_mask_decoder"]}
    emb, s0, s1 = _inputs(seed, b)
    return pe, md, vp, vd, jnp.asarray(emb), (jnp.asarray(s0), jnp.asarray(s1)), pe.apply(vp, method="dense_pe")


def test_mask_decoder_matches_numpy(tiny):
    pe, md, params, sd = tiny
    emb, s0, s1 = _inputs(5, b=2)
    coords, labels = _COORDS, _LABELS
    vp, vd = {"params": params["sam_prompt_encoder"]}, {"params": params["sam_mask_decoder"]}
    sparse, dense = pe.apply(vp, (jnp.asarray(coords), jnp.asarray(labels)))
    image_pe = pe.apply(vp, method="dense_pe")
    high = (jnp.asarray(s0), jnp.asarray(s1))
    masks, iou, toks, obj = md.apply(vd, jnp.asarray(emb), image_pe, sparse, dense, False, high, method="predict_masks")
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    ref = _np_decoder(sd, f64(emb), f64(image_pe), f64(sparse), f64(dense), f64(s0), f64(s1))
    for got, want in zip((masks, iou, toks, obj), ref):
        np.testing.assert_allclose(np.asarray(got), want, atol=2e-4 * max(1.0, np.abs(want).max()), rtol=0)
    # forward = predict_masks + selection
    fwd = md.apply(vd, jnp.asarray(emb), image_pe, sparse, dense, True, False, high)
    np.testing.assert_allclose(np.asarray(fwd[0]), np.asarray(masks[:, 1:]), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(fwd[2]), np.asarray(toks[:, 1:]), atol=1e-5, rtol=0)


# ------------------------------------------------------------------ selection
def test_stability_fallback_decision():
    H = 16
    base = np.full((H, H), 10.0, np.float32)
    base[:, H // 2 :] = -10.0  # |>0.05| == |>-0.05|: stability 1
    unstable = base.copy()
    unstable[:4, H // 2 :] = 0.0  # 32 cells in (-0.05, 0.05]: 128/160
    edge = np.full((H, H), -10.0, np.float32)
    edge.reshape(-1)[:49] = 1.0  # 49 / 50 = 0.98 exactly (>= thresh: stable)
    edge.reshape(-1)[49] = 0.0
    below = edge.copy()
    below.reshape(-1)[48] = 0.0  # 48 / 50 = 0.96: unstable
    empty = np.full((H, H), -10.0, np.float32)  # no pixel > -delta: stability 1 by definition
    multi = [np.full((H, H), v, np.float32) for v in (1.0, 2.0, 3.0)]
    cases = [
        (base, [0.1, 0.5, 0.9, 0.2], 0),
        (unstable, [0.9, 0.5, 0.8, 0.2], 2),
        (edge, [0.1, 0.3, 0.3, 0.9], 0),
        (below, [0.1, 0.7, 0.7, 0.2], 1),
        (empty, [0.1, 0.2, 0.3, 0.4], 0),
        (unstable, [0.9, 0.3, 0.3, 0.3], 1),
    ]
    masks = jnp.asarray(np.stack([np.stack([m0, *multi]) for m0, _, _ in cases]))
    ious = jnp.asarray(np.array([c[1] for c in cases], np.float32))
    np.testing.assert_allclose(
        np.asarray(stability_scores(masks[:, 0], 0.05))[:5], [1, 128 / 160, 0.98, 0.96, 1], rtol=1e-6
    )
    m, iou, idx = jax.jit(lambda a, b: dynamic_multimask_via_stability(a, b, 0.05, 0.98))(masks, ious)
    want = np.array([c[2] for c in cases])
    np.testing.assert_array_equal(np.asarray(idx), want)
    np.testing.assert_array_equal(np.asarray(m)[:, 0], np.asarray(masks)[np.arange(len(cases)), want])
    np.testing.assert_array_equal(np.asarray(iou)[:, 0], np.asarray(ious)[np.arange(len(cases)), want])


def test_decoder_single_mask_uses_stability_selection(tiny):
    pe, md, vp, vd, emb, high, image_pe = _setup(tiny, 6)
    sparse, dense = pe.apply(vp, (jnp.asarray(_COORDS), jnp.asarray(_LABELS)))
    allm, alli, toks, _ = md.apply(vd, emb, image_pe, sparse, dense, False, high, method="predict_masks")
    rows = np.arange(2)
    # thresh 0 -> always token 0; thresh 2 -> always the best multimask output
    for thresh, expect in ((0.0, np.zeros(2, int)), (2.0, np.argmax(np.asarray(alli)[:, 1:], -1) + 1)):
        md2 = MaskDecoder(get_config("tiny_test", dynamic_multimask_stability_thresh=thresh))
        m, i, t, _ = md2.apply(vd, emb, image_pe, sparse, dense, False, False, high)
        np.testing.assert_array_equal(np.asarray(m)[:, 0], np.asarray(allm)[rows, expect])
        np.testing.assert_array_equal(np.asarray(i)[:, 0], np.asarray(alli)[rows, expect])
        np.testing.assert_array_equal(np.asarray(t), np.asarray(toks)[:, :1])  # always the single-mask token
    md3 = MaskDecoder(
        get_config("tiny_test", dynamic_multimask_via_stability=False, dynamic_multimask_stability_thresh=2.0)
    )
    m, _, _, _ = md3.apply(vd, emb, image_pe, sparse, dense, False, False, high)
    np.testing.assert_array_equal(np.asarray(m)[:, 0], np.asarray(allm)[:, 0])


def test_decoder_shapes(tiny):
    pe, md, vp, vd, emb, high, image_pe = _setup(tiny, 7, b=1)
    B = 2
    mask_in = jnp.asarray(np.random.default_rng(0).normal(size=(B, 4 * HW, 4 * HW, 1)), jnp.float32)
    sparse, dense = pe.apply(vp, (jnp.asarray(_COORDS), jnp.asarray(_LABELS)), None, mask_in)
    assert sparse.shape == (B, 3, D) and dense.shape == (B, HW, HW, D)
    for mm, M, T in ((True, 3, 3), (False, 1, 1)):
        # repeat_image: one image embedding for B prompts (high-res features broadcast like the official);
        # the single-mask path (data-dependent stability choice) runs under jit
        f = lambda e, p, s, d: md.apply(vd, e, p, s, d, mm, True, high)  # noqa: E731
        out = (f if mm else jax.jit(f))(emb, image_pe, sparse, dense)
        assert [o.shape for o in out] == [(B, M, 4 * HW, 4 * HW), (B, M), (B, T, D), (B, 1)]
    m2 = MaskDecoder(CFG, use_multimask_token_for_obj_ptr=False)
    assert m2.apply(vd, emb, image_pe, sparse, dense, True, True, high)[2].shape == (B, 1, D)
    # conv_s0 / conv_s1 on the FPN levels
    f4, f8 = md.apply(
        vd, jnp.ones((1, 4 * HW, 4 * HW, D)), jnp.ones((1, 2 * HW, 2 * HW, D)), method="high_res_features"
    )
    assert f4.shape == (1, 4 * HW, 4 * HW, D // 8) and f8.shape == (1, 2 * HW, 2 * HW, D // 4)


def test_padding_points(tiny):
    """Label -1 = ``not_a_point_embed`` whatever the coordinates; such a token is still attended to, so
    appending one changes the decoder's outputs (as in the official code).  ``sparse_mask`` False hides
    it: the outputs then equal those of the prompt without it."""
    pe, md, vp, vd, emb, high, image_pe = _setup(tiny, 8)
    sp1, dense = pe.apply(vp, (jnp.asarray(_COORDS), jnp.asarray(_LABELS)))
    extra_xy = np.array([[[3.0, 100.0], [120.0, 9.0]], [[0.0, 0.0], [50.0, 60.0]]], np.float32)
    sp2, _ = pe.apply(
        vp,
        (
            jnp.asarray(np.concatenate([_COORDS, extra_xy], 1)),
            jnp.asarray(np.concatenate([_LABELS, -np.ones((2, 2), np.int32)], 1)),
        ),
    )
    assert sp1.shape == (2, 3, D) and sp2.shape == (2, 5, D)
    nap = np.asarray(vp["params"]["not_a_point_embed"][0])
    for j in (2, 3, 4):  # coordinates of -1 points are ignored
        np.testing.assert_array_equal(np.asarray(sp2[:, j]), np.broadcast_to(nap, (2, D)))
    np.testing.assert_array_equal(np.asarray(sp2[:, :2]), np.asarray(sp1[:, :2]))
    ref = md.apply(vd, emb, image_pe, sp1, dense, True, False, high)
    extra = md.apply(vd, emb, image_pe, sp2, dense, True, False, high)
    assert np.abs(np.asarray(extra[0]) - np.asarray(ref[0])).max() > 1e-3  # not a no-op
    # hide two of the three (identical) -1 tokens: left = the 2 clicks + the official padding token
    keep = jnp.asarray([[True, True, True, False, False]] * 2)
    hidden = md.apply(vd, emb, image_pe, sp2, dense, True, False, high, keep)
    for a, b in zip(hidden, ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5, rtol=0)


# ------------------------------------------------------------------ parity with the official dump
def _nhwc(a):
    return jnp.asarray(np.asarray(a).transpose(0, 2, 3, 1))


def test_parity_official_image_predictor():
    npz, pth = ref_dump("sam2")
    from peanut_jax.convert import load_checkpoint

    cfg = get_config("tiny")
    sd = load_checkpoint(pth)["model"]
    mine = ("sam_prompt_encoder.", "sam_mask_decoder.")
    # strict on our prefixes: every official key of both modules is mapped, nothing left over
    params = _keymap(cfg).apply(sd, ignore=lambda k: not k.startswith(mine))
    pe, md = PromptEncoder(cfg), MaskDecoder(cfg)
    vp, vd = {"params": params["sam_prompt_encoder"]}, {"params": params["sam_mask_decoder"]}
    c = "c1_image_1024"
    emb = _nhwc(npz[f"{c}/inter/image_embed"])  # backbone s16 + no_mem_embed
    high = (_nhwc(npz[f"{c}/inter/high_res_feat_s0"]), _nhwc(npz[f"{c}/inter/high_res_feat_s1"]))
    image_pe = pe.apply(vp, method="dense_pe")
    errs = {}

    def check(name, got, ref):
        got, ref = np.asarray(got), np.asarray(ref)
        assert got.shape == ref.shape, (name, got.shape, ref.shape)
        err = float(np.abs(got - ref).max())
        errs[name] = err
        assert err <= 2e-4 * max(1.0, float(np.abs(ref).max())), (name, err)

    check("image_pe", image_pe, npz[f"{c}/inter/image_pe"][0].transpose(1, 2, 0))
    box = np.array([300, 260, 700, 640], np.float32).reshape(1, 2, 2)  # (x0, y0, x1, y1) -> 2 points
    clicks = np.array([[[420.0, 410.0], [650.0, 300.0]]], np.float32)
    prompts = [
        (clicks[:, :1], [[1]], True),
        (box, [[2, 3]], False),
        (np.concatenate([box, clicks], 1), [[2, 3, 1, 0]], False),
    ]
    run = jax.jit(lambda v, *a, mm: md.apply(v, *a, mm, False, high), static_argnames="mm")
    for i, (co, lab, mm) in enumerate(prompts):
        sparse, dense = pe.apply(vp, (jnp.asarray(co), jnp.asarray(lab, jnp.int32)))
        check(f"p{i}_sparse", sparse, npz[f"{c}/inter/p{i}_sparse_embeddings"])
        check(f"p{i}_dense", dense, npz[f"{c}/inter/p{i}_dense_embeddings"].transpose(0, 2, 3, 1))
        masks, iou, toks, obj = run(vd, emb, image_pe, sparse, dense, mm=mm)
        check(f"p{i}_decoder_masks", masks, npz[f"{c}/inter/p{i}_decoder_masks"])
        check(f"p{i}_sam_tokens_out", toks, npz[f"{c}/inter/p{i}_decoder_sam_tokens_out"])
        check(f"p{i}_iou", iou[0], npz[f"{c}/out/p{i}_iou_predictions"])
        check(f"p{i}_low_res_masks", jnp.clip(masks[0], -32, 32), npz[f"{c}/out/p{i}_low_res_masks"])
        check(f"p{i}_object_score_logits", obj, npz[f"{c}/out/p{i}_object_score_logits"])
        if not mm:  # the chosen output token is the official one
            allm, alli = md.apply(vd, emb, image_pe, sparse, dense, False, high, method="predict_masks")[:2]
            _, _, idx = dynamic_multimask_via_stability(allm, alli, 0.05, 0.98)
            ref = npz[f"{c}/inter/p{i}_decoder_masks"][0, 0]
            official = int(np.argmin([np.abs(np.asarray(allm[0, j]) - ref).max() for j in range(4)]))
            assert int(idx[0]) == official, (i, int(idx[0]), official)
    print("max |err|:", {k: f"{v:.2e}" for k, v in errs.items()})
