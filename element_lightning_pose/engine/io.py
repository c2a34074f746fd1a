"""Keypoint tables on disk: the 3-row-header CSV layout of DeepLabCut and Lightning Pose.

A keypoint table has a header of three rows (``scorer`` / ``bodyparts`` / ``coords``) and an
index column (an image path for labels, a frame number for video predictions). Every writer
here is atomic: it writes a temporary file beside the target and renames it, so a crash never
leaves a truncated CSV behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

PathLike = str | os.PathLike


class ProjectError(ValueError):
    """A labeled project or keypoint file is malformed; the message names the file and place."""


def keypoint_frame(
    values: np.ndarray,
    bodyparts: Sequence[str],
    coords: Sequence[str],
    scorer: str,
    index: Sequence | None = None,
) -> pd.DataFrame:
    """Wrap a (T, K, C) array as a DataFrame with the (scorer, bodyparts, coords) header."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 3 or values.shape[1:] != (len(bodyparts), len(coords)):
        raise ValueError(
            f"values of shape {values.shape} do not match {len(bodyparts)} body parts "
            f"x {len(coords)} coords {list(coords)}"
        )
    columns = pd.MultiIndex.from_product(
        [[scorer], list(bodyparts), list(coords)], names=["scorer", "bodyparts", "coords"]
    )
    frame = pd.DataFrame(values.reshape(values.shape[0], -1), columns=columns)
    if index is not None:
        frame.index = list(index)
    return frame


def write_csv_atomic(frame: pd.DataFrame, path: PathLike) -> Path:
    """Write ``frame`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            frame.to_csv(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_keypoint_csv(
    path: PathLike,
    values: np.ndarray,
    bodyparts: Sequence[str],
    coords: Sequence[str] = ("x", "y", "likelihood"),
    scorer: str = "element-lightning-pose",
    index: Sequence | None = None,
) -> Path:
    """Write a (T, K, C) array as a 3-row-header keypoint CSV (atomic)."""
    return write_csv_atomic(keypoint_frame(values, bodyparts, coords, scorer, index), path)


def write_predictions(
    path: PathLike,
    predictions: np.ndarray,
    bodyparts: Sequence[str],
    scorer: str = "element-lightning-pose",
    index: Sequence | None = None,
) -> Path:
    """Write (T, K, 3) predictions (x, y, likelihood) in the LP/DLC layout (atomic)."""
    return write_keypoint_csv(path, predictions, bodyparts, ("x", "y", "likelihood"), scorer, index)


def read_keypoint_csv(
    path: PathLike, coords: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str], list[str], pd.Index]:
    """Read a 3-row-header keypoint CSV as ``(values (T, K, C), bodyparts, coords, index)``.

    ``coords`` selects and orders the coordinate columns (default: all, in file order).
    """
    path = Path(path)
    if not path.is_file():
        raise ProjectError(f"{path}: keypoint file not found")
    try:
        frame = pd.read_csv(path, header=[0, 1, 2], index_col=0)
    except Exception as exc:  # pandas raises many types for a malformed header
        raise ProjectError(f"{path}: not a 3-row-header keypoint CSV ({exc})") from exc
    bodyparts = list(dict.fromkeys(frame.columns.get_level_values(1)))
    file_coords = list(dict.fromkeys(frame.columns.get_level_values(2)))
    wanted = list(coords) if coords is not None else file_coords
    missing = [c for c in wanted if c not in file_coords]
    if missing:
        raise ProjectError(f"{path}: coordinate columns {missing} missing (found {file_coords})")
    scorer = frame.columns.get_level_values(0)[0]
    try:
        values = np.stack(
            [
                np.stack([frame[(scorer, bp, c)].to_numpy(dtype=float) for c in wanted], axis=-1)
                for bp in bodyparts
            ],
            axis=1,
        )
    except (KeyError, ValueError) as exc:
        raise ProjectError(f"{path}: incomplete or non-numeric keypoint columns ({exc})") from exc
    return values, bodyparts, wanted, frame.index


def read_predictions(path: PathLike) -> tuple[np.ndarray, list[str]]:
    """Read an LP/DLC predictions CSV as ``(values (T, K, 3), bodyparts)``."""
    values, bodyparts, _, _ = read_keypoint_csv(path, ("x", "y", "likelihood"))
    return values, bodyparts
