"""Camera model and calibration.toml: agreement with OpenCV, exact rotations, round trip, errors."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from element_lightning_pose.engine.multicam.cameras import (
    CalibrationError,
    Camera,
    CameraGroup,
    calibration_text,
    matrix_to_rodrigues,
    read_calibration,
    rodrigues_to_matrix,
    write_calibration,
)
from element_lightning_pose.synthetic import rig

REPO = Path(__file__).resolve().parents[2]
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
