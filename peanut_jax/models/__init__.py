"""Model registry: ``build(name, **overrides) -> flax.linen.Module``.

Entries are imported lazily so that using one stage never imports the others.
"""
from __future__ import annotations

import importlib

# name -> (module path, class name, default constructor arguments)
_REGISTRY: dict[str, tuple[str, str, dict]] = {
    "spynet": ("peanut_jax.models.spynet", "SPyNet", {"variant": "mmagic"}),
    "spynet_sniklaus": ("peanut_jax.models.spynet", "SPyNet", {"variant": "sniklaus"}),
    "e2fgvi": ("peanut_jax.models.e2fgvi", "InpaintGenerator", {"hq": False}),
    "e2fgvi_hq": ("peanut_jax.models.e2fgvi", "InpaintGenerator", {"hq": True}),
    "e2fgvi_discriminator": ("peanut_jax.models.discriminators", "TPatchGANDiscriminator", {}),
    "basicvsr_pp": ("peanut_jax.models.basicvsr_pp", "BasicVSRPlusPlus", {}),
    "rife": ("peanut_jax.models.rife", "IFNet", {}),
    "rife_hdv3": ("peanut_jax.models.rife", "IFNetHDv3", {}),
    "vgg19": ("peanut_jax.models.vgg", "VGG19Features", {}),
    # SAM 2 / 2.1: build("sam2", size="tiny"|"small"|"base_plus"|"large", version="2.0"|"2.1")
    "sam2": ("peanut_jax.models.sam2.sam2", "build_sam2", {"size": "tiny", "version": "2.1"}),
    "roberta_base": ("peanut_jax.models.roberta", "RobertaEncoder", {}),
}


def names() -> list[str]:
    return sorted(_REGISTRY)


def model_class(name: str):
    """The module class (or factory function) registered as ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(names())}")
    mod, cls, _ = _REGISTRY[name]
    return getattr(importlib.import_module(mod), cls)


def build(name: str, **overrides):
    """Instantiate model ``name`` with its default configuration, updated by ``overrides``."""
    cls = model_class(name)
    kwargs = dict(_REGISTRY[name][2])
    kwargs.update(overrides)
    return cls(**kwargs)
