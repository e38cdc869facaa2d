#!/usr/bin/env python
"""End-to-end chain benchmark: seconds per output frame and peak memory vs the clip length, against
the same stages run one after another through files.

    python benchmarks/pipeline.py                        # 100 and 200 frames, 60x108, tiny models
    python benchmarks/pipeline.py --frames 100,500,1000 --size 240x432 --json results.json

For every clip length N a synthetic clip (mp4, with its masks as PNGs) is generated, then

* **chain**: one process runs ``infer.py``'s chain (erase -> upscale -> interpolate, streaming,
  reader/writer threads) from the mp4 to the final mp4;
* **files** (baseline): one process per stage, the way the separate official projects are used:
  each reads all of its input frames (mp4 or the previous stage's PNG folder), runs the same stage
  code, and writes PNGs (the last stage an mp4), serially.

Both use the same models (the shipped demo weights, or tiny random ones with ``--weights random``)
and the same stage code, so the ratio measures the orchestration: streaming vs whole-clip, one
process vs three, overlapped vs serial decoding/encoding, no intermediate image files.  Reported:
wall seconds per output frame of each (process start to final file, model loading and compilation
included), the chain's per-stage split (its own summary), peak host RSS (and peak device memory
where the backend reports it), the baseline/chain ratio.  ``--warm`` also runs the chain a second
time in the same process (compiled) to report the steady state.

Every worker is a fresh subprocess (``JAX_PLATFORMS`` is kept; CPU unless set); the XLA persistent
compilation cache is off unless ``--xla-cache DIR`` is given, so every process compiles.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY_E2FGVI = dict(
    encoder_channels=(16, 16, 32, 32, 32, 32, 32, 32, 16),
    channel=16,
    hidden=32,
    num_heads=2,
    mlp_hidden=98,
    num_blocks=1,
    deform_groups=4,
    decoder_channels=(16, 16, 16),
)


# ============================================================================================ models
def _random_variables(module, x_shape, *args, seed=0):
    import math

    import jax
    import jax.numpy as jnp
    from flax.traverse_util import flatten_dict, unflatten_dict

    shapes = jax.eval_shape(
        lambda k, x: module.init(k, x, *args), jax.random.key(0), jax.ShapeDtypeStruct(x_shape, jnp.float32)
    )
    rng = np.random.default_rng(seed)
    out = {}
    for path, s in flatten_dict(shapes["params"]).items():
        if path[-1] == "kernel":
            v = rng.standard_normal(s.shape) / math.sqrt(int(np.prod(s.shape[:-1])))
            if path[-2] == "conv_4":
                v *= 0.1
        elif path[-1] in ("scale", "weight"):
            v = np.full(s.shape, 1.0 if path[-1] == "scale" else 0.25)
        else:
            v = 0.01 * rng.standard_normal(s.shape)
        out[path] = v.astype(np.float32)
    return {"params": unflatten_dict(out)}


def load_models(kind: str, stages, upscale: int) -> dict:
    """{stage: (module, variables, label)}: the shipped demo weights or tiny random models."""
    from peanut_jax.models import build
    from peanut_jax.pipeline.build import load_stage_model
    from peanut_jax.pipeline.common import bundled_asset

    if kind == "demo":
        from peanut_jax.cli.demo import ASSETS

        return {s: load_stage_model(s, bundled_asset(ASSETS[s]), progress=False) for s in stages}
    out = {}
    if "erase" in stages:
        e = build("e2fgvi_hq", **TINY_E2FGVI)
        out["erase"] = (e, _random_variables(e, (1, 3, 60, 108, 3), 2), "tiny random e2fgvi_hq")
    if "upscale" in stages:
        u = build("basicvsr_pp", mid_channels=8, num_blocks=1, scale=upscale)
        out["upscale"] = (u, _random_variables(u, (1, 2, 64, 64, 3)), "tiny random basicvsr_pp")
    if "interpolate" in stages:
        from peanut_jax.models.rife import init_params

        r = build("rife", widths=(16, 12, 8, 8), context_c=4)
        out["interpolate"] = (r, init_params(r, 0), "tiny random rife")
    return out


def make_chain(cfg: dict, stages):
    from peanut_jax import pipeline as R
    from peanut_jax.pipeline.erase_windows import EraseConfig

    models = load_models(cfg["weights"], stages, cfg["upscale"])
    return R.build_chain(
        stages,
        models=models,
        upscale=cfg["upscale"] if "upscale" in stages else None,
        interpolate=cfg["interpolate"] if "interpolate" in stages else None,
        erase_options=dict(config=EraseConfig(mode="streaming")),
        upscale_options=dict(chunk=cfg["chunk"], overlap=cfg["overlap"]),
        interpolate_options=dict(batch_size=cfg["rife_batch"]),
        progress=False,
    )


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu() -> float:
    """CPU seconds of this process (all threads) and its finished children (ffmpeg)."""
    r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


# ============================================================================================ workers
def worker_chain(cfg: dict) -> dict:
    """The whole chain in this process, streaming from the mp4 to the final mp4."""
    from peanut_jax import pipeline as R
    from peanut_jax.pipeline.common import enable_compilation_cache

    enable_compilation_cache()  # only with --xla-cache (PEANUT_XLA_CACHE=0 otherwise)
    t0 = time.perf_counter()
    chain = make_chain(cfg, cfg["stages"])
    t_load = time.perf_counter() - t0
    src = R.open_source(cfg["video"])
    s = R.Chain(chain.stages, queue_size=cfg["queue"]).run(
        src, cfg["output"], R.FolderMasks(cfg["masks"]), overwrite=True, progress=False, warmup=cfg.get("warmup", True)
    )
    res = {"load_seconds": t_load, "cold": s.as_dict(), "maxrss": _maxrss(), "cpu_seconds": _cpu()}
    if cfg.get("warm"):
        w = chain.run(
            R.open_source(cfg["video"]), cfg["output"], R.FolderMasks(cfg["masks"]), overwrite=True, progress=False
        )
        res["warm"] = w.as_dict()
    if cfg.get("held"):
        res["erase_max_frames_held"] = [getattr(st, "max_held", None) for st in chain.stages][0]
    return res


def worker_stage(cfg: dict) -> dict:
    """One stage the separate-tools way: read every input frame, run, write every output frame."""
    from peanut_jax import pipeline as R
    from peanut_jax.data.video_io import VideoWriter, read_frames
    from peanut_jax.pipeline.common import enable_compilation_cache

    enable_compilation_cache()
    t0 = time.perf_counter()
    stage = make_chain(cfg, [cfg["stage"]]).stages[0]
    t_load = time.perf_counter() - t0
    t1 = time.perf_counter()
    frames = read_frames(cfg["input"])  # the whole clip in memory
    t_read = time.perf_counter() - t1
    fps = cfg["fps"]
    info = R.StreamInfo(len(frames), frames.shape[1], frames.shape[2], fps)
    stage.check(info)
    items = iter(frames)
    if stage.needs_masks:
        items = R.FolderMasks(cfg["masks"]).attach(iter(frames))
    t2 = time.perf_counter()
    out = [np.asarray(f) for f in stage(items, info)]  # whole output in memory
    t_run = time.perf_counter() - t2
    t3 = time.perf_counter()
    rate = stage.output_info(info).fps
    with VideoWriter(cfg["output"], fps=rate, overwrite=True) as w:
        for f in out:
            w.write(f)
    t_write = time.perf_counter() - t3
    return {
        "stage": cfg["stage"],
        "load_seconds": t_load,
        "read_seconds": t_read,
        "run_seconds": t_run,
        "write_seconds": t_write,
        "frames": len(out),
        "maxrss": _maxrss(),
        "cpu_seconds": _cpu(),
    }


def _spawn(kind: str, cfg: dict) -> dict:
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, __file__, "--worker", kind, json.dumps(cfg)], capture_output=True, text=True, cwd=REPO
    )
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["wall_seconds"] = wall
    return res


# ============================================================================================ inputs
def make_inputs(folder: pathlib.Path, n: int, size, seed: int = 0, fps: float = 24.0):
    """A synthetic mp4 of ``n`` frames and its object masks (PNG folder), rendered in chunks."""
    from PIL import Image

    from peanut_jax.data.synthetic import make_scene
    from peanut_jax.data.video_io import VideoWriter

    h, w = size
    video, masks = folder / f"clip{n}.mp4", folder / f"masks{n}"
    masks.mkdir(parents=True, exist_ok=True)
    scene = make_scene(seed, n, h, w, num_objects=2, duration=float(max(1, n - 1)))
    with VideoWriter(video, fps=fps, overwrite=True, crf=10) as wr:
        for s in range(0, n, 32):
            c = scene.render(np.arange(s, min(n, s + 32)))
            for k in range(len(c.frames)):
                wr.write(np.clip(np.round(c.frames[k] * 255), 0, 255).astype(np.uint8))
                Image.fromarray(c.object_mask[k].astype(np.uint8) * 255).save(masks / f"{s + k:05d}.png")
    return video, masks


# ============================================================================================ driver
def bench(n: int, args, work: pathlib.Path) -> dict:
    video, masks = make_inputs(work, n, args.size)
    base = dict(
        weights=args.weights,
        upscale=args.upscale,
        interpolate=args.interpolate,
        chunk=args.chunk,
        overlap=args.overlap,
        rife_batch=args.rife_batch,
        queue=args.queue,
        stages=args.stages,
    )
    chain = _spawn(
        "chain",
        dict(
            base,
            video=str(video),
            masks=str(masks),
            output=str(work / f"chain{n}.mp4"),
            warm=args.warm,
            warmup=args.warmup,
        ),
    )
    frames_out = chain["cold"]["frames_out"]
    row = {"frames_in": n, "frames_out": frames_out, "size": list(args.size), "chain": chain}
    if args.baseline:
        steps, inp, fps = [], str(video), 24.0
        for k, stage in enumerate(args.stages):
            last = k == len(args.stages) - 1
            out = str(work / (f"files{n}.mp4" if last else f"files{n}_{stage}"))
            r = _spawn("stage", dict(base, stage=stage, input=inp, masks=str(masks), output=out, fps=fps))
            steps.append(r)
            if stage == "interpolate":
                fps *= args.interpolate
            inp = out
        row["files"] = {
            "steps": steps,
            "wall_seconds": sum(s["wall_seconds"] for s in steps),
            "cpu_seconds": sum(s["cpu_seconds"] for s in steps),
            "maxrss": max(s["maxrss"] for s in steps),
        }
        row["ratio"] = row["files"]["wall_seconds"] / chain["wall_seconds"]
        row["cpu_ratio"] = row["files"]["cpu_seconds"] / chain["cpu_seconds"]
        from peanut_jax.data.video_io import read_frames

        a, b = read_frames(work / f"chain{n}.mp4"), read_frames(work / f"files{n}.mp4")
        row["same_output"] = bool(a.shape == b.shape and np.array_equal(a, b))
    return row


def report(rows, args) -> str:
    mib = 2**20
    lines = [
        f"# chain benchmark: {'/'.join(args.stages)}, {args.size[0]}x{args.size[1]} input, "
        f"upscale x{args.upscale}, interpolate x{args.interpolate}, weights={args.weights}",
        f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"JAX_PLATFORMS={os.environ.get('JAX_PLATFORMS', '')!r}, date {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        "| frames in/out | chain s/out frame | files s/out frame | ratio (wall) | ratio (CPU s) | chain peak RSS "
        "| files peak RSS | same output | chain split (s): compile, "
        + ", ".join(args.stages)
        + ", read wait, write wait |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r["chain"]
        cold = c["cold"]
        split = f"{cold['compile_seconds']:.1f} ({cold['compiled_shapes']} shapes), "
        split += ", ".join(f"{s['seconds']:.1f}" for s in cold["stages"])
        split += f", {cold['read_seconds']:.1f}, {cold['write_wait_seconds']:.1f}"
        f = r.get("files")
        lines.append(
            f"| {r['frames_in']}/{r['frames_out']} | {c['wall_seconds'] / r['frames_out']:.3f} | "
            + (
                f"{f['wall_seconds'] / r['frames_out']:.3f} | {r['ratio']:.2f} | {r['cpu_ratio']:.2f} | "
                if f
                else "- | - | - | "
            )
            + f"{cold['peak_rss_bytes'] / mib:.0f} MiB | "
            + (f"{f['maxrss'] / mib:.0f} MiB | " if f else "- | ")
            + (f"{r['same_output']} | " if f else "- | ")
            + split
            + " |"
        )
    for r in rows:
        c = r["chain"]
        if "warm" in c:
            w = c["warm"]
            lines.append(
                f"warm chain, {r['frames_in']} frames: {w['seconds'] / w['frames_out']:.3f} s per output "
                f"frame (" + ", ".join(f"{s['name']} {s['s_per_frame']:.3f} s/frame" for s in w["stages"]) + ")"
            )
        if r.get("files"):
            lines.append(
                f"files, {r['frames_in']} frames: "
                + "; ".join(
                    f"{s['stage']}: load {s['load_seconds']:.1f} s, read {s['read_seconds']:.1f} s, run "
                    f"{s['run_seconds']:.1f} s, write {s['write_seconds']:.1f} s, process {s['wall_seconds']:.1f} s, "
                    f"CPU {s['cpu_seconds']:.1f} s"
                    for s in r["files"]["steps"]
                )
            )
        lines.append(
            f"chain, {r['frames_in']} frames: process {c['wall_seconds']:.1f} s, CPU {c['cpu_seconds']:.1f} s "
            f"(model load {c['load_seconds']:.1f} s, run {c['cold']['seconds']:.1f} s incl. compilation, "
            f"{c['cold']['stream_compiles']} compilations while streaming)"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", default="100,200", help="comma-separated clip lengths (e.g. 100,500,1000)")
    p.add_argument("--size", default="60x108", help="input HxW (e.g. 240x432, 720x1280)")
    p.add_argument("--stages", default="erase,upscale,interpolate")
    p.add_argument("--upscale", type=int, default=2)
    p.add_argument("--interpolate", type=int, default=2)
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--overlap", type=int, default=4)
    p.add_argument("--rife-batch", type=int, default=4)
    p.add_argument("--queue", type=int, default=8)
    p.add_argument(
        "--weights",
        choices=("demo", "random"),
        default=None,
        help="shipped demo weights (default when present) or tiny random models",
    )
    p.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the files baseline")
    p.add_argument("--warm", action="store_true", help="also time a second (compiled) chain run")
    p.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="chain: compile each stage at its first call instead of all shapes in parallel up front",
    )
    p.add_argument("--xla-cache", default=None, help="XLA persistent compilation cache folder for the workers")
    p.add_argument("--json", default=None, help="write all numbers to this JSON file")
    p.add_argument("--keep", default=None, help="keep the inputs/outputs in this folder")
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        kind, cfg = args.worker[0], json.loads(args.worker[1])
        res = worker_chain(cfg) if kind == "chain" else worker_stage(cfg)
        print(json.dumps(res, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))
        return 0
    from peanut_jax.pipeline.build import parse_stages

    args.stages = parse_stages(args.stages, None, None)
    args.size = tuple(int(v) for v in args.size.lower().split("x"))
    if args.weights is None:
        from peanut_jax.pipeline.common import bundled_asset

        args.weights = "demo" if (bundled_asset("erase_demo") / "model.json").is_file() else "random"
    if args.weights == "demo":
        args.upscale = None  # the shipped weights' own factor
    if args.xla_cache:
        os.environ["PEANUT_XLA_CACHE"] = str(pathlib.Path(args.xla_cache).resolve())
    else:
        os.environ["PEANUT_XLA_CACHE"] = "0"
    work = pathlib.Path(args.keep) if args.keep else pathlib.Path(tempfile.mkdtemp(prefix="peanut_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for n in [int(v) for v in args.frames.split(",")]:
            rows.append(bench(n, args, work))
            print(report(rows, args), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        pathlib.Path(args.json).write_text(
            json.dumps(
                {"args": {k: v for k, v in vars(args).items() if k != "worker"}, "rows": rows}, indent=2, default=str
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
