"""One official checkpoint (:class:`WeightEntry`: URLs, file name, checksum, licence) and the
errors of getting it.  Files from ``download.openmmlab.com`` / ``download.pytorch.org`` embed the
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
    """``PEANUT_OFFLINE`` is set and the file is not in the cache."""


class ManualDownloadError(DownloadError):
    """The entry has no plain-HTTP URL (Google Drive / Baidu): the user must download it."""


class ChecksumError(ValueError):
    """A file's size or sha256 differs from the registry."""


# --------------------------------------------------------------------------------------------


_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_HEX_RE = re.compile(r"^[0-9a-f]+$")


@dataclasses.dataclass(frozen=True)
class WeightEntry:
    """One official checkpoint.

    ``filename`` is the official checkpoint file name.  ``archive`` is set when the URLs deliver
    a zip archive holding ``filename`` (the member is found by its base name).  ``size``,
    ``sha256`` and ``sha256_prefix`` describe the downloaded file (the archive if there is one)
    and are ``None`` unless published.  ``pages`` are human download pages (Google Drive, Baidu)
    shown when the file must be fetched by hand; ``manual`` marks entries without a plain-HTTP
    URL.  ``model`` is the name given to :func:`peanut_jax.convert.from_official`.
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

    def __post_init__(self):
        if not _NAME_RE.match(self.name) or self.name == "downloads":
            raise ValueError(
                f"weight entry name {self.name!r}: use lower-case letters, digits, '_', '.', '-' (and not 'downloads')"
            )
        for f in ("urls", "pages"):
            v = getattr(self, f)
            if isinstance(v, str):
                object.__setattr__(self, f, (v,))
        if not self.filename or "/" in self.filename or "\\" in self.filename or self.filename in (".", ".."):
            raise ValueError(f"weight entry {self.name}: filename {self.filename!r} must be a plain file name")
        if self.archive is not None and ("/" in self.archive or "\\" in self.archive):
            raise ValueError(f"weight entry {self.name}: archive {self.archive!r} must be a plain file name")
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
