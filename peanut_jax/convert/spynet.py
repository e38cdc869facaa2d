"""SPyNet checkpoints: mmagic/mmedit (``basic_module.{L}.basic_module.{j}.conv.*``, as in
``spynet_20210409-c6c1bd09.pth`` and inside BasicVSR++/E2FGVI checkpoints) and sniklaus
pytorch-spynet (``moduleBasic.{L}.moduleBasic.{0,2,4,6,8}.*``, the hub files; renamed ``netBasic``
in the code).  ``from_official('spynet', path)`` detects the format."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

from peanut_jax.convert.common import CheckpointMismatchError, KeyMap, strip_prefix
from peanut_jax.models.spynet import IMAGENET_MEAN, IMAGENET_STD, NUM_LEVELS, SPyNet

_MMAGIC = re.compile(r"(^|\.)basic_module\.\d+\.basic_module\.\d+\.conv\.weight$")
_SNIKLAUS = re.compile(r"(^|\.)(moduleBasic|netBasic)\.\d+\.(moduleBasic|netBasic)\.\d+\.weight$")


def add_spynet_rules(
    keymap: KeyMap,
    torch_prefix: str = "",
    path_prefix: tuple = (),
    variant: str = "mmagic",
    sniklaus_name: str = "moduleBasic",
) -> KeyMap:
    """Add the 60 SPyNet parameter rules (6 levels x 5 convs x weight/bias) to ``keymap``."""
    for level in range(NUM_LEVELS):
        for j in range(5):
            if variant == "mmagic":
                tkey = f"{torch_prefix}basic_module.{level}.basic_module.{j}.conv"
            else:
                tkey = f"{torch_prefix}{sniklaus_name}.{level}.{sniklaus_name}.{2 * j}"
            keymap.conv(tkey, (*path_prefix, f"basic_module_{level}", f"conv_{j}"))
    return keymap


def spynet_buffers(torch_prefix: str = "") -> dict[str, np.ndarray]:
    """The ``mean``/``std`` buffers that mmagic SPyNets inside BasicVSR++/E2FGVI checkpoints carry."""
    return {
        f"{torch_prefix}mean": np.asarray(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1),
        f"{torch_prefix}std": np.asarray(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1),
    }


def check_spynet_buffers(sd, torch_prefix: str, source: str) -> None:
    """The normalisation is fixed in our module: refuse checkpoints whose buffers differ."""
    for key, val in spynet_buffers(torch_prefix).items():
        if key in sd and not np.allclose(np.asarray(sd[key], np.float32).reshape(-1), val.reshape(-1), atol=1e-6):
            raise CheckpointMismatchError(
                f"{source}: {key} = {np.asarray(sd[key]).reshape(-1)} differs from the ImageNet statistics SPyNet uses"
            )


def detect(obj) -> str | None:
    from peanut_jax.convert.reader import unwrap_state_dict

    try:
        sd = unwrap_state_dict(obj)
    except Exception:
        return None
    if any(_MMAGIC.search(k) for k in sd):
        return "spynet"
    if any(_SNIKLAUS.search(k) for k in sd):
        return "spynet_sniklaus"
    return None


def _reference_params(module) -> dict:
    x = jax.ShapeDtypeStruct((1, 1024, 1024, 3), jnp.float32)  # deep enough for all 6 levels
    return jax.eval_shape(module.init, jax.random.key(0), x, x)["params"]


def from_state_dict(obj, name: str = "spynet", source: str = "checkpoint", **overrides):
    from peanut_jax.convert.reader import unwrap_state_dict

    sd = strip_prefix(unwrap_state_dict(obj), "module.")
    has_mm = any(_MMAGIC.search(k) for k in sd)
    has_sn = any(_SNIKLAUS.search(k) for k in sd)
    if has_mm == has_sn:
        raise CheckpointMismatchError(
            f"{source} is not a SPyNet checkpoint: expected keys like 'basic_module.0.basic_module.0.conv.weight' "
            f"(mmagic) or 'moduleBasic.0.moduleBasic.0.weight' (sniklaus); found e.g. {sorted(sd)[:4]}"
        )
    variant = "mmagic" if has_mm else "sniklaus"
    if name == "spynet_sniklaus" and variant != "sniklaus":
        raise CheckpointMismatchError(f"{source} is an mmagic SPyNet checkpoint, not sniklaus (use 'spynet')")
    module = SPyNet(variant=variant, **overrides)
    km = KeyMap()
    if variant == "mmagic":
        add_spynet_rules(km, "", (), "mmagic")
        check_spynet_buffers(sd, "", source)
        ignore = lambda k: k in ("mean", "std")  # noqa: E731
    else:
        name_in_file = "netBasic" if any(k.startswith("netBasic") for k in sd) else "moduleBasic"
        add_spynet_rules(km, "", (), "sniklaus", name_in_file)
        ignore = None
    params = km.apply(sd, _reference_params(module), model=f"spynet ({variant})", source=source, ignore=ignore)
    return module, {"params": params}


def to_state_dict(variables, name: str = "spynet", variant: str | None = None, **_):
    """Our params -> the official state dict (mmagic: as ``spynet_20210409-c6c1bd09.pth``, no
    buffers; sniklaus: the hub file's ``moduleBasic`` names)."""
    variant = variant or ("sniklaus" if name == "spynet_sniklaus" else "mmagic")
    km = add_spynet_rules(KeyMap(), "", (), variant)
    return km.invert(variables["params"])
