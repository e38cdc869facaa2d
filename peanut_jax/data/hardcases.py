"""Hard-case presets: synthetic referring clips of the cases the product is for, with exact ground truth.

DAVIS / YouTube-VOS rarely show what makes text -> mask -> erase hard: objects that only the words
tell apart, fast motion, busy or regular textures behind the object, very long clips, 1080p.  Each
preset draws such clips from :mod:`peanut_jax.data.referring` (same grammar and tokenizer) and
renders them frame by frame, so a 1000-frame or 1080p clip never sits in memory at once:

* ``similar_distractors``: four objects, an appearance-identical pair and a colour distractor (three
  objects share a colour); the target is one of the pair (even seeds) or the colour distractor (odd
  seeds), so only position / motion / size / shape words single it out.
* ``fast_motion``: every object moves at 6-10% of the frame side per frame (8-13 px at 128 px),
  wrapping around the edges and passing over each other, while the camera pans 1-3% per frame
  (whole pixels).
* ``textured_background``: regular stripes, a checkerboard or fine 3-pixel noise behind the objects,
  with a slow camera pan (0.3-1% per frame, at least 1 pixel), so the fill must continue a pattern
  that moves.
* ``long``: 1000 frames; moving objects wrap around the edges (they leave and come back), so motion
  words hold over the whole clip.
* ``hires``: 1920x1080 frames.

A clip's target is drawn with the clip and rendered in front of the other objects, so the ground
truth is exact: ``mask`` is where the target was drawn (every pixel it touched), ``clean`` is the
same frame rendered without it, and ``clean == image`` outside ``mask``.  The background moves by
the uniform flow ``flow_forward = -pan`` (pixels, t -> t+1); ``others`` marks the other objects,
which move on their own.  A preset is ``make_case(preset, seed, num_frames=..., height=...,
width=...)`` (sizes default to the preset's); the same arguments give the same clip.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterator

import numpy as np

from peanut_jax.data.referring import ReferringRenderer, referring_layout

__all__ = ["PRESETS", "CaseFrame", "HardCase", "Preset", "make_case", "preset_names"]

_PER_OBJECT = ("objects", "sentences", "descriptions", "colour_ambiguous", "appearance_identical", "subsets")


@dataclasses.dataclass(frozen=True)
class Preset:
    """How a preset draws its clips.  ``layout``: :func:`~peanut_jax.data.referring.referring_layout`
    options; ``backgrounds``: drawn per clip (:data:`~peanut_jax.data.referring.BACKGROUNDS`);
    ``pan``: (min, max) camera pan speed as a fraction of ``min(height, width)`` per frame, in a
    random direction, rounded to whole pixels per axis (at least 1 px; (0, 0): still camera);
    ``target``: ``'distractor'`` (alternating the appearance-identical pair and the colour
    distractor by seed parity) or ``'any'``."""

    name: str
    summary: str
    num_frames: int
    height: int
    width: int
    num_objects: int = 3
    layout: dict = dataclasses.field(default_factory=dict)
    backgrounds: tuple[str, ...] = ("synthetic",)
    pan: tuple[float, float] = (0.0, 0.0)
    target: str = "any"
    fps: float = 25.0


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "similar_distractors",
            "appearance-identical pair + colour distractor; only the words single the target out",
            24,
            128,
            128,
            num_objects=4,
            layout=dict(identical_rate=1.0, colour_rate=1.0, leave_rate=0.0),
            target="distractor",
        ),
        Preset(
            "fast_motion",
            "every object moves 6-10% of the side per frame (wrapping), camera pans 1-3% per frame",
            24,
            128,
            128,
            layout=dict(still_rate=0.0, speed=(0.06, 0.1), wrap=True, min_gap=0.0),
            pan=(0.01, 0.03),
        ),
        Preset(
            "textured_background",
            "stripes, checkerboard or fine noise behind the objects, slow camera pan",
            24,
            128,
            128,
            layout=dict(leave_rate=0.0),
            backgrounds=("stripes", "checkerboard", "noise"),
            pan=(0.003, 0.01),
        ),
        Preset(
            "long",
            "1000 frames; moving objects wrap around the edges",
            1000,
            128,
            128,
            layout=dict(wrap=True, min_gap=0.0),
        ),
        Preset("hires", "1920x1080 frames", 12, 1080, 1920, layout=dict(leave_rate=0.0)),
    )
}


def preset_names() -> tuple[str, ...]:
    return tuple(PRESETS)


@dataclasses.dataclass(frozen=True)
class CaseFrame:
    """One frame of a hard case: ``image`` (H, W, 3) uint8 (the clip), ``clean`` (H, W, 3) uint8 (the
    same frame without the target), ``mask`` (H, W) bool (the target), ``others`` (H, W) bool (the
    other objects as ``clean`` shows them, including what the target hides), ``index``."""

    image: np.ndarray
    clean: np.ndarray
    mask: np.ndarray
    others: np.ndarray
    index: int


class HardCase:
    """One clip of a preset: the sentence of its target, the frames, rendered lazily.

    Iterating gives the uint8 frames (it is a video source: ``len``, ``height``, ``width``, ``fps``);
    :meth:`frames` gives :class:`CaseFrame` records with the ground truth; :meth:`arrays` stacks
    them (small clips only).  ``info``: the layout (:func:`~peanut_jax.data.referring.referring_layout`
    keys, the target first); ``sentence``: the target's description; ``subset``: its subset.
    ``target``: the index of the target in ``info`` (:func:`make_case` puts it first, 0;
    :meth:`with_target` picks another object of the same clip).
    """

    def __init__(self, preset: Preset, seed: int, info: dict, background: str, pan, target: int = 0):
        self.preset, self.seed, self.info = preset, int(seed), info
        if not 0 <= int(target) < len(info["objects"]):
            raise ValueError(f"target {target} outside the clip's {len(info['objects'])} objects")
        self.target = int(target)
        self.background, self.pan = background, tuple(float(v) for v in pan)
        self.height, self.width = int(info["height"]), int(info["width"])
        self.num_frames = len(info["objects"][0]["centers"])
        self.fps = float(preset.fps)
        self.path = f"{preset.name} seed {self.seed}"
        self._renderer = ReferringRenderer(info, _seed(preset, seed), background, pan)

    def with_target(self, k: int) -> HardCase:
        """The same clip (same frames) with object ``k`` as the target (its ground truth and sentence).
        Unlike the drawn target (object 0, in front), object ``k`` may be partly behind another one:
        its ``mask`` is where it is visible, and ``clean`` differs from ``image`` only there and on the
        anti-aliased rim of an object in front of it."""
        return HardCase(self.preset, self.seed, self.info, self.background, self.pan, target=k)

    @property
    def sentence(self) -> str:
        return self.info["sentences"][self.target]

    @property
    def sentences(self) -> list[str]:
        return list(self.info["sentences"])

    @property
    def subset(self) -> str:
        return self.info["subsets"][self.target]

    @property
    def flow_forward(self) -> np.ndarray:
        """(2,) the background's flow t -> t+1 (x, y) in pixels, the same at every pixel and frame."""
        return self._renderer.flow_forward

    def __len__(self) -> int:
        return self.num_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        for t in range(self.num_frames):
            yield self._renderer.frame(t)[0]

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[CaseFrame]:
        """:class:`CaseFrame` records of frames ``start`` .. ``stop - 1``, each drawn when asked for."""
        stop = self.num_frames if stop is None else min(int(stop), self.num_frames)
        for t in range(int(start), stop):
            image, clean, ids, clean_ids = self._renderer.frame_and_clean(t, self.target)
            yield CaseFrame(image, clean, ids == self.target, clean_ids >= 0, t)

    def arrays(self) -> dict:
        """``{'frames', 'clean', 'masks', 'others'}`` stacked over the clip (T, ...): small clips only."""
        recs = list(self.frames())
        return {
            "frames": np.stack([r.image for r in recs]),
            "clean": np.stack([r.clean for r in recs]),
            "masks": np.stack([r.mask for r in recs]),
            "others": np.stack([r.others for r in recs]),
        }

    def describe(self) -> dict:
        """What the clip is (JSON-ready)."""
        obj = self.info["objects"][self.target]
        return {
            "preset": self.preset.name,
            "seed": self.seed,
            "sentence": self.sentence,
            "subset": self.subset,
            "num_objects": len(self.info["objects"]),
            "num_frames": self.num_frames,
            "height": self.height,
            "width": self.width,
            "background": self.background,
            "pan": list(self.pan),
            "target": {k: obj[k] for k in ("color", "shape", "size", "motion", "wraps", "leaves_frame")},
        }


def _seed(preset: Preset, seed: int) -> list[int]:
    return [zlib.crc32(preset.name.encode()) & 0xFFFF, int(seed)]


def _front(info: dict, k: int) -> dict:
    """The layout with object ``k`` moved to the front (index 0), every per-object list reordered."""
    order = [k] + [i for i in range(len(info["objects"])) if i != k]
    out = dict(info)
    for key in _PER_OBJECT:
        out[key] = [info[key][i] for i in order]
    return out


def make_case(
    preset: str | Preset,
    seed: int,
    *,
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
) -> HardCase:
    """Clip ``seed`` of a preset (a name of :data:`PRESETS` or a :class:`Preset`); sizes default to
    the preset's.  Deterministic in (preset, seed, sizes)."""
    if not isinstance(preset, Preset):
        if preset not in PRESETS:
            raise ValueError(f"unknown hard-case preset {preset!r}; choose from {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    t = int(preset.num_frames if num_frames is None else num_frames)
    h = int(preset.height if height is None else height)
    w = int(preset.width if width is None else width)
    info = referring_layout(_seed(preset, seed), t, h, w, preset.num_objects, True, **preset.layout)
    rng = np.random.default_rng(_seed(preset, seed) + [0xCA5E])
    if preset.target == "distractor":
        want = "appearance-identical" if seed % 2 == 0 else "colour-ambiguous"
        pool = [i for i, s in enumerate(info["subsets"]) if s == want] or [
            i for i, s in enumerate(info["subsets"]) if s != "easy"
        ]
    else:
        pool = list(range(len(info["objects"])))
    k = int(pool[rng.integers(len(pool))])
    background = str(preset.backgrounds[rng.integers(len(preset.backgrounds))])
    lo, hi = preset.pan
    speed = rng.uniform(lo, hi) * min(h, w)
    ang = rng.uniform(0.0, 2 * np.pi)
    # whole pixels per frame: the background then moves exactly onto the pixel grid, so warping the
    # clean background along its flow reproduces it (Ewarp of the clean background ~ 0)
    pan = np.round([speed * np.cos(ang), speed * np.sin(ang)])
    if hi > 0 and not pan.any():
        axis = int(abs(np.sin(ang)) > abs(np.cos(ang)))
        pan[axis] = 1.0 if (np.cos(ang), np.sin(ang))[axis] >= 0 else -1.0
    pan = (float(pan[0]) + 0.0, float(pan[1]) + 0.0)  # + 0.0: no negative zeros
    return HardCase(preset, seed, _front(info, k), background, pan)
