"""Synthetic sessions: deterministic by seed, and each factor changes the frames as specified."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from element_lightning_pose.engine.data.labels import read_image, read_labels
from element_lightning_pose.engine.data.video import video_info
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.synthetic.projects import PART_COLOURS, load_synthetic_project
from element_lightning_pose.synthetic.sessions import (
    DISTRACTOR_PARTS,
    SessionStyle,
    load_session_project,
    make_session_project,
    simulate_session,
)

SIZE = (64, 64)
FRAMES = 60


def _session(style: SessionStyle, seed: int = 5, frames: int = FRAMES, **kw):
    return simulate_session("s", style, seed=seed, image_size=SIZE, n_frames=frames, **kw)


def _frames(session) -> np.ndarray:
    return np.stack([session.render(t) for t in range(session.n_frames)])


def _background_mask(session, t: int) -> np.ndarray:
    """Pixels at least 6 px from every keypoint and not under an occluder."""
    h, w = session.background.shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    far = np.ones((h, w), dtype=bool)
    for px, py in session.keypoints[t]:
        far &= (x - px) ** 2 + (y - py) ** 2 > 36
    return far & ~session.occluder_masks[t]


def test_same_seed_same_session_other_seed_other_session() -> None:
    style = SessionStyle(texture="checker", distractor=True, motion_blur=3, occluder_shape="bar")
    a, b, c = _session(style), _session(style), _session(style, seed=6)
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    np.testing.assert_array_equal(a.occluded, b.occluded)
    np.testing.assert_array_equal(_frames(a), _frames(b))
    assert not np.array_equal(a.keypoints, c.keypoints)


def test_background_brightness_and_texture() -> None:
    dark, base, bright = (_session(SessionStyle(brightness=v)) for v in (-40.0, 0.0, 40.0))
    means = [float(s.render(0)[_background_mask(s, 0)].mean()) for s in (dark, base, bright)]
    assert means[0] < means[1] - 30 and means[2] > means[1] + 30
    # stripes and checkerboard add contrast the default texture lacks
    spread = {k: float(_session(SessionStyle(texture=k)).background.std()) for k in ("noise", "stripes", "checker")}
    assert spread["stripes"] > spread["noise"] + 5 and spread["checker"] > spread["noise"] + 5


def test_contrast_and_colour_balance() -> None:
    base = _frames(_session(SessionStyle())).astype(float)
    flat = _frames(_session(SessionStyle(contrast=0.5))).astype(float)
    assert flat.std() < 0.6 * base.std()
    warm = _frames(_session(SessionStyle(colour_gain=(1.2, 1.0, 0.8)))).astype(float)
    ratio_base = base[..., 0].mean() / base[..., 2].mean()
    assert warm[..., 0].mean() / warm[..., 2].mean() > 1.3 * ratio_base


def test_animal_scale_changes_the_animal_extent() -> None:
    def body_length(style: SessionStyle) -> float:
        kp = _session(style).keypoints
        return float(np.median(np.linalg.norm(kp[:, 0] - kp[:, 3], axis=-1)))  # nose to tail base

    small, base, large = (body_length(SessionStyle(animal_scale=s)) for s in (0.6, 1.0, 1.3))
    assert small < 0.7 * base and large > 1.2 * base


def test_distractor_blobs_have_body_part_colours() -> None:
    with_blobs, without = _session(SessionStyle(distractor=True)), _session(SessionStyle())
    assert with_blobs.distractors.shape == (len(DISTRACTOR_PARTS), 2) and len(without.distractors) == 0
    for (x, y), part in zip(with_blobs.distractors, DISTRACTOR_PARTS):
        colour = with_blobs.background[int(round(y)), int(round(x))].astype(int)
        assert np.abs(colour - np.array(PART_COLOURS[part])).max() <= 12
        assert np.abs(without.background[int(round(y)), int(round(x))].astype(int) - PART_COLOURS[part]).max() > 40


def test_motion_blur_lowers_high_frequency_energy() -> None:
    def laplacian_energy(style: SessionStyle) -> float:
        frames = _frames(_session(style, frames=10)).astype(np.float32)
        return float(np.mean([cv2.Laplacian(f.mean(axis=-1), cv2.CV_32F).var() for f in frames]))

    sharp, blurred = laplacian_energy(SessionStyle()), laplacian_energy(SessionStyle(motion_blur=5))
    assert blurred < 0.6 * sharp


def test_pose_range_widens_the_bends() -> None:
    def bend_spread(pose_range: float) -> float:
        kp = simulate_session(
            "s", SessionStyle(pose_range=pose_range, occlusion=False), seed=2, image_size=(128, 128), n_frames=600
        ).keypoints
        head = np.arctan2(*(kp[:, 0] - kp[:, 1]).T[::-1])  # head -> nose
        back = np.arctan2(*(kp[:, 2] - kp[:, 3]).T[::-1])  # tail base -> centre
        return float(np.std(np.angle(np.exp(1j * (head - back)))))

    assert bend_spread(1.8) > 1.4 * bend_spread(1.0)


@pytest.mark.parametrize("shape", ["disc", "bar"])
def test_new_occluder_shapes_and_their_flags(shape: str) -> None:
    box, other = _session(SessionStyle(), frames=120), _session(SessionStyle(occluder_shape=shape), frames=120)
    covered = [t for t in range(120) if other.occluder_masks[t].any()]
    assert covered, "no occluder episode in 120 frames"
    t = covered[0]

    def fill(mask: np.ndarray) -> float:
        ys, xs = np.nonzero(mask)
        return mask.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))

    # a box fills its bounding box; the new shapes do not
    box_t = next(t for t in range(120) if box.occluder_masks[t].any())
    assert fill(box.occluder_masks[box_t]) == 1.0 and fill(other.occluder_masks[t]) < 0.9
    # occluded flags are the masks at the keypoints' pixels; the frame shows the occluder there
    frame = other.render(t)
    for k in np.nonzero(other.occluded[t])[0]:
        x, y = (int(np.floor(v + 0.5)) for v in other.keypoints[t, k])
        assert other.occluder_masks[t, y, x]
        np.testing.assert_array_equal(frame[y, x], other.occluder[y, x])


def test_bad_style_names_the_session_and_parameter() -> None:
    with pytest.raises(ValueError, match=r"session 's'.*texture"):
        _session(SessionStyle(texture="marble"))
    with pytest.raises(ValueError, match=r"animal_scale"):
        _session(SessionStyle(animal_scale=5.0))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sessions") / "project"
    return make_session_project(root, seed=1, image_size=SIZE, n_labeled=10, n_frames=40)


def test_project_labels_only_training_sessions(project) -> None:
    assert project.train_sessions == ("train_a", "train_b")
    assert len(project.new_sessions) == 4
    labels = read_labels(project.csv_path)
    assert len(labels.keypoints) == 10
    sessions = {path.split("/")[1] for path in labels.image_paths}
    assert sessions == set(project.train_sessions)
    for path, keypoints in zip(labels.image_paths, labels.keypoints):
        session, t = path.split("/")[1], int(path.split("img")[1][:-4])
        truth, _ = project.ground_truth(project.video(session))
        np.testing.assert_allclose(keypoints, truth[t])
        assert read_image(project.root / path).shape == (*SIZE, 3)
    for session in project.train_sessions + project.new_sessions:
        info = video_info(project.video(session))
        assert info.n_frames == 40
        truth, occluded = project.ground_truth(project.video(session))
        assert truth.shape == (40, 9, 2) and occluded.shape == (40, 9)
    # also a plain synthetic project, for the code that only needs videos and ground truth
    assert load_synthetic_project(project.root).videos == project.videos


def test_project_is_deterministic(project, tmp_path) -> None:
    again = make_session_project(tmp_path / "again", seed=1, image_size=SIZE, n_labeled=10, n_frames=40)
    assert (again.root / "CollectedData.csv").read_text() == project.csv_path.read_text()
    for session in project.new_sessions:
        a, _ = project.ground_truth(project.video(session))
        b, _ = again.ground_truth(again.video(session))
        np.testing.assert_array_equal(a, b)
    meta = json.loads((project.root / "synthetic.json").read_text())
    assert meta["styles"]["new_closer"]["animal_scale"] > 1


def test_project_bad_input(tmp_path) -> None:
    with pytest.raises(ValueError, match="both training and new"):
        make_session_project(tmp_path / "a", train_sessions={"x": SessionStyle()}, new_sessions={"x": SessionStyle()})
    with pytest.raises(ValueError, match="n_labeled"):
        make_session_project(tmp_path / "b", image_size=SIZE, n_frames=10, n_labeled=50)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "synthetic.json").write_text('{"videos": []}')
    with pytest.raises(ProjectError, match="without sessions"):
        load_session_project(tmp_path / "plain")
