"""The advice and the presets (engine.training.advice): the rule of ``preset: auto``, its
independence from the config given, and how ``elp train`` and ``train()`` apply and record it."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import yaml

from element_lightning_pose.cli import main as elp
from element_lightning_pose.engine.config import ConfigError, TrainConfig
from element_lightning_pose.engine.data.keypoints import write_keypoint_csv
from element_lightning_pose.engine.data.labels import read_labels
from element_lightning_pose.engine.training.advice import (
    FALLBACK_BACKBONES,
    PRESETS,
    SMALL_ANIMAL_HEATMAP_PX,
    advise,
    advise_project,
    choose_preset,
    preset_params,
    resolve_preset,
)

TINY = ["model.pretrained=false", "data.image_resize=[64,64]", "training.max_steps=1", "training.num_workers=0"]
TINY += ["training.val_batch_size=2", "crop_zoom.detector_resize=[64,64]"]


def write_project(root, frame_size, keypoints):
    """A project of blank frames of ``frame_size`` (h, w) with ``keypoints`` (N, K, 2) as labels."""
    (root / "labeled-data" / "v").mkdir(parents=True)
    index = []
    for i in range(len(keypoints)):
        cv2.imwrite(str(root / "labeled-data" / "v" / f"img{i:03d}.png"), np.zeros((*frame_size, 3), np.uint8))
        index.append(f"labeled-data/v/img{i:03d}.png")
    bodyparts = [f"p{k}" for k in range(keypoints.shape[1])]
    write_keypoint_csv(root / "CollectedData.csv", keypoints, bodyparts, ("x", "y"), "test", index)
    return root


def animal(x0, y0, width, height):
    """4 keypoints spanning a ``width`` x ``height`` box (frame pixels) from (x0, y0)."""
    return np.array([[x0, y0], [x0 + width, y0 + height / 2], [x0 + width / 2, y0 + height], [x0, y0 + height]])


@pytest.fixture
def small_animal_project(tmp_path):
    """480x640 frames, an animal 100 px wide and 60 px high (one frame with one keypoint: not measured)."""
    keypoints = np.stack([animal(50, 40, 100, 60), animal(300, 200, 100, 60), animal(500, 400, 100, 60)])
    one = np.full((1, 4, 2), np.nan)
    one[0, 0] = (10.0, 10.0)
    return write_project(tmp_path / "small", (480, 640), np.concatenate([keypoints, one]))


@pytest.fixture
def large_animal_project(tmp_path):
    return write_project(tmp_path / "large", (480, 640), np.stack([animal(100, 100, 300, 200)] * 3))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """A machine that cannot download ImageNet weights: an empty torch cache, a proxy that refuses."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")


def test_advice_measures_the_animal_in_heatmap_pixels(small_animal_project):
    advice = advise_project(small_animal_project, {"model": {"backbone": "resnet18"}})
    assert advice.frame_size == (480, 640) and advice.image_resize == (256, 256)
    # heatmaps are 64x64 (1/4 of 256x256): 480/64 = 7.5 and 640/64 = 10 frame pixels per heatmap pixel
    assert advice.frame_px_per_heatmap_px == pytest.approx((7.5, 10.0))
    assert advice.n_frames_measured == 3
    assert advice.animal_frame_px == pytest.approx(100.0)
    assert advice.animal_heatmap_px == pytest.approx(10.0)  # max(100 / 10, 60 / 7.5)
    assert advice.full_resize == (480, 640) and advice.n_views == 1


def test_the_rule_reads_the_project_not_the_config(small_animal_project):
    labels = read_labels(small_animal_project / "CollectedData.csv", small_animal_project)
    configs = [
        None,
        {"data": {"image_resize": [512, 640]}},  # the animal is large enough at this input...
        {"crop_zoom": {"enabled": True}},  # ...or crop zoom is already asked for...
        {"data": {"image_resize": [480, 640], "train_crop": [352, 480]}},  # ...or crop training
        {"model": {"backbone": "efficientnet_lite0"}},
    ]
    readings = [advise(labels, config) for config in configs]
    assert {(a.preset, a.reason) for a in readings} == {(readings[0].preset, readings[0].reason)}
    assert readings[0].preset == "small_animal_crop_zoom" and readings[0].params == {"crop_zoom": {"enabled": True}}
    assert "10.0 < 16 heatmap pixels at 256x256" in readings[0].reason
    assert readings[1].animal_heatmap_px == pytest.approx(25.0)  # what is reported follows the config
    # the CPU budget changes the reported budget input, never the pick
    slow = advise(labels, {"model": {"backbone": "resnet18"}}, min_frames_per_s=500.0)
    fast = advise(labels, {"model": {"backbone": "resnet18"}}, min_frames_per_s=1.0)
    assert fast.budget_resize == (480, 640) and slow.budget_resize[0] * slow.budget_resize[1] < 480 * 640
    assert fast.animal_heatmap_px_budget == pytest.approx(25.0)  # 100 px / 4 at full resolution
    assert slow.preset == fast.preset == "small_animal_crop_zoom"


def test_the_rule_keeps_the_default_for_a_large_animal_or_an_unknown_size(large_animal_project):
    advice = advise_project(large_animal_project)
    assert advice.animal_heatmap_px == pytest.approx(30.0) and advice.preset == "default" and advice.params == {}
    assert choose_preset(SMALL_ANIMAL_HEATMAP_PX) == (
        "default",
        "the animal spans 16.0 >= 16 heatmap pixels at 256x256",
    )
    assert choose_preset(SMALL_ANIMAL_HEATMAP_PX - 0.1)[0] == "small_animal_crop_zoom"
    assert choose_preset(float("nan"))[0] == "default"
    # deterministic: the same project gives the same advice
    assert advise_project(large_animal_project) == advice


def test_presets_are_valid_parameters():
    assert set(PRESETS) == {"default", "full_resolution_crops", "small_animal_crop_zoom"}
    with pytest.raises(ValueError, match="needs frame_size"):
        preset_params("full_resolution_crops")
    with pytest.raises(ValueError, match="unknown preset 'tiny'"):
        preset_params("tiny")
    params = preset_params("full_resolution_crops", frame_size=(747, 832), base={"model": {"backbone": "resnet18"}})
    config = TrainConfig.from_dict(params)
    assert config.data.image_resize == (736, 832) and config.data.train_crop == (544, 608)
    assert config.data.train_crop_focus == 0.5 and config.model.backbone == "resnet18"
    assert TrainConfig.from_dict(preset_params("small_animal_crop_zoom")).crop_zoom.enabled
    with pytest.raises(ConfigError, match="preset.*unknown preset 'fast'; known: auto, default"):
        TrainConfig.from_dict({"preset": "fast"})


def test_resolve_auto_applies_the_pick_and_the_overrides_on_top(small_animal_project):
    resolved = resolve_preset({"preset": "auto", "model": {"backbone": "resnet18"}}, small_animal_project)
    assert resolved.config.preset == "small_animal_crop_zoom" and resolved.config.crop_zoom.enabled
    assert resolved.advice.preset == "small_animal_crop_zoom"
    assert resolved.notes[0] == "training with preset small_animal_crop_zoom (picked by preset auto)"
    # --set applies after the preset: it wins
    mine = resolve_preset(
        TrainConfig(), small_animal_project, "auto", ["crop_zoom.enabled=false", "model.backbone=resnet18"]
    )
    assert mine.config.preset == "small_animal_crop_zoom" and not mine.config.crop_zoom.enabled
    # a named preset is applied as named, the rule not consulted
    named = resolve_preset(TrainConfig(), small_animal_project, "full_resolution_crops", ["model.backbone=resnet18"])
    assert named.advice is None and named.config.preset == "full_resolution_crops"
    assert named.config.data.image_resize == (480, 640) and named.config.data.train_crop == (352, 480)
    # no preset: the config as written, overrides on top
    plain = resolve_preset(TrainConfig(), small_animal_project, None, ["training.max_epochs=3"])
    assert plain.config.preset is None and not plain.config.crop_zoom.enabled and plain.notes == []
    assert plain.config.training.max_epochs == 3
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        resolve_preset(TrainConfig(), small_animal_project, "fast")


def test_auto_does_not_pick_crop_zoom_for_what_it_cannot_train(small_animal_project):
    cameras = {"csv_file": ["CollectedData.csv"], "view_names": ["top"]}
    config = {"model": {"backbone": "resnet18"}, "data": cameras, "losses": {"unsupervised": ["pca_multiview"]}}
    resolved = resolve_preset(config, small_animal_project, "auto")
    assert resolved.advice.preset == "small_animal_crop_zoom"  # the rule's pick is unchanged...
    assert resolved.config.preset == "default" and not resolved.config.crop_zoom.enabled  # ...and not applied
    assert "crop zoom, picked by preset auto, does not train the multi-view PCA loss" in (resolved.notes[0])
    # a context model and the temporal loss it does train
    config = {"model": {"backbone": "resnet18", "model_type": "context"}, "losses": {"unsupervised": ["temporal"]}}
    assert resolve_preset(config, small_animal_project, "auto").config.crop_zoom.enabled


def test_auto_swaps_a_backbone_whose_weights_cannot_be_had(large_animal_project, offline):
    resolved = resolve_preset(TrainConfig(), large_animal_project, "auto")  # resnet50: not cached, no internet
    assert resolved.config.model.backbone == FALLBACK_BACKBONES[0] == "efficientnet_lite0"
    assert any(
        "efficientnet_lite0 instead of resnet50: resnet50's ImageNet weights are not cached" in note
        for note in resolved.notes
    )
    # a backbone named on the command line is kept (training then says what is missing)
    kept = resolve_preset(TrainConfig(), large_animal_project, "auto", ["model.backbone=resnet50"])
    assert kept.config.model.backbone == "resnet50" and len(kept.notes) == 1
    # a named preset keeps the config's backbone too
    assert resolve_preset(TrainConfig(), large_animal_project, "default").config.model.backbone == "resnet50"


def test_elp_train_picks_prints_and_records_the_preset(small_animal_project, tmp_path, capsys, offline):
    # pretrained weights, as a newcomer gets them: resnet50's cannot be had offline
    sets = [arg for option in TINY if option != "model.pretrained=false" for arg in ("--set", option)]
    model_dir = tmp_path / "m"
    code = elp(["train", str(small_animal_project), "--model-dir", str(model_dir), "--no-progress", *sets])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "frames 480x640 px, network input 64x64: one heatmap pixel is 30.00 x 40.00 frame pixels" in out
    assert "animal (extent of the labeled keypoints, median of 3 frames): 100 frame px = 2.5 heatmap px" in out
    assert "recommended: small_animal_crop_zoom" in out
    assert "training with preset small_animal_crop_zoom (picked by preset auto)" in out
    assert "model.backbone efficientnet_lite0 instead of resnet50" in out  # no flags, no internet: it trains
    assert out.index("training with preset") < out.index("trained 1 epoch")
    info = json.loads((model_dir / "model.json").read_text())
    assert info["preset"] == "small_animal_crop_zoom" and info["kind"] == "crop_zoom"
    assert info["backbone"] == "efficientnet_lite0"
    assert yaml.safe_load((model_dir / "config.yaml").read_text())["preset"] == "small_animal_crop_zoom"
    # --preset names another; --preset none trains the defaults as written
    code = elp(["train", str(small_animal_project), "--model-dir", str(tmp_path / "d"), "--no-progress", "--preset",
                "default", *sets, "--set", "model.backbone=resnet18", "--set", "model.pretrained=false"])  # fmt: skip
    assert code == 0
    assert json.loads((tmp_path / "d" / "model.json").read_text())["preset"] == "default"
    assert "training with preset default (named)" in capsys.readouterr().out


def test_train_resolves_auto_itself(large_animal_project, tmp_path):
    from element_lightning_pose.engine.training import train

    config = TrainConfig.from_dict({"preset": "auto", "model": {"backbone": "resnet18"}}).with_overrides(TINY)
    result = train(config, large_animal_project, tmp_path / "m", progress=False)
    info = json.loads((result.model_dir / "model.json").read_text())
    assert info["preset"] == "default"
    assert yaml.safe_load((result.model_dir / "config.yaml").read_text())["preset"] == "default"


def test_auto_predicts_small_frames_at_their_own_size_unless_the_animal_needs_the_upsampling(tmp_path):
    """The default preset of ``auto`` does not upsample a frame smaller than the input when the
    animal spans >= 16 heatmap px at the frame's own size (the SLEAP fly in the presets benchmark)."""
    fly = write_project(tmp_path / "fly", (192, 192), np.stack([animal(30, 40, 130, 100)] * 3))
    resolved = resolve_preset(TrainConfig(), fly, "auto", ["model.backbone=resnet18"])
    assert resolved.config.preset == "default" and resolved.config.data.image_resize == (192, 192)
    assert any("data.image_resize 192x192 instead of 256x256" in note for note in resolved.notes)
    # named on the command line: kept
    kept = resolve_preset(TrainConfig(), fly, "auto", ["model.backbone=resnet18", "data.image_resize=[256,256]"])
    assert kept.config.data.image_resize == (256, 256)
    # a tiny frame whose animal is 40 frame px (10 heatmap px at its own 96x96): upsampled as before
    tiny = write_project(tmp_path / "tiny", (96, 96), np.stack([animal(20, 20, 40, 30)] * 3))
    assert resolve_preset(TrainConfig(), tiny, "auto", ["model.backbone=resnet18"]).config.data.image_resize == (
        256,
        256,
    )
    # frames larger than the input on one side are not "smaller"
    wide = write_project(tmp_path / "wide", (200, 400), np.stack([animal(30, 40, 130, 100)] * 3))
    assert resolve_preset(TrainConfig(), wide, "auto", ["model.backbone=resnet18"]).config.data.image_resize == (
        256,
        256,
    )
