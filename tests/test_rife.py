"""RIFE models and converters: parameter counts, official-format round trips, detection and errors,
TTA / timestep properties, the training path, and (locally) parity with the official dumps."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ref_dump

from peanut_jax.convert import CheckpointMismatchError, from_official
from peanut_jax.convert import rife as conv_rife
from peanut_jax.models import build
from peanut_jax.models.rife import (
    HDv3Output,
    IFNet,
    IFNetHDv3,
    RIFEOutput,
    init_params,
    param_count,
    required_multiple,
    rotate180,
)
from peanut_jax.testing import assert_parity

# small widths: same graph, fast to run (the converter reads widths from the file)
TINY = IFNet(widths=(16, 12, 8, 8), context_c=4)
TINY_M = IFNet(timestep_input=True, widths=(16, 12, 8, 8), context_c=4)
TINY_HD = IFNetHDv3(c=8)
SHAPE = (2, 32, 64, 3)


@functools.partial(jax.jit, static_argnums=0, static_argnames=("tta", "return_all"))
def run(module, variables, a, b, t=0.5, tta=False, return_all=False):
    return module.apply(variables, a, b, timestep=t, tta=tta, return_all=return_all)


def pair(seed=0, shape=SHAPE):
    """Two smooth frames with a small horizontal motion."""
    rng = np.random.default_rng(seed)
    n, h, w, _ = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ph = rng.uniform(0, 6, (n, 1, 1, 3)).astype(np.float32)
    x, y = xx[None, ..., None], yy[None, ..., None]

    def f(s):
        return 0.5 + 0.4 * np.sin((x - s) / 5.0 + ph) * np.cos(y / 7.0 - ph)

    return jnp.asarray(f(0.0)), jnp.asarray(f(3.0))


def save_official(sd, path):
    """Write an official-format flownet.pkl (torch.save when torch is installed)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - CI installs torch with the test extra
        from peanut_jax.convert.reader import save_safetensors

        path = path.with_suffix(".safetensors")
        save_safetensors(path, sd)
        return path
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in sd.items()}, path)
    return path


# ------------------------------------------------------------------------------------- sizes


def test_param_counts():
    def count(m):
        x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
        return jax.eval_shape(m.init, jax.random.key(0), x, x)["params"]

    p = count(IFNet())
    assert param_count(p) == 10_708_215
    assert param_count(p["block_tea"]) == 636_665
    assert param_count(p["contextnet"]) + param_count(p["unet"]) == 3_251_875
    assert param_count(count(IFNet(timestep_input=True))) == 10_710_780
    h = count(IFNetHDv3())
    assert param_count(h) == 3_038_015 and param_count(h["block_tea"]) == 760_415
    assert build("rife") == IFNet() and build("rife_hdv3") == IFNetHDv3()
    assert required_multiple((4, 2, 1)) == 32 and required_multiple((8, 4, 2)) == 64


def test_init_params_matches_init_structure():
    v = init_params(TINY, 0)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    ref = jax.eval_shape(TINY.init, jax.random.key(0), x, x)
    assert jax.tree_util.tree_structure(v) == jax.tree_util.tree_structure(ref)
    assert all(a.shape == b.shape for a, b in zip(jax.tree_util.tree_leaves(v), jax.tree_util.tree_leaves(ref)))
    assert np.all(np.asarray(v["params"]["unet"]["up0"]["prelu"]["weight"]) == 0.25)


# ------------------------------------------------------------------------------- converters


@pytest.mark.parametrize("name,module,n_keys", [("rife", IFNet(), 190), ("rife_hdv3", IFNetHDv3(), 160)])
def test_roundtrip_official_widths(tmp_path, name, module, n_keys):
    v = init_params(module, 1)
    sd = conv_rife.to_state_dict(v, name)
    assert len(sd) == n_keys and all(k.startswith("module.") for k in sd)
    assert any(k.startswith("module.block_tea.") for k in sd)
    path = save_official(sd, tmp_path / "flownet.pkl")
    m2, v2 = from_official(name, path)
    assert m2 == module
    for a, b in zip(jax.tree_util.tree_leaves(v), jax.tree_util.tree_leaves(v2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert conv_rife.detect(sd) == name


@pytest.mark.parametrize("name,module", [("rife", TINY), ("rife", TINY_M), ("rife_hdv3", TINY_HD)])
def test_roundtrip_same_outputs(tmp_path, name, module):
    v = init_params(module, 2)
    path = save_official(conv_rife.to_state_dict(v, name), tmp_path / "flownet.pkl")
    m2, v2 = from_official(name, path)
    assert m2 == module  # widths and timestep input detected from the file
    a, b = pair(0)
    np.testing.assert_array_equal(np.asarray(run(module, v, a, b, 0.3)), np.asarray(run(m2, v2, a, b, 0.3)))
    # the official key layout (torch OIHW / ConvT IOHW) and prefixes
    sd = conv_rife.to_state_dict(v2, name)
    k = "module.block0.conv0.0.0.weight"
    assert sd[k].shape[2:] == (3, 3) and sd[k].shape[1] == (7 if module is TINY_M else 6 if name == "rife" else 11)


def test_bare_and_foreign_keys():
    v = init_params(TINY_HD, 3)
    bare = conv_rife.to_state_dict(v, "rife_hdv3", prefix="")
    with pytest.warns(UserWarning, match="no key has the 'module.' prefix"):
        m, v2 = from_official("rife_hdv3", bare)
    np.testing.assert_array_equal(
        np.asarray(v2["params"]["block2"]["conv1_2"]["kernel"]), np.asarray(v["params"]["block2"]["conv1_2"]["kernel"])
    )
    mixed = conv_rife.to_state_dict(v, "rife_hdv3")
    mixed["step"] = np.zeros(1, np.float32)  # no 'module.': dropped like the official loader
    with pytest.warns(UserWarning, match="dropped like the official loader"):
        from_official("rife_hdv3", mixed)


def test_wrong_checkpoints():
    eccv = conv_rife.to_state_dict(init_params(TINY, 0), "rife")
    hd = conv_rife.to_state_dict(init_params(TINY_HD, 0), "rife_hdv3")
    with pytest.raises(CheckpointMismatchError, match="load it as 'rife_hdv3'"):
        from_official("rife", hd)
    with pytest.raises(CheckpointMismatchError, match="load it as 'rife'"):
        from_official("rife_hdv3", eccv)
    missing = dict(eccv)
    del missing["module.unet.up2.1.weight"]
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(1\): unet.up2.1.weight"):
        from_official("rife", missing)
    extra = dict(eccv, **{"module.unet.extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointMismatchError, match="unexpected keys.*unet.extra.weight"):
        from_official("rife", extra)
    bad = dict(eccv)
    bad["module.unet.conv.weight"] = np.zeros((3, 5, 3, 3), np.float32)
    with pytest.raises(CheckpointMismatchError, match="shape mismatches.*unet.conv.weight"):
        from_official("rife", bad)
    v4 = {"module.encode.0.weight": np.zeros((16, 3, 3, 3), np.float32), **eccv}
    with pytest.raises(CheckpointMismatchError, match="Practical-RIFE v4"):
        from_official("rife", v4)
    with pytest.raises(CheckpointMismatchError, match="missing keys"):
        from_official("rife", {"module.something.weight": np.zeros(3, np.float32)})
    assert conv_rife.detect({"foo": np.zeros(2)}) is None


# ---------------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("module", [TINY, TINY_HD], ids=["ifnet", "hdv3"])
def test_tta_is_rotation_symmetric(module):
    v = init_params(module, 4)
    a, b = pair(1)
    tta = np.asarray(run(module, v, a, b, tta=True))
    # TTA = mean of the prediction and the un-rotated prediction on the rotated pair
    plain = np.asarray(run(module, v, a, b))
    rot = np.asarray(rotate180(run(module, v, rotate180(a), rotate180(b))))
    np.testing.assert_allclose(tta, (plain + rot) / 2, atol=2e-6)
    # hence rotating the inputs rotates the TTA output
    tta_r = np.asarray(run(module, v, rotate180(a), rotate180(b), tta=True))
    np.testing.assert_allclose(tta_r, np.asarray(rotate180(tta)), atol=2e-6)
    assert np.abs(plain - rot).max() > 1e-4  # the network itself is not symmetric


def test_timestep_input_vs_official_ignoring_t():
    a, b = pair(2)
    v = init_params(TINY_M, 5)
    y2, y7 = np.asarray(run(TINY_M, v, a, b, 0.2)), np.asarray(run(TINY_M, v, a, b, 0.7))
    assert np.abs(y2 - y7).max() > 1e-3
    per_sample = np.asarray(run(TINY_M, v, a, b, jnp.asarray([0.2, 0.7])))
    np.testing.assert_allclose(per_sample[0], y2[0], atol=1e-6)
    np.testing.assert_allclose(per_sample[1], y7[1], atol=1e-6)
    v0 = init_params(TINY, 5)
    np.testing.assert_array_equal(np.asarray(run(TINY, v0, a, b, 0.2)), np.asarray(run(TINY, v0, a, b, 0.7)))


def test_return_all_structure():
    a, b = pair(3)
    v = init_params(TINY_HD, 6)
    out = run(TINY_HD, v, a, b, return_all=True)
    assert isinstance(out, HDv3Output) and len(out.flow_list) == 3 and len(out.merged) == 3
    assert out.flow_list[2].shape == SHAPE[:3] + (4,) and out.mask.shape == SHAPE[:3] + (1,)
    np.testing.assert_array_equal(np.asarray(out.merged[2]), np.asarray(run(TINY_HD, v, a, b)))


def test_training_path_and_gradients():
    a, b = pair(4)
    gt = (a + b) / 2
    v = init_params(TINY, 7)

    def loss(params):
        out = TINY.apply({"params": params}, a, b, gt=gt)
        return jnp.mean(jnp.abs(out.merged[2] - gt)) + jnp.mean(
            jnp.abs(out.merged_teacher - gt)
        ) + 0.01 * out.loss_distill, out

    (val, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(v["params"])
    assert isinstance(out, RIFEOutput)
    assert out.flow_teacher.shape == SHAPE[:3] + (4,) and out.merged_teacher.shape == SHAPE
    assert len(out.flow_list) == 3 and len(out.merged) == 3 and out.mask.shape == SHAPE[:3] + (1,)
    assert np.isfinite(float(val)) and float(out.loss_distill) >= 0
    assert 0.0 <= float(out.merged[2].min()) and float(out.merged[2].max()) <= 1.0  # refined output is clipped
    g = jax.tree_util.tree_leaves(grads)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in g)
    assert float(jnp.abs(grads["block_tea"]["lastconv"]["kernel"]).max()) > 0  # the teacher is trained
    assert float(jnp.abs(grads["unet"]["conv"]["kernel"]).max()) > 0


def test_input_errors():
    v = init_params(TINY_HD, 0)
    a = jnp.zeros((1, 32, 72, 3))
    with pytest.raises(ValueError, match="width 72 is not divisible"):
        TINY_HD.apply(v, a, a)
    with pytest.raises(ValueError, match="differ in shape"):
        TINY_HD.apply(v, jnp.zeros((1, 32, 64, 3)), jnp.zeros((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="no training path"):
        TINY_HD.apply(v, jnp.zeros((1, 32, 64, 3)), jnp.zeros((1, 32, 64, 3)), gt=jnp.zeros((1, 32, 64, 3)))
    with pytest.raises(ValueError, match="divisible by 16"):
        TINY.apply(init_params(TINY, 0), jnp.zeros((1, 40, 64, 3)), jnp.zeros((1, 40, 64, 3)), scale_list=(2, 1, 0.5))


# ------------------------------------------------------------------ parity (local, official dumps)


def _nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def test_dump_parity_eccv():
    jax.config.update("jax_default_matmul_precision", "highest")
    z, pth = ref_dump("rife_eccv")
    module, v = from_official("rife", pth)
    assert module == IFNet()
    c0, c1 = "c0_infer_256x448", "c1_teacher_256x448"
    a, b = _nhwc(z[f"{c0}/in/img0"]), _nhwc(z[f"{c0}/in/img1"])
    out = jax.jit(lambda v, a, b: module.apply(v, a, b, return_all=True))(v, a, b)
    for i in range(3):
        assert_parity(out.flow_list[i], _nhwc(z[f"{c0}/out/flow_list_{i}"]), what=f"flow_list[{i}]")
        assert_parity(out.merged[i], _nhwc(z[f"{c0}/out/merged_{i}"]), what=f"merged[{i}]")
    assert_parity(out.mask, _nhwc(z[f"{c0}/out/mask"]), what="mask")
    gt = _nhwc(z[f"{c1}/in/gt"])
    a, b = _nhwc(z[f"{c1}/in/img0"]), _nhwc(z[f"{c1}/in/img1"])
    out = jax.jit(lambda v, a, b, g: module.apply(v, a, b, gt=g))(v, a, b, gt)
    assert_parity(out.merged[2], _nhwc(z[f"{c1}/out/merged_2"]), what="merged[2] (teacher case)")
    assert_parity(out.flow_teacher, _nhwc(z[f"{c1}/out/flow_teacher"]), what="flow_teacher")
    assert_parity(out.merged_teacher, _nhwc(z[f"{c1}/out/merged_teacher"]), what="merged_teacher")
    assert_parity(out.loss_distill, z[f"{c1}/out/loss_distill"], what="loss_distill")


def test_dump_parity_hdv3():
    jax.config.update("jax_default_matmul_precision", "highest")
    z, pth = ref_dump("rife_hdv3")
    module, v = from_official("rife_hdv3", pth)
    c0 = "c0_infer_256x448"
    a, b = _nhwc(z[f"{c0}/in/img0"]), _nhwc(z[f"{c0}/in/img1"])
    out = jax.jit(lambda v, a, b: module.apply(v, a, b, return_all=True))(v, a, b)
    for i in range(3):
        assert_parity(out.flow_list[i], _nhwc(z[f"{c0}/out/flow_list_{i}"]), what=f"flow_list[{i}]")
        assert_parity(out.merged[i], _nhwc(z[f"{c0}/out/merged_{i}"]), what=f"merged[{i}]")
    assert_parity(out.mask, _nhwc(z[f"{c0}/out/mask"]), what="mask")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the official file has the DDP prefix on every key: no warning
        from_official("rife_hdv3", pth)
