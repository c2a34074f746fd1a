"""The app with a database lists the pipeline's rows about a project for review and selection.

A tiny pipeline run on a project of the app: its VideoSet, a model trained from it (one epoch),
that model's PoseEstimation of the project's video, a load-mode model's beside it and their
EnsembleSmoothing; a calibrated rig's project with its Triangulation. The listing
(``app.pipeline_rows``) runs on both DataJoint generations; the HTTP routes over it (the review's
sources, traces and the select page's model-guided sources) need the app extra (FastAPI),
which only the DataJoint 2.x environment has.

The pipeline's processed-data root is ``<root>/processed``: an app given ``<root>`` reads the
rows' files, an app given ``<root>/projects`` only lists them.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from element_lightning_pose import dj_compat, pipeline
from element_lightning_pose.app import pipeline as app_pipeline
from element_lightning_pose.app.pipeline_rows import (
    MISSING,
    OUTSIDE_ROOTS,
    POINTS3D,
    READABLE,
    project_rows,
    review_sources,
)
from element_lightning_pose.app.settings import AppSettings
from element_lightning_pose.engine.data.keypoints import read_predictions, write_predictions
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.multicam.io import read_points3d
from element_lightning_pose.engine.safe_paths import UnsafePathError
from element_lightning_pose.synthetic.projects import make_synthetic_project
from tests.pipeline.load_helpers import insert_loaded_model

TINY = {
    "data": {"image_resize": [64, 64]},
    "model": {"backbone": "resnet18", "pretrained": False},
    "training": {"max_epochs": 1, "unfreeze_epoch": 0, "num_workers": 0, "seed": 5},
}
TRAINED, LOADED, RIG_MODEL = "rows_trained", "rows_loaded", "rows_rig_truth"
CHANGE = {"X-ELP-Request": "1"}


def load_pose(lp, rec: dict, name: str, values: np.ndarray, bodyparts: list[str]) -> dict:
    key = lp.model.PoseEstimationTask.generate(rec, name, task_mode="load")
    out = lp.model.processed_dir() / lp.model.PoseEstimationTask.default_output_dir(key) / "predictions.csv"
    write_predictions(out, values, bodyparts, scorer=name)
    return key


def recording(lp, subject: str, recording_id: int, video_rel: str, device: str) -> dict:
    session = pipeline.add_session(subject, dt.datetime(2024, 8, 1, 9, 0))
    lp.Device.insert1({"device": device}, skip_duplicates=True)
    rec = {**session, "recording_id": recording_id}
    lp.model.VideoRecording.insert1({**rec, "device": device})
    lp.model.VideoRecording.File.insert1({**rec, "file_id": 0, "file_path": video_rel})
    assert dj_compat.populate(lp.model.RecordingInfo, rec).errors == []
    return dj_compat.fetch_keys(lp.model.VideoRecording & rec)[0]


@pytest.fixture(scope="module")
def run(lp, lp_root):
    """A round of the app trained by the pipeline, its model's pose of the project's video, a
    load-mode model's beside it, and their ensemble (every task made here is populated)."""
    root, _ = lp_root
    project = make_synthetic_project(
        root / "projects" / "app_rows", image_size=(48, 64), n_labeled=6, n_video_frames=20
    )
    keys = app_pipeline.submit([root], project.root, TINY, name="rows1")
    training = {k: keys[k] for k in ("video_set_id", "paramset_idx", "training_id")}
    assert dj_compat.populate(lp.train.ModelTraining, training).errors == []
    lp.model.Model.insert_from_training(training, model_name=TRAINED)
    rec = recording(lp, "app_rows", 1, project.videos[0].relative_to(root).as_posix(), "rows_cam")
    trained = lp.model.PoseEstimationTask.generate(rec, TRAINED, batch_size=8)
    assert dj_compat.populate(lp.model.PoseEstimation, trained).errors == []
    values = lp.model.PoseEstimation.get_trajectory(trained).to_numpy().reshape(20, -1, 3)
    insert_loaded_model(lp, LOADED, project.bodyparts, "rows")
    shifted = values + np.array([1.5, -1.0, 0.0])
    loaded = load_pose(lp, rec, LOADED, shifted, project.bodyparts)
    assert dj_compat.populate(lp.model.PoseEstimation, loaded).errors == []
    idx = lp.ensemble.SmoothingParamSet.insert_new_params("auto s", {})
    ensemble = lp.ensemble.EnsembleSmoothingTask.create(rec, [TRAINED, LOADED], idx)
    assert dj_compat.populate(lp.ensemble.EnsembleSmoothing, ensemble).errors == []
    return {
        "root": root,
        "project": project,
        "video": project.videos[0].relative_to(project.root).as_posix(),
        "video_set_id": keys["video_set_id"],
        "rec": rec,
        "trained": trained,
        "values": values,
        "ensemble": ensemble,
    }


@pytest.fixture(scope="module")
def rig(lp, lp_root):
    """A calibrated two-camera project whose videos are a rig recording, triangulated from a
    load-mode model's 2D (the true projections)."""
    from element_lightning_pose.synthetic.rig_project import make_rig_project

    root, _ = lp_root
    project = make_rig_project(
        root / "projects" / "app_rig", n_cameras=2, image_size=(96, 64), n_frames=30, n_labeled=4, n_board_frames=2
    )
    truth = np.load(project.ground_truth)
    insert_loaded_model(lp, RIG_MODEL, project.bodyparts, "rows")
    recs = {}
    for i, camera in enumerate(project.camera_names):
        video = project.videos[camera].relative_to(root).as_posix()
        recs[camera] = recording(lp, "app_rig", 10 + i, video, f"rows_rig_{camera}")
        pixels = truth["pixels"][i]
        values = np.concatenate([pixels, np.full((*pixels.shape[:2], 1), 0.9)], axis=-1)
        key = load_pose(lp, recs[camera], RIG_MODEL, values, project.bodyparts)
        assert dj_compat.populate(lp.model.PoseEstimation, key).errors == []
    lp.multicam.CameraCalibration.insert_from_file(
        "app_rig_true", project.calibration.relative_to(root), units="mm", reference_frame="the rig's first camera"
    )
    session = {k: v for k, v in recs[project.camera_names[0]].items() if k != "recording_id"}
    views = {camera: rec["recording_id"] for camera, rec in recs.items()}
    rig_key = lp.multicam.MultiCameraRecording.insert_rig(session, 1, "app_rig_true", views)
    idx = lp.multicam.TriangulationParamSet.insert_new_params("rows dlt", {"method": "dlt"})
    task = lp.multicam.TriangulationTask.create(rig_key, idx, RIG_MODEL)
    assert dj_compat.populate(lp.multicam.Triangulation, task).errors == []
    return {"root": root, "project": project, "task": task, "cameras": project.camera_names}


# ------------------------------------------------------------------------------------ listing


def test_the_rows_of_a_project_are_listed_with_files_the_app_can_open(lp, run):
    settings, _ = AppSettings.build([run["root"]])
    rows = project_rows(settings, run["project"].root)
    assert rows.project_dir == "projects/app_rows"
    assert [int(v["video_set_id"]) for v in rows.video_sets] == [run["video_set_id"]]
    assert [m["model_name"] for m in rows.models] == [TRAINED]  # the load-mode model was not trained here
    (video,) = rows.videos
    assert video.recordings == [run["rec"]]
    poses = {p["model_name"]: p for p in video.pose_estimations}
    assert set(poses) == {TRAINED, LOADED}
    assert poses[TRAINED]["trained_from_project"] and not poses[LOADED]["trained_from_project"]
    file = poses[TRAINED]["file"]
    stored = (lp.model.PoseEstimation & run["trained"]).fetch1("predictions_file")
    assert file.state == READABLE and file.stored == stored and file.location == f"0:processed/{stored}"
    assert rows.file(file.reference) == lp.model.processed_dir() / stored
    (smoothed,) = video.ensembles
    assert smoothed["members"] == sorted([TRAINED, LOADED]) and smoothed["file"].state == READABLE
    assert smoothed["file"].location == "0:processed/" + (lp.ensemble.EnsembleSmoothing & run["ensemble"]).fetch1(
        "output_file"
    )
    sources = review_sources(rows, run["project"].root / run["video"])
    assert [(s["table"], s["kind"]) for s in sources] == [
        ("PoseEstimation", "predictions"),
        ("PoseEstimation", "predictions"),
        ("EnsembleSmoothing", "eks"),
    ]
    assert all(s["bodyparts"] == run["project"].bodyparts for s in sources)
    assert {s["key"]["model_name"] for s in sources[:2]} == {TRAINED, LOADED}
    with pytest.raises(ProjectError, match="no pipeline row"):
        rows.file("pipeline:PoseEstimation:someone_else")


def test_a_row_whose_file_lies_outside_the_apps_roots_is_listed_but_not_read(lp, run):
    """The app is given <root>/projects; the pipeline writes into <root>/processed."""
    settings, _ = AppSettings.build([run["root"] / "projects"])
    rows = project_rows(settings, run["project"].root)
    (video,) = rows.videos
    files = [row["file"] for row in video.pose_estimations + video.ensembles]
    assert len(files) == 3 and {f.state for f in files} == {OUTSIDE_ROOTS} and {f.location for f in files} == {None}
    with pytest.raises(UnsafePathError, match="outside the app's roots"):
        rows.file(files[0].reference)
    # not read, nor looked at: kind and body parts come from the table, not the file
    sources = review_sources(rows, run["project"].root / run["video"])
    assert [s["kind"] for s in sources] == ["predictions", "predictions", "eks"]
    assert all(s["bodyparts"] == [] and s["state"] == OUTSIDE_ROOTS for s in sources)


def test_a_rows_file_missing_on_this_machine_is_listed_as_missing(lp, run):
    settings, _ = AppSettings.build([run["root"]])
    stored = (lp.model.PoseEstimation & run["trained"]).fetch1("predictions_file")
    path = lp.model.processed_dir() / stored
    moved = path.with_name("moved.csv")
    path.rename(moved)
    try:
        rows = project_rows(settings, run["project"].root)
        file = next(p["file"] for p in rows.videos[0].pose_estimations if p["model_name"] == TRAINED)
        assert file.state == MISSING and file.location is None
        with pytest.raises(ProjectError, match="not on this machine"):
            rows.file(file.reference)
    finally:
        moved.rename(path)


def test_a_rig_projects_videos_list_their_triangulation(lp, rig):
    settings, _ = AppSettings.build([rig["root"]])
    rows = project_rows(settings, rig["project"].root)
    assert [r.video.name for r in rows.videos] == sorted(p.name for p in rig["project"].videos.values())
    stored = (lp.multicam.Triangulation & rig["task"]).fetch1("points_file")
    for video in rows.videos:
        (triangulation,) = video.triangulations
        camera = next(c for c in rig["cameras"] if c in video.video.name)
        assert triangulation["camera"] == camera and triangulation["cameras"] == rig["cameras"]
        assert triangulation["source"] == f"model {RIG_MODEL}" and triangulation["frame_offset"] == 0
        file = triangulation["file"]
        assert file.role == POINTS3D and file.state == READABLE and file.location == f"0:processed/{stored}"
        assert len(read_points3d(rows.file(file.reference)).index) == 30
        # the 3D file is not a 2D source of the review: the pose of this camera is
        assert [s["table"] for s in review_sources(rows, video.video)] == ["PoseEstimation"]


# ------------------------------------------------------------------------------------ routes


def _client(roots):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from element_lightning_pose.app.server import create_app

    settings, _ = AppSettings.build(roots)
    return TestClient(create_app(settings), base_url="http://127.0.0.1:8765")


def test_a_pose_estimation_is_reviewed_and_selected_from(lp, run):
    client = _client([run["root"]])
    p = {"p": "0:projects/app_rows"}
    answer = client.get("/api/review/sources", params={**p, "video": run["video"]})
    assert answer.status_code == 200, answer.text
    sources = answer.json()
    assert sources["pipeline"] == {"configured": True, "error": None}
    pipeline_files = [f for f in sources["files"] if f.get("table")]
    trained = next(f for f in pipeline_files if f["key"].get("model_name") == TRAINED)
    assert trained["file"].startswith("pipeline:PoseEstimation:") and trained["state"] == READABLE
    assert trained["key"]["subject"] == "app_rows" and trained["key"]["recording_id"] == 1

    file = {**p, "file": trained["file"]}
    table = client.get("/api/review/table", params=file).json()
    assert table["kind"] == "predictions" and table["n_frames"] == 20
    traces = client.get("/api/review/traces", params={**file, "series": "x"})
    assert traces.status_code == 200, traces.text
    part = run["project"].bodyparts[0]
    assert traces.json()["series"]["x"][part]["values"] == pytest.approx(run["values"][:, 0, 0].tolist(), abs=1e-3)
    assert client.get("/api/review/worst", params={**file, "criterion": "likelihood", "n": 3}).status_code == 200

    eks = next(f for f in pipeline_files if f["table"] == "EnsembleSmoothing")
    body = {"video": run["video"], "method": "model", "n": 3, "eks": eks["file"]}
    body["members"] = [f["file"] for f in pipeline_files if f["table"] == "PoseEstimation"]
    picked = client.post("/api/select", params=p, json=body, headers=CHANGE)
    assert picked.status_code == 200, picked.text
    assert len(picked.json()["suggestions"]) == 3

    listed = client.get("/api/pipeline/rows", params=p).json()
    assert listed["configured"] and [m["model_name"] for m in listed["models"]] == [TRAINED]
    (video,) = listed["videos"]
    assert video["video"] == run["video"] and len(video["pose_estimations"]) == 2
    assert {r["file"]["location"] for r in video["pose_estimations"]} >= {trained["location"]}

    # a send to the labeler from a pipeline file keeps it as the prefill's source
    revision = client.get("/api/labels", params=p).json()["revision"]
    sent = client.post(
        "/api/review/send",
        params=p,
        json={"file": trained["file"], "video": run["video"], "frame": 10, "base_revision": revision},
        headers=CHANGE,
    )
    assert sent.status_code == 200, sent.text
    prefill = client.get("/api/labels/prefill", params={**p, "image": sent.json()["image"]}).json()
    assert prefill["source"] == trained["file"] and prefill["frame"] == 10


def test_a_file_outside_the_apps_roots_is_listed_and_refused_when_opened(lp, run):
    client = _client([run["root"] / "projects"])
    p = {"p": "0:app_rows"}
    files = client.get("/api/review/sources", params={**p, "video": run["video"]}).json()["files"]
    outside = [f for f in files if f.get("table")]
    assert len(outside) == 3 and {f["state"] for f in outside} == {OUTSIDE_ROOTS}
    assert {f["location"] for f in outside} == {None}
    for route in ("table", "traces"):
        refused = client.get(f"/api/review/{route}", params={**p, "file": outside[0]["file"]})
        assert refused.status_code == 403 and "outside the app's roots" in refused.json()["error"]
    body = {"video": run["video"], "method": "model", "n": 3, "predictions": outside[0]["file"]}
    assert client.post("/api/select", params=p, json=body, headers=CHANGE).status_code == 403
    unknown = client.get("/api/review/table", params={**p, "file": "pipeline:PoseEstimation:nobody"})
    assert unknown.status_code == 400 and "no pipeline row" in unknown.json()["error"]


def test_without_a_pipeline_the_review_lists_the_project_alone(lp, run, monkeypatch):
    """No schemas active and none named: nothing is activated, a reference is refused."""
    client = _client([run["root"]])
    monkeypatch.setattr(app_pipeline, "_active_train", lambda: None)
    monkeypatch.delenv("LP_PIPELINE", raising=False)
    monkeypatch.delenv("LP_SCHEMA_PREFIX", raising=False)
    p = {"p": "0:projects/app_rows"}
    sources = client.get("/api/review/sources", params={**p, "video": run["video"]}).json()
    assert sources["pipeline"]["configured"] is False and not [f for f in sources["files"] if f.get("table")]
    assert client.get("/api/pipeline/rows", params=p).json()["configured"] is False
    refused = client.get("/api/review/table", params={**p, "file": "pipeline:PoseEstimation:x"})
    assert refused.status_code == 400 and "no pipeline" in refused.json()["error"]


def test_the_predictions_read_through_the_app_are_the_rows(lp, run):
    """The file the review reads is the one the row was computed with (what the lab queries)."""
    settings, _ = AppSettings.build([run["root"]])
    rows = project_rows(settings, run["project"].root)
    file = next(p["file"] for p in rows.videos[0].pose_estimations if p["model_name"] == TRAINED)
    values, _ = read_predictions(rows.file(file.reference))
    np.testing.assert_allclose(values, run["values"], atol=1e-4)


def test_the_rows_route_lists_a_rig_videos_triangulation(lp, rig):
    client = _client([rig["root"]])
    camera = rig["cameras"][1]
    video = rig["project"].videos[camera].relative_to(rig["project"].root).as_posix()
    answer = client.get("/api/pipeline/rows", params={"p": "0:projects/app_rig", "video": video})
    assert answer.status_code == 200, answer.text
    (listed,) = answer.json()["videos"]
    assert listed["video"] == video and [p["model_name"] for p in listed["pose_estimations"]] == [RIG_MODEL]
    (triangulation,) = listed["triangulations"]
    assert triangulation["camera"] == camera and triangulation["cameras"] == rig["cameras"]
    assert triangulation["file"]["role"] == POINTS3D and triangulation["file"]["location"].startswith("0:processed/")
    assert 0 <= triangulation["mean_reprojection_error"] < 1  # the true 2D
    assert triangulation["file"]["key"]["rig_recording_id"] == 1 and triangulation["source"] == f"model {RIG_MODEL}"
