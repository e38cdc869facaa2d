"""SAMWISE checkpoints (``{'model': state_dict, ...}``, ``module.`` prefixes stripped) -> :class:`SAMWISE`.

Key layout (official attribute names): ``sam.*`` (SAM 2 v1.0; reuses ``convert.sam2.keymap``),
``sam.sam_prompt_encoder.project_text.layers.{0,1,2}`` (our top-level ``project_text``),
``text_encoder.model.encoder.sentence_encoder.*`` (reuses ``convert.roberta.keymap``),
``cmt_adapters.{i}.*`` (BatchNorm running statistics go to ``batch_stats``) and
``conditional_memory_encoder.*``.

With ``motion_prompt=True`` (official ``--motion_prompt``, in no released checkpoint):
``sam.sam_prompt_encoder.project_motion_prompts.layers.{0,1,2}`` (our top-level
``project_motion_prompts``; same MLP shape as ``project_text``).

STRICT, unlike the official demo (``strict=False``, which silently runs without adapters): any
missing adapter, CME (when ``use_cme``), ``project_text`` or (when ``motion_prompt``)
``project_motion_prompts`` key is an error that lists the keys.  The official inference scripts
would leave a missing ``project_motion_prompts`` at its random initialisation; official ``main.py``
copies ``project_text`` into it before training, which ``motion_from_text=True`` reproduces.
Ignored: ``lm_head``, ``_float_tensor``/``version`` buffers, BatchNorm ``num_batches_tracked``,
``project_motion_prompts`` when ``motion_prompt`` is off (``detect_config`` never turns it on) and,
with ``use_cme=False``, the CME weights.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from peanut_jax.convert import roberta as roberta_conv
from peanut_jax.convert import sam2 as sam2_conv
from peanut_jax.convert.common import (
    CheckpointMismatchError,
    KeyMap,
    linear_w,
    linear_w_back,
    strip_prefix,
)

__all__ = ["detect", "detect_config", "from_state_dict", "keymap", "to_state_dict"]

TEXT_PREFIX = "text_encoder.model.encoder.sentence_encoder."
_CME = "conditional_memory_encoder."
PROJECT_TEXT = "sam.sam_prompt_encoder.project_text."
PROJECT_MOTION = "sam.sam_prompt_encoder.project_motion_prompts."


def _ignored(key: str, use_cme: bool) -> bool:
    # project_motion_prompts: unused unless motion_prompt, which maps (and so requires) the keys
    return (
        key.endswith("_float_tensor")
        or key.endswith(".version")
        or ".lm_head." in key
        or key.endswith("num_batches_tracked")
        or key.startswith(PROJECT_MOTION)
        or (not use_cme and key.startswith(_CME))
    )


def _prefixed(src: KeyMap, tprefix: str, path: tuple, into: KeyMap) -> None:
    for tkey, p, fwd, back in src.rules:
        into.rules.append((tprefix + tkey, (*path, *p), fwd, back))


def _conv1x1(w):  # torch Conv2d (O, I, 1, 1) -> Dense (I, O)
    return np.ascontiguousarray(np.asarray(w)[:, :, 0, 0].T)


def _conv1x1_back(k):
    return np.ascontiguousarray(np.asarray(k).T[:, :, None, None])


def _convT1x1(w):  # torch ConvTranspose2d (I, O, 1, 1) -> Dense (I, O)
    return np.ascontiguousarray(np.asarray(w)[:, :, 0, 0])


def _convT1x1_back(k):
    return np.ascontiguousarray(np.asarray(k)[:, :, None, None])


def _reshape(shape):
    return lambda w: np.ascontiguousarray(np.asarray(w).reshape(shape))


def _mha(km: KeyMap, tprefix: str, path: tuple) -> None:
    km.add(f"{tprefix}.in_proj_weight", (*path, "in_proj_weight"), linear_w, linear_w_back)
    km.add(f"{tprefix}.in_proj_bias", (*path, "in_proj_bias"))
    km.linear(f"{tprefix}.out_proj", (*path, "out_proj"))


def _bn(km: KeyMap, tprefix: str, name: str, adapter: str) -> None:
    km.norm(tprefix, ("params", adapter, name))
    km.add(f"{tprefix}.running_mean", ("batch_stats", adapter, name, "mean"))
    km.add(f"{tprefix}.running_var", ("batch_stats", adapter, name, "var"))


def keymap(cfg) -> KeyMap:
    """Every official key of a SAMWISE checkpoint of configuration ``cfg`` -> our variable path
    (``('params', ...)`` or ``('batch_stats', ...)``)."""
    sc = cfg.sam2
    km = KeyMap()
    _prefixed(sam2_conv.keymap(sc), "sam.", ("params", "sam"), km)
    for i in range(3):
        km.linear(f"{PROJECT_TEXT}layers.{i}", ("params", "project_text", f"layers_{i}"))
    if cfg.motion_prompt:
        for i in range(3):
            km.linear(f"{PROJECT_MOTION}layers.{i}", ("params", "project_motion_prompts", f"layers_{i}"))
    _prefixed(roberta_conv.keymap(cfg.text_layers), TEXT_PREFIX, ("params", "text_encoder"), km)
    d = cfg.adapter_dim
    for i in range(3):
        t, a = f"cmt_adapters.{i}", f"cmt_adapters_{i}"
        km.add(f"{t}.proj_vis_down.0.weight", ("params", a, "proj_vis_down_0", "kernel"), _conv1x1, _conv1x1_back)
        _bn(km, f"{t}.proj_vis_down.1", "proj_vis_down_1", a)
        km.add(f"{t}.proj_vis_up.0.weight", ("params", a, "proj_vis_up_0", "kernel"), _convT1x1, _convT1x1_back)
        _bn(km, f"{t}.proj_vis_up.1", "proj_vis_up_1", a)
        km.add(f"{t}.proj_text_down.0.weight", ("params", a, "proj_text_down_0", "kernel"), linear_w, linear_w_back)
        km.add(f"{t}.proj_text_up.0.weight", ("params", a, "proj_text_up_0", "kernel"), linear_w, linear_w_back)
        _mha(km, f"{t}.ca_V2T.multihead_attn", ("params", a, "ca_V2T"))
        _mha(km, f"{t}.ca_T2V.multihead_attn", ("params", a, "ca_T2V"))
        if cfg.hsa:
            p2 = cfg.hsa_patch_sizes[i] ** 2
            km.add(
                f"{t}.spatial_pos_embed",
                ("params", a, "spatial_pos_embed"),
                _reshape((p2, d)),
                _reshape((1, 1, 1, p2, d)),
            )
            _mha(km, f"{t}.hsa.self_attn", ("params", a, "hsa_self_attn"))
            km.linear(f"{t}.hsa.linear", ("params", a, "hsa_linear"))
            km.norm(f"{t}.norm_pre_HSA", ("params", a, "norm_pre_HSA"))
    if cfg.use_cme:
        c, cp = "conditional_memory_encoder", ("params", "conditional_memory_encoder")
        km.add(f"{c}.decision_token.weight", (*cp, "decision_token"))
        km.linear(f"{c}.decision_class_head", (*cp, "decision_class_head"))
        b, bp = f"{c}.transformerBlock", (*cp, "transformerBlock")
        _mha(km, f"{b}.self_attn", (*bp, "self_attn"))
        km.linear(f"{b}.linear1", (*bp, "linear1"))
        km.linear(f"{b}.linear2", (*bp, "linear2"))
        for n in ("norm1", "norm2", "norm3"):
            km.norm(f"{b}.{n}", (*bp, n))
    return km


def _state_dict(obj) -> dict:
    from peanut_jax.convert.reader import unwrap_state_dict

    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    sd = unwrap_state_dict(obj)
    if any(k.startswith("module.") for k in sd):
        sd = {(k.removeprefix("module.")): v for k, v in sd.items()}
    return sd


def detect_config(obj) -> dict | None:
    """``build_samwise`` keyword arguments read from a SAMWISE state dict (Hiera size, HSA and its
    patch sizes, adapter width, CME present, text encoder sizes); None if it is not SAMWISE."""
    sd = _state_dict(obj)
    if not any(k.startswith("sam.") for k in sd) or not any(k.startswith("text_encoder.") for k in sd):
        return None
    found = sam2_conv.detect_config(strip_prefix(sd, "sam."))
    if found is None:
        return None
    kw = {"sam2_size": found[0]}
    if found[1] != "2.0":
        raise CheckpointMismatchError("SAMWISE is built on SAM 2 v1.0; this checkpoint holds SAM 2.1 keys")
    kw["hsa"] = "cmt_adapters.0.hsa.self_attn.in_proj_weight" in sd
    if kw["hsa"]:
        kw["hsa_patch_sizes"] = tuple(
            int(round(np.shape(sd[f"cmt_adapters.{i}.spatial_pos_embed"])[3] ** 0.5))
            for i in range(3)
            if f"cmt_adapters.{i}.spatial_pos_embed" in sd
        )
    if "cmt_adapters.0.proj_text_down.0.weight" in sd:
        kw["adapter_dim"], kw["text_dim"] = (int(s) for s in np.shape(sd["cmt_adapters.0.proj_text_down.0.weight"]))
    kw["use_cme"] = any(k.startswith(_CME) for k in sd)
    if kw["use_cme"] and f"{_CME}transformerBlock.linear1.weight" in sd:
        kw["cme_ffn"] = int(np.shape(sd[f"{_CME}transformerBlock.linear1.weight"])[0])
    text = {k[len(TEXT_PREFIX) :]: v for k, v in sd.items() if k.startswith(TEXT_PREFIX)}
    layers = {int(k.split(".")[1]) for k in text if k.startswith("layers.")}
    if layers:
        kw["text_layers"] = max(layers) + 1
    if "embed_tokens.weight" in text:
        kw["vocab_size"], kw["text_dim"] = (int(s) for s in np.shape(text["embed_tokens.weight"]))
    if "embed_positions.weight" in text:
        kw["max_positions"] = int(np.shape(text["embed_positions.weight"])[0])
    if "layers.0.fc1.weight" in text:
        kw["text_ffn"] = int(np.shape(text["layers.0.fc1.weight"])[0])
    return kw


def detect(obj) -> str | None:
    try:
        return "samwise" if detect_config(obj) else None
    except Exception:
        return None


@functools.lru_cache(maxsize=8)
def _reference_variables(module) -> dict:
    """Variable shapes of ``module`` (traced once per configuration; modules hash by their fields)."""
    s = module.cfg.sam2.image_size
    return jax.eval_shape(
        module.init,
        jax.random.PRNGKey(0),
        jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32),
        jax.ShapeDtypeStruct((1, 4), jnp.int32),
    )


def from_state_dict(
    obj,
    name: str = "samwise",
    source: str = "checkpoint",
    dtype=jnp.float32,
    motion_from_text: bool = False,
    **overrides,
):
    """Official SAMWISE checkpoint -> ``(SAMWISE, {'params', 'batch_stats'})``.  Sizes come from the
    file (``detect_config``); ``overrides`` (e.g. ``use_cme=False``, ``attend_text_padding=True``,
    ``motion_prompt=True``) go to ``build_samwise``.  Missing adapter/CME/``project_text`` (and, with
    ``motion_prompt``, ``project_motion_prompts``) keys raise :class:`CheckpointMismatchError` naming
    them.  ``motion_from_text=True`` (only with ``motion_prompt=True``) fills missing
    ``project_motion_prompts`` keys with a copy of ``project_text`` (official ``main.py`` before
    training); keys the file has are loaded as they are."""
    from peanut_jax.models.samwise import build_samwise

    if name != "samwise":
        raise ValueError(f"convert.samwise: unknown model {name!r} (expected 'samwise')")
    sd = _state_dict(obj)
    found = detect_config(sd)
    if found is None:
        raise CheckpointMismatchError(
            f"{source} is not a SAMWISE checkpoint (no sam.* SAM 2 keys with a text_encoder.* RoBERTa)"
        )
    kw = dict(found)
    if kw.get("use_cme") is False:
        kw.pop("use_cme")  # a file without CME keys fails below unless use_cme=False is asked
    kw.update(overrides)
    module = build_samwise(dtype=dtype, **kw)
    cfg = module.cfg
    if motion_from_text:
        if not cfg.motion_prompt:
            raise ValueError("convert.samwise: motion_from_text=True needs motion_prompt=True")
        sd = dict(sd)
        for k in [k for k in sd if k.startswith(PROJECT_TEXT)]:
            sd.setdefault(PROJECT_MOTION + k[len(PROJECT_TEXT) :], sd[k])
    ref = _reference_variables(module)
    variables = keymap(cfg).apply(
        sd,
        ref,
        model=f"samwise (hiera {cfg.sam2_size})",
        source=source,
        ignore=lambda k: _ignored(k, cfg.use_cme),
    )
    return module, variables


def to_state_dict(variables, name: str = "samwise", cfg=None, module=None, **_) -> dict[str, np.ndarray]:
    """Our variables -> the official flat state dict (what ``{'model': ...}`` holds; no ``lm_head``,
    no ``num_batches_tracked``).  ``cfg`` (or ``module``) defaults to ``detect`` from the variables."""
    if cfg is None and module is not None:
        cfg = module.cfg
    if cfg is None:
        cfg = _config_of_variables(variables)
    return keymap(cfg).invert(variables)


def _config_of_variables(variables):
    from peanut_jax.models.samwise.config import get_config

    params = variables["params"]
    sam_cfg = sam2_conv.config_of_params(params["sam"])
    a0 = params["cmt_adapters_0"]
    hsa = "hsa_self_attn" in a0
    kw = dict(
        hsa=hsa,
        use_cme="conditional_memory_encoder" in params,
        motion_prompt="project_motion_prompts" in params,
        adapter_dim=int(a0["proj_text_down_0"]["kernel"].shape[1]),
    )
    if hsa:
        kw["hsa_patch_sizes"] = tuple(
            int(round(params[f"cmt_adapters_{i}"]["spatial_pos_embed"].shape[0] ** 0.5)) for i in range(3)
        )
    te = params["text_encoder"]
    kw.update(
        text_layers=sum(1 for k in te if k.startswith("layers_")),
        vocab_size=int(te["embed_tokens"]["embedding"].shape[0]),
        text_dim=int(te["embed_tokens"]["embedding"].shape[1]),
        max_positions=int(te["embed_positions"]["embedding"].shape[0]),
        text_ffn=int(te["layers_0"]["fc1"]["kernel"].shape[1]),
    )
    return get_config(sam_cfg.size, **kw)
