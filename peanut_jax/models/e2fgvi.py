"""E2FGVI and E2FGVI-HQ (Li et al., CVPR 2022): end-to-end flow-guided video inpainting, Flax/NHWC.

``InpaintGenerator(hq=False|True)``; ``module.apply(variables, masked_frames, num_local_frames)``:

* ``masked_frames`` (B, T, H, W, 3) in **[-1, 1]** (the official convention), already multiplied by
  ``1 - mask`` (holes are 0, i.e. mid-grey); the first ``num_local_frames`` are the local
  (neighbouring) frames, the rest non-local reference frames.  ``num_local_frames`` is a static
  Python int.
* returns ``(frames, (flows_forward, flows_backward))``: ``frames`` (B, T, H, W, 3) after tanh, in
  [-1, 1]; flows (B, num_local_frames - 1, H/4, W/4, 2) (pixels at 1/4 resolution, x first) of the
  completed flow branch: ``flows_forward[:, i]`` is SPyNet(frame i, frame i+1) (it warps frame i+1
  onto frame i), ``flows_backward[:, i]`` the reverse.  This is the official
  ``InpaintGenerator.forward`` in NHWC (the official returns frames as (B*T, 3, H, W)).

Pipeline (facts in ``shared/reference/spynet_e2fgvi_basicvsrpp.md`` section 7):

1. flow completion: local frames mapped to [0, 1], resized by 1/4 (bilinear, ``align_corners=True``,
   ``recompute_scale_factor=True``), SPyNet both ways (``update_spynet``, fine-tuned with the model);
2. encoder (9 convs, LeakyReLU 0.2, grouped convs fed with the group-wise interleave of the
   layer-8 input and the current activation) to (B*T, H/4, W/4, 128);
3. :class:`~peanut_jax.models.propagation.BidirectionalPropagation` over the local frames
   (``fix_backward_flow_idx`` selects the corrected backward flow index; the default reproduces
   the official one, see that module);
4. soft split, 8 temporal focal transformer blocks, soft composition, added to the features;
5. decoder (bilinear x2 upsampling with ``align_corners=True`` + conv, twice) and tanh.

Sizes: E2FGVI (``hq=False``) is tied to 240x432 (its soft-composition bias is a learned 60x108 map).
E2FGVI-HQ takes H, W multiples of 4 whose token grid (``((H/4 - 1)//3 + 1, (W/4 - 1)//3 + 1)``) is
divisible by the (5, 9) attention window, e.g. H a multiple of 60 and W of 108 (the official test
script pads to that; see ``pad_to_valid_size``).

Widths (additive fields, defaults = the official model): ``encoder_channels`` (the 9 encoder
convolutions; the last is the feature width ``channel``), ``channel`` (propagation / soft
composition width), ``hidden`` (token width), ``num_blocks``, ``num_heads``, ``mlp_hidden`` (F3N
width, a multiple of 49), ``deform_groups`` and ``decoder_channels``.  Reduced values give small
models of the same architecture (e.g. the ``tiny`` training config); official checkpoints only
load into the defaults.

Parameters mirror the torch module tree (``encoder/layers_{0..16}``, ``decoder/layers_{0,2,4,6}``,
``feat_prop_module/...``, ``ss``, ``sc``, ``transformer_{0..7}``, ``update_spynet``); see
``peanut_jax.convert.e2fgvi`` for the key map.  The random initialisation is the official
generator's (normal(0, 0.02) conv/linear weights, zero biases, mmcv DCN init, zero last offset
convolution); SPyNet keeps its own (the official loads pretrained SPyNet weights there).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from peanut_jax.layers.conv import Conv2d, leaky_relu
from peanut_jax.layers.grouped_conv import SplitGroupConv2d
from peanut_jax.models.focal_transformer import T2T, SoftComp, SoftSplit, TemporalFocalTransformerBlock, token_grid
from peanut_jax.models.propagation import BidirectionalPropagation
from peanut_jax.models.spynet import SPyNet
from peanut_jax.ops import interpolate

Dtype = Any
CONV_INIT = nn.initializers.normal(0.02)
NON_HQ_SIZE = (240, 432)
WINDOW = (5, 9)
# (out channels, stride, groups) of the encoder convolutions at layer indices 0, 2, ..., 16
ENCODER = (
    (64, 2, 1),
    (64, 1, 1),
    (128, 2, 1),
    (256, 1, 1),
    (384, 1, 1),
    (512, 1, 2),
    (384, 1, 4),
    (256, 1, 8),
    (128, 1, 1),
)
NUM_BLOCKS = 8
HIDDEN = 512
CHANNEL = 128


def check_input_size(h: int, w: int, hq: bool) -> None:
    """Raise ValueError unless (h, w) is a frame size the model accepts."""
    if not hq:
        if (h, w) != NON_HQ_SIZE:
            raise ValueError(
                f"e2fgvi: masked_frames must be {NON_HQ_SIZE[0]}x{NON_HQ_SIZE[1]} (H x W), got {h}x{w}; "
                f"the non-HQ model is tied to that size (resize the video, or use e2fgvi_hq)"
            )
        return
    if h % 4 or w % 4:
        raise ValueError(f"e2fgvi_hq: frame size {h}x{w} must be a multiple of 4 (pad to multiples of 60x108)")
    fh, fw = token_grid((h // 4, w // 4))
    if fh % WINDOW[0] or fw % WINDOW[1] or fh == 0 or fw == 0:
        raise ValueError(
            f"e2fgvi_hq: frame size {h}x{w} gives a {fh}x{fw} token grid, which is not divisible by "
            f"the {WINDOW[0]}x{WINDOW[1]} attention window; pad H to a multiple of 60 and W to a "
            f"multiple of 108"
        )


def valid_size(h: int, w: int) -> tuple[int, int]:
    """The size the official test script pads an HQ input to: (H, W) rounded up to multiples of 60 x 108."""
    return h + (60 - h % 60) % 60, w + (108 - w % 108) % 108


def pad_to_valid_size(frames: np.ndarray, axis_h: int = -3, axis_w: int = -2) -> np.ndarray:
    """Bottom/right mirror padding with the edge repeated (the official ``cat([x, flip(x)])[:h+pad]``),
    to multiples of 60 x 108.  Host-side (numpy), outside jit."""
    frames = np.asarray(frames)
    h, w = frames.shape[axis_h], frames.shape[axis_w]
    th, tw = valid_size(h, w)
    pad = [(0, 0)] * frames.ndim
    pad[axis_h % frames.ndim] = (0, th - h)
    pad[axis_w % frames.ndim] = (0, tw - w)
    if th - h > h or tw - w > w:
        raise ValueError(f"pad_to_valid_size: frame {h}x{w} too small to mirror-pad to {th}x{tw}")
    return np.pad(frames, pad, mode="symmetric")


class Encoder(nn.Module):
    channels: tuple = tuple(c for c, _, _ in ENCODER)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None
    split_groups: bool = False  # grouped convs as separate convs (same params; much faster on CPU)

    @nn.compact
    def __call__(self, x):
        out = x.astype(self.dtype)
        x0 = None
        for li, ((_, stride, groups), feats) in enumerate(zip(ENCODER, self.channels)):
            i = 2 * li
            if i == 8:
                x0 = out
            if i > 8:
                n, h, w, c = out.shape
                a = x0.reshape(n, h, w, groups, -1)
                o = out.reshape(n, h, w, groups, -1)
                out = jnp.concatenate([a, o], axis=-1).reshape(n, h, w, -1)
            conv_cls = SplitGroupConv2d if self.split_groups and groups > 1 else Conv2d
            out = conv_cls(
                feats,
                3,
                stride=stride,
                padding=1,
                groups=groups,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                precision=self.precision,
                kernel_init=CONV_INIT,
                bias_init=nn.initializers.zeros,
                name=f"layers_{i}",
            )(out)
            out = leaky_relu(out, 0.2)
        return out


class Decoder(nn.Module):
    channels: tuple = (128, 64, 64)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        conv = lambda f, name: Conv2d(
            f,
            3,
            padding=1,
            dtype=self.dtype,
            param_dtype=self.param_dtype,  # noqa: E731
            precision=self.precision,
            kernel_init=CONV_INIT,
            bias_init=nn.initializers.zeros,
            name=name,
        )
        up = lambda a: interpolate(a, scale_factor=2, mode="bilinear", align_corners=True)  # noqa: E731
        c0, c1, c2 = self.channels
        x = leaky_relu(conv(c0, "layers_0")(up(x)), 0.2)
        x = leaky_relu(conv(c1, "layers_2")(x), 0.2)
        x = leaky_relu(conv(c2, "layers_4")(up(x)), 0.2)
        return conv(3, "layers_6")(x)


class InpaintGenerator(nn.Module):
    """E2FGVI (``hq=False``) / E2FGVI-HQ (``hq=True``) generator; see the module docstring."""

    hq: bool = False
    fix_backward_flow_idx: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    precision: Any = None
    # widths (defaults: the official model; see the module docstring)
    encoder_channels: tuple = tuple(c for c, _, _ in ENCODER)
    channel: int = CHANNEL
    hidden: int = HIDDEN
    num_blocks: int = NUM_BLOCKS
    num_heads: int = 4
    mlp_hidden: int = 1960
    deform_groups: int = 16
    decoder_channels: tuple = (128, 64, 64)
    # compute the encoder's grouped convolutions as separate convolutions (same parameters and numbers
    # up to rounding; XLA:CPU is slow on grouped convolutions, above all their kernel gradient)
    split_grouped_convs: bool = False

    def flow_completion(self, masked_local_frames):
        """(B, L, H, W, 3) in [-1, 1] -> (flows_forward, flows_backward), each (B, L-1, H/4, W/4, 2)."""
        b, lt, h, w, c = masked_local_frames.shape
        if lt < 2:
            z = jnp.zeros((b, 0, h // 4, w // 4, 2), jnp.float32)
            return z, z
        f = (masked_local_frames.astype(jnp.float32) + 1.0) / 2.0
        f = interpolate(
            f.reshape(b * lt, h, w, c),
            scale_factor=1 / 4,
            mode="bilinear",
            align_corners=True,
            recompute_scale_factor=True,
        )
        hq, wq = f.shape[1:3]
        f = f.reshape(b, lt, hq, wq, c)
        f1 = f[:, :-1].reshape(-1, hq, wq, c)
        f2 = f[:, 1:].reshape(-1, hq, wq, c)
        # both directions in one batched SPyNet call (SPyNet is per-sample, so this is exact)
        self.sow("intermediates", "spynet_in_ref", f1)
        flows = self.update_spynet(jnp.concatenate([f1, f2]), jnp.concatenate([f2, f1]))
        n = f1.shape[0]
        fwd = flows[:n].reshape(b, lt - 1, hq, wq, 2)
        bwd = flows[n:].reshape(b, lt - 1, hq, wq, 2)
        return fwd, bwd

    def _check_widths(self):
        enc = tuple(int(c) for c in self.encoder_channels)
        if len(enc) != len(ENCODER) or enc[-1] != self.channel:
            raise ValueError(
                f"InpaintGenerator: encoder_channels must be {len(ENCODER)} widths ending with "
                f"channel={self.channel}, got {enc}"
            )
        for li in (5, 6, 7):  # grouped convs fed with the interleave of the layer-8 input and the activation
            groups = ENCODER[li][2]
            if enc[li] % groups or enc[li - 1] % groups or enc[3] % groups:
                raise ValueError(
                    f"InpaintGenerator: encoder layers_{2 * li} is a {groups}-group conv; its input "
                    f"widths {enc[3]}, {enc[li - 1]} and output width {enc[li]} must be multiples of "
                    f"{groups}"
                )
        if self.hidden % self.num_heads:
            raise ValueError(f"InpaintGenerator: hidden={self.hidden} must be a multiple of num_heads={self.num_heads}")
        k = T2T["kernel_size"][0] * T2T["kernel_size"][1]
        if self.mlp_hidden % k:
            raise ValueError(f"InpaintGenerator: mlp_hidden={self.mlp_hidden} must be a multiple of {k}")
        if self.deform_groups % 2 or self.channel % self.deform_groups:
            raise ValueError(
                f"InpaintGenerator: deform_groups={self.deform_groups} must be even and divide channel={self.channel}"
            )
        if len(tuple(self.decoder_channels)) != 3:
            raise ValueError(f"InpaintGenerator: decoder_channels must be 3 widths, got {self.decoder_channels}")

    def setup(self):
        self._check_widths()
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.encoder = Encoder(
            tuple(self.encoder_channels), **kw, precision=self.precision, split_groups=self.split_grouped_convs
        )
        self.decoder = Decoder(tuple(self.decoder_channels), **kw, precision=self.precision)
        self.feat_prop_module = BidirectionalPropagation(
            self.channel,
            fix_backward_flow_idx=self.fix_backward_flow_idx,
            deform_groups=self.deform_groups,
            **kw,
            precision=self.precision,
            kernel_init=CONV_INIT,
        )
        self.ss = SoftSplit(self.hidden, **T2T, **kw, precision=self.precision)
        self.sc = SoftComp(self.channel, hq=self.hq, **T2T, **kw, precision=self.precision)
        self.transformer = [
            TemporalFocalTransformerBlock(
                self.hidden, self.num_heads, WINDOW, WINDOW, mlp_hidden=self.mlp_hidden, **kw, precision=self.precision
            )
            for _ in range(self.num_blocks)
        ]
        self.update_spynet = SPyNet(variant="mmagic", **kw)

    def __call__(self, masked_frames, num_local_frames: int):
        if masked_frames.ndim != 5 or masked_frames.shape[-1] != 3:
            raise ValueError(f"InpaintGenerator: masked_frames must be (B, T, H, W, 3), got {masked_frames.shape}")
        if not isinstance(num_local_frames, (int, np.integer)) or isinstance(num_local_frames, bool):
            raise ValueError(
                f"InpaintGenerator: num_local_frames must be a Python int (static), "
                f"got {type(num_local_frames).__name__}"
            )
        b, t, h, w, c = masked_frames.shape
        lt = int(num_local_frames)
        if not 1 <= lt <= t:
            raise ValueError(f"InpaintGenerator: num_local_frames={lt} must be in [1, T={t}]")
        check_input_size(h, w, self.hq)

        flows = self.flow_completion(masked_frames[:, :lt])
        enc = self.encoder(masked_frames.reshape(b * t, h, w, c))
        _, fh, fw, fc = enc.shape
        enc = enc.reshape(b, t, fh, fw, fc)
        self.sow("intermediates", "encoder_out", enc)
        # the official passes the i->i+1 flows as ``flows_backward`` (BasicVSR++ convention)
        local = self.feat_prop_module(enc[:, :lt], flows[0], flows[1])
        self.sow("intermediates", "feat_prop_out", local)
        enc = jnp.concatenate([local, enc[:, lt:]], axis=1)

        trans = self.ss(enc.reshape(b * t, fh, fw, fc), b)
        self.sow("intermediates", "softsplit_out", trans)
        for i, blk in enumerate(self.transformer):
            trans = blk(trans, (fh, fw))
            if i == 0:
                self.sow("intermediates", "transformer_block0_out", trans)
        self.sow("intermediates", "transformer_out", trans)
        trans = self.sc(trans, (fh, fw)).reshape(b, t, fh, fw, fc)
        self.sow("intermediates", "softcomp_out", trans)
        enc = enc + trans

        out = self.decoder(enc.reshape(b * t, fh, fw, fc))
        self.sow("intermediates", "decoder_out_pre_tanh", out)
        frames = jnp.tanh(out.astype(jnp.float32)).reshape(b, t, h, w, 3)
        return frames, flows
