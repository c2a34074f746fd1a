"""`elp train` then `elp predict` as a user runs them (separate processes), read by movement."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from element_lightning_pose.synthetic.projects import make_synthetic_project
from tests.conftest import elp

pytestmark = pytest.mark.slow  # trains networks: deselect with -m 'not slow'


def test_train_predict_and_load_in_movement(tmp_path):
    from movement.io import load_poses

    project = make_synthetic_project(tmp_path / "project", seed=5, image_size=(64, 64), n_labeled=12, n_video_frames=40)
    trained = elp(
        "train",
        str(project.root),
        "--model-dir",
        str(tmp_path / "model"),
        "--no-progress",
        "--set",
        "model.backbone=resnet18",
        "--set",
        "model.pretrained=false",
        "--set",
        "data.image_resize=[64,64]",
        "--set",
        "training.max_steps=3",
        "--set",
        "training.num_workers=0",
    )
    assert trained.returncode == 0, trained.stdout + trained.stderr
    predicted = elp(
        "predict", str(tmp_path / "model"), str(project.videos[0]), "-o", str(tmp_path / "preds"), "--no-progress"
    )
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    csv = tmp_path / "preds" / f"{project.videos[0].stem}.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = load_poses.from_lp_file(csv, fps=30)
    assert list(dataset.keypoints.values) == project.bodyparts
    position = dataset.position.transpose("time", "keypoints", "space", "individuals").values[..., 0]
    assert position.shape == (40, len(project.bodyparts), 2)
    assert np.isfinite(position).all()
    assert (position >= -0.5).all() and (position <= 63.5).all()
