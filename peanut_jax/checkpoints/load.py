"""The one model-loading door: ``load(spec, family=None, **overrides) -> (module, variables)``
for weight-registry names, official checkpoint files, exported folders and orbax workdirs.
Every kind gets the same family check and a hashable (jit-static) module."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import pathlib
from typing import Any

from peanut_jax.checkpoints import registry
from peanut_jax.checkpoints.download import resolve_checkpoint
from peanut_jax.checkpoints.export import EXPORT_CONFIG, hashable, lists_to_tuples, load_exported
from peanut_jax.checkpoints.families import FAMILIES, check_family, family
from peanut_jax.checkpoints.orbax import read_variables

__all__ = [
    "build_recorded",
    "detect_official",
    "load",
    "load_model",
    "recorded_model",
    "resolve",
    "workdir_config",
    "workdir_model",
]


def resolve(spec, model: str | None = None, flag: str = "--checkpoint", progress: bool = True):
    """A ``--checkpoint`` value as a loadable path: registry names (``python -m peanut_jax.weights
    list``) become their converted cache directory (fetched first unless ``PEANUT_OFFLINE``) or
    their bundled folder; an existing file/directory, or anything that looks like a path, is
    returned unchanged.  Weights that cannot be had now (manual download, offline) raise
    :class:`~peanut_jax.checkpoints.registry.DownloadError` with one line saying what to do,
    naming ``flag``.  ``model``: the weights must be of its family."""
    if isinstance(spec, str) and spec and not pathlib.Path(spec).expanduser().exists():
        if not registry.looks_like_path(spec):
            try:
                return resolve_checkpoint(spec, model, progress=progress)
            except registry.DownloadError as err:
                demo = registry.DEMO_WEIGHTS.get(family(model or registry.get(spec).model))
                hint = f"; or run offline with the bundled demo weights: {flag} {demo}" if demo else ""
                raise type(err)(f"{flag} {spec}: {err}{hint}") from None
            except (ValueError, FileNotFoundError) as err:
                raise type(err)(f"{flag} {spec}: {err}") from None
    return spec


def workdir_config(path) -> dict | None:
    """The ``config.json`` (as a dict) of the ``train.py`` workdir holding the orbax checkpoint
    ``path`` (a workdir, its ``checkpoints`` folder or a step folder); None when there is none or
    it cannot be read."""
    path = pathlib.Path(path).expanduser()
    for d in [path, *list(path.resolve().parents)[:3]]:
        f = d / "config.json"
        if f.is_file():
            try:
                cfg = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                return None
            return cfg if isinstance(cfg, dict) else None
    return None


def workdir_model(path: pathlib.Path) -> tuple[str, dict] | None:
    """(model name, constructor kwargs) recorded in the ``config.json`` of the ``train.py`` workdir
    holding the orbax checkpoint ``path`` (see :func:`workdir_config`)."""
    cfg = workdir_config(path)
    model = cfg.get("model") if cfg is not None else None
    if not isinstance(model, dict):
        return None
    return str(model.get("name") or cfg.get("task") or ""), model


def _detectors():
    import importlib

    from peanut_jax.models import converter_module

    return {f.name: importlib.import_module(converter_module(f.model)) for f in FAMILIES.values() if f.detect}


def detect_official(name: str, path: pathlib.Path) -> str:
    """Model name of an official checkpoint file of family ``name`` (E2FGVI vs -HQ, ECCV IFNet vs
    HDv3), checked against the family; ``name`` when the converter cannot tell."""
    from peanut_jax.convert.reader import load_checkpoint

    detectors = _detectors()
    mod = detectors.get(family(name))
    if mod is None:
        return name
    obj = load_checkpoint(path)
    got = mod.detect(obj)
    if got is None:
        for fam, other in detectors.items():
            if fam != family(name):
                found = other.detect(obj)
                if found:
                    check_family(found, name, path)
        return name
    check_family(got, name, path)
    if got.endswith("_discriminator"):
        raise ValueError(f"{path}: holds a {got} checkpoint (a discriminator), not the {name} generator")
    return got if family(name) != family("spynet") else name


def recorded_model(path) -> str | None:
    """The model a checkpoint says it holds without being told: an exported folder's ``model.json``,
    an orbax workdir's ``config.json`` or an official file a converter recognises; None otherwise."""
    path = pathlib.Path(path)
    if path.is_dir():
        if (path / EXPORT_CONFIG).is_file():
            return str(json.loads((path / EXPORT_CONFIG).read_text()).get("model") or "") or None
        rec = workdir_model(path)
        return rec[0] if rec and rec[0] else None
    if path.is_file():
        from peanut_jax.convert.reader import load_checkpoint

        obj = load_checkpoint(path)
        for mod in _detectors().values():
            found = mod.detect(obj)
            if found:
                return found
    return None


def load_model(name: str, checkpoint, **overrides) -> tuple[Any, dict]:
    """(module, variables) of a model of ``name``'s family from any checkpoint kind (see :func:`load`)."""
    return _load_path(name, pathlib.Path(resolve(checkpoint, name)), **overrides)


def _load_path(name: str, path: pathlib.Path, **overrides) -> tuple[Any, dict]:
    from peanut_jax.models import build

    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        if (path / EXPORT_CONFIG).exists():
            got, module, variables, _ = load_exported(path)
            check_family(got, name, path)
            return hashable(module.clone(**overrides) if overrides else module), variables
        variables = read_variables(path)
        recorded = workdir_model(path)
        if recorded is not None and recorded[0]:
            got, kwargs = recorded
            check_family(got, name, path)
            module = build_recorded(got, kwargs, **overrides)
        else:
            module = build(name, **overrides)
        return hashable(module), variables
    from peanut_jax.convert import from_official

    module, variables = from_official(detect_official(name, path), path, **overrides)
    return hashable(module), variables


_NOT_RECORDED = {"dtype", "param_dtype", "parent", "name"}  # inference runs in float32


def _init_fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init} - {"parent", "name"}


def build_recorded(model: str, recorded: dict, **overrides):
    """Module ``model`` built from a ``train.py`` run's ``config.model`` (``recorded``, as read from its
    ``config.json``).  The keys used are the arguments of ``models.build(model)``: a module class's
    fields; for a factory (``build_samwise``, ``build_sam2``) its named parameters, plus the fields of
    the module's configuration dataclass (``cfg``) when the factory forwards ``**overrides`` to it,
    plus module fields the factory does not take (SAMWISE ``hiera_per_frame``), set on the built
    module.  Other keys (training options: ``trainable``, ``init_from``, ...) and the recorded
    ``dtype``/``param_dtype`` are ignored; ``overrides`` are used the same way, all of them."""
    from peanut_jax.models import build, model_class

    kw = {k: lists_to_tuples(v) for k, v in recorded.items() if k not in _NOT_RECORDED}
    cls = model_class(model)
    if dataclasses.is_dataclass(cls):
        fields = _init_fields(cls)
        return build(model, **{k: v for k, v in kw.items() if k in fields}, **overrides)
    params = inspect.signature(cls).parameters.values()
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    default = build(model)
    cfg = getattr(default, "cfg", None)
    if any(p.kind is p.VAR_KEYWORD for p in params) and dataclasses.is_dataclass(cfg):
        named |= {f.name for f in dataclasses.fields(cfg)}
    later = _init_fields(type(default)) - named if dataclasses.is_dataclass(default) else set()
    kw = {k: v for k, v in kw.items() if k in named or k in later}
    kw.update(overrides)
    module = build(model, **{k: v for k, v in kw.items() if k not in later})
    fix = {k: v for k, v in kw.items() if k in later}
    return module.clone(**fix) if fix else module


def load(
    spec,
    family: str | None = None,
    *,
    flag: str | None = None,
    progress: bool = True,
    dtype: str | None = None,
    precision: str | None = None,
    **overrides,
) -> tuple[Any, dict]:
    """``(module, variables)`` from ``spec``: a registry name (``python -m peanut_jax.weights
    list``, including the bundled ``*_demo`` weights; fetched and converted once), an official
    checkpoint file, an exported folder (``model.json`` + ``params.safetensors``) or an orbax
    ``train.py`` workdir / checkpoint folder (the module built from the run's ``config.json`` by
    :func:`build_recorded`; the variables: ``params`` and the collections the training state keeps,
    e.g. SAMWISE's ``batch_stats``, see ``peanut_jax.checkpoints.orbax.read_variables``).

    ``family``: a model name (``"e2fgvi"``, ``"rife"``, ...); the weights must be of its family, and
    it is the model built when the checkpoint does not record one.  Default: the model the registry
    entry or the checkpoint names.  ``flag``: the command-line flag the value came from; errors then
    read ``FLAG SPEC: ...``.  ``dtype`` (compute dtype, ``float32`` = as stored) and ``precision``
    (``None``/``"default"`` = the module's) and ``overrides`` are module fields to set."""
    if family is None:
        family = _model_of(spec)
    if dtype is not None and str(dtype) != "float32":
        import jax.numpy as jnp

        overrides["dtype"] = jnp.dtype(dtype)
    if precision not in (None, "default"):
        overrides["precision"] = precision
    path = pathlib.Path(resolve(spec, family, flag or "--checkpoint", progress=progress))
    if flag is None:
        return _load_path(family, path, **overrides)
    try:
        return _load_path(family, path, **overrides)
    except (ValueError, FileNotFoundError) as err:
        msg = str(err)
        msg = msg[len(f"{path}: ") :] if msg.startswith(f"{path}: ") else msg
        raise type(err)(f"{flag} {spec}: {msg}") from None


def _model_of(spec) -> str:
    if spec is None or str(spec).strip() == "":
        raise ValueError("no checkpoint given: pass a registry name, an official file or a converted directory")
    is_path = isinstance(spec, os.PathLike)
    if not is_path and not registry.looks_like_path(str(spec)) and registry.known(str(spec)):
        return registry.get(str(spec)).model
    path = pathlib.Path(os.fspath(spec)).expanduser()
    if not path.exists():
        resolve_checkpoint(spec)  # the registry's "not found" / "unknown name" error
    got = recorded_model(path)
    if got is None:
        raise ValueError(
            f"load({spec!r}): give model_name (the family argument) for a checkpoint path that does "
            "not record its model"
        )
    return got
