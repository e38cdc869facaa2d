"""Hiera trunk of the SAM 2 image encoder (``sam2/modeling/backbones/hieradet.py``), NHWC.

Structure (all static, from ``HieraConfig``; see ``block_specs``):

* ``patch_embed_proj``: Conv 7x7, stride 4, padding 3, 3 -> embed_dim.
* Position embedding: ``pos_embed`` (1, bkg_h, bkg_w, C) resized to the token grid with torch's
  bicubic (a = -0.75, align_corners=False, no antialias), plus ``pos_embed_window``
  (1, w0, w0, C) **tiled** over the grid (w0 = window_spec[0]).
* ``blocks_{i}`` (MultiScaleBlock): ``norm1`` (LayerNorm eps 1e-6); on a stage change the shortcut
  is ``maxpool2x2(proj(norm1(x)))``; the normed x is zero-padded to a window multiple (padded
  tokens are *not* masked) and split into windows (or kept whole on global-attention blocks);
  ``attn`` = ``qkv`` -> (q max-pooled 2x2 inside each window on q-pool blocks) -> softmax attention
  (scale 1/sqrt(head_dim)) -> ``proj``; windows are merged (with half the window on q-pool
  blocks) and cropped; ``x = shortcut + x``; ``x = x + mlp(norm2(x))`` with ``mlp`` =
  ``layers_0`` -> exact GELU -> ``layers_1`` (ratio 4).
* The window size lags a block behind the stage: the first block of stage s still uses
  ``window_spec[s-1]`` (and merges with half of it after q-pooling).

``__call__`` returns the four stage outputs (strides 4, 8, 16, 32).  ``embed`` and ``run_blocks``
expose the same computation in pieces (``__call__`` == ``embed`` then ``run_blocks`` over
``stage_cuts``), for models that interleave the trunk with other networks (SAMWISE), e.g.
``Hiera(cfg).apply(v, x, method=Hiera.embed)`` then ``apply(v, x, 2, 5, method=Hiera.run_blocks)``;
``start``/``end`` are Python ints (static under jit).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from peanut_jax.layers.conv import Conv2d
from peanut_jax.layers.linear import layer_norm, linear
from peanut_jax.models.sam2.config import HieraConfig
from peanut_jax.ops import interpolate
from peanut_jax.ops.attention import attention

Dtype = Any

__all__ = [
    "BlockSpec",
    "block_specs",
    "stage_cuts",
    "window_partition",
    "window_unpartition",
    "MultiScaleAttention",
    "MultiScaleBlock",
    "Hiera",
]

LN_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    dim: int
    dim_out: int
    num_heads: int
    q_stride: tuple[int, int] | None  # q-pooling stride (first block of stages 2..q_pool+1)
    window_size: int  # 0 = global attention


def block_specs(h: HieraConfig) -> tuple[BlockSpec, ...]:
    """The per-block settings of the official ``Hiera.__init__``, window lag included."""
    ends = h.stage_ends
    q_pool_blocks = [e + 1 for e in ends[:-1]][: h.q_pool]
    specs, dim, heads, stage = [], h.embed_dim, h.num_heads, 0
    for i in range(sum(h.stages)):
        window = 0 if i in h.global_att_blocks else h.window_spec[stage]  # before the stage update
        dim_out = dim
        if i - 1 in ends:
            dim_out, heads, stage = int(dim * h.dim_mul), int(heads * h.head_mul), stage + 1
        specs.append(BlockSpec(dim, dim_out, heads, tuple(h.q_stride) if i in q_pool_blocks else None, window))
        dim = dim_out
    return tuple(specs)


def stage_cuts(h: HieraConfig) -> tuple[int, ...]:
    """Block indices where the stages start, plus the depth: (0, e0+1, e1+1, e2+1, e3+1)."""
    return (0, *(e + 1 for e in h.stage_ends))


def window_partition(x, ws: int):
    """(B, H, W, C) -> (B * nh * nw, ws, ws, C), zero-padding H and W up to multiples of ws."""
    b, hh, ww, c = x.shape
    ph, pw = -hh % ws, -ww % ws
    if ph or pw:
        x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
    nh, nw = (hh + ph) // ws, (ww + pw) // ws
    x = x.reshape(b, nh, ws, nw, ws, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b * nh * nw, ws, ws, c)


def window_unpartition(x, ws: int, hw: tuple[int, int]):
    """Inverse of ``window_partition`` for an (H, W) = ``hw`` map: merge, then crop the padding."""
    hh, ww = hw
    nh, nw = -(-hh // ws), -(-ww // ws)
    b = x.shape[0] // (nh * nw)
    if b * nh * nw != x.shape[0]:
        raise ValueError(f"window_unpartition: {x.shape[0]} windows do not tile a {hw} map with window {ws}")
    x = x.reshape(b, nh, nw, ws, ws, -1).transpose(0, 1, 3, 2, 4, 5).reshape(b, nh * ws, nw * ws, -1)
    return x[:, :hh, :ww]


def max_pool(x, stride: tuple[int, int]):
    """``nn.MaxPool2d(kernel=stride, stride=stride)`` (floor mode) on NHWC ``x``."""
    sh, sw = stride
    b, hh, ww, c = x.shape
    oh, ow = hh // sh, ww // sw
    x = x[:, : oh * sh, : ow * sw].reshape(b, oh, sh, ow, sw, c)
    return x.max(axis=(2, 4))


def _dense(features, name, dtype, param_dtype, precision, fan_in):
    return linear(features, fan_in, name=name, dtype=dtype, param_dtype=param_dtype, precision=precision)


def _layer_norm(name, dtype, param_dtype):
    return layer_norm(LN_EPS, name=name, dtype=dtype, param_dtype=param_dtype)


class MultiScaleAttention(nn.Module):
    """``qkv`` -> optional 2x2 max-pool of q over the (window) grid -> attention -> ``proj``."""

    dim: int
    dim_out: int
    num_heads: int
    q_stride: tuple[int, int] | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    def setup(self):
        self.qkv = _dense(3 * self.dim_out, "qkv", self.dtype, self.param_dtype, self.precision, self.dim)
        self.proj = _dense(self.dim_out, "proj", self.dtype, self.param_dtype, self.precision, self.dim_out)

    def __call__(self, x):
        b, hh, ww, _ = x.shape
        qkv = self.qkv(x).reshape(b, hh * ww, 3, self.num_heads, -1)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if self.q_stride:
            q = max_pool(q.reshape(b, hh, ww, -1), self.q_stride)
            hh, ww = q.shape[1:3]
            q = q.reshape(b, hh * ww, self.num_heads, -1)
        y = attention(q, k, v, precision=self.precision).reshape(b, hh, ww, -1)
        return self.proj(y)


class Mlp(nn.Module):
    """``layers_0`` -> exact GELU -> ``layers_1`` (the official 2-layer ``MLP``)."""

    dim: int
    hidden: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    def setup(self):
        self.layers_0 = _dense(self.hidden, "layers_0", self.dtype, self.param_dtype, self.precision, self.dim)
        self.layers_1 = _dense(self.dim, "layers_1", self.dtype, self.param_dtype, self.precision, self.hidden)

    def __call__(self, x):
        return self.layers_1(jax.nn.gelu(self.layers_0(x), approximate=False))


class MultiScaleBlock(nn.Module):
    """One Hiera block (NHWC in, NHWC out; the map halves on q-pool blocks)."""

    spec: BlockSpec
    mlp_ratio: float = 4.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    def setup(self):
        s, kw = self.spec, dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
        self.norm1 = _layer_norm("norm1", self.dtype, self.param_dtype)
        self.attn = MultiScaleAttention(s.dim, s.dim_out, s.num_heads, s.q_stride, name="attn", **kw)
        self.norm2 = _layer_norm("norm2", self.dtype, self.param_dtype)
        self.mlp = Mlp(s.dim_out, int(s.dim_out * self.mlp_ratio), name="mlp", **kw)
        if s.dim != s.dim_out:
            self.proj = _dense(s.dim_out, "proj", self.dtype, self.param_dtype, self.precision, s.dim)

    def __call__(self, x):
        s = self.spec
        shortcut = x
        x = self.norm1(x)
        if s.dim != s.dim_out:
            shortcut = self.proj(x)  # the *normed* x, like the official block
            if s.q_stride:
                shortcut = max_pool(shortcut, s.q_stride)
        ws = s.window_size
        if ws > 0:
            x = window_partition(x, ws)  # zero padding, not masked
        x = self.attn(x)
        if ws > 0:
            if s.q_stride:
                ws = ws // s.q_stride[0]
            x = window_unpartition(x, ws, shortcut.shape[1:3])
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    """SAM 2's Hiera trunk.  Input: normalised image (B, S, S, 3); output: the 4 stage maps."""

    cfg: HieraConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    def setup(self):
        h = self.cfg
        c = h.embed_dim
        self.patch_embed_proj = Conv2d(
            c,
            7,
            4,
            3,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
            name="patch_embed_proj",
        )
        # official init is zeros; the checkpoint provides the values
        self.pos_embed = self.param(
            "pos_embed", nn.initializers.zeros, (1, *h.window_pos_embed_bkg_spatial_size, c), self.param_dtype
        )
        w0 = h.window_spec[0]
        self.pos_embed_window = self.param("pos_embed_window", nn.initializers.zeros, (1, w0, w0, c), self.param_dtype)
        self.blocks = [
            MultiScaleBlock(sp, h.mlp_ratio, self.dtype, self.param_dtype, self.precision, name=f"blocks_{i}")
            for i, sp in enumerate(block_specs(h))
        ]

    @property
    def stage_cuts(self) -> tuple[int, ...]:
        return stage_cuts(self.cfg)

    def pos_embedding(self, hw: tuple[int, int]):
        """(1, h, w, C): bicubic-resized ``pos_embed`` + tiled ``pos_embed_window`` (float32 math)."""
        hh, ww = hw
        pe = interpolate(self.pos_embed.astype(jnp.float32), size=(hh, ww), mode="bicubic")
        win = self.pos_embed_window.astype(jnp.float32)
        wh, wwin = win.shape[1:3]
        if hh % wh or ww % wwin:
            raise ValueError(f"Hiera: token grid {hw} is not a multiple of the {wh}x{wwin} window embedding")
        return pe + jnp.tile(win, (1, hh // wh, ww // wwin, 1))

    def embed(self, x):
        """Patch embedding + position embedding: (B, S, S, 3) -> (B, S/4, S/4, embed_dim)."""
        x = self.patch_embed_proj(x.astype(self.dtype))
        return x + self.pos_embedding(x.shape[1:3]).astype(x.dtype)

    def run_blocks(self, x, start: int, end: int):
        """Blocks ``start`` .. ``end - 1`` (static ints) on an NHWC token map."""
        for blk in self.blocks[start:end]:
            x = blk(x)
        return x

    def __call__(self, x):
        x = self.embed(x)
        cuts = self.stage_cuts
        outs = []
        for a, b in zip(cuts[:-1], cuts[1:]):
            x = self.run_blocks(x, a, b)
            outs.append(x)
        return outs
