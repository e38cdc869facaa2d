"""PSNR / SSIM (vs independent float64 references and hand-computed values), EPE, warping error."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.ndimage import correlate

from peanut_jax.data import generate_clip
from peanut_jax.metrics import (consistency_occlusion, epe, gaussian_kernel_1d, psnr, rgb_to_y,
                                ssim, warping_error)


def images(seed, shape=(2, 24, 30, 3)):
    """A smooth image and a noisy, shifted version of it, in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[-3], 0:shape[-2]]
    base = 0.5 + 0.3 * np.sin(xx / 4.0 + rng.uniform(0, 6))[..., None] * np.cos(yy / 5.0)[..., None]
    a = np.clip(base + 0.1 * rng.random(shape), 0, 1)
    b = np.clip(a + 0.05 * rng.normal(size=shape), 0, 1)
    return a, b


# --------------------------------------------------------------------------- references
def ref_y(img, data_range):
    x = img.astype(np.float64) / data_range
    return ((16 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255 * data_range)[..., None]


def ref_psnr(a, b, data_range):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 20 * math.log10(data_range / math.sqrt(mse))


def ref_ssim_channel(x, y, data_range):
    """One channel, float64: 2-D Gaussian window correlation (scipy), then the 5-px valid crop."""
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5 ** 2))
    win = np.outer(g, g) / np.outer(g, g).sum()
    f = lambda z: correlate(z, win, mode="mirror")[5:-5, 5:-5]  # noqa: E731
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
    return np.mean((2 * mx * my + c1) * (2 * sxy + c2) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2)))


def ref_ssim(a, b, data_range):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.mean([ref_ssim_channel(a[..., c], b[..., c], data_range) for c in range(a.shape[-1])])


# ------------------------------------------------------------------------------- PSNR
def test_psnr_known_values():
    a = np.zeros((8, 8, 3))
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-9)              # mse = 0.01
    assert psnr(a, a) == math.inf
    u = np.full((4, 4, 3), 100, np.uint8)
    assert psnr(u, u + np.uint8(5), data_range=255) == pytest.approx(20 * math.log10(255 / 5), abs=1e-9)
    # data_range scales consistently
    x, y = images(0)
    np.testing.assert_allclose(psnr(x * 255, y * 255, data_range=255), psnr(x, y), atol=1e-9)


def test_psnr_matches_reference_batched_crop_y():
    a, b = images(1, (3, 20, 26, 3))
    out = psnr(a, b)
    assert out.shape == (3,)
    for i in range(3):
        assert out[i] == pytest.approx(ref_psnr(a[i], b[i], 1.0), abs=1e-9)
    crop = psnr(a, b, crop_border=4)
    for i in range(3):
        assert crop[i] == pytest.approx(ref_psnr(a[i, 4:-4, 4:-4], b[i, 4:-4, 4:-4], 1.0), abs=1e-9)
    y = psnr(a * 255, b * 255, data_range=255, crop_border=2, y_channel=True)
    for i in range(3):
        ya, yb = ref_y(a[i, 2:-2, 2:-2] * 255, 255), ref_y(b[i, 2:-2, 2:-2] * 255, 255)
        assert y[i] == pytest.approx(ref_psnr(ya, yb, 255), abs=1e-9)


def test_rgb_to_y_formula():
    colours = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float64)[:, None, :]
    y = rgb_to_y(colours)[:, 0, 0]
    np.testing.assert_allclose(y * 255, [16, 235, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-9)
    np.testing.assert_allclose(rgb_to_y(colours * 255, 255)[:, 0, 0], y * 255, atol=1e-9)


# ------------------------------------------------------------------------------- SSIM
def test_ssim_known_values():
    a, _ = images(2, (20, 20, 3))
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    # constant images: means are the constants, variances 0
    c1, c2 = 0.3, 0.6
    expected = (2 * c1 * c2 + 0.01 ** 2) / (c1 ** 2 + c2 ** 2 + 0.01 ** 2)
    assert ssim(np.full((16, 16, 3), c1), np.full((16, 16, 3), c2)) == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(gaussian_kernel_1d().sum(), 1.0)
    assert gaussian_kernel_1d()[5] == pytest.approx(1 / np.exp(-((np.arange(11) - 5) ** 2) / 4.5).sum())


def test_ssim_matches_reference():
    a, b = images(3, (2, 23, 29, 3))
    out = ssim(a, b)
    assert out.shape == (2,) and np.all(out < 0.99)
    for i in range(2):
        assert out[i] == pytest.approx(ref_ssim(a[i], b[i], 1.0), abs=1e-10)
    crop = ssim(a * 255, b * 255, data_range=255, crop_border=3)
    for i in range(2):
        assert crop[i] == pytest.approx(ref_ssim(a[i, 3:-3, 3:-3] * 255, b[i, 3:-3, 3:-3] * 255, 255), abs=1e-10)
    y = ssim(a, b, crop_border=1, y_channel=True)
    for i in range(2):
        assert y[i] == pytest.approx(ref_ssim(ref_y(a[i, 1:-1, 1:-1], 1), ref_y(b[i, 1:-1, 1:-1], 1), 1.0), abs=1e-10)


def test_jax_versions_match_numpy_and_jit():
    a, b = images(4, (2, 24, 24, 3))
    f = jax.jit(lambda x, y: (psnr(x, y, crop_border=2, y_channel=True), ssim(x, y, y_channel=True)))
    p, s = f(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    assert isinstance(p, jax.Array) and p.dtype == jnp.float32
    np.testing.assert_allclose(p, psnr(a, b, crop_border=2, y_channel=True), atol=1e-3)
    np.testing.assert_allclose(s, ssim(a, b, y_channel=True), atol=1e-5)
    g = jax.grad(lambda x: ssim(x, jnp.asarray(b, jnp.float32)).sum())(jnp.asarray(a, jnp.float32))
    assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).max() > 0


def test_image_metric_errors():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)))
    with pytest.raises(ValueError, match="window"):
        ssim(np.zeros((10, 12, 3)), np.zeros((10, 12, 3)))
    with pytest.raises(ValueError, match="crop_border"):
        psnr(np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), crop_border=4)
    with pytest.raises(ValueError, match="RGB"):
        psnr(np.zeros((8, 8, 1)), np.zeros((8, 8, 1)), y_channel=True)


# --------------------------------------------------------------------------------- EPE
def test_epe():
    gt = np.random.default_rng(0).normal(size=(2, 5, 6, 2))
    assert float(epe(gt, gt)) == 0.0
    assert float(epe(gt + np.array([3.0, 4.0]), gt)) == pytest.approx(5.0, abs=1e-5)
    off = gt.copy()
    off[:, :, :3] += np.array([0.0, 2.0])
    mask = np.zeros((2, 5, 6), bool)
    mask[:, :, :3] = True
    assert float(epe(off, gt)) == pytest.approx(1.0, abs=1e-5)
    assert float(epe(off, gt, mask)) == pytest.approx(2.0, abs=1e-5)
    assert float(epe(off, gt, ~mask)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="shape"):
        epe(gt, gt[..., :1, :])


# ------------------------------------------------------------------- occlusion / warping
def test_consistency_occlusion_translation():
    h, w = 10, 12
    fw = np.zeros((1, h, w, 2), np.float32)
    fw[..., 0] = 2.0
    occ = np.asarray(consistency_occlusion(fw, -fw))
    expected = np.zeros((1, h, w), bool)
    expected[:, :, w - 2:] = True                          # targets beyond the right edge
    np.testing.assert_array_equal(occ, expected)
    assert not np.asarray(consistency_occlusion(fw, -fw, check_bounds=False))[:, :, :w - 2].any()
    assert np.asarray(consistency_occlusion(fw, fw)).all()   # inconsistent everywhere
    zero = np.zeros((2, h, w, 2), np.float32)
    assert not np.asarray(consistency_occlusion(zero, zero)).any()
    # the threshold: |fw + bw|^2 < 0.01 (|fw|^2 + |bw|^2) + 0.5
    bw = -fw.copy()
    bw[..., 1] = 0.7                                      # 0.49 < 0.01 * 8.49 + 0.5: consistent
    assert not np.asarray(consistency_occlusion(fw, bw))[:, :, :w - 2].any()
    bw[..., 1] = 0.8                                      # 0.64 > 0.01 * 8.64 + 0.5 = 0.5864
    assert np.asarray(consistency_occlusion(fw, bw))[:, :, :w - 2].all()


def test_synthetic_occlusions_agree_with_consistency_check():
    c = generate_clip(3, num_frames=4, height=40, width=48, num_objects=2)
    occ = np.asarray(consistency_occlusion(c.flow_forward, c.flow_backward))
    assert (occ == c.occlusion_forward).mean() > 0.97
    bocc = np.asarray(consistency_occlusion(c.background_flow_forward, c.background_flow_backward))
    np.testing.assert_array_equal(bocc, c.background_occlusion_forward)


def test_warping_error_hand_computed():
    """Integer flows make bilinear warping a pure shift, so the value is computed by hand."""
    rng = np.random.default_rng(0)
    frames = rng.random((3, 6, 7, 3)).astype(np.float32)
    flow = np.zeros((2, 6, 7, 2), np.float32)
    flow[..., 0] = 1.0                                    # read frame t+1 one pixel to the right
    expected = []
    for t in range(2):
        d = np.abs(frames[t][:, :-1] - frames[t + 1][:, 1:]).mean(-1)   # last column leaves
        expected.append(d.mean())
    out = warping_error(frames, flow, reduce="none")
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert float(warping_error(frames, flow)) == pytest.approx(np.mean(expected), rel=1e-5)
    sq = [((frames[t][:, :-1] - frames[t + 1][:, 1:]) ** 2).sum(-1).mean() for t in range(2)]
    np.testing.assert_allclose(warping_error(frames, flow, norm="l2sq", reduce="none"), sq, rtol=1e-5)
    occ = np.zeros((2, 6, 7), bool)
    occ[0, :3] = True
    exp0 = np.abs(frames[0][3:, :-1] - frames[1][3:, 1:]).mean()
    np.testing.assert_allclose(warping_error(frames, flow, occlusion=occ, reduce="none")[0], exp0, rtol=1e-5)
    occ[1] = True                                         # a pair with no valid pixel
    per = np.asarray(warping_error(frames, flow, occlusion=occ, reduce="none"))
    assert np.isnan(per[1])
    assert float(warping_error(frames, flow, occlusion=occ)) == pytest.approx(per[0], rel=1e-6)


def test_warping_error_synthetic_exact_flow_near_zero():
    c = generate_clip(2, num_frames=6, height=48, width=64, num_objects=2)
    clean = float(warping_error(c.background, c.background_flow_forward, c.background_flow_backward))
    shuffled = c.background[np.array([0, 3, 1, 5, 2, 4])]
    bad = float(warping_error(shuffled, c.background_flow_forward, c.background_flow_backward))
    assert clean < 3e-3 and bad > 10 * clean, (clean, bad)
    comp = float(warping_error(c.frames, c.flow_forward, occlusion=c.occlusion_forward))
    assert comp < 5e-3
    # a batch axis gives the mean over clips; per-pair output keeps it
    batch = np.stack([c.background, shuffled])
    flows = np.stack([c.background_flow_forward] * 2)
    per = np.asarray(warping_error(batch, flows, np.stack([c.background_flow_backward] * 2), reduce="none"))
    assert per.shape == (2, 5)
    assert float(per[0].mean()) == pytest.approx(clean, rel=1e-5)


def test_warping_error_jit_and_grad():
    c = generate_clip(1, num_frames=3, height=24, width=24, num_objects=1)
    f = jax.jit(lambda v: warping_error(v, c.flow_forward, c.flow_backward))
    v = jnp.asarray(c.frames)
    assert float(f(v)) == pytest.approx(float(warping_error(c.frames, c.flow_forward, c.flow_backward)), rel=1e-6)
    occ = np.ones((2, 24, 24), bool)
    g = jax.grad(lambda v: warping_error(v, c.flow_forward, occlusion=occ))(v)
    assert np.isfinite(np.asarray(g)).all()               # no NaN even with no valid pixel
    g = jax.grad(f)(v)
    assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).max() > 0


def test_warping_error_bad_shapes():
    frames = np.zeros((3, 8, 8, 3), np.float32)
    with pytest.raises(ValueError, match="flow_forward"):
        warping_error(frames, np.zeros((3, 8, 8, 2)))
    with pytest.raises(ValueError, match="occlusion"):
        warping_error(frames, np.zeros((2, 8, 8, 2)), occlusion=np.zeros((2, 8, 7), bool))
    with pytest.raises(ValueError, match="norm"):
        warping_error(frames, np.zeros((2, 8, 8, 2)), norm="l3")
