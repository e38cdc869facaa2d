"""The bundled demo: ``python infer.py --demo`` (offline, no downloads).

It lives with the commands (not in ``pipeline/``) because it is a command: it assembles a chain from
bundled weights and a synthetic clip, measures it and prints; the chain itself is the same as
``infer.py run``.

A procedurally generated clip with a known clean background (:func:`peanut_jax.data.synthetic.
generate_clip`) and the masks of its objects go through the full chain erase -> upscale ->
interpolate.  The weights are small models of the same architectures that we trained ourselves
with ``train.py`` on the synthetic dataset (``scripts/train_demo_weights.sh``), shipped in
``peanut_jax/assets/<stage>_demo/``.  When converted official weights are in the ``$PEANUT_HOME``
cache (``python -m peanut_jax.weights fetch NAME``), the same command uses them instead
(``--demo-weights bundled`` forces the shipped ones); the summary says which were used.

Printed metrics (also returned / written with ``--summary-json``):

* ``psnr_region`` / ``ssim_region``: the erase stage's output against the clean background inside
  the filled region (the object masks dilated as the eraser dilates them): PSNR over all region
  pixels of all frames pooled, SSIM averaged over per-frame crops around the region;
  ``*_input`` are the same numbers for the unprocessed input (objects still there);
* ``ewarp``: the warping error (L1, [0, 1] units) of the erased video along the exact background
  flow with the exact occlusions, next to the input's and the clean background's own (the floor);
* the final (upscaled, interpolated) video is written as a before/after side-by-side.

The settings of the recorded run and its numbers are in ``peanut_jax/assets/demo_metrics.json``;
the CI test reruns the demo with the shipped weights and compares.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

from peanut_jax.pipeline.common import bundled_asset

ASSETS = {"erase": "erase_demo", "upscale": "upscale_demo", "interpolate": "interpolate_demo"}
# official registry names tried (in order) when --demo-weights=auto
OFFICIAL = {"erase": ("e2fgvi_hq",), "upscale": ("basicvsr_pp_reds4",), "interpolate": ("rife_hdv3", "rife")}
METRICS_FILE = "demo_metrics.json"
DEFAULT_SETTINGS = dict(
    seed=7,
    num_frames=20,
    height=60,
    width=108,
    num_objects=2,
    fps=12.0,
    upscale=None,
    interpolate=2,
    stages=["erase", "upscale", "interpolate"],
    mask_dilation=4,
    chunk=20,
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
        s.update(rec.get("settings", {}))
    return s


def demo_clip(s: dict | None = None):
    """(clip, uint8 frames, bool masks) of the demo."""
    from peanut_jax.data.synthetic import generate_clip

    s = s or settings()
    clip = generate_clip(
        int(s["seed"]),
        num_frames=int(s["num_frames"]),
        height=int(s["height"]),
        width=int(s["width"]),
        num_objects=int(s["num_objects"]),
    )
    frames = np.clip(np.round(clip.frames * 255.0), 0, 255).astype(np.uint8)
    return clip, frames, clip.object_mask


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
            d = bundled_asset(ASSETS[stage])
            if not (d / "model.json").is_file():
                raise FileNotFoundError(
                    f"bundled demo weights missing: {d} (run scripts/train_demo_weights.sh to train them, or fetch "
                    f"official weights: python -m peanut_jax.weights fetch {OFFICIAL[stage][0]})"
                )
            chosen = (d, f"bundled demo '{ASSETS[stage]}' (trained with train.py, {d.name})", False)
        out[stage] = chosen
    return out


# ---------------------------------------------------------------------------------------------- metrics
def measure(erased_u8: np.ndarray, clip, region: np.ndarray) -> dict:
    """Demo metrics of the erased frames (uint8 (T, H, W, 3)) against the clip's clean background."""
    from peanut_jax.metrics import psnr, ssim, warping_error

    out = erased_u8.astype(np.float64) / 255.0
    inp = np.clip(np.round(clip.frames * 255.0), 0, 255) / 255.0
    bg = np.clip(np.round(clip.background * 255.0), 0, 255) / 255.0

    def ewarp(v):
        return float(
            warping_error(
                v.astype(np.float32), clip.background_flow_forward, occlusion=clip.background_occlusion_forward
            )
        )

    return {
        "psnr_region": psnr(out, bg, mask=region, reduction="all"),
        "ssim_region": ssim(out, bg, mask=region, box_margin=8, reduction="all"),
        "psnr_region_input": psnr(inp, bg, mask=region, reduction="all"),
        "ssim_region_input": ssim(inp, bg, mask=region, box_margin=8, reduction="all"),
        "ewarp": ewarp(out),
        "ewarp_input": ewarp(inp),
        "ewarp_clean": ewarp(bg),
        "region_fraction": float(region.mean()),
    }


# ---------------------------------------------------------------------------------------------- run
def run_demo(
    output="peanut_demo.mp4",
    side_by_side=None,
    *,
    weights: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    frames_out=None,
    overrides: dict | None = None,
    log=print,
) -> dict:
    """Run the demo; returns ``{'settings', 'weights', 'metrics', 'summary'}``."""
    from peanut_jax.data.masks import dilate_masks
    from peanut_jax.pipeline.build import build_chain, load_stage_model
    from peanut_jax.pipeline.sources import ArrayMasks, ArraySource

    s = settings()
    s.update(overrides or {})
    stages = list(s["stages"])
    if "erase" not in stages:
        raise ValueError("the demo measures the erase stage: 'erase' must be among its stages")
    out_path = pathlib.Path(output) if output is not None else None
    if side_by_side is None and out_path is not None and out_path.suffix:
        side_by_side = out_path.with_name(f"{out_path.stem}_before_after{out_path.suffix}")
    chosen = choose_weights(weights, stages)
    models = {}
    for stage, (path, label, _) in chosen.items():
        module, variables, _ = load_stage_model(stage, path, progress=False)
        models[stage] = (module, variables, label)
    clip, frames, masks = demo_clip(s)
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
        ArrayMasks(masks, name="demo object masks"),
        side_by_side=side_by_side,
        frames_out=frames_out,
        overwrite=overwrite,
        progress=progress,
        observers={"erase": lambda i, f: erased.append(np.asarray(f))},
    )
    region = dilate_masks(masks, int(s["mask_dilation"]))
    metrics = measure(np.stack(erased), clip, region)
    result = {
        "settings": s,
        "weights": {k: v[1] for k, v in chosen.items()},
        "official": {k: bool(v[2]) for k, v in chosen.items()},
        "metrics": metrics,
        "summary": summary.as_dict(),
    }
    if log:
        log(format_result(result, summary))
    return result


def format_result(result: dict, summary=None) -> str:
    m = result["metrics"]
    lines = ["peanut_jax demo: synthetic clip with known clean background"]
    for stage, label in result["weights"].items():
        lines.append(f"  {stage:<11} weights: {label}")
    if summary is not None:
        lines.append(summary.format())
    lines += [
        f"  erased region vs clean background: PSNR {m['psnr_region']:.2f} dB, SSIM {m['ssim_region']:.4f} "
        f"(input with the objects: {m['psnr_region_input']:.2f} dB, {m['ssim_region_input']:.4f})",
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
                overrides=dict(DEFAULT_SETTINGS, **(recorded() or {}).get("settings", {})),
            )
        rec = {
            "settings": res["settings"],
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
    enable_compilation_cache()
    output = args.output or "peanut_demo.mp4"
    progress = not args.no_progress and sys.stderr.isatty()
    result = run_demo(
        output,
        args.side_by_side,
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
