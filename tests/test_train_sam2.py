"""SAM 2 click/box training (``peanut_jax/train/tasks/sam2.py``, ``configs/sam2.py``): prompts, the
official multimask loss rule, a compiled step, and the workdir as the SAMWISE ``tiny`` recipe's
``model.init_sam2``."""

from __future__ import annotations

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from test_samwise import random_variables

from peanut_jax.losses.segmentation import dice_loss, sigmoid_focal_loss
from peanut_jax.train import tasks
from peanut_jax.train.checkpoint import Checkpointer
from peanut_jax.train.loop import _config_json, _write_config
from peanut_jax.train.state import TrainState

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
task = tasks.get("sam2")


def _configs(name):
    spec = importlib.util.spec_from_file_location(f"{name}_configs", ROOT / "configs" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CONFIGS = _configs("sam2")


def test_config_variants_and_the_samwise_tiny_sam2():
    from peanut_jax.models.samwise.config import get_config as samwise_config

    c = CONFIGS.get_config("tiny")
    assert c.task == "sam2" and c.data.height == c.data.width == 128
    # the same SAM 2 as inside the tiny SAMWISE (whose `sam` part it initialises)
    assert task.make_model(c).cfg == samwise_config("tiny_test").sam2
    with pytest.raises(ValueError, match="unknown variant"):
        CONFIGS.get_config("official")


def test_prompts_click_inside_and_box_around_the_mask():
    mask = np.zeros((40, 50), bool)
    mask[10:20, 5:30] = True
    rng = np.random.default_rng(0)
    for _ in range(20):
        c, lab, valid = task.prompt_for(mask, rng, box=False)
        assert lab.tolist() == [1, -1] and valid.tolist() == [True, False]
        assert mask[int(c[0, 1]), int(c[0, 0])]
        c, lab, valid = task.prompt_for(mask, rng, box=True)
        assert lab.tolist() == [2, 3] and valid.all()
        # corners within 10% of the side of the true box, ordered, inside the frame
        np.testing.assert_allclose(c[0], [5, 10], atol=0.1 * 25 + 1e-4)
        np.testing.assert_allclose(c[1], [29, 19], atol=0.1 * 25 + 1e-4)
        assert (c[0] <= c[1]).all() and c.min() >= 0 and c[:, 0].max() <= 49 and c[:, 1].max() <= 39
    with pytest.raises(ValueError, match="empty"):
        task.prompt_for(np.zeros((4, 4), bool), rng, box=False)


def test_batches_are_pure_functions_of_seed_step_row():
    c = CONFIGS.get_config("test")
    it = task.train_batches(c, 0, 0, 1)
    first = [next(it) for _ in range(2)]
    resumed = next(iter(task.train_batches(c, 1, 0, 1)))
    for k in first[1]:
        np.testing.assert_array_equal(first[1][k], resumed[k])
    b = first[0]
    assert b["frames"].shape == (2, 128, 128, 3) and b["frames"].dtype == np.uint8
    assert b["masks"].shape == (2, 128, 128) and b["point_coords"].shape == (2, 2, 2)
    assert b["point_labels"].dtype == np.int32 and b["point_mask"].dtype == bool
    for i in range(2):  # every prompt refers to a visible object: a click lands inside it
        assert b["masks"][i].any()
        if b["point_labels"][i, 0] == 1:
            x, y = b["point_coords"][i, 0].astype(int)
            assert b["masks"][i, y, x]


def test_multimask_rule_supervises_the_best_mask_and_all_ious():
    """The official rule: focal/dice of the mask with the lowest 20 focal + dice; IoU L1 over all 3."""
    rng = np.random.default_rng(1)
    gt = (rng.random((2, 16, 16)) < 0.3).astype(np.uint8)
    masks = rng.normal(0, 2, (2, 3, 16, 16)).astype(np.float32)
    masks[0, 2] = np.where(gt[0] > 0, 6.0, -6.0)  # object 0: mask 2 is (nearly) right
    masks[1, 0] = np.where(gt[1] > 0, 6.0, -6.0)  # object 1: mask 0
    ious = np.array([[0.1, 0.2, 0.9], [0.8, 0.3, 0.4]], np.float32)
    out = {"masks": jnp.asarray(masks), "ious": jnp.asarray(ious), "object_score_logits": jnp.full((2, 1), 3.0)}
    terms = task.losses(out, jnp.asarray(gt))
    g = gt.astype(np.float32)
    want_focal = np.mean([sigmoid_focal_loss(masks[i, j][None], g[i][None]) for i, j in ((0, 2), (1, 0))])
    want_dice = np.mean([dice_loss(masks[i, j][None], g[i][None]) for i, j in ((0, 2), (1, 0))])
    np.testing.assert_allclose(float(terms["loss_mask"]), want_focal, rtol=1e-5)
    np.testing.assert_allclose(float(terms["loss_dice"]), want_dice, rtol=1e-5)
    actual = np.asarray(task.mask_ious(jnp.asarray(masks), jnp.asarray(gt)))
    assert actual[0, 2] == 1.0 and actual[1, 0] == 1.0
    np.testing.assert_allclose(float(terms["loss_iou"]), np.abs(ious - actual).mean(), rtol=1e-5)
    np.testing.assert_allclose(float(terms["loss_class"]), np.log1p(np.exp(-3.0)), rtol=1e-5)


def _host_state(config, seed=0) -> TrainState:
    sample = {k: v[:1] for k, v in next(iter(task.train_batches(config, 0, 0, 1))).items()}
    shapes = jax.eval_shape(lambda: task.init_state(jax.random.PRNGKey(0), config, sample))
    params = random_variables(shapes.params, seed)
    params["sam_mask_decoder"]["pred_obj_score_head"]["layers_2"]["bias"] += 2.0  # objects present
    return TrainState.create(
        params=jax.tree.map(jnp.asarray, params),
        opt_state=jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes.opt_state),
        rng=jax.random.PRNGKey(1),
    )


def test_train_step_updates_every_used_parameter_and_eval_scores_ious():
    c = CONFIGS.get_config("test").unlock()
    # the recipe's warm-up starts at lr 0; weight decay would move the parameters without a gradient
    c.optim.update(schedule="constant", warmup_steps=0, weight_decay=0.0)
    c = c.lock()
    state = _host_state(c)
    b = next(iter(task.train_batches(c, 0, 0, 1)))

    def run(s, b):
        new, m = task.train_step(s, b, c, lambda g: g)
        return new, m, task.eval_step(s, b, c)

    new, m, ev = jax.jit(run).lower(state, b).compile(compiler_options=FAST)(state, b)
    assert all(np.isfinite(float(v)) for v in m.values())
    total = sum(task.LOSS_WEIGHTS[k] * float(m[k]) for k in task.LOSS_WEIGHTS)
    assert float(m["loss"]) == pytest.approx(total, rel=1e-5)
    a, z = flatten_dict(state.params), flatten_dict(jax.tree.map(np.asarray, new.params))
    # image mode without memory: the memory encoder/attention and the temporal parts get no gradient
    unused = ("memory_encoder", "memory_attention", "maskmem_tpos_enc", "mask_downsample", "no_obj_ptr")
    moved = [k for k in a if not np.array_equal(np.asarray(a[k]), z[k])]
    assert any(k[0] == "image_encoder" for k in moved) and any(k[0] == "sam_mask_decoder" for k in moved)
    assert all(k[0] not in unused for k in moved), [k for k in moved if k[0] in unused][:3]
    assert 0.0 <= float(ev["iou"]) <= float(ev["iou_best_of_3"]) <= 1.0


def test_workdir_initialises_the_sam_part_of_the_tiny_samwise(tmp_path):
    """``configs/samwise.py:tiny --config.model.init_sam2=WORKDIR``: the SAM 2 the run trained replaces
    SAMWISE's ``sam`` parameters exactly; a SAM 2 of another size is refused with the flag named."""
    from peanut_jax.checkpoints import load

    c = CONFIGS.get_config("test")
    state = _host_state(c, seed=3)
    workdir = tmp_path / "sam2_run"
    workdir.mkdir()
    _write_config(_config_json(c), workdir)
    with Checkpointer(workdir / "checkpoints", save_interval_steps=1, async_save=False) as ck:
        ck.save(2, state)
    module, variables = load(workdir, "sam2")
    assert module.cfg == task.make_model(c).cfg
    samwise = tasks.get("samwise")
    sc = _configs("samwise").get_config("test")
    sample = {k: v[:1] for k, v in next(iter(samwise.train_batches(sc, 0, 0, 1))).items()}
    shapes = jax.eval_shape(lambda: samwise.init_state(jax.random.PRNGKey(0), sc, sample))
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes.params)
    sc = sc.unlock()
    sc.model.init_sam2 = str(workdir)
    params, _ = samwise.load_initial_weights(sc, zeros, {})
    got, want = flatten_dict(params["sam"]), flatten_dict(variables["params"])
    assert got.keys() == want.keys()
    assert all(np.array_equal(np.asarray(got[k]), np.asarray(want[k])) for k in want)
    assert not any(np.any(np.asarray(v)) for v in jax.tree.leaves(params["project_text"]))  # the rest stays
    bad = CONFIGS.get_config("test").unlock()
    bad.model.mem_dim = 8  # another SAM 2 (the tiny one has 16)
    bad = bad.lock()
    other = tmp_path / "other"
    other.mkdir()
    _write_config(_config_json(bad), other)
    with Checkpointer(other / "checkpoints", save_interval_steps=1, async_save=False) as ck:
        ck.save(2, _host_state(bad))
    sc.model.init_sam2 = str(other)
    with pytest.raises(ValueError, match="config.model.init_sam2"):
        samwise.load_initial_weights(sc, zeros, {})
