"""The review page's API: a video's prediction files, traces by range, worst frames, send to the
labeler with its prefill, predicting a video with a model, and "did this round help"."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from element_lightning_pose.app.review import review_state  # noqa: E402
from element_lightning_pose.app.routes import review as review_routes  # noqa: E402
from element_lightning_pose.app.server import create_app  # noqa: E402
from element_lightning_pose.app.settings import AppSettings  # noqa: E402
from element_lightning_pose.engine.data.keypoints import read_predictions, write_keypoint_csv  # noqa: E402
from element_lightning_pose.engine.data.labels import read_labels  # noqa: E402
from element_lightning_pose.engine.data.video import read_frames  # noqa: E402
from element_lightning_pose.engine.eks.io import EKS_COORDS  # noqa: E402
from element_lightning_pose.synthetic.projects import make_synthetic_project  # noqa: E402

CHANGE = {"X-ELP-Request": "1"}
LOCAL = "http://127.0.0.1:8765"
P = "0:lab/mouse"
PREDICTIONS = "models/m1/predictions/video00.csv"
BAD_FRAME = 24  # the planted wrong prediction (the nose 20 px off, likelihood 0.05), no labeled frame near
LONG = "ensemble/video00_eks.csv"
SPIKE_FRAME, SPIKE_SD = 13_579, 60.0


@pytest.fixture
def review(tmp_path):
    """A root with a synthetic project whose model predicted its 30-frame video (one planted bad
    frame), and a long eks file (20,000 frames) with one posterior-sd spike."""
    root = tmp_path / "root"
    project = make_synthetic_project(root / "lab" / "mouse", image_size=(48, 64), n_labeled=6, n_video_frames=30)
    truth, _ = project.ground_truth(project.videos[0])
    predictions = np.concatenate([truth, np.full((*truth.shape[:2], 1), 0.95)], axis=-1)
    predictions[BAD_FRAME, 0] = [truth[BAD_FRAME, 0, 0] + 20.0, truth[BAD_FRAME, 0, 1], 0.05]
    write_keypoint_csv(project.root / PREDICTIONS, predictions, project.bodyparts, ("x", "y", "likelihood"))
    n = 20_000
    t = np.arange(n)[:, None]
    x = 20 + 5 * np.sin(t / 50 + np.arange(len(project.bodyparts)))
    xy = np.stack([x, np.full_like(x, 20.0)], axis=-1)
    variance = np.full((n, len(project.bodyparts), 2), 4.0)
    variance[SPIKE_FRAME, 3] = SPIKE_SD**2
    eks = np.concatenate([xy, np.full((n, len(project.bodyparts), 1), 0.9), xy, variance, variance], axis=-1)
    write_keypoint_csv(project.root / LONG, eks, project.bodyparts, EKS_COORDS, significant=6)
    (tmp_path / "outside.csv").write_bytes((project.root / PREDICTIONS).read_bytes())
    settings, _ = AppSettings.build([root])
    app = create_app(settings)
    return TestClient(app, base_url=LOCAL), project, app


def test_the_prediction_files_of_a_video_are_listed(review):
    client, project, _ = review
    answer = client.get("/api/review/sources", params={"p": P, "video": "videos/video00.mp4"}).json()
    assert answer["n_frames"] == 30 and answer["width"] == 64
    assert [(f["file"], f["kind"], f["model"]) for f in answer["files"]] == [
        (LONG, "eks", None),
        (PREDICTIONS, "predictions", "m1"),
    ]
    assert answer["models_without_predictions"] == []  # m1 has no model.json: not a model directory


def test_traces_by_range_are_decimated_and_keep_a_planted_spike(review):
    client, project, app = review
    part = project.bodyparts[3]
    params = {"p": P, "file": LONG, "start": 5000, "stop": 20000, "max_points": 300, "series": "posterior_sd,x"}
    answer = client.get("/api/review/traces", params=params).json()
    assert answer["decimated"] and answer["n_frames"] == 15000 and answer["start"] == 5000
    assert set(answer["series"]) == {"posterior_sd", "x"}
    for by_part in answer["series"].values():
        assert set(by_part) == set(project.bodyparts)
        assert all(0 < len(trace["frames"]) <= 300 for trace in by_part.values())
        assert all(5000 <= f < 20000 for trace in by_part.values() for f in trace["frames"])
    spike = answer["series"]["posterior_sd"][part]
    top = int(np.argmax(spike["values"]))
    assert spike["frames"][top] == SPIKE_FRAME and spike["values"][top] == pytest.approx(SPIKE_SD)
    # a range without the spike does not show it; the file was parsed once for both requests
    before = client.get("/api/review/traces", params={**params, "stop": SPIKE_FRAME}).json()
    assert max(before["series"]["posterior_sd"][part]["values"]) == pytest.approx(2.0)
    assert review_state(app).tables.reads == 1
    whole = client.get("/api/review/traces", params={"p": P, "file": PREDICTIONS, "bodyparts": part}).json()
    assert not whole["decimated"] and whole["series"]["x"][part]["frames"] == list(range(30))


def test_a_planted_bad_frame_is_among_the_worst_frames(review):
    client, project, _ = review
    for criterion in ("jump", "likelihood"):
        params = {"p": P, "file": PREDICTIONS, "criterion": criterion, "n": 5, "min_gap": 5}
        frames = client.get("/api/review/worst", params=params).json()["frames"]
        assert frames[0]["frame"] == BAD_FRAME and frames[0]["bodypart"] == project.bodyparts[0]
        assert all(abs(a["frame"] - b["frame"]) >= 5 for a in frames for b in frames if a is not b)
    answer = client.get("/api/review/worst", params={"p": P, "file": LONG, "criterion": "posterior_sd", "n": 3})
    assert answer.json()["frames"][0]["frame"] == SPIKE_FRAME
    refused = client.get("/api/review/worst", params={"p": P, "file": PREDICTIONS, "criterion": "posterior_sd"})
    assert refused.status_code == 400 and "offers" in refused.json()["error"]


def test_the_keypoints_of_frames_for_the_overlay(review):
    client, project, _ = review
    predictions, _ = read_predictions(project.root / PREDICTIONS)
    one = client.get("/api/review/keypoints", params={"p": P, "file": PREDICTIONS, "start": BAD_FRAME}).json()
    assert one["frames"] == [BAD_FRAME] and one["bodyparts"] == project.bodyparts
    np.testing.assert_allclose(one["points"][0], predictions[BAD_FRAME], atol=0.006)
    page = client.get("/api/review/keypoints", params={"p": P, "file": LONG, "start": 100, "stop": 164}).json()
    assert len(page["points"]) == 64 and page["posterior_sd"][0][0] == pytest.approx(2.0)
    too_many = client.get("/api/review/keypoints", params={"p": P, "file": LONG, "start": 0, "stop": 5000})
    assert too_many.status_code == 400


def test_send_to_labeler_exports_the_frame_and_its_context_queues_it_and_keeps_the_prefill(review):
    client, project, _ = review
    queue = client.get("/api/labels", params={"p": P}).json()
    body = {"file": PREDICTIONS, "video": "videos/video00.mp4", "frame": BAD_FRAME, "base_revision": "stale"}
    refused = client.post("/api/review/send", params={"p": P}, json=body, headers=CHANGE)
    assert refused.status_code == 409
    assert not (project.root / "labeled-data/video00/img00024.png").exists()
    body["base_revision"] = queue["revision"]
    answer = client.post("/api/review/send", params={"p": P}, json=body, headers=CHANGE)
    assert answer.status_code == 200, answer.text
    image = answer.json()["image"]
    assert image == "labeled-data/video00/img00024.png" and not answer.json()["already_queued"]
    decoded = read_frames(project.videos[0], range(BAD_FRAME - 2, BAD_FRAME + 3))
    for offset, frame in zip(range(-2, 3), decoded):
        written = cv2.imread(str(project.root / f"labeled-data/video00/img{BAD_FRAME + offset:05d}.png"))
        np.testing.assert_array_equal(written[..., ::-1], frame)  # the video's frame exactly (PNG)
    assert answer.json()["context"] == [f"labeled-data/video00/img{BAD_FRAME + d:05d}.png" for d in range(-2, 3)]
    listed = client.get("/api/labels", params={"p": P}).json()
    assert image in [f["image"] for f in listed["frames"]] and listed["revision"] == answer.json()["revision"]
    assert image in read_labels(project.csv_path, check_images=False, require_keypoints=False).image_paths
    prefill = client.get("/api/labels/prefill", params={"p": P, "image": image}).json()
    predictions, _ = read_predictions(project.root / PREDICTIONS)
    assert list(prefill["points"]) == project.bodyparts
    assert prefill["source"] == PREDICTIONS and prefill["frame"] == BAD_FRAME
    np.testing.assert_allclose(prefill["points"][project.bodyparts[0]], predictions[BAD_FRAME, 0], atol=1e-4)
    other = client.get("/api/labels/prefill", params={"p": P, "image": "labeled-data/video00/img00022.png"})
    assert other.status_code == 200 and other.json()["points"] == {}
    again = client.post(
        "/api/review/send", params={"p": P}, json={**body, "base_revision": listed["revision"]}, headers=CHANGE
    )
    assert again.json()["already_queued"]


@pytest.mark.parametrize(
    "route, params",
    [
        ("/api/review/traces", {"file": "../../../outside.csv"}),
        ("/api/review/traces", {"file": "/etc/passwd"}),
        ("/api/review/worst", {"file": "lab/../../../../outside.csv", "criterion": "jump"}),
        ("/api/review/keypoints", {"file": "../../../outside.csv", "start": 0}),
        ("/api/review/sources", {"video": "../../../outside.mp4"}),
        ("/api/labels/prefill", {"image": "../../../outside.png"}),
        ("/api/review/traces", {"p": "1:lab/mouse", "file": PREDICTIONS}),
    ],
)
def test_paths_outside_the_roots_are_refused(review, route, params):
    client, _, app = review
    answer = client.get(route, params={"p": P, **params})
    assert answer.status_code == 403 and "error" in answer.json()
    assert review_state(app).tables.reads == 0


def test_an_encoded_path_names_no_file(review):
    client, _, _ = review
    answer = client.get("/api/review/traces", params={"p": P, "file": "..%2F..%2F..%2Foutside.csv"})
    assert answer.status_code == 400 and "not a CSV file of the project" in answer.json()["error"]


def test_a_link_out_of_the_project_is_refused(review, tmp_path):
    client, project, _ = review
    (project.root / "models" / "link.csv").symlink_to(tmp_path / "outside.csv")
    answer = client.get("/api/review/traces", params={"p": P, "file": "models/link.csv"})
    assert answer.status_code == 403


def test_a_model_predicts_a_video_and_its_round_is_evaluated(review, monkeypatch):
    from element_lightning_pose.engine.training import train
    from tests.engine.conftest import TINY_CONFIG

    client, project, _ = review
    train(TINY_CONFIG, project.root, project.root / "models" / "m2", progress=False)
    sources = client.get("/api/review/sources", params={"p": P, "video": "videos/video00.mp4"}).json()
    assert sources["models_without_predictions"] == [{"model": "m2", "path": "models/m2"}]
    body = {"model": "models/m2", "video": "videos/video00.mp4"}
    # a prediction that takes longer than the request waits is a job the page polls
    monkeypatch.setattr(review_routes, "SYNC_WAIT_S", 0.0)
    started = client.post("/api/review/predict", params={"p": P}, json=body, headers=CHANGE)
    assert started.status_code == 202 and started.json()["state"] in ("queued", "running")
    job = {"p": P, "job": started.json()["job"]}
    deadline = time.monotonic() + 120
    while (polled := client.get("/api/review/predict", params=job)).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert polled.status_code == 200 and polled.json()["file"] == "models/m2/predictions/video00.csv"
    for name in ("video00.csv", "video00_diagnostics.csv"):
        (project.root / "models/m2/predictions" / name).unlink()
    monkeypatch.undo()
    answer = client.post("/api/review/predict", params={"p": P}, json=body, headers=CHANGE)
    assert answer.status_code == 200 and answer.json()["state"] == "done", answer.text  # a short video: at once
    assert answer.json()["file"] == "models/m2/predictions/video00.csv"
    assert (project.root / "models/m2/predictions/video00_diagnostics.csv").is_file()
    again = client.post("/api/review/predict", params={"p": P}, json=body, headers=CHANGE)
    assert again.status_code == 400 and "exists already" in again.json()["error"]
    listed = client.get("/api/review/sources", params={"p": P, "video": "videos/video00.mp4"}).json()
    assert listed["models_without_predictions"] == []
    assert next(f for f in listed["files"] if f["model"] == "m2")["diagnostics"].endswith("_diagnostics.csv")
    rounds = client.get("/api/train/models", params={"p": P}).json()["models"]  # the review shows these
    assert [(m["name"], m["evaluation"]) for m in rounds] == [("m2", None)] and rounds[0]["n_train"] >= 1
    evaluated = client.post("/api/train/evaluate", params={"p": P, "model": "m2"}, headers=CHANGE)
    splits = evaluated.json()["evaluation"]["splits"]
    assert sum(s["frames"] for s in splits.values()) == 6 and splits["train"]["frames"] == rounds[0]["n_train"]
    assert splits["train"]["mean_px"] > 0
    assert client.get("/api/train/models", params={"p": P}).json()["models"][0]["evaluation"]["current"]
    outside = client.post("/api/train/evaluate", params={"p": P, "model": "../../../x"}, headers=CHANGE)
    assert outside.status_code == 403


def test_a_multiview_frame_is_sent_with_every_view_of_its_instant(tmp_path):
    from element_lightning_pose.synthetic.rig_project import make_rig_project

    root = tmp_path / "root"
    rig = make_rig_project(root / "rig", n_cameras=2, image_size=(96, 64), n_frames=30, n_labeled=4, n_board_frames=2)
    truth = np.load(rig.root / "ground_truth.npz")
    cameras, labeled = [str(c) for c in truth["camera_names"]], set(truth["labeled_frames"].tolist())
    frame = next(t for t in range(2, 28) if not labeled & set(range(t - 2, t + 3)))
    pixels = truth["pixels"][0]
    predictions = np.concatenate([pixels, np.full((*pixels.shape[:2], 1), 0.9)], axis=-1)
    bodyparts = [str(b) for b in truth["bodyparts"]]
    write_keypoint_csv(rig.root / f"models/m1/predictions/session0_{cameras[0]}.csv", predictions, bodyparts)
    write_keypoint_csv(rig.root / f"reprojections/{cameras[0]}.csv", predictions, bodyparts)  # a rig's reprojection
    client = TestClient(create_app(AppSettings.build([root])[0]), base_url=LOCAL)
    video = f"videos/session0_{cameras[0]}.mp4"
    files = client.get("/api/review/sources", params={"p": "0:rig", "video": video}).json()["files"]
    assert [f["file"] for f in files] == [
        f"models/m1/predictions/session0_{cameras[0]}.csv",
        f"reprojections/{cameras[0]}.csv",
    ]
    revision = client.get("/api/labels", params={"p": "0:rig"}).json()["revision"]
    body = {"file": files[0]["file"], "video": video, "frame": frame, "base_revision": revision}
    answer = client.post("/api/review/send", params={"p": "0:rig"}, json=body, headers=CHANGE)
    assert answer.status_code == 200, answer.text
    images = answer.json()["images"]
    assert images == {c: [f"labeled-data/session0_{c}/img{frame:05d}.png"] for c in cameras}
    tables = {c: read_labels(rig.root / f"CollectedData_{c}.csv", rig.root, require_keypoints=False) for c in cameras}
    rows = {c: tables[c].image_paths.index(images[c][0]) for c in cameras}
    assert len(set(rows.values())) == 1  # the same instant on the same row of every view's table
    for c in cameras:
        assert (rig.root / images[c][0]).is_file()
        assert (rig.root / f"labeled-data/session0_{c}/img{frame + 2:05d}.png").is_file()
    kept = client.get("/api/labels/prefill", params={"p": "0:rig", "image": images[cameras[0]][0]}).json()
    np.testing.assert_allclose(kept["points"][bodyparts[0]][:2], pixels[frame, 0], atol=1e-3)
    other = client.get("/api/labels/prefill", params={"p": "0:rig", "image": images[cameras[1]][0]}).json()
    assert other["points"] == {}
