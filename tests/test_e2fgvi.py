"""E2FGVI / E2FGVI-HQ generator, its building blocks, the T-PatchGAN discriminator and the converters.

CI-safe tests use tiny shapes and independent reference implementations written here from the
published definitions (numpy loops for the focal attention block; plain torch with
``torch.nn.utils.spectral_norm`` for the discriminator).  One full generator forward (HQ at
60x108) runs in CI.  Parity with the official PyTorch code uses the dumps in $PEANUT_REFS (skipped
in CI; the 240x432 cases are also marked slow).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ref_dump
from flax.traverse_util import flatten_dict, unflatten_dict

from peanut_jax.convert import CheckpointMismatchError, from_official, to_official
from peanut_jax.convert import e2fgvi as conv_e2fgvi
from peanut_jax.models import build
from peanut_jax.models.focal_transformer import (
    TemporalFocalTransformerBlock,
    overlap_count,
    pooled_key_bias,
    rolled_valid_indices,
    token_grid,
)
from peanut_jax.models.propagation import BidirectionalPropagation, branch_flow_indices
from peanut_jax.ops import fold
from peanut_jax.testing import assert_parity

N_PARAMS = {"e2fgvi": 41_799_743, "e2fgvi_hq": 41_117_887}  # official netG.parameters()
N_VALID_IND = 8 * 120  # the 8 valid_ind_rolled buffers
N_KEYS = {"e2fgvi": 243, "e2fgvi_hq": 244}


# ----------------------------------------------------------------------------------------- helpers


def _param_shapes(name, **kw):
    m = build(name, **kw)
    h, w = (60, 108) if m.hq else (240, 432)
    x = jax.ShapeDtypeStruct((1, 2, h, w, 3), jnp.float32)
    return m, jax.eval_shape(lambda k, a: m.init(k, a, 2), jax.random.key(0), x)["params"]


def _random_params(shapes, seed=0):
    """Random parameters of the given shapes (non-degenerate: no zeros/constants)."""
    rng = np.random.default_rng(seed)
    flat = flatten_dict(shapes)
    out = {}
    for path, s in sorted(flat.items()):
        fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 1
        if path[-1] == "scale":
            v = 1.0 + 0.1 * rng.standard_normal(s.shape)
        elif path[-1] == "bias" or len(s.shape) == 1:
            v = 0.02 * rng.standard_normal(s.shape)
        else:
            v = rng.standard_normal(s.shape) / math.sqrt(max(fan_in, 1))
        if "update_spynet" in path and path[-2] == "conv_4":
            v = v * 0.05  # calibrated flow head: flows of a few pixels
        out[path] = np.asarray(v, np.float32)
    return unflatten_dict(out)


def _masked_clip(b, t, h, w, seed=0):
    """A smooth moving texture in [-1, 1] with a moving hole (0 = mid-grey)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for i in range(t):
        img = np.stack([np.sin((xx + 1.3 * i) / 5.0 + c) * np.cos((yy + 0.7 * i) / 7.0 - c) for c in range(3)], -1)
        hole = ((yy - h / 2) ** 2 / (h / 5) ** 2 + (xx - w / 3 - 2 * i) ** 2 / (w / 6) ** 2) < 1
        frames.append(np.where(hole[..., None], 0.0, 0.8 * img))
    x = np.stack(frames)[None].repeat(b, 0)
    return jnp.asarray(x, jnp.float32)


# ------------------------------------------------------------------------------------------- units


def test_rolled_valid_indices_from_definition():
    """4 quadrants of 5x9 rolled tokens, minus the 3x5 block duplicating the window's own tokens."""
    idx = rolled_valid_indices((5, 9), (2, 4))
    assert idx.dtype == np.int64 and idx.shape == (120,)
    expected = []
    dropped = {
        0: (range(0, 3), range(0, 5)),
        1: (range(0, 3), range(4, 9)),
        2: (range(2, 5), range(0, 5)),
        3: (range(2, 5), range(4, 9)),
    }
    for q in range(4):
        rows, cols = dropped[q]
        for r in range(5):
            for c in range(9):
                if not (r in rows and c in cols):
                    expected.append(q * 45 + r * 9 + c)
    np.testing.assert_array_equal(idx, expected)


def test_pooled_key_bias_brute_force():
    nh, nw = 4, 3
    bias = pooled_key_bias(nh, nw, (5, 9))
    assert bias.shape == (nh, nw, 45)
    for a in range(nh):
        for b in range(nw):
            for ki in range(5):
                for kj in range(9):
                    inside = 0 <= a + ki - 2 < nh and 0 <= b + kj - 4 < nw
                    assert bias[a, b, ki * 9 + kj] == (0.0 if inside else -100.0)


@pytest.mark.parametrize("size", [(60, 108), (30, 54), (58, 107)])
def test_overlap_count_is_fold_of_ones(size):
    fh, fw = token_grid(size)
    ones = jnp.ones((1, fh, fw, 49), jnp.float32)
    ref = np.asarray(fold(ones, size, 7, 3, 3))
    np.testing.assert_array_equal(overlap_count(size, (7, 7), (3, 3), (3, 3)), ref[0])


def test_branch_flow_indices_official_quirk_and_fix():
    # forward branch: frame i uses flows[i-1] (and flows[i-2] two steps back)
    assert branch_flow_indices(5, "forward") == [(0, None, None), (1, 0, None), (2, 1, 0), (3, 2, 1), (4, 3, 2)]
    # official backward branch (issue #58): frames reversed, flow index not
    assert branch_flow_indices(5, "backward") == [(4, None, None), (3, 0, None), (2, 1, 0), (1, 2, 1), (0, 3, 2)]
    # corrected: frame T-1-i uses flows[T-1-i] (and flows[T-i])
    assert branch_flow_indices(5, "backward", True) == [(4, None, None), (3, 3, None), (2, 2, 3), (1, 1, 2), (0, 0, 1)]
    assert branch_flow_indices(5, "forward", True) == branch_flow_indices(5, "forward")


# ------------------------------------------------------------ focal transformer block vs numpy loops


def _np_layer_norm(x, p):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * p["scale"] + p["bias"]


def _np_dense(x, p):
    return x @ p["kernel"] + p["bias"]


def _np_block(x, params, out_size, heads, win=(5, 9)):
    """The official TemporalFocalTransformerBlock written with explicit index loops (float64)."""
    from scipy.special import erf

    x = x.astype(np.float64)
    params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    _, t, h, w, c = x.shape
    wh, ww = win
    eh, ew = wh // 2, ww // 2
    nh, nw = h // wh, w // ww
    hd = c // heads
    y = _np_layer_norm(x[0], params["norm1"])  # (T, H, W, C)
    a = params["attn"]
    qkv = _np_dense(y, a["qkv"])
    q, k, v = qkv[..., :c], qkv[..., c : 2 * c], qkv[..., 2 * c :]
    pw = params["pool_layers_0"]
    pooled = np.zeros((t, nh, nw, c))
    for i in range(nh):
        for j in range(nw):
            blk = y[:, i * wh : (i + 1) * wh, j * ww : (j + 1) * ww].reshape(t, wh * ww, c)
            pooled[:, i, j] = np.einsum("tnc,n->tc", blk, pw["kernel"][:, 0]) + pw["bias"][0]
    qkv_p = _np_dense(pooled, a["qkv"])
    kp, vp = qkv_p[..., c : 2 * c], qkv_p[..., 2 * c :]
    out = np.zeros((t, h, w, c))
    quads = [
        ((-eh, -ew), (range(0, wh - eh), range(0, ww - ew))),
        ((-eh, ew), (range(0, wh - eh), range(ew, ww))),
        ((eh, -ew), (range(eh, wh), range(0, ww - ew))),
        ((eh, ew), (range(eh, wh), range(ew, ww))),
    ]
    for i in range(nh):
        for j in range(nw):
            qs = [(tt, i * wh + r, j * ww + s) for tt in range(t) for r in range(wh) for s in range(ww)]
            keys, vals, bias = [], [], []
            for tt, r, s in qs:  # the window's own tokens
                keys.append(k[tt, r, s])
                vals.append(v[tt, r, s])
                bias.append(0.0)  # noqa: E702
            for tt in range(t):  # rolled tokens (wrap-around), minus the duplicated block
                for (sy, sx), (dr, dc) in quads:
                    for r in range(wh):
                        for s in range(ww):
                            if r in dr and s in dc:
                                continue
                            yy, xx = (i * wh + r - sy) % h, (j * ww + s - sx) % w
                            keys.append(k[tt, yy, xx])
                            vals.append(v[tt, yy, xx])
                            bias.append(0.0)  # noqa: E702
            for tt in range(t):  # pooled neighbourhood, zero-padded with a -100 bias
                for ki in range(2 * (win[0] // 2) + 1):
                    for kj in range(2 * (win[1] // 2) + 1):
                        pi, pj = i + ki - win[0] // 2, j + kj - win[1] // 2
                        ok = 0 <= pi < nh and 0 <= pj < nw
                        keys.append(kp[tt, pi, pj] if ok else np.zeros(c))
                        vals.append(vp[tt, pi, pj] if ok else np.zeros(c))
                        bias.append(0.0 if ok else -100.0)
            keys, vals, bias = np.stack(keys), np.stack(vals), np.asarray(bias)
            qm = np.stack([q[tt, r, s] for tt, r, s in qs])
            res = np.zeros((len(qs), c))
            for hh in range(heads):
                sl = slice(hh * hd, (hh + 1) * hd)
                logits = (qm[:, sl] * hd**-0.5) @ keys[:, sl].T + bias
                logits -= logits.max(-1, keepdims=True)
                p = np.exp(logits)
                p /= p.sum(-1, keepdims=True)
                res[:, sl] = p @ vals[:, sl]
            res = _np_dense(res, a["proj"])
            for n, (tt, r, s) in enumerate(qs):
                out[tt, r, s] = res[n]
    x1 = x[0] + out
    y = _np_dense(_np_layer_norm(x1, params["norm2"]), params["mlp"]["conv1_0"])  # (T, fh, fw, hidden)
    oh, ow = out_size
    hidden = y.shape[-1]
    cc = hidden // 49
    canvas = np.zeros((t, oh, ow, cc))
    count = np.zeros((oh, ow))
    for bi in range(h):
        for bj in range(w):
            for ki in range(7):
                for kj in range(7):
                    yy, xx = bi * 3 - 3 + ki, bj * 3 - 3 + kj
                    if 0 <= yy < oh and 0 <= xx < ow:
                        canvas[:, yy, xx] += y[:, bi, bj].reshape(t, cc, 49)[:, :, ki * 7 + kj]
                        count[yy, xx] += 1
    canvas /= count[None, :, :, None]
    z = np.zeros_like(y)
    for bi in range(h):
        for bj in range(w):
            for ki in range(7):
                for kj in range(7):
                    yy, xx = bi * 3 - 3 + ki, bj * 3 - 3 + kj
                    if 0 <= yy < oh and 0 <= xx < ow:
                        z[:, bi, bj, np.arange(cc) * 49 + ki * 7 + kj] = canvas[:, yy, xx]
    z = 0.5 * z * (1 + erf(z / np.sqrt(2)))
    return (x1 + _np_dense(z, params["mlp"]["conv2_1"]))[None]


def test_focal_block_matches_loop_reference():
    dim, heads, t = 8, 2, 2
    out_size = (28, 52)  # token grid 10 x 18 = 2 x 2 windows
    fh, fw = token_grid(out_size)
    assert (fh, fw) == (10, 18)
    blk = TemporalFocalTransformerBlock(dim, heads, mlp_hidden=2 * 49)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((1, t, fh, fw, dim)), jnp.float32)
    shapes = jax.eval_shape(lambda k, a: blk.init(k, a, out_size), jax.random.key(0), x)["params"]
    params = _random_params(shapes, seed=3)
    params["pool_layers_0"]["kernel"] = params["pool_layers_0"]["kernel"] * 5.0
    got = np.asarray(blk.apply({"params": params}, x, out_size))
    ref = _np_block(np.asarray(x), params, out_size, heads)
    assert_parity(got, ref, 1e-5, "focal block")


# ----------------------------------------------------------------------------------- propagation


def test_propagation_flow_index_flag():
    c, t, h, w = 16, 4, 12, 16
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, t, h, w, c)), jnp.float32)
    fb = jnp.asarray(2.0 * rng.standard_normal((1, t - 1, h, w, 2)), jnp.float32)
    ff = jnp.asarray(2.0 * rng.standard_normal((1, t - 1, h, w, 2)), jnp.float32)
    quirk = BidirectionalPropagation(c)
    fixed = BidirectionalPropagation(c, fix_backward_flow_idx=True)
    shapes = jax.eval_shape(quirk.init, jax.random.key(0), x, fb, ff)["params"]
    variables = {"params": _random_params(shapes, seed=5)}
    a = np.asarray(quirk.apply(variables, x, fb, ff))
    b = np.asarray(fixed.apply(variables, x, fb, ff))
    assert a.shape == (1, t, h, w, c) and np.isfinite(a).all()
    assert np.abs(a - b).max() > 1e-3
    # with two frames the quirk and the fix index the same flow
    a2 = quirk.apply(variables, x[:, :2], fb[:, :1], ff[:, :1])
    b2 = fixed.apply(variables, x[:, :2], fb[:, :1], ff[:, :1])
    np.testing.assert_array_equal(np.asarray(a2), np.asarray(b2))


def test_deform_align_official_init():
    """mmcv DCN init U(+-1/sqrt(2C*9)), zero bias, zero last offset conv: offsets = flows, mask = 0.5."""
    from peanut_jax.layers.deform_align import SecondOrderDeformableAlignment

    c = 16
    m = SecondOrderDeformableAlignment(c, kernel_init=jax.nn.initializers.normal(0.02))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, 6, 8, 2 * c)), jnp.float32)
    cond = jnp.asarray(rng.standard_normal((1, 6, 8, 3 * c)), jnp.float32)
    f1 = jnp.zeros((1, 6, 8, 2))
    p = m.init(jax.random.key(0), x, cond, f1, f1)["params"]
    bound = 1 / math.sqrt(2 * c * 9)
    k = np.asarray(p["kernel"])
    assert k.shape == (3, 3, 2 * c, c) and np.abs(k).max() <= bound and np.abs(k).max() > 0.8 * bound
    assert not np.asarray(p["bias"]).any() and not np.asarray(p["conv_offset_6"]["kernel"]).any()
    assert 0.015 < np.asarray(p["conv_offset_0"]["kernel"]).std() < 0.025
    assert not np.asarray(p["conv_offset_0"]["bias"]).any()
    # zero offsets, mask 0.5: half of a plain 3x3 convolution
    y = m.apply({"params": p}, x, cond, f1, f1)
    ref = (
        jax.lax.conv_general_dilated(
            x, p["kernel"], (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        * 0.5
    )
    np.testing.assert_allclose(np.asarray(y), np.asarray(ref), atol=1e-5)


# ------------------------------------------------------------------------------ generator & convert


@pytest.mark.parametrize("name", ["e2fgvi", "e2fgvi_hq"])
def test_param_and_key_counts(name):
    _, shapes = _param_shapes(name)
    n = sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes))
    assert n == N_PARAMS[name]
    assert n + N_VALID_IND == {"e2fgvi": 41_800_703, "e2fgvi_hq": 41_118_847}[name]
    order = conv_e2fgvi.official_key_order(name == "e2fgvi_hq")
    assert len(order) == N_KEYS[name] and len({k for k, _ in order}) == N_KEYS[name]
    assert sum(kind == "buffer" for _, kind in order) == 10


@pytest.mark.parametrize(
    "name,size",
    [
        ("e2fgvi", (240, 400)),
        ("e2fgvi", (120, 216)),
        ("e2fgvi_hq", (120, 200)),
        ("e2fgvi_hq", (122, 216)),
        ("e2fgvi_hq", (64, 108)),
    ],
)
def test_rejects_bad_sizes(name, size):
    m = build(name)
    x = jax.ShapeDtypeStruct((1, 2, *size, 3), jnp.float32)
    with pytest.raises(ValueError, match=name):
        jax.eval_shape(lambda k, a: m.init(k, a, 2), jax.random.key(0), x)


def test_rejects_bad_arguments():
    m = build("e2fgvi_hq")
    x = jax.ShapeDtypeStruct((1, 3, 60, 108, 3), jnp.float32)
    with pytest.raises(ValueError, match="num_local_frames"):
        jax.eval_shape(lambda k, a: m.init(k, a, 4), jax.random.key(0), x)
    with pytest.raises(ValueError, match="num_local_frames"):
        jax.eval_shape(lambda k, a: m.init(k, a, 2.0), jax.random.key(0), x)
    with pytest.raises(ValueError, match="masked_frames"):
        jax.eval_shape(
            lambda k, a: m.init(k, a, 2), jax.random.key(0), jax.ShapeDtypeStruct((3, 60, 108, 3), jnp.float32)
        )


@pytest.fixture(scope="module")
def hq_random():
    _, shapes = _param_shapes("e2fgvi_hq")
    return {"params": _random_params(shapes, seed=0)}


@pytest.fixture(scope="module")
def nonhq_sd():
    _, shapes = _param_shapes("e2fgvi")
    return to_official("e2fgvi", {"params": _random_params(shapes, seed=1)})


def test_to_state_dict_is_the_official_key_set(hq_random, nonhq_sd):
    sd = to_official("e2fgvi_hq", hq_random)
    assert list(sd) == [k for k, _ in conv_e2fgvi.official_key_order(True)]
    assert len(sd) == 244 and len(nonhq_sd) == 243
    assert "sc.bias_conv.weight" in sd and "sc.bias" not in sd
    assert nonhq_sd["sc.bias"].shape == (128, 60, 108)
    assert sd["transformer.0.attn.qkv.weight"].shape == (1536, 512)
    assert sd["feat_prop_module.deform_align.backward_.conv_offset.0.weight"].shape == (128, 388, 3, 3)
    assert sd["encoder.layers.14.weight"].shape == (256, 80, 3, 3)
    assert sd["decoder.4.conv.weight"].shape == (64, 64, 3, 3)
    assert sd["transformer.7.attn.valid_ind_rolled"].dtype == np.int64
    np.testing.assert_allclose(sd["update_spynet.std"].reshape(-1), [0.229, 0.224, 0.225])


def test_detect_and_wrappers(hq_random, nonhq_sd):
    sd_hq = to_official("e2fgvi_hq", hq_random)
    assert conv_e2fgvi.detect(sd_hq) == "e2fgvi_hq"
    assert conv_e2fgvi.detect(nonhq_sd) == "e2fgvi"
    assert conv_e2fgvi.detect({"netG": nonhq_sd}) == "e2fgvi"
    assert conv_e2fgvi.detect({"x": np.zeros(3)}) is None
    # {'netG': ...} wrapper and a DDP 'module.' prefix load to the same parameters
    _, v1 = from_official("e2fgvi", {"netG": nonhq_sd})
    _, v2 = from_official("e2fgvi", {"module." + k: val for k, val in nonhq_sd.items()})
    for a, b in zip(jax.tree_util.tree_leaves(v1), jax.tree_util.tree_leaves(v2)):
        np.testing.assert_array_equal(a, b)


def test_from_official_overrides(hq_random):
    sd = to_official("e2fgvi_hq", hq_random)
    m, v = from_official("e2fgvi_hq", sd, param_dtype=jnp.bfloat16, fix_backward_flow_idx=True)
    assert m.fix_backward_flow_idx and m.param_dtype == jnp.bfloat16
    assert {a.dtype for a in jax.tree_util.tree_leaves(v)} == {jnp.dtype(jnp.bfloat16)}
    m32, v32 = from_official("e2fgvi_hq", sd)
    assert {a.dtype for a in jax.tree_util.tree_leaves(v32)} == {jnp.dtype(jnp.float32)}


def test_mismatch_errors_name_the_keys(hq_random, nonhq_sd):
    sd_hq = to_official("e2fgvi_hq", hq_random)
    with pytest.raises(CheckpointMismatchError) as e:
        from_official("e2fgvi", sd_hq)
    msg = str(e.value)
    assert "sc.bias" in msg and "sc.bias_conv.weight" in msg and "'e2fgvi_hq'" in msg
    with pytest.raises(CheckpointMismatchError, match="sc.bias_conv.weight"):
        from_official("e2fgvi_hq", nonhq_sd)
    truncated = dict(nonhq_sd)
    del truncated["transformer.3.attn.qkv.weight"], truncated["update_spynet.basic_module.5.basic_module.4.conv.bias"]
    with pytest.raises(CheckpointMismatchError) as e:
        from_official("e2fgvi", truncated)
    assert "transformer.3.attn.qkv.weight" in str(e.value) and "basic_module.5.basic_module.4.conv.bias" in str(e.value)
    bad_shape = dict(nonhq_sd, **{"encoder.layers.0.weight": np.zeros((32, 3, 3, 3), np.float32)})
    with pytest.raises(CheckpointMismatchError, match="encoder.layers.0.weight"):
        from_official("e2fgvi", bad_shape)
    bad_buf = dict(nonhq_sd, **{"transformer.2.attn.valid_ind_rolled": np.arange(120, dtype=np.int64)})
    with pytest.raises(CheckpointMismatchError, match="valid_ind_rolled"):
        from_official("e2fgvi", bad_buf)
    with pytest.raises(CheckpointMismatchError, match="conv.0.weight_orig"):
        from_official("e2fgvi_discriminator", nonhq_sd)


_HQ_FWD = jax.jit(lambda m, v, x: m.apply(v, x, 2), static_argnums=0)


def test_hq_forward_roundtrip_shapes(hq_random, tmp_path):
    """One full HQ forward (60x108, 2 local + 1 reference): shapes, range, and the
    to_official -> torch.save -> from_official round trip gives identical params and outputs."""
    sd = to_official("e2fgvi_hq", hq_random)
    try:
        import torch

        path = tmp_path / "E2FGVI-HQ-random.pth"
        torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, path)
        src = path
    except ImportError:
        src = sd
    module, variables = from_official("e2fgvi_hq", src)
    assert module.hq and not module.fix_backward_flow_idx
    want, got = flatten_dict(hq_random["params"]), flatten_dict(variables["params"])
    assert set(want) == set(got)
    for path, a in want.items():
        np.testing.assert_array_equal(np.asarray(a), np.asarray(got[path]), err_msg=str(path))
    x = _masked_clip(1, 3, 60, 108)
    frames, (ff, fb) = _HQ_FWD(module, variables, x)
    frames2, (ff2, fb2) = _HQ_FWD(module, hq_random, x)
    assert frames.shape == (1, 3, 60, 108, 3)
    assert ff.shape == fb.shape == (1, 1, 15, 27, 2)
    f = np.asarray(frames)
    assert np.isfinite(f).all() and f.min() >= -1 and f.max() <= 1 and f.std() > 1e-3
    assert np.abs(np.asarray(ff)).max() > 1e-4
    np.testing.assert_array_equal(f, np.asarray(frames2))
    np.testing.assert_array_equal(np.asarray(ff), np.asarray(ff2))


@pytest.mark.slow
def test_flow_index_flag_changes_the_generator_output(hq_random):
    x = _masked_clip(1, 4, 60, 108)
    f = jax.jit(lambda m, v, a: m.apply(v, a, 4)[0], static_argnums=0)
    a = np.asarray(f(build("e2fgvi_hq"), hq_random, x))
    b = np.asarray(f(build("e2fgvi_hq", fix_backward_flow_idx=True), hq_random, x))
    assert np.abs(a - b).max() > 1e-4


@pytest.mark.slow
def test_hq_bfloat16_forward_close_to_float32(hq_random):
    x = _masked_clip(1, 3, 60, 108)
    m16 = build("e2fgvi_hq", dtype=jnp.bfloat16)
    f16, (ff16, _) = jax.jit(lambda v, a: m16.apply(v, a, 2))(hq_random, x)
    f32, (ff32, _) = _HQ_FWD(build("e2fgvi_hq"), hq_random, x)
    assert f16.dtype == jnp.float32 and ff16.shape == ff32.shape
    d = np.abs(np.asarray(f16) - np.asarray(f32))
    assert d.mean() < 2e-2 and d.max() < 0.15  # bf16 through 8 blocks: ~1.5% mean, measured 7e-3 / 6e-2


# ------------------------------------------------------------------------------- discriminator


def _torch_discriminator(torch, nf=32, in_ch=3):
    """T-PatchGAN from the published description, with torch's own spectral norm."""
    nn = torch.nn
    chans = [in_ch, nf, 2 * nf, 4 * nf, 4 * nf, 4 * nf, 4 * nf]
    layers = []
    for i in range(6):
        conv = nn.Conv3d(chans[i], chans[i + 1], (3, 5, 5), (1, 2, 2), padding=1 if i == 0 else (1, 2, 2), bias=i == 5)
        layers.append(nn.utils.spectral_norm(conv) if i < 5 else conv)
        if i < 5:
            layers.append(nn.LeakyReLU(0.2))

    class D(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Sequential(*layers)

        def forward(self, xs):  # (B, T, C, H, W)
            return self.conv(xs.transpose(1, 2)).transpose(1, 2)

    return D()


def test_discriminator_matches_torch_spectral_norm():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    d = _torch_discriminator(torch, nf=8)
    sd = {k: v.detach().numpy().copy() for k, v in d.state_dict().items()}
    assert {"conv.0.weight_orig", "conv.0.weight_u", "conv.0.weight_v", "conv.10.bias"} <= set(sd)
    module, variables = from_official("e2fgvi_discriminator", dict(sd))
    assert module.use_spectral_norm and module.nf == 8
    rng = np.random.default_rng(0)
    clips = [rng.uniform(-1, 1, (2, 3, 96, 128, 3)).astype(np.float32) for _ in range(3)]
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 2)))  # noqa: E731
    from_t = lambda t: np.moveaxis(t.detach().numpy(), 2, -1)  # noqa: E731

    d.eval()
    with torch.no_grad():
        ref = from_t(d(to_t(clips[0])))
    apply_eval = jax.jit(module.apply)
    apply_train = jax.jit(lambda v, a: module.apply(v, a, update_stats=True, mutable=["spectral"]))
    out = apply_eval(variables, jnp.asarray(clips[0]))
    assert out.shape == ref.shape == (2, 3, 2, 2, 32)
    assert_parity(out, ref, 1e-5, "D eval")

    # training mode: one power iteration per call, u and v updated like torch
    d.train()
    for i in (1, 2):
        with torch.no_grad():
            ref = from_t(d(to_t(clips[i])))
        out, upd = apply_train(variables, jnp.asarray(clips[i]))
        variables = {**variables, **upd}
        assert_parity(out, ref, 1e-5, f"D train call {i}")
        for n in (0, 4, 8):
            np.testing.assert_allclose(
                np.asarray(variables["spectral"][f"conv_{n}"]["u"]),
                d.state_dict()[f"conv.{n}.weight_u"].numpy(),
                atol=1e-6,
            )
            np.testing.assert_allclose(
                np.asarray(variables["spectral"][f"conv_{n}"]["v"]),
                d.state_dict()[f"conv.{n}.weight_v"].numpy(),
                atol=1e-6,
            )
    # gradients flow through sigma as in torch (u, v constant)
    x = clips[0]
    xt = to_t(x)
    d.eval()
    loss_t = d(xt).square().mean()
    loss_t.backward()
    g_ref = d.conv[0].weight_orig.grad.numpy()
    g = jax.jit(jax.grad(lambda p: jnp.square(module.apply({**variables, "params": p}, jnp.asarray(x))).mean()))(
        variables["params"]
    )
    g_ours = np.asarray(g["conv_0"]["kernel"]).transpose(4, 3, 0, 1, 2)
    assert_parity(g_ours, g_ref, 1e-5, "D grad")
    # round trip to the official layout
    back = to_official("e2fgvi_discriminator", variables)
    now = {k: v.detach().numpy() for k, v in d.state_dict().items()}
    assert set(back) == set(now)
    for k in now:
        np.testing.assert_allclose(back[k], now[k], atol=1e-6, err_msg=k)


def test_discriminator_init_and_update():
    m = build("e2fgvi_discriminator")
    x = jnp.zeros((1, 2, 64, 64, 3))
    v = jax.jit(m.init)(jax.random.key(0), x)
    assert set(v) == {"params", "spectral"}
    assert v["spectral"]["conv_0"]["v"].shape == (3 * 3 * 5 * 5,)
    assert "bias" not in v["params"]["conv_0"] and "bias" in v["params"]["conv_10"]
    np.testing.assert_allclose(np.linalg.norm(v["spectral"]["conv_2"]["u"]), 1.0, rtol=1e-5)
    y, upd = jax.jit(lambda a, b: m.apply(a, b, update_stats=True, mutable=["spectral"]))(v, x + 0.5)
    assert y.shape == (1, 2, 1, 1, 128)
    assert np.abs(np.asarray(upd["spectral"]["conv_0"]["u"]) - np.asarray(v["spectral"]["conv_0"]["u"])).max() > 0
    y_eval = jax.jit(m.apply)(v, x + 0.5)  # eval: stored u, v untouched
    assert np.isfinite(np.asarray(y_eval)).all()


# ---------------------------------------------------------------------- official dumps (local only)


def _dump_parity(name, case, lt):
    npz, pth = ref_dump(name)
    module, variables = from_official(name, pth)
    x = np.moveaxis(npz[f"{case}/in/masked_frames"], 2, -1)
    frames, (ff, fb) = jax.jit(lambda v, a: module.apply(v, a, lt))(variables, x)
    b, t = frames.shape[:2]
    pred = np.moveaxis(np.asarray(frames), -1, 2).reshape((b * t, 3) + frames.shape[2:4])
    assert_parity(pred, npz[f"{case}/out/pred_img"], 2e-4, f"{name} {case} pred_img")
    assert_parity(np.moveaxis(np.asarray(ff), -1, 2), npz[f"{case}/out/pred_flows_0"], 2e-4, "flows_forward")
    assert_parity(np.moveaxis(np.asarray(fb), -1, 2), npz[f"{case}/out/pred_flows_1"], 2e-4, "flows_backward")


def test_official_dump_hq_120x216():
    _dump_parity("e2fgvi_hq", "c1_120x216_3L1R", 3)


@pytest.mark.slow
def test_official_dump_e2fgvi_240x432():
    _dump_parity("e2fgvi", "c0_240x432_5L2R", 5)


@pytest.mark.slow
def test_official_dump_hq_240x432():
    _dump_parity("e2fgvi_hq", "c0_240x432_5L2R", 5)


def test_official_checkpoint_key_order_matches_dump():
    for name in ("e2fgvi", "e2fgvi_hq"):
        npz, _ = ref_dump(name)
        import json

        meta = json.loads(str(npz["meta_json"]))
        assert list(meta["checkpoint_index"]) == [k for k, _ in conv_e2fgvi.official_key_order(name == "e2fgvi_hq")]
