"""RIFE frame interpolation (NHWC): the ECCV 2022 IFNet (with the privileged teacher and the
Contextnet + U-Net refinement), its arbitrary-timestep variant (RIFEm, ``timestep_input=True``) and
the IFNet_HDv3 network that the CogVideoX interpolation demo runs.

Conventions (the official models' own): inputs ``img0``, ``img1`` are (N, H, W, 3) float in [0, 1]
(the official training reads BGR with OpenCV but flips channels at random, video inference feeds
RGB; feed whatever the weights were trained with).  Flows are (N, H, W, 4) in pixels at full
resolution: channels 0:2 = flow from the intermediate frame to ``img0`` (x, y), 2:4 = to ``img1``.
Masks are carried between blocks as logits; ``sigmoid`` is applied only for blending.
With ``dtype=bfloat16`` the convolutions run in bf16 while flows, masks, warps and blending stay
float32 (bf16 cannot hold pixel coordinates, the cause of half-precision RIFE's HD artefacts).

H and W must be such that every block's resolution is whole; :func:`required_multiple` gives the
padding multiple the official inference scripts use (32 for ``scale_list=(4, 2, 1)``), and
``peanut_jax.pipeline.interpolate`` pads and crops outside ``jit``.

Entry points::

    frame = IFNet().apply(variables, img0, img1)                       # official merged[2]
    out = IFNet().apply(variables, img0, img1, gt=gt)                  # RIFEOutput (training path)
    frame = IFNet(timestep_input=True).apply(variables, img0, img1, timestep=0.25)
    frame = IFNetHDv3().apply(variables, img0, img1)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from peanut_jax.layers import Conv2d, ConvTranspose2d, PReLU
from peanut_jax.ops import interpolate, warp

Dtype = Any

__all__ = [
    "IFBlock",
    "IFBlockHDv3",
    "IFNet",
    "IFNetHDv3",
    "Contextnet",
    "Unet",
    "RIFEOutput",
    "HDv3Output",
    "required_multiple",
    "check_input_size",
    "rotate180",
    "init_params",
    "param_count",
]


# --------------------------------------------------------------------------------------------
# helpers


def required_multiple(scale_list: Sequence[float] = (4, 2, 1), base: int = 32) -> int:
    """Padding multiple used by the official inference scripts: ``max(base, int(base / scale))``
    where ``scale = 4 / max(scale_list)`` (``scale_list = [4, 2, 1] / scale``)."""
    top = max(float(s) for s in scale_list)
    return max(base, int(base * top / 4.0))


def check_input_size(h: int, w: int, scale_list: Sequence[float], refine: bool, model: str) -> None:
    """Raise ValueError unless every block (and the refinement U-Net) sees whole resolutions."""
    for name, size in (("height", h), ("width", w)):
        for s in scale_list:
            r = size / float(s)
            if abs(r - round(r)) > 1e-9 or round(r) % 4:
                raise ValueError(
                    f"{model}: input {name} {size} is not divisible by 4*scale={4 * s:g} "
                    f"(scale_list={tuple(scale_list)}); pad to a multiple of "
                    f"{required_multiple(scale_list)} (peanut_jax.pipeline.interpolate pads and crops)"
                )
        if refine and size % 16:
            raise ValueError(
                f"{model}: input {name} {size} is not divisible by 16 (refinement U-Net); "
                f"pad to a multiple of {required_multiple(scale_list)}"
            )


def rotate180(x):
    """Flip H and W of an NHWC array (torch ``.flip(2).flip(3)`` on NCHW)."""
    return x[:, ::-1, ::-1, :]


def _resize(x, factor: float):
    """torch ``F.interpolate(x, scale_factor=factor, mode='bilinear', align_corners=False)``."""
    if factor == 1.0:
        return x  # torch's bilinear at factor 1 is the identity
    return interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def _timestep_map(timestep, like):
    """A constant (N, H, W, 1) map from a scalar or per-sample (N,) timestep."""
    n, h, w, _ = like.shape
    t = jnp.asarray(timestep, like.dtype).reshape(-1, 1, 1, 1)
    if t.shape[0] not in (1, n):
        raise ValueError(
            f"timestep must be a scalar or have one value per sample ({n}), got shape {jnp.shape(timestep)}"
        )
    return jnp.broadcast_to(t, (n, h, w, 1))


def _check_pair(img0, img1, model: str):
    if img0.ndim != 4 or img0.shape[-1] != 3:
        raise ValueError(f"{model}: img0 must be (N, H, W, 3), got shape {tuple(img0.shape)}")
    if img1.shape != img0.shape:
        raise ValueError(f"{model}: img0 {tuple(img0.shape)} and img1 {tuple(img1.shape)} differ in shape")


# --------------------------------------------------------------------------------------------
# building blocks


class ConvPReLU(nn.Module):
    """``conv(i, o, k, s, p)`` of the official code: Conv2d(bias) + per-channel PReLU."""

    features: int
    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = Conv2d(
            self.features,
            self.kernel_size,
            self.stride,
            self.padding,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
        )(x)
        return PReLU(self.features, param_dtype=self.param_dtype, name="prelu")(x)


class DeconvPReLU(nn.Module):
    """``deconv(i, o)``: ConvTranspose2d(i, o, 4, 2, 1) + per-channel PReLU (x2 upsampling)."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = ConvTranspose2d(self.features, 4, 2, 1, dtype=self.dtype, param_dtype=self.param_dtype, name="convt")(x)
        return PReLU(self.features, param_dtype=self.param_dtype, name="prelu")(x)


class Conv2(nn.Module):
    """refine.py ``Conv2``: conv(i, o, 3, stride) + conv(o, o, 3, 1), both with PReLU."""

    features: int
    stride: int = 2
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = ConvPReLU(self.features, 3, self.stride, 1, name="conv1", **kw)(x)
        return ConvPReLU(self.features, 3, 1, 1, name="conv2", **kw)(x)


class IFBlock(nn.Module):
    """ECCV ``IFBlock(in_planes, c)``: /4 encoder, 8 convs with one residual, ConvT head -> 5 channels.

    Returns ``(flow (N,H,W,4), mask logit (N,H,W,1))`` at the input resolution.
    """

    c: int = 64
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, flow, scale: float):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if scale != 1:
            x = _resize(x, 1.0 / scale)
        if flow is not None:
            flow = _resize(flow, 1.0 / scale) * (1.0 / scale)
            x = jnp.concatenate([x, flow.astype(x.dtype)], axis=-1)
        x = ConvPReLU(self.c // 2, 3, 2, 1, name="conv0_0", **kw)(x)
        x = ConvPReLU(self.c, 3, 2, 1, name="conv0_1", **kw)(x)
        y = x
        for i in range(8):
            y = ConvPReLU(self.c, name=f"convblock_{i}", **kw)(y)
        x = y + x
        tmp = ConvTranspose2d(5, 4, 2, 1, name="lastconv", **kw)(x).astype(jnp.float32)
        tmp = _resize(tmp, scale * 2.0)
        return tmp[..., :4] * (scale * 2.0), tmp[..., 4:5]


class IFBlockHDv3(nn.Module):
    """IFNet_HDv3 ``IFBlock(in_planes, c=90)``: /4 encoder, 4 residual conv pairs, two x4 ConvT heads."""

    c: int = 90
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, flow, scale: float):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = _resize(x, 1.0 / scale)
        flow = _resize(flow, 1.0 / scale) * (1.0 / scale)
        feat = jnp.concatenate([x, flow.astype(x.dtype)], axis=-1)
        feat = ConvPReLU(self.c // 2, 3, 2, 1, name="conv0_0", **kw)(feat)
        feat = ConvPReLU(self.c, 3, 2, 1, name="conv0_1", **kw)(feat)
        for k in range(4):
            y = ConvPReLU(self.c, name=f"convblock{k}_0", **kw)(feat)
            y = ConvPReLU(self.c, name=f"convblock{k}_1", **kw)(y)
            feat = y + feat

        def head(prefix, out):
            h = ConvTranspose2d(self.c // 2, 4, 2, 1, name=f"{prefix}_0", **kw)(feat)
            h = PReLU(self.c // 2, param_dtype=self.param_dtype, name=f"{prefix}_1")(h)
            return ConvTranspose2d(out, 4, 2, 1, name=f"{prefix}_2", **kw)(h).astype(jnp.float32)

        flow = _resize(head("conv1", 4), scale) * scale
        mask = _resize(head("conv2", 1), scale)
        return flow, mask


class Contextnet(nn.Module):
    """refine.py ``Contextnet``: 4 stride-2 stages (c, 2c, 4c, 8c), each warped by the halved flow."""

    c: int = 16
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, flow):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        feats = []
        for k in range(4):
            x = Conv2(self.c * 2**k, name=f"conv{k + 1}", **kw)(x)
            flow = _resize(flow, 0.5) * 0.5
            feats.append(warp(x, flow, padding="border"))
        return feats


class Unet(nn.Module):
    """refine.py ``Unet``: returns the sigmoid output (N, H, W, 3)."""

    c: int = 16
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, img0, img1, warped0, warped1, mask, flow, c0, c1):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        c = self.c
        cat = lambda *a: jnp.concatenate([t.astype(self.dtype) for t in a], axis=-1)  # noqa: E731
        s0 = Conv2(2 * c, name="down0", **kw)(cat(img0, img1, warped0, warped1, mask, flow))
        s1 = Conv2(4 * c, name="down1", **kw)(cat(s0, c0[0], c1[0]))
        s2 = Conv2(8 * c, name="down2", **kw)(cat(s1, c0[1], c1[1]))
        s3 = Conv2(16 * c, name="down3", **kw)(cat(s2, c0[2], c1[2]))
        x = DeconvPReLU(8 * c, name="up0", **kw)(cat(s3, c0[3], c1[3]))
        x = DeconvPReLU(4 * c, name="up1", **kw)(cat(x, s2))
        x = DeconvPReLU(2 * c, name="up2", **kw)(cat(x, s1))
        x = DeconvPReLU(c, name="up3", **kw)(cat(x, s0))
        x = Conv2d(3, 3, 1, 1, name="conv", **kw)(x)
        return jax.nn.sigmoid(x.astype(jnp.float32))


# --------------------------------------------------------------------------------------------
# outputs


class RIFEOutput(NamedTuple):
    """Everything the official ECCV ``IFNet.forward`` returns (NHWC).

    ``flow_list``: 3 flows (N,H,W,4) after each student block; ``mask``: sigmoid mask of the last
    student (N,H,W,1); ``merged``: 3 blended frames, the last one refined and clipped (the output);
    ``flow_teacher`` / ``merged_teacher``: teacher flow and frame (None without ``gt``);
    ``loss_distill``: scalar distillation loss (0 without ``gt``).
    """

    flow_list: tuple
    mask: jax.Array
    merged: tuple
    flow_teacher: jax.Array | None
    merged_teacher: jax.Array | None
    loss_distill: jax.Array


class HDv3Output(NamedTuple):
    """What the CogVideo ``IFNet_HDv3.forward`` returns (NHWC): 3 flows, the last sigmoid mask, 3 frames."""

    flow_list: tuple
    mask: jax.Array
    merged: tuple


# --------------------------------------------------------------------------------------------
# ECCV IFNet (+ RIFEm)


class IFNet(nn.Module):
    """ECCV 2022 RIFE ``IFNet`` (``timestep_input=False``) or ``IFNet_m`` (``timestep_input=True``).

    ``widths`` = (block0, block1, block2, teacher) channel widths (official 240/150/90/90);
    ``context_c`` = Contextnet/U-Net base width (official 16).  The official IFNet accepts and
    ignores ``timestep`` (it always predicts t = 0.5); with ``timestep_input`` a constant t channel
    is inserted after img1 in every block input, so any t in (0, 1) is predicted directly.

    ``__call__(img0, img1, gt=None, timestep=0.5, scale_list=(4, 2, 1), tta=False, return_all=False)``
    returns the final frame (N, H, W, 3) (official ``merged[2]``), or a :class:`RIFEOutput` when
    ``gt`` is given (training path: teacher + distillation loss) or ``return_all`` is set.
    ``tta`` averages with the prediction on the 180-degree rotated pair, rotated back (official
    ``Model.inference(TTA=True)``); it applies to the returned frame only.
    """

    timestep_input: bool = False
    widths: tuple = (240, 150, 90, 90)
    context_c: int = 16
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    pad_base: ClassVar[int] = 32  # pipeline padding base (see required_multiple)

    @nn.compact
    def __call__(
        self, img0, img1, gt=None, timestep=0.5, scale_list=(4, 2, 1), tta: bool = False, return_all: bool = False
    ):
        name = "rife (IFNet_m)" if self.timestep_input else "rife (IFNet)"
        _check_pair(img0, img1, name)
        if gt is not None and gt.shape != img0.shape:
            raise ValueError(f"{name}: gt {tuple(gt.shape)} must have the shape of img0 {tuple(img0.shape)}")
        if len(scale_list) != 3:
            raise ValueError(f"{name}: scale_list must have 3 entries, got {tuple(scale_list)}")
        check_input_size(img0.shape[1], img0.shape[2], scale_list, True, name)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        blocks = [IFBlock(self.widths[i], name=f"block{i}", **kw) for i in range(3)]
        block_tea = IFBlock(self.widths[3], name="block_tea", **kw)
        contextnet = Contextnet(self.context_c, name="contextnet", **kw)
        unet = Unet(self.context_c, name="unet", **kw)

        n = img0.shape[0]
        if tta:
            # one forward on the batch [pair, rotated pair]; timestep per sample is duplicated
            a = jnp.concatenate([img0, rotate180(img0)], 0)
            b = jnp.concatenate([img1, rotate180(img1)], 0)
            t = jnp.asarray(timestep).reshape(-1)
            t2 = jnp.concatenate([t, t]) if t.shape[0] == n and n > 1 else t
            g = None if gt is None else jnp.concatenate([gt, rotate180(gt)], 0)
        else:
            a, b, t2, g = img0, img1, timestep, gt

        f32 = lambda x: None if x is None else jnp.asarray(x, jnp.float32)  # noqa: E731
        out = self._forward(
            blocks, block_tea, contextnet, unet, f32(a), f32(b), f32(g), t2, tuple(float(s) for s in scale_list)
        )
        if tta:
            final = (out.merged[2][:n] + rotate180(out.merged[2][n:])) / 2
            out = jax.tree_util.tree_map(lambda v: v[:n] if getattr(v, "ndim", 0) == 4 else v, out)
            out = out._replace(merged=out.merged[:2] + (final,))
        if gt is not None or return_all:
            return out
        return out.merged[2]

    def _forward(self, blocks, block_tea, contextnet, unet, img0, img1, gt, timestep, scale_list):
        tmap = _timestep_map(timestep, img0) if self.timestep_input else None
        base = [img0, img1] + ([tmap] if tmap is not None else [])
        flow = mask = None
        warped0, warped1 = img0, img1
        flows, masks, pairs = [], [], []
        for i in range(3):
            if flow is None:
                flow, mask = blocks[i](jnp.concatenate(base, -1), None, scale_list[i])
            else:
                fd, md = blocks[i](jnp.concatenate(base + [warped0, warped1, mask], -1), flow, scale_list[i])
                flow = flow + fd
                mask = mask + md
            masks.append(jax.nn.sigmoid(mask))
            flows.append(flow)
            warped0 = warp(img0, flow[..., :2], padding="border")
            warped1 = warp(img1, flow[..., 2:4], padding="border")
            pairs.append((warped0, warped1))

        flow_teacher = merged_teacher = None
        if gt is not None or self.is_initializing():
            # the teacher's parameters are always created, so checkpoints round-trip losslessly
            g = gt if gt is not None else jnp.zeros_like(img0)
            fd, md = block_tea(jnp.concatenate(base + [warped0, warped1, mask, g], -1), flow, 1.0)
            if gt is not None:
                flow_teacher = flow + fd
                w0 = warp(img0, flow_teacher[..., :2], padding="border")
                w1 = warp(img1, flow_teacher[..., 2:4], padding="border")
                mt = jax.nn.sigmoid(mask + md)
                merged_teacher = w0 * mt + w1 * (1 - mt)

        merged = [p[0] * m + p[1] * (1 - m) for p, m in zip(pairs, masks)]
        loss_distill = jnp.zeros((), jnp.float32)
        if gt is not None:
            ft = jax.lax.stop_gradient(flow_teacher)
            tea_err = jnp.mean(jnp.abs(merged_teacher - gt), -1, keepdims=True)
            for i in range(3):
                stu_err = jnp.mean(jnp.abs(merged[i] - gt), -1, keepdims=True)
                loss_mask = jax.lax.stop_gradient((stu_err > tea_err + 0.01).astype(flows[i].dtype))
                dist = jnp.sqrt(jnp.mean((ft - flows[i]) ** 2, -1, keepdims=True))
                loss_distill = loss_distill + jnp.mean(dist * loss_mask).astype(jnp.float32)

        c0 = contextnet(img0, flow[..., :2])
        c1 = contextnet(img1, flow[..., 2:4])
        tmp = unet(img0, img1, warped0, warped1, mask, flow, c0, c1)
        # debugging aid (apply(..., mutable=['intermediates'])): names of the official dumps
        for k, f in enumerate(c0):
            self.sow("intermediates", f"contextnet_img0_f{k + 1}", f)
        self.sow("intermediates", "unet_out", tmp)
        res = tmp[..., :3] * 2 - 1
        merged[2] = jnp.clip(merged[2] + res, 0, 1)
        return RIFEOutput(tuple(flows), masks[2], tuple(merged), flow_teacher, merged_teacher, loss_distill)


# --------------------------------------------------------------------------------------------
# IFNet_HDv3 (CogVideoX demo)


class IFNetHDv3(nn.Module):
    """CogVideo ``rife/IFNet_HDv3.IFNet`` (RIFE v3.x HD): three c=90 blocks with an always-on
    symmetric ensemble (each block also runs on the swapped pair with the negated mask, flows
    swapped back and averaged), no refinement, no clamp, no timestep (always t = 0.5).

    ``block_tea`` exists in the parameters (it is in the official checkpoints) but is never used.
    ``__call__(img0, img1, timestep=0.5, scale_list=(4, 2, 1), tta=False, return_all=False)``
    returns the frame (official ``merged[2]``) or an :class:`HDv3Output`; ``timestep`` is accepted
    for API symmetry and ignored, like the official model ignores it.  The official inference
    ``Model.inference(img0, img1, scale)`` uses ``scale_list = (4/scale, 2/scale, 1/scale)``.
    """

    c: int = 90
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    pad_base: ClassVar[int] = 32  # pipeline padding base (see required_multiple)

    @nn.compact
    def __call__(
        self, img0, img1, gt=None, timestep=0.5, scale_list=(4, 2, 1), tta: bool = False, return_all: bool = False
    ):
        del timestep
        name = "rife_hdv3 (IFNet_HDv3)"
        if gt is not None:
            raise ValueError(
                f"{name}: no training path (the official HDv3 training forward is broken and "
                "has no teacher); train the ECCV 'rife' model instead"
            )
        _check_pair(img0, img1, name)
        if len(scale_list) != 3:
            raise ValueError(f"{name}: scale_list must have 3 entries, got {tuple(scale_list)}")
        check_input_size(img0.shape[1], img0.shape[2], scale_list, False, name)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        blocks = [IFBlockHDv3(self.c, name=f"block{i}", **kw) for i in range(3)]
        n = img0.shape[0]
        a, b = jnp.asarray(img0, jnp.float32), jnp.asarray(img1, jnp.float32)
        if tta:
            a = jnp.concatenate([a, rotate180(a)], 0)
            b = jnp.concatenate([b, rotate180(b)], 0)
        scale_list = tuple(float(s) for s in scale_list)
        if self.is_initializing():
            z = jnp.zeros(a.shape[:3] + (10,), jnp.float32)
            IFBlockHDv3(self.c, name="block_tea", **kw)(z, jnp.zeros(a.shape[:3] + (4,), jnp.float32), 1.0)
        out = self._forward(blocks, a, b, scale_list)
        if tta:
            final = (out.merged[2][:n] + rotate180(out.merged[2][n:])) / 2
            out = jax.tree_util.tree_map(lambda v: v[:n], out)
            out = out._replace(merged=out.merged[:2] + (final,))
        return out if return_all else out.merged[2]

    def _forward(self, blocks, img0, img1, scale_list):
        n = img0.shape[0]
        flow = jnp.zeros(img0.shape[:3] + (4,), img0.dtype)
        mask = jnp.zeros(img0.shape[:3] + (1,), img0.dtype)
        warped0, warped1 = img0, img1
        flows, masks, merged = [], [], []
        swap = lambda f: jnp.concatenate([f[..., 2:4], f[..., :2]], -1)  # noqa: E731
        for i in range(3):
            # both ensemble members in one batch: (w0, w1, mask, flow) and (w1, w0, -mask, swapped flow)
            x = jnp.concatenate(
                [jnp.concatenate([warped0, warped1, mask], -1), jnp.concatenate([warped1, warped0, -mask], -1)], 0
            )
            f = jnp.concatenate([flow, swap(flow)], 0)
            fd, md = blocks[i](x, f, scale_list[i])
            if i == 0:
                self.sow("intermediates", "block0_call0_flow", fd[:n])
            f0, f1 = fd[:n], fd[n:]
            m0, m1 = md[:n], md[n:]
            flow = flow + (f0 + swap(f1)) / 2
            mask = mask + (m0 + (-m1)) / 2
            flows.append(flow)
            masks.append(mask)
            warped0 = warp(img0, flow[..., :2], padding="border")
            warped1 = warp(img1, flow[..., 2:4], padding="border")
            merged.append((warped0, warped1))
        sig = [jax.nn.sigmoid(m) for m in masks]
        frames = tuple(p[0] * s + p[1] * (1 - s) for p, s in zip(merged, sig))
        return HDv3Output(tuple(flows), sig[2], frames)


def param_count(params) -> int:
    """Number of parameters in a params tree."""
    return int(sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))


_CONVT_NAMES = ("lastconv", "convt", "conv1_0", "conv1_2", "conv2_0", "conv2_2")


def init_params(module, seed: int = 0) -> dict:
    """Random variables ``{'params': ...}`` for ``module`` with the distributions of ``module.init``
    (torch defaults: U(+-1/sqrt(fan_in)) for conv weights and biases, PReLU slopes 0.25), drawn with
    numpy on the host.  ``module.init`` is equivalent but compiles ~190 threefry initialisers, which
    takes minutes on a CPU; this takes a fraction of a second.
    """
    import numpy as np
    from flax.traverse_util import flatten_dict, unflatten_dict

    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    shapes = flatten_dict(jax.eval_shape(module.init, jax.random.key(0), x, x)["params"])
    rng = np.random.default_rng(seed)
    out = {}
    for path, leaf in sorted(shapes.items()):
        if path[-1] == "weight":  # PReLU
            out[path] = np.full(leaf.shape, 0.25, leaf.dtype)
            continue
        kernel = shapes[path[:-1] + ("kernel",)].shape
        kh, kw, cin, cout = kernel
        fan_in = cout * kh * kw if path[-2] in _CONVT_NAMES else cin * kh * kw
        bound = 1.0 / math.sqrt(fan_in)
        out[path] = rng.uniform(-bound, bound, leaf.shape).astype(leaf.dtype)
    return {"params": jax.tree_util.tree_map(jnp.asarray, unflatten_dict(out))}
