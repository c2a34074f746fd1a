"""Ensemble statistics: the members' centre (median or mean) and variance per frame and keypoint."""

from __future__ import annotations

import functools
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
    # x and y copied into one contiguous (M, T, K, 2) block: reductions over the members are
    # then row additions, several times faster than over a strided view of the 3 coords
    if valid.all():  # the common case, without the masking
        n_valid = np.full(valid.shape[1:], n_members)
        coords = members[..., :2].copy()
        mean_lik = members[..., 2].sum(axis=0) / n_members
        mean = coords.sum(axis=0) / n_members
        var = ((coords - mean) ** 2).sum(axis=0) / n_members
        centre_values = _median_members(coords, None) if centre == "median" else mean  # coords sorted
    else:
        n_valid = valid.sum(axis=0)
        inside = valid[..., None]
        coords = members[..., :2].copy()
        coords[~valid] = 0.0
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_lik = np.where(valid, members[..., 2], 0.0).sum(axis=0) / n_valid  # NaN if none
            mean = coords.sum(axis=0) / n_valid[..., None]
            deviation = coords - mean
            deviation *= inside
            var = (deviation**2).sum(axis=0) / n_valid[..., None]
        if centre == "median":
            coords[~valid] = np.inf  # sorts last
            centre_values = _median_members(coords, n_valid[..., None])
        else:
            centre_values = mean
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
    valid = ~np.isnan(moved)
    return _median_members(np.where(valid, moved, np.inf), valid.sum(axis=0))


NETWORK_MEMBERS = 16  # up to this many members, a sorting network beats np.sort over axis 0


def _median_members(values: np.ndarray, n_valid: np.ndarray | None) -> np.ndarray:
    """Median over axis 0 (the members, or any axis :func:`nanmedian` moved there) of ``values``
    whose invalid entries are +inf (they sort last); ``n_valid`` (broadcast against
    ``values[0]``) counts the valid ones, ``None``: all are. NaN where none is valid. ``values``
    is scratch: it may be sorted in place."""
    n_members, shape = values.shape[0], values.shape[1:]
    ordered = values.reshape(n_members, -1)  # a view where values is contiguous, else a copy
    if n_members > NETWORK_MEMBERS:
        ordered.sort(axis=0)
    else:
        for i, j in sorting_network(n_members):
            low = np.minimum(ordered[i], ordered[j])
            np.maximum(ordered[i], ordered[j], out=ordered[j])
            ordered[i] = low
    median = (ordered[(n_members - 1) // 2] + ordered[n_members // 2]) / 2.0
    if n_valid is not None:
        # entries with fewer valid members (a few, usually) take their own middle
        n = np.broadcast_to(n_valid, shape).ravel()
        partial = np.flatnonzero(n < n_members)
        picked, n = ordered[:, partial], n[partial]
        low = np.take_along_axis(picked, (np.maximum(n - 1, 0) // 2)[None], axis=0)[0]
        high = np.take_along_axis(picked, (n // 2)[None], axis=0)[0]
        median[partial] = np.where(n > 0, (low + high) / 2.0, np.nan)
    return median.reshape(shape)


@functools.cache
def sorting_network(n: int) -> tuple[tuple[int, int], ...]:
    """Batcher's odd-even merge sort for ``n`` items: compare-exchange pairs (i < j), in order.

    Each pair is two whole-array operations (min and max), and there are O(n log^2 n) of them:
    for a handful of ensemble members this sorts along the member axis several times faster
    than ``np.sort``, which sorts every tiny column separately.
    """
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return tuple(pairs)


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
