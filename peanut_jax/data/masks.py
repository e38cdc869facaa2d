"""Mask IO and processing: binary / DAVIS-palette PNG masks, E2FGVI dilation, overlays, random masks.

E2FGVI's inference mask pipeline (``test.py``) is: sorted files, ``resize(size, NEAREST)``,
``.convert('L')``, ``> 0``, then ``cv2.dilate`` with the 3x3 cross kernel, 4 iterations.
:func:`read_masks` (with ``resize=True``) followed by :func:`dilate_masks` reproduces it exactly,
without OpenCV.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image

MASK_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def list_images(folder: str | os.PathLike, extensions: Sequence[str] = MASK_EXTENSIONS) -> list[pathlib.Path]:
    """Image files of ``folder`` (by extension, case-insensitive, hidden files skipped), sorted by name."""
    folder = pathlib.Path(folder)
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions),
        key=lambda p: p.name,
    )


def mask_files(source: str | os.PathLike) -> list[pathlib.Path]:
    """The mask images of ``source``: the file itself, or a folder's images sorted by name
    (:func:`list_images`); FileNotFoundError / ValueError naming the path when there are none."""
    source = pathlib.Path(source)
    if not source.exists():
        raise FileNotFoundError(f"mask path not found: {source}")
    if source.is_file():
        return [source]
    files = list_images(source)
    if not files:
        raise ValueError(f"{source}: no mask images ({', '.join(MASK_EXTENSIONS)}) in the folder")
    return files


def _read_one(
    path: pathlib.Path,
    size: tuple[int, int] | None,
    resize: bool,
    object_ids: Iterable[int] | None,
    resize_flag: str = "resize=True",
) -> np.ndarray:
    try:
        img = Image.open(path)
        img.load()
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read mask image ({err})") from None
    if size is not None and (img.height, img.width) != tuple(size):
        if not resize:
            raise ValueError(
                f"{path}: mask size {img.width}x{img.height} (WxH) differs from the frame size "
                f"{size[1]}x{size[0]}; pass {resize_flag} to resize masks (nearest neighbour)"
            )
        img = img.resize((size[1], size[0]), Image.NEAREST)
    if object_ids is None:
        return np.asarray(img.convert("L")) > 0
    if img.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
        raise ValueError(f"{path}: object_ids needs a palette or single-channel label image, got PIL mode {img.mode!r}")
    return np.isin(np.asarray(img), np.asarray(list(object_ids)))


def read_masks(
    source: str | os.PathLike,
    num_frames: int | None = None,
    size: tuple[int, int] | None = None,
    object_ids: Iterable[int] | None = None,
    resize: bool = False,
    resize_flag: str = "resize=True",
) -> np.ndarray:
    """Read a mask video as a (T, H, W) bool array (True = object / region to fill).

    ``source``: a folder of mask images (sorted by file name) or a single image file.  One image
    (a single file, or a folder holding one) is repeated over all ``num_frames`` frames.

    * Default (``object_ids=None``): E2FGVI's rule ``.convert('L') > 0``, i.e. binary {0, 255}
      masks and DAVIS palette masks (all objects merged).  For palette images this looks at the
      *luminance of the palette colour*, not the index: an index whose palette colour is black
      counts as background (in DAVIS palettes only index 0 is black).
    * ``object_ids``: keep only these raw values of palette ('P') or single-channel label images,
      e.g. ``object_ids=[2]`` selects the second DAVIS object.
    * ``num_frames``: the frame count; a different number of mask files (other than 1) is an error.
    * ``size`` = (H, W) of the frames; masks of another size are an error unless ``resize=True``
      (PIL NEAREST, applied before thresholding, as E2FGVI); ``resize_flag`` is how the error
      message names that option (a command passes its flag, e.g. ``--resize-masks``).
    """
    source = pathlib.Path(source)
    files = mask_files(source)
    if num_frames is not None:
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if len(files) not in (1, num_frames):
            raise ValueError(f"{source}: {len(files)} mask files but the video has {num_frames} frames")
    masks = []
    for f in files:
        m = _read_one(f, size, resize, object_ids, resize_flag)
        if masks and m.shape != masks[0].shape:
            raise ValueError(
                f"{f}: mask size {m.shape[0]}x{m.shape[1]} differs from "
                f"{files[0].name} ({masks[0].shape[0]}x{masks[0].shape[1]})"
            )
        masks.append(m)
    out = np.stack(masks)
    if len(files) == 1 and num_frames is not None and num_frames > 1:
        out = np.repeat(out, num_frames, axis=0)
    return out


def dilate_masks(masks: np.ndarray, iterations: int = 4) -> np.ndarray:
    """Binary dilation with the 3x3 cross kernel over the last two axes (..., H, W).

    Equals ``cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)), iterations=n)``:
    pixels outside the image never switch anything on (OpenCV's default dilation border).
    """
    m = np.asarray(masks)
    if m.ndim < 2:
        raise ValueError(f"dilate_masks: masks must be (..., H, W), got shape {m.shape}")
    if iterations < 0:
        raise ValueError(f"dilate_masks: iterations must be >= 0, got {iterations}")
    out = m.astype(bool, copy=True)
    for _ in range(iterations):
        prev = out.copy()
        out[..., 1:, :] |= prev[..., :-1, :]
        out[..., :-1, :] |= prev[..., 1:, :]
        out[..., :, 1:] |= prev[..., :, :-1]
        out[..., :, :-1] |= prev[..., :, 1:]
    return out


def overlay_mask(
    frame_u8: np.ndarray, mask: np.ndarray, color: Sequence[int] = (255, 0, 0), alpha: float = 0.5
) -> np.ndarray:
    """Tint the masked pixels of a uint8 RGB frame (..., H, W, 3): ``(1-alpha)*frame + alpha*color``."""
    frame = np.asarray(frame_u8)
    mask = np.asarray(mask, bool)
    if frame.dtype != np.uint8 or frame.ndim < 3 or frame.shape[-1] != 3:
        raise ValueError(f"overlay_mask: frame must be uint8 (..., H, W, 3), got {frame.dtype} {frame.shape}")
    if mask.shape != frame.shape[:-1]:
        raise ValueError(f"overlay_mask: mask shape {mask.shape} must equal the frame's {frame.shape[:-1]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay_mask: alpha must be in [0, 1], got {alpha}")
    if len(color) != 3:
        raise ValueError(f"overlay_mask: color must be 3 values, got {color!r}")
    f = frame.astype(np.float32)
    tinted = (1.0 - alpha) * f + alpha * np.asarray(color, np.float32)
    out = np.where(mask[..., None], np.round(tinted), f)
    return np.clip(out, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------ E2FGVI-style random masks
def _bezier_blob(rng: np.random.Generator, edge_num: int, ratio: float, height: int, width: int) -> np.ndarray:
    """A closed curve of ``edge_num`` cubic Bezier segments through points at perturbed radii of the
    unit circle (radius factor uniform in [1 - ratio, 1 + ratio]), filled, stretched to a
    ``height`` x ``width`` box and cropped to its extent.  Returns a bool array."""
    n = edge_num * 3 + 1
    ang = np.linspace(0, 2 * np.pi, n)
    r = 2 * ratio * rng.random(n) + 1 - ratio
    verts = np.stack([np.cos(ang), np.sin(ang)], -1) * r[:, None]
    verts[-1] = verts[0]
    s = np.linspace(0.0, 1.0, 24, endpoint=False)[:, None, None]
    p0, p1, p2, p3 = verts[0:-1:3], verts[1::3], verts[2::3], verts[3::3]
    curve = (1 - s) ** 3 * p0 + 3 * (1 - s) ** 2 * s * p1 + 3 * (1 - s) * s**2 * p2 + s**3 * p3
    pts = curve.transpose(1, 0, 2).reshape(-1, 2)
    lo, hi = verts.min() * 1.1, verts.max() * 1.1
    xs = (pts[:, 0] - lo) / (hi - lo) * (width - 1)
    ys = (hi - pts[:, 1]) / (hi - lo) * (height - 1)
    from PIL import ImageDraw

    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon(list(zip(xs.tolist(), ys.tolist())), fill=255)
    region = np.asarray(canvas) > 0
    rows, cols = np.nonzero(region)
    return region[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def random_video_masks(
    rng: np.random.Generator | int | None,
    num_frames: int,
    height: int,
    width: int,
    *,
    static_prob: float = 0.5,
    max_speed: float = 3.0,
) -> np.ndarray:
    """E2FGVI's training masks (``create_random_shape_with_random_motion``): (T, H, W) bool.

    One random Bezier blob (6-8 edges, radius perturbation ratio 0.6/0.7/0.8) of random size
    (height H/3..H-1, width W/3..W-1) at a random position.  With probability ``static_prob`` it
    stays put; otherwise it moves: per frame the position advances by the integer-truncated
    velocity, the velocity (speed, angle) gets gaussian noise (std 1.5 px, 0.25 rad), and hitting
    the border draws a new velocity (speed |N(0, max_speed/2)|) and clamps the position.  The
    initial speed is uniform in [1, max_speed) (numpy ``uniform(3)`` in the official code) and the
    angle uniform.  Same distributions as the official generator, with our own random stream.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if num_frames < 1 or height < 3 or width < 3:
        raise ValueError(f"random_video_masks: need num_frames >= 1 and H, W >= 3, got {num_frames}, {height}x{width}")
    rh = int(rng.integers(height // 3, height))  # randint(H//3, H-1) inclusive
    rw = int(rng.integers(width // 3, width))
    edge_num = int(rng.integers(6, 9))
    ratio = int(rng.integers(6, 9)) / 10
    region = _bezier_blob(rng, edge_num, ratio, rh, rw)
    rh, rw = region.shape
    x = int(rng.integers(0, height - rh + 1))  # row
    y = int(rng.integers(0, width - rw + 1))  # column
    speed, angle = rng.uniform(1.0, max_speed), rng.uniform(0, 2 * np.pi)
    masks = np.zeros((num_frames, height, width), bool)
    static = rng.uniform() < static_prob
    for t in range(num_frames):
        masks[t, x : x + rh, y : y + rw] = region
        if static:
            continue
        x += int(speed * np.cos(angle))
        y += int(speed * np.sin(angle))
        speed += rng.normal(0, 1.5)
        angle += rng.normal(0, 0.25)
        if x > height - rh or x < 0 or y > width - rw or y < 0:
            speed, angle = abs(rng.normal(0, max_speed / 2)), rng.uniform(0, 2 * np.pi)
        x = int(np.clip(x, 0, height - rh))
        y = int(np.clip(y, 0, width - rw))
    return masks
