"""Ensemble statistics: the members' centre (median or mean) and variance per frame and keypoint."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from element_lightning_pose.engine.eks.params import (
    CENTRES,
    VAR_MODES,
    CentreMode,
    VarMode,
    check_choice,
)

VAR_FLOOR = 1e-12  # eks clips R_t to this; keeps w_t = 1/R_t finite when all members agree
LIKELIHOOD_FLOOR = 1e-5  # eks: a single member's variance is 1 / max(likelihood, 1e-5)


@dataclass
class EnsembleStats:
    """Per-frame ensemble summary. Arrays are (T, K, 2) except ``likelihood`` (T, K)."""

    centre: np.ndarray
    variance: np.ndarray  # observation noise R_t; NaN where no member is valid
    likelihood: np.ndarray


def ensemble_stats(
    members: np.ndarray, centre: CentreMode = "median", var_mode: VarMode = "confidence_weighted", lone: str = "largest"
) -> EnsembleStats:
    """Centre, noise variance and mean likelihood of (M, T, K, 3) members.

    A member counts at a frame only where its x, y and likelihood are all finite. The variance
    is the population variance of the valid members (as eks's ``nanvar``), divided by their
    mean likelihood in ``confidence_weighted`` mode. A one-member ensemble has no spread: like
    eks we use ``1 / max(likelihood, 1e-5)``. In a larger ensemble, a frame where a single
    member survives gets the largest variance seen on that series (its spread is unknown);
    ``lone="median"`` gives it the series' median variance instead (after robust rejection the
    other members were outliers, see :mod:`.robust`, and the survivor is a typical member).
    """
    check_choice("centre", centre, CENTRES)
    check_choice("var_mode", var_mode, VAR_MODES)
    n_members = members.shape[0]
    valid = valid_members(members)  # (M, T, K)
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
        var = _fill_lone_member_frames(var, n_valid, lone == "median")
    missing = n_valid == 0
    var[missing] = np.nan
    return EnsembleStats(centre_values, var, np.where(missing, 0.0, mean_lik))


def valid_members(members: np.ndarray) -> np.ndarray:
    """(M, T, K) where x, y and likelihood are all finite (``isfinite(...).all(-1)`` reduces
    over an axis of 3 and is several times slower)."""
    valid = np.isfinite(members[..., 0])
    for c in range(1, members.shape[-1]):
        valid &= np.isfinite(members[..., c])
    return valid


def nanmedian(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """``np.nanmedian`` along ``axis`` by one sort (numpy's falls back to a Python loop over the
    other axes when NaN are present); NaN where a slice has no finite value."""
    moved = np.moveaxis(values, axis, 0)
    n_valid = (~np.isnan(moved)).sum(axis=0)
    ordered = np.sort(moved, axis=0)  # NaN sort last
    low = np.take_along_axis(ordered, (np.maximum(n_valid - 1, 0) // 2)[None], axis=0)[0]
    high = np.take_along_axis(ordered, np.minimum(n_valid // 2, moved.shape[0] - 1)[None], axis=0)[0]
    return np.where(n_valid > 0, (low + high) / 2.0, np.nan)


def _nanmedian_members(coords: np.ndarray, n_valid: np.ndarray) -> np.ndarray:
    """Median over axis 0 ignoring NaN; sorting puts NaN last, so the middle is at (n-1)//2."""
    ordered = np.sort(coords, axis=0)
    n = np.broadcast_to(n_valid[None, ..., None], (1, *coords.shape[1:]))
    low = np.take_along_axis(ordered, np.maximum(n - 1, 0) // 2, axis=0)[0]
    high = np.take_along_axis(ordered, np.minimum(n // 2, coords.shape[0] - 1), axis=0)[0]
    return np.where(n[0] > 0, (low + high) / 2.0, np.nan)


def _fill_lone_member_frames(var: np.ndarray, n_valid: np.ndarray, median: bool = False) -> np.ndarray:
    lone = n_valid == 1
    if not lone.any():
        return var
    if median:
        typical = nanmedian(np.where((n_valid >= 2)[..., None], var, np.nan), axis=0)
        typical = np.where(np.isfinite(typical), typical, 1.0 / LIKELIHOOD_FLOOR)
        return np.where(lone[..., None], np.broadcast_to(typical, var.shape), var)
    finite = np.where(np.isfinite(var) & (n_valid >= 2)[..., None], var, -np.inf)
    largest = finite.max(axis=0)  # (K, 2)
    largest = np.where(np.isfinite(largest), largest, 1.0 / LIKELIHOOD_FLOOR)
    return np.where(lone[..., None], np.broadcast_to(largest, var.shape), var)
