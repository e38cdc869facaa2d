"""Streaming BasicVSR++ upscaling: window planning, chunked vs whole-clip, tiling, padding, errors, CLI."""

import pathlib

import numpy as np
import pytest
from conftest import shared_path
from PIL import Image
from test_basicvsr_pp import TINY, clip, random_variables

from peanut_jax.models.basicvsr_pp import BasicVSRPlusPlus
from peanut_jax.pipeline.upscale import Upscaler, plan_segments, segment_weights, to_uint8, upscale_clip, upscale_video

REPO = pathlib.Path(__file__).resolve().parents[1]


def psnr(a, b):
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-20))


# ---------------------------------------------------------------------------------- planning
@pytest.mark.parametrize("n,core,ctx", [(23, 5, 2), (7, 10, 3), (10, 3, 0), (16, 4, 6), (1, 4, 2)])
def test_plan_segments_cover_once_with_fixed_windows(n, core, ctx):
    segs = plan_segments(n, core, ctx)
    covered = np.concatenate([np.arange(s, e) for s, e, _, _ in segs])
    np.testing.assert_array_equal(covered, np.arange(n))
    lengths = {ln for *_, ln in segs}
    assert lengths == {min(n, core + 2 * ctx)}  # one window shape for the whole clip
    for s, e, a, ln in segs:
        assert 0 <= a <= s and e <= a + ln <= n
        assert s - a >= min(ctx, s)  # left context, unless clipped at the start
        assert a + ln - e >= min(ctx, n - e)  # right context, unless clipped at the end


@pytest.mark.parametrize("blend", [0, 2, 4])
def test_segment_weights_partition_of_unity(blend):
    n, segs = 30, plan_segments(30, 6, 3)
    total = np.zeros(n)
    for s, e, a, ln in segs:
        pos = np.arange(a, a + ln)
        w = segment_weights(pos, s, e, n, blend)
        assert np.all(w[(pos < s - blend // 2) | (pos >= e + blend // 2)] == 0)
        total[pos] += w
    np.testing.assert_allclose(total, 1.0)


# ---------------------------------------------------------------------------------- streaming logic
class CountingRunner:
    """Stands in for Upscaler: output = frame value + a context term, records window lengths."""

    scale = 1

    def __init__(self, context_weight=0.0):
        self.windows = []
        self.context_weight = context_weight

    def __call__(self, window):
        self.windows.append(window.shape[0])
        return window + self.context_weight * window.mean(0, keepdims=True)


def _frames(n, h=4, w=4):
    return [np.full((h, w, 3), i / (n + 1), np.float32) for i in range(n)]


@pytest.mark.parametrize("chunk,overlap,blend", [(5, 2, 0), (5, 2, 4), (4, 0, 0), (30, 3, 0), (1, 1, 0), (7, 3, 6)])
def test_streaming_reassembles_every_frame_once(chunk, overlap, blend):
    frames = _frames(23)
    runner = CountingRunner()
    out = list(upscale_video(iter(frames), None, None, chunk=chunk, overlap=overlap, blend=blend, upscaler=runner))
    assert len(out) == 23
    for o, f in zip(out, frames):
        np.testing.assert_allclose(o, f, atol=1e-6)
    assert len(set(runner.windows)) == 1  # fixed window length: no recompilation


def test_streaming_is_lazy_and_bounded():
    consumed = []

    def source():
        for i, f in enumerate(_frames(40)):
            consumed.append(i)
            yield f

    runner = CountingRunner()
    gen = upscale_video(source(), None, None, chunk=4, overlap=2, upscaler=runner)
    first = next(gen)
    np.testing.assert_allclose(first, _frames(40)[0])
    assert len(consumed) == 8  # only the first window (4 + 2*2 frames) was read
    rest = list(gen)
    assert len(rest) == 39 and len(consumed) == 40


def test_blend_crossfades_context_dependent_outputs():
    frames = _frames(20)
    runner = CountingRunner(context_weight=1.0)  # output depends on the window: chunk borders differ
    hard = np.stack(list(upscale_video(iter(frames), None, None, chunk=5, overlap=2, upscaler=runner)))
    soft = np.stack(list(upscale_video(iter(frames), None, None, chunk=5, overlap=2, blend=4, upscaler=runner)))
    jump_hard = np.abs(np.diff(hard[:, 0, 0, 0])).max()
    jump_soft = np.abs(np.diff(soft[:, 0, 0, 0])).max()
    assert jump_soft < jump_hard  # the cross-fade smooths the border step


# ---------------------------------------------------------------------------------- tiny real model
@pytest.fixture(scope="module")
def tiny():
    m = BasicVSRPlusPlus(**TINY)
    return m, random_variables(m)


@pytest.fixture(scope="module")
def video():
    return clip(10, 64, 64, seed=7)[0]


@pytest.fixture(scope="module")
def whole(tiny, video):
    m, v = tiny
    return upscale_clip(video, m, v, chunk=None)


def test_whole_clip_matches_model(tiny, video, whole):
    m, v = tiny
    runner = Upscaler(m, v)
    raw = runner(video)
    np.testing.assert_allclose(whole, np.clip(raw, 0, 1), atol=1e-6)
    assert whole.shape == (10, 256, 256, 3)


def test_chunked_close_to_whole_and_single_compile(tiny, video, whole):
    m, v = tiny
    runner = Upscaler(m, v)
    out = upscale_clip(iter(video), m, v, chunk=4, overlap=2, upscaler=runner)
    assert out.shape == whole.shape
    # 10 frames, cores 4+4+2, one shape; the last two cores share the window [2, 10) (run once)
    assert runner.shapes == {(8, 64, 64, 3)} and runner.calls == 2
    p = psnr(out, whole)
    assert 30 < p < 200, p  # close, but not identical (less temporal context at the chunk borders)
    # windows as long as the clip reproduce the whole-clip output exactly
    same = upscale_clip(video, m, v, chunk=4, overlap=3)
    np.testing.assert_allclose(same, whole, atol=1e-6)


def test_short_clip_runs_one_mirror_padded_window(tiny):
    m, v = tiny
    x = clip(5, 64, 64, seed=3)[0]
    runner = Upscaler(m, v)
    out = upscale_clip(iter(x), m, v, chunk=4, overlap=2, upscaler=runner)
    # shorter than chunk + 2 * overlap = 8: one window of the usual shape, its cores share it
    assert runner.shapes == {(8, 64, 64, 3)} and runner.calls == 1
    padded = x[[0, 1, 2, 3, 4, 3, 2, 1]]  # mirror order from the end; the padding's outputs are dropped
    np.testing.assert_allclose(out, np.clip(Upscaler(m, v)(padded)[:5], 0, 1), atol=1e-6)
    windows = CountingRunner()
    list(upscale_video(iter(_frames(3)), None, None, chunk=5, overlap=2, upscaler=windows))
    assert windows.windows == [9]


def test_tiling_and_padding(tiny):
    m, v = tiny
    x = clip(3, 64, 128, seed=8)[0]
    full = upscale_clip(x, m, v, chunk=None)
    tiled = upscale_clip(x, m, v, chunk=None, tile=64, tile_overlap=8)
    assert tiled.shape == full.shape == (3, 256, 512, 3)
    assert psnr(tiled, full) > 30
    feathered = upscale_clip(x, m, v, chunk=None, tile=64, tile_overlap=8, tile_blend=8)
    assert psnr(feathered, full) > 30
    # frames below SPyNet's 64 px are reflect-padded and the output cropped
    small = x[:, :40, :56]
    out = upscale_clip(small, m, v, chunk=None)
    assert out.shape == (3, 160, 224, 3)
    padded = np.pad(small, ((0, 0), (0, 24), (0, 8), (0, 0)), mode="reflect")
    np.testing.assert_allclose(out, upscale_clip(padded, m, v, chunk=None)[:, :160, :224], atol=1e-6)
    with pytest.raises(ValueError, match="below the model minimum 64"):
        upscale_clip(small, m, v, chunk=None, pad_small=False)


def test_single_frame_clip(tiny):
    m, v = tiny
    out = upscale_clip(clip(1, 64, 64)[0], m, v, chunk=4, overlap=2)
    assert out.shape == (1, 256, 256, 3) and np.all((out >= 0) & (out <= 1))


def test_bad_inputs(tiny):
    m, v = tiny
    good = clip(3, 64, 64)[0]
    with pytest.raises(ValueError, match="frame 2: size 64x80 differs from frame 0"):
        list(upscale_video([good[0], good[1], np.zeros((64, 80, 3), np.float32)], m, v, chunk=None))
    with pytest.raises(ValueError, match="scale=2 was requested"):
        upscale_video(good, m, v, scale=2)
    with pytest.raises(ValueError, match="no frames"):
        list(upscale_video([], m, v))
    with pytest.raises(ValueError, match=r"frame 0: float frames must be in \[0, 1\]"):
        list(upscale_video(good * 255, m, v))
    with pytest.raises(ValueError, match=r"frame 1: expected an \(H, W, 3\)"):
        list(upscale_video([good[0], good[1, ..., :1]], m, v))
    with pytest.raises(ValueError, match="blend must be even"):
        upscale_video(good, m, v, chunk=4, overlap=1, blend=4)
    with pytest.raises(ValueError, match="tile_blend"):
        Upscaler(m, v, tile=64, tile_overlap=2, tile_blend=8)


# ---------------------------------------------------------------------------------- CLI
def test_cli_upscale_folder_and_errors(tmp_path, tiny, capsys):
    torch = pytest.importorskip("torch")
    import sys

    sys.path.insert(0, str(REPO))
    import infer
    from peanut_jax.convert import to_official

    m, v = tiny
    ckpt = tmp_path / "tiny.pth"
    torch.save(
        {"meta": {}, "state_dict": {k: torch.from_numpy(a) for k, a in to_official("basicvsr_pp", v).items()}}, ckpt
    )
    frames_dir = tmp_path / "clip"
    frames_dir.mkdir()
    x = to_uint8(clip(4, 64, 64, seed=9)[0])
    for i, f in enumerate(x):
        Image.fromarray(f).save(frames_dir / f"{i:04d}.png")
    out_dir = tmp_path / "out"
    rc = infer.main(
        [
            "upscale",
            "--input",
            str(frames_dir),
            "--output",
            str(out_dir),
            "--checkpoint",
            str(ckpt),
            "--scale",
            "4",
            "--chunk",
            "0",
        ]
    )
    assert rc == 0
    files = sorted(out_dir.iterdir())
    assert len(files) == 4 and np.asarray(Image.open(files[0])).shape == (256, 256, 3)
    expected = to_uint8(upscale_clip(x, m, v, chunk=None)[0])
    assert np.abs(np.asarray(Image.open(files[0])).astype(int) - expected.astype(int)).max() <= 1
    capsys.readouterr()
    # batch mode: a folder of clips -> one output per clip, created under --output
    clips = tmp_path / "clips"
    clips.mkdir()
    frames_dir.rename(clips / "a")
    (clips / "b").mkdir()
    for i, f in enumerate(x[::-1]):
        Image.fromarray(f).save(clips / "b" / f"{i:04d}.png")
    frames_dir = clips / "a"
    assert (
        infer.main(
            [
                "upscale",
                "--input",
                str(clips),
                "--output",
                str(tmp_path / "batch"),
                "--checkpoint",
                str(ckpt),
                "--chunk",
                "0",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "batch").iterdir()) == ["a", "b"]
    assert len(list((tmp_path / "batch" / "b").iterdir())) == 4
    capsys.readouterr()
    # an existing output is refused, a wrong scale and a wrong checkpoint give one clear line, nothing written
    assert infer.main(["upscale", "--input", str(frames_dir), "--output", str(out_dir), "--checkpoint", str(ckpt)]) == 2
    assert "exists" in capsys.readouterr().err
    assert (
        infer.main(
            [
                "upscale",
                "--input",
                str(frames_dir),
                "--output",
                str(tmp_path / "o2"),
                "--checkpoint",
                str(ckpt),
                "--scale",
                "2",
            ]
        )
        == 2
    )
    assert "produces x4 output, but --upscale 2" in capsys.readouterr().err and not (tmp_path / "o2").exists()
    spy = tmp_path / "spynet.pth"
    torch.save({k: torch.zeros(1) for k in ("basic_module.0.basic_module.0.conv.weight",)}, spy)
    assert (
        infer.main(["upscale", "--input", str(frames_dir), "--output", str(tmp_path / "o3"), "--checkpoint", str(spy)])
        == 2
    )
    err = capsys.readouterr().err
    assert "holds weights of model 'spynet', not 'basicvsr_pp'" in err and not (tmp_path / "o3").exists()


def test_real_clip_smoke(tiny):
    folder = shared_path("data", "vsr_demo_000")
    m, v = tiny
    files = sorted(folder.glob("*.png"))[:4]
    frames = [np.asarray(Image.open(f).convert("RGB"))[:64, :64] for f in files]
    out = upscale_clip(iter(frames), m, v, chunk=None)
    assert out.shape == (4, 256, 256, 3) and out.dtype == np.float32
