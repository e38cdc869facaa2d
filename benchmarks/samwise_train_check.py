"""One SAMWISE training step, ours vs the official PyTorch code: losses, CME labels and gradients.

Development check (not a test; needs the official sources and a torch venv):

    PEANUT_REFS=/work/refs PEANUT_MIRROR=/work/.mirror \\
        .venv/bin/python benchmarks/samwise_train_check.py --ref-python /work/refvenv/bin/python \\
        [--frames 6] [--height 576] [--width 1024] [--repeats 2] [--core 0] [--out DIR]

Both sides start from the same weights, ``$PEANUT_REFS/dumps/samwise.pth`` (random SAMWISE base+
weights in the official checkpoint format, HSA + CME), and see the same clip (a numpy-drawn clip of
``--frames`` uint8 frames of ``--height x --width``: a texture, a moving target disc and a moving
distractor; the ground truth is the target's mask), the same caption and the same token ids (the
official model tokenises the caption with the harness's stand-in RoBERTa tokenizer; ours is given those
ids).  The sizes follow the official training input: frames resized so that the longer side is 1024
(a 16:9 video gives 576x1024), zero-padded to SAM 2's 1024x1024 input after normalisation, the
loss at the frame size (padded to a multiple of 32), batch 1.  The CME runs on frames ``f > 4``, so
6 frames is the shortest clip that trains it.

Model mode: official ``model.train()`` with every dropout probability set to 0 (``nn.Dropout``,
``nn.MultiheadAttention.dropout``, SAM 2's ``dropout_p``, fairseq's ``FairseqDropout``, ``DropPath``);
the adapters' BatchNorm uses the batch statistics.  Ours: ``make_model(config, train=True)`` with
``deterministic=True`` (dropout off, batch statistics on), run through
``peanut_jax.train.tasks.samwise.train_step`` itself (config ``configs/samwise.py:official_ytvos``
at the clip's size); the gradients are the ones ``train_step`` hands to its ``grad_reduce``.

Official side (``--side official``, run under ``--ref-python``): the model from
``$PEANUT_SHARED/tools/official_ref`` (``Samwise``: ``build_samwise(args)`` as is, ``--HSA
--use_cme_head``, loaded the way the official scripts load a checkpoint); the loss is what
``engine.train_one_epoch`` computes: ``models/segmentation.py:loss_masks`` (executed from the
official repository at run time) on ``torch.cat(outputs['masks'])`` plus the CME cross-entropy
(class weights [1, 2], ignore -1, 0 if NaN), then ``backward()``.  ``get_same_object_labels``
imports ``tools.metrics.eval_i_u``, whose module imports cv2/pycocotools/torchvision; only that one
function is executed from the official ``tools/metrics.py``; ``loss_masks``' ``interpolate`` (official
``torchvision.ops.misc.interpolate``) is ``torch.nn.functional.interpolate``, which it is in
torchvision >= 0.8.

Each side runs in its own process pinned to one core (``taskset -c --core``) with one torch thread
(XLA keeps its defaults), under ``/usr/bin/time -v`` (peak RSS), and is killed if its RSS passes
``--max-rss-gib``.  Step 1 gives the recorded numbers (ours: compile + run); ``--repeats`` more steps
are timed (wall and process CPU seconds; the medians are indicative: the box is shared).

``--forward-only``: no backward pass on either side (the official forward under ``torch.no_grad()``
in train mode; ours the forward of ``train_step``'s ``loss_fn``, ``task.forward_losses``): the loss
terms and CME labels only.  ``--grad-subset project_text,conditional_memory_encoder``: both sides
differentiate only the trainable parameters whose names contain one of those parts (ours:
``train_step``'s ``loss_fn`` w.r.t. that subset; official: ``requires_grad`` off on the others);
their gradients do not depend on the other parameters', and no gradient then passes through Hiera.

Memory (CPU, 12 GiB per process): the full official step fits at 2 frames (8.3 GiB peak) but not at
6 (past 12 GiB during the forward, also with the Hiera blocks under ``torch.utils.checkpoint``); our
full ``train_step`` needs more than 12 GiB at any clip length (XLA's temp buffer: 10.0 GiB at 1
frame, 10.5 GiB at 2, about the same with each Hiera block under ``nn.remat``; the largest buffers are
Hiera's (8, 4096, 4096) global-attention logits, 512 MiB each, eleven of them live at the peak).
What fits: ``--frames 6 --forward-only`` and
``--frames 6 --grad-subset project_text,conditional_memory_encoder``.

Gradients are compared per official parameter through the converter's key map
(``peanut_jax.convert.samwise.keymap``): ``max |ours - official| / max(1, max |official|)`` per
tensor (target 1e-4), also shown relative to the tensor's own scale.  Everything lands in ``--out``
(``clip.npz``, ``official.npz``/``.json``, ``ours.json``, ``report.json``); ``--side ours`` alone
re-runs our side against an existing ``official.npz``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
REFS = pathlib.Path(os.environ.get("PEANUT_REFS", "/tmp/peanut-refs"))
MIRROR = pathlib.Path(os.environ.get("PEANUT_MIRROR", "/work/.mirror"))
SHARED = pathlib.Path(os.environ.get("PEANUT_SHARED", REPO.parent / "shared"))
WEIGHTS = REFS / "dumps/samwise.pth"
SAMWISE_GIT = MIRROR / "ClaudiaCuttano+SAMWISE/repo"
CAPTION = "the red disc moving to the right"
TARGET = 1e-4


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--side", choices=["both", "official", "ours"], default="both")
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--height", type=int, default=576)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=2, help="timed steps after the first")
    p.add_argument("--core", type=int, default=0)
    p.add_argument("--max-rss-gib", type=float, default=12.0)
    p.add_argument("--ref-python", default="/work/refvenv/bin/python")
    p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "samwise_train_check"))
    p.add_argument(
        "--forward-only",
        action="store_true",
        help="compare the training-mode losses and CME labels only (no backward pass: far less memory)",
    )
    p.add_argument(
        "--grad-subset",
        default="",
        help="comma-separated name parts (e.g. project_text,conditional_memory_encoder): ours differentiates "
        "only those trainable parameters (the rest of the backward pass, through Hiera, is not needed)",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if not 1 <= a.frames or max(a.height, a.width) > 1024:
        p.error("--frames must be >= 1 and --height/--width at most 1024 (SAM 2's input)")
    return a


# ------------------------------------------------------------------------------------------ inputs
def make_clip(T: int, H: int, W: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(frames uint8 (T, H, W, 3), target mask uint8 (T, H, W)): a red disc moving right over a
    texture, with a blue disc moving left (a distractor); the mask is the red disc."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64) / H
    frames, masks = [], []
    for t in range(T):
        bg = 110 + 50 * np.sin(23 * xx + 0.2 * t) * np.cos(17 * yy - 0.1 * t)
        img = np.stack([bg, 0.9 * bg, 0.7 * bg], -1)
        red = (xx - (0.35 + 0.05 * t)) ** 2 + (yy - 0.45) ** 2 < 0.14**2
        blue = (xx - (1.3 - 0.04 * t)) ** 2 + (yy - 0.6) ** 2 < 0.11**2
        img[blue] = (30, 40, 230)
        img[red & ~blue] = (235, 45, 35)
        frames.append(np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8))
        masks.append((red & ~blue).astype(np.uint8))
    return np.stack(frames), np.stack(masks)


def _normalise(frames_u8: np.ndarray) -> np.ndarray:
    """ToTensor + Normalize (ImageNet) as float32, (T, H, W, 3)."""
    x = frames_u8.astype(np.float32) / np.float32(255)
    return (x - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)


def _stats(times: list[tuple[float, float]]) -> dict:
    if not times:
        return {}
    return {
        "wall_s": [round(w, 2) for w, _ in times],
        "cpu_s": [round(c, 2) for _, c in times],
        "median_wall_s": round(statistics.median(w for w, _ in times), 2),
        "median_cpu_s": round(statistics.median(c for _, c in times), 2),
    }


# ---------------------------------------------------------------------------------------- official
def _git_show(path: str) -> str:
    return subprocess.check_output(["git", "-C", str(SAMWISE_GIT), "show", f"HEAD:{path}"], text=True)


def _official_losses_module():
    """``models.segmentation`` (official ``loss_masks``) executed from the official repository, and a
    ``tools.metrics`` module holding only the official ``eval_i_u`` (what ``get_same_object_labels``
    imports)."""
    import importlib.util
    import types

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="samwise_official_"))
    seg = tmp / "segmentation.py"
    seg.write_text(_git_show("models/segmentation.py"))
    spec = importlib.util.spec_from_file_location("models.segmentation", seg)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["models.segmentation"] = mod
    spec.loader.exec_module(mod)
    # util.misc.interpolate calls torchvision.ops.misc.interpolate, which torchvision >= 0.8 defines
    # as torch.nn.functional.interpolate (torchvision is not installed: the harness has a stand-in)
    import torch

    mod.interpolate = torch.nn.functional.interpolate
    metrics = tmp / "metrics.py"
    metrics.write_text(_git_show("tools/metrics.py"))
    import peanut_common as pc  # the harness's helpers (on sys.path once the harness is loaded)

    ns = pc.extract_defs(metrics, ["eval_i_u"], {"np": np})
    tools, tm = types.ModuleType("tools"), types.ModuleType("tools.metrics")
    tools.__path__ = []
    tm.eval_i_u = ns["eval_i_u"]
    tools.metrics = tm
    sys.modules.setdefault("tools", tools)
    sys.modules["tools.metrics"] = tm
    return mod


def _no_dropout(model) -> dict:
    """Every dropout probability of ``model`` to 0 (the modules stay in train mode); -> counts."""
    import torch

    n = {}
    for m in model.modules():
        kind = type(m).__name__
        if isinstance(m, torch.nn.modules.dropout._DropoutNd) or kind in ("FairseqDropout",):
            m.p = 0.0
        elif isinstance(m, torch.nn.MultiheadAttention):
            m.dropout = 0.0
        elif isinstance(getattr(m, "dropout_p", None), float):
            m.dropout_p = 0.0
        elif isinstance(getattr(m, "drop_prob", None), float):
            m.drop_prob = 0.0
        else:
            continue
        n[kind] = n.get(kind, 0) + 1
    return n


def run_official(args) -> None:
    import importlib.util

    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    out = pathlib.Path(args.out)
    clip = np.load(out / "clip.npz")
    frames, masks = clip["frames"], clip["masks"]
    T = frames.shape[0]

    tools = SHARED / "tools/official_ref"
    os.environ.setdefault("PEANUT_REFS", str(REFS))
    os.environ.setdefault("PEANUT_MIRROR", str(MIRROR))
    sys.path.insert(0, str(tools))
    spec = importlib.util.spec_from_file_location("official_ref_models", tools / "models.py")
    h = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(h)
    adapter = h.Samwise()
    adapter.cli = ["--HSA", "--use_cme_head", "--device", "cpu"]  # main.py ytvos fine-tuning flags
    model = adapter.load_official(WEIGHTS, seed=0)
    seg = _official_losses_module()
    model.train()
    dropped = _no_dropout(model)
    F = torch.nn.functional

    imgs = torch.from_numpy(_normalise(frames).transpose(0, 3, 1, 2).copy())
    target = {
        "masks": torch.from_numpy(masks),
        "caption": CAPTION,
        "size": torch.as_tensor(masks.shape[1:]),
        "frame_ids": list(range(T)),
    }
    ids = model.tokenizer([CAPTION], add_special_tokens=True, padding=True)["input_ids"]
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    subset = tuple(x for x in args.grad_subset.split(",") if x)
    if subset:  # only these trainable parameters require a gradient (theirs do not depend on the others')
        for k, p in named:
            p.requires_grad_(any(x in k for x in subset))
        named = [(k, p) for k, p in named if p.requires_grad]

    def step():
        model.zero_grad(set_to_none=True)
        with h._cpu_cuda_noop(), torch.set_grad_enabled(not args.forward_only):
            outputs = model([imgs], [CAPTION], [target])
            losses = dict(seg.loss_masks(torch.cat(outputs["masks"]), [target], num_frames=T))
            if "pred_cme_logits" in outputs:  # engine.train_one_epoch
                cme = F.cross_entropy(
                    torch.cat(outputs["pred_cme_logits"]),
                    ignore_index=-1,
                    target=torch.tensor(outputs["cme_label"]).long(),
                    weight=torch.tensor([1.0, 2.0]),
                )
                losses["CME_loss"] = cme if not cme.isnan() else torch.tensor(0.0)
            total = sum(losses.values())
            if not args.forward_only:
                total.backward()
        return outputs, losses, total

    times, totals = [], []
    for r in range(args.repeats + 1):
        w0, c0 = time.perf_counter(), time.process_time()
        outputs, losses, total = step()
        w1, c1 = time.perf_counter(), time.process_time()
        print(f"official step {r}: {w1 - w0:.1f} s wall, {c1 - c0:.1f} s CPU, loss {float(total):.8f}", flush=True)
        totals.append(float(total))
        if r == 0:
            first = (w1 - w0, c1 - c0)
            rec = {f"grad/{k}": p.grad.numpy().copy() for k, p in named if p.grad is not None}
            rec.update({f"loss/{k}": np.asarray(float(v), np.float64) for k, v in losses.items()})
            rec["loss/total"] = np.asarray(float(total), np.float64)
            rec["pred_masks"] = torch.cat(outputs["masks"])[:, 0].detach().numpy()
            rec["cme_labels"] = np.asarray(outputs.get("cme_label", []), np.int64)
            if "pred_cme_logits" in outputs:
                rec["cme_logits"] = torch.cat(outputs["pred_cme_logits"]).detach().numpy()
            rec["input_ids"] = np.asarray(ids, np.int32)
            gn = sum(float((p.grad.double() ** 2).sum()) for k, p in named if p.grad is not None) ** 0.5
            no_grad = [k for k, p in named if p.grad is None]
        else:
            times.append((w1 - w0, c1 - c0))
    tmp = out / "official.tmp.npz"
    np.savez(tmp, **rec)
    os.replace(tmp, out / "official.npz")
    meta = {
        "first_step_wall_cpu_s": [round(v, 2) for v in first],
        "timed": _stats(times),
        "totals_per_step": totals,
        "grad_norm": float(gn),
        "trainable_tensors": len(named),
        "trainable_numel": int(sum(p.numel() for _, p in named)),
        "trainable_without_grad": no_grad,
        "dropout_zeroed": dropped,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "forward_only": bool(args.forward_only),
        "grad_subset": list(subset),
    }
    (out / "official.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(meta, indent=1))


# -------------------------------------------------------------------------------------------- ours
def run_ours(args) -> None:
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    import jax.numpy as jnp
    import optax
    from flax.traverse_util import flatten_dict, unflatten_dict

    sys.path.insert(0, str(REPO))
    from configs.samwise import get_config
    from peanut_jax.convert import from_official
    from peanut_jax.convert.samwise import keymap
    from peanut_jax.train.state import TrainState, build_optimizer
    from peanut_jax.train.tasks import samwise as task

    out = pathlib.Path(args.out)
    clip = np.load(out / "clip.npz")
    ref = dict(np.load(out / "official.npz"))
    frames, masks = clip["frames"], clip["masks"]
    T, H, W = masks.shape
    ids = ref["input_ids"]

    config = get_config("official_ytvos")
    with config.unlocked():
        config.model.init_from = ""
        config.data.update(num_frames=T, height=H, width=W, max_size=max(H, W), batch_size=1)
        config.data.max_tokens = int(ids.shape[1])
    module, variables = from_official("samwise", WEIGHTS)
    if module.cfg != task.model_config(config):
        raise SystemExit(f"the checkpoint's SAMWISE config differs from official_ytvos: {module.cfg}")

    make_model = task.make_model

    def no_dropout_model(cfg, train=False):  # official model.train() with every dropout p = 0
        m = make_model(cfg, train)
        return m.clone(deterministic=True) if train else m

    task.make_model = no_dropout_model
    mode = task.trainable_mode(config)
    trainable, _ = task.split_params(variables["params"], mode)
    tx, _ = build_optimizer(config.optim, int(config.train.num_steps))
    state = TrainState.create(
        params=variables["params"],
        opt_state=tx.init(trainable),
        rng=jax.random.PRNGKey(0),
        extra={"batch_stats": variables["batch_stats"]},
    )
    batch = {
        "frames": jnp.asarray(frames[None]),
        "input_ids": jnp.asarray(ids),
        "padding_mask": jnp.asarray(ids == 1),
        "masks": jnp.asarray(masks[None]),
    }
    captured = {}
    subset = tuple(x for x in args.grad_subset.split(",") if x)
    if subset and not all(any(x in k for k in task.TRAINABLE_KEYS) or x in task.TRAINABLE_KEYS for x in subset):
        raise SystemExit(f"--grad-subset {args.grad_subset}: not among the trainable names {task.TRAINABLE_KEYS}")

    def grad_reduce(g):
        captured["g"] = g
        return g

    @jax.jit
    def step(state, batch):
        if args.forward_only:  # the forward of train_step's loss_fn, without the gradient
            model = task.make_model(config, train=True)
            loss, (terms, _) = task.forward_losses(
                model, state.params, state.extra["batch_stats"], batch, state.step_rng(0), model.cfg.use_cme
            )
            return dict(terms, loss=loss), {}
        if subset:  # train_step's loss_fn, differentiated w.r.t. a subset of the trainable parameters
            model = task.make_model(config, train=True)
            flat = flatten_dict(state.params)
            sub = {k: v for k, v in flat.items() if any(x in "/".join(k) for x in subset)}
            rest = unflatten_dict({k: v for k, v in flat.items() if k not in sub})

            def loss_fn(tp):
                return task.forward_losses(
                    model,
                    task.merge_params(tp, rest),
                    state.extra["batch_stats"],
                    batch,
                    state.step_rng(0),
                    model.cfg.use_cme,
                )

            (loss, (terms, _)), g = jax.value_and_grad(loss_fn, has_aux=True)(unflatten_dict(sub))
            return dict(terms, loss=loss, grad_norm=optax.global_norm(g)), g
        _, metrics = task.train_step(state, batch, config, grad_reduce)
        return metrics, captured["g"]

    times = []
    for r in range(args.repeats + 1):
        w0, c0 = time.perf_counter(), time.process_time()
        metrics, grads = jax.block_until_ready(step(state, batch))
        w1, c1 = time.perf_counter(), time.process_time()
        print(
            f"ours step {r}: {w1 - w0:.1f} s wall, {c1 - c0:.1f} s CPU, loss {float(metrics['loss']):.8f}", flush=True
        )
        if r == 0:
            first = (w1 - w0, c1 - c0)
            m0 = {k: float(v) for k, v in metrics.items()}
            g0 = {k: np.asarray(v) for k, v in flatten_dict(grads).items()}
        else:
            times.append((w1 - w0, c1 - c0))

    # ---- compare
    rules = keymap(module.cfg).rules
    rows, covered = [], set()
    for tkey, path, fwd, _ in rules:
        if path[0] != "params" or path[1:] not in g0:
            continue
        covered.add(path[1:])
        o = g0[path[1:]].astype(np.float64)
        gk = f"grad/{tkey}"
        r_ = fwd(ref[gk]).astype(np.float64) if gk in ref else np.zeros_like(o)
        d = float(np.max(np.abs(o - r_))) if o.size else 0.0
        scale = float(np.max(np.abs(r_))) if r_.size else 0.0
        rows.append(
            {
                "official": tkey,
                "ours": "/".join(path[1:]),
                "numel": int(o.size),
                "max_abs_official": scale,
                "max_abs_diff": d,
                "err": d / max(1.0, scale),
                "rel_to_scale": d / scale if scale > 0 else (0.0 if d == 0 else float("inf")),
                "official_has_grad": gk in ref,
            }
        )
    uncovered = sorted("/".join(k) for k in g0 if k not in covered)
    official_unmapped = sorted(
        k[5:]
        for k in ref
        if k.startswith("grad/")
        and k[5:] not in {r["official"] for r in rows}
        and (not subset or any(x in k for x in subset))
    )
    labels = ref["cme_labels"]
    loss_pairs = {
        "loss_mask": ("loss/loss_mask", m0.get("loss_mask")),
        "loss_dice": ("loss/loss_dice", m0.get("loss_dice")),
        "loss_cme": ("loss/CME_loss", m0.get("loss_cme")),
        "total": ("loss/total", m0.get("loss")),
    }
    losses = {}
    for name, (rk, ours_v) in loss_pairs.items():
        off_v = float(ref[rk]) if rk in ref else None
        losses[name] = {
            "official": off_v,
            "ours": ours_v,
            "abs_diff": None if off_v is None or ours_v is None else abs(off_v - ours_v),
        }
    off_meta = json.loads((out / "official.json").read_text())
    if args.forward_only:
        rows = [{"err": float("nan"), "numel": 0, "rel_to_scale": 0.0, "max_abs_official": 1.0}]
    worst = max(rows, key=lambda r: r["err"])
    worst_rel = max((r for r in rows if r["max_abs_official"] > 0), key=lambda r: r["rel_to_scale"])
    report = {
        "clip": {"frames": T, "height": H, "width": W, "caption": CAPTION, "input_ids": ids.tolist()},
        "losses": losses,
        "cme": {
            "official_labels": labels.tolist(),
            "ours_labelled_fraction": m0.get("cme_labelled"),
            "ours_switch_label_fraction": m0.get("cme_switch_label"),
            "official_logits": ref.get("cme_logits", np.zeros((0, 2))).tolist(),
        },
        "grad_norm": {
            "official": off_meta["grad_norm"],
            "ours": m0.get("grad_norm"),
            "official_over_compared_tensors": float(
                np.sqrt(
                    sum(
                        float(np.sum(ref[f"grad/{r['official']}"].astype(np.float64) ** 2))
                        for r in rows
                        if r.get("official_has_grad")
                    )
                )
            ),
            "ours_over": "the compared tensors" if subset else "all trainable tensors",
        },
        "grad_subset": list(subset),
        "forward_only": bool(args.forward_only),
        "grads": {
            "tensors": len(rows),
            "numel": int(sum(r["numel"] for r in rows)),
            "max_err": worst["err"],
            "worst": worst,
            "worst_rel_to_scale": worst_rel,
            "target": TARGET,
            "pass": bool(worst["err"] <= TARGET and not uncovered and not official_unmapped),
            "ours_not_in_keymap": uncovered,
            "official_not_mapped": official_unmapped,
            "official_trainable_without_grad": off_meta["trainable_without_grad"],
        },
        "timing_indicative": {
            "official": {"first_step_wall_cpu_s": off_meta["first_step_wall_cpu_s"], **off_meta["timed"]},
            "ours": {"first_step_incl_compile_wall_cpu_s": [round(v, 2) for v in first], **_stats(times)},
        },
        "ours_metrics": m0,
        "jax": jax.__version__,
    }
    rows.sort(key=lambda r: -r["err"])
    report["grads"]["top10"] = rows[:10]
    (out / "ours.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("losses", "cme", "grad_norm")}, indent=1))
    print(json.dumps({k: v for k, v in report["grads"].items() if k != "top10"}, indent=1))


# ------------------------------------------------------------------------------------ orchestrator
def _tree_rss(pid: int) -> int:
    """RSS (bytes) of ``pid`` and its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            pass
    return total


def _run_child(args, side: str, python: str) -> dict:
    out = pathlib.Path(args.out)
    cmd = ["taskset", "-c", str(args.core), "/usr/bin/time", "-v", python, __file__, "--child", "--side", side]
    cmd += ["--frames", str(args.frames), "--height", str(args.height), "--width", str(args.width)]
    cmd += ["--repeats", str(args.repeats), "--out", str(out)]
    cmd += ["--forward-only"] * args.forward_only
    cmd += ["--grad-subset", args.grad_subset] if args.grad_subset else []
    print("$ " + " ".join(cmd), flush=True)
    env = dict(os.environ, PEANUT_REFS=str(REFS), PEANUT_MIRROR=str(MIRROR), PEANUT_SHARED=str(SHARED))
    env.setdefault("JAX_PLATFORMS", "cpu")
    log = open(out / f"{side}.log", "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    killed = {}

    def watch():
        limit = args.max_rss_gib * 2**30
        while proc.poll() is None:
            rss = _tree_rss(proc.pid)
            if rss > limit:
                killed["rss"] = rss
                proc.kill()  # /usr/bin/time; its child follows below
                for p in _children(proc.pid):
                    os.kill(p, 9)
                return
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()
    text = []
    for line in proc.stdout:
        log.write(line)
        log.flush()
        text.append(line)
        if "Maximum resident" in line or not line.startswith("\t"):
            print(f"[{side}] {line}", end="", flush=True)
    rc = proc.wait()
    log.close()
    if killed:
        raise SystemExit(f"{side}: killed at {killed['rss'] / 2**30:.1f} GiB RSS (--max-rss-gib {args.max_rss_gib})")
    if rc:
        raise SystemExit(f"{side}: exit status {rc}, see {out / (side + '.log')}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", "".join(text))
    return {"peak_rss_gib": round(int(m.group(1)) / 2**20, 2) if m else None, "command": " ".join(cmd)}


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def main(argv=None) -> None:
    args = _parse(argv)
    if args.child:
        return run_official(args) if args.side == "official" else run_ours(args)
    if not WEIGHTS.is_file():
        raise SystemExit(f"--: {WEIGHTS} missing (set PEANUT_REFS; the harness's ref_dump.py samwise writes it)")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames, masks = make_clip(args.frames, args.height, args.width)
    np.savez(out / "clip.npz", frames=frames, masks=masks)
    rss = {}
    if args.side in ("both", "official"):
        rss["official"] = _run_child(args, "official", args.ref_python)
    if args.side in ("both", "ours"):
        if not (out / "official.npz").is_file():
            raise SystemExit(f"--side ours: {out / 'official.npz'} missing (run --side official first)")
        rss["ours"] = _run_child(args, "ours", sys.executable)
    if (out / "ours.json").is_file():
        report = json.loads((out / "ours.json").read_text())
        report["processes"] = rss
        report["machine"] = {"cpus": os.cpu_count(), "load_avg": os.getloadavg(), "core": args.core}
        (out / "report.json").write_text(json.dumps(report, indent=1))
        print(json.dumps({"processes": rss, "timing_indicative": report["timing_indicative"]}, indent=1))
        if not args.forward_only:
            print(f"grads: max err {report['grads']['max_err']:.3g} (target {TARGET}) pass={report['grads']['pass']}")


if __name__ == "__main__":
    main()
