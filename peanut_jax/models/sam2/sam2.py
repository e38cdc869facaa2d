"""SAM 2 / 2.1 (``SAM2Base`` in eval mode) as pure Flax methods over a leading object axis.

The official model keeps the memory bank in Python dicts inside the call; here every method is a
pure function of arrays, and the caller (``peanut_jax.pipeline.sam2``) decides which memories a
frame sees.  Pieces:

- ``encode_image(images)``: Hiera + FPN, then ``conv_s0``/``conv_s1`` on the two high-resolution
  levels (``forward_image``).  Returns NHWC maps; ``vision`` is the stride-16 map.
- ``sam_heads(...)``: prompt encoder + mask decoder + object-score gating + object pointer
  (``_forward_sam_heads``); ``mask_as_output(...)`` for mask prompts (``_use_mask_as_output``).
- ``condition_on_memory(...)``: memory attention over a FIXED set of memory slots with validity
  masks (``_prepare_memory_conditioned_features``); ``add_no_memory`` for initial frames.
- ``encode_memory(...)``: memory encoder + ``no_obj_embed_spatial`` (``_encode_new_memory``).
- ``track(...)``: one propagation step (memory conditioning, multimask heads, memory encoding).

Mask logits are (B, 4h, 4w) at 1/4 of the input size (256x256 at 1024); images are NHWC.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from peanut_jax.layers.conv import Conv2d
from peanut_jax.layers.linear import linear
from peanut_jax.models.sam2.config import SAM2Config, get_config
from peanut_jax.models.sam2.image_encoder import ImageEncoder
from peanut_jax.models.sam2.mask_decoder import MaskDecoder
from peanut_jax.models.sam2.memory_attention import MemoryAttention
from peanut_jax.models.sam2.memory_encoder import MemoryEncoder
from peanut_jax.models.sam2.position_encoding import sine_1d, sine_2d
from peanut_jax.models.sam2.prompt_encoder import PromptEncoder
from peanut_jax.models.sam2.two_way_transformer import MLP
from peanut_jax.ops import interpolate

Dtype = Any
NO_OBJ_SCORE = -1024.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MASK_OUT_SCALE, MASK_OUT_BIAS = 20.0, -10.0  # _use_mask_as_output: binary mask -> +-10 logits


def _trunc_normal(std: float = 0.02):
    return nn.initializers.truncated_normal(std)


def normalize(images01, dtype=jnp.float32):
    """RGB in [0, 1] (..., 3) -> ImageNet-normalised (``Normalize(mean, std)``)."""
    x = (images01.astype(jnp.float32) - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(
        IMAGENET_STD, jnp.float32
    )
    return x.astype(dtype)


def normalize_u8(images_u8, dtype=jnp.float32):
    """uint8 RGB (..., 3) -> ImageNet-normalised float (``ToTensor`` + ``Normalize``)."""
    return normalize(images_u8.astype(jnp.float32) / 255.0, dtype)


def downsample_antialias(x, factor: int):
    """torch ``interpolate(bilinear, antialias=True)`` by an integer factor, (B, H, W) maps."""
    b, h, w = x.shape
    return jax.image.resize(x, (b, h // factor, w // factor), method="linear", antialias=True)


class SAM2(nn.Module):
    cfg: SAM2Config = SAM2Config()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        cfg, kw = self.cfg, dict(dtype=self.dtype, param_dtype=self.param_dtype)
        d, mem = cfg.d_model, cfg.mem_dim
        self.image_encoder = ImageEncoder(cfg, **kw)
        self.sam_prompt_encoder = PromptEncoder(cfg, **kw)
        self.sam_mask_decoder = MaskDecoder(cfg, **kw)
        self.memory_encoder = MemoryEncoder(cfg, **kw)
        self.memory_attention = MemoryAttention(cfg, **kw)
        self.obj_ptr_proj = MLP(d, d, 3, **kw)
        if cfg.proj_tpos_enc_in_obj_ptrs:
            self.obj_ptr_tpos_proj = linear(mem, d, **kw)
        self.mask_downsample = Conv2d(1, kernel_size=4, stride=4, **kw)
        p = self.param_dtype
        self.maskmem_tpos_enc = self.param("maskmem_tpos_enc", _trunc_normal(), (cfg.num_maskmem, mem), p)
        self.no_mem_embed = self.param("no_mem_embed", _trunc_normal(), (d,), p)
        self.no_mem_pos_enc = self.param("no_mem_pos_enc", _trunc_normal(), (d,), p)
        self.no_obj_ptr = self.param("no_obj_ptr", _trunc_normal(), (d,), p)
        if cfg.no_obj_embed_spatial:
            self.no_obj_embed_spatial_param = self.param("no_obj_embed_spatial", _trunc_normal(), (mem,), p)

    # ------------------------------------------------------------------ image
    def encode_image(self, images):
        """Normalised images (B, S, S, 3) -> dict(high_res=(s4 (B,4h,4w,d/8), s8 (B,2h,2w,d/4)),
        vision (B, h, w, d), vision_pos (h, w, d))."""
        out = self.image_encoder(images)
        fpn, pos = out["backbone_fpn"], out["vision_pos_enc"]
        s0, s1 = self.sam_mask_decoder.high_res_features(fpn[0], fpn[1])
        return {"high_res": (s0, s1), "vision": fpn[-1], "vision_pos": jnp.reshape(pos[-1], pos[-1].shape[-3:])}

    # ------------------------------------------------------------------ SAM heads
    def sam_heads(
        self,
        pix_feat,
        high_res,
        point_coords=None,
        point_labels=None,
        mask_inputs=None,
        multimask: bool = False,
        point_mask=None,
    ):
        """``_forward_sam_heads``.  ``point_coords`` (B, N, 2) in input pixels (x, y),
        ``point_labels`` (B, N) int (-1 = no point); None = no points (one empty point, label -1,
        as official); ``mask_inputs`` (B, 4h, 4w) logits or None.
        ``point_mask`` (B, N) bool, optional: False marks padding points (static-shape buckets),
        hidden from every attention so that they change nothing (the prompt encoder's own
        trailing pad point stays, as official).

        Returns dict(low_res_multimasks (B,M,4h,4w), ious (B,M), low_res_masks (B,4h,4w),
        obj_ptr (B,d), object_score_logits (B,1), best (B,) index of the chosen mask)."""
        if point_coords is None:
            b = pix_feat.shape[0]
            point_coords, point_labels = jnp.zeros((b, 1, 2), jnp.float32), -jnp.ones((b, 1), jnp.int32)
        masks_in = None if mask_inputs is None else mask_inputs[..., None]
        sparse, dense = self.sam_prompt_encoder(points=(point_coords, point_labels), boxes=None, masks=masks_in)
        sparse_mask = None
        if point_mask is not None:
            pad = jnp.ones((point_mask.shape[0], sparse.shape[1] - point_mask.shape[1]), bool)
            sparse_mask = jnp.concatenate([point_mask.astype(bool), pad], axis=1)
        multimasks, ious, tokens, score = self.sam_mask_decoder(
            pix_feat,
            self.sam_prompt_encoder.dense_pe(),
            sparse,
            dense,
            multimask_output=multimask,
            repeat_image=False,
            high_res_features=high_res,
            sparse_mask=sparse_mask,
        )
        is_obj = score > 0  # (B, 1)
        multimasks = jnp.where(is_obj[:, :, None, None], multimasks, NO_OBJ_SCORE).astype(jnp.float32)
        b = multimasks.shape[0]
        if multimask:
            best = jnp.argmax(ious, axis=-1)
            low = jnp.take_along_axis(multimasks, best[:, None, None, None], axis=1)[:, 0]
            token = (
                jnp.take_along_axis(tokens, best[:, None, None], axis=1)[:, 0] if tokens.shape[1] > 1 else tokens[:, 0]
            )
        else:
            best = jnp.zeros((b,), jnp.int32)
            low, token = multimasks[:, 0], tokens[:, 0]
        obj_ptr = self._gate_ptr(self.obj_ptr_proj(token), is_obj.astype(jnp.float32))
        return {
            "low_res_multimasks": multimasks,
            "ious": ious,
            "low_res_masks": low,
            "obj_ptr": obj_ptr,
            "object_score_logits": score,
            "best": best,
        }

    def _gate_ptr(self, obj_ptr, lam):
        # fixed_no_obj_ptr (both released versions): a hard switch to the learned no-object pointer
        return lam * obj_ptr + (1.0 - lam) * self.no_obj_ptr.astype(obj_ptr.dtype)

    def mask_as_output(self, pix_feat, high_res, masks):
        """``_use_mask_as_output``: binary ``masks`` (B, S, S) at the input size -> the same dict
        as ``sam_heads`` (the pointer still comes from the SAM heads on ``mask_downsample(mask)``)."""
        m = masks.astype(jnp.float32)
        high = m * MASK_OUT_SCALE + MASK_OUT_BIAS
        low = downsample_antialias(high, 4)
        b = m.shape[0]
        heads = self.sam_heads(pix_feat, high_res, mask_inputs=self.mask_downsample(m[..., None])[..., 0])
        lam = jnp.any(m.reshape(b, -1) > 0, axis=1, keepdims=True).astype(jnp.float32)
        score = MASK_OUT_SCALE * lam + MASK_OUT_BIAS
        return {
            "low_res_multimasks": low[:, None],
            "ious": jnp.ones((b, 1), jnp.float32),
            "low_res_masks": low,
            "obj_ptr": self._gate_ptr(heads["obj_ptr"], lam),
            "object_score_logits": score,
            "best": jnp.zeros((b,), jnp.int32),
        }

    # ------------------------------------------------------------------ memory
    def add_no_memory(self, vision):
        """Initial conditioning frame: ``pix = vision + no_mem_embed`` (directly_add_no_mem_embed)."""
        return vision + self.no_mem_embed.astype(vision.dtype)

    def memory_pos(self, tpos_index):
        """Position encoding of spatial memory slots: the memory encoder's sine encoding plus
        ``maskmem_tpos_enc[tpos_index]``; (B, S) int -> (B, S, h, w, mem)."""
        cfg = self.cfg
        h = cfg.embedding_size
        base = sine_2d(h, h, cfg.mem_dim)
        return base[None, None] + self.maskmem_tpos_enc[tpos_index][:, :, None, None, :]

    def pointer_pos(self, rel_pos, t_diff_max):
        """Temporal encoding of object pointers: ``rel_pos`` (B, P) signed frame distances ->
        (B, P, mem) (zeros for 2.0, which has no pointer temporal encoding)."""
        cfg = self.cfg
        if not cfg.add_tpos_enc_to_obj_ptrs:
            return jnp.zeros((*rel_pos.shape, cfg.mem_dim), jnp.float32)
        tpos_dim = cfg.d_model if cfg.proj_tpos_enc_in_obj_ptrs else cfg.mem_dim
        pe = sine_1d(rel_pos.astype(jnp.float32) / t_diff_max, tpos_dim)
        return self.obj_ptr_tpos_proj(pe) if cfg.proj_tpos_enc_in_obj_ptrs else pe

    def condition_on_memory(
        self,
        vision,
        vision_pos,
        memory,
        memory_tpos,
        memory_valid,
        ptrs,
        ptr_rel_pos,
        ptr_valid,
        t_diff_max,
        deterministic: bool = True,
    ):
        """Memory attention of the current frame over fixed memory slots.

        vision (B, h, w, d), vision_pos (h, w, d); memory (B, S, h, w, mem) maskmem features (bf16
        in the video state, read as float32), memory_tpos (B, S) int indices into
        ``maskmem_tpos_enc`` (``num_maskmem - t_pos - 1``), memory_valid (B, S) bool; ptrs (B, P, d)
        object pointers, ptr_rel_pos (B, P) their signed temporal offsets, ptr_valid (B, P) bool;
        ``t_diff_max`` = ``min(num_frames, 16) - 1``.  Invalid slots are masked out of attention,
        which equals the official concatenation of the valid ones.  ``deterministic=False`` turns
        on the memory attention's training dropout (rng stream ``'dropout'``).  Returns (B, h, w, d).
        """
        cfg = self.cfg
        b, h, w, d = vision.shape
        mem = cfg.mem_dim
        s = memory.shape[1]
        mem_tokens = memory.astype(jnp.float32).reshape(b, s * h * w, mem)
        mem_pos = self.memory_pos(memory_tpos).reshape(b, s * h * w, mem)
        mem_valid = jnp.repeat(memory_valid, h * w, axis=1)
        p = ptrs.shape[1]
        k = d // mem
        # each pointer splits into d/mem tokens (pointer-major), its encoding repeated per token
        ptr_tokens = ptrs.astype(jnp.float32).reshape(b, p * k, mem)
        ptr_pos = jnp.repeat(self.pointer_pos(ptr_rel_pos, t_diff_max), k, axis=1)
        keys = jnp.concatenate([mem_tokens, ptr_tokens], axis=1)
        keys_pos = jnp.concatenate([mem_pos, ptr_pos.astype(mem_pos.dtype)], axis=1)
        valid = jnp.concatenate([mem_valid, jnp.repeat(ptr_valid, k, axis=1)], axis=1)
        curr = vision.reshape(b, h * w, d)
        curr_pos = jnp.broadcast_to(vision_pos.reshape(1, h * w, d), (b, h * w, d))
        out = self.memory_attention(
            curr, curr_pos, keys, keys_pos, num_obj_ptr_tokens=p * k, memory_valid=valid, deterministic=deterministic
        )
        return out.reshape(b, h, w, d)

    def encode_memory(self, vision, high_res_masks, object_score_logits, binarize):
        """``_encode_new_memory``: vision (B, h, w, d) raw stride-16 features, high_res_masks
        (B, S, S) logits, object_score_logits (B, 1); ``binarize`` (bool or (B,) bool) uses ``>0``
        instead of sigmoid (point-prompted frames).  Returns maskmem features (B, h, w, mem)."""
        cfg = self.cfg
        binarize = jnp.broadcast_to(jnp.asarray(binarize), high_res_masks.shape[:1])[:, None, None]
        m = jnp.where(binarize, (high_res_masks > 0).astype(jnp.float32), jax.nn.sigmoid(high_res_masks))
        m = m * cfg.sigmoid_scale_for_mem_enc + cfg.sigmoid_bias_for_mem_enc
        feats, _ = self.memory_encoder(vision, m[..., None], skip_mask_sigmoid=True)
        if cfg.no_obj_embed_spatial:
            is_obj = (object_score_logits > 0).astype(feats.dtype)[:, :, None, None]  # (B,1,1,1)
            feats = feats + (1.0 - is_obj) * self.no_obj_embed_spatial_param.astype(feats.dtype)
        return feats

    def upsample_masks(self, low_res):
        """(B, 4h, 4w) logits -> (B, S, S), bilinear, align_corners=False (no antialias)."""
        s = self.cfg.image_size
        return interpolate(low_res[..., None], size=(s, s), mode="bilinear", align_corners=False)[..., 0]

    # ------------------------------------------------------------------ one tracking step
    def track(
        self, high_res, vision, vision_pos, memory, memory_tpos, memory_valid, ptrs, ptr_rel_pos, ptr_valid, t_diff_max
    ):
        """A propagated (non-prompted) frame for B objects sharing one image encoding: memory
        conditioning, multimask SAM heads (0 points), memory encoding of the sigmoid mask.
        ``high_res``/``vision`` may have batch 1 (broadcast over objects)."""
        b = memory.shape[0]
        vision_b = jnp.broadcast_to(vision, (b, *vision.shape[1:]))
        high_res_b = tuple(jnp.broadcast_to(x, (b, *x.shape[1:])) for x in high_res)
        pix = self.condition_on_memory(
            vision_b, vision_pos, memory, memory_tpos, memory_valid, ptrs, ptr_rel_pos, ptr_valid, t_diff_max
        )
        out = self.sam_heads(pix, high_res_b, multimask=True)
        high = self.upsample_masks(out["low_res_masks"])
        out["maskmem_features"] = self.encode_memory(vision_b, high, out["object_score_logits"], False)
        return out

    def build_kwargs(self) -> dict:
        """Arguments of ``models.build("sam2", **kwargs)`` that rebuild this module (the weights cache
        records them; tuples become JSON lists and come back as tuples)."""
        import dataclasses

        cfg = self.cfg
        ref = get_config(cfg.size, cfg.version)
        out = {"size": cfg.size, "version": cfg.version}
        out.update(
            {
                f.name: getattr(cfg, f.name)
                for f in dataclasses.fields(cfg)
                if f.name not in ("size", "version", "hiera") and getattr(cfg, f.name) != getattr(ref, f.name)
            }
        )
        if cfg.hiera != ref.hiera:
            raise ValueError("a SAM 2 module with a non-standard Hiera cannot be described by build arguments")
        return out

    def __call__(self, images):
        """Initialise every parameter: image encoding, heads on a prompt, memory, one track step."""
        cfg = self.cfg
        feats = self.encode_image(images)
        b = images.shape[0]
        pix = self.add_no_memory(feats["vision"])
        pts = jnp.zeros((b, 1, 2), jnp.float32), jnp.ones((b, 1), jnp.int32)
        out = self.sam_heads(pix, feats["high_res"], *pts, multimask=True)
        m = jnp.zeros((b, cfg.image_size, cfg.image_size), jnp.float32)
        self.mask_as_output(pix, feats["high_res"], m)
        mem = self.encode_memory(
            feats["vision"], self.upsample_masks(out["low_res_masks"]), out["object_score_logits"], True
        )
        return self.track(
            feats["high_res"],
            feats["vision"],
            feats["vision_pos"],
            mem[:, None],
            jnp.zeros((b, 1), jnp.int32),
            jnp.ones((b, 1), bool),
            out["obj_ptr"][:, None],
            jnp.ones((b, 1), jnp.float32),
            jnp.ones((b, 1), bool),
            1.0,
        )


def build_sam2(
    size: str = "tiny", version: str = "2.1", dtype=jnp.float32, param_dtype=jnp.float32, **overrides
) -> SAM2:
    """``models.build("sam2", size=..., version=...)``; ``overrides`` are SAM2Config fields."""
    return SAM2(get_config(size, version, **overrides), dtype=dtype, param_dtype=param_dtype)
