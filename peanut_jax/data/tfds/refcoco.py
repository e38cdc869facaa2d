"""TFDS builder for referring image segmentation: RefCOCO, RefCOCO+, RefCOCOg, from a local ``manual_dir``.

``refcoco`` (configs ``refcoco``, ``refcoco_plus`` = RefCOCO+, ``refcocog`` = RefCOCOg, umd split),
``array_record``, built and read without TensorFlow.  ``manual_dir`` is SAMWISE's ``data/coco``
(the layout of the ``refer`` API)::

    train2014/COCO_train2014_<id>.jpg           the COCO 2014 train images
    refcoco/refs(unc).p   refcoco/instances.json
    refcoco+/refs(unc).p  refcoco+/instances.json
    refcocog/refs(umd).p  refcocog/instances.json

``refs(*).p`` is a pickle of a list of refs (``ref_id``, ``ann_id``, ``image_id``,
``category_id``, ``split``, ``sentences``: ``[{"sent_id", "sent", "raw", "tokens"}]``); it is read
by the project's restricted unpickler (:func:`peanut_jax.convert.reader.load_checkpoint`: plain
data only, nothing in the file is executed).  ``instances.json`` holds the COCO ``images`` and
``annotations`` the refs point to.

Splits are the refs' ``split`` values (``train``, ``val``, ``testA``, ``testB`` for RefCOCO(+),
``train``, ``val``, ``test`` for RefCOCOg umd).  **One record per (split, image)** with all of its
refs and their sentences: SAMWISE (``convert_refexp_to_coco.py``) makes each sentence a sample, so
the image is shared by its refs and sentences and stored once (about 2.5 refs per image).
``info.metadata['images'][split]`` lists ``[image_id, num_refs, num_sentences]`` in record order.

Features: ``image_id``, ``file_name``, ``image`` (the JPEG bytes as read), ``height``, ``width``;
``refs``: ``ref_id``, ``ann_id``, ``category_id``, ``bbox`` (COCO ``[x, y, w, h]``) and ``mask``
(1-bit PNG of the annotation's segmentation: polygons rasterised by
:func:`peanut_jax.data.tfds.rle.polygon_mask`, which matches pycocotools except on edge pixels,
or RLE decoded exactly); ``sentences``: ``ref`` (index into ``refs``), ``sent_id``, ``sent``
(what SAMWISE uses as the caption) and ``raw``.

Build: ``peanut_jax.data.tfds.rvos.build('refcoco', manual_dir, data_dir, config='refcoco_plus')``.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from peanut_jax.convert.reader import CheckpointError, load_checkpoint
from peanut_jax.data.tfds.common import ManualBuilder
from peanut_jax.data.tfds.rle import segmentation_mask
from peanut_jax.data.tfds.rvos import decode_binary_png, encode_binary_png, image_size, read_json

IMAGE_FOLDER = "train2014"
LAYOUT = "train2014/<file_name>.jpg, <dataset>/refs(<split_by>).p, <dataset>/instances.json"


@dataclasses.dataclass
class RefcocoConfig(tfds.core.BuilderConfig):
    folder: str = "refcoco"
    split_by: str = "unc"


_CONFIGS = [
    RefcocoConfig(name="refcoco", folder="refcoco", split_by="unc", description="RefCOCO, UNC splits"),
    RefcocoConfig(name="refcoco_plus", folder="refcoco+", split_by="unc", description="RefCOCO+, UNC splits"),
    RefcocoConfig(name="refcocog", folder="refcocog", split_by="umd", description="RefCOCOg, UMD splits"),
]


def read_refs(path: pathlib.Path) -> list[dict]:
    """The refs of a ``refs(*).p`` pickle (restricted unpickler), checked for the fields used here."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: refs pickle missing (expected layout: {LAYOUT})")
    try:
        refs = load_checkpoint(path, mmap=False)
    except CheckpointError as e:
        raise ValueError(f"{path}: cannot read the refs pickle ({e})") from None
    if not isinstance(refs, list):
        raise ValueError(f"{path}: expected a list of refs, got {type(refs).__name__}")
    for i, r in enumerate(refs):
        need = ("ref_id", "ann_id", "image_id", "category_id", "split", "sentences")
        if not isinstance(r, dict) or any(k not in r for k in need):
            raise ValueError(f"{path}: ref {i} is not a dict with {', '.join(need)}")
        if not isinstance(r["split"], str) or not re.fullmatch(r"\w+", r["split"]):
            raise ValueError(f"{path}: ref {r['ref_id']!r}: bad split {r['split']!r}")
        sents = r["sentences"]
        if not isinstance(sents, list) or not all(
            isinstance(s, dict) and "sent_id" in s and "sent" in s for s in sents
        ):
            raise ValueError(f"{path}: ref {r['ref_id']!r}: sentences must be a list of {{'sent_id', 'sent', ...}}")
    return refs


def ref_mask(record: dict, ref: int) -> np.ndarray:
    """The (H, W) uint8 0/1 mask of ref ``ref`` (index into ``record['refs']``)."""
    hw = (int(record["height"]), int(record["width"]))
    return decode_binary_png(record["refs"]["mask"][ref], hw)


class Refcoco(ManualBuilder):
    """RefCOCO / RefCOCO+ / RefCOCOg referring expressions on COCO train2014, with object masks."""

    BUILDER_CONFIGS = _CONFIGS
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Put the COCO train2014 images and the refer API's refcoco, refcoco+ and refcocog folders
    (refs(unc).p / refs(umd).p, instances.json) into one folder (SAMWISE's data/coco) and pass it
    as manual_dir: {LAYOUT}.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
            features=tfds.features.FeaturesDict(
                {
                    "image_id": np.int64,
                    "file_name": tfds.features.Text(),
                    "image": tfds.features.Tensor(shape=(), dtype=np.object_),
                    "height": np.int32,
                    "width": np.int32,
                    "refs": tfds.features.Sequence(
                        tfds.features.FeaturesDict(
                            {
                                "ref_id": np.int64,
                                "ann_id": np.int64,
                                "category_id": np.int64,
                                "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                                "mask": tfds.features.Tensor(shape=(), dtype=np.object_),
                            }
                        )
                    ),
                    "sentences": tfds.features.Sequence(
                        tfds.features.FeaturesDict(
                            {
                                "ref": np.int32,
                                "sent_id": np.int64,
                                "sent": tfds.features.Text(),
                                "raw": tfds.features.Text(),
                            }
                        )
                    ),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        root = self._root(dl_manager)
        cfg = self.builder_config
        folder = root / cfg.folder
        refs_path = folder / f"refs({cfg.split_by}).p"
        inst_path = folder / "instances.json"
        refs = read_refs(refs_path)
        inst = read_json(inst_path, LAYOUT, "instances.json")
        if (
            not isinstance(inst, dict)
            or not isinstance(inst.get("images"), list)
            or not isinstance(inst.get("annotations"), list)
        ):
            raise ValueError(f"{inst_path}: expected COCO instances {{'images': [...], 'annotations': [...]}}")
        images = {im["id"]: im for im in inst["images"]}
        anns = {a["id"]: a for a in inst["annotations"]}
        if not (root / IMAGE_FOLDER).is_dir():
            raise FileNotFoundError(f"{root / IMAGE_FOLDER}: missing (expected layout: {LAYOUT})")
        groups: dict[str, dict[int, list[dict]]] = {}
        for r in refs:
            where = f"{refs_path}: ref {r['ref_id']!r}"
            if r["image_id"] not in images:
                raise ValueError(f"{where}: image_id {r['image_id']!r} is not in {inst_path}")
            ann = anns.get(r["ann_id"])
            if ann is None:
                raise ValueError(f"{where}: ann_id {r['ann_id']!r} is not in {inst_path}")
            if ann.get("image_id") != r["image_id"]:
                raise ValueError(f"{where}: ann_id {r['ann_id']!r} belongs to image {ann.get('image_id')!r}")
            groups.setdefault(r["split"], {}).setdefault(r["image_id"], []).append(r)
        if not groups:
            raise ValueError(f"{refs_path}: no refs (every split would be empty)")
        self.info.metadata["images"] = {
            s: [[int(i), len(rs), sum(len(r["sentences"]) for r in rs)] for i, rs in g.items()]
            for s, g in groups.items()
        }
        return {s: self._generate_examples(root, g, images, anns) for s, g in groups.items()}

    def _generate_examples(self, root, groups, images, anns) -> Iterator[tuple[int, dict]]:
        for key, (image_id, refs) in enumerate(groups.items()):
            im = images[image_id]
            path = root / IMAGE_FOLDER / str(im.get("file_name", ""))
            if not path.is_file():
                raise FileNotFoundError(f"{self.name}: image {image_id}: {path} missing (expected layout: {LAYOUT})")
            data = path.read_bytes()
            hw = image_size(data, str(path))
            if hw != (int(im["height"]), int(im["width"])):
                raise ValueError(f"{path}: {hw[0]}x{hw[1]}, instances.json says {im['height']}x{im['width']}")
            ref_rows, sent_rows = [], []
            for i, r in enumerate(refs):
                ann = anns[r["ann_id"]]
                mask = segmentation_mask(ann.get("segmentation"), *hw, where=f"{self.name}: ann {r['ann_id']}")
                bbox = np.asarray(ann.get("bbox", [0, 0, 0, 0]), np.float32).reshape(-1)
                if bbox.shape != (4,):
                    raise ValueError(f"{self.name}: ann {r['ann_id']}: bbox must be [x, y, w, h], got {ann['bbox']!r}")
                ref_rows.append(
                    {
                        "ref_id": r["ref_id"],
                        "ann_id": r["ann_id"],
                        "category_id": r["category_id"],
                        "bbox": bbox,
                        "mask": encode_binary_png(mask),
                    }
                )
                for s in r["sentences"]:
                    sent_rows.append(
                        {"ref": i, "sent_id": s["sent_id"], "sent": s["sent"], "raw": s.get("raw", s["sent"])}
                    )
            yield (
                key,
                {
                    "image_id": image_id,
                    "file_name": str(im["file_name"]),
                    "image": data,
                    "height": hw[0],
                    "width": hw[1],
                    "refs": ref_rows,
                    "sentences": sent_rows,
                },
            )


BUILDERS = {"refcoco": Refcoco}
