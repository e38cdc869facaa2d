"""SAM 2 predictors: ``SAM2ImagePredictor`` and the streaming ``SAM2VideoPredictor``.

Both follow the official APIs (sam2 12/2024: ``sam2_image_predictor.py``, ``sam2_video_predictor.py``)
and return the same arrays.  Differences in the video predictor, by design:

- **Bounded state.** The official predictor keeps every frame (float32, on the device) and every
  object's memories for every tracked frame.  Here frames are read lazily; a frame's image encoding
  is computed once and shared by all objects; only the memories a later frame can read stay on the
  device: conditioning frames, and non-conditioning frames within 16 of the tracking position or
  of a conditioning frame (so the official reverse pass from the first prompted frame after the
  forward pass is exact).  Others are dropped (``keep_frames="window"``, default) or moved to host
  memory (``keep_frames="all"``: re-clicks and reverse passes elsewhere then see exactly what the
  official predictor sees).
- **Static shapes.** A frame step attends over a fixed set of memory slots (conditioning slots in
  buckets of 1, 2, 4, ... + 6 recent frames; pointers: conditioning + 15) with validity masks, and
  all objects run in one batched call, the object axis padded to 1, 2, 4, 8, 16...  Compiled shapes
  depend on (object bucket, conditioning bucket), never on the clip length.
- The memory lookup rules (which frames, temporal encodings, pointer offsets, closest-k
  conditioning frames) are the official ones, applied on the host per object.
- ``fill_hole_area`` (default 8, as ``build_sam2_video_predictor``) is done on the host with
  8-connected labelling; the official code silently skips it without its CUDA extension, which
  ``fill_hole_area=0`` reproduces.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from peanut_jax.models.sam2.sam2 import NO_OBJ_SCORE, SAM2, normalize, normalize_u8
from peanut_jax.ops import interpolate
from peanut_jax.pipeline.sam2_frames import SquashedFrames

__all__ = [
    "SAM2ImagePredictor",
    "SAM2VideoPredictor",
    "VideoState",
    "fill_holes",
    "mask_step",
    "memory_step",
    "prompt_step",
    "track_step",
]

MAX_PTRS = 16  # max_obj_ptrs_in_encoder
WINDOW = 16  # non-conditioning entries kept around the tracking position ("window")


def _bucket(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _resize_image_float(img01, size: int):
    """torchvision ``Resize((size, size))`` on a float tensor: bilinear, antialias on."""
    h, w = img01.shape[:2]
    if (h, w) == (size, size):
        return img01
    return jax.image.resize(img01, (size, size, img01.shape[2]), method="linear", antialias=True)


def _resize_logits(x, hw):
    """(N, h, w) logits -> (N, H, W), torch bilinear align_corners=False, no antialias."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return interpolate(x[..., None], size=tuple(hw), mode="bilinear", align_corners=False)[..., 0]


def fill_holes(mask_logits: np.ndarray, max_area: int) -> np.ndarray:
    """``fill_holes_in_mask_scores``: background (<= 0) components, 8-connected, of area <= max_area
    are set to 0.1.  (N, h, w) float32 on the host."""
    if max_area <= 0:
        return mask_logits
    from scipy import ndimage

    out = np.array(mask_logits, np.float32, copy=True)
    structure = np.ones((3, 3), bool)
    for i in range(out.shape[0]):
        bg = out[i] <= 0
        labels, n = ndimage.label(bg, structure=structure)
        if n == 0:
            continue
        areas = np.bincount(labels.ravel())
        hole = (labels > 0) & (areas[labels] <= max_area)
        out[i][hole] = 0.1
    return out


def _check_points(points, labels, box):
    if points is not None:
        points = np.asarray(points, np.float32)
        if points.ndim != 2 or points.shape[-1] != 2:
            raise ValueError(f"points must be an (N, 2) array of (x, y), got shape {points.shape}")
        if labels is None:
            raise ValueError("points and labels must be provided together")
        labels = np.asarray(labels)
        if labels.shape != (points.shape[0],):
            raise ValueError(f"labels must be ({points.shape[0]},), got shape {labels.shape}")
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"labels must be 0 (negative) or 1 (positive), got {sorted(set(labels.tolist()))}")
        labels = labels.astype(np.int32)
    elif labels is not None:
        raise ValueError("points and labels must be provided together")
    if box is not None:
        box = np.asarray(box, np.float32).reshape(-1)
        if box.shape != (4,):
            raise ValueError(f"box must be (x0, y0, x1, y1), got {box.size} values")
        if not (box[0] < box[2] and box[1] < box[3]):
            raise ValueError(f"box must have x0 < x1 and y0 < y1, got {box.tolist()}")
    return points, labels, box


# ============================================================================ image predictor
class SAM2ImagePredictor:
    """``SAM2ImagePredictor``: ``set_image`` then ``predict`` (official shapes and order)."""

    def __init__(self, module: SAM2, variables, mask_threshold: float = 0.0):
        self.module, self.variables = module, variables
        self.mask_threshold = mask_threshold
        self.image_size = module.cfg.image_size
        self._features = None
        self._orig_hw = None
        self._encode = jax.jit(functools.partial(_encode_for_image_predictor, module))
        self._decode = jax.jit(functools.partial(_decode_prompts, module), static_argnames=("multimask",))

    def set_image(self, image) -> None:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
        self._orig_hw = image.shape[:2]
        self._features = self._encode(self.variables, jnp.asarray(image))

    def predict(
        self,
        point_coords=None,
        point_labels=None,
        box=None,
        mask_input=None,
        multimask_output=True,
        return_logits=False,
        normalize_coords=True,
    ):
        """-> (masks [M, H, W], iou_predictions [M], low_res_masks [M, 256, 256]) numpy."""
        if self._features is None:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        points, labels, box = _check_points(point_coords, point_labels, box)
        h, w = self._orig_hw
        scale = (
            np.array([self.image_size / w, self.image_size / h], np.float32)
            if normalize_coords
            else np.float32(self.image_size)
        )
        coords, labs = [], []
        if box is not None:
            coords.append(box.reshape(2, 2) * scale)
            labs.append(np.array([2, 3], np.int32))
        if points is not None:
            coords.append(points * scale)
            labs.append(labels)
        pts = (jnp.asarray(np.concatenate(coords)[None]), jnp.asarray(np.concatenate(labs)[None])) if coords else None
        m_in = (
            None
            if mask_input is None
            else jnp.asarray(np.asarray(mask_input, np.float32).reshape(1, *np.shape(mask_input)[-2:]))
        )
        low, ious = self._decode(self.variables, self._features, pts, m_in, multimask=bool(multimask_output))
        masks = _resize_logits(low[0], (h, w))
        low = jnp.clip(low[0], -32.0, 32.0)
        masks = np.asarray(masks)
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks, np.asarray(ious[0]), np.asarray(low)


def _encode_for_image_predictor(module, variables, image_u8):
    s = module.cfg.image_size
    x = normalize(_resize_image_float(image_u8.astype(jnp.float32) / 255.0, s))
    feats = module.apply(variables, x[None], method=SAM2.encode_image)
    feats["vision"] = module.apply(variables, feats["vision"], method=SAM2.add_no_memory)
    return feats


def _decode_prompts(module, variables, feats, points, mask_input, *, multimask):
    def f(m, feats, points, mask_input):
        sparse, dense = m.sam_prompt_encoder(
            points=points, boxes=None, masks=None if mask_input is None else mask_input[..., None]
        )
        masks, ious, _, _ = m.sam_mask_decoder(
            feats["vision"],
            m.sam_prompt_encoder.dense_pe(),
            sparse,
            dense,
            multimask_output=multimask,
            repeat_image=False,
            high_res_features=feats["high_res"],
        )
        return masks, ious

    return module.apply(variables, feats, points, mask_input, method=f)


# ============================================================================ video predictor
@dataclasses.dataclass
class _Entry:
    """One object's result on one frame (official ``compact_current_out``)."""

    pred_masks: Any  # (4h, 4w) float32 low-res logits (after hole filling)
    obj_ptr: Any  # (d,) float32
    score: Any  # (1,) object score logit
    maskmem: Any = None  # (h, w, mem) bfloat16, None until the memory encoder ran


@dataclasses.dataclass
class _Object:
    obj_id: Any
    cond: dict = dataclasses.field(default_factory=dict)  # frame -> _Entry (conditioning)
    non_cond: dict = dataclasses.field(default_factory=dict)  # frame -> _Entry
    temp: dict = dataclasses.field(default_factory=dict)  # frame -> (is_cond, _Entry), not yet consolidated
    points: dict = dataclasses.field(default_factory=dict)  # frame -> (coords (N,2) in input px, labels)
    masks: dict = dataclasses.field(default_factory=dict)  # frame -> (S, S) float mask input
    tracked: dict = dataclasses.field(default_factory=dict)  # frame -> reverse flag


@dataclasses.dataclass
class VideoState:
    """The inference state of one video (host bookkeeping; arrays stay on the device)."""

    frames: SquashedFrames
    objects: list = dataclasses.field(default_factory=list)  # _Object, in insertion order
    features: tuple | None = None  # (frame_idx, image features)

    @property
    def num_frames(self):
        return self.frames.num_frames

    @property
    def obj_ids(self) -> list:
        return [o.obj_id for o in self.objects]

    @property
    def video_hw(self):
        return self.frames.height, self.frames.width


class SAM2VideoPredictor:
    """Streaming SAM 2 video tracking with the official API (see the module docstring)."""

    def __init__(
        self,
        module: SAM2,
        variables,
        *,
        fill_hole_area: int = 8,
        non_overlap_masks: bool = False,
        max_objects: int = 16,
        max_cond_frames: int | None = None,
        keep_frames: str = "window",
        dtype: str = "float32",
    ):
        if keep_frames not in ("window", "all"):
            raise ValueError(f"keep_frames must be 'window' or 'all', got {keep_frames!r}")
        if max_cond_frames is not None and max_cond_frames < 2:
            raise ValueError(f"max_cond_frames must be >= 2 (official rule) or None, got {max_cond_frames}")
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
        if dtype == "bfloat16":
            module = module.clone(dtype=jnp.bfloat16)
        self.module, self.variables = module, variables
        self.cfg = module.cfg
        self.image_size = module.cfg.image_size
        self.fill_hole_area = int(fill_hole_area)
        self.non_overlap_masks = non_overlap_masks
        self.max_objects = int(max_objects)
        self.max_cond_frames = max_cond_frames
        self.keep_frames = keep_frames
        m = module
        self._encode = jax.jit(lambda v, u8: m.apply(v, normalize_u8(u8)[None], method=SAM2.encode_image))
        self._prompt = jax.jit(functools.partial(prompt_step, m), static_argnames=("multimask", "init"))
        self._mask_prompt = jax.jit(functools.partial(mask_step, m))
        self._memenc = jax.jit(functools.partial(memory_step, m))
        self._track = jax.jit(functools.partial(track_step, m))
        self._to_video = jax.jit(_resize_logits, static_argnums=1)
        d, mem, h = self.cfg.d_model, self.cfg.mem_dim, self.cfg.embedding_size
        self._zero_mem = jnp.zeros((h, h, mem), jnp.bfloat16)
        self._zero_ptr = jnp.zeros((d,), jnp.float32)

    # ---------------------------------------------------------------- state
    def init_state(self, video=None, num_frames: int | None = None) -> VideoState:
        """``video``: a frame folder, a video file, a uint8 array (T, H, W, 3), or None for live
        input (frames given one by one to :meth:`track`)."""
        return VideoState(SquashedFrames(video, num_frames, self.image_size))

    def reset_state(self, state: VideoState) -> None:
        state.objects.clear()

    def _obj(self, state: VideoState, obj_id, create: bool = True) -> _Object:
        for o in state.objects:
            if o.obj_id == obj_id:
                return o
        if not create:
            raise ValueError(f"obj_id {obj_id!r} is not tracked (tracked: {state.obj_ids})")
        if len(state.objects) >= self.max_objects:
            raise ValueError(f"obj_id {obj_id!r}: at most max_objects={self.max_objects} objects can be tracked")
        o = _Object(obj_id)
        state.objects.append(o)
        return o

    def _check_frame(self, state, frame_idx):
        n = state.num_frames
        if not isinstance(frame_idx, (int, np.integer)) or frame_idx < 0 or (n is not None and frame_idx >= n):
            raise ValueError(f"frame_idx {frame_idx} is outside the video (0..{(n or 0) - 1})")

    def _features(self, state: VideoState, frame_idx: int):
        if state.features is None or state.features[0] != frame_idx:
            state.features = (frame_idx, self._encode(self.variables, jnp.asarray(state.frames.get(frame_idx))))
        return state.features[1]

    # ---------------------------------------------------------------- prompts
    def add_new_points_or_box(
        self,
        state: VideoState,
        frame_idx,
        obj_id,
        points=None,
        labels=None,
        clear_old_points=True,
        normalize_coords=True,
        box=None,
    ):
        """Clicks and/or a box on one frame -> (frame_idx, obj_ids, video-resolution logits [n_obj, H, W])."""
        self._check_frame(state, frame_idx)
        if points is None and box is None:
            raise ValueError("at least one of points or box must be provided as input")
        points, labels, box = _check_points(points, labels, box)
        if box is not None and not clear_old_points:
            raise ValueError(
                "cannot add box without clearing old points, since box prompt must be provided "
                "before any point prompt (please use clear_old_points=True instead)"
            )
        obj = self._obj(state, obj_id)
        coords = np.zeros((0, 2), np.float32) if points is None else points
        labs = np.zeros((0,), np.int32) if labels is None else labels
        if box is not None:
            coords = np.concatenate([box.reshape(2, 2), coords])
            labs = np.concatenate([np.array([2, 3], np.int32), labs])
        if normalize_coords:
            h, w = state.video_hw
            coords = coords / np.array([w, h], np.float32)
        coords = (coords * self.image_size).astype(np.float32)
        if not clear_old_points and frame_idx in obj.points:
            old_c, old_l = obj.points[frame_idx]
            coords, labs = np.concatenate([old_c, coords]), np.concatenate([old_l, labs])
        obj.points[frame_idx] = (coords, labs)
        obj.masks.pop(frame_idx, None)
        init = frame_idx not in obj.tracked
        reverse = False if init else obj.tracked[frame_idx]
        prev = obj.temp.get(frame_idx, (None, None))[1] or obj.cond.get(frame_idx) or obj.non_cond.get(frame_idx)
        prev_logits = None if prev is None else jnp.clip(jnp.asarray(prev.pred_masks), -32.0, 32.0)
        feats = self._features(state, frame_idx)
        mem = None if init else self._memory_inputs(state, [obj], frame_idx, reverse, 1)
        multimask = len(labs) <= 1  # _use_multimask: 0 <= num_pts <= 1
        # points padded to a bucket (1, 2, 4, ...): one compiled shape per bucket; padding is masked
        nb = _bucket(len(labs))
        pad = nb - len(labs)
        c_in = np.concatenate([coords, np.zeros((pad, 2), np.float32)])[None]
        l_in = np.concatenate([labs, -np.ones(pad, np.int32)])[None]
        valid = (np.arange(nb) < len(labs))[None]
        out = self._prompt(
            self.variables,
            feats,
            jnp.asarray(c_in),
            jnp.asarray(l_in),
            jnp.asarray(valid),
            None if prev_logits is None else prev_logits[None],
            mem,
            multimask=multimask,
            init=init,
        )
        obj.temp[frame_idx] = (init, self._entries(out, 1)[0])
        return frame_idx, state.obj_ids, self._frame_output(state, frame_idx)

    def add_new_mask(self, state: VideoState, frame_idx, obj_id, mask):
        """A mask (H, W) (any size; resized to the model input and re-binarised) as the prompt."""
        self._check_frame(state, frame_idx)
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
        if (
            state.video_hw[0] is not None
            and mask.shape != tuple(state.video_hw)
            and mask.shape != (self.image_size, self.image_size)
        ):
            raise ValueError(
                f"mask is {mask.shape[1]}x{mask.shape[0]} but the video is {state.video_hw[1]}x{state.video_hw[0]}"
            )
        obj = self._obj(state, obj_id)
        m = jnp.asarray(mask.astype(np.float32))
        s = self.image_size
        if m.shape != (s, s):
            m = (jax.image.resize(m, (s, s), method="linear", antialias=True) >= 0.5).astype(jnp.float32)
        obj.masks[frame_idx] = m
        obj.points.pop(frame_idx, None)
        init = frame_idx not in obj.tracked
        feats = self._features(state, frame_idx)
        out = self._mask_prompt(self.variables, feats, m[None])
        obj.temp[frame_idx] = (init, self._entries(out, 1)[0])
        return frame_idx, state.obj_ids, self._frame_output(state, frame_idx)

    def _entries(self, out, n: int) -> list[_Entry]:
        """The first ``n`` objects' results of a step (hole filling: one host round trip for all)."""
        masks = out["low_res_masks"][:n]
        if self.fill_hole_area > 0:
            masks = jnp.asarray(fill_holes(np.asarray(masks), self.fill_hole_area))
        mem = out.get("maskmem_features")
        return [
            _Entry(masks[i], out["obj_ptr"][i], out["object_score_logits"][i], None if mem is None else mem[i])
            for i in range(n)
        ]

    def clear_all_prompts_in_frame(self, state: VideoState, frame_idx, obj_id, need_output=True):
        obj = self._obj(state, obj_id, create=False)
        obj.points.pop(frame_idx, None)
        obj.masks.pop(frame_idx, None)
        obj.temp.pop(frame_idx, None)
        out = obj.cond.pop(frame_idx, None)
        if out is not None:
            obj.non_cond[frame_idx] = out
            obj.tracked.pop(frame_idx, None)
        if need_output:
            return frame_idx, state.obj_ids, self._frame_output(state, frame_idx)

    def remove_object(self, state: VideoState, obj_id, strict=False, need_output=True):
        ids = state.obj_ids
        if obj_id not in ids:
            if strict:
                raise ValueError(
                    f"Cannot remove object id {obj_id} as it doesn't exist. All existing object ids: {ids}."
                )
            return ids, []
        obj = self._obj(state, obj_id, create=False)
        frames = sorted(set(obj.points) | set(obj.masks))
        state.objects.remove(obj)
        updated = [(f, self._frame_output(state, f)) for f in frames] if need_output else []
        return state.obj_ids, updated

    # ---------------------------------------------------------------- propagation
    def _preflight(self, state: VideoState) -> None:
        if not state.objects:
            raise RuntimeError("No input points or masks are provided for any object; please add inputs first.")
        for obj in state.objects:
            for f, (is_cond, e) in sorted(obj.temp.items(), key=lambda kv: not kv[1][0]):
                if e.maskmem is None:
                    feats = self._features(state, f)
                    e.maskmem = self._memenc(self.variables, feats, e.pred_masks[None], e.score[None])[0]
                (obj.cond if is_cond else obj.non_cond)[f] = e
            obj.temp.clear()
            if not obj.cond:
                raise RuntimeError(
                    f"No input points or masks are provided for object id {obj.obj_id}; please add inputs first."
                )
            for f in obj.cond:
                obj.non_cond.pop(f, None)

    def propagate_in_video(
        self, state: VideoState, start_frame_idx=None, max_frame_num_to_track=None, reverse=False
    ) -> Iterator[tuple[int, list, np.ndarray]]:
        """Yield ``(frame_idx, obj_ids, logits [n_obj, H, W])`` (float32 numpy) frame by frame."""
        if state.frames.live:
            raise ValueError("propagate_in_video needs a video; use track(state, frame) for live input")
        self._preflight(state)
        n = state.num_frames
        if start_frame_idx is None:
            start_frame_idx = min(t for o in state.objects for t in o.cond)
        self._check_frame(state, start_frame_idx)
        if max_frame_num_to_track is None:
            max_frame_num_to_track = n
        if reverse:
            end = max(start_frame_idx - max_frame_num_to_track, 0)
            order = range(start_frame_idx, end - 1, -1) if start_frame_idx > 0 else []
        else:
            end = min(start_frame_idx + max_frame_num_to_track, n - 1)
            order = range(start_frame_idx, end + 1)
        for f in order:
            yield f, state.obj_ids, self._step(state, f, reverse)

    def track(self, state: VideoState, frame_u8) -> tuple[int, list, np.ndarray]:
        """Live input: append ``frame_u8`` as the next frame and track every object on it."""
        if not state.frames.live:
            raise ValueError("track() is for live input: create the state with init_state(video=None)")
        idx = state.frames.append(frame_u8)
        if not state.objects or not any(o.cond or o.temp for o in state.objects):
            return idx, state.obj_ids, np.zeros((len(state.objects), *state.video_hw), np.float32)
        self._preflight(state)
        return idx, state.obj_ids, self._step(state, idx, False)

    def _step(self, state: VideoState, f: int, reverse: bool) -> np.ndarray:
        todo = [o for o in state.objects if f not in o.cond]
        if todo:
            feats = self._features(state, f)
            mem = self._memory_inputs(state, todo, f, reverse, _bucket(len(todo)))
            out = self._track(self.variables, feats, *mem)
            for o, e in zip(todo, self._entries(out, len(todo))):
                o.non_cond[f] = e
        cond = {c for o in state.objects for c in o.cond}
        for o in state.objects:
            o.tracked[f] = reverse
            self._prune(o, f, cond)
        return self._frame_output(state, f)

    def _prune(self, obj: _Object, f: int, cond: set) -> None:
        """Keep on the device the non-conditioning entries a later step can read: those near ``f``
        and near any conditioning frame (a reverse pass from the first prompted frame after a
        forward pass, or a re-click there, reads the forward results next to it)."""
        for t in [t for t in obj.non_cond if abs(t - f) > WINDOW and all(abs(t - c) > WINDOW for c in cond)]:
            if self.keep_frames == "window":
                del obj.non_cond[t]
            else:
                e = obj.non_cond[t]
                if isinstance(e.obj_ptr, jax.Array):
                    obj.non_cond[t] = _Entry(*jax.device_get((e.pred_masks, e.obj_ptr, e.score, e.maskmem)))

    # ---------------------------------------------------------------- memory lookup (official rules)
    def _select_cond(self, cond: dict, f: int):
        k = self.max_cond_frames
        if k is None or len(cond) <= k:
            return dict(cond), {}
        sel = {}
        before = max((t for t in cond if t < f), default=None)
        if before is not None:
            sel[before] = cond[before]
        after = min((t for t in cond if t >= f), default=None)
        if after is not None:
            sel[after] = cond[after]
        rest = sorted((t for t in cond if t not in sel), key=lambda t: abs(t - f))[: k - len(sel)]
        sel.update((t, cond[t]) for t in rest)
        return sel, {t: v for t, v in cond.items() if t not in sel}

    def _lookup(self, obj: _Object, f: int, reverse: bool, num_frames):
        """(spatial memories [(tpos_index, entry)], pointers [(rel_pos, entry)], t_diff_max, number of
        selected conditioning frames) for frame f."""
        nm = self.cfg.num_maskmem
        sel, unsel = self._select_cond(obj.cond, f)
        mems = [(nm - 1, e) for e in sel.values()]  # t_pos 0 -> index nm-1
        for t_pos in range(1, nm):
            t_rel = nm - t_pos
            prev = f + t_rel if reverse else f - t_rel
            e = obj.non_cond.get(prev) or unsel.get(prev)
            if e is not None:
                mems.append((nm - t_pos - 1, e))
        max_ptrs = min(num_frames, MAX_PTRS) if num_frames is not None else MAX_PTRS
        sign = -1 if reverse else 1
        signed = self.cfg.use_signed_tpos_enc_to_obj_ptrs
        ptrs = [
            ((f - t) * sign if signed else abs(f - t), e) for t, e in sel.items() if (t >= f if reverse else t <= f)
        ]
        for t_diff in range(1, max_ptrs):
            t = f + t_diff if reverse else f - t_diff
            if t < 0 or (num_frames is not None and t >= num_frames):
                break
            e = obj.non_cond.get(t, unsel.get(t))
            if e is not None:
                ptrs.append((t_diff, e))
        return mems, ptrs, max(max_ptrs - 1, 1), len(sel)

    def _memory_inputs(self, state: VideoState, objs: list, f: int, reverse: bool, n_slots: int):
        """Fixed-shape memory arguments of a step for ``objs`` (padded to ``n_slots`` objects)."""
        looked = [self._lookup(o, f, reverse, state.num_frames) for o in objs]
        cb = _bucket(max(max(n_sel for *_, n_sel in looked), 1))
        s_mem, s_ptr = cb + self.cfg.num_maskmem - 1, cb + MAX_PTRS - 1
        mem, tpos, mvalid, ptr, rel, pvalid = [], [], [], [], [], []
        for i in range(n_slots):
            mems, ptrs = looked[i][:2] if i < len(looked) else ([], [])
            mem += [e.maskmem for _, e in mems] + [self._zero_mem] * (s_mem - len(mems))
            tpos.append([t for t, _ in mems] + [0] * (s_mem - len(mems)))
            mvalid.append([True] * len(mems) + [False] * (s_mem - len(mems)))
            ptr += [e.obj_ptr for _, e in ptrs] + [self._zero_ptr] * (s_ptr - len(ptrs))
            rel.append([p for p, _ in ptrs] + [0] * (s_ptr - len(ptrs)))
            pvalid.append([True] * len(ptrs) + [False] * (s_ptr - len(ptrs)))
        t_diff_max = looked[0][2]
        return (
            mem,
            np.asarray(tpos, np.int32),
            np.asarray(mvalid),
            ptr,
            np.asarray(rel, np.float32),
            np.asarray(pvalid),
            np.float32(t_diff_max),
        )

    # ---------------------------------------------------------------- outputs
    def _frame_output(self, state: VideoState, f: int) -> np.ndarray:
        """Video-resolution logits of every object on frame ``f`` (NO_OBJ_SCORE where none)."""
        s4 = self.image_size // 4
        rows = []
        for o in state.objects:
            e = o.temp.get(f, (None, None))[1] or o.cond.get(f) or o.non_cond.get(f)
            rows.append(jnp.full((s4, s4), NO_OBJ_SCORE, jnp.float32) if e is None else jnp.asarray(e.pred_masks))
        if not rows:
            return np.zeros((0, *state.video_hw), np.float32)
        masks = self._to_video(jnp.stack(rows), tuple(state.video_hw))
        masks = np.asarray(masks, np.float32)
        if self.non_overlap_masks and masks.shape[0] > 1:
            keep = np.argmax(masks, axis=0)[None] == np.arange(masks.shape[0])[:, None, None]
            masks = np.where(keep, masks, np.minimum(masks, -10.0))
        return masks


# ---------------------------------------------------------------- the steps (pure functions, jitted above)
# ``mem`` = (maskmem list (n_obj * S of (h, w, mem)), tpos (n_obj, S), valid (n_obj, S), pointer list
# (n_obj * P of (d,)), rel_pos (n_obj, P), valid (n_obj, P), t_diff_max): the fixed-slot memory bank
# of :meth:`SAM2VideoPredictor._memory_inputs`.
def _memory_args(mem, tpos, mvalid, ptr, rel, pvalid, t_diff_max, n_obj):
    s_mem, s_ptr = tpos.shape[1], rel.shape[1]
    memory = jnp.stack(mem).reshape(n_obj, s_mem, *mem[0].shape)
    ptrs = jnp.stack(ptr).reshape(n_obj, s_ptr, -1)
    return memory, tpos, mvalid, ptrs, rel, pvalid, t_diff_max


def track_step(module, variables, feats, mem, tpos, mvalid, ptr, rel, pvalid, t_diff_max):
    args = _memory_args(mem, tpos, mvalid, ptr, rel, pvalid, t_diff_max, tpos.shape[0])
    out = module.apply(variables, feats["high_res"], feats["vision"], feats["vision_pos"], *args, method=SAM2.track)
    out["maskmem_features"] = out["maskmem_features"].astype(jnp.bfloat16)
    return out


def prompt_step(module, variables, feats, coords, labels, point_mask, prev_logits, mem, *, multimask, init):
    def f(m, feats, coords, labels, point_mask, prev_logits, mem):
        if init:
            pix = m.add_no_memory(feats["vision"])
        else:
            args = _memory_args(*mem, 1)
            pix = m.condition_on_memory(feats["vision"], feats["vision_pos"], *args)
        return m.sam_heads(
            pix, feats["high_res"], coords, labels, mask_inputs=prev_logits, multimask=multimask, point_mask=point_mask
        )

    return module.apply(variables, feats, coords, labels, point_mask, prev_logits, mem, method=f)


def mask_step(module, variables, feats, masks):
    return module.apply(variables, feats["vision"], feats["high_res"], masks, method=SAM2.mask_as_output)


def memory_step(module, variables, feats, low_res, score):
    def f(m, feats, low_res, score):
        high = m.upsample_masks(low_res)
        return m.encode_memory(feats["vision"], high, score, True).astype(jnp.bfloat16)

    return module.apply(variables, feats, low_res, score, method=f)


def __getattr__(name):
    """``PromptMasks`` (the mask stage's source) lives in :mod:`peanut_jax.pipeline.mask`, which
    imports this module; it is reachable here too, loaded on first use (no import cycle)."""
    if name == "PromptMasks":
        from peanut_jax.pipeline import mask

        return mask.PromptMasks
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
