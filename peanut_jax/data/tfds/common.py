"""What every builder here shares: the array_record builder base for a local ``manual_dir`` and the
encoded-image helpers (records hold image file bytes; TFDS never encodes or decodes an image)."""

from __future__ import annotations

import io
import pathlib
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.core import utils as tfds_utils

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


def png_files(folder: pathlib.Path) -> list[pathlib.Path]:
    """The PNG files of ``folder`` (hidden files skipped), sorted."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def read_image_bytes(path: pathlib.Path) -> tuple[bytes, tuple[int, int]]:
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


def read_list(path: pathlib.Path) -> list[str]:
    """Non-empty stripped lines of a Vimeo-90K list file (``sep_trainlist.txt`` / ``tri_testlist.txt``)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: list file not found")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


# ------------------------------------------------------------------------------------------ builder
class ManualBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """array_record, no downloads, manual_dir required."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(*args, **kwargs)

    @tfds_utils.classproperty
    @classmethod
    def url_infos(cls):
        # nothing is downloaded, so there are no checksums to look up (TFDS' lookup next to the code
        # needs the ``importlib_resources`` backport for classes inside a package)
        return None

    def _root(self, dl_manager) -> pathlib.Path:
        root = getattr(dl_manager, "manual_dir", None)
        if root is None or not pathlib.Path(root).is_dir():
            raise FileNotFoundError(
                f"{self.name}: manual_dir {root} is not a folder; see the layout in {type(self).__module__}"
            )
        return pathlib.Path(root)

    def _vimeo_root(self, dl_manager, folder: str, lists: tuple[str, str]) -> pathlib.Path:
        """The manual_dir of a Vimeo-90K folder (``sequences/`` and the two list files)."""
        root = self._root(dl_manager)
        if not (root / "sequences").is_dir():
            raise FileNotFoundError(
                f"{root / 'sequences'}: missing (expected {folder}/: sequences/, {lists[0]}, {lists[1]})"
            )
        return root
