"""Triangulation: DLT exact on noise-free points, robust ignores a planted confident outlier."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from element_lightning_pose.engine.multicam.cameras import CameraGroup
from element_lightning_pose.engine.multicam.triangulate import (
    TriangulationError,
    triangulate_dlt,
    triangulate_robust,
)
from element_lightning_pose.synthetic import rig


@pytest.fixture(scope="module")
def scene():
    group = rig.make_rig(4, seed=1)
    body = rig.make_body(50, seed=1)
    return group, body


def test_dlt_is_exact_on_noise_free_points(scene):
    group, body = scene
    result = triangulate_dlt(group, group.project(body.points))
    assert result.points.shape == body.points.shape
    np.testing.assert_allclose(result.points, body.points, atol=1e-9)
    assert np.all(result.n_views == 4)
    assert np.nanmax(result.reprojection_error) < 1e-8
    robust = triangulate_robust(group, group.project(body.points))
    np.testing.assert_allclose(robust.points, body.points, atol=1e-9)


def test_two_views_suffice_and_one_view_is_nan(scene):
    group, body = scene
    pixels = group.project(body.points)
    pixels[2:, 0] = np.nan  # frame 0: only cameras 0 and 1
    pixels[1:, 1, 0] = np.nan  # frame 1, keypoint 0: camera 0 only
    weights = np.ones(pixels.shape[:-1])
    weights[0, 2, 3] = 0.0  # a zero weight drops a view
    for method in (triangulate_dlt, triangulate_robust):
        result = method(group, pixels, weights)
        np.testing.assert_allclose(result.points[0], body.points[0], atol=1e-8)
        assert np.all(np.isnan(result.points[1, 0])) and result.n_views[1, 0] == 0
        assert result.n_views[2, 3] == 3 and not result.used[0, 2, 3]


def test_confident_outlier_drags_dlt_but_not_robust(scene):
    group, body = scene
    rng = np.random.default_rng(0)
    pixels = group.project(body.points) + rng.normal(0, 0.5, (4,) + body.points.shape[:2] + (2,))
    pixels[2, :, 5] += np.array([80.0, -60.0])  # camera 2 confidently wrong on keypoint 5, every frame
    weights = np.full(pixels.shape[:-1], 0.95)
    dlt = triangulate_dlt(group, pixels, weights)
    robust = triangulate_robust(group, pixels, weights)
    dlt_error = np.linalg.norm(dlt.points[:, 5] - body.points[:, 5], axis=-1)
    robust_error = np.linalg.norm(robust.points[:, 5] - body.points[:, 5], axis=-1)
    assert np.median(dlt_error) > 10.0
    assert np.median(robust_error) < 1.5
    assert not robust.used[2, :, 5].any() and robust.used[[0, 1, 3], :, 5].all()
    assert np.all(robust.n_views[:, 5] == 3)


def test_variance_is_calibrated_for_gaussian_noise(scene):
    group, _ = scene
    body = rig.make_body(400, seed=2)
    rng = np.random.default_rng(3)
    pixels = group.project(body.points) + rng.normal(0, 1.0, (4,) + body.points.shape[:2] + (2,))
    result = triangulate_dlt(group, pixels, sigma_px=1.0)
    z = (result.points - body.points) / np.sqrt(result.variance)
    assert 0.92 < np.mean(np.abs(z) < 1.96) < 0.975


def test_bad_shapes_are_clear_errors(scene):
    group, body = scene
    with pytest.raises(TriangulationError, match=r"expected \(4, \.\.\., 2\)"):
        triangulate_dlt(group, np.zeros((3, 10, 2)))
    with pytest.raises(TriangulationError, match="weights have shape"):
        triangulate_robust(group, np.zeros((4, 10, 2)), np.ones((4, 9)))


def test_rays_that_coincide_place_no_point_instead_of_failing_the_batch(scene):
    """Two cameras at one place see a point along one ray: no point (NaN) where only they see
    it, the others triangulated; before, one singular system raised LinAlgError for all."""
    group, body = scene
    first = group.cameras[0]
    twin = CameraGroup((first, replace(first, name="twin"), group.cameras[1]))
    pixels = twin.project(body.points)
    weights = np.ones(pixels.shape[:-1])
    weights[2, :25] = 0.0  # the third camera misses the first 25 frames
    for method in (triangulate_dlt, triangulate_robust):
        result = method(twin, pixels, weights)
        assert np.isnan(result.points[:25]).all(), method.__name__
        np.testing.assert_allclose(result.points[25:], body.points[25:], atol=1e-6)
