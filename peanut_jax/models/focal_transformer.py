"""E2FGVI's temporal focal transformer: soft split / soft composition and the focal blocks (NHWC).

Shapes (E2FGVI at 240x432: features 60x108x128, tokens 20x36x512):

* :class:`SoftSplit`: ``unfold`` (7x7 patches, stride 3, padding 3, torch channel-major order) of
  every frame, ``Linear(128*49 -> 512)``: (B*T, h, w, 128) -> (B, T, fh, fw, 512).
* :class:`SoftComp`: ``Linear(512 -> 128*49)``, ``fold`` (sum of overlaps, not normalised) back to
  (B*T, h, w, 128), plus either a learned ``bias`` (h, w, 128) (E2FGVI: fixed size) or a 3x3
  ``bias_conv`` applied after the fold (E2FGVI-HQ: any size).
* :class:`TemporalFocalTransformerBlock`: ``x + attn(norm1(x))``, then ``x + F3N(norm2(x))``.
  The attention (:class:`WindowAttention`) works on non-overlapping (5, 9) token windows over all T
  frames at once; every window's queries attend to

  1. its own T*45 tokens,
  2. T*120 "rolled" tokens: the keys rolled (with wrap-around, like ``torch.roll``) by (+-2, +-4),
     partitioned into windows, keeping 30 of the 45 tokens per quadrant (the 3x5 block that
     duplicates the window's own tokens is dropped; :func:`rolled_valid_indices`),
  3. T*45 pooled tokens: each window is pooled to one token by a learned ``Linear(45 -> 1)``
     (``pool_layers_0``), the same ``qkv`` projection is applied to the pooled map, and the 5x9
     neighbourhood of pooled tokens around the window (zero-padded, 5x9 unfold with padding (2, 4))
     is used, with -100 added to the logits of padded positions (:func:`pooled_key_bias`),

  4 heads of 128 channels, softmax over all T*210 keys, ``proj``.
* F3N (:class:`FusionFeedForward`): ``Linear(512 -> 1960)``, fold the 1960 = 40*49 channels to
  the feature grid, divide by the overlap count (``fold(ones)``, a constant), unfold again, exact
  GELU, ``Linear(1960 -> 512)``.

Parameter names follow the torch modules: ``pool_layers_0``, ``norm1``, ``attn/{qkv,proj}``,
``norm2``, ``mlp/{conv1_0,conv2_1}``.  LayerNorm eps is 1e-5 (torch).  Initialisation is the
official generator's (normal(0, 0.02) Linear weights, zero biases).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from peanut_jax.layers.conv import Conv2d
from peanut_jax.ops import fold, unfold

Dtype = Any
DENSE_INIT = nn.initializers.normal(0.02)  # the official init_weights('normal', 0.02) of Conv/Linear
T2T = dict(kernel_size=(7, 7), stride=(3, 3), padding=(3, 3))


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def num_blocks(size: int, kernel: int, stride: int, padding: int) -> int:
    """Number of unfold positions along one axis (torch ``nn.Unfold``)."""
    return (size + 2 * padding - (kernel - 1) - 1) // stride + 1


def token_grid(
    feat_hw: Sequence[int], kernel=T2T["kernel_size"], stride=T2T["stride"], padding=T2T["padding"]
) -> tuple[int, int]:
    """Token grid (fh, fw) of the soft split of a (h, w) feature map."""
    return tuple(num_blocks(s, k, st, p) for s, k, st, p in zip(feat_hw, kernel, stride, padding))


@functools.cache
def overlap_count(output_size: tuple, kernel_size: tuple, stride: tuple, padding: tuple) -> np.ndarray:
    """``fold(ones)``: how many patches cover each pixel, (h, w, 1) float32 (the F3N normaliser)."""
    counts = []
    for size, k, s, p in zip(output_size, kernel_size, stride, padding):
        c = np.zeros(size, np.float32)
        for b in range(num_blocks(size, k, s, p)):
            lo, hi = b * s - p, b * s - p + k
            c[max(lo, 0) : min(hi, size)] += 1
        counts.append(c)
    return (counts[0][:, None] * counts[1][None, :])[..., None]


@functools.cache
def rolled_valid_indices(window_size=(5, 9), expand_size=(2, 4)) -> np.ndarray:
    """The official ``valid_ind_rolled`` buffer: indices into the 4*wh*ww rolled tokens (quadrants
    top-left, top-right, bottom-left, bottom-right) that are kept, int64."""
    wh, ww = window_size
    eh, ew = expand_size
    quads = []
    for rows, cols in (
        (slice(None, -eh), slice(None, -ew)),
        (slice(None, -eh), slice(ew, None)),
        (slice(eh, None), slice(None, -ew)),
        (slice(eh, None), slice(ew, None)),
    ):
        m = np.ones((wh, ww), np.float32)
        m[rows, cols] = 0
        quads.append(m)
    return np.flatnonzero(np.stack(quads).reshape(-1)).astype(np.int64)


@functools.cache
def pooled_key_bias(nh: int, nw: int, kernel=(5, 9)) -> np.ndarray:
    """(nh, nw, kh*kw) logit bias of the pooled keys of each window: 0 inside the pooled map,
    -100 where the (kh, kw) unfold around the window reads zero padding."""
    kh, kw = kernel
    ph, pw = kh // 2, kw // 2
    i = np.arange(nh)[:, None, None, None] + np.arange(kh)[None, None, :, None] - ph
    j = np.arange(nw)[None, :, None, None] + np.arange(kw)[None, None, None, :] - pw
    valid = (i >= 0) & (i < nh) & (j >= 0) & (j < nw)
    return np.where(valid, 0.0, -100.0).astype(np.float32).reshape(nh, nw, kh * kw)


def _dense(features, name, dtype, param_dtype, precision, use_bias=True):
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        precision=precision,
        kernel_init=DENSE_INIT,
        bias_init=nn.initializers.zeros,
        name=name,
    )


def _layer_norm(name, dtype, param_dtype):
    return nn.LayerNorm(epsilon=1e-5, dtype=dtype, param_dtype=param_dtype, name=name)


class SoftSplit(nn.Module):
    """(B*T, h, w, C) -> (B, T, fh, fw, hidden): overlapping 7x7 patches, linearly embedded."""

    hidden: int = 512
    kernel_size: Sequence[int] = (7, 7)
    stride: Sequence[int] = (3, 3)
    padding: Sequence[int] = (3, 3)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x, b: int):
        cols = unfold(x.astype(self.dtype), self.kernel_size, self.stride, self.padding)  # (B*T, fh, fw, C*49)
        feat = _dense(self.hidden, "embedding", self.dtype, self.param_dtype, self.precision)(cols)
        bt, fh, fw, c = feat.shape
        return feat.reshape(b, bt // b, fh, fw, c)


class SoftComp(nn.Module):
    """(B, T, fh, fw, hidden) -> (B*T, h, w, channel): embed back to patches, fold (sum), bias.

    ``hq=False``: a learned ``bias`` of shape (h, w, channel) (the model is tied to that size);
    ``hq=True``: ``bias_conv`` (3x3 conv) applied to the folded map.
    """

    channel: int = 128
    hq: bool = False
    kernel_size: Sequence[int] = (7, 7)
    stride: Sequence[int] = (3, 3)
    padding: Sequence[int] = (3, 3)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x, output_size):
        b, t, fh, fw, _ = x.shape
        kh, kw = _pair(self.kernel_size)
        feat = _dense(self.channel * kh * kw, "embedding", self.dtype, self.param_dtype, self.precision)(x)
        feat = fold(feat.reshape(b * t, fh, fw, -1), tuple(output_size), self.kernel_size, self.stride, self.padding)
        if self.hq:
            return Conv2d(
                self.channel,
                3,
                padding=1,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                precision=self.precision,
                kernel_init=DENSE_INIT,
                bias_init=nn.initializers.zeros,
                name="bias_conv",
            )(feat)
        bias = self.param("bias", nn.initializers.zeros, (*output_size, self.channel), self.param_dtype)
        return feat + bias.astype(self.dtype)


class FusionFeedForward(nn.Module):
    """F3N: Linear -> fold / overlap count -> unfold -> GELU (exact) -> Linear."""

    dim: int = 512
    hidden: int = 1960
    kernel_size: Sequence[int] = (7, 7)
    stride: Sequence[int] = (3, 3)
    padding: Sequence[int] = (3, 3)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x, output_size):
        b, t, fh, fw, _ = x.shape
        k, s, p = _pair(self.kernel_size), _pair(self.stride), _pair(self.padding)
        y = _dense(self.hidden, "conv1_0", self.dtype, self.param_dtype, self.precision)(x)
        y = fold(y.reshape(b * t, fh, fw, self.hidden), tuple(output_size), k, s, p)
        y = y / jnp.asarray(overlap_count(tuple(output_size), k, s, p), y.dtype)
        y = unfold(y, k, s, p).reshape(b, t, fh, fw, self.hidden)
        y = jax.nn.gelu(y, approximate=False)
        return _dense(self.dim, "conv2_1", self.dtype, self.param_dtype, self.precision)(y)


def _windows(t, wh, ww, heads):
    """(B, T, H, W, C) -> (B, nh, nw, heads, T, wh*ww, C/heads)."""
    b, tt, h, w, c = t.shape
    t = t.reshape(b, tt, h // wh, wh, w // ww, ww, heads, c // heads)
    return t.transpose(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, h // wh, w // ww, heads, tt, wh * ww, c // heads)


class WindowAttention(nn.Module):
    """Temporal focal window attention (focal level 2, pool method 'fc'); see the module docstring.

    ``__call__(x, x_pooled)``: ``x`` (B, T, H, W, C) normalised tokens, ``x_pooled``
    (B, nh, nw, T, C) the pooled window tokens.  Returns (B, nh, nw, T*wh*ww, C).
    """

    dim: int = 512
    num_heads: int = 4
    window_size: Sequence[int] = (5, 9)
    expand_size: Sequence[int] = (2, 4)
    focal_window: Sequence[int] = (5, 9)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x, x_pooled):
        b, t, h, w, c = x.shape
        wh, ww = self.window_size
        eh, ew = self.expand_size
        heads = self.num_heads
        hd = c // heads
        nh, nw = h // wh, w // ww
        qkv_layer = _dense(3 * c, "qkv", self.dtype, self.param_dtype, self.precision)
        qkv = qkv_layer(x).reshape(b, t, h, w, 3, c)
        q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
        n_win = t * wh * ww
        q_w = _windows(q, wh, ww, heads).reshape(b, nh, nw, heads, n_win, hd)

        valid = jnp.asarray(rolled_valid_indices(tuple(self.window_size), tuple(self.expand_size)))

        def keys(a):
            own = _windows(a, wh, ww, heads).reshape(b, nh, nw, heads, n_win, hd)
            rolled = [
                _windows(jnp.roll(a, shift, axis=(2, 3)), wh, ww, heads)
                for shift in ((-eh, -ew), (-eh, ew), (eh, -ew), (eh, ew))
            ]
            rolled = jnp.take(jnp.concatenate(rolled, axis=5), valid, axis=5)  # (.., T, 120, hd)
            return own, rolled.reshape(b, nh, nw, heads, -1, hd)

        k_own, k_rolled = keys(k)
        v_own, v_rolled = keys(v)

        # pooled keys/values: the same qkv projection on the pooled map, 5x9 neighbourhoods
        fh, fw = self.focal_window
        kh, kw = 2 * (fh // 2) + 1, 2 * (fw // 2) + 1
        qkv_p = qkv_layer(x_pooled).reshape(b, nh, nw, t, 3, c)

        def pooled(a):  # (B, nh, nw, T, C) -> (B, nh, nw, heads, T*kh*kw, hd)
            a = a.transpose(0, 3, 1, 2, 4).reshape(b * t, nh, nw, c)
            cols = unfold(a, (kh, kw), 1, (kh // 2, kw // 2))  # (B*T, nh, nw, C*kh*kw), channel-major
            cols = cols.reshape(b, t, nh, nw, heads, hd, kh * kw).transpose(0, 2, 3, 4, 1, 6, 5)
            return cols.reshape(b, nh, nw, heads, t * kh * kw, hd)

        k_pool = pooled(qkv_p[..., 1, :])
        v_pool = pooled(qkv_p[..., 2, :])
        k_all = jnp.concatenate([k_own, k_rolled, k_pool], axis=4)
        v_all = jnp.concatenate([v_own, v_rolled, v_pool], axis=4)

        scale = hd**-0.5
        logits = jnp.einsum(
            "bhwnqd,bhwnkd->bhwnqk", q_w * jnp.asarray(scale, q_w.dtype), k_all, precision=self.precision
        ).astype(jnp.float32)
        n_rolled_all = k_own.shape[4] + k_rolled.shape[4]
        pool_bias = np.tile(pooled_key_bias(nh, nw, (kh, kw)), (1, 1, t))  # (nh, nw, T*kh*kw)
        bias = np.concatenate([np.zeros((nh, nw, n_rolled_all), np.float32), pool_bias], axis=-1)
        logits = logits + jnp.asarray(bias)[None, :, :, None, None, :]
        attn = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("bhwnqk,bhwnkd->bhwnqd", attn, v_all, precision=self.precision)
        out = out.transpose(0, 1, 2, 4, 3, 5).reshape(b, nh, nw, n_win, c)
        return _dense(c, "proj", self.dtype, self.param_dtype, self.precision)(out)


class TemporalFocalTransformerBlock(nn.Module):
    """``x + attn(norm1(x))`` then ``x + F3N(norm2(x))`` on (B, T, fh, fw, dim) tokens.

    ``output_size`` is the (h, w) of the feature map the tokens were split from (F3N folds to it).
    """

    dim: int = 512
    num_heads: int = 4
    window_size: Sequence[int] = (5, 9)
    focal_window: Sequence[int] = (5, 9)
    mlp_hidden: int = 1960
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x, output_size):
        b, t, h, w, c = x.shape
        wh, ww = self.window_size
        if h % wh or w % ww:
            raise ValueError(
                f"TemporalFocalTransformerBlock: token grid {h}x{w} is not divisible by the window {wh}x{ww}"
            )
        nh, nw = h // wh, w // ww
        shortcut = x
        y = _layer_norm("norm1", self.dtype, self.param_dtype)(x)
        # pooled level: one token per window through a learned Linear(wh*ww -> 1)
        win = y.reshape(b, t, nh, wh, nw, ww, c).transpose(0, 2, 4, 1, 6, 3, 5).reshape(b, nh, nw, t, c, wh * ww)
        pooled = _dense(1, "pool_layers_0", self.dtype, self.param_dtype, self.precision)(win)[..., 0]
        attn = WindowAttention(
            c,
            self.num_heads,
            self.window_size,
            tuple(i // 2 for i in self.window_size),
            self.focal_window,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
            name="attn",
        )(y, pooled)
        attn = attn.reshape(b, nh, nw, t, wh, ww, c).transpose(0, 3, 1, 4, 2, 5, 6).reshape(b, t, h, w, c)
        x = shortcut + attn
        y = _layer_norm("norm2", self.dtype, self.param_dtype)(x)
        return x + FusionFeedForward(
            c,
            self.mlp_hidden,
            **T2T,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            precision=self.precision,
            name="mlp",
        )(y, output_size)
