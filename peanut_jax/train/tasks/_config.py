"""Config helpers shared by the training tasks."""
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
