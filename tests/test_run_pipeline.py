"""The end-to-end chain (``infer.py run``): streaming orchestration, outputs, errors, batch mode, audio,
the real stage models on tiny clips, and the bundled demo's recorded metrics.

Orchestration tests use small numpy stages (subclasses of ``Stage`` with exactly known outputs) so
they run in milliseconds; the ``real`` tests run the actual E2FGVI / BasicVSR++ / RIFE stages with
tiny random models (or the shipped demo weights).
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from conftest import shared_path
from PIL import Image

from peanut_jax import pipeline as R
from peanut_jax.cli.manifest import read_manifest, run_manifest
from peanut_jax.data.video_io import open_video, read_frames
from peanut_jax.pipeline import erase as E
from peanut_jax.pipeline.common import enable_compilation_cache
from peanut_jax.pipeline.telemetry import run_parallel

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import infer  # noqa: E402


# =============================================================================== fake stages
class FakeErase(R.Stage):
    """Paints the masked pixels grey (known output)."""

    name, needs_masks = "erase", True

    def __init__(self, fail_at=None, exc=RuntimeError):
        self.fail_at, self.exc, self.seen = fail_at, exc, 0

    def __call__(self, items, info):
        for i, fr in enumerate(items):
            if self.fail_at is not None and i == self.fail_at:
                raise self.exc("simulated failure in the middle of the clip")
            self.seen += 1
            out = fr.image.copy()
            out[fr.mask] = 128
            yield R.Frame(out, None, i)


class FakeUpscale(R.Stage):
    """Nearest x2 with a 3-frame look-ahead (a streaming window, like the real stage)."""

    name = "upscale"

    def output_info(self, info):
        return R.StreamInfo(info.num_frames, info.height * 2, info.width * 2, info.fps)

    def __call__(self, items, info):
        buf = []
        for fr in items:
            buf.append(fr)
            if len(buf) > 3:
                f = buf.pop(0)
                yield f.replace(image=f.image.repeat(2, 0).repeat(2, 1), mask=None)
        for f in buf:
            yield f.replace(image=f.image.repeat(2, 0).repeat(2, 1), mask=None)


class FakeInterp(R.Stage):
    """x2: midpoints are the rounded mean of the neighbours."""

    name = "interpolate"

    def output_info(self, info):
        return R.StreamInfo((info.num_frames - 1) * 2 + 1, info.height, info.width, info.fps * 2)

    def __call__(self, items, info):
        prev, j = None, 0
        for fr in items:
            f = fr.image
            if prev is not None:
                yield R.Frame(((prev.astype(np.uint16) + f + 1) // 2).astype(np.uint8), None, j)
                j += 1
            yield R.Frame(f, None, j)
            j += 1
            prev = f


def clip(t=6, h=16, w=24, seed=0):
    """Smooth moving colour patterns (so that x264 keeps them close) plus a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    ph = rng.uniform(0, 6, 3)
    f = np.stack(
        [
            np.stack(
                [
                    np.sin((xx - 1.5 * i) / 6 + ph[0]),
                    np.cos((yy + i) / 5 + ph[1]),
                    np.sin((xx + yy) / 9 + ph[2] + 0.2 * i),
                ],
                -1,
            )
            for i in range(t)
        ]
    )
    f = 127.5 + 100 * f + rng.normal(0, 2, f.shape)
    return np.clip(np.round(f), 0, 255).astype(np.uint8)


def square_masks(t=6, h=16, w=24):
    m = np.zeros((t, h, w), bool)
    for i in range(t):
        m[i, 4:10, 2 + 2 * i : 8 + 2 * i] = True
    return m


def write_frames(folder, frames):
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:05d}.png")
    return folder


def write_masks(folder, masks):
    folder.mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(masks):
        Image.fromarray(m.astype(np.uint8) * 255).save(folder / f"{i:05d}.png")
    return folder


def expected(frames, masks, stages):
    """The fake chain's output computed directly."""
    out = [f.copy() for f in frames]
    if "erase" in stages:
        for f, m in zip(out, masks):
            f[m] = 128
    if "upscale" in stages:
        out = [f.repeat(2, 0).repeat(2, 1) for f in out]
    if "interpolate" in stages:
        res = [out[0]]
        for a, b in zip(out[:-1], out[1:]):
            res += [((a.astype(np.uint16) + b + 1) // 2).astype(np.uint8), b]
        out = res
    return np.stack(out)


def leftovers(folder):
    return sorted(p.name for p in pathlib.Path(folder).iterdir() if p.name.startswith("."))


@pytest.fixture
def job(tmp_path):
    frames, masks = clip(), square_masks()
    return dict(
        dir=tmp_path,
        frames=frames,
        masks=masks,
        video=write_frames(tmp_path / "in", frames),
        mask_dir=write_masks(tmp_path / "masks", masks),
    )


# =============================================================================== orchestration
@pytest.mark.parametrize(
    "stages",
    [
        ("erase",),
        ("upscale",),
        ("interpolate",),
        ("erase", "upscale"),
        ("erase", "interpolate"),
        ("upscale", "interpolate"),
        ("erase", "upscale", "interpolate"),
    ],
)
def test_sub_chains_frames_counts_fps(job, stages):
    fakes = {"erase": FakeErase, "upscale": FakeUpscale, "interpolate": FakeInterp}
    chain = R.Chain([fakes[s]() for s in stages], queue_size=2)
    masks = R.FolderMasks(job["mask_dir"]) if "erase" in stages else None
    src = R.open_source(job["video"], fps=10)
    s = chain.run(src, None, masks, frames_out=job["dir"] / "out", progress=False)
    got = read_frames(job["dir"] / "out")
    want = expected(job["frames"], job["masks"], stages)
    np.testing.assert_array_equal(got, want)
    m = 2 if "interpolate" in stages else 1
    assert s.frames_in == 6 and s.frames_out == len(want) == (6 - 1) * m + 1
    assert s.fps_in == 10 and s.fps_out == 10 * m
    assert [st["name"] for st in s.stages] == list(stages)
    assert [st["frames"] for st in s.stages][-1] == len(want)
    assert s.peak_rss_bytes > 0 and "ms per output frame" in s.format()


def test_mp4_output_fps_and_determinism(job):
    chain = R.Chain([FakeErase(), FakeInterp()])
    outs = []
    for k in range(2):
        out = job["dir"] / f"out{k}.mp4"
        chain.run(
            R.open_source(job["video"], fps=12.5),
            out,
            R.FolderMasks(job["mask_dir"]),
            frames_out=job["dir"] / f"png{k}",
            progress=False,
        )
        outs.append(out)
    v = open_video(outs[0])
    assert v.fps == pytest.approx(25.0) and len(v) == 11
    assert outs[0].read_bytes() == outs[1].read_bytes()  # same inputs -> same bytes
    for a, b in zip(sorted((job["dir"] / "png0").iterdir()), sorted((job["dir"] / "png1").iterdir())):
        assert a.read_bytes() == b.read_bytes()


def test_stages_are_streamed_not_collected(job):
    """The first output frame is written before the last input frame is decoded."""
    events = []

    class Src(R.ArraySource):
        def __iter__(self):
            for i, f in enumerate(self.frames):
                events.append(("read", i))
                yield f

    class Probe(R.Stage):
        name = "upscale"

        def __call__(self, items, info):
            for i, f in enumerate(items):
                events.append(("out", i))
                yield f

    frames = clip(t=40)
    R.Chain([Probe()], queue_size=2).run(Src(frames), None, frames_out=job["dir"] / "o", progress=False)
    first_out = events.index(("out", 0))
    assert ("read", 39) not in events[:first_out]
    # the bounded reader queue: the reader is never more than queue + 2 frames ahead
    reads = outs = 0
    for kind, _ in events:
        reads += kind == "read"
        outs += kind == "out"
        assert reads - outs <= 2 + 2


def test_warmup_runs_compile_jobs_in_parallel_once(job):
    import threading
    import time

    active, peak, calls = [0], [0], []
    lock = threading.Lock()

    class Compiling(FakeErase):
        def compile_jobs(self, info):
            def job(k):
                with lock:
                    active[0] += 1
                    peak[0] = max(peak[0], active[0])
                time.sleep(0.3)
                calls.append(k)
                with lock:
                    active[0] -= 1

            return [(("fake", id(self), k), lambda k=k: job(k)) for k in range(4)]

    stage = Compiling()
    chain = R.Chain([stage])
    s = chain.run(
        R.open_source(job["video"]), None, R.FolderMasks(job["mask_dir"]), frames_out=job["dir"] / "o", progress=False
    )
    assert sorted(calls) == [0, 1, 2, 3] and s.compiled_shapes == 4 and peak[0] >= min(2, os.cpu_count() or 1)
    s = chain.run(
        R.open_source(job["video"]), None, R.FolderMasks(job["mask_dir"]), frames_out=job["dir"] / "p", progress=False
    )
    assert s.compiled_shapes == 0 and len(calls) == 4  # known shapes are not warmed again

    def boom():
        raise ValueError("cannot compile")

    with pytest.raises(ValueError, match="cannot compile"):
        list(run_parallel([lambda: None, boom, lambda: None], 2))


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_failure_midway_leaves_no_output(job, exc):
    out = job["dir"] / "res"
    out.mkdir()
    chain = R.Chain([FakeErase(fail_at=3, exc=exc), FakeUpscale()])
    with pytest.raises(exc):
        chain.run(
            R.open_source(job["video"]),
            out / "o.mp4",
            R.FolderMasks(job["mask_dir"]),
            frames_out=out / "frames",
            side_by_side=out / "sbs.mp4",
            overlay=out / "ov.mp4",
            progress=False,
        )
    assert sorted(os.listdir(out)) == []  # no final outputs, no temporary files


def test_disk_full_while_encoding_leaves_no_output(job, monkeypatch):
    import peanut_jax.data.video_io as vio

    real = vio.VideoWriter._write_video_frame
    calls = {"n": 0}

    def full(self, a):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(28, "No space left on device")
        return real(self, a)

    monkeypatch.setattr(vio.VideoWriter, "_write_video_frame", full)
    out = job["dir"] / "res"
    out.mkdir()
    chain = R.Chain([FakeErase()])
    with pytest.raises(OSError, match="No space left"):
        chain.run(
            R.open_source(job["video"]),
            out / "o.mp4",
            R.FolderMasks(job["mask_dir"]),
            side_by_side=out / "s.mp4",
            progress=False,
        )
    assert calls["n"] >= 4 and sorted(os.listdir(out)) == []


def test_overwrite_refused_before_any_compute(job):
    out = job["dir"] / "o.mp4"
    out.write_bytes(b"old")
    stage = FakeErase()
    with pytest.raises(FileExistsError, match="--overwrite"):
        R.Chain([stage]).run(R.open_source(job["video"]), out, R.FolderMasks(job["mask_dir"]), progress=False)
    assert stage.seen == 0 and out.read_bytes() == b"old"
    R.Chain([stage]).run(
        R.open_source(job["video"]), out, R.FolderMasks(job["mask_dir"]), overwrite=True, progress=False
    )
    assert len(open_video(out)) == 6


def test_mask_errors(job):
    chain = R.Chain([FakeErase()])
    src = R.open_source(job["video"])
    (job["mask_dir"] / "00005.png").unlink()
    with pytest.raises(ValueError, match="5 mask files for 6 video frames.*missing"):
        chain.run(src, job["dir"] / "o.mp4", R.FolderMasks(job["mask_dir"]), progress=False)
    small = write_masks(job["dir"] / "small", square_masks(6, 8, 12))
    with pytest.raises(ValueError, match=r"mask size 12x8 \(WxH\) differs from the frame size 24x16"):
        chain.run(src, job["dir"] / "o.mp4", R.FolderMasks(small), progress=False)
    # a later mask of another size is caught when reached, and nothing is written
    bad = write_masks(job["dir"] / "bad", job["masks"])
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(bad / "00004.png")
    with pytest.raises(ValueError, match="00004.png: mask size 8x8"):
        chain.run(src, job["dir"] / "o.mp4", R.FolderMasks(bad), progress=False)
    assert not (job["dir"] / "o.mp4").exists() and leftovers(job["dir"]) == []
    # resize=True accepts them (nearest), a single mask applies to every frame
    chain.run(src, job["dir"] / "o.mp4", R.FolderMasks(small, resize=True), progress=False)
    one = write_masks(job["dir"] / "one", job["masks"][:1])
    s = chain.run(src, None, R.FolderMasks(one), frames_out=job["dir"] / "f1", progress=False)
    got = read_frames(job["dir"] / "f1")
    assert s.frames_out == 6 and np.all(got[:, job["masks"][0]] == 128)


def test_side_by_side_and_overlay(job):
    chain = R.Chain([FakeErase(), FakeUpscale(), FakeInterp()])
    d = job["dir"]
    chain.run(
        R.open_source(job["video"]),
        None,
        R.FolderMasks(job["mask_dir"]),
        frames_out=d / "res",
        side_by_side=d / "sbs.mp4",
        overlay=d / "ov.mp4",
        progress=False,
    )
    res = read_frames(d / "res")
    sbs, ov = read_frames(d / "sbs.mp4"), read_frames(d / "ov.mp4")
    assert sbs.shape == (11, 32, 96, 3) and ov.shape == (6, 16, 24, 3)
    # right half = result, left half = the input (bicubic to the output size), both through x264
    assert np.abs(sbs[:, :, 48:].astype(int) - res).mean() < 6
    left = np.stack([R.side_by_side_frame(job["frames"][j // 2], res[j])[:, :48] for j in range(11)])
    assert np.abs(sbs[:, :, :48].astype(int) - left).mean() < 8
    from peanut_jax.data.masks import overlay_mask

    want = overlay_mask(job["frames"], job["masks"])
    m = job["masks"]
    assert np.abs(ov.astype(int) - want).mean() < 8
    assert np.abs(ov.astype(int) - want)[m].mean() < 0.3 * np.abs(ov.astype(int) - job["frames"])[m].mean()


def test_manifest_batch_csv_and_json(job):
    d = job["dir"]
    v2 = write_frames(d / "in2", clip(t=4, seed=3))
    m2 = write_masks(d / "masks2", square_masks(4))
    (d / "jobs.csv").write_text("video,masks,output\nin,masks,a.mp4\nin2,masks2,b\n")
    chain = R.Chain([FakeErase(), FakeInterp()])
    res = run_manifest(chain, d / "jobs.csv", progress=False, log=None)
    assert [r.frames_out for r in res] == [11, 7]
    assert len(open_video(d / "a.mp4")) == 11
    np.testing.assert_array_equal(
        read_frames(d / "b"), expected(clip(t=4, seed=3), square_masks(4), ("erase", "interpolate"))
    )
    (d / "jobs.json").write_text(
        json.dumps({"jobs": [{"video": str(v2), "masks": str(m2), "output": "c.mp4", "side_by_side": "c_sbs.mp4"}]})
    )
    run_manifest(chain, d / "jobs.json", progress=False, log=None)
    assert len(open_video(d / "c_sbs.mp4")) == 7
    # every row is checked before the first one runs
    (d / "bad.csv").write_text("video,masks,output\nin,masks,new.mp4\nin2,masks2,a.mp4\n")
    with pytest.raises(FileExistsError, match="row 2.*a.mp4 already exists"):
        run_manifest(chain, d / "bad.csv", progress=False, log=None)
    assert not (d / "new.mp4").exists()
    (d / "bad2.csv").write_text("video,mask,output\nin,masks,x.mp4\n")
    with pytest.raises(ValueError, match="row 1: unknown column 'mask'"):
        read_manifest(d / "bad2.csv")
    (d / "bad3.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot parse the manifest"):
        read_manifest(d / "bad3.json")


def make_av(path, seconds=1.0, rate=10, size="48x32"):
    from peanut_jax.data.video_io import ffmpeg_exe

    subprocess.run(
        [
            ffmpeg_exe(),
            "-y",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size={size}:rate={rate}",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=8000",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(path),
        ],
        check=True,
    )
    return path


def test_audio_is_copied_through(tmp_path):
    src = make_av(tmp_path / "av.mp4")
    assert R.has_audio(src)
    chain = R.Chain([FakeUpscale(), FakeInterp()])
    s = chain.run(R.open_source(src), tmp_path / "o.mp4", progress=False)
    assert s.audio and R.has_audio(tmp_path / "o.mp4")
    v = open_video(tmp_path / "o.mp4")
    assert v.fps == pytest.approx(20) and len(v) == 19 and v.size == (64, 96)
    chain.run(R.open_source(src), tmp_path / "n.mp4", progress=False, copy_audio=False)
    assert not R.has_audio(tmp_path / "n.mp4")
    assert leftovers(tmp_path) == []


# =============================================================================== CLI errors
def cli(*args):
    return infer.main([str(a) for a in args])


def one_line_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_cli_bad_inputs(tmp_path, capsys, job):
    v, m = job["video"], job["mask_dir"]
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(b"this is not a video" * 10)
    cases = [
        (["--input", tmp_path / "missing.mp4", "--masks", m, "--output", tmp_path / "o.mp4"], "not found"),
        (["--input", tmp_path / "empty.mp4", "--masks", m, "--output", tmp_path / "o.mp4"], "empty.mp4"),
        (["--input", tmp_path / "junk.mp4", "--masks", m, "--output", tmp_path / "o.mp4"], "cannot read video"),
        (["--input", v, "--output", tmp_path / "o.mp4"], "needs --masks"),
        (["--input", v, "--masks", m, "--output", tmp_path / "nodir" / "o.mp4"], "does not exist"),
        (["--input", v, "--masks", m, "--output", tmp_path / "o.gif"], "unsupported extension"),
        (["--input", v, "--masks", m, "--output", tmp_path / "o.mp4", "--stages", "erase,blur"], "unknown stage"),
        (["--input", v, "--masks", m, "--output", tmp_path / "o.mp4", "--upscale", "0"], "--upscale must be >= 1"),
        (
            ["--input", v, "--masks", m, "--output", tmp_path / "o.mp4", "--stages", "erase", "--interpolate", "2"],
            "the interpolate stage is not in --stages",
        ),
        (["--input", v, "--masks", tmp_path / "nomasks", "--output", tmp_path / "o.mp4"], "mask path not found"),
        (
            ["--input", v, "--masks", m, "--output", tmp_path / "o.mp4", "--checkpoint-erase", "no_such_weights"],
            "neither a file/directory nor a registry name",
        ),
        (["--input", v, "--masks", m, "--output", tmp_path / "o.mp4", "--checkpoint-erase", "rife"], "not 'e2fgvi'"),
    ]
    for args, msg in cases:
        assert cli(*args) == 2, args
        assert msg in one_line_error(capsys), (args, msg)
    (tmp_path / "exists.mp4").write_bytes(b"x")
    assert cli("--input", v, "--masks", m, "--output", tmp_path / "exists.mp4") == 2
    assert "already exists (use --overwrite" in one_line_error(capsys)
    (m / "00002.png").unlink()
    assert cli("--input", v, "--masks", m, "--output", tmp_path / "o.mp4") == 2
    assert "missing for some frames" in one_line_error(capsys)
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores folder permissions")
def test_cli_output_not_writable(tmp_path, capsys, job):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert cli("--input", job["video"], "--masks", job["mask_dir"], "--output", ro / "o.mp4") == 2
        assert "is not writable" in one_line_error(capsys)
    finally:
        ro.chmod(0o755)


def test_cli_checksum_mismatch(tmp_path, capsys, job, monkeypatch):
    """A registry download whose sha256 does not match: one line, nothing cached."""
    from peanut_jax.checkpoints import entry, registry

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "fake_e2fgvi-0123abcd.pth").write_bytes(b"corrupted download")
    monkeypatch.setenv("PEANUT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PEANUT_WEIGHTS_MIRROR", str(mirror))
    registry.register(
        entry.WeightEntry(
            "fake_e2fgvi",
            "e2fgvi_hq",
            "fake_e2fgvi-0123abcd.pth",
            urls=("https://example.invalid/fake_e2fgvi-0123abcd.pth",),
            sha256_prefix="0123abcd",
        ),
        replace=True,
    )
    try:
        assert (
            cli(
                "--input",
                job["video"],
                "--masks",
                job["mask_dir"],
                "--output",
                tmp_path / "o.mp4",
                "--checkpoint-erase",
                "fake_e2fgvi",
            )
            == 2
        )
        assert "sha256" in one_line_error(capsys)
        assert registry.converted_dir("fake_e2fgvi") is None and not (tmp_path / "o.mp4").exists()
    finally:
        registry.unregister("fake_e2fgvi")


# =============================================================================== the real stages
def random_variables(module, x_shape, *args, seed=0):
    """Random parameters (N(0, 1/fan_in) kernels, small biases) without running the initialisers."""
    import math

    import jax
    import jax.numpy as jnp
    from flax.traverse_util import flatten_dict, unflatten_dict

    shapes = jax.eval_shape(
        lambda k, x: module.init(k, x, *args), jax.random.key(0), jax.ShapeDtypeStruct(x_shape, jnp.float32)
    )
    rng = np.random.default_rng(seed)
    out = {}
    for path, s in flatten_dict(shapes["params"]).items():
        if path[-1] == "kernel":
            v = rng.standard_normal(s.shape) / math.sqrt(int(np.prod(s.shape[:-1])))
            if path[-2] == "conv_4":  # SPyNet flow heads: keep flows a few pixels
                v *= 0.1
        elif path[-1] in ("scale", "weight"):
            v = np.full(s.shape, 1.0 if path[-1] == "scale" else 0.25)
        else:
            v = 0.01 * rng.standard_normal(s.shape)
        out[path] = v.astype(np.float32)
    return {"params": unflatten_dict(out)}


TINY_E2FGVI = dict(
    encoder_channels=(16, 16, 32, 32, 32, 32, 32, 32, 16),
    channel=16,
    hidden=32,
    num_heads=2,
    mlp_hidden=98,
    num_blocks=1,
    deform_groups=4,
    decoder_channels=(16, 16, 16),
)


@pytest.fixture(scope="module")
def tiny_models():
    from peanut_jax.models import build

    e = build("e2fgvi_hq", **TINY_E2FGVI)
    up = build("basicvsr_pp", mid_channels=8, num_blocks=1, scale=2)
    rf = build("rife", widths=(16, 12, 8, 8), context_c=4)
    from peanut_jax.models.rife import init_params

    return {
        "erase": (e, random_variables(e, (1, 3, 60, 108, 3), 2)),
        "upscale": (up, random_variables(up, (1, 2, 64, 64, 3))),
        "interpolate": (rf, init_params(rf, 0)),
    }


@pytest.fixture(scope="module")
def real_chain(tiny_models):
    """One loaded chain (compiled once) whose stages the sub-chain tests pick from."""
    chain = R.build_chain(
        list(R.STAGE_ORDER),
        models=tiny_models,
        upscale=2,
        interpolate=2,
        erase_options=dict(config=E.EraseConfig(mode="streaming", neighbor_stride=2, ref_length=4, stream_refs=1)),
        upscale_options=dict(chunk=2, overlap=1),
        progress=False,
    )
    return {s.name: s for s in chain.stages}


@pytest.fixture(scope="module")
def synth():
    from peanut_jax.data.synthetic import generate_clip

    c = generate_clip(3, num_frames=5, height=60, width=108, num_objects=1)
    return np.clip(np.round(c.frames * 255), 0, 255).astype(np.uint8), c.object_mask


def test_real_sub_chains_match_the_stages_run_one_after_another(real_chain, synth, tmp_path):
    """Every sub-chain of the real stages: counts, sizes, fps, determinism, and the same frames as the
    stage runners applied one after another to the previous stage's uint8 output (the file-by-file way)."""
    from peanut_jax.pipeline.interpolate import interpolate_video
    from peanut_jax.pipeline.upscale import to_uint8, upscale_video

    frames, masks = synth
    er, up, it = real_chain["erase"], real_chain["upscale"], real_chain["interpolate"]
    src = R.ArraySource(frames, fps=8)
    # the full chain first: every shape is compiled ahead of time, none while streaming
    full = R.Chain([er, up, it]).run(src, None, R.ArrayMasks(masks), frames_out=tmp_path / "full", progress=False)
    assert full.compiled_shapes >= 4 and full.stream_compiles == 0, (full.compiled_shapes, full.stream_compiles)
    # stage by stage, through uint8 arrays
    comps = list(E.inpaint(E.ArrayClip(frames, masks, (60, 108), 4), er.runner, er.config))
    erased = np.stack([c.astype(np.uint8) for _, c in comps])
    dil = E.process_mask(masks[0], (60, 108), 4)
    np.testing.assert_array_equal(erased[0][~dil], frames[0][~dil])  # composite keeps the outside
    assert np.abs(erased[0][dil].astype(int) - frames[0][dil]).mean() > 1  # and fills the inside
    upscaled = np.stack(
        [
            to_uint8(f)
            for f in upscale_video(
                iter(erased), up.module, up.variables, chunk=up.chunk, overlap=up.overlap, upscaler=up.runner
            )
        ]
    )
    inter = np.stack(list(interpolate_video(iter(upscaled), it.module, it.variables, 2, batch_size=it.batch_size)))
    want = {
        ("erase",): erased,
        ("erase", "upscale"): upscaled,
        ("erase", "upscale", "interpolate"): inter,
        ("upscale",): np.stack(
            [
                to_uint8(f)
                for f in upscale_video(iter(frames), up.module, up.variables, chunk=2, overlap=1, upscaler=up.runner)
            ]
        ),
        ("interpolate",): np.stack(
            list(interpolate_video(iter(frames), it.module, it.variables, 2, batch_size=it.batch_size))
        ),
    }
    np.testing.assert_array_equal(read_frames(tmp_path / "full"), inter)
    for names, ref in want.items():
        chain = R.Chain([real_chain[n] for n in names])
        out = tmp_path / "_".join(names)
        s = chain.run(src, None, R.ArrayMasks(masks) if "erase" in names else None, frames_out=out, progress=False)
        got = read_frames(out)
        np.testing.assert_array_equal(got, ref, err_msg=str(names))
        m = 2 if "interpolate" in names else 1
        k = 2 if "upscale" in names else 1
        assert got.shape == ((5 - 1) * m + 1, 60 * k, 108 * k, 3) and s.fps_out == 8 * m
    # deterministic: a second run of the full chain gives the same bytes
    chain = R.Chain(list(real_chain.values()))
    for name in ("a.mp4", "b.mp4"):
        chain.run(src, tmp_path / name, R.ArrayMasks(masks), progress=False)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    assert len(er.runner.shapes) == 2  # one compilation per window shape, reused by every run


def test_real_erase_on_tennis(real_chain, tmp_path):
    """The erase -> interpolate chain on the first frames of the real tennis clip (skipped without ../shared)."""
    root = shared_path("data", "tennis")
    frames = write_frames(tmp_path / "f", read_frames(root / "frames", 0, 5))
    mdir = tmp_path / "m"
    mdir.mkdir()
    for p in sorted((root / "masks").iterdir())[:5]:
        (mdir / p.name).write_bytes(p.read_bytes())
    er = real_chain["erase"]
    stage = R.EraseStage(er.module, er.variables, "tiny", config=er.config, size=(60, 108))
    stage.runner = er.runner  # same compiled window shapes (60x108 processing size)
    s = R.Chain([stage, real_chain["interpolate"]]).run(
        R.open_source(frames, fps=24),
        tmp_path / "o.mp4",
        R.FolderMasks(mdir),
        frames_out=tmp_path / "png",
        progress=False,
    )
    assert s.size_in == (240, 432) and s.size_out == (60, 108) and s.frames_out == 9 and s.fps_out == 48
    assert len(open_video(tmp_path / "o.mp4")) == 9


# =============================================================================== the bundled demo
def test_demo_prefers_cached_official_weights(tmp_path, monkeypatch):
    """With a converted official checkpoint in $PEANUT_HOME the demo uses it (and says so); otherwise,
    or with --demo-weights bundled, the shipped weights; without those a clear error."""
    from peanut_jax.checkpoints import registry
    from peanut_jax.cli import demo

    monkeypatch.setenv("PEANUT_HOME", str(tmp_path / "home"))
    assets = tmp_path / "assets"
    monkeypatch.setattr(demo, "bundled_asset", lambda *p: assets.joinpath(*p))
    with pytest.raises(FileNotFoundError, match="bundled demo weights missing.*train_demo_weights.sh"):
        demo.choose_weights("auto", ["interpolate"])
    (assets / "interpolate_demo").mkdir(parents=True)
    (assets / "interpolate_demo" / "model.json").write_text("{}")
    got = demo.choose_weights("auto", ["interpolate"])["interpolate"]
    assert got[0] == assets / "interpolate_demo" and not got[2] and "bundled demo" in got[1]
    cached = tmp_path / "home" / "rife_hdv3"
    cached.mkdir(parents=True)
    (cached / "params.safetensors").write_bytes(b"")
    (cached / "model.json").write_text(
        json.dumps(
            {
                "model": "rife_hdv3",
                "kwargs": {},
                "metadata": {
                    "registry_name": "rife_hdv3",
                    "cache_version": registry.CACHE_VERSION,
                    "source_file": "flownet.pkl",
                    "source_sha256": registry.get("rife_hdv3").sha256,
                },
            }
        )
    )
    assert registry.converted_dir("rife_hdv3") == cached
    got = demo.choose_weights("auto", ["interpolate"])["interpolate"]
    assert got[0] == cached and got[2] and "official 'rife_hdv3'" in got[1]
    assert not demo.choose_weights("bundled", ["interpolate"])["interpolate"][2]


def test_demo_with_shipped_weights_reproduces_recorded_metrics(tmp_path, capsys, monkeypatch):
    """``infer.py --demo`` with the shipped weights: text -> mask -> erase -> upscale -> interpolate;
    loads them, runs the full chain, prints the masks' J&F and the erase metrics, writes the result and
    the before/after video, and reproduces demo_metrics.json."""
    from peanut_jax.cli import demo

    rec = demo.recorded()
    if rec is None:
        pytest.skip("demo weights not shipped (scripts/train_demo_weights.sh records demo_metrics.json)")
    monkeypatch.setenv("PEANUT_XLA_CACHE", "0")
    out, js = tmp_path / "demo.mp4", tmp_path / "demo.json"
    assert cli("--demo", "--demo-weights", "bundled", "--output", out, "--summary-json", js, "--no-progress") == 0
    printed = capsys.readouterr().out
    assert "erased region vs clean background: PSNR" in printed and "bundled demo 'mask_demo'" in printed
    assert f"prompt {rec['prompt']!r} -> object {rec['target']['object']} of" in printed
    assert "no --prompt given" in printed and "text masks vs the object: J" in printed
    res = json.loads(js.read_text())
    assert res["settings"] == rec["settings"] and res["prompt"] == rec["prompt"] and res["target"] == rec["target"]
    assert res["summary"]["frames_out"] == rec["frames_out"] and list(res["summary"]["size_out"]) == list(
        rec["size_out"]
    )
    got, want = res["metrics"], rec["metrics"]
    assert got["JF"] == pytest.approx(want["JF"], abs=5e-3)
    assert got["psnr_region"] == pytest.approx(want["psnr_region"], abs=0.05)
    assert got["ssim_region"] == pytest.approx(want["ssim_region"], abs=2e-3)
    assert got["ewarp"] == pytest.approx(want["ewarp"], rel=0.02, abs=2e-4)
    assert got["psnr_region"] > got["psnr_region_input"] + 3  # the object is found and erased
    assert len(open_video(out)) == rec["frames_out"]
    sbs = open_video(tmp_path / "demo_before_after.mp4")
    assert len(sbs) == rec["frames_out"] and sbs.size == (rec["size_out"][0], 2 * rec["size_out"][1])


def test_demo_prompt_checks_and_target_choice(tmp_path, capsys):
    """A prompt with none of the tiny model's words is refused before anything loads (the words
    listed, nothing written); the target is the object whose sentence the prompt is, else the one the
    masks overlap most; one --prompt only, and no clicks."""
    from peanut_jax.cli import demo

    out = tmp_path / "demo.mp4"
    assert cli("--demo", "--prompt", "the man in the shirt", "--output", out, "--no-progress") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--prompt 'the man in the shirt'" in err and "circle" in err
    assert not out.exists()
    assert cli("--demo", "--prompt", "the red circle", "--prompt", "the square", "--output", out) == 2
    assert "give one --prompt" in capsys.readouterr().err
    assert cli("--demo", "--click", "3,4@0", "--output", out) == 2
    assert "not with --click" in capsys.readouterr().err
    assert not out.exists()
    assert demo.check_prompt("  The  RED circle ") == "The RED circle"

    case = demo.demo_case(dict(demo.DEFAULT_SETTINGS, num_frames=3, height=64, width=64))
    masks = [case.with_target(k).arrays()["masks"] for k in range(len(case.sentences))]
    for k, sentence in enumerate(case.sentences):
        got, how = demo.pick_target(case, sentence.upper() + ".", masks[(k + 1) % len(masks)])
        assert got == k and "its sentence" in how
        got, how = demo.pick_target(case, "the thing", masks[k])
        assert got == k and "overlap most (J&F 1.000)" in how


def test_enable_compilation_cache_settings(tmp_path, monkeypatch):
    """PEANUT_XLA_CACHE=0 keeps the persistent cache off; a folder turns it on there (the conftest
    restores the process-wide setting after the test)."""
    import jax

    monkeypatch.setenv("PEANUT_XLA_CACHE", "0")
    assert enable_compilation_cache() is None
    monkeypatch.setenv("PEANUT_XLA_CACHE", str(tmp_path / "xla"))
    assert enable_compilation_cache() == tmp_path / "xla"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xla") and (tmp_path / "xla").is_dir()
