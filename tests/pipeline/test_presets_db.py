"""``presets.insert_preset`` puts a named preset into ``TrainingParamSet``, validated and deduplicated."""

from __future__ import annotations

from element_lightning_pose import presets
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
