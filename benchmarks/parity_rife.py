"""Parity of our RIFE models with the official PyTorch code (local development aid, not a test).

Usage::

    PEANUT_REFS=/work/refs python benchmarks/parity_rife.py                 # dumps only
    PEANUT_REFS=/work/refs PEANUT_MIRROR=/work/.mirror python benchmarks/parity_rife.py --official

1. Dumps (``$PEANUT_REFS/dumps/rife_eccv*``, ``rife_hdv3*``): loads the official-format weights with
   ``from_official``, runs every case jitted (fp32, 'highest' matmul precision) and prints the parity
   error max|diff| / max(1, max|ref|) of every output and recorded intermediate.
2. ``--official`` (needs torch and the official repositories as git dirs under ``$PEANUT_MIRROR``;
   their sources are read at run time into a temporary folder, never copied into the project):
   * ECCV ``IFNet_m`` (no dump exists): random official weights saved as a DDP ``flownet.pkl``,
     outputs at t = 0.3 / 0.5 / 0.8, the teacher path and ``Model.inference(TTA=True)``;
   * CogVideoX's ``ssim_interpolation_rife`` (exp 1 and 2) on a synthetic clip with motion, a scene
     cut and a duplicate (size 64x88, not a multiple of 32) with the dump's HDv3 weights, against our
     ``interpolate_video(..., cogvideo_compat=True)``.
"""

from __future__ import annotations

import argparse
import ast
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import types
import warnings

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from peanut_jax.convert import from_official  # noqa: E402
from peanut_jax.testing import parity_error  # noqa: E402

ECCV = "hzwer+ECCV2022-RIFE"
COG = "THUDM+CogVideo"
COG_DIR = "inference/gradio_composite_demo"


def nhwc(a):
    a = np.asarray(a)
    return np.moveaxis(a, 1, -1) if a.ndim == 4 else a


def nchw(a):
    a = np.asarray(a)
    return np.moveaxis(a, -1, 1) if a.ndim == 4 else a


# --------------------------------------------------------------------------------------- dumps


def dump_parity(refs: pathlib.Path) -> float:
    worst = 0.0
    for name, dump in (("rife", "rife_eccv"), ("rife_hdv3", "rife_hdv3")):
        npz = np.load(refs / "dumps" / f"{dump}_io.npz")
        module, variables = from_official(name, refs / "dumps" / f"{dump}.pth")
        print(f"{name}: {module!r}".replace("\n", " "))
        for case in sorted({k.split("/")[0] for k in npz.files if "/" in k}):
            a, b = nhwc(npz[f"{case}/in/img0"]), nhwc(npz[f"{case}/in/img1"])
            gt = nhwc(npz[f"{case}/in/gt"]) if f"{case}/in/gt" in npz.files else None
            fwd = jax.jit(lambda v, a, b, g: module.apply(v, a, b, gt=g, return_all=True, mutable=["intermediates"]))
            t0 = time.perf_counter()
            out, state = fwd(variables, a, b, gt)
            jax.block_until_ready(out)
            print(f"  {case}: (compile + run {time.perf_counter() - t0:.1f} s)")
            ours = {f"flow_list_{i}": out.flow_list[i] for i in range(3)}
            ours.update({f"merged_{i}": out.merged[i] for i in range(3)})
            ours["mask"] = out.mask
            if gt is not None:
                ours.update(
                    flow_teacher=out.flow_teacher, merged_teacher=out.merged_teacher, loss_distill=out.loss_distill
                )
            inter = {k: v[0] for k, v in state["intermediates"].items()}
            ours["block0_flow"] = out.flow_list[0]
            ours.update(inter)
            for key in sorted(k for k in npz.files if k.startswith(f"{case}/out/") or k.startswith(f"{case}/inter/")):
                nm = key.split("/")[-1]
                if nm not in ours:
                    print(f"    {key.split('/', 1)[1]:32s} (not compared)")
                    continue
                err = parity_error(nchw(ours[nm]), npz[key])
                worst = max(worst, err)
                print(f"    {key.split('/', 1)[1]:32s} {err:.2e}")
    return worst


# ---------------------------------------------------------------------------- official sources


def git_show(mirror: pathlib.Path, repo: str, path: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(mirror / repo / "repo"), "show", f"HEAD:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def official_tree(mirror: pathlib.Path) -> pathlib.Path:
    """Official RIFE files into a temporary folder: ``model/`` (ECCV) and ``cog/`` (CogVideoX)."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="rife_official_"))
    (root / "model").mkdir()
    (root / "model" / "__init__.py").write_text("")
    for f in ("IFNet.py", "IFNet_m.py", "refine.py", "warplayer.py"):
        (root / "model" / f).write_text(git_show(mirror, ECCV, f"model/{f}"))
    cog = root / "cog"
    (cog / "rife").mkdir(parents=True)
    for f in ("__init__.py", "IFNet_HDv3.py", "RIFE_HDv3.py", "warplayer.py", "loss.py"):
        (cog / "rife" / f).write_text(git_show(mirror, COG, f"{COG_DIR}/rife/{f}"))
    (cog / "pytorch_msssim.py").write_text(git_show(mirror, COG, f"{COG_DIR}/rife/pytorch_msssim/__init__.py"))
    # only the three pipeline functions of rife_model.py (its imports need diffusers, cv2, skvideo, hf)
    tree = ast.parse(git_show(mirror, COG, f"{COG_DIR}/rife_model.py"))
    fns = [
        n
        for n in tree.body
        if isinstance(n, ast.FunctionDef) and n.name in ("pad_image", "make_inference", "ssim_interpolation_rife")
    ]
    head = (
        "import torch\nfrom torch.nn import functional as F\nfrom pytorch_msssim import ssim_matlab\n"
        "class utils:\n    class ProgressBar:\n        def __init__(self, *a, **k): pass\n"
        "        def update(self, *a): pass\n"
    )
    (cog / "cog_pipeline.py").write_text(head + ast.unparse(ast.Module(body=fns, type_ignores=[])))
    return root


def ifnet_m_parity(root: pathlib.Path, tmp: pathlib.Path) -> float:
    import torch

    sys.path.insert(0, str(root))
    from model.IFNet_m import IFNet_m  # noqa: E402  (official)

    torch.manual_seed(0)
    net = IFNet_m().eval()
    with torch.no_grad():
        for n, p in net.named_parameters():
            p.add_(torch.randn_like(p) * 0.01)
            if "lastconv" in n:
                p.mul_(0.3)  # flows of a few pixels
    path = tmp / "flownet.pkl"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    h, w = 64, 96
    yy, xx = np.mgrid[0:h, 0:w] / 20.0
    base = np.stack([np.sin(xx + c) * np.cos(yy * 1.3 - c) for c in range(3)], 0) * 0.4 + 0.5
    img0 = base[None].astype(np.float32)
    img1 = np.roll(base, 3, axis=2)[None].astype(np.float32)
    gt = np.roll(base, 1, axis=2)[None].astype(np.float32)
    module, v = from_official("rife", path)
    assert module.timestep_input
    a, b, g = nhwc(img0), nhwc(img1), nhwc(gt)
    x = torch.from_numpy(np.concatenate([img0, img1], 1))
    worst = 0.0
    print(f"IFNet_m (official code, random weights, {h}x{w}):")
    with torch.no_grad():
        for t in (0.3, 0.5, 0.8):
            fl, _, merged, _, _, _ = net(x, [4, 2, 1], timestep=t)
            out = module.apply(v, a, b, timestep=t, return_all=True)
            e1 = parity_error(out.merged[2], nhwc(merged[2].numpy()))
            e2 = parity_error(out.flow_list[2], nhwc(fl[2].numpy()))
            worst = max(worst, e1, e2)
            print(f"  t={t}: merged[2] {e1:.2e}  flow[2] {e2:.2e}")
        fl, _, merged, ft, mt, ld = net(torch.cat([x, torch.from_numpy(gt)], 1), [4, 2, 1], timestep=0.3)
        out = module.apply(v, a, b, gt=g, timestep=0.3)
        errs = [
            parity_error(out.flow_teacher, nhwc(ft.numpy())),
            parity_error(out.merged_teacher, nhwc(mt.numpy())),
            parity_error(out.loss_distill, ld.numpy()),
        ]
        worst = max(worst, *errs)
        print(f"  teacher t=0.3: flow_teacher {errs[0]:.2e}  merged_teacher {errs[1]:.2e}  loss_distill {errs[2]:.2e}")
        _, _, m1, _, _, _ = net(x, [4, 2, 1], timestep=0.3)
        _, _, m2, _, _, _ = net(x.flip(2).flip(3), [4, 2, 1], timestep=0.3)
        ref = (m1[2] + m2[2].flip(2).flip(3)) / 2
        e = parity_error(module.apply(v, a, b, timestep=0.3, tta=True), nhwc(ref.numpy()))
        worst = max(worst, e)
        print(f"  TTA (Model.inference(TTA=True) formula): {e:.2e}")
    return worst


def synthetic_clip(n=7, h=64, w=88, cut=3, dup=5):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for t in range(n):
        sign, tt = (1.0, t) if t <= cut else (-1.0, min(t, dup))
        sh = 1.5 * tt - (0.0 if t <= cut else 6.0)
        out.append(
            np.stack([0.5 + sign * 0.4 * np.sin((xx - sh) / 7.0 + c) * np.cos(yy / 9.0 - c) for c in range(3)], -1)
        )
    return np.stack(out).astype(np.float32)


def cogvideo_pipeline_parity(root: pathlib.Path, refs: pathlib.Path, tmp: pathlib.Path) -> float:
    import torch

    from peanut_jax.pipeline.interpolate import interpolate_video

    sys.path.insert(0, str(root / "cog"))
    # the CogVideoX loss module imports torchvision (VGG, unused here)
    tv = types.ModuleType("torchvision")
    tv.models = types.ModuleType("torchvision.models")
    sys.modules.setdefault("torchvision", tv)
    sys.modules.setdefault("torchvision.models", tv.models)
    from cog_pipeline import ssim_interpolation_rife  # noqa: E402  (official functions)
    from rife.RIFE_HDv3 import Model  # noqa: E402  (official)

    wdir = tmp / "hdv3"
    wdir.mkdir()
    (wdir / "flownet.pkl").symlink_to(refs / "dumps" / "rife_hdv3.pth")
    model = Model()
    model.load_model(str(wdir), -1)
    model.eval()
    frames = synthetic_clip()
    module, v = from_official("rife_hdv3", refs / "dumps" / "rife_hdv3.pth")
    worst = 0.0
    print(f"CogVideoX ssim_interpolation_rife vs interpolate_video(cogvideo_compat=True), clip {frames.shape}:")
    for exp in (1, 2):
        with torch.no_grad():
            ref = torch.cat(ssim_interpolation_rife(model, torch.from_numpy(nchw(frames).copy()), exp=exp)).numpy()
        ours = np.stack(
            list(interpolate_video(list(frames), module, v, multi=2**exp, cogvideo_compat=True, batch_size=4))
        )
        e = parity_error(ours, nhwc(ref)) if ours.shape == nhwc(ref).shape else float("inf")
        worst = max(worst, e)
        print(f"  exp={exp}: {len(ours)} frames (official {len(ref)}), parity {e:.2e}")
    return worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refs", default=os.environ.get("PEANUT_REFS"), help="folder with dumps/ (or $PEANUT_REFS)")
    ap.add_argument("--official", action="store_true", help="also run the official code ($PEANUT_MIRROR, torch)")
    ap.add_argument("--mirror", default=os.environ.get("PEANUT_MIRROR"), help="official git dirs (or $PEANUT_MIRROR)")
    args = ap.parse_args(argv)
    if not args.refs:
        ap.error("set --refs or $PEANUT_REFS")
    refs = pathlib.Path(args.refs)
    warnings.simplefilter("ignore", UserWarning)
    worst = dump_parity(refs)
    if args.official:
        if not args.mirror:
            ap.error("--official needs --mirror or $PEANUT_MIRROR")
        import torch

        torch.set_num_threads(2)
        root = official_tree(pathlib.Path(args.mirror))
        with tempfile.TemporaryDirectory() as tmp:
            worst = max(worst, ifnet_m_parity(root, pathlib.Path(tmp)))
            worst = max(worst, cogvideo_pipeline_parity(root, refs, pathlib.Path(tmp)))
    print(f"worst parity error: {worst:.2e} ({'OK' if worst <= 2e-4 else 'ABOVE'} 2e-4)")
    return 0 if worst <= 2e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
