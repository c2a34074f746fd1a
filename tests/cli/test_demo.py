"""`elp demo`'s options: the rig demo is `--rig`, and its former name `--multiview` still works."""

from __future__ import annotations

import pytest

from element_lightning_pose.cli import build_parser
from element_lightning_pose.demo import fill_defaults
from element_lightning_pose.demo.rig import RIG_DETECTOR_RESIZE, rig_params
from element_lightning_pose.engine.config import TrainConfig


@pytest.mark.parametrize("flag", ["--rig", "--multiview"])
def test_the_rig_demo_is_chosen_by_its_name_and_its_former_name(flag):
    args = fill_defaults(build_parser(["demo"]).parse_args(["demo", flag]))
    assert args.rig is True
    assert (args.models, args.epochs, args.image_size) == (1, 70, 320)  # the rig demo's sizes


def test_without_the_flag_the_single_camera_demo_runs():
    args = fill_defaults(build_parser(["demo"]).parse_args(["demo"]))
    assert args.rig is False
    assert (args.models, args.epochs, args.image_size) == (2, 120, 128)


def test_the_rig_demo_trains_one_crop_zoom_network_for_the_views_within_its_time_cap():
    """Its defaults (benchmarks/results/rig_demo.md): a detector of the whole frame, then the pose
    network on 96x96 crops, the learning rate decaying within the epochs, 240 s in all."""
    args = fill_defaults(build_parser(["demo"]).parse_args(["demo", "--rig"]))
    config = TrainConfig.from_dict(rig_params(args))
    assert config.crop_zoom.enabled and config.crop_zoom.detector_resize == RIG_DETECTOR_RESIZE
    assert config.data.image_resize == (96, 96) and config.data.multiview == "shared"
    assert config.training.max_time_s == 240.0 and config.training.learning_rate == 2e-3
    assert max(config.training.lr_milestones) < config.training.max_epochs == 70
    small = fill_defaults(build_parser(["demo"]).parse_args(["demo", "--rig", "--resize", "64", "--max-train-s", "0"]))
    assert TrainConfig.from_dict(rig_params(small)).data.image_resize == (64, 64)
    assert TrainConfig.from_dict(rig_params(small)).training.max_time_s is None
