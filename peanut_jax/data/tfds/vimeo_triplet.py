"""TFDS builder for Vimeo-90K triplets (frame interpolation), from a local ``manual_dir``.

``vimeo90k_triplet`` -- one record per triplet, ``array_record``, built and read without TensorFlow
(frames stored as the source PNG bytes; decode with :func:`peanut_jax.data.tfds.common.decode_many`)::

    manual_dir/sequences/<a>/<b>/im1.png im2.png im3.png     448x256
    manual_dir/tri_trainlist.txt, tri_testlist.txt          lines "<a>/<b>"

Splits, as the RIFE training script (``dataset.py``) uses the lists: ``train`` = the first
``int(0.95 * n)`` entries of ``tri_trainlist.txt``, ``validation`` = the rest, ``test`` =
``tri_testlist.txt`` (the Vimeo-90K benchmark).  Blank lines are skipped.  Features: ``name`` and
``frames`` (3 PNG bytes: I0, the middle frame, I1).

Build: ``peanut_jax.data.tfds.vsr.build('vimeo90k_triplet', manual_dir, data_dir, config=None)``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from peanut_jax.data.tfds.common import ManualBuilder, read_image_bytes, read_list

TRIPLET_FRAMES = ("im1.png", "im2.png", "im3.png")
TRAIN_FRACTION = 0.95


def rife_splits(trainlist: list[str]) -> tuple[list[str], list[str]]:
    """RIFE's train / validation split of ``tri_trainlist``: first ``int(0.95 n)`` / the rest."""
    cnt = int(len(trainlist) * TRAIN_FRACTION)
    return trainlist[:cnt], trainlist[cnt:]


class Vimeo90kTriplet(ManualBuilder):
    """Vimeo-90K triplets for frame interpolation (RIFE's train/validation split, test list)."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Unzip vimeo_triplet.zip and pass its vimeo_triplet/ folder (sequences/, tri_trainlist.txt,
    tri_testlist.txt) as manual_dir.
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            disable_shuffling=True,
            features=tfds.features.FeaturesDict(
                {
                    "name": tfds.features.Text(),
                    "frames": tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_), length=3),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        root = self._vimeo_root(dl_manager, "vimeo_triplet", ("tri_trainlist.txt", "tri_testlist.txt"))
        out = {}
        if (root / "tri_trainlist.txt").is_file():
            train, val = rife_splits(read_list(root / "tri_trainlist.txt"))
            out["train"] = self._generate_examples(root, train)
            if val:
                out["validation"] = self._generate_examples(root, val)
        if (root / "tri_testlist.txt").is_file():
            out["test"] = self._generate_examples(root, read_list(root / "tri_testlist.txt"))
        if not out:
            raise FileNotFoundError(f"{root}: neither tri_trainlist.txt nor tri_testlist.txt")
        return out

    def _generate_examples(self, root, names: list[str]) -> Iterator[tuple[int, dict]]:
        for key, name in enumerate(names):
            frames, hw0 = [], None
            for fn in TRIPLET_FRAMES:
                p = root / "sequences" / name / fn
                if not p.is_file():
                    raise FileNotFoundError(f"{self.name}: sequence {name}: {p} missing")
                data, hw = read_image_bytes(p)
                if hw0 is None:
                    hw0 = hw
                elif hw != hw0:
                    raise ValueError(
                        f"{self.name}: sequence {name}: {fn} is {hw[0]}x{hw[1]}, im1.png is {hw0[0]}x{hw0[1]}"
                    )
                frames.append(data)
            yield key, {"name": name, "frames": frames}


BUILDERS = {"vimeo90k_triplet": Vimeo90kTriplet}
