"""Choose the streaming window of the upscale stage: streamed vs whole-clip output and work.

    python benchmarks/upscale_windows.py [--clip ../shared/data/tennis/frames] [--weights upscale_demo]
        [--pairs 16:8 32:4 32:8 ...] [--frames N] [--crop HxW]

For every (chunk, overlap) pair: PSNR of the streamed output against the whole clip run in one
call (float outputs in [0, 1], peak 1), the window overhead ``(chunk + 2*overlap) / chunk`` and the
frames the model actually processed per output frame on this clip, and the wall time per output
frame.  The whole-clip run and the pairs are timed one after another in the same process (same
thread count); machine and load are printed.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", default=str(pathlib.Path(__file__).resolve().parents[2] / "shared/data/tennis/frames"))
    p.add_argument("--weights", default="upscale_demo", help="registry name or folder of BasicVSR++ weights")
    p.add_argument("--pairs", nargs="+", default=["16:8", "16:4", "32:4", "32:8"])
    p.add_argument("--frames", type=int, default=0, help="use the first N frames (0: all)")
    p.add_argument("--crop", default=None, metavar="HxW", help="a centred crop of every frame (CPU time)")
    args = p.parse_args()

    from PIL import Image

    from peanut_jax.checkpoints import load
    from peanut_jax.pipeline.upscale import Upscaler, upscale_clip

    files = sorted(pathlib.Path(args.clip).glob("*.png"))
    if args.frames:
        files = files[: args.frames]
    if not files:
        raise SystemExit(f"--clip {args.clip}: no PNG frames")
    frames = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]).astype(np.float32) / 255.0
    if args.crop:
        ch, cw = (int(v) for v in args.crop.lower().split("x"))
        y, x = (frames.shape[1] - ch) // 2, (frames.shape[2] - cw) // 2
        frames = np.ascontiguousarray(frames[:, y : y + ch, x : x + cw])
    # nn.scan recurrence: identical numbers, compile time independent of the window length
    module, variables = load(args.weights, "basicvsr_pp", progress=False, use_scan=True)
    t, h, w, _ = frames.shape
    print(
        f"clip {args.clip}: {t} frames {w}x{h}; weights {args.weights}; cpus {os.cpu_count()}; load {os.getloadavg()}",
        flush=True,
    )

    runner = Upscaler(module, variables)
    t0 = time.perf_counter()
    whole = upscale_clip(frames, module, variables, chunk=None, upscaler=runner)
    whole_s = time.perf_counter() - t0
    print(f"whole clip: {whole_s:.1f} s ({whole_s / t:.3f} s/frame, includes compiling)", flush=True)
    print("| chunk | overlap | window | overhead (nominal) | frames run / output | PSNR vs whole (dB) | s / frame |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for pair in args.pairs:
        chunk, overlap = (int(v) for v in pair.split(":"))
        runner = Upscaler(module, variables)
        out = upscale_clip(frames, module, variables, chunk=chunk, overlap=overlap, upscaler=runner)  # compiles
        runner.calls = 0
        t0 = time.perf_counter()
        out = upscale_clip(frames, module, variables, chunk=chunk, overlap=overlap, upscaler=runner)
        sec = time.perf_counter() - t0
        length = min(t, chunk + 2 * overlap)
        mse = float(np.mean((out.astype(np.float64) - whole.astype(np.float64)) ** 2))
        psnr = 10 * np.log10(1.0 / max(mse, 1e-30))
        print(
            f"| {chunk} | {overlap} | {chunk + 2 * overlap} | {(chunk + 2 * overlap) / chunk:.2f} | "
            f"{runner.calls * length / t:.2f} | {psnr:.1f} | {sec / t:.3f} |",
            flush=True,
        )
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
