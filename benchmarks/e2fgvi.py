"""E2FGVI / E2FGVI-HQ inference timing and peak memory vs clip length (``pipeline.erase``).

Usage::

    python benchmarks/e2fgvi.py speed [--model e2fgvi|e2fgvi_hq] [--size 240x432|720p] [--refs 6]
                                      [--repeat 3] [--checkpoint PATH] [--official] [--json OUT]
    python benchmarks/e2fgvi.py memory [--lengths 50 200 1000] [--modes streaming official] [--tiny]
                                       [--size 60x108] [--official-max 200] [--json OUT]

``speed``: the jitted window call of an interior window (``2*neighbor_stride+1`` = 11 local frames
+ ``--refs`` reference frames; tennis-like clips have 5-7 references with the official
``num_ref=-1``), median of ``--repeat`` calls after one warm-up (compilation timed separately).
Seconds per frame = window time / neighbor_stride (each interior window finalises ``stride`` new
frames; every frame is computed in ~2.2 windows).  ``--official`` times the official PyTorch
``InpaintGenerator`` forward on the same input (CPU, torch threads = CPU count, no_grad, float32;
needs torch and the official sources: ``$PEANUT_MIRROR`` (``<owner>+<name>/repo`` git dirs) and
the mmcv stand-ins of ``$PEANUT_OFFICIAL_REF`` (``shared/tools/official_ref``); development aid,
nothing official is imported otherwise).  ``--size 720p`` runs HQ at 720x1280 (padded to
720x1296): slow on a small CPU.

``memory``: for each clip length and mode, a fresh process erases a lazily generated clip
(never materialised) with E2FGVI-HQ at ``--size`` (random weights), writing to a null sink; it
reports the peak RSS (``ru_maxrss``), the most frames the pipeline held, the windows run and the
compiled shapes.  The official mode (every 10th frame of the clip is a reference of every window)
is run up to ``--official-max`` frames only (its per-window cost grows with the clip).

Weights are random (timing does not depend on values) unless ``--checkpoint`` is given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

SIZES = {"432x240": (240, 432), "240x432": (240, 432), "720p": (720, 1280)}


def parse_size(text: str) -> tuple[int, int]:
    if text in SIZES:
        return SIZES[text]
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def random_variables(name: str, seed: int = 0, **widths):
    """(module, variables) with random non-degenerate parameters (host numpy, no model.init run).
    ``widths``: module overrides (e.g. the tiny widths of ``configs/e2fgvi.py``)."""
    import jax
    import jax.numpy as jnp
    from flax.traverse_util import flatten_dict, unflatten_dict

    from peanut_jax.models import build

    m = build(name, **widths)
    h, w = (60, 108) if m.hq else (240, 432)
    x = jax.ShapeDtypeStruct((1, 2, h, w, 3), jnp.float32)
    shapes = jax.eval_shape(lambda k, a: m.init(k, a, 2), jax.random.key(0), x)["params"]
    rng = np.random.default_rng(seed)
    out = {}
    for path, s in sorted(flatten_dict(shapes).items()):
        fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 1
        if path[-1] == "scale":
            v = 1.0 + 0.1 * rng.standard_normal(s.shape)
        elif path[-1] == "bias" or len(s.shape) == 1:
            v = 0.02 * rng.standard_normal(s.shape)
        else:
            v = rng.standard_normal(s.shape) / math.sqrt(max(fan_in, 1))
        if "update_spynet" in path and path[-2] == "conv_4":
            v = v * 0.05
        out[path] = np.asarray(v, np.float32)
    return m, {"params": unflatten_dict(out)}


def window_input(size, num_local, num_refs, seed=0):
    """A masked window input (T, Hp, Wp, 3) in [-1, 1] as the pipeline builds it."""
    from peanut_jax.pipeline import erase as E

    h, w = size
    rng = np.random.default_rng(seed)
    t = num_local + num_refs
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.stack(
        [
            np.clip(
                127
                + 100 * np.sin((xx + 3 * i) / 9.0)[..., None] * np.cos(yy / 7.0)[..., None]
                + rng.normal(0, 5, (h, w, 3)),
                0,
                255,
            )
            for i in range(t)
        ]
    ).astype(np.uint8)
    masks = np.stack(
        [((yy - h / 2) ** 2 / (h / 5) ** 2 + (xx - w / 3 - 2 * i) ** 2 / (w / 8) ** 2) < 1 for i in range(t)]
    )
    from peanut_jax.data.masks import dilate_masks

    return E.pad_frames(E.masked_input(frames, dilate_masks(masks, 4)))


def official_forward(name: str):
    """The official torch InpaintGenerator (random init, eval) from $PEANUT_MIRROR (local aid)."""
    import torch

    mirror = os.environ.get("PEANUT_MIRROR")
    ref_tools = os.environ.get("PEANUT_OFFICIAL_REF", str(REPO.parent / "shared" / "tools" / "official_ref"))
    if not mirror:
        raise SystemExit("--official needs $PEANUT_MIRROR (folder with MCG-NKU+E2FGVI/repo)")
    root = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / "peanut_e2fgvi_official"
    files = [
        "model/e2fgvi.py",
        "model/e2fgvi_hq.py",
        "model/modules/feat_prop.py",
        "model/modules/flow_comp.py",
        "model/modules/spectral_norm.py",
        "model/modules/tfocal_transformer.py",
        "model/modules/tfocal_transformer_hq.py",
    ]
    git = ["git", "--git-dir", str(pathlib.Path(mirror) / "MCG-NKU+E2FGVI" / "repo"), "show"]
    for f in files:
        p = root / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(subprocess.check_output(git + [f"HEAD:{f}"]))
    sys.path.insert(0, str(pathlib.Path(ref_tools) / "stubs"))  # mmcv stand-ins (DCN, ConvModule)
    sys.path.insert(0, str(root))
    import importlib

    mod = importlib.import_module("model." + name)
    torch.manual_seed(0)
    net = mod.InpaintGenerator().eval()

    def fwd(x_nhwc: np.ndarray, num_local: int):
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))[None]
            return net(x, num_local)[0]

    return fwd


def speed(args) -> list[dict]:
    import jax

    from peanut_jax.pipeline import erase as E

    size = parse_size(args.size)
    name = args.model
    if args.checkpoint:
        name, module, variables = E.load_eraser(args.checkpoint, args.model)
    else:
        module, variables = random_variables(name)
    psize = E.processing_size(name, size)
    runner = E.WindowModel(module, variables)
    s = args.neighbor_stride
    num_local = 2 * s + 1
    x = window_input(psize, num_local, args.refs)
    fwd = None
    if args.official:
        import torch

        torch.set_num_threads(os.cpu_count())
        fwd = official_forward(name)
    t0 = time.perf_counter()
    runner(x, num_local)
    first = time.perf_counter() - t0
    if fwd is not None:
        fwd(x, num_local)  # warm-up
    # alternate the two implementations so that load drifts on a shared machine hit both
    times, otimes = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        runner(x, num_local)
        times.append(time.perf_counter() - t0)
        if fwd is not None:
            t0 = time.perf_counter()
            fwd(x, num_local)
            otimes.append(time.perf_counter() - t0)
    med = statistics.median(times)
    row = {
        "impl": "peanut_jax (jit)",
        "model": name,
        "size": f"{psize[0]}x{psize[1]}",
        "padded": f"{x.shape[1]}x{x.shape[2]}",
        "window": f"{num_local}L+{args.refs}R",
        "first_call_s": first,
        "window_s": med,
        "s_per_frame": med / s,
        "min_s": min(times),
        "repeat": args.repeat,
        "backend": jax.default_backend(),
        "cpu_threads": os.cpu_count(),
    }
    rows = [row]
    print(json.dumps(row))
    if fwd is not None:
        om = statistics.median(otimes)
        orow = dict(
            row,
            impl="official torch (CPU)",
            first_call_s=float("nan"),
            window_s=om,
            s_per_frame=om / s,
            min_s=min(otimes),
            backend="torch-cpu",
        )
        rows.append(orow)
        print(json.dumps(orow))
        print(f"speed-up (official / ours): {om / med:.2f}x")
    return rows


class _Null:
    """A sink with the writer's interface (memory runs write nothing)."""

    def __init__(self):
        self.count = 0

    def write(self, frame):
        self.count += 1


def _memory_child(t: int, mode: str, size: tuple[int, int], seed: int = 0, tiny: bool = False) -> dict:
    from peanut_jax.pipeline import erase as E

    class Frames:
        def __len__(self):
            return t

        def __getitem__(self, i):
            rng = np.random.default_rng((seed, i))
            return rng.integers(0, 255, size + (3,), dtype=np.uint8)

    class Masks(Frames):
        def __getitem__(self, i):
            h, w = size
            m = np.zeros(size, bool)
            x0 = (3 * i) % max(1, w - w // 4)
            m[h // 3 : h // 3 + h // 4, x0 : x0 + w // 4] = True
            return m

    widths = {}
    if tiny:
        from configs.e2fgvi import TINY_WIDTHS

        widths = dict(TINY_WIDTHS, split_grouped_convs=True)
    module, variables = random_variables("e2fgvi_hq", seed, **widths)
    runner = E.WindowModel(module, variables)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    clip = E.ArrayClip(Frames(), Masks(), size)
    sink = _Null()
    t0 = time.perf_counter()
    for _, comp in E.inpaint(clip, runner, E.EraseConfig(mode=mode)):
        sink.write(comp.astype(np.uint8))
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "mode": mode,
        "frames": t,
        "size": f"{size[0]}x{size[1]}",
        "model": "tiny" if tiny else "official widths",
        "peak_rss_mib": rss / 1024,
        "rss_before_run_mib": rss0 / 1024,
        "max_frames_held": clip.max_held,
        "windows": runner.calls,
        "compiled_shapes": len(runner.shapes),
        "seconds": wall,
        "written": sink.count,
    }


def memory(args) -> list[dict]:
    size = parse_size(args.size)
    rows = []
    for mode in args.modes:
        for t in args.lengths:
            if mode == "official" and t > args.official_max:
                print(json.dumps({"mode": mode, "frames": t, "skipped": f"> --official-max {args.official_max}"}))
                continue
            cmd = [sys.executable, __file__, "_memory_child", str(t), mode, f"{size[0]}x{size[1]}"] + (
                ["tiny"] if args.tiny else []
            )
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ))
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_memory_child":
        t, mode, size = int(argv[1]), argv[2], parse_size(argv[3])
        print(json.dumps(_memory_child(t, mode, size, tiny=argv[4:5] == ["tiny"])))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("--model", default="e2fgvi", choices=["e2fgvi", "e2fgvi_hq"])
    sp.add_argument("--size", default="240x432", help="HxW or 720p (HQ only for other than 240x432)")
    sp.add_argument("--refs", type=int, default=6)
    sp.add_argument("--neighbor-stride", type=int, default=5)
    sp.add_argument("--repeat", type=int, default=3)
    sp.add_argument("--checkpoint")
    sp.add_argument("--official", action="store_true")
    sp.add_argument("--json")
    mp = sub.add_parser("memory")
    mp.add_argument("--lengths", type=int, nargs="+", default=[50, 200, 1000])
    mp.add_argument("--modes", nargs="+", default=["streaming", "official"], choices=["streaming", "official"])
    mp.add_argument("--size", default="60x108")
    mp.add_argument("--official-max", type=int, default=200)
    mp.add_argument(
        "--tiny",
        action="store_true",
        help="the tiny widths of configs/e2fgvi.py (same pipeline, cheap windows: long clips on a CPU)",
    )
    mp.add_argument("--json")
    args = ap.parse_args(argv)
    rows = speed(args) if args.cmd == "speed" else memory(args)
    from common import machine

    print(f"\n{machine()}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
