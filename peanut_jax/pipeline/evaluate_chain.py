"""The chain on the hard-case presets: text -> mask -> erase (-> upscale), measured against exact ground truth.

``python -m peanut_jax.pipeline.evaluate_chain --preset NAME [--preset NAME ...] [--num-clips N]
[--masks text|gt] [--text-checkpoint SPEC] [--tokenizer SPEC] [--erase-checkpoint SPEC]
[--upscale FACTOR] [--upscale-checkpoint SPEC] [--out DIR]``

Each clip of a preset (:mod:`peanut_jax.data.hardcases`, seeds ``--seed`` .. ``--seed + N - 1``) is
rendered frame by frame into the chain built by :func:`~peanut_jax.pipeline.build.build_chain`; the
masks come from SAMWISE prompted with the target's sentence
(:class:`~peanut_jax.pipeline.text_masks.TextPromptMasks`) or, with ``--masks gt``, from the ground
truth (the erase stage alone).  Every frame is measured as it leaves the erase stage, so memory is
flat in the clip length.  Per clip, and averaged per preset:

* ``J`` / ``F`` / ``JF``: the masks against the target's mask (:mod:`peanut_jax.metrics.jf`, the
  DAVIS-2017 rules: frames where the target is out of the picture count, 1 if the mask is empty too);
* ``psnr_region`` / ``ssim_region``: the erased frame against the clean background (the clip
  rendered without the target) inside the target's mask dilated as the eraser dilates its masks
  (:func:`~peanut_jax.pipeline.erase_windows.process_mask`), per frame (PSNR capped at 100 dB, SSIM
  on the region's box grown by 8 px, as the demo), averaged over the frames where the target is
  visible; ``*_input`` the same for the unprocessed frames (the object still there);
* ``ewarp``: the warping error (:func:`peanut_jax.metrics.warping_error`, L1, [0, 1] units) of the
  erased frames along the exact background flow, pixels that the other (moving) objects cover in
  either frame of a pair excluded; ``ewarp_input`` / ``ewarp_clean`` the same for the input and for
  the clean background (the floor: bilinear warping of a sub-pixel pan).
  With ``--upscale`` the upscale stage runs on the erased frames too (its time and output size are
  reported; the metrics are of the erase stage's output, where the ground truth is exact).

The results go to ``DIR/evaluate_chain.json`` and ``DIR/evaluate_chain.md`` (each written to a
temporary name, then renamed) and the table is printed.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time

import numpy as np

from peanut_jax.data.hardcases import PRESETS, HardCase, make_case
from peanut_jax.pipeline.chain import Chain
from peanut_jax.pipeline.outputs import write_json
from peanut_jax.pipeline.sources import Frame, StreamInfo
from peanut_jax.pipeline.telemetry import MemoryMonitor, Meter

__all__ = ["JSON_NAME", "TABLE_NAME", "CaseMeasure", "evaluate_case", "format_table", "main", "run"]

JSON_NAME = "evaluate_chain.json"
TABLE_NAME = "evaluate_chain.md"
DEFAULT_ERASE = "erase_demo"
DEFAULT_UPSCALE = "upscale_demo"
_MEANS = (
    "J",
    "F",
    "JF",
    "psnr_region",
    "ssim_region",
    "psnr_region_input",
    "ssim_region_input",
    "ewarp",
    "ewarp_input",
    "ewarp_clean",
    "seconds_per_frame",
)


class CaseMeasure:
    """Per-frame accumulators of one clip (the metrics of the module docstring): ``masks(pred, gt)``
    per frame, ``erased(out_u8, rec)`` per erased frame (``rec`` a
    :class:`~peanut_jax.data.hardcases.CaseFrame`), then ``result()``.  ``flow_xy``: the background's
    flow; ``size``: the clip's (H, W); ``psize``: the erase stage's processing size; ``dilation``: its
    mask dilation."""

    def __init__(self, flow_xy: np.ndarray, size: tuple[int, int], psize: tuple[int, int], dilation: int):
        self.size, self.psize, self.dilation = size, psize, int(dilation)
        sy, sx = psize[0] / size[0], psize[1] / size[1]
        fx, fy = float(flow_xy[0]) * sx, float(flow_xy[1]) * sy
        self.flow = np.broadcast_to(np.array([fx, fy], np.float32), (1, *psize, 2))
        self.reach = int(math.ceil(math.hypot(fx, fy))) + 1  # the other objects' masks grown this much
        self.j, self.f = [], []
        self.per_frame = {k: [] for k in ("psnr_region", "ssim_region", "psnr_region_input", "ssim_region_input")}
        self.ewarp = {"ewarp": [], "ewarp_input": [], "ewarp_clean": []}
        self.prev = None

    def masks(self, pred: np.ndarray, gt: np.ndarray) -> None:
        from peanut_jax.metrics import f_measure, jaccard

        self.j.append(jaccard(pred, gt))
        self.f.append(f_measure(pred, gt))

    def erased(self, out_u8: np.ndarray, rec) -> None:
        from peanut_jax.data.masks import dilate_masks
        from peanut_jax.metrics import psnr, ssim, warping_error
        from peanut_jax.pipeline.erase_windows import process_mask, resize_frame

        ps = self.psize
        clean = resize_frame(rec.clean, ps).astype(np.float32) / 255.0
        inp = resize_frame(rec.image, ps).astype(np.float32) / 255.0
        out = np.asarray(out_u8).astype(np.float32) / 255.0
        if out.shape[:2] != tuple(ps):
            raise ValueError(f"the erase stage returned {out.shape[:2]} frames, expected {tuple(ps)}")
        region = process_mask(rec.mask, ps, self.dilation)
        if region.any():
            for name, img in (("", out), ("_input", inp)):
                self.per_frame["psnr_region" + name].append(
                    psnr(img, clean, mask=region, reduction="all", mse_floor=1e-10)
                )
                self.per_frame["ssim_region" + name].append(
                    ssim(img, clean, mask=region, box_margin=8, reduction="all")
                )
        others = process_mask(rec.others, ps, 0)
        if self.prev is not None:
            p_out, p_inp, p_clean, p_others = self.prev
            occ = dilate_masks((p_others | others)[None], self.reach)
            for name, a, b in (("ewarp", p_out, out), ("ewarp_input", p_inp, inp), ("ewarp_clean", p_clean, clean)):
                e = float(warping_error(np.stack([a, b]), self.flow, occlusion=occ, reduce="none")[0])
                if np.isfinite(e):
                    self.ewarp[name].append(e)
        self.prev = (out, inp, clean, others)

    def result(self) -> dict:
        def mean(v):
            v = [x for x in v if np.isfinite(x)]
            return float(np.mean(v)) if v else float("nan")

        j, f = mean(self.j), mean(self.f)
        out = {"J": j, "F": f, "JF": (j + f) / 2}
        out.update({k: mean(v) for k, v in self.per_frame.items()})
        out.update({k: mean(v) for k, v in self.ewarp.items()})
        out["frames_visible"] = len(self.per_frame["psnr_region"])
        return out


def evaluate_case(
    case: HardCase, chain: Chain, masks: str = "text", text_model=None, tokenizer=None, predictor=None
) -> dict:
    """Run ``chain`` (erase first) on one hard case and measure it (module docstring).

    ``masks``: ``'text'`` (SAMWISE prompted with the case's sentence: ``predictor``, a
    :class:`~peanut_jax.pipeline.samwise.SAMWISEPredictor` shared by the cases so that it compiles
    once, or ``text_model`` = (module, variables) with ``tokenizer`` a
    :class:`~peanut_jax.text.RobertaTokenizer`) or ``'gt'``.
    Returns the case's description with the metrics, ``frames``, ``seconds`` / ``seconds_per_frame``
    (streaming, after :meth:`Chain.warmup`, whose time is ``compile_seconds``), per-stage times,
    ``frames_out`` / ``size_out`` (the chain's last stage) and ``peak_rss_bytes`` (during streaming)."""
    from peanut_jax.data.prefetch import Prefetcher

    if masks not in ("text", "gt"):
        raise ValueError(f"--masks must be 'text' or 'gt', got {masks!r}")
    erase = chain.stages[0]
    if erase.name != "erase":
        raise ValueError("the chain must start with the erase stage")
    info = StreamInfo(len(case), case.height, case.width, case.fps)
    infos = chain.plan(info)
    source = None
    if masks == "text":
        from peanut_jax.pipeline.text_masks import TextPromptMasks

        if predictor is not None:
            source = TextPromptMasks([case.sentence], predictor=predictor)
        elif text_model is None or tokenizer is None:
            raise ValueError("masks='text' needs a predictor, or text_model and tokenizer")
        else:
            source = TextPromptMasks(
                [case.sentence], module=text_model[0], variables=text_model[1], tokenizer=tokenizer
            )
        source.prepare(info)
    meas = CaseMeasure(case.flow_forward, (case.height, case.width), erase.psize(info), erase.config.mask_dilation)
    pending: dict[int, object] = {}

    def rendered():
        for rec in case.frames():
            pending[rec.index] = rec
            yield rec

    def records(reader):
        if source is None:
            for rec in reader:
                meas.masks(rec.mask, rec.mask)
                yield Frame(rec.image, rec.mask, rec.index)
            return
        recs = {}

        def images():
            for rec in reader:
                recs[rec.index] = rec
                yield rec.image

        for i, (frame, pred) in enumerate(source.attach(images())):
            meas.masks(pred, recs.pop(i).mask)
            yield Frame(frame, pred, i)

    def on_erased(i, image):
        meas.erased(image, pending.pop(i))

    warm = chain.warmup(info)
    meters: list[Meter] = []
    count, size_out = 0, None
    t0 = time.perf_counter()
    reader = None
    with MemoryMonitor() as mem:
        try:
            reader = Prefetcher(rendered(), chain.queue_size, name="hardcase")
            for fr in chain.stream(records(reader), infos, meters, False, {"erase": on_erased}):
                count += 1
                size_out = tuple(np.asarray(fr.image).shape[:2])
        finally:
            if reader is not None:
                reader.close()
            for m in meters:
                m.close()
    seconds = time.perf_counter() - t0
    out = case.describe()
    out.update(meas.result())
    out.update(
        frames=len(case),
        seconds=seconds,
        seconds_per_frame=seconds / max(1, len(case)),
        compile_seconds=float(warm["seconds"]),
        stages={m.name: {"frames": m.frames, "seconds": m.seconds} for m in meters},
        frames_out=count,
        size_out=list(size_out) if size_out else None,
        peak_rss_bytes=int(mem.peak_rss),
    )
    return out


def _mean(clips: list[dict]) -> dict:
    out = {}
    for k in _MEANS:
        v = [c[k] for c in clips if np.isfinite(c[k])]
        out[k] = float(np.mean(v)) if v else float("nan")
    out["frames"] = int(sum(c["frames"] for c in clips))
    out["peak_rss_bytes"] = int(max(c["peak_rss_bytes"] for c in clips))
    return out


def run(
    presets,
    *,
    num_clips: int = 1,
    seed: int = 0,
    masks: str = "text",
    text_checkpoint=None,
    tokenizer=None,
    erase_checkpoint=DEFAULT_ERASE,
    upscale: int | None = None,
    upscale_checkpoint=DEFAULT_UPSCALE,
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    log=None,
) -> dict:
    """Evaluate the chain on ``presets`` (names of :data:`~peanut_jax.data.hardcases.PRESETS`);
    returns ``{'settings', 'weights', 'presets': {name: {'mean', 'clips'}}}``.  Errors name the flag."""
    from peanut_jax.pipeline.build import build_chain, load_stage_model

    presets = list(presets)
    if not presets:
        raise ValueError("--preset: give at least one preset")
    for p in presets:
        if p not in PRESETS:
            raise ValueError(f"--preset {p!r}: unknown preset; choose from {', '.join(PRESETS)} (or all)")
    if num_clips < 1:
        raise ValueError(f"--num-clips must be >= 1, got {num_clips}")
    if seed < 0:
        raise ValueError(f"--seed must be >= 0, got {seed}")
    if masks not in ("text", "gt"):
        raise ValueError(f"--masks must be 'text' or 'gt', got {masks!r}")
    if masks == "text" and text_checkpoint is None:
        raise ValueError(
            "--text-checkpoint: give SAMWISE weights (registry name, official .pth or exported folder), "
            "or --masks gt to measure the erase stage alone"
        )
    for flag, v in (("--num-frames", num_frames), ("--height", height), ("--width", width)):
        if v is not None and v < (2 if flag == "--num-frames" else 32):
            raise ValueError(f"{flag} must be >= {2 if flag == '--num-frames' else 32}, got {v}")
    if upscale is not None and upscale < 2:
        raise ValueError(f"--upscale must be >= 2, got {upscale}")
    # every case is drawn (cheap: layouts only) before any model loads, so a bad size fails first
    cases = {
        p: [make_case(p, seed + k, num_frames=num_frames, height=height, width=width) for k in range(num_clips)]
        for p in presets
    }
    predictor = None
    weights = {}
    if masks == "text":
        from peanut_jax.pipeline.samwise import SAMWISEPredictor
        from peanut_jax.pipeline.text_masks import load_samwise, load_tokenizer

        tok = load_tokenizer(tokenizer if tokenizer is not None else _synthetic_bpe(), flag="--tokenizer")
        module, variables = load_samwise(text_checkpoint, flag="--text-checkpoint", progress=False)
        use_cme = "conditional_memory_encoder" in variables["params"]  # weights trained without it have none
        predictor = SAMWISEPredictor(module, variables, tok, use_cme=use_cme)
        weights["text"] = str(text_checkpoint)
    stages = ["erase"] + (["upscale"] if upscale else [])
    ckpts = {"erase": erase_checkpoint, "upscale": upscale_checkpoint}
    models = {s: load_stage_model(s, ckpts[s], progress=False, flag=f"--{s}-checkpoint") for s in stages}
    chain = build_chain(stages, models=models, upscale=upscale, progress=False)
    weights.update({s.name: s.weights for s in chain.stages})
    results = {}
    for p, clips in cases.items():
        done = []
        for case in clips:
            r = evaluate_case(case, chain, masks, predictor=predictor)
            done.append(r)
            if log:
                log(
                    f"{p} seed {case.seed}: J&F {r['JF']:.3f}, PSNR {r['psnr_region']:.2f} dB, "
                    f"SSIM {r['ssim_region']:.4f}, Ewarp {r['ewarp']:.4f} ({r['frames']} frames, "
                    f"{r['seconds']:.1f} s) {case.sentence!r}"
                )
        results[p] = {"mean": _mean(done), "clips": done}
    settings = dict(
        presets=presets,
        num_clips=num_clips,
        seed=seed,
        masks=masks,
        text_checkpoint=None if text_checkpoint is None else str(text_checkpoint),
        tokenizer=None if masks == "gt" else str(tokenizer if tokenizer is not None else _synthetic_bpe()),
        erase_checkpoint=str(erase_checkpoint),
        upscale=upscale,
        upscale_checkpoint=str(upscale_checkpoint) if upscale else None,
        num_frames=num_frames,
        height=height,
        width=width,
    )
    return {"settings": settings, "weights": weights, "presets": results}


def _synthetic_bpe():
    from peanut_jax.data.referring import SYNTHETIC_BPE_DIR

    return SYNTHETIC_BPE_DIR


def format_table(result: dict) -> str:
    """The per-preset means as a Markdown table."""
    head = (
        "| preset | clips | frames | size | masks | J&F | PSNR region dB (input) | SSIM region (input) "
        "| Ewarp (input / clean) | s/frame |"
    )
    lines = [head, "|" + "---|" * 10]
    masks = result["settings"]["masks"]
    for name, r in result["presets"].items():
        m, c0 = r["mean"], r["clips"][0]
        lines.append(
            f"| {name} | {len(r['clips'])} | {m['frames']} | {c0['width']}x{c0['height']} | {masks} "
            f"| {m['JF']:.3f} | {m['psnr_region']:.2f} ({m['psnr_region_input']:.2f}) "
            f"| {m['ssim_region']:.4f} ({m['ssim_region_input']:.4f}) "
            f"| {m['ewarp']:.4f} ({m['ewarp_input']:.4f} / {m['ewarp_clean']:.4f}) "
            f"| {m['seconds_per_frame']:.3f} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m peanut_jax.pipeline.evaluate_chain",
        description="Evaluate text -> mask -> erase (-> upscale) on the synthetic hard-case presets "
        "(exact ground truth): J&F of the masks, PSNR/SSIM of the erased region against the clean "
        "background, Ewarp.",
    )
    p.add_argument(
        "--preset",
        action="append",
        default=[],
        metavar="NAME",
        help=f"hard-case preset (repeatable, comma-separated or 'all'): {', '.join(PRESETS)}",
    )
    p.add_argument("--num-clips", type=int, default=1, help="clips per preset (default 1)")
    p.add_argument("--seed", type=int, default=0, help="first clip seed (default 0)")
    p.add_argument("--num-frames", type=int, default=None, help="override the presets' clip length")
    p.add_argument("--height", type=int, default=None, help="override the presets' frame height")
    p.add_argument("--width", type=int, default=None, help="override the presets' frame width")
    p.add_argument(
        "--masks",
        choices=("text", "gt"),
        default="text",
        help="text: SAMWISE prompted with the target's sentence (default); gt: the ground-truth masks "
        "(measures the erase stage alone)",
    )
    p.add_argument("--text-checkpoint", default=None, metavar="SPEC", help="SAMWISE weights (--masks text)")
    p.add_argument(
        "--tokenizer",
        default=None,
        metavar="SPEC",
        help="tokenizer of the SAMWISE weights: registry name or folder (default: the synthetic grammar's "
        "BPE, peanut_jax/assets/synthetic_bpe; use gpt2_bpe for official SAMWISE weights)",
    )
    p.add_argument(
        "--erase-checkpoint", default=DEFAULT_ERASE, metavar="SPEC", help=f"E2FGVI weights (default {DEFAULT_ERASE})"
    )
    p.add_argument("--upscale", type=int, default=None, metavar="FACTOR", help="also run the upscale stage")
    p.add_argument(
        "--upscale-checkpoint",
        default=DEFAULT_UPSCALE,
        metavar="SPEC",
        help=f"BasicVSR++ weights (default {DEFAULT_UPSCALE})",
    )
    p.add_argument("--out", default=None, metavar="DIR", help=f"write {JSON_NAME} and {TABLE_NAME} here")
    return p


def _presets(values) -> list[str]:
    names = []
    for v in values:
        for n in str(v).split(","):
            n = n.strip()
            if n == "all":
                names += [p for p in PRESETS if p not in names]
            elif n and n not in names:
                names.append(n)
    return names


def main(argv=None) -> int:
    from peanut_jax.pipeline.common import enable_compilation_cache

    args = build_parser().parse_args(argv)
    enable_compilation_cache()
    try:
        presets = _presets(args.preset)
        out = None
        if args.out is not None:
            out = pathlib.Path(args.out)
            if out.exists() and not out.is_dir():
                raise ValueError(f"--out {out}: exists and is not a folder")
        result = run(
            presets,
            num_clips=args.num_clips,
            seed=args.seed,
            masks=args.masks,
            text_checkpoint=args.text_checkpoint,
            tokenizer=args.tokenizer,
            erase_checkpoint=args.erase_checkpoint,
            upscale=args.upscale,
            upscale_checkpoint=args.upscale_checkpoint,
            num_frames=args.num_frames,
            height=args.height,
            width=args.width,
            log=lambda s: print(s, file=sys.stderr),
        )
        table = format_table(result)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / JSON_NAME, result)
            _write_text(out / TABLE_NAME, table + "\n")
        print(table)
        return 0
    except (ValueError, OSError) as err:
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2


def _write_text(path: pathlib.Path, text: str) -> None:
    import os
    import uuid

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
