"""Video decoding and writing (OpenCV), streaming: no function here holds a whole video.

Frames are RGB ``uint8`` arrays of shape (H, W, 3), or grey (H, W) from :func:`iter_grey_frames`
and :func:`iter_grey_batches` (for features such as motion). :func:`iter_batches` decodes and resizes
in a background thread feeding a bounded queue, so decoding overlaps the network consuming
the batches (OpenCV releases the GIL while it decodes and resizes).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from element_lightning_pose.engine.atomic import atomic_output
from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.types import PathLike

# Forward gaps up to this many frames are crossed by decoding (grab) rather than seeking:
# a seek restarts decoding at the previous key frame, which costs about as much.
SEQUENTIAL_GAP = 32


class VideoError(ElpError, ValueError):
    """A video is missing, empty or cannot be decoded; the message names the file."""


class ShortVideoError(VideoError):
    """Decoding stopped before the last frame the container lists (a truncated or damaged file).

    ``reached`` is the first frame that could not be decoded, ``n_frames`` the container's count.
    """

    def __init__(self, path: PathLike, reached: int, n_frames: int) -> None:
        self.path, self.reached, self.n_frames = Path(path), int(reached), int(n_frames)
        super().__init__(
            f"{self.path}: decoding stopped at frame {self.reached} of {self.n_frames} "
            f"(the file is truncated or damaged)"
        )


@dataclass(frozen=True)
class VideoInfo:
    """Metadata of a video file, read from the file itself."""

    path: Path
    n_frames: int
    fps: float
    width: int
    height: int
    codec: str
    duration_s: float


def _open(path: PathLike) -> tuple[Path, cv2.VideoCapture]:
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: video file is empty")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise VideoError(f"{path}: cannot open video (not a video file or unsupported codec)")
    return path, capture


def _fourcc_text(code: float) -> str:
    code = int(code)
    text = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
    return text.strip("\x00 ") if text.isprintable() else f"0x{code:08x}"


def video_info(path: PathLike, *, exact: bool = False, allow_short: bool = False) -> VideoInfo:
    """Metadata of ``path``; raises :class:`VideoError` if it is missing, empty or undecodable.

    The container's frame count is checked by decoding the first and the last frame; when the
    last one cannot be read, or ``exact`` is set, frames are counted by decoding them all
    (``grab``, no colour conversion). Fewer decodable frames than the container lists means a
    truncated or damaged file: :class:`ShortVideoError`, unless ``exact`` (report the frames
    that decode) or ``allow_short`` (report the container's count) says otherwise.
    """
    path, capture = _open(path)
    try:
        ok, frame = capture.read()
        if not ok or frame is None:
            raise VideoError(f"{path}: no frame could be decoded")
        height, width = frame.shape[:2]
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        codec = _fourcc_text(capture.get(cv2.CAP_PROP_FOURCC))
        claimed = _listed_frames(capture)
        n_frames = claimed if claimed > 0 and not exact and _can_read(capture, claimed - 1) else None
        if n_frames is None:
            n_frames = _count_frames(path)
            if 0 < n_frames < claimed and not exact:
                if not allow_short:
                    raise ShortVideoError(path, n_frames, claimed)
                n_frames = claimed
    finally:
        capture.release()
    if not np.isfinite(fps) or fps <= 0:
        raise VideoError(f"{path}: container reports no valid frame rate ({fps})")
    return VideoInfo(path, n_frames, fps, int(width), int(height), codec, n_frames / fps)


def _listed_frames(capture: cv2.VideoCapture) -> int:
    """The frame count the container lists (0 when it lists none)."""
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(count) if np.isfinite(count) and count > 0 else 0


def _can_read(capture: cv2.VideoCapture, index: int) -> bool:
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    return bool(capture.grab())


def _count_frames(path: Path) -> int:
    _, capture = _open(path)
    try:
        count = 0
        while capture.grab():
            count += 1
    finally:
        capture.release()
    return count


def _check_range(path: Path, start: int, stop: int | None) -> None:
    if start < 0 or (stop is not None and stop < start):
        raise VideoError(f"{path}: invalid frame range start={start}, stop={stop}")


def iter_frames(
    path: PathLike, start: int = 0, stop: int | None = None, *, allow_short: bool = False
) -> Generator[np.ndarray, None, None]:
    """Frames ``start`` to ``stop`` (exclusive; default: the end) as RGB uint8, one at a time.

    The file is opened (and a missing or unreadable file reported) at call time. A ``stop``
    past the end is the end. Decoding that stops before the end the container lists raises
    :class:`ShortVideoError` naming the frame reached (silently fewer frames would shift or
    drop the tail of every result); with ``allow_short`` the frames simply end there.
    """
    path, capture = _open(path)
    _check_range(path, start, stop)
    listed = _listed_frames(capture)
    return _frame_generator(path, capture, start, stop, listed, allow_short, _bgr_to_rgb)


def _bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def _frame_generator(
    path: Path,
    capture: cv2.VideoCapture,
    start: int,
    stop: int | None,
    listed: int,
    allow_short: bool,
    convert: Callable[[np.ndarray], np.ndarray],
    quiet: bool = False,
) -> Generator[np.ndarray, None, None]:
    """``quiet``: read with OpenCV's warnings off (see :func:`_opencv_warnings_off`)."""
    try:
        if start > 0:
            capture.set(cv2.CAP_PROP_POS_FRAMES, start)
        index = start
        while stop is None or index < stop:
            if quiet:
                with _opencv_warnings_off():
                    ok, frame = capture.read()
            else:
                ok, frame = capture.read()
            if not ok:
                if index < listed and not allow_short:
                    raise ShortVideoError(path, index, listed)
                return
            yield convert(frame)
            index += 1
    finally:
        capture.release()


# Pixel formats (OpenCV's CAP_PROP_CODEC_PIXEL_FORMAT tags) whose first plane is the luma at full
# resolution, 8 bits: planar YUV 4:2:0 (also what yuvj420p and nv12 decode as), 4:2:2, 4:4:4, grey.
LUMA_PLANE_FORMATS = frozenset({"I420", "Y42B", "444P", "Y800"})


def iter_grey_frames(
    path: PathLike, start: int = 0, stop: int | None = None, *, allow_short: bool = False
) -> Generator[np.ndarray, None, None]:
    """Frames ``start`` to ``stop`` as grey (H, W) uint8, one at a time (see :func:`iter_frames`).

    For the usual codecs' 8-bit planar YUV or grey pixel formats (:data:`LUMA_PLANE_FORMATS`)
    this is the decoder's luma plane, taken before any colour conversion: the cheapest decode
    OpenCV offers, about a third less work than a colour frame. It is the luma as stored (for
    most videos 16-235, "video range"), meant for motion and appearance features, not display.
    Other pixel formats (RGB codecs, 10-bit, packed) are decoded to colour and converted with
    OpenCV's BGR-to-grey weights.
    """
    path, capture = _open(path)
    _check_range(path, start, stop)
    listed = _listed_frames(capture)
    luma = _fourcc_text(capture.get(cv2.CAP_PROP_CODEC_PIXEL_FORMAT)) in LUMA_PLANE_FORMATS
    if luma:
        with _opencv_warnings_off():
            luma = bool(capture.set(cv2.CAP_PROP_CONVERT_RGB, 0))
    convert = _to_grey if luma else _bgr_to_grey
    return _frame_generator(path, capture, start, stop, listed, allow_short, convert, quiet=luma)


_quiet_lock = threading.Lock()
_quiet_users = 0
_quiet_saved_level = 0


@contextmanager
def _opencv_warnings_off() -> Iterator[None]:
    """OpenCV's log level raised to errors, for as long as any thread is inside this block.

    OpenCV warns when it hands out a frame's first plane unconverted (on switching the
    conversion off, and on the first such read it shows), which is what is wanted here. The
    level is global: the first thread in saves it, the last one out restores it.
    """
    global _quiet_users, _quiet_saved_level
    logging = cv2.utils.logging
    with _quiet_lock:
        if _quiet_users == 0:
            _quiet_saved_level = logging.getLogLevel()
            logging.setLogLevel(logging.LOG_LEVEL_ERROR)
        _quiet_users += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_users -= 1
            if _quiet_users == 0:
                logging.setLogLevel(_quiet_saved_level)


def _to_grey(frame: np.ndarray) -> np.ndarray:
    return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def _bgr_to_grey(frame: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def read_frames(path: PathLike, indices: Sequence[int]) -> np.ndarray:
    """Frames at ``indices`` (any order, repeats allowed) as an (N, H, W, 3) RGB uint8 array.

    Indices are visited in sorted order; short forward gaps are decoded through, long ones
    sought, so nearby frames cost one pass over the video.
    """
    path, capture = _open(path)
    wanted = np.asarray(indices, dtype=np.int64).reshape(-1)
    try:
        if wanted.size == 0:
            ok, frame = capture.read()
            if not ok:
                raise VideoError(f"{path}: no frame could be decoded")
            return np.empty((0, *frame.shape), dtype=np.uint8)
        if wanted.min() < 0:
            raise VideoError(f"{path}: negative frame index {int(wanted.min())}")
        decoded = {int(i): frame for i, frame in _decode_sorted(path, capture, np.unique(wanted))}
    finally:
        capture.release()
    return np.stack([decoded[int(i)] for i in wanted])


def _decode_sorted(path: Path, capture: cv2.VideoCapture, targets: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    position = 0  # index of the frame the next read() returns
    for target in targets.tolist():
        if target < position or target - position > SEQUENTIAL_GAP:
            capture.set(cv2.CAP_PROP_POS_FRAMES, target)
            position = target
        while position < target:
            if not capture.grab():
                break
            position += 1
        ok, frame = capture.read() if position == target else (False, None)
        if not ok or frame is None:
            raise VideoError(f"{path}: frame {target} could not be decoded (the video may have fewer frames)")
        position += 1
        yield target, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def resize_frame(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize to ``size`` = (height, width): area averaging to shrink, bilinear to enlarge."""
    if size is None or tuple(frame.shape[:2]) == tuple(size):
        return frame
    height, width = size
    shrinking = height * width < frame.shape[0] * frame.shape[1]
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def shrink_frame(frame: np.ndarray, factor: int) -> np.ndarray:
    """The mean of each ``factor`` x ``factor`` block of ``frame`` (the last rows and columns
    that do not fill a block are dropped): a whole-number shrink, several times faster than
    :func:`resize_frame` to an arbitrary size, and as free of aliasing."""
    if factor == 1:
        return frame
    height, width = frame.shape[0] // factor, frame.shape[1] // factor
    if min(height, width) < 1:
        raise ValueError(f"cannot shrink a {frame.shape[1]}x{frame.shape[0]} frame by {factor}")
    whole = frame[: height * factor, : width * factor]
    return cv2.resize(whole, (width, height), interpolation=cv2.INTER_AREA)


class _Failure:
    """An exception raised in the decoding thread, carried to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


def iter_batches(
    path: PathLike,
    batch_size: int,
    size: tuple[int, int] | None = None,
    *,
    start: int = 0,
    stop: int | None = None,
    prefetch: int = 4,
    allow_short: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(frame_indices (B,), frames (B, h, w, 3) uint8)`` batches, decoded ahead.

    A background thread decodes and resizes (``size`` = (height, width)) up to ``prefetch``
    batches ahead. Its exceptions re-raise here; closing the generator stops it.
    The last batch may be shorter than ``batch_size``. A short decode raises
    :class:`ShortVideoError` (see :func:`iter_frames`; ``allow_short`` ends the batches there).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if prefetch < 1:
        raise ValueError(f"prefetch must be >= 1, got {prefetch}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be (height, width) with positive values, got {size}")
    frames = iter_frames(path, start, stop, allow_short=allow_short)  # opens the file now: errors surface at call time
    return _batch_generator(frames, batch_size, lambda frame: resize_frame(frame, size), start, prefetch)


def iter_grey_batches(
    path: PathLike,
    batch_size: int,
    shrink: int = 1,
    *,
    start: int = 0,
    stop: int | None = None,
    prefetch: int = 4,
    allow_short: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(frame_indices (B,), frames (B, h, w) uint8)`` grey batches, decoded ahead as in
    :func:`iter_batches`: frames of :func:`iter_grey_frames` shrunk by a whole ``shrink``
    factor (:func:`shrink_frame`)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if prefetch < 1:
        raise ValueError(f"prefetch must be >= 1, got {prefetch}")
    if shrink < 1:
        raise ValueError(f"shrink must be a whole factor >= 1, got {shrink}")
    frames = iter_grey_frames(path, start, stop, allow_short=allow_short)
    return _batch_generator(frames, batch_size, lambda frame: shrink_frame(frame, shrink), start, prefetch)


def _batch_generator(
    frames: Generator[np.ndarray, None, None],
    batch_size: int,
    transform: Callable[[np.ndarray], np.ndarray],
    start: int,
    prefetch: int,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    batches: queue.Queue = queue.Queue(maxsize=prefetch)
    stopping = threading.Event()

    def put(item) -> bool:
        # Blocking put that gives up once the consumer has gone away.
        while not stopping.is_set():
            try:
                batches.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            index, batch = start, []
            for frame in frames:
                if stopping.is_set():
                    return
                batch.append(transform(frame))
                if len(batch) == batch_size:
                    if not put((np.arange(index, index + len(batch)), np.stack(batch))):
                        return
                    index, batch = index + len(batch), []
            if batch:
                put((np.arange(index, index + len(batch)), np.stack(batch)))
            put(_END)
        except BaseException as error:  # handed to the consumer, which re-raises it
            put(_Failure(error))
        finally:
            frames.close()

    worker = threading.Thread(target=produce, name="elp-video-decoder", daemon=True)
    worker.start()
    try:
        while True:
            item = batches.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stopping.set()
        worker.join()


def write_video(path: PathLike, frames: Iterable[np.ndarray], fps: float, codec: str = "mp4v") -> Path:
    """Write RGB uint8 frames (all the same size; greyscale allowed) to ``path``, atomically.

    The container follows ``path``'s suffix. Nothing is left at ``path`` if writing fails.
    """
    path = Path(path)
    if not (np.isfinite(fps) and fps > 0):
        raise VideoError(f"{path}: invalid frame rate {fps}")
    if len(codec) != 4:
        raise VideoError(f"{path}: codec must be a four-character code, got {codec!r}")
    # atomic_output keeps the suffix in the temporary name: OpenCV picks the container from it.
    writer = None
    with atomic_output(path) as tmp:
        try:
            shape = None
            count = 0
            for number, frame in enumerate(frames):
                frame = np.asarray(frame)
                if frame.dtype != np.uint8:
                    raise VideoError(f"{path}: frame {number} has dtype {frame.dtype}, expected uint8")
                if frame.ndim == 2:
                    frame = np.repeat(frame[:, :, None], 3, axis=2)
                if frame.ndim != 3 or frame.shape[2] != 3:
                    raise VideoError(f"{path}: frame {number} has shape {frame.shape}, expected (H, W, 3)")
                if writer is None:
                    shape = frame.shape
                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*codec), float(fps), (shape[1], shape[0]))
                    if not writer.isOpened():
                        raise VideoError(
                            f"{path}: OpenCV cannot write codec {codec!r} to a {path.suffix or 'suffix-less'} file"
                        )
                elif frame.shape != shape:
                    raise VideoError(f"{path}: frame {number} has shape {frame.shape}, the first had {shape}")
                writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
                count += 1
            if writer is None:
                raise VideoError(f"{path}: no frames to write")
            writer.release()
            writer = None
            if tmp.stat().st_size == 0:
                raise VideoError(f"{path}: OpenCV wrote an empty file for codec {codec!r}")
        finally:
            if writer is not None:
                writer.release()
    return path
