"""VideoSet.insert_project on other labs' layouts: a DeepLabCut project and a multi-view one."""

from __future__ import annotations

import pytest

from element_lightning_pose import dj_compat
from element_lightning_pose.engine.errors import ProjectError
from tests.engine.data.test_projects import BODYPARTS, make_dlc_project
from tests.pipeline.conftest import TINY_PARAMS


def _forget(lp, key: dict) -> None:
    """Remove a VideoSet and what hangs on it: the later tests count the shared tables' rows."""
    train = lp.train
    (train.ModelTraining & key).delete_quick()
    (train.TrainingTask & key).delete_quick()
    (train.VideoSet.View & key).delete_quick()
    (train.VideoSet.File & key).delete_quick()
    (train.VideoSet & key).delete_quick()


def test_dlc_project_registers_as_one_video_set(lp, lp_root):
    root, _ = lp_root
    truth = make_dlc_project(root / "projects" / "dlc_layout", folders={"a": 3, "b": 2}, seed=1)
    key = lp.train.VideoSet.insert_project("projects/dlc_layout", description="DeepLabCut layout")
    try:
        row = (lp.train.VideoSet & key).fetch1()
        assert row["csv_file"] == "config.yaml" and row["n_labeled_frames"] == 5
        assert list(row["bodyparts"]) == BODYPARTS and row["labels_hash"]
        files = dj_compat.fetch_dicts(lp.train.VideoSet.File & key, "file_path", "file_type", order_by="file_id")
        assert [f["file_path"] for f in files if f["file_type"] == "labels"] == [
            "config.yaml",
            "labeled-data/a/CollectedData_Alice.csv",
            "labeled-data/b/CollectedData_Alice.csv",
        ]
        assert sum(f["file_type"] == "image" for f in files) == 5
        assert not lp.train.VideoSet.View & key
        assert lp.train.VideoSet.insert_project("projects/dlc_layout") == key  # registered once
        labels = lp.train.VideoSet.read_labels(key)
        assert labels.image_paths[3] == "labeled-data/b/img003.png" and len(labels) == sum(map(len, truth.values()))
    finally:
        _forget(lp, key)


def test_bad_dlc_project_inserts_nothing(lp, lp_root):
    import yaml

    root, _ = lp_root
    project = root / "projects" / "dlc_bad"
    make_dlc_project(project, folders={"a": 2})
    config = yaml.safe_load((project / "config.yaml").read_text())
    (project / "config.yaml").write_text(yaml.safe_dump({**config, "bodyparts": ["snout", "paw", "tail"]}))
    before = len(lp.train.VideoSet()), len(lp.train.VideoSet.File())
    with pytest.raises(ProjectError, match=r"labeled-data/a/CollectedData_Alice\.csv: body parts"):
        lp.train.VideoSet.insert_project("projects/dlc_bad")
    assert (len(lp.train.VideoSet()), len(lp.train.VideoSet.File())) == before


@pytest.mark.parametrize("case", ["h5_disagrees", "config_not_yaml", "config_a_list", "no_labeled_data"])
def test_dlc_project_with_a_broken_file_names_it_and_inserts_nothing(lp, lp_root, case):
    """Issue 26, items 13 and 21: a .h5 that disagrees with the CSV was ignored; a broken
    config.yaml, or no labeled-data/, was "no labels found"."""
    import shutil

    import pandas as pd

    root, _ = lp_root
    project = root / "projects" / f"dlc_{case}"
    make_dlc_project(project, folders={"a": 2})
    csv = project / "labeled-data" / "a" / "CollectedData_Alice.csv"
    if case == "h5_disagrees":
        frame = pd.read_csv(csv, header=[0, 1, 2], index_col=[0, 1, 2])
        frame.iloc[0, 0] += 3.0
        frame.to_hdf(csv.with_suffix(".h5"), key="df_with_missing", mode="w")
        words = f"{csv}: disagrees with CollectedData_Alice.h5"
    elif case == "config_not_yaml":
        (project / "config.yaml").write_text("scorer: Alice\nbodyparts: [snout, tail\n")
        words = "config.yaml: not valid YAML"
    elif case == "config_a_list":
        (project / "config.yaml").write_text("- snout\n- tail\n")
        words = "config.yaml: a YAML list, not a mapping"
    else:
        shutil.rmtree(project / "labeled-data")
        words = "labeled-data: folder not found"
    before = len(lp.train.VideoSet()), len(lp.train.VideoSet.File())
    with pytest.raises(ProjectError) as caught:
        lp.train.VideoSet.insert_project(f"projects/dlc_{case}")
    assert words in str(caught.value) and "no labels found" not in str(caught.value)
    assert (len(lp.train.VideoSet()), len(lp.train.VideoSet.File())) == before


def test_multiview_project_registers_and_trains_shared(lp, lp_root):
    from element_lightning_pose.synthetic.rig_project import make_rig_project

    root, _ = lp_root
    make_rig_project(
        root / "projects" / "rig_layout", n_cameras=2, image_size=(96, 64), n_frames=24, n_labeled=6, n_board_frames=2
    )
    key = lp.train.VideoSet.insert_project("projects/rig_layout", description="multi-view layout")
    try:
        row = (lp.train.VideoSet & key).fetch1()
        assert row["csv_file"] == "CollectedData_cam0.csv" and row["n_labeled_frames"] == 12
        assert lp.train.VideoSet.views(key) == [("cam0", "CollectedData_cam0.csv"), ("cam1", "CollectedData_cam1.csv")]
        assert lp.train.VideoSet.data_config(key)["view_names"] == ["cam0", "cam1"]
        videos = dj_compat.fetch_column(lp.train.VideoSet.File & key & {"file_type": "video"}, "file_path")
        assert sorted(videos) == ["videos/session0_cam0.mp4", "videos/session0_cam1.mp4"]
        assert lp.train.VideoSet.insert_project("projects/rig_layout") == key
        # the default parameters find the layout on disk: one network for both views
        idx = lp.train.TrainingParamSet.insert_new_params("tiny", TINY_PARAMS)
        task = {**key, "paramset_idx": idx, "training_id": 1}
        lp.train.TrainingTask.insert1(task)
        trained = dj_compat.populate(lp.train.ModelTraining, task)
        assert trained.errors == [] and trained.success_count == 1
        assert (lp.train.ModelTraining & task).fetch1("n_epochs") == 2
        # the model is evaluated on every view's labeled frames, not only the first view's
        model = lp.model.Model.insert_from_training(task, model_name="rig_layout_shared")
        evaluated = dj_compat.populate(lp.model.ModelEvaluation, model)
        assert evaluated.errors == []
        counts = (lp.model.ModelEvaluation & model).fetch1("n_train", "n_val", "n_test")
        assert sum(counts) == 12
    finally:
        model_key = {"model_name": "rig_layout_shared"}
        (lp.model.ModelEvaluation.BodyPart & model_key).delete_quick()
        (lp.model.ModelEvaluation & model_key).delete_quick()
        (lp.model.Model.BodyPart & model_key).delete_quick()
        (lp.model.Model & model_key).delete_quick()
        _forget(lp, key)


def test_multiview_project_whose_views_are_other_instants_inserts_nothing(lp, lp_root):
    """Issue 26, item 12: views of the same number of rows but other frames were one project."""
    from element_lightning_pose.synthetic.rig_project import make_rig_project

    root, _ = lp_root
    project = root / "projects" / "rig_shuffled"
    make_rig_project(project, n_cameras=2, image_size=(96, 64), n_frames=24, n_labeled=6, n_board_frames=2)
    csv = project / "CollectedData_cam1.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join(lines[:3] + lines[4:] + lines[3:4]) + "\n")  # the first instant moved last
    before = len(lp.train.VideoSet()), len(lp.train.VideoSet.File())
    with pytest.raises(ProjectError, match=r"CollectedData_cam1\.csv, row 1 .* another order"):
        lp.train.VideoSet.insert_project("projects/rig_shuffled")
    assert (len(lp.train.VideoSet()), len(lp.train.VideoSet.File())) == before


def test_per_view_params_on_a_multiview_set_are_refused_by_the_engine(lp, lp_root):
    """A ModelTraining row is one network: the engine (training.train with one_network=True) refuses
    data.multiview=per_view before training, naming the parameter and what to do instead."""
    from element_lightning_pose.synthetic.rig_project import make_rig_project

    root, _ = lp_root
    make_rig_project(
        root / "projects" / "rig_per_view", n_cameras=2, image_size=(96, 64), n_frames=24, n_labeled=6, n_board_frames=2
    )
    key = lp.train.VideoSet.insert_project("projects/rig_per_view", description="multi-view layout, per_view")
    params = {**TINY_PARAMS, "data": {**TINY_PARAMS["data"], "multiview": "per_view"}}
    idx = lp.train.TrainingParamSet.insert_new_params("tiny per view", params)
    task = {**key, "paramset_idx": idx, "training_id": 1}
    try:
        lp.train.TrainingTask.insert1(task)
        result = dj_compat.populate(lp.train.ModelTraining, task, suppress_errors=True)
        assert result.success_count == 0 and len(result.errors) == 1
        message = str(result.errors[0][1])
        assert f"TrainingParamSet {idx}: data.multiview=per_view trains one network per view (cam0, cam1)" in message
        assert "one VideoSet per view" in message and "or use data.multiview=shared" in message
        assert not lp.train.ModelTraining & task
        assert dj_compat.list_jobs([lp.train.ModelTraining], "error", [task]) == []  # nothing left pending
        assert not (lp.train.processed_dir() / lp.train.TrainingTask.default_model_dir(task)).exists()
    finally:
        _forget(lp, key)
        (lp.train.TrainingParamSet & {"paramset_idx": idx}).delete_quick()  # the flow tests count the sets


def test_a_folder_name_with_a_double_quote_is_matched_as_a_name_not_as_sql(lp, lp_root):
    """DataJoint 0.14 writes a restriction's string between double quotes without escaping one
    inside: a project folder named with a quote broke the query (or, crafted, changed it), so
    the same project was not found again and a different one could match."""
    root, _ = lp_root
    make_dlc_project(root / "projects" / 'quo"te', folders={"a": 2}, seed=2)
    make_dlc_project(root / "projects" / 'x" OR "1"="1', folders={"a": 2}, seed=3)
    first = lp.train.VideoSet.insert_project('projects/quo"te', description="a quote in the name")
    keys = [first]
    try:
        assert lp.train.VideoSet.insert_project('projects/quo"te') == first  # the same project, found again
        other = lp.train.VideoSet.insert_project('projects/x" OR "1"="1')
        keys.append(other)
        assert other != first  # not taken for the first by a query the name rewrote
        stored = {r["video_set_id"]: r["project_dir"] for r in dj_compat.fetch_dicts(lp.train.VideoSet & keys)}
        assert stored == {first["video_set_id"]: 'projects/quo"te', other["video_set_id"]: 'projects/x" OR "1"="1'}
    finally:
        for key in keys:
            _forget(lp, key)
