"""Streaming inference: shapes, coordinate mapping, CSV round trip, streaming exactness, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from element_lightning_pose.cli import main as elp
from element_lightning_pose.engine.io import load_project, read_predictions
from element_lightning_pose.engine.predict import ModelDirError, load_model, predict_labeled, predict_video
from element_lightning_pose.engine.synthetic import make_synthetic_project
from element_lightning_pose.engine.train import train
from element_lightning_pose.engine.video import read_frames, video_info

TINY = {
    "data": {"image_resize": [64, 64]},
    "model": {"backbone": "resnet18", "pretrained": False},
    "training": {"max_epochs": 1, "unfreeze_epoch": 0, "num_workers": 0},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    # frames 64 high x 96 wide, network input 64 x 64: predictions must be mapped back
    return make_synthetic_project(tmp_path_factory.mktemp("project"), image_size=(64, 96), n_labeled=12, n_video_frames=45)


@pytest.fixture(scope="module")
def model(project, tmp_path_factory):
    result = train(TINY, project.root, tmp_path_factory.mktemp("model"), progress=False)
    return load_model(result.model_dir)


def test_predict_video_returns_original_frame_pixels_and_writes_the_csv(model, project, tmp_path):
    video = project.videos[0]
    info = video_info(video)
    out_csv = tmp_path / "pred" / "v.csv"
    predictions = predict_video(model, video, batch_size=8, out_csv=out_csv, progress=False)
    assert predictions.shape == (info.n_frames, len(project.bodyparts), 3)
    assert np.isfinite(predictions).all()
    assert predictions[..., 0].min() >= -0.5 and predictions[..., 0].max() <= info.width - 0.5
    assert predictions[..., 1].min() >= -0.5 and predictions[..., 1].max() <= info.height - 0.5
    assert ((predictions[..., 2] >= 0) & (predictions[..., 2] <= 1)).all()
    values, bodyparts = read_predictions(out_csv)
    assert bodyparts == project.bodyparts
    np.testing.assert_allclose(values, predictions, rtol=0, atol=1e-5)


def test_streaming_equals_predicting_the_frames_directly(model, project):
    video = project.videos[0]
    streamed = predict_video(model, video, batch_size=7, progress=False)
    frames = read_frames(video, range(len(streamed)))
    direct = model.predict_frames(frames)
    np.testing.assert_allclose(streamed, direct, rtol=0, atol=1e-4)


def test_frame_range_and_csv_index(model, project, tmp_path):
    import pandas as pd

    video = project.videos[0]
    everything = predict_video(model, video, progress=False)
    part = predict_video(model, video, start=10, stop=25, batch_size=4, out_csv=tmp_path / "p.csv", progress=False)
    np.testing.assert_allclose(part, everything[10:25], rtol=0, atol=1e-4)
    index = pd.read_csv(tmp_path / "p.csv", header=[0, 1, 2], index_col=0).index
    assert list(index) == list(range(10, 25))


def test_coordinates_scale_with_the_frame(model):
    # a 2x nearest-neighbour upscale resizes back (area averaging) to the very same input,
    # so its predictions must be exactly the pixel-centre-aware 2x of the originals
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    small = model.predict_frames(frames)
    large = model.predict_frames(frames.repeat(2, axis=1).repeat(2, axis=2))
    np.testing.assert_allclose(large[..., :2], (small[..., :2] + 0.5) * 2 - 0.5, rtol=0, atol=1e-3)
    np.testing.assert_allclose(large[..., 2], small[..., 2], rtol=0, atol=1e-5)


def test_predict_labeled_matches_frames(model, project):
    labels, _ = load_project(project.root)
    labeled = predict_labeled(model, labels, batch_size=5)
    assert labeled.shape == (len(labels), len(labels.bodyparts), 3)
    from element_lightning_pose.engine.io import read_image

    first = model.predict_frames(read_image(labels.root / labels.image_paths[0])[None])[0]
    np.testing.assert_allclose(labeled[0], first, rtol=0, atol=1e-4)


def test_load_model_names_the_missing_checkpoint(tmp_path):
    with pytest.raises(ModelDirError) as info:
        load_model(tmp_path)
    assert str(tmp_path / "checkpoints" / "best.ckpt") in str(info.value)


def test_cli_predicts_each_video(model, project, tmp_path, capsys):
    out = tmp_path / "out"
    code = elp(["predict", str(model.model_dir), str(project.videos[0]), "-o", str(out), "--batch-size", "5", "--no-progress"])
    assert code == 0
    values, _ = read_predictions(out / f"{project.videos[0].stem}.csv")
    assert values.shape[0] == video_info(project.videos[0]).n_frames
    code = elp(["predict", str(tmp_path / "nomodel"), str(project.videos[0]), "-o", str(out), "--no-progress"])
    assert code == 2 and "best.ckpt" in capsys.readouterr().out


def test_batchnorm_folding_keeps_the_predictions(model, project):
    plain = load_model(model.model_dir, fuse=False)
    frames = read_frames(project.videos[0], range(8))
    fused_points, plain_points = model.predict_frames(frames), plain.predict_frames(frames)
    np.testing.assert_allclose(fused_points[..., :2], plain_points[..., :2], rtol=0, atol=1e-2)
    np.testing.assert_allclose(fused_points[..., 2], plain_points[..., 2], rtol=0, atol=1e-3)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.net.backbone.modules())
