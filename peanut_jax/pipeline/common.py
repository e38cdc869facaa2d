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
    module = build(cfg["model"], **_tuples(cfg.get("kwargs", {})))
    return cfg["model"], module, {"params": params}, cfg.get("metadata", {})


def _tuples(v):
    """JSON lists back to the tuples the modules were built with (modules must stay hashable:
    jitted stage functions take them as static arguments)."""
    if isinstance(v, dict):
        return {k: _tuples(x) for k, x in v.items()}
    return tuple(_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v


def hashable(module):
    """``module`` with list-valued fields turned into tuples (see :func:`_tuples`)."""
    import dataclasses
    fix = {f.name: _tuples(getattr(module, f.name)) for f in dataclasses.fields(module)
           if f.init and f.name not in ("parent", "name") and isinstance(getattr(module, f.name), list)}
    return module.clone(**fix) if fix else module


def family(name: str) -> str:
    """Model family of a model name: ``e2fgvi`` / ``e2fgvi_hq`` -> ``e2fgvi``, ``rife_hdv3`` -> ``rife``."""
    return str(name).split("_")[0]


def check_family(got: str, name: str, where) -> None:
    """The one family check of every checkpoint kind: weights of model ``got`` found at ``where``
    must be of the family of ``name``."""
    if family(got) != family(name):
        raise ValueError(f"{where}: holds weights of model {got!r}, not {name!r}")


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


def resolve_weights(checkpoint, name: str | None = None, flag: str = "--checkpoint", progress: bool = True):
    """A ``--checkpoint`` value as a loadable path: registry names (``python -m peanut_jax.weights
    list``) become their converted cache directory (fetched first unless ``PEANUT_OFFLINE``) or
    their bundled folder; an existing file/directory, or anything that looks like a path, is
    returned unchanged.  Weights that cannot be had now (manual download, offline) raise
    :class:`peanut_jax.weights.DownloadError` with one line saying what to do, naming ``flag``."""
    if isinstance(checkpoint, str) and checkpoint and not pathlib.Path(checkpoint).expanduser().exists():
        from peanut_jax import weights
        if not weights._looks_like_path(checkpoint):
            try:
                return weights.resolve_checkpoint(checkpoint, name, progress=progress)
            except weights.DownloadError as err:
                demo = weights.DEMO_WEIGHTS.get(family(name or weights.get(checkpoint).model))
                hint = f"; or run offline with the bundled demo weights: {flag} {demo}" if demo else ""
                raise type(err)(f"{flag} {checkpoint}: {err}{hint}") from None
            except (ValueError, FileNotFoundError) as err:
                raise type(err)(f"{flag} {checkpoint}: {err}") from None
    return checkpoint


def _workdir_model(path: pathlib.Path) -> tuple[str, dict] | None:
    """(model name, constructor kwargs) recorded in the ``config.json`` of the ``train.py`` workdir
    holding the orbax checkpoint ``path`` (a workdir, its ``checkpoints`` folder or a step folder)."""
    for d in [path, *list(path.resolve().parents)[:3]]:
        f = d / "config.json"
        if f.is_file():
            try:
                cfg = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                return None
            model = cfg.get("model") if isinstance(cfg, dict) else None
            if not isinstance(model, dict):
                return None
            return str(model.get("name") or cfg.get("task") or ""), model
    return None


def detect_official(name: str, path: pathlib.Path) -> str:
    """Model name of an official checkpoint file of family ``name`` (E2FGVI vs -HQ, ECCV IFNet vs
    HDv3), checked against the family; ``name`` when the converter cannot tell."""
    import importlib

    from peanut_jax.convert.reader import load_checkpoint
    conv = {"e2fgvi": "e2fgvi", "basicvsr": "basicvsr_pp", "rife": "rife", "spynet": "spynet"}.get(family(name))
    mod = importlib.import_module(f"peanut_jax.convert.{conv}") if conv else None
    if mod is None or not hasattr(mod, "detect"):
        return name
    obj = load_checkpoint(path)
    got = mod.detect(obj)
    if got is None:
        for other in ("e2fgvi", "basicvsr_pp", "rife", "spynet"):
            if other != conv:
                o = importlib.import_module(f"peanut_jax.convert.{other}")
                found = o.detect(obj) if hasattr(o, "detect") else None
                if found:
                    check_family(found, name, path)
        return name
    check_family(got, name, path)
    if got.endswith("_discriminator"):
        raise ValueError(f"{path}: holds a {got} checkpoint (a discriminator), not the {name} generator")
    return got if family(name) != family("spynet") else name


def load_model(name: str, checkpoint, **overrides) -> tuple[Any, dict]:
    """(module, variables) of a model of ``name``'s family from any checkpoint kind: a weight-registry
    name, an official file, an exported dir or an orbax dir.  The one door of every stage: the
    family is checked for every kind, and the module is hashable (jit-static)."""
    from peanut_jax.models import build
    path = pathlib.Path(resolve_weights(checkpoint, name))
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        if (path / EXPORT_CONFIG).exists():
            got, module, variables, _ = load_exported(path)
            check_family(got, name, path)
            return hashable(module.clone(**overrides) if overrides else module), variables
        params = _restore_orbax(path)
        recorded = _workdir_model(path)
        if recorded is not None and recorded[0]:
            import dataclasses

            from peanut_jax.models import model_class
            got, kwargs = recorded
            check_family(got, name, path)
            cls = model_class(got)
            fields = ({f.name for f in dataclasses.fields(cls) if f.init} if dataclasses.is_dataclass(cls) else set())
            fields -= {"dtype", "param_dtype", "parent", "name"}   # inference runs in float32
            module = build(got, **{**{k: _tuples(v) for k, v in kwargs.items() if k in fields}, **overrides})
        else:
            module = build(name, **overrides)
        return hashable(module), {"params": params}
    from peanut_jax.convert import from_official
    module, variables = from_official(detect_official(name, path), path, **overrides)
    return hashable(module), variables


def fail(message: str, code: int = 2):
    """Print one clear line to stderr and exit non-zero (CLI error path)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def bundled_asset(*parts) -> pathlib.Path:
    """Path of a file shipped inside the package (demo weights)."""
    return pathlib.Path(__file__).resolve().parents[1].joinpath("assets", *parts)


# ------------------------------------------------------------------------------------ compilation
_ANNOUNCE: list = []


def announce_compilation(cache_dir=None, delay: float = 1.0, stream=None) -> None:
    """Say once per process, on stderr, when a model is being compiled (the first run for a model
    and frame size): a note is printed when lowering a program is not followed within ``delay``
    seconds by the end of its compilation or a persistent-cache hit, so quick compiles and cached
    programs stay silent."""
    if _ANNOUNCE:
        _ANNOUNCE[0]["cache_dir"] = cache_dir
        return
    import threading

    import jax
    from jax._src import dispatch
    state = {"cache_dir": cache_dir, "said": False, "timer": None}
    lock = threading.Lock()

    def say():
        with lock:
            if state["said"]:
                return
            state["said"] = True
        where = (f"compiled programs are cached in {state['cache_dir']}, so later runs start fast"
                 if state["cache_dir"] else "PEANUT_XLA_CACHE=0: nothing is cached between runs")
        print(f"note: compiling the models for this frame size (seconds to minutes, once: {where})",
              file=stream or sys.stderr, flush=True)

    def cancel():
        t = state["timer"]
        if t is not None:
            t.cancel()

    def on_event(event, **_):
        if event == "/jax/compilation_cache/cache_hits":
            cancel()

    def on_duration(event, duration, **_):
        if state["said"]:
            return
        if event == dispatch.JAXPR_TO_MLIR_MODULE_EVENT:
            cancel()
            t = threading.Timer(delay, say)
            t.daemon = True
            state["timer"] = t
            t.start()
        elif event == dispatch.BACKEND_COMPILE_EVENT:
            cancel()

    jax.monitoring.register_event_listener(on_event)
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    _ANNOUNCE.append(state)


def enable_compilation_cache(path=None) -> pathlib.Path | None:
    """Turn on JAX's persistent compilation cache so that later runs (of any process) load the
    compiled stage programs instead of compiling them again.  ``path``: the cache folder; default
    ``$PEANUT_XLA_CACHE``, else ``$PEANUT_HOME/xla_cache``; ``PEANUT_XLA_CACHE=0`` turns it off.
    Returns the folder used (None when off)."""
    env = os.environ.get("PEANUT_XLA_CACHE")
    if path is None:
        if env is not None and env.strip().lower() in ("0", "", "off", "false", "no"):
            return None
        if env:
            path = env
        else:
            from peanut_jax.weights import home
            path = home() / "xla_cache"
    path = pathlib.Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None   # a read-only home: run without the cache
    import jax
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return path


# ------------------------------------------------------------------------------------ Ctrl-C
class InterruptExit:
    """Prompt exit on Ctrl-C for the command-line tools.

    Python delivers ``KeyboardInterrupt`` to the main thread only between bytecodes; while it sits in
    one long native call (an XLA compilation) that is minutes away.  This watcher learns of the
    signal at once (``signal.set_wakeup_fd``: CPython's C handler writes the signal number to a
    pipe); if the main thread has not reacted (:meth:`handled`) within ``grace`` seconds it removes
    every partial output (:func:`peanut_jax.data.video_io.discard_partial_outputs`), prints the
    one-line message and ends the process with status 130."""

    def __init__(self, grace: float = 2.0, message: str = "error: interrupted; no partial output was kept"):
        import signal
        import threading
        self.grace, self.message = grace, message
        self._handled = threading.Event()
        self._r, w = os.pipe()
        os.set_blocking(w, False)
        self._old = signal.set_wakeup_fd(w)
        self._w = w
        threading.Thread(target=self._watch, name="peanut-interrupt", daemon=True).start()

    def handled(self) -> None:
        """The main thread got the KeyboardInterrupt: it cleans up and exits by itself."""
        self._handled.set()

    def _watch(self) -> None:
        import signal
        import time
        while True:
            try:
                data = os.read(self._r, 64)
            except OSError:
                return
            if not data:
                return
            if signal.SIGINT in data:
                break
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline:
            if self._handled.wait(0.05):
                return
        from peanut_jax.data.video_io import discard_partial_outputs
        discard_partial_outputs()
        try:
            print(self.message, file=sys.stderr, flush=True)
        finally:
            os._exit(130)
