"""Model table: ``build(name, **overrides) -> flax.linen.Module``, and the converter that reads each
model's official checkpoints (``peanut_jax.convert``).  Adding a model = one row here; its
downloadable weights go in its family's entry of ``peanut_jax.checkpoints.families``.

Entries are imported lazily so that using one stage never imports the others.
"""

from __future__ import annotations

import importlib

# name -> (module path, class or factory name, default constructor arguments, converter module)
_MODELS: dict[str, tuple[str, str, dict, str]] = {
    "spynet": ("peanut_jax.models.spynet", "SPyNet", {"variant": "mmagic"}, "peanut_jax.convert.spynet"),
    "spynet_sniklaus": ("peanut_jax.models.spynet", "SPyNet", {"variant": "sniklaus"}, "peanut_jax.convert.spynet"),
    "e2fgvi": ("peanut_jax.models.e2fgvi", "InpaintGenerator", {"hq": False}, "peanut_jax.convert.e2fgvi"),
    "e2fgvi_hq": ("peanut_jax.models.e2fgvi", "InpaintGenerator", {"hq": True}, "peanut_jax.convert.e2fgvi"),
    "e2fgvi_discriminator": (
        "peanut_jax.models.discriminators",
        "TPatchGANDiscriminator",
        {},
        "peanut_jax.convert.e2fgvi",
    ),
    "basicvsr_pp": ("peanut_jax.models.basicvsr_pp", "BasicVSRPlusPlus", {}, "peanut_jax.convert.basicvsr_pp"),
    "rife": ("peanut_jax.models.rife", "IFNet", {}, "peanut_jax.convert.rife"),
    "rife_hdv3": ("peanut_jax.models.rife", "IFNetHDv3", {}, "peanut_jax.convert.rife"),
    "vgg19": ("peanut_jax.models.vgg", "VGG19Features", {}, "peanut_jax.convert.vgg"),
    # SAM 2 / 2.1: build("sam2", size="tiny"|"small"|"base_plus"|"large", version="2.0"|"2.1")
    "sam2": (
        "peanut_jax.models.sam2.sam2",
        "build_sam2",
        {"size": "tiny", "version": "2.1"},
        "peanut_jax.convert.sam2",
    ),
    "roberta_base": ("peanut_jax.models.roberta", "RobertaEncoder", {}, "peanut_jax.convert.roberta"),
    # SAMWISE (SAM 2 base+ with RoBERTa, CMT adapters, CME): build("samwise") = the released configuration
    "samwise": (
        "peanut_jax.models.samwise",
        "build_samwise",
        {"sam2_size": "base_plus", "hsa": True, "use_cme": True, "motion_prompt": False},
        "peanut_jax.convert.samwise",
    ),
}


def names() -> list[str]:
    return sorted(_MODELS)


def _row(name: str) -> tuple[str, str, dict, str]:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(names())}")
    return _MODELS[name]


def model_class(name: str):
    """The module class (or factory function) registered as ``name``."""
    mod, cls, _, _ = _row(name)
    return getattr(importlib.import_module(mod), cls)


def converter_module(name: str) -> str | None:
    """Import path of the converter of model ``name``'s official checkpoints (None: unknown model)."""
    return _MODELS[name][3] if name in _MODELS else None


def build(name: str, **overrides):
    """Instantiate model ``name`` with its default configuration, updated by ``overrides``."""
    cls = model_class(name)
    kwargs = dict(_MODELS[name][2])
    kwargs.update(overrides)
    return cls(**kwargs)
