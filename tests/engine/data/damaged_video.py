"""Real mp4 files written by OpenCV, then damaged on disk as a failing disk or copy damages them.

- :func:`truncated_faststart` moves the ``moov`` index before the data (as ``ffmpeg -movflags
  +faststart`` does, so the file still opens and lists every frame) and cuts the file.
- :func:`corrupted` overwrites a contiguous fifth of the bytes in the middle of the data.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from element_lightning_pose.engine.data.video import write_video

N_FRAMES = 120
SIZE = 64


def _frame(t: int) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    return np.stack([(x * 3 + t * 5) % 256, (y * 2 + t) % 256, (x + y + t * 3) % 256], axis=-1).astype(np.uint8)


def good_video(path: Path, n_frames: int = N_FRAMES) -> Path:
    """A 64x64 mp4 (MPEG-4 part 2) with ``n_frames`` frames of moving gradients."""
    return write_video(path, (_frame(t) for t in range(n_frames)), fps=30.0)


def _boxes(data: bytes | bytearray, start: int, end: int):
    while start < end:
        size, kind = struct.unpack(">I4s", data[start : start + 8])
        yield start, size, kind
        start += size


def _faststart(data: bytes) -> bytes:
    """The same mp4 with ``moov`` first: every chunk offset (stco) shifts by moov's size."""
    top = {kind: (i, size) for i, size, kind in _boxes(data, 0, len(data))}
    moov_at, moov_size = top[b"moov"]
    moov = bytearray(data[moov_at : moov_at + moov_size])

    def shift(start: int, end: int) -> None:
        for i, size, kind in _boxes(moov, start, end):
            if kind in (b"trak", b"mdia", b"minf", b"stbl"):
                shift(i + 8, i + size)
            elif kind == b"stco":
                (count,) = struct.unpack(">I", moov[i + 12 : i + 16])
                for k in range(count):
                    at = i + 16 + 4 * k
                    (offset,) = struct.unpack(">I", moov[at : at + 4])
                    moov[at : at + 4] = struct.pack(">I", offset + moov_size)

    shift(8, moov_size)
    mdat_at = top[b"mdat"][0]
    return data[:mdat_at] + bytes(moov) + data[mdat_at:moov_at] + data[moov_at + moov_size :]


def truncated_faststart(path: Path, keep: float = 0.6) -> Path:
    """A faststart mp4 listing :data:`N_FRAMES` frames, cut to ``keep`` of its bytes."""
    good_video(path)
    data = _faststart(path.read_bytes())
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def corrupted(path: Path) -> Path:
    """An mp4 listing :data:`N_FRAMES` frames whose bytes 30-50% are random (seeded)."""
    good_video(path)
    data = bytearray(path.read_bytes())
    start, stop = int(len(data) * 0.3), int(len(data) * 0.5)
    data[start:stop] = np.random.default_rng(0).integers(0, 256, stop - start, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path
