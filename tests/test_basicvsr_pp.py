"""BasicVSR++: structure, converter round trips and errors, variants, parity.

Parity runs at two levels: in CI against a plain-torch float64 transcription of the published
algorithm (written here from the mmagic ``BasicVSRPlusPlusNet.forward`` description, tiny
configuration), and locally against the dumps of the official code ($PEANUT_REFS, skipped in CI).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ref_dump
from flax.traverse_util import flatten_dict, unflatten_dict

from peanut_jax.convert import CheckpointMismatchError, from_official, to_official
from peanut_jax.convert.basicvsr_pp import detect_config, unwrap
from peanut_jax.models import build
from peanut_jax.models.basicvsr_pp import BasicVSRPlusPlus, mirror_extended
from peanut_jax.testing import assert_parity, parity_error

TINY = dict(mid_channels=8, num_blocks=1)


def random_variables(module, seed=0, side=64):
    """Random parameters without running the (slow to compile) initialisers: N(0, 1/fan_in) kernels,
    small random biases, a non-zero offset head and a tamed SPyNet head so flows stay a few pixels."""
    x = jax.ShapeDtypeStruct((1, 2, side, side, 3), jnp.float32)
    shapes = jax.eval_shape(lambda k, a: module.init(k, a, is_mirror_extended=False), jax.random.key(0), x)
    rng = np.random.default_rng(seed)
    flat = {}
    for path, s in flatten_dict(shapes["params"]).items():
        if path[-1] == "kernel":
            fan_in = int(np.prod(s.shape[:-1]))
            v = rng.standard_normal(s.shape) / math.sqrt(fan_in)
            if path[-2] == "conv_4":  # SPyNet flow heads
                v *= 0.1
        else:
            v = 0.05 * rng.standard_normal(s.shape)
        flat[path] = np.asarray(v, np.float32)
    return {"params": unflatten_dict(flat)}


def clip(t=3, h=64, w=64, seed=1, b=1):
    """A smooth moving texture (SPyNet sees real motion) plus a little noise, in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for i in range(t):
        x = xx - 1.3 * i
        y = yy + 0.7 * i
        f = np.stack([np.sin(x / 5.0) * np.cos(y / 7.0), np.sin((x + y) / 9.0), np.cos(x / 11.0 - y / 6.0)], -1)
        frames.append(0.5 + 0.4 * f)
    v = np.stack(frames)[None].repeat(b, 0)
    v = v + 0.02 * rng.standard_normal(v.shape)
    return np.clip(v, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def tiny():
    m = BasicVSRPlusPlus(**TINY)
    return m, random_variables(m)


@pytest.fixture(scope="module")
def tiny_fwd(tiny):
    m, v = tiny
    return jax.jit(
        lambda variables, x, mirror=False: m.apply(variables, x, is_mirror_extended=mirror), static_argnums=2
    )


# ---------------------------------------------------------------------------------- structure
def _count(module, side=64):
    x = jax.ShapeDtypeStruct((1, 2, side, side, 3), jnp.float32)
    p = jax.eval_shape(lambda k, a: module.init(k, a, is_mirror_extended=False), jax.random.key(0), x)
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(p))


def test_param_counts_match_official():
    assert _count(build("basicvsr_pp")) == 7_322_927  # c64n7 incl. SPyNet (1,440,300)
    assert _count(BasicVSRPlusPlus(mid_channels=128, num_blocks=25)) == 43_780_463  # NTIRE c128n25


def test_official_key_set_c64n7():
    m = build("basicvsr_pp")
    x = jax.ShapeDtypeStruct((1, 2, 64, 64, 3), jnp.float32)
    params = jax.eval_shape(lambda k, a: m.init(k, a, is_mirror_extended=False), jax.random.key(0), x)["params"]
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), params)
    sd = to_official("basicvsr_pp", {"params": zeros})
    assert len(sd) == 275  # 274 generator tensors (incl. spynet.mean/std) + step_counter
    assert sd["generator.deform_align.backward_1.conv_offset.0.weight"].shape == (64, 196, 3, 3)
    assert sd["generator.deform_align.backward_1.conv_offset.6.weight"].shape == (432, 64, 3, 3)
    assert sd["generator.deform_align.forward_2.weight"].shape == (64, 128, 3, 3)
    assert sd["generator.backbone.forward_2.main.0.weight"].shape == (64, 320, 3, 3)
    assert sd["generator.backbone.backward_1.main.2.6.conv2.weight"].shape == (64, 64, 3, 3)
    assert sd["generator.upsample2.upsample_conv.weight"].shape == (256, 64, 3, 3)
    assert sd["generator.conv_last.weight"].shape == (3, 64, 3, 3)
    assert sd["generator.spynet.basic_module.0.basic_module.0.conv.weight"].shape == (32, 8, 7, 7)


# ---------------------------------------------------------------------------------- torch reference
def _torch_reference(torch, sd, lqs, mid, num_blocks, scale=4):
    """Plain-torch float64 BasicVSR++ forward from a bare generator state dict (NCHW, [N,T,3,h,w])."""
    F = torch.nn.functional
    sd = {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in sd.items()}

    def conv(x, key, stride=1, pad=1):
        return F.conv2d(x, sd[key + ".weight"], sd[key + ".bias"], stride=stride, padding=pad)

    def res_stack(x, prefix, nb):
        x = F.leaky_relu(conv(x, prefix + ".main.0"), 0.1)
        for i in range(nb):
            x = x + conv(F.relu(conv(x, f"{prefix}.main.2.{i}.conv1")), f"{prefix}.main.2.{i}.conv2")
        return x

    def sample(x, px, py, padding):  # pixel coordinates (N, H, W)
        h, w = x.shape[2:]
        grid = torch.stack((2 * px / max(w - 1, 1) - 1, 2 * py / max(h - 1, 1) - 1), -1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=True)

    def warp(x, flow, padding="zeros"):  # flow (N, 2, H, W), channel 0 = x
        n, _, h, w = x.shape
        gy, gx = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
        return sample(x, gx + flow[:, 0], gy + flow[:, 1], padding)

    def spynet(ref, supp):
        mean = torch.tensor([0.485, 0.456, 0.406], dtype=ref.dtype).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], dtype=ref.dtype).view(1, 3, 1, 1)
        h, w = ref.shape[2:]
        hu, wu = math.ceil(h / 32) * 32, math.ceil(w / 32) * 32
        r = F.interpolate(ref, size=(hu, wu), mode="bilinear", align_corners=False)
        s = F.interpolate(supp, size=(hu, wu), mode="bilinear", align_corners=False)
        refs, supps = [(r - mean) / std], [(s - mean) / std]
        for _ in range(5):
            refs.append(F.avg_pool2d(refs[-1], 2, 2))
            supps.append(F.avg_pool2d(supps[-1], 2, 2))
        refs, supps = refs[::-1], supps[::-1]
        flow = torch.zeros(ref.shape[0], 2, hu // 32, wu // 32, dtype=ref.dtype)
        for lvl in range(6):
            up = flow if lvl == 0 else F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2
            x = torch.cat([refs[lvl], warp(supps[lvl], up, "border"), up], 1)
            for j in range(5):
                x = conv(x, f"spynet.basic_module.{lvl}.basic_module.{j}.conv", pad=3)
                x = F.relu(x) if j < 4 else x
            flow = up + x
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        return torch.stack([flow[:, 0] * (w / wu), flow[:, 1] * (h / hu)], 1)

    def dcn(x, offset, mask, weight, bias, groups=16):  # mmcv modulated deform conv, 3x3, pad 1
        n, cin, h, w = x.shape
        cg = cin // groups
        gy, gx = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
        cols = []
        for g in range(groups):
            xg = x[:, g * cg : (g + 1) * cg]
            taps = []
            for k in range(9):
                i, j = divmod(k, 3)
                dy = offset[:, g * 18 + 2 * k]
                dx = offset[:, g * 18 + 2 * k + 1]
                v = sample(xg, gx + (j - 1) + dx, gy + (i - 1) + dy, "zeros")
                taps.append(v * mask[:, g * 9 + k].unsqueeze(1))
            cols.append(torch.stack(taps, 2))  # (N, Cg, 9, H, W)
        cols = torch.cat(cols, 1)  # (N, Cin, 9, H, W)
        return torch.einsum("nckhw,ock->nohw", cols, weight.reshape(weight.shape[0], cin, 9)) + bias.view(1, -1, 1, 1)

    def align(name, x, extra, f1, f2):
        p = f"deform_align.{name}"
        out = torch.cat([extra, f1, f2], 1)
        for j in (0, 2, 4):
            out = F.leaky_relu(conv(out, f"{p}.conv_offset.{j}"), 0.1)
        out = conv(out, f"{p}.conv_offset.6")
        o1, o2, m = torch.chunk(out, 3, 1)
        off = 10 * torch.tanh(torch.cat([o1, o2], 1))
        off1, off2 = torch.chunk(off, 2, 1)
        off1 = off1 + f1.flip(1).repeat(1, off1.shape[1] // 2, 1, 1)
        off2 = off2 + f2.flip(1).repeat(1, off2.shape[1] // 2, 1, 1)
        return dcn(x, torch.cat([off1, off2], 1), torch.sigmoid(m), sd[p + ".weight"], sd[p + ".bias"])

    lqs = torch.from_numpy(np.asarray(lqs, np.float64))
    n, t, c, h, w = lqs.shape
    spatial = res_stack(lqs.reshape(-1, c, h, w), "feat_extract", 5).view(n, t, -1, h, w)
    feats = {"spatial": [spatial[:, i] for i in range(t)]}
    l1, l2 = lqs[:, :-1].reshape(-1, c, h, w), lqs[:, 1:].reshape(-1, c, h, w)
    flows_b = spynet(l1, l2).view(n, t - 1, 2, h, w)
    flows_f = spynet(l2, l1).view(n, t - 1, 2, h, w)
    for name in ("backward_1", "forward_1", "backward_2", "forward_2"):
        flows = flows_b if name.startswith("backward") else flows_f
        frame_idx = list(range(t))
        flow_idx = list(range(-1, t - 1))
        if name.startswith("backward"):
            frame_idx = frame_idx[::-1]
            flow_idx = frame_idx
        feats[name] = []
        prop = torch.zeros(n, mid, h, w, dtype=lqs.dtype)
        for i, idx in enumerate(frame_idx):
            cur = feats["spatial"][idx]
            if i > 0:
                f1 = flows[:, flow_idx[i]]
                c1 = warp(prop, f1)
                n2, f2, c2 = torch.zeros_like(prop), torch.zeros_like(f1), torch.zeros_like(c1)
                if i > 1:
                    n2 = feats[name][-2]
                    f2 = f1 + warp(flows[:, flow_idx[i - 1]], f1)
                    c2 = warp(n2, f2)
                prop = align(name, torch.cat([prop, n2], 1), torch.cat([c1, cur, c2], 1), f1, f2)
            x = torch.cat([cur] + [feats[k][idx] for k in feats if k not in ("spatial", name)] + [prop], 1)
            prop = prop + res_stack(x, f"backbone.{name}", num_blocks)
            feats[name].append(prop)
        if name.startswith("backward"):
            feats[name] = feats[name][::-1]
    outs = []
    for i in range(t):
        hr = torch.cat([feats[k][i] for k in ("spatial", "backward_1", "forward_1", "backward_2", "forward_2")], 1)
        hr = res_stack(hr, "reconstruction", 5)
        hr = F.leaky_relu(F.pixel_shuffle(conv(hr, "upsample1.upsample_conv"), 2), 0.1)
        if scale == 4:
            hr = F.leaky_relu(F.pixel_shuffle(conv(hr, "upsample2.upsample_conv"), 2), 0.1)
        hr = F.leaky_relu(conv(hr, "conv_hr"), 0.1)
        hr = conv(hr, "conv_last") + F.interpolate(lqs[:, i], scale_factor=scale, mode="bilinear", align_corners=False)
        outs.append(hr)
    return torch.stack(outs, 1).numpy()


@pytest.mark.torch
def test_parity_with_torch_reference(tiny, tiny_fwd):
    torch = pytest.importorskip("torch")
    m, v = tiny
    x = clip(3, 64, 64)
    sd = to_official("basicvsr_pp", v, prefix="", step_counter=False)
    ref = _torch_reference(torch, sd, x.transpose(0, 1, 4, 2, 3), TINY["mid_channels"], TINY["num_blocks"])
    out = np.asarray(tiny_fwd(v, x))
    assert np.abs(out - x.repeat(4, 2).repeat(4, 3)).max() > 0.05  # the network contributes
    assert_parity(out, ref.transpose(0, 1, 3, 4, 2), 1e-4, "tiny BasicVSR++ vs torch float64")


# ---------------------------------------------------------------------------------- variants
def test_scan_equals_unrolled_loop(tiny, tiny_fwd):
    m, v = tiny
    x = clip(3, 64, 64)
    loop = m.clone(use_scan=False)
    out_loop = jax.jit(lambda variables, a: loop.apply(variables, a, is_mirror_extended=False))(v, x)
    np.testing.assert_allclose(np.asarray(tiny_fwd(v, x)), np.asarray(out_loop), atol=2e-5)


def test_mirror_extended_path_equals_explicit_path(tiny, tiny_fwd):
    m, v = tiny
    half = clip(2, 64, 64, seed=3)
    x = np.concatenate([half, half[:, ::-1]], 1)  # f0 f1 f1 f0
    assert mirror_extended(x) and not mirror_extended(clip(4, 64, 64))
    fast = np.asarray(tiny_fwd(v, x, True))
    full = np.asarray(tiny_fwd(v, x, False))
    np.testing.assert_allclose(fast, full, atol=2e-5)


def test_mirror_detection_runs_spynet_once(tiny):
    """Outside jit the frames are compared (official check_if_mirror_extended) and SPyNet runs on
    the T-1 backward pairs only; under jit, or for other clips, both directions are computed.
    Expensive sub-modules are stubbed out with an interceptor so that the eager call is cheap."""
    import flax.linen as nn

    from peanut_jax.models.basicvsr_pp import _PropagationCell, _ReconstructionCell
    from peanut_jax.models.spynet import SPyNet

    m, v = tiny
    spynet_batches = []

    def stub(next_fun, args, kwargs, context):
        mod = context.module
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        if isinstance(mod, SPyNet):
            spynet_batches.append(args[0].shape[0])
            return jnp.zeros(args[0].shape[:3] + (2,), jnp.float32)
        if isinstance(mod, _PropagationCell):
            (prev, _, flow, i), (cur, _, flow_n1) = args
            return (prev + cur, prev, flow_n1, i + 1), prev + cur
        if isinstance(mod, _ReconstructionCell):
            carry, (feat, lq) = args
            return carry, jnp.zeros((lq.shape[0], 4 * lq.shape[1], 4 * lq.shape[2], 3), jnp.float32)
        return next_fun(*args, **kwargs)

    half = clip(2, 64, 64, seed=3)
    cases = [
        (np.concatenate([half, half[:, ::-1]], 1), None, [3]),  # concrete mirror clip: once
        (clip(4, 64, 64), None, [6]),  # ordinary clip: both directions
        (np.concatenate([half, half[:, ::-1]], 1), False, [6]),
    ]  # explicit flag wins
    with nn.intercept_methods(stub):
        for x, flag, expected in cases:
            spynet_batches.clear()
            m.apply(v, x, is_mirror_extended=flag)
            assert spynet_batches == expected
        spynet_batches.clear()
        jax.jit(lambda a: m.apply(v, a))(cases[0][0])  # traced frames cannot be compared
        assert spynet_batches == [6]


def test_batch_and_single_frame(tiny, tiny_fwd):
    m, v = tiny
    x = clip(3, 64, 64, b=2)
    x[1] = x[1, :, ::-1]  # a different second clip
    both = np.asarray(tiny_fwd(v, x))
    one = np.asarray(tiny_fwd(v, x[1:]))
    np.testing.assert_allclose(both[1:], one, atol=2e-5)
    single = np.asarray(tiny_fwd(v, x[:1, :1]))  # T = 1: no alignment, no flows
    assert single.shape == (1, 1, 256, 256, 3) and np.all(np.isfinite(single))


def test_x2_variant_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    m = BasicVSRPlusPlus(**TINY, scale=2, hr_channels=16)
    v = random_variables(m, seed=4)
    x = clip(2, 64, 80)
    fwd = jax.jit(lambda module, variables, a: module.apply(variables, a, is_mirror_extended=False), static_argnums=0)
    out = fwd(m, v, x)
    assert out.shape == (1, 2, 128, 160, 3)
    sd = to_official("basicvsr_pp", v)
    assert not any("upsample2" in k for k in sd)
    torch.save({k: torch.from_numpy(a) for k, a in sd.items()}, tmp_path / "x2.pth")
    m2, v2 = from_official("basicvsr_pp", tmp_path / "x2.pth")
    assert (m2.scale, m2.mid_channels, m2.num_blocks, m2.hr_channels) == (2, 8, 1, 16)
    np.testing.assert_array_equal(np.asarray(fwd(m2, v2, x)), np.asarray(out))


def test_same_size_restoration_variant():
    m = BasicVSRPlusPlus(**TINY, is_low_res_input=False)
    v = random_variables(m, seed=5, side=256)
    x = clip(2, 256, 256)
    out = jax.jit(lambda variables, a: m.apply(variables, a, is_mirror_extended=False))(v, x)
    assert out.shape == x.shape and np.all(np.isfinite(np.asarray(out)))
    sd = to_official("basicvsr_pp", v, prefix="", step_counter=False)
    assert sd["feat_extract.0.weight"].shape == (8, 3, 3, 3) and "feat_extract.4.main.2.4.conv2.bias" in sd
    assert detect_config(sd) == dict(mid_channels=8, num_blocks=1, is_low_res_input=False, scale=4, hr_channels=64)
    with pytest.raises(ValueError, match="multiples of 4"):
        m.apply(v, clip(2, 258, 256))


@pytest.mark.slow  # compiling the backward pass of the whole network takes minutes on 2 CPU cores
def test_gradients_finite_through_scan(tiny):
    m, v = tiny
    from peanut_jax.losses.reconstruction import charbonnier_loss

    x = clip(3, 64, 64)
    gt = np.clip(x.repeat(4, 2).repeat(4, 3) + 0.05, 0, 1)

    def loss(p):
        return charbonnier_loss(m.apply({"params": p}, x, is_mirror_extended=False), gt)

    g = jax.jit(jax.grad(loss))(v["params"])
    leaves = jax.tree.leaves(g)
    assert all(np.all(np.isfinite(np.asarray(a))) for a in leaves)
    # every branch and the flow network receive gradient
    for path in (
        ("backward_1", "deform_align", "kernel"),
        ("forward_2", "backbone", "conv_in", "kernel"),
        ("spynet", "basic_module_5", "conv_0", "kernel"),
        ("recon", "conv_last", "kernel"),
    ):
        assert float(np.abs(np.asarray(flatten_dict(g)[path])).max()) > 0, path


def test_input_errors(tiny):
    m, v = tiny
    with pytest.raises(ValueError, match="at least 64x64"):
        m.apply(v, np.zeros((1, 2, 48, 64, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(B, T, h, w, 3\)"):
        m.apply(v, np.zeros((2, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="scale must be one of"):
        BasicVSRPlusPlus(**TINY, scale=3).apply(v, np.zeros((1, 2, 64, 64, 3), np.float32))


# ---------------------------------------------------------------------------------- converter
def test_converter_round_trip_formats(tmp_path, tiny, tiny_fwd):
    torch = pytest.importorskip("torch")
    m, v = tiny
    x = clip(3, 64, 64)
    ref = np.asarray(tiny_fwd(v, x))
    sd = to_official("basicvsr_pp", v)
    assert "step_counter" in sd and all(k.startswith("generator.") for k in sd if k != "step_counter")
    t = {k: torch.from_numpy(a) for k, a in sd.items()}
    bare = {k[len("generator.") :]: a for k, a in t.items() if k.startswith("generator.")}
    files = {
        "mmagic.pth": {"meta": {"mmagic_version": "1.x"}, "state_dict": t},
        "bare.pth": bare,
        "module.pth": {"module." + k: a for k, a in bare.items()},
        "params.pth": {"params": bare},
    }
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
        m2, v2 = from_official("basicvsr_pp", tmp_path / name)
        assert (m2.mid_channels, m2.num_blocks, m2.scale, m2.is_low_res_input) == (8, 1, 4, True), name
        jax.tree.map(np.testing.assert_array_equal, v2["params"], jax.tree.map(np.asarray, v["params"]))
    np.testing.assert_array_equal(np.asarray(tiny_fwd(v2, x)), ref)
    # the converter also takes an already-loaded torch object
    m3, v3 = from_official("basicvsr_pp", files["mmagic.pth"])
    jax.tree.map(np.testing.assert_array_equal, v3["params"], jax.tree.map(np.asarray, v["params"]))


def test_converter_errors(tiny):
    m, v = tiny
    sd = {k: np.asarray(a) for k, a in to_official("basicvsr_pp", v).items()}
    missing = dict(sd)
    del missing["generator.backbone.forward_1.main.2.0.conv2.weight"]
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(1\): backbone.forward_1.main.2.0.conv2.weight"):
        from_official("basicvsr_pp", {"state_dict": missing})
    bad = dict(sd)
    bad["generator.conv_hr.weight"] = np.zeros((64, 8, 3, 3), np.float32)
    with pytest.raises(CheckpointMismatchError, match="conv_hr.weight: checkpoint"):
        from_official("basicvsr_pp", bad)
    extra = dict(sd)
    extra["generator.some_new_head.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointMismatchError, match="some_new_head"):
        from_official("basicvsr_pp", extra)
    foreign = dict(sd)
    foreign["discriminator.conv.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointMismatchError, match="discriminator.conv.weight"):
        from_official("basicvsr_pp", foreign)
    spynet_only = {k[len("generator.spynet.") :]: a for k, a in sd.items() if k.startswith("generator.spynet.")}
    with pytest.raises(CheckpointMismatchError, match="not a BasicVSR\\+\\+ checkpoint"):
        from_official("basicvsr_pp", spynet_only)
    wrong_stats = dict(sd)
    wrong_stats["generator.spynet.mean"] = np.zeros((1, 3, 1, 1), np.float32)
    with pytest.raises(CheckpointMismatchError, match="spynet.mean"):
        from_official("basicvsr_pp", wrong_stats)
    with pytest.raises(CheckpointMismatchError, match="mid_channels=8"):
        from_official("basicvsr_pp", sd, mid_channels=64)
    assert unwrap({"state_dict": sd}).keys() == unwrap(sd).keys()


# ---------------------------------------------------------------------------------- official dumps
def test_dump_parity():
    npz, pth = ref_dump("basicvsrpp")
    module, variables = from_official("basicvsr_pp", pth)
    assert (module.mid_channels, module.num_blocks, module.scale) == (64, 7, 4)
    fwd = jax.jit(
        lambda v, x, mirror: module.apply(v, x, is_mirror_extended=mirror, mutable=["intermediates"]), static_argnums=2
    )
    for case in ("c0_5x64x64", "c1_mirror_4x64x64"):
        lqs = np.moveaxis(npz[f"{case}/in/lqs"], 2, -1)
        out, state = fwd(variables, lqs, mirror_extended(lqs))
        assert_parity(out, np.moveaxis(npz[f"{case}/out/out"], 2, -1), 2e-4, case)
        inter = state["intermediates"]
        assert (
            parity_error(
                np.moveaxis(np.asarray(inter["propagate_forward_2"][0]), -1, 2),
                npz[f"{case}/inter/propagate_forward_2"],
            )
            < 2e-4
        )


# ---------------------------------------------------------------------------------- degradations
def test_imresize_matches_antialiased_bicubic_inside():
    """MATLAB bicubic (a=-0.5, kernel stretched by 1/scale when shrinking) equals torch's antialiased
    bicubic away from the borders; only the border rule differs (MATLAB mirrors, torch truncates)."""
    torch = pytest.importorskip("torch")
    from peanut_jax.data.degrade import imresize

    img = np.random.default_rng(0).random((64, 96, 3))
    t = torch.from_numpy(img.transpose(2, 0, 1)[None].copy())
    for s in (0.25, 0.5, 2.0):
        ref = (
            torch.nn.functional.interpolate(t, scale_factor=s, mode="bicubic", antialias=True, align_corners=False)[0]
            .numpy()
            .transpose(1, 2, 0)
        )
        out = imresize(img, s)
        assert out.shape == ref.shape
        np.testing.assert_allclose(out[3:-3, 3:-3], ref[3:-3, 3:-3], atol=1e-12)
        assert np.abs(out - ref).max() > 1e-3  # ... and the borders do differ


def test_imresize_properties():
    from peanut_jax.data.degrade import imresize

    const = np.full((37, 50, 3), 0.3)
    out = imresize(const, 0.25)
    assert out.shape == (10, 13, 3)  # ceil(scale * size), as MATLAB
    np.testing.assert_allclose(out, 0.3, atol=1e-12)
    # cubic kernels reproduce linear functions: a ramp is sampled at the mapped coordinates
    ramp = np.tile(np.arange(64, dtype=np.float64)[None, :, None], (8, 1, 1))
    down = imresize(ramp, output_shape=(8, 16))
    u = (np.arange(1, 17) / 0.25 + 0.5 * (1 - 1 / 0.25)) - 1  # 0-based source coordinate
    np.testing.assert_allclose(down[0, 2:-2, 0], u[2:-2], atol=1e-9)
    u8 = (np.random.default_rng(1).random((20, 24, 3)) * 255).astype(np.uint8)
    out8 = imresize(u8, 0.5)
    assert out8.dtype == np.uint8 and out8.shape == (10, 12, 3)
    np.testing.assert_array_equal(out8, np.clip(np.round(imresize(u8.astype(np.float64), 0.5)), 0, 255))
    with pytest.raises(ValueError, match="exactly one of scale and output_shape"):
        imresize(const)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, C\)"):
        imresize(np.zeros((2, 8, 8, 3)), 0.5)


def test_bd_downsample():
    from peanut_jax.data.degrade import bd_downsample, degrade_clip, gaussian_kernel1d

    k = gaussian_kernel1d(13, 1.6)
    assert k.shape == (13,) and abs(k.sum() - 1) < 1e-12 and k.argmax() == 6
    np.testing.assert_allclose(np.sqrt(np.sum(k * (np.arange(13) - 6) ** 2)), 1.6, rtol=0.01)
    np.testing.assert_allclose(bd_downsample(np.full((32, 40, 3), 0.7)), 0.7, atol=1e-12)
    ramp = np.tile(np.arange(64, dtype=np.float64)[None, :, None], (16, 1, 3))
    lr = bd_downsample(ramp)  # MATLAB: samples 1:4:end (0-based 0, 4, 8, ...)
    assert lr.shape == (4, 16, 3)
    np.testing.assert_allclose(lr[0, 2:-2, 0], np.arange(64)[::4][2:-2], atol=1e-9)
    mm = bd_downsample(np.tile(np.arange(256, dtype=np.float64)[None, :, None], (8, 1, 1)), variant="mmagic")
    assert mm.shape == (2, 64, 1)  # [1:-1:4] of 256 -> 64 samples, each the blur at its 4x4 block centre
    np.testing.assert_allclose(mm[0, 2:-2, 0], (4 * np.arange(64) + 1.5)[2:-2], atol=1e-9)
    clipv = (np.random.default_rng(2).random((3, 64, 48, 3)) * 255).astype(np.uint8)
    assert degrade_clip(clipv, "BI").shape == degrade_clip(clipv, "BD").shape == (3, 16, 12, 3)
    with pytest.raises(ValueError, match="kind must be 'BI' or 'BD'"):
        degrade_clip(clipv, "BX")
    with pytest.raises(ValueError, match="variant must be"):
        bd_downsample(clipv[0], variant="opencv")
