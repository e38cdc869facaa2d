"""Modulated deformable convolution (DCNv2) on the shared bilinear sampler, NHWC.

Semantics are mmcv's ``modulated_deform_conv2d`` (torchvision's ``deform_conv2d(mask=...)`` shares
them), which the official E2FGVI and BasicVSR++ checkpoints were trained with:

* ``offset`` (N, Ho, Wo, 2*G*K), K = kh*kw, G = ``deform_groups``: for deform group g and kernel tap
  k = i*kw + j, channel ``g*2K + 2k`` is **dy** and ``g*2K + 2k + 1`` is **dx**;
* ``mask`` (N, Ho, Wo, G*K), channel ``g*K + k``;
* input channels form G contiguous blocks; group g is sampled with its own offsets;
* the tap (i, j) of output (ho, wo) samples at ``(ho*s - p + i*d + dy, wo*s - p + j*d + dx)``,
  bilinearly, each out-of-range corner contributing 0;
* the sampled columns, multiplied by the mask, meet the weight in one contraction, plus bias.

``weight`` is (kh, kw, Cin/groups, Cout) (HWIO; a torch ``(Cout, Cin/g, kh, kw)`` weight is
``w.transpose(2, 3, 1, 0)``).

The sampled columns hold K*Cin values per output pixel; when that exceeds ``max_columns`` elements
the output rows are processed in chunks with ``lax.map`` so memory stays bounded.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

from peanut_jax.ops.patches import pair
from peanut_jax.ops.warp import coord_dtype, sample_bilinear

DEFAULT_MAX_COLUMNS = 1 << 27  # elements of the (rows, Wo, K, Cin) column buffer per chunk


def modulated_deform_conv2d(
    x,
    offset,
    mask,
    weight,
    bias=None,
    stride=1,
    padding=1,
    dilation=1,
    groups: int = 1,
    deform_groups: int = 1,
    max_columns: int = DEFAULT_MAX_COLUMNS,
    precision=None,
):
    """DCNv2 forward: see the module docstring for the layouts.  Differentiable in all inputs."""
    sh, sw = pair(stride)
    ph, pw = pair(padding)
    dh, dw = pair(dilation)
    n, h, w, cin = x.shape
    kh, kw, cin_g, cout = weight.shape
    k = kh * kw
    g = deform_groups
    if cin_g * groups != cin:
        raise ValueError(f"deform conv: weight expects {cin_g}*{groups} input channels, x has {cin}")
    if cin % g:
        raise ValueError(f"deform conv: {cin} input channels not divisible by deform_groups={g}")
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if offset.shape != (n, ho, wo, 2 * g * k):
        raise ValueError(f"deform conv: offset must be {(n, ho, wo, 2 * g * k)}, got {tuple(offset.shape)}")
    if mask.shape != (n, ho, wo, g * k):
        raise ValueError(f"deform conv: mask must be {(n, ho, wo, g * k)}, got {tuple(mask.shape)}")
    cg = cin // g

    # Input as G separate images (N*G, H, W, Cg), so one sampler call serves all groups.
    xg = x.reshape(n, h, w, g, cg).transpose(0, 3, 1, 2, 4).reshape(n * g, h, w, cg)
    cdt = coord_dtype(offset)
    taps_i = jnp.repeat(jnp.arange(kh), kw).astype(cdt)  # (K,)
    taps_j = jnp.tile(jnp.arange(kw), kh).astype(cdt)
    w_mat = weight.reshape(k, cin_g, groups, cout // groups)  # output channels grouped contiguously

    def rows(off, msk, row0):
        # off (N, R, Wo, 2GK), msk (N, R, Wo, GK) for output rows row0 .. row0+R-1
        r = off.shape[1]
        off = off.astype(cdt).reshape(n, r, wo, g, k, 2)
        base_y = (row0 + jnp.arange(r, dtype=cdt)) * sh - ph
        base_x = jnp.arange(wo, dtype=cdt) * sw - pw
        py = base_y[:, None, None, None] + (taps_i * dh)[None, None, None, :] + off[..., 0]
        px = base_x[None, :, None, None] + (taps_j * dw)[None, None, None, :] + off[..., 1]
        # (N, R, Wo, G, K) -> (N*G, R, Wo, K)
        py = py.transpose(0, 3, 1, 2, 4).reshape(n * g, r, wo, k)
        px = px.transpose(0, 3, 1, 2, 4).reshape(n * g, r, wo, k)
        cols = sample_bilinear(xg, py, px, "zeros")  # (N*G, R, Wo, K, Cg)
        m = msk.reshape(n, r, wo, g, k).transpose(0, 3, 1, 2, 4).reshape(n * g, r, wo, k)
        cols = cols * m[..., None].astype(cols.dtype)
        cols = cols.reshape(n, g, r, wo, k, cg).transpose(0, 2, 3, 4, 1, 5).reshape(n, r, wo, k, groups, cin_g)
        out = jnp.einsum("nrwkgc,kcgo->nrwgo", cols, w_mat.astype(cols.dtype), precision=precision)
        return out.reshape(n, r, wo, cout)

    per_row = n * wo * k * cin
    rows_per_chunk = max(1, min(ho, max_columns // max(per_row, 1)))
    if rows_per_chunk >= ho:
        out = rows(offset, mask, 0)
    else:
        chunks = math.ceil(ho / rows_per_chunk)
        pad = chunks * rows_per_chunk - ho
        off_p = jnp.pad(offset, ((0, 0), (0, pad), (0, 0), (0, 0)))
        msk_p = jnp.pad(mask, ((0, 0), (0, pad), (0, 0), (0, 0)))
        off_c = off_p.reshape(n, chunks, rows_per_chunk, wo, -1).transpose(1, 0, 2, 3, 4)
        msk_c = msk_p.reshape(n, chunks, rows_per_chunk, wo, -1).transpose(1, 0, 2, 3, 4)
        starts = jnp.arange(chunks, dtype=cdt) * rows_per_chunk
        out = lax.map(lambda a: rows(a[0], a[1], a[2]), (off_c, msk_c, starts))
        out = out.transpose(1, 0, 2, 3, 4).reshape(n, chunks * rows_per_chunk, wo, cout)[:, :ho]
    if bias is not None:
        out = out + bias.astype(out.dtype)
    return out
