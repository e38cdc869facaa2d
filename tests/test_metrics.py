"""PSNR / SSIM (vs independent float64 references and hand-computed values), EPE, warping error."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.ndimage import correlate

from peanut_jax.data import generate_clip
from peanut_jax.metrics import (
    consistency_occlusion,
    epe,
    gaussian_kernel_1d,
    psnr,
    rgb_to_y,
    ssim,
    warping_error,
)


def images(seed, shape=(2, 24, 30, 3)):
    """A smooth image and a noisy, shifted version of it, in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[-3], 0 : shape[-2]]
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
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    win = np.outer(g, g) / np.outer(g, g).sum()
    f = lambda z: correlate(z, win, mode="mirror")[5:-5, 5:-5]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    return np.mean((2 * mx * my + c1) * (2 * sxy + c2) / ((mx**2 + my**2 + c1) * (sxx + syy + c2)))


def ref_ssim(a, b, data_range):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return np.mean([ref_ssim_channel(a[..., c], b[..., c], data_range) for c in range(a.shape[-1])])


# ------------------------------------------------------------------------------- PSNR
def test_psnr_known_values():
    a = np.zeros((8, 8, 3))
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-9)  # mse = 0.01
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
    expected = (2 * c1 * c2 + 0.01**2) / (c1**2 + c2**2 + 0.01**2)
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
    expected[:, :, w - 2 :] = True  # targets beyond the right edge
    np.testing.assert_array_equal(occ, expected)
    assert not np.asarray(consistency_occlusion(fw, -fw, check_bounds=False))[:, :, : w - 2].any()
    assert np.asarray(consistency_occlusion(fw, fw)).all()  # inconsistent everywhere
    zero = np.zeros((2, h, w, 2), np.float32)
    assert not np.asarray(consistency_occlusion(zero, zero)).any()
    # the threshold: |fw + bw|^2 < 0.01 (|fw|^2 + |bw|^2) + 0.5
    bw = -fw.copy()
    bw[..., 1] = 0.7  # 0.49 < 0.01 * 8.49 + 0.5: consistent
    assert not np.asarray(consistency_occlusion(fw, bw))[:, :, : w - 2].any()
    bw[..., 1] = 0.8  # 0.64 > 0.01 * 8.64 + 0.5 = 0.5864
    assert np.asarray(consistency_occlusion(fw, bw))[:, :, : w - 2].all()


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
    flow[..., 0] = 1.0  # read frame t+1 one pixel to the right
    expected = []
    for t in range(2):
        d = np.abs(frames[t][:, :-1] - frames[t + 1][:, 1:]).mean(-1)  # last column leaves
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
    occ[1] = True  # a pair with no valid pixel
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
    assert np.isfinite(np.asarray(g)).all()  # no NaN even with no valid pixel
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


# ==================================================================== one PSNR / one SSIM
# Frozen transcriptions of the copies that lived in pipeline/erase.py, pipeline/evaluate_vsr.py,
# pipeline/demo.py, pipeline/interpolate.py, train/tasks/{rife,e2fgvi}.py and metrics/{image,
# ssim_matlab}.py before issue 12: each call site's replacement must give the same bits.
from peanut_jax.metrics import box_region, ssim_matlab
from peanut_jax.metrics.image import SSIM_K1, SSIM_K2


def old_psnr_e2fgvi(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(20.0 * np.log10(255.0 / np.sqrt(mse)))


def old_box_mean_valid(x, k):
    s = np.zeros((x.shape[0] + 1, x.shape[1] + 1), np.float64)
    np.cumsum(np.cumsum(x, 0), 1, out=s[1:, 1:])
    return (s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]) / float(k * k)


def old_ssim_e2fgvi(a, b, data_range=255.0, win_size=65):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    np_ = win_size * win_size
    cov_norm = np_ / (np_ - 1.0)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for c in range(a.shape[-1]):
        x, y = a[..., c], b[..., c]
        ux, uy = old_box_mean_valid(x, win_size), old_box_mean_valid(y, win_size)
        uxx, uyy, uxy = (
            old_box_mean_valid(x * x, win_size),
            old_box_mean_valid(y * y, win_size),
            old_box_mean_valid(x * y, win_size),
        )
        vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
        vals.append(s.mean())
    return float(np.mean(vals))


def old_vsr_psnr(a, b):
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def old_rife_psnr(a, b):
    return -10.0 * jnp.log10(jnp.mean(jnp.square(a - b), axis=(1, 2, 3)))


def old_psnr_hole(comp01, gt01, masks):
    m = jnp.broadcast_to(masks, comp01.shape)
    axes = tuple(range(1, comp01.ndim))
    num = jnp.sum(m * jnp.square(comp01 - gt01), axis=axes)
    den = jnp.sum(m, axis=axes)
    mse = jnp.maximum(num / jnp.maximum(den, 1.0), 1e-10)
    return jnp.where(den > 0, -10.0 * jnp.log10(mse), 0.0)


def old_psnr_clip(comp01, gt01):
    mse = jnp.mean(jnp.square(comp01 - gt01), axis=tuple(range(1, comp01.ndim)))
    return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def old_ssim_map(a, b):
    g = jnp.asarray(gaussian_kernel_1d(), jnp.float32)
    c = a.shape[-1]

    def filt(x):
        for shape in ((11, 1, 1, 1), (1, 11, 1, 1)):
            kern = jnp.broadcast_to(g.reshape(shape), shape[:2] + (1, c))
            x = jax.lax.conv_general_dilated(
                x,
                kern,
                (1, 1),
                "VALID",
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                feature_group_count=c,
                precision=jax.lax.Precision.HIGHEST,
            )
        return x

    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mu1, mu2 = filt(a), filt(b)
    s1, s2, s12 = filt(a * a) - mu1 * mu1, filt(b * b) - mu2 * mu2, filt(a * b) - mu1 * mu2
    return ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 * mu1 + mu2 * mu2 + c1) * (s1 + s2 + c2))


def old_region_psnr(out, ref, region):
    d = (out.astype(np.float64) - ref.astype(np.float64))[region]
    mse = float(np.mean(d**2)) if d.size else 0.0
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def old_region_ssim(out, ref, region, margin=8):
    vals = []
    for o, r, m in zip(out, ref, region):
        ys, xs = np.nonzero(m)
        if ys.size == 0:
            continue
        h, w = m.shape
        y0, y1 = max(0, ys.min() - margin), min(h, ys.max() + 1 + margin)
        x0, x1 = max(0, xs.min() - margin), min(w, xs.max() + 1 + margin)
        if y1 - y0 < 16:
            y0, y1 = max(0, min(y0, h - 16)), min(h, max(y1, 16))
        if x1 - x0 < 16:
            x0, x1 = max(0, min(x0, w - 16)), min(w, max(x1, 16))
        vals.append(float(ssim(o[y0:y1, x0:x1].astype(np.float64), r[y0:y1, x0:x1].astype(np.float64))))
    return float(np.mean(vals)) if vals else float("nan")


def old_image_psnr_np(a, b, data_range=1.0):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2, axis=(-3, -2, -1))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def old_image_ssim_np(a, b, data_range=1.0):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    g = gaussian_kernel_1d()
    h, w = a.shape[-3], a.shape[-2]

    def filt(x):
        y = sum(g[i] * x[..., i : i + h - 10, :, :] for i in range(11))
        return sum(g[i] * y[..., :, i : i + w - 10, :] for i in range(11))

    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu1, mu2 = filt(a), filt(b)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1, s2, s12 = filt(a * a) - mu1_sq, filt(b * b) - mu2_sq, filt(a * b) - mu12
    smap = ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    return np.mean(smap, axis=(-3, -2, -1))


def old_ssim_matlab(img1, img2, val_range=None, window_size=11, reduce="mean"):
    img1, img2 = jnp.asarray(img1, jnp.float32), jnp.asarray(img2, jnp.float32)
    h, w = img1.shape[1:3]
    axes = (1, 2, 3) if reduce == "none" else (0, 1, 2, 3)
    if val_range is None:
        L = jnp.where(jnp.max(img1, axis=axes, keepdims=True) > 128, 255.0, 1.0) - jnp.where(
            jnp.min(img1, axis=axes, keepdims=True) < -0.5, -1.0, 0.0
        )
    else:
        L = jnp.float32(val_range)
    size = min(window_size, h, w)
    g = np.asarray([math.exp(-((x - size // 2) ** 2) / float(2 * 1.5**2)) for x in range(size)], np.float32)
    g = g / g.sum(dtype=np.float32)

    def filt(x, axis):
        n_out, out = x.shape[axis] - len(g) + 1, None
        for k, wk in enumerate(g):
            sl = [slice(None)] * x.ndim
            sl[axis] = slice(k, k + n_out)
            term = x[tuple(sl)] * jnp.float32(wk)
            out = term if out is None else out + term
        return out

    def blur(x):
        x = jnp.pad(x, ((0, 0), (5, 5), (5, 5), (5, 5)), mode="edge")
        for ax in (3, 1, 2):
            x = filt(x, ax)
        return x

    mu1, mu2 = blur(img1), blur(img2)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq, sigma2_sq, sigma12 = blur(img1 * img1) - mu1_sq, blur(img2 * img2) - mu2_sq, blur(img1 * img2) - mu1_mu2
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    v1, v2 = 2.0 * sigma12 + c2, sigma1_sq + sigma2_sq + c2
    smap = ((2 * mu1_mu2 + c1) * v1) / ((mu1_sq + mu2_sq + c1) * v2)
    return jnp.mean(smap, axis=(1, 2, 3)) if reduce == "none" else jnp.mean(smap)


def _same(x, y):
    """Bit-identical (NaN == NaN), arrays or scalars."""
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert np.asarray(x).dtype == np.asarray(y).dtype or np.ndim(x) == 0


def _u8_pair(seed, shape):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape).astype(np.uint8)
    b = np.clip(a.astype(np.int32) + rng.integers(-30, 31, shape), 0, 255).astype(np.uint8)
    return a, b


def test_e2fgvi_protocol_is_bit_identical():
    for seed in range(4):
        a, b = _u8_pair(seed, (70, 83, 3))
        comp = a.astype(np.float32) + np.float32(0.5) * (seed % 2)  # float composites occur too
        assert psnr(comp, b, 255.0, reduction="all", formula="e2fgvi") == old_psnr_e2fgvi(comp, b)
        assert ssim(comp, b, 255.0, window="uniform", window_size=65, reduction="all") == old_ssim_e2fgvi(comp, b)
        assert ssim(comp, b, 255.0, window="uniform", window_size=65) == old_ssim_e2fgvi(comp, b)
    assert psnr(a, a, 255.0, reduction="all", formula="e2fgvi") == math.inf
    # the uniform window is the skimage one (sample covariance, valid crop), not the Gaussian
    assert abs(ssim(a, b, 255.0, window="uniform", window_size=65) - float(ssim(a, b, 255.0))) > 1e-3
    with pytest.raises(ValueError, match="window"):
        ssim(a[:60], b[:60], 255.0, window="uniform", window_size=65)
    with pytest.raises(ValueError, match="odd"):
        ssim(a, b, 255.0, window="uniform", window_size=64)
    # batched: one value per image, the same as one call per image
    stack_a, stack_b = np.stack([a, b]), np.stack([b, a])
    per = ssim(stack_a, stack_b, 255.0, window="uniform", window_size=9)
    assert per.shape == (2,) and per[1] == ssim(b, a, 255.0, window="uniform", window_size=9)


def test_uniform_window_is_skimage_compare_ssim():
    """Against skimage's formulation written with scipy.ndimage.uniform_filter and the valid crop."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (80, 97, 3)).astype(np.float64)
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    ref = []
    for c in range(3):
        x, y = b[..., c], a[..., c]
        f = lambda z: ndi.uniform_filter(z, 65)[32:-32, 32:-32]
        cov = 65**2 / (65**2 - 1)
        ux, uy = f(x), f(y)
        vx, vy, vxy = cov * (f(x * x) - ux * ux), cov * (f(y * y) - uy * uy), cov * (f(x * y) - ux * uy)
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        ref.append((((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))).mean())
    got = ssim(b, a, 255.0, window="uniform", window_size=65, reduction="all")
    assert got == pytest.approx(float(np.mean(ref)), abs=1e-10) and 0.0 < got < 0.99
    assert ssim(a, a, 255.0, window="uniform", window_size=65, reduction="all") == pytest.approx(1.0)


def test_vsr_and_region_protocols_are_bit_identical():
    rng = np.random.default_rng(5)
    for _ in range(20):
        a = np.round(rng.random((2, 17, 19, 3)) * 255) / 255
        b = np.round(rng.random((2, 17, 19, 3)) * 255) / 255
        assert psnr(a, b, reduction="all", formula="rife") == old_vsr_psnr(a, b)  # math.log10
        region = rng.random((2, 17, 19)) < 0.3
        assert psnr(a, b, mask=region, reduction="all") == old_region_psnr(a, b, region)
    assert psnr(a, a, reduction="all", formula="rife") == math.inf
    assert psnr(a, b, mask=np.zeros((2, 17, 19), bool), reduction="all") == old_region_psnr(a, b, region & False)
    # a region SSIM over per-frame boxes; a frame without region is skipped
    t, h, w = 3, 48, 56
    out, ref = rng.random((t, h, w, 3)), rng.random((t, h, w, 3))
    region = np.zeros((t, h, w), bool)
    region[0, 10:14, 50:55] = True
    region[2, 20:40, 3:30] = True
    assert ssim(out, ref, mask=region, box_margin=8, reduction="all") == old_region_ssim(out, ref, region)
    per = ssim(out, ref, mask=region, box_margin=8)
    assert np.isnan(per[1]) and per[0] == float(ssim(out[0, 2:22, 40:56], ref[0, 2:22, 40:56]))
    assert box_region(region[0], 8) == (2, 22, 40, 56) and box_region(region[1], 8) is None
    assert math.isnan(ssim(out, ref, mask=region & False, box_margin=8, reduction="all"))


def test_mmagic_protocol_is_bit_identical_and_psnr_variants_differ():
    a, b = images(7, (3, 20, 26, 3))
    _same(psnr(a, b), old_image_psnr_np(a, b))
    _same(psnr(a * 255, b * 255, 255.0), old_image_psnr_np(a * 255, b * 255, 255.0))
    _same(ssim(a, b), old_image_ssim_np(a, b))
    # the three formulas are one number written three ways: equal to ~1e-12, not always bitwise
    forms = [psnr(a, b, formula=f) for f in ("mmagic", "e2fgvi", "rife")]
    np.testing.assert_allclose(forms[0], forms[1], rtol=1e-12)
    np.testing.assert_allclose(forms[0], forms[2], rtol=1e-12)


def test_training_metrics_are_bit_identical_under_jit():
    rng = np.random.default_rng(3)
    comp = jnp.asarray(rng.random((2, 3, 24, 28, 3)), jnp.float32)
    gt = jnp.asarray(rng.random((2, 3, 24, 28, 3)), jnp.float32)
    masks = jnp.asarray(rng.random((2, 3, 24, 28, 1)) < 0.2, jnp.float32).at[1].set(0.0)  # clip 1: no hole

    @jax.jit
    def old(c, g, m):
        flat_c, flat_g = c.reshape(-1, 24, 28, 3), g.reshape(-1, 24, 28, 3)
        smap = old_ssim_map(flat_c, flat_g)
        mcrop = jnp.broadcast_to(m.reshape(-1, 24, 28, 1)[:, 5:19, 5:23], smap.shape)
        return (
            old_psnr_hole(c, g, m),
            old_psnr_clip(c, g),
            jnp.mean(smap),
            jnp.sum(smap * mcrop) / jnp.maximum(jnp.sum(mcrop), 1.0),
            old_rife_psnr(flat_c, flat_g),
            smap,
        )

    @jax.jit
    def new(c, g, m):
        flat_c, flat_g = c.reshape(-1, 24, 28, 3), g.reshape(-1, 24, 28, 3)
        return (
            psnr(c, g, mask=m, reduction="sample", formula="rife", mse_floor=1e-10, empty=0.0),
            psnr(c, g, reduction="sample", formula="rife", mse_floor=1e-10),
            ssim(flat_c, flat_g, reduction="all"),
            ssim(flat_c, flat_g, mask=m.reshape(-1, 24, 28, 1), reduction="all"),
            psnr(flat_c, flat_g, formula="rife"),
            ssim(flat_c, flat_g, reduction="map"),
        )

    o, n = old(comp, gt, masks), new(comp, gt, masks)
    for k in (0, 1, 4):  # the PSNRs: the same bits
        _same(n[k], o[k])
    # the SSIM: tasks/e2fgvi.py wrote 2 * mu1 * mu2 where the one SSIM shares mu1 * mu2 (as mmagic and
    # ssim_matlab do); XLA may fuse the two into different multiply-adds: float32 rounding only
    for k in (2, 3, 5):
        np.testing.assert_allclose(n[k], o[k], rtol=0, atol=1e-6)
    assert float(new(comp, gt, masks)[0][1]) == 0.0
    # eager calls give the same bits as well
    _same(
        psnr(comp, gt, mask=masks, reduction="sample", formula="rife", mse_floor=1e-10, empty=0.0),
        old(comp, gt, masks)[0],
    )


def test_matlab_protocol_is_bit_identical():
    rng = np.random.default_rng(2)
    a = rng.random((3, 20, 24, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    for x, y in ((a, b), (a * 255, b * 255), (a - 0.7, b)):
        _same(ssim(x, y, None, window="matlab", reduction="all"), old_ssim_matlab(x, y))
        _same(ssim(x, y, None, window="matlab", reduction="sample"), old_ssim_matlab(x, y, reduce="none"))
        _same(ssim_matlab(x, y, reduce="none"), old_ssim_matlab(x, y, reduce="none"))
    _same(ssim_matlab(a, b, val_range=255.0, window_size=7), old_ssim_matlab(a, b, 255.0, 7))
    _same(ssim_matlab(a[:, :8, :9], b[:, :8, :9]), old_ssim_matlab(a[:, :8, :9], b[:, :8, :9]))  # window min(11, H, W)
    thumb_old = jax.jit(lambda x, y: old_ssim_matlab(x, y, reduce="none"))
    thumb_new = jax.jit(lambda x, y: ssim(x, y, None, window="matlab", reduction="sample"))
    _same(thumb_new(a, b), thumb_old(a, b))  # the scene-cut measure runs under jit


def test_metric_options_fail_loudly():
    a, b = images(8, (2, 20, 20, 3))
    for kw in (
        {"reduction": "mean"},
        {"formula": "db"},
        {"mse_floor": 0.0},
        {"mask": np.ones((2, 20, 19), bool)},
        {"mask": np.ones((2, 20, 20))},
        {"data_range": 0},
    ):
        with pytest.raises(ValueError):
            psnr(a, b, **kw)
    for kw in (
        {"window": "box"},
        {"reduction": "none"},
        {"data_range": None},
        {"window_size": 0},
        {"window": "matlab", "mask": np.ones((2, 20, 20), bool)},
        {"window": "uniform", "mask": np.ones((2, 20, 20), bool)},
        {"box_margin": 4},
        {"window": "matlab", "reduction": "map"},
        {"window": "matlab", "data_range": None, "y_channel": True},
    ):
        with pytest.raises(ValueError):
            ssim(a, b, **kw)
    with pytest.raises(ValueError, match="same shape"):
        ssim_matlab(a, b[:1])
    with pytest.raises(ValueError, match="reduce"):
        ssim_matlab(a, b, reduce="sum")
    with pytest.raises(ValueError, match="box_margin"):
        ssim(jnp.asarray(a), jnp.asarray(b), mask=np.ones((2, 20, 20), bool), box_margin=2)
    # mask semantics: the masked PSNR is the PSNR of the selected pixels
    m = np.zeros((2, 20, 20), bool)
    m[:, 2:9, 4:15] = True
    np.testing.assert_allclose(
        psnr(a, b, mask=m), [psnr(a[i, 2:9, 4:15], b[i, 2:9, 4:15]) for i in range(2)], rtol=1e-12
    )
    np.testing.assert_allclose(psnr(jnp.asarray(a), jnp.asarray(b), mask=m), psnr(a, b, mask=m), rtol=1e-5)
    np.testing.assert_allclose(
        psnr(a, b, mask=m, crop_border=3), psnr(a[:, 3:-3, 3:-3], b[:, 3:-3, 3:-3], mask=m[:, 3:-3, 3:-3]), rtol=1e-12
    )
    full = ssim(a, b, reduction="map")
    np.testing.assert_allclose(
        ssim(a, b, mask=m),
        (full * m[:, 5:-5, 5:-5, None]).sum((1, 2, 3)) / (3 * m[:, 5:-5, 5:-5].sum((1, 2))),
        rtol=1e-12,
    )
