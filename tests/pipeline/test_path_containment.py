"""Every place where a key value, a folder column, a camera or a view name becomes a path part in
the tables stays inside its root (issue 26, items 1-3). The engine's places (``<camera>.csv``,
view folders, placed videos) are walked in tests/engine/test_safe_paths.py and
tests/cli/test_outputs.py.

Each table that writes a file is tried with what a user who may insert rows can put there:
``..``, absolute paths, encoded separators (``%2F``), backslashes, and a folder inside the root
that is a symbolic link out of it (NUL, which PostgreSQL refuses to store, is tried on
``paths.key_folder_name`` itself). Refused keys fail in ``populate`` with an error naming the
key, and no file appears outside the processed root. :func:`test_every_table_that_writes_is_walked`
fails when a new auto-populated table appears, until it is added to the walk.

Everything made here is populated or deleted at the end of its test (the worker tests count
pending tasks of the shared schema).
"""

from __future__ import annotations

import datetime as dt
import inspect
import uuid
from pathlib import Path

import datajoint as dj
import numpy as np
import pytest

from element_lightning_pose import dj_compat, ensemble, model, multicam, paths, pipeline, train
from element_lightning_pose.engine.data.keypoints import write_predictions
from element_lightning_pose.engine.multicam.boards import Board
from element_lightning_pose.engine.multicam.cameras import CalibrationError
from element_lightning_pose.engine.safe_paths import UnsafePathError
from element_lightning_pose.synthetic import rig
from tests.pipeline.conftest import TINY_PARAMS
from tests.pipeline.load_helpers import BODYPARTS, WHEN, insert_load_models, load_task, predictions, recording
from tests.pipeline.rig_helpers import BOARD, build_rig, insert_load_model, observations

REFUSED_VALUES = ["../../e", "/e", ".."]  # at most 8 characters: element-animal's subject
# (a backslash is tried on key_folder_name only: DataJoint 2.x on PostgreSQL does not find a row
# restricted by a value holding one)
KEPT_INSIDE = ["%2F..", "a%2Fb", "..a", "k 1"]  # odd, but one folder name inside the root


# ----------------------------------------------------------------------------- helpers


def outside_files(lp) -> set[str]:
    """Every path in the test run's temporary folder outside the processed root (the data root
    included: a key that climbs out of the processed root lands there first)."""
    processed = lp.model.processed_dir().resolve()
    base = processed.parents[1]
    return {str(p) for p in base.rglob("*") if p != processed and processed not in p.parents}


@pytest.fixture
def no_escape(lp):
    """Asserts, after the test, that nothing was created outside the processed root."""
    before = outside_files(lp)
    yield
    assert outside_files(lp) - before == set()


@pytest.fixture(scope="module")
def load_models(lp):
    return insert_load_models(lp)


@pytest.fixture(scope="module")
def video(lp, lp_root):
    root, project = lp_root
    return project.videos[0].relative_to(root).as_posix()


def refused_in_populate(table, key: dict, *fragments: str) -> None:
    """populate records exactly one error for ``key``, naming each fragment; no row is made."""
    result = dj_compat.populate(table, key, suppress_errors=True)
    assert len(result.errors) == 1, result.errors
    for fragment in fragments:
        assert fragment in result.errors[0][1], result.errors[0][1]
    assert not table & key


def delete(*restricted) -> None:
    """delete_quick each restricted table (parts before masters)."""
    for table in restricted:
        table.delete_quick()


# ----------------------------------------------------------------------------- the one folder name


def test_key_folder_name_keeps_plain_keys_historical_names():
    when = dt.datetime(2024, 5, 1, 10, 30)
    assert paths.key_folder_name({"subject": "mouse1", "session_datetime": when}, ["subject", "session_datetime"]) == (
        "mouse1_2024-05-01_10-30-00"
    )
    assert paths.key_folder_name({"subject": "mouse_1", "session_id": 1}, ["subject", "session_id"]) == "mouse_1_1"
    assert paths.key_folder_name({"calibration_id": "rig.A-2"}, ["calibration_id"]) == "rig.A-2"


@pytest.mark.parametrize(
    "first, second",
    [
        ({"s": "k 1"}, {"s": "k_1"}),
        ({"s": "a:b"}, {"s": "a-b"}),
        ({"s": "a b"}, {"s": "a_b"}),
        ({"s": "a%2Fb"}, {"s": "a_2Fb"}),
        ({"s": "Ä"}, {"s": "_"}),
        ({"s": "a_b", "t": "c"}, {"s": "a", "t": "b_c"}),  # the join of two strings
        ({"s": "x", "t": 1}, {"s": "x_1", "t": 1}),
    ],
)
def test_key_folder_name_is_injective(first, second):
    names = [paths.key_folder_name(key, list(key)) for key in (first, second)]
    assert names[0] != names[1], names
    for name in names:
        assert "/" not in name and "\\" not in name and name not in (".", "..") and not name.startswith(".")


@pytest.mark.parametrize("value", ["", ".", "..", "../../e", "/etc", "a/b", "a\\b", "a\0b", "..\\x"])
def test_key_folder_name_refuses_what_leaves_a_folder(value):
    with pytest.raises(UnsafePathError, match="key value subject="):
        paths.key_folder_name({"subject": value, "session_id": 1}, ["subject", "session_id"])


# ----------------------------------------------------------------------------- PoseEstimation


@pytest.mark.parametrize("subject", REFUSED_VALUES)
def test_pose_estimation_refuses_a_subject_that_leaves_the_root(lp, load_models, video, subject, no_escape):
    rec = recording(lp, subject, video)
    with pytest.raises(UnsafePathError, match="key value subject="):
        lp.model.PoseEstimationTask.generate(rec, load_models[0], task_mode="load")
    # a task inserted by hand with the default (empty) output_dir: refused at populate
    key = {**rec, "model_name": load_models[0]}
    lp.model.PoseEstimationTask.insert1({**key, "task_mode": "load"})
    planted = lp.model.processed_dir() / "lp_predictions" / f"{subject}_x" / "predictions.csv"
    try:
        refused_in_populate(lp.model.PoseEstimation, key, "key value subject=")
    finally:
        delete(lp.model.PoseEstimationTask & key)
    assert not planted.exists()


@pytest.mark.parametrize("subject", KEPT_INSIDE)
def test_odd_subjects_stay_in_one_folder_inside_the_root(lp, load_models, video, subject, no_escape):
    rec = recording(lp, subject, video)
    key = lp.model.PoseEstimationTask.generate(rec, load_models[0], task_mode="load")
    output_dir = (lp.model.PoseEstimationTask & key).fetch1("output_dir")
    target = lp.model.processed_dir() / output_dir
    assert target.resolve().is_relative_to(lp.model.processed_dir().resolve() / "lp_predictions")
    assert len(Path(output_dir).parts) == 4  # lp_predictions / session / recording / model
    write_predictions(target / "predictions.csv", predictions(lp, rec, 0), BODYPARTS)
    assert dj_compat.populate(lp.model.PoseEstimation, key).success_count == 1


@pytest.fixture
def bait(lp, video, tmp_path):
    """Predictions outside the processed root that a 'load' task could be pointed at."""
    outside = tmp_path / "outside"
    write_predictions(outside / "predictions.csv", predictions(lp, recording(lp, "pcbait", video), 1), BODYPARTS)
    return outside


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "link"])
def test_pose_estimation_refuses_an_output_dir_outside_the_root(lp, load_models, video, bait, kind, no_escape):
    """``output_dir`` is a column anyone who may insert a task fills: a 'load' task must not read
    from outside the processed root, a 'trigger' task must not write there."""
    rec, outside = recording(lp, f"pcod{kind[:3]}", video), bait
    processed = lp.model.processed_dir()
    output_dir = {
        "dotdot": f"../../{outside.relative_to(processed.parents[1])}",
        "absolute": str(outside),
        "link": f"pc_links/{uuid.uuid4().hex[:8]}",
    }[kind]
    if kind == "link":
        (processed / output_dir).parent.mkdir(parents=True, exist_ok=True)
        (processed / output_dir).symlink_to(outside)
    key = {**rec, "model_name": load_models[0]}
    lp.model.PoseEstimationTask.insert1({**key, "task_mode": "load", "output_dir": output_dir})
    try:
        refused_in_populate(lp.model.PoseEstimation, key, "output_dir", "outside its root")
    finally:
        delete(lp.model.PoseEstimationTask & key)


def test_keys_that_spelled_one_folder_get_two(lp, load_models, video, no_escape):
    """Item 3: sessions 'k 1' and 'k_1' (and 'a:b' / 'a-b') shared one predictions folder: the
    second session's predictions replaced the first's, whose rows then disagreed with its file."""
    for pair in (("k 1", "k_1"), ("a:b", "a-b")):
        tasks = []
        for seed, subject in enumerate(pair):
            rec = recording(lp, subject, video)
            key = lp.model.PoseEstimationTask.generate(rec, load_models[1], task_mode="load")
            output_dir = (lp.model.PoseEstimationTask & key).fetch1("output_dir")
            values = predictions(lp, rec, 10 + seed)
            write_predictions(lp.model.processed_dir() / output_dir / "predictions.csv", values, BODYPARTS)
            tasks.append((key, output_dir, values))
        assert tasks[0][1] != tasks[1][1]
        for key, _, values in tasks:
            assert dj_compat.populate(lp.model.PoseEstimation, key).errors == []
            stored = lp.model.PoseEstimation.get_trajectory(key).to_numpy().reshape(values.shape)
            np.testing.assert_allclose(stored, values, rtol=1e-6)


# ----------------------------------------------------------------------------- EnsembleSmoothing


def test_ensemble_refuses_a_subject_that_leaves_the_root(lp, load_models, video, no_escape):
    rec = recording(lp, "../../n", video)
    members = [load_task(lp, rec, name, f"pc_members/{name}", seed)[0] for seed, name in enumerate(load_models)]
    assert dj_compat.populate(lp.model.PoseEstimation, members).errors == []  # explicit, safe output_dir
    idx = lp.ensemble.SmoothingParamSet.insert_new_params("auto s", {})
    key = lp.ensemble.EnsembleSmoothingTask.create(rec, list(load_models), idx)
    try:
        refused_in_populate(lp.ensemble.EnsembleSmoothing, key, "key value subject='../../n'")
    finally:
        delete(lp.ensemble.EnsembleSmoothingTask.Member & key, lp.ensemble.EnsembleSmoothingTask & key)


# ----------------------------------------------------------------------------- multicam


@pytest.fixture(scope="module")
def pc_rig(lp):
    """A small rig (videos, calibration, body) under a safe subject; other sessions reuse its files."""
    data = build_rig(lp, "pcrig", n_rig=8, lead=0, first_recording=601, when=WHEN, size=(96, 64), seed=3)
    insert_load_model(lp, data, "pc_rig_load")
    lp.multicam.CameraCalibration.insert_from_file(
        "pc_true", data["calibration"].relative_to(data["root"]), units="mm", reference_frame="x"
    )
    return data


def test_triangulation_refuses_a_subject_that_leaves_the_root(lp, pc_rig, no_escape):
    session = pipeline.add_session("../../t", WHEN)
    views, sources = {}, []
    for i, (name, rec) in enumerate(pc_rig["recs"].items()):
        video = (lp.model.VideoRecording.File & rec).fetch1("file_path")
        hostile = recording(lp, "../../t", video, recording_id=701 + i)
        views[name] = hostile["recording_id"]
        values = observations(pc_rig["group"], name, pc_rig["points"][name], seed=i)
        key = {**hostile, "model_name": "pc_rig_load"}
        lp.model.PoseEstimationTask.insert1({**key, "task_mode": "load", "output_dir": f"pc_tri/{name}"})
        write_predictions(lp.model.processed_dir() / "pc_tri" / name / "predictions.csv", values,
                          pc_rig["body"].bodyparts)  # fmt: skip
        sources.append(key)
    assert dj_compat.populate(lp.model.PoseEstimation, sources).errors == []
    rig_key = lp.multicam.MultiCameraRecording.insert_rig(session, 1, "pc_true", views)
    idx = lp.multicam.TriangulationParamSet.insert_new_params("dlt", {"method": "dlt"})
    key = lp.multicam.TriangulationTask.create(rig_key, idx, "pc_rig_load")
    try:
        refused_in_populate(lp.multicam.Triangulation, key, "key value subject='../../t'")
    finally:
        delete(
            lp.multicam.TriangulationTask.PoseSource & key,
            lp.multicam.TriangulationTask.EnsembleSource & key,
            lp.multicam.TriangulationTask & key,
        )


@pytest.fixture(scope="module")
def board_videos(lp, pc_rig):
    """Two cameras' board videos a calibration succeeds on (so that, without the checks, it would
    reach the point where calibration.toml is written)."""
    group = rig.make_rig(3, seed=0, image_size=(320, 240)).subset(["cam0", "cam1"])
    videos = rig.render_board_videos(group, Board(**BOARD), pc_rig["base"] / "board", n_frames=16, seed=0)
    return {name: path.relative_to(pc_rig["root"]).as_posix() for name, path in videos.items()}


@pytest.mark.parametrize("calibration_id", ["../../c", "/e", "a\\b", ".."])
def test_a_calibration_task_refuses_an_id_or_camera_that_cannot_name_a_file(lp, board_videos, calibration_id):
    with pytest.raises(UnsafePathError, match="calibration_id="):
        lp.multicam.CalibrationTask.create(calibration_id, BOARD, board_videos, units="mm")
    renamed = dict(zip([calibration_id if calibration_id != ".." else "%2F", "cam1"], board_videos.values()))
    with pytest.raises(UnsafePathError, match="camera name"):
        lp.multicam.CalibrationTask.create("pc_cam_names", BOARD, renamed, units="mm")
    assert not lp.multicam.CalibrationTask & [{"calibration_id": calibration_id}, {"calibration_id": "pc_cam_names"}]


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "link"])
def test_calibration_refuses_an_id_that_leaves_the_root(lp, board_videos, tmp_path, kind, no_escape):
    """A CalibrationTask inserted by hand (around ``create``'s checks) fails in populate before
    any board is detected, and no calibration is stored."""
    processed = lp.model.processed_dir()
    absolute = f"/tmp/elp_cal_{uuid.uuid4().hex[:8]}"
    calibration_id = {"dotdot": "../../c", "absolute": absolute, "link": f"pc_lnk_{uuid.uuid4().hex[:6]}"}[kind]
    if kind == "link":
        (processed / "lp_calibrations").mkdir(parents=True, exist_ok=True)
        (processed / "lp_calibrations" / calibration_id).symlink_to(tmp_path)
    key = {"calibration_id": calibration_id}
    lp.multicam.CalibrationTask.insert1({**key, "board": BOARD, "units": "mm"})
    lp.multicam.CalibrationTask.BoardVideo.insert(
        {**key, "camera_name": name, "file_path": path} for name, path in board_videos.items()
    )
    try:
        refused_in_populate(lp.multicam.Calibration, key, calibration_id)
        assert not lp.multicam.CameraCalibration & key
        assert not Path(absolute).exists() and list(tmp_path.iterdir()) == []
    finally:
        delete(
            lp.multicam.Calibration & key,
            lp.multicam.CameraCalibration.Camera & key,
            lp.multicam.CameraCalibration & key,
            lp.multicam.CalibrationTask.BoardVideo & key,
            lp.multicam.CalibrationTask & key,
        )


def test_a_calibration_file_with_an_unsafe_camera_name_is_refused(lp, pc_rig, tmp_path):
    text = pc_rig["calibration"].read_text().replace('name = "cam0"', 'name = "../../x"', 1)
    path = pc_rig["base"] / "unsafe_calibration.toml"
    path.write_text(text)
    with pytest.raises(CalibrationError, match="camera name '../../x'"):
        lp.multicam.CameraCalibration.insert_from_file(
            "pc_unsafe", path.relative_to(pc_rig["root"]), units="mm", reference_frame="x"
        )
    assert not lp.multicam.CameraCalibration & {"calibration_id": "pc_unsafe"}


# ----------------------------------------------------------------------------- ModelTraining


@pytest.mark.parametrize(
    "column, value",
    [("model_dir", "../../m"), ("model_dir", "/tmp/elp_model_{}"), ("model_prefix", "../../p")],
)
def test_training_refuses_a_model_dir_outside_the_root(lp, column, value, no_escape):
    value = value.format(uuid.uuid4().hex[:8])
    vs_key = lp.train.VideoSet.insert_project("projects/synth", description="tiny synthetic")
    idx = lp.train.TrainingParamSet.insert_new_params("tiny", TINY_PARAMS)  # the shared set
    key = {**vs_key, "paramset_idx": idx, "training_id": 900 + len(value)}
    lp.train.TrainingTask.insert1({**key, column: value})
    try:
        refused_in_populate(lp.train.ModelTraining, key, "outside its root")
        assert not Path(value).exists()
    finally:
        delete(lp.train.ModelTraining & key, lp.train.TrainingTask & key)


def test_a_video_set_refuses_view_names_that_cannot_name_a_folder(lp, lp_root):
    before = len(lp.train.VideoSet())
    with pytest.raises(UnsafePathError, match="view name '../v'"):
        lp.train.VideoSet.insert_project(
            "projects/synth", csv_file=["CollectedData.csv", "CollectedData.csv"], view_names=["../v", "w"]
        )
    assert len(lp.train.VideoSet()) == before


# ----------------------------------------------------------------------------- the walk is complete

# Each auto-populated table: the test above that walks the paths it writes, or why it writes none.
WALKED = {
    "PoseEstimation": "test_pose_estimation_*, test_keys_that_spelled_one_folder_get_two",
    "EnsembleSmoothing": "test_ensemble_refuses_a_subject_that_leaves_the_root",
    "Calibration": "test_calibration_refuses_an_id_that_leaves_the_root",
    "Triangulation": "test_triangulation_refuses_a_subject_that_leaves_the_root",
    "ModelTraining": "test_training_refuses_a_model_dir_outside_the_root",
}
WRITES_NO_FILE = {
    "RecordingInfo": "reads the videos' headers",
    "ModelEvaluation": "reads the model and the labels; errors go to the table",
}


def test_every_table_that_writes_is_walked(lp):
    found = {
        name
        for module in (model, train, ensemble, multicam)
        for name, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__ and issubclass(cls, (dj.Computed, dj.Imported))
    }
    assert found == set(WALKED) | set(WRITES_NO_FILE), (
        "an auto-populated table was added or removed: walk the paths it writes in this module "
        f"(and list it in WALKED) or say in WRITES_NO_FILE why it writes none; found {sorted(found)}"
    )
    assert {t.__name__ for t in pipeline.computed_tables()} == found


def test_schema_modules_join_no_unchecked_output_path():
    """Outputs of the schema modules are joined through ``paths.key_folder_name`` and
    ``safe_paths.inside_root``; what remains of ``processed_dir() / ...`` reads a path a make
    stored itself (listed here)."""
    reads = {
        "model.py": ['full_dir = processed_dir() / row["model_dir"]'],
        "multicam.py": ["(processed_dir() / file,)"],  # the 2D files the sources stored
        "ensemble.py": ["read_predictions(processed / file)", 'f"{processed / file} (member'],
    }
    package = Path(model.__file__).parent
    for name in ("model.py", "train.py", "ensemble.py", "multicam.py"):
        for line in (package / name).read_text().splitlines():
            if ("processed_dir() /" in line or "processed /" in line) and not any(
                r in line for r in reads.get(name, [])
            ):
                pytest.fail(f"{name}: {line.strip()!r} joins an output path without safe_paths.inside_root")
