"""Frame-interpolation pipeline: frame counts, recursion, arbitrary t, padding/cropping, scene cuts
and duplicates, the CogVideoX compatibility mode, streaming, errors; and ssim_matlab."""

import numpy as np
import pytest

from peanut_jax.metrics.ssim_matlab import ssim_matlab
from peanut_jax.models.rife import IFNet, IFNetHDv3, init_params
from peanut_jax.pipeline.interpolate import (
    crop,
    interpolate_pair,
    interpolate_video,
    model_multiple,
    output_frame_count,
    pad_to_multiple,
    scene_ssim,
)

HD = IFNetHDv3(c=8)  # midpoint-only (like the official models), small widths
TM = IFNet(timestep_input=True, widths=(16, 12, 8, 8), context_c=4)  # timestep input
H, W = 40, 56  # padded to 64 x 64


@pytest.fixture(scope="module")
def hd_vars():
    return init_params(HD, 0)


@pytest.fixture(scope="module")
def tm_vars():
    return init_params(TM, 1)


def scene(shift, sign=1.0, h=H, w=W):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack(
        [0.5 + sign * 0.4 * np.sin((xx - shift) / 6.0 + c) * np.cos(yy / 8.0 - c) for c in range(3)], -1
    ).astype(np.float32)


def clip(n=5, cut=None, dup=None):
    """Frames moving 1.5 px per frame; an inverted scene from ``cut`` on; frame dup+1 = frame dup."""
    out = []
    for t in range(n):
        tt = dup if dup is not None and t == dup + 1 else t
        out.append(scene(1.5 * tt, -1.0 if cut is not None and t >= cut else 1.0))
    return out


# ----------------------------------------------------------------------------------- helpers


def test_padding_helpers():
    x = np.ones((40, 56, 3), np.float32)
    p, hw = pad_to_multiple(x, 32)
    assert p.shape == (64, 64, 3) and hw == (40, 56) and p[40:].sum() == 0 and p[:, 56:].sum() == 0
    np.testing.assert_array_equal(crop(p, hw), x)
    assert model_multiple(HD) == 32 and model_multiple(HD, 0.5) == 64 and model_multiple(HD, 0.25) == 128
    assert output_frame_count(5, 4) == 17 and output_frame_count(5, 2, cogvideo_compat=True) == 10


def test_scene_ssim_rule():
    f = clip(5, cut=2, dup=3)
    s = scene_ssim(np.stack(f[:-1]), np.stack(f[1:]))
    assert 0.2 < s[0] < 0.996  # ordinary motion
    assert s[1] < 0.2  # cut
    assert s[3] > 0.996  # duplicate


# ----------------------------------------------------------------------------- interpolate_pair


def test_pair_pads_and_crops(hd_vars):
    a, b = clip(2)
    out = interpolate_pair(HD, hd_vars, a, b)
    assert out.shape == (H, W, 3)
    ap, _ = pad_to_multiple(a[None], 32)
    bp, _ = pad_to_multiple(b[None], 32)
    ref = np.asarray(HD.apply(hd_vars, ap, bp))[0, :H, :W]
    np.testing.assert_allclose(out, ref, atol=1e-6)
    batched = interpolate_pair(HD, hd_vars, np.stack([a, b]), np.stack([b, a]))
    np.testing.assert_allclose(batched[0], out, atol=1e-6)


def test_pair_dyadic_t_is_recursive_midpoints(hd_vars):
    a, b = clip(2)
    ap, _ = pad_to_multiple(a[None], 32)
    bp, _ = pad_to_multiple(b[None], 32)
    mid = HD.apply(hd_vars, ap, bp)  # the official recursion feeds the padded midpoint back
    quarter = np.asarray(HD.apply(hd_vars, ap, mid))[0, :H, :W]
    three_q = np.asarray(HD.apply(hd_vars, mid, bp))[0, :H, :W]
    np.testing.assert_allclose(interpolate_pair(HD, hd_vars, a, b, 0.25), quarter, atol=1e-6)
    np.testing.assert_allclose(interpolate_pair(HD, hd_vars, a, b, 0.75), three_q, atol=1e-6)
    assert np.abs(quarter - three_q).max() > 1e-2


def test_pair_timestep_model(tm_vars):
    a, b = clip(2)
    y3 = interpolate_pair(TM, tm_vars, a, b, 1 / 3)
    y6 = interpolate_pair(TM, tm_vars, a, b, 0.6)
    assert np.abs(y3 - y6).max() > 1e-3
    both = interpolate_pair(TM, tm_vars, np.stack([a, a]), np.stack([b, b]), [1 / 3, 0.6])
    np.testing.assert_allclose(both[0], y3, atol=1e-6)
    np.testing.assert_allclose(both[1], y6, atol=1e-6)


def test_pair_errors(hd_vars, tm_vars):
    a, b = clip(2)
    with pytest.raises(ValueError, match="same shape"):
        interpolate_pair(HD, hd_vars, a, b[:32])
    for t in (0.0, 1.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            interpolate_pair(TM, tm_vars, a, b, t)
    with pytest.raises(ValueError, match="not dyadic"):
        interpolate_pair(HD, hd_vars, a, b, 0.3)
    with pytest.raises(ValueError, match="scale must be one of"):
        interpolate_pair(HD, hd_vars, a, b, scale=3.0)


# ---------------------------------------------------------------------------- interpolate_video


def test_video_counts_passthrough_and_recursion(hd_vars):
    frames = clip(5)
    for multi in (2, 4):
        out = list(interpolate_video(frames, HD, hd_vars, multi=multi, batch_size=2))
        assert len(out) == output_frame_count(5, multi) == 4 * multi + 1
        for k, f in enumerate(frames):
            np.testing.assert_array_equal(out[k * multi], f)
    # multi=4: the middle frame is the 2x one, the quarter frames come from the recursion on it
    out2 = list(interpolate_video(frames, HD, hd_vars, multi=2, batch_size=2))
    np.testing.assert_allclose(out[2], out2[1], atol=1e-6)
    np.testing.assert_allclose(out[6], interpolate_pair(HD, hd_vars, frames[1], frames[2]), atol=1e-6)
    assert np.abs(out[1] - out[2]).max() > 1e-3


def test_video_batch_size_does_not_matter(hd_vars):
    frames = clip(4)
    a = np.stack(list(interpolate_video(frames, HD, hd_vars, multi=4, batch_size=1)))
    b = np.stack(list(interpolate_video(frames, HD, hd_vars, multi=4, batch_size=3)))
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_video_timestep_model_any_factor_and_fps(tm_vars):
    frames = clip(4)
    out = list(interpolate_video(frames, TM, tm_vars, multi=3, batch_size=2))
    assert len(out) == 3 * 3 + 1
    np.testing.assert_allclose(out[4], interpolate_pair(TM, tm_vars, frames[1], frames[2], 1 / 3), atol=1e-5)
    np.testing.assert_allclose(out[5], interpolate_pair(TM, tm_vars, frames[1], frames[2], 2 / 3), atol=1e-5)
    # 24 -> 60 fps: output j at source time 0.4 j
    out = list(interpolate_video(frames, TM, tm_vars, multi=None, fps=60, in_fps=24, batch_size=2))
    assert len(out) == 8  # positions 0, 0.4, ..., 2.8 (3.0 is not hit exactly)
    np.testing.assert_array_equal(out[5], frames[2])
    np.testing.assert_allclose(out[1], interpolate_pair(TM, tm_vars, frames[0], frames[1], 0.4), atol=1e-5)
    np.testing.assert_allclose(out[7], interpolate_pair(TM, tm_vars, frames[2], frames[3], 0.8), atol=1e-5)


def test_video_fps_power_of_two_for_midpoint_models(hd_vars):
    frames = clip(3)
    a = list(interpolate_video(frames, HD, hd_vars, multi=None, fps=120, in_fps=30, batch_size=2))
    b = list(interpolate_video(frames, HD, hd_vars, multi=4, batch_size=2))
    assert len(a) == len(b) == 9
    np.testing.assert_allclose(np.stack(a), np.stack(b), atol=1e-6)


def test_video_cuts_and_duplicates(hd_vars):
    frames = clip(6, cut=2, dup=3)
    out = list(interpolate_video(frames, HD, hd_vars, multi=2, batch_size=2))
    assert len(out) == 11
    np.testing.assert_array_equal(out[3], frames[1])  # cut 1 -> 2: no morph, copy of the first frame
    np.testing.assert_array_equal(out[7], frames[3])  # duplicate 3 -> 4: copy
    assert np.abs(out[1] - frames[0]).max() > 1e-3  # ordinary pairs are interpolated
    raw = list(interpolate_video(frames, HD, hd_vars, multi=2, batch_size=2, scene_detect=False))
    assert np.abs(raw[3] - frames[1]).max() > 1e-3
    dup = list(interpolate_video(frames, HD, hd_vars, multi=2, batch_size=2, on_duplicate="interpolate"))
    np.testing.assert_array_equal(dup[3], frames[1])
    np.testing.assert_allclose(dup[7], interpolate_pair(HD, hd_vars, frames[3], frames[4]), atol=1e-6)


def test_video_uint8(hd_vars):
    frames = [np.round(f * 255).astype(np.uint8) for f in clip(3)]
    out = list(interpolate_video(frames, HD, hd_vars, multi=2, batch_size=2))
    assert all(o.dtype == np.uint8 and o.shape == (H, W, 3) for o in out)
    np.testing.assert_array_equal(out[2], frames[1])
    mid = interpolate_pair(HD, hd_vars, frames[0], frames[1])
    np.testing.assert_array_equal(out[1], np.clip(np.rint(mid * 255), 0, 255).astype(np.uint8))


def test_video_streams_with_bounded_lookahead(hd_vars):
    consumed = []

    def source():
        for k, f in enumerate(clip(9)):
            consumed.append(k)
            yield f

    gen = interpolate_video(source(), HD, hd_vars, multi=2, batch_size=2)
    assert consumed == []  # lazy
    first = next(gen)
    assert len(consumed) <= 3  # batch_size + 1 frames read before the first output
    rest = list(gen)
    assert len(rest) + 1 == 17 and len(consumed) == 9
    np.testing.assert_array_equal(first, clip(1)[0])


def test_cogvideo_compat(hd_vars):
    frames = clip(4, dup=2)
    out = list(interpolate_video(frames, HD, hd_vars, multi=2, batch_size=2, cogvideo_compat=True))
    assert len(out) == output_frame_count(4, 2, cogvideo_compat=True) == 8
    # emitted source frames are zero-padded to 64 x 64 and resized back with torch 'nearest'
    rows = np.floor(np.arange(H, dtype=np.float32) * np.float32(64 / H)).astype(int)
    cols = np.floor(np.arange(W, dtype=np.float32) * np.float32(64 / W)).astype(int)
    padded, _ = pad_to_multiple(frames[0], 32)
    np.testing.assert_array_equal(out[0], padded[rows][:, cols])
    assert np.all(out[0][:, -1] == 0) and np.all(out[0][-1] == 0)  # CogVideoX's black strip
    # the duplicate pair (2, 3): CogVideoX replaces the second frame by model(I0, I0), which is also
    # what it emits for frame 2
    p2, _ = pad_to_multiple(frames[2][None], 32)
    self_mid = np.asarray(HD.apply(hd_vars, p2, p2))[0]
    expect = pad_to_multiple(self_mid[:H, :W], 32)[0][rows][:, cols]
    np.testing.assert_allclose(out[4], expect, atol=1e-6)
    # default mode: crop, (T - 1) * multi + 1 frames, sources untouched
    plain = list(interpolate_video(frames, HD, hd_vars, multi=2, batch_size=2))
    assert len(plain) == 7
    np.testing.assert_array_equal(plain[4], frames[2])


def test_video_errors(hd_vars, tm_vars):
    frames = clip(3)
    with pytest.raises(ValueError, match="not a power of two.*only predicts midpoints"):
        interpolate_video(frames, HD, hd_vars, multi=3)
    with pytest.raises(ValueError, match="not a power of two"):
        interpolate_video(frames, HD, hd_vars, multi=None, fps=60, in_fps=25)
    with pytest.raises(ValueError, match="in_fps"):
        interpolate_video(frames, TM, tm_vars, multi=None, fps=60)
    with pytest.raises(ValueError, match="below the input rate"):
        interpolate_video(frames, TM, tm_vars, multi=None, fps=10, in_fps=25)
    with pytest.raises(ValueError, match="positive integer"):
        interpolate_video(frames, TM, tm_vars, multi=0)
    with pytest.raises(ValueError, match="on_duplicate"):
        interpolate_video(frames, HD, hd_vars, on_duplicate="drop")
    with pytest.raises(ValueError, match="single frame"):
        list(interpolate_video(frames[:1], HD, hd_vars))
    with pytest.raises(ValueError, match="no frames"):
        list(interpolate_video([], HD, hd_vars))
    odd = frames[:2] + [scene(0.0, h=H, w=W + 8)]
    with pytest.raises(ValueError, match=r"frame 2: size \(40, 64\) differs"):
        list(interpolate_video(odd, HD, hd_vars, batch_size=2))
    with pytest.raises(ValueError, match="RGB frame"):
        list(interpolate_video([frames[0][..., 0]] * 3, HD, hd_vars))


# --------------------------------------------------------------------------------- ssim_matlab


def _ssim_torch(a, b):
    """Independent torch formulation: 3-D Gaussian window over (C, H, W) via conv3d, replicate pad 5."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    g = torch.tensor(g / g.sum(), dtype=torch.float64)
    win = (g[:, None, None] * g[None, :, None] * g[None, None, :])[None, None]
    x = torch.tensor(a, dtype=torch.float64).permute(0, 3, 1, 2)[:, None]
    y = torch.tensor(b, dtype=torch.float64).permute(0, 3, 1, 2)[:, None]
    f = lambda z: F.conv3d(F.pad(z, (5,) * 6, mode="replicate"), win)  # noqa: E731
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(m.mean())


def test_ssim_matlab():
    rng = np.random.default_rng(0)
    a = rng.random((2, 32, 32, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    assert abs(float(ssim_matlab(a, a)) - 1.0) < 1e-6
    assert abs(float(ssim_matlab(a, b)) - _ssim_torch(a, b)) < 2e-6
    per = np.asarray(ssim_matlab(a, b, reduce="none"))
    assert per.shape == (2,) and abs(per[1] - float(ssim_matlab(a[1:], b[1:]))) < 1e-6
    # the data-dependent range: 8-bit values give the same SSIM as [0, 1]
    assert abs(float(ssim_matlab(a * 255, b * 255)) - float(ssim_matlab(a, b))) < 1e-5
    assert abs(float(ssim_matlab(a, b, val_range=255.0)) - float(ssim_matlab(a, b))) > 1e-3
    with pytest.raises(ValueError, match="same shape"):
        ssim_matlab(a, b[:1])


# ----------------------------------------------------------------------------------------- CLI


def _cli_setup(tmp_path, hd_vars, n=4):
    from peanut_jax.checkpoints.export import export_weights
    from peanut_jax.data.video_io import VideoWriter

    w = export_weights(tmp_path / "hd", "rife_hdv3", {"c": 8}, hd_vars["params"])
    frames = [(np.clip(f, 0, 1) * 255).round().astype(np.uint8) for f in clip(n)]
    with VideoWriter(tmp_path / "in", fps=10) as wr:
        for f in frames:
            wr.write(f)
    return w, frames


def test_cli_interpolate_matches_library_and_refuses_bad_input(tmp_path, hd_vars, capsys):
    import infer
    from peanut_jax.data.video_io import open_video

    w, frames = _cli_setup(tmp_path, hd_vars)
    out = tmp_path / "out"
    assert (
        infer.main(
            [
                "interpolate",
                "--input",
                str(tmp_path / "in"),
                "--output",
                str(out),
                "--checkpoint",
                str(w),
                "--multi",
                "4",
                "--batch",
                "2",
                "--in-fps",
                "10",
            ]
        )
        == 0
    )
    assert "4 frames 56x40 @ 10 fps -> 13 frames 56x40 (WxH) @ 40 fps" in capsys.readouterr().out
    got = np.stack(list(open_video(out)))
    want = np.stack(list(interpolate_video(frames, HD, hd_vars, 4, batch_size=3)))
    assert got.shape == (13, H, W, 3)
    np.testing.assert_array_equal(got, want)  # frame folders are lossless PNG
    np.testing.assert_array_equal(got[::4], np.stack(frames))
    # bad input: one clear line, exit 2, nothing written
    bad = [
        (["--multi", "3"], "not a power of two"),
        (["--multi", "2"], "exists"),
        (["--fps", "15", "--in-fps", "10"], "not a power of two"),
        (["--checkpoint", str(tmp_path / "none.pkl")], "not found"),
    ]
    for extra, msg in bad:
        args = [
            "interpolate",
            "--input",
            str(tmp_path / "in"),
            "--output",
            str(out if msg == "exists" else tmp_path / "bad.mp4"),
            "--checkpoint",
            str(w),
        ] + extra
        assert infer.main(args) == 2, extra
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, (extra, err)
        assert not (tmp_path / "bad.mp4").exists()
    from peanut_jax.data.video_io import VideoWriter

    with VideoWriter(tmp_path / "one", fps=10) as wr:
        wr.write(frames[0])
    assert (
        infer.main(
            [
                "interpolate",
                "--input",
                str(tmp_path / "one"),
                "--output",
                str(tmp_path / "bad.mp4"),
                "--checkpoint",
                str(w),
            ]
        )
        == 2
    )
    assert "at least two frames" in capsys.readouterr().err and not (tmp_path / "bad.mp4").exists()
