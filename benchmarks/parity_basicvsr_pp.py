"""Parity of our BasicVSR++ with dumps of the official PyTorch code (local development aid).

Usage::

    PEANUT_REFS=/work/refs python benchmarks/parity_basicvsr_pp.py [--loop] [--time N]

Loads ``$PEANUT_REFS/dumps/basicvsrpp.pth`` with ``from_official`` (fp32, 'highest' matmul
precision), runs every case of ``basicvsrpp_io.npz`` jitted and prints the parity error
(max|diff| / max(1, max|ref|)) of the output and of the recorded intermediates (features, flows,
the four propagation branches).  ``--loop`` uses the unrolled propagation instead of ``nn.scan``.
``--time N`` times N jitted forwards per case after the compile and prints the median.  Not a test:
the dumps are not in CI.
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
from peanut_jax.models.basicvsr_pp import mirror_extended  # noqa: E402
from peanut_jax.testing import parity_error  # noqa: E402

OURS = {"feat_extract": "spatial_features"}  # dump intermediate name -> our sow name


def to_official_layout(name, a):
    """Our NHWC intermediate -> the dump's NCHW layout."""
    a = np.asarray(a)
    if name == "feat_extract":  # dump: (B*T, C, h, w)
        a = a.reshape((-1,) + a.shape[2:])
    return np.moveaxis(a, -1, -3)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refs", default=os.environ.get("PEANUT_REFS"), help="folder with dumps/ (or $PEANUT_REFS)")
    ap.add_argument("--loop", action="store_true", help="unrolled propagation instead of nn.scan")
    ap.add_argument("--time", type=int, default=0, metavar="N", help="time N jitted forwards per case")
    args = ap.parse_args(argv)
    if not args.refs:
        ap.error("set --refs or $PEANUT_REFS")
    dumps = pathlib.Path(args.refs) / "dumps"
    npz = np.load(dumps / "basicvsrpp_io.npz")
    module, variables = from_official("basicvsr_pp", dumps / "basicvsrpp.pth", use_scan=not args.loop)
    print(
        f"basicvsr_pp: c{module.mid_channels}n{module.num_blocks} x{module.scale}, "
        f"{'loop' if args.loop else 'scan'} propagation, backend {jax.default_backend()}"
    )
    worst = 0.0
    for case in sorted({k.split("/")[0] for k in npz.files if "/" in k}):
        lqs = np.moveaxis(npz[f"{case}/in/lqs"], 2, -1)  # (B, T, h, w, 3)
        ref = np.moveaxis(npz[f"{case}/out/out"], 2, -1)
        mirror = mirror_extended(lqs)
        fwd = jax.jit(lambda v, x: module.apply(v, x, is_mirror_extended=mirror, mutable=["intermediates"]))
        t0 = time.perf_counter()
        compiled = fwd.lower(variables, lqs).compile()
        t_compile = time.perf_counter() - t0
        out, state = compiled(variables, lqs)
        err = parity_error(out, ref)
        worst = max(worst, err)
        print(f"  {case} (mirror-extended: {mirror}): out parity {err:.2e}   (compile {t_compile:.1f} s)")
        inter = state["intermediates"]
        for key in sorted(k for k in npz.files if k.startswith(f"{case}/inter/")):
            name = key.split("/")[-1]
            ours = OURS.get(name, name)
            if ours not in inter:
                continue
            mine = to_official_layout(name, inter[ours][0])
            print(f"    {name:24s} {parity_error(mine, npz[key]):.2e}")
        if args.time:
            ts = []
            for _ in range(args.time):
                t0 = time.perf_counter()
                jax.block_until_ready(compiled(variables, lqs))
                ts.append(time.perf_counter() - t0)
            med = float(np.median(ts))
            print(f"    jitted forward: median {med:.3f} s over {args.time} = {1e3 * med / lqs.shape[1]:.0f} ms/frame")
    print(f"worst output parity {worst:.2e} ({'OK' if worst <= 2e-4 else 'FAIL'} at 2e-4)")
    return 0 if worst <= 2e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
