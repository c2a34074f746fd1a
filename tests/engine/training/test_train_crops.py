"""Crop training at full resolution (``data.train_crop``) and the advice ``elp train`` prints.

Frames whose red channel is the pixel's x and green channel its y make every crop and warp
checkable to the pixel: the value under a moved label says where it came from.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from element_lightning_pose.engine.config import AugmentationConfig, ConfigError, TrainConfig
from element_lightning_pose.engine.training.augmentation import Augmenter, CropSampler
from element_lightning_pose.engine.training.datasets import LabeledDataset, PoseDataModule

NO_AUGMENTATION = {
    "rotation_deg": 0.0,
    "scale_range": (1.0, 1.0),
    "translate_frac": 0.0,
    "blur_prob": 0.0,
    "contrast_prob": 0.0,
    "occlusion_prob": 0.0,
}


def coordinate_frame(height: int, width: int) -> np.ndarray:
    """uint8 RGB frame: red = x, green = y, blue = 0."""
    y, x = np.mgrid[:height, :width]
    return np.stack([x, y, np.zeros_like(x)], axis=-1).astype(np.uint8)


def value_at(image: np.ndarray, point: np.ndarray) -> tuple[int, int]:
    """(red, green) of the pixel nearest ``point`` (x, y)."""
    x, y = np.rint(point).astype(int)
    return int(image[y, x, 0]), int(image[y, x, 1])


# --------------------------------------------------------------------------- crops move the labels


def test_crop_moves_a_label_to_the_expected_pixel():
    frame = coordinate_frame(96, 128)
    keypoints = np.array([[70.0, 40.0], [75.0, 50.0]])
    sampler = CropSampler((32, 64), focus=1.0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        crop, moved = sampler.crop(frame, keypoints, rng)
        assert crop.shape == (32, 64, 3)
        x0, y0 = int(crop[0, 0, 0]), int(crop[0, 0, 1])  # the crop's corner in the frame
        np.testing.assert_array_equal(moved, keypoints - (x0, y0))  # exact: a whole-pixel shift
        assert value_at(crop, moved[0]) == (70, 40)
        assert value_at(crop, moved[1]) == (75, 50)


def test_augmented_crop_moves_labels_with_the_pixels():
    """Rotation, zoom, shift, flip and crop in one warp: the pixel under a label is the label's origin."""
    moves = {"rotation_deg": 30.0, "scale_range": (0.8, 1.2), "translate_frac": 0.1, "hflip": True}
    config = AugmentationConfig(**{**NO_AUGMENTATION, **moves})
    augmenter = Augmenter(config, ["a", "b"])
    frame = coordinate_frame(128, 160)
    keypoints = np.array([[80.0, 60.0], [90.0, 70.0]])
    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(30):
        image, moved = augmenter(frame, keypoints, rng, CropSampler((64, 64), focus=1.0))
        assert image.shape == (64, 64, 3)
        for point, source in zip(moved, keypoints):
            if np.isfinite(point).all():
                # a flip swaps nothing here (no flip_pairs), so row i is still keypoint i
                red, green = value_at(image, point)
                assert abs(red - source[0]) <= 1.5 and abs(green - source[1]) <= 1.5
                checked += 1
    assert checked > 40


def test_keypoints_outside_the_crop_are_nan():
    frame = coordinate_frame(64, 128)
    keypoints = np.array([[3.0, 4.0], [120.0, 60.0], [64.0, 32.0], [np.nan, np.nan]])
    sampler = CropSampler((32, 32), focus=0.0)
    rng = np.random.default_rng(2)
    seen_inside = seen_outside = 0
    for _ in range(200):
        crop, moved = sampler.crop(frame, keypoints, rng)
        x0, y0 = int(crop[0, 0, 0]), int(crop[0, 0, 1])
        shifted = keypoints - (x0, y0)
        inside = (shifted >= -0.5).all(axis=1) & (shifted <= 31.5).all(axis=1)
        np.testing.assert_array_equal(np.isnan(moved).any(axis=1), ~inside)
        np.testing.assert_array_equal(moved[inside], shifted[inside])
        seen_inside += int(inside.sum())
        seen_outside += int((~inside[:3]).sum())
    assert seen_inside and seen_outside
    assert np.isnan(moved[3]).all()  # an unlabeled keypoint stays unlabeled


def contains_all(offset: tuple[int, int], keypoints: np.ndarray, size: tuple[int, int]) -> bool:
    shifted = keypoints - offset
    return bool(((shifted >= 0) & (shifted <= (size[1] - 1, size[0] - 1))).all())


@pytest.mark.parametrize("focus", [0.0, 0.5, 1.0])
def test_the_crop_contains_the_animal_with_the_focus_probability(focus):
    # a small animal near the left edge of a wide frame: a crop placed anywhere holds it ~7% of the time
    keypoints = np.array([[20.0, 40.0], [34.0, 48.0], [28.0, 55.0]])
    frame_size, size = (96, 448), (64, 32)
    sampler = CropSampler(size, focus=focus)
    rng = np.random.default_rng(3)
    hits = np.mean([contains_all(sampler.offset(frame_size, keypoints, rng), keypoints, size) for _ in range(2000)])
    uniform = (32 - 14) / (448 - 32 + 1)  # horizontal starts holding x 20..34 (all vertical starts do)
    expected = focus + (1 - focus) * uniform
    assert abs(hits - expected) < 0.035, (hits, expected)


def test_an_animal_larger_than_the_crop_gets_a_crop_inside_it():
    keypoints = np.array([[10.0, 10.0], [100.0, 50.0]])
    sampler = CropSampler((32, 32), focus=1.0)
    rng = np.random.default_rng(4)
    for _ in range(100):
        x0, y0 = sampler.offset((64, 128), keypoints, rng)
        assert 10 <= x0 <= 100 - 31 and 10 <= y0 <= 50 - 31


def test_a_context_window_gets_one_crop():
    frames = np.stack([coordinate_frame(64, 96)] * 5)
    frames[..., 2] = np.arange(5, dtype=np.uint8)[:, None, None]  # blue = frame number
    keypoints = np.array([[50.0, 30.0]])
    augmenter = Augmenter(AugmentationConfig(**NO_AUGMENTATION), ["a"])
    rng = np.random.default_rng(5)
    for crop_fn in (
        lambda: CropSampler((32, 32), 0.5).crop(frames, keypoints, rng),
        lambda: augmenter.augment_frames(frames, keypoints, rng, CropSampler((32, 32), 0.5)),
    ):
        window, moved = crop_fn()
        assert window.shape == (5, 32, 32, 3)
        np.testing.assert_array_equal(window[..., :2], np.broadcast_to(window[2, ..., :2], window[..., :2].shape))
        np.testing.assert_array_equal(window[:, 0, 0, 2], np.arange(5))
        if np.isfinite(moved).all():
            assert value_at(window[2], moved[0]) == (50, 30)


# --------------------------------------------------------------------------- configuration


def test_train_crop_must_fit_the_network_input():
    config = TrainConfig.from_dict({"data": {"image_resize": [64, 96], "train_crop": [32, 64]}})
    assert config.data.train_crop == (32, 64) and config.data.train_crop_focus == 0.5
    with pytest.raises(ConfigError, match="data.train_crop: .*multiples of 32"):
        TrainConfig.from_dict({"data": {"train_crop": [100, 128]}})
    with pytest.raises(ConfigError, match=r"train_crop \(96, 32\) is larger than image_resize \(64, 96\)"):
        TrainConfig.from_dict({"data": {"image_resize": [64, 96], "train_crop": [96, 32]}})
    with pytest.raises(ConfigError, match="data.train_crop_focus"):
        TrainConfig.from_dict({"data": {"train_crop": [32, 32], "train_crop_focus": 1.5}})


# --------------------------------------------------------------------------- training and prediction


CROP_CONFIG = {
    "data": {"image_resize": [64, 96], "train_crop": [32, 64]},  # the tiny project's frames are 64 x 96
    "model": {"backbone": "resnet18", "pretrained": False},
    "training": {"max_epochs": 1, "unfreeze_epoch": 0, "num_workers": 0, "batch_size": 4},
}


@pytest.mark.parametrize("model_type", ["heatmap", "context"])
def test_training_items_are_crops_and_validation_sees_whole_frames(tiny_project, model_type):
    from element_lightning_pose.engine.data.labels import read_labels

    labels = read_labels(tiny_project.root / "CollectedData.csv", tiny_project.root)
    config = TrainConfig.from_dict({**CROP_CONFIG, "model": {**CROP_CONFIG["model"], "model_type": model_type}})
    splits = np.array(["train"] * 8 + ["val"] * 2 + ["test"] * 2, dtype=object)
    data = PoseDataModule(labels, splits, config)
    torch.manual_seed(0)
    train_item, val_item = data.datasets["train"][0], data.datasets["val"][0]
    assert train_item["image"].shape[-2:] == (32, 64)
    assert val_item["image"].shape[-2:] == (64, 96)
    points = train_item["keypoints"].numpy()
    finite = np.isfinite(points).all(axis=1)
    assert ((points[finite] >= -0.5) & (points[finite] <= (63.5, 31.5))).all()


def test_crop_without_augmentation_is_an_exact_copy(tiny_project):
    from element_lightning_pose.engine.data.labels import load_resized, read_labels

    labels = read_labels(tiny_project.root / "CollectedData.csv", tiny_project.root)
    dataset = LabeledDataset(labels, [0], (64, 96), None, crop=CropSampler((32, 32), focus=1.0))
    whole, keypoints, _ = load_resized(labels, 0, (64, 96))
    torch.manual_seed(1)
    item = dataset[0]
    crop = item["image"].permute(1, 2, 0).numpy()
    shift = keypoints - item["keypoints"].numpy()
    finite = np.isfinite(shift).all(axis=1)
    x0, y0 = np.rint(shift[finite][0]).astype(int)
    np.testing.assert_allclose(shift[finite], np.broadcast_to((x0, y0), shift[finite].shape))
    np.testing.assert_array_equal(crop, whole[y0 : y0 + 32, x0 : x0 + 32])


def test_training_with_crops_predicts_whole_frames_in_frame_pixels(tiny_project, tmp_path):
    from element_lightning_pose.engine.data.video import iter_batches
    from element_lightning_pose.engine.inference.models import load_model
    from element_lightning_pose.engine.inference.predict import predict_video
    from element_lightning_pose.engine.training import train

    result = train(CROP_CONFIG, tiny_project.root, tmp_path / "model", progress=False)
    assert np.isfinite(result.history["val_pixel_error"]).all()  # validated on whole frames
    model = load_model(result.model_dir, device="cpu")
    assert model.image_resize == (64, 96) and model.config.data.train_crop == (32, 64)
    video = tiny_project.root / "videos" / "video00.mp4"
    predicted = predict_video(model, video, progress=False, stop=8).predictions
    assert predicted.shape == (8, len(model.bodyparts), 3)
    # the whole frame went through the network, and network pixels are frame pixels (no resize)
    _, frames = next(iter_batches(video, 8, size=None, stop=8))
    with torch.inference_mode():
        direct = model.net.keypoints(model._to_device(frames)).numpy()
    np.testing.assert_allclose(predicted, direct, atol=1e-4)
