"""BasicVSR++ training (``configs/basicvsr_pp.py``): the mmagic recipe on REDS / Vimeo-90K or synthetic clips.

Objective and optimiser (mmagic ``basicvsr-pp_c64n7_8xb1-600k_reds4.py``):

* loss: Charbonnier ``mean(sqrt((out - gt)^2 + 1e-12))`` of the (unclamped) network output;
* Adam (beta 0.9 / 0.99), base rate ``optim.lr`` (1e-4) with the schedule of the ``optim`` block
  (``cosine_restarts``: periods (600000,), restart weights (1,), eta_min 1e-7);
* SPyNet (every parameter under ``spynet``) at ``optim.spynet_lr_mult`` (0.25) times the rate and
  *frozen* for the first ``optim.fix_iter`` iterations (mmagic ``train_cfg.fix_iter``; ``<= 0``:
  never).  Frozen means what ``requires_grad_(False)`` means to torch's Adam: no update and no
  optimiser-state change, so SPyNet's Adam moments and bias correction start at the first trainable
  step (:func:`peanut_jax.train.state.build_grouped_optimizer`).  While frozen, SPyNet's backward pass
  is skipped: statically when it is frozen for the whole run (``fix_iter >= train.num_steps``),
  otherwise, with ``optim.skip_frozen_backward`` (default), by a ``lax.cond`` between the two gradient
  programs.

Data (``data.source``):

``synthetic``
    procedural clips (``peanut_jax.data.synthetic.generate_clip``, seeds ``(seed, 0, step, row)``)
    rendered at the GT size, quantised to uint8 like real frames and degraded on the host
    (``data.degradation``: ``BI`` = MATLAB ``imresize(gt, 1/4)``, ``BD`` = blur + subsample).
``reds``
    the ``reds_vsr`` TFDS builder (``data.tfds_data_dir``, config ``bi``/``bd``): an item is a
    training clip (a seeded grain shuffle over the clips, reshuffled each epoch, as mmagic's
    infinite shuffled sampler); a random window of ``data.num_frames`` consecutive frames.
``vimeo90k``
    the ``vimeo90k_septuplet`` builder: an item is a septuplet (7 frames).

Then (all sources, mmagic's pipeline): paired random crop of ``data.lq_size`` LR pixels (GT
``scale`` times larger, aligned), horizontal flip, vertical flip and H/W transpose with p = 0.5
each, and for Vimeo-90K ``MirrorSequence`` (``data.mirror_sequence``: the clip followed by its
reverse; the network then runs SPyNet once).  Random numbers of example ``row`` at step ``s`` come
from ``(seed, 0, s, row)`` only, so resumed and multi-process runs see the same batches.

Evaluation: PSNR (RGB and Y) and SSIM (RGB) of the clamped output against the GT, mean over frames
and clips, border crop ``data.crop_border``; the same for the MATLAB bicubic x``scale`` upsampling of
the LR input (``*_bicubic``), the baseline a trained network must beat.  Synthetic: ``data.eval_clips``
clips from seeds ``(data.eval_seed, 1, i)`` (disjoint from training); REDS: the ``reds4`` split
(first ``data.eval_num_frames`` frames of each clip, optional centre crop ``data.eval_lq_size``);
Vimeo-90K: the ``test`` split, every (mirrored) frame measured.  The official benchmark protocols
(8-bit rounding, Vimeo-90K-T centre frame) are in ``peanut_jax.evaluate.vsr``.

Batches: ``{'lq': (B, T, h, w, 3), 'gt': (B, T, s*h, s*w, 3)}`` float32 in [0, 1]; evaluation
batches also hold ``'bicubic'`` (like ``gt``).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from peanut_jax.data import augment as aug
from peanut_jax.data.degrade import bicubic_upsample, degrade_clip
from peanut_jax.train import batching
from peanut_jax.train.config import config_dtype as _dtype
from peanut_jax.train.config import config_get as _get
from peanut_jax.train.state import TrainState, build_grouped_optimizer

SOURCES = ("synthetic", "reds", "vimeo90k")
SPYNET = "spynet"


# ------------------------------------------------------------------------------------------ model
def make_model(config):
    from peanut_jax.models.basicvsr_pp import BasicVSRPlusPlus

    m = config.model
    return BasicVSRPlusPlus(
        mid_channels=int(m.mid_channels),
        num_blocks=int(m.num_blocks),
        max_residue_magnitude=float(_get(m, "max_residue_magnitude", 10.0)),
        is_low_res_input=bool(_get(m, "is_low_res_input", True)),
        scale=int(_get(m, "scale", 4)),
        use_scan=bool(_get(m, "use_scan", True)),
        hr_channels=int(_get(m, "hr_channels", 64)),
        dtype=_dtype(_get(m, "dtype", "float32")),
        param_dtype=_dtype(_get(m, "param_dtype", "float32")),
    )


def output_scale(config) -> int:
    m = config.model
    return int(_get(m, "scale", 4)) if bool(_get(m, "is_low_res_input", True)) else 1


# -------------------------------------------------------------------------------------- optimizer
def param_labels(params):
    """``'spynet'`` for every leaf under the top-level ``spynet`` collection, ``'default'`` otherwise
    (mmagic ``paramwise_cfg.custom_keys={'spynet': ...}`` matches parameter names containing it)."""
    return {k: jax.tree.map(lambda _: SPYNET if k == SPYNET else "default", v) for k, v in params.items()}


def build_vsr_optimizer(config) -> tuple[optax.GradientTransformation, Any]:
    """``(tx, schedule)``: Adam on everything, SPyNet's updates times ``spynet_lr_mult`` and frozen for
    ``fix_iter`` steps (:func:`~peanut_jax.train.state.build_grouped_optimizer`), then one global
    learning-rate schedule (so SPyNet's rate is always ``spynet_lr_mult * schedule(step)``, as
    mmagic's per-group ``lr_mult``)."""
    o = config.optim
    name = _get(o, "name", "adam")
    if name != "adam":
        raise ValueError(f"config.optim.name must be 'adam' for basicvsr_pp, got {name!r}")
    group = dict(lr_mult=float(_get(o, "spynet_lr_mult", 0.25)), frozen_steps=max(int(_get(o, "fix_iter", 0)), 0))
    return build_grouped_optimizer(o, int(config.train.num_steps), param_labels, {SPYNET: group})


def spynet_mode(config) -> str:
    """How SPyNet's gradient is taken: ``'train'`` (never frozen), ``'frozen'`` (frozen for the whole
    run: no backward pass through it), ``'cond'`` (frozen for the first ``fix_iter`` steps, backward
    skipped then by ``lax.cond``) or ``'mask'`` (backward always computed, update masked)."""
    fix_iter = int(_get(config.optim, "fix_iter", 0))
    if fix_iter <= 0:
        return "train"
    if fix_iter >= int(config.train.num_steps):
        return "frozen"
    return "cond" if bool(_get(config.optim, "skip_frozen_backward", True)) else "mask"


# ------------------------------------------------------------------------------------------- data
def synthetic_clip(d, seed: tuple, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(lq, gt) uint8 of one synthetic clip: ``data.num_frames`` frames of ``scale * data.lq_size``
    pixels, quantised to uint8, degraded by ``data.degradation``."""
    from peanut_jax.data.synthetic import generate_clip

    size = int(d.lq_size) * scale
    clip = generate_clip(seed, int(d.num_frames), size, size, **batching.scene_kwargs(d))
    gt = np.round(np.clip(clip.frames, 0.0, 1.0) * 255.0).astype(np.uint8)
    return degrade_clip(gt, d.degradation, scale), gt


def _to_float(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / np.float32(255.0)


def _finish(d, lq: np.ndarray, gt: np.ndarray, rng: np.random.Generator, scale: int, train: bool, where: str) -> dict:
    """Crop (training), augment (training), mirror (``data.mirror_sequence``), to float32; evaluation
    examples also get the ``bicubic`` baseline."""
    if train:
        lq, gt = aug.paired_random_crop(lq, gt, int(d.lq_size), scale, rng, where)
        lq, gt = aug.flip_transpose(lq, gt, rng, bool(_get(d, "flip", True)), bool(_get(d, "transpose", True)))
    if bool(_get(d, "mirror_sequence", False)):
        lq, gt = aug.mirror_sequence(lq), aug.mirror_sequence(gt)
    out = {"lq": _to_float(lq), "gt": _to_float(gt)}
    if not train:
        out["bicubic"] = bicubic_upsample(out["lq"], scale)
    return out


class _Source:
    """A built TFDS split (``reds_vsr`` / ``vimeo90k_septuplet``) with its items (clips or septuplets)."""

    def __init__(self, d, split: str):
        from peanut_jax.data.tfds import vsr

        source = d.source
        name = {"reds": "reds_vsr", "vimeo90k": "vimeo90k_septuplet"}[source]
        config = str(_get(d, "tfds_config", "") or d.degradation.lower())
        self.source, self.split = source, split
        self.src, meta = vsr.open_split(name, d.tfds_data_dir, split, config)
        if source == "reds":
            self.items = vsr.clip_table(meta, split)
        else:
            self.items = list(range(len(self.src)))
        if not self.items:
            raise ValueError(f"{name}/{config} split {split!r} is empty")

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    def load(self, item, num_frames: int, rng: np.random.Generator | None, first: int | None = None):
        """(lq, gt) uint8 of ``num_frames`` frames of an item: a random window (``rng``) or from
        ``first``; a Vimeo-90K septuplet always gives its 7 frames."""
        from peanut_jax.data.tfds.common import decode_many

        if self.source == "reds":
            clip, start, n = item
            if num_frames > n:
                raise ValueError(f"REDS clip {clip} has {n} frames, data.num_frames={num_frames}")
            off = int(rng.integers(0, n - num_frames + 1)) if first is None else int(first)
            recs = [self.src[start + off + k] for k in range(num_frames)]
            where = f"reds_vsr clip {clip}"
            for k, r in enumerate(recs):
                if int(r["frame"]) != off + k or int(r["clip_start"]) != start:
                    raise ValueError(f"{where}: record order does not match the clip table (rebuild the dataset)")
            return (decode_many([r["lq"] for r in recs], where), decode_many([r["gt"] for r in recs], where))
        rec = self.src[int(item)]
        where = f"vimeo90k_septuplet {rec['name'].decode() if isinstance(rec['name'], bytes) else rec['name']}"
        return decode_many(list(rec["lq"]), where), decode_many(list(rec["gt"]), where)


@functools.lru_cache(maxsize=4)
def _open(items: tuple, split: str) -> _Source:
    return _Source(batching.Plain(items), split)


def _check_data(config) -> None:
    d = config.data
    if d.source not in SOURCES:
        raise ValueError(f"config.data.source must be one of {SOURCES}, got {d.source!r}")
    if d.degradation not in ("BI", "BD"):
        raise ValueError(f"config.data.degradation must be 'BI' or 'BD', got {d.degradation!r}")
    if not bool(_get(config.model, "is_low_res_input", True)):
        raise ValueError(
            "basicvsr_pp task: only the super-resolution model (model.is_low_res_input=True) is trained here"
        )
    if int(d.lq_size) < 64:
        raise ValueError(
            f"config.data.lq_size={d.lq_size}: BasicVSR++ needs LR frames of at least 64 px (SPyNet's minimum)"
        )
    if d.source == "vimeo90k" and int(d.num_frames) != 7:
        raise ValueError(f"config.data.num_frames must be 7 for Vimeo-90K septuplets, got {d.num_frames}")
    if d.source != "synthetic" and not _get(d, "tfds_data_dir", None):
        raise ValueError(f"config.data.tfds_data_dir is required for data.source={d.source!r}")


def train_example(config, source: _Source | None, item, seed: tuple) -> dict:
    d = config.data
    scale = output_scale(config)
    rng = np.random.default_rng(seed + (7,))
    if source is None:
        lq, gt = synthetic_clip(d, seed, scale)
        where = f"synthetic clip {seed}"
    else:
        lq, gt = source.load(item, int(d.num_frames), rng)
        where = f"{d.source} item {item}"
    return _finish(d, lq, gt, rng, scale, True, where)


def train_batches(config, start_step: int, process_index: int, process_count: int):
    _check_data(config)
    source, n = batching.train_source(config, _open)

    def example(seed, i):
        return train_example(config, source, None if i is None else source[i], seed)

    yield from batching.train_batches(config, start_step, process_index, process_count, example, n, np.float32)


@functools.lru_cache(maxsize=4)
def _synthetic_eval_set(items: tuple, n: int, seed: int, scale: int) -> dict:
    d = batching.Plain(items)
    return batching.stack(
        [
            _finish(
                d,
                *synthetic_clip(d, (seed, batching.EVAL_STREAM, i), scale),
                None,
                scale,
                False,
                f"synthetic eval clip {i}",
            )
            for i in range(n)
        ],
        np.float32,
    )


def eval_batches(config, process_index: int, process_count: int):
    _check_data(config)
    d = config.data
    scale = output_scale(config)
    eb = int(d.eval_batch_size)
    if d.source == "synthetic":
        n = int(d.eval_clips)
        batching.check_eval_clips(n, eb)
        data = _synthetic_eval_set(batching.config_items(d), n, int(d.eval_seed), scale)
        yield from batching.slices(data, n, eb, process_index, process_count)
        return
    source = _open(batching.config_items(d), str(_get(d, "eval_split", "reds4" if d.source == "reds" else "test")))
    n = batching.eval_size(d, len(source), "items")
    frames = int(_get(d, "eval_num_frames", 0) or 0)

    def example(i):
        item = source[i]
        if d.source == "reds":
            lq, gt = source.load(item, frames or item[2], None, first=0)
        else:
            lq, gt = source.load(item, 7, None)
        lq, gt = aug.paired_center_crop(lq, gt, int(_get(d, "eval_lq_size", 0) or 0), scale)
        return _finish(d, lq, gt, None, scale, False, f"eval item {i}")

    yield from batching.eval_batches(n, eb, process_index, process_count, example, np.float32)


def sample_batch(config) -> dict:
    """One example batch with the training shapes (for ``init_state``), without building data."""
    d = config.data
    s = output_scale(config)
    t = int(d.num_frames) * (2 if bool(_get(d, "mirror_sequence", False)) else 1)
    n = int(d.lq_size)
    return {"lq": np.zeros((1, t, n, n, 3), np.float32), "gt": np.zeros((1, t, n * s, n * s, 3), np.float32)}


# ------------------------------------------------------------------------------------------ state
def _load_official(name: str, path: str, what: str):
    from peanut_jax.checkpoints import load

    try:
        return load(path, name)[1]["params"]
    except FileNotFoundError:
        raise FileNotFoundError(f"{what}: checkpoint not found: {path}") from None


def init_state(rng, config, sample_batch) -> TrainState:
    from peanut_jax.train.tasks.spynet import zero_flow_heads

    model = make_model(config)
    init_rng, state_rng = jax.random.split(rng)
    # parameter shapes do not depend on the clip length or frame size: initialise on 2 small frames
    n = 64 if model.is_low_res_input else 256
    params = model.init(init_rng, jnp.zeros((1, 2, n, n, 3), jnp.float32))["params"]
    m = config.model
    init_ckpt = _get(m, "init_checkpoint", "") or ""
    if init_ckpt:
        loaded = _load_official("basicvsr_pp", init_ckpt, "config.model.init_checkpoint")
        params = _replace_checked(params, loaded, "config.model.init_checkpoint")
    spy_ckpt = _get(m, "spynet_pretrained", "") or ""
    if spy_ckpt:
        loaded = _load_official("spynet", spy_ckpt, "config.model.spynet_pretrained")
        params = dict(params)
        params[SPYNET] = _replace_checked(params[SPYNET], loaded, "config.model.spynet_pretrained")
    elif not init_ckpt and bool(_get(m, "zero_init_spynet_flow", False)):
        params = dict(params)
        params[SPYNET] = zero_flow_heads(params[SPYNET])
    tx, _ = build_vsr_optimizer(config)
    return TrainState.create(params=params, opt_state=tx.init(params), rng=state_rng)


def _replace_checked(ref, loaded, what: str):
    ref_shapes = jax.tree.map(lambda x: tuple(x.shape), ref)
    got_shapes = jax.tree.map(lambda x: tuple(np.shape(x)), loaded)
    if jax.tree.structure(ref_shapes) != jax.tree.structure(got_shapes) or ref_shapes != got_shapes:
        raise ValueError(
            f"{what}: the checkpoint's parameters do not match the configured model "
            "(check model.mid_channels / model.num_blocks)"
        )
    return jax.tree.map(lambda r, x: jnp.asarray(x, r.dtype), ref, loaded)


# ------------------------------------------------------------------------------------------- steps
def _forward(model, params, lq, mirrored: bool):
    return model.apply({"params": params}, lq, is_mirror_extended=True if mirrored else None)


def _loss(model, mirrored, params, batch, freeze_spynet: bool):
    from peanut_jax.losses import charbonnier_loss

    if freeze_spynet:
        params = {**params, SPYNET: jax.lax.stop_gradient(params[SPYNET])}
    out = _forward(model, params, batch["lq"], mirrored)
    return charbonnier_loss(out.astype(jnp.float32), batch["gt"])


def train_step(state: TrainState, batch, config, grad_reduce):
    model = make_model(config)
    tx, schedule = build_vsr_optimizer(config)
    mirrored = bool(_get(config.data, "mirror_sequence", False))
    fix_iter = int(_get(config.optim, "fix_iter", 0))
    mode = spynet_mode(config)
    vg = lambda freeze: jax.value_and_grad(  # noqa: E731
        functools.partial(_loss, model, mirrored, freeze_spynet=freeze)
    )(state.params, batch)
    if mode == "frozen":
        loss, grads = vg(True)
    elif mode == "cond":
        loss, grads = jax.lax.cond(state.step < fix_iter, lambda: vg(True), lambda: vg(False))
    else:
        loss, grads = vg(False)
    grads = grad_reduce(grads)
    lr = schedule(state.step)
    frozen = (state.step < fix_iter) if fix_iter > 0 else jnp.asarray(False)
    mult = float(_get(config.optim, "spynet_lr_mult", 0.25))
    state = state.apply_gradients(tx, grads)
    return state, {
        "loss": loss,
        "grad_norm": optax.global_norm(grads),
        "lr": lr,
        "lr_spynet": jnp.where(frozen, 0.0, lr * mult),
        "spynet_frozen": frozen.astype(jnp.float32),
    }


def eval_step(state: TrainState, batch, config):
    from peanut_jax.metrics import psnr, ssim

    model = make_model(config)
    mirrored = bool(_get(config.data, "mirror_sequence", False))
    out = jnp.clip(_forward(model, state.params, batch["lq"], mirrored).astype(jnp.float32), 0.0, 1.0)
    gt, bic = batch["gt"], batch["bicubic"]
    cb = int(_get(config.data, "crop_border", 0))
    metrics = {}
    for name, img in (("", out), ("_bicubic", bic)):
        metrics["psnr" + name] = jnp.mean(psnr(img, gt, crop_border=cb))
        metrics["psnr_y" + name] = jnp.mean(psnr(img, gt, crop_border=cb, y_channel=True))
        metrics["ssim" + name] = jnp.mean(ssim(img, gt, crop_border=cb))
    metrics["psnr_gain"] = metrics["psnr"] - metrics["psnr_bicubic"]
    return metrics


def describe(config) -> str:
    d, m = config.data, config.model
    return (
        f"BasicVSR++ c{m.mid_channels}n{m.num_blocks} x{output_scale(config)} on {d.source} "
        f"({d.degradation}), {d.num_frames} frames of {d.lq_size}px LR, batch {d.batch_size}, "
        f"SPyNet {spynet_mode(config)}"
    )
