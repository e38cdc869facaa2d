"""SAMWISE training (``peanut_jax/train/tasks/samwise.py``, ``configs/samwise.py``) on the tiny model (CPU).

The states are built with ``jax.eval_shape`` and host-drawn weights (no minute-long init compile);
the train step is compiled once for the module."""

from __future__ import annotations

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

from peanut_jax.train import tasks
from peanut_jax.train.state import TrainState, build_optimizer

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _configs():
    spec = importlib.util.spec_from_file_location("samwise_configs", ROOT / "configs" / "samwise.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CONFIGS = _configs()
task = tasks.get("samwise")
# these programs run a few times only: on CPU, compile them without the expensive LLVM passes
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def fast_jit(fn, *args):
    """``fn`` compiled for ``args`` (faster to compile on CPU; same numbers up to float rounding)."""
    if jax.default_backend() != "cpu":
        return jax.jit(fn)
    return jax.jit(fn).lower(*args).compile(compiler_options=FAST)


def ytvos_shaped(**data):
    """``official_ytvos`` (trainable = adapters, CME, project_text; HSA + CME; AdamW lr 1e-5, clip 1) on
    the tiny model and synthetic clips of 6 frames instead of 8 (the CME still runs, at frame 5; a
    fresh clip's frames compile unrolled, so each frame costs compile time)."""
    c = CONFIGS.get_config("official_ytvos").unlock()
    c.model.update(CONFIGS.TINY_MODEL, init_from="", hiera_per_frame=False)
    c.data.update(source="synthetic", height=128, width=128, max_tokens=16, batch_size=2, eval_clips=2)
    c.data.update(num_frames=6, **data)
    c.data.update(eval_batch_size=2)
    c.train.update(num_steps=20)
    return c.lock()


def host_state(config, seed=0):
    """A TrainState like ``init_state`` gives, with random host weights (object scores biased positive)."""
    sample = next(iter(task.train_batches(config, 0, 0, 1)))
    sample = {k: v[:1] for k, v in sample.items()}
    shapes = jax.eval_shape(lambda: task.init_state(jax.random.PRNGKey(0), config, sample))
    rng = np.random.default_rng(seed)

    def draw(path, s):
        if path[-1] == "var":
            return np.asarray(rng.uniform(0.5, 1.5, s.shape), s.dtype)
        if path[-1] == "scale":
            return np.asarray(1.0 + 0.1 * rng.standard_normal(s.shape), s.dtype)
        return np.asarray(0.2 * rng.standard_normal(s.shape), s.dtype)

    params = unflatten_dict({k: draw(k, s) for k, s in flatten_dict(shapes.params).items()})
    params["sam"]["sam_mask_decoder"]["pred_obj_score_head"]["layers_2"]["bias"] += 2.0
    bs = unflatten_dict({k: draw(k, s) for k, s in flatten_dict(shapes.extra["batch_stats"]).items()})
    trainable, _ = task.split_params(params, task.trainable_mode(config))
    tx, _ = build_optimizer(config.optim, int(config.train.num_steps))
    params = jax.tree.map(jnp.asarray, params)
    return TrainState.create(
        params=params,
        opt_state=tx.init(jax.tree.map(jnp.asarray, trainable)),
        rng=jax.random.PRNGKey(1),
        extra={"batch_stats": jax.tree.map(jnp.asarray, bs)},
    )


# ---------------------------------------------------------------------------------------- configs
def test_config_variants():
    for v in ("official_pretrain", "official_ytvos", "official_mevis", "tiny", "test"):
        c = CONFIGS.get_config(v)
        assert c.task == "samwise"
        cfg = task.model_config(c)
        if v.startswith("official"):
            assert c.model.trainable == "official" and cfg.sam2_size == "base_plus"
            assert c.optim.name == "adamw" and c.optim.weight_decay == 0.0 and tuple(c.optim.milestones) == (60_000,)
        else:
            assert c.model.trainable == ("no_text" if v == "tiny" else "all") and c.data.source == "synthetic"
    p = CONFIGS.get_config("official_pretrain")
    assert (p.optim.lr, p.optim.grad_clip_norm, p.data.batch_size, p.data.num_frames) == (1e-4, 0.1, 32, 1)
    assert not task.model_config(p).pred_obj_scores and not task.model_config(p).use_cme
    y = CONFIGS.get_config("official_ytvos")
    assert (y.optim.lr, y.optim.grad_clip_norm, y.data.batch_size, y.data.num_frames) == (1e-5, 1.0, 4, 8)
    assert task.model_config(y).hsa and task.model_config(y).use_cme
    assert CONFIGS.get_config("official_mevis").data.sampling == "global"
    # BatchNorm statistics over the whole data-parallel batch: global under jit, pmean'd under pmap
    assert task.make_model(y, train=True).bn_axis_name is None and task.make_model(y).train is False
    pm = y.unlock()
    pm.parallel = "pmap"
    assert task.make_model(pm, train=True).bn_axis_name == "data" and task.make_model(pm).bn_axis_name is None
    with pytest.raises(ValueError, match="unknown variant"):
        CONFIGS.get_config("official")


def test_official_data_needs_a_data_dir():
    for v in ("official_ytvos", "official_mevis", "official_pretrain"):
        c = CONFIGS.get_config(v)
        with pytest.raises(ValueError, match="config.data.data_dir is required"):
            next(iter(task.train_batches(c, 0, 0, 1)))
    c = CONFIGS.get_config("test").unlock()
    c.data.source = "kinetics"
    with pytest.raises(ValueError, match="config.data.source"):
        next(iter(task.train_batches(c, 0, 0, 1)))


def test_base_plus_trainable_set_is_adapters_cme_and_project_text():
    """Counted on ``jax.eval_shape`` of the released base+ model (nothing is initialised)."""
    c = CONFIGS.get_config("official_ytvos")
    model = task.make_model(c)
    shapes = jax.eval_shape(
        model.init,
        jax.random.PRNGKey(0),
        jax.ShapeDtypeStruct((1, 1024, 1024, 3), jnp.float32),
        jax.ShapeDtypeStruct((1, 8), jnp.int32),
    )["params"]
    trainable, total = task.count_params(shapes, "official")
    groups = {k: sum(int(np.prod(v.shape)) for v in flatten_dict(shapes[k]).values()) for k in shapes}
    adapters = sum(n for k, n in groups.items() if k.startswith("cmt_adapters_"))
    cme, text = groups["conditional_memory_encoder"], groups["project_text"]
    assert trainable == adapters + cme + text
    assert set(groups) == {"sam", "text_encoder", "project_text", "conditional_memory_encoder"} | {
        f"cmt_adapters_{i}" for i in range(3)
    }
    # the reference's count: adapters 4.576M + CME 0.331M (= the README's 4.9M) + project_text 0.328M
    assert round(adapters / 1e6, 3) == 4.576 and round(cme / 1e6, 3) == 0.331 and round(text / 1e6, 3) == 0.328
    assert 200e6 < total < 225e6


# ------------------------------------------------------------------------------------------- data
def test_batches_are_pure_functions_of_seed_step_row():
    c = CONFIGS.get_config("test")
    it = task.train_batches(c, 0, 0, 1)
    first = [next(it) for _ in range(3)]
    resumed = next(iter(task.train_batches(c, 2, 0, 1)))  # step 3 after a restart at step 2
    for k in first[2]:
        np.testing.assert_array_equal(first[2][k], resumed[k])
    b = first[0]
    assert b["frames"].shape == (2, 8, 128, 128, 3) and b["frames"].dtype == np.uint8
    assert b["input_ids"].shape == (2, 16) and b["padding_mask"].dtype == bool
    assert b["masks"].shape == (2, 8, 128, 128)
    # process 1 of 2 builds row 1 of the global batch
    half = next(iter(task.train_batches(c, 0, 1, 2)))
    np.testing.assert_array_equal(half["frames"][0], b["frames"][1])
    ev = next(iter(task.eval_batches(c, 0, 1)))
    assert ev["objects"].shape == (2, 3, 8, 128, 128)
    # the referred object is one of the clip's objects
    for i in range(2):
        assert any(np.array_equal(ev["masks"][i], o) for o in ev["objects"][i])


def test_objects_per_clip_groups_rows_on_one_clip():
    """``data.objects_per_clip=3``: rows 0-2 of a step share one clip and refer to its three objects
    (three different sentences and masks), rows 3-5 to the next clip; a resumed step is the same."""
    c = CONFIGS.get_config("test").unlock()
    c.data.update(objects_per_clip=3, batch_size=6, num_frames=2, height=64, width=64, max_size=64)
    c = c.lock()
    b = next(iter(task.train_batches(c, 4, 0, 1)))
    for g in (0, 3):
        rows = range(g, g + 3)
        assert all(np.array_equal(b["frames"][g], b["frames"][r]) for r in rows)
        assert len({b["input_ids"][r].tobytes() for r in rows}) == 3
        assert len({b["masks"][r].tobytes() for r in rows}) == 3
    assert not np.array_equal(b["frames"][0], b["frames"][3])
    np.testing.assert_array_equal(next(iter(task.train_batches(c, 4, 0, 1)))["masks"], b["masks"])
    bad = CONFIGS.get_config("test").unlock()
    bad.data.objects_per_clip = 4  # more than the clip's 3 objects
    with pytest.raises(ValueError, match="objects_per_clip"):
        next(iter(task.train_batches(bad, 0, 0, 1)))


def test_clip_jaccard_is_the_davis_j():
    jf = pytest.importorskip("peanut_jax.metrics.jf")
    rng = np.random.default_rng(0)
    pred = rng.random((3, 4, 16, 16)) < 0.3
    gt = rng.random((3, 4, 16, 16)) < 0.3
    pred[0, 1] = gt[0, 1] = False  # both empty: J = 1
    gt[1, 2] = False  # empty gt, non-empty prediction: J = 0
    got = np.asarray(task.clip_jaccard(jnp.asarray(pred), jnp.asarray(gt)))
    np.testing.assert_allclose(got, jf.jaccard(pred, gt).mean(axis=1), rtol=1e-6)


# ---------------------------------------------------------------------------------- model modes
def test_train_mode_without_dropout_and_with_running_stats_equals_inference():
    """Also: the eval step scores the inference masks and its baselines by the DAVIS J (and F)."""
    from peanut_jax.models.samwise import SAMWISE

    c = ytvos_shaped()
    state = host_state(c)
    params = jax.tree.map(np.asarray, state.params)
    # the CME prefers "keep" so that inference makes no memory switch either
    params["conditional_memory_encoder"]["decision_class_head"]["bias"] = np.array([20.0, -20.0], np.float32)
    v = {"params": params, "batch_stats": state.extra["batch_stats"]}
    b = next(iter(task.eval_batches(c, 0, 1)))
    x = (task.normalise_frames(b["frames"]), b["input_ids"], b["padding_mask"])
    st = state.replace(params=params)
    base = task.make_model(c)
    quiet = base.clone(train=True, deterministic=True, use_running_average=True)
    train = base.clone(train=True)
    key = jax.random.PRNGKey(0)

    def run(v, x, st, b):
        kw = dict(method=SAMWISE.forward_clips, rngs={"dropout": key})
        return (
            base.apply(v, *x, method=SAMWISE.forward_clips),
            quiet.apply(v, *x, **kw),
            train.apply(v, *x, **kw, mutable=["batch_stats"]),
            task.eval_step(st, b, c),
        )

    infer, out, (out2, upd), ev = fast_jit(run, v, x, st, b)(v, x, st, b)
    assert np.all(np.asarray(infer["object_score_logits"]) > 0)  # no -1024 masking at inference either
    np.testing.assert_allclose(np.asarray(out["pred_masks"]), np.asarray(infer["pred_masks"]), rtol=1e-5, atol=1e-5)
    assert np.asarray(out["cme_run"])[0].tolist() == [False] * 5 + [True]
    # the real training mode differs: dropout and batch statistics (which it also updates)
    assert not np.allclose(np.asarray(out2["pred_masks"]), np.asarray(infer["pred_masks"]), atol=1e-3)
    old, new = flatten_dict(v["batch_stats"]), flatten_dict(upd["batch_stats"])
    assert all(not np.array_equal(np.asarray(old[k]), np.asarray(new[k])) for k in old)
    # eval metrics: the inference masks and the two ground-truth baselines, DAVIS J (and F)
    jf = pytest.importorskip("peanut_jax.metrics.jf")
    pred, gt, objs = np.asarray(infer["pred_masks"]) > 0, b["masks"] > 0, b["objects"] > 0
    for name, fn in (("J", jf.jaccard), ("F", jf.f_measure)):
        want = {
            name: fn(pred, gt).mean(),
            f"{name}_random_object": np.mean([fn(objs[:, i], gt).mean() for i in range(objs.shape[1])]),
            f"{name}_union": fn(objs.any(1), gt).mean(),
        }
        for k, w in want.items():
            np.testing.assert_allclose(float(ev[k]), w, rtol=1e-5, atol=1e-6, err_msg=k)
    assert float(ev["J_random_object"]) < 1.0 and float(ev["JF"]) == pytest.approx((ev["J"] + ev["F"]) / 2)


# -------------------------------------------------------------------------------------- freezing
@pytest.fixture(scope="module")
def twenty_steps():
    c = ytvos_shaped()
    state0 = host_state(c)
    before = jax.tree.map(np.array, state0.params)
    batches = task.train_batches(c, 0, 0, 1)
    first = next(batches)
    step = fast_jit(lambda s, b: task.train_step(s, b, c, lambda g: g), state0, first)
    state, metrics = state0, []
    for i in range(20):
        b = first if i == 0 else next(batches)
        state, m = step(state, b)
        state = state.replace(step=state.step + 1)
        metrics.append(jax.tree.map(float, m))
    return c, before, state, metrics


def test_twenty_official_steps_freeze_the_backbone_and_train_the_rest(twenty_steps):
    c, before, state, metrics = twenty_steps
    assert all(np.isfinite(m["loss"]) for m in metrics)
    assert any(m["loss_cme"] > 0 for m in metrics) and any(m["cme_labelled"] > 0 for m in metrics)
    a, b = flatten_dict(before), flatten_dict(jax.tree.map(np.asarray, state.params))
    frozen = [k for k in a if not task.is_trainable(k, "official")]
    trainable = [k for k in a if task.is_trainable(k, "official")]
    assert {k[0] for k in frozen} == {"sam", "text_encoder"}
    assert all(np.array_equal(a[k], b[k]) for k in frozen)
    unused = [k for k in trainable if "norm2" in k]  # the CME's norm2 exists but is unused, as official
    assert len(unused) == 2 and all(np.array_equal(a[k], b[k]) for k in unused)
    unchanged = ["/".join(k) for k in trainable if k not in unused and np.array_equal(a[k], b[k])]
    assert not unchanged, unchanged
    # only the trainable part has optimizer state
    n_opt = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.opt_state) if np.ndim(x) > 0)
    n_tr = sum(int(np.prod(a[k].shape)) for k in trainable)
    assert n_opt == 2 * n_tr  # AdamW mu and nu
