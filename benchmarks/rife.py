"""Timing of the jitted RIFE forward (ECCV IFNet inference path and IFNet_HDv3), optionally against the
official PyTorch forward timed in the same run.

Usage::

    python benchmarks/rife.py [--sizes 256x448 480x736 736x1280] [--models rife rife_hdv3]
                              [--batch 1] [--repeat 10] [--dtype float32|bfloat16] [--tta]
                              [--official]   # needs torch and $PEANUT_MIRROR (official sources)

Weights are random (timing does not depend on values).  Reports the median seconds per call,
process CPU seconds per call (less sensitive to other processes' load than wall time), frames
(pairs) per second and, with ``--official``, the official median (torch threads = the
number of JAX CPU threads, no_grad, float32) and the speed ratio.  Calls alternate between the two
implementations so that machine load drifts affect both.  Sizes must be multiples of 32 (736x1280
is 720p padded as the official scripts pad it).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from peanut_jax.models import build  # noqa: E402
from peanut_jax.models.rife import init_params  # noqa: E402


def official_model(name: str, mirror: str):
    """The official torch network (random init, eval mode) and a forward(img0, img1) closure."""
    import torch
    from parity_rife import official_tree

    root = official_tree(pathlib.Path(mirror))
    if name == "rife":
        sys.path.insert(0, str(root))
        from model.IFNet import IFNet  # noqa: E402  (official)

        net = IFNet().eval()
        return lambda a, b: net(torch.cat([a, b], 1), [4, 2, 1])[2][2]
    sys.path.insert(0, str(root / "cog"))
    from rife.IFNet_HDv3 import IFNet  # noqa: E402  (official)

    net = IFNet().eval()
    return lambda a, b: net(torch.cat([a, b], 1), [4, 2, 1])[2][2]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["256x448", "480x736"])
    ap.add_argument("--models", nargs="+", default=["rife", "rife_hdv3"], choices=["rife", "rife_hdv3"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--tta", action="store_true")
    ap.add_argument("--official", action="store_true", help="time the official torch forward too")
    ap.add_argument("--mirror", default=os.environ.get("PEANUT_MIRROR"))
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args(argv)
    if args.official and not args.mirror:
        ap.error("--official needs --mirror or $PEANUT_MIRROR")
    threads = os.cpu_count() if jax.default_backend() == "cpu" else None
    print(
        f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), batch {args.batch}, "
        f"dtype {args.dtype}, tta {args.tta}, cpu threads {threads}"
    )
    results = []
    for name in args.models:
        module = build(name, dtype=jnp.dtype(args.dtype))
        variables = init_params(module, 0)
        fwd = jax.jit(lambda v, a, b, m=module: m.apply(v, a, b, tta=args.tta))
        ref = None
        if args.official:
            import torch

            torch.set_num_threads(threads or 1)
            torch.set_grad_enabled(False)
            ref = official_model(name, args.mirror)
        for size in args.sizes:
            h, w = (int(s) for s in size.split("x"))
            rng = np.random.default_rng(0)
            a = jnp.asarray(rng.random((args.batch, h, w, 3), np.float32))
            b = jnp.asarray(rng.random((args.batch, h, w, 3), np.float32))
            t0 = time.perf_counter()
            fwd(variables, a, b).block_until_ready()
            compile_s = time.perf_counter() - t0
            if ref is not None:
                import torch

                ta = torch.from_numpy(np.moveaxis(np.asarray(a), -1, 1).copy())
                tb = torch.from_numpy(np.moveaxis(np.asarray(b), -1, 1).copy())
                ref(ta, tb)  # warm-up
            ours, theirs, ours_cpu, theirs_cpu = [], [], [], []
            for _ in range(args.repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                fwd(variables, a, b).block_until_ready()
                ours.append(time.perf_counter() - t0)
                ours_cpu.append(time.process_time() - c0)
                if ref is not None:
                    t0, c0 = time.perf_counter(), time.process_time()
                    ref(ta, tb)
                    theirs.append(time.perf_counter() - t0)
                    theirs_cpu.append(time.process_time() - c0)
            row = dict(
                model=name,
                size=size,
                batch=args.batch,
                compile_s=round(compile_s, 2),
                median_s=statistics.median(ours),
                min_s=min(ours),
                cpu_s=statistics.median(ours_cpu),
                pairs_per_s=args.batch / statistics.median(ours),
            )
            line = (
                f"{name:10s} {size:9s} ours {row['median_s']:.3f} s (min {row['min_s']:.3f}, "
                f"cpu {row['cpu_s']:.3f} s, {row['pairs_per_s']:.2f} pairs/s, compile {compile_s:.1f} s)"
            )
            if theirs:
                row["official_median_s"] = statistics.median(theirs)
                row["official_min_s"] = min(theirs)
                row["official_cpu_s"] = statistics.median(theirs_cpu)
                row["speedup"] = row["official_median_s"] / row["median_s"]
                line += (
                    f"   official {row['official_median_s']:.3f} s (min {row['official_min_s']:.3f}, "
                    f"cpu {row['official_cpu_s']:.3f} s) -> x{row['speedup']:.2f}"
                )
            print(line, flush=True)
            results.append(row)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
