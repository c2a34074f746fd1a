"""Labeling aids of a calibrated rig: projections from the other views, residuals, epipolar curves."""

from __future__ import annotations

import numpy as np
import pytest

from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.labeling.views import epipolar_curve, project_from_views
from element_lightning_pose.synthetic.rig import make_body, make_rig


@pytest.fixture(scope="module")
def rig():
    group = make_rig(n_cameras=4, seed=3)
    body = make_body(5, seed=3)
    truth = {name: group[name].project(body.points[2]) for name in group.names}  # (K, 2) per view
    return group, truth


def test_a_missing_view_is_projected_from_the_others(rig):
    group, truth = rig
    labels = {name: truth[name] for name in group.names[1:]}  # the first view not labeled yet
    agreement = project_from_views(group, labels)
    np.testing.assert_allclose(agreement.projected[group.names[0]], truth[group.names[0]], atol=1e-6)
    assert np.isnan(agreement.residual[group.names[0]]).all()  # nothing to compare there
    for name in group.names[1:]:
        assert np.nanmax(agreement.residual[name]) < 1e-6


def test_the_view_that_disagrees_has_the_largest_residual(rig):
    group, truth = rig
    labels = {name: truth[name].copy() for name in group.names}
    wrong = group.names[2]
    labels[wrong][4] += (25.0, 0.0)  # one view's label of body part 4 moved 25 px
    agreement = project_from_views(group, labels)
    residuals = {name: agreement.residual[name][4] for name in group.names}
    assert residuals[wrong] == pytest.approx(25.0, abs=0.5)
    assert max(v for n, v in residuals.items() if n != wrong) < residuals[wrong] / 2
    others = [k for k in range(len(truth[wrong])) if k != 4]
    assert np.nanmax(agreement.residual[wrong][others]) < 1e-6  # the other body parts agree


def test_the_true_point_lies_on_the_epipolar_curve(rig):
    group, truth = rig
    a, b = group.names[0], group.names[1]
    for k in range(len(truth[a])):
        curve = epipolar_curve(group, a, truth[a][k], b)
        start, end = curve[:-1], curve[1:]  # the polyline's segments
        along = np.clip(
            np.einsum("ij,ij->i", truth[b][k] - start, end - start) / np.einsum("ij,ij->i", end - start, end - start),
            0,
            1,
        )
        distance = np.min(np.linalg.norm(start + along[:, None] * (end - start) - truth[b][k], axis=1))
        assert distance < 0.5, f"body part {k}: {distance:.2f} px from the curve"


def test_bad_input_names_what_is_wrong(rig):
    group, truth = rig
    with pytest.raises(ProjectError, match="not cameras of the calibration"):
        project_from_views(group, {"side": truth[group.names[0]]})
    with pytest.raises(ProjectError, match="expected"):
        project_from_views(group, {group.names[0]: truth[group.names[0]], group.names[1]: truth[group.names[1]][:2]})
    with pytest.raises(ProjectError, match="in itself"):
        epipolar_curve(group, group.names[0], (1.0, 2.0), group.names[0])
