"""Lazy video / frame-folder readers and atomic writers (uint8 RGB on the host).

Readers
  :func:`open_video` returns a :class:`VideoSource` for a video file (mp4, mov, mkv, avi, webm;
  decoded by the ffmpeg that ships with ``imageio-ffmpeg``) or a folder of frames (png, jpg, jpeg,
  bmp, sorted by file name).  Frames are decoded lazily, one at a time, as uint8 RGB (H, W, 3):
  grayscale becomes RGB, and an alpha channel is dropped with a warning.
  :func:`read_frames` reads a range of frames into one array.

Writers
  :class:`VideoWriter` writes an mp4/mov/mkv (libx264, yuv420p by default) or a frame folder
  (PNG by default), *atomically*: everything goes to a temporary file or folder next to the
  target, renamed onto the target only when the writer closes without error.  On an exception or
  ``KeyboardInterrupt`` inside the ``with`` block the temporary output is removed, so the target
  name never holds a partial video.  An existing target is refused unless ``overwrite=True``.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import uuid
import warnings
import weakref
from collections.abc import Iterator

import numpy as np
from PIL import Image

from peanut_jax.data.masks import list_images

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def ffmpeg_exe() -> str:
    """The ffmpeg binary shipped with ``imageio-ffmpeg`` (only its path is used: see ``_run_ffmpeg``)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _image_to_rgb_u8(img: Image.Image, path: pathlib.Path, warned: list) -> np.ndarray:
    """PIL image -> uint8 RGB (H, W, 3); alpha dropped (warned once per source)."""
    mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        if not warned:
            warnings.warn(f"{path}: frames have an alpha channel; it is dropped", stacklevel=3)
            warned.append(True)
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.float64)
        arr = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)  # 16-bit -> 8-bit
        return np.repeat(arr[..., None], 3, axis=-1)
    if mode == "L":
        arr = np.asarray(img)
        return np.repeat(arr[..., None], 3, axis=-1)
    return np.asarray(img.convert("RGB"))


def _load_frame(path: pathlib.Path, warned: list) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            return _image_to_rgb_u8(img, path, warned)
    except (OSError, ValueError, SyntaxError) as err:
        raise ValueError(f"{path}: cannot read image ({err})") from None


class VideoSource:
    """A lazily decoded video: ``len()``, ``fps``, ``height``/``width``, iteration over uint8 frames.

    Iterating starts from the first frame every time; :meth:`read` returns a range as one array.
    Frame folders have no intrinsic frame rate: ``fps`` is the ``fps`` given to :func:`open_video`
    (None when not given).
    """

    def __init__(
        self,
        path: pathlib.Path,
        kind: str,
        fps: float | None,
        height: int,
        width: int,
        files: list[pathlib.Path] | None = None,
        num_frames: int | None = None,
    ):
        self.path = path
        self.kind = kind  # 'video' or 'frames'
        self.fps = fps
        self.height = height
        self.width = width
        self._files = files
        self._len = num_frames
        self.declared_frames: int | None = None  # frame count the video container declares (duration x fps)
        self._warned: list = []

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return self.height, self.width

    def __len__(self) -> int:
        if self._len is None:
            self._len = _count_video_frames(self.path, self.declared_frames)
        return self._len

    def __repr__(self) -> str:
        n = self._len if self._len is not None else "?"
        return (
            f"VideoSource({str(self.path)!r}, kind={self.kind!r}, frames={n}, "
            f"size={self.height}x{self.width}, fps={self.fps})"
        )

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.iter_frames()

    def iter_frames(self, start: int = 0) -> Iterator[np.ndarray]:
        """Yield uint8 (H, W, 3) frames from index ``start`` on."""
        if start < 0:
            raise ValueError(f"{self.path}: start must be >= 0, got {start}")
        if self.kind == "frames":
            for f in self._files[start:]:
                frame = _load_frame(f, self._warned)
                if frame.shape[:2] != (self.height, self.width):
                    raise ValueError(
                        f"{f}: frame size {frame.shape[0]}x{frame.shape[1]} differs from "
                        f"the first frame ({self.height}x{self.width})"
                    )
                yield frame
            return
        yield from self._iter_video(start)

    def _iter_video(self, start: int) -> Iterator[np.ndarray]:
        h, w = self.height, self.width
        nbytes = w * h * 3
        with _FFmpegFrames(self.path) as stream:
            i = 0
            while True:
                raw = stream.read(nbytes)
                if not raw:
                    break
                if len(raw) != nbytes:
                    raise ValueError(f"{self.path}: truncated frame {i}")
                if i >= start:
                    yield np.frombuffer(raw, np.uint8).reshape(h, w, 3)
                i += 1

    def read(self, start: int = 0, count: int | None = None) -> np.ndarray:
        """Frames ``start .. start+count-1`` (all remaining when ``count`` is None), (T, H, W, 3) uint8."""
        if count is not None and count < 1:
            raise ValueError(f"{self.path}: count must be >= 1, got {count}")
        frames = []
        for frame in self.iter_frames(start):
            frames.append(frame)
            if count is not None and len(frames) == count:
                break
        if not frames or (count is not None and len(frames) < count):
            total = start + len(frames)
            want = f"{start}..{start + count - 1}" if count is not None else f"{start}.."
            raise ValueError(f"{self.path}: requested frames {want} but the video has {total} frames")
        return np.stack(frames)


def open_video(path: str | os.PathLike, fps: float | None = None) -> VideoSource:
    """Open a video file or a frame folder lazily (only the first frame is decoded here).

    ``fps``: frame rate to report for frame folders (video files report their own and ignore it).
    Raises FileNotFoundError for a missing path and ValueError for an unreadable or empty source.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video not found: {path}")
    if path.is_dir():
        files = list_images(path, FRAME_EXTENSIONS)
        if not files:
            raise ValueError(f"{path}: no frames ({', '.join(FRAME_EXTENSIONS)} files) in the folder")
        try:
            with Image.open(files[0]) as img:
                w, h = img.size
        except (OSError, ValueError, SyntaxError) as err:
            raise ValueError(f"{files[0]}: cannot read image ({err})") from None
        return VideoSource(path, "frames", fps, h, w, files=files, num_frames=len(files))
    info = _probe(path)
    pix_fmt = info["pix_fmt"]
    if any(a in pix_fmt for a in ("rgba", "argb", "bgra", "abgr", "yuva", "gbrap", "ya8", "ya16")):
        warnings.warn(f"{path}: video has an alpha channel ({pix_fmt}); it is dropped", stacklevel=2)
    src = VideoSource(path, "video", info["fps"] or fps, info["height"], info["width"])
    src.declared_frames = info["declared_frames"]
    return src


# ------------------------------------------------------------------------------------ ffmpeg
# Every ffmpeg child is started by ``subprocess`` without a ``preexec_fn`` (imageio-ffmpeg's
# readers pass ``preexec_fn=os.setpgrp``, which makes CPython run the fork handlers, and JAX's
# warns "os.fork() ... will likely lead to a deadlock" once its threads exist); a reader gets its own
# session (``start_new_session``, done in the child without Python code) so that Ctrl-C in the
# terminal reaches this process only, which then stops the reader itself.
_ERROR_LINE = re.compile(r"error|invalid|corrupt|partial file|truncat|missing", re.IGNORECASE)


def _run_ffmpeg(args: list[str], stdout=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ffmpeg_exe(), "-hide_banner", *args],
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _probe(path: pathlib.Path) -> dict:
    """Size (after ffmpeg's rotation), frame rate, declared frame count and pixel format of the
    first video stream, from one short ffmpeg run that decodes the first frame."""
    r = _run_ffmpeg(
        ["-i", str(path), "-map", "0:v:0", "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        stdout=subprocess.PIPE,
    )
    text = r.stderr.decode(errors="replace")
    head, _, out = text.partition("Output #0")
    vin = next((ln for ln in head.splitlines() if "Stream #" in ln and "Video:" in ln), None)
    vout = next((ln for ln in out.splitlines() if "Stream #" in ln and "Video:" in ln), None)
    if vin is None or vout is None:
        raise ValueError(f"{path}: cannot read video (not a video file, or an unsupported codec)")
    size = re.search(r"[ ,](\d{1,6})x(\d{1,6})[ ,\[]", vout + " ")
    if size is None:
        raise ValueError(f"{path}: cannot read video (no frame size in ffmpeg's report)")
    w, h = int(size.group(1)), int(size.group(2))
    if not r.stdout:
        raise ValueError(f"{path}: the video has no frames")
    if len(r.stdout) != w * h * 3:
        raise ValueError(f"{path}: cannot decode video (frame of {len(r.stdout)} bytes, expected {w}x{h}x3)")
    rate = re.search(r"(\d+(?:\.\d+)?)(k?) fps", vin) or re.search(r"(\d+(?:\.\d+)?)(k?) tbr", vin)
    fps = float(rate.group(1)) * (1000 if rate.group(2) else 1) if rate else None
    dur = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", head)
    seconds = int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3)) if dur else None
    pix = re.search(r"Video: [^,]+, ([a-z0-9_]+)", vin)
    return {
        "width": w,
        "height": h,
        "fps": fps or None,
        "pix_fmt": pix.group(1) if pix else "",
        "declared_frames": int(round(seconds * fps)) if seconds and fps else None,
    }


def _count_video_frames(path: pathlib.Path, declared: int | None) -> int:
    """Frames ffmpeg decodes from ``path``; a file that decodes to fewer frames than its container
    declares, with decoding errors on the way (a cut or damaged file), is refused."""
    r = _run_ffmpeg(["-nostdin", "-loglevel", "error", "-stats", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"])
    text = r.stderr.decode(errors="replace").replace("\r", "\n")
    counts = re.findall(r"frame=\s*(\d+)", text)
    if r.returncode != 0 or not counts:
        last = (text.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        raise ValueError(f"{path}: cannot count video frames ({last})")
    n = int(counts[-1])
    errors = [ln.strip() for ln in text.splitlines() if _ERROR_LINE.search(ln) and "frame=" not in ln]
    if declared and n < declared and errors:
        why = re.sub(r"^(\[[^\]]*\]\s*)+", "", errors[-1])
        raise ValueError(
            f"{path}: the video is truncated or damaged: only {n} of the {declared} frames its "
            f"container declares can be decoded (ffmpeg: {why}); re-encode or re-download it"
        )
    return n


class _FFmpegFrames:
    """A running ffmpeg that writes the raw rgb24 frames of ``path`` to a pipe (stopped on close)."""

    def __init__(self, path: pathlib.Path):
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [
                ffmpeg_exe(),
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-i",
                str(path),
                "-map",
                "0:v:0",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "rgb24",
                "-",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._err,
            start_new_session=True,
        )

    def read(self, nbytes: int) -> bytes:
        buf = bytearray()
        while len(buf) < nbytes:
            chunk = self.proc.stdout.read(nbytes - len(buf))
            if not chunk:
                break
            buf += chunk
        return bytes(buf)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self._err.close()


def read_frames(path: str | os.PathLike, start: int = 0, count: int | None = None) -> np.ndarray:
    """Read frames ``start .. start+count-1`` (default: all) of a video or frame folder: (T, H, W, 3) uint8."""
    return open_video(path).read(start, count)


# ------------------------------------------------------------------------------------ targets
FRAME_FILE = re.compile(r"^\d+\.(png|jpg|jpeg|bmp)$", re.IGNORECASE)


def _foreign_entries(folder: pathlib.Path) -> list[str]:
    """Names in ``folder`` that are not frame files this program writes (``00000.png``, ...)."""
    return sorted(e.name for e in folder.iterdir() if not (e.is_file() and FRAME_FILE.match(e.name)))


def check_target(path, overwrite: bool, what: str | None = None) -> pathlib.Path:
    """Refuse an output target that must not be replaced, before anything is computed or written.

    A missing target is fine.  An existing one needs ``overwrite``, and even then only what this
    program writes is replaced: a video file by a video, a folder of frame files (``00000.png``,
    ...) by a folder of frames.  A folder holding anything else, a folder named like a video, or a
    file in place of a frame folder is refused, so a user's other files are never deleted."""
    p = pathlib.Path(path)
    label = f"{what} {p}" if what else str(p)
    if not p.exists() and not p.is_symlink():
        return p
    if not overwrite:
        raise FileExistsError(f"{label} already exists (use --overwrite to replace it)")
    video = p.suffix.lower() in VIDEO_EXTENSIONS
    if p.is_dir() and not p.is_symlink():
        if video:
            raise FileExistsError(f"{label} is a folder; --overwrite replaces an output file, never a folder")
        foreign = _foreign_entries(p)
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise FileExistsError(
                f"{label} holds files this program did not write ({foreign[0]!r}{more}); "
                f"--overwrite only replaces a folder of frames: choose another folder or empty it"
            )
    elif not video:
        raise FileExistsError(f"{label} is a file, not a frame folder; --overwrite will not replace it by a folder")
    return p


def check_output(
    path, overwrite: bool, what: str = "--output", video_only: bool = False, inputs: tuple = ()
) -> pathlib.Path:
    """The checks every command runs on an output location before loading or compiling anything:
    a supported extension (or none: a frame folder), an existing writable parent folder, not one of
    ``inputs``, and :func:`check_target` (existing outputs)."""
    p = pathlib.Path(path)
    suffix = p.suffix.lower()
    if suffix and suffix not in VIDEO_EXTENSIONS:
        raise ValueError(
            f"{what} {p}: unsupported extension {suffix!r}; use one of {', '.join(VIDEO_EXTENSIONS)}"
            + ("" if video_only else " or a folder name without extension for PNG frames")
        )
    if video_only and not suffix:
        raise ValueError(f"{what} {p}: give a video file name ({', '.join(VIDEO_EXTENSIONS)})")
    parent = p.parent if str(p.parent) else pathlib.Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"{what} {p}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {p}: folder {parent} is not writable")
    for src in inputs:
        if src is not None and pathlib.Path(src).exists() and p.exists() and os.path.samefile(src, p):
            raise ValueError(f"{what} {p} is the input itself")
        if src is not None and p.resolve() == pathlib.Path(src).resolve():
            raise ValueError(f"{what} {p} is the input itself")
    return check_target(p, overwrite, what)


def _to_u8(frame, path) -> np.ndarray:
    a = np.asarray(frame)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3):
        raise ValueError(f"{path}: frames must be (H, W, 3) or (H, W), got shape {a.shape}")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{path}: frame contains NaN or inf")
        return np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    raise ValueError(f"{path}: frames must be uint8 or float in [0, 1], got {a.dtype}")


class VideoWriter:
    """Write frames to a video file or a frame folder, atomically (see the module docstring).

    ``path`` ending in a video extension (.mp4, .mov, .mkv, .avi, .webm, .m4v) writes a video;
    a path without extension writes a folder of ``frame_pattern`` files.  Frames are uint8 RGB
    (H, W, 3), grayscale (H, W), or float in [0, 1] (rounded to uint8).

    Video options: ``codec`` (libx264), ``crf`` (18, visually near-lossless for x264),
    ``pix_fmt`` (yuv420p, which needs even sizes).  Frames of an odd height/width keep their exact
    size: ``odd_size='exact'`` (default) encodes them in yuv444p (H.264 High 4:4:4, which some
    hardware players do not decode); ``'pad'`` pads one replicated bottom row / right column (the
    decoded video is then one pixel larger); ``'error'`` refuses them.

    Use as a context manager::

        with VideoWriter("out.mp4", fps=25) as w:
            for frame in frames:
                w.write(frame)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float = 25.0,
        *,
        overwrite: bool = False,
        codec: str = "libx264",
        crf: int | None = 18,
        pix_fmt: str = "yuv420p",
        odd_size: str = "exact",
        frame_pattern: str = "{:05d}.png",
        preset: str | None = None,
    ):
        self.path = pathlib.Path(path)
        suffix = self.path.suffix.lower()
        if suffix in VIDEO_EXTENSIONS:
            self.kind = "video"
        elif suffix == "":
            self.kind = "frames"
        else:
            raise ValueError(
                f"{self.path}: unsupported output extension {suffix!r}; use one of "
                f"{', '.join(VIDEO_EXTENSIONS)} or a folder name without extension"
            )
        if not fps or fps <= 0:
            raise ValueError(f"{self.path}: fps must be > 0, got {fps}")
        if odd_size not in ("exact", "pad", "error"):
            raise ValueError(f"odd_size must be 'exact', 'pad' or 'error', got {odd_size!r}")
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"{self.path}: parent folder does not exist")
        check_target(self.path, overwrite)
        self.fps = float(fps)
        self.overwrite = overwrite
        self.codec, self.crf, self.pix_fmt, self.preset = codec, crf, pix_fmt, preset
        self.odd_size = odd_size
        self.frame_pattern = frame_pattern
        self.count = 0
        self._size: tuple[int, int] | None = None  # (H, W) of the frames given
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self._closed = False
        token = uuid.uuid4().hex[:8]
        # keep the real extension at the end so ffmpeg picks the right container
        self._tmp = self.path.with_name(f".{self.path.stem}.{token}.partial{self.path.suffix}")
        if self.kind == "frames":
            self._tmp.mkdir()
        # remove the temporary output if the writer is dropped without close()
        self._finalizer = weakref.finalize(self, _discard, self._tmp, None)
        _LIVE_WRITERS.add(self)

    # -------------------------------------------------------------------- context manager
    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # ----------------------------------------------------------------------------- writing
    def write(self, frame) -> None:
        """Append one frame."""
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        a = _to_u8(frame, self.path)
        if self._size is None:
            self._size = a.shape[:2]
        elif a.shape[:2] != self._size:
            raise ValueError(
                f"{self.path}: frame {self.count} has size {a.shape[0]}x{a.shape[1]}, "
                f"expected {self._size[0]}x{self._size[1]}"
            )
        try:
            if self.kind == "frames":
                Image.fromarray(a).save(self._tmp / self.frame_pattern.format(self.count))
            else:
                self._write_video_frame(a)
        except BaseException:
            self.abort()
            raise
        self.count += 1

    def write_frames(self, frames) -> None:
        """Append every frame of an iterable or a (T, H, W[, 3]) array."""
        for f in frames:
            self.write(f)

    def _write_video_frame(self, a: np.ndarray) -> None:
        h, w = a.shape[:2]
        if (h % 2 or w % 2) and self.pix_fmt.startswith("yuv420"):
            if self.odd_size == "error":
                raise ValueError(
                    f"{self.path}: frame size {w}x{h} (WxH) is odd; {self.pix_fmt} needs even "
                    f"sizes (use odd_size='exact' or 'pad')"
                )
            if self.odd_size == "pad":
                a = np.pad(a, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            elif self._proc is None:  # 'exact': full-resolution chroma has no even-size constraint
                self.pix_fmt = "yuv444p"
        if self._proc is None:
            self._start_ffmpeg(a.shape[0], a.shape[1])
        try:
            self._proc.stdin.write(np.ascontiguousarray(a).tobytes())
        except (BrokenPipeError, OSError):
            raise ValueError(f"{self.path}: ffmpeg stopped: {self._ffmpeg_error()}") from None

    def _start_ffmpeg(self, h: int, w: int) -> None:
        cmd = [
            ffmpeg_exe(),
            "-y",
            "-loglevel",
            "error",
            "-f",
            "rawvideo",
            "-vcodec",
            "rawvideo",
            "-s",
            f"{w}x{h}",
            "-pix_fmt",
            "rgb24",
            "-r",
            f"{self.fps:g}",
            "-i",
            "-",
            "-an",
            "-vcodec",
            self.codec,
            "-pix_fmt",
            self.pix_fmt,
        ]
        if self.crf is not None:
            cmd += ["-crf", str(self.crf)]
        if self.preset:
            cmd += ["-preset", self.preset]
        if self.path.suffix.lower() in (".mp4", ".mov", ".m4v"):
            cmd += ["-movflags", "+faststart"]
        cmd.append(str(self._tmp))
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr)
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _discard, self._tmp, self._proc)

    def _ffmpeg_error(self) -> str:
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
            self._proc.wait()
        if self._stderr is None:
            return "unknown error"
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {self._proc.returncode}"

    # --------------------------------------------------------------------------- finishing
    def close(self) -> None:
        """Finish the output and move it onto the target name."""
        if self._closed:
            return
        try:
            if self.count == 0:
                raise ValueError(f"{self.path}: no frames were written")
            if self.kind == "video":
                self._proc.stdin.close()
                rc = self._proc.wait()
                if rc != 0:
                    raise ValueError(f"{self.path}: ffmpeg failed: {self._ffmpeg_error()}")
            check_target(self.path, self.overwrite)
            self._commit()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._finalizer.detach()
        if self._stderr is not None:
            self._stderr.close()

    def _commit(self) -> None:
        if not self.path.exists() or self.kind == "video":
            os.replace(self._tmp, self.path)  # atomic, also over an existing file
            return
        # replacing a folder of frames (check_target: it holds nothing else): move the old one
        # aside, move the new one in, then delete the old frame files and the folder if empty
        old = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(self.path, old)
        os.replace(self._tmp, self.path)
        for e in old.iterdir():
            if e.is_file() and FRAME_FILE.match(e.name):
                e.unlink()
        try:
            old.rmdir()
        except OSError:  # something appeared meanwhile: keep it
            warnings.warn(f"{self.path}: files added to the old folder while writing were kept in {old}", stacklevel=3)

    def abort(self) -> None:
        """Stop writing and remove the temporary output; the target is left untouched."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        _discard(self._tmp, self._proc)
        if self._stderr is not None:
            self._stderr.close()


_LIVE_WRITERS: weakref.WeakSet[VideoWriter] = weakref.WeakSet()


def discard_partial_outputs() -> None:
    """Abort every writer of this process that has not finished (removes their temporary outputs
    and stops their encoders); used on an emergency exit (Ctrl-C while the main thread is busy in
    native code, see ``peanut_jax.pipeline.common.InterruptExit``)."""
    for w in list(_LIVE_WRITERS):
        if not w._closed:
            try:
                _discard(w._tmp, w._proc)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass


def _discard(tmp: pathlib.Path, proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()
    if proc is not None and proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    elif tmp.exists():
        tmp.unlink()


def write_video(path: str | os.PathLike, frames, fps: float = 25.0, **kwargs) -> pathlib.Path:
    """Write all ``frames`` (iterable or (T, H, W[, 3]) array) with :class:`VideoWriter`; returns the path."""
    with VideoWriter(path, fps, **kwargs) as w:
        w.write_frames(frames)
    return w.path
