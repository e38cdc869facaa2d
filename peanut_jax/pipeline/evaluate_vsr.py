"""Benchmark evaluation of the restoration stages: BasicVSR++ (x4 VSR) and RIFE (frame interpolation).

Video super-resolution (:func:`evaluate_vsr`), mmagic's protocol: the whole clip in one pass (the
official ``restoration_video_inference``; ``chunk`` switches to the streaming upscaler), output
clamped to [0, 1] and rounded to 8 bits (``tensor2img``), PSNR and SSIM per frame on RGB and on the
BT.601 Y channel with ``crop_border`` pixels removed (mmagic's configs use 0), averaged over the
frames of a clip, then over clips.  mmagic reports REDS4 on RGB and Vid4 / Vimeo-90K-T on Y; both
are returned.  The MATLAB bicubic upsampling of the same LR frames is measured alongside
(``*_bicubic``).  Layouts (folders as distributed / as mmagic expects them):

* ``reds4``: ``root/train_sharp/<clip>/*.png`` + ``root/train_sharp_bicubic/X4/<clip>/*.png`` for
  clips 000, 011, 015, 020 (BI; for ``degradation='BD'`` the LR is computed from the GT);
* ``vid4``: ``root/GT/<clip>/*.png`` + ``root/BIx4|BDx4/<clip>/*.png`` (calendar, city, foliage,
  walk; LR computed when the folder is absent);
* ``vimeo90k_t``: ``root/sequences/<a>/<b>/im1..7.png`` + ``root/sep_testlist.txt`` (+ optional
  ``root/BIx4|BDx4``): 7 LR frames mirror-extended to 14 (mmagic ``MirrorSequence``), the output
  for the centre frame is ``0.5 * (out[3] + out[10])`` against ``im4`` (mmagic
  ``BasicVSR.forward_inference``);
* ``synthetic``: procedural clips (``peanut_jax.data.synthetic``) degraded on the fly.

Frame interpolation (:func:`evaluate_interpolation`), RIFE's ``benchmark/*.py`` protocol: the pair
through ``interpolate_pair`` (padding to the model multiple, no TTA by default), the output rounded
to 8 bits, PSNR ``-10 log10(mse)`` and ``ssim_matlab`` against the GT, averaged over triplets; frames
are fed in BGR order (``channel_order='bgr'``) as the official scripts read them with OpenCV.  The
average of the two inputs is measured alongside (``*_average``).  Layouts:

* ``vimeo90k``: ``root/target/<name>/im1..3.png`` (``vimeo_interp_test``) or
  ``root/sequences/...`` (``vimeo_triplet``) + ``root/tri_testlist.txt``;
* ``ucf101``: ``root/<dir>/frame_00.png, frame_01_gt.png, frame_02.png`` (``ucf101_interp_ours``);
* ``synthetic``: procedural triplets with the exact middle frame.

CLI (one line per dataset, JSON with ``--json``)::

    python -m peanut_jax.pipeline.evaluate_vsr upscale --dataset reds4 --root data/REDS --checkpoint ckpt.pth
    python -m peanut_jax.pipeline.evaluate_vsr interpolate --dataset vimeo90k --root data/vimeo_triplet \\
        --checkpoint flownet.pkl
    python -m peanut_jax.pipeline.evaluate_vsr upscale --dataset synthetic --workdir runs/basicvsr_tiny

``--checkpoint`` takes an official file, an exported directory or an orbax folder; ``--workdir`` a
``train.py`` workdir (model rebuilt from its ``config.json``, latest checkpoint).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import sys
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

REDS4 = ("000", "011", "015", "020")
VID4 = ("calendar", "city", "foliage", "walk")
SCALE = 4


# ------------------------------------------------------------------------------------ helpers
def read_rgb(path: pathlib.Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file."""
    from PIL import Image
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read image ({e})") from None


def _pngs(folder: pathlib.Path) -> list[pathlib.Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder not found")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp")
                   and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{folder}: no image files")
    return files


def quantize(x: np.ndarray) -> np.ndarray:
    """Clamp to [0, 1] and round to 8 bits (mmagic ``tensor2img`` / RIFE ``np.round(x * 255)``), float64."""
    return np.round(np.clip(np.asarray(x, np.float64), 0.0, 1.0) * 255.0) / 255.0


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


# ----------------------------------------------------------------------------------- VSR sets
@dataclasses.dataclass
class VSRClip:
    """One evaluation clip: ``load() -> (lq uint8 (T, h, w, 3), gt uint8 (T', H, W, 3))``;
    ``center_only``: Vimeo-90K-T (mirror-extend the 7 LR frames, compare the centre frame)."""
    name: str
    load: Callable[[], tuple[np.ndarray, np.ndarray]]
    center_only: bool = False


def _degrade(gt: np.ndarray, kind: str) -> np.ndarray:
    from peanut_jax.data.tfds.vsr import degrade_uint8
    return np.stack([degrade_uint8(f, kind) for f in gt])


def _stack(paths) -> np.ndarray:
    frames = [read_rgb(p) for p in paths]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"{paths[0].parent}: frames of different sizes {sorted(shapes)}")
    return np.stack(frames)


def _paired_loader(gt_dir: pathlib.Path, lq_dir: pathlib.Path | None, kind: str, max_frames: int | None):
    def load():
        gpaths = _pngs(gt_dir)[:max_frames]
        gt = _stack(gpaths)
        if lq_dir is None:
            return _degrade(gt, kind), gt
        lpaths = _pngs(lq_dir)[:max_frames]
        if [p.name for p in lpaths] != [p.name for p in gpaths]:
            raise ValueError(f"{lq_dir}: LR frame names differ from {gt_dir}")
        lq = _stack(lpaths)
        if lq.shape[1] * SCALE != gt.shape[1] or lq.shape[2] * SCALE != gt.shape[2]:
            raise ValueError(f"{lq_dir}: LR {lq.shape[1]}x{lq.shape[2]} is not GT {gt.shape[1]}x{gt.shape[2]} / {SCALE}")
        return lq, gt
    return load


def reds4_clips(root, degradation: str = "BI", max_frames: int | None = None) -> list[VSRClip]:
    root = pathlib.Path(root)
    out = []
    for c in REDS4:
        gt_dir = root / "train_sharp" / c
        if not gt_dir.is_dir():
            raise FileNotFoundError(f"{gt_dir}: missing (REDS layout: train_sharp/<clip>, train_sharp_bicubic/X4/<clip>)")
        lq_dir = root / "train_sharp_bicubic" / "X4" / c
        lq_dir = lq_dir if degradation == "BI" and lq_dir.is_dir() else None
        out.append(VSRClip(c, _paired_loader(gt_dir, lq_dir, degradation, max_frames)))
    return out


def vid4_clips(root, degradation: str = "BI", max_frames: int | None = None) -> list[VSRClip]:
    root = pathlib.Path(root)
    gt_root = root / "GT"
    if not gt_root.is_dir():
        raise FileNotFoundError(f"{gt_root}: missing (Vid4 layout: GT/<clip>, BIx4/<clip>, BDx4/<clip>)")
    names = [n for n in VID4 if (gt_root / n).is_dir()] or sorted(p.name for p in gt_root.iterdir() if p.is_dir())
    lq_root = root / f"{degradation}x4"
    return [VSRClip(n, _paired_loader(gt_root / n, (lq_root / n) if lq_root.is_dir() else None, degradation,
                                      max_frames)) for n in names]


def vimeo90k_t_clips(root, degradation: str = "BI", max_clips: int | None = None) -> list[VSRClip]:
    from peanut_jax.data.tfds.vsr import VIMEO_SEPTUPLET_FRAMES, read_list
    root = pathlib.Path(root)
    names = read_list(root / "sep_testlist.txt")[:max_clips]
    lq_root = root / f"{degradation}x4"

    def loader(name):
        def load():
            gt = _stack([root / "sequences" / name / f for f in VIMEO_SEPTUPLET_FRAMES])
            if lq_root.is_dir():
                lq = _stack([lq_root / name / f for f in VIMEO_SEPTUPLET_FRAMES])
            else:
                lq = _degrade(gt, degradation)
            return lq, gt[3:4]
        return load
    return [VSRClip(n, loader(n), center_only=True) for n in names]


def synthetic_vsr_clips(num_clips: int = 4, num_frames: int = 7, lq_size: int = 64, degradation: str = "BI",
                        seed: int = 1000, **scene) -> list[VSRClip]:
    """Procedural clips (GT ``4 * lq_size`` square, quantised to uint8) degraded on the fly; the same
    seeds ``(seed, 1, i)`` as the training task's held-out set."""
    from peanut_jax.data.synthetic import generate_clip
    scene = {**dict(num_objects=3, camera_speed=0.01, object_speed=(0.005, 0.02), camera_zoom=0.005,
                    camera_rotation=0.005), **scene}

    def loader(i):
        def load():
            c = generate_clip((seed, 1, i), num_frames, lq_size * SCALE, lq_size * SCALE, **scene)
            gt = np.round(np.clip(c.frames, 0.0, 1.0) * 255.0).astype(np.uint8)
            return _degrade(gt, degradation), gt
        return load
    return [VSRClip(f"synthetic_{i:03d}", loader(i)) for i in range(num_clips)]


def vsr_clips(dataset: str, root=None, degradation: str = "BI", max_clips: int | None = None,
              max_frames: int | None = None, **kw) -> list[VSRClip]:
    if degradation not in ("BI", "BD"):
        raise ValueError(f"degradation must be 'BI' or 'BD', got {degradation!r}")
    if dataset == "synthetic":
        return synthetic_vsr_clips(max_clips or 4, max_frames or 7, degradation=degradation, **kw)
    if root is None:
        raise ValueError(f"dataset {dataset!r} needs --root")
    if dataset == "reds4":
        return reds4_clips(root, degradation, max_frames)[:max_clips]
    if dataset == "vid4":
        return vid4_clips(root, degradation, max_frames)[:max_clips]
    if dataset == "vimeo90k_t":
        return vimeo90k_t_clips(root, degradation, max_clips)
    raise ValueError(f"unknown VSR dataset {dataset!r}; known: reds4, vid4, vimeo90k_t, synthetic")


def _frame_metrics(out: np.ndarray, gt: np.ndarray, crop_border: int) -> dict:
    from peanut_jax.metrics import psnr, ssim
    return {"psnr": psnr(out, gt, crop_border=crop_border), "ssim": ssim(out, gt, crop_border=crop_border),
            "psnr_y": psnr(out, gt, crop_border=crop_border, y_channel=True),
            "ssim_y": ssim(out, gt, crop_border=crop_border, y_channel=True)}


def evaluate_vsr(module, variables, clips: Sequence[VSRClip], *, crop_border: int = 0, chunk: int | None = None,
                 overlap: int = 8, bicubic: bool = True, progress: bool = False) -> dict:
    """Mean metrics over ``clips`` (see the module docstring) and per-clip results under ``'clips'``."""
    from peanut_jax.pipeline.upscale import Upscaler, upscale_video
    from peanut_jax.train.tasks.basicvsr_pp import bicubic_upsample
    scale = int(getattr(module, "output_scale", SCALE))
    if scale != SCALE:
        raise ValueError(f"the model upscales x{scale}; the VSR benchmarks are x{SCALE}")
    runner = Upscaler(module, variables)
    per_clip = {}
    for k, clip in enumerate(clips):
        lq_u8, gt_u8 = clip.load()
        lq = lq_u8.astype(np.float32) / 255.0
        gt = gt_u8.astype(np.float64) / 255.0
        if clip.center_only:
            lq_in = np.concatenate([lq, lq[::-1]], 0)
            out = runner(lq_in)
            t = out.shape[0]
            out = 0.5 * (out[t // 4] + out[-1 - t // 4])
            out = out[None]
            bic = bicubic_upsample(lq[3:4], SCALE) if bicubic else None
        else:
            if chunk:
                out = np.stack(list(upscale_video(lq, module, variables, chunk=chunk, overlap=overlap, clip=False,
                                                  upscaler=runner)))
            else:
                out = runner(lq)
            bic = bicubic_upsample(lq, SCALE) if bicubic else None
        if out.shape != gt.shape:
            raise ValueError(f"clip {clip.name}: output {out.shape} does not match the GT {gt.shape}")
        m = {k2: _mean(v) for k2, v in _frame_metrics(quantize(out), gt, crop_border).items()}
        if bic is not None:
            m.update({f"{k2}_bicubic": _mean(v) for k2, v in _frame_metrics(quantize(bic), gt, crop_border).items()})
        m["frames"] = int(gt.shape[0])
        per_clip[clip.name] = m
        if progress:
            print(f"[{k + 1}/{len(clips)}] {clip.name}: " + ", ".join(f"{a}={b:.4f}" for a, b in m.items()
                                                                   if a != "frames"), file=sys.stderr)
    if not per_clip:
        raise ValueError("no clips to evaluate")
    keys = [k for k in next(iter(per_clip.values())) if k != "frames"]
    result = {k: _mean([m[k] for m in per_clip.values()]) for k in keys}
    result["num_clips"] = len(per_clip)
    result["clips"] = per_clip
    return result


# ------------------------------------------------------------------------ interpolation sets
@dataclasses.dataclass
class Triplet:
    """``load() -> (img0, gt, img1)`` uint8 RGB (H, W, 3)."""
    name: str
    load: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]


def vimeo_triplets(root, max_items: int | None = None) -> list[Triplet]:
    from peanut_jax.data.tfds.vsr import read_list
    root = pathlib.Path(root)
    folder = root / "target" if (root / "target").is_dir() else root / "sequences"
    if not folder.is_dir():
        raise FileNotFoundError(f"{root}: neither target/ (vimeo_interp_test) nor sequences/ (vimeo_triplet)")
    names = read_list(root / "tri_testlist.txt")[:max_items]
    return [Triplet(n, lambda n=n: tuple(read_rgb(folder / n / f) for f in ("im1.png", "im2.png", "im3.png")))
            for n in names]


def ucf101_triplets(root, max_items: int | None = None) -> list[Triplet]:
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: folder not found (UCF101 layout: <dir>/frame_00.png, frame_01_gt.png, "
                                "frame_02.png)")
    dirs = sorted(p for p in root.iterdir() if (p / "frame_01_gt.png").is_file())
    if not dirs:
        raise ValueError(f"{root}: no <dir>/frame_01_gt.png (UCF101 interpolation layout)")
    return [Triplet(d.name, lambda d=d: tuple(read_rgb(d / f) for f in ("frame_00.png", "frame_01_gt.png",
                                                                          "frame_02.png")))
            for d in dirs[:max_items]]


def synthetic_triplets(num: int = 8, height: int = 64, width: int = 64, seed: int = 1000, **scene) -> list[Triplet]:
    """Procedural triplets with the exact middle frame; the training task's held-out seeds ``(seed, 1, i)``."""
    from peanut_jax.data.synthetic import triplet
    scene = {**dict(num_objects=2, camera_speed=0.04, object_speed=(0.03, 0.08), camera_zoom=0.01,
                    camera_rotation=0.01), **scene}

    def loader(i):
        def load():
            return tuple(np.round(np.clip(f, 0, 1) * 255).astype(np.uint8)
                         for f in triplet((seed, 1, i), height, width, **scene))
        return load
    return [Triplet(f"synthetic_{i:03d}", loader(i)) for i in range(num)]


def triplets(dataset: str, root=None, max_items: int | None = None, **kw) -> list[Triplet]:
    if dataset == "synthetic":
        return synthetic_triplets(max_items or 8, **kw)
    if root is None:
        raise ValueError(f"dataset {dataset!r} needs --root")
    if dataset == "vimeo90k":
        return vimeo_triplets(root, max_items)
    if dataset == "ucf101":
        return ucf101_triplets(root, max_items)
    raise ValueError(f"unknown interpolation dataset {dataset!r}; known: vimeo90k, ucf101, synthetic")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def evaluate_interpolation(module, variables, items: Sequence[Triplet], *, channel_order: str = "bgr",
                           scale: float = 1.0, tta: bool = False, progress: bool = False) -> dict:
    """Mean PSNR / ``ssim_matlab`` over ``items`` (see the module docstring), per item under ``'items'``."""
    from peanut_jax.metrics import ssim_matlab
    from peanut_jax.pipeline.interpolate import interpolate_pair
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    flip = (lambda x: x[..., ::-1]) if channel_order == "bgr" else (lambda x: x)  # noqa: E731
    per = {}
    for k, it in enumerate(items):
        i0, gt_u8, i1 = it.load()
        if not (i0.shape == i1.shape == gt_u8.shape):
            raise ValueError(f"triplet {it.name}: frames of different sizes {i0.shape}, {gt_u8.shape}, {i1.shape}")
        a = flip(i0.astype(np.float32) / 255.0)
        b = flip(i1.astype(np.float32) / 255.0)
        pred = flip(interpolate_pair(module, variables, np.ascontiguousarray(a), np.ascontiguousarray(b), 0.5,
                                     scale=scale, tta=tta))
        out = quantize(pred)
        gt = gt_u8.astype(np.float64) / 255.0
        avg = quantize(0.5 * (i0.astype(np.float64) + i1.astype(np.float64)) / 255.0)
        m = {"psnr": _psnr(out, gt), "ssim": float(ssim_matlab(flip(gt)[None], flip(out)[None])),
             "psnr_average": _psnr(avg, gt), "ssim_average": float(ssim_matlab(flip(gt)[None], flip(avg)[None]))}
        per[it.name] = m
        if progress:
            print(f"[{k + 1}/{len(items)}] {it.name}: " + ", ".join(f"{a2}={b2:.4f}" for a2, b2 in m.items()),
                  file=sys.stderr)
    if not per:
        raise ValueError("no triplets to evaluate")
    result = {k: _mean([m[k] for m in per.values()]) for k in next(iter(per.values()))}
    result["num_items"] = len(per)
    result["items"] = per
    return result


# ------------------------------------------------------------------------------- loading models
def load_trained(workdir, step: int | None = None):
    """``(module, variables, config)`` of a ``train.py`` workdir: the model rebuilt by its task from
    ``config.json`` and the params of the latest (or given) checkpoint."""
    import ml_collections
    from peanut_jax.train import tasks as tasks_lib
    from peanut_jax.train.checkpoint import load_tree
    workdir = pathlib.Path(workdir)
    cfg_path = workdir / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: not a train.py workdir (no config.json)")
    config = ml_collections.ConfigDict(json.loads(cfg_path.read_text()))
    task = tasks_lib.get(config.task)
    if not hasattr(task, "make_model"):
        raise ValueError(f"{workdir}: task {config.task!r} has no make_model")
    tree = load_tree(workdir, step)
    return task.make_model(config), {"params": tree["params"]}, config


def _load(kind: str, checkpoint, workdir):
    if (checkpoint is None) == (workdir is None):
        raise ValueError("give exactly one of --checkpoint and --workdir")
    if workdir is not None:
        module, variables, _ = load_trained(workdir)
        return module, variables
    from peanut_jax.pipeline.common import load_model
    return load_model("basicvsr_pp" if kind == "upscale" else "rife", checkpoint)


# ------------------------------------------------------------------------------------------ CLI
def _summary(name: str, r: dict) -> str:
    keys = [k for k, v in r.items() if isinstance(v, float)]
    return f"{name}: " + ", ".join(f"{k}={r[k]:.4f}" for k in keys)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m peanut_jax.pipeline.evaluate_vsr", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="kind", required=True)
    for kind, sets in (("upscale", ("reds4", "vid4", "vimeo90k_t", "synthetic")),
                       ("interpolate", ("vimeo90k", "ucf101", "synthetic"))):
        s = sub.add_parser(kind)
        s.add_argument("--dataset", required=True, choices=sets)
        s.add_argument("--root", default=None, help="dataset folder (see the module docstring for the layouts)")
        s.add_argument("--checkpoint", default=None, help="official checkpoint, exported dir or orbax folder")
        s.add_argument("--workdir", default=None, help="a train.py workdir (model from its config.json)")
        s.add_argument("--max-items", type=int, default=None, help="evaluate only the first N clips/triplets")
        s.add_argument("--json", default=None, help="write the full results (per clip/triplet) here")
        s.add_argument("--quiet", action="store_true")
        if kind == "upscale":
            s.add_argument("--degradation", default="BI", choices=("BI", "BD"))
            s.add_argument("--crop-border", type=int, default=0)
            s.add_argument("--max-frames", type=int, default=None)
            s.add_argument("--chunk", type=int, default=None, help="streaming chunks of N frames (default: whole clip)")
        else:
            s.add_argument("--channel-order", default="bgr", choices=("bgr", "rgb"))
            s.add_argument("--scale", type=float, default=1.0)
            s.add_argument("--tta", action="store_true")
    args = p.parse_args(argv)
    try:
        module, variables = _load(args.kind, args.checkpoint, args.workdir)
        if args.kind == "upscale":
            clips = vsr_clips(args.dataset, args.root, args.degradation, args.max_items, args.max_frames)
            res = evaluate_vsr(module, variables, clips, crop_border=args.crop_border, chunk=args.chunk,
                               progress=not args.quiet)
        else:
            items = triplets(args.dataset, args.root, args.max_items)
            res = evaluate_interpolation(module, variables, items, channel_order=args.channel_order,
                                         scale=args.scale, tta=args.tta, progress=not args.quiet)
        if args.json:
            tmp = pathlib.Path(args.json + ".tmp")
            tmp.write_text(json.dumps(res, indent=2, sort_keys=True))
            os.replace(tmp, args.json)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(_summary(args.dataset, res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
