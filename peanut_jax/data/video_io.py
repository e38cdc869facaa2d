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
import shutil
import subprocess
import tempfile
import uuid
import warnings
import weakref
from typing import Iterator

import numpy as np
from PIL import Image

from peanut_jax.data.masks import list_images

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


def _ffmpeg_exe() -> str:
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
        arr = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)   # 16-bit -> 8-bit
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

    def __init__(self, path: pathlib.Path, kind: str, fps: float | None, height: int, width: int,
                 files: list[pathlib.Path] | None = None, num_frames: int | None = None):
        self.path = path
        self.kind = kind            # 'video' or 'frames'
        self.fps = fps
        self.height = height
        self.width = width
        self._files = files
        self._len = num_frames
        self._warned: list = []

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return self.height, self.width

    def __len__(self) -> int:
        if self._len is None:
            import imageio_ffmpeg
            try:
                self._len = int(imageio_ffmpeg.count_frames_and_secs(str(self.path))[0])
            except Exception as err:  # noqa: BLE001 - ffmpeg reports many kinds of failure
                raise ValueError(f"{self.path}: cannot count video frames ({err})") from None
        return self._len

    def __repr__(self) -> str:
        n = self._len if self._len is not None else "?"
        return (f"VideoSource({str(self.path)!r}, kind={self.kind!r}, frames={n}, "
                f"size={self.height}x{self.width}, fps={self.fps})")

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
                    raise ValueError(f"{f}: frame size {frame.shape[0]}x{frame.shape[1]} differs from "
                                     f"the first frame ({self.height}x{self.width})")
                yield frame
            return
        yield from self._iter_video(start)

    def _iter_video(self, start: int) -> Iterator[np.ndarray]:
        import imageio_ffmpeg
        gen = imageio_ffmpeg.read_frames(str(self.path), pix_fmt="rgb24")
        try:
            try:
                meta = next(gen)
            except Exception as err:  # noqa: BLE001
                raise ValueError(f"{self.path}: cannot read video ({str(err).splitlines()[0]})") from None
            w, h = meta["size"]
            nbytes = w * h * 3
            for i, raw in enumerate(gen):
                if len(raw) != nbytes:
                    raise ValueError(f"{self.path}: truncated frame {i}")
                if i >= start:
                    yield np.frombuffer(raw, np.uint8).reshape(h, w, 3)
        finally:
            gen.close()   # stops ffmpeg

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
    import imageio_ffmpeg
    gen = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        try:
            meta = next(gen)
        except Exception:  # noqa: BLE001
            raise ValueError(f"{path}: cannot read video (not a video file, or an unsupported codec)") from None
        try:
            first = next(gen)
        except StopIteration:
            raise ValueError(f"{path}: the video has no frames") from None
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"{path}: cannot decode video ({str(err).splitlines()[0]})") from None
    finally:
        gen.close()
    w, h = meta["size"]
    if len(first) != w * h * 3:
        raise ValueError(f"{path}: cannot decode video (frame of {len(first)} bytes, expected {w}x{h}x3)")
    pix_fmt = str(meta.get("pix_fmt", ""))
    if any(a in pix_fmt for a in ("rgba", "argb", "bgra", "abgr", "yuva", "gbrap", "ya8", "ya16")):
        warnings.warn(f"{path}: video has an alpha channel ({pix_fmt}); it is dropped", stacklevel=2)
    vfps = meta.get("fps")
    return VideoSource(path, "video", float(vfps) if vfps else fps, h, w)


def read_frames(path: str | os.PathLike, start: int = 0, count: int | None = None) -> np.ndarray:
    """Read frames ``start .. start+count-1`` (default: all) of a video or frame folder: (T, H, W, 3) uint8."""
    return open_video(path).read(start, count)


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
    ``pix_fmt`` (yuv420p, which needs even sizes).  ``odd_size='pad'`` pads an odd height/width
    with one replicated bottom row / right column (the decoded video is then one pixel larger);
    ``odd_size='error'`` refuses such frames.

    Use as a context manager::

        with VideoWriter("out.mp4", fps=25) as w:
            for frame in frames:
                w.write(frame)
    """

    def __init__(self, path: str | os.PathLike, fps: float = 25.0, *, overwrite: bool = False,
                 codec: str = "libx264", crf: int | None = 18, pix_fmt: str = "yuv420p",
                 odd_size: str = "pad", frame_pattern: str = "{:05d}.png", preset: str | None = None):
        self.path = pathlib.Path(path)
        suffix = self.path.suffix.lower()
        if suffix in VIDEO_EXTENSIONS:
            self.kind = "video"
        elif suffix == "":
            self.kind = "frames"
        else:
            raise ValueError(f"{self.path}: unsupported output extension {suffix!r}; use one of "
                             f"{', '.join(VIDEO_EXTENSIONS)} or a folder name without extension")
        if not fps or fps <= 0:
            raise ValueError(f"{self.path}: fps must be > 0, got {fps}")
        if odd_size not in ("pad", "error"):
            raise ValueError(f"odd_size must be 'pad' or 'error', got {odd_size!r}")
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"{self.path}: parent folder does not exist")
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} already exists (pass overwrite=True to replace it)")
        self.fps = float(fps)
        self.overwrite = overwrite
        self.codec, self.crf, self.pix_fmt, self.preset = codec, crf, pix_fmt, preset
        self.odd_size = odd_size
        self.frame_pattern = frame_pattern
        self.count = 0
        self._size: tuple[int, int] | None = None    # (H, W) of the frames given
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

    # -------------------------------------------------------------------- context manager
    def __enter__(self) -> "VideoWriter":
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
            raise ValueError(f"{self.path}: frame {self.count} has size {a.shape[0]}x{a.shape[1]}, "
                             f"expected {self._size[0]}x{self._size[1]}")
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
        if h % 2 or w % 2:
            if self.pix_fmt.startswith("yuv420") and self.odd_size == "error":
                raise ValueError(f"{self.path}: frame size {h}x{w} is odd; {self.pix_fmt} needs even "
                                 f"sizes (use odd_size='pad')")
            if self.pix_fmt.startswith("yuv420"):
                a = np.pad(a, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self._proc is None:
            self._start_ffmpeg(a.shape[0], a.shape[1])
        try:
            self._proc.stdin.write(np.ascontiguousarray(a).tobytes())
        except (BrokenPipeError, OSError):
            raise ValueError(f"{self.path}: ffmpeg stopped: {self._ffmpeg_error()}") from None

    def _start_ffmpeg(self, h: int, w: int) -> None:
        cmd = [_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-vcodec", "rawvideo",
               "-s", f"{w}x{h}", "-pix_fmt", "rgb24", "-r", f"{self.fps:g}", "-i", "-", "-an",
               "-vcodec", self.codec, "-pix_fmt", self.pix_fmt]
        if self.crf is not None:
            cmd += ["-crf", str(self.crf)]
        if self.preset:
            cmd += ["-preset", self.preset]
        if self.path.suffix.lower() in (".mp4", ".mov", ".m4v"):
            cmd += ["-movflags", "+faststart"]
        cmd.append(str(self._tmp))
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=self._stderr)
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
            if self.path.exists() and not self.overwrite:
                raise FileExistsError(f"{self.path} already exists (pass overwrite=True to replace it)")
            self._commit()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._finalizer.detach()
        if self._stderr is not None:
            self._stderr.close()

    def _commit(self) -> None:
        if not self.path.exists() or (self.kind == "video" and not self.path.is_dir()):
            os.replace(self._tmp, self.path)   # atomic, also over an existing file
            return
        # replacing a folder (or a file by a folder): move the old one aside, move the new one
        # in, then delete the old one
        old = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(self.path, old)
        os.replace(self._tmp, self.path)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()

    def abort(self) -> None:
        """Stop writing and remove the temporary output; the target is left untouched."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        _discard(self._tmp, self._proc)
        if self._stderr is not None:
            self._stderr.close()


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
