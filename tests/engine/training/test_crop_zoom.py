"""Crop zoom (engine.cropzoom): crop geometry, detector misses, the two-stage model directory, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from element_lightning_pose.engine.config import ConfigError, TrainConfig, crop_zoom_unsupported
from element_lightning_pose.engine.data.crops import (
    apply_affine,
    centres_from_detections,
    crop_centres,
    crop_frames,
    crop_matrix,
    crop_origin,
    crop_size_from_labels,
    invert_affine,
    label_centres,
    smooth_centres,
)
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.model_dir import ModelDirectoryError, read_model_info
from tests.conftest import elp
from tests.engine.conftest import TINY_CONFIG

CROP_ZOOM = {**TINY_CONFIG, "crop_zoom": {"enabled": True, "detector_resize": [32, 64]}}


@pytest.fixture(scope="module")
def crop_zoom_dir(tiny_project, tmp_path_factory):
    """A two-stage model trained for one epoch each on the shared tiny project (read-only)."""
    from element_lightning_pose.engine.training import train

    return train(CROP_ZOOM, tiny_project.root, tmp_path_factory.mktemp("cropzoom") / "model", progress=False).model_dir


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("input_size", [(64, 64), (96, 48), (40, 40)])
def test_crop_mapping_round_trip_within_a_hundredth_of_a_pixel(input_size):
    rng = np.random.default_rng(0)
    frame_size, crop = (480, 640), (120, 100)
    # centres inside, at the corners and beyond the edges (padded crops)
    centres = np.array([[320.3, 240.7], [0.0, 0.0], [639.0, 479.0], [-20.4, 500.2], [700.0, -30.0]])
    origins = crop_origin(centres, crop)
    matrices = crop_matrix(origins, crop, input_size)
    points = rng.uniform(-50, 700, size=(len(centres), 7, 2))
    back = apply_affine(invert_affine(matrices), apply_affine(matrices, points))
    assert np.abs(back - points).max() < 0.01
    # the crop's centre pixel lands in the middle of the network input
    middle = apply_affine(matrices, (origins + [(crop[1] - 1) / 2, (crop[0] - 1) / 2])[:, None, :])[:, 0]
    assert np.allclose(middle, [(input_size[1] - 1) / 2, (input_size[0] - 1) / 2])
    assert frame_size  # the mapping itself does not depend on the frame


def _blob(size: tuple[int, int], centre: tuple[float, float], sigma: float = 3.0) -> np.ndarray:
    ys, xs = np.mgrid[: size[0], : size[1]]
    value = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2))
    return np.repeat((255 * value).astype(np.uint8)[..., None], 3, axis=2)


def _centroid(image: np.ndarray) -> np.ndarray:
    weights = image[..., 0].astype(np.float64)
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]
    return np.array([(xs * weights).sum(), (ys * weights).sum()]) / weights.sum()


@pytest.mark.parametrize("input_size", [(60, 50), (120, 100), (30, 25)])
def test_crop_pixels_follow_the_matrix_also_in_padded_crops(input_size):
    """A blob near the frame's corner is where the matrix says in the (zero-padded) crop."""
    frame = _blob((80, 120), (6.0, 70.0))
    centre = np.array([[4.0, 76.0]])  # the crop hangs over the left and bottom edges
    crops, matrices = crop_frames(frame[None], centre, (60, 50), input_size)
    assert crops.shape == (1, *input_size, 3)
    # the blob's centroid in the frame (its tail is cut by the frame's edge) moves by the matrix
    expected = apply_affine(matrices[0], _centroid(frame)[None])[0]
    assert np.abs(_centroid(crops[0]) - expected).max() < 0.1
    origin = crop_origin(centre, (60, 50))[0]
    outside = apply_affine(matrices[0], np.array([[origin[0] + 1.0, origin[1] + 1.0]]))[0]  # a padded pixel
    assert crops[0, int(round(outside[1])), int(round(outside[0]))].max() == 0


def test_crop_size_from_labels_is_square_even_and_fits_the_frame():
    keypoints = np.array([[[10, 10], [40, 25], [np.nan, np.nan]], [[100, 100], [121, 130], [110, 115]]], float)
    assert crop_size_from_labels(keypoints, (480, 640), margin=0.25) == (46, 46)  # 30 * 1.5 = 45 -> 46
    assert crop_size_from_labels(keypoints, (40, 640), margin=0.25) == (40, 40)
    with pytest.raises(Exception, match="no labeled keypoints"):
        crop_size_from_labels(np.full((2, 3, 2), np.nan), (480, 640), margin=0.25)


def test_label_centres_ignore_unlabeled_keypoints():
    keypoints = np.array([[[0, 0], [4, 2], [np.nan, np.nan]], [[np.nan, np.nan]] * 3], float)
    centres = label_centres(keypoints)
    assert np.allclose(centres[0], [2, 1]) and np.isnan(centres[1]).all()


def test_smoothing_removes_an_outlier_and_keeps_misses():
    track = np.column_stack([np.arange(10.0), np.zeros(10)])
    track[4] = [100.0, 100.0]
    track[7] = np.nan
    smoothed = smooth_centres(track, 5)
    assert np.abs(smoothed[4] - [4.0, 0.0]).max() <= 1.0
    assert np.isnan(smoothed[7]).all() and np.isfinite(np.delete(smoothed, 7, axis=0)).all()
    assert np.array_equal(smooth_centres(track, 1), track, equal_nan=True)


def test_centres_from_detections_weigh_the_confident_keypoints():
    one = np.array([[[10.0, 20.0, 0.9]], [[30.0, 40.0, 0.05]]])
    centres = centres_from_detections(one, 0.1)
    assert np.allclose(centres[0], [10, 20]) and np.isnan(centres[1]).all()
    several = np.array([[[0.0, 0.0, 0.5], [10.0, 0.0, 0.5], [500.0, 500.0, 0.01]], [[1.0, 1.0, 0.0]] * 3])
    centres = centres_from_detections(several, 0.1)
    assert np.allclose(centres[0], [5, 0]) and np.isnan(centres[1]).all()


def test_a_keypoints_detector_gives_the_centre_of_its_keypoints(tiny_project, tmp_path):
    from element_lightning_pose.engine.inference.models import load_model
    from element_lightning_pose.engine.inference.predict import predict_video
    from element_lightning_pose.engine.training import train

    config = {**CROP_ZOOM, "crop_zoom": {**CROP_ZOOM["crop_zoom"], "detector_target": "keypoints"}}
    config["training"] = {**config["training"], "max_steps": 1}
    model_dir = train(config, tiny_project.root, tmp_path / "model", progress=False).model_dir
    info = read_model_info(model_dir)
    assert info.crop_zoom["detector_target"] == "keypoints"
    assert read_model_info(info.stage_dirs()["detector"]).bodyparts == tiny_project.bodyparts
    model = load_model(model_dir, device="cpu")
    model.min_detection_confidence = 0.0
    result = predict_video(model, tiny_project.videos[0], progress=False, stop=6)
    assert result.predictions.shape == (6, len(tiny_project.bodyparts), 3) and np.isfinite(result.predictions).all()


def test_crop_zoom_refuses_what_it_cannot_crop(tiny_project, tmp_path):
    from element_lightning_pose.engine.training.crop_zoom import train_crop_zoom

    cameras = {"csv_file": ["top.csv", "side.csv"], "view_names": ["top", "side"]}
    rig = {"unsupervised": ["reprojection"], "calibration": "calibration.toml"}
    config = TrainConfig.from_dict({**CROP_ZOOM, "data": cameras, "losses": rig})
    assert crop_zoom_unsupported(config) == "the losses that relate separate cameras (reprojection)"
    with pytest.raises(ConfigError, match="does not train the losses that relate separate cameras .reprojection"):
        train_crop_zoom(config, tiny_project.root, tmp_path / "model", progress=False)
    assert not (tmp_path / "model").exists()
    # views of one frame: a crop moves them all by the detector's error, which the subspace reads as disagreement
    one_frame = {"unsupervised": ["temporal", "pca_multiview"], "view_groups": [[0, 1], [2, 3]]}
    assert "multi-view PCA" in crop_zoom_unsupported(TrainConfig.from_dict({**CROP_ZOOM, "losses": one_frame}))
    assert crop_zoom_unsupported(TrainConfig.from_dict({**CROP_ZOOM, "losses": {"unsupervised": ["temporal"]}})) == ""
    # no videos for the unlabeled clips: said before the detector trains
    no_videos = Path(shutil.copytree(tiny_project.root, tmp_path / "no_videos", ignore=shutil.ignore_patterns("*.mp4")))
    temporal = TrainConfig.from_dict({**CROP_ZOOM, "losses": {"unsupervised": ["temporal"]}})
    with pytest.raises(ProjectError, match="needs unlabeled videos, but .*videos has none"):
        train_crop_zoom(temporal, no_videos, tmp_path / "model", progress=False)
    assert not (tmp_path / "model").exists()
    with pytest.raises(ConfigError, match="detector_resize"):
        TrainConfig.from_dict({"crop_zoom": {"detector_resize": [100, 128]}})


def test_a_context_pose_model_trains_on_cropped_windows_and_predicts_in_frame_pixels(tiny_project, tmp_path):
    """Issue 27, item 3: crop zoom with the context model. Each labeled frame's neighbours are
    cropped around its centre in training; in a video each frame is cropped around its own."""
    from element_lightning_pose.engine.data.labels import context_image_paths, load_context_frames, read_labels
    from element_lightning_pose.engine.data.video import read_frames
    from element_lightning_pose.engine.inference.models import CropZoomModel, PoseModel, load_model
    from element_lightning_pose.engine.inference.predict import predict_labeled, predict_video
    from element_lightning_pose.engine.training import train
    from element_lightning_pose.engine.training.crop_zoom import write_pose_project

    labels = read_labels(tiny_project.csv_path)
    out, images = write_pose_project(labels, np.arange(2), (40, 40), (32, 32), tmp_path / "pose", context=True)
    window = load_context_frames(labels, 0)
    expected, _ = crop_frames(window, np.repeat(label_centres(labels.keypoints[:1]), 5, axis=0), (40, 40), (32, 32))
    neighbour = context_image_paths(labels.root, labels.image_paths[0])[1]
    assert neighbour != labels.image_paths[0] and neighbour not in images
    written = cv2.cvtColor(cv2.imread(str(out / neighbour)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(written, expected[1])  # frame t-1, cut around frame t's labels

    config = {**CROP_ZOOM, "model": {**CROP_ZOOM["model"], "model_type": "context"}}
    model_dir = train(config, tiny_project.root, tmp_path / "model", progress=False).model_dir
    assert read_model_info(model_dir / "pose").model_type == "context"
    assert read_model_info(model_dir / "detector").model_type == "heatmap"
    model = load_model(model_dir, device="cpu")
    assert isinstance(model, CropZoomModel) and model.is_context
    model.min_detection_confidence = 0.3
    frames = read_frames(tiny_project.videos[0], range(45))
    centres, weak = model.crop_centres(model.detect(frames))
    crops, matrices = crop_frames(frames, centres, model.crop_size, model.image_resize)
    # the whole video's crops as one sequence through the context network (edges repeated)
    expected = model.to_frame(
        PoseModel.predict_resized(model, crops, model.image_resize), matrices, model.missed(centres, weak)
    )
    for batch_size in (1, 7, 64):
        result = predict_video(model, tiny_project.videos[0], progress=False, batch_size=batch_size)
        assert np.allclose(result.predictions, expected, atol=1e-4), batch_size
    labeled = predict_labeled(model, labels)
    assert labeled.shape == (len(labels), len(labels.bodyparts), 3) and np.isfinite(labeled).all()
    assert np.allclose(labeled[0], model.predict_window(load_context_frames(labels, 0)))


def test_the_unsupervised_losses_train_on_clips_cropped_by_the_detector(tiny_project, tmp_path):
    """Issue 27, item 3: the temporal and pose PCA losses with crop zoom. The pose stage's
    unlabeled clips are the project's video cropped around the trained detector's detections,
    at the pose input size, as inference will crop it."""
    from element_lightning_pose.engine.data.video import read_frames, video_info
    from element_lightning_pose.engine.inference.models import load_model
    from element_lightning_pose.engine.training import train
    from element_lightning_pose.engine.training.crop_zoom import write_cropped_videos

    # the pose PCA of 4 of the 9 keypoints: 8 dimensions, from the 10 training frames
    losses = {
        "unsupervised": ["temporal", "pca_singleview"],
        "clip_length": 4,
        "pca_singleview_keypoints": [0, 1, 2, 3],
    }
    config = {**CROP_ZOOM, "losses": losses}
    model_dir = train(config, tiny_project.root, tmp_path / "model", progress=False).model_dir
    pose_stage = model_dir / "pose"
    assert TrainConfig.from_yaml(pose_stage / "config.yaml").losses.unsupervised == ["temporal", "pca_singleview"]
    assert TrainConfig.from_yaml(model_dir / "detector" / "config.yaml").losses.unsupervised == []
    cache = json.loads((pose_stage / "frame_cache" / "frames.json").read_text())
    assert cache["original_sizes"] == [list(CROP_ZOOM["data"]["image_resize"])]  # crops, not whole frames
    history = pd.read_csv(pose_stage / "metrics.csv")
    assert "train_temporal_loss" in history.columns, list(history.columns)

    # the clips are the video's frames cropped as inference crops them
    model = load_model(model_dir, device="cpu")
    resolved = TrainConfig.from_yaml(model_dir / "config.yaml")
    videos = write_cropped_videos(
        model_dir / "detector", tiny_project.videos, resolved, model.crop_size, tmp_path / "c"
    )
    assert len(videos) == 1 and video_info(videos[0]).n_frames == 45
    frames = read_frames(tiny_project.videos[0], range(45))
    centres, _ = model.crop_centres(model.detect(frames))
    expected, _ = crop_frames(frames, centres, model.crop_size, model.image_resize)
    clipped = read_frames(videos[0], range(45))
    assert np.abs(clipped.astype(float) - expected).mean() < 6  # Motion JPEG
    _pose_pca_reads_frame_pixels(model, model_dir, tiny_project, tmp_path)


def _pose_pca_reads_frame_pixels(model, model_dir: Path, tiny_project, tmp_path: Path) -> None:
    """The pose stage's PCA is fitted in crop-input pixels and the model predicts in frame pixels:
    a crop-zoom model's diagnostics had no PCA residual, and the app's model-guided picks read
    that PCA on frame pixels, a pose the crop's zoom times too large."""
    from element_lightning_pose.engine.data.labels import read_labels
    from element_lightning_pose.engine.inference.predict import predict_video
    from element_lightning_pose.engine.labeling.selection import model_pcas
    from element_lightning_pose.engine.networks.checkpoint import read_checkpoint
    from element_lightning_pose.engine.training.pca import KeypointPCA

    saved = read_checkpoint(model_dir / "pose" / "checkpoints" / "best.ckpt")
    fitted = KeypointPCA.from_dict(saved.hyper_parameters["pca"]["pca_singleview"])  # crop-input pixels
    labels = read_labels(tiny_project.csv_path)
    centres = label_centres(labels.keypoints)
    crops = crop_matrix(crop_origin(centres, model.crop_size), model.crop_size, model.image_resize)
    in_crops = apply_affine(crops, labels.keypoints)  # as the pose stage was trained on them
    scale = model.image_resize[0] / model.crop_size[0]
    assert scale != 1 and model.image_resize[1] / model.crop_size[1] == scale
    truth = fitted.residual_table(in_crops, len(labels.bodyparts)) / scale  # in frame pixels
    for pcas in (model.pcas, model_pcas(model_dir)):
        assert list(pcas) == ["pca_singleview"]
        read = pcas["pca_singleview"].residual_table(labels.keypoints, len(labels.bodyparts))
        np.testing.assert_allclose(read, truth, rtol=1e-9, atol=1e-9)
    # the reading before: the crop-input PCA on frame pixels
    before = fitted.residual_table(labels.keypoints, len(labels.bodyparts))
    assert np.nanmedian(before) > 2 * np.nanmedian(truth)

    result = predict_video(model, tiny_project.videos[0], progress=False, diagnostics_csv=tmp_path / "diagnostics.csv")
    diagnostics = pd.read_csv(tmp_path / "diagnostics.csv", header=[0, 1], index_col=0)
    residual = diagnostics["pca_singleview_residual"].to_numpy()
    expected = model.pcas["pca_singleview"].residual_table(result.predictions, len(labels.bodyparts))
    np.testing.assert_allclose(residual, expected, rtol=1e-6)


# --------------------------------------------------------------------------- the two-stage model


def test_model_directory_holds_both_stages(crop_zoom_dir, tiny_project):
    info = read_model_info(crop_zoom_dir)
    assert info.kind == "crop_zoom" and info.bodyparts == tiny_project.bodyparts
    assert info.frame_size == [64, 96]
    crop = info.crop_zoom["crop_size"]
    assert crop[0] == crop[1] and crop[0] % 2 == 0 and crop[0] <= 64
    stages = info.stage_dirs()
    assert read_model_info(stages["detector"]).bodyparts == ["centre"]
    assert read_model_info(stages["pose"]).bodyparts == tiny_project.bodyparts
    config = TrainConfig.from_yaml(crop_zoom_dir / "config.yaml")
    assert config.crop_zoom.enabled and list(config.crop_zoom.crop_size) == crop
    assert json.loads((crop_zoom_dir / "model.json").read_text())["best_checkpoint"] == "pose/checkpoints/best.ckpt"


def test_a_missing_stage_names_the_file(crop_zoom_dir, tmp_path):
    broken = tmp_path / "model"
    shutil.copytree(crop_zoom_dir, broken)
    (broken / "detector" / "checkpoints" / "best.ckpt").unlink()
    with pytest.raises(ModelDirectoryError, match="detector"):
        read_model_info(broken)


def _copy_with(crop_zoom_dir, tmp_path, edit=None, detector=None):
    """A copy of the crop-zoom model, its model.json's crop_zoom block edited, its detector/ replaced."""
    model = Path(shutil.copytree(crop_zoom_dir, tmp_path / "model"))
    if edit is not None:
        data = json.loads((model / "model.json").read_text())
        edit(data["crop_zoom"])
        (model / "model.json").write_text(json.dumps(data))
    if detector is not None:
        shutil.rmtree(model / "detector")
        shutil.copytree(detector, model / "detector")
    return model


def test_a_replaced_detector_stage_is_refused(crop_zoom_dir, tiny_model_dir, tmp_path):
    """Issue 26, item 15: detector/ replaced by a 9-keypoint model predicted with rc 0."""
    from element_lightning_pose.engine.inference.models import load_model

    model = _copy_with(crop_zoom_dir, tmp_path, detector=tiny_model_dir)
    message = r"detector/model\.json: the crop-zoom detector stage predicts \['nose', .*needs \['centre'\]"
    with pytest.raises(ModelDirectoryError, match=message):
        read_model_info(model)
    with pytest.raises(ModelDirectoryError, match=message):
        load_model(model, device="cpu")


def test_a_detector_target_other_than_the_detectors_is_refused(crop_zoom_dir, tmp_path):
    model = _copy_with(crop_zoom_dir, tmp_path, edit=lambda block: block.update(detector_target="keypoints"))
    with pytest.raises(ModelDirectoryError, match=r"predicts \['centre'\].*detector_target 'keypoints'"):
        read_model_info(model)


def test_a_replaced_stage_checkpoint_is_refused(crop_zoom_dir, tiny_model_dir, tmp_path):
    """The stage's model.json kept, its checkpoint another model's: the checkpoint is compared too."""
    from element_lightning_pose.engine.inference.models import load_model

    model = _copy_with(crop_zoom_dir, tmp_path)
    shutil.copy(tiny_model_dir / "checkpoints" / "best.ckpt", model / "detector" / "checkpoints" / "best.ckpt")
    read_model_info(model)  # the descriptions agree
    with pytest.raises(ModelDirectoryError, match=r"detector/checkpoints/best\.ckpt: the checkpoint predicts \['nose'"):
        load_model(model, device="cpu")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("detector", "crop_zoom.detector must be an object with the stage's 'dir', got str 'detector'"),
        (["detector"], "crop_zoom.detector must be an object"),
        ({"dir": 5}, "crop_zoom.detector.dir must be a folder name, got 5"),
        ({"dir": "../detector"}, "crop_zoom.detector.dir '../detector' cannot name a folder: it holds '/'"),
        ({"dir": ".."}, "crop_zoom.detector.dir '..' cannot name a folder"),
    ],
    ids=["string", "list", "number", "parent", "dotdot"],
)
def test_a_malformed_stage_entry_is_one_error(crop_zoom_dir, tmp_path, value, words):
    """Issue 26, item 23: crop_zoom.detector as a string was an AttributeError traceback."""
    from element_lightning_pose.engine.inference.models import load_model

    model = _copy_with(crop_zoom_dir, tmp_path, edit=lambda block: block.update(detector=value))
    for load in (read_model_info, lambda m: load_model(m, device="cpu")):
        with pytest.raises(ModelDirectoryError) as caught:
            load(model)
        assert words in str(caught.value) and str(model / "model.json") in str(caught.value)


def test_a_frame_without_a_confident_detection_is_cropped_at_the_detectors_best_guess(crop_zoom_dir, tiny_project):
    """Issue 27: an undertrained detector (confidence below the threshold everywhere) gave no pose
    at all; its faint peaks are mostly right, so a weak frame is cropped there and the pose
    model's likelihoods judge. ``on_miss: nan`` keeps the old behaviour."""
    from element_lightning_pose.engine.data.video import read_frames
    from element_lightning_pose.engine.inference.models import load_model
    from element_lightning_pose.engine.inference.predict import predict_video

    model = load_model(crop_zoom_dir, device="cpu")
    assert model.on_miss == "best_guess"
    frames = read_frames(tiny_project.videos[0], [0, 1, 2])
    points = model.predict_crops(frames, np.array([[40.0, 30.0], [np.nan, np.nan], [50.0, 20.0]]))
    assert np.isnan(points[1, :, :2]).all() and (points[1, :, 2] == 0).all()
    assert np.isfinite(points[[0, 2]]).all()
    model.min_detection_confidence = 1.01  # nothing is ever confident enough
    weak = predict_video(model, tiny_project.videos[0], progress=False).predictions
    assert np.isfinite(weak).all()
    guesses = centres_from_detections(model.detect(read_frames(tiny_project.videos[0], range(45))), 0.0)
    assert np.allclose(weak, model.predict_crops(read_frames(tiny_project.videos[0], range(45)), guesses), atol=1e-4)
    model.on_miss = "nan"
    result = predict_video(model, tiny_project.videos[0], progress=False)
    assert np.isnan(result.predictions[..., :2]).all() and (result.predictions[..., 2] == 0).all()


def test_crop_centres_fill_a_weak_frame_from_its_confident_neighbours():
    detections = np.zeros((7, 1, 3))
    detections[:, 0, 0] = np.arange(7) * 10.0
    detections[:, 0, 2] = [0.9, 0.9, 0.05, 0.9, 0.9, 0.05, 0.05]
    centres, weak = crop_centres(detections, 0.1, 3)
    assert not weak[:6].any() and weak[6]
    assert np.allclose(centres[2], [(10 + 30) / 2, 0])  # its window's confident detections
    assert np.allclose(centres[5], [40, 0]) and np.allclose(centres[6], [60, 0])  # none around 6: its own peak
    centres, weak = crop_centres(detections, 0.1, 1)  # no smoothing: every faint frame is its own guess
    assert list(weak) == [False, False, True, False, False, True, True] and np.allclose(
        centres[:, 0], np.arange(7) * 10
    )


def test_streamed_prediction_equals_smoothing_the_whole_video(crop_zoom_dir, tiny_project):
    from element_lightning_pose.engine.data.video import read_frames
    from element_lightning_pose.engine.inference.models import load_model
    from element_lightning_pose.engine.inference.predict import predict_video

    model = load_model(crop_zoom_dir, device="cpu")
    model.min_detection_confidence = 0.3  # a mix of confident and weak frames
    video = tiny_project.videos[0]
    frames = read_frames(video, range(45))
    expected = model.predict_crops(frames, *model.crop_centres(model.detect(frames)))
    for batch_size in (1, 4, 64):
        result = predict_video(model, video, progress=False, batch_size=batch_size)
        assert result.predictions.shape == (45, len(tiny_project.bodyparts), 3)
        assert np.allclose(result.predictions, expected, atol=1e-4, equal_nan=True)


def test_predict_labeled_and_evaluate_in_original_pixels(crop_zoom_dir, tiny_project):
    from element_lightning_pose.engine.data.labels import read_labels
    from element_lightning_pose.engine.inference.evaluate import evaluate
    from element_lightning_pose.engine.inference.models import load_model
    from element_lightning_pose.engine.inference.predict import predict_labeled

    model = load_model(crop_zoom_dir, device="cpu")
    model.min_detection_confidence = 0.0
    labels = read_labels(tiny_project.csv_path)
    predictions = predict_labeled(model, labels, batch_size=5)
    assert predictions.shape == (len(labels), len(labels.bodyparts), 3)
    # every keypoint lies inside its crop, which the mapping puts around the detection in the frame
    crop = model.crop_size[0]
    assert np.isfinite(predictions).all()
    assert (predictions[..., 0] > -crop).all() and (predictions[..., 0] < 96 + crop).all()
    table = evaluate(crop_zoom_dir, labels, model=model)
    assert set(table["split"]) <= {"train", "val", "test"} and (table["split"] == "train").sum() > 0
    assert np.allclose(table["likelihood"], predictions[..., 2].reshape(-1))


@pytest.mark.slow
def test_elp_train_and_predict_without_the_project(tmp_path):
    from element_lightning_pose.engine.data.keypoints import read_predictions
    from element_lightning_pose.synthetic.projects import make_synthetic_project

    project = make_synthetic_project(tmp_path / "project", seed=3, image_size=(64, 96), n_labeled=10, n_video_frames=20)
    sets = [
        "model.backbone=resnet18",
        "model.pretrained=false",
        "data.image_resize=[64,64]",
        "training.max_steps=2",
        "training.num_workers=0",
        "crop_zoom.enabled=true",
        "crop_zoom.detector_resize=[32,32]",
        "crop_zoom.min_detection_confidence=0",
    ]
    trained = elp(
        "train",
        str(project.root),
        "--model-dir",
        str(tmp_path / "model"),
        "--no-progress",
        *[arg for s in sets for arg in ("--set", s)],
    )
    assert trained.returncode == 0, trained.stdout + trained.stderr
    video = tmp_path / "video.mp4"
    shutil.move(project.videos[0], video)
    shutil.rmtree(project.root)  # the model directory must be enough
    predicted = elp("predict", str(tmp_path / "model"), str(video), "-o", str(tmp_path / "preds"), "--no-progress")
    assert predicted.returncode == 0, predicted.stdout + predicted.stderr
    values, bodyparts = read_predictions(tmp_path / "preds" / "video.csv")
    assert bodyparts == project.bodyparts and values.shape == (20, len(bodyparts), 3)
    assert np.isfinite(values).all()


def test_the_pose_stage_fits_its_pose_pca_relative_to_the_keypoints_mean():
    from element_lightning_pose.engine.training.crop_zoom import stage_configs

    detector, pose = stage_configs(TrainConfig.from_dict({**CROP_ZOOM, "losses": {"unsupervised": ["temporal"]}}))
    assert pose.losses.pca_singleview_centred and pose.losses.unsupervised == ["temporal"]
    assert detector.losses.unsupervised == [] and detector.model.model_type == "heatmap"


def test_a_wall_time_budget_is_shared_by_the_stages_as_their_pixels():
    from element_lightning_pose.engine.training.crop_zoom import stage_configs

    config = TrainConfig.from_dict(
        {
            "data": {"image_resize": [256, 256]},
            "training": {"max_time_s": 100.0},
            "crop_zoom": {"enabled": True, "detector_resize": [128, 128]},
        }
    )
    detector, pose = stage_configs(config)
    assert detector.training.max_time_s == pytest.approx(20.0)
    assert pose.training.max_time_s == pytest.approx(80.0)
    untimed = stage_configs(TrainConfig.from_dict({"crop_zoom": {"enabled": True}}))
    assert untimed[0].training.max_time_s is None and untimed[1].training.max_time_s is None


@pytest.mark.parametrize("multiview", ["shared", "per_view"])
def test_crop_zoom_trains_and_predicts_a_multi_view_project(tmp_path, multiview):
    """A multi-view project found on disk: one network over the views, or one per view; each
    crops its views' frames around the animal and predicts in original pixels."""
    from element_lightning_pose.engine.inference.models import load_model
    from element_lightning_pose.engine.inference.predict import predict_video
    from element_lightning_pose.engine.training import train
    from element_lightning_pose.synthetic.rig_project import make_rig_project

    rig = make_rig_project(
        tmp_path / "rig", n_cameras=2, image_size=(160, 120), n_frames=24, n_labeled=8, n_board_frames=4
    )
    config = TrainConfig.from_dict({**CROP_ZOOM, "losses": {"unsupervised": ["temporal"], "clip_length": 4}})
    config = config.with_overrides([f"data.multiview={multiview}"])
    result = train(config, rig.root, tmp_path / "model", progress=False)
    kind = json.loads((tmp_path / "model" / "model.json").read_text())["kind"]
    if multiview == "per_view":
        assert kind == "per_view" and set(result.views) == {"cam0", "cam1"}
        models = {view: tmp_path / "model" / view for view in ("cam0", "cam1")}
    else:
        assert kind == "crop_zoom"
        models = {view: tmp_path / "model" for view in ("cam0", "cam1")}
    for view, model_dir in models.items():
        assert read_model_info(model_dir).kind == "crop_zoom"
        # the pose stage's clips: the videos of its views, cropped by its detector
        cached = json.loads((model_dir / "pose" / "frame_cache" / "frames.json").read_text())["videos"]
        expected = {view} if multiview == "per_view" else {"cam0", "cam1"}
        assert {next(v for v in expected if v in Path(path).name) for path in cached} == expected
        assert all(Path(path).suffix == ".avi" for path in cached)
        predicted = predict_video(load_model(model_dir, device="cpu"), rig.videos[view], progress=False).predictions
        assert predicted.shape == (24, len(rig.bodyparts), 3)
        found = np.isfinite(predicted[..., 0])
        assert found.any()  # in original pixels: inside the 160x120 frame, wherever the detector found it
        assert (predicted[found][:, 0] > -1).all() and (predicted[found][:, 0] < 161).all()


def test_crop_zoom_trains_and_predicts_a_multiview_project_named_in_the_config(tmp_path):
    """A multi-view project named in the config (one CSV per view, data.view_names) trains one
    detector and one pose model for the views, and predicts each view's video in original pixels."""
    from element_lightning_pose.engine.inference.models import load_model
    from element_lightning_pose.engine.inference.predict import predict_video
    from element_lightning_pose.engine.training import train
    from element_lightning_pose.synthetic.rig_project import make_rig_project

    rig = make_rig_project(
        tmp_path / "rig", n_cameras=2, image_size=(96, 64), n_frames=20, n_labeled=4, n_board_frames=2
    )
    config = {
        **CROP_ZOOM,
        "data": {"image_resize": [64, 64], "csv_file": list(rig.csv_files), "view_names": list(rig.camera_names)},
    }
    model_dir = train(config, rig.root, tmp_path / "model", progress=False).model_dir
    info = read_model_info(model_dir)
    assert info.n_train + info.n_val + info.n_test == 4 * len(rig.camera_names)
    model = load_model(model_dir)
    video = rig.videos[rig.camera_names[1]]
    predictions = predict_video(model, video, progress=False).predictions
    assert predictions.shape == (20, len(rig.bodyparts), 3)
    assert np.isfinite(predictions[..., 2]).all()
