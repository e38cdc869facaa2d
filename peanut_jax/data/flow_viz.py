"""Optical-flow colour coding with the Middlebury colour wheel (Baker et al., IJCV 2011).

Hue encodes the direction and saturation the magnitude: zero flow is white, the largest flow
(``max_flow``) is fully saturated; flows beyond ``max_flow`` are darkened to 75 %.  The wheel has
55 hues: red-yellow 15, yellow-green 6, green-cyan 4, cyan-blue 11, blue-magenta 13,
magenta-red 6.  Conventions: flow (..., H, W, 2) in pixels, channel 0 = x (right), 1 = y (down);
output uint8 RGB.
"""

from __future__ import annotations

import numpy as np

_SEGMENTS = (15, 6, 4, 11, 13, 6)  # RY, YG, GC, CB, BM, MR


def make_colorwheel() -> np.ndarray:
    """The (55, 3) Middlebury colour wheel, RGB values in 0..255 (float)."""
    rows = []
    # each segment ramps one channel while another is saturated: (ramped, fixed, rising?)
    for n, ramp, full, rising in zip(
        _SEGMENTS, (1, 0, 2, 1, 0, 2), (0, 1, 1, 2, 2, 0), (True, False, True, False, True, False)
    ):
        seg = np.zeros((n, 3))
        step = np.floor(255.0 * np.arange(n) / n)
        seg[:, full] = 255.0
        seg[:, ramp] = step if rising else 255.0 - step
        rows.append(seg)
    return np.concatenate(rows)


_WHEEL = make_colorwheel()


def flow_to_color(flow: np.ndarray, max_flow: float | None = None) -> np.ndarray:
    """Colour-code a flow field (..., H, W, 2) as uint8 RGB (..., H, W, 3).

    The flow is divided by ``max_flow`` (default: the largest finite flow magnitude in the whole
    array).  Non-finite vectors are drawn black.
    """
    flow = np.asarray(flow, np.float64)
    if flow.ndim < 3 or flow.shape[-1] != 2:
        raise ValueError(f"flow_to_color: flow must be (..., H, W, 2), got shape {flow.shape}")
    u, v = flow[..., 0], flow[..., 1]
    bad = ~(np.isfinite(u) & np.isfinite(v))
    u = np.where(bad, 0.0, u)
    v = np.where(bad, 0.0, v)
    rad = np.sqrt(u * u + v * v)
    if max_flow is None:
        max_flow = float(rad.max()) if rad.size else 0.0
    elif max_flow <= 0:
        raise ValueError(f"flow_to_color: max_flow must be > 0, got {max_flow}")
    eps = np.finfo(np.float64).eps
    u = u / (max_flow + eps)
    v = v / (max_flow + eps)
    rad = np.sqrt(u * u + v * v)
    ncols = _WHEEL.shape[0]
    a = np.arctan2(-v, -u) / np.pi  # in [-1, 1]
    fk = (a + 1.0) / 2.0 * (ncols - 1)  # 0 .. ncols-1
    k0 = np.floor(fk).astype(np.int64)
    k1 = k0 + 1
    k1[k1 == ncols] = 0
    f = (fk - k0)[..., None]
    col = ((1 - f) * _WHEEL[k0] + f * _WHEEL[k1]) / 255.0
    r = rad[..., None]
    col = np.where(r <= 1, 1 - r * (1 - col), col * 0.75)
    out = np.floor(255.0 * col).astype(np.uint8)
    out[bad] = 0
    return out
