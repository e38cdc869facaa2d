"""BasicVSR++ (Chan et al., CVPR 2022): the mmagic ``BasicVSRPlusPlusNet`` in Flax, NHWC.

``module.apply(variables, lqs)`` with ``lqs`` (B, T, h, w, 3) RGB in [0, 1] (no normalisation: the
official data preprocessor divides uint8 by 255 only) returns (B, T, scale*h, scale*w, 3) float32,
the official ``BasicVSRPlusPlusNet.forward`` output (not clamped).

Structure (names of our parameter tree in brackets):

* ``spynet`` -- SPyNet flows on the low-resolution frames, both directions;
* ``feat_extract`` -- conv + 5 residual blocks (or two stride-2 convs first when
  ``is_low_res_input=False``);
* four propagation branches ``backward_1, forward_1, backward_2, forward_2``, each a recurrent
  cell (``<branch>/deform_align``: flow-guided second-order deformable alignment,
  ``<branch>/backbone``: conv + ``num_blocks`` residual blocks) over the frames, taking the
  features of every earlier branch as extra input;
* ``reconstruction`` (conv + 5 residual blocks on the 5 concatenated features), ``upsample1``
  (and ``upsample2`` for x4) pixel-shuffle x2 upsamplers, ``conv_hr``, ``conv_last``, plus the
  bilinear upsampled input (``align_corners=False``) as a skip.

Options beyond the official ones: ``scale=2`` uses only ``upsample1`` and a x2 skip (the official
net is x4 only); ``use_scan`` runs the recurrence and the per-frame reconstruction with
``nn.scan`` (compile time independent of T, activation memory of one frame for the
reconstruction) instead of unrolled Python loops (identical numbers).

Mirror-extended clips (T even and ``lqs[:, :T/2] == lqs[:, T/2:][:, ::-1]``, the Vimeo-90K
protocol) need SPyNet only once: the forward flows are the flipped backward flows.  This is a
pure saving -- for such a clip both computations see identical inputs -- so under ``jit`` (where
the frames are not concrete and cannot be compared) the model simply computes both directions;
pass ``is_mirror_extended=True/False`` to decide explicitly.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from peanut_jax.layers import Conv2d, leaky_relu
from peanut_jax.layers.deform_align import SecondOrderDeformableAlignment
from peanut_jax.models.spynet import SPyNet
from peanut_jax.ops import interpolate, pixel_shuffle, warp

Dtype = Any
BRANCHES = ("backward_1", "forward_1", "backward_2", "forward_2")
MIN_FLOW_SIZE = 64  # the official net asserts that the LR frames used for SPyNet are >= 64 px
SCALES = (2, 4)


def kaiming_normal(scale: float = 1.0):
    """mmcv ``kaiming_init(mode='fan_in', nonlinearity='relu')`` then ``weight *= scale``."""
    return nn.initializers.variance_scaling(2.0 * scale * scale, "fan_in", "normal")


class ResidualBlockNoBN(nn.Module):
    """conv3x3 -> ReLU -> conv3x3, plus identity (res_scale 1; mmagic init kaiming x0.1, bias 0)."""

    features: int = 64
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(
            kernel_size=3,
            padding=1,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=kaiming_normal(0.1),
            bias_init=nn.initializers.zeros,
        )
        out = Conv2d(self.features, name="conv1", **kw)(x)
        out = Conv2d(self.features, name="conv2", **kw)(nn.relu(out))
        return x + out


class ResidualBlocksWithInputConv(nn.Module):
    """mmagic ``ResidualBlocksWithInputConv``: conv3x3 (in -> features), LReLU(0.1), residual blocks."""

    features: int = 64
    num_blocks: int = 5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = Conv2d(self.features, 3, padding=1, dtype=self.dtype, param_dtype=self.param_dtype, name="conv_in")(x)
        x = leaky_relu(x, 0.1)
        for i in range(self.num_blocks):
            x = ResidualBlockNoBN(self.features, self.dtype, self.param_dtype, name=f"block_{i}")(x)
        return x


class PixelShufflePack(nn.Module):
    """conv3x3 (C -> features*r*r) then pixel shuffle x r (torch channel order)."""

    features: int = 64
    factor: int = 2
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = Conv2d(
            self.features * self.factor**2,
            3,
            padding=1,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=kaiming_normal(1.0),
            bias_init=nn.initializers.zeros,
            name="upsample_conv",
        )(x)
        return pixel_shuffle(x, self.factor)


class _PropagationCell(nn.Module):
    """One step of a propagation branch.

    carry = (out_{i-1}, out_{i-2}, flow_n1 of step i-1, i); x = (feat_current, tuple of the earlier
    branches' features at this frame, flow_n1 of this step: the flow pulling the previous step's
    frame onto this one; zeros at step 0).  Returns (new carry, out_i).
    """

    features: int = 64
    num_blocks: int = 7
    max_residue_magnitude: float = 10.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _align(self, prev, prev2, flow_prev, feat_current, flow_n1, i):
        """Second-order flow-guided deformable alignment of the two previous outputs (step i >= 1)."""
        cond_n1 = warp(prev, flow_n1)
        # second-order terms; at step 1 feat_n2 (= the initial zero carry), flow_n2 and cond_n2 are 0
        flow_n2 = flow_n1 + warp(flow_prev, flow_n1)
        if isinstance(i, int):
            flow_n2 = jnp.zeros_like(flow_n1) if i == 1 else flow_n2
        else:
            flow_n2 = jnp.where(i > 1, flow_n2, 0.0)
        cond_n2 = warp(prev2, flow_n2)
        align = SecondOrderDeformableAlignment(
            self.features,
            16,
            self.max_residue_magnitude,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="deform_align",
        )
        return align(
            jnp.concatenate([prev, prev2], axis=-1),
            jnp.concatenate([cond_n1, feat_current, cond_n2], axis=-1),
            flow_n1,
            flow_n2,
        )

    @nn.compact
    def __call__(self, carry, x):
        prev, prev2, flow_prev, i = carry
        feat_current, others, flow_n1 = x
        operands = (prev, prev2, flow_prev, feat_current, flow_n1, i)
        if isinstance(i, int):  # unrolled loop: the step index is static
            feat_prop = prev if i == 0 else self._align(*operands)
        elif self.is_initializing():
            feat_prop = self._align(*operands)
        else:  # scanned: no alignment at step 0 (feat_prop stays the zero carry), without computing it
            feat_prop = nn.cond(i > 0, lambda mdl, *a: mdl._align(*a), lambda mdl, *a: a[0], self, *operands)
        parts = [feat_current, *others, feat_prop]
        out = feat_prop + ResidualBlocksWithInputConv(
            self.features, self.num_blocks, self.dtype, self.param_dtype, name="backbone"
        )(jnp.concatenate(parts, axis=-1))
        return (out, prev, flow_n1, i + 1), out


class _ReconstructionCell(nn.Module):
    """Per-frame reconstruction: (carry, (five (N,h,w,C) features, lq (N,h,w,3))) -> (carry, hr)."""

    features: int = 64
    scale: int = 4
    is_low_res_input: bool = True
    hr_channels: int = 64
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, carry, x):
        feats, lq = x
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        hr = ResidualBlocksWithInputConv(self.features, 5, name="reconstruction", **kw)(jnp.concatenate(feats, -1))
        hr = leaky_relu(PixelShufflePack(self.features, 2, name="upsample1", **kw)(hr), 0.1)
        if self.scale == 4:
            hr = leaky_relu(PixelShufflePack(self.hr_channels, 2, name="upsample2", **kw)(hr), 0.1)
        hr = leaky_relu(Conv2d(self.hr_channels, 3, padding=1, name="conv_hr", **kw)(hr), 0.1)
        hr = Conv2d(3, 3, padding=1, name="conv_last", **kw)(hr).astype(jnp.float32)
        lq = lq.astype(jnp.float32)
        if self.is_low_res_input:
            hr = hr + interpolate(lq, scale_factor=self.scale, mode="bilinear", align_corners=False)
        else:
            hr = hr + lq
        return carry, hr


def mirror_extended(lqs) -> bool:
    """The official ``check_if_mirror_extended`` on concrete frames (numpy / concrete jax arrays)."""
    a = np.asarray(lqs)
    t = a.shape[1]
    if t % 2:
        return False
    return bool(np.array_equal(a[:, : t // 2], a[:, t // 2 :][:, ::-1]))


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


class BasicVSRPlusPlus(nn.Module):
    """BasicVSR++ generator.  See the module docstring for the call convention and options."""

    mid_channels: int = 64
    num_blocks: int = 7
    max_residue_magnitude: float = 10.0
    is_low_res_input: bool = True
    scale: int = 4
    spynet_variant: str = "mmagic"
    use_scan: bool = True
    # width of the full-resolution layers (upsample2 output, conv_hr); the official net fixes it at 64.
    # Smaller values are a training-recipe option for cheap CPU smoke runs (configs/basicvsr_pp.py:tiny).
    hr_channels: int = 64
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def output_scale(self) -> int:
        """Output size / input size: ``scale`` for LR input, 1 for restoration (``is_low_res_input=False``)."""
        return self.scale if self.is_low_res_input else 1

    def check_input(self, shape) -> None:
        """Raise ValueError unless ``shape`` = (B, T, h, w, 3) is valid for this configuration."""
        if len(shape) != 5 or shape[-1] != 3:
            raise ValueError(f"BasicVSR++: lqs must be (B, T, h, w, 3) RGB, got shape {tuple(shape)}")
        if self.scale not in SCALES:
            raise ValueError(f"BasicVSR++: scale must be one of {SCALES}, got {self.scale}")
        if not self.is_low_res_input and self.scale != 4:
            raise ValueError(
                "BasicVSR++: is_low_res_input=False (same-size restoration) uses the x4 "
                f"feature down/up-sampling; scale must be 4, got {self.scale}"
            )
        _, t, h, w, _ = shape
        if t < 1:
            raise ValueError("BasicVSR++: the clip has no frames")
        if self.is_low_res_input:
            fh, fw = h, w
        else:
            if h % 4 or w % 4:
                raise ValueError(f"BasicVSR++ (is_low_res_input=False): h and w must be multiples of 4, got {h}x{w}")
            fh, fw = h // 4, w // 4
        if fh < MIN_FLOW_SIZE or fw < MIN_FLOW_SIZE:
            what = "frames" if self.is_low_res_input else "frames / 4"
            raise ValueError(
                f"BasicVSR++: the low-resolution {what} used for SPyNet must be at least "
                f"{MIN_FLOW_SIZE}x{MIN_FLOW_SIZE}, got {fh}x{fw} (pad the input; "
                "peanut_jax.pipeline.upscale pads automatically)"
            )

    @nn.compact
    def __call__(self, lqs, is_mirror_extended: bool | None = None):
        self.check_input(lqs.shape)
        b, t, h, w, _ = lqs.shape
        c = self.mid_channels
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        lqs = lqs.astype(jnp.float32)
        frames = lqs.reshape(b * t, h, w, 3)

        if self.is_low_res_input:
            lqs_ds = lqs
            feats = ResidualBlocksWithInputConv(c, 5, name="feat_extract", **kw)(frames)
        else:
            lqs_ds = interpolate(frames, scale_factor=0.25, mode="bicubic").reshape(b, t, h // 4, w // 4, 3)
            feats = _StridedFeatExtract(c, name="feat_extract", **kw)(frames)
        hf, wf = feats.shape[1:3]
        spatial = feats.reshape(b, t, hf, wf, c)
        self.sow("intermediates", "spatial_features", spatial)

        # optical flow on the low-resolution frames
        spynet = SPyNet(variant=self.spynet_variant, **kw, name="spynet")
        if t > 1:
            if is_mirror_extended is None:
                is_mirror_extended = mirror_extended(lqs) if _is_concrete(lqs) else False
            l1 = lqs_ds[:, :-1].reshape(b * (t - 1), hf, wf, 3)
            l2 = lqs_ds[:, 1:].reshape(b * (t - 1), hf, wf, 3)
            if is_mirror_extended:
                flows_backward = spynet(l1, l2).reshape(b, t - 1, hf, wf, 2)
                flows_forward = flows_backward[:, ::-1]
            else:
                both = spynet(jnp.concatenate([l1, l2]), jnp.concatenate([l2, l1]))
                flows_backward = both[: b * (t - 1)].reshape(b, t - 1, hf, wf, 2)
                flows_forward = both[b * (t - 1) :].reshape(b, t - 1, hf, wf, 2)
        else:
            if self.is_initializing():  # create the SPyNet parameters even for 1-frame init calls
                spynet(lqs_ds[:, 0], lqs_ds[:, 0])
            flows_backward = flows_forward = jnp.zeros((b, 0, hf, wf, 2), jnp.float32)
        self.sow("intermediates", "flows_backward", flows_backward)
        self.sow("intermediates", "flows_forward", flows_forward)

        zero_flow = jnp.zeros((b, 1, hf, wf, 2), jnp.float32)
        branch_feats: dict[str, jax.Array] = {}
        for name in BRANCHES:
            backward = name.startswith("backward")
            # per-frame flow pulling the previously visited frame onto frame idx
            if backward:  # frame idx+1 -> idx: flows_backward[idx]
                flow_in = jnp.concatenate([flows_backward, zero_flow], axis=1)
            else:  # frame idx-1 -> idx: flows_forward[idx-1]
                flow_in = jnp.concatenate([zero_flow, flows_forward], axis=1)
            others = tuple(branch_feats.values())  # concatenated per frame inside the cell: no (T, 3C) copies
            branch_feats[name] = self._propagate(name, spatial, others, flow_in, reverse=backward)
            self.sow("intermediates", f"propagate_{name}", branch_feats[name])

        recon_kw = dict(
            features=c,
            scale=self.scale,
            is_low_res_input=self.is_low_res_input,
            hr_channels=self.hr_channels,
            name="recon",
            **kw,
        )
        hr_in_t = tuple(jnp.swapaxes(f, 0, 1) for f in [spatial] + [branch_feats[k] for k in BRANCHES])  # (T, B, ..)
        lq_t = jnp.swapaxes(lqs, 0, 1)
        if self.use_scan:
            cell = nn.scan(
                _ReconstructionCell, variable_broadcast="params", split_rngs={"params": False}, in_axes=0, out_axes=0
            )(**recon_kw)
            _, out = cell(None, (hr_in_t, lq_t))
        else:
            cell = _ReconstructionCell(**recon_kw)
            out = jnp.stack([cell(None, (tuple(f[i] for f in hr_in_t), lq_t[i]))[1] for i in range(t)])
        return jnp.swapaxes(out, 0, 1)

    def _propagate(self, name, spatial, others, flow_in, reverse: bool):
        b, t, hf, wf, c = spatial.shape
        cell_kw = dict(
            features=c,
            num_blocks=self.num_blocks,
            max_residue_magnitude=self.max_residue_magnitude,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )
        zeros = jnp.zeros((b, hf, wf, c), self.dtype)
        zf = jnp.zeros((b, hf, wf, 2), jnp.float32)
        spatial_t = jnp.swapaxes(spatial, 0, 1).astype(self.dtype)
        others_t = tuple(jnp.swapaxes(o, 0, 1).astype(self.dtype) for o in others)
        flow_t = jnp.swapaxes(flow_in, 0, 1)
        if self.use_scan:
            cell = nn.scan(
                _PropagationCell,
                variable_broadcast="params",
                split_rngs={"params": False},
                in_axes=0,
                out_axes=0,
                reverse=reverse,
            )(**cell_kw)
            _, outs = cell((zeros, zeros, zf, jnp.asarray(0, jnp.int32)), (spatial_t, others_t, flow_t))
        else:
            cell = _PropagationCell(**cell_kw)
            carry = (zeros, zeros, zf, 0)
            order = range(t - 1, -1, -1) if reverse else range(t)
            outs = [None] * t
            for idx in order:
                carry, outs[idx] = cell(carry, (spatial_t[idx], tuple(o[idx] for o in others_t), flow_t[idx]))
            outs = jnp.stack(outs)
        return jnp.swapaxes(outs, 0, 1)


class _StridedFeatExtract(nn.Module):
    """``is_low_res_input=False`` feature extractor: conv s2, LReLU, conv s2, LReLU, residual stack."""

    features: int = 64
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = leaky_relu(Conv2d(self.features, 3, stride=2, padding=1, name="conv_0", **kw)(x), 0.1)
        x = leaky_relu(Conv2d(self.features, 3, stride=2, padding=1, name="conv_1", **kw)(x), 0.1)
        return ResidualBlocksWithInputConv(self.features, 5, name="blocks", **kw)(x)
