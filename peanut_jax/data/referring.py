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
"""

from __future__ import annotations

import itertools
import pathlib
from collections.abc import Sequence

import numpy as np

__all__ = [
    "DIRECTIONS",
    "POSITIONS",
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


def _place(rng, appear, pair_mode, num_frames, h, w, leave_rate, still_rate):
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
            leaves = num_frames >= 3 and rng.random() < leave_rate
            if leaves:
                # start in the third next to the exit edge, fully out (1.2 r + 1.5 px) by t_exit
                t_exit = num_frames - 1 - max(1, (num_frames - 1) // 4)
                a0 = rng.uniform(0.6, 0.75) * extent
                exit_at = extent - 0.5 + 1.2 * r + 1.5
                speed = (exit_at - a0) / t_exit
                start = a0 if sign > 0 else extent - 1 - a0
            else:
                speed = rng.uniform(*_SPEED) * side
                half = speed * (num_frames - 1) / 2
                lo, hi = 0.8 * r + half, extent - 1 - 0.8 * r - half
                mid = rng.uniform(lo, hi) if lo < hi else (extent - 1) / 2
                start = mid - sign * half
            vel = np.array(_VELOCITY[motion]) * speed
            center0 = np.array([cx, cy])
            center0[axis] = start
        centers = center0[None] + t[:, None] * vel[None]
        objects.append(
            dict(
                color=appear[i][0],
                shape=appear[i][1],
                size=appear[i][2],
                motion=motion,
                radius=float(r),
                velocity=(float(vel[0]), float(vel[1])),
                centers=centers,
                leaves_frame=bool(leaves),
            )
        )
    # keep every object mostly visible: no two centres closer than _MIN_GAP (r_i + r_j) in frame
    for a, b in itertools.combinations(objects, 2):
        ca, cb = a["centers"], b["centers"]
        in_a = (ca[:, 0] >= 0) & (ca[:, 0] <= w - 1) & (ca[:, 1] >= 0) & (ca[:, 1] <= h - 1)
        in_b = (cb[:, 0] >= 0) & (cb[:, 0] <= w - 1) & (cb[:, 1] >= 0) & (cb[:, 1] <= h - 1)
        d = np.linalg.norm(ca - cb, axis=-1)
        if np.any((in_a & in_b) & (d < _MIN_GAP * (a["radius"] + b["radius"]))):
            return None
    return objects


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
    max_tries: int = 1000,
) -> dict:
    """The scene and sentences of :func:`referring_clip` without rendering (cheap; same seed, same
    result).  Keys: ``objects`` (front to back; per object ``color``, ``shape``, ``size``,
    ``motion``, ``radius``, ``velocity``, ``centers`` (T, 2) float (x, y) and ``leaves_frame``),
    ``sentences``, ``descriptions`` (per object the modifiers used besides the shape noun, as
    ``(kind, value)`` pairs), ``colour_ambiguous`` / ``appearance_identical`` (per-object flags),
    ``subsets`` (per object, one of :data:`SUBSETS`, most specific first), ``has_identical_pair``
    and ``has_colour_distractor`` (what the clip was drawn with), ``height``, ``width``.

    With ``distractors=True`` a clip has an appearance-identical pair with probability
    ``identical_rate`` (``num_objects >= 2``) and, independently, a colour distractor with
    probability ``colour_rate`` (one more object, so ``num_objects >= 3`` when both are drawn).
    A moving object leaves the frame with probability ``leave_rate``; an object is still with
    probability ``still_rate`` (always with ``num_frames=1``, where no sentence uses motion words).
    """
    rates = dict(identical_rate=identical_rate, colour_rate=colour_rate, leave_rate=leave_rate, still_rate=still_rate)
    _check_args(num_frames, height, width, num_objects, rates)
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
        objects = _place(rng, appear, pair_mode, num_frames, h, w, leave_rate, still_rate)
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


def _render(info: dict, num_frames: int, textured: bool, rng) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames (T, H, W, 3) and visible masks (N, T, H, W) bool; object 0 is in front."""
    synthetic = _synthetic()
    h, w = info["height"], info["width"]
    objects = info["objects"]
    n = len(objects)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    if textured:
        scene = synthetic.make_scene(int(rng.integers(2**31)), 1, h, w, num_objects=0, camera=False)
        # the synthetic background texture, pulled halfway to grey so named colours stand out
        bg = 0.5 + 0.5 * (scene.texture(gx - (w - 1) / 2, gy - (h - 1) / 2) - 0.5)
    else:
        bg = np.full((h, w, 3), 0.5, np.float32)
    # a light stripe texture per object that moves with it
    waves = []
    for _ in range(n):
        k = 2 * np.pi / rng.uniform(5.0, 12.0, 2)
        a = rng.uniform(0, 2 * np.pi, 2)
        waves.append((k * np.cos(a), k * np.sin(a), rng.uniform(0, 2 * np.pi, 2), rng.uniform(0.02, 0.05, 2)))
    frames = np.empty((num_frames, h, w, 3), np.uint8)
    targets = np.zeros((n, num_frames, h, w), bool)
    for t in range(num_frames):
        frame = bg.copy()
        ids = np.full((h, w), -1, np.int32)
        for i in reversed(range(n)):  # paint back to front
            obj = objects[i]
            cx, cy = obj["centers"][t]
            r = obj["radius"]
            reach = 1.2 * r + 1.0
            x0, x1 = max(0, int(np.floor(cx - reach))), min(w, int(np.ceil(cx + reach)) + 1)
            y0, y1 = max(0, int(np.floor(cy - reach))), min(h, int(np.ceil(cy + reach)) + 1)
            if x0 >= x1 or y0 >= y1:
                continue
            lx, ly = gx[y0:y1, x0:x1] - np.float32(cx), gy[y0:y1, x0:x1] - np.float32(cy)
            d = np.float32(r) * synthetic.shape_sdf(obj["shape"], lx / np.float32(r), ly / np.float32(r))
            inside = d < 0.5
            if not inside.any():
                continue
            alpha = np.clip(0.5 - d, 0.0, 1.0)[..., None]
            kx, ky, ph, amp = waves[i]
            tex = sum(amp[j] * np.sin(kx[j] * lx + ky[j] * ly + ph[j]) for j in range(2))
            col = np.clip(np.asarray(synthetic.COLORS[obj["color"]], np.float32) + tex[..., None], 0.0, 1.0)
            region = frame[y0:y1, x0:x1]
            region += alpha * (col - region)
            ids[y0:y1, x0:x1][inside] = i
        frames[t] = np.round(np.clip(frame, 0.0, 1.0) * 255.0).astype(np.uint8)
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
    # the rendering stream is separate from the layout's, so textured / plain share one layout
    render_rng = np.random.default_rng([*np.atleast_1d(np.asarray(seed, np.int64)).tolist(), 0x5E6])
    clip, targets = _render(info, num_frames, textured, render_rng)
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
