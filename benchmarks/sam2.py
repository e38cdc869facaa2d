"""SAM 2 video tracking: ours vs the official PyTorch predictor, side by side in one process.

Development aid (needs torch, hydra-core, omegaconf, iopath and the official sources):

    PEANUT_REFS=/work/refs PEANUT_SHARED=../shared python benchmarks/sam2.py parity [--frames 24 --size 512]
    PEANUT_REFS=/work/refs PEANUT_SHARED=../shared python benchmarks/sam2.py speed [--threads 1] [--objects 1 8]

The official ``sam2`` package is imported from ``$PEANUT_REFS/facebookresearch+sam2`` (extracted by
``$PEANUT_SHARED/tools/official_ref``; never copied here), with that harness's torchvision stand-in.
Weights: ``$PEANUT_REFS/dumps/sam2.pth`` (random SAM 2.1 hiera-tiny weights in the official format).

``parity``: one scenario on a synthetic clip, same weights, fp32, highest matmul precision, no hole
filling on either side (the official code skips it without its CUDA extension): three objects (a
click, a box, a mask), a second click on a later frame, an object added after tracking started,
a reverse pass.  Prints max |d| / max(1, |ref|) of every yielded logit map and the fraction of
pixels whose ``> 0`` decision differs.

``speed``: one propagation frame (image encoder + memory attention over the full bank + heads +
memory encoder + video-resolution output) for N objects; the official predictor runs objects one
by one (``_run_single_frame_inference`` each, image features shared), ours batched.  Calls
alternate, the first of each is warm-up, medians of ``--repeats``; wall and process CPU seconds;
``--threads N`` pins the process to N cores (both frameworks then share exactly those) and sets
torch's and XLA's thread counts.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["parity", "speed"])
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--size", type=int, default=512, help="model input size (official: 1024)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--objects", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=5)
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
from peanut_jax.pipeline.sam2 import SAM2VideoPredictor  # noqa: E402

REFS = pathlib.Path(os.environ.get("PEANUT_REFS", "/tmp/peanut-refs"))
SHARED = pathlib.Path(os.environ.get("PEANUT_SHARED", REPO.parent / "shared"))
CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


def official_predictor(size: int):
    import torch

    for p in (SHARED / "tools/official_ref/stubs/sam_family", REFS / "facebookresearch+sam2"):
        sys.path.insert(0, str(p))
    import sam2.build_sam as bs

    torch.set_num_threads(ARGS.threads)
    m = bs.build_sam2_video_predictor(
        CONFIG,
        str(REFS / "dumps/sam2.pth"),
        device="cpu",
        mode="eval",
        hydra_overrides_extra=[f"++model.image_size={size}"],
    )
    m.fill_hole_area = 0
    return m.eval()


def clip(T: int, size: int, seed: int = 0):
    """Three coloured shapes moving over a sinusoid texture, uint8 (T, size, size, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for t in range(T):
        bg = 110 + 50 * np.sin(23 * xx + 0.2 * t) * np.cos(17 * yy - 0.1 * t)
        img = np.stack([bg, 0.9 * bg, 0.7 * bg], -1)
        c = [(0.25 + 0.015 * t, 0.3), (0.7, 0.3 + 0.012 * t), (0.5 - 0.01 * t, 0.75)]
        col = [(240, 50, 40), (40, 220, 60), (30, 40, 230)]
        for (cx, cy), cc, r in zip(c, col, (0.09, 0.07, 0.11)):
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = cc
        img += rng.normal(0, 4, img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def jpeg_folder(frames):
    from PIL import Image

    d = tempfile.TemporaryDirectory()
    for t, f in enumerate(frames):
        Image.fromarray(f).save(os.path.join(d.name, f"{t:05d}.jpg"), quality=95)
    return d


def decoded(folder, T):
    from PIL import Image

    return np.stack([np.asarray(Image.open(os.path.join(folder, f"{t:05d}.jpg")).convert("RGB")) for t in range(T)])


def parity():
    import torch

    T, S = ARGS.frames, ARGS.size
    off = official_predictor(S)
    frames = clip(T, S)
    folder = jpeg_folder(frames)
    ours_m, ours_v = from_official("sam2", REFS / "dumps/sam2.pth", image_size=S)
    ours = SAM2VideoPredictor(ours_m, ours_v, fill_hole_area=0, keep_frames="all")
    so = off.init_state(folder.name)
    su = ours.init_state(decoded(folder.name, T))
    mask = np.zeros((S, S), bool)
    yy, xx = np.mgrid[0:S, 0:S] / S
    mask[(xx - 0.5) ** 2 + (yy - 0.75) ** 2 < 0.11**2] = True
    script = [
        ("points", 0, 1, dict(points=[[0.25 * S, 0.3 * S]], labels=[1])),
        ("points", 0, 2, dict(box=[0.62 * S, 0.22 * S, 0.78 * S, 0.38 * S])),
        ("mask", 0, 3, dict(mask=mask)),
        ("propagate", 0, None, dict()),
        (
            "points",
            T // 2,
            1,
            dict(
                points=[[(0.25 + 0.015 * T / 2) * S, 0.3 * S], [0.1 * S, 0.1 * S]],
                labels=[1, 0],
                clear_old_points=False,
            ),
        ),
        ("points", T // 3, 4, dict(points=[[0.5 * S, 0.5 * S]], labels=[1])),
        ("propagate", T // 3, None, dict()),
        ("propagate_reverse", T // 2, None, dict()),
    ]
    rows = []

    def cmp(tag, a, b):
        a = np.asarray(a, np.float64)
        b = b.detach().cpu().numpy().astype(np.float64)[:, 0] if hasattr(b, "detach") else np.asarray(b)
        err = np.abs(a - b).max() / max(1.0, np.abs(b).max())
        flips = float(np.mean((a > 0) != (b > 0)))
        rows.append((tag, err, flips))

    with torch.inference_mode():
        for kind, f, oid, kw in script:
            if kind == "points":
                _, _, a = ours.add_new_points_or_box(su, f, oid, **kw)
                _, _, b = off.add_new_points_or_box(so, frame_idx=f, obj_id=oid, **kw)
                cmp(f"points obj {oid} @ {f}", a, b)
            elif kind == "mask":
                _, _, a = ours.add_new_mask(su, f, oid, kw["mask"])
                _, _, b = off.add_new_mask(so, frame_idx=f, obj_id=oid, mask=kw["mask"])
                cmp(f"mask obj {oid} @ {f}", a, b)
            else:
                rev = kind.endswith("reverse")
                ua = list(ours.propagate_in_video(su, start_frame_idx=f, reverse=rev))
                ob = list(off.propagate_in_video(so, start_frame_idx=f, reverse=rev))
                assert [x[0] for x in ua] == [x[0] for x in ob]
                for (t, ids, a), (_, ids_o, b) in zip(ua, ob):
                    assert list(ids) == list(ids_o)
                    cmp(f"{kind} frame {t}", a, b)
    worst = max(r[1] for r in rows)
    print(
        f"SAM 2.1 hiera-tiny (random official-format weights), {T} frames at {S}x{S}, fp32 highest, "
        f"fill_hole_area=0, keep_frames='all'"
    )
    print(
        f"{len(rows)} yielded outputs compared; worst max|d|/max(1,|ref|) = {worst:.3g}; "
        f"worst fraction of flipped >0 decisions = {max(r[2] for r in rows):.3g}"
    )
    for tag, err, flips in rows:
        if err > 1e-5 or flips > 0:
            print(f"  {tag}: {err:.3g}, flipped {flips:.3g}")


def speed():
    import torch

    T, S = 8, ARGS.size
    off = official_predictor(S)
    frames = clip(T, S)
    folder = jpeg_folder(frames)
    ours_m, ours_v = from_official("sam2", REFS / "dumps/sam2.pth", image_size=S)
    ours = SAM2VideoPredictor(ours_m, ours_v, fill_hole_area=0)
    rng = np.random.default_rng(0)
    rows = []
    for n_obj in ARGS.objects:
        pts = rng.uniform(0.2 * S, 0.8 * S, (n_obj, 1, 2)).astype(np.float32)
        so = off.init_state(folder.name)
        su = ours.init_state(decoded(folder.name, T))
        with torch.inference_mode():
            for i in range(n_obj):
                off.add_new_points_or_box(so, frame_idx=0, obj_id=i, points=pts[i], labels=[1])
                ours.add_new_points_or_box(su, 0, i, points=pts[i], labels=[1])
            for _ in off.propagate_in_video(so, max_frame_num_to_track=T - 2):
                pass
            for _ in ours.propagate_in_video(su, max_frame_num_to_track=T - 2):
                pass
        last = T - 1

        def run_official():
            with torch.inference_mode():
                so["cached_features"] = {}
                masks = []
                for i in range(n_obj):
                    _, m = off._run_single_frame_inference(
                        inference_state=so,
                        output_dict=so["output_dict_per_obj"][i],
                        frame_idx=last,
                        batch_size=1,
                        is_init_cond_frame=False,
                        point_inputs=None,
                        mask_inputs=None,
                        reverse=False,
                        run_mem_encoder=True,
                    )
                    masks.append(m)
                off._get_orig_video_res_output(so, torch.cat(masks))

        def run_ours():
            su.features = None
            for o in su.objects:
                o.non_cond.pop(last, None)
            ours._step(su, last, False)

        times = {"official": [], "ours": []}
        for r in range(ARGS.repeats + 1):
            for name, fn in (("official", run_official), ("ours", run_ours)):
                w0, c0 = time.perf_counter(), time.process_time()
                fn()
                if r:
                    times[name].append((time.perf_counter() - w0, time.process_time() - c0))
        med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
        rows.append((n_obj, med["official"], med["ours"]))
    print(
        f"SAM 2.1 hiera-tiny, {S}x{S}, one propagation frame, fp32, {ARGS.threads} thread(s) each side, "
        f"medians of {ARGS.repeats} alternated calls; load average {os.getloadavg()}"
    )
    print("| objects | official wall s | official CPU s | ours wall s | ours CPU s | speed-up (wall) |")
    print("|---|---|---|---|---|---|")
    for n_obj, (ow, oc), (uw, uc) in rows:
        print(f"| {n_obj} | {ow:.3f} | {oc:.3f} | {uw:.3f} | {uc:.3f} | {ow / uw:.2f}x |")


if __name__ == "__main__":
    parity() if ARGS.mode == "parity" else speed()
