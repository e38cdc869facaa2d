"""Procedural synthetic videos with exact ground truth (numpy, deterministic by seed).

A scene is a smooth, colourful background texture defined on a continuous plane, seen through a
moving camera (pan + zoom + rotation, small per-frame increments), with a few textured objects
(named colour, shape and size) moving over it in image space, each with its own linear motion and
slight rotation, independent of the camera.  Everything is *sampled analytically* at pixel centres,
so the ground truth is exact rather than estimated:

* ``background``: the same camera path without objects (object-removal ground truth);
* ``masks`` / ``full_masks``: per-object visible / unoccluded footprints;
* ``flow_forward`` / ``flow_backward``: optical flow of the composited video, from the analytic
  motion of the surface each pixel sees;
* ``occlusion_*``: where that surface point leaves the frame or is hidden in the other frame;
* ``sentences``: one referring expression per object ("the small blue square moving up and left").

Conventions (package-wide): frames float32 RGB in [0, 1], (T, H, W, 3); flows (..., H, W, 2) in
pixels with channel 0 = x; pixel centres at integer coordinates, so ``flow[t][y, x] = (dx, dy)``
means the surface point at pixel (x, y) of frame t is at (x + dx, y + dy) in frame t + 1, and
``warp(frame[t + 1], flow_forward[t])`` (bilinear backward warping) reproduces frame t wherever
``occlusion_forward[t]`` is False (up to interpolation error; the texture is smooth).

Objects are listed front to back: object 0 is nearest the camera and hides the others.  With
``antialias=True`` (default) object edges are anti-aliased (coverage ``clip(0.5 - d, 0, 1)`` for a
signed distance ``d`` in pixels) and a pixel belongs to an object's footprint when its coverage is
non-zero, so ``frames == background`` exactly outside the union of the masks.  Flow and occlusion
are assigned by the footprints: a pixel of the thin anti-aliased band carries the motion of the
object, even though its colour is partly background.

Time is continuous: :meth:`SyntheticScene.render` accepts any frame times, e.g. ``[0, 0.5, 1]`` for
an exact interpolation triplet (:func:`triplet`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from peanut_jax.data.masks import random_video_masks  # noqa: F401  (re-exported)
from peanut_jax.data.referring import referring_clip, referring_vocabulary  # noqa: F401  (re-exported)

# Named colours (RGB in [0, 1]).  Extremes are pulled in a little so the light object texture is
# not entirely clipped away.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.72, 0.20),
    "blue": (0.10, 0.25, 0.92),
    "yellow": (0.95, 0.88, 0.10),
    "white": (0.93, 0.93, 0.93),
    "black": (0.07, 0.07, 0.07),
    "orange": (1.00, 0.55, 0.05),
    "purple": (0.55, 0.15, 0.75),
    "cyan": (0.10, 0.85, 0.90),
    "pink": (1.00, 0.45, 0.72),
}
SHAPES = ("circle", "square", "triangle", "ellipse", "star", "diamond", "hexagon")
# Object radius as a fraction of min(H, W), per size word.
SIZES: dict[str, tuple[float, float]] = {
    "small": (0.07, 0.10),
    "medium": (0.11, 0.15),
    "large": (0.16, 0.21),
}
# Direction words for the 8 compass sectors of the image-space velocity angle atan2(vy, vx)
# (image y points down), starting at 0 rad and going clockwise on screen.
DIRECTIONS = ("right", "down and right", "down", "down and left", "left", "up and left", "up", "up and right")
_BOUND_RADIUS = 1.2  # every unit shape lies inside this radius (bounding boxes)


def _regular_polygon(n: int, radius: float, phase: float) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], -1)


def _star(points: int = 5, outer: float = 1.15, inner: float = 0.5) -> np.ndarray:
    a = -np.pi / 2 + np.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], -1)


# Unit polygons (local coordinates, y down, radius ~1).
_POLYGONS: dict[str, np.ndarray] = {
    "triangle": _regular_polygon(3, 1.1, -np.pi / 2),
    "star": _star(),
    "diamond": np.array([[0.0, -1.1], [0.8, 0.0], [0.0, 1.1], [-0.8, 0.0]]),
    "hexagon": _regular_polygon(6, 1.0, 0.0),
}
_SQUARE_HALF = 0.8
_ELLIPSE_AXES = (1.15, 0.62)


def _polygon_sdf(ux: np.ndarray, uy: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) from points to a closed polygon; vectorised over points."""
    d2 = np.full(ux.shape, np.inf, np.float32)
    inside = np.zeros(ux.shape, bool)
    for (ax, ay), (bx, by) in zip(verts, np.roll(verts, -1, axis=0)):
        ex, ey = bx - ax, by - ay
        px, py = ux - ax, uy - ay
        h = np.clip((px * ex + py * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        d2 = np.minimum(d2, (px - h * ex) ** 2 + (py - h * ey) ** 2)
        # even-odd crossing rule along +x
        crosses = (ay > uy) != (by > uy)
        x_at = ax + ex * (uy - ay) / (ey if ey != 0 else 1.0)  # unused where ey == 0
        inside ^= crosses & (ux < x_at)
    d = np.sqrt(d2)
    return np.where(inside, -d, d)


def shape_sdf(shape: str, ux: np.ndarray, uy: np.ndarray) -> np.ndarray:
    """Signed distance (unit-radius local coordinates, negative inside) of a named shape."""
    if shape == "circle":
        return np.sqrt(ux * ux + uy * uy) - 1.0
    if shape == "square":
        qx, qy = np.abs(ux) - _SQUARE_HALF, np.abs(uy) - _SQUARE_HALF
        outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
        return outside + np.minimum(np.maximum(qx, qy), 0.0)
    if shape == "ellipse":
        a, b = _ELLIPSE_AXES
        k = np.sqrt((ux / a) ** 2 + (uy / b) ** 2)
        grad = np.sqrt((ux / (a * a)) ** 2 + (uy / (b * b)) ** 2)
        # first-order distance (k - 1) / |grad k| (k is 1-homogeneous, so |grad k| = grad / k)
        return (k - 1.0) * k / np.maximum(grad, 1e-6)
    if shape in _POLYGONS:
        return _polygon_sdf(ux, uy, _POLYGONS[shape])
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def _rot(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def direction_word(vx: float, vy: float) -> str:
    """Compass description of an image-space velocity (y down): 'right', 'up and left', ..."""
    if vx == 0 and vy == 0:
        return "nowhere"
    k = int(np.round(math.atan2(vy, vx) / (np.pi / 4))) % 8
    return DIRECTIONS[k]


@dataclasses.dataclass
class SyntheticClip:
    """A rendered synthetic clip and its exact ground truth (see the module docstring).

    Shapes below are for one clip; :func:`generate_batch` stacks every array field on a new
    leading batch axis and turns ``sentences`` / ``objects`` into lists of per-clip lists.
    """

    frames: np.ndarray  # (T, H, W, 3) float32 in [0, 1]
    background: np.ndarray  # (T, H, W, 3) float32: same camera, no objects
    masks: np.ndarray  # (T, N, H, W) bool, visible footprint of each object
    full_masks: np.ndarray  # (T, N, H, W) bool, unoccluded footprint
    flow_forward: np.ndarray  # (T-1, H, W, 2) float32, frame t -> t+1
    flow_backward: np.ndarray  # (T-1, H, W, 2) float32, frame t+1 -> t
    occlusion_forward: np.ndarray  # (T-1, H, W) bool, target of flow_forward not visible
    occlusion_backward: np.ndarray  # (T-1, H, W) bool, target of flow_backward not visible
    background_flow_forward: np.ndarray  # (T-1, H, W, 2) camera-only flow of ``background``
    background_flow_backward: np.ndarray  # (T-1, H, W, 2)
    background_occlusion_forward: np.ndarray  # (T-1, H, W) bool, target leaves the frame
    background_occlusion_backward: np.ndarray  # (T-1, H, W) bool
    sentences: list  # one referring sentence per object
    objects: list  # per object: dict(color, shape, size, rgb, radius, velocity, ...)
    times: np.ndarray  # (T,) float64 frame times (frame units)

    @property
    def object_mask(self) -> np.ndarray:
        """Union of the object footprints, (..., T, H, W) bool: the region to erase."""
        return self.full_masks.any(axis=-3)


@dataclasses.dataclass
class _Object:
    color: str
    shape: str
    size: str
    rgb: np.ndarray  # (3,)
    radius: float  # pixels
    center0: np.ndarray  # (2,) (x, y) at t = 0
    velocity: np.ndarray  # (2,) pixels per frame
    angle0: float
    spin: float  # radians per frame
    tex_k: np.ndarray  # (J, 2) texture wave vectors (rad / pixel, object frame)
    tex_phase: np.ndarray  # (J,)
    tex_amp: np.ndarray  # (J, 3)

    def center(self, t: float) -> np.ndarray:
        return self.center0 + self.velocity * t

    def angle(self, t: float) -> float:
        return self.angle0 + self.spin * t

    def bbox(self, t: float, h: int, w: int) -> tuple[int, int, int, int] | None:
        """Integer pixel box (y0, y1, x0, x1), end-exclusive, that contains the footprint."""
        cx, cy = self.center(t)
        r = self.radius * _BOUND_RADIUS + 1.0
        x0, x1 = max(0, int(np.floor(cx - r))), min(w, int(np.ceil(cx + r)) + 1)
        y0, y1 = max(0, int(np.floor(cy - r))), min(h, int(np.ceil(cy + r)) + 1)
        if x0 >= x1 or y0 >= y1:
            return None
        return y0, y1, x0, x1

    def local(self, px: np.ndarray, py: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates -> object frame (pixels, unrotated)."""
        cx, cy = self.center(t)
        c, s = math.cos(self.angle(t)), math.sin(self.angle(t))
        dx, dy = px - np.float32(cx), py - np.float32(cy)
        return np.float32(c) * dx + np.float32(s) * dy, np.float32(-s) * dx + np.float32(c) * dy

    def sdf(self, px: np.ndarray, py: np.ndarray, t: float) -> np.ndarray:
        """Signed distance in pixels (negative inside)."""
        lx, ly = self.local(px, py, t)
        r = np.float32(self.radius)
        return (r * shape_sdf(self.shape, lx / r, ly / r)).astype(np.float32)

    def color_at(self, px: np.ndarray, py: np.ndarray, t: float) -> np.ndarray:
        """Textured colour (..., 3): base colour plus a light texture that moves with the object."""
        lx, ly = self.local(px, py, t)
        phase = lx[..., None] * self.tex_k[:, 0] + ly[..., None] * self.tex_k[:, 1] + self.tex_phase
        tex = np.einsum("...j,jc->...c", np.sin(phase.astype(np.float32)), self.tex_amp)
        return np.clip(self.rgb.astype(np.float32) + tex, 0.0, 1.0)

    def move(self, px: np.ndarray, py: np.ndarray, t_from: float, t_to: float):
        """Where the object's surface point at (px, py, t_from) is at t_to."""
        rot = _rot(self.angle(t_to) - self.angle(t_from)).astype(np.float32)
        c0, c1 = self.center(t_from).astype(np.float32), self.center(t_to).astype(np.float32)
        dx, dy = px - c0[0], py - c0[1]
        return (c1[0] + rot[0, 0] * dx + rot[0, 1] * dy, c1[1] + rot[1, 0] * dx + rot[1, 1] * dy)

    def describe(self) -> dict[str, Any]:
        vx, vy = (float(v) for v in self.velocity)
        return dict(
            color=self.color,
            shape=self.shape,
            size=self.size,
            rgb=tuple(float(c) for c in self.rgb),
            radius=float(self.radius),
            velocity=(vx, vy),
            direction=direction_word(vx, vy),
            center0=tuple(float(c) for c in self.center0),
            angle0=float(self.angle0),
            spin=float(self.spin),
        )

    def sentence(self) -> str:
        size = "" if self.size == "medium" else self.size + " "
        return f"the {size}{self.color} {self.shape} moving {direction_word(*self.velocity)}"


class SyntheticScene:
    """A sampled scene (background texture, camera path, objects) that renders at any times.

    Build it with :func:`make_scene`; :func:`generate_clip` is ``make_scene(...).render(range(T))``.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        height: int,
        width: int,
        duration: float,
        num_objects: int,
        camera: bool,
        antialias: bool,
        object_speed: tuple[float, float],
        object_spin: float,
        camera_speed: float,
        camera_zoom: float,
        camera_rotation: float,
        min_wavelength: float,
        shapes: Sequence[str],
        colors: Sequence[str],
    ):
        self.height, self.width = int(height), int(width)
        self.antialias = bool(antialias)
        self._center = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
        self._grid_y, self._grid_x = np.meshgrid(
            np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij"
        )
        side = float(min(height, width))
        # -- camera: q_world = A(t) (p - c) + b(t), A = zoom(t) R(rot(t)), b = pan * t
        if camera:
            ang = rng.uniform(0, 2 * np.pi)
            speed = rng.uniform(0.3, 1.0) * camera_speed * side
            self.pan = speed * np.array([math.cos(ang), math.sin(ang)])
            self.zoom_rate = rng.uniform(-camera_zoom, camera_zoom)
            self.rot_rate = rng.uniform(-camera_rotation, camera_rotation)
        else:
            self.pan, self.zoom_rate, self.rot_rate = np.zeros(2), 0.0, 0.0
        self._sample_texture(rng, min_wavelength)
        self._sample_objects(rng, num_objects, duration, object_speed, object_spin, shapes, colors)

    # ----------------------------------------------------------------------------- background
    def _sample_texture(self, rng: np.random.Generator, min_wavelength: float) -> None:
        big = float(max(self.height, self.width))
        octaves = max(1, int(math.floor(math.log2(big / min_wavelength))) + 1)
        waves_per_octave = 4
        lam = big / 2.0 ** np.repeat(np.arange(octaves), waves_per_octave)
        lam = np.maximum(lam * rng.uniform(0.8, 1.25, lam.shape), min_wavelength)
        theta = rng.uniform(0, 2 * np.pi, lam.shape)
        k = 2 * np.pi / lam
        self._wave_k = np.stack([k * np.cos(theta), k * np.sin(theta)]).astype(np.float32)  # (2, K)
        self._wave_phase = rng.uniform(0, 2 * np.pi, lam.shape).astype(np.float32)
        amp = (lam / big) ** 0.6
        amp = amp / np.sqrt(np.sum(amp**2)) * 1.6
        self._wave_color = (amp[:, None] * rng.normal(size=(lam.size, 3))).astype(np.float32)
        nblobs = 6
        span = big * 1.5
        self._blob_mu = rng.uniform(-span, span, (nblobs, 2)).astype(np.float32)
        sigma = rng.uniform(big / 8, big / 3, nblobs)
        self._blob_inv2s2 = (1.0 / (2 * sigma**2)).astype(np.float32)
        self._blob_color = (1.2 * rng.normal(size=(nblobs, 3))).astype(np.float32)
        self._bias = (0.3 * rng.normal(size=3)).astype(np.float32)

    def _camera(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        a = math.exp(self.zoom_rate * t) * _rot(self.rot_rate * t)
        return a, self.pan * t

    def _to_world(self, px, py, t):
        a, b = self._camera(t)
        dx, dy = px - np.float32(self._center[0]), py - np.float32(self._center[1])
        a = a.astype(np.float32)
        return (a[0, 0] * dx + a[0, 1] * dy + np.float32(b[0]), a[1, 0] * dx + a[1, 1] * dy + np.float32(b[1]))

    def camera_move(self, px, py, t_from: float, t_to: float):
        """Where the background point seen at pixel (px, py) at t_from is seen at t_to."""
        a0, b0 = self._camera(t_from)
        a1, b1 = self._camera(t_to)
        a1i = np.linalg.inv(a1)
        m = (a1i @ a0).astype(np.float32)  # composed affine map, built in float64
        off = (a1i @ (b0 - b1)).astype(np.float32)
        dx, dy = px - np.float32(self._center[0]), py - np.float32(self._center[1])
        cx, cy = np.float32(self._center[0]), np.float32(self._center[1])
        return (m[0, 0] * dx + m[0, 1] * dy + off[0] + cx, m[1, 0] * dx + m[1, 1] * dy + off[1] + cy)

    def texture(self, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
        """Background colour (..., 3) at world points: sigmoid of multi-octave sinusoids + blobs."""
        shape = qx.shape
        # components along axis 0 and a plain accumulation over them: with inner sizes of 2 and
        # 3, (multi-threaded) BLAS matmuls or einsum are several times slower on a busy CPU
        x = qx.reshape(1, -1).astype(np.float32)
        y = qy.reshape(1, -1).astype(np.float32)
        waves = np.sin(
            self._wave_k[0][:, None] * x + self._wave_k[1][:, None] * y + self._wave_phase[:, None]
        )  # (K, P)
        blobs = np.exp(
            -((x - self._blob_mu[:, :1]) ** 2 + (y - self._blob_mu[:, 1:]) ** 2) * self._blob_inv2s2[:, None]
        )  # (G, P)
        v = np.zeros((3, x.shape[1]), np.float32)
        for comps, colors in ((waves, self._wave_color), (blobs, self._blob_color)):
            for comp, col in zip(comps, colors):
                for c in range(3):
                    v[c] += col[c] * comp
        v = v.T
        v += self._bias
        return (1.0 / (1.0 + np.exp(-v))).reshape(shape + (3,)).astype(np.float32)

    # ------------------------------------------------------------------------------- objects
    def _sample_objects(self, rng, num_objects, duration, object_speed, object_spin, shapes, colors) -> None:
        if num_objects > len(colors):
            raise ValueError(f"num_objects={num_objects} exceeds the {len(colors)} distinct colours")
        for s in shapes:
            if s not in SHAPES:
                raise ValueError(f"unknown shape {s!r}; known: {SHAPES}")
        for c in colors:
            if c not in COLORS:
                raise ValueError(f"unknown colour {c!r}; known: {tuple(COLORS)}")
        h, w = self.height, self.width
        side = float(min(h, w))
        chosen = rng.choice(len(colors), size=num_objects, replace=False)
        self.objects: list[_Object] = []
        mids: list[np.ndarray] = []
        for i in range(num_objects):
            size = ("small", "medium", "large")[rng.integers(3)]
            radius = rng.uniform(*SIZES[size]) * side
            shape = shapes[rng.integers(len(shapes))]
            # a compass direction with a little jitter, so the sentence describes it exactly
            sector = rng.integers(8)
            ang = sector * np.pi / 4 + rng.uniform(-0.15, 0.15)
            speed = rng.uniform(*object_speed) * side
            if duration > 0:
                speed = min(speed, 0.6 * side / duration)
            vel = speed * np.array([math.cos(ang), math.sin(ang)])
            # place the mid-clip centre so the whole path stays (mostly) inside the frame;
            # among a few candidates keep the one farthest from the objects already placed
            half = np.abs(vel) * duration / 2
            lo = np.array([0.6 * radius, 0.6 * radius]) + half
            hi = np.array([w - 1.0, h - 1.0]) - 0.6 * radius - half
            mid_c = (lo + hi) / 2
            best, best_d = None, -1.0
            for _ in range(8):
                cand = np.where(lo < hi, rng.uniform(np.minimum(lo, hi), np.maximum(lo, hi)), mid_c)
                d = min((np.linalg.norm(cand - m) for m in mids), default=np.inf)
                if d > best_d:
                    best, best_d = cand, d
            mids.append(best)
            center0 = best - vel * duration / 2
            ntex = 3
            k = 2 * np.pi / rng.uniform(5.0, 12.0, ntex)
            tdir = rng.uniform(0, 2 * np.pi, ntex)
            tex_k = np.stack([k * np.cos(tdir), k * np.sin(tdir)], -1)
            tex_amp = rng.uniform(0.03, 0.06, (ntex, 1)) * (1 + 0.3 * rng.normal(size=(ntex, 3)))
            self.objects.append(
                _Object(
                    color=colors[chosen[i]],
                    shape=shape,
                    size=size,
                    rgb=np.array(COLORS[colors[chosen[i]]]),
                    radius=float(radius),
                    center0=center0,
                    velocity=vel,
                    angle0=float(rng.uniform(0, 2 * np.pi)),
                    spin=float(rng.uniform(-object_spin, object_spin)),
                    tex_k=tex_k.astype(np.float32),
                    tex_phase=rng.uniform(0, 2 * np.pi, ntex).astype(np.float32),
                    tex_amp=tex_amp.astype(np.float32),
                )
            )

    def _footprint(self, obj: _Object, px, py, t):
        d = obj.sdf(px, py, t)
        if self.antialias:
            return d < 0.5, np.clip(0.5 - d, 0.0, 1.0)
        inside = d < 0
        return inside, inside.astype(np.float32)

    def front_id(self, px: np.ndarray, py: np.ndarray, t: float) -> np.ndarray:
        """Index of the front-most object whose footprint contains each point at time t (-1: none)."""
        ids = np.full(px.shape, -1, np.int32)
        for i in reversed(range(len(self.objects))):
            obj = self.objects[i]
            cx, cy = obj.center(t)
            r = obj.radius * _BOUND_RADIUS + 1.0
            near = (np.abs(px - cx) <= r) & (np.abs(py - cy) <= r)
            if not near.any():
                continue
            idx = np.nonzero(near)
            inside, _ = self._footprint(obj, px[idx], py[idx], t)
            ids[tuple(i_[inside] for i_ in idx)] = i
        return ids

    # ------------------------------------------------------------------------------- render
    def _render_frame(self, t: float):
        h, w = self.height, self.width
        gx, gy = self._grid_x, self._grid_y
        bg = self.texture(*self._to_world(gx, gy, t))
        frame = bg.copy()
        n = len(self.objects)
        full = np.zeros((n, h, w), bool)
        ids = np.full((h, w), -1, np.int32)
        for i in reversed(range(n)):  # paint back to front
            obj = self.objects[i]
            box = obj.bbox(t, h, w)
            if box is None:
                continue
            y0, y1, x0, x1 = box
            sx, sy = gx[y0:y1, x0:x1], gy[y0:y1, x0:x1]
            inside, alpha = self._footprint(obj, sx, sy, t)
            if not inside.any():
                continue
            col = obj.color_at(sx, sy, t)
            region = frame[y0:y1, x0:x1]
            region += alpha[..., None] * (col - region)
            full[i, y0:y1, x0:x1] = inside
            ids[y0:y1, x0:x1][inside] = i
        visible = ids[None] == np.arange(n, dtype=np.int32)[:, None, None]
        return frame, bg, visible, full, ids

    def _flow(self, ids: np.ndarray, t_from: float, t_to: float):
        """Exact flow of the composited and of the background video from t_from to t_to."""
        h, w = self.height, self.width
        gx, gy = self._grid_x, self._grid_y
        bx, by = self.camera_move(gx, gy, t_from, t_to)
        tx, ty = bx.copy(), by.copy()
        for i, obj in enumerate(self.objects):
            sel = ids == i
            if sel.any():
                tx[sel], ty[sel] = obj.move(gx[sel], gy[sel], t_from, t_to)

        def outside(x, y):
            return (x < 0) | (x > w - 1) | (y < 0) | (y > h - 1)

        bg_occ = outside(bx, by)
        occ = outside(tx, ty) | (self.front_id(tx, ty, t_to) != ids)
        flow = np.stack([tx - gx, ty - gy], -1).astype(np.float32)
        bg_flow = np.stack([bx - gx, by - gy], -1).astype(np.float32)
        return flow, occ, bg_flow, bg_occ

    def render(self, times: Sequence[float]) -> SyntheticClip:
        """Render the scene at the given frame times (frame units; need not be integers)."""
        times = np.asarray(times, np.float64).reshape(-1)
        if times.size == 0:
            raise ValueError("render: times must contain at least one frame time")
        h, w, n = self.height, self.width, len(self.objects)
        rendered = [self._render_frame(float(t)) for t in times]
        frames = np.stack([r[0] for r in rendered])
        background = np.stack([r[1] for r in rendered])
        masks = np.stack([r[2] for r in rendered]).reshape(len(times), n, h, w)
        full = np.stack([r[3] for r in rendered]).reshape(len(times), n, h, w)
        pairs = max(len(times) - 1, 0)
        ff, fb = np.zeros((2, pairs, h, w, 2), np.float32)
        bff, bfb = np.zeros((2, pairs, h, w, 2), np.float32)
        of, ob = np.zeros((2, pairs, h, w), bool)
        bof, bob = np.zeros((2, pairs, h, w), bool)
        for k in range(pairs):
            t0, t1 = float(times[k]), float(times[k + 1])
            ff[k], of[k], bff[k], bof[k] = self._flow(rendered[k][4], t0, t1)
            fb[k], ob[k], bfb[k], bob[k] = self._flow(rendered[k + 1][4], t1, t0)
        return SyntheticClip(
            frames=frames,
            background=background,
            masks=masks,
            full_masks=full,
            flow_forward=ff,
            flow_backward=fb,
            occlusion_forward=of,
            occlusion_backward=ob,
            background_flow_forward=bff,
            background_flow_backward=bfb,
            background_occlusion_forward=bof,
            background_occlusion_backward=bob,
            sentences=[o.sentence() for o in self.objects],
            objects=[o.describe() for o in self.objects],
            times=times,
        )


def make_scene(
    seed: int | Sequence[int],
    num_frames: int = 8,
    height: int = 64,
    width: int = 64,
    num_objects: int = 2,
    camera: bool = True,
    *,
    antialias: bool = True,
    object_speed: tuple[float, float] = (0.015, 0.04),
    object_spin: float = 0.04,
    camera_speed: float = 0.02,
    camera_zoom: float = 0.01,
    camera_rotation: float = 0.01,
    min_wavelength: float = 12.0,
    shapes: Sequence[str] = SHAPES,
    colors: Sequence[str] = tuple(COLORS),
    duration: float | None = None,
) -> SyntheticScene:
    """Sample a scene, deterministically from ``seed`` (an int or a sequence of ints).

    Speeds are fractions of ``min(height, width)`` per frame: ``object_speed`` a (min, max) range,
    ``camera_speed`` the largest pan.  ``camera_zoom`` is the largest log-zoom per frame,
    ``camera_rotation`` / ``object_spin`` the largest rotation in radians per frame.
    ``min_wavelength`` (pixels) bounds the finest background texture.  Object paths are planned to
    stay in frame over ``duration`` frames (default ``num_frames - 1``).
    """
    if height < 2 or width < 2:
        raise ValueError(f"height and width must be >= 2, got {height}x{width}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_objects < 0:
        raise ValueError(f"num_objects must be >= 0, got {num_objects}")
    if min_wavelength <= 2:
        raise ValueError(f"min_wavelength must be > 2 pixels, got {min_wavelength}")
    rng = np.random.default_rng(seed)
    return SyntheticScene(
        rng,
        height,
        width,
        float(num_frames - 1 if duration is None else duration),
        num_objects,
        camera,
        antialias,
        tuple(object_speed),
        object_spin,
        camera_speed,
        camera_zoom,
        camera_rotation,
        min_wavelength,
        tuple(shapes),
        tuple(colors),
    )


def generate_clip(
    seed: int | Sequence[int],
    num_frames: int = 8,
    height: int = 64,
    width: int = 64,
    num_objects: int = 2,
    camera: bool = True,
    **scene_kwargs,
) -> SyntheticClip:
    """Render a ``num_frames`` clip at frame times 0..T-1 (keyword options: :func:`make_scene`)."""
    scene = make_scene(seed, num_frames, height, width, num_objects, camera, **scene_kwargs)
    return scene.render(np.arange(num_frames))


def generate_batch(
    seed: int,
    batch: int,
    num_frames: int = 8,
    height: int = 64,
    width: int = 64,
    num_objects: int = 2,
    camera: bool = True,
    **scene_kwargs,
) -> SyntheticClip:
    """``batch`` clips stacked on a new leading axis; clip i is ``generate_clip((seed, i), ...)``."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    clips = [
        generate_clip((seed, i), num_frames, height, width, num_objects, camera, **scene_kwargs) for i in range(batch)
    ]
    fields = {}
    for f in dataclasses.fields(SyntheticClip):
        vals = [getattr(c, f.name) for c in clips]
        fields[f.name] = np.stack(vals) if isinstance(vals[0], np.ndarray) else vals
    return SyntheticClip(**fields)


def triplet(
    seed: int | Sequence[int],
    height: int = 64,
    width: int = 64,
    num_objects: int = 2,
    camera: bool = True,
    gap: float = 1.0,
    **scene_kwargs,
):
    """(I0, I1, I2) float32 (H, W, 3) for frame interpolation: the scene at times 0, gap/2, gap.

    I1 is rendered exactly at the middle time (not interpolated).  Motions are per frame unit, so
    ``gap`` scales the displacement between I0 and I2.
    """
    if gap <= 0:
        raise ValueError(f"gap must be > 0, got {gap}")
    scene = make_scene(seed, 2, height, width, num_objects, camera, duration=gap, **scene_kwargs)
    frames = scene.render([0.0, gap / 2, gap]).frames
    return frames[0], frames[1], frames[2]
