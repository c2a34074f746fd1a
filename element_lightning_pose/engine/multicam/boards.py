"""Calibration boards (ChArUco, checkerboard) as anipose describes them, and corner detection.

``BOARD.toml``::

    board_type = "charuco"     # or "checkerboard"
    board_x = 5                # squares along x (checkerboard: squares too; inner corners = x-1)
    board_y = 4
    square_length = 50.0       # world units (the calibration's units), e.g. mm
    marker_length = 37.0       # ChArUco only
    marker_bits = 4            # ChArUco only: 4 -> DICT_4X4_*
    dict_size = 50             # ChArUco only: 50, 100, 250, 1000

anipose's own ``config.toml`` ``[calibration]`` section (``board_type``, ``board_size``,
``board_square_side_length``, ``board_marker_length``, ``board_marker_bits``,
``board_marker_dict_number``) is accepted too, and so is sleap-anipose's ``board.toml``, which
has no ``board_type``: a board with a ``marker_length`` is ChArUco, one without a checkerboard
(:func:`board_from_dict` says which it chose).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tomllib
from numpy.typing import NDArray

from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.types import PathLike

Array = NDArray[np.float64]

_ANIPOSE_KEYS = {
    "board_square_side_length": "square_length",
    "board_marker_length": "marker_length",
    "board_marker_bits": "marker_bits",
    "board_marker_dict_number": "dict_size",
}


# More squares per side than any printed board has; bounds the corner grids built from it.
MAX_SQUARES = 100
# A homography (the start of a board view's pose) needs four corners.
MIN_CORNERS = 4


class BoardError(ElpError):
    """A board description is malformed or a video cannot be read; the message names it."""


def _whole(value: object) -> int | None:
    """``value`` as an int if it is a whole number (not a boolean, not a string), else None."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    if not math.isfinite(value) or value != int(value):
        return None
    return int(value)


def _positive(value: object) -> bool:
    """Whether ``value`` is a finite number above 0 (not a boolean, not a string)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return bool(math.isfinite(value) and value > 0)


@dataclass(frozen=True)
class Board:
    """A planar calibration target; corners in board coordinates (z = 0), world units."""

    board_type: str
    board_x: int
    board_y: int
    square_length: float
    marker_length: float = 0.0
    marker_bits: int = 4
    dict_size: int = 50

    def __post_init__(self) -> None:
        if self.board_type not in ("charuco", "checkerboard"):
            raise BoardError(f"board_type {self.board_type!r} must be 'charuco' or 'checkerboard'")
        for key in ("board_x", "board_y", "marker_bits", "dict_size"):
            value = getattr(self, key)
            whole = _whole(value)
            if whole is None:
                unit = " of squares" if key.startswith("board_") else ""
                raise BoardError(f"{key} = {value!r} must be a whole number{unit}")
            object.__setattr__(self, key, whole)
        for key in ("board_x", "board_y"):
            squares = getattr(self, key)
            if not 2 <= squares <= MAX_SQUARES:
                bound = "at least 2" if squares < 2 else f"at most {MAX_SQUARES}"
                raise BoardError(f"{key} = {squares} squares: {bound} per side")
        if not _positive(self.square_length):
            raise BoardError(f"square_length = {self.square_length!r} must be a positive finite number")
        object.__setattr__(self, "square_length", float(self.square_length))
        if self.board_type == "charuco":
            if not _positive(self.marker_length) or not self.marker_length < self.square_length:
                raise BoardError(
                    f"marker_length = {self.marker_length!r} must be in (0, square_length {self.square_length})"
                )
            object.__setattr__(self, "marker_length", float(self.marker_length))
            name = f"DICT_{self.marker_bits}X{self.marker_bits}_{self.dict_size}"
            if not hasattr(cv2.aruco, name):
                raise BoardError(
                    f"marker_bits={self.marker_bits}, dict_size={self.dict_size}: no ArUco dictionary {name}"
                )
            markers = self.board_x * self.board_y // 2
            if markers > self.dict_size:
                raise BoardError(
                    f"a {self.board_x} x {self.board_y} ChArUco board needs {markers} markers; {name} has "
                    f"{self.dict_size} (dict_size)"
                )

    def check_min_corners(self, min_corners: object) -> int:
        """``min_corners`` (corners a frame needs to count as a board view), checked against this board."""
        whole = _whole(min_corners)
        if whole is None or not MIN_CORNERS <= whole <= self.n_corners:
            raise BoardError(
                f"min_corners = {min_corners!r} must be a whole number from {MIN_CORNERS} to {self.n_corners} "
                f"(a board view's pose needs {MIN_CORNERS} corners; this board has {self.n_corners})"
            )
        return whole

    def describe(self) -> str:
        """One line: the board as it will be detected."""
        size = f"{self.board_x} x {self.board_y} squares of {self.square_length:g}"
        if self.board_type == "checkerboard":
            return f"checkerboard, {size}"
        dictionary = f"DICT_{self.marker_bits}X{self.marker_bits}_{self.dict_size}"
        return f"ChArUco, {size}, markers of {self.marker_length:g} ({dictionary})"

    @property
    def n_corners(self) -> int:
        return (self.board_x - 1) * (self.board_y - 1)

    def cv_board(self) -> Any:
        """The OpenCV ``CharucoBoard``."""
        dictionary = cv2.aruco.getPredefinedDictionary(
            getattr(cv2.aruco, f"DICT_{self.marker_bits}X{self.marker_bits}_{self.dict_size}")
        )
        return cv2.aruco.CharucoBoard((self.board_x, self.board_y), self.square_length, self.marker_length, dictionary)

    def object_points(self) -> Array:
        """(n_corners, 3) inner corners in board coordinates, in corner-id order."""
        if self.board_type == "charuco":
            return np.asarray(self.cv_board().getChessboardCorners(), dtype=float).reshape(-1, 3)
        i, j = np.meshgrid(np.arange(1, self.board_x), np.arange(1, self.board_y))
        grid = np.stack([i.ravel(), j.ravel(), np.zeros(i.size)], -1).astype(float)
        return grid * float(self.square_length)

    def image(self, pixels_per_unit: float) -> NDArray[np.uint8]:
        """A grey image of the board, ``pixels_per_unit`` pixels per world unit, no margin."""
        size = (
            round(self.board_x * self.square_length * pixels_per_unit),
            round(self.board_y * self.square_length * pixels_per_unit),
        )
        if self.board_type == "charuco":
            return np.asarray(self.cv_board().generateImage(size, marginSize=0, borderBits=1), dtype=np.uint8)
        u, v = np.meshgrid(np.arange(size[0]), np.arange(size[1]))
        cell = np.floor(u / (self.square_length * pixels_per_unit)) + np.floor(
            v / (self.square_length * pixels_per_unit)
        )
        return np.where(cell % 2 == 0, 0, 255).astype(np.uint8)


def board_from_dict(data: Mapping[str, object], notes: list[str] | None = None) -> Board:
    """A :class:`Board` from its fields (anipose's ``[calibration]`` names accepted).

    Without ``board_type`` (sleap-anipose's ``board.toml``) the board is ChArUco when
    ``marker_length`` is given, a checkerboard otherwise; the choice is appended to ``notes``.
    Unknown keys are ignored (anipose's section holds other settings).
    """
    values = dict(data)
    if "board_size" in values:
        size = values.pop("board_size")
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise BoardError(f"board_size = {size!r} must be [board_x, board_y]")
        values["board_x"], values["board_y"] = size
    for old, new in _ANIPOSE_KEYS.items():
        if old in values:
            values[new] = values.pop(old)
    known = Board.__dataclass_fields__
    values = {k: v for k, v in values.items() if k in known}
    if "board_type" not in values and {"board_x", "board_y", "square_length"} <= set(values):
        charuco = "marker_length" in values
        values["board_type"] = "charuco" if charuco else "checkerboard"
        if notes is not None:
            notes.append(
                "no board_type; ChArUco, since marker_length is given"
                if charuco
                else "no board_type; checkerboard, since no marker_length is given"
            )
    missing = [k for k in ("board_type", "board_x", "board_y", "square_length") if k not in values]
    if values.get("board_type") == "charuco" and "marker_length" not in values:
        missing.append("marker_length")
    if missing:
        raise BoardError(f"missing {missing}")
    try:
        return Board(**values)  # type: ignore[arg-type]
    except TypeError as exc:
        raise BoardError(str(exc)) from None


def read_board(path: PathLike, notes: list[str] | None = None) -> Board:
    """Read ``BOARD.toml`` (or anipose's ``[calibration]`` section); errors name the file and key.

    ``notes``, if given, gets a line (naming the file) for each value the file left to
    :func:`board_from_dict` to choose.
    """
    path = Path(path)
    if not path.is_file():
        raise BoardError(f"{path}: board file not found")
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BoardError(f"{path}: not a TOML file ({exc})") from exc
    section = data.get("calibration", data)
    if not isinstance(section, Mapping):
        raise BoardError(f"{path}: [calibration] must be a table, got {section!r}")
    chosen: list[str] = []
    try:
        board = board_from_dict(section, chosen)
    except BoardError as exc:
        raise BoardError(f"{path}: {exc}") from exc
    if notes is not None:
        notes.extend(f"{path}: {note}" for note in chosen)
    return board


def check_distinct_videos(videos: Mapping[str, PathLike]) -> None:
    """Refuse one video given to two cameras (compared after resolving links): both would be
    calibrated at the same place, a rig with a zero baseline."""
    seen: dict[object, str] = {}
    for name, path in videos.items():
        path = Path(path)
        try:
            stat = path.stat()
            identity: object = (stat.st_dev, stat.st_ino)  # hard links too
        except OSError:
            identity = path.resolve()
        if identity in seen:
            raise BoardError(
                f"cameras {seen[identity]!r} and {name!r} are given the same video {path}: each camera needs "
                "its own board video"
            )
        seen[identity] = name


@dataclass
class Detection:
    """Corners found in one frame: ``ids`` (n,) corner ids, ``corners`` (n, 2) pixels."""

    frame: int
    ids: NDArray[np.int64]
    corners: Array


def detect(board: Board, gray: NDArray[np.uint8], frame: int = 0) -> Detection | None:
    """The board's inner corners in one grey image (sub-pixel), or None if too few are found."""
    if board.board_type == "charuco":
        detector = cv2.aruco.CharucoDetector(board.cv_board())
        corners, ids, _, _ = detector.detectBoard(gray)
        if ids is None or len(ids) < 6:
            return None
        return Detection(frame, ids.reshape(-1).astype(np.int64), corners.reshape(-1, 2).astype(float))
    pattern = (board.board_x - 1, board.board_y - 1)
    found, corners = cv2.findChessboardCorners(gray, pattern, flags=cv2.CALIB_CB_ADAPTIVE_THRESH)
    if not found:
        return None
    corners = cv2.cornerSubPix(
        gray, corners, (5, 5), (-1, -1), (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_MAX_ITER, 30, 1e-3)
    )
    return Detection(frame, np.arange(board.n_corners, dtype=np.int64), corners.reshape(-1, 2).astype(float))


def _frames(path: Path) -> Iterator[NDArray[np.uint8]]:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise BoardError(f"{path}: cannot open the video")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
            yield np.asarray(gray, dtype=np.uint8)
    finally:
        capture.release()


def detect_video(board: Board, path: PathLike) -> tuple[list[Detection], tuple[int, int], int]:
    """Detections in every frame of a video, its (width, height) and frame count."""
    path = Path(path)
    if not path.is_file():
        raise BoardError(f"{path}: video not found")
    detections = []
    size = (0, 0)
    count = 0
    for number, gray in enumerate(_frames(path)):
        size = (gray.shape[1], gray.shape[0])
        count = number + 1
        found = detect(board, gray, number)
        if found is not None:
            detections.append(found)
    if count == 0:
        raise BoardError(f"{path}: no frame could be decoded")
    return detections, size, count
