"""The whole flow on a tiny synthetic project, values checked against the engine."""

from __future__ import annotations

import numpy as np
import pytest

from element_lightning_pose import dj_compat
from tests.pipeline.conftest import TINY_PARAMS


def test_paramset_is_deduplicated_by_content(lp, flow):
    # counted before and after: other modules of the session keep parameter sets of their own
    before = len(lp.train.TrainingParamSet())
    reordered = {k: TINY_PARAMS[k] for k in reversed(list(TINY_PARAMS))}
    assert lp.train.TrainingParamSet.insert_new_params("same, reordered", reordered) == flow["paramset_idx"]
    assert len(lp.train.TrainingParamSet()) == before


def test_paramset_rejects_unknown_key_and_inserts_nothing(lp, flow):
    from element_lightning_pose.engine.config import ConfigError

    before = len(lp.train.TrainingParamSet())
    with pytest.raises(ConfigError, match="learning_rat"):
        lp.train.TrainingParamSet.insert_new_params("typo", {"training": {"learning_rat": 0.1}})
    assert len(lp.train.TrainingParamSet()) == before


def test_training_rows_describe_the_model_dirs(lp, flow):
    rows = dj_compat.fetch_dicts(lp.train.ModelTraining & flow["vs_key"])
    assert len(rows) == 2
    for row in rows:
        model_dir = lp.model.processed_dir() / row["model_dir"]
        assert (model_dir / row["best_checkpoint"]).is_file()
        assert row["n_epochs"] >= 1 and row["wall_time_s"] > 0
        assert "train_loss" in row["history"] or len(row["history"]) > 0


def test_recording_info_reads_the_video(lp, flow):
    dj_compat.populate(lp.model.RecordingInfo, flow["rec"])
    info = (lp.model.RecordingInfo & flow["rec"]).fetch1()
    assert info["n_frames"] == 48
    assert info["fps"] == pytest.approx(30.0)
    assert (info["width"], info["height"]) == (64, 64)


def test_evaluation_per_split(lp, flow):
    models = [{"model_name": n} for n in flow["names"]]
    result = dj_compat.populate(lp.model.ModelEvaluation, models)
    assert result.errors == []
    rows = dj_compat.fetch_dicts(lp.model.ModelEvaluation & models)
    assert len(rows) == 2
    for row in rows:
        assert row["n_train"] + row["n_val"] + row["n_test"] == 16
        assert row["train_mean_px"] is not None and row["train_mean_px"] >= 0
    parts = lp.model.ModelEvaluation.BodyPart & {"model_name": flow["names"][0], "split": "train"}
    assert len(parts) == len(flow["project"].bodyparts)


def test_pose_estimation_equals_engine_output(lp, flow):
    from element_lightning_pose.engine.inference.models import load_model
    from element_lightning_pose.engine.inference.predict import predict_video

    dj_compat.populate(lp.model.RecordingInfo, flow["rec"])
    result = dj_compat.populate(lp.model.PoseEstimation, flow["rec"], reserve_jobs=True)
    assert result.errors == []
    assert len(lp.model.PoseEstimation & flow["rec"]) == 2
    for name in flow["names"]:
        key = {**flow["rec"], "model_name": name}
        stored = lp.model.PoseEstimation.get_trajectory(key)
        assert stored.shape == (48, 3 * len(flow["project"].bodyparts))
        engine = predict_video(
            load_model(lp.model.Model.model_path({"model_name": name})),
            flow["project"].videos[0],
            batch_size=8,
            progress=False,
        ).predictions
        np.testing.assert_allclose(stored.to_numpy().reshape(engine.shape), engine, atol=1e-4)
        assert list(stored.columns.get_level_values("bodyparts").unique()) == flow["project"].bodyparts


def test_ensemble_equals_engine_smoother(lp, flow):
    from element_lightning_pose.engine import eks

    dj_compat.populate(lp.model.PoseEstimation, flow["rec"])
    idx = lp.ensemble.SmoothingParamSet.insert_new_params("auto s", {})
    key = lp.ensemble.EnsembleSmoothingTask.create(flow["rec"], flow["names"], idx)
    result = dj_compat.populate(lp.ensemble.EnsembleSmoothing, key, reserve_jobs=True)
    assert result.errors == [] and result.success_count == 1
    members = np.stack(
        [
            lp.model.PoseEstimation.get_trajectory({**flow["rec"], "model_name": n}).to_numpy().reshape(48, -1, 3)
            for n in sorted(flow["names"])
        ]
    )
    expected = eks.smooth(members, flow["project"].bodyparts)
    for i, bp in enumerate(flow["project"].bodyparts):
        row = (lp.ensemble.EnsembleSmoothing.BodyPartPosition & key & {"body_part": bp}).fetch1()
        np.testing.assert_allclose(row["x_pos"], expected.x[:, i], atol=1e-6)
        np.testing.assert_allclose(row["posterior_var"], expected.posterior_var[:, i], atol=1e-6)
        assert np.isfinite(row["x_pos"]).all()


def test_pose_estimation_at_a_checked_precision(lp, flow):
    """A task's precision runs through the accuracy gate on the VideoSet's labeled frames; the row
    records the arithmetic used, and the model directory keeps what was checked."""
    import json

    from element_lightning_pose.engine.inference.precision import unavailable_reason
    from element_lightning_pose.engine.model_dir import PRECISION_JSON

    model = lp.model
    name = flow["names"][0]
    rec = {**flow["rec"], "recording_id": 2}
    model.VideoRecording.insert1({**rec, "device": "cam_top"})
    video = (model.VideoRecording.File & flow["rec"]).fetch1("file_path")
    model.VideoRecording.File.insert1({**rec, "file_id": 0, "file_path": video})
    with pytest.raises(ValueError, match="precision 'ov-bf16': this table takes fp32, bf16, int8, auto; 'auto' runs"):
        model.PoseEstimationTask.generate(rec, name, precision="ov-bf16")  # auto chooses it, where it pays
    key = model.PoseEstimationTask.generate(rec, name, batch_size=8, precision="int8")
    assert (model.PoseEstimationTask & key).fetch1("precision") == "int8"
    result = dj_compat.populate(model.PoseEstimation, key, reserve_jobs=True)
    assert result.errors == []
    used = (model.PoseEstimation & key).fetch1("precision_used")
    # the task joined with its result (the usual query) is one row: no shared secondary attribute
    assert len((model.PoseEstimationTask * model.PoseEstimation) & key) == 1
    model_dir = model.Model.model_path({"model_name": name})
    if unavailable_reason("int8", __import__("torch").device("cpu")) is not None:
        assert used == "fp32"
        return
    checks = json.loads((model_dir / PRECISION_JSON).read_text())
    (device,) = checks["devices"].values()
    assert used == ("int8" if device["results"]["int8"]["passed"] else "fp32")
