"""E2FGVI / E2FGVI-HQ generator and T-PatchGAN discriminator checkpoints.

The released ``E2FGVI-CVPR22.pth`` / ``E2FGVI-HQ-CVPR22.pth`` are a plain ``netG.state_dict()``
(243 / 244 tensors): the parameters, SPyNet's fine-tuned weights (``update_spynet.*``) and the
buffers ``update_spynet.{mean,std}`` (ImageNet statistics, checked and dropped) and
``transformer.{0..7}.attn.valid_ind_rolled`` (index sets the model computes itself; checked equal
and dropped).  The two variants differ in ``sc.bias`` [128, 60, 108] (E2FGVI) versus
``sc.bias_conv.{weight,bias}`` (HQ), which :func:`detect` uses.  A ``{'netG': ...}`` /
``{'state_dict': ...}`` wrapper and a DDP ``module.`` prefix are accepted.

Discriminator files (training ``dis_*.pth`` = ``netD.state_dict()``): ``conv.{0,2,4,6,8}.weight_orig``,
``weight_u``, ``weight_v`` (spectral norm) and ``conv.10.{weight,bias}``; ``from_official(
'e2fgvi_discriminator', path)`` returns ``params`` and the ``spectral`` collection (u, v).  A
discriminator saved without spectral norm (``conv.N.weight/bias`` everywhere) converts to
``use_spectral_norm=False``.

``to_state_dict`` writes the exact official key set and order, buffers included, so that the
official ``load_state_dict(strict=True)`` accepts it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from peanut_jax.convert.common import CheckpointMismatchError, KeyMap, conv3d_w, conv3d_w_back
from peanut_jax.convert.spynet import add_spynet_rules, check_spynet_buffers, spynet_buffers

__all__ = [
    "detect",
    "from_state_dict",
    "to_state_dict",
    "generator_keymap",
    "discriminator_keymap",
    "official_key_order",
]

GENERATORS = ("e2fgvi", "e2fgvi_hq")
DISCRIMINATOR = "e2fgvi_discriminator"
NUM_BLOCKS = 8
_PREFER = ("netG", "netD", "state_dict", "model", "params", "generator")


def _as_numpy_dict(obj):
    """Accept torch tensors in a user-passed dict (``np.asarray`` works for CPU tensors)."""
    if not isinstance(obj, Mapping):
        return obj
    out = {}
    for k, v in obj.items():
        if isinstance(v, Mapping):
            out[k] = _as_numpy_dict(v)
        elif not isinstance(v, np.ndarray) and hasattr(v, "detach"):
            out[k] = np.asarray(v.detach().cpu())
        else:
            out[k] = v
    return out


def _state_dict(obj, source: str) -> dict:
    from peanut_jax.convert.reader import CheckpointError, unwrap_state_dict

    obj = _as_numpy_dict(obj)
    try:
        sd = unwrap_state_dict(obj, _PREFER)
    except CheckpointError as e:
        raise CheckpointMismatchError(f"{source}: {e}") from None
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _detect_sd(sd) -> str | None:
    if "sc.bias_conv.weight" in sd:
        return "e2fgvi_hq"
    if "sc.bias" in sd:
        return "e2fgvi"
    plain_d = "conv.10.weight" in sd and "conv.0.weight" in sd and np.ndim(sd["conv.0.weight"]) == 5
    if "conv.0.weight_orig" in sd or plain_d:
        return DISCRIMINATOR
    return None


def detect(obj) -> str | None:
    """'e2fgvi', 'e2fgvi_hq', 'e2fgvi_discriminator' or None."""
    try:
        return _detect_sd(_state_dict(obj, "checkpoint"))
    except Exception:
        return None


# ------------------------------------------------------------------------------------------ generator


def official_key_order(hq: bool) -> list[tuple[str, str]]:
    """[(official key, 'param' | 'buffer')] in ``netG.state_dict()`` order."""
    return [(k, kind) for k, kind, *_ in _generator_rules(hq)]


@functools.cache
def _generator_rules(hq: bool):
    """Tuples (torch key, 'param'|'buffer', keymap-adder) in official order."""
    rules = []

    def param(adder, *keys):
        for k in keys:
            rules.append((k, "param", adder))

    def conv(tprefix, path, bias=True):
        param(lambda km: km.conv(tprefix, path, bias), f"{tprefix}.weight", *((f"{tprefix}.bias",) if bias else ()))

    def linear(tprefix, path):
        param(lambda km: km.linear(tprefix, path), f"{tprefix}.weight", f"{tprefix}.bias")

    def norm(tprefix, path):
        param(lambda km: km.norm(tprefix, path), f"{tprefix}.weight", f"{tprefix}.bias")

    for i in range(0, 17, 2):
        conv(f"encoder.layers.{i}", ("encoder", f"layers_{i}"))
    conv("decoder.0.conv", ("decoder", "layers_0"))
    conv("decoder.2", ("decoder", "layers_2"))
    conv("decoder.4.conv", ("decoder", "layers_4"))
    conv("decoder.6", ("decoder", "layers_6"))
    fp = "feat_prop_module"
    for br in ("backward", "forward"):
        conv(f"{fp}.deform_align.{br}_", (fp, f"deform_align_{br}"))
        for j in (0, 2, 4, 6):
            conv(f"{fp}.deform_align.{br}_.conv_offset.{j}", (fp, f"deform_align_{br}", f"conv_offset_{j}"))
    for br in ("backward", "forward"):
        for j in (0, 2):
            conv(f"{fp}.backbone.{br}_.{j}", (fp, f"backbone_{br}_{j}"))
    conv(f"{fp}.fusion", (fp, "fusion"))
    linear("ss.embedding", ("ss", "embedding"))
    if not hq:  # a parameter of SoftComp itself: listed before its children
        chw_to_hwc = lambda a: np.ascontiguousarray(np.asarray(a).transpose(1, 2, 0))  # noqa: E731
        hwc_to_chw = lambda a: np.ascontiguousarray(np.asarray(a).transpose(2, 0, 1))  # noqa: E731
        param(lambda km: km.add("sc.bias", ("sc", "bias"), chw_to_hwc, hwc_to_chw), "sc.bias")
    linear("sc.embedding", ("sc", "embedding"))
    if hq:
        conv("sc.bias_conv", ("sc", "bias_conv"))
    for n in range(NUM_BLOCKS):
        p, t = f"transformer.{n}", f"transformer_{n}"
        linear(f"{p}.pool_layers.0", (t, "pool_layers_0"))
        norm(f"{p}.norm1", (t, "norm1"))
        rules.append((f"{p}.attn.valid_ind_rolled", "buffer", None))
        linear(f"{p}.attn.qkv", (t, "attn", "qkv"))
        linear(f"{p}.attn.proj", (t, "attn", "proj"))
        norm(f"{p}.norm2", (t, "norm2"))
        linear(f"{p}.mlp.conv1.0", (t, "mlp", "conv1_0"))
        linear(f"{p}.mlp.conv2.1", (t, "mlp", "conv2_1"))
    rules.append(("update_spynet.mean", "buffer", None))
    rules.append(("update_spynet.std", "buffer", None))
    probe = add_spynet_rules(KeyMap(), "update_spynet.", ("update_spynet",), "mmagic")
    param(lambda km: add_spynet_rules(km, "update_spynet.", ("update_spynet",), "mmagic"), *[r[0] for r in probe.rules])
    return tuple(rules)


def generator_keymap(hq: bool) -> KeyMap:
    """The strict parameter key map of the generator (buffers excluded)."""
    km = KeyMap()
    seen = set()
    for _, kind, adder in _generator_rules(hq):
        if kind == "param" and id(adder) not in seen:
            seen.add(id(adder))
            adder(km)
    return km


def _generator_buffers(hq: bool) -> dict[str, np.ndarray]:
    from peanut_jax.models.focal_transformer import rolled_valid_indices

    buf = {f"transformer.{n}.attn.valid_ind_rolled": rolled_valid_indices() for n in range(NUM_BLOCKS)}
    buf.update(spynet_buffers("update_spynet."))
    return buf


_REFERENCE_CACHE: dict = {}


def _reference_params(name: str, module) -> dict:
    """Parameter shapes/dtypes of ``module`` (abstract init, cached per model configuration)."""
    key = (name, repr(module))
    if key not in _REFERENCE_CACHE:
        h, w = (60, 108) if module.hq else (240, 432)
        x = jax.ShapeDtypeStruct((1, 2, h, w, 3), jnp.float32)
        _REFERENCE_CACHE[key] = jax.eval_shape(lambda k, a: module.init(k, a, 2), jax.random.key(0), x)["params"]
    return _REFERENCE_CACHE[key]


def _generator_from_sd(sd, name, source, overrides):
    from peanut_jax.models import build

    hq = name == "e2fgvi_hq"
    module = build(name, **overrides)
    km = generator_keymap(hq)
    buffers = _generator_buffers(hq)
    ref = _reference_params(name, module)
    try:
        params = km.apply(sd, ref, model=name, source=source, ignore=lambda k: k in buffers)
    except CheckpointMismatchError as e:
        found = _detect_sd(sd)
        hint = (
            f"\n  (the file looks like an {found!r} checkpoint: use from_official({found!r}, ...))"
            if found and found != name
            else ""
        )
        raise CheckpointMismatchError(f"{e}{hint}") from None
    for key, val in buffers.items():
        if key.endswith("valid_ind_rolled") and key in sd:
            got = np.asarray(sd[key]).reshape(-1)
            if got.shape != val.shape or not np.array_equal(got.astype(np.int64), val):
                raise CheckpointMismatchError(
                    f"{source}: buffer {key} = {got[:8]}... differs from the index set the "
                    f"model computes ({val[:8]}...); not an official {name} checkpoint"
                )
    check_spynet_buffers(sd, "update_spynet.", source)
    return module, {"params": params}


# -------------------------------------------------------------------------------------- discriminator


def discriminator_keymap(use_spectral_norm: bool = True) -> KeyMap:
    """Variables paths are ('params'|'spectral', 'conv_N', ...)."""
    km = KeyMap()
    for n in (0, 2, 4, 6, 8):
        if use_spectral_norm:
            km.add(f"conv.{n}.weight_orig", ("params", f"conv_{n}", "kernel"), conv3d_w, conv3d_w_back)
            km.add(f"conv.{n}.weight_u", ("spectral", f"conv_{n}", "u"))
            km.add(f"conv.{n}.weight_v", ("spectral", f"conv_{n}", "v"))
        else:
            km.add(f"conv.{n}.weight", ("params", f"conv_{n}", "kernel"), conv3d_w, conv3d_w_back)
            km.add(f"conv.{n}.bias", ("params", f"conv_{n}", "bias"))
    km.add("conv.10.weight", ("params", "conv_10", "kernel"), conv3d_w, conv3d_w_back)
    km.add("conv.10.bias", ("params", "conv_10", "bias"))
    return km


def _discriminator_from_sd(sd, source, overrides):
    from peanut_jax.models import build

    overrides = dict(overrides)
    if "use_spectral_norm" not in overrides:
        overrides["use_spectral_norm"] = "conv.0.weight" not in sd
    w0 = sd.get("conv.0.weight_orig", sd.get("conv.0.weight"))
    if w0 is not None and np.ndim(w0) == 5:
        overrides.setdefault("in_channels", int(np.shape(w0)[1]))
        overrides.setdefault("nf", int(np.shape(w0)[0]))
    module = build(DISCRIMINATOR, **overrides)
    x = jax.ShapeDtypeStruct((1, 3, 64, 64, module.in_channels), jnp.float32)
    ref = jax.eval_shape(module.init, jax.random.key(0), x)
    km = discriminator_keymap(module.use_spectral_norm)
    try:
        variables = km.apply(sd, ref, model=DISCRIMINATOR, source=source)
    except CheckpointMismatchError as e:
        found = _detect_sd(sd)
        hint = (
            f"\n  (the file looks like an {found!r} checkpoint: use from_official({found!r}, ...))"
            if found and found != DISCRIMINATOR
            else ""
        )
        raise CheckpointMismatchError(f"{e}{hint}") from None
    return module, variables


# ------------------------------------------------------------------------------------------ public


def from_state_dict(obj, name: str = "e2fgvi", source: str = "checkpoint", **overrides):
    """Official checkpoint object -> (module, variables) for ``name`` in
    {'e2fgvi', 'e2fgvi_hq', 'e2fgvi_discriminator'}; strict, mismatches listed by key."""
    if name not in GENERATORS + (DISCRIMINATOR,):
        raise ValueError(f"convert.e2fgvi: unknown model {name!r}; expected one of {GENERATORS + (DISCRIMINATOR,)}")
    sd = _state_dict(obj, source)
    if name == DISCRIMINATOR:
        return _discriminator_from_sd(sd, source, overrides)
    return _generator_from_sd(sd, name, source, overrides)


def to_state_dict(variables, name: str = "e2fgvi", **_) -> dict[str, np.ndarray]:
    """Our variables -> the official state dict (exact key set and order, buffers included)."""
    if name == DISCRIMINATOR:
        use_sn = "spectral" in variables and bool(variables["spectral"])
        return discriminator_keymap(use_sn).invert({k: variables[k] for k in ("params", "spectral") if k in variables})
    if name not in GENERATORS:
        raise ValueError(f"convert.e2fgvi: unknown model {name!r}")
    hq = name == "e2fgvi_hq"
    params = variables["params"] if "params" in variables else variables
    sd_params = generator_keymap(hq).invert(params)
    buffers = _generator_buffers(hq)
    out = {}
    for key, kind, _ in _generator_rules(hq):
        out[key] = buffers[key] if kind == "buffer" else sd_params[key]
    return out
