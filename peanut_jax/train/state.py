"""Training state and optimizer/schedule builders shared by every task.

:class:`TrainState` is the one pytree the loop checkpoints, replicates and feeds to a task's
``train_step``.  It holds

* ``step``: int32 scalar, the number of completed training iterations (the loop increments it;
  tasks never do);
* ``params``: the trained model's parameters (for a GAN: the generator);
* ``opt_state``: the optax state for ``params``;
* ``rng``: the run's base PRNG key (legacy ``uint32[2]`` key data, so it checkpoints as a plain
  array).  It never changes; per-step randomness comes from :meth:`TrainState.step_rng`, i.e.
  ``fold_in(rng, step)``, so a resumed run draws exactly the same numbers;
* ``extra``: any other pytree a task needs to carry (discriminator params and optimizer state,
  spectral-norm power-iteration vectors, EMA weights, batch statistics, ...).  Default ``{}``.

The optimizer itself (``optax.GradientTransformation``) is *not* part of the state: it is a pure
function of the config, so tasks rebuild it with :func:`build_optimizer` both in ``init_state``
and inside ``train_step`` (that is free: it only builds Python closures at trace time).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import optax

from peanut_jax.train.config import config_get as _get


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    extra: Any = flax.struct.field(default_factory=dict)

    @classmethod
    def create(cls, params, opt_state, rng, extra=None, step=0) -> TrainState:
        """A fresh state; ``rng`` is a legacy uint32[2] key (``jax.random.PRNGKey(seed)``)."""
        return cls(
            step=jnp.asarray(step, jnp.int32),
            params=params,
            opt_state=opt_state,
            rng=jnp.asarray(rng),
            extra={} if extra is None else extra,
        )

    def step_rng(self, *tags: int) -> jax.Array:
        """The key for the current iteration: ``fold_in(rng, step)``, then each integer tag.

        Use distinct tags for independent streams within one step (e.g. 0 for the generator,
        1 for the discriminator).
        """
        key = jax.random.fold_in(self.rng, self.step)
        for t in tags:
            key = jax.random.fold_in(key, t)
        return key

    def apply_gradients(self, tx: optax.GradientTransformation, grads) -> TrainState:
        """Update ``params`` and ``opt_state`` with ``tx`` (``step`` is left to the loop)."""
        params, opt_state = apply_updates(tx, grads, self.opt_state, self.params)
        return self.replace(params=params, opt_state=opt_state)


def apply_updates(tx: optax.GradientTransformation, grads, opt_state, params):
    """One optax update: ``(params, opt_state) -> (new_params, new_opt_state)``."""
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


# ------------------------------------------------------------------------------------ schedules
def cosine_restart_schedule(base_lr: float, periods, restart_weights=None, eta_min: float = 0.0) -> Callable:
    """mmagic ``CosineRestartLR``: within period ``i`` of length ``periods[i]`` starting at ``s_i``,
    ``lr = eta_min + 0.5 * w_i * (base_lr - eta_min) * (1 + cos(pi * (step - s_i) / periods[i]))``.

    After the last period the rate stays at ``eta_min``.
    """
    periods = [int(p) for p in periods]
    if not periods or min(periods) <= 0:
        raise ValueError(f"cosine restart periods must be positive, got {periods}")
    weights = [1.0] * len(periods) if restart_weights is None else [float(w) for w in restart_weights]
    if len(weights) != len(periods):
        raise ValueError(f"restart_weights ({len(weights)}) and periods ({len(periods)}) differ in length")
    starts, acc = [], 0
    for p in periods:
        starts.append(acc)
        acc += p
    starts_a = jnp.asarray(starts, jnp.int32)
    periods_a = jnp.asarray(periods, jnp.float32)
    weights_a = jnp.asarray(weights, jnp.float32)

    def schedule(step):
        step = jnp.asarray(step, jnp.int32)
        i = jnp.clip(jnp.searchsorted(starts_a, step, side="right") - 1, 0, len(periods) - 1)
        t = (step - starts_a[i]).astype(jnp.float32)
        frac = jnp.clip(t / periods_a[i], 0.0, 1.0)
        lr = eta_min + 0.5 * weights_a[i] * (base_lr - eta_min) * (1.0 + jnp.cos(math.pi * frac))
        return jnp.where(step >= acc, eta_min, lr)

    return schedule


def build_schedule(cfg, num_steps: int, lr: float | None = None) -> Callable:
    """Learning-rate schedule from an ``optim`` config block.

    Keys (all optional except ``lr``): ``schedule`` in ``constant`` | ``cosine`` (to ``min_lr``
    over ``num_steps``) | ``warmup_cosine`` (linear warm-up over ``warmup_steps`` from 0, then
    cosine to ``min_lr``) | ``cosine_restarts`` (``periods``, ``restart_weights``, ``min_lr``) |
    ``multistep`` (``milestones``, ``gamma``); ``warmup_steps`` also prefixes a linear warm-up
    to ``constant`` and ``cosine``.
    """
    base = float(_get(cfg, "lr", 0.0) if lr is None else lr)
    kind = _get(cfg, "schedule", "constant")
    min_lr = float(_get(cfg, "min_lr", 0.0))
    warmup = int(_get(cfg, "warmup_steps", 0))
    num_steps = max(int(num_steps), 1)
    if kind == "constant":
        sched = optax.constant_schedule(base)
    elif kind in ("cosine", "warmup_cosine"):
        if kind == "warmup_cosine" or warmup > 0:
            return optax.warmup_cosine_decay_schedule(
                0.0, base, max(warmup, 0), max(num_steps, warmup + 1), end_value=min_lr
            )
        alpha = min_lr / base if base not in (0.0, math.inf) else 0.0
        sched = optax.cosine_decay_schedule(base, num_steps, alpha=alpha)
    elif kind == "cosine_restarts":
        periods = _get(cfg, "periods", None) or (num_steps,)
        sched = cosine_restart_schedule(base, periods, _get(cfg, "restart_weights", None), min_lr)
    elif kind == "multistep":
        gamma = float(_get(cfg, "gamma", 0.1))
        milestones = [int(m) for m in (_get(cfg, "milestones", None) or ())]
        sched = optax.piecewise_constant_schedule(base, {m: gamma for m in milestones})
    else:
        raise ValueError(
            f"optim.schedule must be one of constant, cosine, warmup_cosine, cosine_restarts, multistep; got {kind!r}"
        )
    if warmup > 0:
        sched = optax.join_schedules([optax.linear_schedule(0.0, base, warmup), sched], [warmup])
    return sched


def build_optimizer(
    cfg, num_steps: int, lr: float | None = None, *, schedule: Callable | None = None, clip: bool = True
) -> tuple[optax.GradientTransformation, Callable]:
    """``(tx, schedule)`` from an ``optim`` config block.

    Keys: ``name`` in ``adam`` | ``adamw`` | ``sgd``; ``lr``; ``b1``, ``b2``, ``eps`` (adam*),
    ``weight_decay`` (adamw: decoupled; adam/sgd: L2 added to the gradient, as torch's
    ``weight_decay`` does), ``momentum``/``nesterov`` (sgd), ``grad_clip_norm`` (> 0 clips by
    global norm first), plus the schedule keys of :func:`build_schedule`.  ``lr`` overrides
    ``cfg.lr`` (e.g. a discriminator's own rate); ``schedule`` replaces the schedule entirely;
    ``clip=False`` leaves out the clipping.
    """
    sched = build_schedule(cfg, num_steps, lr) if schedule is None else schedule
    name = _get(cfg, "name", "adam")
    wd = float(_get(cfg, "weight_decay", 0.0))
    b1, b2 = float(_get(cfg, "b1", 0.9)), float(_get(cfg, "b2", 0.999))
    eps = float(_get(cfg, "eps", 1e-8))
    parts = []
    clip_norm = float(_get(cfg, "grad_clip_norm", 0.0))
    if clip and clip_norm > 0:
        parts.append(optax.clip_by_global_norm(clip_norm))
    if name == "adam":
        if wd:
            parts.append(optax.add_decayed_weights(wd))
        parts.append(optax.adam(sched, b1=b1, b2=b2, eps=eps))
    elif name == "adamw":
        parts.append(optax.adamw(sched, b1=b1, b2=b2, eps=eps, weight_decay=wd))
    elif name == "sgd":
        if wd:
            parts.append(optax.add_decayed_weights(wd))
        parts.append(
            optax.sgd(sched, momentum=_get(cfg, "momentum", None) or None, nesterov=bool(_get(cfg, "nesterov", False)))
        )
    else:
        raise ValueError(f"optim.name must be one of adam, adamw, sgd; got {name!r}")
    tx = parts[0] if len(parts) == 1 else optax.chain(*parts)
    return tx, sched


def scale_by_optimizer(cfg) -> optax.GradientTransformation:
    """The optimizer of an ``optim`` block without clipping and without its learning rate (what
    :func:`build_optimizer` puts before ``scale_by_learning_rate``), for per-group rates."""
    name = _get(cfg, "name", "adam")
    wd = float(_get(cfg, "weight_decay", 0.0))
    b1, b2 = float(_get(cfg, "b1", 0.9)), float(_get(cfg, "b2", 0.999))
    eps = float(_get(cfg, "eps", 1e-8))
    parts = []
    if name in ("adam", "sgd") and wd:
        parts.append(optax.add_decayed_weights(wd))
    if name in ("adam", "adamw"):
        parts.append(optax.scale_by_adam(b1=b1, b2=b2, eps=eps))
        if name == "adamw":
            parts.append(optax.add_decayed_weights(wd))
    elif name == "sgd":
        momentum = _get(cfg, "momentum", None) or None
        parts.append(
            optax.identity()
            if momentum is None
            else optax.trace(decay=momentum, nesterov=bool(_get(cfg, "nesterov", False)))
        )
    else:
        raise ValueError(f"optim.name must be one of adam, adamw, sgd; got {name!r}")
    return parts[0] if len(parts) == 1 else optax.chain(*parts)


class FreezeState(NamedTuple):
    count: jax.Array  # updates seen (frozen or not)
    inner: Any  # the wrapped transformation's state, untouched while frozen


def freeze_until(inner: optax.GradientTransformation, steps: int) -> optax.GradientTransformation:
    """``inner``, except that its first ``steps`` updates are zero **and leave its state
    untouched** (Adam moments and step count start when the freeze ends), like parameters with
    ``requires_grad=False`` in torch (mmagic's ``fix_iter``)."""
    steps = int(steps)

    def init(params):
        return FreezeState(jnp.zeros([], jnp.int32), inner.init(params))

    def update(updates, state, params=None):
        frozen = state.count < steps
        new_updates, new_inner = inner.update(updates, state.inner, params)
        out = jax.tree.map(lambda u: jnp.where(frozen, jnp.zeros_like(u), u), new_updates)
        kept = jax.tree.map(lambda old, new: jnp.where(frozen, old, new), state.inner, new_inner)
        return out, FreezeState(optax.safe_int32_increment(state.count), kept)

    return optax.GradientTransformation(init, update)


def build_grouped_optimizer(
    cfg, num_steps: int, labels: Callable[[Any], Any], groups: dict
) -> tuple[optax.GradientTransformation, Callable]:
    """Per-parameter-group learning-rate multipliers and freezes on one optimizer config.

    ``labels(params)`` returns a pytree of group names with the structure of ``params`` (as
    for ``optax.multi_transform``); ``groups`` maps a name to ``dict(lr_mult=1.0,
    frozen_steps=0)``; parameters labelled ``'default'`` (or any name not in ``groups``) use the
    plain optimizer.  The transformation is ``clip (cfg.grad_clip_norm > 0, once over all groups)
    -> per group: optimizer direction (:func:`scale_by_optimizer`) x lr_mult, frozen for
    frozen_steps (:func:`freeze_until`) -> the one schedule``, so a group's rate is always
    ``lr_mult * schedule(step)`` (mmagic's per-group ``lr_mult``).  BasicVSR++'s recipe (SPyNet
    lr x0.25, frozen for 5000 iterations)::

        def labels(params):
            return {k: jax.tree.map(lambda _: 'spynet' if k == 'spynet' else 'default', v)
                    for k, v in params.items()}
        tx, sched = build_grouped_optimizer(cfg.optim, n, labels,
                                            {'spynet': dict(lr_mult=0.25, frozen_steps=5000)})

    Returns ``(tx, schedule)``.
    """
    sched = build_schedule(cfg, num_steps)
    txs = {"default": scale_by_optimizer(cfg)}
    for name, g in groups.items():
        frozen = int(_get(g, "frozen_steps", 0))
        tx = optax.chain(scale_by_optimizer(cfg), optax.scale(float(_get(g, "lr_mult", 1.0))))
        txs[name] = freeze_until(tx, frozen) if frozen > 0 else tx

    def label_fn(params):
        return jax.tree.map(lambda lab: lab if lab in txs else "default", labels(params))

    parts = []
    clip_norm = float(_get(cfg, "grad_clip_norm", 0.0))
    if clip_norm > 0:
        parts.append(optax.clip_by_global_norm(clip_norm))
    parts += [optax.multi_transform(txs, label_fn), optax.scale_by_learning_rate(sched)]
    return optax.chain(*parts), sched
