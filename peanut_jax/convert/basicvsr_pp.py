"""BasicVSR++ checkpoints (mmedit / mmagic ``BasicVSRPlusPlusNet``) <-> our ``BasicVSRPlusPlus``.

Accepted layouts (after :func:`peanut_jax.convert.load_checkpoint`):

* the released restorer files ``{'meta': ..., 'state_dict': {'generator.<key>': ..., 'step_counter': ...}}``
  (``basicvsr_plusplus_c64n7_8x1_600k_reds4_*.pth`` and the Vimeo/NTIRE variants);
* a bare generator state dict (``<key>``), with or without a ``module.`` prefix (DataParallel),
  also inside ``{'state_dict': ...}``, ``{'params': ...}`` or ``{'model': ...}``.

The configuration is read from the tensor shapes: ``mid_channels`` (feat_extract width),
``num_blocks`` (residual blocks per propagation backbone), ``is_low_res_input`` (the stride-2
feature extractor of the deblur/denoise models) and ``scale`` (x4 with ``upsample2``, x2
without).  ``max_residue_magnitude`` is not stored (official default 10; pass it as an override).
Matching is strict: missing, unexpected and mis-shaped tensors are listed by name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from peanut_jax.convert.common import CheckpointMismatchError, KeyMap
from peanut_jax.convert.spynet import add_spynet_rules, check_spynet_buffers, spynet_buffers
from peanut_jax.models.basicvsr_pp import BRANCHES, BasicVSRPlusPlus

IGNORED_TOP_LEVEL = ("step_counter",)  # restorer buffer (mmedit/mmagic BasicVSR), not a network tensor
_MARKERS = ("deform_align.backward_1.conv_offset.0.weight", "backbone.backward_1.main.0.weight")


def _torch_to_numpy(obj):
    """Tensors of a ``torch.load`` result -> numpy (the safe reader already returns numpy)."""
    if hasattr(obj, "detach") and hasattr(obj, "numpy"):
        return obj.detach().cpu().numpy()
    if isinstance(obj, Mapping):
        return {k: _torch_to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_torch_to_numpy(v) for v in obj]
    return obj


def unwrap(obj, source: str = "checkpoint") -> dict[str, np.ndarray]:
    """The generator's flat state dict (no ``generator.``/``module.`` prefix, no ``step_counter``)."""
    from peanut_jax.convert.reader import CheckpointError, unwrap_state_dict

    if not isinstance(obj, Mapping):
        raise CheckpointMismatchError(f"{source}: expected a state dict (mapping), got {type(obj).__name__}")
    try:
        sd = unwrap_state_dict(_torch_to_numpy(obj))
    except CheckpointError as e:
        raise CheckpointMismatchError(f"{source}: {e}") from None
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    if any(k.startswith("generator.") for k in sd):
        gen = {k[len("generator.") :]: v for k, v in sd.items() if k.startswith("generator.")}
        rest = [k for k in sd if not k.startswith("generator.") and k not in IGNORED_TOP_LEVEL]
        if rest:
            raise CheckpointMismatchError(
                f"{source}: unexpected non-generator tensors in a BasicVSR++ restorer checkpoint: "
                + ", ".join(sorted(rest)[:8])
                + (" ..." if len(rest) > 8 else "")
            )
        sd = gen
        if sd and all(k.startswith("module.") for k in sd):
            sd = {k[len("module.") :]: v for k, v in sd.items()}
    if not any(k.endswith(m) for k in sd for m in _MARKERS):
        raise CheckpointMismatchError(
            f"{source} is not a BasicVSR++ checkpoint: no '{_MARKERS[0]}' (found e.g. {sorted(sd)[:4]})"
        )
    return sd


def detect_config(sd: Mapping[str, np.ndarray], source: str = "checkpoint") -> dict:
    """Constructor arguments implied by the tensor shapes of a (prefix-free) generator state dict."""
    if "feat_extract.main.0.weight" in sd:
        is_low_res_input = True
        mid = int(np.shape(sd["feat_extract.main.0.weight"])[0])
    elif "feat_extract.0.weight" in sd:
        is_low_res_input = False
        mid = int(np.shape(sd["feat_extract.0.weight"])[0])
    else:
        raise CheckpointMismatchError(
            f"{source}: no feat_extract.main.0.weight / feat_extract.0.weight: cannot tell the BasicVSR++ configuration"
        )
    pat = re.compile(r"^backbone\.backward_1\.main\.2\.(\d+)\.conv1\.weight$")
    blocks = [int(m.group(1)) for k in sd if (m := pat.match(k))]
    if not blocks:
        raise CheckpointMismatchError(f"{source}: no backbone.backward_1.main.2.<i>.conv1.weight keys")
    scale = 4 if "upsample2.upsample_conv.weight" in sd else 2
    cfg = dict(mid_channels=mid, num_blocks=max(blocks) + 1, is_low_res_input=is_low_res_input, scale=scale)
    if "conv_hr.weight" in sd:
        cfg["hr_channels"] = int(np.shape(sd["conv_hr.weight"])[0])
    return cfg


def _res_stack(km: KeyMap, tprefix: str, path: tuple, num_blocks: int) -> None:
    km.conv(f"{tprefix}.main.0", (*path, "conv_in"))
    for i in range(num_blocks):
        for j in (1, 2):
            km.conv(f"{tprefix}.main.2.{i}.conv{j}", (*path, f"block_{i}", f"conv{j}"))


def keymap(module: BasicVSRPlusPlus, torch_prefix: str = "") -> KeyMap:
    """Rules mapping official generator keys (with ``torch_prefix``) to our parameter paths."""
    p = torch_prefix
    km = KeyMap()
    add_spynet_rules(km, f"{p}spynet.", ("spynet",), "mmagic")
    if module.is_low_res_input:
        _res_stack(km, f"{p}feat_extract", ("feat_extract",), 5)
    else:
        km.conv(f"{p}feat_extract.0", ("feat_extract", "conv_0"))
        km.conv(f"{p}feat_extract.2", ("feat_extract", "conv_1"))
        _res_stack(km, f"{p}feat_extract.4", ("feat_extract", "blocks"), 5)
    for br in BRANCHES:
        for j in range(4):
            km.conv(f"{p}deform_align.{br}.conv_offset.{2 * j}", (br, "deform_align", f"conv_offset_{2 * j}"))
        km.conv(f"{p}deform_align.{br}", (br, "deform_align"))
        _res_stack(km, f"{p}backbone.{br}", (br, "backbone"), module.num_blocks)
    _res_stack(km, f"{p}reconstruction", ("recon", "reconstruction"), 5)
    km.conv(f"{p}upsample1.upsample_conv", ("recon", "upsample1", "upsample_conv"))
    if module.scale == 4:
        km.conv(f"{p}upsample2.upsample_conv", ("recon", "upsample2", "upsample_conv"))
    km.conv(f"{p}conv_hr", ("recon", "conv_hr"))
    km.conv(f"{p}conv_last", ("recon", "conv_last"))
    return km


def reference_params(module: BasicVSRPlusPlus):
    """Parameter shapes of ``module`` (no computation)."""
    side = 64 if module.is_low_res_input else 256
    x = jax.ShapeDtypeStruct((1, 2, side, side, 3), jnp.float32)
    return jax.eval_shape(lambda k, a: module.init(k, a, is_mirror_extended=False), jax.random.key(0), x)["params"]


def detect(obj) -> str | None:
    try:
        unwrap(obj)
    except Exception:
        return None
    return "basicvsr_pp"


def from_state_dict(obj, name: str = "basicvsr_pp", source: str = "checkpoint", **overrides):
    """Official checkpoint object -> ``(BasicVSRPlusPlus, {'params': ...})``.

    ``overrides`` go to the constructor (e.g. ``dtype``, ``use_scan``, ``max_residue_magnitude``);
    shape-defining options given explicitly must agree with the checkpoint.
    """
    sd = unwrap(obj, source)
    cfg = detect_config(sd, source)
    for k in ("mid_channels", "num_blocks", "is_low_res_input", "scale", "hr_channels"):
        if k in overrides and k in cfg and overrides[k] != cfg[k]:
            raise CheckpointMismatchError(
                f"{source}: the checkpoint has {k}={cfg[k]!r}, but {k}={overrides[k]!r} was requested"
            )
    cfg.update(overrides)
    module = BasicVSRPlusPlus(**cfg)
    check_spynet_buffers(sd, "spynet.", source)
    km = keymap(module)
    params = km.apply(
        sd,
        reference_params(module),
        model=f"{name} ({_describe(module)})",
        source=source,
        ignore=lambda k: k in ("spynet.mean", "spynet.std"),
    )
    return module, {"params": params}


def _describe(m: BasicVSRPlusPlus) -> str:
    kind = f"x{m.scale}" if m.is_low_res_input else "same-size"
    return f"c{m.mid_channels}n{m.num_blocks} {kind}"


def to_state_dict(
    variables,
    name: str = "basicvsr_pp",
    module: BasicVSRPlusPlus | None = None,
    prefix: str = "generator.",
    step_counter: bool = True,
    **_,
) -> dict[str, np.ndarray]:
    """Our variables -> the official flat state dict, as in the released files' ``state_dict``:
    ``generator.``-prefixed network tensors incl. the ``spynet.mean/std`` buffers, plus the
    restorer's ``step_counter`` (``prefix=''``, ``step_counter=False`` for a bare generator dict).
    The configuration is read from the parameter shapes unless ``module`` is given."""
    params = variables["params"] if "params" in variables else variables
    if module is None:
        module = BasicVSRPlusPlus(**_config_from_params(params))
    sd = keymap(module, prefix).invert(params)
    sd.update(spynet_buffers(f"{prefix}spynet."))
    if step_counter:
        sd["step_counter"] = np.zeros((1,), np.float32)
    return {
        k: np.asarray(v, dtype=np.float32) if np.asarray(v).dtype != np.float32 else np.asarray(v)
        for k, v in sd.items()
    }


def _config_from_params(params) -> dict:
    fe = params["feat_extract"]
    is_low = "conv_in" in fe
    mid = int((fe["conv_in"] if is_low else fe["conv_0"])["kernel"].shape[-1])
    nb = sum(1 for k in params["backward_1"]["backbone"] if k.startswith("block_"))
    scale = 4 if "upsample2" in params["recon"] else 2
    hr = int(params["recon"]["conv_hr"]["kernel"].shape[-1])
    return dict(mid_channels=mid, num_blocks=nb, is_low_res_input=is_low, scale=scale, hr_channels=hr)
