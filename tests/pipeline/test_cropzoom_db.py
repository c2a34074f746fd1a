"""PoseEstimation runs a two-stage crop-zoom model as it runs any other (original-frame pixels)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from element_lightning_pose import dj_compat
from tests.pipeline.conftest import TINY_PARAMS

MODEL_NAME = "cropzoom_tiny"


@pytest.fixture
def crop_zoom_recording(lp, lp_root):
    """A crop-zoom model registered from its directory, and a recording of its own session.

    Everything inserted here is deleted afterwards: the other pipeline tests count the shared
    schema's models, tasks and pose rows.
    """
    from element_lightning_pose import pipeline
    from element_lightning_pose.engine.training import train

    root, project = lp_root
    config = {**TINY_PARAMS, "crop_zoom": {"enabled": True, "detector_resize": [32, 32], "min_detection_confidence": 0}}
    model_dir = lp.model.processed_dir() / "models" / MODEL_NAME
    train(config, project.root, model_dir, progress=False)
    lp.model.Model.insert_new_model(MODEL_NAME, model_dir, model_description="two stages")
    session = pipeline.add_session("mcz01", dt.datetime(2024, 6, 3, 9, 0), species="Mus musculus")
    lp.Device.insert1({"device": "cam_top", "device_description": "top camera"}, skip_duplicates=True)
    rec = {**session, "recording_id": 1}
    lp.model.VideoRecording.insert1({**rec, "device": "cam_top"})
    lp.model.VideoRecording.File.insert1(
        {**rec, "file_id": 0, "file_path": project.videos[0].relative_to(root).as_posix()}
    )
    key = lp.model.PoseEstimationTask.generate(rec, MODEL_NAME, batch_size=8)
    yield {"rec": rec, "key": key, "model_dir": model_dir, "project": project}
    for table in (
        lp.model.PoseEstimation.BodyPartPosition,
        lp.model.PoseEstimation,
        lp.model.PoseEstimationTask,
        lp.model.RecordingInfo,
        lp.model.VideoRecording.File,
        lp.model.VideoRecording,
    ):
        (table & rec).delete_quick()
    (lp.model.Model.BodyPart & {"model_name": MODEL_NAME}).delete_quick()
    (lp.model.Model & {"model_name": MODEL_NAME}).delete_quick()


def test_pose_estimation_runs_a_crop_zoom_model(lp, crop_zoom_recording):
    from element_lightning_pose.engine.inference.models import CropZoomModel, load_model
    from element_lightning_pose.engine.inference.predict import predict_video

    rec, key, project = crop_zoom_recording["rec"], crop_zoom_recording["key"], crop_zoom_recording["project"]
    row = (lp.model.Model & {"model_name": MODEL_NAME}).fetch1()
    assert row["best_checkpoint"] == "pose/checkpoints/best.ckpt"
    assert lp.model.Model.bodyparts({"model_name": MODEL_NAME}) == project.bodyparts
    dj_compat.populate(lp.model.RecordingInfo, rec)
    result = dj_compat.populate(lp.model.PoseEstimation, key, reserve_jobs=True)
    assert result.errors == [] and result.success_count == 1
    stored = lp.model.PoseEstimation.get_trajectory(key).to_numpy().reshape(48, len(project.bodyparts), 3)
    model = load_model(lp.model.Model.model_path({"model_name": MODEL_NAME}))
    assert isinstance(model, CropZoomModel)
    engine = predict_video(model, project.videos[0], batch_size=8, progress=False).predictions
    np.testing.assert_allclose(stored, engine, atol=1e-4)
    # original-frame pixels: within the 64 x 64 frame grown by a crop on each side at most
    assert np.isfinite(stored).all()
    crop = model.crop_size[0]
    assert (stored[..., :2] > -crop).all() and (stored[..., :2] < 64 + crop).all()


def test_a_crop_zoom_model_with_a_replaced_detector_is_refused(lp, crop_zoom_recording):
    """Issue 26, item 15: detector/ replaced by a model of the body parts predicted with rc 0.
    Registering such a directory is refused; one tampered with after registration fails its
    PoseEstimation naming the stage, and stores nothing."""
    import shutil

    from element_lightning_pose.engine.model_dir import ModelDirectoryError

    rec, key, model_dir = crop_zoom_recording["rec"], crop_zoom_recording["key"], crop_zoom_recording["model_dir"]
    tampered = model_dir.with_name(MODEL_NAME + "_tampered")
    shutil.copytree(model_dir, tampered)
    try:
        shutil.rmtree(tampered / "detector")
        shutil.copytree(tampered / "pose", tampered / "detector")  # a complete model of every body part
        with pytest.raises(ModelDirectoryError, match=r"detector/model\.json: the crop-zoom detector stage predicts"):
            lp.model.Model.insert_new_model(MODEL_NAME + "_tampered", tampered)
        assert not lp.model.Model & {"model_name": MODEL_NAME + "_tampered"}

        shutil.rmtree(model_dir / "detector")
        shutil.copytree(tampered / "detector", model_dir / "detector")  # the registered model's, after the fact
        dj_compat.populate(lp.model.RecordingInfo, rec)
        result = dj_compat.populate(lp.model.PoseEstimation, key, suppress_errors=True)
        assert result.success_count == 0 and len(result.errors) == 1
        assert "the crop-zoom detector stage predicts" in result.errors[0][1]
        assert not lp.model.PoseEstimation & key
    finally:
        shutil.rmtree(tampered, ignore_errors=True)
