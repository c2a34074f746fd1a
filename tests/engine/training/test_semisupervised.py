"""Semi-supervised training: losses, PCA in original pixels, the frame cache, config errors, diagnostics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from element_lightning_pose.engine.config import ConfigError, LossesConfig, TrainConfig
from element_lightning_pose.engine.data.projects import load_project
from element_lightning_pose.engine.data.video import read_frames, resize_frame
from element_lightning_pose.engine.inference.models import load_model
from element_lightning_pose.engine.inference.predict import predict_video
from element_lightning_pose.engine.training import train
from element_lightning_pose.engine.training.losses import pca_loss, temporal_loss
from element_lightning_pose.engine.training.pca import PCAFitError, fit_pca, held_out_residuals
from element_lightning_pose.engine.training.unlabeled import (
    ClipDataset,
    build_frame_cache,
    plan_segments,
    to_original_matrix,
)
from element_lightning_pose.synthetic.projects import make_synthetic_project

pytestmark = pytest.mark.slow  # trains networks: deselect with -m 'not slow'

VIEW0, VIEW1 = list(range(9)), list(range(9, 18))


def semi_config(**losses) -> dict:
    values = {
        "unsupervised": ["temporal", "pca_singleview", "pca_multiview"],
        "pca_singleview_keypoints": VIEW0,
        "view_groups": [VIEW0, VIEW1],
        "warmup_epochs": 0,
        "clip_length": 8,
    }
    values.update(losses)
    return {
        "data": {"image_resize": [64, 64]},
        "model": {"backbone": "resnet18", "pretrained": False},
        "training": {"max_epochs": 4, "unfreeze_epoch": 0, "num_workers": 0, "batch_size": 8, "log_every_n_steps": 1},
        "losses": values,
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    # two views (top | bottom side by side) so the multi-view PCA has its two views
    return make_synthetic_project(
        tmp_path_factory.mktemp("semi"), image_size=(64, 64), n_labeled=28, n_video_frames=60, views=2
    )


def step_log(model_dir) -> pd.DataFrame:
    return pd.read_csv(next((model_dir / "logs").glob("version_*/metrics.csv")))


# --------------------------------------------------------------------------- losses


def test_temporal_loss_is_zero_for_a_still_clip_and_positive_for_a_jump():
    still = torch.full((6, 3, 2), 10.0)
    confident = torch.ones(6, 3)
    assert temporal_loss(still, confident, 20.0).item() == 0.0
    jump = still.clone()
    jump[3:, 1, 0] += 35.0  # keypoint 1 jumps 35 px once: 15 px above epsilon in one of 5 x 3 pairs
    assert temporal_loss(jump, confident, 20.0).item() == pytest.approx(15.0 / 15)
    # a jump below epsilon costs nothing; per-keypoint epsilons are honoured
    assert temporal_loss(jump, confident, torch.tensor([20.0, 40.0, 20.0])).item() == 0.0
    # a low-confidence end of the pair removes it
    unsure = confident.clone()
    unsure[3, 1] = 0.1
    assert temporal_loss(jump, unsure, 20.0, min_confidence=0.5).item() == 0.0


def test_pca_loss_is_relu_of_residual_minus_epsilon():
    residual = torch.tensor([[1.0, 5.0], [2.0, 9.0]])
    assert pca_loss(residual, 4.0).item() == pytest.approx((1.0 + 5.0) / 4)
    confident = torch.tensor([[True, False], [True, True]])  # low-confidence keypoints are left out
    assert pca_loss(residual, 4.0, confident).item() == pytest.approx(5.0 / 3)
    assert pca_loss(residual, 4.0, torch.zeros_like(confident)).item() == 0.0


def _labels(n: int, rng, scale: float = 1.0) -> np.ndarray:
    """(n, 4, 2) keypoints on a 2-D subspace plus 0.5 px noise, times ``scale``."""
    latent = rng.normal(size=(n, 2)) * 20
    basis = rng.normal(size=(2, 8))
    return ((latent @ basis).reshape(n, 4, 2) + 100 + rng.normal(scale=0.5, size=(n, 4, 2))) * scale


def test_pca_epsilon_is_the_99th_percentile_of_training_residuals():
    rng = np.random.default_rng(0)
    points = _labels(300, rng)
    losses = LossesConfig(pca_singleview_components=2, pca_epsilon_residuals="training")
    pca = fit_pca("pca_singleview", points, list("abcd"), losses)
    residual = pca.residual_keypoints(points)
    assert pca.epsilon == pytest.approx(np.percentile(residual, 99))
    assert (residual > pca.epsilon).mean() == pytest.approx(0.01, abs=0.005)  # not the 0.99th percentile
    # the 99%-variance rule finds the 2-D subspace
    assert fit_pca("pca_singleview", points, list("abcd"), LossesConfig()).components.shape[1] == 2


def test_a_centred_pose_pca_reads_the_pose_not_where_the_animal_is():
    """Crop zoom's clips are centred on a detection, its labeled crops on the labels: an uncentred
    pose PCA fitted on the labels calls a true pose shifted by the detector's error implausible."""
    rng = np.random.default_rng(0)
    points = _labels(300, rng)
    shifted = points + rng.uniform(-15, 15, size=(300, 1, 2))  # the same poses, each moved as a whole
    plain = fit_pca("pca_singleview", points, list("abcd"), LossesConfig(pca_singleview_components=2))
    centred = fit_pca(
        "pca_singleview", points, list("abcd"), LossesConfig(pca_singleview_components=2, pca_singleview_centred=True)
    )
    assert centred.centred and not plain.centred
    assert np.median(plain.residual_keypoints(shifted)) > 5 * np.median(plain.residual_keypoints(points))
    assert np.allclose(centred.residual_keypoints(shifted), centred.residual_keypoints(points))
    assert np.median(centred.residual_keypoints(shifted)) < 1.0
    # the loss computes the same residual on tensors, and the flag survives the checkpoint's dict
    as_torch = centred.residual_keypoints(torch.tensor(shifted, dtype=torch.float64)).numpy()
    assert np.allclose(as_torch, centred.residual_keypoints(shifted))
    again = type(centred).from_dict(centred.to_dict())
    assert again.centred and np.allclose(again.residual_keypoints(shifted), centred.residual_keypoints(shifted))
    legacy = {k: v for k, v in plain.to_dict().items() if k != "centred"}  # a checkpoint from before the flag
    assert not type(plain).from_dict(legacy).centred


def test_a_pose_pca_read_at_another_scale_gives_residuals_in_the_points_pixels():
    """Crop zoom: a PCA fitted in crop-input pixels, read on frame pixels (here 2x and 0.5x the
    crop's pixels per frame pixel: a crop resized to a network input of another aspect)."""
    rng = np.random.default_rng(1)
    in_crops = _labels(200, rng)
    pca = fit_pca(
        "pca_singleview", in_crops, list("abcd"), LossesConfig(pca_singleview_components=2, pca_singleview_centred=True)
    )
    scale = np.array([2.0, 0.5])
    in_frames = in_crops / scale + rng.uniform(-300, 300, size=(200, 1, 2))  # each crop cut elsewhere
    read = pca.read_at_scale((2.0, 0.5))
    # the residual vectors in crop pixels, taken back to frame pixels axis by axis
    samples = pca.samples(in_crops) - pca.mean
    error = (samples - (samples @ pca.components) @ pca.components.T).reshape(200, 4, 2) / scale
    np.testing.assert_allclose(read.residual_keypoints(in_frames), np.linalg.norm(error, axis=-1), atol=1e-9)
    as_torch = read.residual_keypoints(torch.tensor(in_frames)).numpy()
    np.testing.assert_allclose(as_torch, read.residual_keypoints(in_frames), atol=1e-9)
    assert "input_scale" not in read.to_dict()  # how it is read, not the fit: the checkpoint keeps the fit
    assert pca.residual_keypoints(in_frames).mean() > 3 * read.residual_keypoints(in_frames).mean()


def test_held_out_epsilon_is_the_99th_percentile_of_out_of_fold_residuals():
    points = _labels(60, np.random.default_rng(3))
    pca = fit_pca("pca_singleview", points, list("abcd"), LossesConfig(pca_singleview_components=2))
    held_out = held_out_residuals(pca, points)
    assert held_out.shape == (60 * 4,)
    assert pca.epsilon == pytest.approx(np.percentile(held_out, 99))
    # a frame's own label pulls the subspace towards it: out-of-fold residuals are larger
    assert np.mean(held_out) > np.mean(pca.residual_keypoints(points))


def test_held_out_epsilon_covers_new_true_poses_better_with_few_labels():
    """20 labeled frames: the in-sample epsilon is exceeded by many new TRUE poses (the loss
    would pull correct predictions); the held-out one is exceeded by fewer, closer to 1%."""
    exceeded = {"training": [], "held_out": []}
    for seed in range(5):
        points = _labels(2020, np.random.default_rng(seed))
        labeled, new_poses = points[:20], points[20:]
        for rule in exceeded:
            pca = fit_pca("pca_singleview", labeled, list("abcd"), LossesConfig(pca_epsilon_residuals=rule))
            exceeded[rule].append((pca.residual_keypoints(new_poses) > pca.epsilon).mean())
    assert all(h < t for h, t in zip(exceeded["held_out"], exceeded["training"]))
    assert np.mean(exceeded["held_out"]) < 0.05 < np.mean(exceeded["training"])


def test_pca_without_enough_complete_frames_says_how_many_exist_and_are_needed():
    points = _labels(12, np.random.default_rng(1))
    points[:6, 2] = np.nan  # 6 complete frames for 8 dimensions
    with pytest.raises(PCAFitError, match=r"have 6 complete frames.*at least 8 are needed"):
        fit_pca("pca_singleview", points, list("abcd"), LossesConfig())
    with pytest.raises(PCAFitError, match=r"no keypoint group"):
        fit_pca("pca_singleview", points, list("abcd"), LossesConfig(pca_singleview_keypoints=[]))


def test_training_reports_a_pca_that_cannot_be_fitted(project, tmp_path):
    # 28 labeled frames -> 22 in training, fewer than the 36 dimensions of all 18 keypoints
    config = semi_config(pca_singleview_keypoints=None, unsupervised=["pca_singleview"])
    with pytest.raises(PCAFitError, match=r"have 22 complete frames.*at least 36 are needed"):
        train(config, project.root, tmp_path / "m", progress=False)


@pytest.mark.parametrize(
    "losses, message",
    [
        ({"unsupervised": ["temporal", "pca_3d"]}, r"unknown loss name\(s\) \['pca_3d'\]"),
        ({"view_groups": [[0, 1, 2], [3, 4]]}, r"view_groups.*same number of keypoints.*lengths \[3, 2\]"),
        ({"unsupervised": ["pca_multiview"]}, r"pca_multiview needs losses.view_groups"),
        ({"temporal_epsilon": -1}, r"temporal_epsilon.*>= 0"),
    ],
)
def test_loss_config_errors_are_clear(losses, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict({"losses": losses})


def test_unknown_keypoint_name_in_a_view_group(project, tmp_path):
    config = semi_config(view_groups=[["nose_top"], ["snout_bot"]], unsupervised=["pca_multiview"])
    with pytest.raises(ConfigError, match=r"unknown keypoint 'snout_bot'"):
        train(config, project.root, tmp_path / "m", progress=False)


def test_pca_is_fitted_in_original_pixels(project, tmp_path):
    """Frames twice the network size: epsilon follows the residual scale of ORIGINAL coordinates."""
    labels, _ = load_project(project.root)
    scaled = tmp_path / "big"
    # the same labels doubled (as if the frames were 2x larger); the PCA does not read images
    doubled = labels.keypoints * 2 + 0.5
    losses = LossesConfig(view_groups=[VIEW0, VIEW1], unsupervised=["pca_multiview"])
    small = fit_pca("pca_multiview", labels.keypoints, labels.bodyparts, losses)
    big = fit_pca("pca_multiview", doubled, labels.bodyparts, losses)
    assert big.epsilon == pytest.approx(2 * small.epsilon, rel=1e-6)
    # and the trained model keeps the PCA of the original coordinates: train on 128x128 frames resized to 64
    project2 = make_synthetic_project(scaled, image_size=(128, 128), n_labeled=28, n_video_frames=40, views=2)
    model_dir = tmp_path / "model"
    config = semi_config(unsupervised=["pca_multiview"])
    config["training"]["max_steps"] = 1
    train(config, project2.root, model_dir, progress=False)
    labels2, _ = load_project(project2.root)
    model = load_model(model_dir, device="cpu")
    pca = model.pcas["pca_multiview"]
    train_rows = [i for i, s in enumerate(pd.read_csv(model_dir / "splits.csv")["split"]) if s == "train"]
    train_labels = labels2.keypoints[train_rows]
    assert pca.epsilon == pytest.approx(np.nanpercentile(held_out_residuals(pca, train_labels), 99), rel=1e-6)
    # residuals of true poses are small in ORIGINAL pixels of a 128-px frame, projected ones are not
    assert pca.epsilon < 1.0
    assert np.isclose(pca.mean[:2].mean(), np.nanmean(labels2.keypoints[train_rows][:, VIEW0]), rtol=0.05)


# --------------------------------------------------------------------------- frame cache and clips


def test_segments_bound_the_cache_and_stay_contiguous():
    plan = plan_segments([1000, 50, 3], max_frames=200, clip_length=16, seed=0)
    assert sum(length for _, _, length in plan) <= 200
    assert all(length >= 16 for _, _, length in plan)
    assert all(start + length <= [1000, 50, 3][v] for v, start, length in plan)
    assert plan_segments([40, 30], max_frames=100, clip_length=16, seed=0) == [(0, 0, 40), (1, 0, 30)]


def test_cache_holds_resized_video_frames_and_clips_map_back_to_original_pixels(project, tmp_path):
    video = project.videos[0]
    cache = build_frame_cache([video], (32, 32), tmp_path / "cache", max_frames=40, clip_length=8, seed=3)
    assert cache.n_frames <= 40 and cache.frames.dtype == np.uint8 and cache.frames.shape[1:] == (32, 32, 3)
    segment = cache.segments[0]
    decoded = read_frames(video, [segment.start + 5])[0]
    assert np.array_equal(cache.frames[segment.offset + 5], resize_frame(decoded, (32, 32)))
    again = build_frame_cache([video], (32, 32), tmp_path / "cache", max_frames=40, clip_length=8, seed=3)
    assert again.segments == cache.segments  # reused, not rebuilt
    torch.manual_seed(0)
    item = ClipDataset(cache, 8, 4)[0]
    assert item["frames"].shape == (8, 3, 32, 32)
    # identity augmentation: the network pixel (x, y) maps to the original-frame pixel
    matrix = item["to_original"].numpy()
    assert matrix @ np.array([15.5, 15.5, 1.0]) == pytest.approx([31.5, 31.5])  # centre -> centre (64 px frame)
    # an augmentation's warp is undone: a point warped by M lands back where it was
    warp = np.array([[0.9, -0.2, 3.0], [0.2, 0.9, -2.0]])
    back = to_original_matrix(warp, (32, 32), (64, 64))
    point = np.array([10.0, 20.0])
    warped = warp[:, :2] @ point + warp[:, 2]
    assert back @ np.append(warped, 1.0) == pytest.approx((point + 0.5) * 2 - 0.5)


# --------------------------------------------------------------------------- training


def test_semi_supervised_training_runs_on_cpu_and_its_losses_decrease(project, tmp_path):
    # epsilon 0 keeps every loss active from the first step; weights large enough to matter
    config = semi_config(
        temporal_epsilon=0.0,
        pca_epsilon=0.0,
        temporal_weight=0.01,
        pca_singleview_weight=0.01,
        pca_multiview_weight=0.01,
        temporal_min_confidence=0.0,
        pca_min_confidence=0.0,
    )
    config["training"].update(max_epochs=8, learning_rate=3e-3)
    config["augmentation"] = {"enabled": False}  # a fixed problem: the same frames every epoch
    result = train(config, project.root, tmp_path / "m", progress=False)
    history = result.history
    for column in (
        "train_supervised_loss",
        "train_temporal_loss",
        "train_pca_singleview_loss",
        "train_pca_multiview_loss",
    ):
        assert column in history.columns  # each loss logged separately per epoch in metrics.csv
    log = step_log(tmp_path / "m")
    steps = log.dropna(subset=["train_supervised_loss_step"])
    assert len(steps) >= 20

    def early_late(column):
        values = steps[column].to_numpy()
        return values[:4].mean(), values[-4:].mean()

    for column in ("train_temporal_loss_step", "train_pca_singleview_loss_step", "train_pca_multiview_loss_step"):
        first, last = early_late(column)
        assert last < 0.5 * first, (column, first, last)
    first, last = early_late("train_supervised_loss_step")  # the labels are still learnt beside them
    assert last < 0.9 * first, (first, last)
    info = (tmp_path / "m" / "model.json").read_text()
    assert '"unsupervised_losses"' in info and '"pca_multiview"' in info
    assert (tmp_path / "m" / "frame_cache" / "frames.npy").is_file()


def test_warmup_ramps_the_unsupervised_weight(project, tmp_path):
    config = semi_config(unsupervised=["temporal"], warmup_epochs=2)
    config["training"]["max_epochs"] = 3
    train(config, project.root, tmp_path / "m", progress=False)
    factors = step_log(tmp_path / "m")["unsupervised_weight_factor"].dropna().to_numpy()
    assert factors[0] == 0.0 and factors[-1] == 1.0
    assert np.all(np.diff(factors) >= 0) and ((factors > 0) & (factors < 1)).any()


def test_predict_writes_diagnostics_with_temporal_norm_and_pca_residuals(project, tmp_path):
    config = semi_config()
    config["training"]["max_steps"] = 2
    train(config, project.root, tmp_path / "m", progress=False)
    model = load_model(tmp_path / "m", device="cpu")
    out = tmp_path / "pred" / "video00_diagnostics.csv"
    predictions = predict_video(model, project.videos[0], stop=20, progress=False, diagnostics_csv=out).predictions
    table = pd.read_csv(out, header=[0, 1], index_col=0)
    metrics = list(dict.fromkeys(table.columns.get_level_values(0)))
    assert metrics == ["temporal_norm", "pca_singleview_residual", "pca_multiview_residual"]
    assert table.shape == (20, 3 * 18)
    assert table["temporal_norm"].iloc[1:].to_numpy() == pytest.approx(
        np.linalg.norm(np.diff(predictions[:, :, :2], axis=0), axis=-1), abs=1e-4
    )
    assert table["pca_singleview_residual"].iloc[:, 9:].isna().all().all()  # only view 1 in the pose PCA
    residual = model.pcas["pca_multiview"].residual_table(predictions, 18)
    assert table["pca_multiview_residual"].to_numpy() == pytest.approx(residual, abs=1e-4)


def test_a_corrupt_unlabeled_video_is_a_clear_error_and_writes_nothing(project, tmp_path, capsys):
    import shutil

    import yaml

    from element_lightning_pose.cli import main as elp
    from element_lightning_pose.engine.data.video import VideoError

    broken = shutil.copytree(project.root, tmp_path / "broken")
    video = broken / "videos" / project.videos[0].name
    video.write_bytes(video.read_bytes()[:64] + bytes(4096))  # the header survives, the frames do not
    config = semi_config(unsupervised=["temporal"])
    with pytest.raises(VideoError, match=video.name):
        train(config, broken, tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()  # no config.yaml, splits.csv or empty frame_cache/
    config_path = tmp_path / "semi.yaml"
    config_path.write_text(yaml.safe_dump(config))
    code = elp(
        ["train", str(config_path), "--project", str(broken), "--model-dir", str(tmp_path / "m"), "--no-progress"]
    )
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1 and video.name in captured.err
    assert "Traceback" not in captured.err and not (tmp_path / "m").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "semi.yaml"]
