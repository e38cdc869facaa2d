"""Registry of the official checkpoints: download (with resume), verify, convert once, cache.

Every official checkpoint a stage accepts has an entry (:class:`WeightEntry`) with its public
URL(s), file name, licence note and whatever integrity data is published for it:

* files from ``download.openmmlab.com`` and ``download.pytorch.org`` embed the first 8 hex digits
  of their sha256 in the file name (mmagic's ``publish_model.py`` and ``torch.hub`` use that
  convention); that prefix is checked (``sha256_prefix``);
* nothing else publishes a size or a sha256, so those entries carry ``None`` and are checked by
  the converter only (strict key/shape matching).  The sha256 computed on first download is
  recorded in the converted copy's ``model.json``.

``python -m peanut_jax.weights fetch NAME`` downloads the file into
``$PEANUT_HOME/downloads/NAME/`` (``$PEANUT_HOME`` defaults to ``~/.cache/peanut_jax``) through a
``.part`` file that later runs resume with an HTTP ``Range`` request, verifies it (a corrupt file
is deleted and never cached), converts it once with :func:`peanut_jax.convert.from_official` and
writes the converted parameters to ``$PEANUT_HOME/NAME/`` (``model.json`` +
``params.safetensors``, see :func:`peanut_jax.checkpoints.export.export_weights`).  Later runs load
the converted copy.  Entries marked ``manual`` (Google Drive / Baidu downloads) cannot be
fetched by plain HTTP: ``fetch`` says where to download the file and where to put it, or use
``python -m peanut_jax.weights import NAME FILE`` (a zip archive holding the file is accepted).

Environment:

* ``PEANUT_HOME``: cache root.
* ``PEANUT_OFFLINE=1``: never touch the network (a clear error names the file to fetch).
* ``PEANUT_WEIGHTS_URL_<NAME>``: override the URL of one entry (``NAME`` upper-cased, e.g.
  ``PEANUT_WEIGHTS_URL_E2FGVI_HQ``); this also makes a ``manual`` entry fetchable.
* ``PEANUT_WEIGHTS_MIRROR``: a base URL (``http(s)://host/path``) or a local folder holding the
  files under their download names; used for every entry without its own override.

A ``--checkpoint`` argument can use :func:`resolve_checkpoint` to accept a registry name, an
official checkpoint file or a converted/orbax directory.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import http.client
import json
import os
import pathlib
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from typing import Iterator, Sequence

from peanut_jax.checkpoints.export import EXPORT_CONFIG, EXPORT_PARAMS, export_weights, module_kwargs
from peanut_jax.checkpoints.families import check_family

__all__ = [
    "CACHE_VERSION", "ChecksumError", "DownloadError", "ManualDownloadError", "OfflineError", "WeightEntry",
    "converted_dir", "download_path", "entries", "fetch", "get", "home", "import_file", "is_offline", "load",
    "main", "names", "register", "resolve_checkpoint", "sha256_file", "unregister", "verify_file",
]

CACHE_VERSION = 1
_CHUNK = 1 << 20
_USER_AGENT = "peanut_jax-weights/1"


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------

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
# registry
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
    bundled: str | None = None   # exported weights shipped in peanut_jax/assets/<bundled> (no download)

    def __post_init__(self):
        if not _NAME_RE.match(self.name) or self.name == "downloads":
            raise ValueError(f"weight entry name {self.name!r}: use lower-case letters, digits, '_', '.', '-' "
                             "(and not 'downloads')")
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
                raise ValueError(f"weight entry {self.name}: sha256_prefix must be 4-64 hex digits, "
                                 f"got {self.sha256_prefix!r}")
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


_MMAGIC = "https://download.openmmlab.com/mmediting/restorers/"
_MMAGIC_LICENSE = "Apache-2.0 (OpenMMLab mmagic/mmediting model zoo)"
_SPYNET_NC = "SPyNet models: free for non-commercial scientific research (anuragranj/spynet licence terms)"

_BUILTIN: list[WeightEntry] = [
    WeightEntry(
        "spynet", "spynet", "spynet_20210409-c6c1bd09.pth",
        urls=(_MMAGIC + "basicvsr/spynet_20210409-c6c1bd09.pth",), sha256_prefix="c6c1bd09",
        license=_MMAGIC_LICENSE,
        source="mmagic configs/basicvsr_pp/README.md; E2FGVI model/modules/flow_comp.py",
        notes="mmagic SPyNet used (and fine-tuned) by BasicVSR++ and E2FGVI"),
    *[WeightEntry(
        f"spynet_sniklaus_{v.replace('-', '_')}", "spynet_sniklaus", f"network-{v}.pytorch",
        urls=(f"http://content.sniklaus.com/github/pytorch-spynet/network-{v}.pytorch",),
        license=_SPYNET_NC, source="sniklaus/pytorch-spynet run.py",
        notes=f"sniklaus pytorch-spynet '{v}' (converted from the Torch7 originals)")
      for v in ("sintel-final", "sintel-clean", "chairs-final", "chairs-clean", "kitti-final")],
    WeightEntry(
        "e2fgvi", "e2fgvi", "E2FGVI-CVPR22.pth", manual=True,
        pages=("https://drive.google.com/file/d/1tNJMTJ2gmWdIXJoHVi5-H504uImUiJW9/view?usp=sharing",
               "https://pan.baidu.com/s/1qXAErbilY_n_Fh9KB8UF7w?pwd=lsjw"),
        license="CC BY-NC 4.0 (non-commercial use only)", source="MCG-NKU/E2FGVI README.md",
        notes="E2FGVI generator (432x240 input); Google Drive / Baidu only"),
    WeightEntry(
        "e2fgvi_hq", "e2fgvi_hq", "E2FGVI-HQ-CVPR22.pth", manual=True,
        pages=("https://drive.google.com/file/d/10wGdKSUOie0XmCr8SQ2A2FeDe-mfn5w3/view?usp=sharing",
               "https://pan.baidu.com/s/1jfm1oFU1eIy-IRfuHP8YXw?pwd=ssb3"),
        license="CC BY-NC 4.0 (non-commercial use only)", source="MCG-NKU/E2FGVI README.md",
        notes="E2FGVI-HQ generator (arbitrary resolution); Google Drive / Baidu only"),
    *[WeightEntry(
        f"basicvsr_pp_{key}", "basicvsr_pp", f"basicvsr_plusplus_{stem}-{h}.pth",
        urls=(f"{_MMAGIC}basicvsr_plusplus/basicvsr_plusplus_{stem}-{h}.pth",), sha256_prefix=h,
        license=_MMAGIC_LICENSE, source="mmagic configs/basicvsr_pp/README.md", notes=notes)
      for key, stem, h, notes in (
          ("reds4", "c64n7_8x1_600k_reds4_20210217", "db622b2f", "BasicVSR++ x4 VSR, REDS (BI)"),
          ("vimeo90k_bi", "c64n7_8x1_300k_vimeo90k_bi_20210305", "4ef437e2", "BasicVSR++ x4 VSR, Vimeo-90K (BI)"),
          ("vimeo90k_bd", "c64n7_8x1_300k_vimeo90k_bd_20210305", "ab315ab1", "BasicVSR++ x4 VSR, Vimeo-90K (BD)"),
          ("ntire_vsr", "c128n25_ntire_vsr_20210311", "1ff35292", "BasicVSR++ c128n25 x4, NTIRE 2021 VSR"),
          ("ntire_decompress_track1", "c128n25_ntire_decompress_track1_20210223", "7b2eba02",
           "BasicVSR++ c128n25 same-size restoration, NTIRE 2021 compressed video track 1"),
          ("ntire_decompress_track2", "c128n25_ntire_decompress_track2_20210314", "eeae05e6",
           "BasicVSR++ c128n25 same-size restoration, NTIRE 2021 compressed video track 2"),
          ("ntire_decompress_track3", "c128n25_ntire_decompress_track3_20210304", "6daf4a40",
           "BasicVSR++ c128n25 same-size restoration, NTIRE 2021 compressed video track 3"))],
    WeightEntry(
        "rife", "rife", "flownet.pkl", archive="RIFE_train_log.zip",
        urls=("https://huggingface.co/hzwer/RIFE/resolve/main/RIFE_train_log.zip",),
        pages=("https://drive.google.com/file/d/1h42aGYPNJn2q8j_GVkS_yDu__G_UZ2GX/view?usp=sharing",),
        license="MIT (hzwer/ECCV2022-RIFE)",
        source="ECCV2022-RIFE README.md (Evaluation: 'RIFE model' Google Drive link); Hugging Face hzwer/RIFE",
        notes="ECCV RIFE (IFNet) paper model; the zip from the author's Hugging Face repository is assumed to "
              "match the README's Google Drive file (not checked byte for byte)"),
    WeightEntry(
        "rife_hdv3", "rife_hdv3", "flownet.pkl",
        urls=("https://huggingface.co/AlexWortega/RIFE/resolve/main/flownet.pkl",),
        pages=("https://drive.google.com/file/d/1APIzVeI-4ZZCEuIRE1m6WYfSCaOsi_7_/view?usp=sharing",),
        license="MIT (hzwer/ECCV2022-RIFE HD models)",
        source="CogVideo inference/gradio_composite_demo/app.py (snapshot_download AlexWortega/RIFE); "
               "ECCV2022-RIFE README.md (HD model link)",
        notes="RIFE IFNet_HDv3 as used by the CogVideoX demo"),
    WeightEntry(
        "vgg19", "vgg19", "vgg19-dcbb9e9d.pth",
        urls=("https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",), sha256_prefix="dcbb9e9d",
        license="BSD-3-Clause (torchvision); trained on ImageNet", source="torchvision VGG19_Weights.IMAGENET1K_V1",
        notes="VGG19 features for the perceptual loss"),
    # SAM 2 (07/2024) and SAM 2.1 (09/2024), click/box/mask segmentation; no checksum is published
    *[WeightEntry(
        f"{prefix}_hiera_{size}", "sam2", f"{prefix}_hiera_{size}.pt",
        urls=(f"https://dl.fbaipublicfiles.com/segment_anything_2/{date}/{prefix}_hiera_{size}.pt",),
        license="Apache-2.0 (facebookresearch/sam2)",
        source="facebookresearch/sam2 checkpoints/download_ckpts.sh, README.md",
        notes=f"SAM {version} Hiera-{size.replace('_plus', '+')}")
      for prefix, date, version in (("sam2", "072824", "2"), ("sam2.1", "092824", "2.1"))
      for size in ("tiny", "small", "base_plus", "large")],
    # small models of the official architectures trained with train.py on the synthetic videos
    # (scripts/train_demo_weights.sh), shipped with the package: offline runs and the demo
    *[WeightEntry(
        f"{stage}_demo", model, "params.safetensors", bundled=f"{stage}_demo", license="same as peanut_jax",
        source="peanut_jax/assets (trained with train.py: scripts/train_demo_weights.sh)",
        notes=f"bundled demo weights: tiny {what} trained on synthetic videos (offline; not the official quality)")
      for stage, model, what in (("erase", "e2fgvi_hq", "E2FGVI-HQ"), ("upscale", "basicvsr_pp", "BasicVSR++ x4"),
                                 ("interpolate", "rife", "RIFE IFNet"), ("spynet", "spynet", "SPyNet"))],
]

#: the bundled demo weights of each model family (what to suggest when official weights are missing)
DEMO_WEIGHTS = {"e2fgvi": "erase_demo", "basicvsr": "upscale_demo", "rife": "interpolate_demo", "spynet": "spynet_demo"}

_REGISTRY: dict[str, WeightEntry] = {e.name: e for e in _BUILTIN}
_ALIASES = {"basicvsr_pp": "basicvsr_pp_reds4", "spynet_sniklaus": "spynet_sniklaus_sintel_final"}


def known(name: str) -> bool:
    """Whether ``name`` is a registry name or alias."""
    return _ALIASES.get(name, name) in _REGISTRY


def names() -> list[str]:
    """Registry names (aliases not included)."""
    return sorted(_REGISTRY)


def entries() -> list[WeightEntry]:
    return [_REGISTRY[n] for n in names()]


def get(name: str) -> WeightEntry:
    """The entry called ``name`` (or an alias: ``basicvsr_pp``, ``spynet_sniklaus``)."""
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise ValueError(f"unknown weights {name!r}; known: {', '.join(names())} "
                         f"(aliases: {', '.join(f'{a}={b}' for a, b in sorted(_ALIASES.items()))})")
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


# --------------------------------------------------------------------------------------------
# locations and environment
# --------------------------------------------------------------------------------------------

def home() -> pathlib.Path:
    """``$PEANUT_HOME`` or ``~/.cache/peanut_jax``."""
    return pathlib.Path(os.environ.get("PEANUT_HOME") or "~/.cache/peanut_jax").expanduser()


def is_offline() -> bool:
    return os.environ.get("PEANUT_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def download_path(name: str) -> pathlib.Path:
    """Where the original file of ``name`` is kept (and where a manual download goes)."""
    e = get(name)
    return home() / "downloads" / e.name / e.download_name


def _cache_path(e: WeightEntry) -> pathlib.Path:
    return home() / e.name


def _env_key(name: str) -> str:
    return "PEANUT_WEIGHTS_URL_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def _sources(e: WeightEntry) -> list[str]:
    """Where to download ``e`` from, in order: the per-entry override, the mirror, the registry."""
    override = os.environ.get(_env_key(e.name), "").strip()
    if override:
        return [override]
    mirror = os.environ.get("PEANUT_WEIGHTS_MIRROR", "").strip()
    if mirror:
        if urllib.parse.urlsplit(mirror).scheme in ("http", "https", "file"):
            return [mirror.rstrip("/") + "/" + urllib.parse.quote(e.download_name)]
        return [str(pathlib.Path(mirror).expanduser() / e.download_name)]
    return list(e.urls)


# --------------------------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------------------------

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
        raise ChecksumError(f"checksum mismatch for {label}: sha256 {digest} does not start with "
                            f"{e.sha256_prefix} (registry '{e.name}')")
    return digest


# --------------------------------------------------------------------------------------------
# download with resume
# --------------------------------------------------------------------------------------------

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


def _read_json(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


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


def _download_once(url: str, part: pathlib.Path, *, label: str, expected_size: int | None, progress: bool,
                   timeout: float) -> None:
    """One HTTP attempt: resume ``part`` if it exists, append until complete."""
    meta_path = part.with_name(part.name + ".json")
    meta = _read_json(meta_path)
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
            raise DownloadError(f"HTTP 416 resuming {label} from {url}: partial file discarded, retry",
                                transient=True) from None
        raise DownloadError(f"HTTP {err.code} {err.reason} for {url} (downloading {label})",
                            transient=err.code in (408, 429) or err.code >= 500) from None
    except urllib.error.URLError as err:
        raise DownloadError(f"cannot reach {url} (downloading {label}): {err.reason}", transient=True) from None
    except (TimeoutError, OSError) as err:
        raise DownloadError(f"cannot reach {url} (downloading {label}): {err}", transient=True) from None

    from tqdm import tqdm
    with resp:
        status = getattr(resp, "status", 200)
        ctype = resp.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip().lower() == "text/html":
            raise DownloadError(f"{url} returned an HTML page instead of {label} (a login or confirmation "
                                "page?); download it by hand and use 'python -m peanut_jax.weights import'")
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != offset:
                _discard(part, meta_path)
                raise DownloadError(f"{url} answered a resume request with the wrong range "
                                    f"({resp.headers.get('Content-Range')!r}); partial file discarded, retry",
                                    transient=True)
            mode = "ab"
        else:  # 200: the whole file (Range unsupported, or If-Range says the file changed)
            offset, total, mode = 0, length, "wb"
        if total is None and length is not None:
            total = offset + length
        if expected_size is not None and total is not None and total != expected_size:
            _discard(part, meta_path)
            raise ChecksumError(f"size mismatch for {label} from {url}: the server sends {total} bytes, "
                                f"the registry expects {expected_size}; nothing was saved")
        validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
        if validator and validator.startswith("W/"):
            validator = None  # weak validators are not allowed in If-Range
        tmp = meta_path.with_name(meta_path.name + ".tmp")
        tmp.write_text(json.dumps({"url": url, "validator": validator, "total": total}))
        os.replace(tmp, meta_path)
        written = offset
        with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                                          desc=label, disable=not progress, file=sys.stderr, leave=False) as bar:
            while True:
                try:
                    chunk = resp.read(_CHUNK)
                except (OSError, http.client.HTTPException) as err:  # reset, timeout, incomplete read
                    raise DownloadError(f"download of {label} from {url} interrupted after {written} bytes "
                                        f"({type(err).__name__}); the partial file {part} is kept for resume",
                                        transient=True) from None
                if not chunk:
                    break
                try:
                    f.write(chunk)
                except OSError as err:  # disk full, ...
                    raise DownloadError(f"cannot write {part}: {err.strerror or err}") from None
                written += len(chunk)
                bar.update(len(chunk))
    if total is not None and written != total:
        raise DownloadError(f"download of {label} from {url} stopped at {written} of {total} bytes; the partial "
                            f"file {part} is kept for resume", transient=True)


def _copy_local(src: pathlib.Path, part: pathlib.Path, label: str) -> None:
    if not src.is_file():
        raise DownloadError(f"{label}: not found in the mirror folder ({src})")
    shutil.copyfile(src, part)


def _download(e: WeightEntry, dest: pathlib.Path, *, progress: bool, timeout: float, retries: int,
              retry_wait: float) -> str:
    """Download ``e`` to ``dest`` (via ``dest.part``); return the URL used. Verification is the caller's."""
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in _sources(e):
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https", "file"):
            _copy_local(pathlib.Path(url), part, e.download_name)
            return url
        for attempt in range(retries + 1):
            try:
                _download_once(url, part, label=e.download_name, expected_size=e.size, progress=progress,
                               timeout=timeout)
                return url
            except DownloadError as err:
                if err.transient and attempt < retries:
                    time.sleep(retry_wait * (attempt + 1))
                    continue
                errors.append(err)
                break
    if not errors:
        raise DownloadError(f"no URL to download {e.download_name} from")
    raise errors[-1] if len(errors) == 1 else DownloadError("; ".join(str(x) for x in errors),
                                                          transient=any(x.transient for x in errors))


def _manual_message(e: WeightEntry) -> str:
    where = download_path(e.name)
    pages = " or ".join(e.pages) if e.pages else "the official project page"
    bare = f" (or the bare {e.filename} next to it)" if e.archive else ""
    return (f"{e.download_name} ('{e.name}') cannot be downloaded automatically: download it from {pages}, then run "
            f"'python -m peanut_jax.weights import {e.name} FILE' or put it at {where}{bare} "
            f"(or set {_env_key(e.name)} to a direct URL)")


# --------------------------------------------------------------------------------------------
# conversion and the converted cache
# --------------------------------------------------------------------------------------------

def _is_plain_zip(path: pathlib.Path) -> bool:
    """A zip archive that is not itself a PyTorch zip checkpoint (which has a ``data.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return not any(n == "data.pkl" or n.endswith("/data.pkl") for n in z.namelist())


@contextlib.contextmanager
def _checkpoint_file(path: pathlib.Path, e: WeightEntry) -> Iterator[pathlib.Path]:
    """``path`` itself, or ``e.filename`` extracted from ``path`` when it is a zip archive
    (into a temporary file under ``downloads/NAME/``, removed afterwards)."""
    if not _is_plain_zip(path):
        yield path
        return
    with zipfile.ZipFile(path) as z:
        hits = [i for i in z.infolist() if not i.is_dir() and i.filename.replace("\\", "/").rsplit("/", 1)[-1]
                == e.filename]
        if not hits:
            raise ValueError(f"{path}: the zip archive holds no {e.filename} (has: "
                             f"{', '.join(z.namelist()[:8])}{' ...' if len(z.namelist()) > 8 else ''})")
        if len(hits) > 1:
            raise ValueError(f"{path}: the zip archive holds several {e.filename}: "
                             f"{', '.join(i.filename for i in hits)}")
        work = home() / "downloads" / e.name
        work.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{e.filename}.", suffix=".extract", dir=work)
        try:
            with os.fdopen(fd, "wb") as out, z.open(hits[0]) as src:
                shutil.copyfileobj(src, out, _CHUNK)
            yield pathlib.Path(tmp)
        finally:
            _discard(pathlib.Path(tmp))


def _replace_dir(new: pathlib.Path, target: pathlib.Path) -> None:
    """Move the finished directory ``new`` to ``target`` (replacing it) without a half-written state."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _cache_valid(e: WeightEntry, d: pathlib.Path) -> bool:
    if not d.is_dir():
        return False
    if not (d / EXPORT_CONFIG).is_file() or not (d / EXPORT_PARAMS).is_file():
        return False
    cfg = _read_json(d / EXPORT_CONFIG)
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
    """The converted copy of ``name`` if it is cached (and matches the registry), else None."""
    e = get(name)
    if e.bundled is not None:
        return e.bundled_path if e.bundled_path.is_dir() else None
    d = _cache_path(e)
    return d if _cache_valid(e, d) else None


def _convert(e: WeightEntry, original: pathlib.Path, digest: str, url: str | None, source_name: str) -> pathlib.Path:
    from peanut_jax.convert import from_official
    with _checkpoint_file(original, e) as ckpt:
        module, variables = from_official(e.model, ckpt)
        extra = sorted(set(variables) - {"params"})
        if extra:
            raise ValueError(f"{original}: the converted {e.model} has collections {extra} besides 'params'; "
                             "the weight cache stores only 'params'")
        meta = {"registry_name": e.name, "cache_version": CACHE_VERSION, "source_file": source_name,
                "source_sha256": digest, "source_url": url, "license": e.license}
        root = home()
        root.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{e.name}.tmp-", dir=root))
        try:
            export_weights(tmp, e.model, module_kwargs(e.model, module), variables["params"], metadata=meta)
            _replace_dir(tmp, _cache_path(e))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return _cache_path(e)


def _convert_checked(e: WeightEntry, original: pathlib.Path, digest: str, url: str | None, *, source_name: str,
                     remove_on_error: bool) -> pathlib.Path:
    """Convert; a file that does not convert is removed when ``remove_on_error`` (an unverified download)."""
    from peanut_jax.convert import CheckpointError, CheckpointMismatchError
    try:
        return _convert(e, original, digest, url, source_name)
    except (CheckpointError, CheckpointMismatchError, zipfile.BadZipFile) as err:
        msg = " ".join(str(err).split())
        if remove_on_error:
            _discard(original)
            raise ValueError(f"the download of '{e.name}' ({original.name}"
                             f"{' from ' + url if url else ''}) is not a valid {e.model} checkpoint and was "
                             f"deleted: {msg}") from None
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


# --------------------------------------------------------------------------------------------
# public operations
# --------------------------------------------------------------------------------------------

def fetch(name: str, *, force: bool = False, progress: bool = True, timeout: float = 60.0, retries: int = 2,
          retry_wait: float = 1.0) -> pathlib.Path:
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
    dest = download_path(e.name)
    if not force and _cache_valid(e, _cache_path(e)):
        return _cache_path(e)
    sources = _sources(e)
    manual = not sources or (e.manual and sources == list(e.urls))
    offline = is_offline() and not any(urllib.parse.urlsplit(u).scheme not in ("http", "https") for u in sources)
    redownload = force and not manual and not offline
    if redownload or not any(p.is_file() for p, _ in _local_originals(e)):
        _check_can_download(e, manual, offline, sources)  # fail before creating anything
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest.with_name(dest.name + ".lock")):
        if force:
            shutil.rmtree(_cache_path(e), ignore_errors=True)
        elif _cache_valid(e, _cache_path(e)):  # another process finished it meanwhile
            return _cache_path(e)
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


def _check_can_download(e: WeightEntry, manual: bool, offline: bool, sources: list[str]) -> None:
    if manual:
        raise ManualDownloadError(_manual_message(e))
    if offline:
        raise OfflineError(f"PEANUT_OFFLINE is set and '{e.name}' is not cached: download {e.download_name} "
                           f"from {' or '.join(sources)} and put it at {download_path(e.name)}, or unset "
                           "PEANUT_OFFLINE")


def import_file(name: str, path, *, force: bool = False) -> pathlib.Path:
    """Verify and convert a file downloaded by hand; return the converted directory.

    ``path`` is the official file, or a zip archive holding it (as the Google Drive downloads
    are).  It is checked against the registry where a checksum is published, converted, and
    copied to ``downloads/NAME/`` (the checkpoint itself, extracted from a zip)."""
    e = get(name)
    if e.bundled is not None:
        raise ValueError(f"'{e.name}' are bundled weights (shipped in {e.bundled_path}); there is nothing to import")
    src = pathlib.Path(path).expanduser()
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file (to import as '{e.name}')")
    dest = download_path(e.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest.with_name(dest.name + ".lock")):
        digest = sha256_file(src)
        if not force and _cache_valid(e, _cache_path(e)):
            meta = _read_json(_cache_path(e) / EXPORT_CONFIG).get("metadata") or {}
            if meta.get("source_sha256") == digest:
                return _cache_path(e)
        zipped = _is_plain_zip(src)
        if zipped and e.archive is None:
            with _checkpoint_file(src, e) as ckpt:
                digest = verify_file(ckpt, e, label=f"{e.filename} in {src}")
                out = _convert_checked(e, ckpt, digest, None, source_name=e.filename, remove_on_error=False)
                _install(ckpt, dest)
            return out
        if e.archive is not None and not zipped:
            # the bare checkpoint of an archive entry: the archive's checksum does not apply to it
            out = _convert_checked(e, src, digest, None, source_name=e.filename, remove_on_error=False)
            _install(src, dest.with_name(e.filename))
            return out
        verify_file(src, e)
        out = _convert_checked(e, src, digest, None, source_name=e.download_name, remove_on_error=False)
        _install(src, dest)
        return out


def looks_like_path(spec: str) -> bool:
    return (os.sep in spec or "/" in spec or spec.startswith((".", "~"))
            or pathlib.PurePath(spec).suffix.lower() in (".pth", ".pt", ".pkl", ".ckpt", ".bin", ".safetensors",
                                                          ".zip"))


def resolve_checkpoint(spec, model_name: str | None = None, *, fetch_missing: bool = True,
                       progress: bool = True) -> pathlib.Path:
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
    key = _ALIASES.get(spec, spec)
    if not is_path and not looks_like_path(spec) and key in _REGISTRY:
        e = _REGISTRY[key]
        if model_name is not None:
            check_family(e.model, model_name, f"weights '{e.name}'")
        d = converted_dir(e.name)
        if d is not None:
            return d
        if e.bundled is not None:
            return fetch(e.name)   # says that the shipped folder is missing
        if not fetch_missing:
            raise FileNotFoundError(f"weights '{e.name}' are not in the cache ({_cache_path(e)}); run "
                                    f"'python -m peanut_jax.weights fetch {e.name}'")
        return fetch(e.name, progress=progress)
    path = pathlib.Path(spec).expanduser()
    if path.exists():
        return path
    if is_path or looks_like_path(spec):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    raise ValueError(f"checkpoint {spec!r} is neither a file/directory nor a registry name; known names: "
                     f"{', '.join(names())}")


def load(spec, model_name: str | None = None, **overrides):
    """``(module, variables)`` for ``spec`` (see :func:`resolve_checkpoint`).

    ``model_name`` defaults to the registry entry's model; it is required for paths."""
    from peanut_jax.checkpoints.load import load as load_
    return load_(spec, model_name, **overrides)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------

def _status(e: WeightEntry) -> str:
    if e.bundled is not None:
        return "bundled" if converted_dir(e.name) is not None else "missing"
    if converted_dir(e.name) is not None:
        return "converted"
    dest = download_path(e.name)
    if dest.is_file():
        return "downloaded"
    if dest.with_name(dest.name + ".part").is_file():
        return "partial"
    return "-"


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _cmd_list(args) -> int:
    if args.json:
        print(json.dumps([{**dataclasses.asdict(e), "status": _status(e), "download_path": str(download_path(e.name))}
                          for e in entries()], indent=2))
        return 0
    rows = [("NAME", "MODEL", "FILE", "CHECK", "GET", "STATUS")]
    for e in entries():
        check = {"sha256": "sha256", "sha256-prefix": f"prefix:{e.sha256_prefix}", "size": "size",
                 "none": "-"}[e.check]
        get_ = "bundled" if e.bundled else "manual" if e.manual else "http"
        rows.append((e.name, e.model, e.bundled_path.name if e.bundled else e.download_name, check, get_, _status(e)))
    print(_table(rows))
    print(f"\ncache: {home()}  (aliases: {', '.join(f'{a} -> {b}' for a, b in sorted(_ALIASES.items()))})")
    print("bundled: *_demo weights ship with peanut_jax (no download); every --checkpoint* flag takes these names")
    return 0


def _cmd_info(args) -> int:
    e = get(args.name)
    for k, v in dataclasses.asdict(e).items():
        if v not in (None, (), "", False) or k in ("manual",):
            print(f"{k:14s} {', '.join(v) if isinstance(v, (tuple, list)) else v}")
    if not e.bundled:
        print(f"{'download_path':14s} {download_path(e.name)}")
    print(f"{'converted':14s} {converted_dir(e.name) or '-'}")
    return 0


def _cmd_fetch(args) -> int:
    for n in args.names:
        print(fetch(n, force=args.force, progress=not args.quiet))
    return 0


def _cmd_import(args) -> int:
    print(import_file(args.name, args.file, force=args.force))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m peanut_jax.weights",
                                     description="Official checkpoints: list, fetch (download + verify + convert), "
                                                 "import a manual download.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list", help="table of the registry and cache status")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("info", help="everything about one entry")
    p.add_argument("name")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("fetch", help="download, verify and convert (prints the converted directory)")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--force", action="store_true", help="download and convert again")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_fetch)
    p = sub.add_parser("import", help="verify and convert a file downloaded by hand")
    p.add_argument("name")
    p.add_argument("file")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_cmd_import)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("error: interrupted (a partial download is kept for resume; nothing was cached)", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
