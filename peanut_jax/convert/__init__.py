"""Official checkpoints -> (module, variables), without torch.

``load_checkpoint(path)`` reads .pth/.pt (zip and legacy), .pkl and .safetensors safely (a
restricted unpickler: no code from the file ever runs).  ``from_official(name, path)`` maps an
official checkpoint of model ``name`` onto our module; ``to_official(name, variables)`` does the
inverse (official key names and layouts; used by tests and to export weights).
"""

from __future__ import annotations

import importlib

from peanut_jax.convert.common import CheckpointMismatchError
from peanut_jax.convert.reader import CheckpointError, load_checkpoint

# each converter module (named per model in peanut_jax.models' table) exposes from_state_dict(sd, name, **kw)
# -> (module, variables), to_state_dict(variables, name, **kw) -> dict[str, np.ndarray], and optionally
# detect(sd) -> name|None.

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "converter_names",
    "from_official",
    "load_checkpoint",
    "to_official",
]


def converter_names() -> list[str]:
    """Model names that have a converter of official checkpoints."""
    from peanut_jax.models import converter_module, names

    return [n for n in names() if converter_module(n)]


def _converter(name: str):
    from peanut_jax.models import converter_module

    mod = converter_module(name)
    if mod is None:
        raise ValueError(f"no converter for model {name!r}; known: {', '.join(converter_names())}")
    return importlib.import_module(mod)


def from_official(name: str, path, **overrides):
    """Load an official checkpoint (a path, or an already loaded object) as ``(module, variables)``.

    Mismatching checkpoints raise :class:`CheckpointMismatchError` naming the missing and
    unexpected keys and shape mismatches.
    """
    obj = load_checkpoint(path) if not isinstance(path, dict) else path
    return _converter(name).from_state_dict(
        obj, name, source=str(path) if not isinstance(path, dict) else "<dict>", **overrides
    )


def to_official(name: str, variables, **kwargs) -> dict:
    """Our variables -> the official flat state dict (numpy arrays, official key names)."""
    return _converter(name).to_state_dict(variables, name, **kwargs)
