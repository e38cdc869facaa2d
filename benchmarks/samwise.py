"""SAMWISE text-prompted segmentation: ours vs the official PyTorch model, side by side in one process.

Development aid (needs torch, hydra-core, omegaconf, iopath, einops, transformers and the official
sources):

    PEANUT_REFS=/work/refs PEANUT_SHARED=../shared python benchmarks/samwise.py speed [--threads 1] [--prompts 1 4]
    PEANUT_REFS=/work/refs PEANUT_SHARED=../shared python benchmarks/samwise.py profile [--prompts 1 4]
    PEANUT_REFS=/work/refs PEANUT_SHARED=../shared python benchmarks/samwise.py memory --side official|ours

The official model is built by ``$PEANUT_SHARED/tools/official_ref`` (its ``Samwise`` adapter: the
SAMWISE sources under ``$PEANUT_REFS/ClaudiaCuttano+SAMWISE``, never copied here) and loaded the
way ``inference_demo.py`` loads a checkpoint, with the demo's settings (``--HSA``, no CME head).
Weights: ``$PEANUT_REFS/dumps/samwise.pth`` (random SAMWISE base+ weights in the official format);
ours are converted from the same file (``use_cme=False``).  Both sides get the same token ids (the
harness's stand-in tokenizer: the real RoBERTa vocabulary is not available offline).

``speed``: one clip of ``--frames`` decoded 16:9 frames (``--height`` x ``--width`` uint8) to
masks at the video's size, as the demo does per clip: resize (``Resize(1020, max_size=1024)``,
PIL bilinear) + normalise, the model, bilinear back to the video size, ``sigmoid > 0.5``.  For N
prompts the official demo re-runs the clip once per prompt; ours runs them batched in one pass.
Calls alternate, the first of each is warm-up (and our compile), medians of ``--repeats``; wall and
process CPU seconds; ``--threads N`` pins the process to N cores and sets torch's and XLA's thread
counts.  The peak RSS above the pre-call RSS during each call is sampled every 2 ms.

``profile``: ours only, where the time of one clip goes (each part jitted on its own, medians).

``memory``: one side only in a fresh process: RSS after loading, and the process's peak RSS after
one warm-up and one timed call.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import resource
import statistics
import sys
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPTS = [
    "the man in the red shirt on the left",
    "a dog running",
    "the white car parked behind the tree on the right side of the street",
    "the ball",
]


def _parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["speed", "profile", "memory"])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--prompts", type=int, nargs="+", default=[1, 4])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--side", choices=["official", "ours"], default="ours")
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
    from benchmarks.common import pin_threads

    n = ARGS.threads
    pin_threads(n)  # torch's pool is set to n threads below

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from peanut_jax.convert import from_official  # noqa: E402
from peanut_jax.pipeline.samwise import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    SAMWISEPredictor,
    resize_frames,
    resized_size,
)

REFS = pathlib.Path(os.environ.get("PEANUT_REFS", "/tmp/peanut-refs"))
SHARED = pathlib.Path(os.environ.get("PEANUT_SHARED", REPO.parent / "shared"))
WEIGHTS = REFS / "dumps/samwise.pth"


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Context manager: the highest RSS seen (every 2 ms) while the block runs, in bytes."""

    def __enter__(self):
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())


# ---------------------------------------------------------------------------------------- official
def _harness():
    """``$PEANUT_SHARED/tools/official_ref/models.py`` under its own module name."""
    tools = SHARED / "tools/official_ref"
    os.environ.setdefault("PEANUT_REFS", str(REFS))
    sys.path.insert(0, str(tools))  # its ``peanut_common``
    spec = importlib.util.spec_from_file_location("official_ref_models", tools / "models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def standin_tokenize(harness=None):
    """The harness's stand-in RoBERTa tokenizer (the one the official model calls; the real vocabulary
    is not available offline) as ``prompts -> (ids int32 (N, L), padding mask (N, L))``."""
    import tempfile

    h = harness or _harness()
    with tempfile.TemporaryDirectory() as d:
        tok = h._tiny_roberta_tokenizer(d)

    def tokenize(prompts):
        ids = tok(list(prompts), padding="longest", return_tensors="np")["input_ids"].astype(np.int32)
        return ids, ids == 1

    return tokenize


class Official:
    """The official SAMWISE (demo settings) and the demo's per-clip steps around ``model(...)``."""

    def __init__(self, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.torch = torch
        h = _harness()
        self.adapter = h.Samwise()
        self.adapter.cli = ["--HSA", "--device", "cpu"]  # inference_demo.py: HSA on, use_cme_head off
        self.model = self.adapter.load_official(WEIGHTS, seed=0).eval()
        self.noop_cuda = h._cpu_cuda_noop
        self.tokenize = standin_tokenize(h)
        assert not self.model.use_cme_head, "the demo runs without the CME head"

    def segment(self, frames_u8, prompt: str) -> np.ndarray:
        """One clip, one prompt -> bool masks (T, H, W) at the video's size (``compute_masks``)."""
        torch = self.torch
        F = torch.nn.functional
        t, oh, ow = frames_u8.shape[:3]
        h, w = resized_size(oh, ow)
        x = resize_frames(frames_u8, (h, w)).astype(np.float32) / 255.0
        imgs = torch.from_numpy(((x - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2).copy())
        target = {"size": torch.as_tensor([h, w]), "frame_ids": list(range(t))}
        with torch.no_grad(), self.noop_cuda():
            out = self.model([imgs], [prompt], [target])
            pm = F.interpolate(out["pred_masks"].unsqueeze(0), size=(oh, ow), mode="bilinear", align_corners=False)
            return (pm.sigmoid() > 0.5)[0].numpy()


# -------------------------------------------------------------------------------------------- ours
class _FixedTokenizer:
    """Gives our predictor the same token ids as the official side."""

    def __init__(self, tokenize):
        self.tokenize = tokenize

    def __call__(self, prompts):
        return self.tokenize([prompts] if isinstance(prompts, str) else list(prompts))


def ours(tokenize):
    module, variables = from_official("samwise", WEIGHTS, use_cme=False)
    return SAMWISEPredictor(module, variables, _FixedTokenizer(tokenize), use_cme=False, clip_window=ARGS.frames)


def ours_segment(pred, frames_u8, prompts) -> np.ndarray:
    """One clip, N prompts in one pass -> bool masks (N, T, H, W)."""
    state = pred.init_state(prompts, *frames_u8.shape[1:3])
    return pred.masks(pred.segment_clip(state, frames_u8))


# ------------------------------------------------------------------------------------------ inputs
def clip(T: int, H: int, W: int, seed: int = 0) -> np.ndarray:
    """Coloured shapes moving over a texture, JPEG-encoded and decoded (as frames read from a video)."""
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W] / H
    out = []
    for t in range(T):
        bg = 110 + 50 * np.sin(23 * xx + 0.2 * t) * np.cos(17 * yy - 0.1 * t)
        img = np.stack([bg, 0.9 * bg, 0.7 * bg], -1)
        for (cx, cy), col, r in zip(
            [(0.4 + 0.02 * t, 0.3), (1.2, 0.5 + 0.01 * t), (0.9 - 0.015 * t, 0.75)],
            [(240, 50, 40), (40, 220, 60), (30, 40, 230)],
            (0.09, 0.07, 0.11),
        ):
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = col
        img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=95)
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    return np.stack(out)


def _machine() -> str:
    import platform

    cpu = "?"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.node()} | {os.cpu_count()} cores {cpu} | jax {jax.__version__}"


# ----------------------------------------------------------------------------------------- modes
def speed():
    T, H, W = ARGS.frames, ARGS.height, ARGS.width
    off = Official(ARGS.threads)
    pred = ours(off.tokenize)
    frames = clip(T, H, W)
    rows = []
    for n_p in ARGS.prompts:
        prompts = PROMPTS[:n_p]

        def run_official(prompts=prompts):
            return np.stack([off.segment(frames, p) for p in prompts])

        def run_ours(prompts=prompts):
            return ours_segment(pred, frames, prompts)

        times = {"official": [], "ours": []}
        peak = {"official": 0, "ours": 0}
        masks = {}
        for r in range(ARGS.repeats + 1):
            for name, fn in (("official", run_official), ("ours", run_ours)):
                with PeakRSS() as pk:
                    w0, c0 = time.perf_counter(), time.process_time()
                    masks[name] = fn()
                    w1, c1 = time.perf_counter(), time.process_time()
                if r:
                    times[name].append((w1 - w0, c1 - c0))
                    peak[name] = max(peak[name], pk.peak - pk.start)
                else:
                    print(f"{n_p} prompt(s) warm-up {name}: {w1 - w0:.1f}s", flush=True)
        agree = float(np.mean(masks["official"] == masks["ours"]))
        med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
        rows.append((n_p, med["official"], med["ours"], peak, agree))
        (ow, oc), (uw, uc) = med["official"], med["ours"]
        print(f"{n_p} prompt(s): official {ow:.2f}s wall {oc:.2f}s CPU, ours {uw:.2f}s wall {uc:.2f}s CPU", flush=True)
    print(
        f"\nSAMWISE base+ (random official-format weights, demo settings: HSA on, CME off), {T} frames "
        f"{H}x{W} -> {resized_size(H, W)} input, fp32, {ARGS.threads} thread(s) each side, medians of "
        f"{ARGS.repeats} alternated calls after a warm-up; load average {os.getloadavg()}\n{_machine()}"
    )
    print(
        "| prompts | official wall s | official CPU s | ours wall s | ours CPU s | speed-up (wall) "
        "| peak RSS above start, official / ours MiB | masks equal |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n_p, (ow, oc), (uw, uc), pk, agree in rows:
        runs = f"{n_p} runs" if n_p > 1 else "1 run"
        print(
            f"| {n_p} (official {runs}, ours 1 pass) | {ow:.2f} | {oc:.2f} | {uw:.2f} | {uc:.2f} | {ow / uw:.2f}x "
            f"| {pk['official'] / 2**20:.0f} / {pk['ours'] / 2**20:.0f} | {agree:.4f} |"
        )


def profile():
    """Ours, one clip: each part jitted on its own (same shapes as inside the clip function)."""
    import flax.linen as nn
    import jax.numpy as jnp

    from peanut_jax.models.sam2.hiera import stage_cuts
    from peanut_jax.models.samwise import init_bank, pad_frames

    tokenize = standin_tokenize()
    pred = ours(tokenize)
    m, v = pred.module, pred.variables
    cfg = m.cfg
    cuts = stage_cuts(cfg.sam2.hiera)
    T, H, W = ARGS.frames, ARGS.height, ARGS.width
    frames = clip(T, H, W)
    hw = resized_size(H, W)
    x = resize_frames(frames, hw).astype(np.float32) / 255.0
    xn = pad_frames(jnp.asarray((x - IMAGENET_MEAN) / IMAGENET_STD), cfg.sam2.image_size)

    def timed(fn, *a):
        jax.block_until_ready(fn(*a))
        ts = []
        for _ in range(ARGS.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*a))
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    def apply(method):
        """A jitted ``m.apply(v, *args, method=method)``."""
        return jax.jit(lambda v, *a: m.apply(v, *a, method=method))

    def text_all(mm, ids, pm):
        t, p = mm.text_encoder.embed(ids, pm)
        return mm.text_encoder.run_layers(t, p, 0, cfg.text_layers)

    def frame_scan(mm, feats, bank):
        body = lambda mdl, c, xx: mdl.frame_step(c, xx)  # noqa: E731
        return nn.scan(body, variable_broadcast="params", split_rngs={"params": False})(mm, bank, feats)

    stem = apply(lambda mm, x: mm._blocks(mm.sam.image_encoder.embed(x), 0, cuts[1]))
    stages = [apply(lambda mm, a, i=i: mm._blocks(a, cuts[i], cuts[i + 1])) for i in (1, 2, 3)]
    adapters = [apply(lambda mm, a, t, p, i=i: mm.cmt_adapters[i](a, t, p)) for i in range(3)]
    enc = apply(lambda mm, x, ids, pm: mm.encode_clip(x, ids, pm)[0])
    run = apply(lambda mm, x, ids, pm, b: mm.run_clip(x, ids, pm, b)[:2])
    text = apply(text_all)
    scan = apply(frame_scan)
    acts = [stem(v, xn)]
    for f in stages:
        acts.append(f(v, acts[-1]))
    for n_p in ARGS.prompts:
        ids, pm = map(jnp.asarray, tokenize(PROMPTS[:n_p]))
        rows = {"RoBERTa, 12 layers (all prompts batched)": timed(text, v, ids, pm)}
        rows["patch embed + Hiera stage 1 (shared by the prompts)"] = timed(stem, v, xn)
        for i, f in enumerate(stages):
            a = jnp.broadcast_to(acts[i][None], (n_p, *acts[i].shape)).reshape(n_p * T, *acts[i].shape[1:])
            rows[f"Hiera stage {i + 2}, {cuts[i + 2] - cuts[i + 1]} blocks (per prompt)"] = timed(f, v, a)
        txt = text(v, ids, pm)
        for i, f in enumerate(adapters):
            a = jnp.broadcast_to(acts[i + 1][None], (n_p, *acts[i + 1].shape))
            rows[f"CMT adapter {i} (per prompt)"] = timed(f, v, a, txt, pm)
        rows["= encode_clip: text + backbone + adapters + neck"] = timed(enc, v, xn, ids, pm)
        bank = init_bank(cfg, n_p)
        feats = enc(v, xn, ids, pm)
        rows["frame scan: memory attention + heads + memory encoder (per prompt)"] = timed(scan, v, feats, bank)
        rows["= run_clip: encode_clip + frame scan"] = timed(run, v, xn, ids, pm, bank)
        state = pred.init_state(PROMPTS[:n_p], H, W)
        rows["= predictor segment_clip: host resize, run_clip, postprocess, to host"] = timed(
            lambda: pred.segment_clip(state, frames)
        )
        print(
            f"\nours, {n_p} prompt(s), {T} frames {H}x{W} -> {hw} (padded {cfg.sam2.image_size}), "
            f"{ARGS.threads} thread(s), medians of {ARGS.repeats}; load average {os.getloadavg()}"
        )
        print("| part | s |\n|---|---|")
        for k, t in rows.items():
            print(f"| {k} | {t:.3f} |")


def memory():
    T, H, W = ARGS.frames, ARGS.height, ARGS.width
    frames = clip(T, H, W)
    rss0 = _rss()
    if ARGS.side == "official":
        off = Official(ARGS.threads)
        fn = lambda: off.segment(frames, PROMPTS[0])  # noqa: E731
    else:
        pred = ours(standin_tokenize())
        fn = lambda: ours_segment(pred, frames, PROMPTS[:1])  # noqa: E731
    loaded = _rss()
    fn()
    with PeakRSS() as pk:
        fn()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        f"{ARGS.side}: RSS before load {rss0 / 2**20:.0f} MiB, after load {loaded / 2**20:.0f} MiB, "
        f"peak during a warm call {pk.peak / 2**20:.0f} MiB (+{(pk.peak - pk.start) / 2**20:.0f}), "
        f"process peak (incl. load/compile) {maxrss / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    {"speed": speed, "profile": profile, "memory": memory}[ARGS.mode]()
