"""The model directory's description: one writer, one reader, one error class."""

from __future__ import annotations

import json
import os
import stat

import pytest

from element_lightning_pose.engine import model_dir as md
from element_lightning_pose.engine.model_dir import ModelDirectoryError, ModelInfo, read_model_info, write_model_info


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _complete(directory, info) -> None:
    write_model_info(directory, info)
    (directory / "config.yaml").write_text("model:\n  backbone: resnet18\n")
    (directory / "checkpoints").mkdir()
    (directory / "checkpoints" / "best.ckpt").write_bytes(b"weights")


def test_write_then_read_round_trips_and_keeps_unknown_keys(tmp_path, umask_022):
    info = {
        "bodyparts": ["nose", "tail"],
        "frame_size": [64, 96],
        "backbone": "resnet18",
        "n_train": 8,
        "best_val_loss": None,
        "written_by_a_newer_version": {"x": 1},
    }
    _complete(tmp_path, info)
    path = tmp_path / "model.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by the lab's other accounts
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    read = read_model_info(tmp_path)
    assert read.bodyparts == ["nose", "tail"] and read.frame_size == [64, 96] and read.n_train == 8
    assert read.extra == {"written_by_a_newer_version": {"x": 1}}
    assert read.config == {"model": {"backbone": "resnet18"}}
    assert read.checkpoint == tmp_path / "checkpoints" / "best.ckpt" and read.model_dir == tmp_path
    # writing what was read gives the same file: nothing lost, nothing added
    before = json.loads(path.read_text())
    write_model_info(tmp_path, read)
    assert json.loads(path.read_text()) == before
    assert set(before) >= set(info) and {k: before[k] for k in info} == info


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "model.json").unlink(), "model.json: missing"),
        (lambda d: (d / "config.yaml").unlink(), "config.yaml: missing"),
        (lambda d: (d / "checkpoints" / "best.ckpt").unlink(), "best.ckpt: no checkpoint"),
        (lambda d: (d / "model.json").write_text("{not json"), "unreadable model description"),
        (lambda d: (d / "model.json").write_text('{"backbone": "resnet18"}'), "lacks 'bodyparts'"),
        (lambda d: (d / "model.json").write_text('{"bodyparts": "nose"}'), "'bodyparts' must be"),
    ],
)
def test_a_broken_directory_is_one_error_naming_the_file(tmp_path, damage, message):
    _complete(tmp_path, {"bodyparts": ["nose"]})
    damage(tmp_path)
    with pytest.raises(ModelDirectoryError, match=message):
        read_model_info(tmp_path)


def test_writer_refuses_a_description_without_body_parts(tmp_path):
    with pytest.raises(ModelDirectoryError, match="model.json: lacks 'bodyparts'"):
        write_model_info(tmp_path, {"backbone": "resnet18"})
    assert list(tmp_path.iterdir()) == []


def test_one_error_class_for_a_bad_model_directory(tmp_path):
    """load_model and model_dir.read_model_info raise the same class."""
    from element_lightning_pose.engine.inference.models import load_model
    from element_lightning_pose.engine.inference.predict import ModelDirError

    assert ModelDirError is ModelDirectoryError
    with pytest.raises(ModelDirectoryError, match="best.ckpt"):
        load_model(tmp_path)
    with pytest.raises(ModelDirectoryError, match="model.json"):
        read_model_info(tmp_path)


def test_training_writes_model_json_through_the_one_writer(tmp_path, umask_022):
    from element_lightning_pose.engine.training import train
    from element_lightning_pose.synthetic.projects import make_synthetic_project

    project = make_synthetic_project(tmp_path / "project", image_size=(64, 64), n_labeled=8, n_video_frames=12)
    config = {
        "data": {"image_resize": [64, 64]},
        "model": {"backbone": "resnet18", "pretrained": False},
        "training": {"max_steps": 1, "max_epochs": 1, "unfreeze_epoch": 0, "num_workers": 0},
    }
    result = train(config, project.root, tmp_path / "model", progress=False)
    path = result.model_dir / md.MODEL_JSON
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    info = read_model_info(result.model_dir)
    assert isinstance(info, ModelInfo) and info.bodyparts == project.bodyparts and info.extra == {}
