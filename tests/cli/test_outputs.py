"""Every ``elp`` command with an output checks it before any work (issue 26, items 2, 6, 16):
an output that is an input, an existing folder where a file is expected, a path under a file,
a read-only place, ``/proc``, a camera name that would leave ``--reproject DIR`` are one line on
stderr, rc 2, and nothing is written or replaced."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from element_lightning_pose.engine.data.keypoints import write_predictions
from element_lightning_pose.engine.multicam.cameras import calibration_text, write_calibration
from element_lightning_pose.synthetic import rig
from tests.conftest import REPO_ROOT, elp

REPO = REPO_ROOT
BOARD_TOML = """board_type = "checkerboard"
board_x = 5
board_y = 4
square_length = 10.0
"""


def refused(done: subprocess.CompletedProcess, *fragments: str) -> None:
    """rc 2, no traceback, and the error as one line ``elp COMMAND: error: ...`` holding every
    fragment (a library's import-time warning may come before it)."""
    errors = [line for line in done.stderr.splitlines() if line.startswith("elp ")]
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1 and ": error: " in errors[0] and "Traceback" not in done.stderr, done.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its content (links and special files by kind)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path)] = f"link to {os.readlink(path)}"
        elif path.is_file():
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif not path.is_dir():
            found[str(path)] = "special"
    return found


@pytest.fixture
def rig_files(tmp_path_factory):
    """A calibration and each camera's predictions in ONE folder (where --reproject is tempting);
    a fresh one per test, so that a test failing on code that replaces inputs spoils no other."""
    root = tmp_path_factory.mktemp("cli_outputs")
    group = rig.make_rig(3, seed=1)
    body = rig.make_body(12, seed=1)
    write_calibration(group, root / "calibration.toml")
    obs = rig.observe(group, body.points, seed=1, noise_px=0.5, jump_rate=0.0, occlusion_rate=0.0)
    views = []
    for c, cam in enumerate(group.cameras):
        values = np.concatenate([obs.pixels[c], obs.likelihood[c][..., None]], axis=-1)
        path = write_predictions(root / f"{cam.name}.csv", values, body.bodyparts)
        views += ["--view", f"{cam.name}={path}"]
    (root / "board.toml").write_text(BOARD_TOML)
    for name in ("cam0", "cam1"):
        (root / f"board_{name}.mp4").write_bytes(b"not decoded: the output is refused first")
    return root, group, views


def test_reproject_into_the_predictions_folder_is_refused(rig_files):
    root, _, views = rig_files
    before = snapshot(root)
    done = elp("triangulate", root / "calibration.toml", *views, "--method", "dlt", "-o", root / "out" / "p3d.csv",
               "--reproject", root)  # fmt: skip
    refused(done, "--reproject", "cam0.csv", "is the input")
    assert snapshot(root) == before


def test_output_equal_to_a_view_or_to_a_reprojection_is_refused(rig_files, tmp_path):
    root, _, views = rig_files
    before = snapshot(root)
    done = elp("triangulate", root / "calibration.toml", *views, "--method", "dlt", "-o", root / "cam1.csv")
    refused(done, "-o", "is the input")
    link = tmp_path / "link.csv"
    link.symlink_to(root / "cam2.csv")
    refused(elp("triangulate", root / "calibration.toml", *views, "--method", "dlt", "-o", link), "is the input")
    done = elp("triangulate", root / "calibration.toml", *views, "--method", "dlt", "-o", tmp_path / "r" / "cam0.csv",
               "--reproject", tmp_path / "r")  # fmt: skip
    refused(done, "--reproject", "is the input")  # the reprojection would replace the 3D output
    assert snapshot(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv"]


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/elp_escaped_camera", "a\\b", "..", "a%2Fb"])
def test_a_camera_name_cannot_leave_the_reprojection_folder(rig_files, tmp_path, name):
    root, group, views = rig_files
    text = calibration_text(group).replace('name = "cam0"', f"name = {json.dumps(name)}", 1)
    (tmp_path / "calibration.toml").write_text(text)
    views = [v.replace("cam0=", f"{name}=", 1) if v.startswith("cam0=") else v for v in views]
    done = elp("triangulate", tmp_path / "calibration.toml", *views, "--method", "dlt", "-o", tmp_path / "out.csv",
               "--reproject", tmp_path / "reproject" / "deep")  # fmt: skip
    refused(done, "calibration.toml: camera name", repr(name))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.toml"]
    assert not Path("/tmp/elp_escaped_camera.csv").exists()
    assert not (tmp_path / "escaped.csv").exists() and not (tmp_path.parent / "escaped.csv").exists()


def test_unwritable_outputs_are_one_line_before_any_work(rig_files, tmp_path, read_only_folder):
    root, _, views = rig_files
    (tmp_path / "a_file").write_text("x")
    cases = [
        (tmp_path, "is a folder"),
        (tmp_path / "a_file" / "out.csv", "is a file, so nothing can be created under it"),
        (read_only_folder / "out.csv", "is not writable"),
        ("/proc/self/elp_out.csv", "kernel file system"),
        ("/dev/zero", "character device"),
    ]
    for target, reason in cases:
        refused(elp("triangulate", root / "calibration.toml", *views, "--method", "dlt", "-o", target), "-o", reason)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "ro"]


def test_calibrate_refuses_an_output_onto_a_board_video_before_detection(rig_files, tmp_path):
    root, _, _ = rig_files
    before = snapshot(root)
    videos = ["--video", f"cam0={root / 'board_cam0.mp4'}", "--video", f"cam1={root / 'board_cam1.mp4'}"]
    refused(elp("calibrate", root / "board.toml", *videos, "-o", root / "board_cam1.mp4"), "-o", "is the input")
    refused(elp("calibrate", root / "board.toml", *videos, "-o", root / "board.toml"), "is the input")
    refused(elp("calibrate", root / "board.toml", *videos, "-o", tmp_path), "is a folder")
    bad_name = ["--video", f"../x={root / 'board_cam0.mp4'}", "--video", f"cam1={root / 'board_cam1.mp4'}"]
    refused(elp("calibrate", root / "board.toml", *bad_name, "-o", tmp_path / "c.toml"), "camera name '../x'")
    assert snapshot(root) == before and list(tmp_path.iterdir()) == []


def test_smooth_and_plot_refuse_an_output_that_is_an_input(rig_files, tmp_path):
    root, _, _ = rig_files
    before = snapshot(root)
    refused(elp("smooth", root / "cam0.csv", root / "cam1.csv", "-o", root / "cam1.csv"), "-o", "is the input")
    refused(elp("plot", "traces", root / "cam0.csv", "-o", root / "cam0.csv"), "-o", "is the input")
    refused(elp("plot", "traces", root / "cam0.csv", "-o", tmp_path), "-o", "is a folder")
    assert snapshot(root) == before


def test_train_predict_demo_and_db_check_their_folders_first(rig_files, tmp_path):
    root, _, _ = rig_files
    project = tmp_path / "project"
    project.mkdir()
    (project / "CollectedData.csv").write_text("labels")
    (tmp_path / "a_file").write_text("x")
    before = snapshot(tmp_path)
    # the model folder is replaced whole at the end: the project inside it would be deleted
    refused(elp("train", project, "--model-dir", tmp_path), "--model-dir", "holds the input")
    refused(elp("train", project, "--model-dir", tmp_path / "a_file" / "m"), "--model-dir", "is a file")
    refused(elp("predict", tmp_path / "no_model", root / "board_cam0.mp4", "-o", tmp_path / "a_file"),
            "-o", "exists and is not a folder")  # fmt: skip
    refused(elp("demo", "--out", tmp_path / "a_file" / "demo"), "--out", "is a file")
    refused(elp("db", "start", "--dir", tmp_path / "a_file" / "db"), "--dir", "is a file")
    assert snapshot(tmp_path) == before
