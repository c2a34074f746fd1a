"""Synthetic projects: determinism, ground truth consistent with labels, images and videos."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from element_lightning_pose.engine.data.labels import read_image, read_labels
from element_lightning_pose.engine.data.video import read_frames, video_info
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.synthetic.projects import (
    BODY_PARTS,
    PART_COLOURS,
    load_synthetic_project,
    main,
    make_synthetic_project,
)

N_FRAMES = 60


def _frame_number(image_path: str) -> tuple[str, int]:
    match = re.fullmatch(r"labeled-data/(\w+)/img(\d+)\.png", image_path)
    assert match, image_path
    return match.group(1), int(match.group(2))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("synthetic") / "project"
    return make_synthetic_project(root, seed=3, n_labeled=12, n_video_frames=N_FRAMES, n_videos=2)


@pytest.fixture(scope="module")
def two_view_project(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("synthetic") / "two_views"
    return make_synthetic_project(root, seed=4, image_size=(64, 128), n_labeled=6, n_video_frames=N_FRAMES, views=2)


def test_same_seed_same_project_other_seed_differs(project, tmp_path: Path) -> None:
    again = make_synthetic_project(tmp_path / "again", seed=3, n_labeled=12, n_video_frames=N_FRAMES, n_videos=2)
    other = make_synthetic_project(tmp_path / "other", seed=5, n_labeled=12, n_video_frames=N_FRAMES, n_videos=2)
    assert again.csv_path.read_bytes() == project.csv_path.read_bytes()
    assert other.csv_path.read_bytes() != project.csv_path.read_bytes()
    first = read_frames(project.videos[0], [0])
    np.testing.assert_array_equal(read_frames(again.videos[0], [0]), first)
    assert not np.array_equal(read_frames(other.videos[0], [0]), first)
    np.testing.assert_array_equal(again.ground_truth(again.videos[1])[0], project.ground_truth(project.videos[1])[0])


def test_project_loads_and_labels_equal_ground_truth(project) -> None:
    labels = read_labels(project.csv_path)
    assert len(labels) == 12
    assert labels.bodyparts == project.bodyparts == list(BODY_PARTS)
    assert len(project.bodyparts) >= 6
    per_video: dict[str, list[int]] = {}
    for row, image_path in enumerate(labels.image_paths):
        stem, t = _frame_number(image_path)
        per_video.setdefault(stem, []).append(t)
        truth, _ = project.ground_truth(stem)
        np.testing.assert_array_equal(labels.keypoints[row], truth[t])
        # LP context models need the two neighbouring frames on each side
        for d in (-2, -1, 1, 2):
            assert (project.root / f"labeled-data/{stem}/img{t + d:05d}.png").is_file()
    assert sorted(per_video) == [v.stem for v in project.videos]
    assert [len(v) for v in per_video.values()] == [6, 6]


def test_videos_match_ground_truth_length_and_size(project) -> None:
    for video in project.videos:
        info = video_info(video)
        truth, occluded = project.ground_truth(video)
        assert (info.n_frames, info.height, info.width) == (N_FRAMES, 64, 64)
        assert info.fps == pytest.approx(30.0)
        assert truth.shape == (N_FRAMES, len(project.bodyparts), 2)
        assert occluded.shape == truth.shape[:2] and occluded.dtype == bool


def test_keypoints_stay_inside_their_view(project, two_view_project) -> None:
    for synthetic, (height, width) in ((project, (64, 64)), (two_view_project, (64, 128))):
        view_width = width // synthetic.views
        for video in synthetic.videos:
            truth, _ = synthetic.ground_truth(video)
            for view, columns in enumerate(synthetic.view_indices):
                x = truth[:, columns, 0] - view * view_width
                y = truth[:, columns, 1]
                assert x.min() >= 0 and x.max() <= view_width - 1
                assert y.min() >= 0 and y.max() <= height - 1


def test_motion_is_smooth(project) -> None:
    truth, _ = project.ground_truth(project.videos[0])
    steps = np.linalg.norm(np.diff(truth, axis=0), axis=-1)
    assert 0.2 < steps.mean() < 3  # pixels per frame at 64x64: moving, without jumps
    assert np.percentile(steps, 99) < 8


def _colour_distance(image: np.ndarray, point: np.ndarray, part: int) -> int:
    """Largest channel difference between the pixel under ``point`` and the part's colour."""
    x, y = (int(np.floor(v + 0.5)) for v in point)
    return int(np.abs(image[y, x].astype(int) - PART_COLOURS[part]).max())


def test_labeled_images_show_each_part_at_its_label(project) -> None:
    """The blob of each visible keypoint is drawn where the label says (lossless PNGs)."""
    labels = read_labels(project.csv_path)
    distances = []
    for row, image_path in enumerate(labels.image_paths):
        image = read_image(project.root / image_path)
        stem, t = _frame_number(image_path)
        _, occluded = project.ground_truth(stem)
        distances += [
            _colour_distance(image, labels.keypoints[row, k], k)
            for k in range(len(labels.bodyparts))
            if not occluded[t, k]
        ]
    # blobs may overlap where parts come close; otherwise the colour is exact up to antialiasing
    assert np.mean(np.array(distances) < 20) >= 0.8


def test_occluder_hides_exactly_the_occluded_keypoints(project) -> None:
    """In the (compressed) video, occluded keypoints never show their colour; visible ones do."""
    visible_distances, occluded_distances = [], []
    for video in project.videos:
        truth, occluded = project.ground_truth(video)
        frames = read_frames(video, range(N_FRAMES))
        for t, k in np.ndindex(occluded.shape):
            distance = _colour_distance(frames[t], truth[t, k], k)
            (occluded_distances if occluded[t, k] else visible_distances).append(distance)
    assert len(occluded_distances) > 0
    assert min(occluded_distances) > 40  # compression blurs the box edge a little
    assert np.mean(np.array(visible_distances) < 40) >= 0.8


def test_occlusion_recorded_and_optional(project, tmp_path: Path) -> None:
    occluded = np.concatenate([project.ground_truth(v)[1] for v in project.videos])
    assert 0 < occluded.any(axis=1).mean() < 0.6
    plain = make_synthetic_project(tmp_path / "plain", seed=3, n_labeled=4, n_video_frames=N_FRAMES, occlusion=False)
    assert not plain.ground_truth(plain.videos[0])[1].any()


def test_two_views_double_keypoints_with_a_shared_3d_pose(project, two_view_project) -> None:
    assert len(two_view_project.bodyparts) == 2 * len(project.bodyparts)
    assert two_view_project.bodyparts[: len(BODY_PARTS)] == [p + "_top" for p in BODY_PARTS]
    assert two_view_project.bodyparts[len(BODY_PARTS) :] == [p + "_bot" for p in BODY_PARTS]
    labels = read_labels(two_view_project.csv_path)
    assert labels.keypoints.shape == (6, 2 * len(BODY_PARTS), 2)
    truth, _ = two_view_project.ground_truth(two_view_project.videos[0])
    top, bottom = (truth[:, columns] for columns in two_view_project.view_indices)
    # horizontal coordinates agree up to the view offset; together the two views are a rank-3
    # linear image of each keypoint's 3D position (what multi-view PCA looks for)
    np.testing.assert_allclose(bottom[..., 0] - top[..., 0], 64, atol=1e-9)
    stacked = np.concatenate([top, bottom], axis=-1).reshape(-1, 4)
    singular = np.linalg.svd(stacked - stacked.mean(axis=0), compute_uv=False)
    assert singular[3] < 1e-3 * singular[2]
    assert singular[2] > 0.05 * singular[0]  # the third dimension (height) is really used


def test_load_and_bad_requests(project, tmp_path: Path) -> None:
    loaded = load_synthetic_project(project.root)
    assert loaded == project
    with pytest.raises(ProjectError, match="nope"):
        project.ground_truth("nope.mp4")
    with pytest.raises(ProjectError, match="synthetic.json"):
        load_synthetic_project(tmp_path)
    with pytest.raises(FileExistsError):
        make_synthetic_project(project.root)
    with pytest.raises(ValueError, match="n_labeled"):
        make_synthetic_project(tmp_path / "too_many", n_labeled=100, n_video_frames=20)
    with pytest.raises(ValueError, match="views"):
        make_synthetic_project(tmp_path / "views", views=3)
    assert list(tmp_path.iterdir()) == []


def test_command_line_entry(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tmp_path / "cli"), "--size", "48", "64", "--frames", "20", "--labeled", "3", "--seed", "7"]) == 0
    cli_project = load_synthetic_project(tmp_path / "cli")
    info = video_info(cli_project.videos[0])
    assert (info.height, info.width, info.n_frames) == (48, 64, 20)
    assert len(read_labels(cli_project.csv_path)) == 3
    assert "wrote" in capsys.readouterr().out
    assert main([str(tmp_path / "cli")]) == 2  # exists: refused, not overwritten


def _animal_extent(keypoints: np.ndarray) -> float:
    """Median over frames of the larger side of the keypoints' bounding box, in pixels."""
    return float(np.median((keypoints.max(axis=1) - keypoints.min(axis=1)).max(axis=-1)))


def test_arena_scene_is_a_small_grey_animal_among_distractors(tmp_path: Path) -> None:
    kwargs = dict(seed=2, image_size=(96, 128), n_labeled=6, n_video_frames=30)
    arena = make_synthetic_project(tmp_path / "arena", scene="arena", **kwargs)
    again = make_synthetic_project(tmp_path / "again", scene="arena", **kwargs)
    default = make_synthetic_project(tmp_path / "default", **kwargs)
    assert again.csv_path.read_bytes() == arena.csv_path.read_bytes()
    np.testing.assert_array_equal(read_frames(again.videos[0], [3]), read_frames(arena.videos[0], [3]))

    truth, _ = arena.ground_truth(arena.videos[0])
    # the animal is ARENA_ANIMAL_SCALE (0.6) of the default scene's size, within body-pose noise
    ratio = _animal_extent(truth) / _animal_extent(default.ground_truth(default.videos[0])[0])
    assert 0.45 < ratio < 0.75
    labels = read_labels(arena.csv_path)
    image = read_image(arena.root / labels.image_paths[0])
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
    # a bright floor, with dark pixels (the distractors) far from every keypoint of the frame
    assert np.median(image) > 170
    _, t = _frame_number(labels.image_paths[0])
    far = np.ones(image.shape[:2], bool)
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    for x, y in truth[t]:
        far &= (xx - x) ** 2 + (yy - y) ** 2 > 25**2
    assert (image[..., 0][far] < 100).sum() >= 10


def test_arena_scene_has_one_view(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="arena scene has one view"):
        make_synthetic_project(tmp_path / "p", scene="arena", views=2, image_size=(64, 128))
    with pytest.raises(ValueError, match="scene must be one of"):
        make_synthetic_project(tmp_path / "q", scene="forest")
