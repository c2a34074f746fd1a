"""Camera model and calibration.toml: agreement with OpenCV, exact rotations, round trip, errors."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from element_lightning_pose.engine.multicam.cameras import (
    CalibrationError,
    Camera,
    CameraBehindWarning,
    CameraGroup,
    calibration_text,
    matrix_to_rodrigues,
    read_calibration,
    rodrigues_to_matrix,
    write_calibration,
)
from element_lightning_pose.engine.multicam.triangulate import triangulate_dlt, triangulate_robust
from element_lightning_pose.synthetic import rig
from tests.conftest import REPO_ROOT

REPO = REPO_ROOT  # the repository root
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _eks_examples() -> Path:
    """``EKS_EXAMPLES``, else ``shared/data/eks-examples`` beside the checkout (or its parent)."""
    if "EKS_EXAMPLES" in os.environ:
        return Path(os.environ["EKS_EXAMPLES"])
    candidates = [base / "shared" / "data" / "eks-examples" for base in (REPO.parent, REPO.parent.parent)]
    return next((c for c in candidates if c.is_dir()), candidates[0])


FLY = _eks_examples() / "fly"


@pytest.fixture(scope="module")
def fly_dir() -> Path:
    if not (FLY / "calibration.toml").is_file():
        message = f"eks-examples fly data not found at {FLY} (set EKS_EXAMPLES)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return FLY


@pytest.fixture(scope="module")
def group() -> CameraGroup:
    return rig.make_rig(4, seed=3)


def _points(n: int = 200) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 80, (n, 3)) + np.array([0, 0, 40.0])


def test_projection_matches_opencv(group):
    points = _points()
    for cam, mine in zip(group.cameras, group.project(points)):
        ref, _ = cv2.projectPoints(points, cam.rvec, cam.translation, cam.matrix, cam.distortion)
        np.testing.assert_allclose(mine, ref[:, 0], atol=1e-9)


def test_undistortion_matches_opencv_and_inverts_projection(group):
    points = _points()
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-15)
    for cam in group.cameras:
        pixels = cam.project(points)
        mine = cam.undistort(pixels)
        ref = cv2.undistortPoints(pixels[:, None], cam.matrix, cam.distortion, None, None, None, criteria)[:, 0]
        np.testing.assert_allclose(mine, ref, atol=1e-12)
        xc = cam.to_camera(points)
        np.testing.assert_allclose(mine, xc[:, :2] / xc[:, 2:], atol=1e-13)


def test_fisheye_matches_opencv():
    cam = Camera(
        "f",
        (640, 480),
        np.array([[300.0, 0, 320], [0, 300, 240], [0, 0, 1]]),
        np.array([0.05, -0.01, 0.002, -0.0005]),
        rodrigues_to_matrix([0.1, -0.2, 0.05]),
        np.array([5.0, -3.0, 400.0]),
        fisheye=True,
    )
    points = _points()
    ref, _ = cv2.fisheye.projectPoints(points[:, None], cam.rvec, cam.translation, cam.matrix, cam.distortion)
    np.testing.assert_allclose(cam.project(points), ref[:, 0], atol=1e-8)
    xc = cam.to_camera(points)
    np.testing.assert_allclose(cam.undistort(cam.project(points)), xc[:, :2] / xc[:, 2:], atol=1e-12)


def test_projection_jacobian_matches_finite_differences(group):
    points = _points(20)
    for cam in group.cameras:
        _, jac = cam.project_jacobian(points)
        for axis in range(3):
            step = np.zeros(3)
            step[axis] = 1e-5
            numeric = (cam.project(points + step) - cam.project(points - step)) / 2e-5
            np.testing.assert_allclose(jac[..., axis], numeric, rtol=1e-6, atol=1e-6)


def test_rodrigues_matches_opencv_and_is_exact_both_ways():
    rvecs = np.random.default_rng(1).normal(0, 1.2, (300, 3))
    rvecs = rvecs[np.linalg.norm(rvecs, axis=1) < np.pi - 1e-3]
    matrices = rodrigues_to_matrix(rvecs)
    for rvec, matrix in zip(rvecs[:50], matrices[:50]):
        np.testing.assert_allclose(matrix, cv2.Rodrigues(rvec)[0], atol=1e-15)
    np.testing.assert_allclose(matrix_to_rodrigues(matrices), rvecs, atol=1e-14)
    # angles 0, tiny and pi (where arccos of the trace loses everything)
    edge = np.array([[0, 0, 0], [1e-10, 0, 0], [0, 0, np.pi], [0, np.pi - 1e-9, 0], [np.pi / np.sqrt(2)] * 2 + [0]])
    back = rodrigues_to_matrix(matrix_to_rodrigues(rodrigues_to_matrix(edge)))
    np.testing.assert_allclose(back, rodrigues_to_matrix(edge), atol=1e-14)
    np.testing.assert_allclose(matrix_to_rodrigues(rodrigues_to_matrix(edge[:2])), edge[:2], atol=1e-20)


def test_calibration_toml_round_trips(group, tmp_path):
    path = write_calibration(group, tmp_path / "calibration.toml")
    assert (path.stat().st_mode & 0o777) == 0o644 or os.umask(0o022) != 0o022
    back = read_calibration(path)
    assert back.names == group.names
    for a, b in zip(group.cameras, back.cameras):
        assert a.size == b.size
        for attr in ("matrix", "distortion", "translation"):
            np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))
        np.testing.assert_allclose(a.rotation, b.rotation, atol=1e-14)
    assert back.metadata == group.metadata
    again = read_calibration(write_calibration(back, tmp_path / "again.toml"))
    for a, b in zip(back.cameras, again.cameras):  # Rodrigues -> matrix -> Rodrigues: to the last bits
        np.testing.assert_allclose(a.rvec, b.rvec, rtol=1e-14, atol=1e-16)
    assert "[cam_3]" in calibration_text(group)


def test_reads_the_fly_calibration(fly_dir):
    group = read_calibration(fly_dir / "calibration.toml")
    assert group.names == ["Cam-A", "Cam-B", "Cam-C"]
    assert group["Cam-B"].size == (832, 632)
    assert group["Cam-C"].distortion[0] == pytest.approx(-6468.60716369641)
    assert group.metadata["adjusted"] is True
    np.testing.assert_allclose(
        group["Cam-A"].rvec, [-0.27221844817360985, 0.6525954351124643, 0.06007236378908297], atol=1e-15
    )


GOOD = """[cam_0]
name = "A"
size = [640, 480]
matrix = [[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]]
distortions = [0.0, 0.0, 0.0, 0.0, 0.0]
rotation = [0.0, 0.0, 0.0]
translation = [0.0, 0.0, 100.0]
"""


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda t: t.replace("translation = [0.0, 0.0, 100.0]\n", ""),
            "camera 'A' ([cam_0]): field 'translation' is missing",
        ),
        (
            lambda t: t.replace("distortions = [0.0, 0.0, 0.0, 0.0, 0.0]", "distortions = [0.0, 0.0]"),
            "camera 'A' ([cam_0]): field 'distortions' has shape (2,)",
        ),
        (
            lambda t: t.replace("rotation = [0.0, 0.0, 0.0]", "rotation = [0.0, nan, 0.0]"),
            "camera 'A' ([cam_0]): field 'rotation' has non-finite",
        ),
        (lambda t: t + t.replace("cam_0", "cam_1"), "duplicate camera name(s) ['A']"),
        (lambda t: t.replace('name = "A"\n', ""), "[cam_0]: field 'name' is missing"),
        (lambda t: t.replace("size = [640, 480]", "size = [640]"), "camera 'A' ([cam_0]): field 'size' has shape"),
        (lambda t: "[metadata]\n", "no [cam_N] tables"),
        (lambda t: t.replace("[cam_0]", "[cam_0"), "not a TOML file"),
    ],
)
def test_bad_calibration_names_camera_and_field(tmp_path, edit, message):
    path = tmp_path / "calibration.toml"
    path.write_text(edit(GOOD))
    with pytest.raises(CalibrationError) as info:
        read_calibration(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------ issue 26, items 9 and 18


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda t: t.replace("[[500.0, 0.0", "[[0.0, 0.0"),
            "camera 'A' ([cam_0]): field 'matrix': focal length fx = 0.0 must be positive",
        ),
        (
            lambda t: t.replace("[0.0, 500.0, 240.0]", "[0.0, -500.0, 240.0]"),
            "camera 'A' ([cam_0]): field 'matrix': focal length fy = -500.0 must be positive",
        ),
        (
            lambda t: t.replace("[0.0, 0.0, 1.0]]", "[0.0, 0.0, 2.0]]"),
            "camera 'A' ([cam_0]): field 'matrix': the last row is [0.0, 0.0, 2.0], expected [0, 0, 1]",
        ),
        (
            lambda t: t.replace("[0.0, 500.0, 240.0]", "[3.0, 500.0, 240.0]"),
            "camera 'A' ([cam_0]): field 'matrix': element [1][0] is 3.0, expected 0",
        ),
        (
            lambda t: t.replace("[[500.0, 0.0", "[[true, 0.0"),
            "camera 'A' ([cam_0]): field 'matrix' holds a non-number: True (bool)",
        ),
        (
            lambda t: t.replace("[[500.0, 0.0", '[["500.0", 0.0'),
            "camera 'A' ([cam_0]): field 'matrix' holds a non-number: '500.0' (str)",
        ),
        (
            lambda t: t.replace("translation = [0.0, 0.0, 100.0]", 'translation = [0.0, "0", 100.0]'),
            "camera 'A' ([cam_0]): field 'translation' holds a non-number: '0' (str)",
        ),
        (
            lambda t: t.replace("rotation = [0.0, 0.0, 0.0]", "rotation = [false, 0.0, 0.0]"),
            "camera 'A' ([cam_0]): field 'rotation' holds a non-number: False (bool)",
        ),
        (
            lambda t: t.replace("size = [640, 480]", "size = [true, 480]"),
            "camera 'A' ([cam_0]): field 'size' holds a non-number: True (bool)",
        ),
        (
            lambda t: t.replace("size = [640, 480]", "size = [640.5, 480]"),
            "camera 'A' ([cam_0]): field 'size' must be two positive integers",
        ),
        (
            lambda t: t + 'fisheye = "false"\n',
            "camera 'A' ([cam_0]): field 'fisheye' must be true or false, got 'false'",
        ),
        (lambda t: t + "fisheye = 0\n", "camera 'A' ([cam_0]): field 'fisheye' must be true or false, got 0"),
        (
            lambda t: (
                t
                + "[metadata]\nerror = 0.3\n"
                + t.replace("cam_0", "cam_1").replace('"A"', '"B"').replace("[[500.0", "[[-1.0")
            ),
            "camera 'B' ([cam_1]): field 'matrix': focal length fx = -1.0 must be positive",
        ),
        (lambda t: "metadata = 5\n" + t, "[metadata] must be a table, got 5"),
        (lambda t: "cam_1 = 5\n" + t, "[cam_1] must be a table of camera fields, got 5"),
    ],
)
def test_degenerate_cameras_are_refused_naming_camera_and_field(tmp_path, edit, message):
    path = tmp_path / "calibration.toml"
    path.write_text(edit(GOOD))
    with pytest.raises(CalibrationError) as info:
        read_calibration(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_fisheye_false_is_pinhole(tmp_path):
    path = tmp_path / "calibration.toml"
    path.write_text(GOOD + "fisheye = false\n")
    assert read_calibration(path).cameras[0].fisheye is False


def test_camera_objects_are_checked_by_the_same_rules():
    good = dict(
        name="A",
        size=(640, 480),
        matrix=np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]]),
        distortion=np.zeros(5),
        rotation=np.eye(3),
        translation=np.array([0, 0, 100.0]),
    )
    Camera(**good)
    bad_cases = [
        ({"matrix": np.array([[-500.0, 0, 320], [0, 500, 240], [0, 0, 1]])}, "field 'matrix': focal length fx"),
        ({"matrix": np.array([[500.0, 0, 320], [0, 500, 240], [0, 1, 1]])}, "field 'matrix': the last row"),
        ({"translation": np.array([True, False, True])}, "field 'translation' holds a non-number"),
        ({"size": (True, 480)}, "field 'size' holds a non-number: True (bool)"),
        ({"size": (0, 480)}, "field 'size' must be two positive integers"),
        ({"fisheye": "false"}, "field 'fisheye' must be true or false"),
    ]
    for change, message in bad_cases:
        with pytest.raises(CalibrationError, match=r"camera 'A': " + re.escape(message)):
            Camera(**{**good, **change})


def _looking_away(camera: Camera) -> Camera:
    """The same camera turned half round about its own y axis: the scene is behind it."""
    turn = np.diag([-1.0, 1.0, -1.0])
    return camera.with_pose(turn @ camera.rotation, -(turn @ camera.rotation) @ camera.centre)


@pytest.mark.parametrize("method", ["dlt", "robust"])
def test_a_camera_with_the_points_behind_it_is_flagged(method):
    true = rig.make_rig(3, seed=7)
    points = _points(60) * 0.5
    pixels = true.project(points)  # what the cameras saw
    broken = CameraGroup((*true.cameras[:2], _looking_away(true.cameras[2])))
    assert (broken.cameras[2].to_camera(points)[:, 2] < 0).all()
    triangulate = triangulate_dlt if method == "dlt" else triangulate_robust
    with pytest.warns(CameraBehindWarning, match=r"camera 'cam2': \d+ of \d+ triangulated points lie behind it"):
        result = triangulate(broken, pixels)
    in_front = broken.in_front(result.points)
    assert not (result.used & ~in_front).any()  # a view that has the point behind it is not used
    assert (result.n_views <= 2).all()
    # the good rig triangulates without a warning, every view used
    with warnings.catch_warnings():
        warnings.simplefilter("error", CameraBehindWarning)
        assert (triangulate(true, pixels).n_views == 3).all()
