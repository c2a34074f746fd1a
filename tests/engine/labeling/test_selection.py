"""Frame selection (k-means, uniform, model-guided) and the export of frames into labeled-data/,
on tiny synthetic videos and prediction files written by the engine's own writers."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest

from element_lightning_pose.engine.config import LossesConfig
from element_lightning_pose.engine.data.keypoints import write_csv_atomic, write_keypoint_csv, write_predictions
from element_lightning_pose.engine.data.labels import context_image_paths, read_image
from element_lightning_pose.engine.data.video import iter_frames, read_frames, write_video
from element_lightning_pose.engine.eks.io import EKS_COORDS
from element_lightning_pose.engine.inference.metrics import diagnostics_table
from element_lightning_pose.engine.labeling.selection import (
    FrameScores,
    SelectionError,
    Suggestion,
    export_frames,
    kmeans,
    model_pcas,
    pca_features,
    read_frame_scores,
    select_kmeans,
    select_model_guided,
    select_uniform,
)
from element_lightning_pose.engine.multicam.io import write_reprojections
from element_lightning_pose.engine.safe_paths import UnsafePathError
from element_lightning_pose.engine.training.pca import fit_pca
from element_lightning_pose.synthetic.projects import SyntheticProject, make_synthetic_project

N_FRAMES = 120
STILL = 60  # the half-still video: frames 0-59 hold one picture, 60-119 move


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> SyntheticProject:
    """A synthetic project whose video is 120 frames of 48 x 64 pixels, its animal moving throughout."""
    return make_synthetic_project(
        tmp_path_factory.mktemp("selection") / "project",
        image_size=(48, 64),
        n_labeled=4,
        n_video_frames=N_FRAMES,
        occlusion=False,
    )


@pytest.fixture(scope="module")
def half_still_video(project: SyntheticProject, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's first frame held for 60 frames (no motion), then its frames 60-119. The held
    picture looks like no moving frame: without the motion threshold it is a cluster of its own."""
    frames = list(iter_frames(project.videos[0]))
    held = [frames[0]] * STILL + frames[STILL:]
    return write_video(tmp_path_factory.mktemp("still") / "half_still.mp4", held, fps=30.0)


# ------------------------------------------------------------------------------ k-means


def test_kmeans_finds_separated_clusters_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    data = np.concatenate([c + rng.normal(0, 0.3, (30, 2)) for c in centres])
    labels, found = kmeans(data, 3, np.random.default_rng(1))
    assert sorted(np.bincount(labels).tolist()) == [30, 30, 30]
    for centre in centres:
        assert np.linalg.norm(found - centre, axis=1).min() < 0.3
    again, _ = kmeans(data, 3, np.random.default_rng(1))
    np.testing.assert_array_equal(labels, again)
    # more clusters than distinct points: still one member each
    labels, _ = kmeans(np.zeros((4, 2)), 3, np.random.default_rng(0))
    assert set(labels.tolist()) == {0, 1, 2}


def test_pca_features_match_an_exact_svd() -> None:
    """The randomised PCA's projections carry the variances of the leading principal components."""
    rng = np.random.default_rng(0)
    scales = np.array([8.0, 4.0, 2.0, 1.0, 0.5, 0.25])
    data = (rng.normal(size=(300, 6)) * scales) @ rng.normal(size=(6, 200)) + rng.normal(0, 0.01, (300, 200))
    features = pca_features(data.astype(np.float32), 4, np.random.default_rng(1))
    singular = np.linalg.svd(data - data.mean(axis=0), compute_uv=False)
    np.testing.assert_allclose(features.var(axis=0) * len(data), singular[:4] ** 2, rtol=1e-3)
    assert pca_features(np.zeros((3, 5)), 32, rng).shape == (3, 2)  # at most N - 1 components


def test_select_kmeans_returns_n_distinct_frames_with_reasons(project: SyntheticProject) -> None:
    suggestions = select_kmeans(project.videos[0], 10)
    frames = [s.frame for s in suggestions]
    assert len(frames) == 10 and len(set(frames)) == 10
    assert all(0 <= f < N_FRAMES for f in frames)
    assert [s.score for s in suggestions] == sorted((s.score for s in suggestions), reverse=True)
    assert all(s.reason.startswith("k-means cluster ") and " of 10 " in s.reason for s in suggestions)


def test_select_kmeans_is_deterministic_by_seed(project: SyntheticProject) -> None:
    first = select_kmeans(project.videos[0], 8, seed=3)
    assert select_kmeans(project.videos[0], 8, seed=3) == first
    others = [{s.frame for s in select_kmeans(project.videos[0], 8, seed=seed)} for seed in (4, 5, 6)]
    assert any(frames != {s.frame for s in first} for frames in others)


def test_select_kmeans_excludes_the_given_frames(project: SyntheticProject) -> None:
    chosen = {s.frame for s in select_kmeans(project.videos[0], 10)}
    again = select_kmeans(project.videos[0], 10, exclude=chosen)
    assert not chosen & {s.frame for s in again}
    # suggestions themselves can be excluded (the previous round's)
    suggestions = select_kmeans(project.videos[0], 5)
    assert not {s.frame for s in suggestions} & {
        s.frame for s in select_kmeans(project.videos[0], 5, exclude=suggestions)
    }


def test_select_kmeans_prefers_frames_with_motion(half_still_video: Path) -> None:
    frames = [s.frame for s in select_kmeans(half_still_video, 10)]
    assert all(f >= STILL for f in frames), frames


def test_select_kmeans_refuses_more_frames_than_can_be_chosen(project: SyntheticProject) -> None:
    with pytest.raises(SelectionError, match=r"video00.mp4: 121 frames asked, only 120"):
        select_kmeans(project.videos[0], N_FRAMES + 1)
    with pytest.raises(SelectionError, match="only 20 can be selected"):
        select_kmeans(project.videos[0], 21, exclude=range(100))
    with pytest.raises(SelectionError, match="positive integer"):
        select_kmeans(project.videos[0], 0)


# ------------------------------------------------------------------------------ uniform


def test_select_uniform_spreads_frames_evenly_and_skips_exclusions(project: SyntheticProject) -> None:
    assert [s.frame for s in select_uniform(100, 4)] == [12, 37, 62, 87]
    assert [s.frame for s in select_uniform(project.videos[0], 3)] == [20, 60, 100]
    frames = [s.frame for s in select_uniform(10, 5, exclude={1, 3, 5, 7, 9})]
    assert frames == [0, 2, 4, 6, 8]
    with pytest.raises(SelectionError, match="6 frames asked, only 5"):
        select_uniform(10, 6, exclude=range(5))


# ------------------------------------------------------------------------------ model-guided


def _predictions(project: SyntheticProject, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Ground truth plus 0.5 px noise, likelihoods 0.9-1: what a decent model predicts."""
    truth, _ = project.ground_truth(project.videos[0])
    rng = np.random.default_rng(seed)
    xy = truth + rng.normal(0, 0.5, truth.shape)
    likelihood = rng.uniform(0.9, 1.0, truth.shape[:2])
    return np.concatenate([xy, likelihood[..., None]], axis=-1), list(project.bodyparts)


def _top_frames(suggestions: list[Suggestion], k: int = 5) -> list[int]:
    return [s.frame for s in suggestions[:k]]


def test_a_planted_jump_is_among_the_first_five_and_its_reason_names_the_keypoint(
    project: SyntheticProject, tmp_path: Path
) -> None:
    values, bodyparts = _predictions(project)
    values[70, 2, :2] += 25.0  # one frame's third keypoint jumps away and back
    csv = write_predictions(tmp_path / "pred.csv", values, bodyparts)
    suggestions = select_model_guided(read_frame_scores(predictions_csv=csv), 10)
    assert 70 in _top_frames(suggestions)
    first = next(s for s in suggestions if s.frame == 70)
    assert first == suggestions[0]
    assert "temporal jump 3" in first.reason and f"on {bodyparts[2]} " in first.reason
    assert "x its median" in first.reason


def test_a_planted_low_likelihood_is_among_the_first_five(project: SyntheticProject, tmp_path: Path) -> None:
    values, bodyparts = _predictions(project, seed=1)
    values[33, 1, 2] = 0.05
    csv = write_predictions(tmp_path / "pred.csv", values, bodyparts)
    suggestions = select_model_guided(read_frame_scores(predictions_csv=csv), 10)
    assert 33 in _top_frames(suggestions)
    reason = next(s.reason for s in suggestions if s.frame == 33)
    assert reason.startswith("likelihood 0.05 on " + bodyparts[1])


def _eks_values(values: np.ndarray, posterior_var: np.ndarray) -> np.ndarray:
    """(T, K, 9) eks-layout values: the predictions, their own centre, small spreads."""
    t, k, _ = values.shape
    ens_var = np.full((t, k, 2), 0.3)
    return np.concatenate([values, values[..., :2], ens_var, posterior_var], axis=-1)


def test_a_planted_eks_variance_is_among_the_first_five(project: SyntheticProject, tmp_path: Path) -> None:
    values, bodyparts = _predictions(project, seed=2)
    rng = np.random.default_rng(0)
    posterior = rng.uniform(0.5, 1.5, values.shape[:2] + (2,))
    posterior[90, 3] = 150.0  # sd about 12 px on the fourth keypoint
    csv = write_keypoint_csv(tmp_path / "eks.csv", _eks_values(values, posterior), bodyparts, EKS_COORDS, "eks")
    scores = read_frame_scores(eks_csv=csv)
    assert set(scores.criteria) == {"posterior_sd", "ensemble_sd", "likelihood", "jump"}
    suggestions = select_model_guided(scores, 10)
    assert 90 in _top_frames(suggestions)
    reason = next(s.reason for s in suggestions if s.frame == 90)
    assert reason.startswith(f"EKS posterior sd 12.2 px on {bodyparts[3]} (")


def test_ensemble_spread_flags_the_frame_where_members_disagree(project: SyntheticProject, tmp_path: Path) -> None:
    members = []
    for seed in range(3):
        values, bodyparts = _predictions(project, seed=10 + seed)
        if seed == 1:
            values[50, 0, :2] += [20.0, -15.0]
            values[49:52, 0, 2] = 0.95  # its likelihood says nothing
        members.append(write_predictions(tmp_path / f"m{seed}.csv", values, bodyparts))
    suggestions = select_model_guided(read_frame_scores(members=members), 10)
    assert 50 in _top_frames(suggestions)
    reason = next(s.reason for s in suggestions if s.frame == 50)
    assert re.match(rf"ensemble sd 8\.\d px on {bodyparts[0]} \(", reason), reason  # (20, -15) px off: 8.3 px


def test_pca_residual_and_reprojection_error_are_criteria(project: SyntheticProject, tmp_path: Path) -> None:
    values, bodyparts = _predictions(project, seed=3)
    truth, _ = project.ground_truth(project.videos[0])
    pca = fit_pca("pca_singleview", truth, bodyparts, LossesConfig(pca_singleview_components=2))
    bent = values.copy()
    bent[20, 1, :2] += 6.0  # off the pose subspace, but close to its neighbours: no jump
    bent[19, 1, :2] += 3.0
    bent[21, 1, :2] += 3.0
    csv = write_predictions(tmp_path / "pred.csv", bent, bodyparts)
    scores = read_frame_scores(predictions_csv=csv, pca={"pca_singleview": pca})
    assert "pca_singleview_residual" in scores.criteria
    top = select_model_guided(scores, 5)[0]
    assert top.frame == 20 and top.reason.startswith("PCA residual (single-view) ")
    # this camera's view of the rig's 3D points: far from the prediction in frame 80
    projected = values[..., :2].copy()
    projected[80, 4] += [12.0, 9.0]
    projected_csv = write_reprojections(tmp_path / "rig", ["cam"], projected[None], bodyparts)[0]
    top = select_model_guided(read_frame_scores(predictions_csv=csv, reprojection=projected_csv), 5)[0]
    assert top.frame == 80 and top.reason.startswith(f"reprojection error in this camera 15.0 px on {bodyparts[4]}")


def test_the_diagnostics_file_of_elp_predict_gives_pca_residuals(project: SyntheticProject, tmp_path: Path) -> None:
    values, bodyparts = _predictions(project, seed=6)
    truth, _ = project.ground_truth(project.videos[0])
    pca = fit_pca("pca_singleview", truth, bodyparts, LossesConfig(pca_singleview_components=2))
    values[64, 6, :2] += 5.0
    values[63, 6, :2] += 2.5
    values[65, 6, :2] += 2.5
    diagnostics = write_csv_atomic(diagnostics_table(values, bodyparts, {"pca_singleview": pca}), tmp_path / "d.csv")
    scores = read_frame_scores(diagnostics_csv=diagnostics)
    assert set(scores.criteria) == {"pca_singleview_residual", "jump"} and scores.poses is None
    top = select_model_guided(scores, 3)[0]
    assert top.frame == 64 and top.reason.startswith("PCA residual (single-view) ") and bodyparts[6] in top.reason
    csv = write_predictions(tmp_path / "pred.csv", values, bodyparts)
    both = read_frame_scores(predictions_csv=csv, diagnostics_csv=diagnostics)
    assert both.sources["pca_singleview_residual"] == str(diagnostics) and both.poses is not None


@pytest.mark.slow  # trains a one-epoch network
def test_the_pca_of_a_trained_model_is_read_from_its_directory(tmp_path: Path) -> None:
    from element_lightning_pose.engine.training import train

    labeled = make_synthetic_project(tmp_path / "p", image_size=(48, 64), n_labeled=24, n_video_frames=40)
    config = {
        "data": {"image_resize": [64, 64]},
        "model": {"backbone": "resnet18", "pretrained": False},
        "training": {"max_epochs": 1, "unfreeze_epoch": 0, "num_workers": 0},
        "losses": {"unsupervised": ["pca_singleview"], "pca_singleview_components": 3, "warmup_epochs": 0},
    }
    model_dir = train(config, labeled.root, tmp_path / "model", progress=False).model_dir
    pcas = model_pcas(model_dir)
    assert list(pcas) == ["pca_singleview"] and pcas["pca_singleview"].components.shape[1] == 3
    truth, _ = labeled.ground_truth(labeled.videos[0])
    values = np.concatenate([truth, np.ones(truth.shape[:2] + (1,))], axis=-1)
    values[25, 5, :2] += [9.0, -7.0]
    values[24, 5, :2] += [4.5, -3.5]
    values[26, 5, :2] += [4.5, -3.5]
    csv = write_predictions(tmp_path / "pred.csv", values, labeled.bodyparts)
    scores = read_frame_scores(predictions_csv=csv, pca=model_dir)
    assert scores.sources["pca_singleview_residual"] == str(model_dir)
    renamed = write_predictions(tmp_path / "renamed.csv", values, [f"kp{k}" for k in range(len(labeled.bodyparts))])
    with pytest.raises(SelectionError, match=r"model: the model predicts \['nose'.*renamed.csv has \['kp0'"):
        read_frame_scores(predictions_csv=renamed, pca=model_dir)
    top = select_model_guided(scores, 3)[0]
    assert top.frame == 25 and top.reason.startswith("PCA residual (single-view) "), top


def test_spread_keeps_a_burst_from_filling_the_queue(project: SyntheticProject) -> None:
    values, bodyparts = _predictions(project, seed=4)
    values[40:52, 0, 2] = np.linspace(0.1, 0.2, 12)  # twelve bad frames in a row
    values[100, 3, 2] = 0.3  # and one elsewhere, less bad than all of them
    scores = FrameScores(
        {"likelihood": 1 - values[..., 2]}, bodyparts, np.arange(N_FRAMES), values[..., :2], {"likelihood": "test"}
    )
    plain = [s.frame for s in select_model_guided(scores, 5, spread=False)]
    assert all(40 <= f < 52 for f in plain)  # what spreading prevents
    spread = sorted(s.frame for s in select_model_guided(scores, 5))
    assert min(np.diff(spread)) >= 5, spread
    assert 100 in spread and 40 in spread  # the burst's worst frame leads it


def test_model_guided_excludes_frames_and_checks_its_inputs(project: SyntheticProject, tmp_path: Path) -> None:
    values, bodyparts = _predictions(project, seed=5)
    values[70, 2, 2] = 0.01
    csv = write_predictions(tmp_path / "pred.csv", values, bodyparts)
    scores = read_frame_scores(predictions_csv=csv)
    assert 70 not in [s.frame for s in select_model_guided(scores, 10, exclude=[70])]
    other = write_predictions(tmp_path / "other.csv", values[..., :1, :], bodyparts[:1])
    with pytest.raises(SelectionError, match=r"other.csv: body parts .* differ from .*pred.csv"):
        read_frame_scores(predictions_csv=csv, members=[other, other])
    short = write_predictions(tmp_path / "short.csv", values[:50], bodyparts)
    with pytest.raises(SelectionError, match=r"short.csv: 50 frames \(0-49\), .*pred.csv has 120 \(0-119\)"):
        read_frame_scores(predictions_csv=csv, members=[short, short])
    with pytest.raises(SelectionError, match="give at least one"):
        read_frame_scores()
    with pytest.raises(SelectionError, match="unknown criterion 'nonsense'"):
        FrameScores({"nonsense": values[..., 2]}, bodyparts, np.arange(N_FRAMES))


# ------------------------------------------------------------------------------ export


def test_export_writes_frames_and_context_that_the_label_reader_finds(
    project: SyntheticProject, tmp_path: Path
) -> None:
    root = tmp_path / "new_project"
    root.mkdir()
    video = project.videos[0]
    paths = export_frames(video, [Suggestion(10, 1.0, "test"), 0, N_FRAMES - 1], root)
    assert paths == [f"labeled-data/video00/img{f:08d}.png" for f in (10, 0, N_FRAMES - 1)]
    written = sorted(p.name for p in (root / "labeled-data" / "video00").iterdir())
    expected = sorted(f"img{f:08d}.png" for f in [*range(8, 13), 0, 1, 2, *range(N_FRAMES - 3, N_FRAMES)])
    assert written == expected
    context = context_image_paths(root, paths[0])
    assert context == [f"labeled-data/video00/img{f:08d}.png" for f in range(8, 13)]
    images = read_frames(video, list(range(8, 13)))
    for path, image in zip(context, images):
        np.testing.assert_array_equal(read_image(root / path), image)  # PNG is lossless
        assert stat.S_IMODE(os.stat(root / path).st_mode) == 0o644
    # exporting again keeps the same images and returns the same paths
    assert export_frames(video, [10], root) == paths[:1]
    assert not list((root / "labeled-data" / "video00").glob(".*"))


def test_export_refuses_a_frame_outside_the_video(project: SyntheticProject, tmp_path: Path) -> None:
    with pytest.raises(SelectionError, match=r"video00.mp4: frame 120 is outside the video \(frames 0-119\)"):
        export_frames(project.videos[0], [5, N_FRAMES], tmp_path)
    with pytest.raises(SelectionError, match="frame -1 is outside"):
        export_frames(project.videos[0], [-1], tmp_path)
    assert not (tmp_path / "labeled-data").exists()


def test_export_never_overwrites_a_different_image_and_leaves_nothing_behind(
    project: SyntheticProject, tmp_path: Path
) -> None:
    folder = tmp_path / "labeled-data" / "video00"
    folder.mkdir(parents=True)
    stranger = folder / "img00000061.png"  # the name of a context frame of frame 60, another picture
    inverted = 255 - read_frames(project.videos[0], [61])[0]
    assert cv2.imwrite(str(stranger), cv2.cvtColor(inverted, cv2.COLOR_RGB2BGR))
    before = stranger.read_bytes()
    with pytest.raises(SelectionError, match=r"img00000061.png: exists and differs from frame 61 of .*video00.mp4"):
        export_frames(project.videos[0], [20, 60], tmp_path)
    assert stranger.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["img00000061.png"]  # frames 18-22, 58-60 removed again
    small = np.zeros((10, 10, 3), dtype=np.uint8)
    assert cv2.imwrite(str(stranger), small)
    with pytest.raises(
        SelectionError, match=r"img00000061.png: exists and is not frame 61 .*\(10x10, the video's frames are 64x48\)"
    ):
        export_frames(project.videos[0], [60], tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["img00000061.png"]


def test_export_keeps_another_extractors_copy_of_a_frame(project: SyntheticProject, tmp_path: Path) -> None:
    """The synthetic project's images are renders, not decodes of its compressed video: a few
    grey levels apart. They stay as they are, and the missing neighbours are added."""
    root = tmp_path / "copy"
    (root / "labeled-data" / "video00").mkdir(parents=True)
    render = sorted((project.root / "labeled-data" / "video00").glob("img*.png"))[0]
    copy = root / "labeled-data" / "video00" / render.name
    copy.write_bytes(render.read_bytes())
    frame = int(render.stem[3:])
    paths = export_frames(project.videos[0], [frame], root)
    assert paths == [f"labeled-data/video00/img{frame:05d}.png"]  # the folder's five-digit padding
    assert copy.read_bytes() == render.read_bytes()
    assert len(list(copy.parent.iterdir())) == 5


def test_export_refuses_a_video_name_that_cannot_be_a_folder(project: SyntheticProject, tmp_path: Path) -> None:
    link = tmp_path / "...mp4"
    link.symlink_to(project.videos[0])
    with pytest.raises(UnsafePathError, match="cannot name a folder"):
        export_frames(link, [1], tmp_path / "root")
