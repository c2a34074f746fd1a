"""Labeled frames as the network sees them: image files, resizing with their labels, context
windows, and the saved train / val / test split.

Shared by training (``engine.data``) and inference (``engine.predict``, ``engine.evaluate``);
it imports neither torch nor Lightning, so predicting and evaluating stay light.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from element_lightning_pose.engine.io import LabeledFrames, ProjectError, context_image_paths, read_image
from element_lightning_pose.engine.video import resize_frame

PathLike = str | os.PathLike


def scale_points(points: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Map (..., 2) pixel coordinates between image sizes given as (height, width)."""
    factor = np.array([to_size[1] / from_size[1], to_size[0] / from_size[0]], dtype=np.float64)
    return (np.asarray(points, dtype=np.float64) + 0.5) * factor - 0.5


def read_splits(path: PathLike) -> dict[str, str]:
    """``splits.csv`` as {image path: split}."""
    path = Path(path)
    if not path.is_file():
        raise ProjectError(f"{path}: splits file not found")
    frame = pd.read_csv(path)
    if list(frame.columns[:2]) != ["image", "split"]:
        raise ProjectError(f"{path}: expected columns image,split (found {list(frame.columns)})")
    duplicated = frame["image"].duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise ProjectError(f"{path}, line {row + 2}: image {frame['image'].iloc[row]!r} is listed twice")
    return dict(zip(frame["image"].astype(str), frame["split"].astype(str)))


def image_file(labels: LabeledFrames, row: int) -> Path:
    """The image file of labeled ``row`` (relative paths are under the project root)."""
    path = Path(labels.image_paths[row])
    return path if path.is_absolute() else Path(labels.root) / path


def load_resized(
    labels: LabeledFrames, row: int, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Frame ``row`` resized to ``size`` (h, w), its labels in resized pixels, its original (h, w)."""
    image = read_image(image_file(labels, row))
    original = image.shape[:2]
    keypoints = scale_points(labels.keypoints[row], original, size)
    return resize_frame(image, size), keypoints, original


def load_context_resized(labels: LabeledFrames, row: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Frames t-2..t+2 of labeled ``row`` (5, h, w, 3) resized, and the labels of t in resized pixels.

    Neighbours come from the files next to the labeled image (``io.context_image_paths``:
    a missing neighbour is replaced by the nearest one towards the centre).
    """
    image, keypoints, original = load_resized(labels, row, size)
    frames = []
    for path in context_image_paths(labels.root, labels.image_paths[row]):
        if path == labels.image_paths[row]:
            frames.append(image)
            continue
        neighbour = read_image(Path(labels.root) / path)
        if neighbour.shape[:2] != original:
            raise ProjectError(
                f"{path}: context frame of {labels.image_paths[row]} is {neighbour.shape[:2]}, "
                f"the labeled frame {original}"
            )
        frames.append(resize_frame(neighbour, size))
    return np.stack(frames), keypoints
