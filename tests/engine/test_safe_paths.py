"""Names and computed paths that must stay in their folder (issue 26, items 1 and 2): the engine's
part of the walk over every place a name becomes a path part (the tables' part is
tests/pipeline/test_path_containment.py).

Each hostile value is tried where it enters (a calibration file, a board video's camera, a
training configuration, a label layout) and where it names a file (``<camera>.csv``, a view's
cache folder, a video placed beside an NWB file)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from element_lightning_pose.engine.config import ConfigError, TrainConfig
from element_lightning_pose.engine.data.projects import read_multiview_labels
from element_lightning_pose.engine.multicam.cameras import (
    CalibrationError,
    CameraGroup,
    calibration_text,
    read_calibration,
)
from element_lightning_pose.engine.multicam.io import write_reprojections
from element_lightning_pose.engine.safe_paths import UnsafePathError, check_name, check_path_part, inside_root
from element_lightning_pose.engine.training.unlabeled import build_camera_caches
from element_lightning_pose.synthetic import rig

# what a careless or hostile user tries as a name: parent folders, absolute paths, encoded and
# Windows separators, NUL, hidden and option-like names, and one past the length limit
HOSTILE_NAMES = [
    "../../x",
    "..",
    ".",
    "",
    "/tmp/x",
    "a/b",
    "a\\b",
    "..\\..\\x",
    "a%2Fb",
    "%2e%2e",
    "a\0b",
    ".hidden",
    "-o",
    "a b",
    "x" * 65,
]
SAFE_NAMES = ["cam0", "Camera_1", "top-left", "side.2", "A+B", "0"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_check_name_refuses(name):
    with pytest.raises(UnsafePathError, match="camera name"):
        check_name(name, "camera name")


@pytest.mark.parametrize("name", SAFE_NAMES)
def test_check_name_accepts(name):
    assert check_name(name) == name


@pytest.mark.parametrize("value", ["", ".", "..", "a/b", "../x", "/abs", "a\\b", "a\0b"])
def test_check_path_part_refuses_what_leaves_a_folder(value):
    with pytest.raises(UnsafePathError, match="subject="):
        check_path_part(value, f"key subject={value!r}")


@pytest.mark.parametrize("value", ["a%2Fb", "k 1", "a:b", "..a", "a..b", "~"])
def test_check_path_part_keeps_one_component(value, tmp_path):
    check_path_part(value, "key")
    assert inside_root(tmp_path, value, "key").parent == tmp_path


@pytest.mark.parametrize("relative", ["../x", "a/../../x", "/etc/x", "a/../../../tmp"])
def test_inside_root_refuses_what_resolves_outside(relative, tmp_path):
    root = tmp_path / "processed"
    with pytest.raises(UnsafePathError, match="outside its root"):
        inside_root(root, relative, "output_dir")


def test_inside_root_follows_symbolic_links(tmp_path):
    root, outside = tmp_path / "processed", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "lnk").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="outside its root"):
        inside_root(root, "lnk/predictions.csv", "output_dir")
    with pytest.raises(UnsafePathError, match="NUL"):
        inside_root(root, "a\0b", "output_dir")
    # a root that is itself a link is resolved too: its inside stays inside
    linked_root = tmp_path / "processed_link"
    linked_root.symlink_to(root)
    assert inside_root(linked_root, "a/b.csv", "output_dir") == linked_root / "a" / "b.csv"


# ----------------------------------------------------------------------------- cameras (item 2)


def _calibration_with_name(tmp_path: Path, name: str) -> Path:
    group = rig.make_rig(2, seed=0)
    text = calibration_text(group).replace('name = "cam0"', f"name = {json.dumps(name)}", 1)  # a TOML string
    path = tmp_path / "calibration.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "a\\b", "a%2Fb", "..", ".hidden", "a\0b"])
def test_read_calibration_refuses_unsafe_camera_names(tmp_path, name):
    path = _calibration_with_name(tmp_path, name)
    with pytest.raises(CalibrationError, match=r"calibration.toml: camera name .* is not a file-name-safe name"):
        read_calibration(path)


def test_a_camera_group_refuses_an_unsafe_name_however_it_is_built():
    group = rig.make_rig(2, seed=0)
    with pytest.raises(CalibrationError, match="camera name '../x'"):
        CameraGroup((group.cameras[0], dataclasses.replace(group.cameras[1], name="../x")))


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "a/b", "a\\b", "a\0b", "..", ".x"])
def test_reprojections_never_leave_their_folder(tmp_path, name):
    out = tmp_path / "reproject"
    with pytest.raises(UnsafePathError, match="camera name"):
        write_reprojections(out, ["cam0", name], np.zeros((2, 3, 1, 2)), ["nose"])
    assert not out.exists() or list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["reproject"])


# ----------------------------------------------------------------------------- views


@pytest.mark.parametrize("name", ["../x", "/tmp/x", "a\\b", ".."])
def test_training_configuration_refuses_unsafe_view_names(name):
    with pytest.raises(ConfigError, match="data.view_names"):
        TrainConfig.from_dict({"data": {"csv_file": ["a.csv", "b.csv"], "view_names": [name, "b"]}})


def test_multiview_labels_refuse_unsafe_view_names(tmp_path):
    """The names a VideoSet.View row or a derived layout gives reach the per-view folders only
    through the label reader, which refuses them (nothing is trained, nothing written)."""
    with pytest.raises(UnsafePathError, match="view name '../x'"):
        read_multiview_labels(tmp_path, ["CollectedData_top.csv", "CollectedData_bot.csv"], ["../x", "bot"])
    assert list(tmp_path.iterdir()) == []


def test_frame_caches_refuse_unsafe_view_names(tmp_path):
    with pytest.raises(UnsafePathError, match="view name"):
        build_camera_caches([tmp_path / "s_top.mp4"], ["top", "../../x"], (32, 32), tmp_path / "cache")
    assert list(tmp_path.iterdir()) == []
