"""E2FGVI compile and run time of one generator call (``jax.jit(...).lower(...).compile()`` timed).

Usage::

    python benchmarks/compile_e2fgvi.py [--cases tiny tiny_grad official] [--repeat 2] [--json OUT]

Cases (batch 1, random weights):

* ``tiny``: E2FGVI-HQ with the ``configs/e2fgvi.py:tiny`` widths at 60x108, 3 local + 2 reference
  frames, forward;
* ``tiny_grad``: the same, gradient of the mean output with respect to the parameters;
* ``official``: E2FGVI (official widths) at 240x432, 5 local + 2 reference frames, forward;
* ``window``: the same model and size with the erase pipeline's interior window (11 local + 5
  reference frames; ``--neighbor-stride 5``).

For each case: seconds to trace and lower, seconds to compile, and the median run time of
``--repeat`` calls after one warm-up (``--repeat 0``: compile only); wall time and this process's
CPU time (the steadier number on a shared machine).  The persistent compilation
cache is off here (timing the compiler, not the cache).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

CASES = ("tiny", "tiny_grad", "official", "window")


def time_case(case: str, repeat: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from e2fgvi import random_variables

    from configs.e2fgvi import TINY_WIDTHS

    if case.startswith("tiny"):
        model, variables = random_variables("e2fgvi_hq", **TINY_WIDTHS)
        (h, w), lt, refs = (60, 108), 3, 2
    else:
        model, variables = random_variables("e2fgvi")
        (h, w), lt, refs = ((240, 432), 5, 2) if case == "official" else ((240, 432), 11, 5)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (1, lt + refs, h, w, 3)), jnp.float32)

    if case == "tiny_grad":

        def fn(v, a):
            return jax.grad(lambda p: model.apply({"params": p}, a, lt)[0].mean())(v["params"])
    else:

        def fn(v, a):
            return model.apply(v, a, lt)

    t0, c0 = time.perf_counter(), time.process_time()
    lowered = jax.jit(fn).lower(variables, x)
    t1, c1 = time.perf_counter(), time.process_time()
    compiled = lowered.compile()
    t2, c2 = time.perf_counter(), time.process_time()
    runs, cpu_runs = [], []
    if repeat > 0:
        jax.block_until_ready(compiled(variables, x))
    for _ in range(repeat):
        t3, c3 = time.perf_counter(), time.process_time()
        jax.block_until_ready(compiled(variables, x))
        runs.append(time.perf_counter() - t3)
        cpu_runs.append(time.process_time() - c3)
    return {
        "case": case,
        "frames": f"{lt}+{refs} @ {h}x{w}",
        "lower_s": round(t1 - t0, 2),
        "compile_s": round(t2 - t1, 2),
        "run_s": round(statistics.median(runs), 3) if runs else None,
        "lower_cpu_s": round(c1 - c0, 2),
        "compile_cpu_s": round(c2 - c1, 2),
        "run_cpu_s": round(statistics.median(cpu_runs), 3) if runs else None,
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES[:3]))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from common import machine

    rows = []
    for case in args.cases:
        row = time_case(case, args.repeat)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(machine())
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
