"""TFDS builders for video super-resolution: REDS and Vimeo-90K septuplets, from a local ``manual_dir``.

Both write ``array_record`` files, readable by random access without TensorFlow
(``builder.as_data_source(split)`` / ``tfds.data_source``, then grain).  Building needs no TensorFlow
either: images are stored as *encoded PNG bytes* (``tfds.features.Tensor`` of ``np.object_``; the
source files' bytes unchanged where they are PNGs), so TFDS never encodes or decodes an image.
:func:`decode_png` / :func:`decode_many` decode them on the host.

``reds_vsr`` (configs ``bi``, ``bd``) -- one record per *frame*::

    manual_dir/train_sharp/<clip>/<frame>.png               GT, 720x1280 (clips 000..239)
    manual_dir/train_sharp_bicubic/X4/<clip>/<frame>.png    official BI x4 LR (optional)
    manual_dir/val_sharp[_bicubic/X4]/<clip>/...            optional: the 30 validation clips,
                                                            renumbered 240..269 as mmagic's
                                                            ``preprocess_reds_dataset`` does

  Splits: ``reds4`` = clips 000, 011, 015, 020 (the REDS4 test set of EDVR/BasicVSR/BasicVSR++);
  ``train`` = every other clip (266 with the validation clips merged, 236 without).  ``bi`` stores
  the official ``train_sharp_bicubic/X4`` frames when present and otherwise computes them with the
  MATLAB-compatible ``imresize(gt, 1/4)`` (:func:`peanut_jax.data.degrade.imresize`, uint8 in, rounded
  uint8 out, as the official MATLAB script); ``bd`` computes Gaussian blur (sigma 1.6) + x4
  subsampling (:func:`peanut_jax.data.degrade.bd_downsample`, MATLAB variant).  Records are written
  in clip/frame order (``disable_shuffling``) and ``info.metadata['clips'][split]`` lists
  ``[clip, first_record, num_frames]``, so a window of frames of one clip is a range of record
  indices (:func:`clip_table`).  Record features: ``clip`` (text), ``frame`` (index in the clip),
  ``clip_start``, ``clip_len``, ``gt`` and ``lq`` (PNG bytes).

``vimeo90k_septuplet`` (configs ``bi``, ``bd``) -- one record per septuplet::

    manual_dir/sequences/<a>/<b>/im1.png .. im7.png        GT, 448x256
    manual_dir/sep_trainlist.txt, sep_testlist.txt        lines "<a>/<b>"
    manual_dir/BIx4|BDx4/<a>/<b>/im1.png ..                 optional precomputed LR (mmagic naming;
                                                            otherwise computed as for REDS)

  Splits ``train`` and ``test`` (the lists; ``test`` is Vimeo-90K-T).  Features: ``name``,
  ``gt`` and ``lq`` (7 PNG bytes each).

Build (no TensorFlow needed)::

    from peanut_jax.data.tfds.vsr import build
    build('reds_vsr', manual_dir='/data/REDS', data_dir='/data/tfds', config='bi')

Read::

    src, clips = open_split('reds_vsr', data_dir, 'train', config='bi')   # ArrayRecordDataSource, table
"""
from __future__ import annotations

import dataclasses
import io
import os
import pathlib
from typing import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.core import utils as tfds_utils

REDS4_CLIPS = ("000", "011", "015", "020")
REDS_NUM_TRAIN_CLIPS = 240     # validation clips are renumbered from here (mmagic)
SCALE = 4
VIMEO_SEPTUPLET_FRAMES = tuple(f"im{i}.png" for i in range(1, 8))
IMAGE_EXTENSIONS = (".png",)


# ------------------------------------------------------------------------------------ image helpers
def decode_png(data: bytes, where: str = "image") -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) uint8 RGB."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{where}: cannot decode image ({e})") from None


def decode_many(items: Sequence[bytes], where: str = "record") -> np.ndarray:
    """Decode a sequence of encoded frames to (T, H, W, 3) uint8 (all frames must share one size)."""
    frames = [decode_png(b, f"{where} frame {i}") for i, b in enumerate(items)]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"{where}: frames of different sizes {sorted(shapes)}")
    return np.stack(frames)


def encode_png(img: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes (lossless)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8), mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def degrade_uint8(gt: np.ndarray, kind: str, scale: int = SCALE) -> np.ndarray:
    """The official LR of a uint8 (H, W, 3) GT frame: ``'BI'`` MATLAB ``imresize(gt, 1/scale)``
    (uint8 in, rounded uint8 out) or ``'BD'`` Gaussian blur sigma 1.6 + subsampling (MATLAB variant)."""
    from peanut_jax.data.degrade import bd_downsample, imresize
    h, w = gt.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"GT frame of {h}x{w} is not divisible by the scale {scale}")
    if kind == "BI":
        return imresize(gt, 1.0 / scale)
    if kind == "BD":
        return bd_downsample(gt, scale)
    raise ValueError(f"degradation must be 'BI' or 'BD', got {kind!r}")


def _png_files(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith("."))


def _read_image_bytes(path: pathlib.Path) -> tuple[bytes, tuple[int, int]]:
    """(PNG bytes, (H, W)); a non-PNG file is re-encoded as PNG (lossless from its decoded pixels)."""
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            hw = (img.height, img.width)
            if img.format != "PNG" or img.mode != "RGB":
                return encode_png(np.asarray(img.convert("RGB"))), hw
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot decode image ({e})") from None
    return data, hw


def _lq_bytes(gt_bytes: bytes, gt_hw, lq_path: pathlib.Path | None, kind: str, where: str) -> bytes:
    """The LR frame: the file at ``lq_path`` when given (checked to be GT/4), else computed."""
    if lq_path is not None:
        data, hw = _read_image_bytes(lq_path)
        want = (gt_hw[0] // SCALE, gt_hw[1] // SCALE)
        if hw != want:
            raise ValueError(f"{where}: LR frame {lq_path} is {hw[0]}x{hw[1]}, expected {want[0]}x{want[1]} "
                             f"(GT {gt_hw[0]}x{gt_hw[1]} / {SCALE})")
        return data
    return encode_png(degrade_uint8(decode_png(gt_bytes, where), kind))


def read_list(path: pathlib.Path) -> list[str]:
    """Non-empty stripped lines of a Vimeo-90K list file (``sep_trainlist.txt`` / ``tri_testlist.txt``)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: list file not found")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


# ------------------------------------------------------------------------------------- builders
@dataclasses.dataclass
class VSRConfig(tfds.core.BuilderConfig):
    degradation: str = "BI"


_VSR_CONFIGS = [
    VSRConfig(name="bi", degradation="BI",
              description="BI x4: official bicubic LR when present, else MATLAB imresize(gt, 1/4)"),
    VSRConfig(name="bd", degradation="BD",
              description="BD x4: Gaussian blur sigma 1.6 then x4 subsampling (MATLAB variant)"),
]


class _PNGBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """array_record, no downloads, manual_dir required."""
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(*args, **kwargs)

    @tfds_utils.classproperty
    @classmethod
    def url_infos(cls):
        return None  # nothing is downloaded

    def _root(self, dl_manager) -> pathlib.Path:
        root = getattr(dl_manager, "manual_dir", None)
        if root is None or not pathlib.Path(root).is_dir():
            raise FileNotFoundError(f"{self.name}: manual_dir {root} is not a folder; see the layout in "
                                    f"{type(self).__module__}")
        return pathlib.Path(root)


@dataclasses.dataclass
class _RedsClip:
    name: str                      # clip id in the dataset (val clips renumbered)
    gt_dir: pathlib.Path
    lq_dir: pathlib.Path | None
    files: list[pathlib.Path]


def _reds_clips(root: pathlib.Path) -> list[_RedsClip]:
    gt_root = root / "train_sharp"
    if not gt_root.is_dir():
        raise FileNotFoundError(f"{gt_root}: missing (expected the REDS layout train_sharp/<clip>/*.png, "
                                "optional train_sharp_bicubic/X4/<clip>/*.png)")
    clips = []
    for prefix, offset in (("train", 0), ("val", REDS_NUM_TRAIN_CLIPS)):
        gdir = root / f"{prefix}_sharp"
        if not gdir.is_dir():
            continue
        ldir = root / f"{prefix}_sharp_bicubic" / "X4"
        for d in sorted(p for p in gdir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                num = int(d.name)
            except ValueError:
                raise ValueError(f"{d}: REDS clip folders are numbers (000, 001, ...)") from None
            files = _png_files(d)
            if not files:
                raise ValueError(f"{d}: no PNG frames")
            name = f"{num + offset:03d}"
            clips.append(_RedsClip(name, d, (ldir / d.name) if (ldir / d.name).is_dir() else None, files))
    names = [c.name for c in clips]
    if len(set(names)) != len(names):
        raise ValueError(f"{root}: duplicate clip numbers after merging val_sharp ({names})")
    return clips


class RedsVsr(_PNGBuilder):
    """REDS (NTIRE 2019) for x4 video super-resolution; REDS4 held out."""
    BUILDER_CONFIGS = _VSR_CONFIGS
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download REDS train_sharp (and optionally train_sharp_bicubic, val_sharp, val_sharp_bicubic) and
    unzip them into one folder: train_sharp/<clip>/<frame>.png, train_sharp_bicubic/X4/<clip>/...
    Pass that folder as manual_dir.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=self.__doc__, disable_shuffling=True, metadata=tfds.core.MetadataDict(),
            features=tfds.features.FeaturesDict({
                "clip": tfds.features.Text(), "frame": np.int32, "clip_start": np.int32, "clip_len": np.int32,
                "gt": tfds.features.Tensor(shape=(), dtype=np.object_),
                "lq": tfds.features.Tensor(shape=(), dtype=np.object_)}))

    def _split_generators(self, dl_manager):
        clips = _reds_clips(self._root(dl_manager))
        splits = {"train": [c for c in clips if c.name not in REDS4_CLIPS],
                  "reds4": [c for c in clips if c.name in REDS4_CLIPS]}
        table = {}
        for split, cs in splits.items():
            rows, start = [], 0
            for c in cs:
                rows.append([c.name, start, len(c.files)])
                start += len(c.files)
            table[split] = rows
        self.info.metadata["clips"] = table
        self.info.metadata["scale"] = SCALE
        self.info.metadata["degradation"] = self.builder_config.degradation
        return {split: self._generate_examples(cs) for split, cs in splits.items() if cs}

    def _generate_examples(self, clips: list[_RedsClip]) -> Iterator[tuple[int, dict]]:
        kind = self.builder_config.degradation
        key, hw0 = 0, None
        for c in clips:
            start = key
            for i, f in enumerate(c.files):
                where = f"{self.name}: clip {c.name} frame {f.name}"
                gt, hw = _read_image_bytes(f)
                if hw0 is None:
                    hw0 = hw
                lq_path = None
                if kind == "BI" and c.lq_dir is not None:
                    lq_path = c.lq_dir / f.name
                    if not lq_path.is_file():
                        raise FileNotFoundError(f"{where}: {lq_path} missing (the LR folder {c.lq_dir} exists)")
                yield key, {"clip": c.name, "frame": i, "clip_start": start, "clip_len": len(c.files),
                            "gt": gt, "lq": _lq_bytes(gt, hw, lq_path, kind, where)}
                key += 1


class Vimeo90kSeptuplet(_PNGBuilder):
    """Vimeo-90K septuplets for x4 video super-resolution (test list = Vimeo-90K-T)."""
    BUILDER_CONFIGS = _VSR_CONFIGS
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Unzip vimeo_septuplet.zip and pass its vimeo_septuplet/ folder (sequences/, sep_trainlist.txt,
    sep_testlist.txt) as manual_dir; precomputed LR frames in BIx4/ or BDx4/ (mmagic's naming, same
    <a>/<b>/imN.png tree) are used when present.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        seq = tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_), length=7)
        return tfds.core.DatasetInfo(
            builder=self, description=self.__doc__, disable_shuffling=True, metadata=tfds.core.MetadataDict(),
            features=tfds.features.FeaturesDict({"name": tfds.features.Text(), "gt": seq, "lq": seq}))

    def _split_generators(self, dl_manager):
        root = self._root(dl_manager)
        if not (root / "sequences").is_dir():
            raise FileNotFoundError(f"{root / 'sequences'}: missing (expected vimeo_septuplet/: sequences/, "
                                    "sep_trainlist.txt, sep_testlist.txt)")
        out = {}
        for split, fname in (("train", "sep_trainlist.txt"), ("test", "sep_testlist.txt")):
            if (root / fname).is_file():
                out[split] = self._generate_examples(root, read_list(root / fname))
        if not out:
            raise FileNotFoundError(f"{root}: neither sep_trainlist.txt nor sep_testlist.txt")
        self.info.metadata["scale"] = SCALE
        self.info.metadata["degradation"] = self.builder_config.degradation
        return out

    def _generate_examples(self, root: pathlib.Path, names: list[str]) -> Iterator[tuple[int, dict]]:
        kind = self.builder_config.degradation
        lq_root = root / f"{kind}x4"
        for key, name in enumerate(names):
            where = f"{self.name}: sequence {name}"
            gts, lqs = [], []
            for fn in VIMEO_SEPTUPLET_FRAMES:
                p = root / "sequences" / name / fn
                if not p.is_file():
                    raise FileNotFoundError(f"{where}: {p} missing")
                gt, hw = _read_image_bytes(p)
                lq_path = lq_root / name / fn if lq_root.is_dir() else None
                if lq_path is not None and not lq_path.is_file():
                    raise FileNotFoundError(f"{where}: {lq_path} missing (the LR folder {lq_root} exists)")
                gts.append(gt)
                lqs.append(_lq_bytes(gt, hw, lq_path, kind, where))
            yield key, {"name": name, "gt": gts, "lq": lqs}


BUILDERS = {"reds_vsr": RedsVsr, "vimeo90k_septuplet": Vimeo90kSeptuplet}


def _builder(name: str, data_dir, config: str | None):
    from peanut_jax.data.tfds import vimeo_triplet
    builders = {**BUILDERS, **vimeo_triplet.BUILDERS}
    if name not in builders:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(builders))}")
    cls = builders[name]
    if cls.BUILDER_CONFIGS:
        names = [c.name for c in cls.BUILDER_CONFIGS]
        if config not in names:
            raise ValueError(f"{name}: config must be one of {names}, got {config!r}")
        return cls(data_dir=os.fspath(data_dir), config=config)
    return cls(data_dir=os.fspath(data_dir))


def build(name: str, manual_dir, data_dir, config: str | None = "bi"):
    """Build ``name`` (``reds_vsr`` | ``vimeo90k_septuplet`` | ``vimeo90k_triplet``) from ``manual_dir``
    into ``data_dir``; returns the builder.  Needs no TensorFlow."""
    manual_dir = pathlib.Path(manual_dir)
    if not manual_dir.is_dir():
        raise FileNotFoundError(f"manual_dir {manual_dir} is not a folder")
    if not any(manual_dir.iterdir()):
        raise FileNotFoundError(f"manual_dir {manual_dir} is empty")
    b = _builder(name, data_dir, config)
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir)))
    return b


def open_split(name: str, data_dir, split: str, config: str | None = "bi"):
    """``(data_source, metadata)`` of a built split: an ``ArrayRecordDataSource`` (random access,
    records as dicts of numpy values) and the dataset's ``info.metadata`` (a dict)."""
    data_dir = pathlib.Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"TFDS data_dir {data_dir} is not a folder")
    b = _builder(name, data_dir, config)
    if not b.is_prepared():
        raise FileNotFoundError(f"{name}/{config} is not built in {data_dir} (build it with "
                                f"peanut_jax.data.tfds.vsr.build)")
    if split not in b.info.splits:
        raise ValueError(f"{name}/{config}: no split {split!r}; built splits: {', '.join(sorted(b.info.splits))}")
    return b.as_data_source(split), dict(b.info.metadata or {})


def clip_table(metadata: dict, split: str) -> list[tuple[str, int, int]]:
    """``[(clip, first_record, num_frames)]`` of a ``reds_vsr`` split."""
    try:
        rows = metadata["clips"][split]
    except (KeyError, TypeError):
        raise ValueError(f"no clip table for split {split!r} in the dataset metadata") from None
    return [(str(c), int(s), int(n)) for c, s, n in rows]
