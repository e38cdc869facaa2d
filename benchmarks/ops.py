"""Benchmark warp (both samplers), the modulated deformable conv, SPyNet and the transformer's
fold (SoftComp: dense then fold), jitted, against PyTorch (grid_sample; a grid_sample-based DCN; a
plain-torch SPyNet with the official op sequence; torch ``Linear`` + ``F.fold`` with autograd).

    python benchmarks/ops.py [--quick] [--threads 2] [--only warp,dcn,spynet,fold]

``fold`` also times our fold left to plain autodiff (the implementation without its explicit
gradient) to show what the explicit transpose buys on the backward pass.

Medians after warm-up; JAX and torch are timed in the same run so ratios are comparable.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import median_time, report  # noqa: E402
from peanut_jax.ops import modulated_deform_conv2d, warp  # noqa: E402


def torch_or_none():
    try:
        import torch

        return torch
    except ImportError:
        return None


def bench_warp(torch, n, c, h, w, repeats):
    rng = np.random.default_rng(0)
    img = jnp.asarray(rng.random((n, h, w, c), np.float32))
    flow = jnp.asarray(rng.uniform(-20, 20, (n, h, w, 2)).astype(np.float32))
    rows = []
    for method in ("gather", "map_coordinates"):
        fwd = jax.jit(lambda i, f, m=method: warp(i, f, "zeros", m))
        grad = jax.jit(jax.grad(lambda i, f, m=method: jnp.sum(warp(i, f, "zeros", m) ** 2), argnums=(0, 1)))
        t_f = median_time(lambda: jax.block_until_ready(fwd(img, flow)), repeats)
        t_b = median_time(lambda: jax.block_until_ready(grad(img, flow)), max(2, repeats // 2))
        rows.append({"op": f"warp jax {method}", "shape": f"{n}x{h}x{w}x{c}", "fwd_s": t_f, "fwd+bwd_s": t_b})
    if torch is not None:
        x = torch.from_numpy(np.asarray(img)).permute(0, 3, 1, 2).contiguous()
        fl = torch.from_numpy(np.asarray(flow))
        gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")

        def tw(x_, fl_):
            grid = torch.stack((gx + fl_[..., 0], gy + fl_[..., 1]), 3)
            grid = torch.stack((2 * grid[..., 0] / (w - 1) - 1, 2 * grid[..., 1] / (h - 1) - 1), 3)
            return torch.nn.functional.grid_sample(x_, grid, "bilinear", "zeros", align_corners=True)

        with torch.no_grad():
            t_f = median_time(lambda: tw(x, fl), repeats)
        xr, flr = x.clone().requires_grad_(True), fl.clone().requires_grad_(True)

        def back():
            (tw(xr, flr) ** 2).sum().backward()

        t_b = median_time(back, max(2, repeats // 2))
        rows.append({"op": "warp torch grid_sample", "shape": f"{n}x{h}x{w}x{c}", "fwd_s": t_f, "fwd+bwd_s": t_b})
    return rows


def bench_dcn(torch, n, c, h, w, g, repeats):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((n, h, w, c), np.float32))
    off = jnp.asarray(rng.standard_normal((n, h, w, 2 * g * 9)).astype(np.float32) * 3)
    msk = jnp.asarray(rng.random((n, h, w, g * 9), np.float32))
    wt = jnp.asarray(rng.standard_normal((3, 3, c, c)).astype(np.float32) * 0.05)
    fn = jax.jit(lambda *a: modulated_deform_conv2d(*a, None, 1, 1, 1, 1, g))
    t = median_time(lambda: jax.block_until_ready(fn(x, off, msk, wt)), repeats)
    rows = [{"op": "dcn jax (gather)", "shape": f"{n}x{h}x{w}x{c} G{g}", "fwd_s": t, "fwd+bwd_s": float("nan")}]
    if torch is not None:
        F = torch.nn.functional
        xt = torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2).contiguous()
        ot = torch.from_numpy(np.asarray(off))
        mt = torch.from_numpy(np.asarray(msk))
        wtt = torch.from_numpy(np.asarray(wt)).permute(3, 2, 0, 1).contiguous()
        gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        cg = c // g

        def tdcn():  # grid_sample per tap (mmcv layout), then one GEMM
            cols = []
            o = ot.view(n, h, w, g, 9, 2)
            for k in range(9):
                i, j = divmod(k, 3)
                py = gy[None, :, :, None] + (i - 1) + o[..., k, 0]
                px = gx[None, :, :, None] + (j - 1) + o[..., k, 1]
                grid = torch.stack((2 * px / (w - 1) - 1, 2 * py / (h - 1) - 1), -1)  # n,h,w,g,2
                grid = grid.permute(0, 3, 1, 2, 4).reshape(n * g, h, w, 2)
                s = F.grid_sample(xt.view(n * g, cg, h, w), grid, "bilinear", "zeros", align_corners=True)
                s = s.view(n, g, cg, h, w) * mt.view(n, h, w, g, 9)[..., k].permute(0, 3, 1, 2)[:, :, None]
                cols.append(s.reshape(n, c, h, w))
            cols = torch.stack(cols, 2).reshape(n, c * 9, h * w)
            return torch.einsum("ok,nkp->nop", wtt.reshape(c, c * 9), cols)

        with torch.no_grad():
            t = median_time(tdcn, repeats)
        rows.append(
            {"op": "dcn torch (grid_sample)", "shape": f"{n}x{h}x{w}x{c} G{g}", "fwd_s": t, "fwd+bwd_s": float("nan")}
        )
    return rows


def bench_spynet(torch, h, w, repeats):
    from peanut_jax.convert import to_official
    from peanut_jax.models import build

    m = build("spynet")
    rng = np.random.default_rng(2)
    ref = jnp.asarray(rng.random((1, h, w, 3), np.float32))
    supp = jnp.asarray(rng.random((1, h, w, 3), np.float32))
    variables = jax.jit(m.init)(jax.random.key(0), ref, supp)
    fn = jax.jit(m.apply)
    t = median_time(lambda: jax.block_until_ready(fn(variables, ref, supp)), repeats)
    rows = [{"op": "spynet jax", "shape": f"1x{h}x{w}", "fwd_s": t, "fwd+bwd_s": float("nan")}]
    if torch is not None:
        from test_spynet import _torch_spynet

        sd = to_official("spynet", variables)
        r = torch.from_numpy(np.asarray(ref)).permute(0, 3, 1, 2)
        s = torch.from_numpy(np.asarray(supp)).permute(0, 3, 1, 2)
        with torch.no_grad():
            t = median_time(lambda: _torch_spynet(torch, sd, "mmagic", r, s), repeats)
        rows.append(
            {"op": "spynet torch (official op sequence)", "shape": f"1x{h}x{w}", "fwd_s": t, "fwd+bwd_s": float("nan")}
        )
    return rows


def bench_fold(torch, n, tokens_hw, hidden, channel, out_hw, repeats):
    from peanut_jax.ops import patches

    rng = np.random.default_rng(3)
    lh, lw = tokens_hw
    z = jnp.asarray(rng.standard_normal((n, lh, lw, hidden), np.float32))
    wd = jnp.asarray(rng.standard_normal((hidden, channel * 49), np.float32) / np.sqrt(hidden))
    geom = patches._geometry(*out_hw, 7, 3, 3, 1)

    def loss(fold_fn):
        return lambda z, wd: jnp.sum(jnp.square(fold_fn(z @ wd)))

    variants = {
        "fold jax (explicit gradient)": lambda c: patches.fold(c, out_hw, 7, 3, 3),
        "fold jax (plain autodiff)": lambda c: patches._fold_impl(c, out_hw, geom),
    }
    shape = f"{n}x{lh}x{lw}x{hidden}->{out_hw[0]}x{out_hw[1]}x{channel}"
    rows = []
    for name, fn in variants.items():
        fwd = jax.jit(lambda z, wd, fn=fn: fn(z @ wd))
        grad = jax.jit(jax.grad(loss(fn), argnums=(0, 1)))
        t_f = median_time(lambda: jax.block_until_ready(fwd(z, wd)), repeats)
        t_b = median_time(lambda: jax.block_until_ready(grad(z, wd)), max(2, repeats // 2))
        rows.append({"op": name, "shape": shape, "fwd_s": t_f, "fwd+bwd_s": t_b})
    if torch is not None:
        F = torch.nn.functional
        zt = torch.from_numpy(np.asarray(z)).reshape(n, lh * lw, hidden)
        wt = torch.from_numpy(np.asarray(wd))

        def tf(zt, wt):
            return F.fold((zt @ wt).transpose(1, 2), out_hw, 7, padding=3, stride=3)

        with torch.no_grad():
            t_f = median_time(lambda: tf(zt, wt), repeats)

        def tb():
            a, b = zt.clone().requires_grad_(True), wt.clone().requires_grad_(True)
            torch.sum(tf(a, b) ** 2).backward()

        t_b = median_time(tb, max(2, repeats // 2))
        rows.append({"op": "fold torch (Linear + F.fold, autograd)", "shape": shape, "fwd_s": t_f, "fwd+bwd_s": t_b})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", default="warp,dcn,spynet,fold", help="comma-separated subset to run")
    args = ap.parse_args()
    only = set(args.only.split(","))
    torch = torch_or_none()
    if torch is not None:
        torch.set_num_threads(args.threads)
    rep = 3 if args.quick else 7
    rows = []
    if "warp" in only:
        rows += bench_warp(
            torch, 2 if args.quick else 4, 64, 128 if args.quick else 256, 224 if args.quick else 448, rep
        )
    if "dcn" in only:
        rows += bench_dcn(torch, 1, 64, 64 if args.quick else 90, 96 if args.quick else 160, 16, rep)
    if "spynet" in only:
        rows += bench_spynet(torch, 180, 320, rep)
    if "fold" in only:
        # SoftComp at the tiny training size (batch 4 x 5 frames, 60x108 input -> 15x27 features)
        rows += bench_fold(torch, 20, (5, 9), 64, 32, (15, 27), rep)
        # ... and at the official E2FGVI size for one clip (8 frames, 240x432 -> 60x108 features)
        rows += bench_fold(torch, 8, (20, 36), 512, 128, (60, 108), rep)
    if not rows:
        raise SystemExit(f"--only {args.only!r}: nothing to run (choose from warp, dcn, spynet, fold)")
    report(rows, "ops and SPyNet (median seconds)", args.json)


if __name__ == "__main__":
    main()
