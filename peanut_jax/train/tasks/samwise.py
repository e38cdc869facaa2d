"""SAMWISE training (``configs/samwise.py``): the official recipe and a tiny synthetic one.

Model (``config.model``): :class:`peanut_jax.models.samwise.SAMWISE` built from the
``SAMWISEConfig`` fields in ``model`` (``sam2_size``, ``hsa``, ``use_cme``, ``pred_obj_scores``, text
encoder sizes for the tiny model, ...).  The training forward is ``SAMWISE(train=True).forward_clips``
(official ``model.train()``: dropout in the frozen RoBERTa, the memory attention, HSA and the CME;
the adapters' BatchNorm on the statistics of the whole batch, i.e. all B*T frames of every device:
under the ``mesh`` strategy the batch is one global array, so the mean is global (SyncBatchNorm);
under ``pmap`` the BatchNorm averages over the ``'data'`` axis); every clip starts with an empty
memory bank.  The running statistics live in ``state.extra['batch_stats']`` (torch momentum 0.1).

Trainable parameters (``model.trainable``): ``'official'`` = every parameter whose path contains
``adapter``, ``conditional_memory_encoder`` or ``project_text`` (the SAM 2 and RoBERTa weights stay
frozen: they are not differentiated and stay bit-identical); ``'all'`` = everything (the tiny recipe:
no pretrained tiny backbone exists); ``'no_text'`` = everything but the text encoder (a frozen
``model.init_text`` with a SAM 2 trained from scratch).  The optimizer state covers the trainable part only.

Loss (:mod:`peanut_jax.losses.segmentation`): sigmoid focal (alpha 0.25, gamma 2) + dice on the
with-memory masks of every frame, the ground truth zero-padded to a multiple of 32 and the logits
resized to it (``loss_masks``), each per clip and averaged over the clips; with the CME (``use_cme``)
``+ weighted_cross_entropy(cme_logits, labels, [1, 2], ignore -1)`` over the frames where the CME
ran (``f > cme_window``, i.e. frames 5..T-1 of an 8-frame clip), labels by
``same_object_labels`` from the with-memory and memory-less masks at the input size; 0 when no frame
is labelled (official).  Optimizer: ``optim`` (AdamW, weight decay 0, ``multistep`` at 60k steps x 0.1,
clip by global norm).

Data (``data.source``):

``synthetic``
    :func:`peanut_jax.data.referring.referring_clip` clips (``data.num_frames`` frames of
    ``data.height x data.width``, ``data.num_objects`` objects, ``data.distractors``); row ``r`` of
    step ``s`` draws seed ``(seed, 0, s, r)`` and refers to one object chosen from that seed
    (``data.objects_per_clip=k`` > 1: rows come in groups of k on the clip of seed ``(seed, 0, s,
    r // k)``, each referring to another of its objects, so a batch holds the same frames with
    different sentences and targets); the
    sentence is tokenised by :func:`peanut_jax.data.referring.synthetic_tokenizer` and padded to
    ``data.max_tokens``.
``ref_youtube_vos`` | ``mevis`` | ``refcoco``
    The TFDS builders of :mod:`peanut_jax.data.tfds` (``data.data_dir``), clips sampled as SAMWISE
    samples them by :mod:`peanut_jax.data.rvos_clips`; see :func:`open_official_split`.  The run
    length of the official recipe is ``data.epochs * items // data.batch_size`` (a warning names it
    when ``train.num_steps`` differs).  No held-out evaluation during training (``data.eval_clips=0``).

Batches: ``frames`` uint8 (B, T, H, W, 3), ``input_ids`` int32 (B, L), ``padding_mask`` bool (B, L)
(True at pads), ``masks`` uint8 (B, T, H, W); evaluation batches also ``objects`` uint8
(B, K, T, H, W), every object's mask.  Frames are ImageNet-normalised on the device.

Evaluation (held-out synthetic clips, seeds ``(data.eval_seed, 1, i)``, object ``i % K``), in
inference mode (running BatchNorm statistics, no dropout, object-score masking, CME decisions):
``J`` = region similarity of ``logits > 0`` (DAVIS protocol: per-frame Jaccard, 1 when both masks
are empty, mean over the frames of a clip, then over clips; the same rule as
``peanut_jax.metrics.jf.jaccard``), and two baselines computed from the ground truth:
``J_random_object`` (the expected J of predicting a uniformly random object of the clip) and
``J_union`` (predicting the union of all objects); the boundary measure ``F`` (DAVIS protocol,
:func:`peanut_jax.metrics.jf.f_measure_jax`, on the device: no host callback, so it also runs
sharded and under ``pmap``) and ``JF = (J + F) / 2``, each with the same two baselines.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.traverse_util import flatten_dict, unflatten_dict

from peanut_jax.train import batching
from peanut_jax.train.config import config_dtype as _dtype
from peanut_jax.train.config import config_get as _get
from peanut_jax.train.config import model_fields
from peanut_jax.train.state import TrainState, build_optimizer

TRAINABLE_KEYS = ("adapter", "conditional_memory_encoder", "project_text")
TRAINABLE_MODES = ("official", "all", "no_text")
SOURCES = ("synthetic", "ref_youtube_vos", "mevis", "refcoco")
CME_CLASS_WEIGHTS = (1.0, 2.0)

# config.model keys that are not SAMWISEConfig fields
# config.model keys the task reads itself (the others are SAMWISEConfig fields)
_TASK_KEYS = ("hiera_per_frame", "trainable", "init_from", "init_sam2", "init_text")


# ------------------------------------------------------------------------------------------ model
def model_config(config):
    """The ``SAMWISEConfig`` of ``config.model`` (its SAMWISEConfig fields; tuples from lists)."""
    from peanut_jax.models.samwise.config import get_config

    m = config.model
    kw = model_fields(m, _TASK_KEYS)
    size = kw.pop("sam2_size", "base_plus")
    try:
        return get_config(size, **kw)
    except TypeError as e:
        raise ValueError(f"config.model: {e}") from None


def make_model(config, train: bool = False):
    """SAMWISE for training (``train=True``: dropout, batch statistics) or evaluation."""
    from peanut_jax.models.samwise import SAMWISE

    m = config.model
    return SAMWISE(
        model_config(config),
        dtype=_dtype(_get(m, "dtype", "float32")),
        param_dtype=_dtype(_get(m, "param_dtype", "float32"), "config.model.param_dtype"),
        hiera_per_frame=bool(_get(m, "hiera_per_frame", True)),
        train=train,
        bn_axis_name="data" if train and _get(config, "parallel", "mesh") == "pmap" else None,
    )


def is_trainable(path: tuple, mode: str) -> bool:
    """Whether the parameter at ``path`` (a tuple of names) trains under ``model.trainable=mode``."""
    if mode == "all":
        return True
    if mode == "no_text":
        return str(path[0]) != "text_encoder"
    if mode == "official":
        name = "/".join(str(p) for p in path)
        return any(k in name for k in TRAINABLE_KEYS)
    raise ValueError(f"config.model.trainable must be one of {TRAINABLE_MODES}, got {mode!r}")


def split_params(params, mode: str):
    """``(trainable, frozen)`` nested dicts whose union is ``params``."""
    flat = flatten_dict(params)
    tr = {k: v for k, v in flat.items() if is_trainable(k, mode)}
    fr = {k: v for k, v in flat.items() if k not in tr}
    return unflatten_dict(tr), unflatten_dict(fr)


def merge_params(trainable, frozen):
    return unflatten_dict({**flatten_dict(frozen), **flatten_dict(trainable)})


def trainable_mode(config) -> str:
    mode = str(_get(config.model, "trainable", "official"))
    if mode not in TRAINABLE_MODES:
        raise ValueError(f"config.model.trainable must be one of {TRAINABLE_MODES}, got {mode!r}")
    return mode


def count_params(params, mode: str) -> tuple[int, int]:
    """(trainable, total) parameter counts (works on ``jax.eval_shape`` trees)."""
    flat = flatten_dict(params)
    total = sum(int(np.prod(v.shape)) for v in flat.values())
    return sum(int(np.prod(v.shape)) for k, v in flat.items() if is_trainable(k, mode)), total


# ------------------------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=1)
def _tokenizer():
    from peanut_jax.data.referring import synthetic_tokenizer

    return synthetic_tokenizer()


def tokenize(sentence: str, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    ids, pm = _tokenizer()([sentence], pad_to=int(max_tokens))
    return ids[0], pm[0]


def synthetic_example(d, seed: tuple, obj: int | None = None, with_objects: bool = False) -> dict:
    """One referring clip (``d`` = the ``data`` block); ``obj`` = the referred object (default: drawn
    from ``seed``)."""
    from peanut_jax.data.referring import referring_clip

    k = int(d.num_objects)
    clip, sentences, targets = referring_clip(
        seed, int(d.num_frames), int(d.height), int(d.width), k, bool(d.distractors)
    )
    if obj is None:
        obj = int(np.random.default_rng([*seed, 7]).integers(k))
    ids, pm = tokenize(sentences[obj], int(d.max_tokens))
    out = {
        "frames": clip,
        "input_ids": ids,
        "padding_mask": pm,
        "masks": targets[obj].astype(np.uint8),
        "valid_hw": np.asarray(clip.shape[1:3], np.int32),  # no padding (the official data's format)
    }
    if with_objects:
        out["objects"] = targets.astype(np.uint8)
    return out


@functools.lru_cache(maxsize=2)
def open_official_split(items: tuple, split: str):
    """The :class:`peanut_jax.data.rvos_clips.ClipSource` of an official dataset (``data.source``)
    built in ``data.data_dir``: one item per (video, expression, start frame every ``num_frames``)
    (RefCOCO: per sentence of RefCOCO, RefCOCO+ and RefCOCOg), ``data.sampling`` frame sampling,
    frames resized so that the longer side is ``data.max_size`` and padded to ``data.height x
    data.width``, captions by the RoBERTa tokenizer ``data.tokenizer`` (default ``gpt2_bpe``)."""
    from peanut_jax.data.rvos_clips import REFCOCO_CONFIGS, ClipSource
    from peanut_jax.text.files import load_tokenizer

    d = batching.Plain(items)
    data_dir = str(_get(d, "data_dir", "") or "")
    if not data_dir:
        raise ValueError(
            f"config.data.data_dir is required for data.source={d.source!r} (the TFDS folder the "
            "builders of peanut_jax.data.tfds wrote), e.g. --config.data.data_dir=/data/tfds"
        )
    return ClipSource(
        d.source,
        data_dir,
        split,
        tokenizer=load_tokenizer(_get(d, "tokenizer", None), flag="config.data.tokenizer"),
        num_frames=int(d.num_frames),
        sampling=str(_get(d, "sampling", "local")),
        max_size=int(_get(d, "max_size", 1024)),
        height=int(d.height),
        width=int(d.width),
        max_tokens=int(d.max_tokens),
        refcoco_configs=tuple(_get(d, "refcoco_configs", REFCOCO_CONFIGS)),
    )


def official_num_steps(config, source) -> int:
    """``data.epochs * items // data.batch_size``: the official run length on this copy of the data
    (a warning is logged when ``train.num_steps`` differs)."""
    d = config.data
    n = source.num_steps(int(_get(d, "epochs", 1)), int(d.batch_size))
    if int(config.train.num_steps) != n:
        from absl import logging

        logging.warning(
            "config.train.num_steps=%d; %s epochs of the %d %s items at batch %d are %d steps "
            "(--config.train.num_steps=%d)",
            int(config.train.num_steps), _get(d, "epochs", 1), len(source), d.source, int(d.batch_size), n, n,
        )  # fmt: skip
    return n


def _check_source(d) -> None:
    if d.source not in SOURCES:
        raise ValueError(f"config.data.source must be one of {SOURCES}, got {d.source!r}")


def train_batches(config, start_step: int, process_index: int, process_count: int):
    d = config.data
    _check_source(d)
    if d.source != "synthetic":
        source, n = batching.train_source(config, open_official_split)
        official_num_steps(config, source)
        yield from batching.train_batches(config, start_step, process_index, process_count, source.example, n)
        return
    k = int(_get(d, "objects_per_clip", 1))
    if k < 1 or k > int(d.num_objects):
        raise ValueError(f"config.data.objects_per_clip must be in 1..num_objects={d.num_objects}, got {k}")

    def example(seed, _):
        if k == 1:
            return synthetic_example(d, seed)
        # rows r of a step come in groups of k sharing one clip, each referring to another object
        clip_seed = (*seed[:-1], seed[-1] // k)
        first = int(np.random.default_rng([*clip_seed, 7]).integers(int(d.num_objects)))
        return synthetic_example(d, clip_seed, obj=(first + seed[-1] % k) % int(d.num_objects))

    yield from batching.train_batches(config, start_step, process_index, process_count, example)


_EVAL_KEYS = ("num_frames", "height", "width", "num_objects", "distractors", "max_tokens")


@functools.lru_cache(maxsize=4)
def _eval_set(items: tuple, n: int, seed: int) -> dict:
    d = batching.Plain(items)
    k = int(d.num_objects)
    return batching.stack(
        [synthetic_example(d, (seed, batching.EVAL_STREAM, i), obj=i % k, with_objects=True) for i in range(n)]
    )


def eval_batches(config, process_index: int, process_count: int):
    d = config.data
    _check_source(d)
    if d.source != "synthetic":
        if int(_get(d, "eval_clips", 0) or 0) > 0:
            raise ValueError(
                f"config.data.eval_clips={d.eval_clips}: held-out evaluation during training runs on synthetic "
                f"clips only; with data.source={d.source!r} set data.eval_clips=0 (as the official recipe, "
                "which evaluates after training) and score checkpoints with the RVOS evaluation"
            )
        return
    n, eb = int(d.eval_clips), int(d.eval_batch_size)
    batching.check_eval_clips(n, eb)
    data = _eval_set(batching.config_items(d, _EVAL_KEYS), n, int(d.eval_seed))
    yield from batching.slices(data, n, eb, process_index, process_count)


# ----------------------------------------------------------------------------------------- steps
def normalise_frames(frames_u8):
    from peanut_jax.models.sam2.sam2 import normalize_u8

    return normalize_u8(frames_u8)


def init_state(rng, config, sample_batch) -> TrainState:
    m = config.model
    if trainable_mode(config) == "no_text" and not (_get(m, "init_text", "") or _get(m, "init_from", "")):
        raise ValueError(
            "config.model.trainable='no_text' freezes the text encoder, but config.model.init_text is empty: "
            "a frozen random text encoder gives every sentence the same prompt; pretrain one with "
            "`train.py --config configs/roberta.py:tiny --workdir runs/text_tiny` and pass "
            "--config.model.init_text=runs/text_tiny"
        )
    model = make_model(config, train=False)
    init_rng, state_rng = jax.random.split(rng)
    f = sample_batch["frames"]
    frame = jnp.zeros((1, *f.shape[2:]), jnp.float32)  # one frame initialises every parameter
    variables = model.init(init_rng, frame, jnp.asarray(sample_batch["input_ids"][:1]))
    params, batch_stats = variables["params"], variables["batch_stats"]
    params, batch_stats = load_initial_weights(config, params, batch_stats)
    trainable, _ = split_params(params, trainable_mode(config))
    tx, _ = build_optimizer(config.optim, int(config.train.num_steps))
    return TrainState.create(
        params=params, opt_state=tx.init(trainable), rng=state_rng, extra={"batch_stats": batch_stats}
    )


def _fit(key: str, spec: str, got: dict, want: dict) -> dict:
    """``got`` cast to ``want``'s dtypes after checking that it has every leaf of ``want`` with its shape."""
    a, b = flatten_dict(want), flatten_dict(got)
    bad = sorted("/".join(k) for k in a if k not in b or tuple(b[k].shape) != tuple(a[k].shape))
    if bad:
        raise ValueError(f"config.model.{key}={spec}: the weights do not fit the model ({', '.join(bad[:4])}, ...)")
    return unflatten_dict({k: jnp.asarray(b[k], v.dtype) for k, v in a.items()})


def load_initial_weights(config, params, batch_stats):
    """The initial weights: ``model.init_from`` (a SAMWISE checkpoint: registry name, official file or
    workdir, via ``peanut_jax.load``) replaces every variable; ``model.init_sam2`` (SAM 2) and
    ``model.init_text`` (RoBERTa) replace the ``sam`` and ``text_encoder`` parts (image pretraining:
    adapters, CME and ``project_text`` keep their random initialisation).  Weights are read on the host."""
    from peanut_jax.checkpoints import load

    m = config.model
    spec = str(_get(m, "init_from", "") or "")
    if spec:
        _, v = load(spec, "samwise", flag="config.model.init_from", progress=False)
        params = _fit("init_from", spec, v["params"], params)
        batch_stats = _fit("init_from", spec, v.get("batch_stats", {}), batch_stats)
    for key, part, family in (("init_sam2", "sam", "sam2"), ("init_text", "text_encoder", "roberta")):
        spec = str(_get(m, key, "") or "")
        if spec:
            _, v = load(spec, family, flag=f"config.model.{key}", progress=False)
            params = dict(params, **{part: _fit(key, spec, v["params"], params[part])})
    return params, batch_stats


def forward_losses(model, params, batch_stats, batch, rng, use_cme: bool):
    """``(loss, (terms, new_batch_stats))`` of one training forward."""
    from peanut_jax.losses.segmentation import mask_losses, same_object_labels, weighted_cross_entropy
    from peanut_jax.models.samwise import SAMWISE

    out, upd = model.apply(
        {"params": params, "batch_stats": batch_stats},
        normalise_frames(batch["frames"]),
        batch["input_ids"],
        batch["padding_mask"],
        method=SAMWISE.forward_clips,
        rngs={"dropout": rng},
        mutable=["batch_stats"],
    )
    region = None
    if "valid_hw" in batch:
        # official data: the loss covers the batch's largest clip rounded up to 32 (the official collate
        # pads a batch to its largest clip, the ground truth then to a multiple of 32), not the fixed
        # data.height x width padding.  Under pmap the largest clip is the device's (per-GPU collate),
        # under jit the global batch's.  Where that clip is not a multiple of 32 the official code
        # stretches its prediction to the rounded size; here the rows in between score their own.
        region = jnp.max(batch["valid_hw"], axis=0)
        region = (region + 31) // 32 * 32
    terms = mask_losses(out["pred_masks"], batch["masks"], region_hw=region)
    if use_cme:
        labels = same_object_labels(
            jax.lax.stop_gradient(out["pred_masks"]), out["nomem_masks"], out["nomem_object_score_logits"]
        )
        labels = jnp.where(out["cme_run"], labels, -1)
        terms["loss_cme"] = weighted_cross_entropy(out["cme_logits"], labels, CME_CLASS_WEIGHTS)
        terms["cme_labelled"] = jnp.mean((labels >= 0).astype(jnp.float32))
        terms["cme_switch_label"] = jnp.sum((labels == 1).astype(jnp.float32)) / jnp.maximum(
            jnp.sum((labels >= 0).astype(jnp.float32)), 1.0
        )
    loss = sum(v for k, v in terms.items() if k.startswith("loss_"))
    return loss, (terms, upd["batch_stats"])


def train_step(state: TrainState, batch, config, grad_reduce):
    model = make_model(config, train=True)
    use_cme = model.cfg.use_cme
    trainable, frozen = split_params(state.params, trainable_mode(config))
    tx, schedule = build_optimizer(config.optim, int(config.train.num_steps))

    def loss_fn(tp):
        return forward_losses(
            model, merge_params(tp, frozen), state.extra["batch_stats"], batch, state.step_rng(0), use_cme
        )

    (loss, (terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    grads = grad_reduce(grads)
    updates, opt_state = tx.update(grads, state.opt_state, trainable)
    params = merge_params(optax.apply_updates(trainable, updates), frozen)
    state = state.replace(params=params, opt_state=opt_state, extra=dict(state.extra, batch_stats=batch_stats))
    metrics = {"loss": loss, **terms, "grad_norm": optax.global_norm(grads), "lr": schedule(state.step)}
    return state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}


def clip_jaccard(pred, gt):
    """Mean over frames of the per-frame Jaccard index (1 where both are empty): (B, T, H, W) bool -> (B,)."""
    from peanut_jax.metrics.jf import jaccard_jax

    return jnp.mean(jaccard_jax(pred, gt), axis=-1)


def clip_f(pred, gt):
    """Mean over frames of the DAVIS boundary F (``peanut_jax.metrics.jf.f_measure_jax``, on the
    device): (B, T, H, W) bool -> (B,)."""
    from peanut_jax.metrics.jf import f_measure_jax

    return jnp.mean(f_measure_jax(pred, gt), axis=-1)


def eval_step(state: TrainState, batch, config):
    from peanut_jax.losses.segmentation import resize_logits
    from peanut_jax.models.samwise import SAMWISE

    model = make_model(config, train=False)
    out = model.apply(
        {"params": state.params, "batch_stats": state.extra["batch_stats"]},
        normalise_frames(batch["frames"]),
        batch["input_ids"],
        batch["padding_mask"],
        method=SAMWISE.forward_clips,
    )
    gt = batch["masks"] > 0
    pred = resize_logits(out["pred_masks"], gt.shape[-2:]) > 0
    objects = batch["objects"] > 0  # (B, K, T, H, W)
    k = objects.shape[1]
    union = jnp.any(objects, axis=1)
    out = {}
    for name, fn in (("J", clip_jaccard), ("F", clip_f)):
        out[name] = jnp.mean(fn(pred, gt))
        out[f"{name}_random_object"] = jnp.mean(jnp.stack([fn(objects[:, i], gt) for i in range(k)]))
        out[f"{name}_union"] = jnp.mean(fn(union, gt))
    for suffix in ("", "_random_object", "_union"):
        out[f"JF{suffix}"] = (out[f"J{suffix}"] + out[f"F{suffix}"]) / 2
    return out


def describe(config) -> str:
    d, m = config.data, config.model
    cfg = model_config(config)
    parts = [
        f"SAMWISE {cfg.sam2_size} (HSA {cfg.hsa}, CME {cfg.use_cme}, object scores {cfg.pred_obj_scores})",
        f"trains {trainable_mode(config)} parameters",
        f"on {d.source} clips of {d.num_frames} frames {d.height}x{d.width}, global batch {d.batch_size}",
    ]
    if _get(m, "init_from", ""):
        parts.append(f"from {m.init_from}")
    return ", ".join(parts)
