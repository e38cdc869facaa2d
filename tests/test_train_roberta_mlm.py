"""RoBERTa masked-LM on the synthetic grammar (``peanut_jax/train/tasks/roberta_mlm.py``,
``configs/roberta.py``): fairseq's masking, a compiled step, and the workdir as the SAMWISE ``tiny``
recipe's ``model.init_text``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from test_train_sam2 import _configs

from peanut_jax.train import tasks
from peanut_jax.train.checkpoint import Checkpointer
from peanut_jax.train.loop import _config_json, _write_config

FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
task = tasks.get("roberta_mlm")


CONFIGS = _configs("roberta")


def test_config_is_the_tiny_samwise_text_encoder():
    from peanut_jax.models.samwise.config import get_config as samwise_config

    sw = samwise_config("tiny_test", vocab_size=_configs("samwise").TINY_MODEL["vocab_size"])
    m = task.make_model(CONFIGS.get_config("tiny"))
    got = (m.num_layers, m.dim, m.heads, m.ffn, m.vocab_size, m.max_positions)
    assert got == (sw.text_layers, sw.text_dim, sw.text_heads, sw.text_ffn, sw.vocab_size, sw.max_positions)
    with pytest.raises(ValueError, match="unknown variant"):
        CONFIGS.get_config("base")


def test_masking_follows_fairseq():
    rng = np.random.default_rng(0)
    ids = np.array([0, 10, 11, 12, 13, 14, 15, 16, 17, 2, 1, 1], np.int32)
    pad = ids == 1
    sel_total, masked, kept, n = 0, 0, 0, 4000
    for _ in range(n):
        ex = task.mask_tokens(ids, pad, 408, rng)
        sel = ex["selected"] > 0
        assert sel.any() and not sel[[0, 9, 10, 11]].any()  # specials and pads are never selected
        np.testing.assert_array_equal(ex["input_ids"][~sel], ids[~sel])
        np.testing.assert_array_equal(ex["targets"], ids)
        sel_total += sel.sum()
        masked += (ex["input_ids"][sel] == 407).sum()
        kept += (ex["input_ids"][sel] == ids[sel]).sum()
    # 15% of the 8 real tokens, plus one more when none was drawn (probability 0.85 ** 8)
    assert abs(sel_total / (8 * n) - (0.15 + 0.85**8 / 8)) < 0.01
    assert abs(masked / sel_total - 0.8) < 0.02 and abs(kept / sel_total - 0.1) < 0.02


def test_step_trains_encoder_and_heads_and_eval_scores():
    c = CONFIGS.get_config("test").unlock()
    c.optim.update(schedule="constant", warmup_steps=0)  # the recipe's warm-up starts at lr 0
    c = c.lock()
    b = next(iter(task.train_batches(c, 0, 0, 1)))
    state = task.init_state(jax.random.PRNGKey(0), c, b)

    def run(s, b):
        new, m = task.train_step(s, b, c, lambda g: g)
        return new, m, task.eval_step(new, b, c)

    new, m, ev = jax.jit(run).lower(state, b).compile(compiler_options=FAST)(state, b)
    assert np.isfinite(float(m["loss"])) and float(m["loss_bow"]) > 0 and float(m["loss_mlm"]) > 0
    for old, upd in ((state.params, new.params), (state.extra["heads"], new.extra["heads"])):
        a, z = flatten_dict(old), flatten_dict(upd)
        assert any(not np.array_equal(np.asarray(a[k]), np.asarray(z[k])) for k in a)
    assert 0.0 <= float(ev["mlm_accuracy"]) <= 1.0 and -1.0 <= float(ev["cls_cosine"]) <= 1.0


def test_workdir_initialises_the_text_encoder_of_the_tiny_samwise(tmp_path):
    from peanut_jax.checkpoints import load

    c = CONFIGS.get_config("test")
    b = next(iter(task.train_batches(c, 0, 0, 1)))
    state = task.init_state(jax.random.PRNGKey(3), c, b)
    workdir = tmp_path / "text_run"
    workdir.mkdir()
    _write_config(_config_json(c), workdir)
    with Checkpointer(workdir / "checkpoints", save_interval_steps=1, async_save=False) as ck:
        ck.save(2, state)
    module, variables = load(workdir, "roberta")
    assert module.dim == 32 and sorted(variables) == ["params"]  # the heads are not part of the encoder
    samwise = tasks.get("samwise")
    sc = _configs("samwise").get_config("test")
    sample = {k: v[:1] for k, v in next(iter(samwise.train_batches(sc, 0, 0, 1))).items()}
    shapes = jax.eval_shape(lambda: samwise.init_state(jax.random.PRNGKey(0), sc, sample))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes.params)
    sc = sc.unlock()
    sc.model.init_text = str(workdir)
    params, _ = samwise.load_initial_weights(sc, zeros, {})
    got, want = flatten_dict(params["text_encoder"]), flatten_dict(jax.tree.map(np.asarray, state.params))
    assert got.keys() == want.keys()
    assert all(np.array_equal(np.asarray(got[k]), want[k]) for k in want)


def test_tiny_samwise_refuses_a_frozen_random_text_encoder():
    samwise = tasks.get("samwise")
    c = _configs("samwise").get_config("tiny")
    assert c.model.trainable == "no_text" and c.data.objects_per_clip == 3
    with pytest.raises(ValueError, match="config.model.init_text is empty"):
        samwise.init_state(jax.random.PRNGKey(0), c, {})
