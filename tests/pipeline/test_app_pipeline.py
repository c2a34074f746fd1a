"""The app with a database: a round of the labeling loop registered as a VideoSet, a parameter
set and a TrainingTask for a worker; a relabeled project becomes a new VideoSet.

The registration itself (``app.pipeline``) runs on both DataJoint generations; the HTTP routes
over it need the app extra (FastAPI), which only the DataJoint 2.x environment has.
"""

from __future__ import annotations

import numpy as np
import pytest

from element_lightning_pose import dj_compat
from element_lightning_pose.app import pipeline as app_pipeline
from element_lightning_pose.engine.labeling.store import LabelStore, PointEdit
from element_lightning_pose.synthetic.projects import make_synthetic_project

TINY = {
    "data": {"image_resize": [64, 64]},
    "model": {"backbone": "resnet18", "pretrained": False},
    "training": {"max_epochs": 1, "unfreeze_epoch": 0, "num_workers": 0, "seed": 3},
}


@pytest.fixture(scope="module")
def app_project(lp, lp_root):
    """A project of its own under the pipeline's data root (the flow's project stays untouched).

    The tasks registered here and never trained are deleted afterwards: a later worker test
    populating everything would otherwise train them too."""
    root, _ = lp_root
    yield (
        root,
        make_synthetic_project(root / "projects" / "app_round", image_size=(48, 64), n_labeled=6, n_video_frames=20),
    )
    train = lp.train
    ours = train.VideoSet & {"project_dir": "projects/app_round"}
    ((train.TrainingTask & ours.proj()) - train.ModelTraining.proj()).delete_quick()


def relabel(project) -> None:
    store = LabelStore(project.root)
    image = store.images()[0][0]
    store.save_frame(image, [PointEdit(store.bodyparts[0], "labeled", 5.0, 6.0)], base_revision=store.revision())


def test_a_round_is_registered_for_a_worker_and_a_relabeled_project_is_a_new_video_set(lp, app_project):
    root, project = app_project
    first = app_pipeline.submit([root], project.root, TINY, name="round1")
    assert first["new_video_set"] and first["training_id"] == 1
    train = lp.train
    task = (train.TrainingTask & {k: first[k] for k in ("video_set_id", "paramset_idx", "training_id")}).fetch1()
    assert task["seed"] == 3 and task["model_prefix"] == "round1"
    assert (train.VideoSet & {"video_set_id": first["video_set_id"]}).fetch1("project_dir") == "projects/app_round"

    again = app_pipeline.submit([root], project.root, TINY, name="round1b")  # same labels, same parameters
    assert not again["new_video_set"] and again["video_set_id"] == first["video_set_id"]
    assert again["paramset_idx"] == first["paramset_idx"] and again["training_id"] == 2

    relabel(project)
    second = app_pipeline.submit([root], project.root, TINY, name="round2")
    assert second["new_video_set"] and second["video_set_id"] != first["video_set_id"]
    hashes = train.VideoSet & [{"video_set_id": first["video_set_id"]}, {"video_set_id": second["video_set_id"]}]
    assert len(set(hashes.fetch("labels_hash"))) == 2

    tasks = app_pipeline.tasks([root], project.root)
    assert [(t["video_set_id"], t["training_id"], t["name"]) for t in tasks] == [
        (second["video_set_id"], 1, "round2"),
        (first["video_set_id"], 2, "round1b"),
        (first["video_set_id"], 1, "round1"),
    ]
    assert {t["state"] for t in tasks} == {"waiting for a worker"}

    # what a worker does with it (elp worker --table ModelTraining), then the list says so
    round2 = {k: second[k] for k in ("video_set_id", "paramset_idx", "training_id")}
    populated = dj_compat.populate(train.ModelTraining, round2, reserve_jobs=True)
    assert populated.errors == [] and populated.success_count == 1
    done = app_pipeline.tasks([root], project.root)[0]
    assert done["state"] == "trained" and done["epochs"] == 1 and done["model_dir"] == second["model_dir"]


def test_a_database_alone_does_not_make_the_app_guess_a_pipeline(monkeypatch):
    """Without active schemas, DJ_HOST alone would activate the reference pipeline under a
    guessed prefix (creating schemas): the lab's pipeline must be named."""
    monkeypatch.setattr(app_pipeline, "_active_train", lambda: None)
    monkeypatch.setenv("DJ_HOST", "127.0.0.1")
    monkeypatch.delenv("LP_PIPELINE", raising=False)
    monkeypatch.delenv("LP_SCHEMA_PREFIX", raising=False)
    assert not app_pipeline.configured()
    with pytest.raises(app_pipeline.PipelineError, match="LP_SCHEMA_PREFIX"):
        app_pipeline.activate([])
    monkeypatch.setenv("LP_SCHEMA_PREFIX", "lab_")
    assert app_pipeline.configured() and "--prefix lab_" in app_pipeline.describe()["worker"]


def test_a_project_outside_the_pipelines_roots_is_refused(lp, tmp_path):
    outside = make_synthetic_project(tmp_path / "elsewhere", image_size=(48, 64), n_labeled=2, n_video_frames=10)
    with pytest.raises(app_pipeline.PipelineError, match="not under the pipeline's data roots"):
        app_pipeline.submit([tmp_path], outside.root, TINY, name="x")


def test_the_routes_register_a_round_and_list_it(lp, app_project):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from element_lightning_pose.app.server import create_app
    from element_lightning_pose.app.settings import AppSettings

    root, project = app_project
    settings, _ = AppSettings.build([root])
    client = TestClient(create_app(settings), base_url="http://127.0.0.1:8765")
    params = {"p": "0:projects/app_round"}
    described = client.get("/api/train/presets", params=params).json()["pipeline"]
    assert described["configured"] and f"--prefix {lp.prefix}" in described["worker"]
    body = {
        "name": "web",
        "preset": "default",
        "fields": {"backbone": "resnet18", "image_resize": "64x64", "max_epochs": "1", "seed": "0"},
        "extra": "model.pretrained=false",
    }
    bad = client.post(
        "/api/train/pipeline",
        params=params,
        json={**body, "fields": {"max_epochs": "0"}},
        headers={"X-ELP-Request": "1"},
    )
    assert bad.status_code == 400 and "max_epochs" in bad.json()["fields"]
    answer = client.post("/api/train/pipeline", params=params, json=body, headers={"X-ELP-Request": "1"})
    assert answer.status_code == 200, answer.text
    keys = answer.json()
    assert "elp worker" in keys["worker"]
    listed = client.get("/api/train/pipeline", params=params).json()["tasks"]
    assert (keys["video_set_id"], keys["training_id"], "web") in [
        (t["video_set_id"], t["training_id"], t["name"]) for t in listed
    ]
    params_row = (lp.train.TrainingParamSet & {"paramset_idx": keys["paramset_idx"]}).fetch1("params")
    assert params_row["model"]["backbone"] == "resnet18" and np.array_equal(
        params_row["data"]["image_resize"], [64, 64]
    )
