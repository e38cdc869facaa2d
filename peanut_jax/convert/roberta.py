"""fairseq RoBERTa checkpoints -> :class:`peanut_jax.models.roberta.RobertaEncoder` (``roberta_base``).

Accepted layouts (the prefix of the sentence-encoder keys picks the layout):

* ``fairseq`` -- the 2019 ``roberta.base/model.pt`` (``{'args', 'model', ...}``): keys
  ``decoder.sentence_encoder.*``, ``emb_layer_norm``, packed ``self_attn.in_proj_weight/bias``
  (q, k, v stacked on the output axis), possibly the older ``layer_norms.{0,1}`` names;
* ``fairseq_upgraded`` -- the same after fairseq's ``upgrade_state_dict_named``:
  ``encoder.sentence_encoder.*``, ``layernorm_embedding``, separate ``q/k/v_proj``;
* ``samwise`` -- a SAMWISE checkpoint (``{'model': ...}``, ``module.`` stripped): the encoder lives
  under ``text_encoder.model.encoder.sentence_encoder.*``; every key outside ``text_encoder.`` (SAM 2,
  adapters, CME) is ignored here.

Old and upgraded names may be mixed (each is renamed the way fairseq's upgrade does).  Always
ignored: ``lm_head.*``, ``_float_tensor`` and ``version`` buffers.  Anything else that does not
map onto the encoder is an error (:class:`CheckpointMismatchError` lists missing, unexpected and
mis-shaped keys).  Sizes (layers, width, FFN, vocabulary, position table) are read from the file;
the number of heads cannot be, so it is the model default (12) unless ``heads=`` is given.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

from peanut_jax.convert.common import CheckpointMismatchError, KeyMap, format_mismatch, strip_prefix

__all__ = ["LAYOUTS", "detect", "from_state_dict", "keymap", "to_state_dict"]

LAYOUTS = {
    "samwise": "text_encoder.model.encoder.sentence_encoder.",
    "fairseq_upgraded": "encoder.sentence_encoder.",
    "fairseq": "decoder.sentence_encoder.",
}
_SAMWISE_ROOT = "text_encoder."
_LAYER_RE = re.compile(r"^layers\.(\d+)\.")


def _ignored(key: str) -> bool:
    return (
        key.endswith("_float_tensor")
        or key == "version"
        or key.endswith(".version")
        or key.startswith("lm_head.")
        or ".lm_head." in key
    )


def _state_dict(obj) -> dict:
    from peanut_jax.convert.reader import unwrap_state_dict

    sd = unwrap_state_dict(obj)
    if sd and all(k.startswith("module.") for k in sd):
        sd = strip_prefix(sd, "module.")
    return sd


def _layout(sd) -> str | None:
    found = [name for name, p in LAYOUTS.items() if any(k.startswith(p) for k in sd)]
    if len(found) > 1:
        raise CheckpointMismatchError(f"RoBERTa: keys of several layouts in one checkpoint: {found}")
    return found[0] if found else None


def detect(obj) -> str | None:
    """``'roberta_base'`` for a fairseq RoBERTa file (either naming); None otherwise (a SAMWISE
    checkpoint holds a RoBERTa too, but it is a ``samwise`` file)."""
    try:
        sd = _state_dict(obj)
        layout = _layout(sd)
    except Exception:
        return None
    if layout in ("fairseq", "fairseq_upgraded") and not any(k.startswith(_SAMWISE_ROOT) for k in sd):
        return "roberta_base"
    return None


# ---------------------------------------------------------------------------------------------


def keymap(num_layers: int, prefix: str = "") -> KeyMap:
    """The (upgraded fairseq key, our param path) rules, keys prefixed with ``prefix``."""
    km = KeyMap()
    km.add(f"{prefix}embed_tokens.weight", ("embed_tokens", "embedding"))
    km.add(f"{prefix}embed_positions.weight", ("embed_positions", "embedding"))
    km.norm(f"{prefix}layernorm_embedding", ("layernorm_embedding",))
    for i in range(num_layers):
        t, p = f"{prefix}layers.{i}", f"layers_{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            km.linear(f"{t}.self_attn.{proj}", (p, "self_attn", proj))
        km.norm(f"{t}.self_attn_layer_norm", (p, "self_attn_layer_norm"))
        km.linear(f"{t}.fc1", (p, "fc1"))
        km.linear(f"{t}.fc2", (p, "fc2"))
        km.norm(f"{t}.final_layer_norm", (p, "final_layer_norm"))
    return km


def _upgrade(rel: dict, shape_err: list, prefix: str) -> dict:
    """fairseq's renames on keys relative to the sentence encoder: ``emb_layer_norm`` ->
    ``layernorm_embedding``, ``layer_norms.{0,1}`` -> ``self_attn_layer_norm``/``final_layer_norm``,
    packed ``in_proj_weight``/``in_proj_bias`` -> ``q/k/v_proj``."""
    out = {}
    for k, v in rel.items():
        nk = k
        if nk.startswith("emb_layer_norm."):
            nk = "layernorm_embedding." + nk[len("emb_layer_norm.") :]
        nk = re.sub(r"^(layers\.\d+)\.layer_norms\.0\.", r"\1.self_attn_layer_norm.", nk)
        nk = re.sub(r"^(layers\.\d+)\.layer_norms\.1\.", r"\1.final_layer_norm.", nk)
        m = re.match(r"^(layers\.\d+\.self_attn)\.in_proj_(weight|bias)$", nk)
        if m:
            arr = np.asarray(v)
            if arr.ndim == 0 or arr.shape[0] % 3:
                shape_err.append(f"{prefix}{k}: {tuple(arr.shape)} is not three stacked q, k, v projections")
                continue
            d = arr.shape[0] // 3
            for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):
                _put(out, f"{m.group(1)}.{proj}.{m.group(2)}", arr[j * d : (j + 1) * d], prefix, k)
            continue
        _put(out, nk, v, prefix, k)
    return out


def _put(out: dict, key: str, value, prefix: str, origin: str) -> None:
    if key in out:
        raise CheckpointMismatchError(f"RoBERTa: {prefix}{origin} and another key both give {prefix}{key}")
    out[key] = value


def _config(rel: dict, overrides: dict) -> dict:
    layers = [int(m.group(1)) for k in rel if (m := _LAYER_RE.match(k))]
    kw = {}
    if layers:
        kw["num_layers"] = max(layers) + 1
    if "embed_tokens.weight" in rel:
        kw["vocab_size"], kw["dim"] = (int(s) for s in np.shape(rel["embed_tokens.weight"]))
    if "embed_positions.weight" in rel:
        kw["max_positions"] = int(np.shape(rel["embed_positions.weight"])[0])
    if "layers.0.fc1.weight" in rel:
        kw["ffn"] = int(np.shape(rel["layers.0.fc1.weight"])[0])
    kw.update(overrides)
    return kw


def _reference_params(module) -> dict:
    ids = jax.ShapeDtypeStruct((1, 4), jnp.int32)
    return jax.eval_shape(module.init, jax.random.key(0), ids)["params"]


def from_state_dict(obj, name: str = "roberta_base", source: str = "checkpoint", **overrides):
    """A fairseq RoBERTa ``model.pt`` or a SAMWISE checkpoint (loaded object or flat dict) ->
    ``(RobertaEncoder, variables)``.  ``overrides`` go to the module (e.g. ``heads=``, ``dtype=``)."""
    from peanut_jax.models.roberta import RobertaEncoder

    if name != "roberta_base":
        raise ValueError(f"convert.roberta: unknown model {name!r} (expected 'roberta_base')")
    sd = _state_dict(obj)
    layout = _layout(sd)
    if layout is None:
        raise CheckpointMismatchError(
            f"{source} holds no RoBERTa sentence encoder: no key starts with any of "
            f"{', '.join(repr(p) for p in LAYOUTS.values())} (first keys: {list(sd)[:5]})"
        )
    prefix = LAYOUTS[layout]
    shape_err: list[str] = []
    rel = _upgrade({k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}, shape_err, prefix)
    # the keys the strict check sees: the encoder (upgraded names) + what else belongs to the file's model
    others = {
        k: v for k, v in sd.items() if not k.startswith(prefix) and (layout != "samwise" or k.startswith(_SAMWISE_ROOT))
    }
    kw = _config(rel, overrides)
    module = RobertaEncoder(**kw)
    if module.dim % module.heads:
        raise CheckpointMismatchError(
            f"{source}: width {module.dim} is not divisible by heads={module.heads}; pass heads="
        )
    km = keymap(module.num_layers, prefix)
    full = {prefix + k: v for k, v in rel.items()}
    full.update(others)
    try:
        params = km.apply(
            full, _reference_params(module), model=f"roberta_base ({layout} layout)", source=source, ignore=_ignored
        )
    except CheckpointMismatchError as e:
        if shape_err:
            raise CheckpointMismatchError(f"{e}\n  packed projections: " + ", ".join(shape_err)) from None
        raise
    if shape_err:
        raise CheckpointMismatchError(format_mismatch(f"roberta_base ({layout} layout)", source, [], [], shape_err))
    return module, {"params": params}


def to_state_dict(variables, name: str = "roberta_base", layout: str = "samwise", **_) -> dict[str, np.ndarray]:
    """Our variables -> a state dict in ``layout``: ``'samwise'`` (``text_encoder.model.encoder.
    sentence_encoder.*``), ``'fairseq_upgraded'`` (``encoder.sentence_encoder.*``) or ``'fairseq'``
    (the 2019 file: ``decoder.sentence_encoder.*``, ``emb_layer_norm``, packed ``in_proj_*``).
    No ``lm_head`` (not part of the encoder)."""
    if layout not in LAYOUTS:
        raise ValueError(f"convert.roberta: unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    params = variables["params"] if "params" in variables else variables
    num_layers = len([k for k in params if k.startswith("layers_")])
    rel = {k: np.asarray(v) for k, v in keymap(num_layers).invert(params).items()}
    if layout == "fairseq":
        packed = {}
        for k, v in rel.items():
            if k.startswith("layernorm_embedding."):
                packed["emb_layer_norm." + k[len("layernorm_embedding.") :]] = v
                continue
            m = re.match(r"^(layers\.\d+\.self_attn)\.q_proj\.(weight|bias)$", k)
            if m:
                base, kind = m.groups()
                packed[f"{base}.in_proj_{kind}"] = np.concatenate(
                    [rel[f"{base}.{p}.{kind}"] for p in ("q_proj", "k_proj", "v_proj")], axis=0
                )
                continue
            if re.match(r"^layers\.\d+\.self_attn\.[kv]_proj\.", k):
                continue
            packed[k] = v
        rel = packed
    prefix = LAYOUTS[layout]
    return {prefix + k: np.ascontiguousarray(v) for k, v in rel.items()}
