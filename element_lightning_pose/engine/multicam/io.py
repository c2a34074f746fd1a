"""Files of the multi-camera path: the 3D points CSV and per-camera prediction sets.

3D points CSV: the 3-row header of the 2D files (``scorer`` / ``bodyparts`` / ``coords``), one
row per frame (index: frame number), coords :data:`POINTS3D_COORDS` in calibration units
(variances in units squared, the reprojection error in px). It reads back with
``pandas.read_csv(path, header=[0, 1, 2], index_col=0)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from element_lightning_pose.engine.data.keypoints import read_keypoint_csv, write_keypoint_csv
from element_lightning_pose.engine.errors import ElpError, ProjectError
from element_lightning_pose.engine.safe_paths import check_name

PathLike = str | os.PathLike
Array = NDArray[np.float64]

POINTS3D_COORDS = ("x", "y", "z", "x_var", "y_var", "z_var", "reprojection_error", "n_views")


class ViewError(ElpError):
    """Per-camera prediction files do not fit together or with the calibration."""


@dataclass
class Points3D:
    """A 3D trajectory table: ``points`` / ``variance`` (T, K, 3), ``reprojection_error`` and
    ``n_views`` (T, K), ``bodyparts`` (K names), ``index`` (T frame labels)."""

    points: Array
    variance: Array
    reprojection_error: Array
    n_views: Array
    bodyparts: list[str]
    index: list

    def values(self) -> Array:
        """(T, K, 8) in the order of :data:`POINTS3D_COORDS`."""
        return np.concatenate(
            [
                self.points,
                self.variance,
                self.reprojection_error[..., None],
                np.asarray(self.n_views, dtype=float)[..., None],
            ],
            axis=-1,
        )


def write_points3d(path: PathLike, table: Points3D, scorer: str = "element-lightning-pose") -> Path:
    """Write ``table`` as a 3D points CSV (atomic)."""
    return write_keypoint_csv(path, table.values(), table.bodyparts, POINTS3D_COORDS, scorer, table.index)


def read_points3d(path: PathLike) -> Points3D:
    """Read a 3D points CSV written by :func:`write_points3d`."""
    values, bodyparts, _, index = read_keypoint_csv(path, POINTS3D_COORDS)
    return Points3D(values[..., :3], values[..., 3:6], values[..., 6], values[..., 7], bodyparts, list(index))


@dataclass
class ViewPredictions:
    """Predictions of all cameras: ``members`` (C, M, T, K, 3) x/y/likelihood (M: the most
    members of any camera; cameras with fewer are padded with NaN members), ``cameras``,
    ``bodyparts``, ``index`` (frame labels of the first file)."""

    members: Array
    cameras: list[str]
    bodyparts: list[str]
    index: list


def read_views(files: Mapping[str, Sequence[PathLike]], camera_names: Sequence[str]) -> ViewPredictions:
    """Read prediction CSVs per camera (several per camera form an ensemble), in calibration order.

    Errors (:class:`ViewError`): names that are not the calibration's (listing both sets),
    files whose body parts or frame counts differ (naming the file and what differs).
    """
    given, wanted = set(files), set(camera_names)
    if given != wanted:
        raise ViewError(
            f"views {sorted(given)} do not match the calibration's cameras {sorted(wanted)}"
            f" (missing: {sorted(wanted - given)}, not in the calibration: {sorted(given - wanted)})"
        )
    arrays: list[list[Array]] = []
    reference: tuple[Path, list[str], int] | None = None
    index: list = []
    for name in camera_names:
        arrays.append([])
        for path in files[name]:
            try:
                values, bodyparts, _, file_index = read_keypoint_csv(path, ("x", "y", "likelihood"))
            except ProjectError as exc:
                raise ViewError(f"view {name}: {exc}") from exc
            if reference is None:
                reference, index = (Path(path), bodyparts, len(values)), list(file_index)
            elif bodyparts != reference[1]:
                raise ViewError(
                    f"view {name}: {path} has body parts {bodyparts}, but {reference[0]} has {reference[1]}"
                )
            elif len(values) != reference[2]:
                raise ViewError(f"view {name}: {path} has {len(values)} frames, but {reference[0]} has {reference[2]}")
            arrays[-1].append(values)
    assert reference is not None
    n_members = max(len(a) for a in arrays)
    shape = arrays[0][0].shape
    members = np.full((len(camera_names), n_members) + shape, np.nan)
    for c, per_camera in enumerate(arrays):
        members[c, : len(per_camera)] = np.stack(per_camera)
    return ViewPredictions(members, list(camera_names), reference[1], index)


def write_reprojections(
    directory: PathLike,
    cameras: Sequence[str],
    pixels: Array,
    bodyparts: Sequence[str],
    likelihood: Array | None = None,
    index: Sequence | None = None,
) -> list[Path]:
    """One predictions CSV per camera (``<camera>.csv``: x, y, likelihood) of ``pixels`` (C, T, K, 2).

    ``likelihood`` (C, T, K) defaults to 1 where the point is finite, 0 elsewhere.
    """
    from element_lightning_pose.engine.data.keypoints import write_predictions

    directory = Path(directory)
    for name in cameras:  # each name is a file name in directory: nothing is written unless all are safe
        check_name(name, "camera name")
    paths = []
    for c, name in enumerate(cameras):
        lik = np.isfinite(pixels[c]).all(-1).astype(float) if likelihood is None else likelihood[c]
        values = np.concatenate([pixels[c], lik[..., None]], axis=-1)
        paths.append(write_predictions(directory / f"{name}.csv", values, bodyparts, index=index))
    return paths


def frame_table(table: Points3D) -> pd.DataFrame:
    """The 3D table as a pandas DataFrame with the (scorer, bodyparts, coords) columns."""
    from element_lightning_pose.engine.data.keypoints import keypoint_frame

    return keypoint_frame(table.values(), table.bodyparts, POINTS3D_COORDS, "element-lightning-pose", table.index)
