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
from tests.conftest import CHILD_PYTHONPATH, REPO_ROOT

REPO = REPO_ROOT  # the repository root
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
    env = dict(os.environ, PYTHONPATH=CHILD_PYTHONPATH, OMP_NUM_THREADS="1")
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


# ------------------------------------------------------------------ issue 26, items 14, 19 and 25


def _elp(*args, cwd=REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=CHILD_PYTHONPATH, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "element_lightning_pose.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=cwd)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("board_x", "7.5", "board_x = 7.5 must be a whole number of squares"),
        ("board_y", "true", "board_y = True must be a whole number of squares"),
        ("board_y", '"5"', "board_y = '5' must be a whole number of squares"),
        ("board_x", "1000000", "board_x = 1000000 squares: at most 100"),
        ("board_x", "1", "board_x = 1 squares: at least 2"),
        ("square_length", "inf", "square_length = inf must be a positive finite number"),
        ("square_length", "-50.0", "square_length = -50.0 must be a positive finite number"),
        ("square_length", '"50"', "square_length = '50' must be a positive finite number"),
        ("marker_length", "nan", "marker_length = nan must be in (0, square_length 50.0)"),
        ("marker_bits", "4.5", "marker_bits = 4.5 must be a whole number"),
        ("dict_size", "true", "dict_size = True must be a whole number"),
        ("board_x", "21", "a 21 x 5 ChArUco board needs 52 markers; DICT_4X4_50 has 50"),
    ],
)
def test_board_values_are_refused_naming_the_key(tmp_path, key, value, message):
    path = tmp_path / "board.toml"
    lines = [line for line in BOARD_TOML.splitlines() if not line.startswith(f"{key} =")]
    path.write_text("\n".join(lines + [f"{key} = {value}"]) + "\n")
    with pytest.raises(BoardError) as info:
        read_board(path)
    assert f"{path}: " in str(info.value) and message in str(info.value)


def test_whole_float_board_sizes_are_squares():
    assert Board("checkerboard", 7.0, 5.0, 30).board_x == 7
    assert isinstance(Board("checkerboard", 7.0, 5.0, 30).board_x, int)


@pytest.mark.parametrize("bad", [0, -3, 3, True, 2.5, 25])
def test_min_corners_is_checked(bad):
    with pytest.raises(BoardError, match=r"min_corners = .* must be a whole number from 4 to 24"):
        calibrate(BOARD, {"A": [], "B": []}, {"A": (640, 480), "B": (640, 480)}, min_corners=bad)


def test_cli_refuses_min_corners_before_reading_videos(rendered, tmp_path):
    root, _, _ = rendered  # the videos do not exist: min_corners is checked first
    done = _elp(
        "calibrate",
        root / "board.toml",
        "--video",
        f"a={tmp_path / 'a.avi'}",
        "--video",
        f"b={tmp_path / 'b.avi'}",
        "--min-corners",
        "0",
        "-o",
        tmp_path / "calibration.toml",
    )
    assert done.returncode == 2 and "min_corners = 0 must be a whole number from 4 to 24" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "calibration.toml").exists()


SLEAP_ANIPOSE_BOARD = """board_x = 7
board_y = 5
square_length = 50.0
marker_length = 37.0
marker_bits = 4
dict_size = 50
"""


def test_sleap_anipose_board_file_is_a_charuco_board(tmp_path):
    path = tmp_path / "board.toml"
    path.write_text(SLEAP_ANIPOSE_BOARD)
    assert read_board(path) == BOARD
    notes: list[str] = []
    read_board(path, notes=notes)
    assert notes == [f"{path}: no board_type; ChArUco, since marker_length is given"]
    path.write_text("board_x = 8\nboard_y = 6\nsquare_length = 25.0\n")
    notes = []
    assert read_board(path, notes=notes) == Board("checkerboard", 8, 6, 25.0)
    assert notes == [f"{path}: no board_type; checkerboard, since no marker_length is given"]


def test_cli_says_which_board_it_inferred(rendered, tmp_path):
    root, group, videos = rendered
    (tmp_path / "board.toml").write_text(SLEAP_ANIPOSE_BOARD)
    args = [a for name, path in videos.items() for a in ("--video", f"{name}={path}")]
    done = _elp("calibrate", tmp_path / "board.toml", *args, "-o", tmp_path / "calibration.toml")
    assert done.returncode == 0, done.stderr
    assert "no board_type; ChArUco, since marker_length is given" in done.stdout
    assert max(read_calibration(tmp_path / "calibration.toml").metadata["errors"]) < 0.5


def test_cli_refuses_one_video_for_two_cameras(rendered, tmp_path):
    root, _, videos = rendered
    link = tmp_path / "link.avi"
    link.symlink_to(videos["cam0"])
    for other in (videos["cam0"], link, Path(os.path.relpath(videos["cam0"], tmp_path))):
        done = _elp(
            "calibrate",
            root / "board.toml",
            "--video",
            f"a={videos['cam0']}",
            "--video",
            f"b={other}",
            "-o",
            tmp_path / "calibration.toml",
            cwd=tmp_path,
        )
        assert done.returncode == 2, done.stdout
        assert "cameras 'a' and 'b' are given the same video" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and not (tmp_path / "calibration.toml").exists()


def test_a_near_zero_baseline_is_warned_about():
    from element_lightning_pose.engine.multicam.calibrate import ShortBaselineWarning

    group = rig.make_rig(3, seed=5)
    rotations, translations = rig.board_poses(8, (350, 250), seed=0)
    views = rig.render_board_views(group, BOARD, rotations, translations, supersample=1)
    found = [d for f in range(8) if (d := detect(BOARD, views[0][f], f)) is not None]
    shifted = [type(d)(d.frame, d.ids, d.corners + 0.01) for d in found]  # one video under two names
    with pytest.warns(ShortBaselineWarning, match=r"cameras 'A' and 'B' are [\d.e+-]+ apart"):
        calibrate(BOARD, {"A": found, "B": shifted}, {"A": group.cameras[0].size, "B": group.cameras[0].size})
