"""Referring video object segmentation: J, F and J&F of SAMWISE (or of saved masks) per expression.

    python -m peanut_jax.pipeline.evaluate_rvos --dataset synthetic --checkpoint runs/samwise_tiny --out results/
    python -m peanut_jax.pipeline.evaluate_rvos --dataset ref_davis17 --data-dir ~/tensorflow_datasets
    python -m peanut_jax.pipeline.evaluate_rvos --dataset mevis_valid_u --checkpoint samwise_mevis --save-masks masks/
    python -m peanut_jax.pipeline.evaluate_rvos --dataset mevis_valid_u --predictions masks/
    python -m peanut_jax.pipeline.evaluate_rvos --dataset ref_youtube_vos --submission Annotations.zip

Every (video, expression) is segmented by :class:`~peanut_jax.pipeline.samwise.SAMWISEPredictor`,
the expressions of a video in batched passes of ``--batch-prompts`` sentences (a sentence's masks do
not depend on the others in its pass), every frame, masks = ``sigmoid(logits) > --threshold``; or the
masks are read from ``--predictions DIR/<video>/<exp_id>/<frame>.png`` (nonzero = object; the layout
the official scripts and ``--save-masks`` write).  Per expression: J, F and J&F of
:mod:`peanut_jax.metrics.jf` over all frames of the video.  The headline ``J``, ``F``, ``JF`` of the
JSON are the dataset's protocol (``per_expression_mean`` is always the plain mean):

* ``synthetic``: held-out clips of :func:`peanut_jax.data.referring.referring_clip`, seeds
  ``(--eval-seed, 1, i)`` for ``i < --num-clips`` (the trainers' held-out stream; training draws
  4-tuples ``(seed, 0, step, row)``), ``distractors=True``.  ``--eval-seed``, ``--num-frames``,
  ``--height``, ``--width`` and ``--num-objects`` not given come from the ``data`` block of the run's
  ``config.json`` when ``--checkpoint`` is a ``train.py`` workdir of a synthetic run (the JSON's
  ``settings.from_run_config`` lists them), else the defaults 1000, 8, 128, 128, 3.  Headline = mean
  over expressions.  Also:

  - ``baselines.random_object``: the expected J&F of predicting the ground truth of an object of the
    clip chosen uniformly at random (the target itself included), i.e. per expression the mean over
    the clip's objects j of J&F(gt_j, gt_target) -- exact, no sampling;
  - ``baselines.union_of_objects``: predicting the union of all objects of the clip;
  - ``swapped_sentences``: the sentences permuted between the objects (object k is scored with the
    masks of the sentence of object (k + 1) mod N, a derangement); a model that reads the text drops
    to (below) the baselines here;
  - ``subsets``: all of these per object subset (``easy``, ``colour-ambiguous``,
    ``appearance-identical``, see :mod:`peanut_jax.data.referring`).

* ``ref_davis17`` (TFDS ``ref_davis17``, split ``valid``): SAMWISE's ``inference_davis.py``.  The 4
  expressions of each object (annotator 1 first-frame / full-video, annotator 2 ...) are ordered
  object-major; for each of the 4 "annotators" a, one label map per frame from the expressions
  ``o * 4 + a`` (the object with the highest probability >= 0.5; background 0.1, so below 0.5 is
  none; ties to the lower object), scored with davis2017-evaluation's ``unsupervised`` task: ground
  truth objects 1..max(label of frame 0), void = 255, all frames, predicted objects matched to them by
  the Hungarian assignment on J&F; J, F = means over all ground-truth objects.  Headline = the mean of
  the 4 annotators (``davis17_unsupervised.per_annotator``).  Per-expression entries score each
  expression's own mask against its object (void as above).
* ``mevis_valid_u`` (TFDS ``mevis``, split ``valid_u``): ``inference_mevis.py``: target = union of
  the expression's objects, no void; the official mean is over a dict keyed by the expression *text*
  (a later expression with the same text replaces an earlier one); that is the headline,
  ``per_expression_mean`` counts every expression.
* ``ref_youtube_vos`` (split ``valid``) and ``mevis_valid``: no ground truth; ``--submission
  out.zip`` writes the server's archive: ``Annotations/<video>/<exp_id>/<frame>.png``
  (Ref-YouTube-VOS) or ``<video>/<exp_id>/<frame>.png`` (MeViS, zipped from inside ``Annotations``),
  0/255 grey PNGs.

Outputs are written under temporary names and renamed when complete (the JSON ``--out
DIR/rvos_<dataset>.json``, the zip); ``--save-masks`` writes each PNG atomically.  Errors are one line
(``error: ...``) with exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import pathlib
import sys
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from peanut_jax.metrics.jf import f_measure, j_and_f, jaccard

__all__ = [
    "DATASETS",
    "DavisLabelMaps",
    "EVAL_STREAM",
    "VideoItem",
    "davis_unsupervised",
    "evaluate",
    "main",
    "read_prediction",
    "synthetic_settings",
    "synthetic_videos",
    "tfds_videos",
]

# the held-out stream of the trainers (peanut_jax.train.batching.EVAL_STREAM; the pipeline does not
# import the trainer, tests check that the two agree)
EVAL_STREAM = 1
DEFAULT_EVAL_SEED = 1000  # every configs/*.py uses data.eval_seed = 1000
#: the synthetic clip settings (flag = key with dashes; also read from a train.py run's config.json data block)
SYNTHETIC_DEFAULTS = {"eval_seed": DEFAULT_EVAL_SEED, "num_frames": 8, "height": 128, "width": 128, "num_objects": 3}

#: --dataset -> (TFDS builder, split, has ground truth, default checkpoint)
DATASETS = {
    "synthetic": (None, None, True, None),
    "ref_davis17": ("ref_davis17", "valid", True, "samwise_ytvos"),
    "mevis_valid_u": ("mevis", "valid_u", True, "samwise_mevis"),
    "ref_youtube_vos": ("ref_youtube_vos", "valid", False, "samwise_ytvos"),
    "mevis_valid": ("mevis", "valid", False, "samwise_mevis"),
}
SUBMISSION_PREFIX = {"ref_youtube_vos": "Annotations/", "mevis_valid": ""}
DAVIS_ANNOTATORS = 4
DAVIS_VOID = 255


# ------------------------------------------------------------------------------------------ data
def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


@dataclasses.dataclass
class VideoItem:
    """One video and its expressions.  ``expressions``: dicts with ``exp_id`` and ``exp`` (plus
    dataset fields: ``obj_ids``, ``subset``); ``frames()`` -> (T, H, W, 3) uint8; ``target(e)`` ->
    (T, H, W) bool of expression e (None: no ground truth); ``void()`` -> (T, H, W) bool or None;
    ``labels()`` -> (T, H, W) object ids with void cleared (Ref-DAVIS17)."""

    video_id: str
    frame_names: list[str]
    height: int
    width: int
    expressions: list[dict]
    frames: Callable[[], np.ndarray]
    target: Callable[[int], np.ndarray] | None = None
    void: Callable[[], np.ndarray | None] = lambda: None
    labels: Callable[[], np.ndarray] | None = None
    info: dict = dataclasses.field(default_factory=dict)


def synthetic_videos(
    num_clips: int = 200,
    *,
    eval_seed: int = DEFAULT_EVAL_SEED,
    num_frames: int = 8,
    height: int = 128,
    width: int = 128,
    num_objects: int = 3,
) -> Iterator[VideoItem]:
    """The held-out synthetic referring clips (seeds ``(eval_seed, EVAL_STREAM, i)``), one
    :class:`VideoItem` each; expression k is object k's sentence (``exp_id`` = ``str(k)``)."""
    from peanut_jax.data.referring import referring_clip

    if num_clips < 1:
        raise ValueError(f"--num-clips must be >= 1, got {num_clips}")
    for i in range(num_clips):
        clip, sentences, targets, info = referring_clip(
            (int(eval_seed), EVAL_STREAM, i), num_frames, height, width, num_objects, True, return_info=True
        )
        exprs = [
            {"exp_id": str(k), "exp": s, "subset": info["subsets"][k], "obj_ids": [k]} for k, s in enumerate(sentences)
        ]
        yield VideoItem(
            video_id=f"clip_{i:04d}",
            frame_names=[f"{t:05d}" for t in range(clip.shape[0])],
            height=int(clip.shape[1]),
            width=int(clip.shape[2]),
            expressions=exprs,
            frames=lambda clip=clip: clip,
            target=lambda e, targets=targets: targets[e],
            info={"targets": targets, "seed": [int(eval_seed), EVAL_STREAM, i]},
        )


def _open_split(builder: str, split: str, data_dir):
    """The ``tfds.data_source`` of a built RVOS split; a one-line error with the build command if it
    is not built."""
    try:
        import tensorflow_datasets as tfds  # noqa: F401

        from peanut_jax.data.tfds import rvos
    except ImportError as e:
        raise ValueError(f"reading --dataset needs tensorflow_datasets and array_record ({e})") from None
    cls = rvos.BUILDERS[builder]
    data_dir = None if data_dir is None else os.fspath(pathlib.Path(data_dir).expanduser())
    where = f"--data-dir {data_dir}" if data_dir else "the default TFDS data_dir"
    how = (
        f"python -c \"from peanut_jax.data.tfds.rvos import build; build('{builder}', 'MANUAL_DIR', "
        f"'{data_dir or 'DATA_DIR'}')\" (layout: peanut_jax.data.tfds.rvos)"
    )
    if data_dir is not None and not pathlib.Path(data_dir).is_dir():
        raise FileNotFoundError(f"--data-dir {data_dir}: not a folder")
    if data_dir is not None and not (pathlib.Path(data_dir) / builder).is_dir():
        raise FileNotFoundError(f"{builder} is not built in {where}; needs the TFDS dataset built: {how}")
    b = cls(data_dir=data_dir) if data_dir else cls()
    if not b.is_prepared():
        raise FileNotFoundError(f"{builder} is not built in {where}; needs the TFDS dataset built: {how}")
    if split not in b.info.splits:
        raise ValueError(f"{builder} in {where} has no split {split!r} (built: {', '.join(sorted(b.info.splits))})")
    return b.as_data_source(split)


def tfds_videos(dataset: str, data_dir=None) -> Iterator[VideoItem]:
    """The videos of a built TFDS split (``dataset`` a key of :data:`DATASETS` other than synthetic)."""
    from peanut_jax.data.tfds import rvos
    from peanut_jax.data.tfds.inpainting import decode_frames, decode_masks

    builder, split, has_gt, _ = DATASETS[dataset]
    source = _open_split(builder, split, data_dir)
    if len(source) == 0:
        raise ValueError(f"{builder} split {split!r} is empty")
    for r in range(len(source)):
        rec = source[r]
        vid = _text(rec["video_id"])
        exprs = rvos.expressions(rec)
        cache: dict = {}

        def labels(rec=rec, cache=cache):
            if "labels" not in cache:
                lab = decode_masks(rec["masks"])
                cache["void"] = lab == DAVIS_VOID
                cache["labels"] = np.where(cache["void"], 0, lab)
            return cache["labels"]

        def void(labels=labels, cache=cache):
            if dataset != "ref_davis17":
                return None
            labels()
            return cache["void"]

        def target(e, rec=rec, exprs=exprs, labels=labels):
            if dataset == "ref_davis17":
                return np.isin(labels(), exprs[e]["obj_ids"])
            return rvos.target_masks(rec, e).astype(bool)

        yield VideoItem(
            video_id=vid,
            frame_names=[_text(n) for n in rec["frame_names"]],
            height=int(rec["height"]),
            width=int(rec["width"]),
            expressions=exprs,
            frames=lambda rec=rec: decode_frames(rec["frames"]),
            target=target if has_gt else None,
            void=void,
            labels=labels if dataset == "ref_davis17" else None,
        )


# ----------------------------------------------------------------------------------- mask sources
class _PaddedTokenizer:
    """The tokenizer with the text length rounded up to a multiple of 16 (fewer compiled shapes;
    padded keys are masked, so the masks are the same)."""

    def __init__(self, tok, limit: int):
        self.tok, self.limit = tok, int(limit)

    def encode(self, s):
        return self.tok.encode(s)

    def __call__(self, prompts):
        longest = max(len(self.tok.encode(p)) for p in prompts)
        return self.tok(prompts, pad_to=max(longest, min(-(-longest // 16) * 16, self.limit)))


class ModelMasks:
    """Masks from SAMWISE: ``(module, variables)``, a tokenizer; ``masks(video, chunk)`` ->
    (bool masks (P, T, H, W), float32 probabilities (P, T, H, W))."""

    def __init__(self, module, variables, tokenizer, *, threshold=0.5, use_cme=None, clip_window=8):
        from peanut_jax.pipeline.samwise import SAMWISEPredictor

        cfg = module.cfg
        if use_cme is None:
            use_cme = "conditional_memory_encoder" in variables["params"]
        limit = min(tokenizer.max_tokens, cfg.max_positions - 2)
        self.vocab_size, self.limit, self.tok = cfg.vocab_size, limit, tokenizer
        self.predictor = SAMWISEPredictor(
            module,
            variables,
            _PaddedTokenizer(tokenizer, limit),
            threshold=threshold,
            use_cme=use_cme,
            clip_window=clip_window,
        )
        self.use_cme = bool(use_cme)

    def check(self, video: VideoItem, sentences: Sequence[str]) -> None:
        for s in sentences:
            ids = self.tok.encode(s)
            if len(ids) > self.limit:
                raise ValueError(f"video {video.video_id!r}: {s!r} is {len(ids)} tokens, the model takes {self.limit}")
            if max(ids) >= self.vocab_size:
                raise ValueError(
                    f"--tokenizer: token id {max(ids)} of {s!r} is outside the model's vocabulary of "
                    f"{self.vocab_size}; the tokenizer does not belong to this checkpoint"
                )

    def masks(self, video: VideoItem, frames: np.ndarray, chunk: Sequence[int], need_probs: bool = False):
        """(masks (P, T, H, W) bool, probabilities (P, T, H, W) float32 or None) of the expressions
        ``chunk`` of ``video``, clip by clip (only the masks of the whole video are kept)."""
        from scipy.special import expit

        sentences = [video.expressions[e]["exp"] for e in chunk]
        self.check(video, sentences)
        pred = self.predictor
        state = pred.init_state(sentences, video.height, video.width)
        masks, probs = [], []
        for t in range(0, len(frames), pred.clip_window):
            logits = pred.segment_clip(state, frames[t : t + pred.clip_window])
            masks.append(pred.masks(logits))
            if need_probs:
                probs.append(expit(logits.astype(np.float32)))  # float32, as the official torch sigmoid
        return np.concatenate(masks, axis=1), (np.concatenate(probs, axis=1) if need_probs else None)


def read_prediction(root: pathlib.Path, video: str, exp_id: str, frame: str, hw: tuple[int, int]) -> np.ndarray:
    """(H, W) bool of ``root/<video>/<exp_id>/<frame>.png`` (nonzero = object); one-line errors
    naming the video, expression and frame."""
    from PIL import Image

    path = root / video / exp_id / f"{frame}.png"
    where = f"video {video!r} expression {exp_id!r} frame {frame!r}"
    if not path.is_file():
        raise FileNotFoundError(f"--predictions: {path} missing ({where})")
    try:
        with Image.open(path) as img:
            img.load()
            arr = np.asarray(img)
    except (OSError, ValueError) as e:
        raise ValueError(f"--predictions: {path}: cannot read the mask ({e}; {where})") from None
    if arr.shape[:2] != tuple(hw):
        raise ValueError(
            f"--predictions: {path} is {arr.shape[0]}x{arr.shape[1]}, the video is {hw[0]}x{hw[1]} ({where})"
        )
    return (arr != 0).any(-1) if arr.ndim == 3 else arr != 0


class SavedMasks:
    """Masks read from ``--predictions DIR``.  Their probability is the binary mask, so where two
    objects' masks overlap, Ref-DAVIS17's label maps give the pixel to the lower object."""

    def __init__(self, root):
        self.root = pathlib.Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"--predictions {root}: not a folder")

    def masks(self, video: VideoItem, frames, chunk: Sequence[int], need_probs: bool = False):
        hw = (video.height, video.width)
        out = np.stack(
            [
                np.stack(
                    [
                        read_prediction(self.root, video.video_id, video.expressions[e]["exp_id"], f, hw)
                        for f in video.frame_names
                    ]
                )
                for e in chunk
            ]
        )
        return out, (out.astype(np.float32) if need_probs else None)


# ------------------------------------------------------------------------------------------ writers
def _png_bytes(mask: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), "L").save(buf, format="PNG")
    return buf.getvalue()


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# -------------------------------------------------------------------------------------------- scores
def _jf(entries: Sequence[dict]) -> dict:
    """J, F means and JF = (J + F) / 2 of per-sequence ``{"J", "F"}`` dicts."""
    if not entries:
        return {"J": None, "F": None, "JF": None}
    j = float(np.mean([e["J"] for e in entries]))
    f = float(np.mean([e["F"] for e in entries]))
    return {"J": j, "F": f, "JF": (j + f) / 2}


def davis_unsupervised(pred_labels: np.ndarray, gt_labels: np.ndarray, void: np.ndarray | None) -> list[dict]:
    """davis2017-evaluation's ``unsupervised`` task for one sequence: predicted objects 1..max(pred)
    and ground-truth objects 1..max(gt frame 0) (both (T, H, W) label maps, void cleared), matched by
    the Hungarian assignment on mean J&F; returns ``[{"J", "F"}]``, one per ground-truth object
    (frame means of the matched pair; zero-padded predictions when fewer)."""
    from scipy.optimize import linear_sum_assignment

    n_gt = int(gt_labels[0].max())
    n_pred = max(int(pred_labels.max()), n_gt)
    if n_gt == 0:
        return []
    jm = np.zeros((n_pred, n_gt))
    fm = np.zeros((n_pred, n_gt))
    for p in range(n_pred):
        pm = pred_labels == p + 1
        for g in range(n_gt):
            gm = gt_labels == g + 1
            jm[p, g] = np.mean(jaccard(pm, gm, void))
            fm[p, g] = np.mean(f_measure(pm, gm, void=void))
    rows, cols = linear_sum_assignment(-(jm + fm) / 2)
    return [{"J": float(jm[r, c]), "F": float(fm[r, c])} for r, c in zip(rows, cols)]


@dataclasses.dataclass
class DavisLabelMaps:
    """Per-annotator label maps of one Ref-DAVIS17 video, built expression by expression: ``add(e,
    prob)`` with expression e = object * 4 + annotator; a pixel goes to the object with the highest
    probability >= 0.5 (ties: the lower object), as the argmax over [0.1 background, p if p >= 0.5 else 0]
    of ``inference_davis.py``."""

    best: np.ndarray  # (A, T, H, W) float32 best probability so far (0 = none)
    labels: np.ndarray  # (A, T, H, W) uint8

    @classmethod
    def new(cls, t, h, w):
        return cls(np.zeros((DAVIS_ANNOTATORS, t, h, w), np.float32), np.zeros((DAVIS_ANNOTATORS, t, h, w), np.uint8))

    def add(self, e: int, prob: np.ndarray) -> None:
        a, obj = e % DAVIS_ANNOTATORS, e // DAVIS_ANNOTATORS + 1
        take = (prob >= 0.5) & (prob > self.best[a])  # argmax with background 0.1; ties to the lower object
        self.best[a] = np.where(take, prob, self.best[a])
        self.labels[a] = np.where(take, obj, self.labels[a])


def _synthetic_extras(video: VideoItem, preds: np.ndarray, entries: list[dict]) -> None:
    """Baselines and the swapped-sentence control of one synthetic clip, into its entries."""
    gts = video.info["targets"]
    n = len(gts)
    union = np.any(gts, axis=0)
    pair = [[j_and_f(gts[j], gts[k]) for j in range(n)] for k in range(n)]  # pair[k][j]: gt_j scored as k
    for k, ent in enumerate(entries):
        ent["random_object"] = _jf(pair[k])
        ent["union_of_objects"] = j_and_f(union, gts[k])
        if n >= 2:
            src = (k + 1) % n
            ent["swapped"] = dict(j_and_f(preds[src], gts[k]), exp=video.expressions[src]["exp"])


# ---------------------------------------------------------------------------------------- the loop
def evaluate(
    dataset: str,
    videos,
    source,
    *,
    batch_prompts: int = 4,
    save_masks=None,
    submission=None,
    progress: bool = False,
    max_videos: int | None = None,
) -> dict:
    """Run ``source`` (:class:`ModelMasks` / :class:`SavedMasks`) over ``videos`` (:class:`VideoItem`)
    and score them (see the module docstring); returns the JSON dict.  ``save_masks``: a folder for
    ``<video>/<exp_id>/<frame>.png``; ``submission``: an open :class:`zipfile.ZipFile`."""
    if batch_prompts < 1:
        raise ValueError(f"--batch-prompts must be >= 1, got {batch_prompts}")
    if max_videos is not None and max_videos < 1:
        raise ValueError(f"--max-videos must be >= 1, got {max_videos}")
    has_gt = DATASETS[dataset][2]
    save_root = None if save_masks is None else pathlib.Path(save_masks).expanduser()
    prefix = SUBMISSION_PREFIX.get(dataset, "Annotations/")
    per_expression: list[dict] = []
    davis_rows: list[list[dict]] = [[] for _ in range(DAVIS_ANNOTATORS)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc=dataset, unit="video", leave=False, file=sys.stderr)
    n_videos = 0
    for video in videos:
        if max_videos is not None and n_videos >= max_videos:
            break
        n_videos += 1
        n_exp = len(video.expressions)
        if dataset == "ref_davis17" and n_exp % DAVIS_ANNOTATORS:
            raise ValueError(
                f"ref_davis17 video {video.video_id!r}: {n_exp} expressions, not {DAVIS_ANNOTATORS} per object"
            )
        frames = video.frames() if isinstance(source, ModelMasks) else None
        t = len(video.frame_names)
        davis = DavisLabelMaps.new(t, video.height, video.width) if dataset == "ref_davis17" and has_gt else None
        void = video.void() if has_gt else None
        entries, preds = [], []
        for start in range(0, n_exp, batch_prompts):
            chunk = list(range(start, min(start + batch_prompts, n_exp)))
            masks, probs = source.masks(video, frames, chunk, need_probs=davis is not None)
            for k, e in enumerate(chunk):
                exp = video.expressions[e]
                if save_root is not None or submission is not None:
                    for f, name in enumerate(video.frame_names):
                        data = _png_bytes(masks[k, f])
                        rel = f"{video.video_id}/{exp['exp_id']}/{name}.png"
                        if save_root is not None:
                            _write_atomic(save_root / rel, data)
                        if submission is not None:
                            submission.writestr(prefix + rel, data)
                ent = {"video": video.video_id, "exp_id": exp["exp_id"], "exp": exp["exp"]}
                if "subset" in exp:
                    ent["subset"] = exp["subset"]
                if davis is not None:
                    ent["annotator"] = e % DAVIS_ANNOTATORS
                    davis.add(e, probs[k])
                if has_gt:
                    ent.update(j_and_f(masks[k], video.target(e), void=void))
                entries.append(ent)
                if dataset == "synthetic":
                    preds.append(masks[k])
        if dataset == "synthetic":
            _synthetic_extras(video, np.stack(preds), entries)
        if davis is not None:
            gt = video.labels()
            for a in range(DAVIS_ANNOTATORS):
                davis_rows[a].extend(davis_unsupervised(davis.labels[a], gt, void))
        per_expression.extend(entries)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if n_videos == 0:
        raise ValueError(f"--dataset {dataset}: no videos")
    res = {
        "dataset": dataset,
        "split": DATASETS[dataset][1],
        "num_videos": n_videos,
        "num_expressions": len(per_expression),
    }
    if not has_gt:
        return res | {"J": None, "F": None, "JF": None, "per_expression": per_expression}
    res["per_expression_mean"] = _jf(per_expression)
    if dataset == "ref_davis17":
        rows = [_jf(r) for r in davis_rows]
        head = {k: float(np.mean([r[k] for r in rows])) for k in ("J", "F", "JF")}
        res["protocol"] = "davis2017 unsupervised task per annotator (SAMWISE inference_davis.py), mean of 4"
        res["davis17_unsupervised"] = {"per_annotator": rows, **head}
    elif dataset == "mevis_valid_u":
        by_text = {e["exp"]: e for e in per_expression}  # inference_mevis.py: out_dict[exp] = [j, f]
        head = _jf(list(by_text.values()))
        res["protocol"] = "per expression, mean over distinct expression texts (SAMWISE inference_mevis.py)"
        res["num_distinct_texts"] = len(by_text)
    else:
        head = res["per_expression_mean"]
        res["protocol"] = "per expression, mean over expressions"
        _synthetic_summary(res, per_expression)
    res.update(head)
    res["per_expression"] = per_expression
    return res


def _synthetic_summary(res: dict, per_expression: list[dict]) -> None:
    from peanut_jax.data.referring import SUBSETS

    res["baselines"] = {
        "random_object": dict(
            _jf([e["random_object"] for e in per_expression]),
            definition="expected J&F of the ground truth of a uniformly chosen object of the clip (target included)",
        ),
        "union_of_objects": dict(
            _jf([e["union_of_objects"] for e in per_expression]),
            definition="the union of all objects' ground truth",
        ),
    }
    swapped = [e["swapped"] for e in per_expression if "swapped" in e]
    res["swapped_sentences"] = dict(
        _jf(swapped),
        count=len(swapped),
        definition="object k scored with the masks of the sentence of object (k + 1) mod N of its clip",
    )
    res["subsets"] = {}
    for s in SUBSETS:
        ents = [e for e in per_expression if e.get("subset") == s]
        res["subsets"][s] = {
            "count": len(ents),
            **_jf(ents),
            "random_object": _jf([e["random_object"] for e in ents]),
            "union_of_objects": _jf([e["union_of_objects"] for e in ents]),
            "swapped_sentences": _jf([e["swapped"] for e in ents if "swapped" in e]),
        }


def _fmt(x) -> str:
    return "   -  " if x is None else f"{x:6.3f}"


def table(res: dict) -> str:
    """A short text summary of :func:`evaluate`'s result."""
    head = f"{res['dataset']}: {res['num_videos']} videos, {res['num_expressions']} expressions"
    if res.get("JF") is None:
        return head + " (no ground truth)"
    lines = [head, f"{'':22s}{'n':>5s}  {'J&F':>6s} {'J':>6s} {'F':>6s}"]
    lines.append(f"{'all (' + res['dataset'] + ')':22s}{res['num_expressions']:5d}  " + _row(res))
    if "davis17_unsupervised" in res:
        for a, r in enumerate(res["davis17_unsupervised"]["per_annotator"]):
            lines.append(f"{'  annotator ' + str(a):22s}{'':5s}  " + _row(r))
    if "num_distinct_texts" in res:
        lines.append(f"{'  every expression':22s}{res['num_expressions']:5d}  " + _row(res["per_expression_mean"]))
    if "subsets" in res:
        b = res["baselines"]
        lines.append(f"{'  random object':22s}{'':5s}  " + _row(b["random_object"]))
        lines.append(f"{'  union of objects':22s}{'':5s}  " + _row(b["union_of_objects"]))
        lines.append(
            f"{'  swapped sentences':22s}{res['swapped_sentences']['count']:5d}  " + _row(res["swapped_sentences"])
        )
        lines.append(f"{'subset':22s}{'n':>5s}  {'J&F':>6s} {'random':>6s} {'union':>6s} {'swap':>6s}")
        for s, r in res["subsets"].items():
            lines.append(
                f"{s:22s}{r['count']:5d}  {_fmt(r['JF'])} {_fmt(r['random_object']['JF'])} "
                f"{_fmt(r['union_of_objects']['JF'])} {_fmt(r['swapped_sentences']['JF'])}"
            )
    return "\n".join(lines)


def _row(r: dict) -> str:
    return f"{_fmt(r['JF'])} {_fmt(r['J'])} {_fmt(r['F'])}"


# --------------------------------------------------------------------------------------------- CLI
class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        self.exit(2, f"error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m peanut_jax.pipeline.evaluate_rvos",
        description="J, F and J&F of text-prompted video segmentation (SAMWISE) per expression.",
    )
    p.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
    p.add_argument(
        "--checkpoint",
        default=None,
        metavar="SPEC",
        help="SAMWISE weights: registry name, official .pth, exported folder or train.py workdir "
        "(default: samwise_ytvos for ref_davis17 / ref_youtube_vos, samwise_mevis for MeViS; required for synthetic)",
    )
    p.add_argument("--predictions", default=None, metavar="DIR", help="score DIR/<video>/<exp_id>/<frame>.png instead")
    p.add_argument(
        "--tokenizer",
        default=None,
        metavar="SPEC",
        help="tokenizer files (registry name or folder; default: gpt2_bpe, for synthetic the bundled synthetic BPE)",
    )
    p.add_argument("--data-dir", default=None, metavar="DIR", help="TFDS data_dir of the built datasets")
    p.add_argument("--out", default=None, metavar="DIR", help="write DIR/rvos_<dataset>.json")
    p.add_argument("--save-masks", default=None, metavar="DIR", help="write DIR/<video>/<exp_id>/<frame>.png")
    p.add_argument("--submission", default=None, metavar="ZIP", help="write the evaluation server's zip")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--no-cme", action="store_true", help="switch the conditional memory encoder off")
    p.add_argument("--clip-window", type=int, default=8)
    p.add_argument("--batch-prompts", type=int, default=4, help="expressions of a video per batched pass")
    p.add_argument("--max-videos", type=int, default=None, help="only the first N videos")
    g = p.add_argument_group(
        "synthetic",
        "clip settings: each flag given, else (--checkpoint a train.py workdir of a synthetic run) the "
        "data block of its config.json, else the default shown",
    )
    g.add_argument("--num-clips", type=int, default=200)
    for key, default in SYNTHETIC_DEFAULTS.items():
        g.add_argument("--" + key.replace("_", "-"), type=int, default=None, help=f"default {default}")
    p.add_argument("--quiet", action="store_true")
    return p


def _tokenizer(spec, dataset: str):
    if spec is None and dataset == "synthetic":
        from peanut_jax.data.referring import synthetic_tokenizer

        return synthetic_tokenizer()
    from peanut_jax.pipeline.text_masks import load_tokenizer

    return load_tokenizer(spec, flag="--tokenizer")


def synthetic_settings(args) -> list[str]:
    """Fill the synthetic clip settings of ``args`` (:data:`SYNTHETIC_DEFAULTS`) left unset (None):
    from the ``data`` block of the run's ``config.json`` when ``--checkpoint`` is a ``train.py``
    workdir (or one of its checkpoint folders) of a run on synthetic clips, else the defaults.
    Returns the keys taken from the run's config."""
    from peanut_jax.checkpoints.export import EXPORT_CONFIG
    from peanut_jax.checkpoints.load import workdir_config

    data = {}
    path = pathlib.Path(args.checkpoint).expanduser() if args.checkpoint and args.predictions is None else None
    if path is not None and path.is_dir() and not (path / EXPORT_CONFIG).is_file():
        cfg = workdir_config(path) or {}
        block = cfg.get("data")
        if isinstance(block, dict) and block.get("source", "synthetic") == "synthetic":
            data = block
    taken = []
    for key, default in SYNTHETIC_DEFAULTS.items():
        if getattr(args, key) is not None:
            continue
        value = default
        if key in data:
            try:
                value = int(data[key])
            except (TypeError, ValueError):
                raise ValueError(
                    f"--checkpoint {args.checkpoint}: config.json data.{key}={data[key]!r} is not an integer"
                ) from None
            taken.append(key)
        setattr(args, key, value)
    return taken


def _run(args) -> dict:
    if args.dataset not in DATASETS:
        raise ValueError(f"--dataset {args.dataset}: unknown dataset; known: {', '.join(DATASETS)}")
    builder, split, has_gt, default_ckpt = DATASETS[args.dataset]
    if not 0.0 < args.threshold < 1.0:
        raise ValueError(f"--threshold must be in (0, 1), got {args.threshold}")
    for flag, value in (
        ("--batch-prompts", args.batch_prompts),
        ("--clip-window", args.clip_window),
        ("--max-videos", 1 if args.max_videos is None else args.max_videos),
    ):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if args.checkpoint is not None and args.predictions is not None:
        raise ValueError("give --checkpoint or --predictions, not both")
    if args.predictions is None and args.checkpoint is None and default_ckpt is None:
        raise ValueError(f"--dataset {args.dataset}: give --checkpoint SPEC (or --predictions DIR)")
    if not has_gt and args.submission is None and args.save_masks is None:
        raise ValueError(f"--dataset {args.dataset} has no ground truth: give --submission out.zip (or --save-masks)")
    if args.submission is not None and not str(args.submission).endswith(".zip"):
        raise ValueError(f"--submission {args.submission}: give a .zip file name")
    for flag, value in (("--save-masks", args.save_masks), ("--out", args.out)):
        if value is not None and pathlib.Path(value).expanduser().exists() and not pathlib.Path(value).is_dir():
            raise ValueError(f"{flag} {value}: exists and is not a folder")
    if args.save_masks is not None and args.predictions is not None:
        if pathlib.Path(args.save_masks).resolve() == pathlib.Path(args.predictions).resolve():
            raise ValueError("--save-masks and --predictions are the same folder")
    if args.predictions is not None:
        source = SavedMasks(args.predictions)
    if args.dataset == "synthetic":
        from_run = synthetic_settings(args)
        videos = synthetic_videos(
            args.num_clips,
            eval_seed=args.eval_seed,
            num_frames=args.num_frames,
            height=args.height,
            width=args.width,
            num_objects=args.num_objects,
        )
    else:
        videos = tfds_videos(args.dataset, args.data_dir)
    videos = _first_then(videos)  # opens the dataset (errors) before the model loads
    if args.predictions is None:
        from peanut_jax.pipeline.text_masks import load_samwise

        tok = _tokenizer(args.tokenizer, args.dataset)
        module, variables = load_samwise(args.checkpoint or default_ckpt, flag="--checkpoint", progress=not args.quiet)
        if args.no_cme:
            use_cme = False
        else:
            use_cme = "conditional_memory_encoder" in variables["params"]
        source = ModelMasks(
            module, variables, tok, threshold=args.threshold, use_cme=use_cme, clip_window=args.clip_window
        )
    zf, zip_tmp = None, None
    if args.submission is not None:
        target = pathlib.Path(args.submission).expanduser()
        if not target.parent.is_dir():
            raise FileNotFoundError(f"--submission {args.submission}: folder {target.parent} does not exist")
        zip_tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        zf = zipfile.ZipFile(zip_tmp, "w", zipfile.ZIP_DEFLATED)
    try:
        res = evaluate(
            args.dataset,
            videos,
            source,
            batch_prompts=args.batch_prompts,
            save_masks=args.save_masks,
            submission=zf,
            progress=not args.quiet,
            max_videos=args.max_videos,
        )
        if zf is not None:
            zf.close()
            os.replace(zip_tmp, target)
            res["submission"] = str(target)
    except BaseException:
        if zf is not None:
            zf.close()
            zip_tmp.unlink(missing_ok=True)
        raise
    res["checkpoint"] = None if args.predictions is not None else str(args.checkpoint or default_ckpt)
    res["predictions"] = args.predictions
    res["settings"] = {
        "threshold": args.threshold,
        "clip_window": args.clip_window,
        "batch_prompts": args.batch_prompts,
        "use_cme": None if args.predictions is not None else source.use_cme,
    }
    if args.dataset == "synthetic":
        res["settings"].update(
            num_clips=args.num_clips,
            eval_seed=args.eval_seed,
            seeds=f"({args.eval_seed}, {EVAL_STREAM}, i) for i < {args.num_clips}",
            num_frames=args.num_frames,
            height=args.height,
            width=args.width,
            num_objects=args.num_objects,
            from_run_config=from_run,
        )
    return res


def _first_then(it):
    """``it`` with its first item already drawn (so opening errors happen now)."""
    it = iter(it)
    try:
        first = next(it)
    except StopIteration:
        return iter(())

    def gen():
        yield first
        yield from it

    return gen()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line (see the module docstring); returns the exit status (0, or 2 on bad input)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    from peanut_jax.checkpoints.registry import DownloadError
    from peanut_jax.text import TokenizerFileError

    try:
        res = _run(args)
        if args.out is not None:
            from peanut_jax.pipeline.outputs import write_json

            out = pathlib.Path(args.out).expanduser()
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / f"rvos_{args.dataset}.json", res)
    except (ValueError, FileNotFoundError, DownloadError, TokenizerFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(res))
    if args.out is not None:
        print(f"wrote {pathlib.Path(args.out) / f'rvos_{args.dataset}.json'}")
    if res.get("submission"):
        print(f"wrote {res['submission']} (upload it to the evaluation server)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
