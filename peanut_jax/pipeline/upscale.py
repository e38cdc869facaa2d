"""Video super-resolution / restoration with BasicVSR++: whole-clip and streaming (``infer.py upscale``).

:func:`upscale_video` takes an iterable of frames (or a (T, H, W, 3) array) and yields the output
frames in order, float32 RGB (H*s, W*s, 3), clamped to [0, 1] by default (as the official
``tensor2img``).

Modes
  ``chunk=None``  whole clip in one call: the official ``restoration_video_inference`` behaviour
                  (device memory grows with the clip length).
  ``chunk=N``     streaming: the clip is cut into *cores* of N frames; each core is run inside a
                  window of ``L = N + 2*overlap`` frames (``overlap`` frames of context on each
                  side, shifted inward at the clip ends), so every window has the same shape and one
                  jitted function serves the whole clip -- the last window is moved back to end at
                  the last frame instead of being padded or recompiled.  Context outputs are
                  discarded, or cross-faded over ``blend`` frames around each core border.  Device
                  memory depends on L and the frame size only; the host holds at most L input and
                  L output frames.  A clip shorter than L runs as one window padded to L frames with
                  its own frames in mirror order (``T-2, T-3, ...``; their outputs are discarded), so
                  clips of every length share one compiled shape per frame size; the padding changes
                  the outputs of such a clip slightly (the recurrent propagation runs through it).
  ``tile=(th, tw)`` spatial tiling for frames too large for memory: each window is cut into tiles
                  of ``th x tw`` LR pixels plus ``tile_overlap`` pixels of context per side (shifted
                  inward at the borders, same shape for every tile), outputs stitched with the
                  context discarded or feathered over ``tile_blend`` pixels.

Frames smaller than the model minimum (64 px per side for SPyNet, 256 and a multiple of 4 for the
same-size restoration models) are padded bottom/right by reflection and the output is cropped
(``pad_small=False`` refuses them instead).  Inputs are validated lazily but before anything is
yielded for the frames concerned: wrong rank/channels, non-finite or out-of-range floats, and
mixed frame sizes raise ``ValueError`` naming the frame.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from peanut_jax.pipeline.chain import Frame, Stage

# streaming window: 32 output frames per window of 40 (1.25x the work of one pass); on the real
# tennis clip with the demo weights the streamed output is 102 dB from the whole-clip run
# (benchmarks/upscale_windows.py; 16 + 2 x 8 gave 117 dB at 2x the work)
DEFAULT_CHUNK = 32
DEFAULT_OVERLAP = 4


# ----------------------------------------------------------------------------------- planning
def plan_segments(n: int, core: int, context: int) -> list[tuple[int, int, int, int]]:
    """Cut ``range(n)`` into cores of ``core`` items, each inside a window of ``core + 2*context``.

    Returns ``[(core_start, core_end, window_start, window_len)]``.  Windows all have the length
    ``min(n, core + 2*context)``; at the ends they are shifted inward rather than padded.
    """
    if n < 1 or core < 1 or context < 0:
        raise ValueError(f"plan_segments: need n >= 1, core >= 1, context >= 0; got {n}, {core}, {context}")
    length = min(n, core + 2 * context)
    out = []
    for s in range(0, n, core):
        e = min(s + core, n)
        a = min(max(s - context, 0), n - length)
        out.append((s, e, a, length))
    return out


def segment_weights(positions: np.ndarray, start: int, end: int, n: int, blend: int) -> np.ndarray:
    """Weight of the segment with core ``[start, end)`` at integer ``positions`` (of ``range(n)``).

    ``blend == 0``: 1 inside the core, 0 outside (context discarded).  ``blend = b > 0`` (even): at
    every *interior* border c the weight ramps linearly over ``[c - b/2, c + b/2)`` so that the two
    neighbouring segments' weights sum to 1; borders at 0 and n stay hard.
    """
    p = np.asarray(positions, np.float64)

    def up(c):  # 0 before c, 1 after (ramped when b > 0 and c is interior)
        if blend == 0 or c <= 0 or c >= n:
            return (p >= c).astype(np.float64)
        return np.clip((p - (c - blend / 2) + 0.5) / blend, 0.0, 1.0)

    return up(start) * (1.0 - up(end))


# ----------------------------------------------------------------------------------- input checks
def as_float_frame(frame, index: int, what: str = "frame") -> np.ndarray:
    """uint8 (0..255) or float [0, 1] (H, W, 3) -> float32 [0, 1]; clear errors otherwise."""
    a = np.asarray(frame)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"{what} {index}: expected an (H, W, 3) RGB array, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{what} {index}: contains NaN or inf")
        lo, hi = float(a.min()), float(a.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"{what} {index}: float frames must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
        return np.clip(a, 0.0, 1.0)
    raise ValueError(f"{what} {index}: frames must be uint8 or float in [0, 1], got dtype {a.dtype}")


def model_requirements(module) -> tuple[int, int]:
    """(minimum side, required multiple) of the input frames of a BasicVSR++ module."""
    from peanut_jax.models.basicvsr_pp import MIN_FLOW_SIZE

    if getattr(module, "is_low_res_input", True):
        return MIN_FLOW_SIZE, 1
    return 4 * MIN_FLOW_SIZE, 4


def _pad_to(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Reflect-pad (T, H, W, C) bottom/right to (T, h, w, C)."""
    ph, pw = h - x.shape[1], w - x.shape[2]
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if min(x.shape[1:3]) > 1 else "edge"
    return np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode=mode)


# ----------------------------------------------------------------------------------- runner
@functools.lru_cache(maxsize=8)
def jitted_forward(module):
    """One jitted ``module.apply(variables, lqs)`` per module configuration (shared by all runners,
    so a new :class:`Upscaler` for the same model reuses the compiled shapes)."""
    return jax.jit(lambda variables, lqs: module.apply(variables, lqs, is_mirror_extended=False))


class Upscaler:
    """A BasicVSR++ module + variables with one jitted forward per input shape.

    ``__call__(clip)`` runs a (T, H, W, 3) float32 clip (any H, W: padded to the model minimum and
    cropped back; optional spatial tiling) and returns (T, H*s, W*s, 3) float32 (not clamped).
    """

    def __init__(
        self,
        module,
        variables,
        tile: int | Sequence[int] | None = None,
        tile_overlap: int = 16,
        tile_blend: int = 0,
        pad_small: bool = True,
    ):
        self.module = module
        self.variables = variables
        self.scale = int(module.output_scale) if hasattr(module, "output_scale") else int(module.scale)
        self.min_side, self.multiple = model_requirements(module)
        if tile is not None and not isinstance(tile, (int, np.integer)):
            tile = tuple(int(t) for t in tile)
        elif tile is not None:
            tile = (int(tile), int(tile))
        if tile is not None:
            if len(tile) != 2 or min(tile) < 1:
                raise ValueError(f"tile must be a positive size (th, tw), got {tile}")
        if tile_overlap < 0 or tile_blend < 0 or tile_blend % 2 or tile_blend > 2 * tile_overlap:
            raise ValueError(f"tile_blend must be even and <= 2 * tile_overlap ({2 * tile_overlap}), got {tile_blend}")
        if tile is not None and tile_blend > min(tile):
            raise ValueError(f"tile_blend ({tile_blend}) must not exceed the tile size {tile}")
        self.tile = tile
        self.tile_overlap = int(tile_overlap)
        self.tile_blend = int(tile_blend)
        self.pad_small = pad_small
        self._fwd = jitted_forward(module)
        self.calls = 0
        self.shapes: set = set()  # input shapes run (each compiled once per model configuration)

    def padded_size(self, h: int, w: int) -> tuple[int, int]:
        def one(v):
            v = max(v, self.min_side)
            return -(-v // self.multiple) * self.multiple

        return one(h), one(w)

    def _run_block(self, clip: np.ndarray) -> np.ndarray:
        """(T, h, w, 3) -> (T, h*s, w*s, 3), padding to the model's constraints."""
        t, h, w, _ = clip.shape
        hp, wp = self.padded_size(h, w)
        if (hp, wp) != (h, w):
            if not self.pad_small:
                raise ValueError(
                    f"frames of {h}x{w} are below the model minimum {self.min_side} px per side"
                    + (f" (or not multiples of {self.multiple})" if self.multiple > 1 else "")
                    + "; pass pad_small=True to pad them"
                )
            clip = _pad_to(clip, hp, wp)
        out = np.asarray(self._fwd(self.variables, jnp.asarray(clip[None])))[0]
        self.calls += 1
        self.shapes.add(clip.shape)
        s = self.scale
        return out[:, : h * s, : w * s]

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        clip = np.asarray(clip, np.float32)
        t, h, w, _ = clip.shape
        if self.tile is None or (self.tile[0] >= h and self.tile[1] >= w):
            return self._run_block(clip)
        s, o = self.scale, self.tile_overlap
        th, tw = min(self.tile[0], h), min(self.tile[1], w)
        rows = plan_segments(h, th, o)
        cols = plan_segments(w, tw, o)
        out = np.zeros((t, h * s, w * s, 3), np.float32)
        wsum = np.zeros((h * s, w * s, 1), np.float32)
        for ys, ye, ya, yl in rows:
            wy = segment_weights(np.arange(ya * s, (ya + yl) * s) / s, ys, ye, h, self.tile_blend)
            for xs, xe, xa, xl in cols:
                wx = segment_weights(np.arange(xa * s, (xa + xl) * s) / s, xs, xe, w, self.tile_blend)
                tile_out = self._run_block(clip[:, ya : ya + yl, xa : xa + xl])
                wgt = (wy[:, None] * wx[None, :]).astype(np.float32)[..., None]
                out[:, ya * s : (ya + yl) * s, xa * s : (xa + xl) * s] += tile_out * wgt
                wsum[ya * s : (ya + yl) * s, xa * s : (xa + xl) * s] += wgt
        return out / np.maximum(wsum, 1e-12)


def _validated(frames: Iterable, first_shape: list) -> Iterator[np.ndarray]:
    for i, f in enumerate(frames):
        a = as_float_frame(f, i)
        if not first_shape:
            first_shape.append(a.shape)
        elif a.shape != first_shape[0]:
            raise ValueError(
                f"frame {i}: size {a.shape[0]}x{a.shape[1]} differs from frame 0 "
                f"({first_shape[0][0]}x{first_shape[0][1]}); all frames of a clip must have one size"
            )
        yield a


def upscale_video(
    frames,
    module,
    variables,
    *,
    chunk: int | None = DEFAULT_CHUNK,
    overlap: int = DEFAULT_OVERLAP,
    blend: int = 0,
    tile: int | Sequence[int] | None = None,
    tile_overlap: int = 16,
    tile_blend: int = 0,
    scale: int | None = None,
    clip: bool = True,
    pad_small: bool = True,
    upscaler: Upscaler | None = None,
) -> Iterator[np.ndarray]:
    """Yield the BasicVSR++ output frames of ``frames`` (see the module docstring).

    ``scale``: the expected output/input size ratio; a checkpoint that does not produce it is
    refused.  ``chunk=None`` runs the whole clip at once; otherwise ``overlap`` context frames per
    side and an optional ``blend`` (even, <= 2*overlap and <= chunk) cross-fade.
    """
    runner = upscaler or Upscaler(module, variables, tile, tile_overlap, tile_blend, pad_small)
    if scale is not None and int(scale) != runner.scale:
        raise ValueError(
            f"the model produces x{runner.scale} output, but scale={scale} was requested (checkpoint/config mismatch)"
        )
    if chunk is not None:
        if int(chunk) < 1:
            raise ValueError(f"chunk must be >= 1 (or None for the whole clip), got {chunk}")
        if overlap < 0:
            raise ValueError(f"overlap must be >= 0, got {overlap}")
        if blend < 0 or blend % 2 or blend > 2 * overlap or blend > chunk:
            raise ValueError(f"blend must be even, <= 2 * overlap ({2 * overlap}) and <= chunk ({chunk}); got {blend}")
    post = (lambda a: np.clip(a, 0.0, 1.0)) if clip else (lambda a: a)
    if isinstance(frames, np.ndarray) and frames.ndim != 4:
        raise ValueError(
            f"frames: expected a (T, H, W, 3) array or an iterable of (H, W, 3) frames, got shape {frames.shape}"
        )
    return _generate(iter(frames), runner, chunk, overlap, blend, post)


def _generate(it, runner: Upscaler, chunk, overlap, blend, post) -> Iterator[np.ndarray]:
    shape: list = []
    src = _validated(it, shape)
    if chunk is None:
        clip = list(src)
        if not clip:
            raise ValueError("the clip has no frames")
        out = runner(np.stack(clip))
        for f in out:
            yield post(f)
        return
    length = chunk + 2 * overlap
    buf: collections.deque = collections.deque(maxlen=length)  # (index, frame) of the latest frames
    n_read = 0
    ended = False
    pending: dict[int, list] = {}  # frame index -> [weighted output sum, weight sum]
    s = 0
    last = None  # ((window start, length), outputs) of the latest window
    while True:
        # read until the window of the core [s, s+chunk) is available, or the stream ends
        while not ended and n_read < max(s - overlap, 0) + length:
            try:
                buf.append((n_read, next(src)))
                n_read += 1
            except StopIteration:
                ended = True
        if n_read == 0:
            raise ValueError("the clip has no frames")
        if s >= n_read:
            break
        e = min(s + chunk, n_read)
        if ended:  # clip length known: shift the window inward at the end, or shrink it for short clips
            n = n_read
            win_len = min(n, length)
            a = min(max(s - overlap, 0), n - win_len)
        else:
            n = None
            win_len = length
            a = n_read - length
        if last is None or last[0] != (a, win_len):  # (a short clip's cores share one window)
            by_idx = dict(buf)
            ids = np.arange(a, a + win_len)
            if win_len < length:  # a clip shorter than one window: mirror-padded to the window length
                ids = np.pad(ids, (0, length - win_len), mode="reflect")
            window = np.stack([by_idx[int(i)] for i in ids])
            last = ((a, win_len), runner(window)[:win_len])  # the padding's outputs are discarded
        out = last[1]
        # borders at the (still unknown) clip end are interior until the stream has ended
        wts = segment_weights(np.arange(a, a + win_len), s, e, n if n is not None else np.iinfo(np.int64).max, blend)
        for k, wgt in enumerate(wts):
            if wgt > 0:
                acc = pending.setdefault(a + k, [0.0, 0.0])
                acc[0] = acc[0] + wgt * out[k]
                acc[1] += wgt
        # frames before the next core's blend zone are final
        final_before = e if (n is not None and e >= n) else e - blend // 2
        for idx in sorted(i for i in pending if i < final_before):
            acc = pending.pop(idx)
            yield post((acc[0] / acc[1]).astype(np.float32))
        s = e
    if pending:  # cannot happen: every frame lies in some core
        raise RuntimeError(f"upscale: frames {sorted(pending)} were never finalised")


def upscale_clip(frames, module, variables, **kwargs) -> np.ndarray:
    """:func:`upscale_video` collected into one (T, H*s, W*s, 3) float32 array."""
    return np.stack(list(upscale_video(frames, module, variables, **kwargs)))


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8 with rounding (mmagic ``tensor2img``)."""
    return np.clip(np.round(np.asarray(frame) * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------- the chain's stage
class UpscaleStage(Stage):
    """BasicVSR++ in overlapping chunks (:func:`upscale_video`) on the chain's frames.
    ``scale``: the expected factor (a checkpoint that does not produce it is refused)."""

    name = "upscale"

    def __init__(
        self,
        module,
        variables,
        weights: str = "",
        scale: int | None = None,
        chunk: int | None = DEFAULT_CHUNK,
        overlap: int = DEFAULT_OVERLAP,
        blend: int = 0,
        tile=None,
        tile_overlap: int = 16,
        tile_blend: int = 0,
        flag: str = "--upscale",
    ):
        self.runner = Upscaler(module, variables, tile=tile, tile_overlap=tile_overlap, tile_blend=tile_blend)
        if scale is not None and int(scale) != self.runner.scale:
            raise ValueError(
                f"{weights or 'upscale checkpoint'}: the model produces x{self.runner.scale} output, "
                f"but {flag} {scale} was requested"
            )
        if chunk is not None and int(chunk) < 1:
            raise ValueError(f"chunk must be >= 1 (or None for the whole clip), got {chunk}")
        if overlap < 0:
            raise ValueError(f"overlap must be >= 0, got {overlap}")
        if chunk is not None and (blend < 0 or blend % 2 or blend > 2 * overlap or blend > chunk):
            raise ValueError(f"blend must be even, <= 2 * overlap ({2 * overlap}) and <= chunk ({chunk}); got {blend}")
        self.module, self.variables, self.weights = module, variables, weights
        self.chunk, self.overlap, self.blend = chunk, overlap, blend
        self.scale = self.runner.scale

    def output_info(self, info):
        return info.replace(height=info.height * self.scale, width=info.width * self.scale)

    def compile_jobs(self, info):
        r = self.runner
        if r.tile is not None:
            return []  # tile shapes depend on the tiling plan
        length = info.num_frames if self.chunk is None else self.chunk + 2 * self.overlap
        hp, wp = r.padded_size(info.height, info.width)
        fwd = jitted_forward(self.module)  # the runner's shared jitted forward: compile without running

        def job():
            x = jnp.asarray(np.zeros((1, length, hp, wp, 3), np.float32))  # (also compiles the host->device staging)
            fwd.lower(r.variables, x).compile()

        return [(("upscale", id(fwd), length, hp, wp), job)]

    def __call__(self, frames, info):
        images = (fr.image for fr in frames)
        for i, f in enumerate(
            upscale_video(
                images,
                self.module,
                self.variables,
                chunk=self.chunk,
                overlap=self.overlap,
                blend=self.blend,
                upscaler=self.runner,
            )
        ):
            yield Frame(to_uint8(f), None, i)
