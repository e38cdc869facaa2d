"""torchvision VGG19 checkpoints (``vgg19-dcbb9e9d.pth``) -> :class:`peanut_jax.models.vgg.VGG19Features`.

Keys ``features.{i}.{weight,bias}`` for the 16 convs (i in ``CONV_INDICES``) map to
``conv_{i}/{kernel,bias}``; ``classifier.*`` is ignored (only the features are used).  Also
accepted: a bare ``features`` state dict (``0.weight`` ...), the ``vgg_pretrained_features.``
prefix of RIFE's ``VGGPerceptualLoss`` and a ``module.`` prefix.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp

from peanut_jax.convert.common import CheckpointMismatchError, KeyMap, strip_prefix
from peanut_jax.models.vgg import CONV_INDICES, VGG19Features

__all__ = ["detect", "from_state_dict", "keymap", "to_state_dict"]

_FEATURE_KEY = re.compile(r"^features\.(\d+)\.(weight|bias)$")


def keymap() -> KeyMap:
    km = KeyMap()
    for i in CONV_INDICES:
        km.conv(f"features.{i}", (f"conv_{i}",))
    return km


def _normalise_keys(sd: dict) -> dict:
    sd = strip_prefix(sd, "module.")
    if any(k.startswith("vgg_pretrained_features.") for k in sd):
        sd = {
            ("features." + k[len("vgg_pretrained_features.") :] if k.startswith("vgg_pretrained_features.") else k): v
            for k, v in sd.items()
        }
    if sd and all(re.match(r"^\d+\.(weight|bias)$", k) for k in sd):
        sd = {f"features.{k}": v for k, v in sd.items()}
    return sd


def _unwrap(obj) -> dict:
    from peanut_jax.convert.reader import unwrap_state_dict

    return _normalise_keys(dict(unwrap_state_dict(obj)))


def detect(obj) -> str | None:
    try:
        sd = _unwrap(obj)
    except Exception:
        return None
    convs = {int(m.group(1)) for k in sd if (m := _FEATURE_KEY.match(k))}
    return "vgg19" if convs == set(CONV_INDICES) else None


def _reference_params(module) -> dict:
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    return jax.eval_shape(module.init, jax.random.key(0), x)["params"]


def from_state_dict(obj, name: str = "vgg19", source: str = "checkpoint", **overrides):
    """``(VGG19Features(**overrides), {'params': ...})`` from a torchvision VGG19 state dict."""
    if name != "vgg19":
        raise ValueError(f"peanut_jax.convert.vgg converts 'vgg19' checkpoints, not {name!r}")
    sd = _unwrap(obj)
    if not any(_FEATURE_KEY.match(k) for k in sd):
        raise CheckpointMismatchError(
            f"{source} is not a torchvision VGG19 checkpoint: expected keys like 'features.0.weight'; "
            f"found e.g. {sorted(sd)[:4]}"
        )
    module = VGG19Features(**overrides)
    params = keymap().apply(
        sd, _reference_params(module), model="vgg19", source=source, ignore=lambda k: k.startswith("classifier.")
    )
    return module, {"params": params}


def to_state_dict(variables, name: str = "vgg19", **_) -> dict:
    """Our params -> torchvision ``features.{i}.{weight,bias}`` (numpy; no classifier)."""
    return keymap().invert(variables["params"])
