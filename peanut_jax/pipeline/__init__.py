"""Inference: the chain (``chain.py``: ``stream = stage(stream, info)``), where frames come from
(``sources.py``) and go to (``outputs.py``), what a run measures (``telemetry.py``), how a chain is
assembled (``build.py``), and one module per stage with its window engine and its Stage (mask,
erase, upscale, interpolate, flow).  The commands are in :mod:`peanut_jax.cli`."""
