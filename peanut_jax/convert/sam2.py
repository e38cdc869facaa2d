"""SAM 2 / 2.1 checkpoints (``sam2[.1]_hiera_{t,s,b+,l}.pt``): ``{'model': state_dict}``, no prefix,
loaded strictly by the official ``build_sam._load_checkpoint``.

Size and version are detected from the keys (trunk depth and width; 2.1 adds
``no_obj_embed_spatial`` and ``obj_ptr_tpos_proj``).  The key map is built per component below.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from peanut_jax.convert.common import CheckpointMismatchError, KeyMap
from peanut_jax.models.sam2.config import get_config


# ---------------------------------------------------------------- image encoder (Hiera + FPN neck)
def _image_encoder_rules(km: KeyMap, cfg, tprefix: str = "image_encoder", path: tuple = ("image_encoder",)):
    """Hiera trunk (``trunk.*``) and FPN neck (``neck.convs.{i}.conv``); pos embeds NCHW <-> NHWC."""
    import numpy as np

    from peanut_jax.models.sam2.hiera import block_specs

    def nchw_to_nhwc(w):
        return np.ascontiguousarray(np.asarray(w).transpose(0, 2, 3, 1))

    def nhwc_to_nchw(w):
        return np.ascontiguousarray(np.asarray(w).transpose(0, 3, 1, 2))

    t, tp = f"{tprefix}.trunk", (*path, "trunk")
    km.add(f"{t}.pos_embed", (*tp, "pos_embed"), nchw_to_nhwc, nhwc_to_nchw)
    km.add(f"{t}.pos_embed_window", (*tp, "pos_embed_window"), nchw_to_nhwc, nhwc_to_nchw)
    km.conv(f"{t}.patch_embed.proj", (*tp, "patch_embed_proj"))
    for i, spec in enumerate(block_specs(cfg.hiera)):
        b, bp = f"{t}.blocks.{i}", (*tp, f"blocks_{i}")
        km.norm(f"{b}.norm1", (*bp, "norm1"))
        km.linear(f"{b}.attn.qkv", (*bp, "attn", "qkv"))
        km.linear(f"{b}.attn.proj", (*bp, "attn", "proj"))
        km.norm(f"{b}.norm2", (*bp, "norm2"))
        km.linear(f"{b}.mlp.layers.0", (*bp, "mlp", "layers_0"))
        km.linear(f"{b}.mlp.layers.1", (*bp, "mlp", "layers_1"))
        if spec.dim != spec.dim_out:
            km.linear(f"{b}.proj", (*bp, "proj"))
    for i in range(len(cfg.backbone_channel_list)):
        km.conv(f"{tprefix}.neck.convs.{i}.conv", (*path, "neck", f"convs_{i}"))
    return km


# ---------------------------------------------------------------- prompt encoder + mask decoder
def _prompt_encoder_rules(km: KeyMap, cfg, tprefix: str = "sam_prompt_encoder", path: tuple = ("sam_prompt_encoder",)):
    """``PromptEncoder``: embeddings (1, d) and the Gaussian PE buffer (2, d/2) keep their layout."""
    km.add(f"{tprefix}.pe_layer.positional_encoding_gaussian_matrix", (*path, "positional_encoding_gaussian_matrix"))
    for i in range(4):
        km.add(f"{tprefix}.point_embeddings.{i}.weight", (*path, f"point_embeddings_{i}"))
    km.add(f"{tprefix}.not_a_point_embed.weight", (*path, "not_a_point_embed"))
    km.add(f"{tprefix}.no_mask_embed.weight", (*path, "no_mask_embed"))
    for i in (0, 3, 6):
        km.conv(f"{tprefix}.mask_downscaling.{i}", (*path, f"mask_downscaling_{i}"))
    for i in (1, 4):
        km.norm(f"{tprefix}.mask_downscaling.{i}", (*path, f"mask_downscaling_{i}"))


def _mask_decoder_rules(km: KeyMap, cfg, tprefix: str = "sam_mask_decoder", path: tuple = ("sam_mask_decoder",)):
    """``MaskDecoder`` (+ its ``TwoWayTransformer``); the output tokens keep their (n, d) layout."""

    def attention(tp, p):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            km.linear(f"{tp}.{proj}", (*p, proj))

    def mlp(tp, p, n):
        for j in range(n):
            km.linear(f"{tp}.layers.{j}", (*p, f"layers_{j}"))

    tt, pt = f"{tprefix}.transformer", (*path, "transformer")
    for i in range(cfg.decoder_depth):
        tl, pl = f"{tt}.layers.{i}", (*pt, f"layers_{i}")
        for att in ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token"):
            attention(f"{tl}.{att}", (*pl, att))
        mlp(f"{tl}.mlp", (*pl, "mlp"), 2)
        for n in range(1, 5):
            km.norm(f"{tl}.norm{n}", (*pl, f"norm{n}"))
    attention(f"{tt}.final_attn_token_to_image", (*pt, "final_attn_token_to_image"))
    km.norm(f"{tt}.norm_final_attn", (*pt, "norm_final_attn"))
    for tok in ("iou_token", "mask_tokens", "obj_score_token"):
        km.add(f"{tprefix}.{tok}.weight", (*path, tok))
    km.conv_t(f"{tprefix}.output_upscaling.0", (*path, "output_upscaling_0"))
    km.norm(f"{tprefix}.output_upscaling.1", (*path, "output_upscaling_1"))
    km.conv_t(f"{tprefix}.output_upscaling.3", (*path, "output_upscaling_3"))
    km.conv(f"{tprefix}.conv_s0", (*path, "conv_s0"))
    km.conv(f"{tprefix}.conv_s1", (*path, "conv_s1"))
    for i in range(cfg.num_multimask_outputs + 1):
        mlp(f"{tprefix}.output_hypernetworks_mlps.{i}", (*path, f"output_hypernetworks_mlps_{i}"), 3)
    mlp(f"{tprefix}.iou_prediction_head", (*path, "iou_prediction_head"), cfg.iou_head_depth)
    mlp(f"{tprefix}.pred_obj_score_head", (*path, "pred_obj_score_head"), 3)


# ---------------------------------------------------------------- memory encoder + memory attention
def _memory_encoder_rules(km: KeyMap, cfg, tprefix: str = "memory_encoder", path: tuple = ("memory_encoder",)):
    ds = (*path, "mask_downsampler")
    for i in (0, 3, 6, 9):  # conv, LayerNorm2d at i + 1, GELU at i + 2; final 1x1 conv at 12
        km.conv(f"{tprefix}.mask_downsampler.encoder.{i}", (*ds, f"encoder_{i}"))
        km.norm(f"{tprefix}.mask_downsampler.encoder.{i + 1}", (*ds, f"encoder_{i + 1}"))
    km.conv(f"{tprefix}.mask_downsampler.encoder.12", (*ds, "encoder_12"))
    km.conv(f"{tprefix}.pix_feat_proj", (*path, "pix_feat_proj"))
    for j in range(cfg.fuser_layers):
        t, p = f"{tprefix}.fuser.layers.{j}", (*path, "fuser", f"layers_{j}")
        km.conv(f"{t}.dwconv", (*p, "dwconv"))
        km.norm(f"{t}.norm", (*p, "norm"))
        km.linear(f"{t}.pwconv1", (*p, "pwconv1"))
        km.linear(f"{t}.pwconv2", (*p, "pwconv2"))
        km.add(f"{t}.gamma", (*p, "gamma"))
    if cfg.mem_dim != cfg.fuser_dim:
        km.conv(f"{tprefix}.out_proj", (*path, "out_proj"))


def _memory_attention_rules(km: KeyMap, cfg, tprefix: str = "memory_attention", path: tuple = ("memory_attention",)):
    for i in range(cfg.memattn_layers):
        t, p = f"{tprefix}.layers.{i}", (*path, f"layers_{i}")
        for attn in ("self_attn", "cross_attn_image"):
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                km.linear(f"{t}.{attn}.{proj}", (*p, attn, proj))
        km.linear(f"{t}.linear1", (*p, "linear1"))
        km.linear(f"{t}.linear2", (*p, "linear2"))
        for n in ("norm1", "norm2", "norm3"):
            km.norm(f"{t}.{n}", (*p, n))
    km.norm(f"{tprefix}.norm", (*path, "norm"))


# ---------------------------------------------------------------- the whole model
def _reshape(shape):
    return lambda w: np.ascontiguousarray(np.asarray(w).reshape(shape))


def keymap(cfg) -> KeyMap:
    """Every official key of a SAM 2 checkpoint of configuration ``cfg`` -> our param path."""
    d, mem = cfg.d_model, cfg.mem_dim
    km = KeyMap()
    _image_encoder_rules(km, cfg)
    _prompt_encoder_rules(km, cfg)
    _mask_decoder_rules(km, cfg)
    _memory_encoder_rules(km, cfg)
    _memory_attention_rules(km, cfg)
    for i in range(3):
        km.linear(f"obj_ptr_proj.layers.{i}", ("obj_ptr_proj", f"layers_{i}"))
    if cfg.proj_tpos_enc_in_obj_ptrs:
        km.linear("obj_ptr_tpos_proj", ("obj_ptr_tpos_proj",))
    km.conv("mask_downsample", ("mask_downsample",))
    km.add(
        "maskmem_tpos_enc",
        ("maskmem_tpos_enc",),
        _reshape((cfg.num_maskmem, mem)),
        _reshape((cfg.num_maskmem, 1, 1, mem)),
    )
    km.add("no_mem_embed", ("no_mem_embed",), _reshape((d,)), _reshape((1, 1, d)))
    km.add("no_mem_pos_enc", ("no_mem_pos_enc",), _reshape((d,)), _reshape((1, 1, d)))
    km.add("no_obj_ptr", ("no_obj_ptr",), _reshape((d,)), _reshape((1, d)))
    if cfg.no_obj_embed_spatial:
        km.add("no_obj_embed_spatial", ("no_obj_embed_spatial",), _reshape((mem,)), _reshape((1, mem)))
    return km


def _state_dict(obj) -> dict:
    from peanut_jax.convert.reader import unwrap_state_dict

    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    return unwrap_state_dict(obj)


def detect_config(sd: dict):
    """(size, version) of a SAM 2 state dict, from the trunk width/depth and the 2.1-only keys;
    None when it is not a SAM 2 checkpoint."""
    w = sd.get("image_encoder.trunk.patch_embed.proj.weight")
    if w is None or "sam_mask_decoder.iou_token.weight" not in sd:
        return None
    depth = len({k.split(".")[3] for k in sd if k.startswith("image_encoder.trunk.blocks.")})
    version = "2.1" if "no_obj_embed_spatial" in sd else "2.0"
    return _size_of(int(np.shape(w)[0]), depth), version


def _size_of(embed: int, depth: int) -> str:
    """The Hiera size with this patch-embedding width and number of blocks."""
    from peanut_jax.models.sam2.config import HIERA_SIZES

    for size, h in {**HIERA_SIZES, "tiny_test": get_config("tiny_test").hiera}.items():
        if h.embed_dim == embed and sum(h.stages) == depth:
            return size
    raise CheckpointMismatchError(
        f"a SAM 2 trunk of unknown size (embed dim {embed}, {depth} blocks); known sizes: "
        + ", ".join(f"{s} ({h.embed_dim}, {sum(h.stages)} blocks)" for s, h in HIERA_SIZES.items())
    )


def detect(obj) -> str | None:
    try:
        return "sam2" if detect_config(_state_dict(obj)) else None
    except Exception:
        return None


def from_state_dict(
    obj,
    name: str = "sam2",
    source: str = "checkpoint",
    size: str | None = None,
    version: str | None = None,
    dtype=jnp.float32,
    **overrides,
):
    """Official SAM 2 checkpoint -> ``(module, variables)``; size/version detected unless given
    (a given size/version that disagrees with the file is an error naming both)."""
    from peanut_jax.models.sam2.sam2 import SAM2

    sd = _state_dict(obj)
    found = detect_config(sd)
    if found is None:
        raise CheckpointMismatchError(
            f"{source} is not a SAM 2 checkpoint (no image_encoder.trunk / sam_mask_decoder keys)"
        )
    if (size and size != found[0]) or (version and str(version) != found[1]):
        raise CheckpointMismatchError(
            f"{source} holds SAM {found[1]} hiera-{found[0]}, not SAM {version or found[1]} hiera-{size or found[0]}"
        )
    cfg = get_config(*found, **overrides)
    module = SAM2(cfg, dtype=dtype)
    params = keymap(cfg).apply(sd, _reference_params(module), model=f"sam{cfg.version}_hiera_{cfg.size}", source=source)
    return module, {"params": params}


def to_state_dict(variables, name: str = "sam2", cfg=None, **_) -> dict:
    """Our variables -> the official state dict (``{'model': ...}`` holds this)."""
    params = variables["params"] if "params" in variables else variables
    if cfg is None:
        cfg = config_of_params(params)
    return keymap(cfg).invert(params)


def config_of_params(params):
    """The SAM2Config our ``params`` were built with (size from the trunk, version from the 2.1-only
    ``no_obj_embed_spatial``)."""
    trunk = params["image_encoder"]["trunk"]
    embed = int(trunk["patch_embed_proj"]["kernel"].shape[-1])
    depth = sum(1 for k in trunk if k.startswith("blocks_"))
    return get_config(_size_of(embed, depth), "2.1" if "no_obj_embed_spatial" in params else "2.0")


def _reference_params(module):
    s = module.cfg.image_size
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, s, s, 3), jnp.float32))
    return shapes["params"]
