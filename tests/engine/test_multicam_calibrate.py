"""Board calibration: recovers a known synthetic rig from rendered ChArUco videos; clear refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from element_lightning_pose.engine.multicam.boards import Board, BoardError, detect, read_board
from element_lightning_pose.engine.multicam.calibrate import CalibrationFailed, calibrate
from element_lightning_pose.engine.multicam.cameras import read_calibration
from element_lightning_pose.synthetic import rig

REPO = Path(__file__).resolve().parents[2]
BOARD = Board("charuco", 7, 5, 50.0, 37.0, 4, 50)
BOARD_TOML = """board_type = "charuco"
board_x = 7
board_y = 5
square_length = 50.0
marker_length = 37.0
marker_bits = 4
dict_size = 50
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = tmp_path_factory.mktemp("boards")
    group = rig.make_rig(3, seed=5)
    videos = rig.render_board_videos(group, BOARD, root, n_frames=24, seed=0)
    (root / "board.toml").write_text(BOARD_TOML)
    return root, group, videos


def _in_camera0_frame(group):
    """True camera centres with camera 0 as the world frame (the calibration's gauge)."""
    r0, t0 = group.cameras[0].rotation, group.cameras[0].translation
    return [-(c.rotation @ r0.T).T @ (c.translation - c.rotation @ r0.T @ t0) for c in group.cameras]


def test_detected_corners_match_the_true_projection():
    group = rig.make_rig(3, seed=5)
    rotations, translations = rig.board_poses(4, (350, 250), seed=0)
    views = rig.render_board_views(group, BOARD, rotations, translations, supersample=1)
    objects = BOARD.object_points()
    found = 0
    for cam, frames in zip(group.cameras, views):
        for f, frame in enumerate(frames):
            detection = detect(BOARD, frame, f)
            if detection is None:
                continue
            truth = cam.project(objects[detection.ids] @ rotations[f].T + translations[f])
            assert np.median(np.linalg.norm(detection.corners - truth, axis=-1)) < 0.5
            found += 1
    assert found >= 6


def test_cli_calibrate_recovers_the_rig(rendered, tmp_path):
    root, group, videos = rendered
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    args = [sys.executable, "-m", "element_lightning_pose.cli", "calibrate", str(root / "board.toml")]
    args += [a for name, path in videos.items() for a in ("--video", f"{name}={path}")]
    done = subprocess.run(
        args + ["-o", str(tmp_path / "calibration.toml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert "cam1:" in done.stdout and "reprojection error" in done.stdout
    found = read_calibration(tmp_path / "calibration.toml")
    assert found.names == group.names
    errors = found.metadata["errors"]
    assert max(errors) < 0.5
    arena = 400.0
    for true_centre, cam in zip(_in_camera0_frame(group), found.cameras):
        assert np.linalg.norm(true_centre - cam.centre) < 0.03 * arena
    for true, cam in zip(group.cameras, found.cameras):
        assert cam.matrix[0, 0] == pytest.approx(true.matrix[0, 0], rel=0.02)


def test_refuses_a_camera_that_never_shares_board_views():
    group = rig.make_rig(3, seed=5)
    rotations, translations = rig.board_poses(16, (350, 250), seed=0)
    views = rig.render_board_views(group, BOARD, rotations, translations, supersample=1)
    detections = {}
    for c, (cam, frames) in enumerate(zip(group.cameras, views)):
        keep = range(8, 16) if c == 2 else range(8)  # cam2 films only after the others stopped
        detections[cam.name] = [d for f in keep if (d := detect(BOARD, frames[f], f)) is not None]
    with pytest.raises(CalibrationFailed, match=r"camera\(s\) \['cam2'\] never share a board view"):
        calibrate(BOARD, detections, {c.name: c.size for c in group.cameras})


def test_bad_board_files_name_the_key(tmp_path):
    path = tmp_path / "board.toml"
    path.write_text(BOARD_TOML.replace("marker_length = 37.0\n", ""))
    with pytest.raises(BoardError, match=r"board.toml: missing \['marker_length'\]"):
        read_board(path)
    path.write_text(BOARD_TOML.replace("dict_size = 50", "dict_size = 77"))
    with pytest.raises(BoardError, match="no ArUco dictionary DICT_4X4_77"):
        read_board(path)
    path.write_text(
        '[calibration]\nboard_type = "charuco"\nboard_size = [7, 5]\nboard_marker_bits = 4\n'
        "board_marker_dict_number = 50\nboard_marker_length = 37.0\nboard_square_side_length = 50.0\n"
    )
    assert read_board(path) == BOARD


def test_refuses_a_camera_with_too_few_board_views():
    from element_lightning_pose.engine.multicam.boards import Detection

    corners = np.random.default_rng(0).uniform(0, 100, (24, 2))
    few = [Detection(f, np.arange(24), corners) for f in range(2)]
    with pytest.raises(CalibrationFailed, match=r"camera 'B': the board is found in 2 frame\(s\)"):
        calibrate(BOARD, {"B": few}, {"B": (640, 480)})
