"""Calibrated rig geometry as unsupervised losses: differentiable triangulation, reprojection, bones.

With a calibration, multi-view consistency is exact rather than the 3-component subspace of
the multi-view PCA loss. For one instant seen by cameras ``c = 1..C`` (intrinsics ``K_c``,
5-coefficient OpenCV distortion ``d_c``, world -> camera ``R_c, t_c``) and one keypoint
predicted at pixels ``p_c`` with confidence ``w_c``:

1. **Undistort**: ``x_c = undistort(K_c^-1 p_c)`` in normalised image coordinates, by the
   fixed-point iteration ``x <- (x_d - tangential(x)) / radial(x)`` (OpenCV's
   ``undistortPoints``), ten steps: differentiable, and converged for the distortions of lab
   lenses.
2. **Triangulate** by weighted least squares: each camera gives two linear equations in the
   world point ``X``, ``(u_c r3_c - r1_c) X = t1_c - u_c t3_c`` and the same with ``v_c`` and
   ``r2_c`` (``r_i`` the rows of ``R_c``), weighted by ``w_c``; ``X`` solves the 3x3 normal
   equations. Views below ``min_confidence`` get weight 0, so an occluded view does not pull
   the point; an instant needs two weighted views.
3. **Reproject** ``X`` into every camera (:func:`project`) and take the pixel distance to
   ``p_c``. The loss is ``relu(error - epsilon)`` averaged over every view of the valid
   instants, the unweighted views included: a view whose prediction disagrees with the others
   is pulled to where they place the keypoint, and the gradient also reaches the views that
   triangulated it (through ``X``).

The limb-length loss uses the same triangulated points: for each bone ``(i, j)`` with length
``L_ij`` fitted on the triangulated training labels, ``relu(| |X_i - X_j| - L_ij | -
epsilon_ij)`` (Deep Graph Pose's spatial potential; the distance prior of the 3D models).

:func:`fit_rig_geometry` turns the calibration and the training labels into a
:class:`RigGeometry`: the cameras in view order, the reprojection epsilon (the 95th percentile
of the labels' own reprojection errors, at least 1 px), the bones (given, or the spanning tree
of keypoint pairs whose label distances vary least) with their median lengths and epsilons.
It travels in the checkpoint's hyper-parameters, so a model reloads without the file.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from element_lightning_pose.engine.config import ConfigError, LossesConfig
from element_lightning_pose.engine.multicam.cameras import read_calibration
from element_lightning_pose.engine.training.pca import resolve_keypoints
from element_lightning_pose.engine.types import PathLike

UNDISTORT_ITERATIONS = 10


@dataclass
class RigGeometry:
    """The calibrated cameras of a multi-view model (in view order) and the fitted loss scales."""

    camera_names: list[str]
    matrix: np.ndarray  # (C, 3, 3)
    distortion: np.ndarray  # (C, 5) k1 k2 p1 p2 k3
    rotation: np.ndarray  # (C, 3, 3) world -> camera
    translation: np.ndarray  # (C, 3)
    reprojection_epsilon: float
    bones: list[tuple[int, int]]
    bone_lengths: np.ndarray  # (B,) calibration units
    bone_epsilons: np.ndarray  # (B,)

    def to_dict(self) -> dict[str, Any]:
        return {
            "camera_names": list(self.camera_names),
            "matrix": self.matrix.tolist(),
            "distortion": self.distortion.tolist(),
            "rotation": self.rotation.tolist(),
            "translation": self.translation.tolist(),
            "reprojection_epsilon": float(self.reprojection_epsilon),
            "bones": [list(b) for b in self.bones],
            "bone_lengths": self.bone_lengths.tolist(),
            "bone_epsilons": self.bone_epsilons.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RigGeometry:
        return cls(
            list(data["camera_names"]),
            np.asarray(data["matrix"], dtype=float),
            np.asarray(data["distortion"], dtype=float),
            np.asarray(data["rotation"], dtype=float),
            np.asarray(data["translation"], dtype=float),
            float(data["reprojection_epsilon"]),
            [(int(i), int(j)) for i, j in data["bones"]],
            np.asarray(data["bone_lengths"], dtype=float).reshape(-1),
            np.asarray(data["bone_epsilons"], dtype=float).reshape(-1),
        )

    def tensors(self, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(matrix, distortion, rotation, translation) as tensors of ``like``'s dtype and device."""
        return tuple(
            torch.as_tensor(a, dtype=like.dtype, device=like.device)
            for a in (self.matrix, self.distortion, self.rotation, self.translation)
        )


# ------------------------------------------------------------------------------ differentiable maths


def _distortion_terms(xy: torch.Tensor, dist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(radial factor (..., 1), tangential offset (..., 2)) of normalised points ``xy``."""
    k1, k2, p1, p2, k3 = (dist[..., i, None] for i in range(5))
    x, y = xy[..., 0:1], xy[..., 1:2]
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    tangential = torch.cat([2 * p1 * x * y + p2 * (r2 + 2 * x * x), p1 * (r2 + 2 * y * y) + 2 * p2 * x * y], -1)
    return radial, tangential


def undistort(pixels: torch.Tensor, matrix: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Normalised undistorted coordinates (C, N, 2) of ``pixels`` (C, N, 2) per camera."""
    fx, fy = matrix[:, 0, 0, None], matrix[:, 1, 1, None]
    cx, cy, skew = matrix[:, 0, 2, None], matrix[:, 1, 2, None], matrix[:, 0, 1, None]
    yd = (pixels[..., 1] - cy) / fy
    xd = (pixels[..., 0] - cx - skew * yd) / fx
    distorted = torch.stack([xd, yd], -1)
    dist = dist[:, None, :]
    xy = distorted
    for _ in range(UNDISTORT_ITERATIONS):
        radial, tangential = _distortion_terms(xy, dist)
        xy = (distorted - tangential) / radial
    return xy


def project(
    points: torch.Tensor, matrix: torch.Tensor, dist: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor
) -> torch.Tensor:
    """Pixels (C, N, 2) of world ``points`` (N, 3) in each camera (OpenCV's pinhole model)."""
    camera = torch.einsum("cij,nj->cni", rotation, points) + translation[:, None, :]
    depth = camera[..., 2:3].clamp_min(1e-6)  # a point behind a camera: no division by zero
    xy = camera[..., :2] / depth
    radial, tangential = _distortion_terms(xy, dist[:, None, :])
    xy = xy * radial + tangential
    x = (
        matrix[:, None, 0, 0, None] * xy[..., 0:1]
        + matrix[:, None, 0, 1, None] * xy[..., 1:2]
        + matrix[:, None, 0, 2, None]
    )
    y = matrix[:, None, 1, 1, None] * xy[..., 1:2] + matrix[:, None, 1, 2, None]
    return torch.cat([x, y], -1)


def triangulate(
    normalised: torch.Tensor, weights: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted least-squares world points (N, 3) from normalised points (C, N, 2), weights (C, N).

    Returns the points and a (N,) mask of those seen by at least two weighted cameras (the
    others are solved with a small ridge so the batch stays finite, and must be ignored).
    """
    u, v = normalised[..., 0:1], normalised[..., 1:2]  # (C, N, 1)
    r1, r2, r3 = (rotation[:, None, i, :] for i in range(3))  # (C, 1, 3)
    t1, t2, t3 = (translation[:, None, i, None] for i in range(3))  # (C, 1, 1)
    rows = torch.stack([u * r3 - r1, v * r3 - r2], dim=2)  # (C, N, 2, 3)
    rhs = torch.stack([t1 - u * t3, t2 - v * t3], dim=2)  # (C, N, 2, 1)
    w = weights[..., None, None]
    normal = (w * rows.transpose(-1, -2) @ rows).sum(0)  # (N, 3, 3)
    target = (w * rows.transpose(-1, -2) @ rhs).sum(0)  # (N, 3, 1)
    valid = (weights > 0).sum(0) >= 2
    ridge = torch.where(valid, 0.0, 1.0).to(normal.dtype)[:, None, None] * torch.eye(
        3, dtype=normal.dtype, device=normal.device
    )
    points = torch.linalg.solve(normal + ridge, target)[..., 0]
    return points, valid


def triangulate_views(
    pixels: torch.Tensor, confidence: torch.Tensor, geometry: RigGeometry, min_confidence: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triangulate per-camera predictions ``pixels`` (C, N, 2) with ``confidence`` (C, N).

    Returns world points (N, 3), their validity (N,: two weighted views, in front of every
    camera), and the reprojection error (C, N) in pixels, capped at the image diagonal.
    """
    matrix, dist, rotation, translation = geometry.tensors(pixels)
    weights = torch.where(confidence.detach() >= min_confidence, confidence.detach(), torch.zeros_like(confidence))
    points, valid = triangulate(undistort(pixels, matrix, dist), weights, rotation, translation)
    depth = torch.einsum("cij,nj->cni", rotation, points.detach())[..., 2] + translation[:, None, 2]
    valid = valid & (depth > 0).all(0)  # behind a camera: two confident views that disagree absurdly
    error = torch.linalg.norm(project(points, matrix, dist, rotation, translation) - pixels, dim=-1)
    # an error beyond the image diagonal is a wrong triangulation, not a view to pull: no gradient
    diagonal = 2 * torch.linalg.norm(matrix[:, :2, 2], dim=-1)[:, None]
    return points, valid, torch.minimum(error, diagonal)


# ------------------------------------------------------------------------------ the losses


def reprojection_loss(error: torch.Tensor, valid: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Mean ``relu(error - epsilon)`` over every camera of the valid points (error (C, N))."""
    excess = torch.relu(error - epsilon)
    if not valid.any():
        return excess.sum() * 0.0
    return excess[:, valid].mean()


def limb_length_loss(points: torch.Tensor, valid: torch.Tensor, geometry: RigGeometry) -> torch.Tensor:
    """Mean ``relu(| |X_i - X_j| - L_ij | - eps_ij)`` over bones with both ends valid.

    ``points`` (T, K, 3) and ``valid`` (T, K) from :func:`triangulate_views` reshaped per frame.
    """
    if not geometry.bones:
        return points.sum() * 0.0
    i, j = (torch.as_tensor([b[k] for b in geometry.bones], device=points.device) for k in (0, 1))
    lengths = torch.linalg.norm(points[:, i] - points[:, j], dim=-1)  # (T, B)
    target = torch.as_tensor(geometry.bone_lengths, dtype=points.dtype, device=points.device)
    epsilon = torch.as_tensor(geometry.bone_epsilons, dtype=points.dtype, device=points.device)
    excess = torch.relu((lengths - target).abs() - epsilon)
    both = valid[:, i] & valid[:, j]
    if not both.any():
        return excess.sum() * 0.0
    return excess[both].mean()


# ------------------------------------------------------------------------------ fitting on the labels


def rig_cameras(calibration: PathLike, view_names: Sequence[str], camera_names: Mapping[str, str]):
    """The calibration's cameras in view order (``camera_names`` maps a view to its camera)."""
    group = read_calibration(calibration)
    wanted = [camera_names.get(view, view) for view in view_names]
    missing = [f"view {view!r} (camera {name!r})" for view, name in zip(view_names, wanted) if name not in group.names]
    if missing:
        raise ConfigError(
            f"losses.calibration: {calibration} has cameras {group.names}, none for {', '.join(missing)}; "
            "name the camera of each view in losses.camera_names"
        )
    cameras = [group[name] for name in wanted]
    fisheye = [c.name for c in cameras if c.fisheye]
    if fisheye:
        raise ConfigError(
            f"losses.calibration: the reprojection loss supports pinhole cameras only; {fisheye} are fisheye"
        )
    return cameras


def resolve_calibration(losses: LossesConfig, project_root: PathLike) -> Path:
    """The calibration file named by ``losses.calibration`` (relative to the project folder)."""
    assert losses.calibration is not None
    path = Path(losses.calibration)
    path = path if path.is_absolute() else Path(project_root) / path
    if not path.is_file():
        raise ConfigError(f"losses.calibration: {path} not found")
    return path


def bone_tree(distances: np.ndarray, *, robust: bool = False) -> list[tuple[int, int]]:
    """Spanning tree (Prim) of the keypoint pairs with the lowest coefficient of variation of
    their distance over the labeled frames (F, K, K); pairs seen in under 3 frames are skipped.

    ``robust``: the coefficient of variation is 1.4826 MAD / median instead of sd / mean, so a
    few wrong labels do not push a true bone out of the tree (the label checks want that; the
    losses fit on labels already trusted).
    """
    n_seen = np.isfinite(distances).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pairs: their cv is dropped below
        if robust:
            centre = np.nanmedian(distances, 0)
            cv = 1.4826 * np.nanmedian(np.abs(distances - centre), 0) / centre
        else:
            cv = np.nanstd(distances, 0) / np.nanmean(distances, 0)
    cv = np.where((n_seen >= 3) & np.isfinite(cv), cv, np.inf)
    k = distances.shape[1]
    in_tree, bones = {0}, []
    while len(in_tree) < k:
        best = min(((cv[a, b], a, b) for a in in_tree for b in range(k) if b not in in_tree), default=None)
        if best is None or not np.isfinite(best[0]):
            break  # the rest never appear with the tree's keypoints: no bone to them
        bones.append((min(best[1], best[2]), max(best[1], best[2])))
        in_tree.add(best[2])
    return bones


def fit_rig_geometry(
    calibration: PathLike,
    view_names: Sequence[str],
    keypoints: np.ndarray,
    bodyparts: Sequence[str],
    losses: LossesConfig,
) -> RigGeometry:
    """Cameras, reprojection epsilon and bones from the calibration and the training labels.

    ``keypoints`` (C, F, K, 2): the same F labeled instants in each of the C views, original
    pixels, NaN where unlabeled.
    """
    cameras = rig_cameras(calibration, view_names, losses.camera_names)
    geometry = RigGeometry(
        [c.name for c in cameras],
        np.stack([c.matrix for c in cameras]),
        np.stack([np.asarray(c.distortion, dtype=float)[:5] for c in cameras]),
        np.stack([c.rotation for c in cameras]),
        np.stack([c.translation for c in cameras]),
        1.0,
        [],
        np.zeros(0),
        np.zeros(0),
    )
    n_views, n_frames, n_kp = keypoints.shape[:3]
    pixels = torch.as_tensor(np.nan_to_num(keypoints.reshape(n_views, -1, 2)), dtype=torch.float64)
    labeled = torch.as_tensor(np.isfinite(keypoints[..., 0]).reshape(n_views, -1), dtype=torch.float64)
    with torch.no_grad():
        points, valid, error = triangulate_views(pixels, labeled, geometry, 0.5)
    seen = (labeled > 0) & valid[None]
    errors = error[seen].numpy()
    if losses.reprojection_epsilon is not None:
        geometry.reprojection_epsilon = float(losses.reprojection_epsilon)
    elif errors.size:
        geometry.reprojection_epsilon = max(1.0, float(np.percentile(errors, 95)))
    points3d = np.where(valid.numpy()[:, None], points.numpy(), np.nan).reshape(n_frames, n_kp, 3)
    distances = np.linalg.norm(points3d[:, :, None] - points3d[:, None, :], axis=-1)  # (F, K, K)
    if losses.limb_bones:
        bones = []
        for a, b in losses.limb_bones:
            i, j = resolve_keypoints([a, b], bodyparts, "limb_bones")
            bones.append((i, j))
    else:
        bones = bone_tree(distances)
    lengths, epsilons = [], []
    for i, j in bones:
        d = distances[:, i, j][np.isfinite(distances[:, i, j])]
        if d.size < 2:
            raise ConfigError(
                f"losses.limb_bones: {bodyparts[i]}-{bodyparts[j]} is triangulated in {d.size} training label(s); "
                "a bone's length needs both ends labeled in two views of at least 2 frames"
            )
        length = float(np.median(d))
        deviation = float(np.percentile(np.abs(d - length), 95))
        lengths.append(length)
        epsilons.append(
            losses.limb_length_epsilon if losses.limb_length_epsilon is not None else max(deviation, 0.02 * length)
        )
    geometry.bones = bones
    geometry.bone_lengths = np.array(lengths, dtype=float)
    geometry.bone_epsilons = np.array(epsilons, dtype=float)
    return geometry
