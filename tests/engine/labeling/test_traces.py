"""A video's prediction files as the review reads them: kinds, series, decimation, worst frames, prefill."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from element_lightning_pose.engine.data.keypoints import write_keypoint_csv, write_predictions
from element_lightning_pose.engine.eks.io import EKS_COORDS
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.inference.metrics import diagnostics_table, temporal_norm
from element_lightning_pose.engine.labeling.prefill import read_prefill, save_prefill
from element_lightning_pose.engine.labeling.traces import (
    PredictionTable,
    find_prediction_files,
    is_about,
    minmax_decimate,
    read_prediction_table,
    sniff,
    worst_frames,
)

PARTS = ["nose", "tail"]


def smooth_predictions(n: int, seed: int = 0) -> np.ndarray:
    """(n, 2, 3) slowly moving keypoints with likelihood 0.9."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    x = 30 + 10 * np.sin(t / 15 + np.array([0, 1])) + rng.normal(0, 0.1, (n, 2))
    y = 20 + 5 * np.cos(t / 20 + np.array([0, 2])) + rng.normal(0, 0.1, (n, 2))
    return np.stack([x, y, np.full((n, 2), 0.9)], axis=-1)


def test_files_are_told_apart_by_their_header(tmp_path):
    predictions = smooth_predictions(20)
    write_predictions(tmp_path / "video00.csv", predictions, PARTS)
    eks = np.concatenate([predictions, np.ones((20, 2, 6))], axis=-1)
    write_keypoint_csv(tmp_path / "video00_eks.csv", eks, PARTS, EKS_COORDS)
    diagnostics_table(predictions, PARTS).to_csv(tmp_path / "video00_diagnostics.csv")
    write_keypoint_csv(tmp_path / "CollectedData.csv", predictions[..., :2], PARTS, ("x", "y"), index=["a.png"] * 20)
    write_keypoint_csv(tmp_path / "video00_3d.csv", np.zeros((20, 2, 3)), PARTS, ("x", "y", "z"))
    (tmp_path / "video00_notes.csv").write_text("not,a,keypoint,file\n")
    kinds = {p.name: (sniff(p).kind if sniff(p) else None) for p in tmp_path.iterdir()}
    assert kinds == {
        "video00.csv": "predictions",
        "video00_eks.csv": "eks",
        "video00_diagnostics.csv": "diagnostics",
        "CollectedData.csv": None,
        "video00_3d.csv": None,
        "video00_notes.csv": None,
    }


def test_prediction_files_of_a_video_are_found_anywhere_in_the_project(tmp_path):
    predictions = smooth_predictions(10)
    for relative in ("models/m1/predictions/video00.csv", "eks/video00.smoothed.csv", "video01.csv", "video001.csv"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        write_predictions(tmp_path / relative, predictions, PARTS)
    (tmp_path / "labeled-data" / "video00").mkdir(parents=True)
    write_predictions(tmp_path / "labeled-data" / "video00" / "video00.csv", predictions, PARTS)  # not searched
    found = [p.path.relative_to(tmp_path).as_posix() for p in find_prediction_files(tmp_path, "video00")]
    assert found == ["eks/video00.smoothed.csv", "models/m1/predictions/video00.csv"]
    assert is_about("top.csv", "session1_top", view="top") and not is_about("top.csv", "session1_top")


def test_series_of_an_eks_file_and_a_companion_diagnostics(tmp_path):
    predictions = smooth_predictions(30)
    posterior_var = np.full((30, 2, 2), 4.0)
    posterior_var[12, 1] = [100.0, 44.0]
    eks = np.concatenate([predictions, predictions[..., :2], np.ones((30, 2, 2)), posterior_var], axis=-1)
    write_keypoint_csv(tmp_path / "video00.csv", eks, PARTS, EKS_COORDS, index=np.arange(5, 35))
    diagnostics_table(predictions, PARTS, index=np.arange(5, 35)).to_csv(tmp_path / "video00_diagnostics.csv")
    table = read_prediction_table(tmp_path / "video00.csv")
    assert table.kind == "eks" and table.frames[0] == 5 and table.frames[-1] == 34
    assert list(table.series) == ["x", "y", "likelihood", "temporal_norm", "posterior_sd", "ensemble_sd"]
    assert table.series["posterior_sd"][12, 1] == pytest.approx(np.sqrt(72.0))
    assert table.criteria() == ["likelihood", "jump", "posterior_sd", "ensemble_sd"]
    assert [w.frame for w in worst_frames(table, "posterior_sd", n=1)] == [17]  # row 12 is frame 17


def test_a_long_range_is_decimated_and_keeps_its_spikes():
    n = 100_000
    values = np.random.default_rng(1).normal(0, 1, (n, 3))
    values[61_234, 1] = 500.0
    values[7, 2] = -300.0
    values[40_000:40_500, 0] = np.nan
    frames, kept = minmax_decimate(np.arange(n) + 10, values, 1000)
    assert kept.shape == frames.shape and kept.shape[0] <= 1000
    assert frames[np.nanargmax(kept[:, 1]), 1] == 61_244 and np.nanmax(kept[:, 1]) == 500.0
    assert frames[np.nanargmin(kept[:, 2]), 2] == 17 and np.nanmin(kept[:, 2]) == -300.0
    assert np.isnan(kept[:, 0]).any()  # the gap stays a gap
    assert (np.diff(frames, axis=0) >= 0).all()  # in frame order
    small, whole = minmax_decimate(np.arange(50), values[:50], 1000)
    np.testing.assert_array_equal(whole, values[:50])


def test_worst_frames_find_a_planted_bad_frame_and_are_spread():
    predictions = smooth_predictions(200)
    predictions[77, 0, :2] += 40.0  # one wrong frame: away from both neighbours
    predictions[120, 1, 2] = 0.02
    predictions[121:124, 1, 2] = 0.05  # a low-likelihood moment of several frames: listed once
    path_table = _table(predictions)
    jumps = worst_frames(path_table, "jump", n=3, min_gap=10)
    assert jumps[0].frame == 77 and jumps[0].bodypart == "nose" and "neighbouring" in jumps[0].reason
    assert all(abs(a.frame - b.frame) >= 10 for a in jumps for b in jumps if a is not b)
    low = worst_frames(path_table, "likelihood", n=5, min_gap=10)
    assert low[0].frame == 120 and low[0].score == pytest.approx(0.98)
    assert not any(121 <= w.frame <= 124 for w in low)
    with pytest.raises(ProjectError, match="offers"):
        worst_frames(path_table, "posterior_sd")


def _table(predictions):
    series = {"x": predictions[..., 0], "y": predictions[..., 1], "likelihood": predictions[..., 2]}
    series["temporal_norm"] = temporal_norm(predictions)
    return PredictionTable(Path("video00.csv"), "predictions", PARTS, np.arange(len(predictions)), series)


def test_a_file_of_labeled_images_is_not_a_video_prediction(tmp_path):
    write_predictions(tmp_path / "v.csv", smooth_predictions(3), PARTS, index=["a.png", "b.png", "c.png"])
    with pytest.raises(ProjectError, match="not frame numbers"):
        read_prediction_table(tmp_path / "v.csv")
    frame = pd.read_csv(tmp_path / "v.csv", header=[0, 1, 2], index_col=0)
    frame.index = [0, 2, 1]
    frame.to_csv(tmp_path / "w.csv")
    with pytest.raises(ProjectError, match="must increase"):
        read_prediction_table(tmp_path / "w.csv")


def test_the_prefill_of_an_image_is_its_latest_entry(tmp_path):
    assert read_prefill(tmp_path, "labeled-data/v/img00001.png") is None
    save_prefill(tmp_path, "labeled-data/v/img00001.png", {"nose": (1.0, 2.0, 0.5)}, source="a.csv", frame=1)
    save_prefill(tmp_path, "labeled-data/v/img00002.png", {"nose": (3.0, float("nan"), 0.0)}, source="a.csv", frame=2)
    save_prefill(tmp_path, "labeled-data/v/img00001.png", {"nose": (5.0, 6.0, 0.9)}, source="b.csv", frame=1)
    latest = read_prefill(tmp_path, "labeled-data/v/img00001.png")
    assert latest is not None and latest["points"] == {"nose": [5.0, 6.0, 0.9]} and latest["source"] == "b.csv"
    second = read_prefill(tmp_path, "labeled-data/v/img00002.png")
    assert second is not None and second["points"] == {"nose": [3.0, None, 0.0]} and second["frame"] == 2
