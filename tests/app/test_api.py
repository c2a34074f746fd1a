"""The app's API, route by route, with its security rules and bad input (FastAPI's TestClient;
the browser tests drive the same routes through pages)."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from element_lightning_pose.app.server import create_app  # noqa: E402
from element_lightning_pose.app.settings import AppSettings, AppSettingsError  # noqa: E402
from element_lightning_pose.engine.data.labels import read_labels  # noqa: E402
from element_lightning_pose.synthetic.projects import make_synthetic_project  # noqa: E402
from tests.app.planted import swap_labels  # noqa: E402

CHANGE = {"X-ELP-Request": "1"}
LOCAL = "http://127.0.0.1:8765"


@pytest.fixture
def lab(tmp_path):
    """A root with one synthetic project (lab/mouse) and a video outside any project."""
    root = tmp_path / "root"
    project = make_synthetic_project(root / "lab" / "mouse", image_size=(48, 64), n_labeled=4, n_video_frames=20)
    (root / "raw").mkdir()
    os.link(project.videos[0], root / "raw" / "session1.mp4")
    settings, _ = AppSettings.build([root])
    client = TestClient(create_app(settings), base_url=LOCAL)
    return client, project, root


def test_projects_are_found_and_described(lab):
    client, project, _ = lab
    found = client.get("/api/projects").json()["projects"]
    assert [p["key"] for p in found] == ["0:lab/mouse"]
    described = client.get("/api/project", params={"p": "0:lab/mouse"}).json()
    assert described["layout"] == "lightning_pose"
    assert described["videos"][0]["n_frames"] == 20 and described["videos"][0]["width"] == 64
    assert described["labeled"] == {"labeled-data/video00": {"frames": 4, "labeled": 4}}


def test_a_frame_is_saved_into_the_projects_label_file(lab):
    client, project, _ = lab
    queue = client.get("/api/labels", params={"p": "0:lab/mouse"}).json()
    image, part = queue["frames"][1]["image"], queue["bodyparts"][2]
    answer = client.post(
        "/api/labels/frame",
        params={"p": "0:lab/mouse"},
        json={"image": image, "base_revision": queue["revision"], "edits": [{"bodypart": part, "x": 7.25, "y": 9.5}]},
        headers=CHANGE,
    )
    assert answer.status_code == 200
    labels = read_labels(project.csv_path)
    np.testing.assert_array_equal(labels.keypoints[1, 2], [7.25, 9.5])
    frame = client.get("/api/labels/frame", params={"p": "0:lab/mouse", "image": image}).json()
    assert frame["points"][part] == [7.25, 9.5] and frame["revision"] == answer.json()["revision"]
    assert frame["history"][-1]["origin"] == "manual"
    assert len(frame["context"]) == 5  # t-2 .. t+2 (missing neighbours replaced by nearer ones)


def test_a_concurrent_save_is_refused_not_overwritten(lab):
    client, project, _ = lab
    queue = client.get("/api/labels", params={"p": "0:lab/mouse"}).json()
    image, part = queue["frames"][0]["image"], queue["bodyparts"][0]
    first = {"image": image, "base_revision": queue["revision"], "edits": [{"bodypart": part, "x": 1.0, "y": 1.0}]}
    assert client.post("/api/labels/frame", params={"p": "0:lab/mouse"}, json=first, headers=CHANGE).status_code == 200
    before = project.csv_path.read_bytes()
    second = {**first, "edits": [{"bodypart": part, "x": 5.0, "y": 5.0}]}  # made on the old revision
    answer = client.post("/api/labels/frame", params={"p": "0:lab/mouse"}, json=second, headers=CHANGE)
    assert answer.status_code == 409 and "changed on disk" in answer.json()["error"]
    assert project.csv_path.read_bytes() == before


def test_a_video_frame_is_decoded_exactly(lab):
    client, project, _ = lab
    from element_lightning_pose.engine.data.video import read_frames

    answer = client.get("/api/frame", params={"p": "0:lab/mouse", "video": "videos/video00.mp4", "frame": 13})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    import cv2

    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(answer.content, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    truth = read_frames(project.videos[0], [13])[0]
    assert np.abs(decoded.astype(int) - truth.astype(int)).mean() < 4  # JPEG noise only, not another frame
    other = read_frames(project.videos[0], [12])[0]
    assert (
        np.abs(decoded.astype(int) - truth.astype(int)).mean() < np.abs(decoded.astype(int) - other.astype(int)).mean()
    )
    outside = client.get("/api/frame", params={"p": "0:lab/mouse", "video": "videos/video00.mp4", "frame": 20})
    assert outside.status_code == 400 and "outside 0..19" in outside.json()["error"]


def test_a_new_project_is_created_with_linked_videos(lab):
    client, _, root = lab
    body = {
        "parent": "0:",
        "name": "reach",
        "bodyparts": ["snout", "paw_l", "paw_r"],
        "skeleton": [["snout", "paw_l"]],
        "videos": ["0:raw/session1.mp4"],
    }
    created = client.post("/api/projects", json=body, headers=CHANGE)
    assert created.status_code == 200, created.text
    assert created.json()["layout"] == "new" and created.json()["bodyparts"] == ["snout", "paw_l", "paw_r"]
    assert (root / "reach" / "videos" / "session1.mp4").is_symlink()
    again = client.post("/api/projects", json=body, headers=CHANGE)
    assert again.status_code == 400 and "exists already" in again.json()["error"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"name": "../escape"}, "not a file-name-safe name"),
        ({"bodyparts": ["a", "a"]}, "given twice"),
        ({"bodyparts": ["a,b"]}, "not a body-part name"),
        ({"skeleton": [["snout", "tail"]]}, "unknown body parts"),
        ({"videos": ["0:lab/mouse/CollectedData.csv"]}, "not a video file"),
        ({"videos": ["0:../../etc/passwd"]}, "outside its root"),
    ],
)
def test_a_bad_new_project_is_refused_and_creates_nothing(lab, change, message):
    client, _, root = lab
    body = {"parent": "0:", "name": "reach", "bodyparts": ["snout"], "videos": ["0:raw/session1.mp4"]} | change
    answer = client.post("/api/projects", json=body, headers=CHANGE)
    assert answer.status_code in (400, 403) and message in answer.json()["error"]
    assert not (root / "reach").exists() and not (root.parent / "escape").exists()


def test_a_corrupt_video_is_a_message(lab):
    client, project, _ = lab
    (project.root / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00 not a video")
    described = client.get("/api/project", params={"p": "0:lab/mouse"}).json()
    broken = next(v for v in described["videos"] if v["name"] == "videos/broken.mp4")
    assert broken["n_frames"] is None and "broken.mp4" in broken["error"]
    frame = client.get("/api/frame", params={"p": "0:lab/mouse", "video": "videos/broken.mp4", "frame": 0})
    assert frame.status_code == 400 and "broken.mp4" in frame.json()["error"]


def test_a_label_file_of_another_body_part_set_is_refused(lab):
    client, project, _ = lab
    queue = client.get("/api/labels", params={"p": "0:lab/mouse"}).json()
    body = {
        "image": queue["frames"][0]["image"],
        "base_revision": queue["revision"],
        "edits": [{"bodypart": "wing", "x": 1, "y": 1}],
    }
    answer = client.post("/api/labels/frame", params={"p": "0:lab/mouse"}, json=body, headers=CHANGE)
    assert answer.status_code == 400 and "unknown body part" in answer.json()["error"]


@pytest.mark.parametrize(
    "params",
    [
        {"p": "0:lab/mouse", "image": "../../../outside.png"},
        {"p": "0:lab/mouse", "image": "/etc/hostname"},
        {"p": "0:lab/mouse", "image": "..%2F..%2F..%2Foutside.png"},
        {"p": "0:lab/mouse", "image": "labeled-data\\..\\..\\..\\outside.png"},
        {"p": "0:lab/mouse", "image": "link/outside.png"},
        {"p": "0:../", "image": "x.png"},
        {"p": "7:lab/mouse", "image": "x.png"},
    ],
)
def test_nothing_outside_the_roots_is_read(lab, params):
    client, project, root = lab
    (root.parent / "outside.png").write_bytes(b"secret")
    (project.root / "link").symlink_to(root.parent)
    answer = client.get("/api/image", params=params)
    assert answer.status_code in (400, 403, 404) and "secret" not in answer.text
    assert "error" in answer.json()


def test_errors_are_messages_never_tracebacks(lab, monkeypatch):
    client, _, _ = lab
    from element_lightning_pose.app import projects

    def broken(*args, **kwargs):
        raise RuntimeError("an internal detail the user must not see")

    monkeypatch.setattr(projects, "find_projects", broken)
    answer = TestClient(client.app, base_url=LOCAL, raise_server_exceptions=False).get("/api/projects")
    assert answer.status_code == 500
    assert (
        "RuntimeError" in answer.json()["error"]
        and "internal detail" not in answer.text
        and "Traceback" not in answer.text
    )


def test_changes_need_the_apps_request_header(lab):
    client, _, root = lab
    body = {"parent": "0:", "name": "reach", "bodyparts": ["snout"], "videos": []}
    answer = client.post("/api/projects", json=body)  # what a form on another site could send
    assert answer.status_code == 403 and not (root / "reach").exists()


def test_a_host_other_than_loopback_is_refused_on_loopback(lab):
    client, _, _ = lab
    rebound = TestClient(client.app, base_url="http://attacker.example:8765")  # DNS rebinding
    assert rebound.get("/api/projects").status_code == 421


def test_off_loopback_every_request_needs_the_token(tmp_path):
    settings, generated = AppSettings.build([tmp_path], host="0.0.0.0")
    assert generated and settings.token and len(settings.token) >= 24
    client = TestClient(create_app(settings), base_url="http://lab-server:8765")
    assert client.get("/").status_code == 401
    assert client.get("/api/projects").status_code == 401
    assert client.get("/static/app.js").status_code == 401
    assert client.get("/api/projects", headers={"Authorization": "Bearer wrong-token-of-24-chars!"}).status_code == 401
    assert client.get("/api/projects", headers={"Authorization": f"Bearer {settings.token}"}).status_code == 200
    first = client.get("/", params={"token": settings.token}, follow_redirects=False)  # the printed link
    assert first.status_code == 303 and "token" not in first.headers["location"]
    assert (
        "httponly" in first.headers["set-cookie"].lower() and "samesite=strict" in first.headers["set-cookie"].lower()
    )
    assert client.get("/api/projects").status_code == 200  # the cookie now


def test_a_request_larger_than_the_limit_is_refused(tmp_path):
    settings, _ = AppSettings.build([tmp_path], max_upload_mb=0.001)
    client = TestClient(create_app(settings), base_url=LOCAL)
    answer = client.post("/api/projects", content=b"x" * 5000, headers=CHANGE | {"Content-Type": "application/json"})
    assert answer.status_code == 413 and "limit" in answer.json()["error"]


def test_the_app_sends_no_telemetry(lab):
    client, _, _ = lab
    from element_lightning_pose.app.server import NO_TELEMETRY

    telemetry = getattr(client.app, "_telemetry", None)
    if telemetry is not None:  # FastAPI versions that have telemetry: every part of it off
        assert all(telemetry.get(k) is False for k in NO_TELEMETRY)


def test_pages_carry_a_content_security_policy(lab):
    client, _, _ = lab
    for page in ("/", "/project?p=0:lab/mouse", "/label?p=0:lab/mouse"):
        answer = client.get(page)
        assert answer.status_code == 200
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        assert answer.headers["x-frame-options"] == "DENY"
    missing = client.get("/label?p=0:nowhere")
    assert missing.status_code == 404 and "no project there" in missing.text


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"roots": []}, "at least one folder"),
        ({"roots": ["/no/such/folder"]}, "not an existing folder"),
        ({"port": 70000}, "not a TCP port"),
        ({"token": "short"}, "at least 16"),
    ],
)
def test_bad_settings_name_the_option(tmp_path, kwargs, message):
    arguments = {"roots": [tmp_path]} | kwargs
    with pytest.raises(AppSettingsError, match=message):
        AppSettings.build(arguments.pop("roots"), **arguments)


def test_the_label_check_flags_a_planted_swap_and_links_its_frame(tmp_path):
    root = tmp_path / "root"
    project = make_synthetic_project(root / "mouse", image_size=(96, 96), n_labeled=30, n_video_frames=60)
    labels = read_labels(project.csv_path)
    left, right = labels.bodyparts.index("paw_left_hind"), labels.bodyparts.index("paw_right_hind")
    swap_labels(project.csv_path, 7, left, right)
    settings, _ = AppSettings.build([root])
    client = TestClient(create_app(settings), base_url=LOCAL)
    report = client.get("/api/checks", params={"p": "0:mouse"}).json()
    top = report["flags"][0]
    assert top["kind"] == "left_right_swap" and top["image"] == labels.image_paths[7]
    assert set(top["bodyparts"]) == {"paw_left_hind", "paw_right_hind"}
    assert client.get("/check", params={"p": "0:mouse"}).status_code == 200


def test_the_label_check_of_a_project_without_labels_says_so(tmp_path):
    root = tmp_path / "root"
    (root / "new").mkdir(parents=True)
    (root / "new" / "elp_project.yaml").write_text("bodyparts: [snout]\n")
    settings, _ = AppSettings.build([root])
    client = TestClient(create_app(settings), base_url=LOCAL)
    report = client.get("/api/checks", params={"p": "0:new"}).json()
    assert report["flags"] == [] and "no labels to check yet" in report["notes"][0]
