"""TFDS builders (array_record, built and read without TensorFlow) for the official datasets.

Importing this package imports ``tensorflow_datasets`` and registers the builders, so that
``tfds.data_source('<name>/<config>', data_dir=...)`` finds them:

* ``youtube_vos_inpainting``, ``davis_inpainting`` (:mod:`peanut_jax.data.tfds.inpainting`).
"""

from peanut_jax.data.tfds import refcoco, rvos  # noqa: F401  (registers the RVOS / RefCOCO builders)
from peanut_jax.data.tfds.inpainting import (
    DavisInpainting,
    InpaintingConfig,
    YoutubeVosInpainting,
    build,
    decode_frames,
    decode_masks,
)

__all__ = ["DavisInpainting", "InpaintingConfig", "YoutubeVosInpainting", "build", "decode_frames", "decode_masks"]
