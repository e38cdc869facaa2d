"""SAM 2's mask decoder (``sam_mask_decoder``), NHWC, with the flags every official SAM 2 / 2.1 config
sets: object-score token and 3-layer MLP head, sigmoid IoU head, high-resolution features.

Output tokens ``[obj_score_token, iou_token, mask_tokens x 4]`` are prepended to the sparse prompt
tokens; the dense prompt is added to the image embedding; ``TwoWayTransformer``; upscaling
``GELU(LN2d(ConvT2x2(src) + s8')) -> GELU(ConvT2x2(.) + s4')`` (LN2d eps 1e-6);
``masks[m] = hypernet_m(mask_token_m) . upscaled`` (4 masks at 4x the embedding size); IoU head
(sigmoid) on the IoU token, object-score MLP on the object-score token.

Selection (``MaskDecoder.forward``): ``multimask_output`` -> masks 1..3; otherwise, with
``cfg.dynamic_multimask_via_stability`` (inference), mask 0 unless its stability score
``#(logit > delta) / #(logit > -delta)`` (1 when the denominator is 0) is below ``thresh``, in which
case the multimask output with the highest predicted IoU (first on ties); otherwise mask 0.  The
choice is data-dependent and done with ``jnp.where`` (jit-safe).  ``sam_tokens_out`` is the
multimask tokens 1..3 when ``multimask_output`` and ``use_multimask_token_for_obj_ptr`` (true in
every official config), else token 0.

``conv_s0`` / ``conv_s1`` (1x1, d -> d/8 and d -> d/4) belong to this module in the checkpoint but
are applied by ``SAM2Base.forward_image`` to the stride-4 / stride-8 FPN levels: call
``high_res_features(fpn_s4, fpn_s8)`` (method) for them.

The IoU head's hidden width is the official constant 256 = ``cfg.d_model`` of every official size;
this port uses ``cfg.d_model`` so that small test configs stay small.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from peanut_jax.layers.conv import Conv2d, ConvTranspose2d
from peanut_jax.layers.linear import layer_norm
from peanut_jax.models.sam2.config import SAM2Config
from peanut_jax.models.sam2.two_way_transformer import MLP, TwoWayTransformer

Dtype = Any


def stability_scores(mask_logits, delta: float):
    """(..., H, W) logits -> (...,) ``#(logit > delta) / #(logit > -delta)``, 1 where the union is 0."""
    flat = mask_logits.reshape(*mask_logits.shape[:-2], -1)
    area_i = jnp.sum(flat > delta, axis=-1).astype(jnp.float32)
    area_u = jnp.sum(flat > -delta, axis=-1).astype(jnp.float32)
    return jnp.where(area_u > 0, area_i / jnp.maximum(area_u, 1.0), 1.0)


def dynamic_multimask_via_stability(all_masks, all_iou, delta: float, thresh: float):
    """``MaskDecoder._dynamic_multimask_via_stability``: (B, 4, H, W), (B, 4) ->
    (masks (B, 1, H, W), iou (B, 1), index (B,) int32 of the chosen output token, 0..3)."""
    best = jnp.argmax(all_iou[:, 1:], axis=-1) + 1  # first max, like torch
    stable = stability_scores(all_masks[:, 0], delta) >= thresh
    idx = jnp.where(stable, 0, best).astype(jnp.int32)
    masks = jnp.take_along_axis(all_masks, idx[:, None, None, None], axis=1)
    iou = jnp.take_along_axis(all_iou, idx[:, None], axis=1)
    return masks, iou, idx


class MaskDecoder(nn.Module):
    cfg: SAM2Config
    use_multimask_token_for_obj_ptr: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        cfg, d = self.cfg, self.cfg.d_model
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        n_masks = cfg.num_multimask_outputs + 1
        emb = nn.initializers.normal(1.0)
        self.obj_score_token = self.param("obj_score_token", emb, (1, d), self.param_dtype)
        self.iou_token = self.param("iou_token", emb, (1, d), self.param_dtype)
        self.mask_tokens = self.param("mask_tokens", emb, (n_masks, d), self.param_dtype)
        self.transformer = TwoWayTransformer(
            cfg.decoder_depth, d, cfg.decoder_heads, cfg.decoder_mlp_dim, cfg.attention_downsample_rate, **kw
        )
        self.output_upscaling_0 = ConvTranspose2d(d // 4, 2, 2, 0, **kw)
        self.output_upscaling_1 = layer_norm(1e-6, **kw)
        self.output_upscaling_3 = ConvTranspose2d(d // 8, 2, 2, 0, **kw)
        self.conv_s0 = Conv2d(d // 8, 1, **kw)
        self.conv_s1 = Conv2d(d // 4, 1, **kw)
        self.output_hypernetworks_mlps = [MLP(d, d // 8, 3, **kw) for _ in range(n_masks)]
        self.iou_prediction_head = MLP(d, n_masks, cfg.iou_head_depth, sigmoid_output=True, **kw)
        self.pred_obj_score_head = MLP(d, 1, 3, **kw)

    def high_res_features(self, fpn_s4, fpn_s8):
        """``conv_s0(fpn_s4)`` (B, 4h, 4w, d/8), ``conv_s1(fpn_s8)`` (B, 2h, 2w, d/4)."""
        return self.conv_s0(fpn_s4), self.conv_s1(fpn_s8)

    def predict_masks(
        self,
        image_embeddings,
        image_pe,
        sparse,
        dense,
        repeat_image: bool = False,
        high_res_features=None,
        sparse_mask=None,
    ):
        """All 4 outputs: (masks (B, 4, 4h, 4w), iou (B, 4), mask tokens (B, 4, d), object logits (B, 1))."""
        d = self.cfg.d_model
        n_masks = self.cfg.num_multimask_outputs + 1
        b = sparse.shape[0]
        out_tokens = jnp.concatenate([self.obj_score_token, self.iou_token, self.mask_tokens], 0).astype(self.dtype)
        tokens = jnp.concatenate(
            [jnp.broadcast_to(out_tokens[None], (b, *out_tokens.shape)), sparse.astype(self.dtype)], axis=1
        )
        token_mask = None
        if sparse_mask is not None:
            token_mask = jnp.concatenate([jnp.ones((b, out_tokens.shape[0]), bool), sparse_mask.astype(bool)], 1)
        src = image_embeddings.astype(self.dtype)
        if repeat_image:
            src = jnp.repeat(src, b, axis=0)
        src = src + dense.astype(self.dtype)
        _, h, w, _ = src.shape
        pos = image_pe.astype(self.dtype).reshape(-1, h, w, d)

        hs, src = self.transformer(src, pos, tokens, token_mask)
        iou_token_out = hs[:, 1]
        mask_tokens_out = hs[:, 2 : 2 + n_masks]

        src = src.reshape(src.shape[0], h, w, d)
        gelu = lambda t: jax.nn.gelu(t, approximate=False)  # noqa: E731
        up = self.output_upscaling_0(src)
        if high_res_features is not None:
            feat_s0, feat_s1 = high_res_features
            up = gelu(self.output_upscaling_1(up + feat_s1.astype(self.dtype)))
            up = gelu(self.output_upscaling_3(up) + feat_s0.astype(self.dtype))
        else:
            up = gelu(self.output_upscaling_3(gelu(self.output_upscaling_1(up))))

        hyper_in = jnp.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], axis=1
        )  # (B, 4, d/8)
        masks = jnp.einsum("bmc,bhwc->bmhw", hyper_in, up)
        iou_pred = self.iou_prediction_head(iou_token_out)
        object_score_logits = self.pred_obj_score_head(hs[:, 0])
        return masks, iou_pred, mask_tokens_out, object_score_logits

    def __call__(
        self,
        image_embeddings,
        image_pe,
        sparse,
        dense,
        multimask_output: bool,
        repeat_image: bool = False,
        high_res_features=None,
        sparse_mask=None,
    ):
        """``MaskDecoder.forward``: image_embeddings (B|1, h, w, d), image_pe (h, w, d) or (1, h, w, d),
        sparse (B, N, d), dense (B, h, w, d), ``multimask_output`` / ``repeat_image`` static bools,
        high_res_features (s4' (B, 4h, 4w, d/8), s8' (B, 2h, 2w, d/4)) or None; ``sparse_mask``
        (B, N) bool (not official: False hides a sparse token from every attention).
        -> (masks (B, M, 4h, 4w), iou (B, M), sam_tokens_out (B, M', d), object_score_logits (B, 1)),
        M = 3 if ``multimask_output`` else 1."""
        if self.is_initializing():  # create conv_s0 / conv_s1 with the rest
            d = self.cfg.d_model
            self.high_res_features(jnp.zeros((1, 1, 1, d), self.dtype), jnp.zeros((1, 1, 1, d), self.dtype))
        masks, iou, mask_tokens_out, obj = self.predict_masks(
            image_embeddings, image_pe, sparse, dense, repeat_image, high_res_features, sparse_mask
        )
        if multimask_output:
            masks, iou = masks[:, 1:], iou[:, 1:]
        elif self.cfg.dynamic_multimask_via_stability:
            masks, iou, _ = dynamic_multimask_via_stability(
                masks, iou, self.cfg.dynamic_multimask_stability_delta, self.cfg.dynamic_multimask_stability_thresh
            )
        else:
            masks, iou = masks[:, :1], iou[:, :1]
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            tokens_out = mask_tokens_out[:, 1:]
        else:
            tokens_out = mask_tokens_out[:, :1]
        return masks, iou, tokens_out, obj
