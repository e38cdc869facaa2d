"""Frame-interpolation evaluation (RIFE), the official ``benchmark/*.py`` protocol.

The pair goes through ``interpolate_pair`` (padding to the model multiple, no TTA by default), the
output is rounded to 8 bits, PSNR ``-10 log10(mse)`` and ``ssim_matlab`` against the GT are
averaged over triplets; frames are fed in BGR order (``channel_order='bgr'``) as the official
scripts read them with OpenCV.  The average of the two inputs is measured alongside (``*_average``).
Layouts: ``vimeo90k``: ``root/target/<name>/im1..3.png`` (``vimeo_interp_test``) or
``root/sequences/...`` (``vimeo_triplet``) + ``root/tri_testlist.txt``; ``ucf101``:
``root/<dir>/frame_00.png, frame_01_gt.png, frame_02.png``; ``synthetic``: procedural triplets.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from collections.abc import Callable, Sequence

import numpy as np

from peanut_jax.evaluate.common import mean, quantize, read_list, read_rgb

DATASETS = ("vimeo90k", "ucf101", "synthetic")

__all__ = [
    "DATASETS",
    "Triplet",
    "evaluate_interpolation",
    "synthetic_triplets",
    "triplets",
    "ucf101_triplets",
    "vimeo_triplets",
]


@dataclasses.dataclass
class Triplet:
    """``load() -> (img0, gt, img1)`` uint8 RGB (H, W, 3)."""

    name: str
    load: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]


def vimeo_triplets(root, max_items: int | None = None) -> list[Triplet]:
    root = pathlib.Path(root)
    folder = root / "target" if (root / "target").is_dir() else root / "sequences"
    if not folder.is_dir():
        raise FileNotFoundError(f"{root}: neither target/ (vimeo_interp_test) nor sequences/ (vimeo_triplet)")
    names = read_list(root / "tri_testlist.txt")[:max_items]
    return [
        Triplet(n, lambda n=n: tuple(read_rgb(folder / n / f) for f in ("im1.png", "im2.png", "im3.png")))
        for n in names
    ]


def ucf101_triplets(root, max_items: int | None = None) -> list[Triplet]:
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: folder not found (UCF101 layout: <dir>/frame_00.png, frame_01_gt.png, frame_02.png)"
        )
    dirs = sorted(p for p in root.iterdir() if (p / "frame_01_gt.png").is_file())
    if not dirs:
        raise ValueError(f"{root}: no <dir>/frame_01_gt.png (UCF101 interpolation layout)")
    return [
        Triplet(d.name, lambda d=d: tuple(read_rgb(d / f) for f in ("frame_00.png", "frame_01_gt.png", "frame_02.png")))
        for d in dirs[:max_items]
    ]


def synthetic_triplets(num: int = 8, height: int = 64, width: int = 64, seed: int = 1000, **scene) -> list[Triplet]:
    """Procedural triplets with the exact middle frame; the training task's held-out seeds ``(seed, 1, i)``."""
    from peanut_jax.data.synthetic import triplet

    scene = {
        "num_objects": 2,
        "camera_speed": 0.04,
        "object_speed": (0.03, 0.08),
        "camera_zoom": 0.01,
        "camera_rotation": 0.01,
        **scene,
    }

    def loader(i):
        def load():
            return tuple(
                np.round(np.clip(f, 0, 1) * 255).astype(np.uint8) for f in triplet((seed, 1, i), height, width, **scene)
            )

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


def evaluate_interpolation(
    module,
    variables,
    items: Sequence[Triplet],
    *,
    channel_order: str = "bgr",
    scale: float = 1.0,
    tta: bool = False,
    progress: bool = False,
) -> dict:
    """Mean PSNR / ``ssim_matlab`` over ``items`` (see the module docstring), per item under ``'items'``."""
    from peanut_jax.metrics import psnr, ssim_matlab
    from peanut_jax.pipeline.interpolate import interpolate_pair

    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    flip = (lambda x: x[..., ::-1]) if channel_order == "bgr" else (lambda x: x)
    per = {}
    for k, it in enumerate(items):
        i0, gt_u8, i1 = it.load()
        if not (i0.shape == i1.shape == gt_u8.shape):
            raise ValueError(f"triplet {it.name}: frames of different sizes {i0.shape}, {gt_u8.shape}, {i1.shape}")
        a = flip(i0.astype(np.float32) / 255.0)
        b = flip(i1.astype(np.float32) / 255.0)
        pred = flip(
            interpolate_pair(
                module, variables, np.ascontiguousarray(a), np.ascontiguousarray(b), 0.5, scale=scale, tta=tta
            )
        )
        out = quantize(pred)
        gt = gt_u8.astype(np.float64) / 255.0
        avg = quantize(0.5 * (i0.astype(np.float64) + i1.astype(np.float64)) / 255.0)
        m = {
            "psnr": psnr(out, gt, reduction="all", formula="rife"),
            "ssim": float(ssim_matlab(flip(gt)[None], flip(out)[None])),
            "psnr_average": psnr(avg, gt, reduction="all", formula="rife"),
            "ssim_average": float(ssim_matlab(flip(gt)[None], flip(avg)[None])),
        }
        per[it.name] = m
        if progress:
            print(
                f"[{k + 1}/{len(items)}] {it.name}: " + ", ".join(f"{a2}={b2:.4f}" for a2, b2 in m.items()),
                file=sys.stderr,
            )
    if not per:
        raise ValueError("no triplets to evaluate")
    result = {k: mean([m[k] for m in per.values()]) for k in next(iter(per.values()))}
    result["num_items"] = len(per)
    result["items"] = per
    return result
