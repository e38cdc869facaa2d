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

# model name -> converter module; each exposes from_state_dict(sd, name, **kw) -> (module, variables),
# to_state_dict(variables, name, **kw) -> dict[str, np.ndarray], and optionally detect(sd) -> name|None.
_CONVERTERS = {
    "spynet": "peanut_jax.convert.spynet",
    "spynet_sniklaus": "peanut_jax.convert.spynet",
    "e2fgvi": "peanut_jax.convert.e2fgvi",
    "e2fgvi_hq": "peanut_jax.convert.e2fgvi",
    "e2fgvi_discriminator": "peanut_jax.convert.e2fgvi",
    "basicvsr_pp": "peanut_jax.convert.basicvsr_pp",
    "rife": "peanut_jax.convert.rife",
    "rife_hdv3": "peanut_jax.convert.rife",
    "vgg19": "peanut_jax.convert.vgg",
    "sam2": "peanut_jax.convert.sam2",
    "roberta_base": "peanut_jax.convert.roberta",
}

__all__ = ["CheckpointError", "CheckpointMismatchError", "from_official", "load_checkpoint", "to_official"]


def _converter(name: str):
    if name not in _CONVERTERS:
        raise ValueError(f"no converter for model {name!r}; known: {', '.join(sorted(_CONVERTERS))}")
    return importlib.import_module(_CONVERTERS[name])


def from_official(name: str, path, **overrides):
    """Load an official checkpoint (a path, or an already loaded object) as ``(module, variables)``.

    Mismatching checkpoints raise :class:`CheckpointMismatchError` naming the missing and
    unexpected keys and shape mismatches.
    """
    obj = load_checkpoint(path) if not isinstance(path, dict) else path
    return _converter(name).from_state_dict(obj, name, source=str(path) if not isinstance(path, dict) else "<dict>",
                                            **overrides)


def to_official(name: str, variables, **kwargs) -> dict:
    """Our variables -> the official flat state dict (numpy arrays, official key names)."""
    return _converter(name).to_state_dict(variables, name, **kwargs)
