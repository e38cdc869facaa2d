"""``unfold``/``fold`` in torch's channel-major order, and pixel (un)shuffle, for NHWC tensors.

torch ``F.unfold`` returns (N, C*kh*kw, L) with feature index ``c*kh*kw + i*kw + j``; here the
patches stay on a grid: (N, Lh, Lw, C*kh*kw) with the same feature order (the torch layout is
``out.reshape(N, L, -1).transpose(0, 2, 1)``).  ``fold`` is the exact linear transpose of ``unfold``
(a sum over overlaps, like torch, not normalised).
"""

from __future__ import annotations

import jax.numpy as jnp

from peanut_jax.ops.linear import with_transpose


def pair(v):
    """An int or a pair as a pair (torch's ``_pair``)."""
    return (v, v) if isinstance(v, int) else tuple(v)


def _geometry(h, w, kernel_size, stride, padding, dilation):
    kh, kw = pair(kernel_size)
    sh, sw = pair(stride)
    ph, pw = pair(padding)
    dh, dw = pair(dilation)
    lh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    lw = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if lh <= 0 or lw <= 0:
        raise ValueError(
            f"unfold/fold: kernel {kh}x{kw} (dilation {dh}x{dw}) does not fit {h}x{w} with padding {ph}x{pw}"
        )
    return tuple(int(v) for v in (kh, kw, sh, sw, ph, pw, dh, dw, lh, lw))


def _unfold_impl(x, geom):
    n, h, w, c = x.shape
    kh, kw, sh, sw, ph, pw, dh, dw, lh, lw = geom
    xp = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    taps = [
        xp[:, i * dh : i * dh + (lh - 1) * sh + 1 : sh, j * dw : j * dw + (lw - 1) * sw + 1 : sw, :]
        for i in range(kh)
        for j in range(kw)
    ]
    return jnp.stack(taps, axis=-1).reshape(n, lh, lw, c * kh * kw)


def _fold_impl(cols, hw, geom):
    h, w = hw
    n = cols.shape[0]
    kh, kw, sh, sw, ph, pw, dh, dw, lh, lw = geom
    c = cols.shape[-1] // (kh * kw)
    cols = cols.reshape(n, lh, lw, c, kh * kw)
    out = jnp.zeros((n, h + 2 * ph, w + 2 * pw, c), cols.dtype)
    for i in range(kh):
        for j in range(kw):
            out = out.at[:, i * dh : i * dh + (lh - 1) * sh + 1 : sh, j * dw : j * dw + (lw - 1) * sw + 1 : sw, :].add(
                cols[..., i * kw + j]
            )
    return out[:, ph : ph + h, pw : pw + w, :]


# fold and unfold are each other's linear transpose, stated as their gradients (``ops.linear``):
# autodiff of the strided scatter-adds / strided slices feeding a dense layer compiles on XLA:CPU to
# code ~40x slower (a SoftComp backward at the tiny training size: 1.16 s vs 0.027 s).
_unfold = with_transpose(lambda x, hw, geom: _unfold_impl(x, geom), lambda g, hw, geom: _fold(g, hw, geom), 2)
_fold = with_transpose(_fold_impl, lambda g, hw, geom: _unfold(g, hw, geom), 2)


def unfold(x, kernel_size, stride=1, padding=0, dilation=1):
    """(N, H, W, C) -> (N, Lh, Lw, C*kh*kw), channel-major patch features (torch order).

    Built from kh*kw strided slices of the zero-padded input: exact (no arithmetic) and much
    faster on CPU than a patches convolution.  Its gradient is :func:`fold` (see above)."""
    n, h, w, c = x.shape
    geom = _geometry(h, w, kernel_size, stride, padding, dilation)
    return _unfold(x, (int(h), int(w)), geom)


def fold(cols, output_size, kernel_size, stride=1, padding=0, dilation=1):
    """(N, Lh, Lw, C*kh*kw) -> (N, H, W, C): sums overlapping patches (torch ``F.fold``), the exact
    transpose of :func:`unfold` (which is also its gradient)."""
    h, w = pair(output_size)
    n, lh_in, lw_in, ckk = cols.shape
    geom = _geometry(h, w, kernel_size, stride, padding, dilation)
    kh, kw, lh, lw = geom[0], geom[1], geom[8], geom[9]
    if ckk % (kh * kw):
        raise ValueError(f"fold: feature size {ckk} not divisible by kernel {kh}x{kw}")
    if (lh_in, lw_in) != (lh, lw):
        raise ValueError(f"fold: {lh_in}x{lw_in} patches do not match output {h}x{w} (expects {lh}x{lw})")
    return _fold(cols, (int(h), int(w)), geom)


def pixel_shuffle(x, r: int):
    """torch ``pixel_shuffle`` in NHWC: (N, H, W, C*r*r) -> (N, H*r, W*r, C), channel order (C, r, r)."""
    n, h, w, c = x.shape
    if c % (r * r):
        raise ValueError(f"pixel_shuffle: {c} channels not divisible by r^2={r * r}")
    co = c // (r * r)
    return x.reshape(n, h, w, co, r, r).transpose(0, 1, 4, 2, 5, 3).reshape(n, h * r, w * r, co)


def pixel_unshuffle(x, r: int):
    """Inverse of :func:`pixel_shuffle`: (N, H*r, W*r, C) -> (N, H, W, C*r*r)."""
    n, hr, wr, c = x.shape
    if hr % r or wr % r:
        raise ValueError(f"pixel_unshuffle: size {hr}x{wr} not divisible by {r}")
    h, w = hr // r, wr // r
    return x.reshape(n, h, r, w, r, c).transpose(0, 1, 3, 5, 2, 4).reshape(n, h, w, c * r * r)
