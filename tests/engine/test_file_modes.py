"""Every file the project writes is readable by the lab: 0644 files and 0755 folders under umask 022.

One tiny semi-supervised run (so the frame cache is among its outputs) feeds prediction,
smoothing and the NWB export, as a lab's pipeline does; each output tree is walked. A failure
in the middle of a write leaves no file and no temporary behind (training and NWB).
"""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from element_lightning_pose.engine.eks import smooth
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.inference.models import load_model
from element_lightning_pose.engine.inference.predict import predict_video
from element_lightning_pose.engine.training import train
from element_lightning_pose.engine.training.unlabeled import build_frame_cache
from element_lightning_pose.export.nwb import CameraPose, SessionInfo, SubjectInfo, append_pose, write_nwb
from element_lightning_pose.synthetic.projects import make_synthetic_project
from tests.engine.training.test_train import break_validation_images

pytestmark = pytest.mark.slow  # trains networks: deselect with -m 'not slow'

TINY_SEMI = {
    "data": {"image_resize": [64, 64]},
    "model": {"backbone": "resnet18", "pretrained": False},
    "training": {"max_epochs": 1, "max_steps": 2, "unfreeze_epoch": 0, "num_workers": 0, "batch_size": 8},
    "losses": {"unsupervised": ["temporal"], "clip_length": 8, "warmup_epochs": 0},
}
SUBJECT = SubjectInfo(subject_id="m1", species="Mus musculus", sex="F", age="P90D")


@pytest.fixture(scope="module", autouse=True)
def lab_umask():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_synthetic_project(
        tmp_path_factory.mktemp("modes") / "project", image_size=(64, 64), n_labeled=20, n_video_frames=40
    )


@pytest.fixture(scope="module")
def trained(project, tmp_path_factory):
    return train(TINY_SEMI, project.root, tmp_path_factory.mktemp("modes_model") / "model", progress=False)


def wrong_modes(*paths: Path) -> dict[str, str]:
    """Every file (not 0644) and folder (not 0755) at or below ``paths``, with its mode."""
    wrong = {}
    for path in paths:
        for entry in [path, *path.rglob("*")] if path.is_dir() else [path]:
            mode = stat.S_IMODE(entry.lstat().st_mode)
            expected = 0o755 if entry.is_dir() else 0o644
            if mode != expected:
                wrong[str(entry)] = oct(mode)
    return wrong


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_synthetic_project_is_readable_by_the_lab(project):
    assert wrong_modes(project.root) == {}


def test_every_training_output_is_readable_by_the_lab(trained):
    model_dir = trained.model_dir
    for name in (
        "config.yaml",
        "model.json",
        "splits.csv",
        "metrics.csv",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "frame_cache/frames.npy",
        "frame_cache/frames.json",
    ):
        assert (model_dir / name).is_file(), name
    assert wrong_modes(model_dir) == {}
    assert hidden(model_dir.parent) == [] and hidden(model_dir) == []


def test_frame_cache_outside_the_model_is_readable_by_the_lab(project, tmp_path):
    cache = build_frame_cache(project.videos, (32, 32), tmp_path / "cache", max_frames=20, clip_length=8)
    assert cache.path.is_file()
    assert wrong_modes(tmp_path / "cache") == {}


def test_prediction_smoothing_and_nwb_outputs_are_readable_by_the_lab(trained, project, tmp_path):
    model = load_model(trained.model_dir, device="cpu")
    out = tmp_path / "predictions"
    predictions = predict_video(
        model,
        project.videos[0],
        stop=20,
        out_csv=out / "video00.csv",
        diagnostics_csv=out / "video00_diagnostics.csv",
        progress=False,
    ).predictions
    jittered = predictions.copy()
    jittered[..., :2] += np.random.default_rng(0).normal(0, 0.5, jittered[..., :2].shape)
    result = smooth([predictions, jittered], model.bodyparts, s=1.0)
    result.to_csv(tmp_path / "smoothed" / "video00.csv")
    camera = CameraPose(
        camera_name="cam",
        video_path=str(project.videos[0]),
        bodyparts=list(model.bodyparts),
        x=result.x,
        y=result.y,
        likelihood=result.likelihood,
        image_width=64,
        image_height=64,
        confidence_definition="softmax peak",
        description="tiny ensemble",
        scorer="tiny",
        fps=30.0,
    )
    session = SessionInfo(
        session_id="s1", session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc), session_description="file modes"
    )
    nwb = write_nwb(tmp_path / "nwb" / "pose.nwb", session, SUBJECT, [camera])
    append_pose(nwb, [replace(camera, camera_name="cam2")])
    assert wrong_modes(out, tmp_path / "smoothed", tmp_path / "nwb") == {}
    assert sorted(p.name for p in out.iterdir()) == ["video00.csv", "video00_diagnostics.csv"]
    assert [p.name for p in (tmp_path / "nwb").iterdir()] == ["pose.nwb"]


def test_a_training_that_fails_mid_fit_leaves_no_model_directory(trained, project, tmp_path):
    # undecodable validation images: epoch 0 trains and checkpoints, epoch 1's validation fails
    broken = break_validation_images(project.root, trained.model_dir, tmp_path / "broken")
    config = {
        **TINY_SEMI,
        "training": {**TINY_SEMI["training"], "max_steps": None, "max_epochs": 2, "check_val_every_n_epoch": 2},
    }
    with pytest.raises(ProjectError, match="unreadable"):
        train(config, broken, tmp_path / "models" / "m", progress=False)
    assert list((tmp_path / "models").iterdir()) == []


def test_an_nwb_write_that_fails_leaves_no_file(project, tmp_path):
    n = 5
    camera = CameraPose(
        camera_name="cam",
        video_path=str(project.videos[0]),
        bodyparts=["a"],
        x=np.zeros((n, 1)),
        y=np.zeros((n, 1)),
        likelihood=np.ones((n, 1)),
        image_width=64,
        image_height=64,
        confidence_definition="c",
        # a lone surrogate passes every check and fails inside the HDF5 write
        description="unwritable \udc80",
        scorer="s",
        fps=30.0,
    )
    session = SessionInfo(
        session_id="s1", session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc), session_description="failure"
    )
    with pytest.raises(Exception, match="Could not create scalar dataset description"):
        write_nwb(tmp_path / "nwb" / "pose.nwb", session, SUBJECT, [camera])
    assert list((tmp_path / "nwb").iterdir()) == []
