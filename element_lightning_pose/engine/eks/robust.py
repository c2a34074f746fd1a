"""Robust observations: members that are confidently wrong are rejected against the smoothed trace.

Why. A network's gross errors often keep a moderate or high likelihood (a paw taken for the
other paw, a swap with a neighbouring keypoint). In the plain model one such member at frame
``t`` drags the median to the next order statistic and inflates the ensemble variance, so the
frame is nearly ignored: its information is lost although four good members saw the truth.
When several members fail together the median itself is wrong. Likelihoods cannot tell either
case apart, and the members' spread at one frame cannot say *which* members are wrong.

Model. Each member's prediction is a mixture: with high probability ``x_mt = z_t + e_mt``,
``e_mt ~ N(0, sigma_mk^2 I)`` (``sigma_mk``: member m's own error scale on keypoint k,
heteroscedastic members allowed), otherwise an outlier from a broad distribution. Given the
posterior of ``z_t`` from a first pass, the squared distance of an inlier to the posterior
mean is about ``sigma_mk^2 + v_t`` per coordinate (``v_t``: posterior variance), so::

    r_mt^2 = |x_mt - mu_t|^2 / (2 (sigma_mk^2 + v_t))      ~ chi^2_2 / 2 for an inlier

and the mixture's posterior inlier probability falls from ~1 to ~0 over a narrow band of
``r``: a hard rejection at ``r > threshold`` (default 5, i.e. an inlier is rejected with
probability ``exp(-threshold^2 / 2) ~ 4e-6``) is its maximum a posteriori version (the EM
of the mixture, with hard assignments). ``sigma_mk`` is estimated robustly from the members'
own distances, ``sigma = median_t |x_mt - mu_t| / sqrt(2 ln 2)`` (the median of a 2-D
Gaussian's radius), so outliers do not inflate it.

Iteration. Pass 0 smooths all members (the plain model: an outlier frame has a large
variance and is bridged, so ``mu_t`` stays near the truth even where the median is wrong).
Each further pass rejects members against the previous pass's trace, recomputes the ensemble
centre and variance from the members kept, refits ``s`` and the noise scale and smooths again.
Rejected members are treated as missing, so the existing rules apply: a frame with no member
left keeps them all (every member far from the trace means the trace is wrong there, e.g. a
fast movement, not the members), a frame with one member left gets the series' median
variance (it is a member confirmed by the others' absence of contradiction, not an unknown).

Calibration. The posterior variance stays calibrated because the noise scale ``c`` is refitted
on the cleaned ensemble (see :mod:`.singleview`), and a rejected member never enters a frame's
variance: the remaining spread is that of inliers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from element_lightning_pose.engine.eks.ensemble import nanmedian, valid_members
from element_lightning_pose.engine.eks.io import SmoothingResult
from element_lightning_pose.engine.eks.params import SmoothingParams

# median of |e| for e ~ N(0, sigma^2 I_2) is sigma sqrt(2 ln 2)
_RAYLEIGH_MEDIAN = float(np.sqrt(2.0 * np.log(2.0)))
SIGMA_FLOOR = 0.05  # px: members that agree exactly (synthetic copies) still get a scale


def member_distances(members: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """(M, T, K) distance of each member's x, y to the smoothed trace ``mean`` (T, K, 2)."""
    dx = members[..., 0] - mean[None, ..., 0]
    dy = members[..., 1] - mean[None, ..., 1]
    return np.sqrt(dx * dx + dy * dy)  # not a sum over an axis of 2, several times slower


def member_scales(distances: np.ndarray) -> np.ndarray:
    """(M, K) robust error scale sigma_mk of each member on each keypoint (NaN distances ignored)."""
    scale = nanmedian(distances, axis=1) / _RAYLEIGH_MEDIAN  # NaN: a member never valid there
    return np.maximum(np.where(np.isfinite(scale), scale, SIGMA_FLOOR), SIGMA_FLOOR)


def reject_members(
    members: np.ndarray, mean: np.ndarray, posterior_var: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Members (M, T, K, 3) with outliers set to NaN, and the (M, T, K) rejection mask.

    A member is an outlier at (t, k) when ``r_mt > threshold`` (module docstring). Where every
    valid member would be rejected none is (the trace, not the ensemble, is wrong there).
    """
    valid = valid_members(members)
    distances = member_distances(members, mean)
    scales = member_scales(np.where(valid, distances, np.nan))  # (M, K)
    spread = 2.0 * (scales[:, None, :] ** 2 + np.nanmean(posterior_var, axis=-1)[None])
    rejected = valid & (distances**2 > threshold**2 * spread)
    none_left = (valid & ~rejected).sum(axis=0) == 0
    rejected &= ~none_left[None]
    if not rejected.any():
        return members, rejected
    cleaned = members.copy()
    cleaned[rejected] = np.nan
    return cleaned, rejected


ROBUST_PASSES = 2  # rejection passes after the plain one (the second catches what the first unmasked)


def is_robust(outliers: str, s) -> bool:
    """Whether members are rejected (``outliers`` already validated): "auto" when s is fitted."""
    return outliers == "reject" or (outliers == "auto" and s is None)


def smooth_rejecting(
    members: np.ndarray,
    params: SmoothingParams,
    one_pass: Callable[[np.ndarray, SmoothingResult | None], SmoothingResult],
) -> SmoothingResult:
    """The iteration above, for any smoother: ``one_pass(members, previous)`` smooths (M, T, K, 3)
    members (``previous`` is None for the plain pass, else the pass whose trace the members
    were rejected against). Without rejection (``params``), only the plain pass runs."""
    result = one_pass(members, None)
    if is_robust(params.outliers, params.s):
        for _ in range(ROBUST_PASSES):
            trace = np.stack([result.x, result.y], axis=-1)
            cleaned, _ = reject_members(members, trace, result.posterior_var, params.outlier_threshold)
            result = one_pass(cleaned, result)
    return result
