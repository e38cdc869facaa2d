"""Synthetic referring segmentation: clips whose objects are told apart only by what a sentence says.

:func:`referring_clip` renders ``num_objects`` flat-coloured, upright shapes over a still background
and returns one sentence per object, the *minimal unique description* of it, with its per-frame mask:

* colours may repeat.  With ``distractors=True`` a clip holds, each with its own rate,
  an **appearance-identical** pair (same colour, shape and size; only motion or position tells them
  apart) and a **colour distractor** (same colour, other shape and/or size); the remaining objects
  have colours of their own.  ``distractors=False`` gives easy clips: every colour distinct.
* an object is ``small`` or ``large`` (radii from ``synthetic.SIZES``), still or moving ``left`` /
  ``right`` / ``up`` / ``down`` (axis-aligned, constant speed), and some moving objects leave the
  frame before the clip ends (their target is empty from then on).
* a description is the shape noun plus the fewest modifiers among colour, size, motion and position
  that are TRUE for the object and FALSE for every other object (ties broken at random, then worded
  with one of a few templates): "the red circle", "the small square on the left", "the blue
  triangle that is not moving", "the circle moving right".

Predicates (:func:`predicate_truth`) are three-valued.  Position words use the thirds of the frame
(``left`` / ``right`` columns, ``top`` / ``bottom`` rows, ``middle`` = the centre cell) and the
object's centre in *every* frame: TRUE when all centres are inside the region, FALSE when all are
outside it by a margin of 5% of the frame side, otherwise undecided (an undecided predicate never
separates two objects).  So a description never relies on a borderline position.

Per-object subsets for evaluation (``return_info=True``): ``appearance-identical`` (another object
has the same colour, shape and size), else ``colour-ambiguous`` (another object has the same colour),
else ``easy``.  :func:`referring_vocabulary` lists every word the grammar can produce,
:func:`grammar_sentences` every sentence (the tokenizer's training corpus), and
:func:`synthetic_tokenizer` loads the small byte-level BPE trained on them
(``scripts/train_synthetic_bpe.py``; RoBERTa's special ids).

For the hard-case presets (:mod:`peanut_jax.data.hardcases`) the layout also takes faster motion
(``speed``), ``wrap=True`` (a moving object that leaves at one edge comes back in at the opposite
one, so clips of any length keep their motion words true) and ``min_gap`` (0 lets objects pass
over each other), and :class:`ReferringRenderer` draws one frame at a time (memory flat in the
clip length) over a chosen background (:data:`BACKGROUNDS`: flat, the synthetic texture, regular
stripes / checkerboard, fine-grained noise), optionally panning at a constant velocity, with the
frame *without* a chosen object (its exact clean background) alongside.
"""

from __future__ import annotations

import itertools
import pathlib
from collections.abc import Sequence

import numpy as np

__all__ = [
    "BACKGROUNDS",
    "DIRECTIONS",
    "POSITIONS",
    "ReferringRenderer",
    "SHAPES",
    "SUBSETS",
    "SYNTHETIC_BPE_DIR",
    "grammar_sentences",
    "predicate_truth",
    "referring_clip",
    "referring_layout",
    "referring_vocabulary",
    "synthetic_tokenizer",
]

# A subset of synthetic.SHAPES: the hexagon is left out, at 10 pixels it reads as a circle.
SHAPES = ("circle", "square", "triangle", "ellipse", "star", "diamond")
SIZE_CLASSES = ("small", "large")
DIRECTIONS = ("left", "right", "up", "down")
POSITIONS = ("left", "right", "top", "bottom", "middle")
SUBSETS = ("easy", "colour-ambiguous", "appearance-identical")
# backgrounds of ReferringRenderer: flat grey, the synthetic texture (referring_clip's textured=True),
# regular patterns (soft-edged stripes, checkerboard) and rich fine-grained noise
BACKGROUNDS = ("flat", "synthetic", "stripes", "checkerboard", "noise")
SYNTHETIC_BPE_DIR = pathlib.Path(__file__).resolve().parents[1] / "assets" / "synthetic_bpe"

# -- the grammar's words (every template below; referring_vocabulary() is built from these) --------
_SIZE_WORDS = {"small": ("small",), "large": ("large", "big")}
_POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "middle": "in the middle",
}
_STILL_PHRASES = ("that is not moving", "that is standing still")
_MOVING_PHRASES = ("moving {}", "that is moving {}")
_KINDS = ("size", "color", "position", "motion")  # modifier kinds, in sentence order after "the"

_VELOCITY = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
_SPEED = (0.02, 0.035)  # moving objects: pixels per frame as a fraction of min(H, W)
_MARGIN = 0.05  # position words: FALSE needs every centre this far (fraction of the side) outside
_CELL_JITTER = 0.2  # placement: +- this fraction of a cell around the cell centre
_MIN_GAP = 0.8  # layouts: centres at least _MIN_GAP * (r_i + r_j) apart while both are in frame
_MAX_OBJECTS = 6
_SHAPE_REUSE = 0.5  # a newly drawn appearance reuses a shape already in the clip this often


def _synthetic():
    # imported on use: synthetic re-exports this module's public names
    from peanut_jax.data import synthetic

    return synthetic


def _colors() -> tuple[str, ...]:
    return tuple(_synthetic().COLORS)


# ---------------------------------------------------------------------------------- vocabulary


def _motion_phrases(motion: str) -> tuple[str, ...]:
    if motion == "still":
        return _STILL_PHRASES
    return tuple(p.format(motion) for p in _MOVING_PHRASES)


def _phrases(kind: str, value: str) -> tuple[str, ...]:
    """Every wording of one modifier."""
    if kind == "size":
        return _SIZE_WORDS[value]
    if kind == "color":
        return (value,)
    if kind == "position":
        return (_POSITION_PHRASES[value],)
    if kind == "motion":
        return _motion_phrases(value)
    raise ValueError(f"unknown modifier kind {kind!r}; known: {_KINDS}")


def _values(kind: str) -> tuple[str, ...]:
    return {
        "size": SIZE_CLASSES,
        "color": _colors(),
        "position": POSITIONS,
        "motion": ("still",) + DIRECTIONS,
    }[kind]


def _wording(shape: str, phrases: dict[str, str]) -> str:
    words = ["the"]
    for kind in ("size", "color"):
        if kind in phrases:
            words.append(phrases[kind])
    words.append(shape)
    for kind in ("position", "motion"):
        if kind in phrases:
            words.append(phrases[kind])
    return " ".join(words)


def grammar_sentences() -> list[str]:
    """Every sentence the grammar can produce, in a fixed order (the BPE training corpus)."""
    options = []
    for kind in _KINDS:
        opts = [None] + [p for v in _values(kind) for p in _phrases(kind, v)]
        options.append(opts)
    out = []
    for shape in SHAPES:
        for combo in itertools.product(*options):
            out.append(_wording(shape, {k: p for k, p in zip(_KINDS, combo) if p is not None}))
    return out


def referring_vocabulary() -> tuple[str, ...]:
    """Every word the grammar can produce, sorted (lower case, no punctuation)."""
    words = {"the", *SHAPES}
    for kind in _KINDS:
        for v in _values(kind):
            for p in _phrases(kind, v):
                words.update(p.split())
    return tuple(sorted(words))


# ---------------------------------------------------------------------------------- predicates


def predicate_truth(obj: dict, kind: str, value: str, height: int, width: int) -> bool | None:
    """Truth of one predicate for an object of :func:`referring_layout`'s ``objects`` list:
    True, False, or None (undecided: a position the object is partly in).  ``kind`` is ``shape``,
    ``color``, ``size``, ``motion`` (``still`` or a direction) or ``position``."""
    if kind in ("shape", "color", "size", "motion"):
        return obj[kind] == value
    if kind != "position":
        raise ValueError(f"unknown predicate kind {kind!r}")
    centers = np.asarray(obj["centers"], np.float64)
    x, y = centers[:, 0], centers[:, 1]
    m = _MARGIN * min(height, width)
    # pixel i covers [i - 0.5, i + 0.5]: the thirds of [-0.5, W - 0.5]
    x1, x2 = width / 3 - 0.5, 2 * width / 3 - 0.5
    y1, y2 = height / 3 - 0.5, 2 * height / 3 - 0.5
    if value == "left":
        inside, outside = x < x1, x > x1 + m
    elif value == "right":
        inside, outside = x > x2, x < x2 - m
    elif value == "top":
        inside, outside = y < y1, y > y1 + m
    elif value == "bottom":
        inside, outside = y > y2, y < y2 - m
    elif value == "middle":
        inside = (x > x1) & (x < x2) & (y > y1) & (y < y2)
        outside = (x < x1 - m) | (x > x2 + m) | (y < y1 - m) | (y > y2 + m)
    else:
        raise ValueError(f"unknown position {value!r}; known: {POSITIONS}")
    if inside.all():
        return True
    if outside.all():
        return False
    return None


def _unique(objects: list[dict], i: int, preds: Sequence[tuple[str, str]], h: int, w: int) -> bool:
    """All predicates TRUE for object i, and at least one FALSE for every other object."""
    if not all(predicate_truth(objects[i], k, v, h, w) is True for k, v in preds):
        return False
    return all(any(predicate_truth(o, k, v, h, w) is False for k, v in preds) for j, o in enumerate(objects) if j != i)


def _minimal_descriptions(
    objects: list[dict], i: int, h: int, w: int, kinds: Sequence[str] = _KINDS
) -> list[tuple[tuple[str, str], ...]]:
    """Smallest modifier sets (at most one per kind, of ``kinds``) that, with the shape noun,
    single out object i."""
    obj = objects[i]
    per_kind = []
    for kind in _KINDS:
        allowed = _values(kind) if kind in kinds else ()
        vals = [v for v in allowed if predicate_truth(obj, kind, v, h, w) is True]
        per_kind.append([(kind, v) for v in vals])
    for k in range(len(_KINDS) + 1):
        found = []
        for kinds in itertools.combinations(range(len(_KINDS)), k):
            for mods in itertools.product(*(per_kind[j] for j in kinds)):
                if _unique(objects, i, (("shape", obj["shape"]),) + mods, h, w):
                    found.append(mods)
        if found:
            return found
    return []


# ------------------------------------------------------------------------------------- layout


def _check_args(num_frames, height, width, num_objects, rates):
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if height < 32 or width < 32:
        raise ValueError(f"height and width must be >= 32, got {height}x{width}")
    if not 1 <= num_objects <= _MAX_OBJECTS:
        raise ValueError(f"num_objects must be between 1 and {_MAX_OBJECTS}, got {num_objects}")
    for name, r in rates.items():
        if not 0.0 <= r <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {r}")


def _appearances(rng, n: int, identical: bool, colour: bool):
    """(color, shape, size) per object (not yet shuffled): the identical pair first, then the
    colour distractor, then objects with colours of their own."""
    palette = list(rng.permutation(_colors()))
    used: list[str] = []

    def fresh():
        # shapes repeat often, so colour and size words are needed as often as shape words
        if used and rng.random() < _SHAPE_REUSE:
            shape = used[rng.integers(len(used))]
        else:
            shape = SHAPES[rng.integers(len(SHAPES))]
        used.append(shape)
        return (str(palette.pop(0)), shape, SIZE_CLASSES[rng.integers(2)])

    def variant(base):  # same colour, other shape and/or size
        color, shape, size = base
        mode = rng.integers(3)  # 0: shape, 1: size, 2: both
        if mode != 1:
            shape = str(rng.choice([s for s in SHAPES if s != shape]))
            used.append(shape)
        if mode != 0:
            size = "large" if size == "small" else "small"
        return (color, shape, size)

    out = []
    if identical:
        a = fresh()
        out += [a, a]
    if colour:
        base = out[0] if identical else fresh()
        out += ([] if identical else [base]) + [variant(base)]
    while len(out) < n:
        out.append(fresh())
    return out


def _place(
    rng, appear, pair_mode, num_frames, h, w, leave_rate, still_rate, speed=_SPEED, wrap=False, min_gap=_MIN_GAP
):
    """Motions and centre tracks for one attempt; None when the layout is rejected."""
    side = float(min(h, w))
    n = len(appear)
    t = np.arange(num_frames, dtype=np.float64)
    synthetic = _synthetic()
    radii = [rng.uniform(*synthetic.SIZES[size]) * side for _, _, size in appear]
    motions = ["still" if rng.random() < still_rate else DIRECTIONS[rng.integers(4)] for _ in range(n)]
    if num_frames == 1:  # one frame shows no motion
        motions = ["still"] * n
    if pair_mode == "motion" and motions[1] == motions[0]:
        motions[1] = str(rng.choice([m for m in ("still",) + DIRECTIONS if m != motions[0]]))
    elif pair_mode == "position":
        motions[1] = motions[0]
    cells = rng.permutation(9)[:n]
    cw, ch = w / 3, h / 3
    objects = []
    lanes = set()
    for i in range(n):
        row, col = divmod(int(cells[i]), 3)
        cx = (col + 0.5 + rng.uniform(-_CELL_JITTER, _CELL_JITTER)) * cw - 0.5
        cy = (row + 0.5 + rng.uniform(-_CELL_JITTER, _CELL_JITTER)) * ch - 0.5
        r, motion = radii[i], motions[i]
        leaves = False
        if motion == "still":
            vel = np.zeros(2)
            center0 = np.array([cx, cy])
        else:
            horizontal = motion in ("left", "right")
            lane = ("h", row) if horizontal else ("v", col)
            if lane in lanes:  # two objects moving along the same row / column would collide
                return None
            lanes.add(lane)
            axis, extent = (0, w) if horizontal else (1, h)
            sign = _VELOCITY[motion][axis]
            leaves = not wrap and num_frames >= 3 and rng.random() < leave_rate
            if wrap:
                # periodic: fully out (1.2 r + 1.5 px) past one edge, back in at the other
                speed_px = rng.uniform(*speed) * side
                reach = 1.2 * r + 1.5
                period = extent - 1 + 2 * reach
                a0 = rng.uniform(0, extent - 1)
                center0 = np.array([cx, cy])
                vel = np.array(_VELOCITY[motion]) * speed_px
                centers = np.repeat(center0[None], num_frames, axis=0)
                centers[:, axis] = -reach + np.mod(a0 + reach + sign * speed_px * t, period)
                objects.append(_track(appear[i], motion, r, vel, centers, False, True))
                continue
            if leaves:
                # start in the third next to the exit edge, fully out (1.2 r + 1.5 px) by t_exit
                t_exit = num_frames - 1 - max(1, (num_frames - 1) // 4)
                a0 = rng.uniform(0.6, 0.75) * extent
                exit_at = extent - 0.5 + 1.2 * r + 1.5
                speed_px = (exit_at - a0) / t_exit
                start = a0 if sign > 0 else extent - 1 - a0
            else:
                speed_px = rng.uniform(*speed) * side
                half = speed_px * (num_frames - 1) / 2
                lo, hi = 0.8 * r + half, extent - 1 - 0.8 * r - half
                mid = rng.uniform(lo, hi) if lo < hi else (extent - 1) / 2
                start = mid - sign * half
            vel = np.array(_VELOCITY[motion]) * speed_px
            center0 = np.array([cx, cy])
            center0[axis] = start
        centers = center0[None] + t[:, None] * vel[None]
        objects.append(_track(appear[i], motion, r, vel, centers, leaves, False))
    # keep every object mostly visible: no two centres closer than _MIN_GAP (r_i + r_j) in frame
    for a, b in itertools.combinations(objects, 2):
        ca, cb = a["centers"], b["centers"]
        in_a = (ca[:, 0] >= 0) & (ca[:, 0] <= w - 1) & (ca[:, 1] >= 0) & (ca[:, 1] <= h - 1)
        in_b = (cb[:, 0] >= 0) & (cb[:, 0] <= w - 1) & (cb[:, 1] >= 0) & (cb[:, 1] <= h - 1)
        d = np.linalg.norm(ca - cb, axis=-1)
        if np.any((in_a & in_b) & (d < min_gap * (a["radius"] + b["radius"]))):
            return None
    return objects


def _track(appear, motion, r, vel, centers, leaves, wraps) -> dict:
    return dict(
        color=appear[0],
        shape=appear[1],
        size=appear[2],
        motion=motion,
        radius=float(r),
        velocity=(float(vel[0]), float(vel[1])),
        centers=centers,
        leaves_frame=bool(leaves),
        wraps=bool(wraps),
    )


def referring_layout(
    seed: int | Sequence[int],
    num_frames: int = 8,
    height: int = 128,
    width: int = 128,
    num_objects: int = 3,
    distractors: bool = True,
    *,
    identical_rate: float = 0.4,
    colour_rate: float = 0.5,
    leave_rate: float = 0.2,
    still_rate: float = 0.35,
    speed: tuple[float, float] = _SPEED,
    wrap: bool = False,
    min_gap: float = _MIN_GAP,
    max_tries: int = 1000,
) -> dict:
    """The scene and sentences of :func:`referring_clip` without rendering (cheap; same seed, same
    result).  Keys: ``objects`` (front to back; per object ``color``, ``shape``, ``size``,
    ``motion``, ``radius``, ``velocity``, ``centers`` (T, 2) float (x, y), ``leaves_frame`` and
    ``wraps``),
    ``sentences``, ``descriptions`` (per object the modifiers used besides the shape noun, as
    ``(kind, value)`` pairs), ``colour_ambiguous`` / ``appearance_identical`` (per-object flags),
    ``subsets`` (per object, one of :data:`SUBSETS`, most specific first), ``has_identical_pair``
    and ``has_colour_distractor`` (what the clip was drawn with), ``height``, ``width``.

    With ``distractors=True`` a clip has an appearance-identical pair with probability
    ``identical_rate`` (``num_objects >= 2``) and, independently, a colour distractor with
    probability ``colour_rate`` (one more object, so ``num_objects >= 3`` when both are drawn).
    A moving object leaves the frame with probability ``leave_rate``; an object is still with
    probability ``still_rate`` (always with ``num_frames=1``, where no sentence uses motion words).
    ``speed``: (min, max) of a moving object's speed, a fraction of ``min(height, width)`` per frame
    (objects then plan their path to stay in the frame when they can).  ``wrap=True``: a moving
    object keeps its speed for the whole clip, leaving at one edge and coming back at the opposite
    one (objects flag ``wraps``; ``leave_rate`` is unused), so motion words stay true in clips of
    any length.  ``min_gap``: centres in frame stay ``min_gap * (r_i + r_j)`` apart (0: objects may
    pass over each other).
    """
    rates = dict(identical_rate=identical_rate, colour_rate=colour_rate, leave_rate=leave_rate, still_rate=still_rate)
    _check_args(num_frames, height, width, num_objects, rates)
    speed = tuple(float(v) for v in speed)
    if len(speed) != 2 or not 0.0 < speed[0] <= speed[1]:
        raise ValueError(f"speed must be (min, max) with 0 < min <= max, got {speed}")
    if not min_gap >= 0.0:
        raise ValueError(f"min_gap must be >= 0, got {min_gap}")
    h, w = int(height), int(width)
    rng = np.random.default_rng(seed)
    # the clip's distractors are drawn once, before any rejected layout, so they keep their rates;
    # both draws always happen, so the rest of the stream does not depend on the rates
    want_identical, want_colour = rng.random() < identical_rate, rng.random() < colour_rate
    identical = bool(distractors) and want_identical and num_objects >= 2
    colour = bool(distractors) and want_colour and num_objects >= (3 if identical else 2)
    for _ in range(max_tries):
        appear = _appearances(rng, num_objects, identical, colour)
        pair_mode = str(rng.choice(["motion", "position"])) if identical else None
        if num_frames == 1 and identical:
            pair_mode = "position"
        objects = _place(
            rng, appear, pair_mode, num_frames, h, w, leave_rate, still_rate, speed, bool(wrap), float(min_gap)
        )
        if objects is None:
            continue
        order = rng.permutation(num_objects)  # front-to-back order, so index says nothing of the kind
        objects = [objects[k] for k in order]
        kinds = _KINDS if num_frames > 1 else tuple(k for k in _KINDS if k != "motion")
        choices = [_minimal_descriptions(objects, i, h, w, kinds) for i in range(num_objects)]
        if all(choices):
            break
    else:
        raise RuntimeError(f"referring_layout: no describable layout in {max_tries} tries (seed {seed!r})")
    descriptions, sentences = [], []
    for obj, found in zip(objects, choices):
        mods = found[rng.integers(len(found))]
        phrases = {}
        for kind, value in mods:
            options = _phrases(kind, value)
            phrases[kind] = options[rng.integers(len(options))]
        descriptions.append(tuple(mods))
        sentences.append(_wording(obj["shape"], phrases))
    colour_amb = [any(o["color"] == p["color"] for p in objects if p is not o) for o in objects]
    ident = [
        any((o["color"], o["shape"], o["size"]) == (p["color"], p["shape"], p["size"]) for p in objects if p is not o)
        for o in objects
    ]
    subsets = [SUBSETS[2] if a else SUBSETS[1] if c else SUBSETS[0] for a, c in zip(ident, colour_amb)]
    return dict(
        objects=objects,
        sentences=sentences,
        descriptions=descriptions,
        colour_ambiguous=colour_amb,
        appearance_identical=ident,
        subsets=subsets,
        has_identical_pair=identical,
        has_colour_distractor=colour,
        height=h,
        width=w,
    )


# ------------------------------------------------------------------------------------- render


def _render_rng(seed) -> np.random.Generator:
    """The rendering stream of a seed (separate from the layout's, so backgrounds share one layout)."""
    return np.random.default_rng([*np.atleast_1d(np.asarray(seed, np.int64)).tolist(), 0x5E6])


def _background_fn(kind: str, rng, h: int, w: int):
    """``B(qx, qy) -> (..., 3)`` float32 of a background kind at pixel offsets from the frame centre
    (None for flat grey).  Named colours must stand out, so textures stay near grey."""
    synthetic = _synthetic()
    if kind == "flat":
        return None
    if kind in ("synthetic", "noise"):
        # the synthetic texture pulled halfway to grey; "noise": down to 3-pixel waves, more contrast
        fine = kind == "noise"
        scene = synthetic.make_scene(
            int(rng.integers(2**31)), 1, h, w, num_objects=0, camera=False, min_wavelength=3.0 if fine else 12.0
        )
        gain = 0.8 if fine else 0.5
        return lambda qx, qy: 0.5 + gain * (scene.texture(qx, qy) - 0.5)
    # regular patterns: soft-edged stripes or a checkerboard in two near-grey tones
    lam = max(5.0, min(h, w) * rng.uniform(0.05, 0.1))
    theta = rng.uniform(0.0, np.pi)
    phase = rng.uniform(0.0, 2 * np.pi, 2)
    c0 = (rng.uniform(0.15, 0.35) + rng.uniform(-0.05, 0.05, 3)).astype(np.float32)
    c1 = (rng.uniform(0.65, 0.85) + rng.uniform(-0.05, 0.05, 3)).astype(np.float32)
    k, cos, sin = 2 * np.pi / lam, np.cos(theta), np.sin(theta)

    def pattern(qx, qy):
        s = np.sin(k * (cos * qx + sin * qy) + phase[0])
        if kind == "checkerboard":
            s = s * np.sin(k * (cos * qy - sin * qx) + phase[1])
        a = (0.5 + 0.5 * np.clip(3.0 * s, -1.0, 1.0)).astype(np.float32)
        return c0 + a[..., None] * (c1 - c0)

    return pattern


class ReferringRenderer:
    """Draws the frames of a :func:`referring_layout` one at a time (memory flat in the clip length).

    ``seed``: the clip's seed (:func:`referring_clip` renders with the same stream, so
    ``background='synthetic'`` / ``'flat'`` with no pan give its frames exactly).  ``background``:
    one of :data:`BACKGROUNDS`.  ``pan``: (x, y) pixels per frame of a constant camera pan over the
    background (objects keep their layout tracks, in image coordinates); the background's flow
    t -> t+1 is then the uniform ``flow_forward = -pan``.  Object 0 is in front.
    """

    def __init__(self, info: dict, seed, background: str = "synthetic", pan=(0.0, 0.0)):
        if background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
        rng = _render_rng(seed)
        self.info, self.background_kind = info, background
        self.height, self.width = h, w = int(info["height"]), int(info["width"])
        self.objects = info["objects"]
        self.num_frames = len(self.objects[0]["centers"]) if self.objects else 0
        self.pan = np.asarray(pan, np.float64).reshape(2)
        if not np.all(np.isfinite(self.pan)):
            raise ValueError(f"pan must be finite, got {pan}")
        self._gy, self._gx = np.mgrid[0:h, 0:w].astype(np.float32)
        self._bg_fn = _background_fn(background, rng, h, w)
        # a light stripe texture per object that moves with it
        self._waves = []
        for _ in self.objects:
            k = 2 * np.pi / rng.uniform(5.0, 12.0, 2)
            a = rng.uniform(0, 2 * np.pi, 2)
            self._waves.append((k * np.cos(a), k * np.sin(a), rng.uniform(0, 2 * np.pi, 2), rng.uniform(0.02, 0.05, 2)))
        self._static = None if self.pan.any() else self._background_at(0)

    @property
    def flow_forward(self) -> np.ndarray:
        """(2,) the background's flow t -> t+1 in pixels (x, y), the same at every pixel."""
        return -self.pan

    def _background_at(self, t: int) -> np.ndarray:
        h, w = self.height, self.width
        if self._bg_fn is None:
            return np.full((h, w, 3), 0.5, np.float32)
        qx, qy = self._gx - (w - 1) / 2, self._gy - (h - 1) / 2
        if t and self.pan.any():
            qx, qy = qx + np.float32(self.pan[0] * t), qy + np.float32(self.pan[1] * t)
        return np.asarray(self._bg_fn(qx, qy), np.float32)

    def background(self, t: int) -> np.ndarray:
        """float32 (H, W, 3) background of frame ``t`` (no objects)."""
        return self._static.copy() if self._static is not None else self._background_at(t)

    def _paint(self, frame: np.ndarray, ids: np.ndarray, i: int, t: int) -> None:
        synthetic = _synthetic()
        h, w = self.height, self.width
        gx, gy = self._gx, self._gy
        obj = self.objects[i]
        cx, cy = obj["centers"][t]
        r = obj["radius"]
        reach = 1.2 * r + 1.0
        x0, x1 = max(0, int(np.floor(cx - reach))), min(w, int(np.ceil(cx + reach)) + 1)
        y0, y1 = max(0, int(np.floor(cy - reach))), min(h, int(np.ceil(cy + reach)) + 1)
        if x0 >= x1 or y0 >= y1:
            return
        lx, ly = gx[y0:y1, x0:x1] - np.float32(cx), gy[y0:y1, x0:x1] - np.float32(cy)
        d = np.float32(r) * synthetic.shape_sdf(obj["shape"], lx / np.float32(r), ly / np.float32(r))
        inside = d < 0.5
        if not inside.any():
            return
        alpha = np.clip(0.5 - d, 0.0, 1.0)[..., None]
        kx, ky, ph, amp = self._waves[i]
        tex = sum(amp[j] * np.sin(kx[j] * lx + ky[j] * ly + ph[j]) for j in range(2))
        col = np.clip(np.asarray(synthetic.COLORS[obj["color"]], np.float32) + tex[..., None], 0.0, 1.0)
        region = frame[y0:y1, x0:x1]
        region += alpha * (col - region)
        ids[y0:y1, x0:x1][inside] = i

    def _check_t(self, t: int) -> int:
        t = int(t)
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} outside the clip's {self.num_frames} frames")
        return t

    def frame(self, t: int, exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 (H, W, 3) frame ``t``, int32 (H, W) id of the object visible at each pixel, -1 for
        the background), drawn without the objects in ``exclude``."""
        t = self._check_t(t)
        frame = self.background(t)
        ids = np.full((self.height, self.width), -1, np.int32)
        for i in reversed(range(len(self.objects))):  # paint back to front
            if i not in exclude:
                self._paint(frame, ids, i, t)
        return _to_u8(frame), ids

    def frame_and_clean(self, t: int, remove: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(frame, the same frame without object ``remove``, ids of the frame, ids of the frame
        without it), drawn together: the two frames are equal wherever object ``remove`` has no
        alpha (when it is in front, i.e. ``remove == 0``, everywhere outside ``ids == remove``)."""
        t = self._check_t(t)
        if not 0 <= remove < len(self.objects):
            raise IndexError(f"object {remove} outside the clip's {len(self.objects)} objects")
        frame = self.background(t)
        ids = np.full((self.height, self.width), -1, np.int32)
        clean = clean_ids = None
        for i in reversed(range(len(self.objects))):
            if i == remove:
                clean, clean_ids = frame.copy(), ids.copy()
                self._paint(frame, ids, i, t)
                continue
            self._paint(frame, ids, i, t)
            if clean is not None:
                self._paint(clean, clean_ids, i, t)
        return _to_u8(frame), _to_u8(clean), ids, clean_ids


def _to_u8(frame: np.ndarray) -> np.ndarray:
    return np.round(np.clip(frame, 0.0, 1.0) * 255.0).astype(np.uint8)


def _render(info: dict, num_frames: int, textured: bool, seed) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames (T, H, W, 3) and visible masks (N, T, H, W) bool; object 0 is in front."""
    r = ReferringRenderer(info, seed, "synthetic" if textured else "flat")
    n = len(info["objects"])
    frames = np.empty((num_frames, r.height, r.width, 3), np.uint8)
    targets = np.zeros((n, num_frames, r.height, r.width), bool)
    for t in range(num_frames):
        frames[t], ids = r.frame(t)
        targets[:, t] = ids[None] == np.arange(n)[:, None, None]
    return frames, targets


def referring_clip(
    seed: int | Sequence[int],
    num_frames: int = 8,
    height: int = 128,
    width: int = 128,
    num_objects: int = 3,
    distractors: bool = True,
    *,
    textured: bool = True,
    return_info: bool = False,
    **layout_kwargs,
):
    """A synthetic referring-segmentation clip, deterministic in ``seed``.

    Returns ``(clip, sentences, targets)``: ``clip`` uint8 (T, H, W, 3); ``sentences`` one minimal
    unique description per object; ``targets`` bool (num_objects, T, H, W), the visible footprint
    of each object (empty in frames where it has left the picture or is hidden).  With
    ``return_info=True`` a fourth item, :func:`referring_layout`'s dict (subsets, flags, tracks).
    ``textured=False`` puts the objects on flat grey.  Keyword options: :func:`referring_layout`.
    """
    info = referring_layout(seed, num_frames, height, width, num_objects, distractors, **layout_kwargs)
    clip, targets = _render(info, num_frames, textured, seed)
    if return_info:
        return clip, list(info["sentences"]), targets, info
    return clip, list(info["sentences"]), targets


# ---------------------------------------------------------------------------------- tokenizer


def synthetic_tokenizer():
    """The byte-level BPE trained on :func:`grammar_sentences` (``peanut_jax/assets/synthetic_bpe``),
    as a :class:`peanut_jax.text.RobertaTokenizer` (``<s>`` = 0, ``<pad>`` = 1, ``</s>`` = 2,
    ``<unk>`` = 3, ``<mask>`` last)."""
    from peanut_jax.text import RobertaTokenizer

    return RobertaTokenizer.from_files(SYNTHETIC_BPE_DIR / "vocab.json", SYNTHETIC_BPE_DIR / "merges.txt")
