"""BasicVSR++ benchmarks: compile time, jitted speed, memory vs clip length, chunked-vs-whole PSNR.

Usage::

    python benchmarks/basicvsr_pp.py compile [--frames 5 30] [--loop]
    python benchmarks/basicvsr_pp.py speed [--size 5 64 64] [--repeat 3]
    python benchmarks/basicvsr_pp.py memory [--frames 8 16 32 64] [--size 64 64] [--chunk 16 --overlap 8]
    python benchmarks/basicvsr_pp.py chunks --clip ../shared/data/vsr_demo_000 [--crop 96 160]
    # any command: --checkpoint FILE (official .pth; default: $PEANUT_REFS/dumps/basicvsrpp.pth when
    # present, else random c64n7 weights) and --tiny (mid_channels 8, num_blocks 1)

``compile``: seconds to compile the jitted forward (c64n7 unless --tiny) for each T, scan vs
unrolled-loop propagation.  ``speed``: median jitted forward seconds and ms/frame.  ``memory``: XLA's
buffer assignment (``compiled.memory_analysis()``: arguments + outputs + temporaries) of one
whole-clip call per T, against the fixed streaming window (chunk + 2*overlap frames) that serves a
clip of any length.  ``chunks``: PSNR of streaming outputs (several chunk/overlap/blend settings)
against the whole-clip output of the same weights on a real clip.  Results are printed; copy them
to ``benchmarks/RESULTS.md`` with the machine and date.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402


def load(args):
    from flax.traverse_util import flatten_dict, unflatten_dict

    from peanut_jax.convert import from_official
    from peanut_jax.models.basicvsr_pp import BasicVSRPlusPlus

    kw = dict(use_scan=not getattr(args, "loop", False))
    ckpt = args.checkpoint
    if ckpt is None and not args.tiny and os.environ.get("PEANUT_REFS"):
        cand = pathlib.Path(os.environ["PEANUT_REFS"]) / "dumps" / "basicvsrpp.pth"
        ckpt = cand if cand.exists() else None
    if ckpt is not None:
        m, v = from_official("basicvsr_pp", ckpt, **kw)
        return m, v, f"weights {ckpt}"
    m = BasicVSRPlusPlus(**(dict(mid_channels=8, num_blocks=1) if args.tiny else {}), **kw)
    x = jax.ShapeDtypeStruct((1, 2, 64, 64, 3), jnp.float32)
    shapes = jax.eval_shape(lambda k, a: m.init(k, a, is_mirror_extended=False), jax.random.key(0), x)["params"]
    rng = np.random.default_rng(0)
    flat = {}
    for path, s in flatten_dict(shapes).items():  # fan-in scaled random weights (compiling init is slow)
        if path[-1] == "kernel":
            v = rng.standard_normal(s.shape) / np.sqrt(np.prod(s.shape[:-1])) * (0.1 if path[-2] == "conv_4" else 1)
        else:
            v = 0.05 * rng.standard_normal(s.shape)
        flat[path] = v.astype(np.float32)
    return m, {"params": unflatten_dict(flat)}, "random weights"


def _fwd(m):
    return jax.jit(lambda v, x: m.apply(v, x, is_mirror_extended=False))


def cmd_compile(args):
    m, v, what = load(args)
    print(f"compile time, c{m.mid_channels}n{m.num_blocks}, {'loop' if args.loop else 'scan'}, {what}")
    for t in args.frames:
        x = jax.ShapeDtypeStruct((1, t, args.size[0], args.size[1], 3), jnp.float32)
        t0 = time.perf_counter()
        _fwd(m).lower(v, x).compile()
        print(f"  T={t:3d} {args.size[0]}x{args.size[1]}: {time.perf_counter() - t0:6.1f} s", flush=True)


def cmd_speed(args):
    m, v, what = load(args)
    t, h, w = args.size
    x = np.random.default_rng(0).random((1, t, h, w, 3), np.float32)
    t0 = time.perf_counter()
    c = _fwd(m).lower(v, x).compile()
    tc = time.perf_counter() - t0
    jax.block_until_ready(c(v, x))
    ts = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(c(v, x))
        ts.append(time.perf_counter() - t0)
    med = float(np.median(ts))
    print(
        f"c{m.mid_channels}n{m.num_blocks} T={t} {h}x{w} ({what}, {jax.default_backend()}): compile {tc:.1f} s, "
        f"forward median {med:.3f} s (min {min(ts):.3f}, max {max(ts):.3f}) = {1e3 * med / t:.0f} ms/frame"
    )


def cmd_memory(args):
    m, v, what = load(args)
    h, w = args.size
    window = args.chunk + 2 * args.overlap

    def mib(t):
        x = jax.ShapeDtypeStruct((1, t, h, w, 3), jnp.float32)
        ma = _fwd(m).lower(v, x).compile().memory_analysis()
        total = ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes
        return total / 2**20, ma.temp_size_in_bytes / 2**20

    print(
        f"XLA buffer assignment per call, c{m.mid_channels}n{m.num_blocks}, {h}x{w} input ({what}, "
        f"{jax.default_backend()})"
    )
    tot, tmp = mib(window)
    print(
        f"  streaming window of {window} frames (chunk {args.chunk} + 2x{args.overlap}), any clip length: "
        f"{tot:8.1f} MiB (temporaries {tmp:.1f})",
        flush=True,
    )
    for t in args.frames:
        tot, tmp = mib(t)
        print(f"  whole clip T={t:4d}: {tot:8.1f} MiB (temporaries {tmp:.1f})", flush=True)


def cmd_chunks(args):
    from PIL import Image

    from peanut_jax.pipeline.upscale import Upscaler, upscale_clip

    m, v, what = load(args)
    files = sorted(p for p in pathlib.Path(args.clip).iterdir() if p.suffix.lower() in (".png", ".jpg"))
    if args.max_frames:
        files = files[: args.max_frames]
    frames = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    if args.crop:
        ch, cw = args.crop
        y0, x0 = (frames.shape[1] - ch) // 2, (frames.shape[2] - cw) // 2
        frames = frames[:, y0 : y0 + ch, x0 : x0 + cw]
    print(
        f"{args.clip}: {len(frames)} frames {frames.shape[1]}x{frames.shape[2]}, c{m.mid_channels}n{m.num_blocks} "
        f"({what})",
        flush=True,
    )
    runner = Upscaler(m, v)
    t0 = time.perf_counter()
    whole = upscale_clip(frames, m, v, chunk=None, upscaler=runner)
    print(f"  whole clip: {time.perf_counter() - t0:.0f} s (incl. compile)", flush=True)
    for spec in args.settings:
        chunk, overlap, blend = (int(s) for s in spec.split(","))
        r = Upscaler(m, v)
        t0 = time.perf_counter()
        out = upscale_clip(frames, m, v, chunk=chunk, overlap=overlap, blend=blend, upscaler=r)
        diff = out.astype(np.float64) - whole
        mse = float(np.mean(diff**2))
        per_frame = 10 * np.log10(1.0 / np.maximum(np.mean(diff**2, axis=(1, 2, 3)), 1e-20))
        print(
            f"  chunk {chunk:2d} overlap {overlap:2d} blend {blend}: PSNR vs whole "
            f"{10 * np.log10(1.0 / max(mse, 1e-20)):6.2f} dB (worst frame {per_frame.min():6.2f} dB), "
            f"max|diff| {np.abs(diff).max():.4f}, uint8 values differing "
            f"{np.mean(np.round(out * 255) != np.round(whole * 255)):.2%}, "
            f"{r.calls} calls of shape(s) {sorted(r.shapes)}, {time.perf_counter() - t0:.0f} s",
            flush=True,
        )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("compile", "speed", "memory", "chunks"):
        p = sub.add_parser(name)
        p.add_argument("--checkpoint", default=None)
        p.add_argument("--tiny", action="store_true")
        p.add_argument("--loop", action="store_true", help="unrolled propagation instead of nn.scan")
        if name == "compile":
            p.add_argument("--frames", type=int, nargs="+", default=[5, 30])
            p.add_argument("--size", type=int, nargs=2, default=[64, 64])
        elif name == "speed":
            p.add_argument("--size", type=int, nargs=3, default=[5, 64, 64], metavar=("T", "H", "W"))
            p.add_argument("--repeat", type=int, default=3)
        elif name == "memory":
            p.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32, 64])
            p.add_argument("--size", type=int, nargs=2, default=[64, 64])
            p.add_argument("--chunk", type=int, default=16)
            p.add_argument("--overlap", type=int, default=8)
        else:
            p.add_argument("--clip", required=True, help="frame folder")
            p.add_argument("--crop", type=int, nargs=2, default=None, metavar=("H", "W"), help="centre crop")
            p.add_argument("--max-frames", type=int, default=0)
            p.add_argument(
                "--settings",
                nargs="+",
                default=["5,2,0", "5,4,0", "8,4,0", "8,4,4"],
                help="chunk,overlap,blend triples",
            )
    args = ap.parse_args(argv)
    {"compile": cmd_compile, "speed": cmd_speed, "memory": cmd_memory, "chunks": cmd_chunks}[args.cmd](args)


if __name__ == "__main__":
    main()
