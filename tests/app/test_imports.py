"""The import routes: a SLEAP file picked inside the roots becomes a project the app lists."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from element_lightning_pose.app.server import create_app  # noqa: E402
from element_lightning_pose.app.settings import AppSettings  # noqa: E402
from element_lightning_pose.engine.data.projects import load_project  # noqa: E402
from tests.engine.labeling.test_sleap_import import LABELED, NODES, expected_keypoints, make_slp, make_video  # noqa: E402

CHANGE = {"X-ELP-Request": "1"}
LOCAL = "http://127.0.0.1:8765"


@pytest.fixture
def lab(tmp_path):
    """A root with SLEAP files in raw/ (one good, one with two animals in frame 6)."""
    root = tmp_path / "root"
    (root / "raw").mkdir(parents=True)
    make_slp(root / "raw", "mouse.slp")
    make_slp(root / "raw", "pair.slp", video=root / "raw" / "session1.mp4", extra_instance_on=6)
    settings, _ = AppSettings.build([root])
    return TestClient(create_app(settings), base_url=LOCAL), root


def test_sleap_files_and_folders_are_listed_to_pick_from(lab):
    client, _ = lab
    top = client.get("/api/import/files", params={"p": "0:"}).json()
    assert top["entries"] == [{"name": "raw", "key": "0:raw", "folder": True}]
    inside = client.get("/api/import/files", params={"p": "0:raw"}).json()["entries"]
    assert [e["name"] for e in inside] == ["mouse.slp", "pair.slp"]  # the video is not offered


def test_a_sleap_file_is_imported_as_a_project_the_app_lists(lab):
    client, root = lab
    answer = client.post(
        "/api/import/sleap", json={"file": "0:raw/mouse.slp", "parent": "0:", "name": "mouse"}, headers=CHANGE
    )
    assert answer.status_code == 200, answer.text
    project = answer.json()
    assert project["key"] == "0:mouse" and project["layout"] == "lightning_pose"
    assert project["bodyparts"] == NODES and project["skeleton"] == [["snout", "ear_l"], ["ear_l", "tail"]]
    assert project["labeled"] == {"labeled-data/session1": {"frames": len(LABELED), "labeled": len(LABELED)}}
    assert [v["name"] for v in project["videos"]] == ["videos/session1.mp4"] and project["notes"] == []
    labels, _ = load_project(root / "mouse")
    np.testing.assert_allclose(labels.keypoints, expected_keypoints(), rtol=0, atol=1e-9)
    listed = client.get("/api/projects").json()["projects"]
    assert [p["key"] for p in listed] == ["0:mouse"]
    labeler = client.get("/api/labels", params={"p": "0:mouse"}).json()  # the labeler opens it
    assert len(labeler["frames"]) == len(LABELED)


def test_a_refused_import_names_the_file_and_frame_by_key_and_leaves_nothing(lab):
    client, root = lab
    before = sorted(os.listdir(root))
    answer = client.post(
        "/api/import/sleap", json={"file": "0:raw/pair.slp", "parent": "0:", "name": "pair"}, headers=CHANGE
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error.startswith("0:raw/pair.slp: video 0 (") and "frame 6: 2 user instances" in error
    assert str(root) not in error  # the page's keys, not the server's paths
    assert sorted(os.listdir(root)) == before


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"file": "0:raw/session1.mp4", "name": "x"}, 400, "not a SLEAP labels file"),
        ({"file": "0:raw/absent.slp", "name": "x"}, 400, "SLEAP labels file not found"),
        ({"file": "0:../outside.slp", "name": "x"}, 403, "outside its root"),
        ({"file": "0:raw/mouse.slp", "name": "../escape"}, 403, "not a file-name-safe name"),
        ({"file": "0:raw/mouse.slp", "name": "raw"}, 400, "0:raw: exists already"),
        ({"file": "0:raw/mouse.slp", "parent": "0:raw/mouse.slp", "name": "x"}, 400, "not a folder"),
    ],
)
def test_bad_imports_are_refused_before_anything_is_written(lab, body, status, says):
    client, root = lab
    (root.parent / "outside.slp").write_bytes(b"")
    before = sorted(str(p) for p in root.rglob("*"))
    answer = client.post("/api/import/sleap", json=body, headers=CHANGE)
    assert answer.status_code == status and says in answer.json()["error"], answer.text
    assert sorted(str(p) for p in root.rglob("*")) == before


def test_an_import_needs_the_apps_request_header(lab):
    client, root = lab
    answer = client.post("/api/import/sleap", json={"file": "0:raw/mouse.slp", "parent": "0:", "name": "m"})
    assert answer.status_code == 403 and not (root / "m").exists()


def test_a_video_outside_the_roots_is_not_read_through_an_import(lab, tmp_path):
    client, root = lab
    make_slp(root / "raw", "far.slp", video=make_video(tmp_path / "far.mp4"))
    answer = client.post(
        "/api/import/sleap", json={"file": "0:raw/far.slp", "parent": "0:", "name": "far"}, headers=CHANGE
    )
    assert answer.status_code == 400 and "inside the app's folders" in answer.json()["error"]
    assert not (root / "far").exists()
