"""``presets.insert_preset`` puts a named preset into ``TrainingParamSet``, validated and deduplicated."""

from __future__ import annotations

from element_lightning_pose import dj_compat, presets
from element_lightning_pose.engine.config import TrainConfig


def test_insert_preset_validates_and_deduplicates(lp):
    table = lp.train.TrainingParamSet()
    base = {"model": {"backbone": "resnet18", "pretrained": False}}
    idx = presets.insert_preset(table, "full_resolution_crops", frame_size=(480, 640), base=base)
    try:
        row = (table & {"paramset_idx": idx}).fetch1()
        config = TrainConfig.from_dict(row["params"])
        assert config.data.image_resize == (480, 640) and config.data.train_crop == (352, 480)
        assert config.model.backbone == "resnet18"
        assert row["paramset_desc"].startswith("preset full_resolution_crops (480x640 frames)")
        # the same preset again is the same parameter set
        assert presets.insert_preset(table, "full_resolution_crops", frame_size=(480, 640), base=base) == idx
        assert lp.train.TrainingParamSet.insert_preset("full_resolution_crops", frame_size=(480, 640), base=base) == idx
    finally:
        (table & {"paramset_idx": idx}).delete_quick()  # the flow tests count the shared schema's sets


def _small_animal_project(root):
    """Blank 480x640 frames, an animal ~100 px wide: the rule picks crop zoom (10 heatmap px at 256x256)."""
    import cv2
    import numpy as np

    from element_lightning_pose.engine.data.keypoints import write_keypoint_csv

    (root / "labeled-data" / "v").mkdir(parents=True)
    keypoints, index = [], []
    for i, (x, y) in enumerate([(50, 40), (300, 200), (500, 400), (200, 100), (400, 300), (100, 350)]):
        cv2.imwrite(str(root / "labeled-data" / "v" / f"img{i:03d}.png"), np.zeros((480, 640, 3), np.uint8))
        keypoints.append([[x, y], [x + 100, y + 30], [x + 50, y + 60], [x, y + 60]])
        index.append(f"labeled-data/v/img{i:03d}.png")
    write_keypoint_csv(
        root / "CollectedData.csv", np.array(keypoints, float), ["a", "b", "c", "d"], ("x", "y"), "t", index
    )
    return root


def test_auto_is_picked_for_a_video_set_and_a_hand_written_set_that_differs_is_logged(lp, lp_root, caplog):
    import logging

    from tests.pipeline.conftest import TINY_PARAMS

    root, _ = lp_root
    _small_animal_project(root / "projects" / "small_animal")
    train = lp.train
    vs_key = train.VideoSet.insert_project("projects/small_animal", description="small animal")
    auto_idx = train.TrainingParamSet.insert_preset("auto", video_set=vs_key, base={"model": {"pretrained": False}})
    # a set of its own (the same parameters as another test's would be that test's set: sets are deduplicated)
    hand_params = {**TINY_PARAMS, "data": {**TINY_PARAMS["data"], "split_seed": 27}}
    hand_idx = train.TrainingParamSet.insert_new_params("hand-written, no crop zoom", hand_params)
    task = {**vs_key, "paramset_idx": hand_idx, "training_id": 1}
    try:
        row = (train.TrainingParamSet & {"paramset_idx": auto_idx}).fetch1()
        config = TrainConfig.from_dict(row["params"])
        assert config.preset == "small_animal_crop_zoom" and config.crop_zoom.enabled
        assert row["paramset_desc"].startswith("preset auto: small_animal_crop_zoom: the animal spans 10.0 < 16")
        assert train.TrainingParamSet.insert_preset(
            "auto", video_set=vs_key, base={"model": {"pretrained": False}}
        ) == (auto_idx)
        train.TrainingTask.insert1(task)
        with caplog.at_level(logging.WARNING, logger="element_lightning_pose.train"):
            populated = dj_compat.populate(train.ModelTraining, task)
        assert populated.errors == []
        warned = [r.getMessage() for r in caplog.records if "differs from what preset auto trains" in r.getMessage()]
        assert len(warned) == 1, caplog.text
        assert f"TrainingParamSet {hand_idx} differs" in warned[0] and "(small_animal_crop_zoom)" in warned[0]
        assert "crop_zoom.enabled=False (auto: True)" in warned[0]
    finally:
        (train.ModelTraining & task).delete_quick()
        (train.TrainingTask & task).delete_quick()
        for idx in (auto_idx, hand_idx):  # unless another test trains with the same parameters
            if not train.TrainingTask & {"paramset_idx": idx}:
                (train.TrainingParamSet & {"paramset_idx": idx}).delete_quick()
        (train.VideoSet.File & vs_key).delete_quick()
        (train.VideoSet & vs_key).delete_quick()
