"""TFDS builders for the video inpainting datasets (YouTube-VOS, DAVIS) from a local ``manual_dir``.

Both builders write ``array_record`` files (``file_format='array_record'``), one record per video,
readable by random access without TensorFlow (``tfds.data_source`` + grain).  Building does not need
TensorFlow either: frames are stored as their *encoded* bytes (``tfds.features.Tensor`` of
``np.object_``), so TFDS never encodes or decodes an image; the reader decodes only the frames a clip
uses (:func:`decode_frames`, :func:`decode_masks`).

Features of a record:

* ``video_id``: text (returned as ``bytes`` by the numpy reader);
* ``frames``: the frames in file-name order, encoded (the source JPEG bytes unchanged for the
  ``full`` config; re-encoded JPEG, quality 95, after a PIL bicubic resize for the ``432x240``
  config, the size E2FGVI trains at: smaller records, one JPEG generation more);
* ``masks``: per-frame masks as single-channel PNG holding the raw values of the source masks
  (DAVIS palette indices, or 0/255 for binary masks; empty when the split has no masks);
* ``num_frames``, ``height``, ``width`` (of the stored frames).

Layouts (``manual_dir``):

``youtube_vos_inpainting`` (E2FGVI's ``datasets/youtube-vos`` folder)::

    train.json                       {"<video_id>": <number of frames>, ...}  (split 'train')
    test.json                        the same for split 'test' (optional)
    JPEGImages/<video_id>/*.jpg      or JPEGImages/<video_id>.zip (E2FGVI's zip_dir.sh)
    test_masks/<video_id>/*.png      E2FGVI's evaluation masks (optional; stored for 'test')

  As E2FGVI's ``TrainZipReader``, frames are the first ``<number of frames>`` files in sorted
  name order; a video with fewer files is an error naming it.

``davis_inpainting``: the DAVIS-2017 trainval layout::

    JPEGImages/480p/<seq>/*.jpg
    Annotations/480p/<seq>/*.png     palette masks (stored as indices)
    ImageSets/2017/{train,val}.txt   the splits (without them: one split 'train' of all sequences)

  or E2FGVI's ``datasets/davis`` layout (``train.json``/``test.json``, ``JPEGImages/<seq>`` or
  ``.zip``, ``test_masks/<seq>``), which is detected by its ``JPEGImages`` holding no ``480p``.

Build (no TensorFlow needed)::

    from peanut_jax.data.tfds import YoutubeVosInpainting
    YoutubeVosInpainting(data_dir=OUT, config='432x240').download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=ROOT))

Read: ``tfds.data_source('youtube_vos_inpainting/432x240', data_dir=OUT, split='train')``; the E2FGVI
training task (``peanut_jax.train.tasks.e2fgvi``) samples clips from it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pathlib
import zipfile
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from peanut_jax.data.tfds.common import ManualBuilder

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
MASK_EXTENSIONS = (".png",)
TRAIN_SIZE = (432, 240)  # (W, H), E2FGVI's training size


# ---------------------------------------------------------------------------------- reading helpers
def decode_frames(
    encoded: Sequence[bytes], indices: Sequence[int] | None = None, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Decode the selected frames of a record to (len(indices), H, W, 3) uint8 RGB.

    ``size`` = (W, H) resizes with PIL's default filter (bicubic), as E2FGVI's
    ``img.resize(self.size)`` does.  ``indices`` default: all frames.
    """
    indices = range(len(encoded)) if indices is None else indices
    out = []
    for i in indices:
        with Image.open(io.BytesIO(encoded[int(i)])) as img:
            img = img.convert("RGB")
            if size is not None and img.size != tuple(size):
                img = img.resize(tuple(size))
            out.append(np.asarray(img))
    return np.stack(out)


def decode_masks(
    encoded: Sequence[bytes], indices: Sequence[int] | None = None, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Decode stored masks to (len(indices), H, W) uint8 raw values (resize: nearest, like E2FGVI)."""
    indices = range(len(encoded)) if indices is None else indices
    out = []
    for i in indices:
        with Image.open(io.BytesIO(encoded[int(i)])) as img:
            if size is not None and img.size != tuple(size):
                img = img.resize(tuple(size), Image.NEAREST)
            out.append(np.asarray(img))
    return np.stack(out)


# -------------------------------------------------------------------------------- source listing
@dataclasses.dataclass
class _Video:
    video_id: str
    frames: _FrameSource
    masks: _FrameSource | None
    count: int | None = None  # take the first ``count`` frames (E2FGVI's json)


class _FrameSource:
    """Sorted image files of a folder or of a zip archive, read as raw bytes."""

    def __init__(self, path: pathlib.Path, extensions: Sequence[str]):
        self.path = path
        self.extensions = tuple(extensions)
        if path.is_dir():
            self.names = sorted(
                p.name
                for p in path.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in self.extensions
            )
        elif path.is_file() and path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as z:
                # E2FGVI's TrainZipReader: sorted namelist (zip_dir.sh stores names without folders)
                self.names = sorted(
                    n
                    for n in z.namelist()
                    if not n.endswith("/") and pathlib.PurePath(n).suffix.lower() in self.extensions
                )
        else:
            raise FileNotFoundError(f"{path}: not a folder or .zip of images")
        if not self.names:
            raise ValueError(f"{path}: no images ({', '.join(self.extensions)})")

    def __len__(self) -> int:
        return len(self.names)

    def read(self, count: int | None = None) -> list[bytes]:
        names = self.names if count is None else self.names[:count]
        if self.path.is_dir():
            return [(self.path / n).read_bytes() for n in names]
        with zipfile.ZipFile(self.path) as z:
            return [z.read(n) for n in names]


def _frame_source(images_dir: pathlib.Path, video_id: str) -> _FrameSource:
    folder, archive = images_dir / video_id, images_dir / f"{video_id}.zip"
    if folder.is_dir():
        return _FrameSource(folder, FRAME_EXTENSIONS)
    if archive.is_file():
        return _FrameSource(archive, FRAME_EXTENSIONS)
    raise FileNotFoundError(f"video {video_id!r}: neither {folder} nor {archive} exists")


def _read_json(path: pathlib.Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the split file ({e})") from None
    if not isinstance(data, dict) or not all(isinstance(v, int) and v > 0 for v in data.values()):
        raise ValueError(f"{path}: expected a JSON object {{video_id: number_of_frames}}")
    return data


def _e2fgvi_layout(root: pathlib.Path, splits=("train", "test")) -> dict[str, list[_Video]]:
    """E2FGVI's ``datasets/<name>`` folder: ``<split>.json``, ``JPEGImages``, ``test_masks``."""
    images = root / "JPEGImages"
    if not images.is_dir():
        raise FileNotFoundError(
            f"{images}: missing (expected E2FGVI's layout: train.json, JPEGImages/<video>[.zip], test_masks/<video>)"
        )
    out: dict[str, list[_Video]] = {}
    for split in splits:
        js = root / f"{split}.json"
        if not js.is_file():
            continue
        videos = []
        for vid, count in _read_json(js).items():
            mdir = root / "test_masks" / vid
            masks = _FrameSource(mdir, MASK_EXTENSIONS) if split == "test" and mdir.is_dir() else None
            videos.append(_Video(vid, _frame_source(images, vid), masks, count))
        out[split] = videos
    if not out:
        raise FileNotFoundError(f"{root}: no {' / '.join(s + '.json' for s in splits)} split file")
    return out


def _davis_layout(root: pathlib.Path, resolution: str = "480p") -> dict[str, list[_Video]]:
    images, annos = root / "JPEGImages" / resolution, root / "Annotations" / resolution
    seqs = sorted(p.name for p in images.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not seqs:
        raise ValueError(f"{images}: no sequence folders")
    sets = root / "ImageSets" / "2017"
    split_ids: dict[str, list[str]] = {}
    for split in ("train", "val"):
        f = sets / f"{split}.txt"
        if f.is_file():
            split_ids[split] = [s.strip() for s in f.read_text().split() if s.strip()]
    if not split_ids:
        split_ids = {"train": seqs}
    out = {}
    for split, ids in split_ids.items():
        videos = []
        for seq in ids:
            if seq not in seqs:
                raise FileNotFoundError(f"{sets / (split + '.txt')}: sequence {seq!r} has no folder in {images}")
            masks = _FrameSource(annos / seq, MASK_EXTENSIONS) if (annos / seq).is_dir() else None
            videos.append(_Video(seq, _FrameSource(images / seq, FRAME_EXTENSIONS), masks))
        out[split] = videos
    return out


# ------------------------------------------------------------------------------------- encoding
def _encode_frames(raw: list[bytes], size: tuple[int, int] | None, where: str) -> tuple[list[bytes], int, int]:
    out, hw = [], None
    for i, b in enumerate(raw):
        try:
            with Image.open(io.BytesIO(b)) as img:
                img.load()
                if size is None:
                    shape = (img.height, img.width)
                    enc = b
                else:
                    img = img.convert("RGB").resize(tuple(size))
                    buf = io.BytesIO()
                    img.save(buf, format="JPEG", quality=95)
                    shape, enc = (img.height, img.width), buf.getvalue()
        except (OSError, ValueError) as e:
            raise ValueError(f"{where}: frame {i} cannot be decoded ({e})") from None
        if hw is None:
            hw = shape
        elif shape != hw:
            raise ValueError(f"{where}: frame {i} is {shape[0]}x{shape[1]}, frame 0 is {hw[0]}x{hw[1]}")
        out.append(enc)
    return out, hw[0], hw[1]


def _encode_masks(raw: list[bytes], hw: tuple[int, int], size: tuple[int, int] | None, where: str) -> list[bytes]:
    out = []
    for i, b in enumerate(raw):
        try:
            with Image.open(io.BytesIO(b)) as img:
                img.load()
                if img.mode in ("P", "L", "1"):
                    arr = np.asarray(img if img.mode != "1" else img.convert("L"))
                else:  # RGB(A) / other: E2FGVI's convert('L'), values kept
                    arr = np.asarray(img.convert("L"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{where}: mask {i} cannot be decoded ({e})") from None
        m = Image.fromarray(arr.astype(np.uint8), mode="L")
        if size is not None:
            m = m.resize(tuple(size), Image.NEAREST)
        elif (m.height, m.width) != hw:
            raise ValueError(f"{where}: mask {i} is {m.height}x{m.width}, the frames are {hw[0]}x{hw[1]}")
        buf = io.BytesIO()
        m.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _features() -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "video_id": tfds.features.Text(),
            "frames": tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_)),
            "masks": tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_)),
            "num_frames": np.int32,
            "height": np.int32,
            "width": np.int32,
        }
    )


@dataclasses.dataclass
class InpaintingConfig(tfds.core.BuilderConfig):
    size: tuple[int, int] | None = None  # (W, H) to resize to at build time; None keeps the source bytes


_CONFIGS = [
    InpaintingConfig(name="full", description="source frames unchanged (encoded bytes as found)"),
    InpaintingConfig(
        name="432x240",
        size=TRAIN_SIZE,
        description="frames resized to 432x240 (PIL bicubic), JPEG quality 95; masks nearest",
    ),
]


class _InpaintingBuilder(ManualBuilder, skip_registration=True):
    BUILDER_CONFIGS = _CONFIGS

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=_features(), description=self.__doc__)

    def _layout(self, root: pathlib.Path) -> dict[str, list[_Video]]:
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        layout = self._layout(self._root(dl_manager))
        return {split: self._generate_examples(videos) for split, videos in layout.items()}

    def _generate_examples(self, videos: list[_Video]) -> Iterator[tuple[str, dict]]:
        size = self.builder_config.size
        for v in videos:
            where = f"{self.name}: video {v.video_id!r} ({v.frames.path})"
            if v.count is not None and len(v.frames) < v.count:
                raise ValueError(f"{where}: the split file lists {v.count} frames, found {len(v.frames)}")
            frames, h, w = _encode_frames(v.frames.read(v.count), size, where)
            masks: list[bytes] = []
            if v.masks is not None:
                if len(v.masks) < len(frames):
                    raise ValueError(f"{where}: {len(v.masks)} masks in {v.masks.path} for {len(frames)} frames")
                masks = _encode_masks(v.masks.read(len(frames)), (h, w), size, where)
            yield (
                v.video_id,
                {
                    "video_id": v.video_id,
                    "frames": frames,
                    "masks": masks,
                    "num_frames": len(frames),
                    "height": h,
                    "width": w,
                },
            )


class YoutubeVosInpainting(_InpaintingBuilder):
    """YouTube-VOS for video inpainting, E2FGVI's layout (train.json, JPEGImages, test_masks)."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download YouTube-VOS (train and test 'all frames') and E2FGVI's split files and test masks, and
    arrange them as E2FGVI's datasets/youtube-vos folder: train.json, test.json,
    JPEGImages/<video_id>/ (or <video_id>.zip), test_masks/<video_id>/*.png.  Pass that folder as
    manual_dir.
    """

    def _layout(self, root):
        return _e2fgvi_layout(root)


class DavisInpainting(_InpaintingBuilder):
    """DAVIS-2017 (480p) for video inpainting, with the annotations as object masks."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Unzip DAVIS-2017-trainval-480p.zip and pass its DAVIS/ folder (JPEGImages/480p, Annotations/480p,
    ImageSets/2017) as manual_dir; E2FGVI's datasets/davis folder (train.json, test.json,
    JPEGImages/<seq>[.zip], test_masks) is accepted too.
    """

    def _layout(self, root):
        if (root / "JPEGImages" / "480p").is_dir():
            return _davis_layout(root)
        return _e2fgvi_layout(root)


def build(name: str, manual_dir: str | os.PathLike, data_dir: str | os.PathLike, config: str = "432x240"):
    """Build ``name`` (``youtube_vos_inpainting`` | ``davis_inpainting``) from ``manual_dir`` into
    ``data_dir``; returns the builder.  Needs no TensorFlow."""
    builders = {"youtube_vos_inpainting": YoutubeVosInpainting, "davis_inpainting": DavisInpainting}
    if name not in builders:
        raise ValueError(f"unknown inpainting dataset {name!r}; known: {', '.join(builders)}")
    manual_dir = pathlib.Path(manual_dir)
    if not manual_dir.is_dir():
        raise FileNotFoundError(f"manual_dir {manual_dir} is not a folder")
    b = builders[name](data_dir=os.fspath(data_dir), config=config)
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
    return b
