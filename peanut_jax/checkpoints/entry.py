"""One official checkpoint or set of files (:class:`WeightEntry`: URLs, file names, checksum,
licence) and the errors of getting it.  Files from ``download.openmmlab.com`` / ``download.pytorch.org`` embed the
first 8 hex digits of their sha256 in the name (``sha256_prefix``); entries without published
integrity data are checked by the converter (strict keys/shapes)."""

from __future__ import annotations

import dataclasses
import pathlib
import re
import urllib.parse

__all__ = ["ChecksumError", "DownloadError", "ManualDownloadError", "OfflineError", "WeightEntry"]


class DownloadError(RuntimeError):
    """A download failed (HTTP error, unreachable host, interrupted transfer).

    ``transient`` is True when retrying (and resuming the ``.part`` file) may succeed."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class OfflineError(DownloadError):
    """``PEANUT_OFFLINE`` is set and the entry is not in the cache."""


class ManualDownloadError(DownloadError):
    """The entry has no plain-HTTP URL (Google Drive / Baidu): the user must download it."""


class ChecksumError(ValueError):
    """A file's size or sha256 differs from the registry."""


# --------------------------------------------------------------------------------------------


_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_HEX_RE = re.compile(r"^[0-9a-f]+$")
#: archive names whose member ``filename`` is extracted (zip by content, tar by name and content)
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


def _plain_name(name) -> bool:
    return isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")


@dataclasses.dataclass(frozen=True)
class WeightEntry:
    """One official checkpoint, or one set of files used as they are.

    ``filename`` is the official checkpoint file name.  ``archive`` is set when the URLs deliver
    a zip or tar(.gz) archive holding ``filename`` (the member is found by its base name).
    ``size``, ``sha256`` and ``sha256_prefix`` describe the downloaded file (the archive if there
    is one) and are ``None`` unless published.  ``pages`` are human download pages (Google
    Drive, Baidu) shown when the file must be fetched by hand; ``manual`` marks entries without a
    plain-HTTP URL.  ``model`` is the name given to :func:`peanut_jax.convert.from_official`.

    ``convert=False`` marks files that are used as downloaded (e.g. tokenizer files): ``fetch``
    places them in ``$PEANUT_HOME/NAME/`` instead of converting them, and ``model`` names the
    model they serve.  Such an entry may have further ``files``, fetched from the folder of each
    URL (the URL with its last segment replaced by the file name); the URLs name ``filename``.
    """

    name: str
    model: str
    filename: str
    urls: tuple[str, ...] = ()
    archive: str | None = None
    pages: tuple[str, ...] = ()
    manual: bool = False
    size: int | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    license: str = "unknown"
    source: str = ""
    notes: str = ""
    bundled: str | None = None  # exported weights shipped in peanut_jax/assets/<bundled> (no download)
    convert: bool = True
    files: tuple[str, ...] = ()

    def __post_init__(self):
        if not _NAME_RE.match(self.name) or self.name == "downloads":
            raise ValueError(
                f"weight entry name {self.name!r}: use lower-case letters, digits, '_', '.', '-' (and not 'downloads')"
            )
        for f in ("urls", "pages", "files"):
            v = getattr(self, f)
            if isinstance(v, str):
                object.__setattr__(self, f, (v,))
        for what, v in (("filename", self.filename), *(("files", f) for f in self.files)):
            if not _plain_name(v):
                raise ValueError(f"weight entry {self.name}: {what} {v!r} must be a plain file name")
        if self.archive is not None:
            if not _plain_name(self.archive) or not self.archive.lower().endswith(ARCHIVE_SUFFIXES):
                raise ValueError(
                    f"weight entry {self.name}: archive {self.archive!r} must be a plain file name ending in "
                    f"{', '.join(ARCHIVE_SUFFIXES)}"
                )
        if len(set(self.all_files)) != len(self.all_files):
            raise ValueError(f"weight entry {self.name}: file names {self.all_files} repeat")
        if self.files and self.convert:
            raise ValueError(f"weight entry {self.name}: several files need convert=False (a converter reads one)")
        if not self.convert and (self.archive is not None or self.bundled is not None):
            raise ValueError(
                f"weight entry {self.name}: convert=False entries are plain downloads (no archive/bundled)"
            )
        if self.files and (self.size or self.sha256 or self.sha256_prefix):
            raise ValueError(f"weight entry {self.name}: size/sha256 describe one file; an entry with files has none")
        if self.sha256 is not None:
            h = self.sha256.lower()
            if len(h) != 64 or not _HEX_RE.match(h):
                raise ValueError(f"weight entry {self.name}: sha256 must be 64 hex digits, got {self.sha256!r}")
            object.__setattr__(self, "sha256", h)
        if self.sha256_prefix is not None:
            h = self.sha256_prefix.lower()
            if not (4 <= len(h) <= 64) or not _HEX_RE.match(h):
                raise ValueError(
                    f"weight entry {self.name}: sha256_prefix must be 4-64 hex digits, got {self.sha256_prefix!r}"
                )
            object.__setattr__(self, "sha256_prefix", h)
        if self.size is not None and (not isinstance(self.size, int) or self.size <= 0):
            raise ValueError(f"weight entry {self.name}: size must be a positive int, got {self.size!r}")
        if not self.manual and not self.urls and not self.bundled:
            raise ValueError(f"weight entry {self.name}: give urls or mark it manual=True (or bundled=FOLDER)")
        for u in self.urls:
            if urllib.parse.urlsplit(u).scheme not in ("http", "https"):
                raise ValueError(f"weight entry {self.name}: URL {u!r} is not http(s)")

    @property
    def download_name(self) -> str:
        """Name of the file the URLs deliver (the archive, or the checkpoint itself)."""
        return self.archive or self.filename

    @property
    def all_files(self) -> tuple[str, ...]:
        """Every file the entry downloads, ``download_name`` first."""
        return (self.download_name, *self.files)

    @property
    def bundled_path(self) -> pathlib.Path | None:
        """The shipped folder of a bundled entry (None for downloads)."""
        if self.bundled is None:
            return None
        return pathlib.Path(__file__).resolve().parents[1] / "assets" / self.bundled

    @property
    def check(self) -> str:
        """How a download is verified: 'sha256', 'sha256-prefix', 'size' or 'none'."""
        if self.sha256:
            return "sha256"
        if self.sha256_prefix:
            return "sha256-prefix"
        return "size" if self.size else "none"
