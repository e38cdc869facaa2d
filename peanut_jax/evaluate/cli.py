"""``python -m peanut_jax.evaluate upscale|interpolate``: one line per dataset, JSON with ``--json``.

    python -m peanut_jax.evaluate upscale --dataset reds4 --root data/REDS --checkpoint ckpt.pth
    python -m peanut_jax.evaluate interpolate --dataset vimeo90k --root data/vimeo_triplet --checkpoint flownet.pkl
    python -m peanut_jax.evaluate upscale --dataset synthetic --workdir runs/basicvsr_tiny

``--checkpoint`` takes a registry name, an official file, an exported directory or an orbax folder;
``--workdir`` a ``train.py`` workdir (model from its ``config.json``, latest checkpoint); both load
through :func:`peanut_jax.checkpoints.load`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from collections.abc import Sequence

from peanut_jax.evaluate import interpolation, vsr

FAMILY = {"upscale": "basicvsr_pp", "interpolate": "rife"}

__all__ = ["load_for", "main"]


def load_for(kind: str, checkpoint=None, workdir=None):
    """``(module, variables)`` of the model that ``kind`` ('upscale' / 'interpolate') evaluates."""
    if (checkpoint is None) == (workdir is None):
        raise ValueError("give exactly one of --checkpoint and --workdir")
    from peanut_jax.checkpoints import load

    if workdir is not None:
        if not (pathlib.Path(workdir) / "config.json").is_file():
            raise FileNotFoundError(f"{pathlib.Path(workdir) / 'config.json'}: not a train.py workdir (no config.json)")
        return load(workdir, FAMILY[kind])
    return load(checkpoint, FAMILY[kind])


def _summary(name: str, r: dict) -> str:
    keys = [k for k, v in r.items() if isinstance(v, float)]
    return f"{name}: " + ", ".join(f"{k}={r[k]:.4f}" for k in keys)


def main(argv: Sequence[str] | None = None, prog: str = "python -m peanut_jax.evaluate") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Benchmark evaluation of the restoration stages.")
    sub = p.add_subparsers(dest="kind", required=True)
    for kind, sets in (("upscale", vsr.DATASETS), ("interpolate", interpolation.DATASETS)):
        s = sub.add_parser(kind)
        s.add_argument("--dataset", required=True, choices=sets)
        s.add_argument(
            "--root", default=None, help="dataset folder (layouts: peanut_jax.evaluate.vsr / .interpolation)"
        )
        s.add_argument(
            "--checkpoint", default=None, help="registry name, official checkpoint, exported dir or orbax folder"
        )
        s.add_argument("--workdir", default=None, help="a train.py workdir (model from its config.json)")
        s.add_argument("--max-items", type=int, default=None, help="evaluate only the first N clips/triplets")
        s.add_argument("--json", default=None, help="write the full results (per clip/triplet) here")
        s.add_argument("--quiet", action="store_true")
        if kind == "upscale":
            s.add_argument("--degradation", default="BI", choices=("BI", "BD"))
            s.add_argument("--crop-border", type=int, default=0)
            s.add_argument("--max-frames", type=int, default=None)
            s.add_argument("--chunk", type=int, default=None, help="streaming chunks of N frames (default: whole clip)")
        else:
            s.add_argument("--channel-order", default="bgr", choices=("bgr", "rgb"))
            s.add_argument("--scale", type=float, default=1.0)
            s.add_argument("--tta", action="store_true")
    args = p.parse_args(argv)
    try:
        module, variables = load_for(args.kind, args.checkpoint, args.workdir)
        if args.kind == "upscale":
            clips = vsr.vsr_clips(args.dataset, args.root, args.degradation, args.max_items, args.max_frames)
            res = vsr.evaluate_vsr(
                module, variables, clips, crop_border=args.crop_border, chunk=args.chunk, progress=not args.quiet
            )
        else:
            items = interpolation.triplets(args.dataset, args.root, args.max_items)
            res = interpolation.evaluate_interpolation(
                module,
                variables,
                items,
                channel_order=args.channel_order,
                scale=args.scale,
                tta=args.tta,
                progress=not args.quiet,
            )
        if args.json:
            tmp = pathlib.Path(args.json + ".tmp")
            tmp.write_text(json.dumps(res, indent=2, sort_keys=True))
            os.replace(tmp, args.json)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(_summary(args.dataset, res))
    return 0
