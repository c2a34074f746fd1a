"""Frames worth labeling next, and their export into a project's ``labeled-data/``.

Three ways to choose, each returning :class:`Suggestion` s (frame, score, the reason it was
picked), best first:

- :func:`select_kmeans` - the method of DeepLabCut and Lightning Pose: every frame shrunk to a
  small grey thumbnail (about 64 x 64), motion energy (mean absolute change since the previous
  frame), the frames above a motion quantile kept, PCA, k-means with one cluster per wanted
  frame, and the frame nearest each centre. The video is streamed once (only the thumbnails are kept), the
  PCA is a seeded randomised SVD and the k-means a seeded k-means++ with Lloyd iterations,
  all in numpy: no scikit-learn.
- :func:`select_uniform` - evenly spaced frames.
- :func:`select_model_guided` - frames ranked by a model's or an ensemble's diagnostics
  (:class:`FrameScores`, assembled from the files a user has by :func:`read_frame_scores`): low
  likelihood, temporal jumps, PCA residuals, ensemble spread, EKS posterior sd and a calibrated
  rig's reprojection error in this camera. Each criterion is divided by that keypoint's median
  over the video, so that criteria and keypoints compare; a frame's score is its worst
  criterion on its worst keypoint. The top frames are then spread: no two closer in time than
  ``min_gap`` frames, and k-means on the predicted poses picks one frame per kind of pose, so
  that the queue is not ten neighbouring frames of one bad moment.

:func:`export_frames` writes the chosen frames and their context frames (+-2, what a context
model needs) as PNG in Lightning Pose's layout, ``labeled-data/<video stem>/img<frame>.png``.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from element_lightning_pose.engine.atomic import atomic_output
from element_lightning_pose.engine.data.labels import read_image
from element_lightning_pose.engine.data.video import iter_grey_batches, read_frames, video_info
from element_lightning_pose.engine.eks.io import load_members
from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.inference.metrics import temporal_norm
from element_lightning_pose.engine.labeling.traces import PredictionTable, read_prediction_table
from element_lightning_pose.engine.labeling.traces import frame_scores as traces_frame_scores
from element_lightning_pose.engine.model_dir import CROP_ZOOM, MODEL_JSON, read_model_info
from element_lightning_pose.engine.safe_paths import check_path_part, inside_root
from element_lightning_pose.engine.types import PathLike

if TYPE_CHECKING:
    from element_lightning_pose.engine.training.pca import KeypointPCA

# The method of DeepLabCut and Lightning Pose (facts, not code): thumbnails of this side,
# frames above this motion quantile (a higher one for very long videos), at most this many PCs.
THUMBNAIL_SIZE = 64
MOTION_QUANTILE = 0.5
LONG_VIDEO_FRAMES = 100_000
LONG_VIDEO_MOTION_QUANTILE = 0.75
PCA_COMPONENTS = 32
# Thumbnails kept for clustering (about 4 KiB each): a longer video keeps every s-th frame's,
# so memory stays under ~160 MiB while the motion energy is still measured on every frame.
MAX_KEPT_THUMBNAILS = 40_000

CONTEXT_FRAMES = 2  # frames either side of a labeled frame that a context model reads
FRAME_DIGITS = 8  # Lightning Pose's img%08d.png
# An image already in labeled-data/ is taken for the frame it is named after when it has the
# frame's size and differs from our decode by at most this many grey levels on average: another
# extractor (or a render before compression) differs by a few levels, a picture of something
# else (another video of the same name, another camera) by far more. It is kept, never replaced.
SAME_FRAME_MEAN_DIFFERENCE = 8.0


class SelectionError(ElpError, ValueError):
    """Frames cannot be selected or exported as asked; the message names the video, file or frame."""


@dataclass(frozen=True)
class Suggestion:
    """A frame worth labeling: its index in the video, a score (higher = more worth labeling;
    comparable within one call only) and one human line saying why it was picked."""

    frame: int
    score: float
    reason: str


# ------------------------------------------------------------------------------ shared parts


def _frame_set(exclude: Iterable[int] | Iterable[Suggestion]) -> set[int]:
    return {int(item.frame if isinstance(item, Suggestion) else item) for item in exclude}


def _check_count(n: int, available: int, where: str) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SelectionError(f"{where}: the number of frames to select must be a positive integer, got {n!r}")
    if n > available:
        raise SelectionError(f"{where}: {n} frames asked, only {available} can be selected (after the exclusions)")


def _ranked(suggestions: list[Suggestion]) -> list[Suggestion]:
    return sorted(suggestions, key=lambda s: (-s.score, s.frame))


def kmeans(data: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (N,), centres (k, D))`` of k-means on ``data`` (N, D): k-means++ seeding, then
    Lloyd iterations until no label changes (at most ``iterations``). A cluster left empty is
    re-seeded with the point farthest from its centre, so every cluster has members."""
    data = np.asarray(data, dtype=np.float64)
    n = len(data)
    if not 1 <= k <= n:
        raise ValueError(f"k-means: {k} clusters for {n} points")
    squared = np.einsum("ij,ij->i", data, data)

    def distances(centres: np.ndarray) -> np.ndarray:  # (N, k) squared distances
        found = squared[:, None] - 2.0 * data @ centres.T + np.einsum("ij,ij->i", centres, centres)[None, :]
        return np.maximum(found, 0.0)

    chosen = [int(rng.integers(n))]
    nearest = distances(data[chosen])[:, 0]
    for _ in range(1, k):
        total = nearest.sum()
        if total <= 0:  # fewer distinct points than clusters: any point not chosen yet
            pick = int(rng.choice(np.setdiff1d(np.arange(n), chosen)))
        else:
            pick = int(rng.choice(n, p=nearest / total))
        chosen.append(pick)
        nearest = np.minimum(nearest, distances(data[[pick]])[:, 0])
    centres = data[chosen].copy()
    labels = np.full(n, -1)
    for _ in range(iterations):
        found = distances(centres)
        new = found.argmin(axis=1)
        counts = np.bincount(new, minlength=k)
        while (counts == 0).any():  # k <= n: some cluster has a member to spare
            gaps = np.where(counts[new] > 1, found[np.arange(n), new], -1.0)
            far = int(gaps.argmax())
            new[far] = int(np.flatnonzero(counts == 0)[0])
            counts = np.bincount(new, minlength=k)
        if np.array_equal(new, labels):
            break
        labels = new
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, data)
        centres = sums / counts[:, None]
    return labels, centres


def _orthonormal(columns: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the span of ``columns`` (N, c), c small: through the eigenvectors
    of their c x c Gram matrix (no LAPACK QR on the tall matrix, which stalls when BLAS threads
    compete for busy cores)."""
    gram = (columns.T @ columns).astype(np.float64)
    values, vectors = np.linalg.eigh(gram)
    values = np.maximum(values, values.max() * 1e-12 if values.max() > 0 else 1.0)
    return columns @ (vectors / np.sqrt(values)).astype(columns.dtype)


def pca_features(data: np.ndarray, components: int, rng: np.random.Generator, power_iterations: int = 2) -> np.ndarray:
    """(N, c) projections of ``data`` (N, D) on its first ``c`` principal components.

    A seeded randomised SVD (a Gaussian sketch with 10 extra columns and a few power
    iterations), in float32: the leading components of thumbnails to well within what k-means
    can tell apart, at a fraction of a full SVD's cost.
    """
    centred = np.asarray(data, dtype=np.float32)
    centred = centred - centred.mean(axis=0, dtype=np.float64).astype(np.float32)
    n, d = centred.shape
    components = max(1, min(components, n - 1, d)) if n > 1 else 1
    width = min(components + 10, n, d)
    basis = _orthonormal(centred @ rng.standard_normal((d, width)).astype(np.float32))
    for _ in range(power_iterations):
        basis = _orthonormal(centred @ _orthonormal(centred.T @ basis))
    sketch = (basis.T @ centred).astype(np.float64)  # (width, D): the data in the found subspace
    values, vectors = np.linalg.eigh(sketch @ sketch.T)
    top = np.argsort(values)[::-1][:components]
    axes = (vectors[:, top].T @ sketch) / np.sqrt(np.maximum(values[top], 1e-12))[:, None]
    return centred @ axes.T.astype(np.float32)


# ------------------------------------------------------------------------------ k-means on frames


@dataclass
class _Thumbnails:
    motion: np.ndarray  # (T,) mean absolute grey change since the previous frame (0 for frame 0)
    frames: np.ndarray  # (M,) frames whose thumbnails were kept
    pixels: np.ndarray  # (M, size * size) uint8


def _read_thumbnails(video: PathLike, shrink: int, every: int, batch_size: int) -> _Thumbnails:
    motion_parts, kept_frames, kept_pixels = [], [], []
    previous: np.ndarray | None = None
    for indices, batch in iter_grey_batches(video, batch_size, shrink):
        flat = batch.reshape(len(batch), -1)
        current = flat.astype(np.float32)
        before = np.concatenate([current[:1] if previous is None else previous[None], current[:-1]])
        motion_parts.append(np.abs(current - before).mean(axis=1))
        previous = current[-1]
        keep = indices % every == 0
        if keep.any():
            kept_frames.append(indices[keep])
            kept_pixels.append(flat[keep])
    if not motion_parts:
        raise SelectionError(f"{video}: no frame could be decoded")
    return _Thumbnails(np.concatenate(motion_parts), np.concatenate(kept_frames), np.concatenate(kept_pixels))


def select_kmeans(
    video: PathLike,
    n: int,
    *,
    exclude: Iterable[int] | Iterable[Suggestion] = (),
    seed: int = 0,
    size: int = THUMBNAIL_SIZE,
    motion_quantile: float | None = None,
    components: int = PCA_COMPONENTS,
    max_kept: int = MAX_KEPT_THUMBNAILS,
    batch_size: int = 64,
) -> list[Suggestion]:
    """``n`` frames of ``video`` that look different from one another, among its high-motion frames.

    Frames are shrunk to grey thumbnails of about ``size`` x ``size`` pixels (the luma plane
    averaged over whole-number blocks, so the frame's aspect is kept; streamed in one pass,
    only the thumbnails kept); a frame's motion energy is the mean absolute grey change since
    the previous frame. The frames above the ``motion_quantile`` of the motion (default 0.5, 0.75
    for videos of 100,000 frames or more) and not in ``exclude`` (e.g. frames already labeled)
    are projected on their first ``components`` principal components and clustered by k-means
    into ``n`` clusters; each cluster gives the frame nearest its centre. Fewer high-motion
    frames than ``n`` widen the pool to every frame not excluded. Deterministic by ``seed``.

    Each suggestion's score is the share of the pool its cluster stands for; the reason names
    the cluster and the frame's motion relative to the video's median.
    """
    if not 4 <= size <= 512:
        raise SelectionError(f"{video}: thumbnail size must be 4-512 pixels, got {size}")
    if motion_quantile is not None and not 0.0 <= motion_quantile < 1.0:
        raise SelectionError(f"{video}: motion_quantile must be in [0, 1), got {motion_quantile}")
    info = video_info(video)
    excluded = _frame_set(exclude)
    _check_count(n, info.n_frames - sum(0 <= f < info.n_frames for f in excluded), str(video))
    every = max(1, -(-info.n_frames // max(max_kept, n)))
    shrink = max(1, min(round((info.width * info.height / size**2) ** 0.5), min(info.width, info.height) // 4))
    thumbs = _read_thumbnails(video, shrink, every, batch_size)
    motion = thumbs.motion
    if motion_quantile is None:
        motion_quantile = LONG_VIDEO_MOTION_QUANTILE if len(motion) >= LONG_VIDEO_FRAMES else MOTION_QUANTILE
    threshold = float(np.quantile(motion, motion_quantile))
    allowed = ~np.isin(thumbs.frames, list(excluded))
    pool = np.flatnonzero(allowed & (motion[thumbs.frames] > threshold))
    if len(pool) < n:
        pool = np.flatnonzero(allowed)
    if len(pool) < n:  # only where thumbnails were thinned out and the exclusions hit the kept ones
        raise SelectionError(f"{video}: {n} frames asked, only {len(pool)} candidate frames after the exclusions")
    rng = np.random.default_rng(seed)
    features = pca_features(thumbs.pixels[pool], components, rng)
    labels, centres = kmeans(features, n, rng)
    median = float(np.median(motion)) or 1.0
    suggestions = []
    for cluster in range(n):
        members = np.flatnonzero(labels == cluster)
        gaps = np.linalg.norm(features[members] - centres[cluster], axis=1)
        frame = int(thumbs.frames[pool[members[gaps.argmin()]]])
        suggestions.append(
            Suggestion(
                frame,
                round(len(members) / len(pool), 6),
                f"k-means cluster {cluster + 1} of {n} ({len(members)} of {len(pool)} high-motion frames), "
                f"motion {motion[frame]:.2f} ({motion[frame] / median:.1f}x the video's median)",
            )
        )
    return _ranked(suggestions)


# ------------------------------------------------------------------------------ uniform


def select_uniform(
    video_or_n_frames: PathLike | int, n: int, *, exclude: Iterable[int] | Iterable[Suggestion] = ()
) -> list[Suggestion]:
    """``n`` frames evenly spaced over the frames not in ``exclude`` (the middle of ``n`` equal
    stretches), in frame order; ``video_or_n_frames`` is a video or its number of frames."""
    if isinstance(video_or_n_frames, (str, os.PathLike)):
        n_frames, where = video_info(video_or_n_frames).n_frames, str(video_or_n_frames)
    elif isinstance(video_or_n_frames, (int, np.integer)) and not isinstance(video_or_n_frames, bool):
        n_frames, where = int(video_or_n_frames), "uniform selection"
    else:
        raise SelectionError(f"uniform selection: expected a video or a number of frames, got {video_or_n_frames!r}")
    excluded = _frame_set(exclude)
    allowed = np.array([f for f in range(n_frames) if f not in excluded], dtype=np.int64)
    _check_count(n, len(allowed), where)
    picks = allowed[((np.arange(n) + 0.5) * len(allowed) / n).astype(np.int64)]
    step = len(allowed) / n
    return [
        Suggestion(int(f), 0.0, f"uniform: {i + 1} of {n}, one every {step:.1f} frames") for i, f in enumerate(picks)
    ]


# ------------------------------------------------------------------------------ model-guided


@dataclass(frozen=True)
class Criterion:
    """How one diagnostic reads in a reason, and the smallest typical value it is divided by (so
    that a keypoint that barely moves does not turn a 2 px jump into a 20-fold outlier).
    ``inverted``: the badness is 1 - the value shown (likelihood)."""

    label: str
    unit: str
    floor: float
    inverted: bool = False


# The criteria's names are those of the review's traces (engine.labeling.traces) and of
# elp predict's diagnostics file; their badness (larger is worse) is traces.frame_scores'.
CRITERIA: dict[str, Criterion] = {
    "likelihood": Criterion("likelihood", "", 0.01, inverted=True),
    "jump": Criterion("temporal jump", "px", 1.0),
    "pca_singleview_residual": Criterion("PCA residual (single-view)", "px", 1.0),
    "pca_multiview_residual": Criterion("PCA residual (multi-view)", "px", 1.0),
    "ensemble_sd": Criterion("ensemble sd", "px", 0.5),
    "posterior_sd": Criterion("EKS posterior sd", "px", 0.5),
    "reprojection": Criterion("reprojection error in this camera", "px", 1.0),
}


@dataclass(frozen=True)
class FrameScores:
    """Per-frame, per-keypoint diagnostics of one video's predictions.

    ``criteria`` maps names of :data:`CRITERIA` to (T, K) badness, larger is worse (NaN where
    unknown): likelihood as 1 - likelihood, the others in pixels; ``frames`` (T,) are the rows'
    frame numbers in the video; ``poses`` (T, K, 2) the predicted positions (for spreading the
    selection), or None; ``sources`` says which file gave what.
    """

    criteria: Mapping[str, np.ndarray]
    bodyparts: list[str]
    frames: np.ndarray
    poses: np.ndarray | None = None
    sources: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t, k = len(self.frames), len(self.bodyparts)
        if not self.criteria:
            raise SelectionError("frame scores: no criterion given")
        for name, values in self.criteria.items():
            if name not in CRITERIA:
                raise SelectionError(f"frame scores: unknown criterion {name!r} (known: {', '.join(CRITERIA)})")
            if np.shape(values) != (t, k):
                raise SelectionError(
                    f"frame scores: criterion {name!r} has shape {np.shape(values)}, expected ({t}, {k}) "
                    "(frames, body parts)"
                )
        if self.poses is not None and np.shape(self.poses)[:2] != (t, k):
            raise SelectionError(f"frame scores: poses have shape {np.shape(self.poses)}, expected ({t}, {k}, 2)")

    def normalised(self) -> dict[str, np.ndarray]:
        """Each criterion (T, K) divided by its keypoint's median over the video (at least the
        criterion's floor): 1 is typical, 5 is five times the typical badness."""
        out = {}
        for name, values in self.criteria.items():
            bad = np.asarray(values, dtype=float)
            floor = CRITERIA[name].floor
            with _quiet_nan_slices():
                typical = np.nanmedian(bad, axis=0)
            out[name] = bad / np.fmax(np.nan_to_num(typical, nan=floor), floor)
        return out


@contextmanager
def _quiet_nan_slices() -> Iterator[None]:
    """np.nanmedian and np.nanvar warn for an all-NaN keypoint; here that only means "unknown"."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _describe(scores: FrameScores, name: str, row: int, keypoint: int, ratio: float) -> str:
    spec = CRITERIA[name]
    bad = float(scores.criteria[name][row, keypoint])
    part = scores.bodyparts[keypoint]
    if spec.inverted:
        with _quiet_nan_slices():
            typical = 1.0 - float(np.nanmedian(scores.criteria[name][:, keypoint]))
        return f"{spec.label} {1.0 - bad:.2f} on {part} (its median {typical:.2f})"
    return f"{spec.label} {bad:.1f} {spec.unit} on {part} ({ratio:.1f}x its median)"


def select_model_guided(
    scores: FrameScores,
    n: int,
    *,
    exclude: Iterable[int] | Iterable[Suggestion] = (),
    spread: bool = True,
    poses: np.ndarray | None = None,
    min_gap: int = 5,
    pool_factor: int = 4,
    seed: int = 0,
) -> list[Suggestion]:
    """The ``n`` frames whose diagnostics look worst, best first, each with the criterion, the
    keypoint and the value that put it there.

    A frame's score is its largest normalised criterion (:meth:`FrameScores.normalised`) over
    keypoints. With ``spread`` the ranking is thinned before the pick: no frame within
    ``min_gap`` frames of a better one, then among the best ``pool_factor * n`` frames left,
    k-means on the predicted ``poses`` (T, K, 2; default ``scores.poses``) in ``n`` clusters
    and the worst frame of each cluster, so that one bad stretch or one posture does not fill
    the queue. Frames in ``exclude`` (frame numbers, e.g. those already labeled) are skipped.
    """
    where = "model-guided selection"
    normalised = scores.normalised()
    names = list(normalised)
    stacked = np.stack([normalised[name] for name in names])  # (C, T, K)
    filled = np.where(np.isnan(stacked), -np.inf, stacked)
    flat = filled.transpose(1, 0, 2).reshape(len(scores.frames), -1)  # (T, C * K)
    worst = flat.argmax(axis=1)
    frame_score = flat[np.arange(len(flat)), worst]
    frames = np.asarray(scores.frames, dtype=np.int64)
    allowed = ~np.isin(frames, list(_frame_set(exclude))) & np.isfinite(frame_score)
    _check_count(n, int(allowed.sum()), where)
    order = [int(r) for r in np.lexsort((frames, -frame_score)) if allowed[r]]
    if spread:
        rows = _spread(order, frames, n, min_gap, pool_factor, scores.poses if poses is None else poses, seed)
    else:
        rows = order[:n]
    suggestions = []
    for row in rows:
        criterion, keypoint = divmod(int(worst[row]), len(scores.bodyparts))
        reason = _describe(scores, names[criterion], row, keypoint, float(frame_score[row]))
        suggestions.append(Suggestion(int(frames[row]), round(float(frame_score[row]), 6), reason))
    return _ranked(suggestions)


def _spread(
    order: list[int],
    frames: np.ndarray,
    n: int,
    min_gap: int,
    pool_factor: int,
    poses: np.ndarray | None,
    seed: int,
) -> list[int]:
    """Rows of ``order`` (best first) thinned in time, then one per pose cluster (see above)."""
    pool: list[int] = []
    taken = np.zeros(0, dtype=np.int64)
    for row in order:
        if len(pool) == max(n, pool_factor * n):
            break
        if taken.size and np.abs(taken - frames[row]).min() < min_gap:
            continue
        pool.append(row)
        taken = np.append(taken, frames[row])
    if len(pool) < n:  # a short video: relax the gap rather than return fewer frames
        pool += [row for row in order if row not in pool][: n - len(pool)]
    if poses is None or len(pool) == n:
        return pool[:n]
    shapes = np.asarray(poses, dtype=float)[pool][..., :2].reshape(len(pool), -1)
    column_means = np.nanmean(np.where(np.isfinite(shapes), shapes, np.nan), axis=0)
    shapes = np.where(np.isfinite(shapes), shapes, np.nan_to_num(column_means)[None, :])
    labels, _ = kmeans(shapes, n, np.random.default_rng(seed))
    # pool is best first: the first member of each cluster is its worst frame
    return [pool[int(np.flatnonzero(labels == cluster)[0])] for cluster in range(n)]


# ------------------------------------------------------------------------------ assembling scores


def model_pcas(model: PathLike) -> dict[str, KeypointPCA]:
    """The PCAs a model was trained with, read from its checkpoint (a model directory, whose
    ``checkpoints/best.ckpt`` is read, or a checkpoint file); a crop-zoom model's pose stage's."""
    return _checkpoint_pcas(model)[0]


def _checkpoint_pcas(model: PathLike) -> tuple[dict[str, KeypointPCA], list[str]]:
    """(the PCAs, the body parts they index) of a model (see :func:`model_pcas`)."""
    # torch comes with the checkpoint reader: imported here, so that choosing frames by k-means,
    # uniformly or from diagnostics files does not pay seconds and hundreds of MiB for it
    from element_lightning_pose.engine.networks.checkpoint import read_checkpoint
    from element_lightning_pose.engine.training.pca import KeypointPCA, crop_pcas_in_frame_pixels

    path, crop_zoom = Path(model), None
    if path.is_dir():
        if (path / MODEL_JSON).is_file():
            info = read_model_info(path)
            if info.kind == CROP_ZOOM:
                crop_zoom, path = info, info.stage_dirs()["pose"]
        path = path / "checkpoints" / "best.ckpt"
    saved = read_checkpoint(path)
    pcas = {kind: KeypointPCA.from_dict(data) for kind, data in (saved.hyper_parameters.get("pca") or {}).items()}
    if crop_zoom is not None:  # the pose stage's PCAs are in crop-input pixels, the predictions in frame pixels
        pcas = crop_pcas_in_frame_pixels(pcas, crop_zoom.crop_size, saved.config.data.image_resize)
    return pcas, saved.bodyparts


def _sd(x_variance: np.ndarray, y_variance: np.ndarray) -> np.ndarray:
    """A 2D spread in px: the root of the mean of the x and y variances, as the review's traces
    and the rig's smoother read an eks file's variances."""
    return np.sqrt((x_variance + y_variance) / 2)


def read_frame_scores(
    *,
    predictions_csv: PathLike | None = None,
    members: Sequence[PathLike] = (),
    eks_csv: PathLike | None = None,
    pca: PathLike | Mapping[str, KeypointPCA] | None = None,
    diagnostics_csv: PathLike | None = None,
    reprojection: PathLike | np.ndarray | None = None,
) -> FrameScores:
    """The diagnostics of one video's predictions, from whichever of these files a user has
    (read by :func:`~element_lightning_pose.engine.labeling.traces.read_prediction_table`, the
    review's reader, so that a reason's value is the one its trace shows):

    - ``predictions_csv``: one model's predictions (x, y, likelihood): low likelihood and
      temporal jumps (a frame far from both its neighbours: the smaller of its displacements
      from the previous and to the next frame, so a one-frame glitch stands out and a fast
      but smooth movement does not); with its ``<name>_diagnostics.csv`` beside it, that
      file's PCA residuals too;
    - ``members``: an ensemble's prediction CSVs: the members' spread (root of the mean of
      their x and y variances);
    - ``eks_csv``: an Ensemble Kalman Smoother output in eks's layout: the posterior sd, and
      the ensemble sd it records when no ``members`` are given;
    - ``pca``: the model's PCAs (its model directory, a checkpoint, or ``{kind: KeypointPCA}``):
      the residual of each keypoint; ``diagnostics_csv`` (``elp predict --diagnostics``) gives
      such residuals already computed;
    - ``reprojection``: for a calibrated rig, this camera's reprojection error (T, K) px, or
      this camera's CSV of the rig's reprojection (``elp triangulate --reproject``), whose
      distance to the predictions is the error.

    Likelihood, jumps, PCA and reprojection are measured on the predictions of
    ``predictions_csv``, else the EKS output, else the members' median (also the poses used to
    spread a selection). Every file must cover the same frames and body parts; an error names
    the file that differs.
    """
    if predictions_csv is None and not members and eks_csv is None and diagnostics_csv is None:
        raise SelectionError("frame scores: give at least one of predictions_csv, members, eks_csv or diagnostics_csv")
    criteria: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    first: PredictionTable | None = None

    def read(path: PathLike) -> PredictionTable:
        nonlocal first
        table = read_prediction_table(path)
        if first is None:
            first = table
        elif table.bodyparts != first.bodyparts:
            raise SelectionError(f"{path}: body parts {table.bodyparts} differ from {first.path}'s {first.bodyparts}")
        elif not np.array_equal(table.frames, first.frames):
            raise SelectionError(
                f"{path}: {len(table.frames)} frames ({table.frames[0]}-{table.frames[-1]}), {first.path} has "
                f"{len(first.frames)} ({first.frames[0]}-{first.frames[-1]}): not predictions of the same frames"
            )
        return table

    def take(table: PredictionTable, only: Sequence[str] | None = None) -> None:
        for name in table.criteria():
            if name in CRITERIA and name not in criteria and (only is None or name in only):
                criteria[name] = traces_frame_scores(table, name)
                sources[name] = str(table.path)

    measured: PredictionTable | None = None  # the predictions the likelihood, jumps, PCA are measured on
    if predictions_csv is not None:
        measured = read(predictions_csv)
        take(measured)
    if members:
        tables = [read(path) for path in members]
        stacked = np.stack([np.stack([t.series[c] for c in ("x", "y", "likelihood")], axis=-1) for t in tables])
        load_members(stacked)  # refuses a member that predicts nothing
        with _quiet_nan_slices():
            criteria["ensemble_sd"] = _sd(np.nanvar(stacked[..., 0], axis=0), np.nanvar(stacked[..., 1], axis=0))
            median = np.nanmedian(stacked, axis=0)
        sources["ensemble_sd"] = f"{len(members)} members"
    if eks_csv is not None:
        smoothed = read(eks_csv)
        take(smoothed, only=None if measured is None else ("posterior_sd", "ensemble_sd"))
        measured = measured or smoothed
    if measured is None and members:
        series = {name: median[..., c].astype(np.float32) for c, name in enumerate(("x", "y", "likelihood"))}
        series["temporal_norm"] = temporal_norm(median).astype(np.float32)
        assert first is not None
        measured = PredictionTable(Path("members' median"), "predictions", first.bodyparts, first.frames, series)
        take(measured)
    if diagnostics_csv is not None:
        take(read(diagnostics_csv))
    assert first is not None
    bodyparts = first.bodyparts
    poses = None if measured is None else np.stack([measured.series["x"], measured.series["y"]], axis=-1)
    if pca is not None:
        if poses is None:
            raise SelectionError(f"pca {pca}: no predictions to measure its residuals on (give predictions_csv)")
        if isinstance(pca, Mapping):
            pcas = dict(pca)
        else:
            pcas, model_parts = _checkpoint_pcas(pca)
            if model_parts != bodyparts:
                raise SelectionError(f"{pca}: the model predicts {model_parts}, {first.path} has {bodyparts}")
        for kind, fitted in pcas.items():
            if max(fitted.keypoint_indices(), default=-1) >= len(bodyparts):
                raise SelectionError(f"pca {kind}: covers keypoint indices beyond the {len(bodyparts)} body parts")
            criteria[f"{kind}_residual"] = fitted.residual_table(poses.astype(float), len(bodyparts))
            sources[f"{kind}_residual"] = "given" if isinstance(pca, Mapping) else str(pca)
    if reprojection is not None:
        if isinstance(reprojection, np.ndarray):
            error = np.asarray(reprojection, dtype=float)
            if error.shape != (len(first.frames), len(bodyparts)):
                raise SelectionError(
                    f"reprojection: shape {error.shape}, expected ({len(first.frames)}, {len(bodyparts)}) "
                    "(frames, body parts)"
                )
        else:
            if poses is None:
                raise SelectionError(f"{reprojection}: no 2D predictions to compare the reprojection with")
            projected = read(reprojection)
            error = np.hypot(projected.series["x"] - poses[..., 0], projected.series["y"] - poses[..., 1])
        criteria["reprojection"] = error.astype(float)
        sources["reprojection"] = "given" if isinstance(reprojection, np.ndarray) else str(reprojection)
    if measured is not None:
        sources["poses"] = str(measured.path)
    return FrameScores(criteria, list(bodyparts), first.frames, poses, sources)


# ------------------------------------------------------------------------------ export


_FRAME_NUMBER = re.compile(r"img(\d+)\.png")


def _existing_digits(folder: Path) -> int | None:
    """The zero padding the images already in ``folder`` use, when they agree on one."""
    if not folder.is_dir():
        return None
    widths = {len(m.group(1)) for name in os.listdir(folder) if (m := _FRAME_NUMBER.fullmatch(name))}
    return widths.pop() if len(widths) == 1 else None


def export_frames(
    video: PathLike,
    frames: Iterable[int] | Iterable[Suggestion],
    project_root: PathLike,
    *,
    context: int = CONTEXT_FRAMES,
    digits: int | None = None,
    chunk: int = 16,
) -> list[str]:
    """Write each of ``frames`` and its ``context`` frames either side as PNG into
    ``project_root/labeled-data/<video stem>/img<frame>.png``; return the chosen frames' paths
    relative to the project root, in the order given (what a label file's rows name).

    The frame number is zero-padded to ``digits`` (default: the padding the folder's images
    already use, else Lightning Pose's 8). Context frames past the video's ends are left out
    (readers fall back to the nearest frame). A frame outside the video is refused before
    anything is written. An image already there is kept (never overwritten) when it shows the
    frame (same size, on average within a few grey levels of our decode: another extractor's
    copy); one of another size or content is refused, and the images this call wrote are
    removed, so a failure leaves the folder as it was. Frames are decoded ``chunk`` at a time.
    """
    video = Path(video)
    info = video_info(video)
    wanted = list(dict.fromkeys(int(f.frame if isinstance(f, Suggestion) else f) for f in frames))
    for frame in wanted:
        if not 0 <= frame < info.n_frames:
            raise SelectionError(f"{video}: frame {frame} is outside the video (frames 0-{info.n_frames - 1})")
    if context < 0:
        raise SelectionError(f"{video}: context must be >= 0 frames, got {context}")
    stem = check_path_part(video.stem, f"video {video}: its name")
    folder_rel = f"labeled-data/{stem}"
    folder = inside_root(project_root, folder_rel, "labeled-data folder")
    digits = digits or _existing_digits(folder) or FRAME_DIGITS
    to_write = sorted({f + d for f in wanted for d in range(-context, context + 1) if 0 <= f + d < info.n_frames})
    written: list[Path] = []
    try:
        for start in range(0, len(to_write), chunk):
            part = to_write[start : start + chunk]
            for frame, image in zip(part, read_frames(video, part)):
                target = folder / f"img{frame:0{digits}d}.png"
                if target.exists() or target.is_symlink():
                    _check_same(target, image, video, frame)
                    continue
                with atomic_output(target) as tmp:
                    if not cv2.imwrite(str(tmp), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
                        raise SelectionError(f"{target}: OpenCV could not write the PNG")
                written.append(target)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return [f"{folder_rel}/img{frame:0{digits}d}.png" for frame in wanted]


def _check_same(target: Path, image: np.ndarray, video: Path, frame: int) -> None:
    """Refuse an existing ``target`` that is not a picture of ``frame`` (see the tolerance above)."""
    try:
        existing: np.ndarray | None = read_image(target)
    except ElpError:
        existing = None
    if existing is None or existing.shape != image.shape:
        found = "unreadable" if existing is None else f"{existing.shape[1]}x{existing.shape[0]}"
        raise SelectionError(
            f"{target}: exists and is not frame {frame} of {video} ({found}, the video's frames are "
            f"{image.shape[1]}x{image.shape[0]}); it is not overwritten"
        )
    difference = float(np.abs(existing.astype(np.int16) - image.astype(np.int16)).mean())
    if difference > SAME_FRAME_MEAN_DIFFERENCE:
        raise SelectionError(
            f"{target}: exists and differs from frame {frame} of {video} (by {difference:.1f} grey levels "
            "on average: another video's frame?); it is not overwritten"
        )
