"""The exported-weights folder: ``model.json`` (model name, constructor kwargs, metadata) +
``params.safetensors``.  ``train.py`` runs, the converted registry cache and the bundled demo
weights all use it; this module writes and reads it."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
from collections.abc import Callable

import numpy as np

EXPORT_CONFIG = "model.json"
EXPORT_PARAMS = "params.safetensors"


def export_weights(
    directory,
    name: str,
    module_kwargs: dict,
    params,
    metadata: dict | None = None,
    dtype=np.float32,
    collections: dict | None = None,
) -> pathlib.Path:
    """Write ``params`` of model ``name`` as ``model.json`` + ``params.safetensors`` (atomic).
    Other variable collections (``collections``, e.g. ``{"batch_stats": ...}``) go into the same file
    under keys ``@<collection>/...``; they keep float32."""
    from flax.traverse_util import flatten_dict

    from peanut_jax.convert.reader import save_safetensors

    d = pathlib.Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    flat = {"/".join(k): np.asarray(v).astype(dtype) for k, v in flatten_dict(_to_plain(params)).items()}
    for coll, tree in (collections or {}).items():
        for k, v in flatten_dict(_to_plain(tree)).items():
            flat["/".join((f"@{coll}",) + k)] = np.asarray(v, np.float32)
    save_safetensors(d / EXPORT_PARAMS, flat)
    cfg = {"model": name, "kwargs": module_kwargs, "metadata": metadata or {}}
    tmp = d / (EXPORT_CONFIG + ".tmp")
    tmp.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    os.replace(tmp, d / EXPORT_CONFIG)
    return d


def _to_plain(tree):
    """Nested mappings (FrozenDict, ...) as plain dicts."""
    if hasattr(tree, "items"):
        return {k: _to_plain(v) for k, v in tree.items()}
    return tree


def load_exported(directory):
    """(name, module, variables, metadata) from an :func:`export_weights` directory."""
    from flax.traverse_util import unflatten_dict

    from peanut_jax.convert.reader import load_checkpoint
    from peanut_jax.models import build

    d = pathlib.Path(directory)
    cfg = json.loads((d / EXPORT_CONFIG).read_text())
    flat = load_checkpoint(d / EXPORT_PARAMS)
    by_coll: dict = {}
    for k, v in flat.items():
        coll, _, rest = k[1:].partition("/") if k.startswith("@") else ("params", "", k)
        by_coll.setdefault(coll, {})[tuple(rest.split("/"))] = np.asarray(v, np.float32)
    variables = {coll: unflatten_dict(tree) for coll, tree in by_coll.items()}
    variables.setdefault("params", {})
    module = build(cfg["model"], **lists_to_tuples(cfg.get("kwargs", {})))
    return cfg["model"], module, variables, cfg.get("metadata", {})


def lists_to_tuples(v):
    """JSON lists back to the tuples the modules and configs were built with (modules must stay
    hashable: jitted stage functions take them as static arguments)."""
    if isinstance(v, dict):
        return {k: lists_to_tuples(x) for k, x in v.items()}
    return tuple(lists_to_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v


def hashable(module):
    """``module`` with list-valued fields turned into tuples (see :func:`lists_to_tuples`)."""
    fix = {
        f.name: lists_to_tuples(getattr(module, f.name))
        for f in dataclasses.fields(module)
        if f.init and f.name not in ("parent", "name") and isinstance(getattr(module, f.name), list)
    }
    return module.clone(**fix) if fix else module


def _jsonable(value, field: str):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [_jsonable(v, field) for v in value]
    raise ValueError(f"cannot record the module field {field}={value!r} in model.json")


def module_kwargs(model: str, module) -> dict:
    """Constructor arguments of ``module`` that differ from ``build(model)``'s defaults (a module
    with a ``build_kwargs()`` method, e.g. SAM 2 with its configuration, describes itself)."""
    from peanut_jax.models import build

    if hasattr(module, "build_kwargs"):
        return {k: _jsonable(v, k) for k, v in module.build_kwargs().items()}
    default = build(model)
    if type(default) is not type(module):
        raise ValueError(
            f"the converter for {model!r} returned a {type(module).__name__}, not a {type(default).__name__}"
        )
    out = {}
    for f in dataclasses.fields(module):
        if f.name in ("parent", "name") or not f.init:
            continue
        value, ref = getattr(module, f.name), getattr(default, f.name)
        try:
            same = bool(value == ref)
        except Exception:
            same = False
        if not same:
            out[f.name] = _jsonable(value, f.name)
    return out


def registry_name(module) -> str:
    """The model name (``models.build``) of a trained stage module: E2FGVI(-HQ), BasicVSR++, RIFE,
    SAMWISE."""
    cls = type(module).__name__
    if cls == "InpaintGenerator":
        return "e2fgvi_hq" if module.hq else "e2fgvi"
    names = {"BasicVSRPlusPlus": "basicvsr_pp", "IFNet": "rife", "IFNetHDv3": "rife_hdv3", "SAMWISE": "samwise"}
    if cls not in names:
        raise ValueError(f"no demo stage uses a {cls}")
    return names[cls]


def abstract_variables(module, name: str) -> dict:
    """Variable shapes of ``module``, every collection (eval_shape of its init at a small valid input)."""
    import jax
    import jax.numpy as jnp

    key = jax.random.key(0)
    if name == "samwise":  # one frame at the model's input size initialises every parameter
        s = module.cfg.sam2.image_size
        x = jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32)
        return jax.eval_shape(module.init, key, x, jax.ShapeDtypeStruct((1, 4), jnp.int32))
    if name.startswith("e2fgvi"):
        x = jax.ShapeDtypeStruct((1, 2, 60, 108, 3), jnp.float32)
        return jax.eval_shape(lambda k, a: module.init(k, a, 2), key, x)
    if name == "basicvsr_pp":
        x = jax.ShapeDtypeStruct((1, 2, 64, 64, 3), jnp.float32)
        return jax.eval_shape(lambda k, a: module.init(k, a, is_mirror_extended=False), key, x)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    return jax.eval_shape(module.init, key, x, x)


def read_json(path) -> dict:
    """A JSON object file (``model.json``, download state), or ``{}`` when it is missing or unreadable."""
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _workdir_config(workdir) -> dict:
    """The ``config.json`` a ``train.py`` run wrote in ``workdir`` (as JSON: lists, not tuples)."""
    cfg_path = pathlib.Path(workdir) / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{workdir}: no config.json (not a train.py work directory)")
    return json.loads(cfg_path.read_text())


def export_trained(
    workdir, out_dir, make_model: Callable, step: int | None = None, dtype: str = "float16"
) -> pathlib.Path:
    """Export the variables of a ``train.py`` run (its last orbax checkpoint, or ``step``: the
    parameters, and the other collections the module has, e.g. SAMWISE's ``batch_stats``) as demo
    weights (:func:`export_weights`) with the training config, step and last evaluation metrics in
    the metadata.  ``make_model(config)`` builds the trained module from the run's ``config.json``
    (an ``ml_collections.ConfigDict``; the trainer's task ``make_model``: this package does not
    import the trainer).  ``dtype``: the stored precision (float16 halves the size of what we ship;
    loading gives float32 again)."""
    import jax
    import ml_collections
    from flax.traverse_util import flatten_dict

    from peanut_jax.checkpoints.orbax import read_tree, variables_of

    workdir = pathlib.Path(workdir)
    raw = _workdir_config(workdir)
    config = ml_collections.ConfigDict(lists_to_tuples(raw))
    module = make_model(config)
    name = registry_name(module)
    tree = read_tree(workdir, step)
    variables = variables_of(tree, workdir)
    # the checkpoint must fit the module exactly (collections, names and shapes)
    ref = flatten_dict(jax.tree.map(lambda a: a.shape, dict(abstract_variables(module, name))))
    got = flatten_dict(jax.tree.map(lambda a: np.shape(a), variables))
    if set(ref) != set(got) or any(tuple(ref[k]) != tuple(got[k]) for k in ref):
        diff = sorted(set(ref) ^ set(got))[:3] or [k for k in ref if tuple(ref[k]) != tuple(got[k])][:3]
        raise ValueError(
            f"{workdir}: checkpoint variables do not fit {name} {module_kwargs(name, module)}: "
            f"{['/'.join(map(str, k)) for k in diff]}"
        )
    last_eval = {}
    mfile = workdir / "metrics.jsonl"
    if mfile.is_file():
        for line in mfile.read_text().splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if rec.get("split") == "eval" or any(str(k).startswith("eval") for k in rec):
                    last_eval = rec
    meta = {
        "trained_with": "train.py",
        "task": config.task,
        "step": int(np.asarray(tree.get("step", -1))),
        "stored_dtype": dtype,
        "config": raw,
        "last_eval": last_eval,
    }
    others = {c: v for c, v in variables.items() if c != "params"}
    return export_weights(
        out_dir,
        name,
        module_kwargs(name, module),
        variables["params"],
        metadata=meta,
        dtype=np.dtype(dtype),
        collections=others,
    )
