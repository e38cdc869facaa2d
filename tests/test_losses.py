"""Loss library: parity with independent references (torch float64 written from the official
formulas, numpy float64), known values, gradients, jit, bad input; VGG19 features + converter.

``test_official_*`` additionally run the official RIFE / E2FGVI loss code read from the official
git mirrors (a local development check: skipped unless $PEANUT_MIRROR points at them).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from peanut_jax import losses as L
from peanut_jax.testing import parity_error

TOL = 2e-4


def _rand(seed, shape, lo=0.0, hi=1.0):
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)


def _torch():
    return pytest.importorskip("torch")


def _t(x, dtype=None):
    """NHWC numpy -> NCHW torch (float64 by default)."""
    torch = _torch()
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(x, np.float64), -1, 1)))


def _n(t):
    """NCHW torch -> NHWC numpy."""
    return np.moveaxis(t.detach().numpy(), 1, -1)


def _grad_finite(fn, *args):
    g = jax.grad(fn)(*args)
    assert np.all(np.isfinite(np.asarray(g)))
    return g


# ------------------------------------------------------------------------------ reconstruction
def test_l1_and_charbonnier():
    a, b = _rand(0, (2, 5, 7, 3)), _rand(1, (2, 5, 7, 3))
    d = a.astype(np.float64) - b
    assert parity_error(L.l1_loss(a, b), np.mean(np.abs(d))) < 1e-6
    ref = np.mean(np.sqrt(d * d + 1e-12))
    assert parity_error(L.charbonnier_loss(a, b), ref) < 1e-6
    assert parity_error(L.charbonnier_loss(a, b, reduction="sum"), np.sum(np.sqrt(d * d + 1e-12))) < 1e-6
    assert float(L.l1_loss(a, a)) == 0.0
    assert abs(float(L.charbonnier_loss(a, a)) - 1e-6) < 1e-9  # sqrt(eps)
    assert parity_error(L.charbonnier_loss(a, b, eps=1e-3), np.mean(np.sqrt(d * d + 1e-3))) < 1e-6
    _grad_finite(lambda p: L.charbonnier_loss(p, jnp.asarray(b)), jnp.asarray(a))
    _grad_finite(lambda p: L.charbonnier_loss(p, p), jnp.asarray(a))  # eps keeps the gradient finite at 0
    with pytest.raises(ValueError, match="same shape"):
        L.l1_loss(a, b[:, :4])
    with pytest.raises(ValueError, match="reduction"):
        L.charbonnier_loss(a, b, reduction="max")


def test_hole_valid_against_torch():
    torch = _torch()
    rng = np.random.default_rng(2)
    pred, gt = _rand(3, (2, 3, 9, 11, 3), -1, 1), _rand(4, (2, 3, 9, 11, 3), -1, 1)
    mask = (rng.uniform(size=(2, 3, 9, 11, 1)) > 0.6).astype(np.float32)
    # E2FGVI trainer, (b, t, c, h, w) torch layout, float64
    tp, tg, tm = (torch.from_numpy(np.moveaxis(x, -1, 2).astype(np.float64)) for x in (pred, gt, mask))
    l1 = torch.nn.L1Loss()
    hole = l1(tp * tm, tg * tm) / torch.mean(tm)
    valid = l1(tp * (1 - tm), tg * (1 - tm)) / torch.mean(1 - tm)
    e_h = parity_error(L.hole_loss(pred, gt, mask), hole.item())
    e_v = parity_error(L.valid_loss(pred, gt, mask), valid.item())
    assert e_h < 1e-6 and e_v < 1e-6, (e_h, e_v)
    # a full-channel mask gives the same numbers
    assert parity_error(L.hole_loss(pred, gt, np.repeat(mask, 3, -1)), hole.item()) < 1e-6
    assert float(L.hole_loss(pred, pred, mask)) == 0.0
    # an empty hole: 0 (the official would divide 0 by 0) with a finite gradient
    zero = np.zeros_like(mask)
    assert float(L.hole_loss(pred, gt, zero)) == 0.0
    _grad_finite(lambda p: L.hole_loss(p, jnp.asarray(gt), jnp.asarray(zero)), jnp.asarray(pred))
    _grad_finite(lambda p: L.valid_loss(p, jnp.asarray(gt), jnp.asarray(mask)), jnp.asarray(pred))
    with pytest.raises(ValueError, match="mask"):
        L.hole_loss(pred, gt, mask[..., :5, :])


def _torch_laplacian(x, y, levels):
    """RIFE LapLoss written from the definition (reflect pad 2, depthwise binomial, zero insertion)."""
    torch = _torch()
    F = torch.nn.functional
    c = x.shape[1]
    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype)
    k = (k1[:, None] * k1[None, :] / 256.0).expand(c, 1, 5, 5)

    def gauss(img, kern):
        return F.conv2d(F.pad(img, (2, 2, 2, 2), mode="reflect"), kern, groups=c)

    def pyramid(img):
        cur, out = img, []
        for _ in range(levels):
            down = gauss(cur, k)[:, :, ::2, ::2]
            up = torch.zeros(down.shape[0], c, down.shape[2] * 2, down.shape[3] * 2, dtype=img.dtype)
            up[:, :, ::2, ::2] = down
            out.append(cur - gauss(up, 4 * k))
            cur = down
        return out

    return sum(F.l1_loss(a, b) for a, b in zip(pyramid(x), pyramid(y)))


@pytest.mark.parametrize("shape,levels", [((2, 64, 96, 3), 5), ((1, 24, 40, 2), 3)])
def test_laplacian_against_torch(shape, levels):
    a, b = _rand(5, shape), _rand(6, shape)
    ref = _torch_laplacian(_t(a), _t(b), levels).item()
    got = L.laplacian_loss(a, b, max_levels=levels)
    err = parity_error(got, ref)
    print(f"laplacian {shape} L={levels}: {float(got):.6f} vs {ref:.6f} err {err:.2e}")
    assert err < 1e-6
    assert float(L.laplacian_loss(a, a, max_levels=levels)) == 0.0
    _grad_finite(lambda p: L.laplacian_loss(p, jnp.asarray(b), levels), jnp.asarray(a))


def test_laplacian_pyramid_levels():
    """Band-pass levels only; a constant image has an all-zero pyramid (the kernel sums to 1)."""
    pyr = L.laplacian_pyramid(jnp.full((1, 64, 64, 3), 0.7), 5)
    assert [p.shape[1] for p in pyr] == [64, 32, 16, 8, 4]
    assert max(float(jnp.max(jnp.abs(p))) for p in pyr) < 1e-6


def test_laplacian_bad_sizes():
    a = np.zeros((1, 48, 64, 3), np.float32)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*max_levels = 32"):
        L.laplacian_loss(a, a)
    b = np.zeros((1, 32, 64, 3), np.float32)  # divisible, but torch's reflect pad fails at the coarsest level
    with pytest.raises(ValueError, match="at least"):
        L.laplacian_loss(b, b)
    with pytest.raises(ValueError, match="same shape"):
        L.laplacian_loss(np.zeros((1, 64, 64, 3)), np.zeros((1, 64, 64, 1)))
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    with pytest.raises(RuntimeError):  # the size limit is torch's too
        _torch_laplacian(_t(b), _t(b), 5)


# ------------------------------------------------------------------------------ flow
def test_epe():
    f, g = _rand(7, (2, 6, 5, 2), -3, 3), _rand(8, (2, 6, 5, 2), -3, 3)
    m = (_rand(9, (2, 6, 5, 1)) > 0.3).astype(np.float32)
    ref = np.sqrt(np.sum((f.astype(np.float64) - g) ** 2, -1, keepdims=True) + 1e-6) * m
    out = L.epe(f, g, m)
    assert out.shape == (2, 6, 5, 1)
    assert parity_error(out, ref) < 1e-6
    np.testing.assert_allclose(L.epe(f, f), 1e-3, rtol=1e-5)  # sqrt(1e-6)
    gg = jax.grad(lambda a, b: jnp.mean(L.epe(a, b, m)), argnums=(0, 1))(jnp.asarray(f), jnp.asarray(g))
    assert np.all(np.isfinite(gg[0])) and float(jnp.max(jnp.abs(gg[1]))) == 0.0  # gt is detached
    _grad_finite(lambda a: jnp.mean(L.epe(a, a)), jnp.asarray(f))  # eps keeps the gradient finite


def test_sobel_against_torch():
    torch = _torch()
    F = torch.nn.functional
    a, b = _rand(10, (2, 9, 13, 3)), _rand(11, (2, 9, 13, 3))
    kx = torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=torch.float64)[None, None]
    ky = kx.transpose(2, 3)
    ta, tb = _t(a).reshape(6, 1, 9, 13), _t(b).reshape(6, 1, 9, 13)
    ref = torch.abs(F.conv2d(ta, kx, padding=1) - F.conv2d(tb, kx, padding=1)) + torch.abs(
        F.conv2d(ta, ky, padding=1) - F.conv2d(tb, ky, padding=1)
    )
    ref = _n(ref.reshape(2, 3, 9, 13))
    out = L.sobel(a, b)
    err = parity_error(out, ref)
    print(f"sobel err {err:.2e}")
    assert out.shape == a.shape and err < 1e-6
    assert float(jnp.max(L.sobel(a, a))) == 0.0
    # gt = 0: the HDv3 flow-smoothness use
    ref0 = _n((torch.abs(F.conv2d(ta, kx, padding=1)) + torch.abs(F.conv2d(ta, ky, padding=1))).reshape(2, 3, 9, 13))
    assert parity_error(L.sobel(a, 0.0), ref0) < 1e-6
    # a horizontal ramp has Sx = -8 * slope inside, Sy = 0
    ramp = np.tile(np.arange(13, dtype=np.float32)[None, None, :, None], (1, 9, 1, 1))
    inner = np.asarray(L.sobel(ramp, 0.0))[0, 1:-1, 1:-1, 0]
    np.testing.assert_allclose(inner, 8.0)
    _grad_finite(lambda p: jnp.mean(L.sobel(p, jnp.asarray(b))), jnp.asarray(a))


def test_flow_completion_and_targets():
    torch = _torch()
    frames = _rand(12, (2, 3, 20, 28, 3))
    w = np.array([[0.5, -1.0], [2.0, 0.3], [-0.7, 1.1]], np.float32)

    def fake_flow(a, b):  # any deterministic two-frame function stands in for the frozen SPyNet
        return jnp.tanh(a - b) @ w + a[..., :2] * b[..., 1:]

    fwd, bwd = L.e2fgvi_flow_targets(fake_flow, jnp.asarray(frames))
    assert fwd.shape == bwd.shape == (2, 2, 5, 7, 2)
    # torch: F.interpolate(1/4, bilinear, align_corners=True, recompute_scale_factor=True)
    small = torch.nn.functional.interpolate(
        torch.from_numpy(np.moveaxis(frames.reshape(6, 20, 28, 3), -1, 1)),
        scale_factor=1 / 4,
        mode="bilinear",
        align_corners=True,
        recompute_scale_factor=True,
    )
    small = np.moveaxis(small.numpy(), 1, -1).reshape(2, 3, 5, 7, 3)
    ref_f = np.asarray(fake_flow(small[:, :-1].reshape(-1, 5, 7, 3), small[:, 1:].reshape(-1, 5, 7, 3)))
    ref_b = np.asarray(fake_flow(small[:, 1:].reshape(-1, 5, 7, 3), small[:, :-1].reshape(-1, 5, 7, 3)))
    e1 = parity_error(fwd, ref_f.reshape(2, 2, 5, 7, 2))
    e2 = parity_error(bwd, ref_b.reshape(2, 2, 5, 7, 2))
    print(f"e2fgvi flow targets err {e1:.2e} {e2:.2e}")
    assert e1 < 1e-5 and e2 < 1e-5
    pf, pb = _rand(13, fwd.shape, -1, 1), _rand(14, fwd.shape, -1, 1)
    ref = np.mean(np.abs(pf.astype(np.float64) - np.asarray(fwd))) + np.mean(
        np.abs(pb.astype(np.float64) - np.asarray(bwd))
    )
    assert parity_error(L.flow_completion_loss(pf, pb, fwd, bwd), ref) < 1e-6
    assert float(L.flow_completion_loss(fwd, bwd, fwd, bwd)) == 0.0
    g = jax.grad(lambda t: L.flow_l1(jnp.asarray(pf), t))(fwd)
    assert float(jnp.max(jnp.abs(g))) == 0.0  # the target is frozen
    with pytest.raises(ValueError, match="at least 2"):
        L.e2fgvi_flow_targets(fake_flow, jnp.asarray(frames[:, :1]))


def _torch_distill(flows, flow_tea, merged, merged_tea, gt):
    torch = _torch()
    out = 0
    for f, m in zip(flows, merged):
        mask = ((m - gt).abs().mean(1, True) > (merged_tea - gt).abs().mean(1, True) + 0.01).double()
        out = out + (((flow_tea - f) ** 2).mean(1, True) ** 0.5 * mask).mean()
    return out if isinstance(out, torch.Tensor) else torch.tensor(out)


def test_flow_distillation_against_torch():
    _torch()
    shape_f, shape_i = (2, 8, 12, 4), (2, 8, 12, 3)
    flows = [_rand(20 + i, shape_f, -4, 4) for i in range(3)]
    flow_tea = _rand(23, shape_f, -4, 4)
    merged = [_rand(24 + i, shape_i) for i in range(3)]
    gt = _rand(27, shape_i)
    merged_tea = np.clip(gt + _rand(28, shape_i, -0.3, 0.3), 0, 1)
    ref = _torch_distill([_t(f) for f in flows], _t(flow_tea), [_t(m) for m in merged], _t(merged_tea), _t(gt))
    got = L.flow_distillation_loss(flows, flow_tea, merged, merged_tea, gt)
    err = parity_error(got, ref.item())
    print(f"distillation {float(got):.6f} vs {ref.item():.6f} err {err:.2e}")
    assert err < 1e-6 and ref.item() > 0
    # the teacher is never better than itself: no loss when the student equals the teacher's frame
    assert float(L.flow_distillation_term(flows[0], flow_tea, merged_tea, merged_tea, gt)) == 0.0
    g_s, g_t = jax.grad(lambda f, t: L.flow_distillation_term(f, t, merged[0], merged_tea, gt), argnums=(0, 1))(
        jnp.asarray(flows[0]), jnp.asarray(flow_tea)
    )
    assert np.all(np.isfinite(g_s)) and float(jnp.max(jnp.abs(g_s))) > 0
    assert float(jnp.max(jnp.abs(g_t))) == 0.0  # teacher flow detached


# ------------------------------------------------------------------------------ census
def _torch_ternary(a, b):
    torch = _torch()
    F = torch.nn.functional
    w = torch.eye(49, dtype=torch.float64).reshape(49, 1, 7, 7)

    def transform(img):
        g = 0.2989 * img[:, 0:1] + 0.5870 * img[:, 1:2] + 0.1140 * img[:, 2:3]
        t = F.conv2d(g, w, padding=3) - g
        return t / torch.sqrt(0.81 + t * t)

    d = (transform(a) - transform(b)) ** 2
    dist = (d / (0.1 + d)).mean(1, True)
    n, _, h, w_ = dist.shape
    mask = F.pad(torch.ones(n, 1, h - 2, w_ - 2, dtype=dist.dtype), [1, 1, 1, 1])
    return dist * mask


def test_ternary_against_torch():
    a, b = _rand(30, (2, 13, 17, 3)), _rand(31, (2, 13, 17, 3))
    ref = _n(_torch_ternary(_t(a), _t(b)))
    out = L.ternary_loss(a, b)
    err = parity_error(out, ref)
    print(f"ternary err {err:.2e}")
    assert out.shape == (2, 13, 17, 1) and err < 1e-6
    assert float(jnp.max(L.ternary_loss(a, a))) == 0.0
    assert float(jnp.max(jnp.abs(out[:, 0]))) == 0.0 and float(jnp.max(jnp.abs(out[:, :, -1]))) == 0.0
    _grad_finite(lambda p: jnp.mean(L.ternary_loss(p, jnp.asarray(b))), jnp.asarray(a))
    # neighbour order: channel o is the pixel at offset (o // 7 - 3, o % 7 - 3)
    g = np.zeros((1, 9, 9, 1), np.float32)
    g[0, 4, 4, 0] = 1.0
    t = np.asarray(L.census_transform(jnp.asarray(g)))
    # at pixel (2, 5) the bright pixel is at offset (+2, -1) -> channel (2+3)*7 + (-1+3) = 37
    assert np.argmax(t[0, 2, 5]) == 37


# ------------------------------------------------------------------------------ adversarial
def test_hinge():
    real, fake = _rand(40, (2, 3, 4, 5, 1), -2, 2), _rand(41, (2, 3, 4, 5, 1), -2, 2)
    r, f = real.astype(np.float64), fake.astype(np.float64)
    ref_d = (np.mean(np.maximum(1 - r, 0)) + np.mean(np.maximum(1 + f, 0))) / 2
    assert parity_error(L.hinge_discriminator_loss(real, fake), ref_d) < 1e-6
    assert parity_error(L.hinge_generator_loss(fake), -np.mean(f)) < 1e-6
    assert float(L.hinge_discriminator_loss(np.full(3, 2.0), np.full(3, -2.0))) == 0.0  # margins satisfied
    assert float(L.hinge_discriminator_loss(np.zeros(3), np.zeros(3))) == 1.0
    g = jax.grad(L.hinge_generator_loss)(jnp.ones((4,)))
    np.testing.assert_allclose(g, -0.25)


def test_losses_compose_in_one_jitted_step():
    """The losses trace inside an outer jit + grad (as in a train step) and match eager values."""
    a, b = _rand(42, (1, 64, 64, 3)), _rand(43, (1, 64, 64, 3))
    m = (_rand(44, (1, 64, 64, 1)) > 0.5).astype(np.float32)

    def total(p):
        return (
            L.laplacian_loss(p, b)
            + L.charbonnier_loss(p, b)
            + L.hole_loss(p, b, m)
            + L.valid_loss(p, b, m)
            + jnp.mean(L.ternary_loss(p, b))
            + 0.1 * jnp.mean(L.sobel(p, b))
        )

    val, g = jax.jit(jax.value_and_grad(total))(jnp.asarray(a))
    assert abs(float(val) - float(total(jnp.asarray(a)))) < 1e-5
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.max(jnp.abs(g))) > 0


# ------------------------------------------------------------------------------ temporal (STC)
def _np_warp(img, flow):
    """Bilinear backward warp with zero padding, float64, loops over pixels."""
    h, w, c = img.shape
    out = np.zeros((h, w, c))
    for y in range(h):
        for x in range(w):
            sx, sy = x + flow[y, x, 0], y + flow[y, x, 1]
            x0, y0 = int(np.floor(sx)), int(np.floor(sy))
            for yy, wy in ((y0, 1 - (sy - y0)), (y0 + 1, sy - y0)):
                for xx, wx in ((x0, 1 - (sx - x0)), (x0 + 1, sx - x0)):
                    if 0 <= yy < h and 0 <= xx < w:
                        out[y, x] += wy * wx * img[yy, xx]
    return out


def _np_stc(video, fw, bw):
    """Mean over pairs of the L1 (channel mean) over non-occluded, in-frame pixels (float64)."""
    b, t, h, w, _ = video.shape
    gy, gx = np.mgrid[0:h, 0:w]
    vals = []
    for i in range(b):
        for j in range(t - 1):
            f, g = fw[i, j].astype(np.float64), bw[i, j].astype(np.float64)
            gw = _np_warp(g, f)
            occ = np.sum((f + gw) ** 2, -1) >= 0.01 * (np.sum(f**2, -1) + np.sum(gw**2, -1)) + 0.5
            tx, ty = gx + f[..., 0], gy + f[..., 1]
            occ |= (tx < 0) | (tx > w - 1) | (ty < 0) | (ty > h - 1)
            d = np.mean(np.abs(video[i, j] - _np_warp(video[i, j + 1].astype(np.float64), f)), -1)
            v = ~occ
            if v.any():
                vals.append(np.sum(d * v) / np.sum(v))
    return np.mean(vals)


def test_stc_against_numpy():
    rng = np.random.default_rng(50)
    video = _rand(51, (1, 3, 10, 12, 3))
    # smooth flows, backward roughly the inverse of forward with some inconsistent regions
    fw = np.broadcast_to(rng.uniform(-2, 2, (1, 2, 1, 1, 2)), (1, 2, 10, 12, 2)).astype(np.float32).copy()
    fw += rng.uniform(-0.3, 0.3, fw.shape).astype(np.float32)
    bw = (-fw + rng.uniform(-0.2, 0.2, fw.shape)).astype(np.float32)
    bw[:, :, :4] += 3.0  # occlusion-like inconsistency in the top rows
    ref = _np_stc(video, fw, bw)
    got = L.stc_loss(video, fw, bw)
    err = parity_error(got, ref)
    print(f"stc {float(got):.6f} vs {ref:.6f} err {err:.2e}")
    assert err < 1e-5
    gv, gf = jax.grad(lambda v, f: L.stc_loss(v, f, jnp.asarray(bw)), argnums=(0, 1))(
        jnp.asarray(video), jnp.asarray(fw)
    )
    assert np.all(np.isfinite(gv)) and float(jnp.max(jnp.abs(gv))) > 0
    assert float(jnp.max(jnp.abs(gf))) == 0.0  # ground-truth flows get no gradient


def test_stc_known_values():
    """A video that moves exactly along its flow scores 0; a global brightness flicker scores its size."""
    base = _rand(52, (1, 16, 20, 3))
    dx, dy = 2, 1
    frames = [base]
    for _ in range(2):  # frame t+1 (y, x) = frame t (y - dy, x - dx): flow t->t+1 = (+dx, +dy)
        frames.append(np.roll(frames[-1], (dy, dx), axis=(1, 2)))
    video = np.stack(frames, 1)
    fw = np.zeros((1, 2, 16, 20, 2), np.float32)
    fw[..., 0], fw[..., 1] = dx, dy
    assert float(L.stc_loss(video, fw, -fw)) < 1e-6
    flicker = video.copy()
    flicker[:, 1] += 0.1  # both pairs differ by 0.1
    assert abs(float(L.stc_loss(flicker, fw, -fw)) - 0.1) < 1e-5
    # an inconsistent backward flow marks everything occluded: no valid pixel -> 0
    assert float(L.stc_loss(flicker, fw, fw)) == 0.0
    with pytest.raises(ValueError, match="flow_fw"):
        L.stc_loss(video, fw[:, :1], -fw)
    with pytest.raises(ValueError, match="at least 2"):
        L.stc_loss(video[:, :1], fw[:, :0], None)


# ------------------------------------------------------------------------------ VGG19 + perceptual
_VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def _torch_vgg19_features(seed=0):
    """torchvision's vgg19().features layout in plain torch.nn (conv3x3+ReLU, MaxPool2d(2, 2))."""
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(seed)
    layers, cin = [], 3
    for v in _VGG_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    feats = nn.Sequential(*layers).eval()
    # torch's default init shrinks activations layer after layer; rescale so deep layers stay O(1)
    with torch.no_grad():
        for m in feats:
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(2.5)
    return feats


def _vgg_state_dict(feats):
    sd = {f"features.{k}": v.detach().numpy().copy() for k, v in feats.state_dict().items()}
    rng = np.random.default_rng(0)
    sd.update(
        {
            "classifier.0.weight": rng.normal(size=(8, 4)).astype(np.float32),
            "classifier.0.bias": np.zeros(8, np.float32),
        }
    )  # ignored by the converter
    return sd


@pytest.fixture(scope="module")
def vgg_pair():
    _torch()
    from peanut_jax.convert import vgg as cv

    feats = _torch_vgg19_features()
    module, variables = cv.from_state_dict(_vgg_state_dict(feats), "vgg19", source="test")
    return feats, module, variables


def test_vgg19_activations_against_torch(vgg_pair):
    torch = _torch()
    feats, module, variables = vgg_pair
    x = _rand(60, (2, 35, 37, 3), -2, 2)  # odd size: floor-mode pooling
    wanted = (1, 4, 6, 11, 20, 29, 35, 36)
    ours = module.apply(variables, x, layers=wanted)
    with torch.no_grad():
        h = torch.from_numpy(np.moveaxis(x, -1, 1))
        ref = {}
        for i, layer in enumerate(feats):
            h = layer(h)
            if i in wanted:
                ref[i] = _n(h)
    for i, o in zip(wanted, ours):
        err = parity_error(o, ref[i])
        print(f"vgg19 features[{i}] {o.shape}: err {err:.2e} (max|ref| {np.abs(ref[i]).max():.3g})")
        assert err < TOL, (i, err)
    by_name = module.apply(variables, x, layers=("relu5_1",))
    np.testing.assert_array_equal(by_name[0], ours[wanted.index(29)])


def _torch_perceptual(feats, x, y):
    """RIFE VGGPerceptualLoss written from the definition (MeanShift as a 1x1 conv)."""
    torch = _torch()
    mean = torch.tensor([0.485, 0.456, 0.406])
    std = torch.tensor([0.229, 0.224, 0.225])
    wgt = (torch.eye(3) / std[:, None]).reshape(3, 3, 1, 1)
    bias = -mean / std
    x = torch.nn.functional.conv2d(x, wgt, bias)
    y = torch.nn.functional.conv2d(y, wgt, bias)
    indices, weights = [2, 7, 12, 21, 30], [1.0 / 2.6, 1.0 / 4.8, 1.0 / 3.7, 1.0 / 5.6, 10 / 1.5]
    loss, k = 0, 0
    for i in range(indices[-1]):
        x, y = feats[i](x), feats[i](y)
        if (i + 1) in indices:
            loss = loss + weights[k] * (x - y.detach()).abs().mean() * 0.1
            k += 1
    return loss


def test_perceptual_against_torch(vgg_pair):
    torch = _torch()
    feats, _, variables = vgg_pair
    a, b = _rand(61, (2, 32, 48, 3)), _rand(62, (2, 32, 48, 3))
    ta = torch.from_numpy(np.moveaxis(a, -1, 1)).requires_grad_(True)
    tb = torch.from_numpy(np.moveaxis(b, -1, 1))
    ref = _torch_perceptual(feats, ta, tb)
    ref.backward()
    loss_fn = lambda p: L.perceptual_loss(variables, p, jnp.asarray(b))  # noqa: E731
    got, g = jax.value_and_grad(loss_fn)(jnp.asarray(a))
    err = parity_error(got, ref.item())
    g_ref = np.moveaxis(ta.grad.numpy(), 1, -1)
    g_err = float(np.max(np.abs(np.asarray(g) - g_ref)) / np.max(np.abs(g_ref)))
    print(f"perceptual {float(got):.6f} vs {ref.item():.6f} err {err:.2e}; grad rel err {g_err:.2e}")
    assert err < TOL and g_err < 1e-3
    assert float(L.perceptual_loss(variables, a, a)) == 0.0
    assert float(L.perceptual_loss(variables["params"], a, b)) == pytest.approx(float(got), rel=1e-6)
    # no gradient to the frozen network or to the target
    gp, gt = jax.grad(lambda v, t: L.perceptual_loss(v, jnp.asarray(a), t), argnums=(0, 1))(variables, jnp.asarray(b))
    assert all(float(jnp.max(jnp.abs(x))) == 0.0 for x in jax.tree_util.tree_leaves(gp))
    assert float(jnp.max(jnp.abs(gt))) == 0.0


def test_vgg_converter_round_trip_and_errors(vgg_pair, tmp_path):
    torch = _torch()
    from peanut_jax.convert import CheckpointMismatchError, from_official
    from peanut_jax.convert import vgg as cv

    feats, module, variables = vgg_pair
    sd = cv.to_state_dict(variables, "vgg19")
    ref = {k: v for k, v in _vgg_state_dict(feats).items() if k.startswith("features.")}
    assert sorted(sd) == sorted(ref) and len(sd) == 32
    for k in sd:
        np.testing.assert_array_equal(sd[k], ref[k])
    # an official-format file through the safe reader
    path = tmp_path / "vgg19.pth"
    torch.save({k: torch.from_numpy(v) for k, v in _vgg_state_dict(feats).items()}, path)
    m2, v2 = from_official("vgg19", str(path))
    assert isinstance(m2, type(module))
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(v2)):
        np.testing.assert_array_equal(a, b)
    assert cv.detect(_vgg_state_dict(feats)) == "vgg19" and cv.detect({"x.weight": np.zeros(2)}) is None
    # RIFE's VGGPerceptualLoss prefix and a bare features dict
    alt = {"vgg_pretrained_features." + k[len("features.") :]: v for k, v in ref.items()}
    _, v3 = cv.from_state_dict(alt, "vgg19")
    np.testing.assert_array_equal(v3["params"]["conv_34"]["kernel"], variables["params"]["conv_34"]["kernel"])
    # missing key / wrong shape named in the error
    bad = dict(ref)
    del bad["features.16.bias"]
    with pytest.raises(CheckpointMismatchError, match="features.16.bias"):
        cv.from_state_dict(bad, "vgg19", source="bad.pth")
    bad = dict(ref)
    bad["features.0.weight"] = np.zeros((64, 4, 3, 3), np.float32)
    with pytest.raises(CheckpointMismatchError, match="features.0.weight"):
        cv.from_state_dict(bad, "vgg19", source="bad.pth")
    with pytest.raises(CheckpointMismatchError, match="not a torchvision VGG19"):
        cv.from_state_dict({"foo.weight": np.zeros(3, np.float32)}, "vgg19", source="foo.pth")


def test_vgg_bad_input():
    from peanut_jax.models.vgg import VGG19Features

    m = VGG19Features()
    with pytest.raises(ValueError, match="unknown layer name"):
        jax.eval_shape(
            lambda x: m.init(jax.random.key(0), x, layers=("relu9_9",)),
            jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32),
        )
    with pytest.raises(ValueError, match="\\(N, H, W, 3\\)"):
        jax.eval_shape(m.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 1), jnp.float32))


# ------------------------------------------------------------------------------ official code (local only)
def _official_source(repo: str, path: str) -> str:
    root = os.environ.get("PEANUT_MIRROR")
    if not root:
        pytest.skip("PEANUT_MIRROR not set: the official-code comparison is a local development aid")
    git_dir = pathlib.Path(root) / repo / "repo"
    if not git_dir.exists():
        pytest.skip(f"no official mirror {git_dir}")
    return subprocess.run(
        ["git", "--git-dir", str(git_dir), "show", f"HEAD:{path}"], check=True, capture_output=True, text=True
    ).stdout


def _exec_official(repo: str, path: str, name: str) -> dict:
    torch = _torch()
    src = _official_source(repo, path)
    saved = {k: sys.modules.get(k) for k in ("torchvision", "torchvision.models")}
    tv = types.ModuleType("torchvision")
    tv.models = types.ModuleType("torchvision.models")  # only VGGPerceptualLoss.__init__ uses it
    sys.modules.update({"torchvision": tv, "torchvision.models": tv.models})
    try:
        ns = {"__name__": name}
        exec(compile(src, f"{repo}/{path}", "exec"), ns)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    assert ns.get("torch") is torch
    return ns


def test_official_rife_losses(vgg_pair):
    torch = _torch()
    loss_ns = _exec_official("hzwer+ECCV2022-RIFE", "model/loss.py", "rife_loss")
    lap_ns = _exec_official("hzwer+ECCV2022-RIFE", "model/laplacian.py", "rife_laplacian")
    c = lambda x: torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))  # noqa: E731
    a, b = _rand(70, (2, 64, 96, 3)), _rand(71, (2, 64, 96, 3))
    f, g = _rand(72, (2, 64, 96, 2), -3, 3), _rand(73, (2, 64, 96, 2), -3, 3)
    m = (_rand(74, (2, 64, 96, 1)) > 0.5).astype(np.float32)
    errs = {}
    with torch.no_grad():
        errs["laplacian"] = parity_error(L.laplacian_loss(a, b), lap_ns["LapLoss"]()(c(a), c(b)).item())
        errs["epe"] = parity_error(L.epe(f, g, m), _n(loss_ns["EPE"]()(c(f), c(g), c(m))))
        errs["ternary"] = parity_error(L.ternary_loss(a, b), _n(loss_ns["Ternary"]()(c(a), c(b))))
        errs["sobel"] = parity_error(L.sobel(a, b), _n(loss_ns["SOBEL"]()(c(a), c(b)).reshape(2, 3, 64, 96)))
        # VGGPerceptualLoss without its __init__ (which downloads ImageNet weights and calls .cuda())
        feats, _, variables = vgg_pair
        vl = loss_ns["VGGPerceptualLoss"].__new__(loss_ns["VGGPerceptualLoss"])
        torch.nn.Module.__init__(vl)
        vl.vgg_pretrained_features = feats
        vl.normalize = loss_ns["MeanShift"]([0.485, 0.456, 0.406], [0.229, 0.224, 0.225], norm=True)
        s = (slice(None), slice(0, 32), slice(0, 48))
        errs["perceptual"] = parity_error(L.perceptual_loss(variables, a[s], b[s]), vl(c(a[s]), c(b[s])).item())
    print("official RIFE losses:", {k: f"{v:.2e}" for k, v in errs.items()})
    assert all(v < TOL for v in errs.values()), errs


def test_official_e2fgvi_adversarial():
    torch = _torch()
    ns = _exec_official("MCG-NKU+E2FGVI", "core/loss.py", "e2fgvi_loss")
    adv = ns["AdversarialLoss"](type="hinge")
    real, fake = _rand(80, (2, 4, 1, 5, 6), -2, 2), _rand(81, (2, 4, 1, 5, 6), -2, 2)
    tr, tf = torch.from_numpy(real), torch.from_numpy(fake)
    d_ref = (adv(tr, True, True) + adv(tf, False, True)) / 2  # core/trainer.py
    g_ref = adv(tf, True, False)
    e_d = parity_error(L.hinge_discriminator_loss(real, fake), d_ref.item())
    e_g = parity_error(L.hinge_generator_loss(fake), g_ref.item())
    print(f"official E2FGVI hinge: D err {e_d:.2e}, G err {e_g:.2e}")
    assert e_d < 1e-6 and e_g < 1e-6
