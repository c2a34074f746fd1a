"""The scoring helpers of benchmarks/bench_presets.py and bench_small_animal.py (no training).

The benchmark trains for minutes per run; these check what its table says about the runs:
jumps and likelihood on a video, missed keypoints, the best arm and the 10% band.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from tests.conftest import REPO_ROOT


@pytest.fixture
def benches(monkeypatch):
    # the scripts import their neighbours (_common, bench_small_animal) as a script run from benchmarks/ does
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    return importlib.import_module("bench_small_animal"), importlib.import_module("bench_presets")


def test_video_stability_counts_frames_with_a_keypoint_jump_over_30_px_and_the_likelihood(benches):
    small_animal, _ = benches
    predictions = np.zeros((5, 2, 3))
    predictions[..., 2] = [[0.9, 0.5]] * 5
    predictions[2, 0, :2] = [31.0, 0.0]  # away at frame 2, back at frame 3: two jump frames
    predictions[4, 1, :2] = [0.0, 29.0]  # under 30 px: not a jump
    predictions[1, 1, :2] = np.nan  # a miss: counted apart, never a jump
    stability = small_animal.video_stability(predictions)
    assert stability["video_frames"] == 5
    assert (stability["jump_frames"], stability["missed_frames"]) == (2, 1)
    assert stability["likelihood_median"] == pytest.approx(0.7)
    assert stability["likelihood_keypoint_medians"] == pytest.approx([0.5, 0.9])


def test_error_summary_counts_keypoints_the_model_left_unplaced_as_missed(benches):
    small_animal, _ = benches
    summary = small_animal.error_summary(np.array([1.0, 3.0, np.nan]))
    assert summary["mean"] == pytest.approx(2.0)
    assert (summary["n"], summary["missed"]) == (2, 1)
    assert small_animal.error_summary(np.array([np.nan]))["mean"] is None


def _run(project, arm, seed, mean, missed=0, n=10):
    return {"project": project, "arm": arm, "seed": seed, "epochs": 9, "test": {"mean": mean, "p95": 2 * (mean or 0), "n": n, "missed": missed}}  # fmt: skip


def test_best_arm_is_the_lowest_mean_over_seeds_and_the_band_is_10_percent(benches):
    _, presets = benches
    results = [
        _run("mirror", "default", 0, 10.0),
        _run("mirror", "default", 1, 12.0),  # mean 11.0: the best
        _run("mirror", "full_resolution_crops", 0, 12.1),  # 1.10x: within
        _run("mirror", "small_animal_crop_zoom", 0, 12.2),  # 1.11x: outside
    ]
    rows, winners = presets._summary_rows(presets.summarise(results))
    verdict = {row[1]: row[-1] for row in rows}
    assert verdict == {"default": "best", "full_resolution_crops": "yes", "small_animal_crop_zoom": "no"}
    assert winners == ["- **mirror**: default (11.0 px, mean of 2 seeds); within 10%: full_resolution_crops"]


def test_an_arm_that_missed_test_keypoints_is_never_best_however_low_its_mean(benches):
    _, presets = benches
    results = [
        _run("fly", "default", 0, 5.0),
        _run("fly", "full_resolution_crops", 0, 1.0, missed=3, n=7),  # a low mean over the keypoints it placed
        _run("fly", "small_animal_crop_zoom", 0, 1.0),
        _run("fly", "small_animal_crop_zoom", 1, None, missed=10, n=0),
    ]
    summary = presets.summarise(results)
    assert summary["fly"]["small_animal_crop_zoom"]["mean"] is None
    assert summary["fly"]["small_animal_crop_zoom"]["missed"] == 10
    rows, winners = presets._summary_rows(summary)
    assert winners[0].startswith("- **fly**: default")
    verdict = {row[1]: row[-1] for row in rows}
    assert verdict == {
        "default": "best",
        "full_resolution_crops": "no (3 keypoints missed)",
        "small_animal_crop_zoom": "no (a run placed no test keypoint)",
    }
