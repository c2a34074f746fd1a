"""Frames for the pages, decoded on the server: frame-exact seeking without transcoding videos.

The browser asks for frame ``i`` of a video and gets a JPEG of exactly that frame. An open
decoder is kept per video (a few at a time) and moved forward when the next frame asked for is
close (reading on is far cheaper than seeking); encoded frames are kept in a small cache, so
stepping back and forth costs nothing. Labeled images (``labeled-data/``) are served as they
are on disk.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from element_lightning_pose.engine.data.video import VideoError, VideoInfo, video_info

JPEG_QUALITY = 90
MAX_OPEN_VIDEOS = 4
MAX_CACHED_FRAMES = 256
# reading on through this many frames is cheaper than a seek (which decodes from a key frame)
READ_ON_LIMIT = 30


def cached_video_info(path: Path) -> VideoInfo:
    """:func:`~element_lightning_pose.engine.data.video.video_info`, read once per file version:
    checking a video's length decodes its last frame, which costs hundreds of milliseconds on a
    long-GOP H.264 file (a changed file, by size or time, is read again)."""
    stat = Path(path).stat()
    return _video_info(Path(path).resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _video_info(path: Path, size: int, mtime_ns: int) -> VideoInfo:
    return video_info(path)


class _Decoder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.n_frames = cached_video_info(path).n_frames
        self.capture = cv2.VideoCapture(str(path))
        if not self.capture.isOpened():
            raise VideoError(f"{path}: cannot be opened")
        self.next_index = 0
        self.lock = threading.Lock()

    def frame(self, index: int) -> np.ndarray:
        if not 0 <= index < self.n_frames:
            raise VideoError(f"{self.path}: frame {index} is outside 0..{self.n_frames - 1}")
        with self.lock:
            if not (self.next_index <= index <= self.next_index + READ_ON_LIMIT):
                self.capture.set(cv2.CAP_PROP_POS_FRAMES, index)
                self.next_index = index
            frame = None
            while self.next_index <= index:
                ok, frame = self.capture.read()
                if not ok:
                    raise VideoError(f"{self.path}: frame {self.next_index} could not be decoded")
                self.next_index += 1
            assert frame is not None
            return frame  # BGR, as OpenCV decodes and encodes

    def close(self) -> None:
        self.capture.release()


class FrameServer:
    """JPEG bytes of video frames and labeled images, with bounded memory."""

    def __init__(self) -> None:
        self._decoders: OrderedDict[Path, _Decoder] = OrderedDict()
        self._cache: OrderedDict[tuple[Path, int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def _decoder(self, path: Path) -> _Decoder:
        with self._lock:
            decoder = self._decoders.pop(path, None)
            if decoder is None:
                decoder = _Decoder(path)
            self._decoders[path] = decoder
            while len(self._decoders) > MAX_OPEN_VIDEOS:
                _, old = self._decoders.popitem(last=False)
                old.close()
            return decoder

    def video_frame(self, path: Path, index: int, *, max_width: int = 0) -> bytes:
        """Frame ``index`` of the video at ``path`` as JPEG (at most ``max_width`` wide, 0: as is)."""
        key = (path.resolve(), int(index), int(max_width))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        frame = self._decoder(key[0]).frame(int(index))
        data = encode_jpeg(frame, max_width)
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > MAX_CACHED_FRAMES:
                self._cache.popitem(last=False)
        return data

    def close(self) -> None:
        with self._lock:
            for decoder in self._decoders.values():
                decoder.close()
            self._decoders.clear()
            self._cache.clear()


def encode_jpeg(frame_bgr: np.ndarray, max_width: int = 0) -> bytes:
    """A BGR frame as JPEG bytes, shrunk to ``max_width`` when it is wider (0: never)."""
    if max_width and frame_bgr.shape[1] > max_width:
        height = round(frame_bgr.shape[0] * max_width / frame_bgr.shape[1])
        frame_bgr = cv2.resize(frame_bgr, (max_width, height), interpolation=cv2.INTER_AREA)
    ok, buffer = cv2.imencode(".jpg", frame_bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise VideoError("a frame could not be encoded as JPEG")
    return buffer.tobytes()
