"""Reading the run's config: one lookup with a default and one dtype parser for the trainer and tasks.

Blocks are ``ml_collections.ConfigDict``s in a run, plain dicts or attribute objects in tests and tools.
"""

from __future__ import annotations

import jax.numpy as jnp


def config_get(block, key, default=None):
    """``block[key]`` with a default, for ConfigDicts, plain dicts and attribute objects."""
    try:
        return block.get(key, default)
    except AttributeError:
        return getattr(block, key, default)


def config_dtype(name: str, what: str = "config.model.dtype"):
    """``jnp.dtype(name)``; an unknown name is a ValueError naming the config field ``what``."""
    try:
        return jnp.dtype(name)
    except TypeError as e:
        raise ValueError(f"{what}: unknown dtype {name!r}") from e
