"""The select page's API: k-means, uniform and model-guided suggestions with their reasons, and
queuing the chosen frames (exported with their context frames) for the labeler."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from element_lightning_pose.app.server import create_app  # noqa: E402
from element_lightning_pose.app.settings import AppSettings  # noqa: E402
from element_lightning_pose.engine.data.keypoints import write_predictions  # noqa: E402
from element_lightning_pose.engine.data.labels import context_image_paths  # noqa: E402
from element_lightning_pose.engine.labeling.store import LabelStore  # noqa: E402
from element_lightning_pose.synthetic.projects import make_synthetic_project  # noqa: E402

CHANGE = {"X-ELP-Request": "1"}


@pytest.fixture
def app_project(tmp_path):
    root = tmp_path / "root"
    project = make_synthetic_project(root / "mouse", image_size=(48, 64), n_labeled=4, n_video_frames=80)
    client = TestClient(create_app(AppSettings.build([root])[0]), base_url="http://127.0.0.1:8765")
    return client, project


def planted_predictions(project, bad_frame: int) -> np.ndarray:
    """The ground truth as a model's predictions, one body part thrown far off at ``bad_frame``."""
    truth, _ = project.ground_truth(project.videos[0])
    values = np.concatenate([truth, np.full(truth.shape[:2] + (1,), 0.95)], axis=-1)
    values[bad_frame, 3, :2] += 25.0
    values[bad_frame, 3, 2] = 0.3
    return values


def test_kmeans_suggests_frames_not_queued_yet(app_project):
    client, project = app_project
    answer = client.post(
        "/api/select",
        params={"p": "0:mouse"},
        json={"video": "videos/video00.mp4", "method": "kmeans", "n": 10},
        headers=CHANGE,
    )
    assert answer.status_code == 200, answer.text
    suggestions = answer.json()["suggestions"]
    assert answer.json()["video"] == "videos/video00.mp4"  # as the page names it, for its thumbnails
    frames = [s["frame"] for s in suggestions]
    assert len(set(frames)) == 10 and all(s["reason"] for s in suggestions)
    queued = {int(i.split("img")[1].split(".")[0]) for i, _ in LabelStore(project.root).images()}
    assert not set(frames) & queued and answer.json()["excluded"] == len(queued)


def test_a_planted_wrong_prediction_is_among_the_first_model_guided_frames(app_project):
    client, project = app_project
    predictions = planted_predictions(project, bad_frame=37)
    names = LabelStore(project.root).bodyparts
    write_predictions(project.root / "models" / "m1" / "predictions" / "video00.csv", predictions, names)
    body = {
        "video": "videos/video00.mp4",
        "method": "model",
        "n": 5,
        "predictions": "models/m1/predictions/video00.csv",
    }
    answer = client.post("/api/select", params={"p": "0:mouse"}, json=body, headers=CHANGE)
    assert answer.status_code == 200, answer.text
    first = answer.json()["suggestions"]
    assert 37 in [s["frame"] for s in first]
    planted = next(s for s in first if s["frame"] == 37)
    assert names[3] in planted["reason"]


def test_queued_frames_are_exported_with_their_context_and_labelable(app_project):
    client, project = app_project
    revision = client.get("/api/labels", params={"p": "0:mouse"}).json()["revision"]
    body = {"video": "videos/video00.mp4", "frames": [40, 60], "base_revision": revision}
    answer = client.post("/api/select/queue", params={"p": "0:mouse"}, json=body, headers=CHANGE)
    assert answer.status_code == 200, answer.text
    images = answer.json()["images"][""]
    assert len(images) == 2 and all((project.root / image).is_file() for image in images)
    for image in images:
        assert len(set(context_image_paths(project.root, image))) == 5  # t-2 .. t+2 all on disk
    queue = client.get("/api/labels", params={"p": "0:mouse"}).json()
    assert [f["image"] for f in queue["frames"]][-2:] == images
    stale = client.post("/api/select/queue", params={"p": "0:mouse"}, json=body | {"frames": [70]}, headers=CHANGE)
    assert stale.status_code == 409  # made on the revision before the first queuing


@pytest.mark.parametrize(
    "body, message",
    [
        ({"method": "best"}, "method 'best'"),
        ({"n": 0}, "from 1 to 500"),
        ({"n": True}, "from 1 to 500"),
        ({"video": "../../etc/passwd"}, "outside its root"),
        ({"video": "CollectedData.csv"}, "not a video of the project"),
        ({"method": "model"}, "give at least one of"),
    ],
)
def test_bad_selections_name_what_is_wrong(app_project, body, message):
    client, _ = app_project
    request = {"video": "videos/video00.mp4", "method": "kmeans", "n": 3} | body
    answer = client.post("/api/select", params={"p": "0:mouse"}, json=request, headers=CHANGE)
    assert answer.status_code in (400, 403) and message in answer.json()["error"]
