"""The loop's rounds: which folders are a project's models, and the per-split summary of an
evaluation (no network here; the app's tests evaluate a trained model end to end)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from element_lightning_pose.engine.data.labels import read_labels
from element_lightning_pose.engine.labeling.rounds import labels_digest, project_models, split_summary
from element_lightning_pose.synthetic.projects import make_synthetic_project


def test_split_summary_gives_mean_median_p95_per_split_ignoring_unlabeled_points():
    errors = pd.DataFrame(
        {
            "image": ["a", "a", "b", "b", "c", "c"],
            "split": ["train", "train", "train", "train", "unused", "unused"],
            "bodypart": ["nose", "tail"] * 3,
            "error_px": [1.0, 3.0, 2.0, np.nan, np.nan, np.nan],
        }
    )
    summary = split_summary(errors)
    train = summary["train"]
    assert train["frames"] == 2 and train["keypoints"] == 3
    assert train["mean_px"] == pytest.approx(2.0) and train["median_px"] == pytest.approx(2.0)
    assert train["p95_px"] == pytest.approx(np.percentile([1.0, 2.0, 3.0], 95))
    # a frame whose points are all unlabeled is not a measured frame
    assert summary["unused"] == {"frames": 0, "keypoints": 0, "mean_px": None, "median_px": None, "p95_px": None}
    assert summary["val"]["frames"] == 0 and summary["test"]["mean_px"] is None


def test_project_models_are_the_model_folders_not_stages_or_job_records(tmp_path):
    project = make_synthetic_project(tmp_path / "p", image_size=(48, 64), n_labeled=2, n_video_frames=10)
    models = project.root / "models"
    for name in ("broken", ".m.123.abc.tmp", ".jobs", "empty"):
        (models / name).mkdir(parents=True)
    (models / "broken" / "model.json").write_text(json.dumps({"bodyparts": ["a"]}))
    (models / ".m.123.abc.tmp" / "model.json").write_text("{}")
    listed = project_models(project.root)
    assert [m.name for m in listed] == ["broken"]  # a folder without model.json is not a model
    assert listed[0].info is None and "config.yaml" in listed[0].error


def test_labels_digest_changes_with_a_label_and_only_then(tmp_path):
    project = make_synthetic_project(tmp_path / "p", image_size=(48, 64), n_labeled=3, n_video_frames=10)
    labels = read_labels(project.csv_path, project.root)
    assert labels_digest(labels) == labels_digest(read_labels(project.csv_path, project.root))
    labels.keypoints[0, 0, 0] += 0.5
    assert labels_digest(labels) != labels_digest(read_labels(project.csv_path, project.root))
