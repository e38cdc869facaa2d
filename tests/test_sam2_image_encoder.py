"""SAM 2 image encoder (Hiera trunk + FPN neck): key map, shapes, pieces, float64 references, dump parity."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ref_dump
from flax.traverse_util import flatten_dict, unflatten_dict
from scipy.special import erf

from peanut_jax.convert.common import KeyMap
from peanut_jax.convert.sam2 import _image_encoder_rules
from peanut_jax.models.sam2.config import get_config
from peanut_jax.models.sam2.hiera import BlockSpec, Hiera, MultiScaleBlock
from peanut_jax.models.sam2.image_encoder import FpnNeck, ImageEncoder
from peanut_jax.models.sam2.position_encoding import sine_2d

CFG = get_config("tiny_test")
S = CFG.image_size


def _random_params(module, *args, seed=0, scale=0.3):
    """Every leaf random normal (the official inits leave pos embeds at zero); shapes from
    ``eval_shape`` and values from numpy, which avoids compiling Flax's init."""
    shapes = flatten_dict(jax.eval_shape(module.init, jax.random.PRNGKey(0), *args)["params"])
    rng = np.random.default_rng(seed)
    return unflatten_dict({p: jnp.asarray(scale * rng.normal(size=v.shape), v.dtype) for p, v in shapes.items()})


@pytest.fixture(scope="module")
def enc():
    model = ImageEncoder(CFG)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, S, S, 3)), jnp.float32)
    return model, _random_params(model, x), x


def _official_keys(cfg):
    """Official state-dict names and shapes of the image encoder, from the official naming rule:
    stage-change blocks (first block of stages 2..4) carry ``proj``; qkv is (3*dim_out, dim)."""
    h = cfg.hiera
    c, bh, bw, w0 = h.embed_dim, *h.window_pos_embed_bkg_spatial_size, h.window_spec[0]
    t = "image_encoder.trunk"
    keys = {
        f"{t}.pos_embed": (1, c, bh, bw),
        f"{t}.pos_embed_window": (1, c, w0, w0),
        f"{t}.patch_embed.proj.weight": (c, 3, 7, 7),
        f"{t}.patch_embed.proj.bias": (c,),
    }
    starts = np.cumsum(h.stages)[:-1]
    i = 0
    for s, n in enumerate(h.stages):
        for j in range(n):
            dout = h.channels[s]
            din = h.channels[s - 1] if (j == 0 and s > 0) else dout
            b = f"{t}.blocks.{i}"
            keys.update(
                {
                    f"{b}.norm1.weight": (din,),
                    f"{b}.norm1.bias": (din,),
                    f"{b}.attn.qkv.weight": (3 * dout, din),
                    f"{b}.attn.qkv.bias": (3 * dout,),
                    f"{b}.attn.proj.weight": (dout, dout),
                    f"{b}.attn.proj.bias": (dout,),
                    f"{b}.norm2.weight": (dout,),
                    f"{b}.norm2.bias": (dout,),
                    f"{b}.mlp.layers.0.weight": (4 * dout, dout),
                    f"{b}.mlp.layers.0.bias": (4 * dout,),
                    f"{b}.mlp.layers.1.weight": (dout, 4 * dout),
                    f"{b}.mlp.layers.1.bias": (dout,),
                }
            )
            if i in starts:
                keys.update({f"{b}.proj.weight": (dout, din), f"{b}.proj.bias": (dout,)})
            i += 1
    for k, ch in enumerate(reversed(h.channels)):  # convs.0 on the lowest resolution
        keys.update(
            {
                f"image_encoder.neck.convs.{k}.conv.weight": (cfg.d_model, ch, 1, 1),
                f"image_encoder.neck.convs.{k}.conv.bias": (cfg.d_model,),
            }
        )
    return keys


def test_keymap_round_trip(enc):
    _, params, _ = enc
    km = _image_encoder_rules(KeyMap(), CFG)
    tree = {"image_encoder": params}
    sd = km.invert(tree)
    expected = _official_keys(CFG)
    assert len(expected) == 78
    assert set(sd) == set(expected)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    back = km.apply(sd, tree)
    fa, fb = flatten_dict(tree), flatten_dict(back)
    assert set(fa) == set(fb)
    for p in fa:
        np.testing.assert_array_equal(np.asarray(fa[p]), fb[p], err_msg=str(p))
    # NCHW <-> NHWC of the position embeddings
    np.testing.assert_array_equal(
        sd["image_encoder.trunk.pos_embed"][0, :, 1, 2], np.asarray(params["trunk"]["pos_embed"])[0, 1, 2]
    )


def test_shapes_and_pieces(enc):
    model, params, x = enc
    v = {"params": params}
    stages, out = jax.jit(lambda v, x: (model.apply(v, x, method=lambda m, x: m.trunk(x)), model.apply(v, x)))(v, x)
    h = CFG.hiera
    assert [s.shape for s in stages] == [(2, S // st, S // st, c) for st, c in zip((4, 8, 16, 32), h.channels)]
    d = CFG.d_model
    assert [f.shape for f in out["backbone_fpn"]] == [(2, S // st, S // st, d) for st in (4, 8, 16)]
    assert [p.shape for p in out["vision_pos_enc"]] == [(1, S // st, S // st, d) for st in (4, 8, 16)]
    np.testing.assert_array_equal(out["vision_features"], out["backbone_fpn"][-1])

    trunk = Hiera(h)
    tv = {"params": params["trunk"]}
    cuts = (0, *(e + 1 for e in h.stage_ends))
    assert trunk.stage_cuts == cuts == (0, 1, 2, 4, 5)

    @jax.jit
    def pieces(tv, x):
        y = trunk.apply(tv, x, method=Hiera.embed)
        outs = []
        for a, b in zip(cuts[:-1], cuts[1:]):
            y = trunk.apply(tv, y, a, b, method=Hiera.run_blocks)
            outs.append(y)
        # an uneven split gives the same last stage
        z = trunk.apply(tv, trunk.apply(tv, x, method=Hiera.embed), 0, 3, method=Hiera.run_blocks)
        z = trunk.apply(tv, z, 3, 5, method=Hiera.run_blocks)
        feats = model.apply(v, outs, method=ImageEncoder.neck_from_trunk)
        return outs, z, feats

    outs, z, feats = pieces(tv, x)
    for a, b in zip(outs, stages):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    np.testing.assert_allclose(z, stages[-1], rtol=0, atol=1e-6)
    for a, b in zip(feats["backbone_fpn"], out["backbone_fpn"]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_block_specs():
    """Per-block settings of the official sizes (reference A.2): q-pool blocks, widths, heads and the
    window size lagging one block behind the stage."""
    from peanut_jax.models.sam2.hiera import block_specs

    bp = block_specs(get_config("base_plus").hiera)
    assert [i for i, s in enumerate(bp) if s.q_stride] == [2, 5, 21]
    assert [i for i, s in enumerate(bp) if s.dim != s.dim_out] == [2, 5, 21]
    win = [8, 8, 8, 4, 4, 4] + [14] * 15 + [14, 7, 7]
    for g in (12, 16, 20):
        win[g] = 0
    assert [s.window_size for s in bp] == win
    assert [s.dim_out for s in bp] == [112] * 2 + [224] * 3 + [448] * 16 + [896] * 3
    assert [s.num_heads for s in bp] == [2] * 2 + [4] * 3 + [8] * 16 + [16] * 3
    t = block_specs(get_config("tiny").hiera)
    assert [i for i, s in enumerate(t) if s.q_stride] == [1, 3, 10]
    assert [s.window_size for s in t] == [8, 8, 4, 4, 14, 0, 14, 0, 14, 0, 14, 7]
    lg = block_specs(get_config("large").hiera)
    assert [i for i, s in enumerate(lg) if s.q_stride] == [2, 8, 44]
    assert lg[44].window_size == 16 and lg[45].window_size == 8


def _keys_cubic_weights(n_in, n_out, a=-0.75):
    """(n_out, n_in) matrix of torch's bicubic resize (align_corners=False, clamped taps)."""

    def k(t):
        t = abs(t)
        if t <= 1:
            return (a + 2) * t**3 - (a + 3) * t**2 + 1
        if t < 2:
            return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
        return 0.0

    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        src = (o + 0.5) * n_in / n_out - 0.5
        i0 = math.floor(src)
        for tap in range(i0 - 1, i0 + 3):
            m[o, min(max(tap, 0), n_in - 1)] += k(src - tap)
    return m


def test_position_embedding(enc):
    _, params, _ = enc
    h = CFG.hiera
    g = S // 4
    pe = np.asarray(params["trunk"]["pos_embed"], np.float64)[0]  # (bh, bw, C)
    win = np.asarray(params["trunk"]["pos_embed_window"], np.float64)[0]  # (w0, w0, C)
    my, mx = _keys_cubic_weights(pe.shape[0], g), _keys_cubic_weights(pe.shape[1], g)
    ref = np.einsum("yi,xj,ijc->yxc", my, mx, pe)
    w0 = h.window_spec[0]
    ref = ref + win[np.arange(g)[:, None] % w0, np.arange(g)[None, :] % w0]  # tiled, not repeated
    got = Hiera(h).apply({"params": params["trunk"]}, (g, g), method=Hiera.pos_embedding)
    np.testing.assert_allclose(np.asarray(got)[0], ref, rtol=0, atol=2e-6)


# ---------------------------------------------------------------- float64 reference of one block
def _ln(v, p):
    mu = v.mean(-1, keepdims=True)
    var = ((v - mu) ** 2).mean(-1, keepdims=True)
    return (v - mu) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def _lin(v, p):
    return v @ p["kernel"] + p["bias"]


def _pool2(v):
    """2x2 max-pool, stride 2, floor, over the two leading spatial axes of (h, w, C)."""
    h, w = v.shape[0] // 2, v.shape[1] // 2
    out = np.empty((h, w, v.shape[2]))
    for i in range(h):
        for j in range(w):
            out[i, j] = v[2 * i : 2 * i + 2, 2 * j : 2 * j + 2].max(axis=(0, 1))
    return out


def _ref_block(x, p, spec: BlockSpec):
    """One MultiScaleBlock written from the formulas, window by window, in float64."""
    B, H, W, _ = x.shape
    heads, dout = spec.num_heads, spec.dim_out
    hd = dout // heads
    xn = _ln(x, p["norm1"])
    if spec.dim != spec.dim_out:
        sc = _lin(xn, p["proj"])
        if spec.q_stride:
            sc = np.stack([_pool2(s) for s in sc])
    else:
        sc = x
    Ho, Wo = sc.shape[1:3]
    ws = spec.window_size
    if ws:
        nh, nw = -(-H // ws), -(-W // ws)
        xp = np.zeros((B, nh * ws, nw * ws, spec.dim))
        xp[:, :H, :W] = xn  # zero padding, not masked
        tiles = [(r, c, ws, ws) for r in range(nh) for c in range(nw)]
    else:
        xp, tiles = xn, [(0, 0, H, W)]
    wo = (ws // 2 if spec.q_stride else ws) if ws else None
    att = np.zeros((B, (nh * wo if ws else Ho), (nw * wo if ws else Wo), dout))
    for b in range(B):
        for r, c, th, tw in tiles:
            t = xp[b, r * th : (r + 1) * th, c * tw : (c + 1) * tw]
            qkv = _lin(t, p["attn"]["qkv"]).reshape(th, tw, 3, dout)
            q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
            if spec.q_stride:
                q = _pool2(q)
            qh, qw = q.shape[:2]
            q, k, v = q.reshape(-1, heads, hd), k.reshape(-1, heads, hd), v.reshape(-1, heads, hd)
            y = np.zeros((qh * qw, heads, hd))
            for hh in range(heads):
                s = q[:, hh] @ k[:, hh].T / math.sqrt(hd)
                e = np.exp(s - s.max(-1, keepdims=True))
                y[:, hh] = (e / e.sum(-1, keepdims=True)) @ v[:, hh]
            y = _lin(y.reshape(qh, qw, dout), p["attn"]["proj"])
            att[b, r * qh : (r + 1) * qh, c * qw : (c + 1) * qw] = y
    x = sc + att[:, :Ho, :Wo]
    m = _lin(_ln(x, p["norm2"]), p["mlp"]["layers_0"])
    m = 0.5 * m * (1 + erf(m / math.sqrt(2)))
    return x + _lin(m, p["mlp"]["layers_1"])


@pytest.mark.parametrize(
    "spec,x_scale",
    [
        (BlockSpec(16, 32, 2, (2, 2), 4), 1.0),  # stage change: proj + q-pool inside padded 4x4 windows
        (BlockSpec(16, 16, 2, None, 4), 1.0),  # plain windowed block with padding
        (BlockSpec(16, 16, 2, None, 4), 3e-3),  # tiny activations: LayerNorm eps matters
        (BlockSpec(16, 32, 2, (2, 2), 0), 1.0),  # global attention with q-pool
    ],
    ids=["qpool_window", "window", "window_small", "qpool_global"],
)
def test_block_vs_float64_reference(spec, x_scale):
    x = (x_scale * np.random.default_rng(0).normal(size=(2, 10, 6, 16))).astype(np.float32)  # pads to 12x8
    blk = MultiScaleBlock(spec)
    params = _random_params(blk, x, seed=3, scale=0.4)
    got = np.asarray(jax.jit(blk.apply)({"params": params}, x))
    p64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    ref = _ref_block(x.astype(np.float64), p64, spec)
    assert got.shape == ref.shape == ((2, 5, 3, 32) if spec.q_stride else (2, 10, 6, 16))
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5 * max(1, np.abs(ref).max()))


@pytest.mark.parametrize("levels", [(2, 3), None], ids=["levels23", "all"])
def test_neck_top_down(levels):
    chans, d = (64, 32, 16, 8), 8  # lowest resolution first
    neck = FpnNeck(d, chans, levels)
    rng = np.random.default_rng(1)
    xs = [rng.normal(size=(1, 4 * 2 ** (3 - i), 4 * 2 ** (3 - i), chans[3 - i])).astype(np.float32) for i in range(4)]
    params = _random_params(neck, xs, seed=2)
    out, pos = jax.jit(neck.apply)({"params": params}, xs)
    lat = [
        np.einsum(
            "bhwc,cd->bhwd", xs[i].astype(np.float64), np.asarray(params[f"convs_{3 - i}"]["kernel"], np.float64)[0, 0]
        )
        + np.asarray(params[f"convs_{3 - i}"]["bias"], np.float64)
        for i in range(4)
    ]
    top_down = (2, 3) if levels else (0, 1, 2, 3)
    ref = [None] * 4
    ref[3] = lat[3]
    for i in (2, 1, 0):
        ref[i] = lat[i] + (ref[i + 1].repeat(2, 1).repeat(2, 2) if i in top_down else 0)
    for i in range(4):
        np.testing.assert_allclose(out[i], ref[i], rtol=0, atol=1e-5)
        np.testing.assert_array_equal(pos[i], sine_2d(*xs[i].shape[1:3], d)[None])


def test_dump_parity():
    """Tiny SAM 2.1 image encoder vs the official dump (image predictor, 1024x1024 input)."""
    z, pth = ref_dump("sam2")
    from peanut_jax.convert import load_checkpoint

    cfg = get_config("tiny", "2.1")
    sd = {k: np.asarray(v) for k, v in load_checkpoint(pth)["model"].items() if k.startswith("image_encoder.")}
    params = _image_encoder_rules(KeyMap(), cfg).apply(sd)["image_encoder"]
    img = z["c1_image_1024/in/image"].astype(np.float32) / 255.0
    # SAM2Transforms: ToTensor, Resize((1024, 1024)) (the identity here), ImageNet Normalize
    img = (img - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    model = ImageEncoder(cfg)

    @jax.jit
    def run(p, x):
        def f(m, x):
            st = m.trunk(x)
            return st, m.neck(st)

        return model.apply({"params": p}, x, method=f)

    stages, (fpn, pos) = run(params, jnp.asarray(img[None]))
    pre = "c1_image_1024/inter/"
    got = {
        **{f"trunk_stage{i}": stages[i] for i in range(4)},
        **{f"neck_fpn{i}": fpn[i] for i in range(4)},
        "neck_pos2": pos[2],
    }
    for name, a in got.items():
        ref = z[pre + name]
        a = np.asarray(a).transpose(0, 3, 1, 2)
        assert a.shape == ref.shape, name
        err = np.abs(a - ref).max()
        assert err <= 2e-4 * max(1.0, np.abs(ref).max()), f"{name}: max |d| {err}"
