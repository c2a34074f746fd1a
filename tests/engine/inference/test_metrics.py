"""Pixel error, temporal norm, summaries, and evaluate() on a trained model directory."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from element_lightning_pose.engine.data.projects import load_project
from element_lightning_pose.engine.inference.evaluate import evaluate
from element_lightning_pose.engine.inference.metrics import (
    ALL,
    pixel_errors,
    summarise,
    temporal_norm,
    temporal_norm_table,
)
from element_lightning_pose.engine.inference.models import load_model
from element_lightning_pose.engine.inference.predict import predict_labeled


def test_pixel_error_is_euclidean_and_nan_when_unlabeled():
    truth = np.array([[[0.0, 0.0], [np.nan, np.nan]], [[10.0, 10.0], [5.0, 5.0]]])
    predictions = np.array([[[3.0, 4.0, 0.9], [1.0, 1.0, 0.9]], [[10.0, 10.0, 1.0], [5.0, 6.0, 0.2]]])
    errors = pixel_errors(predictions, truth)
    assert errors[0, 0] == 5.0 and np.isnan(errors[0, 1])
    assert errors[1].tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="differ"):
        pixel_errors(predictions[:1], truth)


def test_temporal_norm_is_the_frame_to_frame_displacement():
    track = np.zeros((4, 2, 3))
    track[:, 0, 0] = [0, 3, 3, 0]
    track[:, 1, 1] = [0, 0, 4, 4]
    norm = temporal_norm(track)
    assert np.isnan(norm[0]).all()
    assert norm[1:].tolist() == [[3.0, 0.0], [0.0, 4.0], [3.0, 0.0]]
    table = temporal_norm_table(track, ["a", "b"])
    assert list(table.columns) == ["frame", "bodypart", "temporal_norm_px"]
    assert len(table) == 8 and table.loc[(table.frame == 2) & (table.bodypart == "b"), "temporal_norm_px"].item() == 4.0


def test_summaries_per_keypoint_and_overall():
    table = pd.DataFrame({"bodypart": ["a"] * 10 + ["b"] * 4, "error_px": list(range(10)) + [1.0, 3.0, np.nan, 5.0]})
    summary = summarise(table, "error_px")
    assert summary.loc["a", "mean"] == 4.5 and summary.loc["a", "median"] == 4.5
    assert summary.loc["a", "p90"] == pytest.approx(np.percentile(np.arange(10), 90))
    assert summary.loc["b", "count"] == 3 and summary.loc["b", "mean"] == 3.0
    assert summary.loc[ALL, "count"] == 13
    assert summary.loc[ALL, "mean"] == pytest.approx(np.nanmean(table["error_px"]))


def test_evaluate_reports_each_labeled_keypoint_with_its_split(tiny_project, tiny_model_dir):
    project, model_dir = tiny_project, tiny_model_dir
    labels, _ = load_project(project.root)
    table = evaluate(model_dir, labels)
    assert list(table.columns) == ["image", "split", "bodypart", "error_px", "likelihood"]
    assert len(table) == len(labels) * len(labels.bodyparts)
    splits = pd.read_csv(model_dir / "splits.csv").set_index("image")["split"]
    assert (table["split"] == table["image"].map(splits)).all()
    assert set(table["split"]) <= {"train", "val", "test"}
    expected = pixel_errors(predict_labeled(load_model(model_dir), labels), labels.keypoints)
    np.testing.assert_allclose(table["error_px"].to_numpy(), expected.reshape(-1), rtol=0, atol=1e-6)
    by_split = summarise(table, "error_px", by=("split", "bodypart"))
    assert (ALL, ALL) in by_split.index
    # frames outside the model's split (e.g. newly labeled) are reported as unused
    import dataclasses
    import shutil

    renamed = dataclasses.replace(labels.subset([0]), image_paths=["labeled-data/new.png"])
    new_image = labels.root / "labeled-data" / "new.png"
    shutil.copy(labels.root / labels.image_paths[0], new_image)
    try:
        assert set(evaluate(model_dir, renamed)["split"]) == {"unused"}
    finally:  # the project is shared by other tests
        new_image.unlink()
