"""SAM 2 / 2.1 configurations: the official Hiera sizes and the flags that differ between versions.

Every field is a plain hashable value, so a config can be a Flax module field.  ``tiny_test`` is a
made-up miniature (not an official model) used by the CPU test-suite: same code paths, small widths
and a 128-pixel input.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class HieraConfig:
    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (1, 2, 7, 2)
    global_att_blocks: tuple[int, ...] = (5, 7, 9)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (7, 7)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    q_pool: int = 3  # number of q-pooling stage transitions
    q_stride: tuple[int, int] = (2, 2)
    dim_mul: float = 2.0
    head_mul: float = 2.0
    mlp_ratio: float = 4.0

    @property
    def stage_ends(self) -> tuple[int, ...]:
        ends, acc = [], 0
        for n in self.stages:
            acc += n
            ends.append(acc - 1)
        return tuple(ends)

    @property
    def channels(self) -> tuple[int, ...]:
        """Output channels of the four stages (stride 4, 8, 16, 32)."""
        return tuple(int(self.embed_dim * self.dim_mul**i) for i in range(len(self.stages)))


@dataclasses.dataclass(frozen=True)
class SAM2Config:
    size: str = "tiny"
    version: str = "2.1"
    hiera: HieraConfig = HieraConfig()
    image_size: int = 1024
    d_model: int = 256  # FPN / prompt encoder / mask decoder / memory attention width
    mem_dim: int = 64  # memory encoder output channels (maskmem features)
    num_maskmem: int = 7
    # FPN neck
    fpn_top_down_levels: tuple[int, ...] = (2, 3)
    scalp: int = 1
    # mask decoder
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    # memory attention
    memattn_layers: int = 4
    memattn_ffn: int = 2048
    rope_theta: float = 10000.0
    # memory encoder
    fuser_layers: int = 2
    fuser_dim: int = 256  # CXBlock width (= mask_downsampler output)
    # behaviour flags (official yaml names)
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    no_obj_embed_spatial: bool = True  # 2.1 only
    add_tpos_enc_to_obj_ptrs: bool = True  # 2.1 only (2.0: False)
    proj_tpos_enc_in_obj_ptrs: bool = True  # 2.1 only
    use_signed_tpos_enc_to_obj_ptrs: bool = True  # 2.1 only
    # post-processing set by build_sam2*(apply_postprocessing=True)
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    binarize_mask_from_pts_for_mem_enc: bool = True

    @property
    def embedding_size(self) -> int:
        """Side of the stride-16 image embedding (64 at 1024 input)."""
        return self.image_size // 16

    @property
    def backbone_channel_list(self) -> tuple[int, ...]:
        """Trunk channels, lowest resolution first (the FPN's order)."""
        return tuple(reversed(self.hiera.channels))


HIERA_SIZES = {
    "tiny": HieraConfig(96, 1, (1, 2, 7, 2), (5, 7, 9), (7, 7), (8, 4, 14, 7)),
    "small": HieraConfig(96, 1, (1, 2, 11, 2), (7, 10, 13), (7, 7), (8, 4, 14, 7)),
    "base_plus": HieraConfig(112, 2, (2, 3, 16, 3), (12, 16, 20), (14, 14), (8, 4, 14, 7)),
    "large": HieraConfig(144, 2, (2, 6, 36, 4), (23, 33, 43), (7, 7), (8, 4, 16, 8)),
}

_V20 = dict(
    no_obj_embed_spatial=False,
    add_tpos_enc_to_obj_ptrs=False,
    proj_tpos_enc_in_obj_ptrs=False,
    use_signed_tpos_enc_to_obj_ptrs=False,
)


def get_config(size: str = "tiny", version: str = "2.1", **overrides) -> SAM2Config:
    """The official configuration of ``size`` ('tiny', 'small', 'base_plus', 'large' or the test-only
    'tiny_test') and ``version`` ('2.0' or '2.1'), with field ``overrides``."""
    version = str(version)
    if version not in ("2.0", "2.1"):
        raise ValueError(f"SAM 2 version must be '2.0' or '2.1', got {version!r}")
    if size == "tiny_test":
        kw = dict(
            hiera=HieraConfig(16, 1, (1, 1, 2, 1), (3,), (4, 4), (4, 4, 4, 2)),
            image_size=128,
            d_model=32,
            mem_dim=16,
            decoder_heads=2,
            decoder_mlp_dim=64,
            memattn_layers=2,
            memattn_ffn=64,
            fuser_dim=32,
        )
    elif size in HIERA_SIZES:
        kw = dict(hiera=HIERA_SIZES[size])
    else:
        raise ValueError(f"unknown SAM 2 size {size!r}; known: {', '.join([*HIERA_SIZES, 'tiny_test'])}")
    if version == "2.0":
        kw.update(_V20)
    kw.update(overrides)
    return SAM2Config(size=size, version=version, **kw)
