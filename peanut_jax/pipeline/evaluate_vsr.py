"""Moved to :mod:`peanut_jax.evaluate` (issue 12): this module only re-exports the old names and
keeps ``python -m peanut_jax.pipeline.evaluate_vsr`` working."""
import sys

from peanut_jax.evaluate import interpolation, vsr  # SHIM: moved (issue 12)
from peanut_jax.evaluate.cli import main  # SHIM: moved (issue 12)
from peanut_jax.evaluate.common import quantize, read_rgb  # SHIM: moved (issue 12)

REDS4, SCALE, VID4, VSRClip = vsr.REDS4, vsr.SCALE, vsr.VID4, vsr.VSRClip  # SHIM: moved (issue 12)
evaluate_vsr, vsr_clips, reds4_clips = vsr.evaluate_vsr, vsr.vsr_clips, vsr.reds4_clips  # SHIM: moved (issue 12)
vid4_clips, vimeo90k_t_clips, synthetic_vsr_clips = vsr.vid4_clips, vsr.vimeo90k_t_clips, vsr.synthetic_vsr_clips  # SHIM: moved (issue 12)
Triplet, triplets, evaluate_interpolation = interpolation.Triplet, interpolation.triplets, interpolation.evaluate_interpolation  # SHIM: moved (issue 12)
vimeo_triplets, ucf101_triplets = interpolation.vimeo_triplets, interpolation.ucf101_triplets  # SHIM: moved (issue 12)
synthetic_triplets = interpolation.synthetic_triplets  # SHIM: moved (issue 12)

__all__ = ["REDS4", "SCALE", "VID4", "Triplet", "VSRClip", "evaluate_interpolation", "evaluate_vsr", "main",
           "quantize", "read_rgb", "reds4_clips", "synthetic_triplets", "synthetic_vsr_clips", "triplets",
           "ucf101_triplets", "vid4_clips", "vimeo90k_t_clips", "vimeo_triplets", "vsr_clips"]

if __name__ == "__main__":
    sys.exit(main(prog="python -m peanut_jax.pipeline.evaluate_vsr"))
