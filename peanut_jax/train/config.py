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


#: keys of ``config.model`` every task reads itself (never constructor arguments of the model)
TRAINER_MODEL_KEYS = ("name", "dtype", "param_dtype")


def model_fields(model_block, exclude=()) -> dict:
    """The model constructor's keyword arguments in ``config.model``: every key but
    :data:`TRAINER_MODEL_KEYS` and the task's own ``exclude`` (``init_from``, ...), lists as tuples
    (modules must stay hashable)."""
    skip = set(TRAINER_MODEL_KEYS) | set(exclude)
    return {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in model_block.items() if k not in skip}


def build_configured(config, name: str | None = None, exclude=()):
    """``peanut_jax.models.build(name or config.model.name, dtype=..., param_dtype=..., **model_fields)``."""
    from peanut_jax.models import build

    m = config.model
    return build(
        str(name or m.name),
        dtype=config_dtype(config_get(m, "dtype", "float32")),
        param_dtype=config_dtype(config_get(m, "param_dtype", "float32"), "config.model.param_dtype"),
        **model_fields(m, exclude),
    )
