"""The multi-camera schema on a tiny synthetic rig: calibration (file and board videos), rig
recordings with frame offsets, triangulation from PoseEstimation and EnsembleSmoothing
sources, and the bad inputs of issue 17 (each a clear error, nothing inserted).

2D sources are load-mode PoseEstimationTasks reading predictions CSVs written from the rig's
projected ground truth (plus pixel noise; rig_helpers.py): the plumbing is tested, not a network. Everything
here uses its own subject ('rig3d') and models ('rig_*'); every task it creates is populated
by the end, so the shared-schema tests (the worker counts pending tasks) are unaffected.
"""

from __future__ import annotations

import datetime as dt
import re
import time

import numpy as np
import pytest

from element_lightning_pose import dj_compat, pipeline
from element_lightning_pose.engine.data.keypoints import write_predictions
from element_lightning_pose.engine.multicam.boards import Board
from element_lightning_pose.engine.multicam.cameras import CalibrationError, calibration_text, read_calibration
from element_lightning_pose.engine.multicam.io import read_points3d
from element_lightning_pose.engine.multicam.params import TriangulationParamError
from element_lightning_pose.params import ParamSetTypeError
from element_lightning_pose.synthetic import rig
from tests.pipeline.rig_helpers import BOARD, add_sources, build_rig, insert_load_model, load_task, observations

SIZE = (320, 240)
N_RIG = 40  # rig frames
LEAD = 3  # cam2's video starts LEAD frames before the others: its frame_offset
SUBJECT = "rig3d"


@pytest.fixture(scope="module")
def rig3d(lp):
    return build_rig(
        lp, SUBJECT, n_rig=N_RIG, lead=LEAD, first_recording=301, when=dt.datetime(2024, 6, 1, 9, 0), size=SIZE
    )


@pytest.fixture(scope="module")
def sources(lp, rig3d):
    """Model 'rig_truth' on every view, populated (load mode)."""
    return add_sources(lp, rig3d, "rig_truth")


@pytest.fixture(scope="module")
def calibration_key(lp, rig3d):
    return lp.multicam.CameraCalibration.insert_from_file(
        "rig3d_true",
        rig3d["calibration"].relative_to(rig3d["root"]),
        units="mm",
        reference_frame="arena: origin at the floor centre, z up",
        description="true calibration of the synthetic rig",
    )


@pytest.fixture(scope="module")
def rig_key(lp, rig3d, calibration_key):
    recs = rig3d["recs"]
    views = {"cam0": recs["cam0"]["recording_id"], "cam1": recs["cam1"]["recording_id"]}
    views["cam2"] = (recs["cam2"]["recording_id"], LEAD)
    return lp.multicam.MultiCameraRecording.insert_rig(rig3d["session"], 1, "rig3d_true", views)


@pytest.fixture(scope="module")
def smoother_idx(lp):
    return lp.multicam.TriangulationParamSet.insert_new_params("3D smoother", {"method": "smoother"})


def _error_mm(lp, key: dict, truth: np.ndarray) -> np.ndarray:
    trajectory = lp.multicam.Triangulation.get_trajectory(key)
    bodyparts = list(dict.fromkeys(trajectory.columns.get_level_values(0)))
    estimate = np.stack([trajectory[bp][["x", "y", "z"]].to_numpy() for bp in bodyparts], axis=1)
    return np.linalg.norm(estimate - truth, axis=-1)


# --------------------------------------------------------------------------- calibration


def test_calibration_file_is_stored_and_read_back(lp, rig3d, calibration_key):
    group = lp.multicam.CameraCalibration.camera_group(calibration_key)
    assert group.names == ["cam0", "cam1", "cam2"]
    for stored, true in zip(group.cameras, rig3d["group"].cameras):
        np.testing.assert_allclose(stored.matrix, true.matrix)
        np.testing.assert_allclose(stored.rotation, true.rotation, atol=1e-12)
        np.testing.assert_allclose(stored.translation, true.translation)
        np.testing.assert_allclose(stored.distortion, true.distortion)
        assert stored.size == SIZE
    row = (lp.multicam.CameraCalibration & calibration_key).fetch1()
    assert row["units"] == "mm" and row["reference_frame"].startswith("arena")


def test_calibration_file_missing_a_field_inserts_nothing(lp, rig3d, tmp_path):
    text = calibration_text(rig3d["group"])
    lines = text.splitlines()
    second = lines.index("[cam_1]")
    translation = next(i for i in range(second, len(lines)) if lines[i].startswith("translation"))
    broken = tmp_path / "no_translation.toml"
    broken.write_text("\n".join(lines[:translation] + lines[translation + 1 :]) + "\n")
    with pytest.raises(CalibrationError, match=r"no_translation\.toml.*cam1.*'translation' is missing"):
        lp.multicam.CameraCalibration.insert_from_file("rig3d_broken", broken, units="mm", reference_frame="x")
    assert not lp.multicam.CameraCalibration & {"calibration_id": "rig3d_broken"}
    assert not lp.multicam.CameraCalibration.Camera & {"calibration_id": "rig3d_broken"}


# issue 26, item 9: one camera validator for the file reader and the table


@pytest.mark.parametrize(
    "pattern, replacement, message",
    [
        (r"\[\[", "[[-", "camera 'cam1' ([cam_1]): field 'matrix': focal length fx = -"),
        (r"1\.0\]\]$", "3.0]]", "camera 'cam1' ([cam_1]): field 'matrix': the last row is [0.0, 0.0, 3.0]"),
        (r"\[\[[-\d.e+]+", "[[true", "camera 'cam1' ([cam_1]): field 'matrix' holds a non-number: True (bool)"),
    ],
)
def test_calibration_file_with_a_degenerate_camera_inserts_nothing(lp, rig3d, tmp_path, pattern, replacement, message):
    lines = calibration_text(rig3d["group"]).splitlines()
    matrix = next(i for i in range(lines.index("[cam_1]"), len(lines)) if lines[i].startswith("matrix"))
    lines[matrix] = re.sub(pattern, replacement, lines[matrix], count=1)
    broken = tmp_path / "degenerate.toml"
    broken.write_text("\n".join(lines) + "\n")
    with pytest.raises(CalibrationError) as info:
        lp.multicam.CameraCalibration.insert_from_file("rig3d_degenerate", broken, units="mm", reference_frame="x")
    assert message in str(info.value) and "degenerate.toml" in str(info.value)
    assert not lp.multicam.CameraCalibration & {"calibration_id": "rig3d_degenerate"}
    assert not lp.multicam.CameraCalibration.Camera & {"calibration_id": "rig3d_degenerate"}


def test_a_camera_changed_after_it_was_checked_is_refused_at_insert(lp, rig3d):
    group = read_calibration(rig3d["calibration"])
    group.cameras[2].matrix[1, 1] = 0.0  # the arrays of a Camera are writable
    with pytest.raises(CalibrationError, match=r"camera 'cam2' \(calibration 'rig3d_mutated'\): field 'matrix'"):
        lp.multicam.CameraCalibration.insert_group("rig3d_mutated", group, units="mm", reference_frame="x")
    assert not lp.multicam.CameraCalibration & {"calibration_id": "rig3d_mutated"}


def test_a_degenerate_stored_camera_is_refused_when_read(lp, rig3d):
    key = {"calibration_id": "rig3d_stored_bad"}
    group = read_calibration(rig3d["calibration"])
    lp.multicam.CameraCalibration.insert_group(key["calibration_id"], group, units="mm", reference_frame="x")
    camera = {**key, "camera_name": "cam0"}
    row = (lp.multicam.CameraCalibration.Camera & camera).fetch1()
    (lp.multicam.CameraCalibration.Camera & camera).delete_quick()
    row["intrinsic_matrix"] = np.array([[0.0, 0, 160], [0, 500, 120], [0, 0, 1]])
    lp.multicam.CameraCalibration.Camera.insert1(row)  # a Manual table: anyone may insert a row
    try:
        with pytest.raises(
            CalibrationError,
            match=r"camera 'cam0' \(CameraCalibration 'rig3d_stored_bad'\): field 'intrinsic_matrix': "
            r"focal length fx = 0\.0 must be positive",
        ):
            lp.multicam.CameraCalibration.camera_group(key)
    finally:
        (lp.multicam.CameraCalibration.Camera & key).delete_quick()
        (lp.multicam.CameraCalibration & key).delete_quick()


def test_calibration_from_board_videos(lp, rig3d):
    """Rendered ChArUco videos -> Calibration -> CameraCalibration; the rig is recovered."""
    group = rig3d["group"]
    board = Board(**BOARD)
    videos = rig.render_board_videos(group, board, rig3d["base"] / "board", n_frames=16, seed=0)
    key = lp.multicam.CalibrationTask.create("rig3d_board", BOARD, videos, units="mm")
    start = time.perf_counter()
    result = dj_compat.populate(lp.multicam.Calibration, key)
    elapsed = time.perf_counter() - start
    print(f"board calibration of 3 cameras x 16 frames at {SIZE[0]}x{SIZE[1]}: {elapsed:.1f} s")
    assert result.errors == [] and result.success_count == 1
    row = (lp.multicam.CameraCalibration & key).fetch1()
    assert row["mean_reprojection_error"] < 0.6
    assert "'cam0'" in row["reference_frame"]
    errors = dj_compat.fetch_column(lp.multicam.CameraCalibration.Camera & key, "reprojection_error")
    assert len(errors) == 3 and max(errors) < 0.6
    found = lp.multicam.CameraCalibration.camera_group(key)
    # camera 0 is the calibration's world frame: compare the baselines, which do not depend on it
    for a, b in ((0, 1), (0, 2), (1, 2)):
        true = np.linalg.norm(group.cameras[a].centre - group.cameras[b].centre)
        estimated = np.linalg.norm(found.cameras[a].centre - found.cameras[b].centre)
        assert abs(estimated - true) / true < 0.03, (a, b, estimated, true)
    stored = (lp.multicam.Calibration & key).fetch1("calibration_file")
    assert (lp.model.processed_dir() / stored).is_file()


def test_calibration_task_with_a_bad_board_inserts_nothing(lp, rig3d):
    from element_lightning_pose.engine.multicam.boards import BoardError

    bad = {**BOARD, "marker_length": 80.0}
    with pytest.raises(BoardError, match="marker_length"):
        lp.multicam.CalibrationTask.create("rig3d_badboard", bad, {"cam0": "a.avi", "cam1": "b.avi"}, units="mm")
    assert not lp.multicam.CalibrationTask & {"calibration_id": "rig3d_badboard"}


def test_calibration_task_checks_board_corners_and_videos(lp, rig3d):
    """Issue 26, items 14, 19 and 25: checked by the engine's rules before anything is inserted."""
    from element_lightning_pose.engine.multicam.boards import BoardError

    files = {n: rig3d["base"] / "videos" / f"{n}.mp4" for n in ("cam0", "cam1")}  # checked before decoding
    assert all(f.is_file() for f in files.values())
    key = {"calibration_id": "rig3d_task_checks"}
    with pytest.raises(BoardError, match="board_x = 7.5 must be a whole number of squares"):
        lp.multicam.CalibrationTask.create(key["calibration_id"], {**BOARD, "board_x": 7.5}, files, units="mm")
    with pytest.raises(BoardError, match="min_corners = 0 must be a whole number from 4 to 24"):
        lp.multicam.CalibrationTask.create(key["calibration_id"], BOARD, files, units="mm", min_corners=0)
    link = rig3d["base"] / "videos" / "cam0_link.avi"
    link.unlink(missing_ok=True)
    link.symlink_to(files["cam0"])
    for same in (files["cam0"], link):
        with pytest.raises(BoardError, match="cameras 'cam0' and 'cam1' are given the same video"):
            lp.multicam.CalibrationTask.create(key["calibration_id"], BOARD, {**files, "cam1": same}, units="mm")
    assert not lp.multicam.CalibrationTask & key
    no_type = {k: v for k, v in BOARD.items() if k != "board_type"}  # sleap-anipose's board.toml keys
    lp.multicam.CalibrationTask.create(key["calibration_id"], no_type, files, units="mm")
    try:
        assert (lp.multicam.CalibrationTask & key).fetch1("board")["board_type"] == "charuco"
    finally:
        (lp.multicam.CalibrationTask.BoardVideo & key).delete_quick()
        (lp.multicam.CalibrationTask & key).delete_quick()


def test_calibration_task_for_an_existing_calibration_is_refused(lp, calibration_key):
    with pytest.raises(ValueError, match="'rig3d_true' is already in CameraCalibration"):
        lp.multicam.CalibrationTask.create("rig3d_true", BOARD, {"cam0": "a.avi", "cam1": "b.avi"}, units="mm")
    assert not lp.multicam.CalibrationTask & calibration_key


# --------------------------------------------------------------------------- rig recordings


def test_rig_frames_are_the_frames_common_after_offsets(lp, rig_key):
    assert (lp.multicam.MultiCameraRecording & rig_key).fetch1("n_frames") == N_RIG
    views = lp.multicam.MultiCameraRecording.views(rig_key)
    assert [(v["camera_name"], v["frame_offset"]) for v in views] == [("cam0", 0), ("cam1", 0), ("cam2", LEAD)]


def test_rig_with_a_camera_not_in_the_calibration_is_refused(lp, rig3d, calibration_key):
    recs = rig3d["recs"]
    views = {"cam0": recs["cam0"]["recording_id"], "cam9": recs["cam1"]["recording_id"]}
    with pytest.raises(lp.multicam.RigError, match=r"\['cam9'\] are not in calibration 'rig3d_true'"):
        lp.multicam.MultiCameraRecording.insert_rig(rig3d["session"], 2, "rig3d_true", views)
    assert not lp.multicam.MultiCameraRecording & {**rig3d["session"], "rig_recording_id": 2}


def test_views_with_different_frame_counts_and_no_offsets_are_refused(lp, rig3d, calibration_key):
    views = {name: rec["recording_id"] for name, rec in rig3d["recs"].items()}
    with pytest.raises(
        lp.multicam.RigError, match=rf"different frame counts .*'cam0': {N_RIG}.*'cam2': {N_RIG + LEAD}"
    ):
        lp.multicam.MultiCameraRecording.insert_rig(rig3d["session"], 3, "rig3d_true", views)
    assert not lp.multicam.MultiCameraRecording & {**rig3d["session"], "rig_recording_id": 3}
    assert not lp.multicam.MultiCameraRecording.View & {**rig3d["session"], "rig_recording_id": 3}


def test_one_recording_as_several_cameras_is_refused(lp, rig3d, calibration_key):
    """Issue 26, item 10."""
    first = rig3d["recs"]["cam0"]["recording_id"]
    for views in ({"cam0": first, "cam1": first, "cam2": first}, {"cam0": (first, 0), "cam1": (first, 2)}):
        with pytest.raises(lp.multicam.RigError, match=rf"recording {first} is given to cameras \['cam0', 'cam1'"):
            lp.multicam.MultiCameraRecording.insert_rig(rig3d["session"], 4, "rig3d_true", views)
    assert not lp.multicam.MultiCameraRecording & {**rig3d["session"], "rig_recording_id": 4}


@pytest.mark.parametrize(
    "value, message",
    [
        (True, "view 'cam0': True is not a recording_id"),
        (301.0, "view 'cam0': 301.0 is not a recording_id"),
        ("301", "view 'cam0': '301' is not a recording_id"),
        ((301, 1.5), "view 'cam0': (301, 1.5) is not a recording_id"),
        ((301,), "view 'cam0': (301,) is not a recording_id"),
    ],
)
def test_malformed_views_are_refused(lp, rig3d, calibration_key, value, message):
    """Issue 26, items 10 and 23: a clear RigError (an ElpError), not a traceback or a wrong recording."""
    from element_lightning_pose.engine.errors import ElpError

    views = {"cam0": value, "cam1": rig3d["recs"]["cam1"]["recording_id"]}
    with pytest.raises(lp.multicam.RigError) as info:
        lp.multicam.MultiCameraRecording.insert_rig(rig3d["session"], 5, "rig3d_true", views)
    assert message in str(info.value) and isinstance(info.value, ElpError)
    assert not lp.multicam.MultiCameraRecording & {**rig3d["session"], "rig_recording_id": 5}


def test_session_key_without_its_attributes_is_refused(lp, rig3d, calibration_key):
    views = {name: rec["recording_id"] for name, rec in rig3d["recs"].items() if name != "cam2"}
    dropped = next(k for k in rig3d["session"] if k != "subject")  # session_id, or session_datetime (0.14)
    session = {k: v for k, v in rig3d["session"].items() if k != dropped}
    with pytest.raises(lp.multicam.RigError, match=rf"session key .* lacks \['{dropped}'\]"):
        lp.multicam.MultiCameraRecording.insert_rig(session, 6, "rig3d_true", views)
    assert not lp.multicam.MultiCameraRecording & {"rig_recording_id": 6}


# --------------------------------------------------------------------------- triangulation


def test_triangulation_is_close_to_the_ground_truth(lp, rig3d, sources, rig_key, smoother_idx):
    assert {"Calibration", "Triangulation"} <= {t.__name__ for t in pipeline.computed_tables()}  # elp worker runs them
    key = lp.multicam.TriangulationTask.create(rig_key, smoother_idx, "rig_truth")
    start = time.perf_counter()
    result = dj_compat.populate(lp.multicam.Triangulation, key)
    elapsed = time.perf_counter() - start
    assert result.errors == [] and result.success_count == 1
    row = (lp.multicam.Triangulation & key).fetch1()
    assert row["n_frames"] == N_RIG and list(row["cameras"]) == ["cam0", "cam1", "cam2"]
    assert row["mean_reprojection_error"] < 1.5
    error = _error_mm(lp, key, rig3d["truth"])
    print(f"smoother: {elapsed:.2f} s, 3D error median {np.median(error):.2f} mm, max {error.max():.2f} mm")
    assert np.median(error) < 1.5 and error.max() < 10.0
    part = (lp.multicam.Triangulation.BodyPartPosition3D & key & {"body_part": "snout"}).fetch1()
    assert part["reprojection_error"].shape == (N_RIG, 3)
    assert np.nanmedian(part["reprojection_error"]) < 1.5
    assert part["cameras_used"].shape == (N_RIG,) and part["cameras_used"].max() == 3
    assert np.all(part["x_var"] > 0)
    trajectory = lp.multicam.Triangulation.get_trajectory(key)
    assert trajectory.shape == (N_RIG, 7 * len(rig3d["body"].bodyparts))
    assert list(trajectory["snout"].columns) == ["x", "y", "z", "x_var", "y_var", "z_var", "n_cameras"]
    np.testing.assert_array_equal(trajectory.index, np.arange(N_RIG))
    points_file = lp.model.processed_dir() / row["points_file"]
    assert points_file.is_file()


def test_robust_method_and_skeleton_params(lp, rig3d, sources, rig_key):
    idx = lp.multicam.TriangulationParamSet.insert_new_params("robust", {"method": "robust", "robust": {"nu": 2.0}})
    key = lp.multicam.TriangulationTask.create(rig_key, idx, "rig_truth")
    assert dj_compat.populate(lp.multicam.Triangulation, key).errors == []
    error = _error_mm(lp, key, rig3d["truth"])
    assert np.median(error) < 2.0
    with pytest.raises(TriangulationParamError, match=r"smoother\.nu must be a number > 0"):
        lp.multicam.TriangulationParamSet.insert_new_params("bad", {"smoother": {"nu": -1}})
    with pytest.raises(TriangulationParamError, match=r"unknown key 'robust\.sigma'"):
        lp.multicam.TriangulationParamSet.insert_new_params("bad", {"robust": {"sigma": 1}})
    with pytest.raises(TriangulationParamError, match="skeleton needs method 'smoother'"):
        lp.multicam.TriangulationParamSet.insert_new_params("bad", {"method": "dlt", "skeleton": [["head", "neck"]]})
    assert not lp.multicam.TriangulationParamSet & {"paramset_desc": "bad"}
    # the same parameters, spelt with defaults, are the same set
    assert (
        lp.multicam.TriangulationParamSet.insert_new_params("again", {"method": "robust", "robust": {"nu": 2}}) == idx
    )


def test_elp_worker_triangulates(lp, lp_root, rig3d, sources, rig_key):
    """`elp worker --table Triangulation` picks the table up (pipeline.computed_tables), DLT method."""
    import json
    import subprocess

    from tests.pipeline.jobs_helpers import worker_command

    idx = lp.multicam.TriangulationParamSet.insert_new_params("dlt", {"method": "dlt"})
    key = lp.multicam.TriangulationTask.create(rig_key, idx, "rig_truth", triangulation_id=6)
    only = ("--once", "--table", "Triangulation", "--restrict", json.dumps({"triangulation_id": 6}))
    done = subprocess.run(worker_command(lp, lp_root, *only), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "worker done: 1 key(s) populated" in done.stdout
    assert len(lp.multicam.Triangulation & key) == 1
    assert np.median(_error_mm(lp, key, rig3d["truth"])) < 2.0


def test_ensemble_sources(lp, rig3d, sources, rig_key, smoother_idx):
    """Each camera's 2D pose from an EnsembleSmoothing of two loaded models."""
    group, bodyparts = rig3d["group"], rig3d["body"].bodyparts
    insert_load_model(lp, rig3d, "rig_second")
    for i, name in enumerate(group.names):
        values = observations(group, name, rig3d["points"][name], seed=10 + i)
        load_task(lp, rig3d["recs"][name], "rig_second", values, bodyparts)
    assert dj_compat.populate(lp.model.PoseEstimation, {"model_name": "rig_second"}).errors == []
    eks_idx = lp.ensemble.SmoothingParamSet.insert_new_params("auto s", {})  # the shared default set
    for name in group.names:
        lp.ensemble.EnsembleSmoothingTask.create(rig3d["recs"][name], ["rig_truth", "rig_second"], eks_idx)
    recs = [rig3d["recs"][n] for n in group.names]
    assert dj_compat.populate(lp.ensemble.EnsembleSmoothing, recs).errors == []
    key = lp.multicam.TriangulationTask.create(
        rig_key, smoother_idx, {n: ("ensemble", 1) for n in group.names}, triangulation_id=2
    )
    table, source = lp.multicam.TriangulationTask.source_key(key, "cam2")
    assert table is lp.ensemble.EnsembleSmoothing and source["recording_id"] == rig3d["recs"]["cam2"]["recording_id"]
    assert dj_compat.populate(lp.multicam.Triangulation, key).errors == []
    assert np.median(_error_mm(lp, key, rig3d["truth"])) < 1.5


# --------------------------------------------------------------------------- bad sources


def test_sources_with_different_body_parts_are_refused(lp, rig3d, sources, rig_key, smoother_idx):
    bodyparts = rig3d["body"].bodyparts
    fewer = [bp for bp in bodyparts if bp != "tail_base"]
    insert_load_model(lp, rig3d, "rig_fewer", fewer)
    values = observations(rig3d["group"], "cam1", rig3d["points"]["cam1"], seed=1)
    keep = [bodyparts.index(bp) for bp in fewer]
    load_task(lp, rig3d["recs"]["cam1"], "rig_fewer", values[:, keep], fewer)
    assert dj_compat.populate(lp.model.PoseEstimation, {"model_name": "rig_fewer"}).errors == []
    spec = {"cam0": ("pose", "rig_truth"), "cam1": ("pose", "rig_fewer"), "cam2": ("pose", "rig_truth")}
    key = lp.multicam.TriangulationTask.create(rig_key, smoother_idx, spec, triangulation_id=3)
    with pytest.raises(
        lp.multicam.RigError, match=r"camera 'cam1'.*body parts differ.*only in 'cam0': \['tail_base'\]"
    ):
        lp.multicam.Triangulation.populate(key)
    assert not lp.multicam.Triangulation & key
    assert not lp.multicam.Triangulation.BodyPartPosition3D & key
    _delete_task(lp, key)


def test_task_with_unpopulated_sources_names_them(lp, rig3d, sources, rig_key, smoother_idx):
    bodyparts = rig3d["body"].bodyparts
    insert_load_model(lp, rig3d, "rig_late")
    values = observations(rig3d["group"], "cam1", rig3d["points"]["cam1"], seed=21)
    late = load_task(lp, rig3d["recs"]["cam1"], "rig_late", values, bodyparts)
    spec = {"cam0": ("pose", "rig_truth"), "cam1": ("pose", "rig_late"), "cam2": ("pose", "rig_truth")}
    key = lp.multicam.TriangulationTask.create(rig_key, smoother_idx, spec, triangulation_id=4)
    assert list(lp.multicam.TriangulationTask.missing_sources(key)) == ["cam1"]
    with pytest.raises(lp.multicam.RigError, match=r"not populated yet \(camera 'cam1': PoseEstimation .*rig_late"):
        lp.multicam.Triangulation.populate(key)
    assert not lp.multicam.Triangulation & key
    # a worker (suppress_errors) waits for the source instead of recording a failure
    waited = dj_compat.populate(lp.multicam.Triangulation, key, suppress_errors=True, reserve_jobs=True)
    assert waited.errors == [] and waited.success_count == 0
    assert not dj_compat.list_jobs([lp.multicam.Triangulation], "error", [key])
    # once the source is there the same task runs (and no pending task is left for the worker test)
    assert dj_compat.populate(lp.model.PoseEstimation, late).errors == []
    assert dj_compat.populate(lp.multicam.Triangulation, key).errors == []
    assert np.median(_error_mm(lp, key, rig3d["truth"])) < 1.5


def test_task_whose_sources_do_not_cover_the_views_is_refused(lp, rig_key, smoother_idx):
    with pytest.raises(lp.multicam.RigError, match=r"missing: \['cam2'\]"):
        lp.multicam.TriangulationTask.create(
            rig_key, smoother_idx, {"cam0": ("pose", "rig_truth"), "cam1": ("pose", "rig_truth")}, triangulation_id=5
        )
    assert not lp.multicam.TriangulationTask & {**rig_key, "triangulation_id": 5}


def _delete_task(lp, key: dict) -> None:
    """Remove a task that cannot run, so that a later worker pass over the schema finds no failing key."""
    (lp.multicam.TriangulationTask.PoseSource & key).delete_quick()
    (lp.multicam.TriangulationTask.EnsembleSource & key).delete_quick()
    (lp.multicam.TriangulationTask & key).delete_quick()


# --------------------------------------------------------------------------- one route (issue 23, item 3)


@pytest.fixture(scope="module")
def cli_ensembles(lp, rig3d, sources):
    """EnsembleSmoothing (ensemble_id 3) of 'rig_truth' and 'rig_cli' on every view, populated."""
    group, bodyparts = rig3d["group"], rig3d["body"].bodyparts
    insert_load_model(lp, rig3d, "rig_cli")
    for i, name in enumerate(group.names):
        load_task(
            lp, rig3d["recs"][name], "rig_cli", observations(group, name, rig3d["points"][name], 40 + i), bodyparts
        )
    assert dj_compat.populate(lp.model.PoseEstimation, {"model_name": "rig_cli"}).errors == []
    eks_idx = lp.ensemble.SmoothingParamSet.insert_new_params("auto s", {})
    recs = [rig3d["recs"][n] for n in group.names]
    for rec in recs:
        lp.ensemble.EnsembleSmoothingTask.create(rec, ["rig_truth", "rig_cli"], eks_idx, ensemble_id=3)
    assert dj_compat.populate(lp.ensemble.EnsembleSmoothing, [{**r, "ensemble_id": 3} for r in recs]).errors == []
    return 3


@pytest.mark.parametrize("case", ["pose_smoother_skeleton", "ensemble_robust"])
def test_elp_triangulate_gives_the_tables_trajectory(
    lp, rig3d, sources, rig_key, cli_ensembles, tmp_path, capsys, case
):
    """The same 2D (with cam2's frame offset), calibration and parameters: `elp triangulate`
    writes what `Triangulation` stores, to the last digit of the CSV."""
    from element_lightning_pose.cli import main

    body = rig3d["body"]
    skeleton = [[body.bodyparts[a], body.bodyparts[b]] for a, b in body.edges]
    (tmp_path / "edges.txt").write_text("".join(f"{a} {b}\n" for a, b in skeleton))
    if case == "pose_smoother_skeleton":
        params = {"method": "smoother", "skeleton": skeleton, "smoother": {"iterations": 12}}
        spec, options, tid = "rig_truth", ["--skeleton", tmp_path / "edges.txt", "--set", "smoother.iterations=12"], 7
    else:
        params = {"method": "robust", "min_likelihood": 0.6, "robust": {"nu": 2.0}}
        spec = {name: ("ensemble", cli_ensembles) for name in rig3d["group"].names}
        options, tid = ["--method", "robust", "--min-likelihood", "0.6", "--set", "robust.nu=2"], 8
    idx = lp.multicam.TriangulationParamSet.insert_new_params(f"cli parity {case}", params)
    key = lp.multicam.TriangulationTask.create(rig_key, idx, spec, triangulation_id=tid)
    assert dj_compat.populate(lp.multicam.Triangulation, key).errors == []
    views = []
    for name in rig3d["group"].names:
        table, source_key = lp.multicam.TriangulationTask.source_key(key, name)
        column = "predictions_file" if table is lp.model.PoseEstimation else "output_file"
        views += ["--view", f"{name}={lp.model.processed_dir() / (table & source_key).fetch1(column)}"]
    out = tmp_path / "points3d.csv"
    code = main(
        ["triangulate", str(rig3d["calibration"]), *views, "--frame-offset", f"cam2={LEAD}"]
        + [str(o) for o in options]
        + ["-o", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    cli = read_points3d(out)
    stored = read_points3d(lp.model.processed_dir() / (lp.multicam.Triangulation & key).fetch1("points_file"))
    assert cli.bodyparts == stored.bodyparts and cli.index == stored.index == list(range(N_RIG))
    np.testing.assert_array_equal(cli.values(), stored.values())
    trajectory = lp.multicam.Triangulation.get_trajectory(key)
    for k, bp in enumerate(cli.bodyparts):
        for c, coord in enumerate(("x", "y", "z")):
            np.testing.assert_allclose(cli.points[:, k, c], trajectory[(bp, coord)], rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(cli.variance[:, k, c], trajectory[(bp, f"{coord}_var")], rtol=1e-9, atol=0)
        np.testing.assert_array_equal(cli.n_views[:, k], trajectory[(bp, "n_cameras")])
    assert np.isfinite(cli.points).any()


# --------------------------------------------------------------------------- 3D follows its 2D (issue 26, item 7)


def test_deleting_the_2d_deletes_the_3d_computed_from_it(lp, rig3d, rig_key, smoother_idx, monkeypatch):
    """Triangulation's sources are foreign keys: a plain delete of a source PoseEstimation is
    refused (it would leave 3D beside changed 2D); a cascading one deletes the Triangulation,
    which repopulates from the new 2D; deleting the Model deletes the task that names it."""
    import datajoint as dj

    monkeypatch.setitem(dj.config, "safemode", False)
    group, bodyparts = rig3d["group"], rig3d["body"].bodyparts
    insert_load_model(lp, rig3d, "rig_cascade")
    pose = {}
    for i, name in enumerate(group.names):
        values = observations(group, name, rig3d["points"][name], seed=50 + i)
        pose[name] = load_task(lp, rig3d["recs"][name], "rig_cascade", values, bodyparts)
    assert dj_compat.populate(lp.model.PoseEstimation, list(pose.values())).errors == []
    key = lp.multicam.TriangulationTask.create(rig_key, smoother_idx, "rig_cascade", triangulation_id=10)
    assert dj_compat.populate(lp.multicam.Triangulation, key).errors == []
    with pytest.raises(dj.errors.DataJointError, match="part table"):
        (lp.model.PoseEstimation & pose["cam1"]).delete()
    assert lp.model.PoseEstimation & pose["cam1"] and lp.multicam.Triangulation & key
    assert len(lp.multicam.Triangulation.PoseSource & key) == 3
    assert dj_compat.delete_cascading(lp.model.PoseEstimation & pose["cam1"]) == 1
    assert not lp.multicam.Triangulation & key
    assert not lp.multicam.Triangulation.BodyPartPosition3D & key and not lp.multicam.Triangulation.PoseSource & key
    assert lp.multicam.TriangulationTask & key and lp.model.PoseEstimation & pose["cam0"]
    # the 2D computed again (here from the same file): the task runs again
    assert dj_compat.populate(lp.model.PoseEstimation, pose["cam1"]).errors == []
    assert dj_compat.populate(lp.multicam.Triangulation, key).success_count == 1
    dj_compat.delete_cascading(lp.model.Model & {"model_name": "rig_cascade"})
    assert not lp.multicam.TriangulationTask & key and not lp.multicam.Triangulation & key
    assert not lp.model.PoseEstimationTask & {"model_name": "rig_cascade"}


def test_deleting_a_members_2d_deletes_the_ensemble_and_its_3d(lp, rig3d, sources, rig_key, smoother_idx, monkeypatch):
    """EnsembleSmoothing's members are foreign keys to the PoseEstimation rows it read: a plain
    delete of one is refused; a cascading one deletes the smoothing (its body parts too) and the
    Triangulation computed from it, and both follow the member's changed 2D when populated again."""
    import datajoint as dj

    monkeypatch.setitem(dj.config, "safemode", False)
    group, bodyparts = rig3d["group"], rig3d["body"].bodyparts
    insert_load_model(lp, rig3d, "rig_ens_cascade")
    pose = {}
    for i, name in enumerate(group.names):
        values = observations(group, name, rig3d["points"][name], seed=60 + i)
        pose[name] = load_task(lp, rig3d["recs"][name], "rig_ens_cascade", values, bodyparts)
    assert dj_compat.populate(lp.model.PoseEstimation, list(pose.values())).errors == []
    eks_idx = lp.ensemble.SmoothingParamSet.insert_new_params("auto s", {})  # the shared default set
    members = ["rig_truth", "rig_ens_cascade"]
    ens = {
        n: lp.ensemble.EnsembleSmoothingTask.create(rig3d["recs"][n], members, eks_idx, ensemble_id=4)
        for n in group.names
    }
    assert dj_compat.populate(lp.ensemble.EnsembleSmoothing, list(ens.values())).errors == []
    key = lp.multicam.TriangulationTask.create(
        rig_key, smoother_idx, {n: ("ensemble", 4) for n in group.names}, triangulation_id=14
    )
    assert dj_compat.populate(lp.multicam.Triangulation, key).errors == []
    before = (lp.ensemble.EnsembleSmoothing.BodyPartPosition & ens["cam1"] & {"body_part": bodyparts[0]}).fetch1(
        "x_pos"
    )

    with pytest.raises(dj.errors.DataJointError, match="part table"):
        (lp.model.PoseEstimation & pose["cam1"]).delete()
    assert lp.model.PoseEstimation & pose["cam1"] and lp.ensemble.EnsembleSmoothing & ens["cam1"]
    assert dj_compat.delete_cascading(lp.model.PoseEstimation & pose["cam1"]) == 1
    assert not lp.ensemble.EnsembleSmoothing & ens["cam1"]
    assert not lp.ensemble.EnsembleSmoothing.BodyPartPosition & ens["cam1"]
    assert not lp.ensemble.EnsembleSmoothing.Member & ens["cam1"]
    assert not lp.multicam.Triangulation & key
    # what did not read the deleted 2D stands: the other cameras' smoothing, the tasks, rig_truth's 2D
    assert len(lp.ensemble.EnsembleSmoothing & [ens["cam0"], ens["cam2"]]) == 2
    assert lp.ensemble.EnsembleSmoothingTask & ens["cam1"] and lp.multicam.TriangulationTask & key
    assert lp.model.PoseEstimation & {**rig3d["recs"]["cam1"], "model_name": "rig_truth"}

    # the member's 2D changes (another file) and is computed again: the smoothing and the 3D follow it
    changed = observations(group, "cam1", rig3d["points"]["cam1"], seed=70)
    output_dir = lp.model.PoseEstimationTask.default_output_dir(pose["cam1"])
    write_predictions(lp.model.processed_dir() / output_dir / "predictions.csv", changed, bodyparts)
    assert dj_compat.populate(lp.model.PoseEstimation, pose["cam1"]).errors == []
    assert dj_compat.populate(lp.ensemble.EnsembleSmoothing, ens["cam1"]).success_count == 1
    after = (lp.ensemble.EnsembleSmoothing.BodyPartPosition & ens["cam1"] & {"body_part": bodyparts[0]}).fetch1("x_pos")
    assert not np.allclose(before, after)
    assert len(lp.ensemble.EnsembleSmoothing.Member & ens["cam1"]) == 2
    assert dj_compat.populate(lp.multicam.Triangulation, key).success_count == 1
    dj_compat.delete_cascading(lp.model.Model & {"model_name": "rig_ens_cascade"})
    assert not lp.ensemble.EnsembleSmoothingTask & list(ens.values()) and not lp.multicam.TriangulationTask & key


# --------------------------------------------------------------------------- API arguments (issue 26, items 23, 24)


def test_malformed_triangulation_arguments_are_clear_errors(lp, rig_key, smoother_idx):
    before = len(lp.multicam.TriangulationParamSet())
    for params in ("smoother", None, ["method", "dlt"]):
        with pytest.raises(ParamSetTypeError, match=r"params must be a mapping of parameters.*'method'"):
            lp.multicam.TriangulationParamSet.insert_new_params("malformed", params)
    assert len(lp.multicam.TriangulationParamSet()) == before
    good = {"cam0": ("pose", "rig_truth"), "cam1": ("pose", "rig_truth")}
    for source in (("pose", "rig_truth", 3), "rig_truth", ("pose",), ("ensemble", "one"), ("video", "rig_truth")):
        with pytest.raises(lp.multicam.RigError, match="camera 'cam2'"):
            lp.multicam.TriangulationTask.create(rig_key, smoother_idx, {**good, "cam2": source}, triangulation_id=11)
    with pytest.raises(lp.multicam.RigError, match="sources must be a model name or a mapping"):
        lp.multicam.TriangulationTask.create(rig_key, smoother_idx, ["rig_truth"] * 3, triangulation_id=11)
    assert not lp.multicam.TriangulationTask & {**rig_key, "triangulation_id": 11}


def test_task_that_leaves_a_camera_out(lp, rig3d, sources, rig_key, smoother_idx):
    """A rig whose camera failed: the views named, at least two, are triangulated; the task
    says which camera it leaves out."""
    key = lp.multicam.TriangulationTask.create(
        rig_key, smoother_idx, "rig_truth", triangulation_id=12, unused_cameras=["cam1"]
    )
    assert lp.multicam.TriangulationTask.unused_cameras(key) == ["cam1"]
    assert dj_compat.populate(lp.multicam.Triangulation, key).errors == []
    assert list((lp.multicam.Triangulation & key).fetch1("cameras")) == ["cam0", "cam2"]
    part = (lp.multicam.Triangulation.BodyPartPosition3D & key & {"body_part": "snout"}).fetch1()
    assert part["reprojection_error"].shape == (N_RIG, 2) and part["cameras_used"].max() == 2
    assert np.median(_error_mm(lp, key, rig3d["truth"])) < 3.0
    with pytest.raises(lp.multicam.RigError, match="fewer than two cameras"):
        lp.multicam.TriangulationTask.create(
            rig_key, smoother_idx, "rig_truth", triangulation_id=13, unused_cameras=["cam1", "cam2"]
        )
    with pytest.raises(lp.multicam.RigError, match=r"unused_cameras \['cam9'\] are not views"):
        lp.multicam.TriangulationTask.create(
            rig_key, smoother_idx, "rig_truth", triangulation_id=13, unused_cameras=["cam9"]
        )
    assert not lp.multicam.TriangulationTask & {**rig_key, "triangulation_id": 13}
