"""Parity of our E2FGVI / E2FGVI-HQ with dumps of the official PyTorch code (local development aid).

Usage::

    PEANUT_REFS=/work/refs python benchmarks/parity_e2fgvi.py [e2fgvi|e2fgvi_hq ...] [--inter] [--time N]

Loads ``$PEANUT_REFS/dumps/<model>.pth`` with ``from_official`` (fp32, 'highest' matmul precision),
runs every case of ``<model>_io.npz`` and prints the parity error (max|diff| / max(1, max|ref|)) of
the outputs, and with ``--inter`` of the recorded intermediates.  ``--time N`` also times N jitted
forwards of each case (after one compile) and prints the median.  Not a test: the dumps are not in CI.
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

jax.config.update("jax_default_matmul_precision", "highest")

from peanut_jax.convert import from_official  # noqa: E402
from peanut_jax.testing import parity_error  # noqa: E402

# our intermediate name -> (dump name, converter from ours (NHWC) to the dump layout)
_NCHW = lambda a: np.moveaxis(np.asarray(a), -1, -3)  # noqa: E731
_BT = lambda a: _NCHW(np.asarray(a).reshape((-1,) + np.asarray(a).shape[2:]))  # noqa: E731
INTER = {
    "spynet_in_ref": ("spynet_in_ref_call0", _NCHW),
    "encoder_out": ("encoder_out", _BT),
    "feat_prop_out": ("feat_prop_out", _NCHW),
    "softsplit_out": ("softsplit_out", np.asarray),
    "transformer_block0_out": ("transformer_block0_out", np.asarray),
    "transformer_out": ("transformer_out", np.asarray),
    "softcomp_out": ("softcomp_out", _BT),
    "decoder_out_pre_tanh": ("decoder_out_pre_tanh", _NCHW),
}


def cases(npz):
    return sorted({k.split("/")[0] for k in npz.files if "/" in k})


def run_model(name, refs, inter=False, n_time=0, only=None):
    npz = np.load(refs / "dumps" / f"{name}_io.npz")
    t0 = time.perf_counter()
    module, variables = from_official(name, refs / "dumps" / f"{name}.pth")
    print(f"{name}: converted in {time.perf_counter() - t0:.1f} s")
    for case in cases(npz):
        if only and not any(o in case for o in only):
            continue
        x = np.moveaxis(npz[f"{case}/in/masked_frames"], 2, -1)  # (B, T, H, W, 3)
        lt = int(case.split("_")[-1].split("L")[0])
        fwd = jax.jit(lambda v, a: module.apply(v, a, lt, mutable=["intermediates"]))
        t0 = time.perf_counter()
        (frames, (ff, fb)), state = fwd(variables, x)
        jax.block_until_ready(frames)
        t_first = time.perf_counter() - t0
        b, t = frames.shape[:2]
        pred = np.moveaxis(np.asarray(frames), -1, -3).reshape((b * t,) + (3,) + frames.shape[2:4])
        print(f"  {case}: input {tuple(x.shape)} local {lt}; first call (compile+run) {t_first:.1f} s")
        rows = [
            ("pred_img", parity_error(pred, npz[f"{case}/out/pred_img"])),
            (
                "pred_flows_0 (flows_forward)",
                parity_error(np.moveaxis(np.asarray(ff), -1, 2), npz[f"{case}/out/pred_flows_0"]),
            ),
            (
                "pred_flows_1 (flows_backward)",
                parity_error(np.moveaxis(np.asarray(fb), -1, 2), npz[f"{case}/out/pred_flows_1"]),
            ),
        ]
        if inter:
            got = state["intermediates"]
            for ours, (theirs, conv) in INTER.items():
                key = f"{case}/inter/{theirs}"
                if ours in got and key in npz.files:
                    rows.append((f"inter/{theirs}", parity_error(conv(got[ours][0]), npz[key])))
        for what, err in rows:
            print(f"    {what:34s} {err:.3e} {'OK' if err <= 2e-4 else 'FAIL'}")
        if n_time:
            fwd_plain = jax.jit(lambda v, a: module.apply(v, a, lt))
            jax.block_until_ready(fwd_plain(variables, x))
            times = []
            for _ in range(n_time):
                t0 = time.perf_counter()
                jax.block_until_ready(fwd_plain(variables, x))
                times.append(time.perf_counter() - t0)
            print(f"    forward (jitted) median {np.median(times):.2f} s over {n_time} (min {min(times):.2f})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["e2fgvi", "e2fgvi_hq"])
    ap.add_argument("--inter", action="store_true", help="also compare intermediates")
    ap.add_argument("--time", type=int, default=0, help="time N jitted forwards per case")
    ap.add_argument("--case", action="append", help="only cases whose name contains this (repeatable)")
    args = ap.parse_args(argv)
    if not os.environ.get("PEANUT_REFS"):
        sys.exit("set PEANUT_REFS to the folder holding dumps/<model>_io.npz")
    refs = pathlib.Path(os.environ["PEANUT_REFS"])
    for name in args.models:
        run_model(name, refs, args.inter, args.time, args.case)


if __name__ == "__main__":
    main()
