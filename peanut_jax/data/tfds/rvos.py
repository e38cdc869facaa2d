"""TFDS builders for referring video object segmentation: Ref-YouTube-VOS, MeViS, Ref-DAVIS17.

Each builder reads the dataset as SAMWISE's (and ReferFormer's) data loaders find it in a local
``manual_dir`` and writes ``array_record`` files, built and read without TensorFlow: frames are the
source JPEG bytes unchanged and masks PNG bytes (``tfds.features.Tensor`` of ``np.object_``), so
TFDS never encodes or decodes an image.

**One record per video**, holding all of its expressions.  Training samples a clip per
*expression* (SAMWISE: 8 frames around a start frame), so an expression needs the frames and masks
of its whole video; one record per (video, expression) would store every video once per
expression (MeViS averages about 14 expressions per video, Ref-YouTube-VOS about 4), one record per
video stores each frame once.  ``info.metadata['videos'][split]`` lists
``[video_id, num_frames, num_expressions]`` in record order (``disable_shuffling``), so a sampler
can enumerate (record, expression, start frame) without reading the records.

Features of a record:

* ``video_id``; ``frame_names`` (file stems, sorted, as SAMWISE sorts ``frames``); ``frames`` (the
  JPEG bytes as read); ``num_frames``, ``height``, ``width``;
* ``masks``: one label-map PNG per frame, the source palette PNG bytes unchanged (pixel value =
  object id; Ref-YouTube-VOS / Ref-DAVIS17 splits with annotations, else empty);
* ``object_ids`` and ``object_masks``: MeViS' per-object masks, decoded from ``mask_dict.json``'s
  RLE and stored as 1-bit PNGs, ``len(object_ids) * num_frames`` of them, object-major; ``b''``
  where the object is absent (``None`` in ``mask_dict``).  ``object_ids`` are MeViS ``anno_id``s;
* ``expressions``: ``exp_id`` and ``exp`` (the text as in the JSON; SAMWISE lower-cases and
  collapses white space when it samples);
* ``targets``: the objects an expression refers to, one row per (expression, object):
  ``expression`` (index into ``expressions``), ``obj_id`` and ``anno_id`` (MeViS; -1 elsewhere).

:func:`target_masks` gives an expression's per-frame target: ``masks == obj_id`` (Ref-YouTube-VOS,
Ref-DAVIS17) or the *union* of its objects' masks (MeViS, where SAMWISE sums them); frames decode
with :func:`peanut_jax.data.tfds.inpainting.decode_frames`.

Layouts (``manual_dir``):

``ref_youtube_vos`` (SAMWISE's ``data/ref-youtube-vos``)::

    train/JPEGImages/<video>/<frame>.jpg
    train/Annotations/<video>/<frame>.png            palette PNGs, value = object id
    valid/JPEGImages/<video>/<frame>.jpg             (optional; no annotations)
    meta_expressions/{train,valid}/meta_expressions.json
        {"videos": {<video>: {"expressions": {<exp_id>: {"exp": str, "obj_id": "1"}}, "frames": [<frame>, ...]}}}
    meta_expressions/test/meta_expressions.json      (optional) its videos are dropped from 'valid'

  The competition's valid JSON also lists the 305 test videos; SAMWISE's ``inference_ytvos.py``
  removes those named by ``meta_expressions/test`` (202 remain), and so does this builder.  Splits
  ``train``, ``valid`` (expressions without ``obj_id``: no targets).

``mevis`` (SAMWISE's ``data/mevis``)::

    <split>/JPEGImages/<video>/<frame>.jpg           split in train, valid_u, valid
    <split>/meta_expressions.json   expressions {"exp": str, "obj_id": [int], "anno_id": [int]}
    <split>/mask_dict.json          {"<anno_id>": [RLE dict or null per frame]} (train, valid_u)

  ``mask_dict`` lists are indexed like the ``frames`` list, which must be sorted (it is in MeViS;
  SAMWISE sorts for training but indexes the JSON order at evaluation).

``ref_davis17``: SAMWISE's ``data/ref-davis`` after ``tools/data/convert_davis_to_ytvos.py`` (the
Ref-YouTube-VOS layout: ``{train,valid}/JPEGImages``, ``{train,valid}/Annotations``,
``meta_expressions/{train,valid}/meta_expressions.json``, 4 expressions per object: annotator 1
first-frame, annotator 1 full-video, annotator 2 first-frame, annotator 2 full-video).  A video
whose ``<split>/JPEGImages/<video>`` (``Annotations``) folder is missing is read from the DAVIS-2017
folder instead: ``DAVIS/JPEGImages/480p/<video>`` (``DAVIS/Annotations_unsupervised/480p/<video>``,
the masks SAMWISE's converter moves and its evaluation scores against, ``--task unsupervised``).
Splits ``train`` and ``valid`` (the evaluation split, 30 videos), both with masks.

Build (no TensorFlow needed)::

    from peanut_jax.data.tfds.rvos import build
    build('mevis', manual_dir='/data/mevis', data_dir='/data/tfds')
    build('refcoco', '/data/coco', '/data/tfds', config='refcoco_plus')   # peanut_jax.data.tfds.refcoco

Read: ``tfds.data_source('mevis', data_dir=..., split='train')`` after ``import peanut_jax.data.tfds``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pathlib
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from peanut_jax.data.tfds.common import ManualBuilder
from peanut_jax.data.tfds.inpainting import decode_masks
from peanut_jax.data.tfds.rle import rle_decode

YTVOS_LAYOUT = (
    "train/JPEGImages/<video>/<frame>.jpg, train/Annotations/<video>/<frame>.png, "
    "valid/JPEGImages/<video>/<frame>.jpg, meta_expressions/{train,valid}/meta_expressions.json"
)
MEVIS_LAYOUT = (
    "{train,valid_u,valid}/JPEGImages/<video>/<frame>.jpg, <split>/meta_expressions.json, <split>/mask_dict.json"
)
DAVIS_LAYOUT = (
    "{train,valid}/JPEGImages/<video>/<frame>.jpg, {train,valid}/Annotations/<video>/<frame>.png "
    "(or DAVIS/JPEGImages/480p, DAVIS/Annotations_unsupervised/480p), "
    "meta_expressions/{train,valid}/meta_expressions.json"
)
NO_ANNO = -1  # anno_id of a target that has none (Ref-YouTube-VOS, Ref-DAVIS17)


# ------------------------------------------------------------------------------- shared helpers
def read_json(path: pathlib.Path, layout: str, what: str = "annotation file"):
    """A JSON file of the dataset; one-line errors naming the path and the expected layout."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} missing (expected layout: {layout})")
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: malformed {what} ({e}); expected layout: {layout}") from None


def image_size(data: bytes, where: str, formats: Sequence[str] = ("JPEG",)) -> tuple[int, int]:
    """(H, W) of encoded image bytes, fully decoded once to catch truncated files."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            img.load()
            hw = (img.height, img.width)
    except (OSError, ValueError) as e:
        raise ValueError(f"{where}: cannot decode image ({e})") from None
    if fmt not in formats:
        raise ValueError(f"{where}: a {fmt} file, expected {' or '.join(formats)}")
    return hw


def encode_binary_png(mask: np.ndarray) -> bytes:
    """(H, W) mask (nonzero = set) -> 1-bit PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask) != 0).save(buf, format="PNG")
    return buf.getvalue()


def decode_binary_png(data: bytes, hw: tuple[int, int]) -> np.ndarray:
    """Bytes of :func:`encode_binary_png` -> (H, W) uint8 0/1; ``b''`` (no mask) -> zeros."""
    if not len(data):
        return np.zeros(hw, np.uint8)
    with Image.open(io.BytesIO(bytes(data))) as img:
        return (np.asarray(img) != 0).astype(np.uint8)


# ----------------------------------------------------------------------------------- listing
@dataclasses.dataclass
class _Expression:
    exp_id: str
    text: str
    obj_ids: list[int]
    anno_ids: list[int]


@dataclasses.dataclass
class _Video:
    video_id: str
    frame_names: list[str]
    frames: list[pathlib.Path]
    masks: list[pathlib.Path] | None  # label-map PNGs per frame
    expressions: list[_Expression]
    rle: dict[int, list] | None = None  # MeViS: anno_id -> per-frame RLE or None


def _ids(value, where: str) -> list[int]:
    items = value if isinstance(value, list) else [value]
    try:
        out = [int(v) for v in items]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: object ids must be integers, got {value!r}") from None
    if not out:
        raise ValueError(f"{where}: empty object id list")
    return out


def _meta_videos(meta_path: pathlib.Path, layout: str, mevis: bool, need_ids: bool) -> dict[str, tuple]:
    """``{video: (sorted frame names, [_Expression])}`` of a ``meta_expressions.json``."""
    data = read_json(meta_path, layout, "meta_expressions.json")
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, dict):
        raise ValueError(f'{meta_path}: expected {{"videos": {{<video>: {{"expressions": ..., "frames": ...}}}}}}')
    out = {}
    for vid, v in videos.items():
        where = f"{meta_path}: video {vid!r}"
        if (
            not isinstance(v, dict)
            or not isinstance(v.get("expressions"), dict)
            or not isinstance(v.get("frames"), list)
        ):
            raise ValueError(f'{where}: expected {{"expressions": {{<exp_id>: {{"exp": ...}}}}, "frames": [...]}}')
        frames = [str(f) for f in v["frames"]]
        if not frames:
            raise ValueError(f"{where}: no frames")
        if len(set(frames)) != len(frames):
            raise ValueError(f"{where}: repeated frame names")
        if mevis and frames != sorted(frames):
            raise ValueError(f"{where}: frames are not sorted (mask_dict is indexed by their position)")
        exprs = []
        for eid, e in v["expressions"].items():
            ew = f"{where} expression {eid!r}"
            if not isinstance(e, dict) or not isinstance(e.get("exp"), str):
                raise ValueError(f'{ew}: expected {{"exp": <text>, "obj_id": ...}}')
            obj_ids = _ids(e["obj_id"], ew) if "obj_id" in e else []
            anno_ids = _ids(e["anno_id"], ew) if mevis and "anno_id" in e else []
            if need_ids and not (anno_ids if mevis else obj_ids):
                raise ValueError(f"{ew}: no {'anno_id' if mevis else 'obj_id'} in a split with masks")
            if not mevis and len(obj_ids) > 1:
                raise ValueError(f"{ew}: one obj_id per expression expected, got {obj_ids}")
            if mevis and anno_ids and obj_ids and len(anno_ids) != len(obj_ids):
                raise ValueError(f"{ew}: {len(obj_ids)} obj_id but {len(anno_ids)} anno_id")
            exprs.append(_Expression(str(eid), e["exp"], obj_ids, anno_ids))
        out[str(vid)] = (sorted(frames), exprs)
    return out


def _frame_paths(folder: pathlib.Path, names: list[str], ext: str, where: str) -> list[pathlib.Path]:
    paths = [folder / f"{n}{ext}" for n in names]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{where}: {p} missing")
    return paths


def _first_dir(candidates: Sequence[pathlib.Path], video: str, what: str, layout: str) -> pathlib.Path:
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(
        f"video {video!r}: no {what} folder ({' or '.join(map(str, candidates))}); expected layout: {layout}"
    )


def _ytvos_split(
    root: pathlib.Path,
    split: str,
    layout: str,
    with_masks: bool,
    fallback: tuple[str, str] | None = None,
    exclude: set[str] = frozenset(),
) -> list[_Video]:
    """A split of the Ref-YouTube-VOS layout (also SAMWISE's converted Ref-DAVIS17)."""
    meta_path = root / "meta_expressions" / split / "meta_expressions.json"
    metas = _meta_videos(meta_path, layout, mevis=False, need_ids=with_masks)
    videos = []
    for vid, (frames, exprs) in metas.items():
        if vid in exclude:
            continue
        where = f"{meta_path}: video {vid!r}"
        img_dirs = [root / split / "JPEGImages" / vid]
        ann_dirs = [root / split / "Annotations" / vid]
        if fallback is not None:
            img_dirs.append(root / fallback[0] / vid)
            ann_dirs.append(root / fallback[1] / vid)
        img_dir = _first_dir(img_dirs, vid, "JPEGImages", layout)
        masks = None
        if with_masks:
            masks = _frame_paths(_first_dir(ann_dirs, vid, "Annotations", layout), frames, ".png", where)
        videos.append(_Video(vid, frames, _frame_paths(img_dir, frames, ".jpg", where), masks, exprs))
    if not videos:
        raise ValueError(f"{meta_path}: split {split!r} has no videos")
    return videos


def _mevis_split(root: pathlib.Path, split: str) -> list[_Video]:
    meta_path = root / split / "meta_expressions.json"
    dict_path = root / split / "mask_dict.json"
    with_masks = dict_path.is_file()
    metas = _meta_videos(meta_path, MEVIS_LAYOUT, mevis=True, need_ids=with_masks)
    mask_dict = read_json(dict_path, MEVIS_LAYOUT, "mask_dict.json") if with_masks else None
    if with_masks and not isinstance(mask_dict, dict):
        raise ValueError(f"{dict_path}: expected {{<anno_id>: [RLE or null per frame]}}")
    videos = []
    for vid, (frames, exprs) in metas.items():
        where = f"{meta_path}: video {vid!r}"
        img_dir = _first_dir([root / split / "JPEGImages" / vid], vid, "JPEGImages", MEVIS_LAYOUT)
        rle = None
        if with_masks:
            rle = {}
            for e in exprs:
                for a in e.anno_ids:
                    rows = mask_dict.get(str(a))
                    if rows is None:
                        raise ValueError(f"{where} expression {e.exp_id!r}: anno_id {a} is not in {dict_path}")
                    if not isinstance(rows, list) or len(rows) != len(frames):
                        n = len(rows) if isinstance(rows, list) else type(rows).__name__
                        raise ValueError(
                            f"{dict_path}: anno_id {a} has {n} entries, video {vid!r} has {len(frames)} frames"
                        )
                    rle[a] = rows
        videos.append(_Video(vid, frames, _frame_paths(img_dir, frames, ".jpg", where), None, exprs, rle))
    if not videos:
        raise ValueError(f"{meta_path}: split {split!r} has no videos")
    return videos


# ----------------------------------------------------------------------------------- builder
def _features() -> tfds.features.FeaturesDict:
    enc = tfds.features.Tensor(shape=(), dtype=np.object_)
    return tfds.features.FeaturesDict(
        {
            "video_id": tfds.features.Text(),
            "frame_names": tfds.features.Sequence(tfds.features.Text()),
            "frames": tfds.features.Sequence(enc),
            "num_frames": np.int32,
            "height": np.int32,
            "width": np.int32,
            "masks": tfds.features.Sequence(enc),
            "object_ids": tfds.features.Sequence(np.int64),
            "object_masks": tfds.features.Sequence(enc),
            "expressions": tfds.features.Sequence(
                tfds.features.FeaturesDict({"exp_id": tfds.features.Text(), "exp": tfds.features.Text()})
            ),
            "targets": tfds.features.Sequence(
                tfds.features.FeaturesDict({"expression": np.int32, "obj_id": np.int64, "anno_id": np.int64})
            ),
        }
    )


class _RvosBuilder(ManualBuilder, skip_registration=True):
    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
            features=_features(),
        )

    def _splits(self, root: pathlib.Path) -> dict[str, list[_Video]]:
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        splits = self._splits(self._root(dl_manager))
        self.info.metadata["videos"] = {
            s: [[v.video_id, len(v.frames), len(v.expressions)] for v in vs] for s, vs in splits.items()
        }
        return {s: self._generate_examples(vs) for s, vs in splits.items()}

    def _generate_examples(self, videos: list[_Video]) -> Iterator[tuple[int, dict]]:
        for key, v in enumerate(videos):
            where = f"{self.name}: video {v.video_id!r}"
            frames, hw = [], None
            for p in v.frames:
                data = p.read_bytes()
                size = image_size(data, str(p))
                if hw is None:
                    hw = size
                elif size != hw:
                    raise ValueError(f"{where}: {p} is {size[0]}x{size[1]}, {v.frames[0].name} is {hw[0]}x{hw[1]}")
                frames.append(data)
            masks, present = _label_maps(v.masks, hw, where) if v.masks is not None else ([], None)
            targets = []
            for i, e in enumerate(v.expressions):
                for j, obj in enumerate(e.obj_ids or [NO_ANNO] * len(e.anno_ids)):
                    if present is not None and obj not in present:
                        raise ValueError(
                            f"{where} expression {e.exp_id!r}: object {obj} is in no mask of {v.masks[0].parent}"
                        )
                    anno = e.anno_ids[j] if e.anno_ids else NO_ANNO
                    targets.append({"expression": i, "obj_id": obj, "anno_id": anno})
            object_ids, object_masks = [], []
            if v.rle is not None:
                for a in sorted(v.rle):
                    object_ids.append(a)
                    object_masks.extend(_rle_row(v.rle[a], hw, f"{where} anno_id {a}"))
            yield (
                key,
                {
                    "video_id": v.video_id,
                    "frame_names": v.frame_names,
                    "frames": frames,
                    "num_frames": len(frames),
                    "height": hw[0],
                    "width": hw[1],
                    "masks": masks,
                    "object_ids": object_ids,
                    "object_masks": object_masks,
                    "expressions": [{"exp_id": e.exp_id, "exp": e.text} for e in v.expressions],
                    "targets": targets,
                },
            )


def _label_maps(paths: list[pathlib.Path], hw, where: str) -> tuple[list[bytes], set[int]]:
    """The label-map PNGs as read (checked: palette or grey, frame size) and the ids they hold."""
    out, present = [], set()
    for p in paths:
        data = p.read_bytes()
        try:
            with Image.open(io.BytesIO(data)) as img:
                fmt, mode = img.format, img.mode
                arr = np.asarray(img)
        except (OSError, ValueError) as e:
            raise ValueError(f"{where}: {p}: cannot decode mask ({e})") from None
        if fmt != "PNG" or mode not in ("P", "L"):
            raise ValueError(f"{where}: {p} is a {fmt} {mode} image, expected a palette (or grey) PNG of object ids")
        if arr.shape != hw:
            raise ValueError(f"{where}: {p} is {arr.shape[0]}x{arr.shape[1]}, the frames are {hw[0]}x{hw[1]}")
        present.update(int(i) for i in np.unique(arr) if i)
        out.append(data)
    return out, present


def _rle_row(rows: list, hw, where: str) -> list[bytes]:
    out = []
    for t, r in enumerate(rows):
        if r is None:
            out.append(b"")
            continue
        m = rle_decode(r, f"{where} frame {t}")
        if m.shape != hw:
            raise ValueError(f"{where} frame {t}: RLE size {m.shape[0]}x{m.shape[1]}, the frames are {hw[0]}x{hw[1]}")
        out.append(encode_binary_png(m))
    return out


class RefYoutubeVos(_RvosBuilder):
    """Ref-YouTube-VOS (referring video object segmentation), SAMWISE's layout."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Download Ref-YouTube-VOS (train.zip, valid.zip, meta_expressions_test.zip from the codalab
    competition) and arrange it as SAMWISE's data/ref-youtube-vos: {YTVOS_LAYOUT}.  Pass that folder
    as manual_dir.
    """

    def _splits(self, root):
        train_meta = root / "meta_expressions" / "train" / "meta_expressions.json"
        if not train_meta.is_file():
            raise FileNotFoundError(f"{train_meta}: missing (expected layout: {YTVOS_LAYOUT})")
        out = {"train": _ytvos_split(root, "train", YTVOS_LAYOUT, with_masks=True)}
        if (root / "meta_expressions" / "valid" / "meta_expressions.json").is_file():
            test_meta = root / "meta_expressions" / "test" / "meta_expressions.json"
            test = set()
            if test_meta.is_file():  # only its video names are used
                data = read_json(test_meta, YTVOS_LAYOUT, "meta_expressions.json")
                if not isinstance(data, dict) or not isinstance(data.get("videos"), dict):
                    raise ValueError(f'{test_meta}: expected {{"videos": {{<video>: ...}}}}')
                test = set(data["videos"])
            out["valid"] = _ytvos_split(root, "valid", YTVOS_LAYOUT, with_masks=False, exclude=test)
        return out


class Mevis(_RvosBuilder):
    """MeViS (motion-expression video segmentation), SAMWISE's layout."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Download MeViS (train, valid_u, valid) and pass its folder as manual_dir: {MEVIS_LAYOUT}.
    """

    def _splits(self, root):
        out = {s: _mevis_split(root, s) for s in ("train", "valid_u", "valid") if (root / s).is_dir()}
        if not out:
            raise FileNotFoundError(f"{root}: none of train/, valid_u/, valid/ (expected layout: {MEVIS_LAYOUT})")
        return out


class RefDavis17(_RvosBuilder):
    """Ref-DAVIS17 (DAVIS-2017 with the MPI referring expressions), SAMWISE's converted layout."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Unzip DAVIS-2017-Unsupervised-trainval-480p.zip and the MPI davis_text_annotations into
    data/ref-davis and run SAMWISE's tools/data/convert_davis_to_ytvos.py; pass data/ref-davis as
    manual_dir: {DAVIS_LAYOUT}.
    """

    def _splits(self, root):
        fallback = ("DAVIS/JPEGImages/480p", "DAVIS/Annotations_unsupervised/480p")
        out = {}
        for split in ("train", "valid"):
            if (root / "meta_expressions" / split / "meta_expressions.json").is_file():
                out[split] = _ytvos_split(root, split, DAVIS_LAYOUT, with_masks=True, fallback=fallback)
        if not out:
            meta = root / "meta_expressions"
            raise FileNotFoundError(
                f"{meta}: no train/ or valid/meta_expressions.json (expected layout: {DAVIS_LAYOUT})"
            )
        return out


BUILDERS = {"ref_youtube_vos": RefYoutubeVos, "mevis": Mevis, "ref_davis17": RefDavis17}


# ------------------------------------------------------------------------------------ reading
def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def expressions(record: dict) -> list[dict]:
    """The expressions of a record: ``[{'exp_id', 'exp', 'obj_ids', 'anno_ids'}]`` in record order."""
    ex, tg = record["expressions"], record["targets"]
    out = [
        {"exp_id": _text(i), "exp": _text(t), "obj_ids": [], "anno_ids": []} for i, t in zip(ex["exp_id"], ex["exp"])
    ]
    for e, o, a in zip(tg["expression"], tg["obj_id"], tg["anno_id"]):
        out[int(e)]["obj_ids"].append(int(o))
        if int(a) != NO_ANNO:
            out[int(e)]["anno_ids"].append(int(a))
    return out


def target_masks(record: dict, expression: int, indices: Sequence[int] | None = None) -> np.ndarray:
    """Expression ``expression``'s target on the frames ``indices`` (default all): (T, H, W) uint8 0/1,
    the union of its objects (label-map pixels equal to an ``obj_id``, or MeViS object masks)."""
    n, hw = int(record["num_frames"]), (int(record["height"]), int(record["width"]))
    indices = list(range(n)) if indices is None else [int(i) for i in indices]
    exprs = expressions(record)
    if not 0 <= expression < len(exprs):
        raise IndexError(f"expression {expression} out of range ({len(exprs)} expressions)")
    e = exprs[expression]
    if len(record["object_ids"]):
        rows = {int(a): r for r, a in enumerate(record["object_ids"])}
        out = np.zeros((len(indices), *hw), np.uint8)
        for a in e["anno_ids"]:
            for k, t in enumerate(indices):
                out[k] |= decode_binary_png(record["object_masks"][rows[a] * n + t], hw)
        return out
    if len(record["masks"]):
        labels = decode_masks(record["masks"], indices)
        return np.isin(labels, e["obj_ids"]).astype(np.uint8)
    raise ValueError(f"video {_text(record['video_id'])!r}: the split has no masks")


def build(name: str, manual_dir: str | os.PathLike, data_dir: str | os.PathLike, config: str | None = None):
    """Build ``name`` (``ref_youtube_vos`` | ``mevis`` | ``ref_davis17`` | ``refcoco`` with config
    ``refcoco``/``refcoco_plus``/``refcocog``) from ``manual_dir`` into ``data_dir``; returns the
    builder.  Needs no TensorFlow."""
    from peanut_jax.data.tfds import refcoco  # refcoco uses the helpers above

    builders = {**BUILDERS, **refcoco.BUILDERS}
    if name not in builders:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(builders))}")
    manual_dir = pathlib.Path(manual_dir)
    if not manual_dir.is_dir():
        raise FileNotFoundError(f"manual_dir {manual_dir} is not a folder")
    cls = builders[name]
    kwargs = {"data_dir": os.fspath(data_dir)}
    if cls.BUILDER_CONFIGS:
        names = [c.name for c in cls.BUILDER_CONFIGS]
        if config not in names:
            raise ValueError(f"{name}: config must be one of {names}, got {config!r}")
        kwargs["config"] = config
    b = cls(**kwargs)
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
    return b
