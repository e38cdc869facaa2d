"""The SAM 2 video predictor's frames: read lazily and squashed to the model input size on the host
(PIL bicubic, as the official JPEG loader), with a small cache; live input appends frames one by one."""

from __future__ import annotations

import collections
import os
import pathlib

import numpy as np

BACK = 16  # frames of a video file decoded at once when reading backwards


class SquashedFrames:
    """Lazy frames resized to the model input (PIL squash, as the official JPEG loader)."""

    def __init__(self, video, num_frames, image_size: int, cache: int = 4):
        self.image_size = image_size
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._cache_size = cache
        self._array = self._source = None
        self._iter = None
        self._next = 0  # the next frame the video iterator yields; live input: the next index
        if video is None:
            self.num_frames, self.height, self.width = num_frames, None, None
            self.live = True
            return
        self.live = False
        if isinstance(video, np.ndarray):
            if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
                raise ValueError(f"video: expected a uint8 array (T, H, W, 3), got {video.dtype} {video.shape}")
            self._array = video
            self.num_frames, self.height, self.width = video.shape[:3]
        else:
            from peanut_jax.data.video_io import open_video

            path = pathlib.Path(os.fspath(video))
            if not path.exists():
                raise FileNotFoundError(f"video: {path} does not exist")
            try:
                self._source = open_video(path)
                self.num_frames = len(self._source)
            except ValueError as err:
                raise ValueError(f"video: {err}") from None
            self.height, self.width = self._source.size
            if self._source.kind == "video":
                self._cache_size = max(cache, BACK)
        if num_frames is not None and num_frames != self.num_frames:
            raise ValueError(f"num_frames={num_frames} but the video has {self.num_frames} frames")

    def _raw(self, idx: int) -> np.ndarray:
        if self._array is not None:
            return self._array[idx]
        if self._iter is None or idx != self._next:
            self._iter = self._source.iter_frames(idx)
            self._next = idx
        frame = next(self._iter)
        self._next += 1
        return frame

    def append(self, frame_u8: np.ndarray) -> int:
        """Live input: register the next frame; returns its index."""
        frame_u8 = np.asarray(frame_u8)
        if frame_u8.ndim != 3 or frame_u8.shape[2] != 3:
            raise ValueError(f"frame must be (H, W, 3) uint8 RGB, got shape {frame_u8.shape}")
        if self.height is None:
            self.height, self.width = frame_u8.shape[:2]
        elif frame_u8.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"frame size {frame_u8.shape[1]}x{frame_u8.shape[0]} differs from the video's "
                f"{self.width}x{self.height}"
            )
        idx = self._next
        self._store(idx, self._squash(frame_u8))
        self._next += 1
        return idx

    def _squash(self, frame: np.ndarray) -> np.ndarray:
        from PIL import Image

        s = self.image_size
        if frame.shape[:2] == (s, s):
            return np.ascontiguousarray(frame, np.uint8)
        return np.asarray(Image.fromarray(np.asarray(frame, np.uint8)).resize((s, s)))  # PIL default bicubic

    def _store(self, idx, frame):
        self._cache[idx] = frame
        self._cache.move_to_end(idx)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def get(self, idx: int) -> np.ndarray:
        if idx in self._cache:
            self._cache.move_to_end(idx)
            return self._cache[idx]
        if self.live:
            raise ValueError(f"frame {idx} is no longer held (live input keeps the last {self._cache_size})")
        if self._source is not None and self._source.kind == "video" and idx < self._next:
            # a video file decodes from its start: going backwards (reverse pass), decode the BACK
            # frames up to idx in one go rather than restarting the decoder for every frame
            for j in range(max(0, idx - BACK + 1), idx):
                self._store(j, self._squash(self._raw(j)))
        frame = self._squash(self._raw(idx))
        self._store(idx, frame)
        return frame
