"""Helpers shared by the stage runners: loading weights, exporting trained weights, CLI errors.

Weights can come from
  * an official checkpoint file (``.pth``/``.pt``/``.pkl``/``.safetensors``) -> ``from_official``;
  * an exported directory written by :func:`export_weights` (``model.json`` + ``params.safetensors``),
    which is what ``train.py`` produces at the end of a run and what the bundled demo weights are;
  * an orbax checkpoint directory of ``train.py`` (a step folder or the ``checkpoints`` folder; the
    latest step is used), restored without a target (the ``params`` item is taken).
"""
from __future__ import annotations

import json
import os
import pathlib
import sys
from typing import Any

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

EXPORT_CONFIG = "model.json"
EXPORT_PARAMS = "params.safetensors"
OFFICIAL_SUFFIXES = (".pth", ".pt", ".pkl", ".ckpt", ".bin", ".safetensors")


def export_weights(directory, name: str, module_kwargs: dict, params, metadata: dict | None = None,
                   dtype=np.float32) -> pathlib.Path:
    """Write ``params`` of model ``name`` as ``model.json`` + ``params.safetensors`` (atomic)."""
    from peanut_jax.convert.reader import save_safetensors
    d = pathlib.Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    flat = {"/".join(k): np.asarray(v).astype(dtype) for k, v in flatten_dict(_to_plain(params)).items()}
    save_safetensors(d / EXPORT_PARAMS, flat)
    cfg = {"model": name, "kwargs": module_kwargs, "metadata": metadata or {}}
    tmp = d / (EXPORT_CONFIG + ".tmp")
    tmp.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    os.replace(tmp, d / EXPORT_CONFIG)
    return d


def _to_plain(tree):
    if hasattr(tree, "items"):
        return {k: _to_plain(v) for k, v in tree.items()}
    return tree


def load_exported(directory):
    """(name, module, variables, metadata) from an :func:`export_weights` directory."""
    from peanut_jax.convert.reader import load_checkpoint
    from peanut_jax.models import build
    d = pathlib.Path(directory)
    cfg = json.loads((d / EXPORT_CONFIG).read_text())
    flat = load_checkpoint(d / EXPORT_PARAMS)
    params = unflatten_dict({tuple(k.split("/")): np.asarray(v, np.float32) for k, v in flat.items()})
    module = build(cfg["model"], **cfg.get("kwargs", {}))
    return cfg["model"], module, {"params": params}, cfg.get("metadata", {})


def _restore_orbax(path: pathlib.Path):
    from peanut_jax.train.checkpoint import load_tree
    tree = load_tree(path)
    if "params" not in tree:
        raise ValueError(f"{path}: orbax checkpoint has no 'params' item")
    return tree["params"]


def export_from_workdir(workdir, out, name: str, module_kwargs: dict | None = None, step: int | None = None,
                        metadata: dict | None = None) -> pathlib.Path:
    """Export the params of a ``train.py`` workdir's latest (or given) checkpoint with
    :func:`export_weights`, recording the training step and config."""
    from peanut_jax.train.checkpoint import load_tree
    tree = load_tree(workdir, step)
    meta = {"trained_steps": int(np.asarray(tree.get("step", -1))), "workdir_config": None}
    cfg = pathlib.Path(workdir) / "config.json"
    if cfg.exists():
        meta["workdir_config"] = json.loads(cfg.read_text())
    meta.update(metadata or {})
    return export_weights(out, name, module_kwargs or {}, tree["params"], meta)


def resolve_weights(checkpoint, name: str | None = None):
    """A ``--checkpoint`` value as a loadable path: registry names (``python -m peanut_jax.weights
    list``) become their converted cache directory (fetched first unless ``PEANUT_OFFLINE``); an
    existing file/directory, or anything that looks like a path, is returned unchanged."""
    if isinstance(checkpoint, str) and checkpoint and not pathlib.Path(checkpoint).expanduser().exists():
        from peanut_jax import weights
        if not weights._looks_like_path(checkpoint):
            return weights.resolve_checkpoint(checkpoint, name)
    return checkpoint


def load_model(name: str, checkpoint, **overrides) -> tuple[Any, dict]:
    """(module, variables) of model ``name`` from an official file, an exported dir, an orbax dir or a
    weight-registry name."""
    from peanut_jax.models import build
    path = pathlib.Path(resolve_weights(checkpoint, name))
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        if (path / EXPORT_CONFIG).exists():
            got, module, variables, _ = load_exported(path)
            if got.split("_")[0] != name.split("_")[0]:
                raise ValueError(f"{path}: holds weights of model {got!r}, not {name!r}")
            return (module.clone(**overrides) if overrides else module), variables
        params = _restore_orbax(path)
        return build(name, **overrides), {"params": params}
    from peanut_jax.convert import from_official
    return from_official(name, path, **overrides)


def fail(message: str, code: int = 2):
    """Print one clear line to stderr and exit non-zero (CLI error path)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def bundled_asset(*parts) -> pathlib.Path:
    """Path of a file shipped inside the package (demo weights)."""
    return pathlib.Path(__file__).resolve().parents[1].joinpath("assets", *parts)
