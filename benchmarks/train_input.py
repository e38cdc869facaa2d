"""Training input throughput: the official BasicVSR++ and E2FGVI batches built in this process
(``config.train.data_workers=0``) and in grain worker processes, from local fixture datasets.

    JAX_PLATFORMS=cpu python benchmarks/train_input.py [--workers 0,1,2] [--batches 4] [--step]

Fixtures (built once in a temporary folder, or ``--root DIR`` to keep/reuse them), as the tests
build theirs (``peanut_jax.data.tfds`` builders on a fake ``manual_dir``):

* ``reds_vsr/bi``: 2 training clips of 32 frames, GT 1280x720 PNG and LR 320x180 PNG.  Frames are
  the real REDS LR frames of ``../shared/data/vsr_demo_000`` upscaled x4 (bicubic) plus Gaussian
  noise (sigma 2), so a GT PNG is about as large and as slow to decode as a real REDS one; without
  ``../shared`` smooth random fields plus the same noise.
* ``youtube_vos_inpainting/432x240``: 2 videos of 70 JPEG frames (``../shared/data/tennis``, the
  second reversed; without it random fields), resized/re-encoded by the builder as for training.

Batches of the official recipes: BasicVSR++ ``configs/basicvsr_pp.py:official`` (8 clips x 30
frames, 64 px LR crops of 320x180 frames: 240 GT + 240 LR PNG decodes per batch) and E2FGVI
``configs/e2fgvi.py:official`` (8 clips x (5 + 3) frames at 432x240 and E2FGVI's random masks
over the whole video).  For each worker count: the time to the first two batches (start-up: the
first batch is built in this process while the workers spawn), then the steady rate over
``--batches`` batches; CPU seconds of this process per batch and of the workers in all (from
``/proc``, start-up included); the time to close (the workers finish the batch they are building);
every batch is compared with the in-process one (bit-identical).

``--step`` also runs the training loop (``train_and_evaluate``) on the ``tiny`` config of
``--step-tasks`` (synthetic data, CPU) with 0 and 2 workers and reports steps/s.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image

from benchmarks.common import machine, report

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def _random_field(rng, h, w):
    """A smooth random RGB image (low-frequency noise upsampled), uint8."""
    small = rng.integers(0, 256, (h // 40 + 2, w // 40 + 2, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def _lr_frames(n: int, rng) -> list[np.ndarray]:
    """``n`` 320x180 LR frames: the real demo frames (cycled, shifted) or random fields."""
    files = sorted((SHARED / "vsr_demo_000").glob("*.png"))
    if not files:
        return [_random_field(rng, 180, 320) for _ in range(n)]
    real = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    return [np.roll(real[i % len(real)], 7 * (i // len(real)), axis=1) for i in range(n)]


def make_reds(root: pathlib.Path, clips=("001", "002"), frames: int = 32) -> pathlib.Path:
    """A ``reds_vsr/bi`` dataset of ``clips`` x ``frames`` 720p frames; returns its data_dir."""
    from peanut_jax.data.tfds import vsr

    data_dir = root / "tfds_reds"
    if (data_dir / "reds_vsr").is_dir():
        return data_dir
    rng = np.random.default_rng(0)
    manual = root / "REDS"
    for c in clips:
        (manual / "train_sharp" / c).mkdir(parents=True, exist_ok=True)
        (manual / "train_sharp_bicubic" / "X4" / c).mkdir(parents=True, exist_ok=True)
        for i, lr in enumerate(_lr_frames(frames, rng)):
            gt = np.asarray(Image.fromarray(lr).resize((1280, 720), Image.BICUBIC), np.float32)
            gt = np.clip(gt + rng.normal(0, 2, gt.shape), 0, 255).astype(np.uint8)
            Image.fromarray(gt).save(manual / "train_sharp" / c / f"{i:08d}.png")
            Image.fromarray(lr).save(manual / "train_sharp_bicubic" / "X4" / c / f"{i:08d}.png")
    vsr.build("reds_vsr", manual, data_dir, config="bi")
    return data_dir


def make_youtube(root: pathlib.Path, videos: int = 2, frames: int = 70) -> pathlib.Path:
    """A ``youtube_vos_inpainting/432x240`` dataset of ``videos`` JPEG videos; returns its data_dir."""
    import json

    from peanut_jax.data.tfds import build

    data_dir = root / "tfds_ytvos"
    if (data_dir / "youtube_vos_inpainting").is_dir():
        return data_dir
    rng = np.random.default_rng(1)
    files = sorted((SHARED / "tennis" / "frames").glob("*.png"))
    manual = root / "ytvos"
    counts = {}
    for v in range(videos):
        d = manual / "JPEGImages" / f"vid{v}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(frames):
            if files:
                img = Image.open(files[(i if v % 2 == 0 else -1 - i) % len(files)]).convert("RGB")
            else:
                img = Image.fromarray(_random_field(rng, 240, 432))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=95)
            (d / f"{i:05d}.jpg").write_bytes(buf.getvalue())
        counts[f"vid{v}"] = frames
    (manual / "train.json").write_text(json.dumps(counts))
    build("youtube_vos_inpainting", manual, data_dir, config="432x240")
    return data_dir


def png_decode_ms(data_dir: pathlib.Path, n: int = 20) -> float:
    """Median ms to decode one GT frame of the REDS fixture (``decode_png``)."""
    from peanut_jax.data.tfds import vsr
    from peanut_jax.data.tfds.common import decode_png

    src, _ = vsr.open_split("reds_vsr", data_dir, "train", "bi")
    times = []
    for i in range(n):
        data = src[i]["gt"]
        t0 = time.perf_counter()
        decode_png(data)
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def official_config(name: str, data_dir: pathlib.Path, workers: int):
    if name == "basicvsr_pp":
        from configs.basicvsr_pp import get_config

        c = get_config("official").unlock()
        c.data.tfds_data_dir = str(data_dir)
    else:
        from configs.e2fgvi import get_config

        c = get_config("official").unlock()
        c.data.update(tfds_data_dir=str(data_dir), split="train")
    c.train.data_workers = workers
    return c


def _digest(batch: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(batch):
        h.update(k.encode())
        h.update(str(batch[k].dtype).encode() + str(batch[k].shape).encode())
        h.update(np.ascontiguousarray(batch[k]).tobytes())
    return h.hexdigest()


def _children_cpu() -> dict[int, float]:
    """``{pid: CPU seconds (user + system)}`` of this process's live child processes (Linux ``/proc``)."""
    me, out = os.getpid(), {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            out[int(pid)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def measure(name: str, config, batches: int) -> dict:
    """Start-up (first two batches), steady batches/s and closing time of ``config``'s train batches."""
    from peanut_jax.train import tasks

    task = tasks.get(name)
    children0 = _children_cpu()
    cpu0, t0 = time.process_time(), time.perf_counter()
    it = task.train_batches(config, 0, 0, 1)
    digests = [_digest(next(it)), _digest(next(it))]
    t_start = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _ in range(batches):
        digests.append(_digest(next(it)))
    steady = time.perf_counter() - t1
    main_cpu = time.process_time() - cpu0
    # the workers this run started, start-up (imports) included
    worker_cpu = sum(v for pid, v in _children_cpu().items() if pid not in children0)
    t2 = time.perf_counter()
    it.close()  # stops the workers (each finishes the batch it is building) and joins them
    return dict(
        startup_s=t_start,
        s_per_batch=steady / batches,
        batches_per_s=batches / steady,
        main_cpu_s_per_batch=main_cpu / (batches + 2),
        worker_cpu_s=worker_cpu,
        close_s=time.perf_counter() - t2,
        digests=digests,
    )


def step_rate(name: str, workers: int, steps: int) -> float:
    """steps/s of ``train_and_evaluate`` on the ``tiny`` config (synthetic data) with ``workers``."""
    import importlib

    from peanut_jax.train import train_and_evaluate

    c = importlib.import_module(f"configs.{name}").get_config("tiny").unlock()
    c.train.update(num_steps=steps, eval_every=0, checkpoint_every=10**9, progress=False, tensorboard=False)
    c.train.data_workers = workers
    with tempfile.TemporaryDirectory() as wd:
        return float(train_and_evaluate(c, wd, handle_sigint=False).steps_per_sec)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="0,1,2", help="comma-separated worker counts (0: in this process)")
    p.add_argument("--batches", type=int, default=4, help="BasicVSR++ batches timed after the first two")
    p.add_argument("--e2fgvi-batches", type=int, default=12, help="E2FGVI batches timed after the first two")
    p.add_argument("--tasks", default="basicvsr_pp,e2fgvi")
    p.add_argument("--root", default="", help="folder for the fixture datasets (default: a temporary one)")
    p.add_argument("--step", action="store_true", help="also time the tiny configs' train loop (0 and 2 workers)")
    p.add_argument("--step-steps", type=int, default=12)
    p.add_argument("--step-tasks", default="basicvsr_pp", help="tasks whose tiny config --step runs")
    p.add_argument("--json", default="", help="write the rows here")
    args = p.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    if 0 not in workers:
        workers = [0] + workers  # the reference for the bit-identity check
    tmp = None if args.root else tempfile.TemporaryDirectory(prefix="train_input_")
    root = pathlib.Path(args.root or tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"machine: {machine()} | load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)

    t0 = time.perf_counter()
    dirs = {}
    if "basicvsr_pp" in args.tasks:
        dirs["basicvsr_pp"] = make_reds(root)
        print(f"REDS fixture: 720p GT PNG decode {png_decode_ms(dirs['basicvsr_pp']):.1f} ms (median)", flush=True)
    if "e2fgvi" in args.tasks:
        dirs["e2fgvi"] = make_youtube(root)
    print(f"fixtures ready in {time.perf_counter() - t0:.0f} s ({root})", flush=True)

    rows = []
    for name, data_dir in dirs.items():
        ref = None
        for w in workers:
            n = args.batches if name == "basicvsr_pp" else args.e2fgvi_batches
            r = measure(name, official_config(name, data_dir, w), n)
            digests = r.pop("digests")
            if w == 0:
                ref, base = digests, r["s_per_batch"]
            rows.append(
                dict(
                    task=name,
                    workers=w,
                    **r,
                    speedup=base / r["s_per_batch"],
                    identical="yes" if digests == ref else "NO",
                )
            )
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    load = os.getloadavg()
    report(rows, f"training input, official batches (load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")
    if args.step:
        srows = []
        for name in args.step_tasks.split(","):
            for w in (0, 2):
                srows.append(dict(task=f"{name}:tiny", workers=w, steps_per_s=step_rate(name, w, args.step_steps)))
                print(srows[-1], flush=True)
        report(srows, "train loop on the tiny configs (synthetic data, CPU)")
        rows += srows
    if args.json:
        import json

        pathlib.Path(args.json).write_text(json.dumps({"machine": machine(), "load": load, "rows": rows}, indent=1))
    if any(r.get("identical") == "NO" for r in rows):
        sys.exit("worker batches differ from the in-process ones")


if __name__ == "__main__":
    main()
