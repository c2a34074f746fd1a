"""Calibrate a camera rig from board detections: intrinsics, extrinsics, bundle adjustment.

1. **Intrinsics** per camera: ``cv2.calibrateCamera`` on the frames where the camera sees at
   least ``min_corners`` corners (5 coefficients, ``k3`` fixed at 0: a few board views cannot
   tell it from ``k1``/``k2``). It also gives the board's pose in each of those frames.
2. **Extrinsics**: camera 0 is the world frame. For every pair of cameras, each frame both see
   gives their relative pose ``T_j T_i^-1``; the pair's pose is the median over those frames
   (rotation vectors and translations). Cameras are chained from camera 0 along the pairs
   with the most shared frames (a maximum spanning tree). A camera that shares no frame with
   the others, directly or through other cameras, is refused with a message naming it.
3. **Bundle adjustment**: ``scipy.optimize.least_squares`` over every camera's intrinsics
   (``fx, fy, cx, cy, k1, k2, p1, p2``), the poses of cameras 1.. and every board pose, on the
   pixel residuals of all detected corners (least squares: sub-pixel corners have no outliers), with the sparse Jacobian
   structure given (a residual depends on its camera and its frame only).

The result is a :class:`~.cameras.CameraGroup` plus the reprojection error per camera (px,
the mean distance over its corners). Two cameras closer together than ``MIN_BASELINE_SHARE``
of the board's longest side get a :class:`ShortBaselineWarning`: rays from (nearly) one place
cannot triangulate.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from itertools import combinations

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares
from scipy.sparse import lil_matrix

from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.multicam.boards import Board, Detection
from element_lightning_pose.engine.multicam.cameras import (
    Camera,
    CameraGroup,
    _distort,
    matrix_to_rodrigues,
    rodrigues_to_matrix,
)

Array = NDArray[np.float64]
_N_INTRINSIC = 8  # fx fy cx cy k1 k2 p1 p2
# A baseline below this share of the board's longest side is warned about.
MIN_BASELINE_SHARE = 0.1


class CalibrationFailed(ElpError):
    """The board views cannot calibrate the rig; the message names the camera and why."""


class ShortBaselineWarning(UserWarning):
    """Two calibrated cameras (nearly) share a centre: one video given twice, or a rig too narrow."""


def short_baselines(group: CameraGroup, board: Board) -> list[str]:
    """A line for each pair of cameras closer than ``MIN_BASELINE_SHARE`` of the board's longest side."""
    board_size = max(board.board_x, board.board_y) * board.square_length
    lines = []
    for a, b in combinations(group.cameras, 2):
        distance = float(np.linalg.norm(a.centre - b.centre))
        if distance < MIN_BASELINE_SHARE * board_size:
            lines.append(
                f"cameras {a.name!r} and {b.name!r} are {distance:.3g} apart, under {MIN_BASELINE_SHARE:.0%} of "
                f"the board's {board_size:g}: the same video twice, or cameras too close together to triangulate"
            )
    return lines


@dataclass
class CalibrationResult:
    """``group``: the calibrated cameras; ``errors``: (C,) mean reprojection error per camera
    (px) after bundle adjustment; ``initial_errors``: the same before it; ``n_frames``: (C,)
    board views used per camera."""

    group: CameraGroup
    errors: Array
    initial_errors: Array
    n_frames: NDArray[np.int64]


@dataclass
class _Observations:
    camera: NDArray[np.int64]  # (N,) per corner observation
    frame: NDArray[np.int64]  # index into the board-pose list
    corner: NDArray[np.int64]
    pixels: Array  # (N, 2)


def _intrinsics(
    board: Board, detections: list[Detection], size: tuple[int, int], name: str, min_corners: int
) -> tuple[Array, Array, dict[int, tuple[Array, Array]]]:
    objects = board.object_points()
    used = [d for d in detections if len(d.ids) >= min_corners]
    if len(used) < 3:
        raise CalibrationFailed(
            f"camera {name!r}: the board is found in {len(used)} frame(s) with >= "
            f"{min_corners} corners; at least 3 are needed for its intrinsics"
        )
    obj = [objects[d.ids].astype(np.float32) for d in used]
    img = [d.corners.astype(np.float32) for d in used]
    _, matrix, dist, rvecs, tvecs = cv2.calibrateCamera(
        obj, img, size, None, None, flags=cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST
    )
    poses = {
        d.frame: (rodrigues_to_matrix(np.ravel(r)), np.ravel(t).astype(float)) for d, r, t in zip(used, rvecs, tvecs)
    }
    return np.asarray(matrix, float), np.ravel(dist)[:5].astype(float), poses


def _relative_poses(poses: list[dict[int, tuple[Array, Array]]]) -> dict[tuple[int, int], tuple[Array, Array, int]]:
    """For each camera pair sharing frames: median pose of j relative to i, and the count."""
    out = {}
    for i in range(len(poses)):
        for j in range(len(poses)):
            shared = sorted(set(poses[i]) & set(poses[j]))
            if i == j or not shared:
                continue
            rel_r, rel_t = [], []
            for f in shared:
                (ri, ti), (rj, tj) = poses[i][f], poses[j][f]
                r = rj @ ri.T  # X_j = R_j R_i^T (X_i - t_i) + t_j
                rel_r.append(matrix_to_rodrigues(r))
                rel_t.append(tj - r @ ti)
            out[(i, j)] = (rodrigues_to_matrix(np.median(rel_r, axis=0)), np.median(rel_t, axis=0), len(shared))
    return out


def _chain(names: list[str], relative: dict[tuple[int, int], tuple[Array, Array, int]]) -> list[tuple[Array, Array]]:
    """World (camera 0) -> camera poses along a maximum spanning tree of shared frames."""
    pose: dict[int, tuple[Array, Array]] = {0: (np.eye(3), np.zeros(3))}
    while len(pose) < len(names):
        candidates = [(n, i, j) for (i, j), (_, _, n) in relative.items() if i in pose and j not in pose]
        if not candidates:
            lonely = [names[c] for c in range(len(names)) if c not in pose]
            raise CalibrationFailed(
                f"camera(s) {lonely} never share a board view with {[names[c] for c in pose]}"
                " (not even through other cameras): record frames where both see the board"
            )
        _, i, j = max(candidates)
        r_ij, t_ij, _ = relative[(i, j)]
        r_i, t_i = pose[i]
        pose[j] = (r_ij @ r_i, r_ij @ t_i + t_ij)
    return [pose[c] for c in range(len(names))]


def _project(params: Array, obs: _Observations, objects: Array, n_cams: int, n_frames: int) -> Array:
    """Pixels (N, 2) of every observation under the packed parameters."""
    intr = params[: n_cams * _N_INTRINSIC].reshape(n_cams, _N_INTRINSIC)
    ext = np.concatenate(
        [np.zeros((1, 6)), params[n_cams * _N_INTRINSIC : n_cams * (_N_INTRINSIC + 6) - 6].reshape(n_cams - 1, 6)]
    )
    boards = params[n_cams * (_N_INTRINSIC + 6) - 6 :].reshape(n_frames, 6)
    r_board = rodrigues_to_matrix(boards[:, :3])[obs.frame]
    world = np.einsum("nij,nj->ni", r_board, objects[obs.corner]) + boards[obs.frame, 3:]
    r_cam = rodrigues_to_matrix(ext[:, :3])[obs.camera]
    xc = np.einsum("nij,nj->ni", r_cam, world) + ext[obs.camera, 3:]
    xy = xc[:, :2] / xc[:, 2:]
    k = intr[obs.camera]
    dist = np.stack([k[:, 4], k[:, 5], k[:, 6], k[:, 7], np.zeros(len(k))])  # (5, N) broadcasts per point
    xd = _distort(xy, dist)
    return np.stack([k[:, 0] * xd[:, 0] + k[:, 2], k[:, 1] * xd[:, 1] + k[:, 3]], -1)


def _sparsity(obs: _Observations, n_cams: int, n_frames: int) -> lil_matrix:
    n_params = n_cams * (_N_INTRINSIC + 6) - 6 + 6 * n_frames
    structure = lil_matrix((2 * len(obs.camera), n_params), dtype=int)
    rows = np.arange(len(obs.camera))
    for axis in range(2):
        r = 2 * rows + axis
        for p in range(_N_INTRINSIC):
            structure[r, obs.camera * _N_INTRINSIC + p] = 1
        moving = obs.camera > 0
        for p in range(6):
            structure[r[moving], n_cams * _N_INTRINSIC + (obs.camera[moving] - 1) * 6 + p] = 1
            structure[r, n_cams * (_N_INTRINSIC + 6) - 6 + obs.frame * 6 + p] = 1
    return structure


def _per_camera_error(residuals: Array, obs: _Observations, n_cams: int) -> Array:
    distance = np.linalg.norm(residuals.reshape(-1, 2), axis=-1)
    return np.array([distance[obs.camera == c].mean() if np.any(obs.camera == c) else np.nan for c in range(n_cams)])


def calibrate(
    board: Board,
    detections: dict[str, list[Detection]],
    sizes: dict[str, tuple[int, int]],
    min_corners: int = 6,
    max_evaluations: int = 60,
    tangential: bool = True,
) -> CalibrationResult:
    """Calibrate the cameras ``detections`` names (in that order) from their board detections.

    ``tangential=False`` fixes the tangential coefficients ``p1, p2`` at 0 (on the
    benchmark's rendered rig fitting them gives the better camera centres).
    """
    min_corners = board.check_min_corners(min_corners)
    names = list(detections)
    objects = board.object_points()
    intrinsics, poses = [], []
    for name in names:
        matrix, dist, frame_poses = _intrinsics(board, detections[name], sizes[name], name, min_corners)
        intrinsics.append((matrix, dist))
        poses.append(frame_poses)
    chain = _chain(names, _relative_poses(poses))
    frames = sorted(set().union(*[set(p) for p in poses]))
    frame_index = {f: i for i, f in enumerate(frames)}
    board_params = np.zeros((len(frames), 6))
    for f in frames:  # the board in world coordinates, from the camera that sees most corners
        best = max(
            (c for c in range(len(names)) if f in poses[c]),
            key=lambda c: next(len(d.ids) for d in detections[names[c]] if d.frame == f),
        )
        r_cb, t_cb = poses[best][f]
        r_c, t_c = chain[best]
        board_params[frame_index[f]] = np.concatenate([matrix_to_rodrigues(r_c.T @ r_cb), r_c.T @ (t_cb - t_c)])
    cams, fr, corners, pixels = [], [], [], []
    for c, name in enumerate(names):
        for d in detections[name]:
            if d.frame in poses[c]:
                cams.append(np.full(len(d.ids), c))
                fr.append(np.full(len(d.ids), frame_index[d.frame]))
                corners.append(d.ids)
                pixels.append(d.corners)
    obs = _Observations(np.concatenate(cams), np.concatenate(fr), np.concatenate(corners), np.concatenate(pixels))
    x0 = np.concatenate(
        [np.concatenate([[m[0, 0], m[1, 1], m[0, 2], m[1, 2]], d[:4]]) for m, d in intrinsics]
        + [np.concatenate([matrix_to_rodrigues(r), t]) for r, t in chain[1:]]
        + [board_params.reshape(-1)]
    )
    n_cams, n_frames = len(names), len(frames)
    free = np.ones(len(x0), dtype=bool)
    if not tangential:  # p1 = p2 = 0, as calibrateCamera's start has them
        for c in range(n_cams):
            free[c * _N_INTRINSIC + 6 : (c + 1) * _N_INTRINSIC] = False

    def full(values: Array) -> Array:
        params = x0.copy()
        params[free] = values
        return params

    def residual(values: Array) -> Array:
        return (_project(full(values), obs, objects, n_cams, n_frames) - obs.pixels).reshape(-1)

    initial = _per_camera_error(residual(x0[free]), obs, n_cams)
    fit = least_squares(
        residual,
        x0[free],
        jac_sparsity=_sparsity(obs, n_cams, n_frames).tocsc()[:, np.flatnonzero(free)],
        method="trf",
        x_scale="jac",
        ftol=1e-8,
        xtol=1e-10,
        max_nfev=max_evaluations,
    )
    errors = _per_camera_error(fit.fun, obs, n_cams)
    params = full(fit.x)
    cameras = []
    for c, name in enumerate(names):
        fx, fy, cx, cy, k1, k2, p1, p2 = params[c * _N_INTRINSIC : (c + 1) * _N_INTRINSIC]
        if c == 0:
            rotation, translation = np.eye(3), np.zeros(3)
        else:
            e = params[n_cams * _N_INTRINSIC + (c - 1) * 6 : n_cams * _N_INTRINSIC + c * 6]
            rotation, translation = rodrigues_to_matrix(e[:3]), e[3:]
        cameras.append(
            Camera(
                name,
                sizes[name],
                np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]]),
                np.array([k1, k2, p1, p2, 0.0]),
                rotation,
                translation,
            )
        )
    metadata = {
        "adjusted": True,
        "error": float(np.mean(errors)),
        "errors": [float(e) for e in errors],
        "board_views": n_frames,
    }
    n_used = np.array([len(p) for p in poses], dtype=np.int64)
    group = CameraGroup(tuple(cameras), metadata)
    for line in short_baselines(group, board):
        warnings.warn(line, ShortBaselineWarning, stacklevel=2)
    return CalibrationResult(group, errors, initial, n_used)
