"""Synthetic ensembles with known ground truth for the EKS benchmark (see bench_eks.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SyntheticEnsemble:
    truth: np.ndarray  # (T, K, 2)
    members: np.ndarray  # (M, T, K, 3)
    step_sd: np.ndarray  # (K,) true random-walk step sd per keypoint (px/frame)


def make_ensemble(
    n_frames: int = 10_000,
    n_keypoints: int = 10,
    n_members: int = 5,
    seed: int = 0,
    outlier_rate: float = 0.02,
    group_jump_rate: float = 0.003,
    all_nan_rate: float = 0.0,
) -> SyntheticEnsemble:
    """Random-walk truth observed by members with 1-4 px noise and two kinds of gross errors.

    * each member has its own noise sd per keypoint, uniform in 1-4 px, and likelihood ~0.8-1;
    * ``outlier_rate`` of (frame, keypoint) pairs: one member is off by 30-120 px, with a
      likelihood of 0.01-0.2;
    * ``group_jump_rate`` of (frame, keypoint) pairs: 3 of the members jump together by
      30-120 px (likelihood 0.2-0.6), so the median is wrong;
    * ``all_nan_rate`` of frames: every member is NaN for every keypoint (runs of 1-5 frames).
    """
    rng = np.random.default_rng(seed)
    step_sd = rng.uniform(1.0, 3.0, n_keypoints)
    start = rng.uniform(100.0, 500.0, (n_keypoints, 2))
    steps = rng.normal(0.0, 1.0, (n_frames, n_keypoints, 2)) * step_sd[None, :, None]
    truth = start[None] + np.cumsum(steps, axis=0)
    members = observe(rng, truth, n_members, outlier_rate, group_jump_rate, all_nan_rate)
    return SyntheticEnsemble(truth, members, step_sd)


def make_two_view_ensemble(
    n_frames: int = 10_000, n_points: int = 5, n_members: int = 5, seed: int = 0
) -> SyntheticEnsemble:
    """Points moving in 3-D seen by a top view (X, Y) and a bottom view (X, Z): keypoints
    0..P-1 are the top view, P..2P-1 the bottom view; same member errors as make_ensemble."""
    rng = np.random.default_rng(seed)
    step_sd = rng.uniform(1.0, 3.0, n_points)
    points = rng.uniform(100.0, 500.0, (n_points, 3)) + np.cumsum(
        rng.normal(0.0, 1.0, (n_frames, n_points, 3)) * step_sd[None, :, None], axis=0
    )
    truth = np.concatenate([points[..., [0, 1]], points[..., [0, 2]] + 300.0], axis=1)
    members = observe(rng, truth, n_members, 0.02, 0.003, 0.0)
    return SyntheticEnsemble(truth, members, np.concatenate([step_sd, step_sd]))


def observe(
    rng: np.random.Generator,
    truth: np.ndarray,
    n_members: int,
    outlier_rate: float,
    group_jump_rate: float,
    all_nan_rate: float,
) -> np.ndarray:
    """(M, T, K, 3) member predictions of ``truth`` (T, K, 2), errors as in make_ensemble."""
    n_frames, n_keypoints, _ = truth.shape
    noise_sd = rng.uniform(1.0, 4.0, (n_members, 1, n_keypoints, 1))
    xy = truth[None] + rng.normal(0.0, 1.0, (n_members, n_frames, n_keypoints, 2)) * noise_sd
    likelihood = rng.uniform(0.8, 1.0, (n_members, n_frames, n_keypoints))

    outlier = rng.random((n_frames, n_keypoints)) < outlier_rate
    t_idx, k_idx = np.nonzero(outlier)
    m_idx = rng.integers(0, n_members, t_idx.size)
    xy[m_idx, t_idx, k_idx] += _random_offsets(rng, t_idx.size)
    likelihood[m_idx, t_idx, k_idx] = rng.uniform(0.01, 0.2, t_idx.size)

    jump = rng.random((n_frames, n_keypoints)) < group_jump_rate
    for t, k in zip(*np.nonzero(jump)):
        movers = rng.choice(n_members, 3, replace=False)
        xy[movers, t, k] += _random_offsets(rng, 1)
        likelihood[movers, t, k] = rng.uniform(0.2, 0.6, 3)

    members = np.concatenate([xy, likelihood[..., None]], axis=-1)
    if all_nan_rate > 0:
        members[:, _nan_frames(rng, n_frames, all_nan_rate)] = np.nan
    return members


def _random_offsets(rng: np.random.Generator, n: int) -> np.ndarray:
    angle = rng.uniform(0.0, 2.0 * np.pi, n)
    radius = rng.uniform(30.0, 120.0, n)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)


def _nan_frames(rng: np.random.Generator, n_frames: int, rate: float) -> np.ndarray:
    """Frame indices in runs of 1-5 covering about ``rate`` of the frames (never the first)."""
    wanted = int(round(rate * n_frames))
    frames: set[int] = set()
    while len(frames) < wanted:
        start = int(rng.integers(1, n_frames))
        frames.update(range(start, min(start + int(rng.integers(1, 6)), n_frames)))
    return np.array(sorted(frames))[:wanted] if len(frames) > wanted else np.array(sorted(frames))
