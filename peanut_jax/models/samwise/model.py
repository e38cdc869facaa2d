"""SAMWISE (CVPR 2025): SAM 2 + RoBERTa fused by CMT adapters, as pure Flax methods.

Data flow for one clip of T frames (<= 8 in the released setting) and P prompts (batched):

1. ``encode_clip``: Hiera patch/position embedding and stage 1 run once for the clip (shared by
   the prompts); then Hiera stages 2..4 and RoBERTa layer groups ``(0,1), (1,4), (4,8), (8,12)``
   run in lockstep, each pair followed by a CMT adapter whose outputs are added to both streams
   (``_early_fusion_stage``).  The four stage maps go through SAM 2's FPN neck and
   ``conv_s0``/``conv_s1``; the prompt's state is RoBERTa's ``<s>`` token after the last group.
2. ``frame_step`` (``lax.scan`` over the frames via ``nn.scan``): memory attention over a bounded
   bank (the 6 previous frames' maskmem features + 15 previous object pointers, fixed slots with
   validity flags; frame 0 of a video uses ``vision + no_mem_embed``), SAM heads with the sparse
   prompt ``[not_a_point, not_a_point, project_text(state)]`` and ``multimask_output=False``,
   object-score gating, object pointer; optional CME (every ``cme_window`` frames at most: a
   memory-less decode, the CME decides whether to re-weight the high-res logits that are written
   to memory; the frame's own output is unchanged); memory encoding of the sigmoid mask.
3. ``postprocess``: low-res logits -> bilinear to the padded square -> crop -> bilinear to the
   output size (``postprocess_masks``).

Static shapes, no host round trip per frame.  A clip that starts from an empty bank (``__call__``,
``forward_clips``, a video's first clip in the predictor: ``run_clip(fresh=True)``) runs its frames
unrolled, frame f attending only the min(f, 6) memories and min(f, 15) pointers it has (frame 0
none), as official; later clips scan over the frames with the full fixed-slot bank, where the with-
and without-memory paths are both computed and selected with ``jnp.where``.  The CME's memory-less
decode is one small mask-decoder pass per frame, computed on every frame when the CME is on.

``__call__(frames, input_ids, padding_mask)`` runs one clip with a fresh bank: frames (T, h, w, 3)
ImageNet-normalised with max(h, w) <= image_size (the predictor resizes like ``Resize(1020,
max_size=1024)``), zero-padded bottom/right here; returns ``pred_masks`` (T, h, w) logits for one
prompt ((P, T, h, w) for several) plus the per-frame heads outputs (T, P, ...).

Training (``SAMWISE(cfg, train=True)``, official ``model.train()``; default ``train=False`` is the
inference behaviour above, unchanged): ``forward_clips(frames (B, T, h, w, 3), input_ids (B, L))`` runs
B clips of T frames, one expression each, every clip with a fresh memory bank and memory indices
0..T-1; dropout is on in the frozen RoBERTa (0.1), the memory attention (0.1), the HSA attention
(0.1) and the CME block (0.1) (rng stream ``'dropout'``); the adapters' BatchNorm uses the batch
statistics of all B*T frames and updates ``batch_stats`` (``mutable=['batch_stats']``); masks are
not replaced by -1024 where the object score is negative (only at eval, as official); the CME
runs on the frames where it would at inference (``f > cme_window`` and ``f - last >= cme_window -
1``; in training ``last`` stays 0 since no decision is applied) on detached inputs, and returns its
logits with the memory-less masks that make its label
(``peanut_jax.losses.segmentation.same_object_labels``).  Gradients flow through the whole clip,
memory bank included.  The fields ``deterministic`` / ``use_running_average`` (default None: follow
``train``) turn either part off alone.  ``cfg.pred_obj_scores=False`` is ``--disable_pred_obj_score``
(image pretraining): object scores are the constant 10 and the pointer is not gated.

Motion prompt (``cfg.motion_prompt``, official ``--motion_prompt``; off in every released model):
every entry point takes an optional ``motion_mask`` (P, L) bool, True at the prompt's verb tokens
(:func:`peanut_jax.text.verbs.verb_token_mask`).  Official semantics (``SAMWISE.compute_backbone_output``,
``PromptEncoder._embed_motion``):

* the token states are RoBERTa's after the last layer group *and* the last CMT adapter's text update
  (the same tensor whose ``<s>`` token is the prompt's state);
* the official code concatenates the verb-token states of the caption, repeats each T times and
  frame ``idx`` takes row ``idx``: with one caption (inference) every frame gets the caption's
  **first** verb token (the first BPE piece of the first verb), never a pooled state; we take it per
  prompt.  (With several captions in a training batch the official row ``b*T + f`` does not follow
  the clips; not reproduced);
* it goes through ``project_motion_prompts`` (an MLP shaped as ``project_text``; frozen in official
  training, where ``main.py`` first copies ``project_text``'s weights into it) and is appended
  **after** the text token: ``[not_a_point, not_a_point, project_text(state),
  project_motion_prompts(verb)]`` (the two-way transformer gives sparse tokens no positions and reads
  its outputs from the output tokens, so their order changes the results only by float rounding);
* a caption without a verb gets no motion token at all (its empty row is concatenated), i.e. the
  released 3-token decode.  In a batch of prompts a prompt without a verb keeps the 4th slot hidden
  from every attention (``sparse_mask``), which is the 3-token decode up to float rounding;
  ``motion_mask=None`` runs the 3-token decode itself, bit-identical to ``motion_prompt=False``;
* the CME's memory-less decode has no motion token (official ``compute_decoder_out_no_mem``).

Parameters: ``sam`` (SAM 2 v1.0 layout), ``text_encoder`` (RoBERTa), ``cmt_adapters_{0,1,2}``,
``project_text`` (``sam.sam_prompt_encoder.project_text`` in the checkpoint),
``project_motion_prompts`` (only with ``motion_prompt``; ``sam.sam_prompt_encoder.project_motion_prompts``)
and ``conditional_memory_encoder``; ``batch_stats`` hold the adapters' BatchNorm running statistics.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from peanut_jax.models.roberta import RobertaEncoder
from peanut_jax.models.sam2.hiera import stage_cuts
from peanut_jax.models.sam2.position_encoding import sine_2d
from peanut_jax.models.sam2.sam2 import NO_OBJ_SCORE, SAM2
from peanut_jax.models.sam2.two_way_transformer import MLP, TwoWayAttentionBlock
from peanut_jax.models.samwise.adapter import CMTAdapter, ConditionalMemoryEncoder
from peanut_jax.models.samwise.config import SAMWISEConfig, get_config
from peanut_jax.ops import interpolate

Dtype = Any

__all__ = ["SAMWISE", "build_samwise", "init_bank", "pad_frames"]


def init_bank(cfg: SAMWISEConfig, num_prompts: int, dtype=jnp.float32) -> dict:
    """An empty memory bank for ``num_prompts`` prompts (the scan carry; fixed shapes).

    ``mem`` (P, R, h, w, mem_dim): slot j holds frame ``frame - R + j``; ``ptrs`` (P, Q, d) likewise;
    validity flags are shared by the prompts (they all see the same frames); ``last_switch`` (P,)
    is the frame of the last CME switch (0 at the start, as official); ``frame`` the next frame."""
    sc = cfg.sam2
    h = sc.embedding_size
    p, r, q = num_prompts, cfg.num_recent, cfg.num_pointers
    return {
        "mem": jnp.zeros((p, r, h, h, sc.mem_dim), dtype),
        "mem_valid": jnp.zeros((r,), bool),
        "ptrs": jnp.zeros((p, q, sc.d_model), jnp.float32),
        "ptr_valid": jnp.zeros((q,), bool),
        "last_switch": jnp.zeros((p,), jnp.int32),
        "frame": jnp.zeros((), jnp.int32),
    }


def pad_frames(frames, size: int):
    """(T, h, w, 3) normalised frames -> (T, size, size, 3), zeros bottom/right (``preprocess``)."""
    _, h, w, _ = frames.shape
    if h > size or w > size:
        raise ValueError(f"samwise: frames of {h}x{w} exceed the {size}x{size} input; resize them first")
    return jnp.pad(frames, ((0, 0), (0, size - h), (0, size - w), (0, 0)))


def _shift_in(buf, new, axis: int):
    """Drop the oldest slot of ``buf`` along ``axis`` and append ``new`` as the most recent."""
    head = jax.lax.slice_in_dim(buf, 1, buf.shape[axis], axis=axis)
    return jnp.concatenate([head, jnp.expand_dims(jnp.asarray(new, buf.dtype), axis)], axis=axis)


class SAMWISE(nn.Module):
    cfg: SAMWISEConfig = SAMWISEConfig()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    hiera_per_frame: bool = True  # run Hiera stages frame by frame (bounds the global-attention memory)
    train: bool = False  # official model.train(): dropout on, BatchNorm on batch statistics (see docstring)
    bn_axis_name: str | None = None  # the pmap axis BatchNorm statistics are averaged over in training
    # overrides of what ``train`` implies (None: follow ``train``): dropout off / BatchNorm on running stats
    deterministic: bool | None = None
    use_running_average: bool | None = None

    @property
    def _det(self) -> bool:
        return (not self.train) if self.deterministic is None else bool(self.deterministic)

    def setup(self):
        cfg = self.cfg.check()
        sc = cfg.sam2
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.sam = SAM2(sc, **kw)
        self.text_encoder = RobertaEncoder(
            num_layers=cfg.text_layers,
            dim=cfg.text_dim,
            heads=cfg.text_heads,
            ffn=cfg.text_ffn,
            vocab_size=cfg.vocab_size,
            max_positions=cfg.max_positions,
            **kw,
        )
        ch = sc.hiera.channels
        self.cmt_adapters = [
            CMTAdapter(
                ch[i + 1],
                cfg.text_dim,
                cfg.adapter_dim,
                cfg.adapter_heads,
                cfg.hsa_patch_sizes[i],
                cfg.hsa,
                cfg.attend_text_padding,
                use_running_average=(not self.train)
                if self.use_running_average is None
                else bool(self.use_running_average),
                deterministic=self._det,
                bn_axis_name=self.bn_axis_name,
                **kw,
            )
            for i in range(3)
        ]
        self.project_text = MLP(sc.d_model, sc.d_model, 3, **kw)
        if cfg.motion_prompt:
            self.project_motion_prompts = MLP(sc.d_model, sc.d_model, 3, **kw)
        if cfg.use_cme:
            self.conditional_memory_encoder = ConditionalMemoryEncoder(sc.d_model, cfg.cme_heads, cfg.cme_ffn, **kw)

    # ------------------------------------------------------------------ backbone + text
    def encode_clip(self, frames, input_ids, padding_mask=None, debug: bool = False, motion_mask=None):
        """frames (T, S, S, 3) padded and normalised, shared by the P prompts, or (P, T, S, S, 3), one
        clip per prompt; input_ids (P, L) -> (per-frame features, each (T, P, ...): vision, s0, s1,
        state, and with ``motion_mask`` (P, L) bool also motion (the first verb token's state) and
        motion_valid (the prompt has a verb); intermediates dict (empty unless ``debug``))."""
        cfg, sc = self.cfg, self.cfg.sam2
        det = self._det
        t = frames.shape[-4]
        ids = jnp.asarray(input_ids)
        p = ids.shape[0]
        enc, text = self.sam.image_encoder, self.text_encoder
        cuts, tc = stage_cuts(sc.hiera), cfg.text_cuts
        inter = {}
        if frames.ndim == 5 and frames.shape[0] != p:
            raise ValueError(f"samwise: {frames.shape[0]} clips for {p} expressions")
        if motion_mask is not None:
            if not cfg.motion_prompt:
                raise ValueError("samwise: motion_mask given but the model was built with motion_prompt=False")
            if tuple(motion_mask.shape) != tuple(ids.shape):
                raise ValueError(f"samwise: motion_mask {tuple(motion_mask.shape)} must match input_ids {ids.shape}")
        flat = frames.reshape(-1, *frames.shape[-3:]).astype(self.dtype)
        vis = self._blocks(enc.embed(flat), cuts[0], cuts[1])  # shared by the prompts when frames is 4-D
        txt, pm = text.embed(ids, padding_mask, deterministic=det)
        if debug:
            inter["text_embedding"] = txt
        txt = text.run_layers(txt, pm, tc[0], tc[1], deterministic=det)
        if debug:
            inter[f"txt_layers_{tc[0]}_{tc[1] - 1}"] = txt
        shared = frames.ndim == 4
        if shared:
            # the Hiera stage after the first one is still text-free: run it once for all prompts
            v0 = self._blocks(vis, cuts[1], cuts[2])
            vis = jnp.broadcast_to(vis[None], (p, *vis.shape))
        else:
            vis = vis.reshape(p, t, *vis.shape[1:])
        stages = [vis]
        for i, adapter in enumerate(self.cmt_adapters):
            if i == 0 and shared:
                v = jnp.broadcast_to(v0[None], (p, *v0.shape))
            else:
                v = self._blocks(vis.reshape(p * t, *vis.shape[2:]), cuts[i + 1], cuts[i + 2])
                v = v.reshape(p, t, *v.shape[1:])
            txt = text.run_layers(txt, pm, tc[i + 1], tc[i + 2], deterministic=det)
            dv, dt = adapter(v, txt, pm)
            if debug:
                inter[f"vis_blocks_{cuts[i + 1]}_{cuts[i + 2] - 1}"] = v
                inter[f"txt_layers_{tc[i + 1]}_{tc[i + 2] - 1}"] = txt
                inter[f"cmt{i}_vis_out"], inter[f"cmt{i}_txt_out"] = dv, dt
            vis, txt = v + dv, txt + dt
            stages.append(vis)
        state = txt[:, 0]
        motion = None
        if motion_mask is not None:
            mm = jnp.asarray(motion_mask, bool)
            first = jnp.argmax(mm, axis=1)  # the first verb token of each prompt (0 when it has none)
            motion = jnp.take_along_axis(txt, first[:, None, None], axis=1)[:, 0]
            motion_valid = jnp.any(mm, axis=1)
        if debug:
            for i, s in enumerate(stages):
                inter[f"vis_out_stage{i}"] = s
            inter["state"] = state
            if motion is not None:
                inter["motion_state"] = motion
        fpn = enc.neck_from_trunk([s.reshape(p * t, *s.shape[2:]) for s in stages])["backbone_fpn"]
        s0, s1 = self.sam.sam_mask_decoder.high_res_features(fpn[0], fpn[1])

        def per_frame(a):
            return jnp.swapaxes(a.reshape(p, t, *a.shape[1:]), 0, 1)

        feats = {
            "vision": per_frame(fpn[-1]),
            "s0": per_frame(s0),
            "s1": per_frame(s1),
            "state": jnp.broadcast_to(state[None], (t, *state.shape)),
        }
        if motion is not None:
            feats["motion"] = jnp.broadcast_to(motion[None], (t, *motion.shape))
            feats["motion_valid"] = jnp.broadcast_to(motion_valid[None], (t, p))
        if debug:
            inter.update(backbone_fpn0=feats["s0"], backbone_fpn1=feats["s1"], backbone_fpn2=feats["vision"])
        return feats, inter

    def _blocks(self, x, start: int, end: int):
        """Hiera blocks start..end-1 on (N, H, W, C), one image at a time when ``hiera_per_frame``."""
        if not self.hiera_per_frame or x.shape[0] == 1:
            return self.sam.image_encoder.run_blocks(x, start, end)

        def body(mdl, carry, xi):
            return carry, mdl.sam.image_encoder.run_blocks(xi[None], start, end)[0]

        scan = nn.scan(body, variable_broadcast="params", split_rngs={"params": False})
        return scan(self, jnp.zeros((), x.dtype), x)[1]

    # ------------------------------------------------------------------ SAM heads
    def decode(self, pix, high_res, state, motion=None, motion_valid=None):
        """``_forward_sam_heads`` with the text prompt, ``multimask_output=False`` (eval): pix (P, h, w, d)
        -> dict(low_res_masks (P, 4h, 4w), ious (P, 1), obj_ptr (P, d), object_score_logits (P, 1),
        early_token (P, d): mask token 0 after the first two-way layer, raw).  In training the masks
        are not replaced by -1024 where the object score is negative (official: eval only).
        ``motion`` (P, text_dim) verb-token states append ``project_motion_prompts(motion)`` after the
        text token; it is hidden from every attention where ``motion_valid`` (P,) is False."""
        p = pix.shape[0]
        pe = self.sam.sam_prompt_encoder
        sparse, dense = pe(
            points=(jnp.zeros((p, 1, 2), jnp.float32), -jnp.ones((p, 1), jnp.int32)), boxes=None, masks=None
        )
        sparse = jnp.concatenate([sparse, self.project_text(state)[:, None].astype(sparse.dtype)], axis=1)
        sparse_mask = None
        if motion is not None:
            n = sparse.shape[1]
            sparse = jnp.concatenate([sparse, self.project_motion_prompts(motion)[:, None].astype(sparse.dtype)], 1)
            valid = jnp.ones((p,), bool) if motion_valid is None else jnp.asarray(motion_valid, bool)
            sparse_mask = jnp.concatenate([jnp.ones((p, n), bool), valid[:, None]], axis=1)
        early = {}

        def grab_first_layer(next_fun, args, kwargs, ctx):
            out = next_fun(*args, **kwargs)
            if (
                isinstance(ctx.module, TwoWayAttentionBlock)
                and ctx.method_name == "__call__"
                and ctx.module.name == "layers_0"
            ):
                early["queries"] = out[0]
            return out

        with nn.intercept_methods(grab_first_layer):
            masks, ious, tokens, score = self.sam.sam_mask_decoder(
                pix,
                pe.dense_pe(),
                sparse,
                dense,
                multimask_output=False,
                repeat_image=False,
                high_res_features=high_res,
                sparse_mask=sparse_mask,
            )
        if not self.cfg.pred_obj_scores:  # --disable_pred_obj_score: constant score 10, ungated pointer
            score = jnp.full_like(score, 10.0)
            low = masks.astype(jnp.float32)[:, 0]
            ptr = self.sam.obj_ptr_proj(tokens[:, 0]).astype(jnp.float32)
        else:
            is_obj = score > 0
            low = masks if self.train else jnp.where(is_obj[:, :, None, None], masks, NO_OBJ_SCORE)
            low = low.astype(jnp.float32)[:, 0]
            lam = is_obj.astype(jnp.float32)
            ptr = lam * self.sam.obj_ptr_proj(tokens[:, 0]) + (1.0 - lam) * self.sam.no_obj_ptr.astype(jnp.float32)
        # output tokens are [obj_score, iou, mask_0..]: mask token 0 sits at index 2
        return {
            "low_res_masks": low,
            "ious": ious,
            "obj_ptr": ptr,
            "object_score_logits": score,
            "early_token": early["queries"][:, 2],
        }

    # ------------------------------------------------------------------ one frame
    def frame_step(self, bank, x, debug: bool = False, filled: tuple[int, int] | None = None):
        """One frame for P prompts: ``bank`` (``init_bank``) and x (vision, s0, s1, state, optional motion
        and motion_valid; each (P, ...)) -> (new bank, outputs).

        ``filled=(m, k)`` says statically that exactly the ``m`` most recent memory slots and ``k`` most
        recent pointers are valid (a bank filled from empty in this clip): the attention then runs
        over those only, instead of over every slot with the invalid ones masked out (same result up
        to rounding), and a frame with none skips the memory attention."""
        cfg = self.cfg
        vision, high_res, state = x["vision"], (x["s0"], x["s1"]), x["state"]
        p, h, w, d = vision.shape
        r, q = cfg.num_recent, cfg.num_pointers
        f = bank["frame"]
        tpos = jnp.broadcast_to(jnp.arange(r - 1, -1, -1, dtype=jnp.int32)[None], (p, r))
        mem, ptrs = bank["mem"], bank["ptrs"]
        mem_valid = jnp.broadcast_to(bank["mem_valid"][None], (p, r))
        ptr_valid = jnp.broadcast_to(bank["ptr_valid"][None], (p, q))
        if filled is not None:
            m, k = filled
            mem, tpos, ptrs = mem[:, r - m :], tpos[:, r - m :], ptrs[:, q - k :]
            mem_valid, ptr_valid = jnp.ones((p, m), bool), jnp.ones((p, k), bool)
        no_mem = self.sam.add_no_memory(vision)
        if filled is not None and filled == (0, 0):
            pix = no_mem
        else:
            pix_mem = self.sam.condition_on_memory(
                vision,
                sine_2d(h, w, d),
                mem,
                tpos,
                mem_valid,
                ptrs,
                jnp.zeros(ptr_valid.shape, jnp.float32),
                ptr_valid,
                1.0,
                deterministic=self._det,
            )
            pix = pix_mem if filled is not None else jnp.where(jnp.any(mem_valid) | jnp.any(ptr_valid), pix_mem, no_mem)
        out = self.decode(pix, high_res, state, x.get("motion"), x.get("motion_valid"))
        high = self.sam.upsample_masks(out["low_res_masks"])
        high_mem, last = high, bank["last_switch"]
        extra = {}
        if cfg.use_cme:
            nm = self.decode(no_mem, high_res, state)  # official: no motion token in the memory-less decode
            if self.train:  # the CME's inputs and labels are detached (official .detach())
                nm = jax.lax.stop_gradient(nm)
            logits = self.conditional_memory_encoder(
                jax.lax.stop_gradient(out["obj_ptr"]), jax.lax.stop_gradient(nm["early_token"]), self._det
            )
            run = ((f - last) >= cfg.cme_window - 1) & (f > cfg.cme_window)
            # in training the decision is never applied (official: `not self.training`)
            switch = run & (jnp.argmax(logits, axis=-1) == 1) & (not self.train)
            hm = self.sam.upsample_masks(nm["low_res_masks"])
            if cfg.switch_mem == "reweight":
                alt = jnp.where(hm > 0, 10.0 * hm, high)
            elif cfg.switch_mem == "all_mask":
                alt = hm
            else:
                alt = (high + hm) / 2
            high_mem = jnp.where(switch[:, None, None], alt, high)
            last = jnp.where(switch, f, last)
            extra = {
                "cme_logits": logits,
                "cme_run": run,
                "cme_switch": switch,
                "nomem_low_res_masks": nm["low_res_masks"],
                "nomem_early_obj_ptr": nm["early_token"],
                "nomem_object_score_logits": nm["object_score_logits"],
            }
        maskmem = self.sam.encode_memory(vision, high_mem, out["object_score_logits"], False)
        new_bank = {
            "mem": _shift_in(bank["mem"], maskmem, 1),
            "mem_valid": _shift_in(bank["mem_valid"], True, 0),
            "ptrs": _shift_in(bank["ptrs"], out["obj_ptr"], 1),
            "ptr_valid": _shift_in(bank["ptr_valid"], True, 0),
            "last_switch": last,
            "frame": f + 1,
        }
        res = {k: out[k] for k in ("low_res_masks", "ious", "obj_ptr", "object_score_logits")}
        if self.train and cfg.use_cme:
            res.update(
                {k: extra[k] for k in ("cme_logits", "cme_run", "nomem_low_res_masks", "nomem_object_score_logits")}
            )
        if debug:
            res.update(extra, maskmem_features=maskmem, pix_feat_with_mem=pix, high_res_masks_for_mem=high_mem)
        return new_bank, res

    # ------------------------------------------------------------------ one clip
    def run_clip(self, frames, input_ids, padding_mask, bank, debug: bool = False, motion_mask=None, fresh=False):
        """frames (T, S, S, 3) padded + normalised, input_ids/padding_mask (P, L), bank from ``init_bank``
        or a previous clip, ``motion_mask`` (P, L) or None (see the module docstring) -> (outputs
        (T, P, ...), new bank, intermediates).

        ``fresh=True`` (static) promises that ``bank`` is an empty ``init_bank``: the frames then run
        one after another (unrolled) with memory attention over only the frames seen so far, as the
        official model does (frame f attends min(f, 6) memories and min(f, 15) pointers; frame 0
        none), instead of the fixed, masked slots of the scan (first 8 frames: 27 frame-memories
        instead of 48); the results agree up to rounding."""
        feats, inter = self.encode_clip(frames, input_ids, padding_mask, debug, motion_mask)
        if fresh:
            r, q, outs = self.cfg.num_recent, self.cfg.num_pointers, []
            for f in range(frames.shape[-4]):
                bank, o = self.frame_step(bank, jax.tree.map(lambda a: a[f], feats), debug, (min(f, r), min(f, q)))
                outs.append(o)
            return jax.tree.map(lambda *a: jnp.stack(a), *outs), bank, inter

        def body(mdl, carry, x):
            return mdl.frame_step(carry, x, debug)

        scan = nn.scan(
            body, variable_broadcast="params", split_rngs={"params": False, "dropout": True}, in_axes=0, out_axes=0
        )
        bank, outs = scan(self, bank, feats)
        return outs, bank, inter

    def forward_clips(self, frames, input_ids, padding_mask=None, motion_mask=None):
        """B clips with one expression each, every clip with a fresh memory bank (the training forward;
        see the module docstring).  frames (B, T, h, w, 3) ImageNet-normalised, max(h, w) <=
        image_size (zero-padded bottom/right here); input_ids/padding_mask (B, L); ``motion_mask`` (B, L)
        or None (the motion prompt, see the module docstring: each clip uses its own first verb token).

        Returns ``pred_masks`` (B, T, h, w) logits at the input size (``postprocess``), ``object_score_logits``
        (B, T) and, with the CME, ``cme_logits`` (B, T, 2), ``cme_run`` (B, T) bool (frames where the CME ran),
        ``nomem_masks`` (B, T, h, w) and ``nomem_object_score_logits`` (B, T) of the memory-less decode."""
        b, t, h, w, _ = frames.shape
        s = self.cfg.sam2.image_size
        if h > s or w > s:
            raise ValueError(f"samwise: frames of {h}x{w} exceed the {s}x{s} input; resize them first")
        x = jnp.pad(frames, ((0, 0), (0, 0), (0, s - h), (0, s - w), (0, 0)))
        bank = init_bank(self.cfg, b)
        outs, _, _ = self.run_clip(x, input_ids, padding_mask, bank, motion_mask=motion_mask, fresh=True)

        def clips(a):  # (T, B, ...) -> (B, T, ...)
            return jnp.swapaxes(a, 0, 1)

        res = {
            "pred_masks": clips(self.postprocess(outs["low_res_masks"], (h, w))),
            "object_score_logits": clips(outs["object_score_logits"][..., 0]),
        }
        if "cme_logits" in outs:
            res.update(
                cme_logits=clips(outs["cme_logits"]),
                cme_run=clips(outs["cme_run"]),
                nomem_masks=clips(self.postprocess(outs["nomem_low_res_masks"], (h, w))),
                nomem_object_score_logits=clips(outs["nomem_object_score_logits"][..., 0]),
            )
        return res

    def postprocess(self, low_res, input_hw, output_hw=None):
        """(..., 4h, 4w) logits -> bilinear to S x S, crop to ``input_hw``, bilinear to ``output_hw``."""
        s = self.cfg.sam2.image_size
        lead = low_res.shape[:-2]
        x = low_res.reshape(-1, *low_res.shape[-2:], 1).astype(jnp.float32)
        x = interpolate(x, size=(s, s), mode="bilinear", align_corners=False)[:, : input_hw[0], : input_hw[1]]
        if output_hw is not None and tuple(output_hw) != tuple(input_hw):
            x = interpolate(x, size=tuple(output_hw), mode="bilinear", align_corners=False)
        return x[..., 0].reshape(*lead, *x.shape[1:3])

    def __call__(self, frames, input_ids, padding_mask=None, debug: bool = False, motion_mask=None):
        """One clip with a fresh memory bank (see the module docstring)."""
        _, h, w, _ = frames.shape
        ids = jnp.asarray(input_ids)
        p = ids.shape[0]
        if self.is_initializing():  # part of the SAM 2 checkpoint, unused by SAMWISE
            self.sam.mask_downsample(jnp.zeros((1, 4, 4, 1), self.dtype))
            if self.cfg.motion_prompt and motion_mask is None:  # created even when no verb is given
                self.project_motion_prompts(jnp.zeros((1, self.cfg.text_dim), self.dtype))
        bank = init_bank(self.cfg, p)
        outs, bank, inter = self.run_clip(
            pad_frames(frames, self.cfg.sam2.image_size),
            ids,
            padding_mask,
            bank,
            debug,
            motion_mask,
            fresh=not self.is_initializing(),  # init: the scan creates the memory attention's parameters
        )
        masks = jnp.swapaxes(self.postprocess(outs["low_res_masks"], (h, w)), 0, 1)  # (P, T, h, w)
        res = dict(outs, pred_masks=masks[0] if p == 1 else masks)
        if debug:
            res["intermediates"] = inter
        return res

    def build_kwargs(self) -> dict:
        """Arguments of ``build_samwise(**kwargs)`` that rebuild this module."""
        import dataclasses

        ref = get_config(self.cfg.sam2_size)
        return {
            f.name: getattr(self.cfg, f.name)
            for f in dataclasses.fields(self.cfg)
            if f.name == "sam2_size" or getattr(self.cfg, f.name) != getattr(ref, f.name)
        }


def build_samwise(
    sam2_size: str = "base_plus",
    hsa: bool = True,
    use_cme: bool = True,
    motion_prompt: bool = False,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    **overrides,
) -> SAMWISE:
    """``models.build("samwise", sam2_size=..., hsa=..., use_cme=..., motion_prompt=False)``; ``overrides``
    are SAMWISEConfig fields (``sam2_size="tiny_test"`` gives the CPU test miniature)."""
    cfg = get_config(sam2_size, hsa=hsa, use_cme=use_cme, motion_prompt=motion_prompt, **overrides)
    return SAMWISE(cfg, dtype=dtype, param_dtype=param_dtype)
