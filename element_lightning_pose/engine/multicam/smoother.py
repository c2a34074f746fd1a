"""A robust Bayesian 3D smoother: every keypoint's trajectory from all cameras at once.

Model, per keypoint ``k`` (state ``X_t`` in R^3, world units), cameras ``c``::

    X_0 ~ N(m_0, v_0 I)                                 weak: v_0 = (10 x scene size)^2
    X_t = X_{t-1} + w_t,          w_t ~ N(0, q_k I)       random walk, q_k per keypoint
    y_tc = pi_c(X_t) + e_tc,      e_tc ~ t_nu(0, s_c (f^2 + V_tc) I_2)
                                                          Student-t pixel noise, per camera

``pi_c`` is the camera's projection (pinhole + distortion), ``y_tc`` the 2D prediction (the
ensemble median when several networks predict a view), ``V_tc`` the ensemble variance (0 for
one network), ``f^2`` a pixel variance floor, ``s_c`` a per-camera scale. Predictions with a
likelihood below ``min_likelihood`` are missing. Optionally a limb-length prior over the
edges ``(a, b)`` of a skeleton: ``|X_ta - X_tb| - L_ab ~ N(0, sigma_L^2)`` (lengths given or
fitted as the median distance of the unconstrained estimate).

The Student-t is a Gaussian scale mixture, ``e | lambda ~ N(0, s_c (f^2 + V) / lambda)``,
``lambda ~ Gamma(nu/2, nu/2)``. The smoother alternates (EM with Gauss-Newton M-steps):

1. **E-step**: at the current trajectory, the expected squared residual of each view
   ``E|r|^2 = |pi_c(X_t) - y_tc|^2 + tr(J Sigma_t J^T)`` (``J`` the projection Jacobian,
   ``Sigma_t`` the posterior covariance) gives the weight
   ``lambda = (nu + 2) / (nu + E|r|^2 / sigma^2)``: about 1 for an inlier, near 0 for a view
   whose point is tens of sigma off. A confident jump therefore cannot drag the point.
2. **Scale**: ``s_c = sum lambda E|r|^2 / (f^2 + V) / (2 n_c)`` (closed form).
3. **Gauss-Newton step**: linearise ``pi_c`` at the current trajectory; the linearised model is
   linear-Gaussian, so its posterior is Gaussian with precision ``H`` and information ``eta``::

       H   = blockdiag_t( sum_c (lambda / sigma^2) J^T J )  +  q^-1 (D^T D (x) I_3)  +  v_0^-1 e_0 e_0^T
       eta = sum_c (lambda / sigma^2) J^T (J X_bar - r)                               +  v_0^-1 m_0 e_0

   ``D`` the first difference over time. ``H`` is block-tridiagonal (3x3 blocks), i.e. banded
   with half bandwidth 3 in time-major order; all keypoints are stacked into one long banded
   system and solved by LAPACK's banded Cholesky (``scipy.linalg.cholesky_banded``).
4. **Process noise** by maximum marginal likelihood, per keypoint: for the linearised model
   the evidence is exact in closed form (the Laplace identity
   ``log p(y) = log p(y | X) + log p(X) - log p(X | y)`` at the posterior mode)::

       log p(y | q) = c - 1/2 sum (lambda/sigma^2) |J (X - X_bar) + r|^2
                      - 1/(2q) sum_t |X_t - X_{t-1}|^2 + 3(T-1)/2 log(1/q) - 1/2 log det H

   with ``log det H`` from the diagonal of the banded Cholesky factor, split by keypoint. A
   grid of ``q`` (all keypoints per solve) and a parabola through the best grid point and its
   neighbours give each keypoint's ``q``. This is what our 2D smoother does with its ``s``.

With a skeleton, keypoints are coupled within a frame: a second stage stacks each frame's
keypoints into one 3K block (half bandwidth 3K), keeps the ``q`` of the first stage, and adds
the Gauss-Newton terms of the limb-length residuals.

Posterior covariance blocks come from a block LDL^T recursion over time (vectorised over
keypoints; the one Python loop over frames): ``G_0 = D_0``, ``G_t = D_t - P G_{t-1}^-1 P``
(``P = q^-1 I``), then ``Sigma_{T-1} = G^-1``, ``Sigma_t = G_t^-1 + G_t^-1 P Sigma_{t+1} P G_t^-1``.
The reported variance per point and axis is the diagonal of ``Sigma_t``, plus the variance of
the 2D sources' own error where it is given (``error_px``, below). A frame that no
camera (or only one) sees is bridged by the random walk: it gets a position and a variance
that grows with the gap (or along the one camera's ray); a keypoint no camera ever sees is NaN.

**The sources' own error** (``SmootherOptions.error_px``). A network's 2D mistakes are largely
the same mistake in every view (it places the point where it believes the body part is, in
3D) and persist over tens of frames: the reprojection residuals cannot see them and the random
walk cannot average them away, so a posterior fitted to the residuals alone is far too narrow
(the rig demo: 15-16 px network errors, 3-5 px residuals, 95% intervals covering 9-15% of the
truth). The smoother therefore tracks the network's 3D point ``X_t = T_t + b_t`` and reports
the truth ``T_t`` with the source's error ``b_t`` added to the variance: ``b_t`` isotropic in
3D, of the size that shows a pixel error of ``sigma`` (px per image axis) in the views::

    var(b_tk) = sum_c sigma_ck^2 / sum_c (|J_tck|_F^2 / 2)      over the views used

(``|J|_F^2 / 2`` is the squared pixels per world unit of a displacement, averaged over
directions). ``sigma`` is a per-body-part error scale (e.g. from the model's evaluation on
labeled frames, :func:`~element_lightning_pose.engine.inference.metrics.error_scale_px`) or,
with ``error_px="variance"``, each view's 2D variance (an ensemble's spread or EKS posterior).
Putting that error into the per-view observation noise instead was measured and fails (35-47%
coverage): views and frames then average it down as if it were independent.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.linalg import cho_solve_banded, cholesky_banded

from element_lightning_pose.engine.multicam.cameras import CameraGroup
from element_lightning_pose.engine.multicam.triangulate import TriangulationError, triangulate_robust

Array = NDArray[np.float64]
Progress = Callable[[int, int], None]

_LOG_Q_GRID = np.linspace(-7.0, 4.0, 12)  # natural log of q relative to the typical step^2
_LOCAL_GRID = np.linspace(-1.0, 1.0, 5)  # later iterations: around the previous q
# q within [1e-8, 1e2] x scene extent^2: beyond, the random-walk precision is ~1e10 times the
# weakest term of H and the banded Cholesky loses positive definiteness (or the walk no longer
# bridges a gap). On weak 2D the evidence can keep preferring a smaller q for ever.
_LOG_Q_BOUNDS = (np.log(1e-8), np.log(1e2))
CONVERGED = 1e-6  # EM stops when no point moves by more than this fraction of the scene extent
MAX_ITERATIONS = 1000  # iterations and limb_iterations are at most this


@dataclass
class SmootherOptions:
    """Settings of :func:`smooth_3d` (defaults are the benchmark's).

    Attributes:
        nu: Student-t degrees of freedom of the pixel noise (smaller: more robust).
        min_likelihood: predictions below this likelihood are missing.
        floor_px: pixel noise floor ``f`` (px) added to the ensemble variance.
        iterations: the most EM / Gauss-Newton iterations (1 .. ``MAX_ITERATIONS``); the
            smoother stops earlier once no point moves by more than ``CONVERGED`` x the scene
            extent (with the posterior covariances of the E-step up to date).
        q: fixed process noise (world units^2 / frame), one value or one per keypoint;
            None fits it by maximum marginal likelihood. Either is kept within
            [1e-8, 1e2] x the scene extent^2 (numerical range of the solver).
        limb_sd: standard deviation of the limb-length prior (world units).
        limb_iterations: Gauss-Newton iterations of the skeleton stage.
        min_weight: a view whose final Student-t weight is below this counts as not used.
        error_px: the 2D sources' own error, an error the views share (see the module
            docstring): its sd in px per image axis, one value, one per keypoint (K,) or per
            camera and keypoint (C, K); ``"variance"``: each view's 2D ``variance``; None: the
            posterior of the residuals alone (the sources' error unknown).
    """

    nu: float = 3.0
    min_likelihood: float = 0.5
    floor_px: float = 1.0
    iterations: int = 8
    q: float | Sequence[float] | None = None
    limb_sd: float = 2.0
    limb_iterations: int = 3
    min_weight: float = 0.1
    error_px: float | Sequence[float] | ArrayLike | str | None = None


@dataclass
class Smoothed3D:
    """Result of :func:`smooth_3d`.

    Attributes:
        points: (T, K, 3) posterior means.
        variance: (T, K, 3) posterior variances per axis.
        reprojection_error: (T, K) mean pixel distance over the views used (NaN if none).
        n_views: (T, K) views used (Student-t weight >= ``min_weight``).
        weights: (C, T, K) final Student-t weights (0 where missing).
        q: (K,) process noise per keypoint (world units^2 / frame).
        camera_sigma: (C,) typical pixel noise per camera, ``sqrt(s_c (f^2 + median V))``.
        bone_lengths: (E,) limb lengths used (empty without a skeleton).
        log_likelihood: per keypoint, the evidence of the final linearised model.
        iterations: EM iterations run (fewer than ``options.iterations`` once converged).
    """

    points: Array
    variance: Array
    reprojection_error: Array
    n_views: NDArray[np.int64]
    weights: Array
    q: Array
    camera_sigma: Array
    bone_lengths: Array
    log_likelihood: Array
    iterations: int = 0


class _NotPositiveDefinite(Exception):
    """The banded system lost positive definiteness: at series ``series``, frame ``frame``,
    row ``row`` within the frame's block (which keypoint that is depends on the stage)."""

    def __init__(self, series: int, frame: int, row: int) -> None:
        super().__init__(series, frame, row)
        self.series, self.frame, self.row = series, frame, row


@dataclass
class _Views:
    """Observations flattened for the solver: (C, T, K, ...)."""

    pixels: Array  # (C, T, K, 2), 0 where missing
    valid: NDArray[np.bool_]  # (C, T, K)
    base_var: Array  # (C, T, K) f^2 + V
    source_var: Array | None  # (C, T, K) the sources' own error variance px^2 (None: not given)


# ------------------------------------------------------------------------------ banded algebra


def _band(info: Array, p: Array, p0: float) -> Array:
    """Upper banded form (B+1, S*T*B) of H = blockdiag(info) + p (D^T D (x) I) + p0 e_0 e_0^T.

    ``info`` (S, T, B, B) per-frame information, ``p`` (S, B) random-walk precisions.
    """
    n_s, n_t, b, _ = info.shape
    ab = np.zeros((b + 1, n_s, n_t, b))
    for d in range(b):
        ab[b - d, :, :, d:] = np.diagonal(info, offset=d, axis1=-2, axis2=-1)
    degree = np.full(n_t, 2.0)
    degree[[0, -1]] = 1.0 if n_t > 1 else 0.0
    ab[b] += p[:, None, :] * degree[None, :, None]
    ab[b, :, 0, :] += p0
    ab[0, :, 1:, :] = -p[:, None, :]
    return ab.reshape(b + 1, -1)


def _solve(info: Array, rhs: Array, p: Array, p0: float) -> tuple[Array, Array]:
    """Posterior mean (S, T, B) and log det H per series (S,) of the banded system."""
    n_s, n_t, b, _ = info.shape
    try:
        factor = cholesky_banded(_band(info, p, p0), lower=False, check_finite=False)
    except np.linalg.LinAlgError as exc:  # "<i>-th leading minor not positive definite"
        digits = str(exc).split("-", 1)[0]
        row = int(digits) - 1 if digits.isdigit() else 0
        raise _NotPositiveDefinite(row // (n_t * b), row % (n_t * b) // b, row % b) from None
    mean = cho_solve_banded((factor, False), rhs.reshape(-1), check_finite=False)
    logdet = 2.0 * np.log(factor[b].reshape(n_s, -1)).sum(axis=1)
    return mean.reshape(n_s, n_t, b), logdet


def block_covariances(info: Array, p: Array, p0: float) -> Array:
    """Diagonal blocks (S, T, B, B) of H^-1 by the block LDL^T recursion (loop over frames)."""
    n_s, n_t, b, _ = info.shape
    pm = p[:, :, None] * p[:, None, :]  # P G^-1 P = (p_i p_j G^-1_ij)
    eye = np.eye(b)
    g_inv = np.empty_like(info)
    degree = np.full(n_t, 2.0)
    degree[[0, -1]] = 1.0 if n_t > 1 else 0.0
    diag_prior = p[:, None, :] * degree[None, :, None]  # (S, T, B)
    previous = np.zeros_like(info[:, 0])
    for t in range(n_t):
        g = info[:, t] + diag_prior[:, t, :, None] * eye
        if t == 0:
            g = g + p0 * eye
        else:
            g = g - pm * previous
        try:
            previous = np.linalg.inv(g)
        except np.linalg.LinAlgError:
            series = int(np.argmin(np.abs(np.linalg.det(g))))
            raise _NotPositiveDefinite(series, t, 0) from None
        g_inv[:, t] = previous
    cov = np.empty_like(info)
    cov[:, -1] = g_inv[:, -1]
    for t in range(n_t - 2, -1, -1):
        u = g_inv[:, t] * p[:, None, :]  # G^-1 P
        cov[:, t] = g_inv[:, t] + u @ cov[:, t + 1] @ np.swapaxes(u, -1, -2)
    return cov


# ------------------------------------------------------------------------------ observations


def ensemble_observations(members: ArrayLike, min_likelihood: float = 0.5) -> tuple[Array, Array, Array]:
    """Ensembles per camera (C, M, T, K, 3) x/y/likelihood -> median pixels (C, T, K, 2),
    mean likelihood (C, T, K), ensemble variance (C, T, K) (mean of the x and y variances).

    Members below ``min_likelihood`` (or NaN) are left out of that point's median and
    variance; a point no member predicts confidently is NaN with likelihood 0.
    """
    values = np.asarray(members, dtype=float)
    if values.ndim != 5 or values.shape[-1] != 3:
        raise TriangulationError(f"members have shape {values.shape}, expected (C, M, T, K, 3)")
    good = np.isfinite(values).all(-1) & (values[..., 2] >= min_likelihood)
    xy = np.where(good[..., None], values[..., :2], np.nan)
    n_good = good.sum(axis=1)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are expected
        median = np.nanmedian(xy, axis=1)
        var = np.where(n_good >= 2, np.nanvar(xy, axis=1).mean(-1), 0.0)
        likelihood = np.where(n_good > 0, np.nanmean(np.where(good, values[..., 2], np.nan), axis=1), 0.0)
    return median, np.nan_to_num(likelihood), np.nan_to_num(var)


def _views(
    group: CameraGroup,
    pixels: ArrayLike,
    likelihood: ArrayLike | None,
    variance: ArrayLike | None,
    options: SmootherOptions,
) -> _Views:
    px = np.asarray(pixels, dtype=float)
    if px.ndim != 4 or px.shape[0] != len(group) or px.shape[-1] != 2:
        raise TriangulationError(
            f"pixels have shape {px.shape}, expected ({len(group)}, T, K, 2) for cameras {group.names}"
        )
    lik = np.ones(px.shape[:-1]) if likelihood is None else np.asarray(likelihood, dtype=float)
    var = np.zeros(px.shape[:-1]) if variance is None else np.asarray(variance, dtype=float)
    for name, value in (("likelihood", lik), ("variance", var)):
        if value.shape != px.shape[:-1]:
            raise TriangulationError(f"{name} has shape {value.shape}, expected {px.shape[:-1]}")
    valid = np.isfinite(px).all(-1) & np.isfinite(lik) & (lik >= options.min_likelihood)
    given = np.where(np.isfinite(var), np.maximum(var, 0.0), 0.0)
    base = options.floor_px**2 + given
    return _Views(np.where(valid[..., None], px, 0.0), valid, base, _source_variance(options.error_px, given))


def _source_variance(error_px: float | Sequence[float] | ArrayLike | str | None, given: Array) -> Array | None:
    """The sources' own error variance (C, T, K) px^2 from ``error_px`` (see :class:`SmootherOptions`)."""
    if error_px is None:
        return None
    if isinstance(error_px, str):
        if error_px != "variance":
            raise TriangulationError(f"3D smoother: error_px must be a number, numbers or 'variance', got {error_px!r}")
        return given
    sigma = np.asarray(error_px, dtype=float)
    n_c, _, n_k = given.shape
    if sigma.ndim == 1:
        sigma = sigma[None, :]  # one per keypoint
    if sigma.ndim > 2 or (sigma.ndim == 2 and (sigma.shape[0] not in (1, n_c) or sigma.shape[1] not in (1, n_k))):
        raise TriangulationError(
            f"3D smoother: error_px has shape {sigma.shape}, expected one value, ({n_k},) keypoints or "
            f"({n_c}, {n_k}) cameras x keypoints"
        )
    if not (np.isfinite(sigma).all() and (sigma >= 0).all()):
        raise TriangulationError(f"3D smoother: error_px must be finite and >= 0, got {sigma.tolist()}")
    per_view = sigma**2 if sigma.ndim == 0 else (sigma**2)[:, None, :]
    return np.broadcast_to(per_view, given.shape).astype(float)


def source_error_variance(group: CameraGroup, points: Array, source_var: Array, used: NDArray[np.bool_]) -> Array:
    """Per-axis variance (T, K) of a 3D error that shows ``source_var`` (C, T, K) px^2 in the
    ``used`` (C, T, K) views at ``points`` (T, K, 3): ``sum_c sigma_c^2 / sum_c |J_c|_F^2 / 2``.
    NaN where no view is used."""
    gain = np.stack(
        [np.sum(cam.project_jacobian(np.nan_to_num(points))[1] ** 2, axis=(-2, -1)) / 2.0 for cam in group.cameras]
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        numerator = np.where(used, source_var, 0.0).sum(axis=0)
        denominator = np.where(used, np.nan_to_num(gain), 0.0).sum(axis=0)
        return np.where(used.any(axis=0) & (denominator > 0), numerator / denominator, np.nan)


# ------------------------------------------------------------------------------ the smoother


def _initial_trajectory(group: CameraGroup, views: _Views, sigma_px: float) -> tuple[Array, NDArray[np.bool_]]:  # noqa: E501
    """Robust triangulation, gaps interpolated over time; (T, K, 3) and which keypoints are seen."""
    pixels = np.where(views.valid[..., None], views.pixels, np.nan)
    first = triangulate_robust(group, pixels, views.valid.astype(float), sigma_px=sigma_px, iterations=4)
    n_t, n_k = first.points.shape[:2]
    frame = pd.DataFrame(first.points.reshape(n_t, -1))
    filled = frame.interpolate(limit_direction="both").to_numpy().reshape(n_t, n_k, 3)
    seen: NDArray[np.bool_] = np.asarray(views.valid.any(axis=(0, 1)))
    if np.all(np.isnan(filled)):
        raise TriangulationError("no keypoint is seen by two cameras in any frame: nothing to start from")
    centre = np.nanmedian(filled.reshape(-1, 3), axis=0)
    filled = np.where(np.isnan(filled), centre, filled)
    return filled, seen


def _linearise(group: CameraGroup, x: Array, views: _Views) -> tuple[Array, Array]:
    """Residuals (C, T, K, 2) (0 where missing) and Jacobians (C, T, K, 2, 3) at ``x`` (T, K, 3)."""
    residuals, jacobians = [], []
    for cam, uv, ok in zip(group.cameras, views.pixels, views.valid):
        projected, jac = cam.project_jacobian(x)
        residuals.append(np.where(ok[..., None], projected - uv, 0.0))
        jacobians.append(np.where(ok[..., None, None], jac, 0.0))
    r, j = np.stack(residuals), np.stack(jacobians)
    return np.nan_to_num(r), np.nan_to_num(j)


def _observation_terms(x: Array, r: Array, j: Array, precision: Array) -> tuple[Array, Array]:
    """Per-frame information (K, T, 3, 3) and vector (K, T, 3) of the linearised views."""
    pj = j * precision[..., None, None]
    info = np.einsum("ctkri,ctkrj->ktij", pj, j, optimize=True)
    target = np.einsum("ctkri,tki->ctkr", j, x, optimize=True) - r  # J X_bar - r
    vector = np.einsum("ctkri,ctkr->kti", pj, target, optimize=True)
    return info, vector


def _expected_r2(r: Array, j: Array, cov: Array | None) -> Array:
    """E|r|^2 = |r|^2 + tr(J Sigma J^T), (C, T, K); ``cov`` (K, T, 3, 3) or None."""
    r2 = np.sum(r**2, axis=-1)
    if cov is None:
        return r2
    return r2 + np.einsum("ctkri,ktij,ctkrj->ctk", j, cov, j, optimize=True)


def _evidence_from_terms(
    x_new: Array, x_bar: Array, info: Array, grad: Array, const: Array, p: Array, logdet: Array, p0: float
) -> Array:
    """Log evidence per keypoint from the linearised data terms: with ``delta = X - X_bar``,
    ``sum (lambda/sigma^2) |J delta + r|^2 = delta' info delta + 2 delta' grad + const``."""
    delta = (x_new - x_bar).transpose(1, 0, 2)  # (K, T, 3)
    quad = np.einsum("kti,ktij,ktj->k", delta, info, delta, optimize=True)
    data = 0.5 * (quad + 2.0 * np.einsum("kti,kti->k", delta, grad) + const)
    steps = np.sum(np.diff(x_new, axis=0) ** 2, axis=(0, 2))
    n_t = x_new.shape[0]
    start = 0.5 * p0 * np.sum((x_new[0] - x_bar[0]) ** 2, axis=-1)
    return -data - start - 0.5 * p[:, 0] * steps + 1.5 * (n_t - 1) * np.log(p[:, 0]) - 0.5 * logdet


def _data_terms(x_bar: Array, r: Array, precision: Array, info: Array, vector: Array) -> tuple[Array, Array]:
    """``grad = sum (lambda/sigma^2) J' r = info X_bar - vector`` (K, T, 3) and ``const`` (K,)."""
    grad = np.einsum("ktij,tkj->kti", info, x_bar, optimize=True) - vector
    const = np.einsum("ctk,ctkr->k", precision, r**2, optimize=True)
    return grad, const


def _evidence(
    x_new: Array, x_bar: Array, r: Array, j: Array, precision: Array, p: Array, logdet: Array, p0: float
) -> Array:
    """Log evidence per keypoint (up to q-free constants) of the linearised model
    (prior mean ``m_0 = x_bar[0]``, see :func:`_prior_vector`)."""
    info, vector = _observation_terms(x_bar, r, j, precision)
    grad, const = _data_terms(x_bar, r, precision, info, vector)
    return _evidence_from_terms(x_new, x_bar, info, grad, const, p, logdet, p0)


def _fit_q(
    info: Array,
    vector: Array,
    x_bar: Array,
    r: Array,
    precision: Array,
    p0: float,
    log_q: Array,
    offsets: Array,
    log_q_bounds: tuple[float, float],
) -> tuple[Array, Array]:
    """The q per keypoint maximising the evidence over the grid ``log_q + offsets`` (evenly
    spaced, clipped to ``log_q_bounds``), refined by a parabola through the best point and its
    neighbours. (q (K,), evidence (K,))."""
    grad, const = _data_terms(x_bar, r, precision, info, vector)
    grid = np.clip(log_q[:, None] + offsets[None, :], *log_q_bounds)  # (K, G) log q
    scores = np.empty(grid.shape)
    rhs = vector + _prior_vector(x_bar, p0)
    for g in range(grid.shape[1]):
        p = np.repeat(np.exp(-grid[:, g])[:, None], 3, axis=1)
        mean, logdet = _solve(info, rhs, p, p0)
        scores[:, g] = _evidence_from_terms(mean.transpose(1, 0, 2), x_bar, info, grad, const, p, logdet, p0)
    best = np.clip(np.argmax(scores, axis=1), 1, grid.shape[1] - 2)
    rows = np.arange(len(best))
    lo, mid, hi = scores[rows, best - 1], scores[rows, best], scores[rows, best + 1]
    curvature = lo - 2 * mid + hi
    h = float(offsets[1] - offsets[0])
    offset = np.where(curvature < 0, 0.5 * h * (lo - hi) / np.where(curvature < 0, curvature, -1.0), 0.0)
    return np.exp(np.clip(grid[rows, best] + np.clip(offset, -h, h), *log_q_bounds)), scores.max(axis=1)


def _prior_vector(x_bar: Array, p0: float) -> Array:
    """v_0^-1 m_0 e_0 with m_0 the starting point of each keypoint, (K, T, 3)."""
    out = np.zeros((x_bar.shape[1], x_bar.shape[0], 3))
    out[:, 0] = p0 * x_bar[0]
    return out


def smooth_3d(
    group: CameraGroup,
    pixels: ArrayLike,
    likelihood: ArrayLike | None = None,
    variance: ArrayLike | None = None,
    skeleton: Sequence[tuple[int, int]] | None = None,
    bone_lengths: ArrayLike | None = None,
    options: SmootherOptions | None = None,
    progress: Progress | None = None,
    keypoint_names: Sequence[str] | None = None,
) -> Smoothed3D:
    """Smooth 2D predictions of all cameras into 3D trajectories with posterior variances.

    Args:
        group: the calibrated cameras, in the order of ``pixels``.
        pixels: (C, T, K, 2) predictions per camera (ensemble medians for ensembles).
        likelihood: (C, T, K) network likelihood (default 1).
        variance: (C, T, K) ensemble variance in px^2 (default 0; see :func:`ensemble_observations`).
        skeleton: keypoint index pairs of the limb-length prior (None: no prior).
        bone_lengths: (E,) limb lengths; None fits them from the unconstrained estimate.
        options: :class:`SmootherOptions`.
        progress: called as ``progress(done, total)`` after each iteration.
        keypoint_names: K names, for the error that names a keypoint the solver cannot place.
    """
    options = options or SmootherOptions()
    for name in ("iterations", "limb_iterations"):
        value = getattr(options, name)
        if not 1 <= value <= MAX_ITERATIONS:
            raise TriangulationError(f"3D smoother: {name} must be in 1 .. {MAX_ITERATIONS}, got {value!r}")
    views = _views(group, pixels, likelihood, variance, options)
    # the start is a robust triangulation at a network's typical noise, whatever the floor
    x, seen = _initial_trajectory(group, views, sigma_px=2.0 * max(options.floor_px, 1.0))
    n_k = x.shape[1]
    names = list(keypoint_names) if keypoint_names is not None else [f"keypoint {k}" for k in range(n_k)]
    if len(names) != n_k:
        raise TriangulationError(f"{len(names)} keypoint names for {n_k} keypoints")
    in_limb_stage = False
    try:
        x, cov, q, scale, evidence, weights, done = _em_stage(group, views, x, options, skeleton, progress)
        lengths = np.zeros(0)
        if skeleton:
            in_limb_stage = True
            total = done + options.limb_iterations
            x, cov, lengths, weights = _skeleton_stage(
                group, views, x, q, _p0(x), scale, skeleton, bone_lengths, options, progress, done, total
            )
    except _NotPositiveDefinite as exc:
        keypoint = exc.row // 3 if in_limb_stage else exc.series  # the limb stage: one block per frame
        stage = "the 3D smoother's limb-length stage" if in_limb_stage else "the 3D smoother"
        raise TriangulationError(
            f"{stage} cannot place {names[keypoint]!r} (frame {exc.frame}): its linearised system is "
            "numerically singular (2D views too few, too uncertain or contradicting each other, or a "
            "limb_sd far below the scene's size); try method 'robust', a higher min_likelihood, a fixed q "
            "or a larger limb_sd"
        ) from None
    return _result(group, views, x, cov, weights, q, scale, lengths, evidence, seen, options, done)


def _extent(x: Array) -> float:
    """The scene's size: the largest range of the trajectory along an axis (1 if none)."""
    return float(np.nanmax(np.ptp(x.reshape(-1, 3), axis=0))) or 1.0


def _p0(x: Array) -> float:
    """Precision of the weak prior on each keypoint's first position: (10 x scene size)^-2."""
    return 1.0 / (10.0 * _extent(x)) ** 2


def _em_stage(
    group: CameraGroup,
    views: _Views,
    x: Array,
    options: SmootherOptions,
    skeleton: Sequence[tuple[int, int]] | None,
    progress: Progress | None,
) -> tuple[Array, Array, Array, Array, Array, Array, int]:
    """EM over every keypoint independently: (x, cov, q, scale, evidence, weights, iterations)."""
    n_t, n_k, _ = x.shape
    total = options.iterations + (options.limb_iterations if skeleton else 0)
    scale = np.ones(len(group)) * 4.0  # s_c: start from (2 f)^2, EM adapts it
    extent = _extent(x)
    p0 = _p0(x)
    log_q_bounds = (_LOG_Q_BOUNDS[0] + 2 * np.log(extent), _LOG_Q_BOUNDS[1] + 2 * np.log(extent))
    steps = np.diff(x, axis=0)
    step2 = np.maximum(np.median(np.sum(steps**2, -1), axis=0) / 3.0, 1e-8 * extent**2) if n_t > 1 else np.ones(n_k)
    fixed_q = None if options.q is None else np.broadcast_to(np.asarray(options.q, dtype=float), (n_k,)).copy()
    q = fixed_q if fixed_q is not None else step2.copy()
    q = np.exp(np.clip(np.log(q), *log_q_bounds))
    cov: Array | None = None
    evidence = np.full(n_k, np.nan)
    weights = np.zeros(views.valid.shape)
    fresh = refresh = False  # Sigma_t of the current iterate known; keep it so until the end
    done = 0
    for iteration in range(options.iterations):
        r, j = _linearise(group, x, views)
        weights, scale, precision = _em_weights(r, j, cov, views, scale, options.nu)
        info, vector = _observation_terms(x, r, j, precision)
        if fixed_q is None:
            # a wide grid first, then a narrow one around the last optimum
            centre, offsets = (np.log(step2), _LOG_Q_GRID) if iteration == 0 else (np.log(q), _LOCAL_GRID)
            q, evidence = _fit_q(info, vector, x, r, precision, p0, centre, offsets, log_q_bounds)
        p = np.repeat((1.0 / q)[:, None], 3, axis=1)
        mean, _ = _solve(info, vector + _prior_vector(x, p0), p, p0)
        x_new = mean.transpose(1, 0, 2)
        change = float(np.max(np.abs(x_new - x))) / extent
        x, e_step_fresh, done = x_new, fresh, iteration + 1
        fresh = refresh or iteration == 0 or iteration >= options.iterations - 3  # the E-step needs Sigma_t
        if fresh:
            cov = block_covariances(info, p, p0)  # for the E-step and the final variance
        converged = change <= CONVERGED
        if converged and e_step_fresh:
            total -= options.iterations - done  # the iterations left are not run
        if progress:
            progress(done, total)
        if converged and e_step_fresh:
            break
        refresh = refresh or converged  # converged on a stale Sigma_t: refresh it and confirm
    if not skeleton:
        r, j = _linearise(group, x, views)
        weights, _, precision = _em_weights(r, j, cov, views, scale, options.nu)
        info, _ = _observation_terms(x, r, j, precision)
        cov = block_covariances(info, np.repeat((1.0 / q)[:, None], 3, axis=1), p0)
    assert cov is not None
    return x, cov, q, scale, evidence, weights, done


def _em_weights(
    r: Array, j: Array, cov: Array | None, views: _Views, scale: Array, nu: float
) -> tuple[Array, Array, Array]:
    """E-step and scale update: Student-t weights (C, T, K), s_c (C,), precision lambda / sigma^2."""
    er2 = _expected_r2(r, j, cov)
    ratio = er2 / views.base_var
    weights = np.where(views.valid, (nu + 2.0) / (nu + ratio / scale[:, None, None]), 0.0)
    n_valid = np.maximum(views.valid.sum(axis=(1, 2)), 1)
    new_scale = np.sum(weights * ratio, axis=(1, 2)) / (2.0 * n_valid)
    scale = np.maximum(new_scale, 1e-4)
    weights = np.where(views.valid, (nu + 2.0) / (nu + ratio / scale[:, None, None]), 0.0)
    precision = weights / (scale[:, None, None] * views.base_var)
    return weights, scale, precision


def _skeleton_stage(
    group: CameraGroup,
    views: _Views,
    x: Array,
    q: Array,
    p0: float,
    scale: Array,
    skeleton: Sequence[tuple[int, int]],
    bone_lengths: ArrayLike | None,
    options: SmootherOptions,
    progress: Progress | None,
    done: int,
    total: int,
) -> tuple[Array, Array, Array, Array]:
    """Gauss-Newton with the limb-length prior, all keypoints of a frame in one block."""
    n_t, n_k, _ = x.shape
    edges = np.asarray(skeleton, dtype=int).reshape(-1, 2)
    if edges.size and (edges.min() < 0 or edges.max() >= n_k):
        raise TriangulationError(f"skeleton edge indices {edges.tolist()} outside 0..{n_k - 1}")
    if bone_lengths is None:
        lengths = np.median(np.linalg.norm(x[:, edges[:, 0]] - x[:, edges[:, 1]], axis=-1), axis=0)
    else:
        lengths = np.asarray(bone_lengths, dtype=float)
        if lengths.shape != (len(edges),):
            raise TriangulationError(f"{lengths.size} bone lengths for {len(edges)} skeleton edges")
    p = np.repeat((1.0 / q), 3)[None, :]  # (1, 3K)
    omega = 1.0 / options.limb_sd**2
    cov_k: Array | None = None
    weights = np.zeros(views.valid.shape)
    for it in range(options.limb_iterations):
        r, j = _linearise(group, x, views)
        weights, _, precision = _em_weights(r, j, cov_k, views, scale, options.nu)
        info_k, vector_k = _observation_terms(x, r, j, precision)
        blocks = np.zeros((n_t, n_k, 3, n_k, 3))
        kk = np.arange(n_k)
        blocks[:, kk, :, kk, :] = info_k  # (K, T, 3, 3) onto the block diagonal
        vector = vector_k.transpose(1, 0, 2).copy()  # (T, K, 3)
        d = x[:, edges[:, 0]] - x[:, edges[:, 1]]
        u = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
        uu = omega * u[..., :, None] * u[..., None, :]  # (T, E, 3, 3)
        for e, (a, b) in enumerate(edges):  # loop over the skeleton's edges (a handful)
            blocks[:, a, :, a, :] += uu[:, e]
            blocks[:, b, :, b, :] += uu[:, e]
            blocks[:, a, :, b, :] -= uu[:, e]
            blocks[:, b, :, a, :] -= uu[:, e]
            vector[:, a] += omega * u[:, e] * lengths[e]
            vector[:, b] -= omega * u[:, e] * lengths[e]
        info = blocks.reshape(1, n_t, 3 * n_k, 3 * n_k)
        rhs = vector.reshape(1, n_t, 3 * n_k)
        rhs[:, 0] += p0 * x[0].reshape(-1)
        mean, _ = _solve(info, rhs, p, p0)
        x = mean[0].reshape(n_t, n_k, 3)
        full = block_covariances(info, p, p0)[0].reshape(n_t, n_k, 3, n_k, 3)
        cov_k = full[:, kk, :, kk, :]  # (K, T, 3, 3)
        if progress:
            progress(done + it + 1, total)
    assert cov_k is not None
    return x, cov_k, lengths, weights


def _result(
    group: CameraGroup,
    views: _Views,
    x: Array,
    cov: Array,
    weights: Array,
    q: Array,
    scale: Array,
    lengths: Array,
    evidence: Array,
    seen: NDArray[np.bool_],
    options: SmootherOptions,
    iterations: int,
) -> Smoothed3D:
    variance = np.diagonal(cov, axis1=-2, axis2=-1).transpose(1, 0, 2).copy()  # (T, K, 3)
    used = views.valid & (weights >= options.min_weight)
    if views.source_var is not None:
        # a frame no view is used in takes the error of the nearest frames with views: the
        # bridged position inherits their (persistent) mistake
        shared = pd.DataFrame(source_error_variance(group, x, views.source_var, used))
        shared = shared.interpolate(limit_direction="both").to_numpy()
        variance += np.nan_to_num(shared)[..., None]
    points = x.copy()
    points[:, ~seen] = np.nan
    variance[:, ~seen] = np.nan
    error = np.linalg.norm(group.project(x) - views.pixels, axis=-1)
    n_views = used.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_error = np.where(n_views > 0, np.where(used, error, 0.0).sum(0) / n_views, np.nan)
    base = np.array(
        [np.median(v[ok]) if ok.any() else options.floor_px**2 for v, ok in zip(views.base_var, views.valid)]
    )
    return Smoothed3D(
        points,
        variance,
        mean_error,
        n_views.astype(np.int64),
        weights,
        q,
        np.sqrt(scale * base),
        lengths,
        evidence,
        iterations,
    )
