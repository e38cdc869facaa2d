"""SAM 2 trained on click / box prompts, image mode (``configs/sam2.py``).

The purpose: a segmentation-pretrained SAM 2 for the ``tiny`` SAMWISE recipe, the way the released
SAMWISE starts from a pretrained (and frozen) SAM 2.  No pretrained tiny SAM 2 exists, so
``configs/sam2.py:tiny`` trains the SAMWISE ``tiny_test`` SAM 2 (v2.0) from scratch on synthetic
frames of :func:`peanut_jax.data.referring.referring_clip` (the SAMWISE recipe's own scenes), and
``configs/samwise.py:tiny`` then reads it with ``--config.model.init_sam2=WORKDIR``.

What is official and what is not (SAM 2 ``training/``, ``sam2.1_hiera_b+_MOSE_finetune.yaml``):
- Loss (official ``MultiStepMultiMasksAndIous``): ``20 * focal + dice + iou + class`` with the
  multimask rule: focal (alpha 0.25, gamma 2) and dice are computed for each of the 3 output masks
  and the mask with the lowest ``20 * focal + dice`` is supervised; the IoU head regresses the
  actual IoU of all 3 masks with an L1 loss (``supervise_all_iou``, ``iou_use_l1_loss``); the
  object-score head gets a plain BCE (focal with gamma 0, no alpha) towards "object present".
  Every term is a mean over the batch's objects.  Predicted masks are upsampled bilinearly to the
  frame size before the mask losses.
- Prompts: one positive click drawn uniformly inside the object's mask, or (``data.box_fraction``,
  official ``prob_to_use_box_input_for_train`` 0.5 x pt 0.5) its bounding box jittered by up to 10%
  of its side per coordinate.  Boxes enter as the prompt encoder's corner points (labels 2, 3); a
  click's second slot is a padding point hidden from attention (``point_mask``).
- Not official: single images (the official recipe trains 8-frame video clips with memory and
  corrective clicks), multimask output for box prompts too, and the data.

Batches: ``frames`` (B, H, W, 3) uint8, ``masks`` (B, H, W) uint8, ``point_coords`` (B, 2, 2) float32
in pixels (x, y), ``point_labels`` (B, 2) int32, ``point_mask`` (B, 2) bool.  Evaluation reports the
IoU of the mask the model picks (highest predicted IoU) and of the best of its 3 masks on
``data.eval_clips`` held-out frames (seeds ``(data.eval_seed, 1, i)``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from peanut_jax.train import batching
from peanut_jax.train.config import build_configured
from peanut_jax.train.config import config_get as _get
from peanut_jax.train.state import TrainState, build_optimizer

# official SAM 2 loss weights (weight_dict of the training configs)
LOSS_WEIGHTS = {"loss_mask": 20.0, "loss_dice": 1.0, "loss_iou": 1.0, "loss_class": 1.0}


# ------------------------------------------------------------------------------------------ model
def make_model(config):
    return build_configured(config, "sam2")


# ------------------------------------------------------------------------------------------- data
def prompt_for(mask: np.ndarray, rng: np.random.Generator, box: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(coords (2, 2) float32 (x, y) pixels, labels (2,) int32, valid (2,) bool)`` for a non-empty
    ``mask`` (H, W): a click inside it, or its jittered bounding box (corners, labels 2 and 3)."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ValueError("prompt_for: the mask is empty")
    if box:
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
        side = np.array([x1 - x0 + 1, y1 - y0 + 1, x1 - x0 + 1, y1 - y0 + 1], np.float64)
        b = np.array([x0, y0, x1, y1], np.float64) + rng.uniform(-0.1, 0.1, 4) * side
        h, w = mask.shape
        b = np.clip(b, 0, [w - 1, h - 1, w - 1, h - 1])
        coords = np.array([[min(b[0], b[2]), min(b[1], b[3])], [max(b[0], b[2]), max(b[1], b[3])]], np.float32)
        return coords, np.array([2, 3], np.int32), np.array([True, True])
    i = int(rng.integers(len(ys)))
    coords = np.array([[xs[i], ys[i]], [0.0, 0.0]], np.float32)
    return coords, np.array([1, -1], np.int32), np.array([True, False])


def make_example(d, seed: tuple, box_fraction: float) -> dict:
    """One prompted frame (``d`` = the ``data`` block): an object of a one-frame referring scene
    that is visible in it, with its mask and a click or box prompt drawn from ``seed``."""
    from peanut_jax.data.referring import referring_clip

    rng = np.random.default_rng([*seed, 11])
    for attempt in range(8):
        clip, _, targets = referring_clip(
            (*seed, attempt) if attempt else seed,
            1,
            int(d.height),
            int(d.width),
            int(d.num_objects),
            bool(d.distractors),
        )
        visible = [i for i in range(targets.shape[0]) if targets[i, 0].any()]
        if visible:
            break
    else:
        raise ValueError(f"no visible object in 8 scenes drawn from seed {seed}")
    obj = visible[int(rng.integers(len(visible)))]
    mask = targets[obj, 0]
    coords, labels, valid = prompt_for(mask, rng, bool(rng.random() < box_fraction))
    return {
        "frames": clip[0],
        "masks": mask.astype(np.uint8),
        "point_coords": coords,
        "point_labels": labels,
        "point_mask": valid,
    }


def train_batches(config, start_step: int, process_index: int, process_count: int):
    d = config.data
    if str(_get(d, "source", "synthetic")) != "synthetic":
        raise ValueError(f"config.data.source must be 'synthetic' for the sam2 task, got {d.source!r}")
    frac = float(_get(d, "box_fraction", 0.25))
    yield from batching.train_batches(
        config, start_step, process_index, process_count, lambda seed, _: make_example(d, seed, frac)
    )


_EVAL_KEYS = ("height", "width", "num_objects", "distractors", "box_fraction")


@functools.lru_cache(maxsize=4)
def _eval_set(items: tuple, n: int, seed: int) -> dict:
    d = batching.Plain(items)
    return batching.stack([make_example(d, (seed, batching.EVAL_STREAM, i), d.box_fraction) for i in range(n)])


def eval_batches(config, process_index: int, process_count: int):
    d = config.data
    n, eb = int(d.eval_clips), int(d.eval_batch_size)
    batching.check_eval_clips(n, eb)
    data = _eval_set(batching.config_items(d, _EVAL_KEYS), n, int(d.eval_seed))
    yield from batching.slices(data, n, eb, process_index, process_count)


# ----------------------------------------------------------------------------------------- steps
def init_state(rng, config, sample_batch) -> TrainState:
    model = make_model(config)
    init_rng, state_rng = jax.random.split(rng)
    size = model.cfg.image_size
    params = model.init(init_rng, jnp.zeros((1, size, size, 3), jnp.float32))["params"]
    tx, _ = build_optimizer(config.optim, int(config.train.num_steps))
    return TrainState.create(params=params, opt_state=tx.init(params), rng=state_rng)


def _forward(model, params, batch) -> dict:
    """Multimask heads on the batch's prompts; ``masks`` (B, 3, H, W) logits at the frame size."""
    import flax.linen as nn

    from peanut_jax.losses.segmentation import resize_logits
    from peanut_jax.models.sam2.sam2 import normalize_u8

    frames = batch["frames"]
    size = model.cfg.image_size
    if tuple(frames.shape[1:3]) != (size, size):
        raise ValueError(f"sam2 task: frames must be {size}x{size} (the model's image size), got {frames.shape[1:3]}")

    def run(mdl):
        feats = mdl.encode_image(normalize_u8(frames))
        pix = mdl.add_no_memory(feats["vision"])
        return mdl.sam_heads(
            pix,
            feats["high_res"],
            batch["point_coords"],
            batch["point_labels"],
            multimask=True,
            point_mask=batch["point_mask"],
        )

    out = nn.apply(run, model)({"params": params})
    out["masks"] = resize_logits(out["low_res_multimasks"], frames.shape[1:3])
    return out


def _per_mask(fn, logits, targets):
    """``fn`` (a (B, ...) -> mean-over-B loss) for every (object, mask) pair: (B, M)."""
    b, m = logits.shape[:2]
    flat = logits.reshape(b * m, 1, *logits.shape[2:])
    t = jnp.broadcast_to(targets[:, None], logits.shape).reshape(flat.shape)
    return jax.vmap(fn)(flat, t).reshape(b, m)


def mask_ious(logits, masks):
    """IoU of each predicted mask (logits > 0) with the object's mask: (B, M)."""
    pred = logits > 0
    gt = (masks > 0)[:, None]
    inter = jnp.sum(pred & gt, axis=(-2, -1)).astype(jnp.float32)
    union = jnp.sum(pred | gt, axis=(-2, -1)).astype(jnp.float32)
    return jnp.where(union > 0, inter / jnp.maximum(union, 1.0), 1.0)


def losses(out, masks) -> dict:
    """The official SAM 2 loss terms (unweighted; see the module docstring)."""
    from peanut_jax.losses.segmentation import dice_loss, sigmoid_focal_loss

    gt = masks.astype(jnp.float32)
    focal = _per_mask(sigmoid_focal_loss, out["masks"], gt)
    dice = _per_mask(dice_loss, out["masks"], gt)
    best = jnp.argmin(jax.lax.stop_gradient(LOSS_WEIGHTS["loss_mask"] * focal + dice), axis=1)
    pick = lambda x: jnp.take_along_axis(x, best[:, None], axis=1)[:, 0]  # noqa: E731
    actual = jax.lax.stop_gradient(mask_ious(out["masks"], masks))
    score = out["object_score_logits"][:, 0].astype(jnp.float32)
    return {
        "loss_mask": jnp.mean(pick(focal)),
        "loss_dice": jnp.mean(pick(dice)),
        "loss_iou": jnp.mean(jnp.abs(out["ious"].astype(jnp.float32) - actual)),
        "loss_class": jnp.mean(optax.sigmoid_binary_cross_entropy(score, jnp.ones_like(score))),
    }


def train_step(state: TrainState, batch, config, grad_reduce):
    model = make_model(config)
    tx, schedule = build_optimizer(config.optim, int(config.train.num_steps))

    def loss_fn(params):
        terms = losses(_forward(model, params, batch), batch["masks"])
        return sum(LOSS_WEIGHTS[k] * v for k, v in terms.items()), terms

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = grad_reduce(grads)
    state = state.apply_gradients(tx, grads)
    return state, {"loss": loss, **terms, "grad_norm": optax.global_norm(grads), "lr": schedule(state.step)}


def eval_step(state: TrainState, batch, config):
    out = _forward(make_model(config), state.params, batch)
    ious = mask_ious(out["masks"], batch["masks"])
    chosen = jnp.take_along_axis(ious, out["best"][:, None], axis=1)[:, 0]
    return {"iou": jnp.mean(chosen), "iou_best_of_3": jnp.mean(jnp.max(ious, axis=1))}


def describe(config) -> str:
    d, m = config.data, config.model
    return (
        f"SAM 2 ({m.size}, v{m.version}) on click/box prompts, synthetic {d.height}x{d.width} frames, "
        f"batch {d.batch_size}"
    )
