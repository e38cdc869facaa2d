"""E2FGVI / E2FGVI-HQ training: the official recipe plus the STC loss (``configs/e2fgvi.py``).

One iteration (``core/trainer.py`` of the official code, facts in
``shared/reference/spynet_e2fgvi_basicvsrpp.md`` section 7.9):

1. ``gt`` = the clip in [-1, 1] (``num_local_frames`` consecutive frames, then ``num_ref_frames``
   reference frames), ``m`` its masks (1 = hole); the generator sees ``gt * (1 - m)`` and returns
   ``pred`` and the completed flows; ``comp = gt * (1 - m) + pred * m``.  The generator runs
   **once**; its output feeds both steps below (``jax.vjp``), as in the official code.
2. Discriminator step first: T-PatchGAN hinge loss ``(mean relu(1 - D(gt)) + mean relu(1 +
   D(sg(comp)))) / 2``, its own Adam step.  The two D calls each do one spectral-norm power
   iteration (torch ``train()`` mode), threaded through; D params, D optimizer state and the
   spectral ``u``/``v`` live in ``state.extra``.
3. Generator step with the *updated* D (a third power iteration, as the official third D call):
   ``hole_weight * hole_L1 + valid_weight * valid_L1`` (each normalised by the mean of its mask,
   over all T frames) ``+ flow_weight * flow_L1`` (completed flows vs a **frozen** SPyNet on the
   unmasked ground-truth local frames at 1/4 resolution; the frozen params are ``extra['spynet']``,
   never updated, initialised from ``model.spynet_checkpoint`` or else from the generator's own
   ``update_spynet`` at step 0) ``+ adversarial_weight * (-mean D(comp))`` ``+ stc_weight * STC``.
4. STC (``peanut_jax.losses.stc_loss``, the DESIGN.md constraint; weight 0 in ``official``): the
   occlusion-aware L1 warping error of adjacent *composited local* output frames, in [0, 1] units,
   warped with the ground-truth video's flow.  Synthetic clips carry exact flows and occlusions
   (``stc_flow``/``stc_valid``: the camera-only flow of the clean background for object removal,
   the composited video's flow for random masks); for dataset clips the frozen SPyNet's flows of the
   ground-truth local frames at full resolution are used, with the forward-backward occlusion check.

Optimisation: Adam(``b1``, ``b2``) for G and D with the ``optim`` schedule (official: 1e-4, x0.1 at
400k of 500k); ``optim.spynet_lr_mult`` is the official ``spynet_lr`` (the generator's
``update_spynet`` learning-rate multiplier; 0 freezes it and skips its backward pass).

Data (``data.source``):

``synthetic``
    ``peanut_jax.data.synthetic`` scenes of ``data.video_length`` frames; the clip is sampled like
    the official ``_sample_index`` (a random run of local frames, references drawn from the other
    frames and sorted) and rendered at exactly those times.  ``data.mask_mode``: ``'object'`` (the
    objects' footprints, optionally dilated; the ground truth is the clean background: object
    removal), ``'random'`` (E2FGVI's moving free-form masks, ground truth = the video) or
    ``'mixed'`` (object with probability ``data.object_mask_prob``).
``tfds``
    A :mod:`peanut_jax.data.tfds.inpainting` dataset (``data.tfds_name``, ``data.tfds_data_dir``),
    read with ``tfds.data_source`` + a seeded grain shuffle; frames resized to ``width x height``
    (PIL bicubic), random moving masks over the whole video (``random_video_masks``), random
    horizontal flip of the clip: the official ``TrainDataset``.

Every example is a pure function of ``(seed, step, row)``.  Batches: ``frames`` (B, T, H, W, 3)
float32 in [0, 1], ``masks`` (B, T, H, W, 1) float32 {0, 1}; synthetic also ``stc_flow``
(B, L-1, H, W, 2) and ``stc_valid`` (B, L-1, H, W).

Evaluation (held-out clips: synthetic seeds ``(data.eval_seed, 1, i)``, or the first clips of
``data.eval_split``): on the composited **local** frames in [0, 1], ``psnr`` (per clip, MSE over all
pixels, capped at 100 dB), ``psnr_hole`` (MSE over hole pixels), ``ssim`` (mmagic SSIM per frame),
``ssim_hole`` (the SSIM map averaged over the hole), ``ewarp`` (the STC quantity), and the same for
two baselines: ``*_masked`` (holes mid-grey, the generator's input) and ``*_blur`` (normalised
Gaussian-blur inpainting: each hole pixel takes the Gaussian-weighted mean of the visible pixels
of its frame at the smallest scale sigma in 1, 2, 4, ... 64 px where they carry weight), plus
``ewarp_gt``, the floor of the ground truth itself.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.traverse_util import flatten_dict, unflatten_dict
from jax import lax

from peanut_jax.data import augment as aug
from peanut_jax.data.augment import sample_indices
from peanut_jax.metrics import psnr, ssim
from peanut_jax.train import batching
from peanut_jax.train.config import config_dtype as _dtype
from peanut_jax.train.config import config_get as _get
from peanut_jax.train.state import TrainState, build_optimizer
from peanut_jax.train.tasks.spynet import zero_flow_heads

MASK_MODES = ("object", "random", "mixed")
SOURCES = ("synthetic", "tfds")
MODELS = ("e2fgvi", "e2fgvi_hq")
_WIDTH_KEYS = (
    "encoder_channels",
    "channel",
    "hidden",
    "num_blocks",
    "num_heads",
    "mlp_hidden",
    "deform_groups",
    "decoder_channels",
)


# ------------------------------------------------------------------------------------------ models
def make_model(config):
    """The generator the config describes (official widths unless ``model.<width>`` is set)."""
    from peanut_jax.models.e2fgvi import InpaintGenerator

    m = config.model
    if m.name not in MODELS:
        raise ValueError(f"config.model.name must be one of {MODELS}, got {m.name!r}")
    kw = {}
    for k in _WIDTH_KEYS:
        v = _get(m, k, None)
        if v is not None:
            kw[k] = tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else int(v)
    return InpaintGenerator(
        hq=m.name == "e2fgvi_hq",
        fix_backward_flow_idx=bool(_get(m, "fix_backward_flow_idx", False)),
        split_grouped_convs=bool(_get(m, "split_grouped_convs", False)),
        dtype=_dtype(_get(m, "dtype", "float32")),
        param_dtype=_dtype(_get(m, "param_dtype", "float32"), "config.model.param_dtype"),
        **kw,
    )


def make_discriminator(config):
    from peanut_jax.models.discriminators import TPatchGANDiscriminator

    m = config.model
    return TPatchGANDiscriminator(
        nf=int(_get(m, "disc_nf", 32)),
        dtype=_dtype(_get(m, "dtype", "float32")),
        param_dtype=_dtype(_get(m, "param_dtype", "float32"), "config.model.param_dtype"),
    )


def make_spynet():
    from peanut_jax.models.spynet import SPyNet

    return SPyNet(variant="mmagic")


def _num_frames(config) -> tuple[int, int]:
    d = config.data
    lt, rt = int(d.num_local_frames), int(d.num_ref_frames)
    if lt < 2 or rt < 0:
        raise ValueError(f"config.data.num_local_frames must be >= 2 and num_ref_frames >= 0, got {lt}, {rt}")
    return lt, rt


# -------------------------------------------------------------------------------------------- data
def synthetic_example(d, seed: tuple, num_local: int, num_ref: int, mask_mode: str) -> dict:
    """One synthetic training clip (``d`` = the ``data`` config block); see the module docstring."""
    from peanut_jax.data.masks import dilate_masks, random_video_masks
    from peanut_jax.data.synthetic import make_scene

    if mask_mode not in MASK_MODES:
        raise ValueError(f"config.data.mask_mode must be one of {MASK_MODES}, got {mask_mode!r}")
    rng = np.random.default_rng(tuple(seed) + (11,))
    length = int(d.video_length)
    h, w = int(d.height), int(d.width)
    idx = sample_indices(rng, length, num_local, num_ref)
    scene = make_scene(tuple(seed), length, h, w, **batching.scene_kwargs(d))
    clip = scene.render(idx)
    if mask_mode == "mixed":
        mask_mode = "object" if rng.random() < float(d.object_mask_prob) else "random"
    masks = None
    if mask_mode == "object":
        masks = clip.object_mask
        dil = int(d.mask_dilation)
        if dil > 0:
            masks = dilate_masks(masks, dil)
        if not masks.any():  # every object outside the clip: fall back to a random mask
            masks = None
    if masks is not None:
        gt, flow, occ = clip.background, clip.background_flow_forward, clip.background_occlusion_forward
    else:
        masks = random_video_masks(rng, length, h, w)[idx]
        gt, flow, occ = clip.frames, clip.flow_forward, clip.occlusion_forward
    return {
        "frames": gt.astype(np.float32),
        "masks": masks[..., None].astype(np.float32),
        "stc_flow": flow[: num_local - 1].astype(np.float32),
        "stc_valid": (~occ[: num_local - 1]).astype(np.float32),
    }


@functools.lru_cache(maxsize=4)
def _tfds_source(name: str, data_dir: str, split: str):
    import tensorflow_datasets as tfds

    import peanut_jax.data.tfds  # noqa: F401  (registers the builders)

    try:
        return tfds.data_source(name, data_dir=data_dir or None, split=split)
    except Exception as e:  # noqa: BLE001 - TFDS raises many types; say which dataset and where
        raise FileNotFoundError(
            f"config.data.tfds_name={name!r} split {split!r} not readable from "
            f"config.data.tfds_data_dir={data_dir!r}: {e}"
        ) from None


def tfds_example(d, record: dict, seed: tuple, num_local: int, num_ref: int, train: bool = True) -> dict:
    """One clip from a dataset record, the official ``TrainDataset.load_item`` (see module docstring).

    ``train=False`` (evaluation): the first frames and evenly spaced references, the record's masks
    when it has them (binarised, dilated like E2FGVI's test masks), no flip.
    """
    from peanut_jax.data.masks import dilate_masks, random_video_masks
    from peanut_jax.data.tfds.inpainting import decode_frames, decode_masks

    rng = np.random.default_rng(tuple(seed) + (13,))
    n = int(record["num_frames"])
    h, w = int(d.height), int(d.width)
    if train:
        idx = sample_indices(rng, n, num_local, num_ref)
    else:
        if n < num_local + num_ref:
            raise ValueError(f"eval video {record['video_id']!r} has {n} frames < {num_local + num_ref}")
        rest = np.arange(num_local, n)
        idx = (
            list(range(num_local)) + [int(rest[i]) for i in np.linspace(0, len(rest) - 1, num_ref).round().astype(int)]
            if num_ref
            else list(range(num_local))
        )
    frames = decode_frames(record["frames"], idx, size=(w, h)).astype(np.float32) / 255.0
    if not train and len(record["masks"]) >= n:
        masks = dilate_masks(decode_masks(record["masks"], idx, size=(w, h)) > 0, 4)
    else:
        masks = random_video_masks(rng, n, h, w)[idx]
    if train and bool(_get(d, "random_flip", True)):
        frames, masks = aug.random_hflip(rng, frames, masks)
    return {"frames": np.ascontiguousarray(frames), "masks": np.ascontiguousarray(masks[..., None], np.float32)}


def _check_data(config) -> None:
    d = config.data
    if d.source not in SOURCES:
        raise ValueError(f"config.data.source must be one of {SOURCES}, got {d.source!r}")
    from peanut_jax.models.e2fgvi import check_input_size

    check_input_size(int(d.height), int(d.width), config.model.name == "e2fgvi_hq")


def train_batches(config, start_step: int, process_index: int, process_count: int):
    _check_data(config)
    d = config.data
    lt, rt = _num_frames(config)
    if d.source == "synthetic":
        example, n = (lambda seed, _: synthetic_example(d, seed, lt, rt, d.mask_mode)), None
    else:
        src = _tfds_source(d.tfds_name, d.tfds_data_dir, d.split)
        example, n = (lambda seed, i: tfds_example(d, src[i], seed, lt, rt)), len(src)
    yield from batching.train_batches(config, start_step, process_index, process_count, example, n)


@functools.lru_cache(maxsize=4)
def _synthetic_eval_set(items: tuple, n: int, seed: int, lt: int, rt: int, mask_mode: str) -> dict:
    d = batching.Plain(items)
    return batching.stack([synthetic_example(d, (seed, batching.EVAL_STREAM, i), lt, rt, mask_mode) for i in range(n)])


def eval_batches(config, process_index: int, process_count: int):
    _check_data(config)
    d = config.data
    lt, rt = _num_frames(config)
    n, eb = int(d.eval_clips), int(d.eval_batch_size)
    batching.check_eval_clips(n, eb)
    if d.source == "synthetic":
        keys = ("height", "width", "video_length", "mask_dilation", "object_mask_prob") + batching.SCENE_KEYS
        data = _synthetic_eval_set(
            batching.config_items(d, keys), n, int(d.eval_seed), lt, rt, _get(d, "eval_mask_mode", None) or d.mask_mode
        )
        yield from batching.slices(data, n, eb, process_index, process_count)
    else:
        src = _tfds_source(d.tfds_name, d.tfds_data_dir, d.eval_split)
        if len(src) == 0:
            raise ValueError(f"config.data.eval_split={d.eval_split!r} of {d.tfds_name!r} is empty")
        seed = int(d.eval_seed)
        yield from batching.eval_batches(
            n,
            eb,
            process_index,
            process_count,
            lambda i: tfds_example(d, src[i % len(src)], (seed, batching.EVAL_STREAM, i), lt, rt, train=False),
        )


# ------------------------------------------------------------------------------------------- state
def _load_official(name: str, path: str, what: str):
    from peanut_jax.convert import from_official

    try:
        return from_official(name, path)[1]
    except FileNotFoundError:
        raise FileNotFoundError(f"{what}: checkpoint {path} not found") from None


def fan_in_init(rng, params, skip=("update_spynet",)):
    """Re-draw every non-zero conv/linear ``kernel`` outside ``skip`` from N(0, 1/fan_in) (LeCun).

    ``model.init='fan_in'``: the official normal(0, 0.02) is sized for the official widths (a 3x3 conv
    over 512 channels has gain 0.02 * sqrt(4608) ~ 1.4); at reduced widths it makes the signal
    vanish through the encoder (gain ~0.24 per layer at fan-in 144), and a small model then needs
    many steps just to wake up.  Zero-initialised kernels (the last offset conv) stay zero; biases
    and SPyNet are kept.
    """
    flat = flatten_dict(params)
    keys = sorted(k for k in flat if k[-1] == "kernel" and k[0] not in skip)
    out = dict(flat)
    for i, k in enumerate(keys):
        w = flat[k]
        fan_in = int(np.prod(w.shape[:-1]))
        drawn = jax.random.normal(jax.random.fold_in(rng, i), w.shape, jnp.float32) / math.sqrt(max(fan_in, 1))
        out[k] = jnp.where(jnp.any(w != 0), drawn.astype(w.dtype), w)
    return unflatten_dict(out)


def _spynet_trainable(config) -> bool:
    return float(_get(config.optim, "spynet_lr_mult", 1.0)) != 0.0


def _split(params, config):
    """(trainable generator params, frozen part): ``update_spynet`` is frozen when its lr is 0."""
    if _spynet_trainable(config):
        return params, {}
    rest = {k: v for k, v in params.items() if k != "update_spynet"}
    return rest, {"update_spynet": params["update_spynet"]}


def generator_optimizer(config):
    """(tx, schedule) for the trainable generator params (``optim.spynet_lr_mult`` as a param group)."""
    n = int(config.train.num_steps)
    tx, sched = build_optimizer(config.optim, n)
    mult = float(_get(config.optim, "spynet_lr_mult", 1.0))
    if mult in (0.0, 1.0):
        return tx, sched
    tx_sp, _ = build_optimizer(config.optim, n, lr=float(config.optim.lr) * mult)
    labels = lambda p: {
        k: jax.tree.map(lambda _: "spynet" if k == "update_spynet" else "default", v)  # noqa: E731
        for k, v in p.items()
    }
    return optax.multi_transform({"default": tx, "spynet": tx_sp}, labels), sched


def discriminator_optimizer(config):
    lr = _get(config.optim, "disc_lr", None)
    return build_optimizer(config.optim, int(config.train.num_steps), lr=None if lr is None else float(lr))


def init_state(rng, config, sample_batch) -> TrainState:
    model, disc = make_model(config), make_discriminator(config)
    lt, _ = _num_frames(config)
    g_rng, d_rng, state_rng = jax.random.split(rng, 3)
    frames = jnp.asarray(sample_batch["frames"][:1]) * 2.0 - 1.0
    params = model.init(g_rng, frames, lt)["params"]
    m = config.model
    init = _get(m, "init", "official")
    if init == "fan_in":
        params = fan_in_init(jax.random.fold_in(g_rng, 1), params)
    elif init != "official":
        raise ValueError(f"config.model.init must be 'official' or 'fan_in', got {init!r}")
    if _get(m, "checkpoint", ""):
        params = jax.tree.map(jnp.asarray, _load_official(m.name, m.checkpoint, "config.model.checkpoint")["params"])
    if _get(m, "spynet_checkpoint", ""):
        sp = _load_official("spynet", m.spynet_checkpoint, "config.model.spynet_checkpoint")["params"]
        params = dict(params, update_spynet=jax.tree.map(jnp.asarray, sp))
    elif bool(_get(m, "spynet_zero_init", False)):
        params = dict(params, update_spynet=zero_flow_heads(params["update_spynet"]))
    frozen_spynet = jax.tree.map(jnp.array, params["update_spynet"])  # a copy, never updated

    dvars = disc.init(d_rng, frames)
    if _get(m, "disc_checkpoint", ""):
        loaded = _load_official("e2fgvi_discriminator", m.disc_checkpoint, "config.model.disc_checkpoint")
        dvars = jax.tree.map(jnp.asarray, dict(loaded))
    trainable, _ = _split(params, config)
    g_tx, _ = generator_optimizer(config)
    d_tx, _ = discriminator_optimizer(config)
    extra = {
        "spynet": frozen_spynet,
        "disc_params": dvars["params"],
        "disc_spectral": dvars["spectral"],
        "disc_opt_state": d_tx.init(dvars["params"]),
    }
    return TrainState.create(params=params, opt_state=g_tx.init(trainable), rng=state_rng, extra=extra)


# ------------------------------------------------------------------------------------------ losses
def _to01(x):
    return (x + 1.0) / 2.0


# per-clip PSNR of [0, 1] clips (B, T, H, W, 3), capped at 100 dB; over the hole: ``mask=``, 0 without holes
CLIP_PSNR = dict(reduction="sample", formula="rife", mse_floor=1e-10)


def spynet_flows(spynet_params, frames01):
    """Frozen-SPyNet flows of adjacent frames (B, L, H, W, 3) -> (forward, backward), (B, L-1, H, W, 2)."""
    b, t, h, w, c = frames01.shape
    f1 = frames01[:, :-1].reshape(-1, h, w, c)
    f2 = frames01[:, 1:].reshape(-1, h, w, c)
    fl = make_spynet().apply({"params": spynet_params}, jnp.concatenate([f1, f2]), jnp.concatenate([f2, f1]))
    n = f1.shape[0]
    return (lax.stop_gradient(fl[:n].reshape(b, t - 1, h, w, 2)), lax.stop_gradient(fl[n:].reshape(b, t - 1, h, w, 2)))


def _stc(comp01_local, batch, spynet_params):
    """STC loss of the composited local frames (see the module docstring)."""
    from peanut_jax.losses import stc_loss

    if "stc_flow" in batch:
        return stc_loss(comp01_local, batch["stc_flow"], occlusion=batch["stc_valid"] < 0.5)
    gt01 = _to01(batch["_gt"][:, : comp01_local.shape[1]])
    fw, bw = spynet_flows(spynet_params, gt01)
    return stc_loss(comp01_local, fw, bw)


def _disc_apply(disc, params, spectral, clips):
    out, upd = disc.apply({"params": params, "spectral": spectral}, clips, update_stats=True, mutable=["spectral"])
    return out, upd["spectral"]


def train_step(state: TrainState, batch, config, grad_reduce):
    from peanut_jax.losses import (
        e2fgvi_flow_targets,
        flow_completion_loss,
        hinge_discriminator_loss,
        hinge_generator_loss,
        hole_loss,
        valid_loss,
    )

    model, disc = make_model(config), make_discriminator(config)
    lw = config.loss
    lt, _ = _num_frames(config)
    gt = batch["frames"] * 2.0 - 1.0
    masks = batch["masks"]
    masked = gt * (1.0 - masks)
    extra = state.extra

    # generator forward, once (vjp), w.r.t. the trainable part only
    trainable, frozen = _split(state.params, config)
    fwd = lambda p: model.apply({"params": {**p, **frozen}}, masked, lt)  # noqa: E731
    (pred, (pf_fwd, pf_bwd)), g_vjp = jax.vjp(fwd, trainable)
    pred = pred.astype(jnp.float32)
    comp = gt * (1.0 - masks) + pred * masks

    # discriminator step (before the generator step)
    adv_w = float(lw.adversarial_weight)
    metrics = {}
    d_params, d_spec, d_opt = extra["disc_params"], extra["disc_spectral"], extra["disc_opt_state"]
    if adv_w > 0:
        fake = lax.stop_gradient(comp)

        def d_loss_fn(dp):
            real_out, s1 = _disc_apply(disc, dp, d_spec, gt)
            fake_out, s2 = _disc_apply(disc, dp, s1, fake)
            real_l = jnp.mean(jax.nn.relu(1.0 - real_out))
            fake_l = jnp.mean(jax.nn.relu(1.0 + fake_out))
            return hinge_discriminator_loss(real_out, fake_out), (s2, real_l, fake_l)

        (d_loss, (d_spec, real_l, fake_l)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_params)
        d_grads = grad_reduce(d_grads)
        d_tx, _ = discriminator_optimizer(config)
        updates, d_opt = d_tx.update(d_grads, d_opt, d_params)
        d_params = optax.apply_updates(d_params, updates)
        metrics.update(dis_loss=d_loss, dis_real=real_l, dis_fake=fake_l)

    # generator losses as a function of the generator outputs
    gt01_local = _to01(gt[:, :lt])
    if float(lw.flow_weight) > 0:
        sp = make_spynet()
        flow_targets = e2fgvi_flow_targets(lambda a, b: sp.apply({"params": extra["spynet"]}, a, b), gt01_local)
    stc_w = float(lw.stc_weight)
    sbatch = dict(batch, _gt=gt)

    def g_loss_fn(outs):
        p, ff, fb = outs
        c = gt * (1.0 - masks) + p * masks
        terms = {"hole_loss": hole_loss(p, gt, masks), "valid_loss": valid_loss(p, gt, masks)}
        total = float(lw.hole_weight) * terms["hole_loss"] + float(lw.valid_weight) * terms["valid_loss"]
        spec = d_spec
        if float(lw.flow_weight) > 0:
            terms["flow_loss"] = flow_completion_loss(ff, fb, *flow_targets)
            total = total + float(lw.flow_weight) * terms["flow_loss"]
        if adv_w > 0:
            g_out, spec = _disc_apply(disc, d_params, d_spec, c)
            terms["adv_loss"] = hinge_generator_loss(g_out)
            total = total + adv_w * terms["adv_loss"]
        if stc_w > 0:
            terms["stc_loss"] = _stc(_to01(c[:, :lt]), sbatch, extra["spynet"])
            total = total + stc_w * terms["stc_loss"]
        return total, (terms, spec)

    (g_loss, (terms, d_spec)), out_grads = jax.value_and_grad(g_loss_fn, has_aux=True)((pred, pf_fwd, pf_bwd))
    cot_pred, cot_ff, cot_fb = out_grads
    (g_grads,) = g_vjp((cot_pred.astype(jnp.float32), (cot_ff, cot_fb)))
    g_grads = grad_reduce(g_grads)
    g_tx, sched = generator_optimizer(config)
    updates, opt_state = g_tx.update(g_grads, state.opt_state, trainable)
    params = {**optax.apply_updates(trainable, updates), **frozen}

    new_extra = dict(extra, disc_params=d_params, disc_spectral=d_spec, disc_opt_state=d_opt)
    state = state.replace(params=params, opt_state=opt_state, extra=new_extra)
    metrics.update(terms)
    hole = psnr(_to01(comp), batch["frames"], mask=masks, empty=0.0, **CLIP_PSNR)
    metrics.update(loss=g_loss, psnr_hole=jnp.mean(hole), grad_norm=optax.global_norm(g_grads), lr=sched(state.step))
    return state, metrics


# -------------------------------------------------------------------------------------- evaluation
def _gauss_taps(sigma: float, size: int) -> np.ndarray:
    r = int(min(math.ceil(3 * sigma), size - 1))
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return (g / g.sum()).astype(np.float32)


def _sep_filter(x, taps_h, taps_w):
    """Zero-padded separable correlation of (N, H, W, C) ('same' size)."""
    c = x.shape[-1]
    for taps, axis in ((taps_h, 0), (taps_w, 1)):
        k = len(taps)
        shape = (k, 1, 1, c) if axis == 0 else (1, k, 1, c)
        kern = jnp.broadcast_to(jnp.asarray(taps).reshape(shape[:2] + (1, 1)), shape)
        pad = ((k // 2, k // 2), (0, 0)) if axis == 0 else ((0, 0), (k // 2, k // 2))
        x = lax.conv_general_dilated(
            x,
            kern,
            (1, 1),
            pad,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=c,
            precision=lax.Precision.HIGHEST,
        )
    return x


BLUR_SIGMAS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


def blur_fill(frames01, masks, sigmas=BLUR_SIGMAS):
    """Normalised Gaussian-blur inpainting of (N, H, W, 3) frames with (N, H, W, 1) masks (1 = hole).

    Each hole pixel gets ``G_s * (x * v) / G_s * v`` (v = visible) at the smallest ``s`` where the
    visible weight ``G_s * v`` exceeds 1e-3; pixels no scale reaches take the mean visible colour.
    """
    n, h, w, _ = frames01.shape
    vis = 1.0 - masks
    x = frames01 * vis
    out = x
    filled = vis > 0.5
    for s in sigmas:
        num = _sep_filter(x, _gauss_taps(s, h), _gauss_taps(s, w))
        den = _sep_filter(vis, _gauss_taps(s, h), _gauss_taps(s, w))
        take = (~filled) & (den > 1e-3)
        out = jnp.where(take, num / jnp.maximum(den, 1e-12), out)
        filled = filled | take
    mean = jnp.sum(x, axis=(1, 2), keepdims=True) / jnp.maximum(jnp.sum(vis, axis=(1, 2), keepdims=True), 1.0)
    out = jnp.where(filled, out, mean)
    return frames01 * vis + out * masks


def _quality(comp01, gt01, masks, stc_args) -> dict:
    """PSNR/SSIM overall and in the hole, Ewarp, for (B, L, H, W, 3) composited local frames."""
    from peanut_jax.metrics import warping_error

    b, t, h, w, c = comp01.shape
    frames, ref = comp01.reshape(-1, h, w, c), gt01.reshape(-1, h, w, c)
    fw, bw, occ = stc_args
    return {
        "psnr": jnp.mean(psnr(comp01, gt01, **CLIP_PSNR)),
        "psnr_hole": jnp.mean(psnr(comp01, gt01, mask=masks, empty=0.0, **CLIP_PSNR)),
        "ssim": ssim(frames, ref, reduction="all"),
        "ssim_hole": ssim(frames, ref, mask=masks.reshape(-1, h, w, 1), reduction="all"),
        "ewarp": warping_error(comp01, fw, bw, occ),
    }


def eval_step(state: TrainState, batch, config):
    model = make_model(config)
    lt, _ = _num_frames(config)
    gt01 = batch["frames"]
    gt = gt01 * 2.0 - 1.0
    masks = batch["masks"]
    pred, _ = model.apply({"params": state.params}, gt * (1.0 - masks), lt)
    comp01 = _to01(gt * (1.0 - masks) + pred.astype(jnp.float32) * masks)
    gl, ml = gt01[:, :lt], masks[:, :lt]
    if "stc_flow" in batch:
        stc_args = (batch["stc_flow"], None, batch["stc_valid"] < 0.5)
    else:
        fw, bw = spynet_flows(state.extra["spynet"], gl)
        stc_args = (fw, bw, None)
    b, _, h, w, c = gl.shape
    out = _quality(comp01[:, :lt], gl, ml, stc_args)
    masked01 = gl * (1.0 - ml) + 0.5 * ml
    blurred = blur_fill(gl.reshape(-1, h, w, c), ml.reshape(-1, h, w, 1)).reshape(gl.shape)
    for name, video in (("masked", masked01), ("blur", blurred)):
        out.update({f"{k}_{name}": v for k, v in _quality(video, gl, ml, stc_args).items()})
    from peanut_jax.metrics import warping_error

    out["ewarp_gt"] = warping_error(gl, *stc_args)
    out["hole_fraction"] = jnp.mean(ml)
    return out


def describe(config) -> str:
    d, m = config.data, config.model
    lt, rt = _num_frames(config)
    src = d.source if d.source == "synthetic" else f"{d.tfds_name}:{d.split}"
    return (
        f"{m.name} ({m.get('dtype', 'float32')}) on {src} {d.height}x{d.width} clips of {lt}+{rt} frames, "
        f"batch {d.batch_size}, STC weight {config.loss.stc_weight}"
    )
