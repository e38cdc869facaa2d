"""The bundled demo: ``python infer.py --demo [--prompt "the small red circle moving left"]``
(offline, no downloads).

It lives with the commands (not in ``pipeline/``) because it is a command: it assembles a chain from
bundled weights and a synthetic clip, measures it and prints; the chain itself is the same as
``infer.py run``.

A procedurally generated referring clip (:mod:`peanut_jax.data.hardcases`: three objects, colours and
shapes that may repeat, one sentence per object that singles it out) goes through the whole product:
text -> mask (SAMWISE) -> erase -> upscale -> interpolate.  ``--prompt`` is the sentence; without it
the demo takes the description of one object of the clip and says which.  The clip's ground truth is
exact: every object's mask, and every frame rendered without the target.  The weights are small models
of the same architectures that we trained ourselves with ``train.py`` on synthetic clips
(``scripts/train_demo_weights.sh``), shipped in ``peanut_jax/assets/<stage>_demo/``; SAMWISE reads the
synthetic grammar's own BPE tokenizer (``peanut_jax/assets/synthetic_bpe``), so a prompt must use its
words (a prompt with none of them is refused, with the list).  When converted official weights of
the erase / upscale / interpolate models are in the ``$PEANUT_HOME`` cache (``python -m
peanut_jax.weights fetch NAME``), the same command uses them instead (``--demo-weights bundled``
forces the shipped ones); the summary says which were used.  The mask stage always uses the bundled
SAMWISE (the official ones read RoBERTa's vocabulary, not the synthetic grammar's).

Printed metrics (also returned / written with ``--summary-json``), those of
:class:`peanut_jax.pipeline.evaluate_chain.CaseMeasure`:

* ``J`` / ``F`` / ``JF``: the text masks against the target's mask (DAVIS-2017 rules);
* ``psnr_region`` / ``ssim_region``: the erase stage's output against the clip rendered without the
  target, inside the target's mask dilated as the eraser dilates its masks, per frame, averaged;
  ``*_input`` are the same numbers for the unprocessed input (the object still there);
* ``ewarp``: the warping error (L1, [0, 1] units) of the erased video along the exact background flow
  (the other objects' pixels excluded), next to the input's and the clean background's own (the floor);
* the final (upscaled, interpolated) video is written as a before/after side-by-side.

When the prompt is not one of the clip's sentences, the masks are measured against the object they
overlap most (said in the summary).  The settings of the recorded run and its numbers are in
``peanut_jax/assets/demo_metrics.json``; the CI test reruns the demo with the shipped weights and
compares.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys
import time

import numpy as np

from peanut_jax.pipeline.common import bundled_asset

ASSETS = {"erase": "erase_demo", "upscale": "upscale_demo", "interpolate": "interpolate_demo"}
MASK_ASSET = "mask_demo"  # the bundled tiny SAMWISE (peanut_jax/assets/mask_demo)
TOKENIZER_ASSET = "synthetic_bpe"
# official registry names tried (in order) when --demo-weights=auto
OFFICIAL = {"erase": ("e2fgvi_hq",), "upscale": ("basicvsr_pp_reds4",), "interpolate": ("rife_hdv3", "rife")}
METRICS_FILE = "demo_metrics.json"
DEFAULT_SETTINGS = dict(
    seed=7,
    num_frames=16,
    height=128,
    width=128,
    num_objects=3,
    fps=12.0,
    upscale=None,
    interpolate=2,
    stages=["erase", "upscale", "interpolate"],
    chunk=16,
    overlap=2,
    rife_batch=4,
)


def recorded() -> dict | None:
    """The recorded demo run (settings + metrics), or None when the weights are not shipped."""
    p = bundled_asset(METRICS_FILE)
    return json.loads(p.read_text()) if p.is_file() else None


def settings() -> dict:
    """Demo settings: the recorded ones when present (so the numbers can be reproduced)."""
    rec = recorded()
    s = dict(DEFAULT_SETTINGS)
    if rec:
        s.update({k: v for k, v in rec.get("settings", {}).items() if k in DEFAULT_SETTINGS})
    return s


def demo_case(s: dict | None = None):
    """The demo clip: a :class:`~peanut_jax.data.hardcases.HardCase` (its target: the object whose
    sentence the demo uses when no prompt is given)."""
    from peanut_jax.data.hardcases import Preset, make_case

    s = s or settings()
    preset = Preset(
        "demo",
        "the bundled demo clip",
        int(s["num_frames"]),
        int(s["height"]),
        int(s["width"]),
        num_objects=int(s["num_objects"]),
        layout=dict(leave_rate=0.0),
        fps=float(s["fps"]),
    )
    return make_case(preset, int(s["seed"]))


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


_FUNCTION_WORDS = {"at", "in", "is", "on", "that", "the"}


def check_prompt(prompt: str) -> str:
    """``prompt`` stripped; a ValueError naming ``--prompt`` when it is empty or has none of the
    words the bundled SAMWISE was trained on (listed; "the", "on", ... alone do not count)."""
    from peanut_jax.data.referring import referring_vocabulary

    prompt = " ".join(str(prompt).split())
    vocab = set(referring_vocabulary()) - _FUNCTION_WORDS
    if not prompt:
        raise ValueError('--prompt is empty: give a sentence, e.g. --prompt "the red circle on the left"')
    if not any(w in vocab for w in _words(prompt)):
        raise ValueError(
            f"--prompt {prompt!r}: none of its words are known to the bundled demo model, which was trained "
            f"on synthetic sentences with these words only: {', '.join(sorted(vocab))}"
        )
    return prompt


def choose_weights(mode: str = "auto", stages=("erase", "upscale", "interpolate")) -> dict:
    """``{stage: (path, label, official)}``: cached official weights when ``mode='auto'`` and they are
    converted in ``$PEANUT_HOME``, else the bundled demo weights."""
    from peanut_jax.checkpoints import registry

    if mode not in ("auto", "bundled"):
        raise ValueError(f"--demo-weights must be 'auto' or 'bundled', got {mode!r}")
    out = {}
    for stage in stages:
        chosen = None
        if mode == "auto":
            for name in OFFICIAL[stage]:
                try:
                    d = registry.converted_dir(name)
                except (ValueError, OSError):
                    d = None
                if d is not None:
                    chosen = (d, f"official '{name}' ({d})", True)
                    break
        if chosen is None:
            chosen = _bundled(ASSETS[stage], OFFICIAL[stage][0])
        out[stage] = chosen
    return out


def _bundled(asset: str, official: str | None):
    d = bundled_asset(asset)
    if not (d / "model.json").is_file():
        fetch = f", or fetch official weights: python -m peanut_jax.weights fetch {official}" if official else ""
        raise FileNotFoundError(
            f"bundled demo weights missing: {d} (run scripts/train_demo_weights.sh to train them{fetch})"
        )
    return d, f"bundled demo '{asset}' (trained with train.py, {d.name})", False


# ---------------------------------------------------------------------------------------------- run
def _same_sentence(a: str, b: str) -> bool:
    return _words(a) == _words(b)


def text_masks(case, prompt: str, model, tokenizer) -> np.ndarray:
    """bool (T, H, W): the masks SAMWISE gives ``prompt`` on the demo clip."""
    from peanut_jax.pipeline.sources import StreamInfo
    from peanut_jax.pipeline.text_masks import TextPromptMasks

    source = TextPromptMasks([prompt], module=model[0], variables=model[1], tokenizer=tokenizer)
    source.prepare(StreamInfo(len(case), case.height, case.width, case.fps))
    return np.stack([m for _, m in source.attach(iter(case))]).astype(bool)


def pick_target(case, prompt: str, pred: np.ndarray) -> tuple[int, str]:
    """(object index, how it was chosen): the object whose sentence ``prompt`` is, else the one the
    masks ``pred`` overlap most (J&F against each object's mask)."""
    from peanut_jax.metrics.jf import j_and_f

    for k, sentence in enumerate(case.sentences):
        if _same_sentence(prompt, sentence):
            return k, "the prompt is its sentence"
    scores = [j_and_f(pred, case.with_target(k).arrays()["masks"])["JF"] for k in range(len(case.sentences))]
    k = int(np.argmax(scores))
    return k, (
        f"the prompt is none of the clip's sentences; measured against the object its masks overlap most "
        f"(J&F {scores[k]:.3f})"
    )


def run_demo(
    output="peanut_demo.mp4",
    side_by_side=None,
    *,
    prompt: str | None = None,
    weights: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    frames_out=None,
    overrides: dict | None = None,
    log=print,
) -> dict:
    """Run the demo; returns ``{'settings', 'prompt', 'target', 'weights', 'metrics', 'summary'}``."""
    from peanut_jax.pipeline.build import build_chain, load_stage_model
    from peanut_jax.pipeline.evaluate_chain import CaseMeasure
    from peanut_jax.pipeline.sources import ArrayMasks, ArraySource, StreamInfo
    from peanut_jax.pipeline.text_masks import load_samwise, load_tokenizer

    s = settings()
    s.update(overrides or {})
    stages = list(s["stages"])
    if "erase" not in stages:
        raise ValueError("the demo measures the erase stage: 'erase' must be among its stages")
    if prompt is not None:
        prompt = check_prompt(prompt)
    out_path = pathlib.Path(output) if output is not None else None
    if side_by_side is None and out_path is not None and out_path.suffix:
        side_by_side = out_path.with_name(f"{out_path.stem}_before_after{out_path.suffix}")
    chosen = choose_weights(weights, stages)
    mask_dir, mask_label, _ = _bundled(MASK_ASSET, None)
    tok = load_tokenizer(bundled_asset(TOKENIZER_ASSET), flag="--tokenizer")
    text_model = load_samwise(mask_dir, flag="mask_demo", progress=False)
    models = {}
    for stage, (path, label, _) in chosen.items():
        module, variables, _ = load_stage_model(stage, path, progress=False)
        models[stage] = (module, variables, label)

    case = demo_case(s)
    if prompt is None:
        sentence, how = case.sentence, "no --prompt given: the demo takes this object's sentence"
    else:
        sentence = prompt
    if log:
        log(f"segmenting the demo clip with SAMWISE: {sentence!r} (compiling first) ...")
    t0 = time.perf_counter()
    pred = text_masks(case, sentence, text_model, tok)
    mask_seconds = time.perf_counter() - t0
    if prompt is not None:
        k, how = pick_target(case, prompt, pred)
        case = case.with_target(k)
    records = list(case.frames())
    frames = np.stack([r.image for r in records])

    erased = []
    chain = build_chain(
        stages,
        models=models,
        upscale=s.get("upscale"),
        interpolate=s.get("interpolate"),
        upscale_options=dict(chunk=s["chunk"], overlap=s["overlap"]),
        interpolate_options=dict(batch_size=s["rife_batch"]),
        progress=progress,
    )
    summary = chain.run(
        ArraySource(frames, fps=s["fps"], name=f"synthetic demo clip (seed {s['seed']})"),
        output,
        ArrayMasks(pred, name=f"SAMWISE masks of {sentence!r}"),
        side_by_side=side_by_side,
        frames_out=frames_out,
        overwrite=overwrite,
        progress=progress,
        observers={"erase": lambda i, f: erased.append(np.asarray(f))},
    )
    erase = chain.stages[0]
    info = StreamInfo(len(case), case.height, case.width, case.fps)
    meas = CaseMeasure(case.flow_forward, (case.height, case.width), erase.psize(info), erase.config.mask_dilation)
    for rec, m in zip(records, pred):
        meas.masks(m, rec.mask)
    for rec, out in zip(records, erased):
        meas.erased(out, rec)
    result = {
        "settings": s,
        "prompt": sentence,
        "target": {
            "object": case.target + 1,
            "num_objects": len(case.sentences),
            "sentence": case.sentence,
            "subset": case.subset,
            "how": how,
        },
        "sentences": case.sentences,
        "weights": {"mask": mask_label, **{k: v[1] for k, v in chosen.items()}},
        "official": {"mask": False, **{k: bool(v[2]) for k, v in chosen.items()}},
        "metrics": meas.result(),
        "mask_seconds": mask_seconds,
        "summary": summary.as_dict(),
    }
    if log:
        log(format_result(result, summary))
    return result


def format_result(result: dict, summary=None) -> str:
    m, s, t = result["metrics"], result["settings"], result["target"]
    lines = [
        f"peanut_jax demo: synthetic clip (seed {s['seed']}, {s['num_frames']} frames of {s['height']}x{s['width']}) "
        f"with exact ground truth",
        "  its objects' sentences: " + "; ".join(f"{i + 1}: {x!r}" for i, x in enumerate(result["sentences"])),
        f"  prompt {result['prompt']!r} -> object {t['object']} of {t['num_objects']} ({t['how']}; "
        f"subset {t['subset']})",
    ]
    for stage, label in result["weights"].items():
        lines.append(f"  {stage:<11} weights: {label}")
    if summary is not None:
        lines.append(summary.format())
    lines += [
        f"  text masks vs the object: J {m['J']:.3f}, F {m['F']:.3f}, J&F {m['JF']:.3f} "
        f"({s['num_frames']} frames in {result.get('mask_seconds', float('nan')):.1f} s, compiling included)",
        f"  erased region vs clean background: PSNR {m['psnr_region']:.2f} dB, SSIM {m['ssim_region']:.4f} "
        f"(input with the object: {m['psnr_region_input']:.2f} dB, {m['ssim_region_input']:.4f})",
        f"  Ewarp (L1 along the exact background flow): result {m['ewarp']:.4f}, input {m['ewarp_input']:.4f}, "
        f"clean background {m['ewarp_clean']:.4f}",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m peanut_jax.cli.demo export --workdir RUN --out peanut_jax/assets/erase_demo``
    and ``... record`` (rerun the demo with the bundled weights and write demo_metrics.json)."""
    import argparse

    from peanut_jax.checkpoints.export import export_trained
    from peanut_jax.pipeline.outputs import write_json

    p = argparse.ArgumentParser(prog="python -m peanut_jax.cli.demo")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="export a train.py run as demo weights")
    e.add_argument("--workdir", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--step", type=int, default=None)
    e.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="stored precision")
    r = sub.add_parser("record", help="run the demo with the bundled weights and record its settings and metrics")
    r.add_argument("--output", default=None, help="also keep the demo video here")
    args = p.parse_args(argv)
    try:
        if args.cmd == "export":
            d = export_trained(args.workdir, args.out, _make_model, args.step, args.dtype)
            size = sum(f.stat().st_size for f in d.iterdir())
            print(f"exported {args.workdir} -> {d} ({size / 2**20:.2f} MiB)")
            return 0
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            out = args.output or str(pathlib.Path(tmp) / "demo.mp4")
            res = run_demo(
                out,
                None,
                weights="bundled",
                overwrite=True,
                progress=False,
                overrides=dict(DEFAULT_SETTINGS),
            )
        rec = {
            "settings": res["settings"],
            "prompt": res["prompt"],
            "target": res["target"],
            "metrics": res["metrics"],
            "weights": res["weights"],
            "frames_out": res["summary"]["frames_out"],
            "size_out": res["summary"]["size_out"],
        }
        write_json(bundled_asset(METRICS_FILE), rec)
        print(f"recorded {bundled_asset(METRICS_FILE)}")
        return 0
    except (ValueError, OSError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2


def _make_model(config):
    """The module a ``train.py`` run trains (its task's ``make_model``), for the export."""
    from peanut_jax.train import tasks

    task = tasks.get(config.task)
    if not hasattr(task, "make_model"):
        raise ValueError(f"task {config.task!r} has no make_model(config); cannot tell which module it trains")
    return task.make_model(config)


def main_from_args(args) -> int:
    """``infer.py --demo`` (arguments of the ``run`` sub-command)."""
    from peanut_jax.pipeline.common import enable_compilation_cache
    from peanut_jax.pipeline.outputs import write_json

    if args.input or args.masks or args.manifest:
        raise ValueError("--demo runs the bundled clip: do not give --input/--masks/--manifest")
    from peanut_jax.pipeline.mask import prompts_from_args

    if prompts_from_args(args):
        raise ValueError("--demo is prompted with a sentence (--prompt): not with --click/--box/--mask-prompt")
    prompts = list(getattr(args, "prompt", None) or [])
    if len(prompts) > 1:
        raise ValueError(f"--demo removes one object: give one --prompt, got {len(prompts)}")
    enable_compilation_cache()
    output = args.output or "peanut_demo.mp4"
    progress = not args.no_progress and sys.stderr.isatty()
    result = run_demo(
        output,
        args.side_by_side,
        prompt=prompts[0] if prompts else None,
        weights=args.demo_weights,
        overwrite=args.overwrite,
        progress=progress,
        frames_out=args.frames_out,
    )
    if args.summary_json:
        write_json(args.summary_json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
