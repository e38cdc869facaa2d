"""Getting a registry entry's weights: download with resume (HTTP ``Range``), verification against
the registry, conversion once into the cache (:func:`fetch`), manual imports (:func:`import_file`)
and turning a ``--checkpoint`` value into a path (:func:`resolve_checkpoint`).

``fetch NAME`` downloads into ``$PEANUT_HOME/downloads/NAME/`` through a ``.part`` file that later
runs resume; a corrupt file is deleted and never cached; the converted parameters go to
``$PEANUT_HOME/NAME/`` (the exported-weights format) and later runs load them.  The files of a
``convert=False`` entry (tokenizer files) are installed together, as downloaded, in
``$PEANUT_HOME/NAME/`` with a ``source.json`` saying where they came from."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import json
import os
import pathlib
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator

from peanut_jax.checkpoints.entry import (
    ARCHIVE_SUFFIXES,
    ChecksumError,
    DownloadError,
    ManualDownloadError,
    OfflineError,
    WeightEntry,
)
from peanut_jax.checkpoints.export import export_weights, module_kwargs, read_json
from peanut_jax.checkpoints.families import check_family
from peanut_jax.checkpoints.registry import (
    CACHE_VERSION,
    SOURCE_META,
    cache_path,
    cache_valid,
    cached_metadata,
    converted_dir,
    download_path,
    env_key,
    get,
    home,
    is_offline,
    known,
    looks_like_path,
    names,
)
from peanut_jax.checkpoints.registry import sources as download_sources

__all__ = ["fetch", "import_file", "resolve_checkpoint", "sha256_file", "verify_file"]

_CHUNK = 1 << 20
_USER_AGENT = "peanut_jax-weights/1"
_TAR_SUFFIXES = tuple(x for x in ARCHIVE_SUFFIXES if x != ".zip")
#: what a corrupt or truncated archive raises while it is read
_ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path, entry: WeightEntry | str, label: str | None = None) -> str:
    """Check ``path`` against the entry's size / sha256 / sha256 prefix; return its sha256.

    Raises :class:`ChecksumError` naming the file and both values on a mismatch."""
    e = get(entry) if isinstance(entry, str) else entry
    p = pathlib.Path(path)
    label = label or str(p)
    if not p.is_file():
        raise FileNotFoundError(f"{label}: no such file")
    size = p.stat().st_size
    if e.size is not None and size != e.size:
        raise ChecksumError(f"size mismatch for {label}: {size} bytes, registry '{e.name}' expects {e.size}")
    digest = sha256_file(p)
    if e.sha256 and digest != e.sha256:
        raise ChecksumError(f"checksum mismatch for {label}: sha256 {digest}, registry '{e.name}' expects {e.sha256}")
    if e.sha256_prefix and not digest.startswith(e.sha256_prefix):
        raise ChecksumError(
            f"checksum mismatch for {label}: sha256 {digest} does not start with "
            f"{e.sha256_prefix} (registry '{e.name}')"
        )
    return digest


@contextlib.contextmanager
def _locked(path: pathlib.Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (POSIX), so two processes never share a ``.part``."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _discard(*paths: pathlib.Path) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _content_range(value: str | None):
    """``bytes a-b/total`` -> (a, total or None); ``bytes */total`` -> (None, total)."""
    m = re.match(r"^\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _download_once(
    url: str, part: pathlib.Path, *, label: str, expected_size: int | None, progress: bool, timeout: float
) -> None:
    """One HTTP attempt: resume ``part`` if it exists, append until complete."""
    meta_path = part.with_name(part.name + ".json")
    meta = read_json(meta_path)
    offset = part.stat().st_size if part.exists() else 0
    if offset and (meta.get("url") != url or (expected_size is not None and offset > expected_size)):
        _discard(part, meta_path)
        offset, meta = 0, {}
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if meta.get("validator"):
            headers["If-Range"] = meta["validator"]
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            _, total = _content_range(err.headers.get("Content-Range"))
            if total is None:
                total = meta.get("total")
            if total == offset:
                return  # the .part is already complete
            _discard(part, meta_path)
            raise DownloadError(
                f"HTTP 416 resuming {label} from {url}: partial file discarded, retry", transient=True
            ) from None
        raise DownloadError(
            f"HTTP {err.code} {err.reason} for {url} (downloading {label})",
            transient=err.code in (408, 429) or err.code >= 500,
        ) from None
    except urllib.error.URLError as err:
        raise DownloadError(f"cannot reach {url} (downloading {label}): {err.reason}", transient=True) from None
    except (TimeoutError, OSError) as err:
        raise DownloadError(f"cannot reach {url} (downloading {label}): {err}", transient=True) from None

    from tqdm import tqdm

    with resp:
        status = getattr(resp, "status", 200)
        ctype = resp.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip().lower() == "text/html":
            raise DownloadError(
                f"{url} returned an HTML page instead of {label} (a login or confirmation "
                "page?); download it by hand and use 'python -m peanut_jax.weights import'"
            )
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != offset:
                _discard(part, meta_path)
                raise DownloadError(
                    f"{url} answered a resume request with the wrong range "
                    f"({resp.headers.get('Content-Range')!r}); partial file discarded, retry",
                    transient=True,
                )
            mode = "ab"
        else:  # 200: the whole file (Range unsupported, or If-Range says the file changed)
            offset, total, mode = 0, length, "wb"
        if total is None and length is not None:
            total = offset + length
        if expected_size is not None and total is not None and total != expected_size:
            _discard(part, meta_path)
            raise ChecksumError(
                f"size mismatch for {label} from {url}: the server sends {total} bytes, "
                f"the registry expects {expected_size}; nothing was saved"
            )
        validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
        if validator and validator.startswith("W/"):
            validator = None  # weak validators are not allowed in If-Range
        tmp = meta_path.with_name(meta_path.name + ".tmp")
        tmp.write_text(json.dumps({"url": url, "validator": validator, "total": total}))
        os.replace(tmp, meta_path)
        written = offset
        with (
            open(part, mode) as f,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                disable=not progress,
                file=sys.stderr,
                leave=False,
            ) as bar,
        ):
            while True:
                try:
                    chunk = resp.read(_CHUNK)
                except (OSError, http.client.HTTPException) as err:  # reset, timeout, incomplete read
                    raise DownloadError(
                        f"download of {label} from {url} interrupted after {written} bytes "
                        f"({type(err).__name__}); the partial file {part} is kept for resume",
                        transient=True,
                    ) from None
                if not chunk:
                    break
                try:
                    f.write(chunk)
                except OSError as err:  # disk full, ...
                    raise DownloadError(f"cannot write {part}: {err.strerror or err}") from None
                written += len(chunk)
                bar.update(len(chunk))
    if total is not None and written != total:
        raise DownloadError(
            f"download of {label} from {url} stopped at {written} of {total} bytes; the partial "
            f"file {part} is kept for resume",
            transient=True,
        )


def _copy_local(src: pathlib.Path, part: pathlib.Path, label: str) -> None:
    if not src.is_file():
        raise DownloadError(f"{label}: not found in the mirror folder ({src})")
    shutil.copyfile(src, part)


def _download(
    e: WeightEntry,
    dest: pathlib.Path,
    *,
    progress: bool,
    timeout: float,
    retries: int,
    retry_wait: float,
    file: str | None = None,
) -> str:
    """Download ``e``'s ``file`` (default its ``download_name``) to ``dest`` (via ``dest.part``);
    return the URL used. Verification is the caller's."""
    file = file or e.download_name
    size = e.size if file == e.download_name else None
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in download_sources(e, file):
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https", "file"):
            _copy_local(pathlib.Path(url), part, file)
            return url
        for attempt in range(retries + 1):
            try:
                _download_once(url, part, label=file, expected_size=size, progress=progress, timeout=timeout)
                return url
            except DownloadError as err:
                if err.transient and attempt < retries:
                    time.sleep(retry_wait * (attempt + 1))
                    continue
                errors.append(err)
                break
    if not errors:
        raise DownloadError(f"no URL to download {file} from")
    raise (
        errors[-1]
        if len(errors) == 1
        else DownloadError("; ".join(str(x) for x in errors), transient=any(x.transient for x in errors))
    )


def _manual_message(e: WeightEntry) -> str:
    where = download_path(e.name)
    pages = " or ".join(e.pages) if e.pages else "the official project page"
    bare = f" (or the bare {e.filename} next to it)" if e.archive else ""
    what, it, file = (e.download_name, "it", "FILE") if not e.files else (", ".join(e.all_files), "them", "FILE...")
    place = f"put it at {where}{bare}" if not e.files else f"put them in {where.parent}"
    return (
        f"{what} ('{e.name}') cannot be downloaded automatically: download {it} from {pages}, then run "
        f"'python -m peanut_jax.weights import {e.name} {file}' or {place} "
        f"(or set {env_key(e.name)} to a direct URL)"
    )


def _is_plain_zip(path: pathlib.Path) -> bool:
    """A zip archive that is not itself a PyTorch zip checkpoint (which has a ``data.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return not any(n == "data.pkl" or n.endswith("/data.pkl") for n in z.namelist())


def _is_archive(path: pathlib.Path) -> bool:
    """A zip archive (by content) or a tar / tar.gz archive (by name: ``.tar``, ``.tar.gz``, ``.tgz``)."""
    return path.name.lower().endswith(_TAR_SUFFIXES) or _is_plain_zip(path)


def _check_member(archive: pathlib.Path, name: str, regular: bool) -> None:
    """Refuse an archive member with an absolute or ``..`` name, or one that is not a regular file
    (a symbolic or hard link, a device): it is never read."""
    n = name.replace("\\", "/")
    if n.startswith("/") or re.match(r"^[A-Za-z]:", n) or ".." in n.split("/"):
        raise ValueError(f"{archive}: refusing the archive member {name!r} (an absolute path or '..')")
    if not regular:
        raise ValueError(f"{archive}: refusing the archive member {name!r} (a link or special file, not a file)")


def _copy_member(src, work: pathlib.Path, e: WeightEntry) -> pathlib.Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{e.filename}.", suffix=".extract", dir=work)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
    except BaseException:
        _discard(pathlib.Path(tmp))
        raise
    return pathlib.Path(tmp)


def _extract_member(path: pathlib.Path, e: WeightEntry, work: pathlib.Path) -> pathlib.Path:
    """``e.filename`` (found by its base name) of the zip or tar archive ``path``, copied to a
    temporary file in ``work``; only that member is read and nothing else is written."""
    seen, hits, out = [], [], None
    try:
        if _is_plain_zip(path):
            with zipfile.ZipFile(path) as z:
                for i in z.infolist():
                    seen.append(i.filename)
                    if i.is_dir() or i.filename.replace("\\", "/").rsplit("/", 1)[-1] != e.filename:
                        continue
                    _check_member(path, i.filename, not stat.S_ISLNK(i.external_attr >> 16))
                    hits.append(i.filename)
                if len(hits) == 1:
                    with z.open(hits[0]) as src:
                        out = _copy_member(src, work, e)
        else:  # one streaming pass over the (compressed) tar
            with tarfile.open(path, "r|*") as tf:
                for m in tf:
                    seen.append(m.name)
                    if m.name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] != e.filename:
                        continue
                    _check_member(path, m.name, m.isfile())
                    hits.append(m.name)
                    if len(hits) == 1:
                        out = _copy_member(tf.extractfile(m), work, e)
    except BaseException:
        if out is not None:
            _discard(out)
        raise
    if len(hits) != 1:
        if out is not None:
            _discard(out)
        if hits:
            raise ValueError(f"{path}: the archive holds several {e.filename}: {', '.join(hits)}")
        raise ValueError(
            f"{path}: the archive holds no {e.filename} (has: {', '.join(seen[:8])}{' ...' if len(seen) > 8 else ''})"
        )
    return out


@contextlib.contextmanager
def _checkpoint_file(path: pathlib.Path, e: WeightEntry) -> Iterator[pathlib.Path]:
    """``path`` itself, or ``e.filename`` extracted from ``path`` when it is a zip or tar archive
    (into a temporary file under ``downloads/NAME/``, removed afterwards)."""
    if not _is_archive(path):
        yield path
        return
    work = home() / "downloads" / e.name
    work.mkdir(parents=True, exist_ok=True)
    tmp = _extract_member(path, e, work)
    try:
        yield tmp
    finally:
        _discard(tmp)


def _replace_dir(new: pathlib.Path, target: pathlib.Path) -> None:
    """Move the finished directory ``new`` to ``target`` (replacing it) without a half-written state."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _convert(e: WeightEntry, original: pathlib.Path, digest: str, url: str | None, source_name: str) -> pathlib.Path:
    from peanut_jax.convert import from_official

    with _checkpoint_file(original, e) as ckpt:
        module, variables = from_official(e.model, ckpt)
        meta = {
            "registry_name": e.name,
            "cache_version": CACHE_VERSION,
            "source_file": source_name,
            "source_sha256": digest,
            "source_url": url,
            "license": e.license,
        }
        root = home()
        root.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{e.name}.tmp-", dir=root))
        try:
            others = {k: v for k, v in variables.items() if k != "params"}  # e.g. SAMWISE's BatchNorm batch_stats
            export_weights(tmp, e.model, module_kwargs(e.model, module), variables["params"], meta, collections=others)
            _replace_dir(tmp, cache_path(e))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return cache_path(e)


def _convert_checked(
    e: WeightEntry, original: pathlib.Path, digest: str, url: str | None, *, source_name: str, remove_on_error: bool
) -> pathlib.Path:
    """Convert; a file that does not convert is removed when ``remove_on_error`` (an unverified download)."""
    from peanut_jax.convert import CheckpointError, CheckpointMismatchError

    try:
        return _convert(e, original, digest, url, source_name)
    except (CheckpointError, CheckpointMismatchError, *_ARCHIVE_ERRORS) as err:
        msg = " ".join(str(err).split())
        if remove_on_error:
            _discard(original)
            raise ValueError(
                f"the download of '{e.name}' ({original.name}"
                f"{' from ' + url if url else ''}) is not a valid {e.model} checkpoint and was "
                f"deleted: {msg}"
            ) from None
        raise ValueError(f"{original} is not a valid {e.model} checkpoint for '{e.name}': {msg}") from None


def _install(src: pathlib.Path, dest: pathlib.Path) -> None:
    """Copy ``src`` to ``dest`` atomically (no half-written file under the final name)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.resolve() == dest.resolve():
        return
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.copy")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        _discard(tmp)


def _local_originals(e: WeightEntry) -> list[tuple[pathlib.Path, bool]]:
    """Kept originals of ``e``: (path, whether the registry checksum applies to it)."""
    dest = download_path(e.name)
    out = [(dest, True)]
    if e.archive is not None:
        out.append((dest.with_name(e.filename), False))  # the bare checkpoint of an archive entry
    return out


def fetch(
    name: str,
    *,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
    retries: int = 2,
    retry_wait: float = 1.0,
) -> pathlib.Path:
    """Make sure ``name`` is downloaded, verified and converted; return the converted directory.

    Uses the converted cache when valid, else the kept original under ``downloads/NAME/`` (also
    where a manual download may be put), else downloads, resuming a ``.part`` left by an
    interrupted run (``retries`` more attempts, each resuming).  ``force`` downloads and converts
    again.  Raises :class:`ValueError` for an unknown name, :class:`ChecksumError` for a corrupt
    download (deleted, nothing cached), :class:`OfflineError` / :class:`ManualDownloadError` when
    the file must come from elsewhere and :class:`DownloadError` for network failures (the
    ``.part`` stays for the next run).
    """
    e = get(name)
    if e.bundled is not None:
        if not e.bundled_path.is_dir():
            raise FileNotFoundError(f"bundled weights '{e.name}' are missing from this installation: {e.bundled_path}")
        return e.bundled_path
    if not e.convert:
        return _fetch_files(e, force=force, progress=progress, timeout=timeout, retries=retries, retry_wait=retry_wait)
    dest = download_path(e.name)
    if not force and cache_valid(e, cache_path(e)):
        return cache_path(e)
    sources, manual, offline = _where(e)
    redownload = force and not manual and not offline
    if redownload or not any(p.is_file() for p, _ in _local_originals(e)):
        _check_can_download(e, manual, offline, sources)  # fail before creating anything
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest.with_name(dest.name + ".lock")):
        if force:
            shutil.rmtree(cache_path(e), ignore_errors=True)
        elif cache_valid(e, cache_path(e)):  # another process finished it meanwhile
            return cache_path(e)
        if redownload:
            _discard(*(p for p, _ in _local_originals(e)))
        for path, checkable in _local_originals(e):
            if not path.is_file():
                continue
            if checkable:
                try:
                    digest = verify_file(path, e)
                except ChecksumError as err:
                    _discard(path)
                    if manual or offline:
                        raise ChecksumError(f"{err}; the file was deleted") from None
                    continue
            else:
                digest = sha256_file(path)
            return _convert_checked(e, path, digest, None, source_name=path.name, remove_on_error=False)
        _check_can_download(e, manual, offline, sources)
        url = _download(e, dest, progress=progress, timeout=timeout, retries=retries, retry_wait=retry_wait)
        part = dest.with_name(dest.name + ".part")
        try:
            digest = verify_file(part, e, label=f"{e.download_name} (downloaded from {url})")
        except ChecksumError as err:
            _discard(part, part.with_name(part.name + ".json"))
            raise ChecksumError(f"{err}; the download was deleted and nothing was cached") from None
        os.replace(part, dest)
        _discard(part.with_name(part.name + ".json"))
        return _convert_checked(e, dest, digest, url, source_name=dest.name, remove_on_error=e.check == "none")


def _where(e: WeightEntry) -> tuple[list[str], bool, bool]:
    """(sources of ``download_name``, whether the entry must come by hand, whether the network is
    needed but ``PEANUT_OFFLINE`` forbids it)."""
    sources = download_sources(e)
    manual = not sources or (e.manual and sources == list(e.urls))
    offline = is_offline() and not any(urllib.parse.urlsplit(u).scheme not in ("http", "https") for u in sources)
    return sources, manual, offline


def _check_can_download(
    e: WeightEntry, manual: bool, offline: bool, sources: list[str], files: list[str] | None = None
) -> None:
    """Raise when ``files`` (default: the download) cannot be downloaded now."""
    if manual:
        raise ManualDownloadError(_manual_message(e))
    if offline:
        files = files or [e.download_name]
        if len(files) == 1:
            where = " or ".join(download_sources(e, files[0]))
            put = f"put it at {download_path(e.name, files[0])}"
        else:
            where = " or ".join(u.rsplit("/", 1)[0] + "/" for u in sources)
            put = f"put them in {download_path(e.name).parent}"
        raise OfflineError(
            f"PEANUT_OFFLINE is set and '{e.name}' is not cached: download {', '.join(files)} from {where} and "
            f"{put}, or unset PEANUT_OFFLINE and run 'python -m peanut_jax.weights fetch {e.name}'"
        )


def _verified(e: WeightEntry, file: str, path: pathlib.Path, label: str | None = None) -> str:
    """sha256 of ``path``, checked against the registry when ``file`` is the entry's download."""
    return verify_file(path, e, label) if file == e.download_name else sha256_file(path)


def _link_or_copy(src: pathlib.Path, dest: pathlib.Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _install_files(e: WeightEntry, record: dict) -> pathlib.Path:
    """Put the kept originals of a ``convert=False`` entry in ``$PEANUT_HOME/NAME/`` at once (a
    temporary folder renamed), with :data:`SOURCE_META` (``record``: file -> sha256 and URL)."""
    root = home()
    root.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{e.name}.tmp-", dir=root))
    try:
        for f in e.all_files:
            _link_or_copy(download_path(e.name, f), tmp / f)
        meta = {
            "registry_name": e.name,
            "cache_version": CACHE_VERSION,
            "license": e.license,
            "source": e.source,
            "files": record,
        }
        (tmp / SOURCE_META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        _replace_dir(tmp, cache_path(e))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return cache_path(e)


def _fetch_files(
    e: WeightEntry, *, force: bool, progress: bool, timeout: float, retries: int, retry_wait: float
) -> pathlib.Path:
    """:func:`fetch` of a ``convert=False`` entry: each missing file is downloaded (resuming) into
    ``downloads/NAME/`` and verified where the registry can; then all are installed together.
    A failed ``force`` leaves the installed copy as it was."""
    cache = cache_path(e)
    if not force and cache_valid(e, cache):
        return cache
    sources, manual, offline = _where(e)
    redownload = force and not manual and not offline
    missing = [f for f in e.all_files if redownload or not download_path(e.name, f).is_file()]
    if missing:
        _check_can_download(e, manual, offline, sources, missing)  # fail before creating anything
    lock = download_path(e.name)
    lock = lock.with_name(lock.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with _locked(lock):
        if not force and cache_valid(e, cache):  # another process finished it meanwhile
            return cache
        if redownload:
            _discard(*(download_path(e.name, f) for f in e.all_files))
        record = {}
        for f in e.all_files:
            dest = download_path(e.name, f)
            if dest.is_file():
                try:
                    record[f] = {"sha256": _verified(e, f, dest), "url": None}
                    continue
                except ChecksumError as err:
                    _discard(dest)
                    if manual or offline:
                        raise ChecksumError(f"{err}; the file was deleted") from None
            _check_can_download(e, manual, offline, sources, [f])
            url = _download(e, dest, file=f, progress=progress, timeout=timeout, retries=retries, retry_wait=retry_wait)
            part = dest.with_name(dest.name + ".part")
            try:
                digest = _verified(e, f, part, label=f"{f} (downloaded from {url})")
            except ChecksumError as err:
                _discard(part, part.with_name(part.name + ".json"))
                raise ChecksumError(f"{err}; the download was deleted and nothing was cached") from None
            os.replace(part, dest)
            _discard(part.with_name(part.name + ".json"))
            record[f] = {"sha256": digest, "url": url}
        return _install_files(e, record)


def _import_files(e: WeightEntry, paths) -> pathlib.Path:
    """:func:`import_file` of a ``convert=False`` entry: every file, named as in the registry."""
    given = {}
    for p in paths:
        src = pathlib.Path(p).expanduser()
        if not src.is_file():
            raise FileNotFoundError(f"{src}: no such file (to import as '{e.name}')")
        if src.name not in e.all_files:
            raise ValueError(f"{src}: '{e.name}' takes files named {', '.join(e.all_files)}")
        if src.name in given:
            raise ValueError(f"{src.name} is given twice: {given[src.name]} and {src}")
        given[src.name] = src
    missing = [f for f in e.all_files if f not in given]
    if missing:
        raise ValueError(f"'{e.name}' needs every one of {', '.join(e.all_files)}: {', '.join(missing)} not given")
    lock = download_path(e.name)
    lock = lock.with_name(lock.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with _locked(lock):
        record = {f: {"sha256": _verified(e, f, given[f]), "url": None} for f in e.all_files}
        for f in e.all_files:
            _install(given[f], download_path(e.name, f))
        return _install_files(e, record)


def import_file(name: str, path, *more_paths, force: bool = False) -> pathlib.Path:
    """Verify and convert a file downloaded by hand; return the converted directory.

    ``path`` is the official file, or a zip / tar(.gz) archive holding it (as the Google Drive
    downloads are).  It is checked against the registry where a checksum is published, converted,
    and copied to ``downloads/NAME/`` (the checkpoint itself, extracted from an archive).  The
    files of a ``convert=False`` entry are all given (``path, *more_paths``, named as in the
    registry) and installed as they are in ``$PEANUT_HOME/NAME/``."""
    e = get(name)
    if e.bundled is not None:
        raise ValueError(f"'{e.name}' are bundled weights (shipped in {e.bundled_path}); there is nothing to import")
    if not e.convert:
        return _import_files(e, (path, *more_paths))
    if more_paths:
        raise ValueError(f"'{e.name}' is one checkpoint file; {1 + len(more_paths)} files given")
    src = pathlib.Path(path).expanduser()
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file (to import as '{e.name}')")
    dest = download_path(e.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest.with_name(dest.name + ".lock")):
        digest = sha256_file(src)
        if not force and cache_valid(e, cache_path(e)):
            if cached_metadata(e).get("source_sha256") == digest:
                return cache_path(e)
        archived = _is_archive(src)
        if archived and e.archive is None:
            with _checkpoint_file(src, e) as ckpt:
                digest = verify_file(ckpt, e, label=f"{e.filename} in {src}")
                out = _convert_checked(e, ckpt, digest, None, source_name=e.filename, remove_on_error=False)
                _install(ckpt, dest)
            return out
        if e.archive is not None and not archived:
            # the bare checkpoint of an archive entry: the archive's checksum does not apply to it
            out = _convert_checked(e, src, digest, None, source_name=e.filename, remove_on_error=False)
            _install(src, dest.with_name(e.filename))
            return out
        verify_file(src, e)
        out = _convert_checked(e, src, digest, None, source_name=e.download_name, remove_on_error=False)
        _install(src, dest)
        return out


def resolve_checkpoint(
    spec, model_name: str | None = None, *, fetch_missing: bool = True, progress: bool = True
) -> pathlib.Path:
    """Turn a ``--checkpoint`` value into a path :func:`peanut_jax.checkpoints.load` accepts.

    ``spec`` is a registry name (the converted directory is returned, fetched and converted first
    if needed and ``fetch_missing``; ``PEANUT_OFFLINE`` forbids the network), an official
    checkpoint file, or a converted (``model.json``) / orbax directory (returned as they are).
    A ``PathLike`` or a string that looks like a path (has a separator, starts with ``.``/``~``
    or has a checkpoint suffix) is always a path; a bare registry name string wins over a
    same-named folder.
    ``model_name`` is checked against the registry entry's model family.
    """
    if spec is None or str(spec).strip() == "":
        raise ValueError("no checkpoint given: pass a registry name, an official file or a converted directory")
    is_path = isinstance(spec, os.PathLike)
    spec = os.fspath(spec) if is_path else str(spec)
    if not is_path and not looks_like_path(spec) and known(spec):
        e = get(spec)
        if not e.convert:
            raise ValueError(f"'{e.name}' holds {', '.join(e.all_files)} (files for {e.model}), not weights to load")
        if model_name is not None:
            check_family(e.model, model_name, f"weights '{e.name}'")
        d = converted_dir(e.name)
        if d is not None:
            return d
        if e.bundled is not None:
            return fetch(e.name)  # says that the shipped folder is missing
        if not fetch_missing:
            raise FileNotFoundError(
                f"weights '{e.name}' are not in the cache ({cache_path(e)}); run "
                f"'python -m peanut_jax.weights fetch {e.name}'"
            )
        return fetch(e.name, progress=progress)
    path = pathlib.Path(spec).expanduser()
    if path.exists():
        return path
    if is_path or looks_like_path(spec):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    raise ValueError(
        f"checkpoint {spec!r} is neither a file/directory nor a registry name; known names: {', '.join(names())}"
    )
