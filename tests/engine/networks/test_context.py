"""Temporal context model: neighbour frames, training (with unsupervised losses), exact streaming inference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from element_lightning_pose.engine.data.labels import load_resized, read_image
from element_lightning_pose.engine.data.projects import load_project
from element_lightning_pose.engine.data.video import read_frames, resize_frame
from element_lightning_pose.engine.inference.evaluate import evaluate
from element_lightning_pose.engine.inference.models import load_model
from element_lightning_pose.engine.inference.predict import predict_video
from element_lightning_pose.engine.networks import ContextHeatmapNet, pad_edges, sliding_windows
from element_lightning_pose.engine.training import train
from element_lightning_pose.engine.training.datasets import LabeledDataset
from element_lightning_pose.synthetic.projects import make_synthetic_project

pytestmark = pytest.mark.slow  # trains networks: deselect with -m 'not slow'

CONTEXT = {
    "data": {"image_resize": [64, 64]},
    "model": {"backbone": "resnet18", "pretrained": False, "model_type": "context"},
    "training": {
        "max_epochs": 6,
        "unfreeze_epoch": 0,
        "num_workers": 0,
        "batch_size": 8,
        "log_every_n_steps": 1,
        "learning_rate": 3e-3,
    },
    "augmentation": {"enabled": False},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_synthetic_project(
        tmp_path_factory.mktemp("ctx"), image_size=(64, 64), n_labeled=20, n_video_frames=40, views=2
    )


@pytest.fixture(scope="module")
def trained(project, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("ctx_model")
    config = dict(
        CONTEXT,
        losses={
            "unsupervised": ["temporal", "pca_multiview"],
            "view_groups": [list(range(9)), list(range(9, 18))],
            "clip_length": 8,
            "warmup_epochs": 0,
        },
    )
    return model_dir, train(config, project.root, model_dir, progress=False)


def test_labeled_item_is_the_window_of_neighbouring_files(project):
    labels, _ = load_project(project.root)
    dataset = LabeledDataset(labels, [0], (64, 64), context=True)
    window = dataset[0]["image"].permute(0, 2, 3, 1).numpy()
    assert window.shape == (5, 64, 64, 3)
    centre, _, _ = load_resized(labels, 0, (64, 64))
    assert np.array_equal(window[2], centre)
    path = labels.image_paths[0]
    number = int(path[-9:-4])
    after = read_image(project.root / f"{path[:-9]}{number + 1:05d}.png")
    assert np.array_equal(window[3], resize_frame(after, (64, 64)))
    assert not np.array_equal(window[1], window[3])  # the animal moves between neighbours


def test_augmentation_is_the_same_for_every_frame_of_a_window(project):
    from element_lightning_pose.engine.config import AugmentationConfig
    from element_lightning_pose.engine.training.augmentation import Augmenter

    labels, _ = load_project(project.root)
    still = np.repeat(load_resized(labels, 0, (64, 64))[0][None], 5, axis=0)
    augmenter = Augmenter(
        AugmentationConfig(rotation_deg=30, occlusion_prob=1, contrast_prob=1, blur_prob=1), labels.bodyparts
    )
    out, _ = augmenter.augment_frames(still, labels.keypoints[0], np.random.default_rng(0))
    assert all(np.array_equal(out[0], frame) for frame in out[1:])  # identical frames stay identical
    assert not np.array_equal(out[0], still[0])


def test_context_training_runs_on_cpu_and_lowers_the_loss(trained):
    model_dir, result = trained
    log = pd.read_csv(next((model_dir / "logs").glob("version_*/metrics.csv")))
    supervised = log["train_supervised_loss_step"].dropna().to_numpy()  # both heads, summed
    assert len(supervised) >= 12
    assert supervised[-3:].mean() < 0.9 * supervised[:3].mean()
    assert "train_pca_multiview_loss" in result.history and "train_temporal_loss" in result.history
    assert (model_dir / "checkpoints" / "best.ckpt").is_file()


def test_each_keypoint_takes_the_more_confident_head():
    net = ContextHeatmapNet("resnet18", 2)
    sharp = torch.full((1, 2, 16, 16), -50.0)
    sharp[0, 0, 3, 4] = 50.0  # keypoint 0: single head sure at (4, 3)
    sharp[0, 1] = 0.0  # keypoint 1: single head flat
    other = torch.full((1, 2, 16, 16), 0.0)
    other[0, 1, 10, 12] = 50.0  # keypoint 1: context head sure at (12, 10)
    points = net.combine(sharp, other)
    assert points[0, 0, :2].tolist() == pytest.approx([4 * 4 + 1.5, 3 * 4 + 1.5])
    assert points[0, 1, :2].tolist() == pytest.approx([12 * 4 + 1.5, 10 * 4 + 1.5])
    assert points[0, :, 2].min() > 0.9


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_streaming_equals_predicting_each_frame_with_its_true_neighbours(trained, project, batch_size):
    model_dir, _ = trained
    model = load_model(model_dir, device="cpu")
    video = project.videos[0]
    streamed = predict_video(model, video, batch_size=batch_size, progress=False).predictions
    n = len(streamed)
    assert n == 40
    frames = np.stack([resize_frame(f, model.image_resize) for f in read_frames(video, range(n))])
    # true neighbours t-2..t+2, the first / last frame repeated beyond the edges
    windows = frames[np.clip(np.arange(n)[:, None] + np.arange(-2, 3), 0, n - 1)]
    expected = np.concatenate([model.predict_windows(windows[i : i + 8], (64, 64)) for i in range(0, n, 8)])
    np.testing.assert_allclose(streamed, expected, atol=2e-3)


def test_short_video_and_window_helpers():
    frames = torch.arange(3.0).view(3, 1)
    padded = pad_edges(frames)
    assert padded[:, 0].tolist() == [0, 0, 0, 1, 2, 2, 2]
    assert sliding_windows(padded)[:, :, 0].tolist() == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 2], [0, 1, 2, 2, 2]]


def test_context_model_evaluates_labeled_frames_with_their_neighbours(trained, project):
    model_dir, _ = trained
    labels, _ = load_project(project.root)
    table = evaluate(model_dir, labels)
    assert len(table) == len(labels) * len(labels.bodyparts)
    assert table["error_px"].notna().all() and table["likelihood"].between(0, 1).all()
