"""LabelStore: a project's labels saved one frame at a time in the project's own layout, read back
by the engine's readers, with a revision that refuses a stale save and a history of every point."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from element_lightning_pose.engine.data.dlc import read_dlc_project
from element_lightning_pose.engine.data.labels import read_labels
from element_lightning_pose.engine.data.projects import load_project
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.labeling.store import LabelConflictError, LabelStore, PointEdit
from element_lightning_pose.synthetic.projects import make_synthetic_project
from element_lightning_pose.synthetic.rig_project import make_rig_project
from tests.engine.data.test_projects import make_dlc_project


def write_images(root, folder: str, frames: list[int]) -> list[str]:
    (root / "labeled-data" / folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for frame in frames:
        path = f"labeled-data/{folder}/img{frame:08d}.png"
        cv2.imwrite(str(root / path), np.full((24, 32, 3), frame % 255, dtype=np.uint8))
        paths.append(path)
    return paths


def test_a_new_project_gets_its_label_table_at_the_first_save(tmp_path):
    store = LabelStore(tmp_path, bodyparts=["snout", "tail"])
    images = write_images(tmp_path, "session1", [3, 7])
    revision = store.add_frames({None: images}, base_revision=store.revision())
    revision = store.save_frame(
        images[0],
        [PointEdit("snout", "labeled", 10.5, 4.25), PointEdit("tail", "labeled", 1.0, 2.0, origin="prefilled")],
        base_revision=revision,
    )
    labels = read_labels(tmp_path / "CollectedData.csv")  # the engine's own reader takes the file
    assert labels.image_paths == images
    np.testing.assert_array_equal(labels.keypoints[0], [[10.5, 4.25], [1.0, 2.0]])
    assert np.isnan(labels.keypoints[1]).all()  # queued, not labeled yet
    history = [json.loads(line) for line in (tmp_path / "CollectedData.csv.history.jsonl").read_text().splitlines()]
    assert [(h["bodypart"], h["origin"], h["state"]) for h in history] == [
        ("snout", "manual", "labeled"),
        ("tail", "prefilled", "labeled"),
    ]
    assert LabelStore(tmp_path).revision() == revision


def test_a_stale_save_is_refused_and_writes_nothing(tmp_path):
    store = LabelStore(tmp_path, bodyparts=["snout"])
    images = write_images(tmp_path, "s", [1])
    first = store.add_frames({None: images}, base_revision=store.revision())
    other_tab = LabelStore(tmp_path)
    other_tab.save_frame(images[0], [PointEdit("snout", "labeled", 5.0, 5.0)], base_revision=first)
    before = (tmp_path / "CollectedData.csv").read_bytes()
    with pytest.raises(LabelConflictError, match="changed on disk"):
        store.save_frame(images[0], [PointEdit("snout", "labeled", 9.0, 9.0)], base_revision=first)
    assert (tmp_path / "CollectedData.csv").read_bytes() == before


def test_an_occluded_point_is_nan_in_the_table_and_remembered(tmp_path):
    store = LabelStore(tmp_path, bodyparts=["snout", "tail"])
    images = write_images(tmp_path, "s", [1])
    revision = store.add_frames({None: images}, base_revision=store.revision())
    store.save_frame(
        images[0], [PointEdit("snout", "labeled", 3.0, 4.0), PointEdit("tail", "occluded")], base_revision=revision
    )
    frame = LabelStore(tmp_path).frame(images[0])
    assert frame.points == {"snout": (3.0, 4.0), "tail": None}
    assert frame.occluded == ["tail"]
    assert np.isnan(read_labels(tmp_path / "CollectedData.csv").keypoints[0, 1]).all()


def test_saving_one_frame_of_an_existing_project_changes_only_that_point(tmp_path):
    project = make_synthetic_project(tmp_path / "p", image_size=(48, 48), n_labeled=6, n_video_frames=12)
    before = read_labels(project.csv_path, check_images=False)
    store = LabelStore(project.root)
    image = before.image_paths[2]
    store.save_frame(image, [PointEdit(before.bodyparts[0], "labeled", 1.5, 2.5)], base_revision=store.revision())
    after = read_labels(project.csv_path)
    expected = before.keypoints.copy()
    expected[2, 0] = (1.5, 2.5)
    np.testing.assert_array_equal(after.keypoints, expected)
    assert after.image_paths == before.image_paths and after.bodyparts == before.bodyparts


def test_a_multiview_project_gets_each_new_instant_in_every_view(tmp_path):
    project = make_rig_project(tmp_path / "rig", n_cameras=2, image_size=(96, 64), n_frames=30, n_labeled=4)
    store = LabelStore(project.root)
    assert store.views == project.camera_names
    folder = {view: next(image for image, v in store.images() if v == view).split("/")[1] for view in store.views}
    new = {view: write_images(project.root, folder[view], [29]) for view in store.views}
    revision = store.add_frames(new, base_revision=store.revision())
    view = store.views[1]
    store.save_frame(new[view][0], [PointEdit(store.bodyparts[0], "labeled", 7.0, 8.0)], base_revision=revision)
    labels, _ = load_project(project.root)  # the engine checks row i is the same instant in every view
    assert labels.views is not None and len(labels) == 2 * 5
    with pytest.raises(ProjectError, match="differ in number between the views"):
        store.add_frames({store.views[0]: new[store.views[0]], store.views[1]: []}, base_revision=store.revision())


def test_a_deeplabcut_project_is_saved_in_its_layout_with_its_h5_kept_equal(tmp_path):
    pytest.importorskip("tables")
    make_dlc_project(tmp_path, h5=True)
    store = LabelStore(tmp_path)
    image = store.images()[0][0]
    store.save_frame(image, [PointEdit(store.bodyparts[0], "labeled", 11.0, 12.0)], base_revision=store.revision())
    labels = read_dlc_project(tmp_path)  # compares the CSV with its .h5 and refuses a disagreement
    row = labels.image_paths.index(image)
    np.testing.assert_array_equal(labels.keypoints[row, 0], [11.0, 12.0])
    header = (tmp_path / image).parent.joinpath("CollectedData_Alice.csv").read_text().splitlines()[3]
    assert header.startswith("labeled-data,mouseA,")  # DeepLabCut's three index columns


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda: PointEdit("snout", "labeled", float("nan"), 1.0), "x must be a finite number"),
        (lambda: PointEdit("snout", "labeled", True, 1.0), "x must be a finite number"),
        (lambda: PointEdit("snout", "hidden"), "state 'hidden'"),
        (lambda: PointEdit("snout", "labeled", 1.0, 1.0, origin="guess"), "origin 'guess'"),
    ],
)
def test_bad_edits_are_refused_naming_the_body_part(edit, message):
    with pytest.raises(ProjectError, match=message):
        edit()


def test_unknown_images_and_body_parts_are_refused_and_write_nothing(tmp_path):
    store = LabelStore(tmp_path, bodyparts=["snout"])
    images = write_images(tmp_path, "s", [1])
    revision = store.add_frames({None: images}, base_revision=store.revision())
    before = (tmp_path / "CollectedData.csv").read_bytes()
    with pytest.raises(ProjectError, match="unknown body part"):
        store.save_frame(images[0], [PointEdit("tail", "labeled", 1.0, 1.0)], base_revision=revision)
    with pytest.raises(ProjectError, match="in no label table"):
        store.save_frame("labeled-data/s/img99.png", [PointEdit("snout", "labeled", 1.0, 1.0)], base_revision=revision)
    with pytest.raises(ProjectError, match="image not found"):
        store.add_frames({None: ["labeled-data/s/missing.png"]}, base_revision=revision)
    assert (tmp_path / "CollectedData.csv").read_bytes() == before
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProjectError, match="give the body parts"):
        LabelStore(tmp_path / "empty")


def test_new_deeplabcut_frames_go_to_their_own_folders_table(tmp_path):
    pytest.importorskip("tables")
    make_dlc_project(tmp_path, folders={"mouseA": 2, "mouseB": 2})
    store = LabelStore(tmp_path)
    new = write_images(tmp_path, "mouseB", [50]) + write_images(tmp_path, "mouseC", [7])
    store.add_frames({None: new}, base_revision=store.revision())
    labels = read_dlc_project(tmp_path, check_images=False)
    assert new[0] in labels.image_paths
    assert new[1] not in labels.image_paths  # a folder with frames queued, none labeled: skipped by the reader
    table_b = read_labels(
        tmp_path / "labeled-data" / "mouseB" / "CollectedData_Alice.csv", tmp_path, require_keypoints=False
    )
    assert table_b.image_paths[-1] == new[0] and len(table_b) == 3  # not in mouseA's table, not twice
    assert (tmp_path / "labeled-data" / "mouseC" / "CollectedData_Alice.csv").is_file()
    assert (tmp_path / "labeled-data" / "mouseC" / "CollectedData_Alice.h5").is_file()  # DeepLabCut trains from it
    store = LabelStore(tmp_path)
    store.save_frame(new[1], [PointEdit(store.bodyparts[0], "labeled", 3.0, 4.0)], base_revision=store.revision())
    assert new[1] in read_dlc_project(tmp_path, check_images=False).image_paths  # labeled now: read
