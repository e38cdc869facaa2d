"""SPyNet trained end to end on procedural synthetic flow (``configs/spynet.py``).

Each training example is a 2-frame synthetic clip (``peanut_jax.data.synthetic.generate_clip``)
rendered from the seed ``(config.seed, 0, step, row)``; with ``data.random_reverse`` half of the
pairs are played backwards.  The pair is ``ref`` = frame 0, ``supp`` = frame 1 and the target is
the exact ``flow_forward[0]``: SPyNet's flow from ``ref`` to ``supp`` is the one that warps
``supp`` onto ``ref`` (``warp(frames[1], flow_forward[0]) ~ frames[0]``), which is the synthetic
forward flow.  Reversed pairs use ``flow_backward[0]``.

The loss is the mean end-point error (``peanut_jax.losses.flow.epe``, ``sqrt(. + 1e-6)`` so the
gradient is finite at zero error); evaluation reports the exact EPE
(``peanut_jax.metrics.flow.epe``) on ``data.eval_clips`` held-out clips (seeds
``(data.eval_seed, 1, i)``, disjoint from every training seed) and, as a reference, the EPE of
predicting zero flow.

Batches: ``{'ref': (B, H, W, 3), 'supp': (B, H, W, 3), 'flow': (B, H, W, 2)}`` float32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from peanut_jax.train import batching
from peanut_jax.train.config import config_dtype as _dtype
from peanut_jax.train.state import TrainState, build_optimizer


def make_model(config):
    from peanut_jax.models.spynet import SPyNet

    m = config.model
    return SPyNet(
        variant=m.variant, dtype=_dtype(m.get("dtype", "float32")), param_dtype=_dtype(m.get("param_dtype", "float32"))
    )


def make_example(d, seed: tuple, allow_reverse: bool) -> dict:
    """``{'ref', 'supp', 'flow'}`` for one synthetic pair (``d`` = the ``data`` config block)."""
    from peanut_jax.data.synthetic import generate_clip

    clip = generate_clip(seed, 2, int(d.height), int(d.width), **batching.scene_kwargs(d))
    if allow_reverse and np.random.default_rng(seed + (7,)).random() < 0.5:
        return {"ref": clip.frames[1], "supp": clip.frames[0], "flow": clip.flow_backward[0]}
    return {"ref": clip.frames[0], "supp": clip.frames[1], "flow": clip.flow_forward[0]}


def train_batches(config, start_step: int, process_index: int, process_count: int):
    d = config.data
    reverse = bool(d.random_reverse)
    yield from batching.train_batches(
        config,
        start_step,
        process_index,
        process_count,
        lambda seed, _: make_example(d, seed, reverse),
        dtype=np.float32,
    )


@functools.lru_cache(maxsize=4)
def _eval_set(items: tuple, n: int, seed: int) -> dict:
    d = batching.Plain(items)
    return batching.stack([make_example(d, (seed, batching.EVAL_STREAM, i), False) for i in range(n)], np.float32)


def eval_batches(config, process_index: int, process_count: int):
    d = config.data
    n, eb = int(d.eval_clips), int(d.eval_batch_size)
    batching.check_eval_clips(n, eb)
    data = _eval_set(batching.config_items(d, ("height", "width") + batching.SCENE_KEYS), n, int(d.eval_seed))
    yield from batching.slices(data, n, eb, process_index, process_count)


def init_state(rng, config, sample_batch) -> TrainState:
    model = make_model(config)
    init_rng, state_rng = jax.random.split(rng)
    params = model.init(init_rng, jnp.asarray(sample_batch["ref"]), jnp.asarray(sample_batch["supp"]))["params"]
    if config.model.get("zero_init_flow_head", False):
        params = zero_flow_heads(params)
    tx, _ = build_optimizer(config.optim, int(config.train.num_steps))
    return TrainState.create(params=params, opt_state=tx.init(params), rng=state_rng)


def zero_flow_heads(params):
    """Zero the last conv (``conv_4``) of every level, so the untrained net predicts zero flow.

    A training-recipe option (``model.zero_init_flow_head``), in the spirit of the zero-initialised
    offset heads of the deformable alignment modules: training starts at the zero-flow EPE
    instead of the random-init one, so any decrease is learnt flow.
    """
    out = dict(params)
    for name, level in params.items():
        if name.startswith("basic_module_") and "conv_4" in level:
            level = dict(level)
            level["conv_4"] = jax.tree.map(jnp.zeros_like, level["conv_4"])
            out[name] = level
    return out


def _loss(model, params, batch):
    from peanut_jax.losses.flow import epe

    flow = model.apply({"params": params}, batch["ref"], batch["supp"])
    return jnp.mean(epe(flow, batch["flow"]))


def train_step(state: TrainState, batch, config, grad_reduce):
    model = make_model(config)
    tx, schedule = build_optimizer(config.optim, int(config.train.num_steps))
    loss, grads = jax.value_and_grad(functools.partial(_loss, model))(state.params, batch)
    grads = grad_reduce(grads)
    lr = schedule(state.step)
    state = state.apply_gradients(tx, grads)
    return state, {"loss": loss, "grad_norm": optax.global_norm(grads), "lr": lr}


def eval_step(state: TrainState, batch, config):
    from peanut_jax.metrics.flow import epe

    flow = make_model(config).apply({"params": state.params}, batch["ref"], batch["supp"])
    return {"epe": epe(flow, batch["flow"]), "epe_zero_flow": epe(jnp.zeros_like(batch["flow"]), batch["flow"])}


def describe(config) -> str:
    d = config.data
    return (
        f"SPyNet ({config.model.variant}, {config.model.get('dtype', 'float32')}) on synthetic "
        f"{d.height}x{d.width} pairs, batch {d.batch_size}"
    )
