"""RIFE (ECCV 2022 IFNet with the privileged teacher) training: ``configs/rife.py``.

Objective (official ``RIFE.update``)::

    loss = w_l1 * Lap(merged[2], gt) + w_tea * Lap(merged_teacher, gt) + w_distill * loss_distill
           (+ w_census * mean(ternary(merged[2], gt)) + w_sobel * mean(sobel(merged[2], gt))
            + w_vgg * perceptual(merged[2], gt) + w_epe * mean(EPE(flow[2], flow_gt)))

with ``Lap`` the 5-level Laplacian pyramid L1 (``peanut_jax.losses.laplacian_loss``), ``merged[2]``
the refined output, and the official weights ``1, 1, 0.01`` (the last four terms are off by
default: ``loss.census``, ``loss.sobel``, ``loss.vgg`` (needs ``loss.vgg_checkpoint``, torchvision
``vgg19`` weights), ``loss.epe`` (needs ground-truth flow: synthetic data only; ``flow_gt`` is the
exact flow from the middle frame to I0 and to I1, RIFE's 4-channel layout)).

Optimiser (official ``train.py``): AdamW (beta 0.9 / 0.999, decoupled weight decay ``1e-3`` scaled by
the rate, as torch's ``AdamW``), learning rate ``3e-4 * step / 2000`` for 2000 steps, then cosine to
``3e-6`` at ``train.num_steps`` (``optim.schedule='warmup_cosine'``).  The official script multiplies
the rate by ``world_size / 4`` with 16 triplets per GPU, i.e. the rate scales with the global batch
relative to 64: ``optim.reference_batch = 64`` applies ``lr * batch_size / 64`` (0 disables it).

Data (``data.source``):

``vimeo90k``
    the ``vimeo90k_triplet`` TFDS builder (``data.tfds_data_dir``; split ``train`` = the first 95% of
    ``tri_trainlist``, evaluation on ``validation`` or ``test``), items in a seeded grain shuffle
    reshuffled every epoch.
``synthetic``
    procedural triplets (``peanut_jax.data.synthetic``, seeds ``(seed, 0, step, row)``) with the
    middle frame rendered exactly at t = 0.5 (or a random t for ``model.timestep_input`` with
    ``data.random_timestep``).

Augmentation (official ``VimeoDataset``, in order, each p = 0.5 unless stated): random
``data.crop`` square crop, channel flip (RGB <-> BGR), vertical flip, horizontal flip, temporal swap
of I0 and I1 (t -> 1 - t), rotation by 90 CW / 180 / 90 CCW with p = 0.25 each.  Evaluation uses
uncropped frames.  Random numbers of example ``row`` at step ``s`` come from ``(seed, 0, s, row)``.

Evaluation: PSNR ``-10 log10(mse)`` of the output (and of the teacher's frame) per triplet, as the
official validation, and of the average of the two inputs (``psnr_average``, the baseline); SSIM of
the output (mmagic definition).

Batches: ``{'img0', 'img1', 'gt': (B, H, W, 3), 'timestep': (B,)}`` float32 (+ ``'flow'`` (B, H, W, 4)
for synthetic data with ``loss.epe > 0``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from peanut_jax.data import augment as aug
from peanut_jax.metrics import psnr, ssim
from peanut_jax.train import batching
from peanut_jax.train.config import config_dtype as _dtype
from peanut_jax.train.config import config_get as _get
from peanut_jax.train.state import TrainState, build_optimizer

SOURCES = ("synthetic", "vimeo90k")


# ------------------------------------------------------------------------------------------ model
def make_model(config):
    from peanut_jax.models.rife import IFNet

    m = config.model
    return IFNet(
        timestep_input=bool(_get(m, "timestep_input", False)),
        widths=tuple(int(w) for w in _get(m, "widths", (240, 150, 90, 90))),
        context_c=int(_get(m, "context_c", 16)),
        dtype=_dtype(_get(m, "dtype", "float32")),
        param_dtype=_dtype(_get(m, "param_dtype", "float32")),
    )


def peak_lr(config) -> float:
    """``optim.lr`` times ``batch_size / optim.reference_batch`` (the official ``world_size / 4``)."""
    lr = float(config.optim.lr)
    ref = int(_get(config.optim, "reference_batch", 0) or 0)
    return lr * int(config.data.batch_size) / ref if ref > 0 else lr


def make_optimizer(config):
    return build_optimizer(config.optim, int(config.train.num_steps), lr=peak_lr(config))


# ------------------------------------------------------------------------------------------- data
def synthetic_triplet(d, seed: tuple, t: float = 0.5, with_flow: bool = False):
    """(img0, gt, img1, flow|None) float32 of a synthetic triplet rendered at times 0, t*gap, gap.

    ``flow`` (H, W, 4): the exact flow from the middle frame to img0 (channels 0:2) and to img1
    (2:4), RIFE's layout (``warp(img0, flow[..., :2]) ~ gt`` outside occlusions).
    """
    from peanut_jax.data.synthetic import make_scene

    gap = float(_get(d, "gap", 1.0))
    h, w = int(d.height), int(d.width)
    scene = make_scene(seed, 2, h, w, duration=gap, **batching.scene_kwargs(d))
    clip = scene.render([0.0, t * gap, gap])
    f = clip.frames.astype(np.float32)
    # quantise like 8-bit video frames
    f = np.round(np.clip(f, 0.0, 1.0) * 255.0).astype(np.float32) / 255.0
    flow = None
    if with_flow:
        flow = np.concatenate([clip.flow_backward[0], clip.flow_forward[1]], axis=-1).astype(np.float32)
    return f[0], f[1], f[2], flow


def _needs_flow(config) -> bool:
    return float(_get(config.loss, "epe", 0.0)) > 0


def _timestep(d, config, rng) -> float:
    if bool(_get(config.model, "timestep_input", False)) and bool(_get(d, "random_timestep", False)):
        return float(rng.uniform(0.1, 0.9))
    return 0.5


class _Source:
    def __init__(self, d, split: str):
        from peanut_jax.data.tfds import vsr

        self.src, _ = vsr.open_split("vimeo90k_triplet", d.tfds_data_dir, split, None)
        if len(self.src) == 0:
            raise ValueError(f"vimeo90k_triplet split {split!r} is empty")

    def __len__(self):
        return len(self.src)

    def load(self, i: int):
        from peanut_jax.data.tfds.common import decode_many

        rec = self.src[int(i)]
        name = rec["name"].decode() if isinstance(rec["name"], bytes) else str(rec["name"])
        f = decode_many(list(rec["frames"]), f"vimeo90k_triplet {name}")
        return f[0], f[1], f[2]


@functools.lru_cache(maxsize=4)
def _open(items: tuple, split: str) -> _Source:
    return _Source(batching.Plain(items), split)


def _crop(d):
    c = _get(d, "crop", None)
    if not c:
        return None
    c = tuple(int(v) for v in (c if isinstance(c, (list, tuple)) else (c, c)))
    return c


def _check(config) -> None:
    from peanut_jax.models.rife import check_input_size

    d = config.data
    if d.source not in SOURCES:
        raise ValueError(f"config.data.source must be one of {SOURCES}, got {d.source!r}")
    if d.source != "synthetic" and not _get(d, "tfds_data_dir", None):
        raise ValueError(f"config.data.tfds_data_dir is required for data.source={d.source!r}")
    if _needs_flow(config) and d.source != "synthetic":
        raise ValueError("config.loss.epe > 0 needs ground-truth flow: only data.source='synthetic' has it")
    if float(_get(config.loss, "vgg", 0.0)) > 0 and not _get(config.loss, "vgg_checkpoint", ""):
        raise ValueError("config.loss.vgg > 0 needs config.loss.vgg_checkpoint (torchvision vgg19 weights)")
    c = _crop(d)
    if c is not None:
        check_input_size(c[0], c[1], (4, 2, 1), True, "config.data.crop")
        for side in c:
            if side % 32 or side < 64:
                raise ValueError(
                    f"config.data.crop={c}: the Laplacian loss needs sides that are multiples of 32 and >= 64"
                )


def _to_float(x):
    return np.asarray(x, np.float32) / (255.0 if np.asarray(x).dtype == np.uint8 else 1.0)


def train_example(config, source, item, seed: tuple) -> dict:
    d = config.data
    rng = np.random.default_rng(seed + (7,))
    flow = None
    if source is None:
        t = _timestep(d, config, rng)
        img0, gt, img1, flow = synthetic_triplet(d, seed, t, _needs_flow(config))
    else:
        img0, gt, img1 = (_to_float(a) for a in source.load(item))
        t = 0.5
    img0, gt, img1, t, flow = aug.triplet(img0, gt, img1, t, rng, _crop(d), d, flow)
    out = {"img0": img0, "img1": img1, "gt": gt, "timestep": np.float32(t)}
    if flow is not None:
        out["flow"] = flow
    return out


def train_batches(config, start_step: int, process_index: int, process_count: int):
    _check(config)
    source, n = batching.train_source(config, _open)

    def example(seed, item):
        return train_example(config, source, item, seed)

    yield from batching.train_batches(config, start_step, process_index, process_count, example, n, np.float32)


def _plain_example(img0, gt, img1, flow=None) -> dict:
    e = {"img0": img0, "img1": img1, "gt": gt, "timestep": np.float32(0.5)}
    if flow is not None:
        e["flow"] = flow
    return e


@functools.lru_cache(maxsize=4)
def _synthetic_eval_set(items: tuple, n: int, seed: int, with_flow: bool) -> dict:
    d = batching.Plain(items)
    return batching.stack(
        [_plain_example(*synthetic_triplet(d, (seed, batching.EVAL_STREAM, i), 0.5, with_flow)) for i in range(n)],
        np.float32,
    )


def eval_batches(config, process_index: int, process_count: int):
    _check(config)
    d = config.data
    eb = int(d.eval_batch_size)
    if d.source == "synthetic":
        n = int(d.eval_clips)
        batching.check_eval_clips(n, eb)
        data = _synthetic_eval_set(batching.config_items(d), n, int(d.eval_seed), _needs_flow(config))
        yield from batching.slices(data, n, eb, process_index, process_count)
        return
    source = _open(batching.config_items(d), str(_get(d, "eval_split", "validation")))
    n = batching.eval_size(d, len(source), "triplets")
    yield from batching.eval_batches(
        n,
        eb,
        process_index,
        process_count,
        lambda i: _plain_example(*(_to_float(a) for a in source.load(i))),
        np.float32,
    )


def sample_batch(config) -> dict:
    d = config.data
    c = _crop(d) or (int(_get(d, "height", 256)), int(_get(d, "width", 448)))
    z = np.zeros((1, c[0], c[1], 3), np.float32)
    out = {"img0": z, "img1": z, "gt": z, "timestep": np.full((1,), 0.5, np.float32)}
    if _needs_flow(config):
        out["flow"] = np.zeros((1, c[0], c[1], 4), np.float32)
    return out


# ------------------------------------------------------------------------------------------ state
def init_params(config) -> dict:
    """Initial parameters: torch's default initialisation drawn on the host with numpy
    (``peanut_jax.models.rife.init_params``, seeded by ``config.seed``: compiling ~190 threefry
    initialisers takes minutes on a CPU), or ``model.init_checkpoint`` (an official ``flownet.pkl``,
    an exported directory or an orbax checkpoint)."""
    from peanut_jax.models.rife import init_params as host_init

    model = make_model(config)
    ckpt = _get(config.model, "init_checkpoint", "") or ""
    if ckpt:
        from peanut_jax.checkpoints import load

        try:
            _, variables = load(ckpt, "rife", timestep_input=model.timestep_input)
        except FileNotFoundError:
            raise FileNotFoundError(f"config.model.init_checkpoint: checkpoint not found: {ckpt}") from None
        params = variables["params"]
        ref = jax.eval_shape(lambda: host_init(model, 0))["params"]
        if jax.tree.map(lambda x: tuple(x.shape), ref) != jax.tree.map(lambda x: tuple(np.shape(x)), params):
            raise ValueError(
                "config.model.init_checkpoint: the checkpoint's parameters do not match the "
                "configured model (check model.widths / model.context_c / model.timestep_input)"
            )
        return jax.tree.map(jnp.asarray, params)
    return host_init(model, seed=int(config.seed))["params"]


def init_state(rng, config, sample_batch) -> TrainState:
    del sample_batch
    params = jax.tree.map(
        lambda x: jnp.asarray(x, jnp.dtype(_get(config.model, "param_dtype", "float32"))), init_params(config)
    )
    tx, _ = make_optimizer(config)
    return TrainState.create(params=params, opt_state=tx.init(params), rng=jax.random.fold_in(rng, 1))


# -------------------------------------------------------------------------------------- the loss
@functools.lru_cache(maxsize=2)
def _vgg_params(path: str):
    from peanut_jax.convert import from_official

    return from_official("vgg19", path)[1]


def losses(model, params, batch, config) -> tuple[jax.Array, dict]:
    """(total loss, named terms) of the official objective plus the optional weighted terms."""
    from peanut_jax.losses import laplacian_loss, perceptual_loss, sobel, ternary_loss
    from peanut_jax.losses.flow import epe

    L = config.loss
    gt = batch["gt"]
    out = model.apply({"params": params}, batch["img0"], batch["img1"], gt=gt, timestep=batch["timestep"])
    pred = out.merged[2]
    terms = {
        "loss_l1": laplacian_loss(pred, gt),
        "loss_tea": laplacian_loss(out.merged_teacher, gt),
        "loss_distill": out.loss_distill,
    }
    weights = {
        "loss_l1": float(_get(L, "l1", 1.0)),
        "loss_tea": float(_get(L, "teacher", 1.0)),
        "loss_distill": float(_get(L, "distill", 0.01)),
    }
    if float(_get(L, "census", 0.0)) > 0:
        terms["loss_census"] = jnp.mean(ternary_loss(pred, gt))
        weights["loss_census"] = float(L.census)
    if float(_get(L, "sobel", 0.0)) > 0:
        terms["loss_sobel"] = jnp.mean(sobel(pred, gt))
        weights["loss_sobel"] = float(L.sobel)
    if float(_get(L, "vgg", 0.0)) > 0:
        terms["loss_vgg"] = perceptual_loss(_vgg_params(str(L.vgg_checkpoint)), pred, gt)
        weights["loss_vgg"] = float(L.vgg)
    if float(_get(L, "epe", 0.0)) > 0:
        f, g = out.flow_list[2], batch["flow"]
        terms["loss_epe"] = 0.5 * (jnp.mean(epe(f[..., :2], g[..., :2])) + jnp.mean(epe(f[..., 2:], g[..., 2:])))
        weights["loss_epe"] = float(L.epe)
    total = sum(weights[k] * terms[k] for k in terms)
    return total, terms


def train_step(state: TrainState, batch, config, grad_reduce):
    model = make_model(config)
    tx, schedule = make_optimizer(config)
    (loss, terms), grads = jax.value_and_grad(lambda p: losses(model, p, batch, config), has_aux=True)(state.params)
    grads = grad_reduce(grads)
    lr = schedule(state.step)
    state = state.apply_gradients(tx, grads)
    return state, {"loss": loss, **terms, "lr": lr, "grad_norm": optax.global_norm(grads)}


def eval_step(state: TrainState, batch, config):
    model = make_model(config)
    gt = batch["gt"]
    out = model.apply({"params": state.params}, batch["img0"], batch["img1"], gt=gt, timestep=batch["timestep"])
    avg = 0.5 * (batch["img0"] + batch["img1"])
    p, p_avg = jnp.mean(psnr(out.merged[2], gt, formula="rife")), jnp.mean(psnr(avg, gt, formula="rife"))
    return {
        "psnr": p,
        "psnr_teacher": jnp.mean(psnr(out.merged_teacher, gt, formula="rife")),
        "psnr_average": p_avg,
        "ssim": jnp.mean(ssim(out.merged[2], gt)),
        "ssim_average": jnp.mean(ssim(avg, gt)),
        "psnr_gain": p - p_avg,
    }


def describe(config) -> str:
    d, m = config.data, config.model
    return (
        f"RIFE IFNet widths {tuple(m.widths)} ctx {m.context_c}{' +t' if m.timestep_input else ''} on "
        f"{d.source}, crop {_crop(d)}, batch {d.batch_size}, peak lr {peak_lr(config):.3g}"
    )
