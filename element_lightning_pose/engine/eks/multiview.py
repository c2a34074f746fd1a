"""Multi-view (:func:`smooth_multiview`): a keypoint seen in V views is one latent 3-D random walk
``z_t`` observed as ``y_t = mean + C z_t + v_t`` (2V numbers), ``C`` from a PCA on the frames
where every view is seen and the members agree. The posterior precision is block-tridiagonal
(band width 3), so the same closed forms hold with LAPACK's banded Cholesky (``dpbtrf``); only
the posterior covariance blocks of the final pass need a loop over time.

See :mod:`.singleview` for the single-view model, the likelihood and the ``s`` search
that this module reuses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.linalg import lapack

from element_lightning_pose.engine.eks.ensemble import VAR_FLOOR, ensemble_stats
from element_lightning_pose.engine.eks.io import SmoothingResult, load_members
from element_lightning_pose.engine.eks.params import (
    CentreMode,
    FitRangeArg,
    NoiseModel,
    OutlierMode,
    SmoothingParams,
    VarMode,
)
from element_lightning_pose.engine.eks.robust import smooth_rejecting
from element_lightning_pose.engine.eks.singleview import (
    _LOG_2PI,
    NOISE_SCALE_BOUNDS,
    _fixed_s,
    _is_calibrated,
    _keypoint_index,
    fit_range_mask,
    maximise_over_log_s,
    shrink_variance,
    smooth,
)
from element_lightning_pose.engine.types import PathLike


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


def _fit_latent_model(
    values: np.ndarray, variances: np.ndarray, n_latent: int, quantile: float, names: list[str]
) -> _LatentModel:
    """PCA per physical keypoint on the frames where all views are seen and members agree
    (largest ensemble variance at most its ``quantile`` percentile)."""
    observed = np.isfinite(values) & np.isfinite(variances)
    n_groups, _, n_obs = values.shape
    if n_obs <= n_latent:
        raise ValueError(f"multi-view needs more than {n_latent} observed numbers per frame (2 x views); got {n_obs}")
    means, loadings, prior_vars = [], [], []
    for g in range(n_groups):
        complete = observed[g].all(axis=1)
        spread = np.where(complete, variances[g].max(axis=1), np.inf)
        if complete.sum() <= n_latent:
            raise ValueError(
                f"view group {names[g]}: only {complete.sum()} frames seen in all "
                f"views; need more than {n_latent} to fit the latent model"
            )
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
    constant = (
        -0.5 * observed.sum(axis=(1, 2)) * _LOG_2PI
        + 0.5 * np.log(np.where(observed, model.w, 1.0)).sum(axis=(1, 2))
        - 0.5 * np.log(model.prior_var).sum(axis=1)
    )
    residual = (model.w * (model.y - model.predict(latent)) ** 2).sum(axis=(1, 2))
    residual += (latent[:, 0] ** 2 / model.prior_var).sum(axis=1)
    residual += (np.diff(latent, axis=1) ** 2).sum(axis=(1, 2)) / s
    log_det = 2.0 * np.log(factor[0]).reshape(n_groups, -1).sum(axis=1)
    n_obs = observed.sum(axis=(1, 2))
    if noise_scale is None:
        noise_scale = np.clip(residual / np.maximum(n_obs, 1), *NOISE_SCALE_BOUNDS)
    log_lik = (
        constant
        - 0.5 * model.n_latent * (n_frames - 1) * np.log(s)
        - 0.5 * log_det
        - 0.5 * residual / noise_scale
        - 0.5 * n_obs * np.log(noise_scale)
    )
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
    fit_range: FitRangeArg = None,
    n_latent: int = 3,
    pca_quantile: float = 50.0,
    noise: NoiseModel = "auto",
    outliers: OutlierMode = "auto",
    outlier_threshold: float = 5.0,
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
    group, or ``None``. ``noise`` and ``outliers`` as in :func:`smooth` (calibrated: one noise
    scale per group; rejection: each view's members against the joint trace in that view, so
    a member wrong in one view is caught by the others, :mod:`.robust`).
    """
    params = SmoothingParams.from_dict(
        dict(
            s=s,
            centre=centre,
            var_mode=var_mode,
            fit_range=fit_range,
            noise=noise,
            outliers=outliers,
            outlier_threshold=outlier_threshold,
        )
    )
    data, names = load_members(members, bodyparts)
    return smooth_rejecting(
        data,
        params,
        lambda members, previous: _multiview_pass(
            members, names, view_groups, params, n_latent, pca_quantile, "largest" if previous is None else "median"
        ),
    )


def _multiview_pass(
    data: np.ndarray,
    names: list[str],
    view_groups: Sequence[Sequence[int | str]],
    params: SmoothingParams,
    n_latent: int,
    pca_quantile: float,
    lone: str,
) -> SmoothingResult:
    """One pass of the latent smoother over (M, T, K, 3) members (NaN members are missing)."""
    s, centre, var_mode, noise, fit_range = params.s, params.centre, params.var_mode, params.noise, params.fit_range
    groups = [[_keypoint_index(k, names) for k in group] for group in view_groups]
    flat = [k for group in groups for k in group]
    if len(set(flat)) != len(flat) or any(len(g) != len(groups[0]) or len(g) < 2 for g in groups):
        raise ValueError(
            "view_groups: every group needs the same number (>= 2) of distinct "
            f"keypoints, each keypoint in one group only; got {view_groups}"
        )
    alone = [k for k in range(len(names)) if k not in set(flat)]
    result = (
        smooth(
            data,
            names,
            s=s if s is None or np.ndim(s) == 0 else None,
            centre=centre,
            var_mode=var_mode,
            fit_range=fit_range,
            noise=noise,
            outliers="none" if lone == "median" else params.outliers,
            outlier_threshold=params.outlier_threshold,
        )
        if alone
        else None
    )
    stats = ensemble_stats(data, centre, var_mode, lone)
    calibrated = _is_calibrated(noise, s)
    noise_var = shrink_variance(stats.variance) if calibrated else stats.variance
    group_names = ["+".join(names[k] for k in g) for g in groups]
    model = _fit_latent_model(
        _view_stack(stats.centre, groups), _view_stack(noise_var, groups), n_latent, pca_quantile, group_names
    )
    fit_model = _crop_latent(model, fit_range_mask(fit_range, stats.centre.shape[0]))
    unit = None if calibrated else np.ones(len(groups))
    s_group = (
        _fixed_s(s, len(groups))
        if s is not None
        else maximise_over_log_s(lambda s_: _latent_log_likelihood(fit_model, s_, unit)[0], len(groups))[0]
    )
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
            mean[:, k] = fitted[g, :, 2 * v : 2 * v + 2]
            variance[:, k] = fitted_var[g, :, 2 * v : 2 * v + 2]
            s_keypoint[k], log_lik[k], noise_scale[k] = s_group[g], group_ll[g], scale[g]
    return SmoothingResult(
        x=mean[..., 0],
        y=mean[..., 1],
        likelihood=stats.likelihood,
        centre=stats.centre,
        ensemble_var=stats.variance,
        posterior_var=variance,
        s=s_keypoint,
        bodyparts=names,
        log_likelihood=log_lik,
        noise_scale=noise_scale,
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


def smooth_ensemble(
    members: np.ndarray | Sequence[np.ndarray | PathLike],
    bodyparts: Sequence[str] | None = None,
    params: SmoothingParams | Mapping[str, Any] | None = None,
    source: str = "smoothing parameters",
) -> SmoothingResult:
    """The smoother that ``params`` choose: :func:`smooth_multiview` when they name
    ``view_groups``, else :func:`smooth` (what ``elp smooth`` and ``EnsembleSmoothing`` call)."""
    chosen = params if isinstance(params, SmoothingParams) else SmoothingParams.from_dict(params, source)
    values = chosen.model_dump()
    view_groups = values.pop("view_groups")
    if view_groups:
        values.pop("keypoint_groups")
        return smooth_multiview(members, view_groups, bodyparts, **values)
    return smooth(members, bodyparts, **values)
