"""Dataset-folder helpers shared by the evaluation protocols: image reading, 8-bit quantisation."""

from __future__ import annotations

import pathlib

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def read_rgb(path: pathlib.Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read image ({e})") from None


def image_files(folder: pathlib.Path) -> list[pathlib.Path]:
    """Sorted image files of ``folder`` (hidden files skipped); errors if missing or empty."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{folder}: no image files")
    return files


def stack_images(paths) -> np.ndarray:
    """(T, H, W, 3) uint8 of equally sized image files."""
    frames = [read_rgb(p) for p in paths]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"{paths[0].parent}: frames of different sizes {sorted(shapes)}")
    return np.stack(frames)


def read_list(path: pathlib.Path) -> list[str]:
    """Non-empty stripped lines of a Vimeo-90K list file (``sep_testlist.txt`` / ``tri_testlist.txt``)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: list file not found")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def quantize(x: np.ndarray) -> np.ndarray:
    """Clamp to [0, 1] and round to 8 bits (mmagic ``tensor2img`` / RIFE ``np.round(x * 255)``), float64."""
    return np.round(np.clip(np.asarray(x, np.float64), 0.0, 1.0) * 255.0) / 255.0


def mean(values) -> float:
    """Mean as a float; NaN for no values."""
    return float(np.mean(values)) if len(values) else float("nan")
