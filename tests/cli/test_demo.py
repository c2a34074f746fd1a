"""`elp demo`'s options: the rig demo is `--rig`, and its former name `--multiview` still works."""

from __future__ import annotations

import pytest

from element_lightning_pose.cli import build_parser
from element_lightning_pose.demo import fill_defaults


@pytest.mark.parametrize("flag", ["--rig", "--multiview"])
def test_the_rig_demo_is_chosen_by_its_name_and_its_former_name(flag):
    args = fill_defaults(build_parser(["demo"]).parse_args(["demo", flag]))
    assert args.rig is True
    assert (args.models, args.epochs, args.image_size) == (1, 30, 320)  # the rig demo's sizes


def test_without_the_flag_the_single_camera_demo_runs():
    args = fill_defaults(build_parser(["demo"]).parse_args(["demo"]))
    assert args.rig is False
    assert (args.models, args.epochs, args.image_size) == (2, 120, 128)
