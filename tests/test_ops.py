"""Operator tests: float64 references written here, torch where installed, gradients."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from peanut_jax.ops import (
    avg_pool2d,
    fold,
    interpolate,
    modulated_deform_conv2d,
    pixel_shuffle,
    pixel_unshuffle,
    unfold,
    warp,
)
from peanut_jax.testing import assert_parity, parity_error

RNG = np.random.default_rng(1234)


def _bilinear64(img, y, x, padding):
    """Independent float64 reference of grid_sample(align_corners=True) at pixel coordinates."""
    n, h, w, c = img.shape
    out = np.zeros(y.shape + (c,))
    for idx in np.ndindex(*y.shape):
        yy, xx = float(y[idx]), float(x[idx])
        if padding == "border":
            yy, xx = min(max(yy, 0.0), h - 1.0), min(max(xx, 0.0), w - 1.0)
        y0, x0 = int(np.floor(yy)), int(np.floor(xx))
        acc = np.zeros(c)
        for yi, wy in ((y0, 1 - (yy - y0)), (y0 + 1, yy - y0)):
            for xi, wx in ((x0, 1 - (xx - x0)), (x0 + 1, xx - x0)):
                if 0 <= yi < h and 0 <= xi < w:
                    acc += wy * wx * img[idx[0], yi, xi]
                elif padding == "border":
                    acc += wy * wx * img[idx[0], min(yi, h - 1), min(xi, w - 1)]
        out[idx] = acc
    return out


@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("hw", [(7, 9), (13, 10)])
def test_warp_matches_float64_and_both_methods(padding, hw):
    h, w = hw
    img = RNG.standard_normal((2, h, w, 3)).astype(np.float32)
    flow = (RNG.standard_normal((2, h, w, 2)) * 3).astype(np.float32)
    flow[0, 0, 0] = (-1.0, 0.5)  # integer / exact-border positions
    flow[1, 2, 3] = (w + 0.25, 0.0)
    gy, gx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    ref = _bilinear64(
        img.astype(np.float64), gy + flow[..., 1].astype(np.float64), gx + flow[..., 0].astype(np.float64), padding
    )
    a = np.asarray(warp(jnp.asarray(img), jnp.asarray(flow), padding, method="gather"))
    b = np.asarray(warp(jnp.asarray(img), jnp.asarray(flow), padding, method="map_coordinates"))
    assert np.abs(a - ref).max() < 1e-5
    assert np.abs(b - ref).max() < 1e-5
    assert np.abs(a - b).max() < 1e-5


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_warp_matches_torch_grid_sample(padding):
    torch = pytest.importorskip("torch")
    n, h, w = 2, 23, 37
    img = RNG.random((n, h, w, 5)).astype(np.float32)
    flow = (RNG.standard_normal((n, h, w, 2)) * 8).astype(np.float32)
    # the mmagic flow_warp: normalised grid + grid_sample(align_corners=True)
    gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    grid = torch.stack((gx, gy), 2).float() + torch.from_numpy(flow)
    gxn = 2.0 * grid[..., 0] / max(w - 1, 1) - 1.0
    gyn = 2.0 * grid[..., 1] / max(h - 1, 1) - 1.0
    ref = torch.nn.functional.grid_sample(
        torch.from_numpy(img).permute(0, 3, 1, 2),
        torch.stack((gxn, gyn), 3),
        mode="bilinear",
        padding_mode=padding,
        align_corners=True,
    )
    out = warp(jnp.asarray(img), jnp.asarray(flow), padding)
    # torch's normalise/un-normalise round trip costs ~1e-4 in fp32 (reference doc): tolerance 2e-4
    assert_parity(out, ref.permute(0, 2, 3, 1).numpy(), 2e-4, "warp vs grid_sample")


def test_warp_gradients():
    img = jnp.asarray(RNG.standard_normal((1, 5, 6, 2)))
    rng = np.random.default_rng(8)  # fractional parts kept away from bilinear kinks
    flow = jnp.asarray(rng.integers(-2, 3, (1, 5, 6, 2)) + rng.uniform(0.2, 0.8, (1, 5, 6, 2)))
    with jax.enable_x64():
        img64, flow64 = img.astype(jnp.float64), flow.astype(jnp.float64)
        for method in ("gather", "map_coordinates"):
            for padding in ("zeros", "border"):
                check_grads(lambda i: warp(i, flow64, padding, method), (img64,), order=1, modes=["rev"])
                check_grads(lambda fl: warp(img64, fl, padding, method), (flow64,), order=1, modes=["rev"], eps=1e-4)


def test_warp_rejects_bad_flow_shape():
    with pytest.raises(ValueError, match="flow must have shape"):
        warp(jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 8, 7, 2)))
    with pytest.raises(ValueError, match="flow must have shape"):
        warp(jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="padding"):
        warp(jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 8, 8, 2)), padding="reflect")


# ---------------------------------------------------------------------------------------------
# modulated deformable convolution


def _dcn64(x, offset, mask, weight, bias, stride, pad, dil, groups, dg):
    """Loop transcription of the mmcv kernel in float64 (NHWC in, HWIO weight)."""
    n, h, w, cin = x.shape
    kh, kw, cin_g, cout = weight.shape
    ho = (h + 2 * pad - dil * (kh - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dil * (kw - 1) - 1) // stride + 1
    k = kh * kw
    cols = np.zeros((n, ho, wo, k, cin))
    cpg = cin // dg
    for b, oy, ox, i, j in itertools.product(range(n), range(ho), range(wo), range(kh), range(kw)):
        t = i * kw + j
        for g in range(dg):
            dy = offset[b, oy, ox, g * 2 * k + 2 * t]
            dx = offset[b, oy, ox, g * 2 * k + 2 * t + 1]
            m = mask[b, oy, ox, g * k + t]
            py, px = oy * stride - pad + i * dil + dy, ox * stride - pad + j * dil + dx
            val = _bilinear64(x[b : b + 1, :, :, g * cpg : (g + 1) * cpg], np.array([[py]]), np.array([[px]]), "zeros")
            cols[b, oy, ox, t, g * cpg : (g + 1) * cpg] = val[0, 0] * m
    out = np.zeros((n, ho, wo, cout))
    og = cout // groups
    for gi in range(groups):
        wg = weight[:, :, :, gi * og : (gi + 1) * og].reshape(k, cin_g, og)
        out[..., gi * og : (gi + 1) * og] = np.einsum("nhwkc,kco->nhwo", cols[..., gi * cin_g : (gi + 1) * cin_g], wg)
    return out + bias


@pytest.mark.parametrize(
    "cfg",
    [
        dict(stride=1, pad=1, dil=1, groups=1, dg=2, k=(3, 3)),
        dict(stride=2, pad=1, dil=1, groups=2, dg=1, k=(3, 3)),
        dict(stride=1, pad=2, dil=2, groups=1, dg=4, k=(3, 2)),
    ],
)
def test_deform_conv_matches_float64_loop(cfg):
    n, h, w, cin, cout = 1, 7, 6, 4, 6
    kh, kw = cfg["k"]
    x = RNG.standard_normal((n, h, w, cin))
    weight = RNG.standard_normal((kh, kw, cin // cfg["groups"], cout))
    bias = RNG.standard_normal(cout)
    ho = (h + 2 * cfg["pad"] - cfg["dil"] * (kh - 1) - 1) // cfg["stride"] + 1
    wo = (w + 2 * cfg["pad"] - cfg["dil"] * (kw - 1) - 1) // cfg["stride"] + 1
    dg = cfg["dg"]
    offset = RNG.standard_normal((n, ho, wo, 2 * dg * kh * kw)) * 2.5
    offset[0, 0, 0, :4] = (1.0, -1.0, 0.0, 7.0)  # integer offsets and far out of range
    mask = RNG.random((n, ho, wo, dg * kh * kw))
    ref = _dcn64(x, offset, mask, weight, bias, cfg["stride"], cfg["pad"], cfg["dil"], cfg["groups"], dg)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    out = modulated_deform_conv2d(
        f32(x), f32(offset), f32(mask), f32(weight), f32(bias), cfg["stride"], cfg["pad"], cfg["dil"], cfg["groups"], dg
    )
    assert out.shape == ref.shape
    assert parity_error(out, ref) < 1e-5
    # the chunked (lax.map over output rows) path gives the same numbers
    chunked = modulated_deform_conv2d(
        f32(x),
        f32(offset),
        f32(mask),
        f32(weight),
        f32(bias),
        cfg["stride"],
        cfg["pad"],
        cfg["dil"],
        cfg["groups"],
        dg,
        max_columns=1,
    )
    assert np.abs(np.asarray(chunked) - np.asarray(out)).max() < 1e-6


def test_deform_conv_zero_offset_unit_mask_is_conv():
    x = jnp.asarray(RNG.standard_normal((2, 9, 11, 8)), jnp.float32)
    weight = jnp.asarray(RNG.standard_normal((3, 3, 8, 5)), jnp.float32)
    offset = jnp.zeros((2, 9, 11, 2 * 4 * 9))
    mask = jnp.ones((2, 9, 11, 4 * 9))
    out = modulated_deform_conv2d(x, offset, mask, weight, None, 1, 1, 1, 1, 4)
    ref = jax.lax.conv_general_dilated(x, weight, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert np.abs(np.asarray(out - ref)).max() < 1e-4


def test_deform_conv_gradients():
    with jax.enable_x64():
        x = jnp.asarray(RNG.standard_normal((1, 4, 5, 2)))
        weight = jnp.asarray(RNG.standard_normal((3, 3, 2, 3)))
        rng = np.random.default_rng(7)  # fractional parts kept away from bilinear kinks
        offset = jnp.asarray(rng.integers(-1, 2, (1, 4, 5, 36)) + rng.uniform(0.2, 0.8, (1, 4, 5, 36)))
        mask = jnp.asarray(RNG.random((1, 4, 5, 18)))
        fn = lambda x_, o_, m_, w_: modulated_deform_conv2d(x_, o_, m_, w_, None, 1, 1, 1, 1, 2)  # noqa: E731
        check_grads(fn, (x, offset, mask, weight), order=1, modes=["rev"], eps=1e-4)


def test_deform_conv_rejects_bad_offset():
    with pytest.raises(ValueError, match="offset must be"):
        modulated_deform_conv2d(
            jnp.zeros((1, 4, 4, 2)), jnp.zeros((1, 4, 4, 17)), jnp.zeros((1, 4, 4, 9)), jnp.zeros((3, 3, 2, 2))
        )


# ---------------------------------------------------------------------------------------------
# resizes


def _interp_torch(torch, x, **kw):
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    return torch.nn.functional.interpolate(t, **kw).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize(
    "mode,align",
    [
        ("bilinear", False),
        ("bilinear", True),
        ("bicubic", False),
        ("bicubic", True),
        ("nearest", None),
        ("nearest-exact", None),
        ("area", None),
    ],
)
@pytest.mark.parametrize("size", [(7, 9), (26, 41), (13, 30), (60, 108)])
def test_interpolate_matches_torch(mode, align, size):
    torch = pytest.importorskip("torch")
    x = RNG.random((2, 13, 17, 3)).astype(np.float32)
    ref = _interp_torch(torch, x, size=size, mode=mode, align_corners=align)
    out = interpolate(jnp.asarray(x), size=size, mode=mode, align_corners=align)
    assert_parity(out, ref, 1e-5, f"{mode} {size}")


@pytest.mark.parametrize("mode,align", [("bilinear", False), ("bilinear", True), ("bicubic", False), ("nearest", None)])
@pytest.mark.parametrize("factor", [0.25, 0.5, 2, 1.7])
@pytest.mark.parametrize("recompute", [None, True])
def test_interpolate_scale_factor_matches_torch(mode, align, factor, recompute):
    torch = pytest.importorskip("torch")
    x = RNG.random((1, 60, 108, 2)).astype(np.float32)
    ref = _interp_torch(torch, x, scale_factor=factor, mode=mode, align_corners=align, recompute_scale_factor=recompute)
    out = interpolate(
        jnp.asarray(x), scale_factor=factor, mode=mode, align_corners=align, recompute_scale_factor=recompute
    )
    assert_parity(out, ref, 1e-5, f"{mode} x{factor}")


def _bilinear_resize64(x, out_h, out_w, align):
    """float64 reference of torch bilinear (align_corners True/False)."""

    def taps(n_in, n_out):
        if align:
            src = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        else:
            src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        lam = src - i0
        m = np.zeros((n_out, n_in))
        m[np.arange(n_out), i0] += 1 - lam
        m[np.arange(n_out), i1] += lam
        return m

    return np.einsum("oh,nhwc,pw->nopc", taps(x.shape[1], out_h), x, taps(x.shape[2], out_w))


@pytest.mark.parametrize("align", [False, True])
def test_bilinear_matches_float64(align):
    x = RNG.random((1, 11, 7, 2))
    for size in [(5, 3), (22, 15), (33, 8)]:
        ref = _bilinear_resize64(x, *size, align)
        out = interpolate(jnp.asarray(x, jnp.float32), size=size, mode="bilinear", align_corners=align)
        assert parity_error(out, ref) < 2e-6


def test_interpolate_gradients():
    """interpolate's gradient is the transposed resampling (not autodiff's scatter): numerical
    first and second derivatives, up- and down-sampling, every mode."""
    with jax.enable_x64():
        x = jnp.asarray(RNG.random((1, 5, 7, 2)))
        for mode, ac in (
            ("bilinear", True),
            ("bilinear", False),
            ("bicubic", False),
            ("bicubic", True),
            ("area", None),
            ("nearest", None),
            ("nearest-exact", None),
        ):
            for size in ((9, 4), (3, 15)):
                check_grads(
                    lambda a: interpolate(a, size=size, mode=mode, align_corners=ac), (x,), order=2, modes=["rev"]
                )


@pytest.mark.parametrize(
    "mode,align", [("bilinear", True), ("bilinear", False), ("bicubic", False), ("area", None), ("nearest", None)]
)
def test_interpolate_gradients_match_torch(mode, align):
    torch = pytest.importorskip("torch")
    x = RNG.random((2, 13, 17, 3)).astype(np.float32)
    for size in ((26, 34), (6, 40)):
        g = RNG.standard_normal((2,) + size + (3,)).astype(np.float32)
        ours = jax.grad(lambda a: jnp.sum(interpolate(a, size=size, mode=mode, align_corners=align) * g))(
            jnp.asarray(x)
        )
        xt = torch.from_numpy(x).permute(0, 3, 1, 2).clone().requires_grad_(True)
        out = torch.nn.functional.interpolate(xt, size=size, mode=mode, align_corners=align)
        torch.sum(out * torch.from_numpy(g).permute(0, 3, 1, 2)).backward()
        assert_parity(np.asarray(ours), xt.grad.permute(0, 2, 3, 1).numpy(), 1e-5, f"{mode} {size}")


def test_interpolate_errors():
    with pytest.raises(ValueError, match="exactly one"):
        interpolate(jnp.zeros((1, 4, 4, 1)))
    with pytest.raises(ValueError, match="mode"):
        interpolate(jnp.zeros((1, 4, 4, 1)), size=(2, 2), mode="lanczos")


@pytest.mark.parametrize("pad,include", [(0, False), (1, False), (1, True)])
def test_avg_pool2d_matches_torch(pad, include):
    torch = pytest.importorskip("torch")
    x = RNG.random((2, 9, 12, 3)).astype(np.float32)
    ref = (
        torch.nn.functional.avg_pool2d(
            torch.from_numpy(x).permute(0, 3, 1, 2), 3 if pad else 2, 2, pad, count_include_pad=include
        )
        .permute(0, 2, 3, 1)
        .numpy()
    )
    out = avg_pool2d(jnp.asarray(x), 3 if pad else 2, 2, pad, count_include_pad=include)
    assert_parity(out, ref, 1e-6)


# ---------------------------------------------------------------------------------------------
# unfold / fold / pixel shuffle


@pytest.mark.parametrize(
    "k,s,p,d,size",
    [
        ((7, 7), 3, 3, 1, (60, 108)),
        ((3, 3), 1, 1, 1, (5, 7)),
        ((5, 9), 1, (2, 4), 1, (4, 4)),
        ((3, 2), 2, 0, 2, (9, 11)),
    ],
)
def test_unfold_fold_match_torch(k, s, p, d, size):
    torch = pytest.importorskip("torch")
    c = 3
    x = RNG.standard_normal((2,) + size + (c,)).astype(np.float32)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    ref = torch.nn.functional.unfold(xt, k, dilation=d, padding=p, stride=s).numpy()  # (N, C*kh*kw, L)
    out = np.asarray(unfold(jnp.asarray(x), k, s, p, d))
    n, lh, lw, f = out.shape
    assert f == ref.shape[1] and lh * lw == ref.shape[2]
    assert np.abs(out.reshape(n, lh * lw, f).transpose(0, 2, 1) - ref).max() < 1e-6
    cols = RNG.standard_normal(out.shape).astype(np.float32)
    ref_fold = (
        torch.nn.functional.fold(
            torch.from_numpy(cols.reshape(n, lh * lw, f).transpose(0, 2, 1).copy()),
            size,
            k,
            dilation=d,
            padding=p,
            stride=s,
        )
        .permute(0, 2, 3, 1)
        .numpy()
    )
    out_fold = np.asarray(fold(jnp.asarray(cols), size, k, s, p, d))
    assert_parity(out_fold, ref_fold, 1e-6, "fold")


def test_fold_is_transpose_of_unfold():
    x = jnp.asarray(RNG.standard_normal((1, 8, 10, 2)), jnp.float32)
    cols = unfold(x, 3, 2, 1)
    y = jnp.asarray(RNG.standard_normal(cols.shape), jnp.float32)
    lhs = jnp.vdot(cols, y)
    rhs = jnp.vdot(x, fold(y, (8, 10), 3, 2, 1))
    assert abs(float(lhs - rhs)) < 1e-3 * max(1.0, abs(float(lhs)))


@pytest.mark.parametrize("k,s,p,d,size", [((7, 7), 3, 3, 1, (15, 27)), ((3, 2), 2, 0, 2, (9, 11))])
def test_unfold_fold_gradients_match_torch(k, s, p, d, size):
    """fold/unfold carry explicit gradients (each other); check them against torch autograd through
    a non-linear loss, and check that grad of a dense layer after unfold/before fold is right."""
    torch = pytest.importorskip("torch")
    x = RNG.standard_normal((2,) + size + (3,)).astype(np.float32)
    cols = np.asarray(unfold(jnp.asarray(x), k, s, p, d))
    n, lh, lw, f = cols.shape
    w_dense = (RNG.standard_normal((f, f)) / np.sqrt(f)).astype(np.float32)

    def ours(x, wd):
        c = unfold(x, k, s, p, d) @ wd
        return jnp.sum(jnp.sin(fold(c, size, k, s, p, d)) * fold(c, size, k, s, p, d))

    gx, gw = jax.grad(ours, argnums=(0, 1))(jnp.asarray(x), jnp.asarray(w_dense))
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).clone().requires_grad_(True)
    wt = torch.from_numpy(w_dense).clone().requires_grad_(True)
    ct = torch.nn.functional.unfold(xt, k, dilation=d, padding=p, stride=s).transpose(1, 2) @ wt
    ft = torch.nn.functional.fold(ct.transpose(1, 2), size, k, dilation=d, padding=p, stride=s)
    torch.sum(torch.sin(ft) * ft).backward()
    assert_parity(np.asarray(gx), xt.grad.permute(0, 2, 3, 1).numpy(), 1e-5, "d/dx")
    assert_parity(np.asarray(gw), wt.grad.numpy(), 1e-5, "d/dW")


@pytest.mark.parametrize("r", [2, 3])
def test_pixel_shuffle_matches_torch(r):
    torch = pytest.importorskip("torch")
    x = RNG.standard_normal((2, 5, 7, 4 * r * r)).astype(np.float32)
    ref = torch.nn.functional.pixel_shuffle(torch.from_numpy(x).permute(0, 3, 1, 2), r).permute(0, 2, 3, 1).numpy()
    out = np.asarray(pixel_shuffle(jnp.asarray(x), r))
    assert np.array_equal(out, ref)
    assert np.array_equal(np.asarray(pixel_unshuffle(jnp.asarray(out), r)), x)


def test_fold_in_several_jitted_functions():
    """fold keeps no trace-time state: two traces with the same shapes both work."""
    cols = jnp.ones((1, 4, 4, 2 * 49))
    f1 = jax.jit(lambda c: fold(c, (12, 12), 7, 3, 3) * 2.0)
    f2 = jax.jit(lambda c: fold(c, (12, 12), 7, 3, 3) + 1.0)
    a, b = f1(cols), f2(cols)
    assert np.allclose(np.asarray(a) / 2.0, np.asarray(b) - 1.0)
    g = jax.grad(lambda c: jnp.sum(fold(c, (12, 12), 7, 3, 3) ** 2))(cols)
    assert g.shape == cols.shape
