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
``board_marker_dict_number``) is accepted too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tomllib
from numpy.typing import NDArray

from element_lightning_pose.engine.errors import ElpError

PathLike = str | os.PathLike
Array = NDArray[np.float64]

_ANIPOSE_KEYS = {
    "board_square_side_length": "square_length",
    "board_marker_length": "marker_length",
    "board_marker_bits": "marker_bits",
    "board_marker_dict_number": "dict_size",
}


class BoardError(ElpError):
    """A board description is malformed or a video cannot be read; the message names it."""


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
        if self.board_x < 2 or self.board_y < 2:
            raise BoardError(f"board_x, board_y = {self.board_x}, {self.board_y}: need at least 2 squares each")
        if not self.square_length > 0:
            raise BoardError(f"square_length must be positive, got {self.square_length}")
        if self.board_type == "charuco":
            if not 0 < self.marker_length < self.square_length:
                raise BoardError(
                    f"marker_length {self.marker_length} must be in (0, square_length {self.square_length})"
                )
            name = f"DICT_{self.marker_bits}X{self.marker_bits}_{self.dict_size}"
            if not hasattr(cv2.aruco, name):
                raise BoardError(
                    f"marker_bits={self.marker_bits}, dict_size={self.dict_size}: no ArUco dictionary {name}"
                )

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


def read_board(path: PathLike) -> Board:
    """Read ``BOARD.toml`` (or anipose's ``[calibration]`` section); errors name the file and key."""
    path = Path(path)
    if not path.is_file():
        raise BoardError(f"{path}: board file not found")
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BoardError(f"{path}: not a TOML file ({exc})") from exc
    data = dict(data.get("calibration", data))
    if "board_size" in data:
        data["board_x"], data["board_y"] = data.pop("board_size")
    for old, new in _ANIPOSE_KEYS.items():
        if old in data:
            data[new] = data.pop(old)
    known = Board.__dataclass_fields__
    data = {k: v for k, v in data.items() if k in known}
    missing = [k for k in ("board_type", "board_x", "board_y", "square_length") if k not in data]
    if data.get("board_type") == "charuco" and "marker_length" not in data:
        missing.append("marker_length")
    if missing:
        raise BoardError(f"{path}: missing {missing}")
    try:
        return Board(**data)
    except (BoardError, TypeError, ValueError) as exc:
        raise BoardError(f"{path}: {exc}") from exc


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
