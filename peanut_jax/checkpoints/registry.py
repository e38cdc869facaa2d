"""The weight registry: every official and bundled checkpoint (and set of files used as they are,
such as tokenizer files) by name (the entries live in their family's row of
:mod:`peanut_jax.checkpoints.families`), where each is kept under ``$PEANUT_HOME`` (default
``~/.cache/peanut_jax``) and whether its converted (or installed) copy is there.

Environment: ``PEANUT_HOME`` (cache root); ``PEANUT_OFFLINE=1`` (never touch the network);
``PEANUT_WEIGHTS_URL_<NAME>`` (override one entry's URL, e.g. ``PEANUT_WEIGHTS_URL_E2FGVI_HQ``;
makes a ``manual`` entry fetchable); ``PEANUT_WEIGHTS_MIRROR`` (a base URL or a local folder
holding the files under their download names, for every entry without its own override)."""

from __future__ import annotations

import os
import pathlib
import re
import urllib.parse

from peanut_jax.checkpoints.entry import (  # noqa: F401 - part of the registry's API
    ARCHIVE_SUFFIXES,
    ChecksumError,
    DownloadError,
    ManualDownloadError,
    OfflineError,
    WeightEntry,
)
from peanut_jax.checkpoints.export import EXPORT_CONFIG, EXPORT_PARAMS, read_json
from peanut_jax.checkpoints.families import DEMO_WEIGHTS, builtin_weights  # noqa: F401 - part of the API

__all__ = [
    "CACHE_VERSION",
    "ChecksumError",
    "DEMO_WEIGHTS",
    "DownloadError",
    "ManualDownloadError",
    "OFFICIAL_SUFFIXES",
    "OfflineError",
    "SOURCE_META",
    "WeightEntry",
    "aliases",
    "cache_path",
    "cache_valid",
    "cached_metadata",
    "converted_dir",
    "download_path",
    "entries",
    "env_key",
    "get",
    "home",
    "is_offline",
    "known",
    "looks_like_path",
    "names",
    "register",
    "sources",
    "unregister",
]

CACHE_VERSION = 1
#: file suffixes of official checkpoints (what ``peanut_jax.convert.load_checkpoint`` reads)
OFFICIAL_SUFFIXES = (".pth", ".pt", ".pkl", ".ckpt", ".bin", ".safetensors")
#: what ``fetch`` records next to the files of a ``convert=False`` entry in ``$PEANUT_HOME/NAME/``
SOURCE_META = "source.json"

_REGISTRY: dict[str, WeightEntry] = {e.name: e for e in builtin_weights()}
_ALIASES = {"basicvsr_pp": "basicvsr_pp_reds4", "spynet_sniklaus": "spynet_sniklaus_sintel_final"}


def known(name: str) -> bool:
    """Whether ``name`` is a registry name or alias."""
    return _ALIASES.get(name, name) in _REGISTRY


def aliases() -> dict[str, str]:
    """Alias -> registry name."""
    return dict(_ALIASES)


def names() -> list[str]:
    """Registry names (aliases not included)."""
    return sorted(_REGISTRY)


def entries() -> list[WeightEntry]:
    return [_REGISTRY[n] for n in names()]


def get(name: str) -> WeightEntry:
    """The entry called ``name`` (or an alias: ``basicvsr_pp``, ``spynet_sniklaus``)."""
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise ValueError(
            f"unknown weights {name!r}; known: {', '.join(names())} "
            f"(aliases: {', '.join(f'{a}={b}' for a, b in sorted(_ALIASES.items()))})"
        )
    return _REGISTRY[key]


def register(entry: WeightEntry, replace: bool = False) -> WeightEntry:
    """Add ``entry`` (e.g. a test checkpoint or a private mirror of an official file)."""
    if not isinstance(entry, WeightEntry):
        raise TypeError(f"register() takes a WeightEntry, got {type(entry).__name__}")
    from peanut_jax.models import names as model_names

    if entry.model not in model_names():
        raise ValueError(f"weight entry {entry.name}: unknown model {entry.model!r}; known: {', '.join(model_names())}")
    if (entry.name in _REGISTRY or entry.name in _ALIASES) and not replace:
        raise ValueError(f"weight entry {entry.name!r} already exists (pass replace=True)")
    _REGISTRY[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def home() -> pathlib.Path:
    """``$PEANUT_HOME`` or ``~/.cache/peanut_jax``."""
    return pathlib.Path(os.environ.get("PEANUT_HOME") or "~/.cache/peanut_jax").expanduser()


def is_offline() -> bool:
    return os.environ.get("PEANUT_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def download_path(name: str, file: str | None = None) -> pathlib.Path:
    """Where the original file of ``name`` is kept (and where a manual download goes); ``file``:
    one of the entry's ``all_files`` (default its ``download_name``)."""
    e = get(name)
    return home() / "downloads" / e.name / (file or e.download_name)


def cache_path(e: WeightEntry) -> pathlib.Path:
    return home() / e.name


def env_key(name: str) -> str:
    return "PEANUT_WEIGHTS_URL_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def sources(e: WeightEntry, file: str | None = None) -> list[str]:
    """Where to download ``e`` (or its ``file``, default ``download_name``) from, in order: the
    per-entry override, the mirror, the registry.  The URLs (override included) name
    ``download_name``; the entry's other files come from the same folders."""
    file = file or e.download_name
    override = os.environ.get(env_key(e.name), "").strip()
    if override:
        return [_sibling(override, file) if file != e.download_name else override]
    mirror = os.environ.get("PEANUT_WEIGHTS_MIRROR", "").strip()
    if mirror:
        if urllib.parse.urlsplit(mirror).scheme in ("http", "https", "file"):
            return [mirror.rstrip("/") + "/" + urllib.parse.quote(file)]
        return [str(pathlib.Path(mirror).expanduser() / file)]
    return [_sibling(u, file) for u in e.urls] if file != e.download_name else list(e.urls)


def _sibling(url: str, file: str) -> str:
    """``url`` (or a local path) with its last segment replaced by ``file``."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
        return str(pathlib.Path(url).with_name(file))
    parts = urllib.parse.urlsplit(url)
    path = parts.path.rsplit("/", 1)[0] + "/" + urllib.parse.quote(file)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def cache_valid(e: WeightEntry, d: pathlib.Path) -> bool:
    if not d.is_dir():
        return False
    if not e.convert:  # the files themselves and what fetch recorded about them
        meta = read_json(d / SOURCE_META)
        if meta.get("registry_name") != e.name or meta.get("cache_version") != CACHE_VERSION:
            return False
        if not all((d / f).is_file() for f in e.all_files):
            return False
        digest = ((meta.get("files") or {}).get(e.download_name) or {}).get("sha256") or ""
        return not (e.sha256 and digest != e.sha256) and not (
            e.sha256_prefix and not digest.startswith(e.sha256_prefix)
        )
    if not (d / EXPORT_CONFIG).is_file() or not (d / EXPORT_PARAMS).is_file():
        return False
    cfg = read_json(d / EXPORT_CONFIG)
    meta = cfg.get("metadata") or {}
    if cfg.get("model") != e.model or meta.get("registry_name") != e.name or meta.get("cache_version") != CACHE_VERSION:
        return False
    if meta.get("source_file") != e.download_name:
        return True  # e.g. the bare checkpoint of an archive entry: the registry hash does not apply
    digest = meta.get("source_sha256") or ""
    if e.sha256 and digest != e.sha256:
        return False
    return not (e.sha256_prefix and not digest.startswith(e.sha256_prefix))


def converted_dir(name: str) -> pathlib.Path | None:
    """The converted copy of ``name`` (the installed files of a ``convert=False`` entry) if it is
    cached (and matches the registry), else None."""
    e = get(name)
    if e.bundled is not None:
        return e.bundled_path if e.bundled_path.is_dir() else None
    d = cache_path(e)
    return d if cache_valid(e, d) else None


def cached_metadata(e: WeightEntry) -> dict:
    """The ``metadata`` recorded in the converted copy of ``e`` (:data:`SOURCE_META` of a
    ``convert=False`` entry; empty if there is none)."""
    if not e.convert:
        return read_json(cache_path(e) / SOURCE_META)
    return read_json(cache_path(e) / EXPORT_CONFIG).get("metadata") or {}


def looks_like_path(spec: str) -> bool:
    """Whether a ``--checkpoint`` string is meant as a path (a separator, a leading ``.``/``~`` or a
    checkpoint suffix) rather than a registry name."""
    return (
        os.sep in spec
        or "/" in spec
        or spec.startswith((".", "~"))
        or pathlib.PurePath(spec).suffix.lower() in OFFICIAL_SUFFIXES
        or spec.lower().endswith(ARCHIVE_SUFFIXES)
    )
