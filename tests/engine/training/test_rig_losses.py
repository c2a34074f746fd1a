"""Calibrated geometry as unsupervised losses: reprojection and limb length (engine.geometry)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from element_lightning_pose.engine.config import ConfigError, LossesConfig, TrainConfig
from element_lightning_pose.engine.multicam.cameras import write_calibration
from element_lightning_pose.engine.training import rig_losses
from element_lightning_pose.engine.training.unlabeled import MultiCameraClipDataset, build_camera_caches, session_videos
from element_lightning_pose.synthetic.rig import make_body, make_rig


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """A 3-camera rig, a body with its true projections, and the geometry fitted on 20 frames."""
    group = make_rig(3, seed=0, image_size=(320, 240))
    body = make_body(50, seed=0)
    calibration = write_calibration(group, tmp_path_factory.mktemp("rig") / "calibration.toml")
    pixels = np.stack([cam.project(body.points) for cam in group.cameras])  # (C, T, K, 2)
    losses = LossesConfig(unsupervised=["reprojection", "limb_length"], calibration=str(calibration))
    fitted = rig_losses.fit_rig_geometry(calibration, group.names, pixels[:, :20], body.bodyparts, losses)
    return group, body, pixels, fitted, calibration


def _losses(pixels: torch.Tensor, fitted: rig_losses.RigGeometry, n_keypoints: int):
    confidence = torch.ones(pixels.shape[:2], dtype=pixels.dtype)
    points, valid, error = rig_losses.triangulate_views(pixels, confidence, fitted, 0.5)
    reprojection = rig_losses.reprojection_loss(error, valid, fitted.reprojection_epsilon)
    limbs = rig_losses.limb_length_loss(points.reshape(-1, n_keypoints, 3), valid.reshape(-1, n_keypoints), fitted)
    return points, reprojection, limbs


def test_consistent_pose_triangulates_exactly_and_costs_nothing(rig):
    group, body, pixels, fitted, _ = rig
    n_kp = len(body.bodyparts)
    views = torch.tensor(pixels[:, 20:].reshape(3, -1, 2))
    points, reprojection, limbs = _losses(views, fitted, n_kp)
    np.testing.assert_allclose(points.numpy().reshape(30, n_kp, 3), body.points[20:], atol=1e-6)
    assert reprojection.item() == 0.0 and limbs.item() == 0.0


def test_bones_are_fitted_on_the_labels(rig):
    _, body, _, fitted, _ = rig
    # the spanning tree of the least varying distances is the body's true skeleton
    assert sorted(fitted.bones) == sorted((min(e), max(e)) for e in body.edges)
    truth = {(min(e), max(e)): length for e, length in zip(body.edges, body.lengths)}
    np.testing.assert_allclose(fitted.bone_lengths, [truth[b] for b in fitted.bones], rtol=1e-6)
    assert fitted.reprojection_epsilon == 1.0  # exact labels: the 1 px floor
    assert rig_losses.RigGeometry.from_dict(fitted.to_dict()).bones == fitted.bones


def test_moving_one_view_costs_and_its_gradient_moves_it_back(rig):
    _, body, pixels, fitted, _ = rig
    n_kp = len(body.bodyparts)
    moved = torch.tensor(pixels[:, 20:].reshape(3, -1, 2))
    shift = torch.tensor([15.0, -10.0], dtype=moved.dtype)
    moved[1, 5] += shift
    moved.requires_grad_(True)
    _, reprojection, _ = _losses(moved, fitted, n_kp)
    assert reprojection.item() > 0
    reprojection.backward()
    gradient = moved.grad[1, 5]
    assert torch.dot(gradient, shift) > 0  # descent moves it against the shift
    step = moved.detach().clone()
    step[1, 5] -= 2000.0 * gradient
    _, after, _ = _losses(step, fitted, n_kp)
    assert after.item() < reprojection.item()
    untouched = [k for k in range(moved.shape[1]) if k != 5]
    assert moved.grad[:, untouched].abs().max().item() == 0.0  # other instants are independent


def test_stretching_a_bone_costs_limb_length(rig):
    _, body, pixels, fitted, _ = rig
    snout = body.bodyparts.index("snout")
    points = torch.tensor(body.points[20:].copy())
    valid = torch.ones(points.shape[:2], dtype=torch.bool)
    assert rig_losses.limb_length_loss(points, valid, fitted).item() == 0.0
    points[:, snout] += torch.tensor([0.0, 0.0, 15.0], dtype=points.dtype)
    assert rig_losses.limb_length_loss(points, valid, fitted).item() > 0


def test_occluded_view_is_ignored_by_triangulation_but_pulled_by_the_loss(rig):
    _, body, pixels, fitted, _ = rig
    views = torch.tensor(pixels[:, 20:21].reshape(3, -1, 2))
    views[2] += 40.0  # a wrong guess in camera 2 ...
    confidence = torch.ones(views.shape[:2], dtype=views.dtype)
    confidence[2] = 0.1  # ... with low confidence: the two others place the point
    points, valid, error = rig_losses.triangulate_views(views, confidence, fitted, 0.5)
    np.testing.assert_allclose(points.numpy(), body.points[20], atol=1e-6)
    assert valid.all() and error[:2].max() < 1e-6 and error[2].min() > 30


def test_geometric_losses_without_a_calibration_are_refused():
    with pytest.raises(ConfigError, match=r"losses.*need losses\.calibration"):
        TrainConfig.from_dict({"losses": {"unsupervised": ["reprojection"]}})


def test_views_missing_from_the_calibration_are_named(rig):
    group, body, pixels, _, calibration = rig
    losses = LossesConfig(unsupervised=["reprojection"], calibration=str(calibration))
    with pytest.raises(ConfigError, match=r"none for view 'top' \(camera 'top'\); .*losses\.camera_names"):
        rig_losses.fit_rig_geometry(calibration, ["cam0", "top"], pixels[:2, :5], body.bodyparts, losses)
    renamed = losses.model_copy(update={"camera_names": {"top": "cam1"}})
    fitted = rig_losses.fit_rig_geometry(calibration, ["cam0", "top"], pixels[:2, :5], body.bodyparts, renamed)
    assert fitted.camera_names == ["cam0", "cam1"]


def test_a_bone_never_labeled_is_a_clear_error(rig):
    group, body, pixels, _, calibration = rig
    labels = pixels[:, :5].copy()
    labels[:, :, 0] = np.nan  # the snout never labeled
    losses = LossesConfig(unsupervised=["limb_length"], calibration=str(calibration), limb_bones=[["snout", "head"]])
    with pytest.raises(ConfigError, match=r"snout-head is triangulated in 0 training label"):
        rig_losses.fit_rig_geometry(calibration, group.names, labels, body.bodyparts, losses)


# ------------------------------------------------------------------ synchronised clips and training


@pytest.fixture(scope="module")
def rig_project(tmp_path_factory):
    from element_lightning_pose.synthetic.rig_project import make_rig_project

    return make_rig_project(
        tmp_path_factory.mktemp("rigproject"),
        n_cameras=3,
        image_size=(96, 64),
        n_frames=40,
        n_labeled=8,
        n_board_frames=2,
        occlusion_rate=0.2,
    )


def rig_config(project, losses: dict, *, model_type: str = "heatmap", **training) -> dict:
    """A tiny shared-network training config on the rig project's views, with ``losses``."""
    return {
        "data": {"image_resize": [32, 64], "csv_file": project.csv_files, "view_names": project.camera_names},
        "model": {"backbone": "resnet18", "pretrained": False, "model_type": model_type},
        "training": {"max_epochs": 1, "unfreeze_epoch": 0, "num_workers": 0, "batch_size": 4, **training},
        "losses": {"warmup_epochs": 0, **losses},
    }


def test_occluded_points_are_not_labeled_and_recorded(rig_project):
    truth = np.load(rig_project.ground_truth)
    labels = pd.read_csv(rig_project.root / rig_project.csv_files[0], header=[0, 1, 2], index_col=0)
    frames = truth["labeled_frames"]
    hidden = truth["occluded"][0][frames] | ~truth["visible"][0][frames]
    assert truth["occluded"].any()
    assert np.array_equal(np.isnan(labels.to_numpy()[:, 0::2]), hidden)


def test_camera_clips_hold_the_same_instants_in_every_view(rig_project, tmp_path):
    videos = sorted(rig_project.videos.values())
    assert [sorted(s) for s in session_videos(videos, rig_project.camera_names)] == [rig_project.camera_names]
    caches = build_camera_caches(videos, rig_project.camera_names, (32, 48), tmp_path, max_frames=40, clip_length=4)
    clip = MultiCameraClipDataset(caches, 4, 2)[0]
    assert clip["frames"].shape == (3, 4, 3, 32, 48) and clip["to_original"].shape == (3, 2, 3)
    with pytest.raises(Exception, match=r"no video of view\(s\) \['cam2'\]"):
        session_videos(videos[:2], rig_project.camera_names)


def test_training_with_the_geometric_losses_logs_them_and_reloads(rig_project, tmp_path):
    from element_lightning_pose.engine.inference.models import load_model
    from element_lightning_pose.engine.training import train

    losses = {"unsupervised": ["reprojection", "limb_length"], "calibration": "calibration.toml", "clip_length": 3}
    config = rig_config(rig_project, losses, max_epochs=2, log_every_n_steps=1)
    result = train(config, rig_project.root, tmp_path / "model", progress=False)
    metrics = pd.read_csv(result.model_dir / "metrics.csv")
    assert {"train_reprojection_loss", "train_limb_length_loss"} <= set(metrics.columns)
    assert np.isfinite(metrics["train_reprojection_loss"]).all()
    assert load_model(result.model_dir).bodyparts == rig_project.bodyparts
    saved = torch.load(result.best_checkpoint, map_location="cpu", weights_only=False)["hyper_parameters"]
    assert saved["geometry"]["camera_names"] == rig_project.camera_names  # reloads without the file


def test_geometric_losses_on_a_single_view_project_are_refused(tmp_path):
    from element_lightning_pose.engine.training import train
    from element_lightning_pose.synthetic.projects import make_synthetic_project

    project = make_synthetic_project(tmp_path / "p", image_size=(64, 64), n_labeled=6, n_video_frames=20)
    (project.root / "calibration.toml").write_text("")
    config = {"losses": {"unsupervised": ["reprojection"], "calibration": "calibration.toml"}}
    with pytest.raises(ConfigError, match=r"need a multi-view project of separate cameras"):
        train(config, project.root, tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()


def test_multiview_pca_spans_separate_cameras(rig_project, tmp_path):
    from element_lightning_pose.engine.training import train

    config = rig_config(rig_project, {"unsupervised": ["pca_multiview"], "clip_length": 3})
    result = train(config, rig_project.root, tmp_path / "model", progress=False)
    saved = torch.load(result.best_checkpoint, map_location="cpu", weights_only=False)["hyper_parameters"]
    n_kp = len(rig_project.bodyparts)
    assert saved["pca"]["pca_multiview"]["views"] == [list(range(c * n_kp, (c + 1) * n_kp)) for c in range(3)]
    assert "train_pca_multiview_loss" in pd.read_csv(result.model_dir / "metrics.csv").columns


def test_context_model_trains_with_the_reprojection_loss(rig_project, tmp_path):
    from element_lightning_pose.engine.training import train

    losses = {"unsupervised": ["reprojection", "temporal"], "calibration": "calibration.toml", "clip_length": 5}
    config = rig_config(rig_project, losses, model_type="context")
    result = train(config, rig_project.root, tmp_path / "model", progress=False)
    metrics = pd.read_csv(result.model_dir / "metrics.csv")
    assert np.isfinite(metrics[["train_reprojection_loss", "train_temporal_loss"]].to_numpy()).all()


def test_decoys_draw_a_hidden_point_in_the_wrong_place(tmp_path):
    from element_lightning_pose.engine.data.video import read_frames
    from element_lightning_pose.synthetic.rig_project import make_rig_project

    kwargs = {"n_cameras": 2, "image_size": (160, 120), "n_frames": 20, "n_labeled": 3, "n_board_frames": 2}
    plain = make_rig_project(tmp_path / "plain", occlusion_rate=0.3, dot_radius=3, **kwargs)
    decoy = make_rig_project(tmp_path / "decoy", occlusion_rate=0.3, dot_radius=3, decoys=True, **kwargs)
    truth = np.load(decoy.ground_truth)
    np.testing.assert_array_equal(truth["occluded"], np.load(plain.ground_truth)["occluded"])
    a = read_frames(plain.videos["cam0"], list(range(20))).astype(int)
    b = read_frames(decoy.videos["cam0"], list(range(20))).astype(int)
    hidden = truth["occluded"][0] & truth["visible"][0]
    assert hidden.any()
    changed = np.abs(a - b).sum(-1) > 60  # a decoy is drawn where the plain video has background
    assert changed[np.nonzero(hidden.any(1))[0]].any(axis=(1, 2)).all()
    assert not changed[np.nonzero(~hidden.any(1))[0]].any()  # frames with nothing hidden are the same


def test_absurd_disagreement_is_capped_and_stays_finite(rig):
    _, _, pixels, fitted, _ = rig
    views = torch.tensor(pixels[:, 20:22].reshape(3, -1, 2))
    views[0, :] = torch.tensor([0.0, 0.0], dtype=views.dtype)  # a corner in camera 0 for every point
    views[1, :] = torch.tensor([319.0, 239.0], dtype=views.dtype)  # the opposite corner in camera 1
    views.requires_grad_(True)
    confidence = torch.ones(views.shape[:2], dtype=views.dtype)
    points, valid, error = rig_losses.triangulate_views(views, confidence, fitted, 0.5)
    diagonal = 2 * np.linalg.norm(fitted.matrix[:, :2, 2], axis=-1)
    assert (error.detach().numpy() <= diagonal[:, None] + 1e-9).all()
    loss = rig_losses.reprojection_loss(error, valid, fitted.reprojection_epsilon)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(views.grad).all()
