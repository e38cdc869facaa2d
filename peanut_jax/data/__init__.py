"""Data: procedural synthetic videos with exact ground truth, video / frame / mask IO, flow colours."""

from peanut_jax.data.flow_viz import flow_to_color
from peanut_jax.data.masks import dilate_masks, overlay_mask, random_video_masks, read_masks
from peanut_jax.data.synthetic import SyntheticClip, SyntheticScene, generate_batch, generate_clip, make_scene, triplet
from peanut_jax.data.video_io import VideoSource, VideoWriter, open_video, read_frames, write_video

__all__ = [
    "SyntheticClip",
    "SyntheticScene",
    "VideoSource",
    "VideoWriter",
    "dilate_masks",
    "flow_to_color",
    "generate_batch",
    "generate_clip",
    "make_scene",
    "open_video",
    "overlay_mask",
    "random_video_masks",
    "read_frames",
    "read_masks",
    "triplet",
    "write_video",
]
