"""SPyNet: converter round trips, format detection, errors, and parity with a torch SPyNet.

The torch reference below is written from the published algorithm (mmagic ``SPyNet.forward`` and
sniklaus ``estimate``) in plain torch ops; the official code itself is compared locally through the
dumps in $PEANUT_REFS (skipped in CI).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ref_dump

from peanut_jax.convert import CheckpointError, CheckpointMismatchError, from_official, to_official
from peanut_jax.models import build
from peanut_jax.testing import assert_parity

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _random_params(variant="mmagic", seed=0, scale_head=2.0):
    m = build("spynet" if variant == "mmagic" else "spynet_sniklaus")
    x = jnp.zeros((1, 64, 64, 3))
    params = jax.jit(m.init)(jax.random.key(seed), x, x)["params"]
    # a calibrated flow head (random init gives ~200 px flows, i.e. only clamped border samples)
    params = jax.tree_util.tree_map_with_path(
        lambda p, v: v * scale_head if "conv_4" in jax.tree_util.keystr(p) else v, params
    )
    return m, {"params": params}


def _torch_spynet(torch, sd, variant, ref, supp):
    """Plain-torch SPyNet forward (NCHW in, NCHW flow out) from a state dict."""
    F = torch.nn.functional
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)

    def basic(level, x):
        for j in range(5):
            key = (
                f"basic_module.{level}.basic_module.{j}.conv"
                if variant == "mmagic"
                else f"moduleBasic.{level}.moduleBasic.{2 * j}"
            )
            x = F.conv2d(x, torch.from_numpy(sd[key + ".weight"]), torch.from_numpy(sd[key + ".bias"]), padding=3)
            if j < 4:
                x = F.relu(x)
        return x

    def warp(x, flow):
        n, _, h, w = x.shape
        gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        gx = gx.float() + flow[:, 0]
        gy = gy.float() + flow[:, 1]
        grid = torch.stack((2 * gx / max(w - 1, 1) - 1, 2 * gy / max(h - 1, 1) - 1), 3)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)

    h, w = ref.shape[2:]
    hu, wu = math.ceil(h / 32) * 32, math.ceil(w / 32) * 32
    r = F.interpolate(ref, size=(hu, wu), mode="bilinear", align_corners=False)
    s = F.interpolate(supp, size=(hu, wu), mode="bilinear", align_corners=False)
    refs, supps = [(r - mean) / std], [(s - mean) / std]
    if variant == "mmagic":
        for _ in range(5):
            refs.append(F.avg_pool2d(refs[-1], 2, 2, count_include_pad=False))
            supps.append(F.avg_pool2d(supps[-1], 2, 2, count_include_pad=False))
        refs, supps = refs[::-1], supps[::-1]
        flow = torch.zeros(ref.shape[0], 2, hu // 32, wu // 32)
        for lvl in range(6):
            up = flow if lvl == 0 else F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2
            flow = up + basic(lvl, torch.cat([refs[lvl], warp(supps[lvl], up), up], 1))
    else:
        for _ in range(5):
            if refs[0].shape[2] > 32 or refs[0].shape[3] > 32:
                refs.insert(0, F.avg_pool2d(refs[0], 2, 2, count_include_pad=False))
                supps.insert(0, F.avg_pool2d(supps[0], 2, 2, count_include_pad=False))
        flow = torch.zeros(ref.shape[0], 2, refs[0].shape[2] // 2, refs[0].shape[3] // 2)
        for lvl in range(len(refs)):
            up = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2
            if up.shape[2] != refs[lvl].shape[2]:
                up = F.pad(up, [0, 0, 0, 1], mode="replicate")
            if up.shape[3] != refs[lvl].shape[3]:
                up = F.pad(up, [0, 1, 0, 0], mode="replicate")
            flow = basic(lvl, torch.cat([refs[lvl], warp(supps[lvl], up), up], 1)) + up
    flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
    flow[:, 0] *= float(w) / float(wu)
    flow[:, 1] *= float(h) / float(hu)
    return flow


def _pair(h, w, n=2, seed=0):
    from peanut_jax.data.synthetic import generate_clip

    frames = np.stack([generate_clip((seed, i), num_frames=2, height=h, width=w).frames for i in range(n)])
    return frames[:, 0], frames[:, 1]


@pytest.mark.parametrize("variant,hw", [("mmagic", (67, 97)), ("mmagic", (64, 128)), ("sniklaus", (67, 97))])
def test_spynet_matches_torch_reference(variant, hw):
    torch = pytest.importorskip("torch")
    module, variables = _random_params(variant)
    sd = to_official("spynet" if variant == "mmagic" else "spynet_sniklaus", variables)
    ref, supp = _pair(*hw)
    with torch.no_grad():
        expected = (
            _torch_spynet(
                torch,
                sd,
                variant,
                torch.from_numpy(ref).permute(0, 3, 1, 2),
                torch.from_numpy(supp).permute(0, 3, 1, 2),
            )
            .permute(0, 2, 3, 1)
            .numpy()
        )
    out = jax.jit(module.apply)(variables, ref, supp)
    assert out.shape == ref.shape[:3] + (2,)
    assert np.abs(expected).max() > 0.2  # a non-trivial flow is compared (1000x the tolerance)
    assert_parity(out, expected, 2e-4, f"spynet {variant} {hw}")


@pytest.mark.parametrize("variant", ["mmagic", "sniklaus"])
@pytest.mark.parametrize("legacy", [False, True])
def test_converter_round_trip_through_torch_files(tmp_path, variant, legacy):
    torch = pytest.importorskip("torch")
    name = "spynet" if variant == "mmagic" else "spynet_sniklaus"
    module, variables = _random_params(variant, seed=3)
    sd = to_official(name, variables)
    assert len(sd) == 60
    path = tmp_path / "spynet.pth"
    obj = {k: torch.from_numpy(v) for k, v in sd.items()}
    if variant == "mmagic":
        obj = {"meta": {"note": "mmcv style"}, "state_dict": obj}
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    got_module, got = from_official("spynet", path)  # autodetects the format
    assert got_module.variant == variant
    flat_a = jax.tree_util.tree_leaves_with_path(variables)
    flat_b = dict(jax.tree_util.tree_leaves_with_path(got))
    for p, v in flat_a:
        np.testing.assert_array_equal(np.asarray(v), np.asarray(flat_b[p]))


def test_mmagic_buffers_and_module_prefix_are_accepted(tmp_path):
    from peanut_jax.convert.spynet import spynet_buffers

    _, variables = _random_params("mmagic", seed=1)
    sd = {"module." + k: v for k, v in to_official("spynet", variables).items()}
    sd.update({"module." + k: v for k, v in spynet_buffers().items()})
    module, got = from_official("spynet", sd)
    assert module.variant == "mmagic"
    bad = dict(sd)
    bad["module.mean"] = np.zeros((1, 3, 1, 1), np.float32)
    with pytest.raises(CheckpointMismatchError, match="mean"):
        from_official("spynet", bad)


def test_wrong_checkpoint_reports_keys_by_name():
    _, variables = _random_params("mmagic")
    sd = to_official("spynet", variables)
    del sd["basic_module.3.basic_module.2.conv.bias"]
    sd["basic_module.0.extra.weight"] = np.zeros(3, np.float32)
    sd["basic_module.1.basic_module.0.conv.weight"] = np.zeros((32, 9, 7, 7), np.float32)
    with pytest.raises(CheckpointMismatchError) as err:
        from_official("spynet", sd)
    msg = str(err.value)
    assert "basic_module.3.basic_module.2.conv.bias" in msg
    assert "basic_module.0.extra.weight" in msg
    assert "basic_module.1.basic_module.0.conv.weight" in msg and "(32, 9, 7, 7)" in msg
    with pytest.raises(CheckpointMismatchError, match="not a SPyNet checkpoint"):
        from_official("spynet", {"encoder.layers.0.weight": np.zeros((64, 3, 3, 3), np.float32)})
    with pytest.raises(CheckpointMismatchError, match="mmagic"):
        from_official("spynet_sniklaus", sd)


def test_truncated_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    _, variables = _random_params("mmagic")
    path = tmp_path / "s.pth"
    torch.save({k: torch.from_numpy(v) for k, v in to_official("spynet", variables).items()}, path)
    data = path.read_bytes()
    (tmp_path / "t.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        from_official("spynet", tmp_path / "t.pth")


def test_bad_input_shapes():
    module, variables = _random_params("mmagic")
    with pytest.raises(ValueError, match="ref and supp"):
        module.apply(variables, jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 64, 60, 3)))


def test_bf16_compute_keeps_float32_flow():
    module, variables = _random_params("mmagic")
    ref, supp = _pair(64, 64, n=1)
    out32 = module.apply(variables, ref, supp)
    out16 = module.clone(dtype=jnp.bfloat16).apply(variables, ref, supp)
    assert out16.dtype == jnp.float32
    assert float(jnp.abs(out16 - out32).max()) < 0.1 * max(1.0, float(jnp.abs(out32).max()))


# ---- official-code dumps (local development aid; skipped without $PEANUT_REFS) -------------------


def _nhwc(a):
    return np.asarray(a).transpose(0, 2, 3, 1)


def test_parity_with_official_mmagic_dump():
    npz, pth = ref_dump("spynet_mmagic")
    module, variables = from_official("spynet", pth)
    for case in ("c0_128x224", "c1_100x180"):
        out = module.apply(variables, _nhwc(npz[f"{case}/in/ref"]), _nhwc(npz[f"{case}/in/supp"]))
        assert_parity(out, _nhwc(npz[f"{case}/out/flow"]), 2e-4, case)


def test_parity_with_official_sniklaus_dump():
    npz, pth = ref_dump("spynet_sniklaus")
    module, variables = from_official("spynet", pth)
    assert module.variant == "sniklaus"
    raw = module.clone(internal_resize=False)  # the bare Network.forward, which reads BGR
    for case in ("c0_forward_128x224", "c1_forward_100x180"):
        one = _nhwc(npz[f"{case}/in/tenOne"])[..., ::-1]
        two = _nhwc(npz[f"{case}/in/tenTwo"])[..., ::-1]
        assert_parity(raw.apply(variables, one, two), _nhwc(npz[f"{case}/out/flow"]), 2e-4, case)
    case = "c2_estimate_416x1024"
    one = npz[f"{case}/in/tenOne"].transpose(1, 2, 0)[None, ..., ::-1]
    two = npz[f"{case}/in/tenTwo"].transpose(1, 2, 0)[None, ..., ::-1]
    out = module.apply(variables, one, two)[0]
    assert_parity(out, npz[f"{case}/out/flow"].transpose(1, 2, 0), 2e-4, case)
