"""TFDS builders for video super-resolution: REDS and Vimeo-90K septuplets, from a local ``manual_dir``.

Both write ``array_record`` files, readable by random access without TensorFlow
(``builder.as_data_source(split)`` / ``tfds.data_source``, then grain).  Building needs no TensorFlow
either: images are stored as *encoded PNG bytes* (``tfds.features.Tensor`` of ``np.object_``; the
source files' bytes unchanged where they are PNGs), so TFDS never encodes or decodes an image.
:func:`peanut_jax.data.tfds.common.decode_many` decodes them on the host.

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
import os
import pathlib
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from peanut_jax.data.degrade import degrade_uint8
from peanut_jax.data.tfds import vimeo_triplet
from peanut_jax.data.tfds.common import ManualBuilder, decode_png, encode_png, png_files, read_image_bytes, read_list

REDS4_CLIPS = ("000", "011", "015", "020")
REDS_NUM_TRAIN_CLIPS = 240  # validation clips are renumbered from here (mmagic)
SCALE = 4
VIMEO_SEPTUPLET_FRAMES = tuple(f"im{i}.png" for i in range(1, 8))


def _lq_bytes(gt_bytes: bytes, gt_hw, lq_path: pathlib.Path | None, kind: str, where: str) -> bytes:
    """The LR frame: the file at ``lq_path`` when given (checked to be GT/4), else computed."""
    if lq_path is not None:
        data, hw = read_image_bytes(lq_path)
        want = (gt_hw[0] // SCALE, gt_hw[1] // SCALE)
        if hw != want:
            raise ValueError(
                f"{where}: LR frame {lq_path} is {hw[0]}x{hw[1]}, expected {want[0]}x{want[1]} "
                f"(GT {gt_hw[0]}x{gt_hw[1]} / {SCALE})"
            )
        return data
    return encode_png(degrade_uint8(decode_png(gt_bytes, where), kind))


# ------------------------------------------------------------------------------------- builders
@dataclasses.dataclass
class VSRConfig(tfds.core.BuilderConfig):
    degradation: str = "BI"


_VSR_CONFIGS = [
    VSRConfig(
        name="bi",
        degradation="BI",
        description="BI x4: official bicubic LR when present, else MATLAB imresize(gt, 1/4)",
    ),
    VSRConfig(
        name="bd", degradation="BD", description="BD x4: Gaussian blur sigma 1.6 then x4 subsampling (MATLAB variant)"
    ),
]


@dataclasses.dataclass
class _RedsClip:
    name: str  # clip id in the dataset (val clips renumbered)
    gt_dir: pathlib.Path
    lq_dir: pathlib.Path | None
    files: list[pathlib.Path]


def _reds_clips(root: pathlib.Path) -> list[_RedsClip]:
    gt_root = root / "train_sharp"
    if not gt_root.is_dir():
        raise FileNotFoundError(
            f"{gt_root}: missing (expected the REDS layout train_sharp/<clip>/*.png, "
            "optional train_sharp_bicubic/X4/<clip>/*.png)"
        )
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
            files = png_files(d)
            if not files:
                raise ValueError(f"{d}: no PNG frames")
            name = f"{num + offset:03d}"
            clips.append(_RedsClip(name, d, (ldir / d.name) if (ldir / d.name).is_dir() else None, files))
    names = [c.name for c in clips]
    if len(set(names)) != len(names):
        raise ValueError(f"{root}: duplicate clip numbers after merging val_sharp ({names})")
    return clips


class RedsVsr(ManualBuilder):
    """REDS (NTIRE 2019) for x4 video super-resolution; REDS4 held out."""

    BUILDER_CONFIGS = _VSR_CONFIGS
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download REDS train_sharp (and optionally train_sharp_bicubic, val_sharp, val_sharp_bicubic) and
    unzip them into one folder: train_sharp/<clip>/<frame>.png, train_sharp_bicubic/X4/<clip>/...
    Pass that folder as manual_dir.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
            features=tfds.features.FeaturesDict(
                {
                    "clip": tfds.features.Text(),
                    "frame": np.int32,
                    "clip_start": np.int32,
                    "clip_len": np.int32,
                    "gt": tfds.features.Tensor(shape=(), dtype=np.object_),
                    "lq": tfds.features.Tensor(shape=(), dtype=np.object_),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        clips = _reds_clips(self._root(dl_manager))
        splits = {
            "train": [c for c in clips if c.name not in REDS4_CLIPS],
            "reds4": [c for c in clips if c.name in REDS4_CLIPS],
        }
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
                gt, hw = read_image_bytes(f)
                if hw0 is None:
                    hw0 = hw
                lq_path = None
                if kind == "BI" and c.lq_dir is not None:
                    lq_path = c.lq_dir / f.name
                    if not lq_path.is_file():
                        raise FileNotFoundError(f"{where}: {lq_path} missing (the LR folder {c.lq_dir} exists)")
                yield (
                    key,
                    {
                        "clip": c.name,
                        "frame": i,
                        "clip_start": start,
                        "clip_len": len(c.files),
                        "gt": gt,
                        "lq": _lq_bytes(gt, hw, lq_path, kind, where),
                    },
                )
                key += 1


class Vimeo90kSeptuplet(ManualBuilder):
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
            builder=self,
            description=self.__doc__,
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
            features=tfds.features.FeaturesDict({"name": tfds.features.Text(), "gt": seq, "lq": seq}),
        )

    def _split_generators(self, dl_manager):
        root = self._vimeo_root(dl_manager, "vimeo_septuplet", ("sep_trainlist.txt", "sep_testlist.txt"))
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
                gt, hw = read_image_bytes(p)
                lq_path = lq_root / name / fn if lq_root.is_dir() else None
                if lq_path is not None and not lq_path.is_file():
                    raise FileNotFoundError(f"{where}: {lq_path} missing (the LR folder {lq_root} exists)")
                gts.append(gt)
                lqs.append(_lq_bytes(gt, hw, lq_path, kind, where))
            yield key, {"name": name, "gt": gts, "lq": lqs}


BUILDERS = {"reds_vsr": RedsVsr, "vimeo90k_septuplet": Vimeo90kSeptuplet}


def _builder(name: str, data_dir, config: str | None):
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
        raise FileNotFoundError(
            f"{name}/{config} is not built in {data_dir} (build it with peanut_jax.data.tfds.vsr.build)"
        )
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
