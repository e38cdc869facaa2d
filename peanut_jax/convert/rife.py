"""RIFE checkpoints (``flownet.pkl``): ECCV 2022 ``IFNet`` / ``IFNet_m`` (-> ``rife``) and the
CogVideoX demo's ``IFNet_HDv3`` (-> ``rife_hdv3``).

The official files are ``torch.save(flownet.state_dict())`` of a DDP-wrapped network, so every key
starts with ``module.``; the official loaders keep only keys containing ``module.`` and remove that
substring.  We do the same; a file with no ``module.`` key at all (a plain, non-DDP save, which the
official loader would reject as empty) is accepted with its bare keys and a warning.
``to_state_dict`` writes ``module.``-prefixed keys, like the official DDP save.

The ECCV and IFNet_m files differ only in the input widths (+1 timestep channel): ``rife`` detects
which one from ``block0.conv0.0.0.weight`` and sets ``timestep_input``.  Channel widths are read from
the file too, so non-official widths (e.g. small training configs) round-trip.  ``block_tea`` is
kept in the parameters for both models (HDv3 never uses it) so that the round trip is lossless.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from peanut_jax.convert.common import CheckpointMismatchError, KeyMap

__all__ = ["detect", "from_state_dict", "to_state_dict", "keymap", "official_filter"]

_ECCV_STUDENTS = ("block0", "block1", "block2", "block_tea")


def official_filter(sd: dict, source: str = "checkpoint") -> dict:
    """The official ``Model.load_model`` key filter: keep keys containing ``module.``, remove it.

    If no key contains ``module.``, the bare keys are returned with a warning (the official code
    would load nothing and fail).
    """
    kept = {k.replace("module.", ""): v for k, v in sd.items() if "module." in k}
    if kept:
        dropped = [k for k in sd if "module." not in k]
        if dropped:
            warnings.warn(
                f"{source}: {len(dropped)} keys without 'module.' dropped like the official loader "
                f"(e.g. {dropped[:3]})",
                stacklevel=3,
            )
        return kept
    warnings.warn(
        f"{source}: no key has the 'module.' prefix of the official DDP save; loading the bare keys", stacklevel=3
    )
    return dict(sd)


def _state_dict(obj, source: str) -> dict:
    from peanut_jax.convert.reader import unwrap_state_dict

    return official_filter(unwrap_state_dict(obj), source)


def _kind(sd) -> str | None:
    """'eccv', 'eccv_m', 'hdv3', 'v4' or None, from key names and shapes."""
    if any(k.startswith("encode.") or k.endswith(".beta") for k in sd) or "block0.lastconv.0.weight" in sd:
        return "v4"
    if "block0.convblock0.0.0.weight" in sd:
        return "hdv3"
    w = sd.get("block0.conv0.0.0.weight")
    if w is not None and "block0.convblock.0.0.weight" in sd:
        return "eccv_m" if np.shape(w)[1] == 7 else "eccv"
    return None


def detect(obj) -> str | None:
    """'rife' (ECCV IFNet or IFNet_m), 'rife_hdv3' or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sd = _state_dict(obj, "checkpoint")
    except Exception:
        return None
    kind = _kind(sd)
    return {"eccv": "rife", "eccv_m": "rife", "hdv3": "rife_hdv3"}.get(kind)


# ---------------------------------------------------------------------------------------------


def _conv_prelu(km: KeyMap, tprefix: str, path: tuple) -> None:
    km.conv(f"{tprefix}.0", (*path, "conv"))
    km.add(f"{tprefix}.1.weight", (*path, "prelu", "weight"))


def keymap(name: str) -> KeyMap:
    """The strict (official key, our param path) rules of ``name`` ('rife' or 'rife_hdv3')."""
    km = KeyMap()
    if name == "rife":
        for blk in _ECCV_STUDENTS:
            for j in range(2):
                _conv_prelu(km, f"{blk}.conv0.{j}", (blk, f"conv0_{j}"))
            for k in range(8):
                _conv_prelu(km, f"{blk}.convblock.{k}", (blk, f"convblock_{k}"))
            km.conv_t(f"{blk}.lastconv", (blk, "lastconv"))
        for lvl in range(1, 5):
            for m in (1, 2):
                _conv_prelu(km, f"contextnet.conv{lvl}.conv{m}", ("contextnet", f"conv{lvl}", f"conv{m}"))
        for k in range(4):
            for m in (1, 2):
                _conv_prelu(km, f"unet.down{k}.conv{m}", ("unet", f"down{k}", f"conv{m}"))
        for k in range(4):
            km.conv_t(f"unet.up{k}.0", ("unet", f"up{k}", "convt"))
            km.add(f"unet.up{k}.1.weight", ("unet", f"up{k}", "prelu", "weight"))
        km.conv("unet.conv", ("unet", "conv"))
    elif name == "rife_hdv3":
        for blk in _ECCV_STUDENTS:
            for j in range(2):
                _conv_prelu(km, f"{blk}.conv0.{j}", (blk, f"conv0_{j}"))
            for k in range(4):
                for j in range(2):
                    _conv_prelu(km, f"{blk}.convblock{k}.{j}", (blk, f"convblock{k}_{j}"))
            for head in ("conv1", "conv2"):
                km.conv_t(f"{blk}.{head}.0", (blk, f"{head}_0"))
                km.add(f"{blk}.{head}.1.weight", (blk, f"{head}_1", "weight"))
                km.conv_t(f"{blk}.{head}.2", (blk, f"{head}_2"))
    else:
        raise ValueError(f"convert.rife: unknown model {name!r} (expected 'rife' or 'rife_hdv3')")
    return km


def _reference_params(module) -> dict:
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    return jax.eval_shape(module.init, jax.random.key(0), x, x)["params"]


def _width(sd, key, default):
    w = sd.get(key)
    return int(np.shape(w)[0]) if w is not None else default


def from_state_dict(obj, name: str = "rife", source: str = "checkpoint", **overrides):
    """An official RIFE ``flownet.pkl`` (loaded object or flat dict) -> ``(module, variables)``."""
    from peanut_jax.models.rife import IFNet, IFNetHDv3

    if name not in ("rife", "rife_hdv3"):
        raise ValueError(f"convert.rife: unknown model {name!r} (expected 'rife' or 'rife_hdv3')")
    sd = _state_dict(obj, source)
    kind = _kind(sd)
    if kind == "v4":
        raise CheckpointMismatchError(
            f"{source} is a Practical-RIFE v4.x checkpoint (feature head / 'beta' residual keys); only the ECCV "
            "IFNet / IFNet_m ('rife') and IFNet_HDv3 ('rife_hdv3') are supported"
        )
    if name == "rife" and kind == "hdv3":
        raise CheckpointMismatchError(f"{source} is an IFNet_HDv3 (RIFE v3.x HD) checkpoint: load it as 'rife_hdv3'")
    if name == "rife_hdv3" and kind in ("eccv", "eccv_m"):
        raise CheckpointMismatchError(f"{source} is an ECCV RIFE IFNet checkpoint: load it as 'rife'")

    if name == "rife":
        kw = dict(
            timestep_input=(kind == "eccv_m"),
            widths=tuple(_width(sd, f"{b}.conv0.1.0.weight", d) for b, d in zip(_ECCV_STUDENTS, IFNet.widths)),
            context_c=_width(sd, "contextnet.conv1.conv1.0.weight", IFNet.context_c),
        )
        kw.update(overrides)
        module = IFNet(**kw)
        model = "rife (IFNet_m)" if module.timestep_input else "rife (IFNet)"
    else:
        kw = dict(c=_width(sd, "block0.conv0.1.0.weight", IFNetHDv3.c))
        kw.update(overrides)
        module = IFNetHDv3(**kw)
        model = "rife_hdv3 (IFNet_HDv3)"
    params = keymap(name).apply(sd, _reference_params(module), model=model, source=source)
    return module, {"params": params}


def to_state_dict(variables, name: str = "rife", prefix: str = "module.", **_) -> dict[str, np.ndarray]:
    """Our variables -> the official ``flownet.pkl`` state dict (keys ``module.``-prefixed like the
    official DDP save; ``prefix=''`` for bare keys).  Includes ``block_tea``."""
    params = variables["params"] if "params" in variables else variables
    sd = keymap(name).invert(params)
    return {
        f"{prefix}{k}": np.asarray(v, np.float32) if np.asarray(v).dtype != np.float32 else np.asarray(v)
        for k, v in sd.items()
    }
