"""Bad inputs: each a clear error naming what is at fault, and nothing written."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import pandas as pd
import pytest

from element_lightning_pose import dj_compat


def test_corrupt_and_missing_video_fail_recording_info(lp, lp_root, flow):
    root, _ = lp_root
    session = {k: flow["rec"][k] for k in lp.Session.primary_key}
    (root / "bad_videos").mkdir(exist_ok=True)
    (root / "bad_videos" / "garbage.mp4").write_bytes(os.urandom(2048))
    for rec_id, rel in ((900, "bad_videos/garbage.mp4"), (901, "bad_videos/absent.mp4")):
        rec = {**session, "recording_id": rec_id}
        lp.model.VideoRecording.insert1({**rec, "device": "cam_top"})
        lp.model.VideoRecording.File.insert1({**rec, "file_id": 0, "file_path": rel})
        result = dj_compat.populate(lp.model.RecordingInfo, rec, suppress_errors=True)
        assert len(result.errors) == 1
        assert rel.split("/")[-1] in result.errors[0][1]
        assert not lp.model.RecordingInfo & rec


def test_project_with_missing_image_is_not_registered(lp, lp_root):
    from element_lightning_pose.engine.errors import ProjectError

    root, project = lp_root
    broken = root / "projects" / "broken"
    shutil.copytree(project.root, broken)
    frame = pd.read_csv(broken / "CollectedData.csv", header=[0, 1, 2], index_col=0)
    missing = frame.index[3]
    (broken / missing).unlink()
    before = len(lp.train.VideoSet())
    with pytest.raises(ProjectError, match=str(missing).split("/")[-1]):
        lp.train.VideoSet.insert_project("projects/broken")
    assert len(lp.train.VideoSet()) == before


def test_model_dir_without_checkpoint_is_refused(lp, flow, tmp_path):
    from element_lightning_pose.engine.model_dir import ModelDirectoryError

    source = lp.model.Model.model_path({"model_name": flow["names"][0]})
    copy = lp.model.processed_dir() / "lp_models" / "no_checkpoint"
    shutil.copytree(source, copy)
    shutil.rmtree(copy / "checkpoints")
    with pytest.raises(ModelDirectoryError, match="best.ckpt"):
        lp.model.Model.insert_new_model("no_ckpt", copy)
    assert not lp.model.Model & {"model_name": "no_ckpt"}


def test_loaded_predictions_with_other_body_parts_are_refused(lp, flow):
    """task_mode='load' with a CSV whose body parts differ from the model's."""
    from element_lightning_pose.engine.data.keypoints import read_predictions, write_predictions

    dj_compat.populate(lp.model.PoseEstimation, flow["rec"])
    rec = {**flow["rec"], "recording_id": 910}
    lp.model.VideoRecording.insert1({**rec, "device": "cam_top"})
    lp.model.VideoRecording.File.insert1(
        {**rec, "file_id": 0, "file_path": flow["project"].videos[0].relative_to(lp.model.root_dirs()[0]).as_posix()}
    )
    # a complete recording: the session stays exportable for the tests that export it
    assert dj_compat.populate(lp.model.RecordingInfo, rec).errors == []
    key = lp.model.PoseEstimationTask.generate(rec, flow["names"][0], task_mode="load")
    source = {**flow["rec"], "model_name": flow["names"][0]}
    values, bodyparts = read_predictions(
        lp.model.processed_dir() / (lp.model.PoseEstimation & source).fetch1("predictions_file")
    )
    out_dir = lp.model.processed_dir() / (lp.model.PoseEstimationTask & key).fetch1("output_dir")
    write_predictions(out_dir / "predictions.csv", values, ["renamed"] + bodyparts[1:])
    result = dj_compat.populate(lp.model.PoseEstimation, key, suppress_errors=True)
    assert len(result.errors) == 1 and "renamed" in result.errors[0][1]
    assert not lp.model.PoseEstimation & key
    # the same file with the right names loads
    write_predictions(out_dir / "predictions.csv", values, bodyparts)
    assert dj_compat.populate(lp.model.PoseEstimation, key).success_count == 1
    assert (lp.model.PoseEstimation & key).fetch1("inference_time_s") == 0


@pytest.mark.parametrize("damage", ["frames", "bodyparts"])
def test_ensemble_members_must_match(lp, flow, damage):
    from element_lightning_pose.engine.data.keypoints import read_predictions, write_predictions

    assert dj_compat.populate(lp.model.PoseEstimation, flow["rec"]).errors == []
    ensemble_id = 20 if damage == "frames" else 21
    idx = lp.ensemble.SmoothingParamSet.insert_new_params("fixed s", {"s": 4.0})
    key = lp.ensemble.EnsembleSmoothingTask.create(flow["rec"], flow["names"], idx, ensemble_id=ensemble_id)
    member = {**flow["rec"], "model_name": flow["names"][1]}
    path = lp.model.processed_dir() / (lp.model.PoseEstimation & member).fetch1("predictions_file")
    original = path.read_bytes()
    values, bodyparts = read_predictions(path)
    try:
        if damage == "frames":
            write_predictions(path, values[:-5], bodyparts)
        else:
            write_predictions(path, values, bodyparts[::-1])
        result = dj_compat.populate(lp.ensemble.EnsembleSmoothing, key, suppress_errors=True)
        assert len(result.errors) == 1
        message = result.errors[0][1]
        assert flow["names"][1] in message
        assert ("frames" in message) if damage == "frames" else ("body parts" in message)
        assert not lp.ensemble.EnsembleSmoothing & key
        assert not lp.ensemble.EnsembleSmoothing.BodyPartPosition & key
    finally:
        path.write_bytes(original)


def _recording(lp, flow, recording_id: int, file_path: str) -> dict:
    rec = {**flow["rec"], "recording_id": recording_id}
    lp.model.VideoRecording.insert1({**rec, "device": "cam_top"})
    lp.model.VideoRecording.File.insert1({**rec, "file_id": 0, "file_path": file_path})
    return rec


def test_short_video_fails_pose_estimation_before_writing(lp, lp_root, flow):
    """A damaged video, PoseEstimation run before RecordingInfo (the README's order):
    an error naming the video and the frame reached; no rows, no predictions.csv."""
    from tests.engine.data.damaged_video import N_FRAMES as LISTED
    from tests.engine.data.damaged_video import corrupted

    root, _ = lp_root
    (root / "bad_videos").mkdir(exist_ok=True)
    corrupted(root / "bad_videos" / "corrupt.mp4")
    rec = _recording(lp, flow, 920, "bad_videos/corrupt.mp4")
    key = lp.model.PoseEstimationTask.generate(rec, flow["names"][0], batch_size=8)
    result = dj_compat.populate(lp.model.PoseEstimation, key, suppress_errors=True)
    assert len(result.errors) == 1
    message = result.errors[0][1]
    assert "corrupt.mp4" in message and f"of {LISTED}" in message and "decoding stopped at frame" in message
    assert not lp.model.PoseEstimation & key and not lp.model.PoseEstimation.BodyPartPosition & key
    out_dir = lp.model.processed_dir() / (lp.model.PoseEstimationTask & key).fetch1("output_dir")
    assert not (out_dir / "predictions.csv").exists()
    assert not out_dir.exists() or list(out_dir.iterdir()) == []
    # the shared schema keeps no failing task: the worker test counts the pending ones
    (lp.model.PoseEstimationTask & key).delete_quick()


def test_load_task_reads_predictions_csv_by_name(lp, flow):
    """task_mode='load' takes predictions.csv, not the alphabetically first CSV nor a hidden temporary."""
    from element_lightning_pose.engine.data.keypoints import read_predictions, write_predictions

    assert dj_compat.populate(lp.model.PoseEstimation, flow["rec"]).errors == []
    source = {**flow["rec"], "model_name": flow["names"][0]}
    values, bodyparts = read_predictions(
        lp.model.processed_dir() / (lp.model.PoseEstimation & source).fetch1("predictions_file")
    )
    video = flow["project"].videos[0].relative_to(lp.model.root_dirs()[0]).as_posix()
    rec = _recording(lp, flow, 930, video)
    # a complete recording: the session stays exportable for the tests that export it
    assert dj_compat.populate(lp.model.RecordingInfo, rec).errors == []
    key = lp.model.PoseEstimationTask.generate(rec, flow["names"][0], task_mode="load")
    out_dir = lp.model.processed_dir() / (lp.model.PoseEstimationTask & key).fetch1("output_dir")
    write_predictions(out_dir / "predictions.csv", values, bodyparts)
    write_predictions(out_dir / "a_first.csv", values[:-3], ["other"] + bodyparts[1:])
    write_predictions(out_dir / ".a_hidden.123.tmp.csv", values[:-3], bodyparts)
    assert dj_compat.populate(lp.model.PoseEstimation, key).success_count == 1
    assert (lp.model.PoseEstimation & key).fetch1("predictions_file").endswith("/predictions.csv")
    assert (lp.model.PoseEstimation & key).fetch1("n_frames") == len(values)


def test_load_task_with_several_candidate_csvs_is_an_error(lp, flow):
    from element_lightning_pose.engine.data.keypoints import read_predictions, write_predictions

    assert dj_compat.populate(lp.model.PoseEstimation, flow["rec"]).errors == []
    source = {**flow["rec"], "model_name": flow["names"][0]}
    values, bodyparts = read_predictions(
        lp.model.processed_dir() / (lp.model.PoseEstimation & source).fetch1("predictions_file")
    )
    video = flow["project"].videos[0].relative_to(lp.model.root_dirs()[0]).as_posix()
    key = lp.model.PoseEstimationTask.generate(_recording(lp, flow, 931, video), flow["names"][0], task_mode="load")
    out_dir = lp.model.processed_dir() / (lp.model.PoseEstimationTask & key).fetch1("output_dir")
    for name in ("session_a.csv", "session_b.csv"):
        write_predictions(out_dir / name, values, bodyparts)
    result = dj_compat.populate(lp.model.PoseEstimation, key, suppress_errors=True)
    assert len(result.errors) == 1
    message = result.errors[0][1]
    assert str(out_dir) in message and "session_a.csv" in message and "session_b.csv" in message
    assert not lp.model.PoseEstimation & key
    (lp.model.PoseEstimationTask & key).delete_quick()  # no failing task left for the worker test


def test_truncated_video_fails_recording_info_naming_the_count(lp, lp_root, flow):
    """A faststart mp4 cut short lists every frame: RecordingInfo must not record the frames that
    happen to decode as if the recording were that long."""
    from tests.engine.data.damaged_video import N_FRAMES as LISTED
    from tests.engine.data.damaged_video import truncated_faststart

    root, _ = lp_root
    (root / "bad_videos").mkdir(exist_ok=True)
    truncated_faststart(root / "bad_videos" / "cut.mp4")
    rec = _recording(lp, flow, 921, "bad_videos/cut.mp4")
    result = dj_compat.populate(lp.model.RecordingInfo, rec, suppress_errors=True)
    assert len(result.errors) == 1
    assert "cut.mp4" in result.errors[0][1] and f"of {LISTED}" in result.errors[0][1]
    assert not lp.model.RecordingInfo & rec


def test_training_stopped_by_sigterm_inserts_no_model_and_the_next_populate_goes_on(lp, lp_root):
    """A scheduler's SIGTERM mid-training: populate stops (even with suppress_errors) and inserts
    nothing; the run's epochs are kept, and the next populate of the key goes on from them."""
    from element_lightning_pose.engine.training import TrainingInterrupted
    from tests.pipeline.conftest import TINY_PARAMS

    root, _ = lp_root
    train = lp.train
    vs_key = train.VideoSet.insert_project("projects/synth", description="tiny synthetic")
    epochs = 10  # far more than the signal, sent within 0.05 s of the first checkpoint, lets finish
    params = {**TINY_PARAMS, "training": {**TINY_PARAMS["training"], "max_epochs": epochs}}
    key = {**vs_key, "paramset_idx": train.TrainingParamSet.insert_new_params("stopped", params), "training_id": 1}
    # a model folder of its own: other tests' deleted tasks leave theirs behind
    train.TrainingTask.insert1({**key, "seed": 0, "model_prefix": "sigterm"})
    model_dir = root / "processed" / train.TrainingTask.default_model_dir(key, "sigterm")
    kept = model_dir.with_name(model_dir.name + ".stopped")

    def stop_once_training() -> None:
        deadline = time.monotonic() + 300
        staged = f".{model_dir.name}.*.tmp/checkpoints/last.ckpt"
        while time.monotonic() < deadline and not any(model_dir.parent.glob(staged)):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_once_training, daemon=True).start()
    try:
        with pytest.raises(
            TrainingInterrupted,
            match=f"stopped by SIGTERM.*no model directory was written.*{model_dir}.*kept in {kept}",
        ):
            dj_compat.populate(train.ModelTraining, key, reserve_jobs=True, suppress_errors=True)
        assert len(train.ModelTraining & key) == 0
        assert not model_dir.exists() and (kept / "checkpoints" / "last.ckpt").is_file()
        errors = dj_compat.list_jobs([train.ModelTraining], status="error", restrictions=[key])
        assert [row["error_message"].split(":")[0] for row in errors] == ["TrainingInterrupted"]

        # the worker's next populate: the same parameters, so the kept epochs are not trained again
        dj_compat.clear_job(train.ModelTraining, key)
        dj_compat.populate(train.ModelTraining, key, reserve_jobs=True)
        row = (train.ModelTraining & key).fetch1()
        assert row["n_epochs"] == epochs and list(row["history"]["epoch"]) == list(range(epochs))
        assert sorted(p.name for p in (model_dir / "logs").iterdir()) == ["version_0", "version_1"]  # two runs
        assert not kept.exists()
    finally:  # the flow tests populate every task of this VideoSet and count the parameter sets
        dj_compat.clear_job(train.ModelTraining, key)
        (train.ModelTraining & key).delete_quick()
        (train.TrainingTask & key).delete_quick()
        (train.TrainingParamSet & {"paramset_idx": key["paramset_idx"]}).delete_quick()
