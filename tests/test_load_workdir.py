"""A ``train.py`` SAMWISE workdir as inference reads it: ``peanut_jax.load`` builds the module from the
run's ``config.json`` and returns the adapters' BatchNorm statistics (``state.extra``) with the
parameters; ``evaluate_rvos --checkpoint WORKDIR`` takes its synthetic clip settings from the run;
``evaluate_chain`` segments every clip with one ``SAMWISEPredictor`` (``TextPromptMasks(predictor=)``).

The workdir is written the way the training loop writes it (``Checkpointer`` + ``config.json``) from a
state of ``configs/samwise.py:test`` with random host weights (no minute-long init/train compile)."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

from peanut_jax.checkpoints import load
from peanut_jax.train import tasks
from peanut_jax.train.checkpoint import Checkpointer
from peanut_jax.train.loop import _config_json, _write_config
from peanut_jax.train.state import TrainState

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
task = tasks.get("samwise")


def _config():
    spec = importlib.util.spec_from_file_location("samwise_configs", ROOT / "configs" / "samwise.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config("test").unlock()
    c.model.update(hsa_patch_sizes=(2, 2, 2), use_cme=False)  # not the defaults: must come from config.json
    return c.lock()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    config = _config()
    return (config, *_workdir(tmp_path_factory.mktemp("samwise"), config))


def _workdir(tmp_path, config) -> tuple[pathlib.Path, TrainState]:
    sample = {k: v[:1] for k, v in next(iter(task.train_batches(config, 0, 0, 1))).items()}
    shapes = jax.eval_shape(lambda: task.init_state(jax.random.PRNGKey(0), config, sample))
    rng = np.random.default_rng(0)

    def draw(tree, lo, hi):
        flat = flatten_dict(tree)
        return unflatten_dict({k: np.asarray(rng.uniform(lo, hi, s.shape), s.dtype) for k, s in flat.items()})

    state = TrainState.create(
        params=draw(shapes.params, -0.2, 0.2),
        opt_state=jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes.opt_state),
        rng=jax.random.PRNGKey(1),
        extra={"batch_stats": draw(shapes.extra["batch_stats"], 0.5, 1.5)},
        step=2,
    )
    workdir = tmp_path / "run"
    workdir.mkdir()
    _write_config(_config_json(config), workdir)
    with Checkpointer(workdir / "checkpoints", save_interval_steps=1, async_save=False) as ck:
        ck.save(2, state)
    return workdir, state


def test_samwise_workdir_loads_batch_stats_and_the_run_config(run_dir):
    from peanut_jax.models.samwise import SAMWISE

    config, workdir, state = run_dir
    module, variables = load(workdir, "samwise")
    # the module the run trained (its config.json), as inference builds it
    assert module == task.make_model(config, train=False)
    assert module.cfg.hsa_patch_sizes == (2, 2, 2) and not module.cfg.use_cme and not module.hiera_per_frame
    assert sorted(variables) == ["batch_stats", "params"]
    for coll, want in (("params", state.params), ("batch_stats", state.extra["batch_stats"])):
        got, want = flatten_dict(variables[coll]), flatten_dict(want)
        assert got.keys() == want.keys()
        assert all(np.array_equal(got[k], want[k]) for k in want), coll
    # a step folder finds the run's config.json too
    assert load(workdir / "checkpoints" / "2", "samwise")[0] == module

    b = next(iter(task.eval_batches(config, 0, 1)))
    x = (task.normalise_frames(b["frames"][:1, :2]), b["input_ids"][:1], b["padding_mask"][:1])
    direct = task.make_model(config, train=False)
    stats = state.extra["batch_stats"]
    reset = jax.tree.map(lambda a: jnp.ones_like(a) if a.dtype.kind == "f" else a, stats)

    def run(v, own, plain, x):
        f = SAMWISE.forward_clips
        return (
            module.apply(v, *x, method=f)["pred_masks"],
            direct.apply(own, *x, method=f)["pred_masks"],
            direct.apply(plain, *x, method=f)["pred_masks"],
        )

    own = {"params": state.params, "batch_stats": stats}
    plain = {"params": state.params, "batch_stats": reset}
    args = (variables, own, plain, x)
    fn = jax.jit(run).lower(*args).compile(compiler_options=FAST) if jax.default_backend() == "cpu" else jax.jit(run)
    got, want, other = (np.asarray(a) for a in fn(*args))
    np.testing.assert_array_equal(got, want)
    assert np.abs(got - other).max() > 1e-5  # the statistics matter for the output


def test_evaluate_rvos_takes_clip_settings_from_the_run(run_dir, tmp_path):
    from peanut_jax.pipeline import evaluate_rvos

    config, workdir, _ = run_dir
    d = config.data
    want = dict(eval_seed=d.eval_seed, num_frames=d.num_frames, height=d.height, width=d.width)
    want["num_objects"] = d.num_objects
    (tmp_path / "config.json").write_text(json.dumps({"data": dict(source="synthetic", num_frames=3, eval_seed=7)}))

    def settings(ckpt, *flags):
        args = evaluate_rvos._parser().parse_args(["--dataset", "synthetic", "--checkpoint", str(ckpt), *flags])
        taken = evaluate_rvos.synthetic_settings(args)
        return {k: getattr(args, k) for k in evaluate_rvos.SYNTHETIC_DEFAULTS}, taken

    assert settings(workdir) == (want, list(want))
    assert settings(workdir / "checkpoints" / "2")[0] == want
    # flags override the run; keys the run does not record keep the defaults
    got, taken = settings(tmp_path, "--num-frames", "5", "--height", "64")
    assert got == dict(evaluate_rvos.SYNTHETIC_DEFAULTS, num_frames=5, height=64, eval_seed=7) and taken == [
        "eval_seed"
    ]
    # a run on other data, or a checkpoint that is not a workdir: the defaults
    (tmp_path / "config.json").write_text(json.dumps({"data": dict(source="mevis", num_frames=3)}))
    assert settings(tmp_path) == (evaluate_rvos.SYNTHETIC_DEFAULTS, [])
    assert settings("samwise_ytvos") == (evaluate_rvos.SYNTHETIC_DEFAULTS, [])
    (tmp_path / "config.json").write_text(json.dumps({"data": dict(source="synthetic", height="big")}))
    with pytest.raises(ValueError, match="data.height='big' is not an integer"):
        settings(tmp_path)


def test_evaluate_chain_shares_one_predictor_across_clips(run_dir, monkeypatch):
    from peanut_jax.pipeline import evaluate_chain
    from peanut_jax.pipeline.samwise import SAMWISEPredictor
    from peanut_jax.pipeline.text_masks import TextPromptMasks

    _, workdir, state = run_dir
    seen = []

    def fake_case(case, chain, masks, text_model=None, tokenizer=None, predictor=None):
        seen.append(predictor)
        return dict(dict.fromkeys(evaluate_chain._MEANS, 0.0), frames=len(case), peak_rss_bytes=1)

    monkeypatch.setattr(evaluate_chain, "evaluate_case", fake_case)
    evaluate_chain.run(["fast_motion"], num_clips=2, text_checkpoint=workdir, num_frames=3, height=64, width=64)
    pred = seen[0]
    assert len(seen) == 2 and seen[1] is pred and isinstance(pred, SAMWISEPredictor)
    assert not pred.module.cfg.use_cme  # the run's model (config.json)
    bs = flatten_dict(state.extra["batch_stats"])
    assert all(np.array_equal(v, bs[k]) for k, v in flatten_dict(pred.variables["batch_stats"]).items())

    src = TextPromptMasks(["the red square"], predictor=pred)
    src.prepare(types.SimpleNamespace(num_frames=3, height=64, width=64, fps=25.0))
    assert src.predictor is pred and src._tokenizer is pred.tokenizer and src.threshold == 0.5
    with pytest.raises(ValueError, match="do not also give module, variables, clip_window"):
        TextPromptMasks(["x"], predictor=pred, module=pred.module, variables=pred.variables, clip_window=4)
