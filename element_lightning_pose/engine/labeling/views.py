"""Labeling one instant seen by calibrated cameras: points projected from the other views,
each view's disagreement, and the epipolar curve of a point.

- :func:`project_from_views` triangulates every body part labeled in at least two views (the
  robust method, :func:`element_lightning_pose.engine.multicam.triangulate.triangulate_robust`) and projects it
  into every view: where a view's label is missing it is a suggestion, where it is present the
  distance is that view's **residual** (a large one marks the view that disagrees).
- :func:`epipolar_curve` is where a point labeled in one view can lie in another: the ray
  through it, sampled in depth and projected, so the camera's distortion bends it as it bends
  the image (a straight line would be wrong off the image's centre).

Views are named as the calibration names its cameras. Pixels follow the engine's convention
(0 = centre of the first pixel), as OpenCV's projection does.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.multicam.cameras import CameraGroup
from element_lightning_pose.engine.multicam.triangulate import triangulate_robust

EPIPOLAR_SAMPLES = 64


@dataclass
class ViewAgreement:
    """What the calibrated views say about one instant's labels.

    Attributes:
        projected: view -> (K, 2) each body part's triangulation projected into the view (NaN
            where fewer than two other labels place it).
        residual: view -> (K,) distance in pixels between the view's label and the projection
            of the body part triangulated from every labeled view (NaN without both).
    """

    projected: dict[str, np.ndarray]
    residual: dict[str, np.ndarray]


def _pixels(group: CameraGroup, labels: Mapping[str, np.ndarray], n_bodyparts: int) -> np.ndarray:
    """(C, K, 2) labels in the calibration's camera order, NaN for views not given."""
    unknown = sorted(set(labels) - set(group.names))
    if unknown:
        raise ProjectError(f"views {unknown} are not cameras of the calibration ({group.names})")
    pixels = np.full((len(group), n_bodyparts, 2), np.nan)
    for c, name in enumerate(group.names):
        if name in labels:
            values = np.asarray(labels[name], dtype=float)
            if values.shape != (n_bodyparts, 2):
                raise ProjectError(f"view {name!r}: labels of shape {values.shape}, expected ({n_bodyparts}, 2)")
            pixels[c] = values
    return pixels


def project_from_views(group: CameraGroup, labels: Mapping[str, np.ndarray]) -> ViewAgreement:
    """Each view's projection of the body parts triangulated from the labeled views, and each
    labeled view's residual. ``labels``: view -> (K, 2) labels, NaN where not labeled.

    The triangulation is the robust one (the best camera pair, then Student-t weights), so one
    view that disagrees does not pull the point the others agree on, and its own residual is
    what stands out. With two labeled views, both carry half of a disagreement: nothing can say
    which one is wrong.
    """
    n = len(next(iter(labels.values()))) if labels else 0
    pixels = _pixels(group, labels, n)
    labeled = np.isfinite(pixels).all(axis=-1)  # (C, K)
    with warnings.catch_warnings():
        # a body part labeled in one view only is not placed: that is the point of labeling more
        warnings.simplefilter("ignore", RuntimeWarning)
        point = triangulate_robust(group, pixels, labeled.astype(float)).points  # (K, 3)
    placed = np.isfinite(point).all(axis=-1) & (labeled.sum(axis=0) >= 2)
    projected, residual = {}, {}
    for c, name in enumerate(group.names):
        view = np.full((n, 2), np.nan)
        if placed.any():
            view[placed] = group.cameras[c].project(point[placed])
        projected[name] = view
        residual[name] = np.where(labeled[c], np.linalg.norm(view - pixels[c], axis=-1), np.nan)
    return ViewAgreement(projected, residual)


def epipolar_curve(
    group: CameraGroup,
    from_view: str,
    point: Sequence[float],
    to_view: str,
    *,
    depth_range: tuple[float, float] | None = None,
    samples: int = EPIPOLAR_SAMPLES,
) -> np.ndarray:
    """Pixels (S, 2) in ``to_view`` of the ray through ``point`` (x, y) of ``from_view``, over
    ``depth_range`` (calibration units along the ray; default: from a tenth to ten times the
    distance between the two cameras), kept where they lie in front of ``to_view``."""
    if from_view == to_view:
        raise ProjectError(f"the epipolar curve of a view in itself ({from_view!r}) is the point")
    source, target = group[from_view], group[to_view]
    xy = source.undistort(np.asarray(point, dtype=float)[None])[0]
    direction_camera = np.array([xy[0], xy[1], 1.0])
    direction = source.rotation.T @ (direction_camera / np.linalg.norm(direction_camera))
    baseline = float(np.linalg.norm(source.centre - target.centre)) or 1.0
    near, far = depth_range if depth_range is not None else (0.1 * baseline, 10.0 * baseline)
    if not 0 < near < far:
        raise ProjectError(f"depth range ({near}, {far}): expected 0 < near < far")
    depths = np.geomspace(near, far, samples)
    points = source.centre + depths[:, None] * direction
    in_front = target.to_camera(points)[:, 2] > 0
    return target.project(points[in_front]) if in_front.any() else np.empty((0, 2))
