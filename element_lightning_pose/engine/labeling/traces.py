"""A video's predictions as the review reads them: which files there are, their per-frame series
by range and decimated, one frame's keypoints, and the worst frames by a criterion.

Files, told apart by their header alone (:func:`sniff`, so that listing never reads a file whole):

- ``predictions`` - the engine's keypoint CSV (``x``, ``y``, ``likelihood`` per body part): a
  model's predictions of a video, or a rig's reprojections (``elp triangulate --reproject``);
- ``eks`` - the smoother's CSV in eks's layout: the smoothed keypoints of an ensemble, with the
  ensemble's and the posterior's variance per coordinate;
- ``diagnostics`` - ``<video>_diagnostics.csv`` of ``elp predict --diagnostics``: two header
  rows (metric, body part), per-frame temporal norms and PCA residuals, no positions. Beside
  ``<video>.csv`` it is that file's *companion*: its series join the predictions' own.

A :class:`PredictionTable` holds every series as a (T, K) float32 array over the file's frame
numbers: ``x``, ``y``, ``likelihood`` and ``temporal_norm`` (displacement since the previous
frame, :func:`~element_lightning_pose.engine.inference.metrics.temporal_norm`) of a file with
positions, ``posterior_sd`` and ``ensemble_sd`` of an eks file (the square root of the mean of
the x and y variances, as the rig's smoother reads them), and each metric of a diagnostics file.
:func:`minmax_decimate` shrinks a range to a number of points the page can draw while keeping
every spike: each bucket of frames keeps its smallest and its largest value, at their frames.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from element_lightning_pose.engine.data.keypoints import HEADER_LABELS, read_keypoint_csv
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.inference.metrics import temporal_norm
from element_lightning_pose.engine.multicam.io import POINTS3D_COORDS, POSTERIOR_VARIANCE
from element_lightning_pose.engine.types import PathLike

PREDICTIONS, EKS, DIAGNOSTICS = "predictions", "eks", "diagnostics"
POSITION_COORDS = ("x", "y", "likelihood")
ENSEMBLE_VARIANCE = ("x_ens_var", "y_ens_var")
DIAGNOSTICS_SUFFIX = "_diagnostics"
DIAGNOSTICS_HEADER = ("metric", "bodypart")
# folders of a project that hold no predictions: not searched
NOT_SEARCHED = {"labeled-data", "videos", "checkpoints", "frame_cache", "logs", "__pycache__", "node_modules"}
MAX_SEARCH_DEPTH = 6
# separators after a video's name in the name of a file about it (video00_eks.csv, video00.eks.csv)
NAME_SEPARATORS = ("_", ".", "-")

# criteria of worst frames: the series each reads, and how its score reads in a sentence
CRITERIA = {
    "likelihood": "low likelihood",
    "jump": "temporal jump (away from both neighbouring frames)",
    "posterior_sd": "EKS posterior sd",
    "ensemble_sd": "ensemble sd",
}


@dataclass(frozen=True)
class FileInfo:
    """What a header says about a prediction file."""

    path: Path
    kind: str  # predictions | eks | diagnostics
    bodyparts: list[str]
    columns: list[str]  # coords of a keypoint file, metrics of a diagnostics file

    @property
    def has_positions(self) -> bool:
        return self.kind != DIAGNOSTICS


@dataclass
class PredictionTable:
    """Every series of one prediction file (and its companion diagnostics), over its frames."""

    path: Path
    kind: str
    bodyparts: list[str]
    frames: np.ndarray  # (T,) int64 frame numbers of the video, increasing
    series: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (T, K) float32

    @property
    def has_positions(self) -> bool:
        return "x" in self.series

    @property
    def nbytes(self) -> int:
        return int(self.frames.nbytes + sum(v.nbytes for v in self.series.values()))

    def rows(self, start: int | None = None, stop: int | None = None) -> slice:
        """The rows of frames ``start <= frame < stop`` (None: from the first / to the last)."""
        first = 0 if start is None else int(np.searchsorted(self.frames, start, side="left"))
        last = len(self.frames) if stop is None else int(np.searchsorted(self.frames, stop, side="left"))
        return slice(first, max(first, last))

    def criteria(self) -> list[str]:
        """The worst-frame criteria this file can answer (:data:`CRITERIA`, then its diagnostics)."""
        names = []
        if "likelihood" in self.series:
            names.append("likelihood")
        if "temporal_norm" in self.series:
            names.append("jump")
        names += [n for n in ("posterior_sd", "ensemble_sd") if n in self.series]
        return names + [n for n in self.series if n.endswith("_residual")]


@dataclass(frozen=True)
class WorstFrame:
    """A frame worth a look: its score by a criterion, the body part that gave it, and why."""

    frame: int
    score: float
    bodypart: str
    reason: str


# ---------------------------------------------------------------------------------- files


def sniff(path: PathLike) -> FileInfo | None:
    """The kind of a prediction file from its first lines; None for any other CSV (labels, logs,
    3D points, a file that is not a CSV of ours)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = []
            for row in csv.reader(handle):
                if any(cell.strip() for cell in row):
                    rows.append(row)
                if len(rows) == 3:
                    break
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if len(rows) >= 2 and tuple(r[0] for r in rows[:2]) == DIAGNOSTICS_HEADER and len(rows[0]) == len(rows[1]):
        metrics = list(dict.fromkeys(rows[0][1:]))
        return FileInfo(path, DIAGNOSTICS, list(dict.fromkeys(rows[1][1:])), metrics)
    if len(rows) < 3 or tuple(r[0] for r in rows) != HEADER_LABELS or len({len(r) for r in rows}) != 1:
        return None
    coords = list(dict.fromkeys(rows[2][1:]))
    if not set(POSITION_COORDS) <= set(coords) or "z" in coords or set(POINTS3D_COORDS) <= set(coords):
        return None
    kind = EKS if set(POSTERIOR_VARIANCE) <= set(coords) else PREDICTIONS
    return FileInfo(path, kind, list(dict.fromkeys(rows[1][1:])), coords)


def companion_of(path: PathLike) -> Path:
    """Where the diagnostics of a predictions file would be: ``<name>_diagnostics.csv`` beside it."""
    path = Path(path)
    return path.with_name(f"{path.stem}{DIAGNOSTICS_SUFFIX}{path.suffix}")


def is_about(file_name: str, video_stem: str, view: str | None = None) -> bool:
    """Whether a file named ``file_name`` is about the video ``video_stem``: ``<video>.csv``, or
    ``<video>`` then a separator (``_eks``, ``.smoothed``, ``_diagnostics``); in a multi-view
    project also ``<view>.csv``, the name of a rig's reprojection into that view's camera."""
    stem = Path(file_name).stem
    if stem == video_stem or (view is not None and stem == view):
        return True
    return stem.startswith(video_stem) and stem[len(video_stem)] in NAME_SEPARATORS


def find_prediction_files(root: PathLike, video_stem: str, view: str | None = None) -> list[FileInfo]:
    """Prediction files about one video anywhere inside the project at ``root``, sorted by path.

    The project's own folders of other things (labels, videos, checkpoints, frame caches) and
    hidden folders are not searched, nor are folders behind symbolic links; at most
    :data:`MAX_SEARCH_DEPTH` levels down.
    """
    root = Path(root)
    found = []
    for folder, folders, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        folders[:] = sorted(
            name
            for name in folders
            if depth < MAX_SEARCH_DEPTH
            and not name.startswith(".")
            and name not in NOT_SEARCHED
            and not os.path.islink(os.path.join(folder, name))
        )
        for name in sorted(files):
            if name.lower().endswith(".csv") and not name.startswith(".") and is_about(name, video_stem, view):
                info = sniff(Path(folder) / name)
                if info is not None:
                    found.append(info)
    return sorted(found, key=lambda info: info.path.as_posix())


def read_prediction_table(path: PathLike) -> PredictionTable:
    """Every series of a prediction file, with those of its companion diagnostics file if any.

    Raises :class:`ProjectError` naming the file when it is none of the kinds, when its index is
    not increasing frame numbers, or when its companion disagrees with it in frames.
    """
    path = Path(path)
    info = sniff(path)
    if info is None:
        raise ProjectError(f"{path}: not a prediction file (a keypoint CSV with x, y, likelihood, or diagnostics)")
    if info.kind == DIAGNOSTICS:
        return _read_diagnostics(path)
    values, bodyparts, coords, index = read_keypoint_csv(path)
    frames = _frame_numbers(path, index)
    column = {c: values[..., coords.index(c)] for c in coords}
    xy = values[..., [coords.index("x"), coords.index("y")]]
    series = {c: column[c] for c in POSITION_COORDS} | {"temporal_norm": temporal_norm(xy)}
    if info.kind == EKS:
        series["posterior_sd"] = np.sqrt((column[POSTERIOR_VARIANCE[0]] + column[POSTERIOR_VARIANCE[1]]) / 2)
        if set(ENSEMBLE_VARIANCE) <= set(coords):
            series["ensemble_sd"] = np.sqrt((column[ENSEMBLE_VARIANCE[0]] + column[ENSEMBLE_VARIANCE[1]]) / 2)
    table = PredictionTable(path, info.kind, bodyparts, frames, {k: v.astype(np.float32) for k, v in series.items()})
    companion = companion_of(path)
    if companion.is_file():
        extra = _read_diagnostics(companion)
        if not np.array_equal(extra.frames, frames) or extra.bodyparts != bodyparts:
            raise ProjectError(f"{companion}: its frames or body parts differ from those of {path.name}")
        table.series |= {k: v for k, v in extra.series.items() if k not in table.series}
    return table


def _read_diagnostics(path: Path) -> PredictionTable:
    try:
        frame = pd.read_csv(path, header=[0, 1], index_col=0, encoding="utf-8-sig")
    except Exception as exc:  # pandas raises many types for malformed files
        raise ProjectError(f"{path}: not a diagnostics CSV ({exc})") from None
    metrics = list(dict.fromkeys(frame.columns.get_level_values(0)))
    bodyparts = list(dict.fromkeys(frame.columns.get_level_values(1)))
    series = {}
    for metric in metrics:
        block = frame[metric]
        if list(block.columns) != bodyparts:
            raise ProjectError(f"{path}: metric {metric!r} does not cover the body parts {bodyparts} in order")
        try:
            series[metric] = block.to_numpy(dtype=np.float32)
        except ValueError as exc:
            raise ProjectError(f"{path}: metric {metric!r} has non-numeric values ({exc})") from None
    return PredictionTable(path, DIAGNOSTICS, bodyparts, _frame_numbers(path, frame.index), series)


def _frame_numbers(path: Path, index: pd.Index) -> np.ndarray:
    try:
        numbers = np.asarray(index, dtype=float)
    except (TypeError, ValueError):
        raise ProjectError(f"{path}: the index column is not frame numbers (predictions of a video)") from None
    if not np.isfinite(numbers).all() or (numbers != np.round(numbers)).any() or (numbers < 0).any():
        raise ProjectError(f"{path}: the index column is not frame numbers (predictions of a video)")
    frames = numbers.astype(np.int64)
    if len(frames) > 1 and (np.diff(frames) <= 0).any():
        row = int(np.flatnonzero(np.diff(frames) <= 0)[0]) + 1
        raise ProjectError(f"{path}: frame numbers must increase (row {row + 1} has frame {frames[row]})")
    return frames


# ---------------------------------------------------------------------------------- series


def minmax_decimate(frames: np.ndarray, values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points per column of ``values`` (T, K): ``(frames, values)``, (M, K) each.

    A range that fits is returned whole. A longer one is cut into equal buckets of consecutive
    frames, and each bucket keeps its smallest and its largest value at their own frames, in
    frame order, so that a one-frame spike is drawn at its height and its frame. A bucket where
    the column is NaN throughout keeps one NaN (a gap in the line).
    """
    if max_points < 2:
        raise ProjectError(f"max_points={max_points}: at least 2")
    n, k = values.shape
    if n <= max_points:
        return np.repeat(frames[:, None], k, axis=1), values
    size = -(-n // (max_points // 2))  # frames per bucket, so that 2 x buckets <= max_points
    buckets = -(-n // size)
    padded = np.full((buckets * size, k), np.nan, dtype=values.dtype)
    padded[:n] = values
    blocks = padded.reshape(buckets, size, k)
    missing = np.isnan(blocks)
    low = np.where(missing, np.inf, blocks).argmin(axis=1)
    high = np.where(missing, -np.inf, blocks).argmax(axis=1)
    offsets = (np.arange(buckets) * size)[:, None]
    rows = np.stack([offsets + np.minimum(low, high), offsets + np.maximum(low, high)], axis=1)
    rows = np.minimum(rows.reshape(2 * buckets, k), n - 1)
    return frames[rows], np.take_along_axis(values, rows, axis=0)


# ---------------------------------------------------------------------------------- worst frames


def frame_scores(table: PredictionTable, criterion: str) -> np.ndarray:
    """Badness (T, K) of each keypoint in each frame by ``criterion`` (larger is worse, NaN: no
    score): ``likelihood`` 1 - likelihood (a frame predicted as nothing counts as 0); ``jump``
    the smaller of the displacements into and out of the frame, so that one wrong frame scores
    high and its good neighbours do not; the others their series as it is."""
    if criterion not in table.criteria():
        raise ProjectError(f"criterion {criterion!r}: {table.path.name} offers {table.criteria()}")
    if criterion == "likelihood":
        return 1.0 - np.nan_to_num(table.series["likelihood"].astype(float), nan=0.0)
    if criterion == "jump":
        into = table.series["temporal_norm"].astype(float)
        out_of = np.full_like(into, np.nan)
        out_of[:-1] = into[1:]
        return np.fmin(into, out_of)
    return table.series[criterion].astype(float)


def worst_frames(
    table: PredictionTable,
    criterion: str,
    *,
    n: int = 20,
    min_gap: int = 10,
    start: int | None = None,
    stop: int | None = None,
) -> list[WorstFrame]:
    """The ``n`` worst frames of ``start:stop`` by ``criterion``, worst first, no two closer than
    ``min_gap`` frames (so that the list is not one bad moment ten times over). A frame's score is
    its worst keypoint's."""
    if n < 1 or min_gap < 1:
        raise ProjectError(f"n={n}, min_gap={min_gap}: both must be at least 1")
    rows = table.rows(start, stop)
    scores = frame_scores(table, criterion)[rows]
    frames = table.frames[rows]
    if not len(frames):
        return []
    worst_part = np.argmax(np.nan_to_num(scores, nan=-np.inf), axis=1)
    worst = scores[np.arange(len(scores)), worst_part]
    order = np.argsort(-np.nan_to_num(worst, nan=-np.inf), kind="stable")
    chosen: list[WorstFrame] = []
    taken: list[int] = []
    for row in order:
        if len(chosen) == n or not np.isfinite(worst[row]):
            break
        frame = int(frames[row])
        if any(abs(frame - other) < min_gap for other in taken):
            continue
        taken.append(frame)
        part = table.bodyparts[int(worst_part[row])]
        chosen.append(WorstFrame(frame, float(worst[row]), part, _reason(criterion, float(worst[row]), part)))
    return chosen


def _reason(criterion: str, score: float, bodypart: str) -> str:
    if criterion == "likelihood":
        return f"{bodypart}: likelihood {1 - score:.2f}"
    if criterion == "jump":
        return f"{bodypart}: {score:.1f} px away from both neighbouring frames"
    if criterion in ("posterior_sd", "ensemble_sd"):
        return f"{bodypart}: {CRITERIA[criterion]} {score:.1f} px"
    return f"{bodypart}: {criterion.replace('_', ' ')} {score:.2f}"


def series_names(table: PredictionTable, wanted: Sequence[str] | None = None) -> list[str]:
    """``wanted`` checked against the table's series (None: all of them, in the table's order)."""
    if wanted is None:
        return list(table.series)
    unknown = [name for name in wanted if name not in table.series]
    if unknown:
        raise ProjectError(f"series {unknown}: {table.path.name} has {list(table.series)}")
    return list(wanted)
