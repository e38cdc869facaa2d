"""Weights: the official-checkpoint registry (download, verify, convert once, cache), the
exported-weights folder format and the one loading door :func:`load`."""

from peanut_jax.checkpoints.load import load

__all__ = ["load"]
