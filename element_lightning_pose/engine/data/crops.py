"""Crop geometry of the two-stage crop-zoom model: boxes around the animal, their affine maps, centres.

A crop is an integer pixel box (``x0, y0`` = its first pixel, padded with zeros where it
leaves the frame); :func:`crop_matrix` maps original pixels to crop-input pixels with the
pixel-centre convention of the rest of the engine (0 = centre of the first pixel). Training
(:mod:`element_lightning_pose.engine.training.crop_zoom`) cuts its label-centred crops and
inference (:mod:`element_lightning_pose.engine.inference.models`) its detection-centred crops with
the same :func:`crop_frames`, so both see identically resampled pixels.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from element_lightning_pose.engine.data.video import resize_frame
from element_lightning_pose.engine.errors import ProjectError


def crop_origin(centre: np.ndarray, crop_size: tuple[int, int]) -> np.ndarray:
    """Integer first pixel (x0, y0) of the ``crop_size`` (h, w) box centred on ``centre`` (..., 2).

    A box of w pixels starting at x0 has its centre at x0 + (w - 1) / 2; the origin is the
    nearest integer to that (so a crop is a plain slice of the frame, no resampling).
    """
    h, w = crop_size
    half = np.array([(w - 1) / 2, (h - 1) / 2])
    return np.floor(np.asarray(centre, dtype=np.float64) - half + 0.5).astype(np.int64)


def crop_scale(crop_size: tuple[int, int], input_size: tuple[int, int]) -> tuple[float, float]:
    """Crop-input pixels per original pixel, (x, y), of a crop of ``crop_size`` (h, w) resized to ``input_size`` (h, w)."""
    return input_size[1] / crop_size[1], input_size[0] / crop_size[0]


def crop_matrix(origin: np.ndarray, crop_size: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """2x3 affine matrix original pixels -> crop-input pixels, for crops at ``origin`` (x0, y0).

    ``origin`` may be (2,) or (B, 2) (then (B, 2, 3)); the crop of ``crop_size`` (h, w) is
    resized to ``input_size`` (h, w): u = (x - x0 + 0.5) * in_w / crop_w - 0.5.
    """
    origin = np.asarray(origin, dtype=np.float64)
    sx, sy = crop_scale(crop_size, input_size)
    matrix = np.zeros((*origin.shape[:-1], 2, 3))
    matrix[..., 0, 0], matrix[..., 1, 1] = sx, sy
    matrix[..., 0, 2] = (0.5 - origin[..., 0]) * sx - 0.5
    matrix[..., 1, 2] = (0.5 - origin[..., 1]) * sy - 0.5
    return matrix


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The inverse of 2x3 affine matrices (..., 2, 3)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    linear = np.linalg.inv(matrix[..., :2])
    shift = -np.einsum("...ij,...j->...i", linear, matrix[..., 2])
    return np.concatenate([linear, shift[..., None]], axis=-1)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (B, K, 2) moved by per-frame matrices (B, 2, 3) (or one (2, 3) for all)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    if matrix.ndim == 2:
        return points @ matrix[:, :2].T + matrix[:, 2]
    return np.einsum("bij,bkj->bki", matrix[:, :, :2], points) + matrix[:, None, :, 2]


def extract_crop(frame: np.ndarray, origin: np.ndarray, crop_size: tuple[int, int]) -> np.ndarray:
    """The ``crop_size`` (h, w) box of ``frame`` starting at pixel ``origin`` (x0, y0); zeros outside."""
    h, w = crop_size
    x0, y0 = int(origin[0]), int(origin[1])
    out = np.zeros((h, w, *frame.shape[2:]), dtype=frame.dtype)
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + w, frame.shape[1]), min(y0 + h, frame.shape[0])
    if fx1 > fx0 and fy1 > fy0:
        out[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0] = frame[fy0:fy1, fx0:fx1]
    return out


def crop_frames(
    frames: np.ndarray, centres: np.ndarray, crop_size: tuple[int, int], input_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Crops (B, in_h, in_w, 3) of ``frames`` (B, H, W, 3) centred on ``centres`` (B, 2), and
    their matrices (B, 2, 3) original -> crop-input pixels.

    Each crop is a slice (zero-padded at the frame's edges) resized with
    :func:`video.resize_frame`, the resampling the single-stage models use.
    """
    origins = crop_origin(centres, crop_size)
    crops = np.stack([resize_frame(extract_crop(f, o, crop_size), input_size) for f, o in zip(frames, origins)])
    return crops, crop_matrix(origins, crop_size, input_size)


def label_centres(keypoints: np.ndarray) -> np.ndarray:
    """The animal's centre of each frame (N, 2): the mean of its labeled keypoints (NaN if none)."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    labeled = np.isfinite(keypoints).all(axis=-1)
    counts = labeled.sum(axis=1)
    sums = np.where(labeled[..., None], keypoints, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts[:, None] > 0, sums / counts[:, None], np.nan)


def crop_size_from_labels(
    keypoints: np.ndarray, frame_size: tuple[int, int], margin: float, minimum: int = 16
) -> tuple[int, int]:
    """Square crop (side, side): the largest extent of the labeled animal times (1 + 2 margin).

    The side is rounded up to an even number, at least ``minimum`` and at most the frame's
    shorter side. ``keypoints`` (N, K, 2) are the training frames' labels in original pixels.
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    labeled = np.isfinite(keypoints).all(axis=-1)
    extents = []
    for frame, ok in zip(keypoints, labeled):
        if ok.any():
            points = frame[ok]
            extents.append(float((points.max(axis=0) - points.min(axis=0)).max()))
    if not extents:
        raise ProjectError("crop_zoom: no labeled keypoints in the training frames to size the crop from")
    side = math.ceil(max(extents) * (1 + 2 * margin))
    side = max(side + side % 2, minimum)
    side = min(side, min(frame_size))
    return side, side


def centres_from_detections(detections: np.ndarray, min_confidence: float) -> np.ndarray:
    """The animal's centre (B, 2) from detector outputs (B, K, 3) in original pixels; NaN = a miss.

    One keypoint (the ``centre`` detector): its position when its confidence reaches
    ``min_confidence``. Several (``detector_target: keypoints``): the confidence-weighted mean
    of the keypoints that reach it; a miss when none does.
    """
    detections = np.asarray(detections, dtype=np.float64)
    confidence = detections[..., 2]
    confident = confidence >= min_confidence
    weights = np.where(confident, np.maximum(confidence, 1e-6), 0.0)
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        centres = (weights[..., None] * np.nan_to_num(detections[..., :2])).sum(axis=1) / total[:, None]
    centres[~(total > 0)] = np.nan
    return centres


def smooth_centres(centres: np.ndarray, window: int, *, fill_misses: bool = False) -> np.ndarray:
    """Running median (centred, ``window`` frames) of detected centres (T, 2); NaN = a miss.

    Misses are left out of their neighbours' medians; the window is cut at the ends of the
    sequence. A miss stays a miss, unless ``fill_misses``: then it takes the median of the
    detections in its window (still NaN when the window holds none).
    """
    centres = np.asarray(centres, dtype=np.float64)
    if window <= 1 or len(centres) == 0:
        return centres.copy()
    half = window // 2
    padded = np.pad(centres, ((half, half), (0, 0)), constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1, axis=0)  # (T, 2, w)
    missed = ~np.isfinite(centres).all(axis=1)
    out = np.full_like(centres, np.nan)
    computed = np.isfinite(windows).all(axis=1).any(axis=-1) & (fill_misses | ~missed)
    if computed.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out[computed] = np.nanmedian(windows[computed], axis=-1)
    return out


def crop_centres(detections: np.ndarray, min_confidence: float, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Where to crop each of T consecutive frames, from the detector's outputs (T, K, 3) in original pixels.

    Returns the centres (T, 2), always finite, and ``weak`` (T,): the frames without a
    confident detection (:func:`centres_from_detections`) anywhere in their ``window``. A frame
    with one takes the running median of the confident detections around it (its own, or its
    neighbours' when its own is below ``min_confidence``); a weak frame takes its detector's
    best guess (the peak, or the confidence-weighted mean of every keypoint, however faint).
    An undertrained detector's peaks are mostly right while its confidence is low: cropping
    there gives the pose network its chance, where a miss would give the frame no pose at all.
    """
    detections = np.asarray(detections, dtype=np.float64)
    centres = smooth_centres(centres_from_detections(detections, min_confidence), window, fill_misses=True)
    weak = ~np.isfinite(centres).all(axis=1)
    if weak.any():
        centres[weak] = centres_from_detections(detections[weak], 0.0)
    return centres, weak
