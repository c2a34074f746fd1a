"""Triangulation of 2D keypoints seen by calibrated cameras, vectorised over frames and keypoints.

Inputs everywhere: ``pixels`` (C, ..., 2) per camera (NaN where a camera has no point) and
``weights`` (C, ...) (e.g. the network likelihood; 0 drops a view). Outputs are
:class:`Triangulation` dataclasses of arrays over ``...``.

* :func:`triangulate_dlt` - linear least squares (DLT) on undistorted points: each camera
  gives two equations ``(x P_3 - P_1) X = 0``, ``(y P_3 - P_2) X = 0`` in the inhomogeneous
  ``X``, weighted by ``weight f / depth`` (so every row is approximately a pixel distance). Exact on noise-free points; a confident outlier drags it.
* :func:`triangulate_robust` - camera-pair hypotheses, then a Student-t reprojection fit:
  every pair of cameras triangulates (DLT), each hypothesis is scored by a Cauchy loss of its
  pixel reprojection errors in all cameras, the best is refined by iteratively reweighted
  Gauss-Newton (IRLS) on the pixel residuals with Student-t weights
  ``(nu + 2) / (nu + |r|^2 / sigma^2)``. A view whose residual is far beyond ``sigma``
  ends with a weight near zero: it is reported as not used (``n_views``).

Both return a posterior-style covariance: ``sigma^2 (sum_c w_c J_c^T J_c)^-1`` from the pixel
Jacobians ``J_c`` at the estimate (the Laplace approximation of a Gaussian pixel noise of
standard deviation ``sigma`` around the estimate, with the views' final weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.multicam.cameras import CameraGroup, flag_views_behind

Array = NDArray[np.float64]
_DEGENERATE = 1e-12  # det(A^T A) below this x (its mean eigenvalue)^3: rays too close to parallel


class TriangulationError(ElpError):
    """Triangulation inputs do not fit together (shapes, cameras); the message says which."""


@dataclass
class Triangulation:
    """3D estimates over a batch shape ``...`` (e.g. frames x keypoints).

    Attributes:
        points: (..., 3) positions, NaN where fewer than two views (and no prior) constrain them.
        variance: (..., 3) posterior variance per axis (calibration units squared).
        reprojection_error: (..., ) mean pixel distance over the views used.
        n_views: (..., ) number of views used.
        used: (C, ...) which views were used.
    """

    points: Array
    variance: Array
    reprojection_error: Array
    n_views: NDArray[np.int64]
    used: NDArray[np.bool_]


def _check(group: CameraGroup, pixels: ArrayLike, weights: ArrayLike | None) -> tuple[Array, Array]:
    pixels = np.asarray(pixels, dtype=float)
    if pixels.ndim < 2 or pixels.shape[0] != len(group) or pixels.shape[-1] != 2:
        raise TriangulationError(
            f"pixels have shape {pixels.shape}, expected ({len(group)}, ..., 2) for cameras {group.names}"
        )
    w = np.ones(pixels.shape[:-1]) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != pixels.shape[:-1]:
        raise TriangulationError(f"weights have shape {w.shape}, expected {pixels.shape[:-1]}")
    valid = np.all(np.isfinite(pixels), axis=-1) & np.isfinite(w) & (w > 0)
    return pixels, np.where(valid, w, 0.0)


def check_cameras(group: CameraGroup) -> None:
    """Refuse a rig that cannot triangulate: fewer than two cameras. (Each camera's numbers
    are checked when it is made, by ``cameras.check_camera``.)"""
    if len(group) < 2:
        raise TriangulationError(
            f"triangulation needs at least two cameras, got {len(group)} ({group.names}): "
            "a calibration of one camera cannot place a point in 3D"
        )


def _dlt(group: CameraGroup, normalised: Array, weights: Array) -> Array:
    """Weighted inhomogeneous DLT; normalised (C, N, 2), weights (C, N) -> (N, 3) (NaN if < 2 views)."""
    n = normalised.shape[1]
    ata = np.zeros((n, 3, 3))
    atb = np.zeros((n, 3))
    for cam, xy, w in zip(group.cameras, normalised, weights):
        p = cam.extrinsic  # rows P1, P2, P3
        xy = np.where(np.isfinite(xy), xy, 0.0)
        rows = np.stack([xy[:, :1] * p[2] - p[0], xy[:, 1:2] * p[2] - p[1]], axis=1)  # (N, 2, 4)
        a, b = rows[..., :3], -rows[..., 3]
        ata += w[:, None, None] * np.einsum("nri,nrj->nij", a, a)
        atb += w[:, None] * np.einsum("nri,nr->ni", a, b)
    enough = np.sum(weights > 0, axis=0) >= 2
    with np.errstate(invalid="ignore", over="ignore"):
        # rays that (nearly) coincide, or numbers past float range, place no point
        size = np.trace(ata, axis1=-2, axis2=-1) / 3.0
        solvable = enough & np.isfinite(ata).all((-2, -1)) & np.isfinite(atb).all(-1) & (size > 0)
        solvable &= np.linalg.det(np.where(solvable[:, None, None], ata, np.eye(3))) > _DEGENERATE * size**3
    ata[~solvable] = np.eye(3)
    atb[~solvable] = 0.0
    out = np.linalg.solve(ata, atb[..., None])[..., 0]
    out[~solvable] = np.nan
    return np.asarray(out, dtype=float)


def _depth_weights(group: CameraGroup, points: Array, weights: Array) -> Array:
    """weights x f^2 / depth^2: a DLT row is depth x normalised distance, a pixel is f x that."""
    depth = np.stack([cam.to_camera(points)[..., 2] for cam in group.cameras])
    depth = np.where(np.isfinite(depth) & (np.abs(depth) > 1e-12), depth, 1.0)
    focal = np.array([cam.matrix[0, 0] * cam.matrix[1, 1] for cam in group.cameras])
    return weights * focal[:, None] / depth**2


def _flatten(pixels: Array, weights: Array) -> tuple[Array, Array, tuple[int, ...]]:
    batch = pixels.shape[1:-1]
    return pixels.reshape(len(pixels), -1, 2), weights.reshape(len(weights), -1), batch


def _linearise(group: CameraGroup, points: Array, pixels: Array) -> tuple[Array, Array]:
    """Residuals (C, N, 2) (NaN where no pixel) and Jacobians (C, N, 2, 3) at ``points`` (N, 3)."""
    residuals, jacobians = [], []
    for cam, uv in zip(group.cameras, pixels):
        with np.errstate(divide="ignore", invalid="ignore"):  # placeholder points of NaN results
            projected, jac = cam.project_jacobian(points)
        residuals.append(projected - uv)
        jacobians.append(np.where(np.isfinite(jac), jac, 0.0))
    return np.stack(residuals), np.stack(jacobians)


def _normal_equations(residuals: Array, jacobians: Array, weights: Array) -> tuple[Array, Array]:
    """Gauss-Newton H = sum_c w J^T J (N, 3, 3) and gradient sum_c w J^T r (N, 3)."""
    r = np.where(np.isfinite(residuals), residuals, 0.0)
    wj = jacobians * weights[..., None, None]
    hessian = np.einsum("cnri,cnrj->nij", wj, jacobians, optimize=True)
    gradient = np.einsum("cnri,cnr->ni", wj, r, optimize=True)
    return hessian, gradient


def _information(group: CameraGroup, points: Array, pixels: Array, weights: Array) -> tuple[Array, Array, Array]:
    """Gauss-Newton pieces at ``points`` (N, 3): H (N, 3, 3), gradient (N, 3), residuals (C, N, 2)."""
    residuals, jacobians = _linearise(group, points, pixels)
    hessian, gradient = _normal_equations(residuals, jacobians, weights)
    return hessian, gradient, residuals


def _summary(
    group: CameraGroup,
    points: Array,
    pixels: Array,
    used: NDArray[np.bool_],
    hessian: Array,
    sigma2: float,
    batch: tuple[int, ...],
) -> Triangulation:
    err = np.linalg.norm(group.project(points) - pixels, axis=-1)  # (C, N)
    used = flag_views_behind(group, points, used)  # a NaN point, or one behind a camera, used no view of it
    n_views = used.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_err = np.where(n_views > 0, np.where(used, err, 0.0).sum(0) / n_views, np.nan)
    ok = np.isfinite(points).all(-1) & (np.linalg.det(hessian) > 0)
    safe = np.where(ok[:, None, None], hessian, np.eye(3))
    variance = sigma2 * np.diagonal(np.linalg.inv(safe), axis1=-2, axis2=-1)
    variance[~ok] = np.nan
    points = np.where(ok[:, None], points, np.nan)
    return Triangulation(
        points.reshape(batch + (3,)),
        variance.reshape(batch + (3,)),
        mean_err.reshape(batch),
        n_views.reshape(batch).astype(np.int64),
        used.reshape((len(group),) + batch),
    )


def triangulate_dlt(
    group: CameraGroup, pixels: ArrayLike, weights: ArrayLike | None = None, sigma_px: float = 1.0
) -> Triangulation:
    """Weighted linear triangulation of ``pixels`` (C, ..., 2) with ``weights`` (C, ...).

    Rows are weighted by ``weight f^2 / depth^2`` at a first unweighted-depth estimate, so the
    least squares approximates the pixel error. ``sigma_px`` scales the reported variance.
    """
    pixels, w = _check(group, pixels, weights)
    flat, wf, batch = _flatten(pixels, w)
    normalised = group.undistort(flat)
    points = _dlt(group, normalised, wf)
    points = np.where(np.isfinite(points), _dlt(group, normalised, _depth_weights(group, points, wf)), np.nan)
    hessian, _, _ = _information(group, np.nan_to_num(points), flat, wf)
    return _summary(group, points, flat, wf > 0, hessian, sigma_px**2, batch)


def _cauchy_cost(residuals: Array, weights: Array, sigma: float) -> Array:
    """Sum over cameras of w log(1 + |r|^2 / sigma^2): the score of a hypothesis, (N,)."""
    r2 = np.sum(np.where(np.isfinite(residuals), residuals, 1e6) ** 2, axis=-1)
    return np.sum(np.where(weights > 0, np.log1p(r2 / sigma**2), 0.0), axis=0)


def _pair_hypotheses(group: CameraGroup, normalised: Array, pixels: Array, weights: Array, sigma: float) -> Array:
    """The best two-camera DLT per point by the Cauchy score in all views, (N, 3)."""
    best = np.full((normalised.shape[1], 3), np.nan)
    best_cost = np.full(normalised.shape[1], np.inf)
    for i, j in combinations(range(len(group)), 2):
        w = np.zeros_like(weights)
        w[[i, j]] = weights[[i, j]] > 0
        guess = _dlt(group, normalised, w)
        residuals = group.project(np.nan_to_num(guess)) - pixels
        cost = np.where(np.isfinite(guess).all(-1), _cauchy_cost(residuals, weights, sigma), np.inf)
        better = cost < best_cost
        best[better], best_cost[better] = guess[better], cost[better]
    return best


def student_t_weights(residuals: Array, sigma2: float | Array, nu: float) -> Array:
    """EM weights of a 2-D Student-t: ``(nu + 2) / (nu + |r|^2 / sigma^2)`` (1 at |r|^2 = 2 sigma^2)."""
    r2 = np.sum(np.where(np.isfinite(residuals), residuals, np.inf) ** 2, axis=-1)
    return (nu + 2.0) / (nu + r2 / sigma2)


def triangulate_robust(
    group: CameraGroup,
    pixels: ArrayLike,
    weights: ArrayLike | None = None,
    sigma_px: float = 2.0,
    nu: float = 1.0,
    iterations: int = 8,
    min_weight: float = 0.1,
) -> Triangulation:
    """Robust triangulation: best camera pair, then Student-t IRLS on pixel residuals.

    Args:
        sigma_px: scale of the inlier pixel noise.
        nu: Student-t degrees of freedom (1: Cauchy; smaller is more robust).
        iterations: Gauss-Newton / reweighting steps.
        min_weight: a view whose final Student-t weight is below this counts as not used.
    """
    pixels, w = _check(group, pixels, weights)
    flat, wf, batch = _flatten(pixels, w)
    normalised = group.undistort(flat)
    sigma2 = sigma_px**2
    points = _pair_hypotheses(group, normalised, flat, wf, sigma_px)
    alive: NDArray[np.bool_] = np.asarray(np.isfinite(points).all(-1))
    x = np.nan_to_num(points)
    robust = wf
    for _ in range(iterations):
        residuals, jacobians = _linearise(group, x, flat)
        robust = wf * student_t_weights(residuals, sigma2, nu)
        hessian, gradient = _normal_equations(residuals, jacobians, robust)
        solvable = alive & (np.linalg.det(hessian) > 0)
        step = np.linalg.solve(np.where(solvable[:, None, None], hessian, np.eye(3)), gradient[..., None])[..., 0]
        x = x - np.where(solvable[:, None], step, 0.0)
    residuals, jacobians = _linearise(group, x, flat)
    final = wf * student_t_weights(residuals, sigma2, nu)
    used: NDArray[np.bool_] = np.asarray((final >= min_weight * wf) & (wf > 0))
    hessian, _ = _normal_equations(residuals, jacobians, used * wf)
    x = np.where(alive[:, None] & (used.sum(0) >= 2)[:, None], x, np.nan)
    return _summary(group, x, flat, used, hessian, sigma2, batch)
