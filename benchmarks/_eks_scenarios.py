"""Scenario ensembles for the EKS benchmark: each factor of the member errors varies on its own.

A scenario starts from a clean ensemble (random-walk truth, step sd 1-3 px/frame; members with
their own Gaussian noise, sd 1-4 px, likelihood 0.8-1) and adds one kind of failure, so that no
single outlier mix decides the comparison (see ``SCENARIOS``):

* ``outliers``: a share of (frame, keypoint) where one member jumps 20-150 px, with a likelihood
  that is low (0.01-0.2, what our old benchmark had), uniform (0-1) or high (0.8-1, a network's
  confident mistake);
* ``group``: runs of 1-10 frames where 2 or 3 of the 5 members fail together (the same wrong
  place, e.g. the other paw), high likelihood, so the median is wrong;
* ``gaps``: long runs (50-300 frames) where every member is missing (on half the keypoints);
* ``hetero``: one member is 4x noisier than the rest, and every member's noise doubles in bursts;
* ``drift``: two members drift slowly away from the truth (up to 15 px over ~2,000 frames);
* ``mixed``: the independent check's mix (3% outliers, likelihood 0.3-1, 1% frames missing on
  half the keypoints).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Scenario:
    name: str
    outlier_rate: float = 0.0
    outlier_likelihood: tuple[float, float] = (0.01, 0.2)
    group_rate: float = 0.0  # share of frames starting a group failure (per keypoint)
    group_size: int = 3
    gap_share: float = 0.0
    missing_share: float = 0.0  # short all-NaN runs (1-5 frames)
    hetero: bool = False
    drift: bool = False
    notes: dict = field(default_factory=dict)


LOW, UNIFORM, HIGH = (0.01, 0.2), (0.0, 1.0), (0.8, 1.0)
SCENARIOS = [
    Scenario("clean"),
    *[
        Scenario(f"outliers {int(r * 100)}% lik {name}", outlier_rate=r, outlier_likelihood=lik)
        for r in (0.02, 0.05, 0.10)
        for name, lik in (("low", LOW), ("uniform", UNIFORM), ("high", HIGH))
    ],
    Scenario("group of 2 fails (high lik)", group_rate=0.005, group_size=2),
    Scenario("group of 3 fails (high lik)", group_rate=0.005, group_size=3),
    Scenario("long gaps (5%)", gap_share=0.05),
    Scenario("heteroscedastic members", hetero=True),
    Scenario("slow drifts (2 members)", drift=True),
    Scenario("mixed (independent check)", outlier_rate=0.03, outlier_likelihood=(0.3, 1.0), missing_share=0.01),
]


def make_scenario(
    scenario: Scenario, n_frames: int, n_keypoints: int, n_members: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(truth (T, K, 2), members (M, T, K, 3)) for ``scenario``."""
    rng = np.random.default_rng(seed)
    step_sd = rng.uniform(1.0, 3.0, n_keypoints)
    start = rng.uniform(100.0, 500.0, (n_keypoints, 2))
    truth = start[None] + np.cumsum(rng.normal(0.0, 1.0, (n_frames, n_keypoints, 2)) * step_sd[None, :, None], axis=0)
    noise_sd = rng.uniform(1.0, 4.0, (n_members, 1, n_keypoints, 1))
    if scenario.hetero:
        noise_sd[0] *= 4.0
        burst = np.repeat(rng.random(n_frames // 100 + 1) < 0.2, 100)[:n_frames]
        noise_sd = noise_sd * np.where(burst, 2.0, 1.0)[None, :, None, None]
    xy = truth[None] + rng.normal(0.0, 1.0, (n_members, n_frames, n_keypoints, 2)) * noise_sd
    likelihood = rng.uniform(0.8, 1.0, (n_members, n_frames, n_keypoints))
    if scenario.outlier_rate:
        t_idx, k_idx = np.nonzero(rng.random((n_frames, n_keypoints)) < scenario.outlier_rate)
        m_idx = rng.integers(0, n_members, t_idx.size)
        xy[m_idx, t_idx, k_idx] += _offsets(rng, t_idx.size, 20.0, 150.0)
        likelihood[m_idx, t_idx, k_idx] = rng.uniform(*scenario.outlier_likelihood, t_idx.size)
    if scenario.group_rate:
        for t, k in zip(*np.nonzero(rng.random((n_frames, n_keypoints)) < scenario.group_rate)):
            movers = rng.choice(n_members, scenario.group_size, replace=False)
            run = slice(t, min(t + int(rng.integers(1, 11)), n_frames))
            wrong = truth[run, k] + _offsets(rng, 1, 20.0, 100.0)  # the same wrong place
            xy[movers, run, k] = wrong[None] + rng.normal(0.0, 1.0, (len(movers), *wrong.shape))
            likelihood[movers, run, k] = rng.uniform(0.8, 1.0, (len(movers), wrong.shape[0]))
    if scenario.drift:
        t = np.arange(n_frames)
        for m in (0, 1):
            phase, angle = rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi, n_keypoints)
            amplitude = 15.0 * np.maximum(np.sin(2 * np.pi * t / 4000.0 + phase), 0.0)
            xy[m] += amplitude[:, None, None] * np.stack([np.cos(angle), np.sin(angle)], -1)[None]
    members = np.concatenate([xy, likelihood[..., None]], axis=-1)
    # missing frames on the first half of the keypoints only: eks 4.6.2 turns a keypoint with
    # a frame that no member sees into NaN throughout, so the other half stays comparable
    gappy = slice(0, max(n_keypoints // 2, 1))
    if scenario.gap_share:
        members[:, _runs(rng, n_frames, scenario.gap_share, 50, 300), gappy] = np.nan
    if scenario.missing_share:
        members[:, _runs(rng, n_frames, scenario.missing_share, 1, 5), gappy] = np.nan
    return truth, members


def _offsets(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    angle, radius = rng.uniform(0.0, 2.0 * np.pi, n), rng.uniform(low, high, n)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1)


def _runs(rng: np.random.Generator, n_frames: int, share: float, shortest: int, longest: int) -> np.ndarray:
    """Frame indices in runs of ``shortest``-``longest`` covering about ``share`` (never frame 0)."""
    wanted = int(round(share * n_frames))
    mask = np.zeros(n_frames, dtype=bool)
    while mask.sum() < wanted:
        begin = int(rng.integers(1, n_frames))
        mask[begin : begin + int(rng.integers(shortest, longest + 1))] = True
    return np.flatnonzero(mask)
