"""Ensemble Kalman Smoother (EKS) over the predictions of an ensemble of pose models.

Model (single view, one independent series per keypoint and coordinate)::

    z_0 ~ N(m0, S0)                    m0, S0: mean and variance of the ensemble centre over time
    z_t = z_{t-1} + w_t,  w_t ~ N(0, s)           random walk, ``s`` per keypoint (x and y share it)
    y_t = z_t + v_t,      v_t ~ N(0, R_t)          y_t: ensemble centre (median or mean) at frame t
                                                   R_t: ensemble variance (optionally / mean likelihood)

This is the model of eks 4.6.2 (``ensemble_kalman_smoother_singlecam``). The posterior of
``z`` is Gaussian with a *tridiagonal* precision matrix ``H = J + diag(w)`` (``J``: the random
walk prior, ``w_t = 1/R_t``, 0 on frames without observation). Instead of running a Kalman
filter and an RTS smoother frame by frame we factor ``H`` with LAPACK's tridiagonal LDL'
(``dpttrf``) for all series at once (series are concatenated into one long block-diagonal
system), which gives exactly the RTS smoother's posterior means and variances and the
marginal likelihood, with no Python loop over time:

* posterior mean = ``H^-1 b`` (``dpttrs``), ``b = w * y + m0 / S0 * e_0``;
* posterior variance = ``diag(H^-1)``, from the LDL' factors by a backward recursion
  ``v_t = 1/d_t + l_t^2 v_{t+1}`` solved as one bidiagonal system;
* log marginal likelihood (the Kalman filter's prediction-error decomposition, in closed form)::

      log p(y) = -n/2 log 2pi + 1/2 sum log w_t - 1/2 log S0 - (T-1)/2 log s
                 - 1/2 log det H - 1/2 [sum w_t (y_t - mu_t)^2 + (mu_0 - m0)^2/S0
                                        + sum (mu_t - mu_{t-1})^2 / s]

Two noise models (``noise=``):

* ``"eks"``: R_t is the ensemble variance, exactly eks 4.6.2's model. With the same fixed
  ``s`` our output equals eks's (up to its float32 arithmetic).
* ``"calibrated"``: R_t = c (R_ens,t + median over frames of R_ens) / 2. The spread of M
  members is a noisy variance estimate (M-1 degrees of freedom), so each frame's value is
  shrunk halfway to the series' median (frames with a large spread, i.e. outliers, keep a large
  variance), and a scale c per series (x and y of each keypoint) absorbs that the spread of
  the members is not the error variance of their median. c multiplies every variance of the
  model (prior, steps, noise), so for a given ``s`` it changes the posterior variance (which
  it calibrates) but not the trajectory; it has a closed-form maximum likelihood estimate.
* ``"auto"`` (default): ``"eks"`` when ``s`` is given, ``"calibrated"`` when ``s`` is fitted.

Choosing ``s``: per keypoint (or per group of keypoints) the ``s`` that maximises the marginal
likelihood above **with the same time-varying noise R_t that the smoother uses** (calibrated:
the likelihood profiled over c). eks 4.6.2 instead fits ``s`` by Adam on a likelihood whose
noise is the *constant* median of R_t. The search evaluates a grid of ``log s`` for all series
at once, then refines every group's optimum by a vectorised golden-section search. ``s`` is
reported as used in the model, i.e. relative to the (shrunk) ensemble variance: the random
walk's variance in px^2/frame is ``s * c``. Passing the reported ``s`` back with
``noise="calibrated"`` reproduces the result.

Frames where no member has a finite prediction are missing observations (``w_t = 0``): the
smoother bridges them and its variance grows across the gap; they never produce NaN.

Multi-view (:func:`smooth_multiview`): a keypoint seen in V views is one latent 3-D random walk
``z_t`` observed as ``y_t = mean + C z_t + v_t`` (2V numbers), ``C`` from a PCA on the frames
where every view is seen and the members agree. The posterior precision is block-tridiagonal
(band width 3), so the same closed forms hold with LAPACK's banded Cholesky (``dpbtrf``); only
the posterior covariance blocks of the final pass need a loop over time.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
from scipy.linalg import lapack

# The parameters' one validator; SmoothingParamError and parse_fit_range are re-exported
# here for the callers that imported them from this module.
from element_lightning_pose.engine.eks_params import (  # noqa: F401
    CENTRES,
    NOISE_MODELS,
    VAR_MODES,
    SmoothingParamError,
    SmoothingParams,
    check_choice,
    parse_fit_range,
    parse_groups,
)
from element_lightning_pose.engine.io import ProjectError, read_predictions, write_keypoint_csv

PathLike = str | os.PathLike
CentreMode = Literal["median", "mean"]
VarMode = Literal["confidence_weighted", "plain"]
NoiseModel = Literal["auto", "eks", "calibrated"]

EKS_COORDS = (
    "x", "y", "likelihood", "x_ens_median", "y_ens_median",
    "x_ens_var", "y_ens_var", "x_posterior_var", "y_posterior_var",
)
LOG_S_BOUNDS = (-10.0, 12.0)  # natural log of s in px^2/frame; eks clamps to (-8, 8)
VAR_FLOOR = 1e-12  # eks clips R_t to this; keeps w_t = 1/R_t finite when all members agree
LIKELIHOOD_FLOOR = 1e-5  # eks: a single member's variance is 1 / max(likelihood, 1e-5)
_LOG_2PI = float(np.log(2.0 * np.pi))
_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


@dataclass
class SmoothingResult:
    """Smoothed keypoints of T frames x K keypoints, plus everything eks writes beside them."""

    x: np.ndarray  # (T, K) posterior mean
    y: np.ndarray  # (T, K)
    likelihood: np.ndarray  # (T, K) mean likelihood of the members (0 where none is valid)
    centre: np.ndarray  # (T, K, 2) ensemble median/mean (NaN where no member is valid)
    ensemble_var: np.ndarray  # (T, K, 2) observation noise variance R_t (NaN where missing)
    posterior_var: np.ndarray  # (T, K, 2) posterior variance of x and y
    s: np.ndarray  # (K,) smoothing parameter (random-walk variance, px^2/frame, before c)
    bodyparts: list[str]
    log_likelihood: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (K,) at s
    noise_scale: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (K, 2) c per series

    def to_array(self) -> np.ndarray:
        """(T, K, 9) in eks's column order (see ``EKS_COORDS``)."""
        return np.concatenate(
            [self.x[..., None], self.y[..., None], self.likelihood[..., None],
             self.centre, self.ensemble_var, self.posterior_var],
            axis=-1,
        )

    def to_csv(self, path: PathLike, index: Sequence | None = None) -> Path:
        """Write the eks-layout CSV (3-row header, 9 coords per keypoint), atomically."""
        return write_keypoint_csv(
            path, self.to_array(), self.bodyparts, EKS_COORDS,
            scorer="ensemble-kalman_tracker", index=index,
        )


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def load_members(
    members: np.ndarray | Sequence[np.ndarray | PathLike], bodyparts: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Stack members into (M, T, K, 3) and check that they agree; name the member at fault."""
    if isinstance(members, np.ndarray):
        if members.ndim != 4:
            raise ValueError(f"members array must be (M, T, K, 3), got shape {members.shape}")
        arrays, names = list(members), None
        sources = [f"member {i}" for i in range(len(arrays))]
    else:
        arrays, sources, names = [], [], None
        for i, member in enumerate(members):
            if isinstance(member, np.ndarray):
                arrays.append(member)
                sources.append(f"member {i}")
                continue
            values, file_bodyparts = read_predictions(member)
            if names is not None and file_bodyparts != names:
                raise ProjectError(
                    f"{member}: body parts {file_bodyparts} differ from {sources[0]}'s {names}"
                )
            names = file_bodyparts
            arrays.append(values)
            sources.append(str(member))
    if not arrays:
        raise ValueError("no ensemble members given")
    reference = np.shape(arrays[0])
    for source, array in zip(sources, arrays):
        if np.ndim(array) != 3 or np.shape(array)[-1] != 3:
            raise ValueError(f"{source}: expected (T, K, 3) x/y/likelihood, got {np.shape(array)}")
        if np.shape(array) != reference:
            raise ValueError(f"{source}: shape {np.shape(array)} differs from {sources[0]}'s {reference}")
        require_predictions(array, source)
    stacked = np.stack([np.asarray(a, dtype=float) for a in arrays])
    return stacked, _resolve_bodyparts(bodyparts, names, stacked.shape[2])


def require_predictions(values: np.ndarray, source: str) -> None:
    """Refuse a member that predicts nothing: every x, y or likelihood NaN or infinite.

    Such a member is a broken file (or a crashed run), not missing data; smoothing it would
    give all-NaN output with a smoothing parameter fitted to nothing.
    """
    values = np.asarray(values, dtype=float)
    if values.shape[0] == 0:
        raise ProjectError(f"{source}: no frames")
    if not np.isfinite(values).all(axis=-1).any():
        raise ProjectError(f"{source}: no finite prediction in any of its {values.shape[0]} frames "
                           "(every x, y or likelihood is NaN or infinite); nothing to smooth")


def _resolve_bodyparts(given: Sequence[str] | None, from_files: list[str] | None, n: int) -> list[str]:
    names = list(given) if given is not None else from_files or [f"keypoint{k}" for k in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} body part names given for {n} keypoints")
    return names


@dataclass
class EnsembleStats:
    """Per-frame ensemble summary. Arrays are (T, K, 2) except ``likelihood`` (T, K)."""

    centre: np.ndarray
    variance: np.ndarray  # observation noise R_t; NaN where no member is valid
    likelihood: np.ndarray


def ensemble_stats(members: np.ndarray, centre: CentreMode = "median",
                   var_mode: VarMode = "confidence_weighted") -> EnsembleStats:
    """Centre, noise variance and mean likelihood of (M, T, K, 3) members.

    A member counts at a frame only where its x, y and likelihood are all finite. The variance
    is the population variance of the valid members (as eks's ``nanvar``), divided by their
    mean likelihood in ``confidence_weighted`` mode. A one-member ensemble has no spread: like
    eks we use ``1 / max(likelihood, 1e-5)``. In a larger ensemble, a frame where a single
    member survives gets the largest variance seen on that series (its spread is unknown).
    """
    check_choice("centre", centre, CENTRES)
    check_choice("var_mode", var_mode, VAR_MODES)
    n_members = members.shape[0]
    valid = np.isfinite(members).all(axis=-1)  # (M, T, K)
    if valid.all():  # the common case, without the masking
        n_valid = np.full(valid.shape[1:], n_members)
        coords, mean_lik = members[..., :2], members[..., 2].mean(axis=0)
        mean, var = coords.mean(axis=0), coords.var(axis=0)
        centre_values = np.median(coords, axis=0) if centre == "median" else mean
    else:
        n_valid = valid.sum(axis=0)
        coords = np.where(valid[..., None], members[..., :2], np.nan)  # (M, T, K, 2)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_lik = np.where(valid, members[..., 2], 0.0).sum(axis=0) / n_valid  # NaN if none
            mean = np.nansum(coords, axis=0) / n_valid[..., None]
            var = np.nansum((coords - mean) ** 2, axis=0) / n_valid[..., None]
        centre_values = _nanmedian_members(coords, n_valid) if centre == "median" else mean
    if n_members == 1:
        var = np.repeat((1.0 / np.maximum(mean_lik, LIKELIHOOD_FLOOR))[..., None], 2, axis=-1)
    elif var_mode == "confidence_weighted":
        with np.errstate(invalid="ignore", divide="ignore"):
            var = var / mean_lik[..., None]
    if n_members > 1:
        var = _fill_lone_member_frames(var, n_valid)
    missing = n_valid == 0
    var[missing] = np.nan
    return EnsembleStats(centre_values, var, np.where(missing, 0.0, mean_lik))


def _nanmedian_members(coords: np.ndarray, n_valid: np.ndarray) -> np.ndarray:
    """Median over axis 0 ignoring NaN; sorting puts NaN last, so the middle is at (n-1)//2."""
    ordered = np.sort(coords, axis=0)
    n = np.broadcast_to(n_valid[None, ..., None], (1, *coords.shape[1:]))
    low = np.take_along_axis(ordered, np.maximum(n - 1, 0) // 2, axis=0)[0]
    high = np.take_along_axis(ordered, np.minimum(n // 2, coords.shape[0] - 1), axis=0)[0]
    return np.where(n[0] > 0, (low + high) / 2.0, np.nan)


def _fill_lone_member_frames(var: np.ndarray, n_valid: np.ndarray) -> np.ndarray:
    lone = n_valid == 1
    if not lone.any():
        return var
    finite = np.where(np.isfinite(var) & (n_valid >= 2)[..., None], var, -np.inf)
    largest = finite.max(axis=0)  # (K, 2)
    largest = np.where(np.isfinite(largest), largest, 1.0 / LIKELIHOOD_FLOOR)
    return np.where(lone[..., None], np.broadcast_to(largest, var.shape), var)


# ---------------------------------------------------------------------------------------------
# Random-walk smoother on N independent series, all at once
# ---------------------------------------------------------------------------------------------


@dataclass
class _Series:
    """N scalar series of T frames, centred on their prior mean (rows are series)."""

    y: np.ndarray  # (N, T) observation minus ``offset``; 0 where missing
    w: np.ndarray  # (N, T) observation precision 1/R_t; 0 where missing
    offset: np.ndarray  # (N,) prior mean m0 (the series' mean over observed frames)
    prior_var: np.ndarray  # (N,) S0 (the series' variance over observed frames)

    @classmethod
    def from_observations(cls, values: np.ndarray, variances: np.ndarray) -> "_Series":
        """``values``/``variances`` (N, T); frames with non-finite value or variance are missing."""
        observed = np.isfinite(values) & np.isfinite(variances)
        n_obs = observed.sum(axis=1)
        safe = np.where(observed, values, 0.0)
        offset = safe.sum(axis=1) / np.maximum(n_obs, 1)
        prior_var = (np.where(observed, values - offset[:, None], 0.0) ** 2).sum(axis=1)
        prior_var = prior_var / np.maximum(n_obs, 1)
        # A constant series has S0 = 0; a tiny floor keeps the prior precision finite.
        prior_var = np.maximum(prior_var, 1e-8)
        w = np.where(observed, 1.0 / np.maximum(np.where(observed, variances, 1.0), VAR_FLOOR), 0.0)
        return cls(np.where(observed, values - offset[:, None], 0.0), w, offset, prior_var)

    def crop(self, keep: np.ndarray) -> "_Series":
        """Only frames where ``keep`` (T,) count as observed; time is cut to their span."""
        frames = np.flatnonzero(keep)
        span = slice(frames[0], frames[-1] + 1)
        w = np.where(keep[None, :], self.w, 0.0)[:, span]
        return _Series(self.y[:, span], w, self.offset, self.prior_var)

    def constant_log_likelihood(self) -> np.ndarray:
        """The terms of log p(y) that do not depend on s: -n/2 log 2pi + 1/2 sum log w - 1/2 log S0."""
        observed = self.w > 0
        log_w = np.log(np.where(observed, self.w, 1.0)).sum(axis=1)
        return -0.5 * observed.sum(axis=1) * _LOG_2PI + 0.5 * log_w - 0.5 * np.log(self.prior_var)


def _factor(series: _Series, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LDL' factors (d, l) of the posterior precision of all series, concatenated."""
    n_series, n_frames = series.w.shape
    inv_s = 1.0 / s[:, None]
    diag = series.w + 2.0 * inv_s
    diag[:, 0] += 1.0 / series.prior_var - inv_s[:, 0]  # first frame: prior instead of a step
    diag[:, -1] -= inv_s[:, 0]
    off = np.repeat(-inv_s, n_frames, axis=1)
    off[:, -1] = 0.0  # no coupling between the end of one series and the start of the next
    d, l, info = lapack.dpttrf(diag.ravel(), off.ravel()[:-1])
    if info != 0:
        raise FloatingPointError(f"posterior precision not positive definite (dpttrf info={info})")
    return d, l


def _posterior_mean(series: _Series, d: np.ndarray, l: np.ndarray) -> np.ndarray:
    rhs = series.w * series.y  # the prior mean is 0 after centring
    mean, info = lapack.dpttrs(d, l, rhs.ravel())
    if info != 0:
        raise FloatingPointError(f"posterior mean solve failed (dpttrs info={info})")
    return mean.reshape(series.w.shape)


def _posterior_variance(d: np.ndarray, l: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """diag(H^-1) from H = L D L': v_t = 1/d_t + l_t^2 v_{t+1}, one upper-bidiagonal solve."""
    band = np.ones((2, d.size))
    band[0, 1:] = -(l**2)
    variance, info = lapack.dtbtrs(band, (1.0 / d)[:, None], uplo="U")
    if info != 0:
        raise FloatingPointError(f"posterior variance solve failed (dtbtrs info={info})")
    return variance.reshape(shape)


NOISE_SCALE_BOUNDS = (1e-2, 1e2)  # a fitted noise scale stays within 100x of the ensemble's


def _log_likelihood(
    series: _Series, s: np.ndarray, constant: np.ndarray, noise_scale: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(log p(y), noise scale) per series for random-walk variance ``s`` (N,).

    ``noise_scale`` c multiplies every variance of the model (prior, steps, observations):
    the posterior mean does not change, the posterior variance scales by c. ``None`` fits c
    in closed form (c = quadratic residual / number of observations), i.e. returns the
    likelihood profiled over c.
    """
    d, l = _factor(series, s)
    return _log_likelihood_at(series, s, constant, d, _posterior_mean(series, d, l), noise_scale)


def _log_likelihood_at(
    series: _Series, s: np.ndarray, constant: np.ndarray, d: np.ndarray, mean: np.ndarray,
    noise_scale: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """log p(y) from the factor's pivots ``d`` (log det H) and the posterior mean (c = 1:
    ``constant - (T-1)/2 log s - 1/2 log det H - 1/2 residual``; general c below)."""
    n_frames = series.w.shape[1]
    residual = (series.w * (series.y - mean) ** 2).sum(axis=1)
    residual += mean[:, 0] ** 2 / series.prior_var + (np.diff(mean, axis=1) ** 2).sum(axis=1) / s
    log_det = np.log(d).reshape(series.w.shape).sum(axis=1)
    n_obs = (series.w > 0).sum(axis=1)
    if noise_scale is None:
        noise_scale = np.clip(residual / np.maximum(n_obs, 1), *NOISE_SCALE_BOUNDS)
    log_lik = (constant - 0.5 * (n_frames - 1) * np.log(s) - 0.5 * log_det
               - 0.5 * residual / noise_scale - 0.5 * n_obs * np.log(noise_scale))
    return log_lik, noise_scale


def fit_smoothing_param(
    series: _Series, groups: np.ndarray, fit_noise_scale: bool = True,
    grid_step: float = 1.0, refine_steps: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Maximise the marginal likelihood over log s, one s per group (``groups``: (N,) ids).

    Returns (s per group, log-likelihood per group). The likelihood uses the time-varying
    noise R_t, the same noise model as the smoother, times a noise scale per series that is
    profiled out (``fit_noise_scale``) or 1.
    """
    n_groups = int(groups.max()) + 1
    constant = series.constant_log_likelihood()
    unit = None if fit_noise_scale else np.ones(series.w.shape[0])

    def group_ll(s: np.ndarray) -> np.ndarray:
        ll, _ = _log_likelihood(series, s[groups], constant, unit)
        return np.bincount(groups, weights=ll, minlength=n_groups)

    return maximise_over_log_s(group_ll, n_groups, grid_step, refine_steps)


def maximise_over_log_s(
    log_lik: Callable[[np.ndarray], np.ndarray], n_groups: int,
    grid_step: float = 1.0, refine_steps: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-group argmax of ``log_lik(s (n_groups,)) -> (n_groups,)`` over s in ``LOG_S_BOUNDS``.

    A grid of log s (every group evaluated in the same call), then a golden-section search in
    the bracket of one grid step either side of each group's best grid point (again one call
    per step for all groups).
    """
    def at(log_s: np.ndarray) -> np.ndarray:
        return log_lik(np.exp(log_s))

    grid = np.arange(LOG_S_BOUNDS[0], LOG_S_BOUNDS[1] + 1e-9, grid_step)
    scores = np.stack([at(np.full(n_groups, g)) for g in grid])  # (G, n_groups)
    best = np.argmax(np.where(np.isfinite(scores), scores, -np.inf), axis=0)
    low = grid[np.maximum(best - 1, 0)]
    high = grid[np.minimum(best + 1, grid.size - 1)]
    best_log_s, best_ll = grid[best], scores[best, np.arange(n_groups)]
    inner_low, inner_high = high - _GOLDEN * (high - low), low + _GOLDEN * (high - low)
    ll_low, ll_high = at(inner_low), at(inner_high)
    for _ in range(refine_steps):
        keep_lower = ll_low > ll_high  # the maximum lies in [low, inner_high]
        high = np.where(keep_lower, inner_high, high)
        low = np.where(keep_lower, low, inner_low)
        probe = np.where(keep_lower, high - _GOLDEN * (high - low), low + _GOLDEN * (high - low))
        ll_probe = at(probe)
        # keep_lower: old inner_low becomes inner_high, probe is the new inner_low; else mirrored
        inner_low, inner_high = (np.where(keep_lower, probe, inner_high),
                                 np.where(keep_lower, inner_low, probe))
        ll_low, ll_high = (np.where(keep_lower, ll_probe, ll_high),
                           np.where(keep_lower, ll_low, ll_probe))
    for candidate, ll in ((inner_low, ll_low), (inner_high, ll_high)):
        better = ll > best_ll
        best_log_s, best_ll = np.where(better, candidate, best_log_s), np.where(better, ll, best_ll)
    return np.exp(best_log_s), best_ll


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def smooth(
    members: np.ndarray | Sequence[np.ndarray | PathLike],
    bodyparts: Sequence[str] | None = None,
    *,
    s: float | Sequence[float] | None = None,
    centre: CentreMode = "median",
    var_mode: VarMode = "confidence_weighted",
    keypoint_groups: Sequence[Sequence[int | str]] | None = None,
    fit_range: tuple[int | None, int | None] | Sequence[tuple[int | None, int | None]] | None = None,
    noise: NoiseModel = "auto",
) -> SmoothingResult:
    """Smooth an ensemble of single-view predictions.

    Args:
        members: (M, T, K, 3) array of x/y/likelihood, a list of (T, K, 3) arrays, or a list
            of prediction CSV files (3-row header).
        bodyparts: keypoint names (default: from the CSVs, else ``keypoint0`` ...).
        s: fixed random-walk variance (px^2 per frame, relative to the ensemble variance as
            in eks), one value or one per keypoint; ``None`` chooses it per keypoint (or per
            group) by maximum marginal likelihood.
        centre: ensemble centre used as the observation, ``"median"`` or ``"mean"``.
        var_mode: ``"confidence_weighted"`` (ensemble variance / mean likelihood, eks's
            default) or ``"plain"`` (ensemble variance).
        keypoint_groups: lists of keypoint indices or names that share one ``s``.
        fit_range: frames used to choose ``s``: ``(start, stop)`` or a list of them, 0-based
            and half-open, ``None`` for an open end. Smoothing always covers every frame.
        noise: observation noise model. ``"eks"``: R_t = the ensemble variance, exactly
            eks 4.6.2's model. ``"calibrated"``: R_t = c (R_ens,t + median_t R_ens,t) / 2 with c
            per series fitted jointly with s (see the module docstring). ``"auto"``: eks's
            model when ``s`` is given, calibrated when ``s`` is fitted.

    The choices are validated by :class:`SmoothingParams` (as ``elp smooth`` and
    ``SmoothingParamSet`` do): :class:`SmoothingParamError` names the key at fault.
    """
    params = SmoothingParams.from_dict(dict(s=s, centre=centre, var_mode=var_mode,
                                            keypoint_groups=keypoint_groups, fit_range=fit_range, noise=noise))
    s, centre, var_mode, noise = params.s, params.centre, params.var_mode, params.noise
    keypoint_groups, fit_range = params.keypoint_groups, params.fit_range
    data, names = load_members(members, bodyparts)
    stats = ensemble_stats(data, centre, var_mode)
    n_frames, n_keypoints = stats.likelihood.shape
    calibrated = _is_calibrated(noise, s)
    noise_var = shrink_variance(stats.variance) if calibrated else stats.variance
    series = _Series.from_observations(_to_series(stats.centre), _to_series(noise_var))
    groups = keypoint_group_ids(keypoint_groups, names)
    keep = fit_range_mask(fit_range, n_frames)
    fit_series = series.crop(keep) if not keep.all() else series
    if s is None:
        s_group, _ = fit_smoothing_param(fit_series, np.repeat(groups, 2), calibrated)
        s_keypoint = s_group[groups]
    else:
        s_keypoint = _fixed_s(s, n_keypoints)
    s_series = np.repeat(s_keypoint, 2)
    scale = (_log_likelihood(fit_series, s_series, fit_series.constant_log_likelihood(), None)[1]
             if calibrated else np.ones(2 * n_keypoints))
    mean, variance, log_lik = _smooth_series(series, s_series, scale)
    mean, variance = _from_series(mean, n_keypoints), _from_series(variance, n_keypoints)
    _blank_unobserved(series, mean, variance, names)
    return SmoothingResult(
        x=mean[..., 0], y=mean[..., 1], likelihood=stats.likelihood, centre=stats.centre,
        ensemble_var=stats.variance, posterior_var=variance, s=s_keypoint, bodyparts=names,
        log_likelihood=log_lik.reshape(n_keypoints, 2).sum(axis=1),
        noise_scale=scale.reshape(n_keypoints, 2),
    )


def _is_calibrated(noise: str, s) -> bool:
    """Whether the calibrated noise model applies (``noise`` already validated)."""
    return noise == "calibrated" or (noise == "auto" and s is None)


def shrink_variance(variance: np.ndarray) -> np.ndarray:
    """Halfway between each frame's ensemble variance and the series' median (over frames).

    The spread of M members estimates a variance with M-1 degrees of freedom only (for 5
    members its coefficient of variation is 0.7): frames where the members agree by chance
    would be trusted far too much. Averaging with the series' median is the posterior mean
    under an inverse-gamma prior of as many degrees of freedom centred there; frames with a
    large spread (outliers, jumps) keep a large variance.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN series stay NaN
        typical = np.nanmedian(variance, axis=0, keepdims=True)
    return 0.5 * (variance + typical)


def _smooth_series(
    series: _Series, s: np.ndarray, noise_scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Posterior mean (offset restored), posterior variance and log-likelihood per series."""
    d, l = _factor(series, s)
    mean = _posterior_mean(series, d, l)
    log_lik, _ = _log_likelihood_at(series, s, series.constant_log_likelihood(), d, mean, noise_scale)
    variance = _posterior_variance(d, l, series.w.shape) * noise_scale[:, None]
    return mean + series.offset[:, None], variance, log_lik


def _to_series(values: np.ndarray) -> np.ndarray:
    """(T, K, 2) -> (2K, T); series 2k is keypoint k's x, 2k+1 its y."""
    return np.ascontiguousarray(values.reshape(values.shape[0], -1).T)


def _from_series(values: np.ndarray, n_keypoints: int) -> np.ndarray:
    return values.T.reshape(-1, n_keypoints, 2)


def _blank_unobserved(series: _Series, mean: np.ndarray, variance: np.ndarray, names: list[str]) -> None:
    """A keypoint never observed has no estimate at all: NaN rather than a made-up 0."""
    never = ~(series.w > 0).any(axis=1).reshape(-1, 2).any(axis=1)
    if never.any():
        warnings.warn(f"no member ever predicted {[n for n, b in zip(names, never) if b]}; left NaN")
        mean[:, never] = np.nan
        variance[:, never] = np.nan


def _fixed_s(s: float | Sequence[float], n_keypoints: int) -> np.ndarray:
    values = np.broadcast_to(np.asarray(s, dtype=float), (n_keypoints,)) if np.ndim(s) == 0 else (
        np.asarray(s, dtype=float))
    if values.shape != (n_keypoints,):
        raise ValueError(f"s: expected one value or {n_keypoints} (one per keypoint), got {np.shape(s)}")
    if not (np.isfinite(values) & (values > 0)).all():
        raise ValueError(f"s must be positive and finite, got {values.tolist()}")
    return values.copy()


def keypoint_group_ids(groups: Sequence[Sequence[int | str]] | None, names: list[str]) -> np.ndarray:
    """(K,) group id per keypoint; keypoints in no group get one of their own."""
    ids = np.full(len(names), -1)
    for group_id, group in enumerate(groups or []):
        for member in group:
            index = _keypoint_index(member, names)
            if ids[index] >= 0:
                raise ValueError(f"keypoint_groups: {names[index]!r} is in more than one group")
            ids[index] = group_id
    next_id = len(groups or [])
    for index in np.flatnonzero(ids < 0):
        ids[index], next_id = next_id, next_id + 1
    # renumber densely so empty groups do not leave holes
    return np.unique(ids, return_inverse=True)[1]


def _keypoint_index(member: int | str, names: list[str]) -> int:
    if isinstance(member, (int, np.integer)):
        if not 0 <= member < len(names):
            raise ValueError(f"keypoint index {member} out of range for {len(names)} keypoints")
        return int(member)
    if member not in names:
        raise ValueError(f"unknown keypoint {member!r}; known: {names}")
    return names.index(member)


def fit_range_mask(
    fit_range: tuple[int | None, int | None] | Sequence[tuple[int | None, int | None]] | None,
    n_frames: int,
) -> np.ndarray:
    """(T,) bool: frames used to choose s. Ranges are 0-based, half-open, None = open end."""
    keep = np.zeros(n_frames, dtype=bool)
    if fit_range is None:
        keep[:] = True
        return keep
    ranges = [fit_range] if len(fit_range) == 2 and not isinstance(fit_range[0], (tuple, list)) else fit_range
    for start, stop in ranges:
        start = 0 if start is None else int(start)
        stop = n_frames if stop is None else int(stop)
        if not 0 <= start < stop <= n_frames:
            raise ValueError(f"fit_range ({start}, {stop}) is empty or outside 0..{n_frames}")
        keep[start:stop] = True
    return keep


# ---------------------------------------------------------------------------------------------
# Multi-view: one latent 3-D random walk per physical keypoint, seen in V views
# ---------------------------------------------------------------------------------------------


@dataclass
class _LatentModel:
    """G physical keypoints, each observed as 2V numbers per frame (x, y in every view).

    ``y_t = mean + C z_t + v_t``, ``z_t = z_{t-1} + w_t``, ``w_t ~ N(0, s I)``,
    ``v_t ~ N(0, diag(1/w_t))``, ``z_0 ~ N(0, diag(prior_var))``.
    """

    y: np.ndarray  # (G, T, 2V) observations minus ``mean``; 0 where missing
    w: np.ndarray  # (G, T, 2V) observation precision; 0 where missing
    mean: np.ndarray  # (G, 2V)
    loadings: np.ndarray  # (G, 2V, L) orthonormal columns (PCA components)
    prior_var: np.ndarray  # (G, L)
    blocks: np.ndarray = field(init=False)  # (G, T, L, L) C' W_t C, the same for every s
    rhs: np.ndarray = field(init=False)  # (G, T, L) C' W_t y_t

    def __post_init__(self) -> None:
        weighted = self.loadings[:, None] * self.w[..., None]  # (G, T, 2V, L)
        self.blocks = np.matmul(self.loadings[:, None].transpose(0, 1, 3, 2), weighted)
        self.rhs = np.matmul((self.w * self.y)[:, :, None, :], self.loadings[:, None])[:, :, 0]

    def predict(self, latent: np.ndarray) -> np.ndarray:
        """C z_t for latent (G, T, L) -> (G, T, 2V)."""
        return np.matmul(latent, self.loadings.transpose(0, 2, 1))

    @property
    def n_latent(self) -> int:
        return self.loadings.shape[2]


def _fit_latent_model(values: np.ndarray, variances: np.ndarray, n_latent: int,
                      quantile: float, names: list[str]) -> _LatentModel:
    """PCA per physical keypoint on the frames where all views are seen and members agree
    (largest ensemble variance at most its ``quantile`` percentile)."""
    observed = np.isfinite(values) & np.isfinite(variances)
    n_groups, _, n_obs = values.shape
    if n_obs <= n_latent:
        raise ValueError(f"multi-view needs more than {n_latent} observed numbers per frame "
                         f"(2 x views); got {n_obs}")
    means, loadings, prior_vars = [], [], []
    for g in range(n_groups):
        complete = observed[g].all(axis=1)
        spread = np.where(complete, variances[g].max(axis=1), np.inf)
        if complete.sum() <= n_latent:
            raise ValueError(f"view group {names[g]}: only {complete.sum()} frames seen in all "
                             f"views; need more than {n_latent} to fit the latent model")
        good = complete & (spread <= np.percentile(spread[complete], quantile))
        centred_good = values[g, good] - values[g, good].mean(axis=0)
        _, _, vt = np.linalg.svd(centred_good, full_matrices=False)
        components = vt[:n_latent].T  # (2V, L)
        means.append(values[g, good].mean(axis=0))
        loadings.append(components)
        prior_vars.append(np.maximum((centred_good @ components).var(axis=0), 1e-8))
    mean = np.stack(means)
    w = np.where(observed, 1.0 / np.maximum(np.where(observed, variances, 1.0), VAR_FLOOR), 0.0)
    y = np.where(observed, values - mean[:, None, :], 0.0)
    return _LatentModel(y, w, mean, np.stack(loadings), np.stack(prior_vars))


def _latent_precision_band(model: _LatentModel, s: np.ndarray) -> np.ndarray:
    """Lower band (L+1 rows) of the block-tridiagonal posterior precision, groups concatenated."""
    n_groups, n_frames, _ = model.w.shape
    n_latent = model.n_latent
    blocks = model.blocks
    inv_s = (1.0 / s)[:, None]
    steps = np.full((n_groups, n_frames), 2.0) * inv_s
    steps[:, 0] -= inv_s[:, 0]
    steps[:, -1] -= inv_s[:, 0]
    band = np.zeros((n_latent + 1, n_groups, n_frames, n_latent))
    for offset in range(n_latent):  # entries inside a frame's block: H[3t+i+offset, 3t+i]
        for i in range(n_latent - offset):
            band[offset, :, :, i] = blocks[:, :, i + offset, i]
    band[0] += steps[:, :, None]
    band[0, :, 0, :] += 1.0 / model.prior_var
    band[n_latent] = -inv_s[:, :, None]  # z_{t+1,i} - z_{t,i} coupling
    band[n_latent, :, -1, :] = 0.0
    return band.reshape(n_latent + 1, -1)


def _latent_posterior_mean(model: _LatentModel, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(posterior mean of z (G, T, L), Cholesky band) for random-walk variance s (G,)."""
    band = _latent_precision_band(model, s)
    factor, info = lapack.dpbtrf(band, lower=1)
    if info != 0:
        raise FloatingPointError(f"multi-view posterior precision not positive definite ({info})")
    latent, info = lapack.dpbtrs(factor, model.rhs.reshape(-1), lower=1)
    if info != 0:
        raise FloatingPointError(f"multi-view posterior mean solve failed ({info})")
    return latent.reshape(model.w.shape[0], model.w.shape[1], model.n_latent), factor


def _latent_log_likelihood(
    model: _LatentModel, s: np.ndarray, noise_scale: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(log p(y), noise scale c) per group, the same closed form as the single-view case
    (``noise_scale`` None: c fitted in closed form, one per group)."""
    latent, factor = _latent_posterior_mean(model, s)
    n_groups, n_frames, _ = model.w.shape
    observed = model.w > 0
    constant = (-0.5 * observed.sum(axis=(1, 2)) * _LOG_2PI
                + 0.5 * np.log(np.where(observed, model.w, 1.0)).sum(axis=(1, 2))
                - 0.5 * np.log(model.prior_var).sum(axis=1))
    residual = (model.w * (model.y - model.predict(latent)) ** 2).sum(axis=(1, 2))
    residual += (latent[:, 0] ** 2 / model.prior_var).sum(axis=1)
    residual += (np.diff(latent, axis=1) ** 2).sum(axis=(1, 2)) / s
    log_det = 2.0 * np.log(factor[0]).reshape(n_groups, -1).sum(axis=1)
    n_obs = observed.sum(axis=(1, 2))
    if noise_scale is None:
        noise_scale = np.clip(residual / np.maximum(n_obs, 1), *NOISE_SCALE_BOUNDS)
    log_lik = (constant - 0.5 * model.n_latent * (n_frames - 1) * np.log(s) - 0.5 * log_det
               - 0.5 * residual / noise_scale - 0.5 * n_obs * np.log(noise_scale))
    return log_lik, noise_scale


def _latent_posterior_cov(model: _LatentModel, s: np.ndarray) -> np.ndarray:
    """Diagonal blocks (G, T, L, L) of the posterior covariance (block LDL', then backwards).

    H has diagonal blocks D_t and off-diagonal blocks -I/s, so with Lambda_t = D_t -
    Lambda_{t-1}^-1 / s^2 the blocks are S_t = Lambda_t^-1 + Lambda_t^-1 S_{t+1} Lambda_t^-1 / s^2.
    This is the only loop over time (for the variances of the final pass; not in the s search).
    """
    band = _latent_precision_band(model, s)
    n_groups, n_frames, _ = model.w.shape
    n_latent = model.n_latent
    diag = band[:n_latent].reshape(n_latent, n_groups, n_frames, n_latent)
    blocks = np.zeros((n_groups, n_frames, n_latent, n_latent))
    for offset in range(n_latent):
        for i in range(n_latent - offset):
            blocks[:, :, i + offset, i] = blocks[:, :, i, i + offset] = diag[offset, :, :, i]
    inv_s2 = (1.0 / s**2)[:, None, None]
    inverses = np.empty_like(blocks)
    inverses[:, 0] = np.linalg.inv(blocks[:, 0])
    for t in range(1, n_frames):
        inverses[:, t] = np.linalg.inv(blocks[:, t] - inverses[:, t - 1] * inv_s2)
    cov = np.empty_like(blocks)
    cov[:, -1] = inverses[:, -1]
    for t in range(n_frames - 2, -1, -1):
        cov[:, t] = inverses[:, t] + inverses[:, t] @ cov[:, t + 1] @ inverses[:, t] * inv_s2
    return cov


def smooth_multiview(
    members: np.ndarray | Sequence[np.ndarray | PathLike],
    view_groups: Sequence[Sequence[int | str]],
    bodyparts: Sequence[str] | None = None,
    *,
    s: float | Sequence[float] | None = None,
    centre: CentreMode = "median",
    var_mode: VarMode = "confidence_weighted",
    fit_range: tuple[int | None, int | None] | Sequence[tuple[int | None, int | None]] | None = None,
    n_latent: int = 3,
    pca_quantile: float = 50.0,
    noise: NoiseModel = "auto",
) -> SmoothingResult:
    """Smooth keypoints seen in several views jointly through a linear latent model.

    ``view_groups`` lists, per physical keypoint, its keypoint (index or name) in every view,
    e.g. ``[["paw1LH_top", "paw1LH_bot"], ...]`` for a mirrored camera. Each group's 2V
    coordinates are explained by ``n_latent`` (3) components fitted by PCA on the frames where
    every view is seen and the members agree best (largest ensemble variance at most its
    ``pca_quantile`` percentile); the latent state is a random walk with variance ``s`` per
    group (fixed, or by maximum marginal likelihood on ``fit_range``). Outputs are per view, in
    the same layout as :func:`smooth`; keypoints in no group are smoothed on their own
    (with ``s`` if it is one number, else with a fitted ``s``). ``s``: one value, one per
    group, or ``None``. ``noise`` as in :func:`smooth` (calibrated: one noise scale per group).
    """
    params = SmoothingParams.from_dict(dict(s=s, centre=centre, var_mode=var_mode, fit_range=fit_range,
                                            noise=noise))
    s, centre, var_mode, noise, fit_range = params.s, params.centre, params.var_mode, params.noise, params.fit_range
    data, names = load_members(members, bodyparts)
    groups = [[_keypoint_index(k, names) for k in group] for group in view_groups]
    flat = [k for group in groups for k in group]
    if len(set(flat)) != len(flat) or any(len(g) != len(groups[0]) or len(g) < 2 for g in groups):
        raise ValueError("view_groups: every group needs the same number (>= 2) of distinct "
                         f"keypoints, each keypoint in one group only; got {view_groups}")
    alone = [k for k in range(len(names)) if k not in set(flat)]
    result = smooth(data, names, s=s if s is None or np.ndim(s) == 0 else None, centre=centre,
                    var_mode=var_mode, fit_range=fit_range, noise=noise) if alone else None
    stats = ensemble_stats(data, centre, var_mode)
    calibrated = _is_calibrated(noise, s)
    noise_var = shrink_variance(stats.variance) if calibrated else stats.variance
    group_names = ["+".join(names[k] for k in g) for g in groups]
    model = _fit_latent_model(_view_stack(stats.centre, groups), _view_stack(noise_var, groups),
                              n_latent, pca_quantile, group_names)
    fit_model = _crop_latent(model, fit_range_mask(fit_range, stats.centre.shape[0]))
    unit = None if calibrated else np.ones(len(groups))
    s_group = _fixed_s(s, len(groups)) if s is not None else maximise_over_log_s(
        lambda s_: _latent_log_likelihood(fit_model, s_, unit)[0], len(groups))[0]
    scale = _latent_log_likelihood(fit_model, s_group, unit)[1]
    latent, _ = _latent_posterior_mean(model, s_group)
    cov = _latent_posterior_cov(model, s_group) * scale[:, None, None, None]
    fitted = model.mean[:, None, :] + model.predict(latent)
    fitted_var = np.einsum("gri,gtik,grk->gtr", model.loadings, cov, model.loadings)
    n_frames = stats.centre.shape[0]
    mean = np.full((n_frames, len(names), 2), np.nan)
    variance = np.full((n_frames, len(names), 2), np.nan)
    s_keypoint = np.full(len(names), np.nan)
    log_lik = np.full(len(names), np.nan)
    noise_scale = np.ones((len(names), 2))
    if result is not None:
        mean[:, alone] = np.stack([result.x, result.y], axis=-1)[:, alone]
        variance[:, alone] = result.posterior_var[:, alone]
        s_keypoint[alone], log_lik[alone] = result.s[alone], result.log_likelihood[alone]
        noise_scale[alone] = result.noise_scale[alone]
    group_ll = _latent_log_likelihood(model, s_group, scale)[0]
    for g, group in enumerate(groups):
        for v, k in enumerate(group):
            mean[:, k] = fitted[g, :, 2 * v: 2 * v + 2]
            variance[:, k] = fitted_var[g, :, 2 * v: 2 * v + 2]
            s_keypoint[k], log_lik[k], noise_scale[k] = s_group[g], group_ll[g], scale[g]
    return SmoothingResult(
        x=mean[..., 0], y=mean[..., 1], likelihood=stats.likelihood, centre=stats.centre,
        ensemble_var=stats.variance, posterior_var=variance, s=s_keypoint, bodyparts=names,
        log_likelihood=log_lik, noise_scale=noise_scale,
    )


def _view_stack(values: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    """(T, K, 2) -> (G, T, 2V): view v's x and y at columns 2v, 2v+1."""
    return np.stack([values[:, group].reshape(values.shape[0], -1) for group in groups])


def _crop_latent(model: _LatentModel, keep: np.ndarray) -> _LatentModel:
    """The model seen only on frames ``keep`` (T,), cut to their span (for fitting s)."""
    if keep.all():
        return model
    frames = np.flatnonzero(keep)
    span = slice(frames[0], frames[-1] + 1)
    w = np.where(keep[None, :, None], model.w, 0.0)[:, span]
    return _LatentModel(model.y[:, span], w, model.mean, model.loadings, model.prior_var)


# ---------------------------------------------------------------------------------------------
# Command line: elp smooth MEMBER.csv ... -o OUT.csv
# ---------------------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``elp smooth``."""
    parser.add_argument("members", nargs="+", type=Path, help="prediction CSVs, one per member")
    parser.add_argument("-o", "--output", type=Path, required=True, help="smoothed CSV to write")
    parser.add_argument("--s", type=float, default=None, dest="smooth_param",
                        help="fixed random-walk variance s (px^2/frame); default: fitted")
    parser.add_argument("--centre", choices=CENTRES, default="median")
    parser.add_argument("--var-mode", choices=VAR_MODES, default="confidence_weighted")
    parser.add_argument("--noise", choices=NOISE_MODELS, default="auto",
                        help="noise model: eks's (ensemble variance as is), calibrated (shrunk "
                             "and scaled by a fitted factor); auto: eks with --s, else calibrated")
    parser.add_argument("--fit-range", default=None, metavar="START:STOP[,START:STOP]",
                        help="frames used to fit s (0-based, stop excluded; empty = open end)")
    parser.add_argument("--keypoint-groups", default=None, metavar="A,B;C,D",
                        help="keypoints (names or indices) sharing one s, groups split by ';'")
    parser.add_argument("--view-groups", default=None, metavar="A_top,A_bot;B_top,B_bot",
                        help="multi-view: the same keypoint in each view, groups split by ';'")


# How the CLI spells each parameter, so that an error names the option the user typed.
CLI_NAMES = {"s": "--s", "centre": "--centre", "var_mode": "--var-mode", "noise": "--noise",
             "fit_range": "--fit-range", "keypoint_groups": "--keypoint-groups"}


def run_from_cli(args: argparse.Namespace) -> int:
    """Smooth the member CSVs and write the eks-layout CSV; print s per keypoint.

    Bad input (a parameter, a member file) is one line on stderr and exit status 2; nothing
    is written.
    """
    try:
        params = SmoothingParams.from_dict(
            {"s": args.smooth_param, "centre": args.centre, "var_mode": args.var_mode, "noise": args.noise,
             "fit_range": args.fit_range, "keypoint_groups": args.keypoint_groups},
            source="invalid options", key_names=CLI_NAMES,
        ).to_dict()
        if args.view_groups:
            if params.pop("keypoint_groups"):
                raise ValueError("--keypoint-groups and --view-groups cannot be combined")
            result = smooth_multiview(args.members, parse_groups(args.view_groups), **params)
        else:
            result = smooth(args.members, **params)
    except (ProjectError, ValueError) as exc:
        print(f"elp smooth: error: {exc}", file=sys.stderr)
        return 2
    try:
        path = result.to_csv(args.output)
    except OSError as exc:  # e.g. a parent that is a file, a folder without write permission
        print(f"elp smooth: error: cannot write {args.output} ({exc})", file=sys.stderr)
        return 2
    for name, s_value in zip(result.bodyparts, result.s):
        print(f"{name}\ts={s_value:.6g}")
    print(f"wrote {path}")
    return 0
