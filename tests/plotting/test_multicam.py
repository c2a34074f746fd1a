"""3D trace plots with the posterior band and reprojection errors per camera."""

from __future__ import annotations

import numpy as np
import pytest

from element_lightning_pose.engine.multicam.smoother import smooth_3d
from element_lightning_pose.plotting.core import POSTERIOR_BAND_GID
from element_lightning_pose.plotting.multicam import plot_reprojection_errors, plot_traces_3d
from element_lightning_pose.synthetic import rig


@pytest.fixture(scope="module")
def estimate():
    group = rig.make_rig(3, seed=7)
    body = rig.make_body(80, seed=7)
    obs = rig.observe(group, body.points, seed=7)
    result = smooth_3d(group, obs.pixels, obs.likelihood)
    errors = np.linalg.norm(group.project(result.points) - obs.pixels, axis=-1)
    errors[obs.likelihood < 0.5] = np.nan
    return group, body, result, errors


def test_traces_3d_draw_bands_and_truth(estimate, tmp_path):
    _, body, result, _ = estimate
    figure = plot_traces_3d(
        result.points,
        body.bodyparts,
        variance=result.variance,
        ground_truth=body.points,
        keypoints=["snout", 5],
        out=tmp_path / "traces.png",
    )
    assert len(figure.axes) == 6
    bands = [c for ax in figure.axes for c in ax.collections if c.get_gid() == POSTERIOR_BAND_GID]
    assert len(bands) == 6
    assert (tmp_path / "traces.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="unknown body part 'tail'"):
        plot_traces_3d(result.points, body.bodyparts, keypoints=["tail"])
    with pytest.raises(ValueError, match="variance has shape"):
        plot_traces_3d(result.points, body.bodyparts, variance=result.variance[:10])


def test_reprojection_errors_one_row_per_camera(estimate, tmp_path):
    group, _, _, errors = estimate
    figure = plot_reprojection_errors(errors, group.names, fps=30.0, out=tmp_path / "errors.svg")
    assert len(figure.axes) == 3
    assert figure.axes[0].get_ylabel().startswith("cam0")
    assert (tmp_path / "errors.svg").read_text().startswith("<?xml")
    with pytest.raises(ValueError, match=r"expected \(2, T, K\)"):
        plot_reprojection_errors(errors, ["a", "b"])


def test_rendered_body_videos_match_their_labels(tmp_path):
    from element_lightning_pose.engine.data.keypoints import read_predictions
    from element_lightning_pose.engine.data.video import video_info

    group = rig.make_rig(3, seed=8, image_size=(160, 120))
    body = rig.make_body(10, seed=8)
    files = rig.render_body_videos(group, body.points, body.bodyparts, tmp_path)
    for cam in group.cameras:
        video, labels = files[cam.name]
        info = video_info(video)
        assert (info.n_frames, info.width, info.height) == (10, 160, 120)
        values, parts = read_predictions(labels)
        assert parts == body.bodyparts
        seen = np.isfinite(values[..., 0])
        np.testing.assert_allclose(values[seen][:, :2], cam.project(body.points)[seen], atol=1e-3)
