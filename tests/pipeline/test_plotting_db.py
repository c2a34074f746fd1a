"""The DataJoint-facing plotting functions on the pipeline's tiny flow (real database)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from element_lightning_pose import dj_compat, plotting


@pytest.fixture(scope="module")
def populated(lp, flow):
    models = [{"model_name": n} for n in flow["names"]]
    for table, restriction in (
        (lp.model.RecordingInfo, flow["rec"]),
        (lp.model.ModelEvaluation, models),
        (lp.model.PoseEstimation, flow["rec"]),
    ):
        assert dj_compat.populate(table, restriction).errors == []
    idx = lp.ensemble.SmoothingParamSet.insert_new_params("auto s", {})
    key = {**flow["rec"], "ensemble_id": 9}  # an id of its own: test_pipeline_flow creates ensemble 1
    if not lp.ensemble.EnsembleSmoothingTask & key:
        lp.ensemble.EnsembleSmoothingTask.create(flow["rec"], flow["names"], idx, ensemble_id=9)
    assert dj_compat.populate(lp.ensemble.EnsembleSmoothing, key).errors == []
    return {**flow, "ensemble_key": key}


def test_pose_and_ensemble_trace_plots(lp, populated, tmp_path):
    key = {**populated["rec"], "model_name": populated["names"][0]}
    figure = plotting.plot_pose_estimation(key, tmp_path / "pose.png", keypoints=["nose"])
    assert cv2.imread(str(tmp_path / "pose.png")) is not None
    assert figure.axes[-1].get_xlabel() == "time (s)"  # fps from RecordingInfo
    stored = lp.model.PoseEstimation.get_trajectory(key)
    np.testing.assert_allclose(figure.axes[0].get_lines()[0].get_ydata(), stored.iloc[:, 0].to_numpy())

    figure = plotting.plot_ensemble(populated["ensemble_key"], tmp_path / "ens.png", keypoints=["nose", "head"])
    bands = [c for ax in figure.axes for c in ax.collections if c.get_gid() == plotting.POSTERIOR_BAND_GID]
    assert len(bands) == 4
    assert len(figure.axes[0].get_lines()) == len(populated["names"]) + 1  # members + smoothed
    with pytest.raises(ValueError, match="2 rows match"):
        plotting.plot_pose_estimation(populated["rec"])


def test_labeled_videos_from_keys(lp, populated, tmp_path):
    key = {**populated["rec"], "model_name": populated["names"][0]}
    out = plotting.labeled_video_for(key)
    assert out.name.endswith("_labeled.mp4") and out.is_relative_to(lp.model.processed_dir())
    from element_lightning_pose.engine.data.video import video_info

    assert video_info(out).n_frames == 48
    out = plotting.labeled_video_for(populated["ensemble_key"], tmp_path / "ens.mp4", start=10, stop=20)
    assert video_info(out).n_frames == 10


def test_model_evaluation_plot(lp, populated, tmp_path):
    figure = plotting.plot_model_evaluation({"model_name": populated["names"][0]}, tmp_path / "eval.png")
    assert cv2.imread(str(tmp_path / "eval.png")) is not None
    rows = dj_compat.fetch_dicts(lp.model.ModelEvaluation.BodyPart & {"model_name": populated["names"][0]})
    heights = sorted(round(p.get_height(), 6) for p in figure.axes[0].patches if np.isfinite(p.get_height()))
    expected = [r["mean_px"] for r in rows if r["mean_px"] is not None]
    master = dj_compat.fetch_dicts(lp.model.ModelEvaluation & {"model_name": populated["names"][0]})[0]
    expected += [master[f"{s}_mean_px"] for s in ("train", "val", "test") if master[f"n_{s}"]]
    assert heights == sorted(round(v, 6) for v in expected)
