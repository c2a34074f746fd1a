"""Files of the multi-camera path: the 3D points CSV and per-camera prediction sets.

3D points CSV: the 3-row header of the 2D files (``scorer`` / ``bodyparts`` / ``coords``), one
row per frame (index: frame number), coords :data:`POINTS3D_COORDS` in calibration units
(variances in units squared, the reprojection error in px). It reads back with
``pandas.read_csv(path, header=[0, 1, 2], index_col=0)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from element_lightning_pose.engine.data.keypoints import (
    keypoint_frame,
    read_keypoint_csv,
    write_keypoint_csv,
    write_predictions,
)
from element_lightning_pose.engine.errors import ElpError, ProjectError
from element_lightning_pose.engine.multicam.cameras import CameraGroup
from element_lightning_pose.engine.multicam.smoother import ensemble_observations
from element_lightning_pose.engine.safe_paths import check_name
from element_lightning_pose.engine.types import PathLike

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


@dataclass(frozen=True)
class ViewSource:
    """One camera's 2D predictions: one CSV, or several (an ensemble, see :func:`read_views`).

    Attributes:
        camera: the calibration's camera name.
        files: the predictions CSV(s) (x, y, likelihood; an eks-layout CSV adds its posterior
            variance).
        frame_offset: rig frame ``t`` is row ``t + frame_offset`` of the files (leading rows
            to skip, >= 0).
        n_frames: the rows the files should have (e.g. what a table says), or None.
        label: what the source is, for error messages (e.g. ``"PoseEstimation {...}"``).
    """

    camera: str
    files: tuple[Path, ...]
    frame_offset: int = 0
    n_frames: int | None = None
    label: str = ""


@dataclass
class Views2D:
    """The cameras' 2D observations over the rig frames, what the triangulation methods take.

    Attributes:
        pixels: (C, T, K, 2) x, y (the ensemble median for several files), NaN where missing.
        likelihood: (C, T, K) in [0, 1]; 0 where missing.
        variance: (C, T, K) px^2: an eks CSV's posterior variance (mean of x and y), plus the
            members' spread for several files; 0 for one plain predictions CSV.
        cameras: C camera names, in the order of the sources.
        bodyparts: K names, in the first file's order.
        index: T frame labels of the first camera's file (over its window).
    """

    pixels: Array
    likelihood: Array
    variance: Array
    cameras: list[str]
    bodyparts: list[str]
    index: list


POSTERIOR_VARIANCE = ("x_posterior_var", "y_posterior_var")  # the eks layout's 2D uncertainty
IMAGE_MARGIN = 1.0  # a coordinate more than this many image sizes beyond the border is not a pixel


def select_cameras(group: CameraGroup, names: Sequence[str]) -> tuple[CameraGroup, list[str]]:
    """The calibration's cameras that have views, in calibration order, and those that have none.

    As anipose does, a calibration may hold more cameras than were tracked: the views name the
    subset to triangulate with (at least two). Errors (:class:`ViewError`) list both sets.
    """
    unknown = sorted(set(names) - set(group.names))
    if unknown:
        raise ViewError(
            f"views {sorted(set(names))} are not all cameras of the calibration {group.names} "
            f"(not in the calibration: {unknown})"
        )
    used = [name for name in group.names if name in set(names)]
    if len(used) < 2:
        raise ViewError(
            f"triangulation needs the views of at least two cameras, got {used} "
            f"(the calibration's cameras: {group.names})"
        )
    return group.subset(used), [name for name in group.names if name not in set(names)]


def read_views(
    sources: Sequence[ViewSource],
    *,
    n_frames: int | None = None,
    min_likelihood: float = 0.5,
    image_sizes: Mapping[str, tuple[int, int]] | None = None,
    context: str = "",
) -> Views2D:
    """Read each camera's predictions over the rig frames: the one reader of ``elp triangulate``
    and of the ``Triangulation`` table.

    * Frames: rig frame ``t`` is row ``t + frame_offset`` of a camera's files. ``n_frames``
      rig frames are read (each file must have them); None: the frames every camera has after
      its offset, and without offsets every file must have the same number of rows.
    * Body parts are matched by name (a file may order them differently); the first file's
      order is kept. A camera whose body parts are another set is an error.
    * Several files of one camera are an ensemble: the median of the members whose likelihood
      is at least ``min_likelihood`` is the observation, their spread adds to its variance.
    * An eks-layout CSV (``x_posterior_var``, ``y_posterior_var``) gives its posterior variance.
    * ``image_sizes`` (camera -> (width, height)): a finite coordinate more than an image size
      beyond the border is refused (a corrupt file, or a calibration of another resolution).
    * Frame indices: a file's index (its first column) names each row's frame once; where they
      are frame numbers, the rig frames of every camera (index minus frame offset) must be the
      same frames, and the files of an ensemble the same rows. Likelihoods lie in [0, 1].

    Errors (:class:`ViewError`) start with ``context`` and name the camera, its ``label``, the
    file and what is wrong.
    """
    if not sources:
        raise ViewError(f"{context}no views to read")
    names = [s.camera for s in sources]
    if len(set(names)) != len(names):
        raise ViewError(f"{context}camera(s) {sorted({n for n in names if names.count(n) > 1})} given twice")
    read: list[list[tuple[Path, Array, Array]]] = []
    frames_of: list[tuple[Path, NDArray[np.int64] | None]] = []  # each camera's first file and its frame numbers
    reference: tuple[str, Path, list[str]] | None = None
    index: list = []
    for source in sources:
        where = _where(context, source)
        if not source.files:
            raise ViewError(f"{where}: no predictions file")
        if source.frame_offset < 0:
            raise ViewError(f"{where}: frame offset {source.frame_offset} is negative")
        members: list[tuple[Path, Array, Array]] = []
        first_index: pd.Index | None = None  # the camera's first file's: an ensemble's files list the same frames
        for path in map(Path, source.files):
            values, parts, coords, file_index = _read_view_file(where, path)
            numbers = _frame_numbers(where, path, file_index)
            if first_index is None:
                first_index = file_index
                frames_of.append((path, numbers))
            elif len(file_index) == len(first_index) and not file_index.equals(first_index):
                raise ViewError(
                    f"{where}: {path} and {members[0][0]} are members of one ensemble but list other frames "
                    f"(frame index {_first_difference(file_index, first_index)})"
                )
            if reference is None:
                reference, index = (source.camera, path, parts), list(file_index)
            elif set(parts) != set(reference[2]):
                other = reference[0]
                raise ViewError(
                    f"{where}: {path} has body parts {parts}; the body parts differ from those of camera "
                    f"{other!r} ({reference[1]}): only in {source.camera!r}: {sorted(set(parts) - set(reference[2]))}, "
                    f"only in {other!r}: {sorted(set(reference[2]) - set(parts))}"
                )
            order = [parts.index(bp) for bp in reference[2]]
            own_variance = values[..., 3:5].mean(-1) if len(coords) == 5 else np.zeros(values.shape[:-1])
            if members and len(values) != len(members[0][1]):
                raise ViewError(
                    f"{where}: {path} has {len(values)} frames, but {members[0][0]} has {len(members[0][1])}"
                )
            members.append((path, values[:, order, :3], own_variance[:, order]))
        read.append(members)
    assert reference is not None
    window = _rig_frames(context, sources, read, n_frames)
    _check_same_frames(context, sources, frames_of, window)
    pixels, likelihood, variance = [], [], []  # per camera
    for source, members in zip(sources, read):
        frames = slice(source.frame_offset, source.frame_offset + window)
        for path, values, _ in members:
            _check_likelihood(_where(context, source), path, values[frames, :, 2], source.frame_offset, reference[2])
        if image_sizes is not None and source.camera in image_sizes:
            for path, values, _ in members:
                _check_pixels(_where(context, source), path, values[frames], image_sizes[source.camera], reference[2])
        if len(members) == 1:
            _, values, var = members[0]
            pixels.append(values[frames, :, :2])
            likelihood.append(np.nan_to_num(values[frames, :, 2]))
            variance.append(np.nan_to_num(var[frames]))
        else:
            stacked = np.stack([values[frames] for _, values, _ in members])  # (M, T, K, 3)
            median, mean_likelihood, spread = ensemble_observations(stacked[None], min_likelihood)
            good = np.isfinite(stacked).all(-1) & (stacked[..., 2] >= min_likelihood)
            own = np.stack([var[frames] for _, _, var in members])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # points no member predicts
                member_var = np.nanmean(np.where(good, own, np.nan), axis=0)
            pixels.append(median[0])
            likelihood.append(mean_likelihood[0])
            variance.append(spread[0] + np.nan_to_num(member_var))
    first = sources[0].frame_offset
    return Views2D(
        np.stack(pixels),
        np.stack(likelihood),
        np.stack(variance),
        names,
        list(reference[2]),
        index[first : first + window],
    )


def _where(context: str, source: ViewSource) -> str:
    return f"{context}camera {source.camera!r}" + (f" ({source.label})" if source.label else "")


def _read_view_file(where: str, path: Path) -> tuple[Array, list[str], list[str], pd.Index]:
    """(T, K, 3 or 5) x, y, likelihood [, the posterior variances], body parts, coords, index."""
    try:
        values, bodyparts, file_coords, index = read_keypoint_csv(path)
    except ProjectError as exc:
        raise ViewError(f"{where}: {exc}") from exc
    coords = ["x", "y", "likelihood"]
    missing = [c for c in coords if c not in file_coords]
    if missing:
        raise ViewError(f"{where}: {path}: coordinate columns {missing} missing (found {file_coords})")
    if all(c in file_coords for c in POSTERIOR_VARIANCE):
        coords += list(POSTERIOR_VARIANCE)
    return values[..., [file_coords.index(c) for c in coords]], bodyparts, coords, index


def _frame_numbers(where: str, path: Path, index: pd.Index) -> NDArray[np.int64] | None:
    """The frame number of each row of a file (its index), each once; None for an index that
    is not numbers (image names, say), which is only checked for repeats."""
    if index.has_duplicates:
        repeated = _plain(index[index.duplicated()][0])
        rows = np.flatnonzero(index == repeated)[:2].tolist()
        raise ViewError(f"{where}: {path}: frame index {repeated!r} on rows {rows[0]} and {rows[1]}; each frame once")
    if not pd.api.types.is_numeric_dtype(index):
        return None
    values = index.to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ViewError(f"{where}: {path}: frame index {_plain(index[row])!r} (row {row}) is not a frame number")
    return values.astype(np.int64)


def _first_difference(index: pd.Index, other: pd.Index) -> str:
    """The first row where two indices of one length differ, for a message."""
    row = int(np.flatnonzero(index.to_numpy() != other.to_numpy())[0])
    return f"{_plain(index[row])!r} and {_plain(other[row])!r} on row {row}"


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds, for messages (``7``, not ``np.int64(7)``)."""
    return value.item() if isinstance(value, np.generic) else value


def _check_same_frames(
    context: str, sources: Sequence[ViewSource], frames_of: list[tuple[Path, NDArray[np.int64] | None]], window: int
) -> None:
    """Rig frame ``t`` of every camera is frame ``t + frame_offset`` of its file: where the files
    number their frames, row ``t + frame_offset`` must be frame number ``t + frame_offset`` less
    the same shift in every camera (a view indexed 100..139 is not the instants of views 0..39)."""
    numbered = [
        (source, path, numbers[source.frame_offset : source.frame_offset + window] - source.frame_offset)
        for source, (path, numbers) in zip(sources, frames_of)
        if numbers is not None
    ]
    if len(numbered) < 2:
        return
    first, first_path, expected = numbered[0]
    for source, path, rig_frames in numbered[1:]:
        differ = np.flatnonzero(rig_frames != expected)
        if differ.size:
            t = int(differ[0])
            offsets = " after the frame offsets" if any(s.frame_offset for s in sources) else ""
            raise ViewError(
                f"{_where(context, source)}: {path}: row {t + source.frame_offset} is frame "
                f"{rig_frames[t] + source.frame_offset}, but the same rig frame of camera {first.camera!r} "
                f"({first_path}, row {t + first.frame_offset}) is frame {expected[t] + first.frame_offset}: "
                f"the views must index the same frames{offsets} ({differ.size} rig frame(s) differ)"
            )


def _rig_frames(context: str, sources: Sequence[ViewSource], read: list, n_frames: int | None) -> int:
    """The number of rig frames, checked against every camera's rows and offset."""
    rows = {s.camera: len(members[0][1]) for s, members in zip(sources, read)}
    for source, members in zip(sources, read):
        have, path = rows[source.camera], members[0][0]
        if source.n_frames is not None and have != source.n_frames:
            raise ViewError(f"{_where(context, source)}: {path} has {have} frames, but {source.n_frames} are expected")
        if n_frames is not None and have < source.frame_offset + n_frames:
            raise ViewError(
                f"{_where(context, source)}: {path} has {have} frames; the rig needs {n_frames} "
                f"from frame offset {source.frame_offset}"
            )
    if n_frames is not None:
        return n_frames
    if not any(s.frame_offset for s in sources):
        first = sources[0]
        for source, members in zip(sources, read):
            if rows[source.camera] != rows[first.camera]:
                raise ViewError(
                    f"{_where(context, source)}: {members[0][0]} has {rows[source.camera]} frames, but "
                    f"{read[0][0][0]} has {rows[first.camera]} (give frame offsets if the videos start apart)"
                )
    window = min(rows[s.camera] - s.frame_offset for s in sources)
    if window <= 0:
        after = {s.camera: rows[s.camera] - s.frame_offset for s in sources}
        raise ViewError(
            f"{context}no frame is common to all views after the frame offsets (frames after offset: {after})"
        )
    return window


def _check_likelihood(where: str, path: Path, likelihood: Array, first_row: int, bodyparts: list[str]) -> None:
    """Refuse a likelihood outside [0, 1] (rows from ``first_row`` of the file; NaN: not predicted)."""
    with np.errstate(invalid="ignore"):
        outside = np.isfinite(likelihood) & ((likelihood < 0) | (likelihood > 1))
    if outside.any():
        t, k = np.argwhere(outside)[0]
        raise ViewError(
            f"{where}: {path}: likelihood {likelihood[t, k]:g} (row {t + first_row}, body part {bodyparts[k]!r}) "
            f"is not in [0, 1]; {int(outside.sum())} value(s) like it"
        )


def _check_pixels(where: str, path: Path, values: Array, size: tuple[int, int], bodyparts: list[str]) -> None:
    """Refuse a finite coordinate more than ``IMAGE_MARGIN`` image sizes beyond the image."""
    for axis, (coord, extent) in enumerate(zip("xy", size)):
        column = values[..., axis]
        with np.errstate(invalid="ignore"):
            outside = np.isfinite(column) & ((column < -IMAGE_MARGIN * extent) | (column > (1 + IMAGE_MARGIN) * extent))
        if outside.any():
            t, k = np.argwhere(outside)[0]
            raise ViewError(
                f"{where}: {path}: {coord} = {column[t, k]:g} px (row {t}, body part {bodyparts[k]!r}) is far "
                f"outside the camera's {size[0]}x{size[1]} px image; {int(outside.sum())} value(s) like it "
                "(a corrupt file, or predictions of a video of another size than the calibration's)"
            )


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
    return keypoint_frame(table.values(), table.bodyparts, POINTS3D_COORDS, "element-lightning-pose", table.index)
