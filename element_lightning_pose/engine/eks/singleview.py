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
at once, then refines every group's optimum by a vectorised Brent search. ``s`` is
reported as used in the model, i.e. relative to the (shrunk) ensemble variance: the random
walk's variance in px^2/frame is ``s * c``. Passing the reported ``s`` back with
``noise="calibrated"`` reproduces the result.

Frames where no member has a finite prediction are missing observations (``w_t = 0``): the
smoother bridges them and its variance grows across the gap; they never produce NaN.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack

from element_lightning_pose.engine.eks.ensemble import VAR_FLOOR, ensemble_stats, nanmedian
from element_lightning_pose.engine.eks.io import SmoothingResult, load_members
from element_lightning_pose.engine.eks.params import (
    CentreMode,
    FitRangeArg,
    NoiseModel,
    OutlierMode,
    SmoothingParams,
    VarMode,
)
from element_lightning_pose.engine.eks.robust import is_robust, smooth_rejecting
from element_lightning_pose.engine.types import PathLike

LOG_S_BOUNDS = (-10.0, 12.0)  # natural log of s in px^2/frame; eks clamps to (-8, 8)
_LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass
class _Series:
    """N scalar series of T frames, centred on their prior mean (rows are series)."""

    y: np.ndarray  # (N, T) observation minus ``offset``; 0 where missing
    w: np.ndarray  # (N, T) observation precision 1/R_t; 0 where missing
    offset: np.ndarray  # (N,) prior mean m0 (the series' mean over observed frames)
    prior_var: np.ndarray  # (N,) S0 (the series' variance over observed frames)

    @classmethod
    def from_observations(cls, values: np.ndarray, variances: np.ndarray) -> _Series:
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

    @functools.cached_property
    def weighted(self) -> np.ndarray:
        """(N, T) w * y, the right-hand side of the posterior mean (the prior mean is 0 after centring)."""
        return self.w * self.y

    @functools.cached_property
    def n_obs(self) -> np.ndarray:
        """(N,) observed frames per series."""
        return (self.w > 0).sum(axis=1)

    def crop(self, keep: np.ndarray) -> _Series:
        """Only frames where ``keep`` (T,) count as observed; time is cut to their span."""
        frames = np.flatnonzero(keep)
        span = slice(frames[0], frames[-1] + 1)
        w = np.where(keep[None, :], self.w, 0.0)[:, span]
        return _Series(self.y[:, span], w, self.offset, self.prior_var)

    def constant_log_likelihood(self) -> np.ndarray:
        """The terms of log p(y) that do not depend on s: -n/2 log 2pi + 1/2 sum log w - 1/2 log S0."""
        log_w = np.log(np.where(self.w > 0, self.w, 1.0)).sum(axis=1)
        return -0.5 * self.n_obs * _LOG_2PI + 0.5 * log_w - 0.5 * np.log(self.prior_var)


def _factor(series: _Series, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LDL' factors (d, lower) of the posterior precision of all series, concatenated."""
    n_series, n_frames = series.w.shape
    inv_s = 1.0 / s[:, None]
    diag = series.w + 2.0 * inv_s
    diag[:, 0] += 1.0 / series.prior_var - inv_s[:, 0]  # first frame: prior instead of a step
    diag[:, -1] -= inv_s[:, 0]
    off = np.repeat(-inv_s, n_frames, axis=1)
    off[:, -1] = 0.0  # no coupling between the end of one series and the start of the next
    d, lower, info = lapack.dpttrf(diag.ravel(), off.ravel()[:-1], overwrite_d=1, overwrite_e=1)
    if info != 0:
        raise FloatingPointError(f"posterior precision not positive definite (dpttrf info={info})")
    return d, lower


def _posterior_mean(series: _Series, d: np.ndarray, lower: np.ndarray) -> np.ndarray:
    mean, info = lapack.dpttrs(d, lower, series.weighted.ravel())
    if info != 0:
        raise FloatingPointError(f"posterior mean solve failed (dpttrs info={info})")
    return mean.reshape(series.w.shape)


def _posterior_variance(d: np.ndarray, lower: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """diag(H^-1) from H = L D L': v_t = 1/d_t + l_t^2 v_{t+1}, one upper-bidiagonal solve."""
    band = np.ones((2, d.size))
    band[0, 1:] = -(lower**2)
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
    d, lower = _factor(series, s)
    return _log_likelihood_at(series, s, constant, d, _posterior_mean(series, d, lower), noise_scale)


def _log_likelihood_at(
    series: _Series,
    s: np.ndarray,
    constant: np.ndarray,
    d: np.ndarray,
    mean: np.ndarray,
    noise_scale: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """log p(y) from the factor's pivots ``d`` (log det H) and the posterior mean (c = 1:
    ``constant - (T-1)/2 log s - 1/2 log det H - 1/2 residual``; general c below)."""
    n_frames = series.w.shape[1]
    residual = (series.w * (series.y - mean) ** 2).sum(axis=1)
    residual += mean[:, 0] ** 2 / series.prior_var + (np.diff(mean, axis=1) ** 2).sum(axis=1) / s
    log_det = np.log(d).reshape(series.w.shape).sum(axis=1)
    n_obs = series.n_obs
    if noise_scale is None:
        noise_scale = np.clip(residual / np.maximum(n_obs, 1), *NOISE_SCALE_BOUNDS)
    log_lik = (
        constant
        - 0.5 * (n_frames - 1) * np.log(s)
        - 0.5 * log_det
        - 0.5 * residual / noise_scale
        - 0.5 * n_obs * np.log(noise_scale)
    )
    return log_lik, noise_scale


def fit_smoothing_param(
    series: _Series,
    groups: np.ndarray,
    fit_noise_scale: bool = True,
    grid_step: float = 1.0,
    tolerance: float = 0.005,
    around: np.ndarray | None = None,
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

    return maximise_over_log_s(group_ll, n_groups, grid_step, tolerance, around)


def maximise_over_log_s(
    log_lik: Callable[[np.ndarray], np.ndarray],
    n_groups: int,
    grid_step: float = 1.0,
    tolerance: float = 0.005,
    around: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-group argmax of ``log_lik(s (n_groups,)) -> (n_groups,)`` over s in ``LOG_S_BOUNDS``.

    A grid of log s (every group evaluated in the same call), then Brent's method in the
    bracket of one grid step either side of each group's best grid point, to within about
    twice ``tolerance`` in log s (every group's next probe again in one call). ``around`` (s per
    group, e.g. from an earlier pass) skips the grid: the bracket is ``grid_step`` either side
    of its log.

    Brent's parabolic steps use that the likelihood is smooth in log s: it needs about a third
    of the evaluations of a golden-section search for the same precision (each one factors
    every series), and falls back to golden steps where a parabola would not help.
    """

    def at(log_s: np.ndarray) -> np.ndarray:
        ll = log_lik(np.exp(log_s))
        return np.where(np.isfinite(ll), -ll, np.inf)  # minimised; a failed evaluation is the worst

    if around is not None:
        x = np.clip(np.log(around), *LOG_S_BOUNDS)
        low = np.maximum(x - grid_step, LOG_S_BOUNDS[0])
        high = np.minimum(x + grid_step, LOG_S_BOUNDS[1])
        # two neighbours seed w and v (an earlier pass's s is usually close)
        left, right = np.maximum(x - AROUND_SEED, low), np.minimum(x + AROUND_SEED, high)
        fx, f_left, f_right = at(x), at(left), at(right)
        # the likelihood is unimodal in log s: a centre better than both neighbours brackets the maximum
        inside = (fx <= f_left) & (fx <= f_right)
        low, high = np.where(inside, left, low), np.where(inside, right, high)
        values = np.stack([fx, f_left, f_right])
        order = np.argsort(values, axis=0, kind="stable")
        points = np.take_along_axis(np.stack([x, left, right]), order, axis=0)
        values = np.take_along_axis(values, order, axis=0)
        search = _BrentSearch(low, high, points[0], values[0], points[1], values[1], points[2], values[2])
    else:
        grid = np.arange(LOG_S_BOUNDS[0], LOG_S_BOUNDS[1] + 1e-9, grid_step)
        scores = np.stack([at(np.full(n_groups, g)) for g in grid])  # (G, n_groups)
        best = np.argmin(scores, axis=0)
        below, above = np.maximum(best - 1, 0), np.minimum(best + 1, grid.size - 1)
        each = np.arange(n_groups)
        f_below, f_above = scores[below, each], scores[above, each]
        # the grid neighbours seed w and v: parabolic steps are possible from the second step on
        nearer = f_below <= f_above
        search = _BrentSearch(
            grid[below],
            grid[above],
            grid[best],
            scores[best, each],
            np.where(nearer, grid[below], grid[above]),
            np.where(nearer, f_below, f_above),
            np.where(nearer, grid[above], grid[below]),
            np.where(nearer, f_above, f_below),
        )
    for _ in range(MAX_BRENT_STEPS):
        probe = search.next_probe(tolerance)
        if probe is None:
            break
        search.update(probe, at(probe))
    return np.exp(search.x), -search.fx


AROUND_SEED = 0.5  # log s either side of an earlier pass's s, probed first
MAX_BRENT_STEPS = 50  # a safeguard: golden steps alone shrink a bracket of 6 below 1e-9 in 50
_CGOLD = (3.0 - np.sqrt(5.0)) / 2.0  # golden section of a bracket, from its nearer end


class _BrentSearch:
    """Brent's minimisation (as in Numerical Recipes' ``brent``), one independent search per
    group, vectorised: ``x`` is the best point so far, ``w`` the second best, ``v`` the one before
    it, ``[low, high]`` the bracket; a group that has converged proposes its own ``x`` again
    and ignores the result."""

    def __init__(self, low, high, x, fx, w, fw, v, fv) -> None:  # noqa: ANN001 - (n_groups,) arrays
        self.low, self.high = np.asarray(low, float), np.asarray(high, float)
        self.x, self.fx = np.asarray(x, float), np.asarray(fx, float)
        self.w, self.fw, self.v, self.fv = w, fw, v, fv
        self.step = np.zeros_like(self.x)  # the last step, d
        # the step before it, e: 0, as in Brent's method, so the first step is a golden one (a
        # parabolic first step through the seeds was tried: one evaluation more on the benchmark)
        self.before = np.zeros_like(self.x)
        self.done = np.zeros(self.x.shape, dtype=bool)

    def next_probe(self, tolerance: float) -> np.ndarray | None:
        """The next point of every group, or None once every bracket is within ``tolerance``."""
        x, low, high = self.x, self.low, self.high
        middle = 0.5 * (low + high)
        self.done = np.abs(x - middle) <= 2.0 * tolerance - 0.5 * (high - low)
        if self.done.all():
            return None
        # the vertex of the parabola through x, w, v (a group with a non-finite value gets NaN
        # here, which no test below accepts: it takes a golden step)
        with np.errstate(invalid="ignore"):
            r = (x - self.w) * (self.fx - self.fv)
            q = (x - self.v) * (self.fx - self.fw)
            p = (x - self.v) * q - (x - self.w) * r
            q = 2.0 * (q - r)
            p = np.where(q > 0, -p, p)
            q = np.abs(q)
            # accepted when it falls inside the bracket and moves less than half the step before last
            parabolic = (
                (np.abs(self.before) > tolerance)
                & (np.abs(p) < np.abs(0.5 * q * self.before))
                & (p > q * (low - x))
                & (p < q * (high - x))
            )
        with np.errstate(divide="ignore", invalid="ignore"):
            vertex_step = np.where(parabolic, p / q, 0.0)
        golden_span = np.where(x >= middle, low - x, high - x)
        step = np.where(parabolic, vertex_step, _CGOLD * golden_span)
        # never closer than the tolerance to a bracket end or to x itself
        towards_middle = np.where(middle >= x, tolerance, -tolerance)
        near_end = parabolic & ((x + step - low < 2.0 * tolerance) | (high - x - step < 2.0 * tolerance))
        step = np.where(near_end, towards_middle, step)
        step = np.where(np.abs(step) >= tolerance, step, np.where(step >= 0, tolerance, -tolerance))
        self.before = np.where(self.done, self.before, np.where(parabolic, self.step, golden_span))
        self.step = np.where(self.done, self.step, step)
        return np.where(self.done, x, x + self.step)

    def update(self, u: np.ndarray, fu: np.ndarray) -> None:
        """Take the values ``fu`` at the probes ``u`` into the bracket and the three best points."""
        x = self.x
        better = ~self.done & (fu <= self.fx)
        worse = ~self.done & ~better
        self.low = np.where(better & (u >= x), x, np.where(worse & (u < x), u, self.low))
        self.high = np.where(better & (u < x), x, np.where(worse & (u >= x), u, self.high))
        second = worse & ((fu <= self.fw) | (self.w == x))
        third = worse & ~second & ((fu <= self.fv) | (self.v == x) | (self.v == self.w))
        self.v, self.fv = (
            np.where(better | second, self.w, np.where(third, u, self.v)),
            np.where(better | second, self.fw, np.where(third, fu, self.fv)),
        )
        self.w, self.fw = (
            np.where(better, x, np.where(second, u, self.w)),
            np.where(better, self.fx, np.where(second, fu, self.fw)),
        )
        self.x, self.fx = np.where(better, u, x), np.where(better, fu, self.fx)


def smooth(
    members: np.ndarray | Sequence[np.ndarray | PathLike],
    bodyparts: Sequence[str] | None = None,
    *,
    s: float | Sequence[float] | None = None,
    centre: CentreMode = "median",
    var_mode: VarMode = "confidence_weighted",
    keypoint_groups: Sequence[Sequence[int | str]] | None = None,
    fit_range: FitRangeArg = None,
    noise: NoiseModel = "auto",
    outliers: OutlierMode = "auto",
    outlier_threshold: float = 5.0,
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
        outliers: ``"reject"``: members far from the smoothed trace (``outlier_threshold``
            robust sd) are dropped and the smoother rerun (:mod:`.robust`); ``"none"``: every
            member counts (eks's model); ``"auto"``: reject when ``s`` is fitted.

    The choices are validated by :class:`SmoothingParams` (as ``elp smooth`` and
    ``SmoothingParamSet`` do): :class:`SmoothingParamError` names the key at fault.
    """
    params = SmoothingParams.from_dict(
        dict(
            s=s,
            centre=centre,
            var_mode=var_mode,
            keypoint_groups=keypoint_groups,
            fit_range=fit_range,
            noise=noise,
            outliers=outliers,
            outlier_threshold=outlier_threshold,
        )
    )
    data, names = load_members(members, bodyparts)
    groups = keypoint_group_ids(params.keypoint_groups, names)
    keep = fit_range_mask(params.fit_range, data.shape[1])
    robust = is_robust(params.outliers, params.s)

    def one_pass(members: np.ndarray, previous: SmoothingResult | None) -> SmoothingResult:
        if previous is None:  # the plain pass only has to place the trace for the rejection: a coarse s search
            return _smooth_members(members, names, params, groups, keep, "largest", coarse=robust)
        return _smooth_members(members, names, params, groups, keep, "median", around=previous.s)

    return smooth_rejecting(data, params, one_pass)


def _smooth_members(
    data: np.ndarray,
    names: list[str],
    params: SmoothingParams,
    groups: np.ndarray,
    keep: np.ndarray,
    lone: str,
    coarse: bool = False,
    around: np.ndarray | None = None,
) -> SmoothingResult:
    """One pass of the smoother over (M, T, K, 3) members (NaN members are missing).

    ``coarse``: a grid of 3 in log s, refined to 0.1; ``around`` (s per keypoint from an earlier
    pass): a search within 3 of its log (removing outliers moves s by up to e^2), to 0.01.
    """
    s = params.s
    stats = ensemble_stats(data, params.centre, params.var_mode, lone)
    n_frames, n_keypoints = stats.likelihood.shape
    calibrated = _is_calibrated(params.noise, s)
    noise_var = shrink_variance(stats.variance) if calibrated else stats.variance
    series = _Series.from_observations(_to_series(stats.centre), _to_series(noise_var))
    fit_series = series.crop(keep) if not keep.all() else series
    if s is None:
        if around is not None:
            first = np.unique(groups, return_index=True)[1]  # s of each group's first keypoint
            s_group, _ = fit_smoothing_param(
                fit_series, np.repeat(groups, 2), calibrated, grid_step=3.0, tolerance=0.01, around=around[first]
            )
        else:
            s_group, _ = fit_smoothing_param(
                fit_series,
                np.repeat(groups, 2),
                calibrated,
                grid_step=3.0 if coarse else 1.0,
                tolerance=0.1 if coarse else 0.005,
            )
        s_keypoint = s_group[groups]
    else:
        s_keypoint = _fixed_s(s, n_keypoints)
    s_series = np.repeat(s_keypoint, 2)
    if not calibrated:
        scale = np.ones(2 * n_keypoints)
    elif fit_series is series:
        scale = None  # fitted on the smoothing's own factors below
    else:
        scale = _log_likelihood(fit_series, s_series, fit_series.constant_log_likelihood(), None)[1]
    mean, variance, log_lik, scale = _smooth_series(series, s_series, scale)
    mean, variance = _from_series(mean, n_keypoints), _from_series(variance, n_keypoints)
    _blank_unobserved(series, mean, variance, names)
    return SmoothingResult(
        x=mean[..., 0],
        y=mean[..., 1],
        likelihood=stats.likelihood,
        centre=stats.centre,
        ensemble_var=stats.variance,
        posterior_var=variance,
        s=s_keypoint,
        bodyparts=names,
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
    typical = nanmedian(variance, axis=0)[None]  # all-NaN series stay NaN
    return 0.5 * (variance + typical)


def _smooth_series(
    series: _Series, s: np.ndarray, noise_scale: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Posterior mean (offset restored), posterior variance, log-likelihood and noise scale per
    series; ``noise_scale`` None fits it at ``s`` from the same factors (see ``_log_likelihood``)."""
    d, lower = _factor(series, s)
    mean = _posterior_mean(series, d, lower)
    log_lik, noise_scale = _log_likelihood_at(series, s, series.constant_log_likelihood(), d, mean, noise_scale)
    variance = _posterior_variance(d, lower, series.w.shape) * noise_scale[:, None]
    return mean + series.offset[:, None], variance, log_lik, noise_scale


def _to_series(values: np.ndarray) -> np.ndarray:
    """(T, K, 2) -> (2K, T); series 2k is keypoint k's x, 2k+1 its y."""
    return np.ascontiguousarray(values.reshape(values.shape[0], -1).T)


def _from_series(values: np.ndarray, n_keypoints: int) -> np.ndarray:
    return values.T.reshape(-1, n_keypoints, 2)


def _blank_unobserved(series: _Series, mean: np.ndarray, variance: np.ndarray, names: list[str]) -> None:
    """A keypoint never observed has no estimate at all: NaN rather than a made-up 0."""
    never = np.asarray(~(series.n_obs > 0).reshape(-1, 2).any(axis=1))
    if never.any():
        warnings.warn(
            f"no member ever predicted {[n for n, b in zip(names, never.tolist()) if b]}; left NaN", stacklevel=3
        )
        mean[:, never] = np.nan
        variance[:, never] = np.nan


def _fixed_s(s: float | Sequence[float], n_keypoints: int) -> np.ndarray:
    values = (
        np.broadcast_to(np.asarray(s, dtype=float), (n_keypoints,)) if np.ndim(s) == 0 else (np.asarray(s, dtype=float))
    )
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
    for index in np.flatnonzero(ids < 0).tolist():
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
    fit_range: FitRangeArg,
    n_frames: int,
) -> np.ndarray:
    """(T,) bool: frames used to choose s. Ranges are 0-based, half-open, None = open end."""
    keep = np.zeros(n_frames, dtype=bool)
    if fit_range is None:
        keep[:] = True
        return keep
    pairs: list = (
        [fit_range] if len(fit_range) == 2 and not isinstance(fit_range[0], (tuple, list)) else list(fit_range)
    )
    for first, last in pairs:
        start = 0 if first is None else int(first)
        stop = n_frames if last is None else int(last)
        if not 0 <= start < stop <= n_frames:
            raise ValueError(f"fit_range ({start}, {stop}) is empty or outside 0..{n_frames}")
        keep[start:stop] = True
    return keep
