"""Frame interpolation stage: RIFE pairs and streaming videos.

* :func:`interpolate_pair` - one pair (or a batch of pairs) at a timestep ``t`` in (0, 1).  Models
  with a timestep input (``IFNet(timestep_input=True)``) predict any t directly; the official ECCV
  IFNet and IFNet_HDv3 always predict the midpoint, so other dyadic t (k / 2^n) are reached by
  recursive bisection, and non-dyadic t is refused.
* :func:`interpolate_video` - a lazy generator over an iterable of frames: ``multi`` x the frame
  rate (2, 4, 8, ...), or a target ``fps``; pairs are batched into one jitted call per batch (fixed
  batch size, so one compilation), frames are zero-padded bottom/right to the model multiple
  (:func:`model_multiple`: 32 for ``scale=1``, 64 for ``scale=0.5``, 128 for v4-style models) and
  cropped back.  Only ``batch_size + 1`` input frames and their intermediates are held at a time.
* Scene cuts and duplicates: the RIFE/CogVideoX rule - ``ssim_matlab`` of 32x32 bilinear thumbnails
  (align_corners=False) of the two frames; below ``cut_threshold`` (0.2) the intermediates are
  copies of the first frame (a cut is never morphed); above ``dup_threshold`` (0.996) they are
  copies of the first frame too (``on_duplicate='copy'``, nothing to morph) or interpolated
  normally (``'interpolate'``).
* ``cogvideo_compat=True`` reproduces CogVideoX's ``ssim_interpolation_rife`` exactly (for its
  numbers): thumbnails of the *padded* frames; the last frame is paired with itself, so the output
  has ``T * multi`` frames; for a near-duplicate pair the second frame is replaced by
  ``model(I0, I0)``, which also replaces the emitted frame; every emitted frame is zero-padded and
  resized back with torch ``nearest`` instead of cropped (a black strip on the right/bottom when
  the size is not a multiple of 32).  Default (``False``): crop, ``(T - 1) * multi + 1`` frames.

Frames are (H, W, 3) RGB arrays: uint8 (output uint8, rounded to nearest) or float in [0, 1]
(output float32, not clipped: IFNet_HDv3 does not clamp).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

from peanut_jax.metrics.ssim_matlab import ssim_matlab
from peanut_jax.models.rife import required_multiple
from peanut_jax.ops import interpolate as _resize
from peanut_jax.pipeline.chain import Frame, Stage

__all__ = [
    "interpolate_pair",
    "interpolate_video",
    "model_multiple",
    "pad_to_multiple",
    "crop",
    "scale_list_for",
    "has_timestep_input",
    "scene_ssim",
    "output_frame_count",
    "schedule",
    "InterpolateStage",
]

SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
_MAX_BISECTION_DEPTH = 12


# ---------------------------------------------------------------------------------------------
# small helpers (host side, outside jit)


def scale_list_for(scale: float = 1.0) -> tuple:
    """Official ``Model.inference(..., scale)``: ``scale_list = (4, 2, 1) / scale`` (0.5 for 4K)."""
    if float(scale) not in SCALES:
        raise ValueError(f"scale must be one of {SCALES} (as the official inference scripts), got {scale!r}")
    return tuple(s / float(scale) for s in (4.0, 2.0, 1.0))


def model_multiple(module, scale: float = 1.0) -> int:
    """Padding multiple for ``module`` at ``scale``: ``max(base, int(base / scale))``, base = the
    model's ``pad_base`` (32 for RIFE IFNet/HDv3; 128 for v4-style models)."""
    return required_multiple(scale_list_for(scale), getattr(module, "pad_base", 32))


def has_timestep_input(module) -> bool:
    return bool(getattr(module, "timestep_input", False))


def pad_to_multiple(x: np.ndarray, multiple: int):
    """Zero-pad (..., H, W, C) on the bottom/right to multiples of ``multiple``; returns (padded, (h, w))."""
    h, w = x.shape[-3], x.shape[-2]
    ph = -(-h // multiple) * multiple
    pw = -(-w // multiple) * multiple
    if (ph, pw) == (h, w):
        return x, (h, w)
    pad = [(0, 0)] * x.ndim
    pad[-3] = (0, ph - h)
    pad[-2] = (0, pw - w)
    return np.pad(x, pad), (h, w)


def crop(x, hw):
    return x[..., : hw[0], : hw[1], :]


def _to_float(frame) -> np.ndarray:
    a = np.asarray(frame)
    if a.dtype == np.uint8:
        return a.astype(np.float32) / np.float32(255.0)
    return a.astype(np.float32)


def _from_float(x: np.ndarray, uint8: bool) -> np.ndarray:
    if uint8:
        return np.clip(np.rint(np.asarray(x, np.float32) * 255.0), 0, 255).astype(np.uint8)
    return np.asarray(x, np.float32)


@jax.jit
def _thumb_ssim(a, b):
    """Per-pair ssim_matlab of 32x32 bilinear thumbnails (the scene-cut / duplicate measure)."""
    ta = _resize(a, size=(32, 32), mode="bilinear", align_corners=False)
    tb = _resize(b, size=(32, 32), mode="bilinear", align_corners=False)
    return ssim_matlab(ta[..., :3], tb[..., :3], reduce="none")


def scene_ssim(img0, img1) -> np.ndarray:
    """``ssim_matlab`` of the 32x32 thumbnails of each pair, (N,) for (N, H, W, 3) inputs."""
    a = jnp.asarray(img0, jnp.float32)
    b = jnp.asarray(img1, jnp.float32)
    return np.array(_thumb_ssim(a, b))


def _pair_ssim(a: Sequence[np.ndarray], b: Sequence[np.ndarray], batch: int) -> np.ndarray:
    """:func:`scene_ssim` of the pairs (a[i], b[i]) in fixed-size batches (one compilation)."""
    out = []
    for s in range(0, len(a), batch):
        aa, bb = list(a[s : s + batch]), list(b[s : s + batch])
        m = len(aa)
        aa += [aa[-1]] * (batch - m)
        bb += [bb[-1]] * (batch - m)
        out.append(scene_ssim(np.stack(aa), np.stack(bb))[:m])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _is_dyadic(t: float, depth: int = _MAX_BISECTION_DEPTH) -> int | None:
    """n such that t = k / 2^n exactly (smallest), or None."""
    for n in range(1, depth + 1):
        k = t * 2**n
        if abs(k - round(k)) < 1e-9:
            return n
    return None


# ---------------------------------------------------------------------------------------------
# batched jitted model calls


@functools.lru_cache(maxsize=32)
def _jitted(module, scale_list: tuple, tta: bool):
    def run(variables, a, b, t):
        return module.apply(variables, a, b, timestep=t, scale_list=scale_list, tta=tta)

    return jax.jit(run)


class _Runner:
    """Runs lists of (img0, img1, t) jobs on padded frames in fixed-size jitted batches."""

    def __init__(self, module, variables, scale: float, tta: bool, batch_size: int):
        self.module, self.variables = module, variables
        self.fn = _jitted(module, scale_list_for(scale), bool(tta))
        self.batch_size = int(batch_size)
        self.calls = 0

    def __call__(self, a: Sequence[np.ndarray], b: Sequence[np.ndarray], t: Sequence[float]) -> list[np.ndarray]:
        out = []
        bs = self.batch_size
        for s in range(0, len(a), bs):
            aa, bb, tt = list(a[s : s + bs]), list(b[s : s + bs]), list(t[s : s + bs])
            m = len(aa)
            while len(aa) < bs:  # fixed batch: one compilation per frame size
                aa.append(aa[-1]), bb.append(bb[-1]), tt.append(tt[-1])
            res = self.fn(
                self.variables, jnp.asarray(np.stack(aa)), jnp.asarray(np.stack(bb)), jnp.asarray(tt, jnp.float32)
            )
            self.calls += 1
            res = np.asarray(res)
            out.extend(res[i] for i in range(m))
        return out


def _intermediates(
    runner: _Runner,
    pairs: list[tuple[np.ndarray, np.ndarray]],
    ts: Sequence[Sequence[float]],
    timestep_model: bool,
    depth: int | None,
) -> list[list[np.ndarray]]:
    """For every pair i, the frames at the timesteps ``ts[i]`` (padded arrays), batched over pairs.

    Timestep models: one job per (pair, t).  Midpoint-only models: the bisection tree of ``depth``
    levels (t = k / 2^depth), level by level, each level batched over all pairs: the same frames as
    the official recursive ``make_inference``.
    """
    if not pairs:
        return []
    if timestep_model:
        jobs = [(i, float(t)) for i in range(len(pairs)) for t in ts[i]]
        res = runner([pairs[i][0] for i, _ in jobs], [pairs[i][1] for i, _ in jobs], [t for _, t in jobs])
        table = {job: r for job, r in zip(jobs, res)}
        return [[table[(i, float(t))] for t in ts[i]] for i in range(len(pairs))]
    den = 2**depth
    known = [{0: p[0], den: p[1]} for p in pairs]
    for level in range(1, depth + 1):
        step = den // 2**level
        pos = list(range(step, den, 2 * step))
        jobs = [(i, k) for i in range(len(pairs)) for k in pos]
        res = runner([known[i][k - step] for i, k in jobs], [known[i][k + step] for i, k in jobs], [0.5] * len(jobs))
        for (i, k), r in zip(jobs, res):
            known[i][k] = r
    return [[known[i][int(round(t * den))] for t in ts[i]] for i in range(len(pairs))]


# ---------------------------------------------------------------------------------------------
# public API


def _check_t(t, n: int):
    ta = np.asarray(t, np.float64).reshape(-1)
    if ta.size not in (1, n):
        raise ValueError(f"t must be a scalar or one value per pair ({n}), got shape {np.shape(t)}")
    if not np.all((ta > 0) & (ta < 1)):
        raise ValueError(f"t must lie strictly between 0 and 1, got {t!r}")
    return ta


def interpolate_pair(
    module, variables, img0, img1, t=0.5, *, scale: float = 1.0, tta: bool = False, batch_size: int | None = None
) -> np.ndarray:
    """The frame at time ``t`` between ``img0`` and ``img1``.

    ``img0``/``img1``: (H, W, 3) or (N, H, W, 3) float in [0, 1] (or uint8), same shape.  ``t``: a
    scalar or (N,) in (0, 1).  Pads to :func:`model_multiple`, runs jitted, crops back; returns
    float32 with the input's rank.  Midpoint-only models need a dyadic t (k / 2^n), reached by
    bisection (exactly the official recursive midpoints).
    """
    a = _to_float(img0)
    b = _to_float(img1)
    if a.shape != b.shape:
        raise ValueError(f"interpolate_pair: img0 {a.shape} and img1 {b.shape} must have the same shape")
    single = a.ndim == 3
    if single:
        a, b = a[None], b[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"interpolate_pair: frames must be (H, W, 3) or (N, H, W, 3), got {np.shape(img0)}")
    n = a.shape[0]
    ta = _check_t(t, n)
    mult = model_multiple(module, scale)
    ap, hw = pad_to_multiple(a, mult)
    bp, _ = pad_to_multiple(b, mult)
    runner = _Runner(module, variables, scale, tta, batch_size or n)
    pairs = [(ap[i], bp[i]) for i in range(n)]
    if has_timestep_input(module):
        tt = np.broadcast_to(ta, (n,))
        res = runner([p[0] for p in pairs], [p[1] for p in pairs], [float(x) for x in tt])
    else:
        if np.unique(ta).size != 1:
            raise ValueError("interpolate_pair: a model without timestep input needs one t for all pairs")
        t0 = float(ta[0])
        depth = _is_dyadic(t0)
        if depth is None:
            raise ValueError(
                f"t={t0} is not dyadic (k/2^n): {type(module).__name__} has no timestep input and only predicts "
                "midpoints; use a timestep model (IFNet(timestep_input=True)) for arbitrary t"
            )
        res = [r[0] for r in _intermediates(runner, pairs, [[t0]] * n, False, depth)]
    out = crop(np.stack(res), hw)
    return out[0] if single else out


def output_frame_count(n_frames: int, multi: int = 2, cogvideo_compat: bool = False) -> int:
    """Frames produced by :func:`interpolate_video` for ``n_frames`` inputs at ``multi``."""
    return n_frames * multi if cogvideo_compat else (n_frames - 1) * multi + 1


#: how the rate arguments are named in messages: the Python API's names by default; each command
#: passes its own flags (``infer.py interpolate``: --multi/--fps/--in-fps; the chain: --interpolate)
API_NAMES = {
    "multi": "multi",
    "fps": "fps",
    "in_fps": "in_fps",
    "timestep_model": "use a timestep model (IFNet(timestep_input=True)) for other factors",
}
CLI_NAMES = {
    "multi": "--multi",
    "fps": "--fps",
    "in_fps": "--in-fps",
    "timestep_model": "weights of a RIFE with a timestep input (train.py --config configs/rife.py:rifem) "
    "take any factor",
}


def schedule(multi, fps, in_fps, timestep_model: bool, model_name: str, flags: dict | None = None):
    """-> (step Fraction: source frames per output frame, depth for bisection or None).  ``flags``
    renames the arguments in error messages (see :data:`API_NAMES`)."""
    f = {**API_NAMES, **(flags or {})}

    def name(key, value):  # "multi=3" (Python) or "--multi 3" (command line)
        return f"{f[key]} {value}" if f[key].startswith("-") else f"{f[key]}={value}"

    if fps is not None:
        if multi not in (None, 2):
            raise ValueError(f"give either {f['multi']} or {f['fps']}, not both")
        if in_fps is None or float(in_fps) <= 0:
            raise ValueError(f"{f['fps']} needs the input frame rate {f['in_fps']} (> 0)")
        if float(fps) <= 0:
            raise ValueError(f"{f['fps']} must be > 0, got {fps!r}")
        step = Fraction(str(in_fps)).limit_denominator(1_000_000) / Fraction(str(fps)).limit_denominator(1_000_000)
        if step > 1:
            raise ValueError(
                f"target {name('fps', fps)} is below the input rate {in_fps}: interpolation only raises the rate"
            )
        ratio = 1 / step
        if not timestep_model:
            if ratio.denominator != 1 or ratio.numerator & (ratio.numerator - 1):
                raise ValueError(
                    f"{name('fps', fps)} / input rate {in_fps} = {float(ratio):g} is not a power of two: {model_name} "
                    f"has no timestep input and only predicts midpoints (2x, 4x, 8x ... by recursion); "
                    f"{f['timestep_model']}"
                )
            return step, int(math.log2(ratio.numerator)) or None
        return step, None
    multi = 2 if multi is None else multi
    if not isinstance(multi, (int, np.integer)) or multi < 1:
        raise ValueError(f"{f['multi']} must be a positive integer, got {multi!r}")
    if not timestep_model and multi & (multi - 1):
        raise ValueError(
            f"{name('multi', multi)} is not a power of two: {model_name} has no timestep input and only predicts "
            f"midpoints, so it can only multiply the frame rate by 2, 4, 8, ... (recursive bisection); "
            f"{f['timestep_model']}"
        )
    depth = int(math.log2(multi)) if not timestep_model and multi > 1 else None
    return Fraction(1, int(multi)), depth


def interpolate_video(
    frames: Iterable,
    module,
    variables,
    multi: int | None = 2,
    *,
    fps: float | None = None,
    in_fps: float | None = None,
    scale: float = 1.0,
    tta: bool = False,
    batch_size: int = 4,
    scene_detect: bool = True,
    dup_threshold: float = 0.996,
    cut_threshold: float = 0.2,
    on_duplicate: str = "copy",
    cogvideo_compat: bool = False,
    progress: bool = False,
    total: int | None = None,
) -> Iterator[np.ndarray]:
    """Interpolate a stream of frames; returns a generator of output frames (H, W, 3).

    ``multi``: rate factor (any integer >= 1 for timestep models, a power of two otherwise); or
    ``fps`` with the input rate ``in_fps`` (output frame j is at source time j * in_fps / fps; for
    midpoint-only models fps / in_fps must be a power of two).  Arguments are checked here, frames
    while streaming (a size change or a one-frame clip raises ValueError before anything of that
    chunk is yielded).
    """
    name = type(module).__name__
    tsm = has_timestep_input(module)
    step, depth = schedule(multi, fps, in_fps, tsm, name)
    scale_list_for(scale)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if on_duplicate not in ("copy", "interpolate"):
        raise ValueError(f"on_duplicate must be 'copy' or 'interpolate', got {on_duplicate!r}")
    if cogvideo_compat and (fps is not None or tsm):
        raise ValueError(
            "cogvideo_compat reproduces CogVideoX's midpoint pipeline: use multi=2^k with a model "
            "without timestep input (rife_hdv3 as CogVideoX)"
        )
    if total is None and hasattr(frames, "__len__"):
        total = len(frames)
    runner = _Runner(module, variables, scale, tta, batch_size)
    mult = model_multiple(module, scale)
    gen = _stream_compat if cogvideo_compat else _stream
    return gen(
        iter(frames),
        runner,
        mult,
        step,
        depth,
        tsm,
        int(batch_size),
        scene_detect,
        float(dup_threshold),
        float(cut_threshold),
        on_duplicate,
        progress,
        total,
    )


def _read(it, first_shape, index):
    try:
        f = next(it)
    except StopIteration:
        return None
    a = np.asarray(f)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"frame {index}: expected an (H, W, 3) RGB frame, got shape {a.shape}")
    if first_shape is not None and a.shape != first_shape:
        raise ValueError(
            f"frame {index}: size {a.shape[:2]} differs from the first frame's {first_shape[:2]}; "
            "all frames of a clip must have the same size"
        )
    return a


def _progress(progress, total):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="interpolate", unit="frame")


def _chunks(it, bs: int) -> Iterator:
    """Read ``it`` in chunks of up to ``bs + 1`` frames, consecutive
    chunks sharing one frame: yields ``(base, frames, last)``, ``base`` the index of ``frames[0]``.
    Refuses an empty or one-frame clip and frames of another size than the first."""
    first = _read(it, None, 0)
    if first is None:
        raise ValueError("interpolate_video: the clip has no frames (needs at least 2)")
    frames, base, exhausted = [first], 0, False
    while True:
        while not exhausted and len(frames) < bs + 1:
            f = _read(it, first.shape, base + len(frames))
            if f is None:
                exhausted = True
            else:
                frames.append(f)
        if base == 0 and len(frames) < 2:
            raise ValueError("interpolate_video: the clip has a single frame; interpolation needs at least 2")
        yield base, frames, exhausted
        if exhausted:
            return
        base += len(frames) - 1
        frames = frames[-1:]


def _stream(it, runner, mult, step, depth, tsm, bs, scene_detect, dup_thr, cut_thr, on_dup, progress, total):
    bar = _progress(progress, total)
    j = 0  # next output index; its source position is j * step
    uint8 = None
    for base, frames, last_chunk in _chunks(it, bs):
        if uint8 is None:
            shape, uint8 = frames[0].shape, frames[0].dtype == np.uint8
        n_pairs = len(frames) - 1
        # outputs whose position lies in [base, base + n_pairs) (+ the final frame on the last chunk)
        jobs = []  # (pair index, t) in output order, t == 0 -> the source frame
        limit = base + n_pairs
        while j * step < limit or (last_chunk and j * step == limit):
            pos = j * step
            i = int(pos) - base
            jobs.append((i, float(pos - int(pos))))
            j += 1
        fl = [_to_float(f) for f in frames]
        padded = [pad_to_multiple(f, mult)[0] for f in fl]
        hw = shape[:2]
        need = sorted({i for i, t in jobs if t > 0})
        mode = {i: "interp" for i in need}
        if scene_detect and need:
            s = _pair_ssim([fl[i] for i in need], [fl[i + 1] for i in need], bs)
            for i, v in zip(need, s):
                if v < cut_thr or (v > dup_thr and on_dup == "copy"):
                    mode[i] = "copy"
        per_pair: dict[int, list[float]] = {}
        for i, t in jobs:
            if t > 0:
                per_pair.setdefault(i, []).append(t)
        work = [i for i in need if mode[i] == "interp"]
        mids = _intermediates(
            runner, [(padded[i], padded[i + 1]) for i in work], [per_pair[i] for i in work], tsm, depth
        )
        table = {(i, t): m for i, row in zip(work, mids) for t, m in zip(per_pair[i], row)}
        for i, t in jobs:
            if t == 0:
                out = fl[i]
            elif mode[i] == "copy":
                out = fl[i]
            else:
                out = crop(table[(i, t)], hw)
            yield _from_float(out, uint8)
        if bar is not None:
            bar.update(n_pairs + (1 if last_chunk else 0))
    if bar is not None:
        bar.close()


def _nearest_unpad(x: np.ndarray, hw) -> np.ndarray:
    """CogVideoX's quirk: ``F.interpolate(padded, size=(h, w))`` (torch 'nearest') instead of a crop."""
    if x.shape[:2] == tuple(hw):
        return x
    return np.asarray(_resize(jnp.asarray(x)[None], size=tuple(hw), mode="nearest"))[0]


def _stream_compat(it, runner, mult, step, depth, tsm, bs, scene_detect, dup_thr, cut_thr, on_dup, progress, total):
    """CogVideoX ``ssim_interpolation_rife`` (exp = depth), streamed with one frame of look-ahead."""
    del step, tsm, on_dup
    bar = _progress(progress, total)
    n_mid = (2**depth - 1) if depth else 0
    ts = [k / 2**depth for k in range(1, 2**depth)] if depth else []
    uint8 = None
    for _base, frames, exhausted in _chunks(it, bs):
        if uint8 is None:
            hw, uint8 = frames[0].shape[:2], frames[0].dtype == np.uint8
        # frames b in this chunk: all but the look-ahead; on the last chunk all of them (the last pairs with itself)
        count = len(frames) if exhausted else len(frames) - 1
        padded = [pad_to_multiple(_to_float(f), mult)[0] for f in frames]
        I0 = [padded[k] for k in range(count)]
        I1 = [padded[min(k + 1, len(frames) - 1)] for k in range(count)]
        ssim = _pair_ssim(I0, I1, bs) if scene_detect else np.full(count, 0.5)
        emit = [padded[k] for k in range(count)]
        dups = [k for k in range(count) if ssim[k] > dup_thr]
        if dups:
            res = runner([I0[k] for k in dups], [padded[k] for k in dups], [0.5] * len(dups))
            for k, r in zip(dups, res):
                I1[k] = r
                emit[k] = pad_to_multiple(crop(r, hw), mult)[0]
            new = _pair_ssim([I0[k] for k in dups], [I1[k] for k in dups], bs)
            for k, v in zip(dups, new):
                ssim[k] = v
        work = [k for k in range(count) if not ssim[k] < cut_thr]
        mids = _intermediates(runner, [(I0[k], I1[k]) for k in work], [ts] * len(work), False, depth) if n_mid else []
        table = dict(zip(work, mids))
        for k in range(count):
            yield _from_float(_nearest_unpad(emit[k], hw), uint8)
            row = table.get(k, [I0[k]] * n_mid)
            for m in row:
                yield _from_float(_nearest_unpad(m, hw), uint8)
        if bar is not None:
            bar.update(count)
    if bar is not None:
        bar.close()


# ---------------------------------------------------------------------------------------------
# the chain's stage


class InterpolateStage(Stage):
    """RIFE frame interpolation on the chain's frames: x ``multi``, or to a target ``fps`` (the
    input rate comes from the stream).  ``flags`` names the options in messages."""

    name = "interpolate"

    def __init__(
        self,
        module,
        variables,
        weights: str = "",
        multi: int | None = 2,
        *,
        fps: float | None = None,
        batch_size: int = 4,
        scale: float = 1.0,
        tta: bool = False,
        scene_detect: bool = True,
        on_duplicate: str = "copy",
        flags: dict | None = None,
    ):
        self.flags = flags if flags is not None else {**CLI_NAMES, "multi": "--interpolate"}
        self.timestep_model = has_timestep_input(module)
        if fps is None:
            schedule(multi, None, None, self.timestep_model, type(module).__name__, self.flags)  # validates multi
        scale_list_for(scale)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.module, self.variables, self.weights = module, variables, weights
        self.multi = None if fps is not None else int(2 if multi is None else multi)
        self.fps, self.batch_size, self.scale, self.tta = fps, int(batch_size), scale, tta
        self.scene_detect, self.on_duplicate = scene_detect, on_duplicate

    def _step(self, info) -> Fraction:
        step, _ = schedule(
            self.multi,
            self.fps,
            info.fps if self.fps is not None else None,
            self.timestep_model,
            type(self.module).__name__,
            self.flags,
        )
        return step

    def output_info(self, info):
        step = self._step(info)
        fps = float(self.fps) if self.fps is not None else info.fps / float(step)
        return info.replace(num_frames=int(math.floor((info.num_frames - 1) / step)) + 1, fps=fps)

    def check(self, info):
        if info.num_frames < 2 and self.multi != 1:
            raise ValueError(f"interpolation needs at least two frames, the clip has {info.num_frames}")
        self._step(info)

    def compile_jobs(self, info):
        if self.multi == 1:
            return []
        m = model_multiple(self.module, self.scale)
        bs, h, w = self.batch_size, info.height, info.width
        z = np.zeros((bs, h, w, 3), np.float32)
        jobs = [
            (
                ("interpolate", id(self.module), bs, -(-h // m) * m, -(-w // m) * m, self.tta),
                lambda: interpolate_pair(
                    self.module, self.variables, z, z, 0.5, scale=self.scale, tta=self.tta, batch_size=bs
                ),
            )
        ]
        if self.scene_detect:
            jobs.append((("scene_ssim", bs, h, w), lambda: scene_ssim(z, z)))
        return jobs

    def __call__(self, frames, info):
        if self.multi == 1:
            yield from frames
            return
        images = (fr.image for fr in frames)
        out = interpolate_video(
            images,
            self.module,
            self.variables,
            self.multi,
            fps=self.fps,
            in_fps=info.fps if self.fps is not None else None,
            scale=self.scale,
            tta=self.tta,
            batch_size=self.batch_size,
            scene_detect=self.scene_detect,
            on_duplicate=self.on_duplicate,
        )
        for i, f in enumerate(out):
            yield Frame(f, None, i)
