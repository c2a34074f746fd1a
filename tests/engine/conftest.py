"""Fixtures shared by the engine tests: one tiny synthetic project and one model trained on it.

Training even a tiny model costs seconds on a 2-core CPU, so the tests that only need *a*
trained model (inference, evaluation, model-directory reading) share this one instead of each
training their own from a copy of the tiny configuration. Tests must not modify either; a
test that needs to change a model or a project makes its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# The smallest configuration that trains a real network end to end: 64x64 input, random init.
TINY_CONFIG = {
    "data": {"image_resize": [64, 64]},
    "model": {"backbone": "resnet18", "pretrained": False},
    "training": {"max_epochs": 1, "unfreeze_epoch": 0, "num_workers": 0},
}


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory):
    """A synthetic project: frames 64 high x 96 wide (so predictions must be mapped back from
    the 64x64 network input), 12 labeled frames, one 45-frame video."""
    from element_lightning_pose.synthetic.projects import make_synthetic_project

    return make_synthetic_project(
        tmp_path_factory.mktemp("tiny_project"), image_size=(64, 96), n_labeled=12, n_video_frames=45
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_project, tmp_path_factory) -> Path:
    """The model directory of ``TINY_CONFIG`` trained on ``tiny_project`` (read-only)."""
    from element_lightning_pose.engine.training import train

    return train(
        TINY_CONFIG, tiny_project.root, tmp_path_factory.mktemp("tiny_model") / "model", progress=False
    ).model_dir
