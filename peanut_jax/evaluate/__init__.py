"""Evaluation protocols, one module each: :mod:`.inpainting` (E2FGVI ``evaluate.py``), :mod:`.vsr`
(mmagic REDS4 / Vid4 / Vimeo-90K-T), :mod:`.interpolation` (RIFE Vimeo-90K / UCF101).  They run a
model through the inference engines and score it with :mod:`peanut_jax.metrics`; the command line
is ``python -m peanut_jax.evaluate upscale|interpolate ...`` (:mod:`.cli`)."""
