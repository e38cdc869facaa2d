"""Training clips from the built TFDS referring-segmentation datasets, sampled as SAMWISE samples them.

Items (official ``prepare_metas``):

* ``ref_youtube_vos`` / ``mevis`` (:mod:`peanut_jax.data.tfds.rvos`): one item per (video,
  expression, start frame ``0, T, 2T, ...`` below the video's frame count), ``T = num_frames``, in
  record order, enumerated from ``info.metadata['videos'][split]`` without reading a record;
* ``refcoco`` (:mod:`peanut_jax.data.tfds.refcoco`): one item per sentence of the train splits of
  RefCOCO, RefCOCO+ and RefCOCOg (SAMWISE's pretraining concatenates the three), a single frame.

An item becomes a clip (:meth:`ClipSource.example`):

1. frame indices: ``'local'`` sampling (Ref-YouTube-VOS): up to ``T // 2`` distinct frames from the
   ``T`` before the start frame and up to ``T // 2`` from the start frame and the ``T - 1`` after it,
   the start frame if still short, then distinct frames from ``start - 2T .. start + 2T``, then any
   frames (repeats allowed); ``'global'`` sampling (MeViS): the start frame, one frame 1-3 before and
   one 1-3 after it (clamped to the video), then ``T - 3`` distinct frames from outside that span
   (from the whole video when fewer remain; repeats when the video is shorter than ``T - 3``);
   sorted;
2. the target (the union of the expression's objects) on those frames; when it is empty on every
   sampled frame another item is drawn uniformly and sampled again (official ``instance_check``),
   at most :data:`MAX_TRIES` times;
3. resize (no augmentation, official ``RandomResize([max_size], max_size=max_size)``): the shorter
   side to ``round(max_size * short / long)``, the longer to ``int(short' * long / short)`` (so
   ``max_size``, or one less by rounding); frames PIL bilinear, masks torch ``nearest``;
4. pad bottom/right to ``(height, width)``: frames with :data:`PAD_RGB` (the ImageNet mean rounded
   to uint8: after the model's on-device normalisation the padding is 0 within 0.009, where SAMWISE
   pads the normalised frame with exact zeros), masks with 0;
5. the caption lower-cased with its white space collapsed (videos; RefCOCO sentences as stored),
   tokenised and padded to ``max_tokens``.

Everything random comes from ``numpy.random.default_rng([*seed, 11])`` with the batch seed of
:mod:`peanut_jax.train.batching`, so a clip is a pure function of (seed, step, row) and the item.

The example has the synthetic path's format: ``frames`` uint8 (T, height, width, 3), ``masks`` uint8
(T, height, width) 0/1, ``input_ids`` int32 (max_tokens,), ``padding_mask`` bool (max_tokens,), plus
``valid_hw`` int32 (2,): the resized size before step 4's padding (the training loss covers the
batch's largest ``valid_hw`` only, as the official collate pads a batch to its largest clip).

``python -m peanut_jax.data.rvos_clips DATASET DATA_DIR [--split S] [--num_frames 8] [--epochs 4]
[--batch_size 4]`` prints the item count and ``epochs * items // batch_size`` (the value for
``train.num_steps``).
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

VIDEO_DATASETS = ("ref_youtube_vos", "mevis")
IMAGE_DATASETS = ("refcoco",)
SAMPLINGS = ("local", "global")
REFCOCO_CONFIGS = ("refcoco", "refcoco_plus", "refcocog")
MAX_TRIES = 100
PAD_RGB = (124, 116, 104)  # round(255 * ImageNet mean)
_STREAM = 11  # the clip sampler's draw of the batch seed


# ------------------------------------------------------------------------------------ sampling
def local_indices(rng: np.random.Generator, start: int, n: int, t: int) -> list[int]:
    """SAMWISE's local sampling of ``t`` frame indices around ``start`` in a video of ``n`` frames."""
    lo = max(start - t, 0)
    before = rng.choice(np.arange(lo, start), min(start, t // 2), replace=False) if start > 0 else []
    after_pool = np.arange(start, min(start + t, n))
    after = rng.choice(after_pool, min(n - start - 1, t // 2), replace=False)
    idx = [int(i) for i in before] + [int(i) for i in after]
    if len(idx) < t and start not in idx:
        idx.append(start)
    if len(idx) < t:
        pool = np.arange(max(0, start - 2 * t), min(n, start + 2 * t))
        for _ in range(3 * len(pool)):
            if len(idx) == t:
                break
            f = int(rng.choice(pool))
            if f not in idx:
                idx.append(f)
        while len(idx) < t:
            idx.append(int(rng.integers(n)))
    return sorted(idx)


def global_indices(rng: np.random.Generator, start: int, n: int, t: int) -> list[int]:
    """SAMWISE's global sampling of ``t`` frame indices (the start frame, two neighbours, the rest
    from anywhere outside their span) in a video of ``n`` frames."""
    idx = [start]
    if t != 1:
        idx += [max(0, start - int(rng.integers(1, 4))), min(n - 1, start + int(rng.integers(1, 4)))]
        if t > 3:
            outside = list(range(min(idx))) + list(range(max(idx), n))
            k = t - len(idx)
            if len(outside) > k:
                idx += [outside[j] for j in rng.choice(len(outside), k, replace=False)]
            elif n >= k:
                idx += [int(j) for j in rng.choice(n, k, replace=False)]
            else:
                idx += [int(j) for j in rng.integers(0, n, k)]
    # num_frames 2 or 3 take the first t of the sorted three, as the official loader reads them
    return sorted(int(i) for i in idx)[:t]


SAMPLERS = {"local": local_indices, "global": global_indices}


# ------------------------------------------------------------------------------------- resizing
def train_size(height: int, width: int, max_size: int) -> tuple[int, int]:
    """The training resize of a ``height x width`` frame (official ``RandomResize([max_size],
    max_size=max_size)``): the longer side to ``max_size`` (or one less by rounding).  -> (h, w)."""
    size = max_size
    short, long_ = float(min(height, width)), float(max(height, width))
    if long_ / short * size > max_size:
        size = int(round(max_size * short / long_))
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def resize_masks_nearest(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W) -> (T, h, w), torch ``interpolate(mode='nearest')``: source index ``floor(i * in / out)``."""
    h, w = size
    if masks.shape[1:] == (h, w):
        return masks

    def src(n_out, n_in):
        scale = np.float32(n_in / n_out)
        return np.minimum((np.arange(n_out, dtype=np.float32) * scale).astype(np.int64), n_in - 1)

    return masks[:, src(h, masks.shape[1])][:, :, src(w, masks.shape[2])]


def pad_clip(frames: np.ndarray, masks: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad (T, h, w, 3) frames with :data:`PAD_RGB` and (T, h, w) masks with 0 to ``height x width``."""
    t, h, w = masks.shape
    f = np.empty((t, height, width, 3), np.uint8)
    f[...] = np.asarray(PAD_RGB, np.uint8)
    f[:, :h, :w] = frames
    m = np.zeros((t, height, width), np.uint8)
    m[:, :h, :w] = masks
    return f, m


def clean_caption(text: str) -> str:
    """SAMWISE's caption clean-up for videos: lower case, white space collapsed."""
    return " ".join(text.lower().split())


# --------------------------------------------------------------------------------------- source
def _open(name: str, data_dir, split: str, config: str | None = None):
    """``(data_source, metadata)`` of a built split of an RVOS / RefCOCO builder."""
    from peanut_jax.data.tfds import refcoco, rvos

    data_dir = pathlib.Path(data_dir)
    if not str(data_dir) or not data_dir.is_dir():
        raise FileNotFoundError(f"config.data.data_dir {str(data_dir)!r} is not a folder (the TFDS data_dir)")
    cls = {**rvos.BUILDERS, **refcoco.BUILDERS}[name]
    b = cls(data_dir=os.fspath(data_dir), **({"config": config} if config else {}))
    full = name if config is None else f"{name}/{config}"
    if not b.is_prepared():
        raise FileNotFoundError(
            f"{full} is not built in {data_dir} (build it with peanut_jax.data.tfds.rvos.build('{name}', "
            f"MANUAL_DIR, DATA_DIR{f', config={config!r}' if config else ''}))"
        )
    if split not in b.info.splits:
        raise ValueError(f"{full}: no split {split!r}; built splits: {', '.join(sorted(b.info.splits))}")
    return b.as_data_source(split), dict(b.info.metadata or {})


def video_items(videos: list, num_frames: int) -> np.ndarray:
    """(N, 3) int64 ``(record, expression, start frame)`` from ``[[id, num_frames, num_expressions]]``."""
    rows = [
        (r, e, s) for r, (_, n, ne) in enumerate(videos) for e in range(int(ne)) for s in range(0, int(n), num_frames)
    ]
    return np.asarray(rows, np.int64).reshape(-1, 3)


def image_items(images_by_config: list[list]) -> np.ndarray:
    """(N, 3) int64 ``(config, record, sentence)`` from each config's ``[[image_id, refs, sentences]]``."""
    rows = [
        (c, r, k)
        for c, images in enumerate(images_by_config)
        for r, (_, _, ns) in enumerate(images)
        for k in range(int(ns))
    ]
    return np.asarray(rows, np.int64).reshape(-1, 3)


class ClipSource:
    """The training items of ``dataset`` (``ref_youtube_vos`` | ``mevis`` | ``refcoco``) in a TFDS
    ``data_dir`` and their clips (:meth:`example`).  ``tokenizer``: a
    :class:`peanut_jax.text.RobertaTokenizer`; ``max_size``: the resize target of the longer side;
    ``height x width``: the padded output (at least ``max_size`` each).  Picklable: the data sources
    are opened in each process on first use."""

    def __init__(
        self,
        dataset: str,
        data_dir,
        split: str,
        *,
        tokenizer,
        num_frames: int = 8,
        sampling: str = "local",
        max_size: int = 1024,
        height: int = 1024,
        width: int = 1024,
        max_tokens: int = 32,
        refcoco_configs=REFCOCO_CONFIGS,
    ):
        if dataset not in VIDEO_DATASETS + IMAGE_DATASETS:
            raise ValueError(f"config.data.source must be one of {VIDEO_DATASETS + IMAGE_DATASETS}, got {dataset!r}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"config.data.sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if int(num_frames) < 1:
            raise ValueError(f"config.data.num_frames must be >= 1, got {num_frames}")
        if dataset in IMAGE_DATASETS and int(num_frames) != 1:
            raise ValueError(f"config.data.num_frames must be 1 for {dataset} (single images), got {num_frames}")
        if not 1 <= int(max_size) <= min(int(height), int(width)):
            raise ValueError(
                f"config.data.max_size={max_size} must be between 1 and the padded size "
                f"{height}x{width} (config.data.height x width)"
            )
        self.dataset, self.data_dir, self.split = dataset, os.fspath(data_dir), split
        self.tokenizer, self.num_frames, self.sampling = tokenizer, int(num_frames), sampling
        self.max_size, self.height, self.width, self.max_tokens = (
            int(max_size),
            int(height),
            int(width),
            int(max_tokens),
        )
        self.configs = tuple(refcoco_configs) if dataset in IMAGE_DATASETS else (None,)
        self._sources = None
        metas = [self._open_all()[1][c] for c in range(len(self.configs))]
        if dataset in VIDEO_DATASETS:
            key, what = "videos", "video list"
        else:
            key, what = "images", "image list"
        lists = []
        for c, meta in zip(self.configs, metas):
            rows = (meta.get(key) or {}).get(split)
            full = dataset if c is None else f"{dataset}/{c}"
            if rows is None:
                raise ValueError(f"{full}: no {what} for split {split!r} in the dataset metadata (rebuild it)")
            lists.append(rows)
        self.items = video_items(lists[0], self.num_frames) if dataset in VIDEO_DATASETS else image_items(lists)
        if not len(self.items):
            raise ValueError(f"{dataset} split {split!r} has no training items")

    def _open_all(self):
        if self._sources is None:
            opened = [_open(self.dataset, self.data_dir, self.split, c) for c in self.configs]
            self._sources = ([s for s, _ in opened], [m for _, m in opened])
        return self._sources

    def __getstate__(self):
        return dict(self.__dict__, _sources=None)

    def __len__(self) -> int:
        return len(self.items)

    def num_steps(self, epochs: int, batch_size: int) -> int:
        """``epochs * items // batch_size``: the steps of ``epochs`` passes over the items."""
        return int(epochs) * len(self) // int(batch_size)

    # ---------------------------------------------------------------------------------- examples
    def _video_try(self, rng, item: int):
        from peanut_jax.data.tfds.rvos import expressions, target_masks

        r, e, start = (int(v) for v in self.items[item])
        rec = self._open_all()[0][0][r]
        n = int(rec["num_frames"])
        idx = SAMPLERS[self.sampling](rng, start, n, self.num_frames)
        masks = target_masks(rec, e, idx)
        return rec, idx, masks, clean_caption(expressions(rec)[e]["exp"])

    def _image_try(self, rng, item: int):
        from peanut_jax.data.tfds.refcoco import ref_mask

        c, r, k = (int(v) for v in self.items[item])
        rec = self._open_all()[0][c][r]
        ref = int(rec["sentences"]["ref"][k])
        sent = rec["sentences"]["sent"][k]
        return rec, [0], ref_mask(rec, ref)[None], sent.decode() if isinstance(sent, bytes) else str(sent)

    def _draw(self, seed: tuple, item: int):
        """``(item, record, frame indices, target masks, caption)`` after any redraws of empty targets."""
        rng = np.random.default_rng([*(int(s) for s in seed), _STREAM])
        attempt = self._video_try if self.dataset in VIDEO_DATASETS else self._image_try
        i = int(item)
        for _ in range(MAX_TRIES):
            rec, idx, masks, caption = attempt(rng, i)
            if masks.any():
                return i, rec, [int(v) for v in idx], masks, caption
            i = int(rng.integers(len(self)))
        raise ValueError(f"{self.dataset}: {MAX_TRIES} sampled clips in a row have an empty target")

    def sampled(self, seed: tuple, item: int) -> tuple[int, list[int]]:
        """``(item, frame indices)`` that :meth:`example` reads for ``(seed, item)`` (after any redraws)."""
        i, _, idx, _, _ = self._draw(seed, item)
        return i, idx

    def example(self, seed: tuple, item: int) -> dict:
        """The clip of ``item`` drawn with the batch ``seed`` (see the module docstring)."""
        from peanut_jax.data.tfds.inpainting import decode_frames
        from peanut_jax.pipeline.samwise import resize_frames

        _, rec, idx, masks, caption = self._draw(seed, item)
        if self.dataset in IMAGE_DATASETS:
            frames = decode_frames([rec["image"]])
        else:
            frames = decode_frames(rec["frames"], idx)
        size = train_size(frames.shape[1], frames.shape[2], self.max_size)
        frames = resize_frames(frames, size)
        masks = resize_masks_nearest((masks > 0).astype(np.uint8), size)
        frames, masks = pad_clip(frames, masks, self.height, self.width)
        ids, pm = self.tokenizer([caption], pad_to=self.max_tokens)
        return {
            "frames": frames,
            "input_ids": ids[0],
            "padding_mask": pm[0],
            "masks": masks,
            "valid_hw": np.asarray(size, np.int32),
        }


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m peanut_jax.data.rvos_clips", description=__doc__.split("\n")[0])
    p.add_argument("dataset", choices=VIDEO_DATASETS + IMAGE_DATASETS)
    p.add_argument("data_dir")
    p.add_argument("--split", default="train")
    p.add_argument("--num_frames", type=int, default=None, help="default 8 (videos), 1 (refcoco)")
    p.add_argument("--epochs", type=int, default=None, help="default 4 (ref_youtube_vos), 1 (mevis), 6 (refcoco)")
    p.add_argument("--batch_size", type=int, default=None, help="default 4 (videos), 32 (refcoco)")
    a = p.parse_args(argv)
    video = a.dataset in VIDEO_DATASETS
    t = a.num_frames or (8 if video else 1)
    epochs = a.epochs or {"ref_youtube_vos": 4, "mevis": 1, "refcoco": 6}[a.dataset]
    b = a.batch_size or (4 if video else 32)
    try:
        src = ClipSource(a.dataset, a.data_dir, a.split, tokenizer=None, num_frames=t)
    except (ValueError, FileNotFoundError) as e:
        p.exit(1, f"rvos_clips: {e}\n")
    print(
        f"{a.dataset} {a.split}: {len(src)} items; "
        f"train.num_steps = {epochs} x {len(src)} // {b} = {src.num_steps(epochs, b)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
