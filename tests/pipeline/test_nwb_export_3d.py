"""NWB export of a session with a calibrated rig: the 3D pose of its Triangulation, the
cameras as CalibratedCamera, each view's 2D pose, read back equal to the database; DANDI
inspection; appending; the dandiset layout checked by the DANDI CLI.

The rig is tiny and synthetic (three 160x120 cameras, 20 rig frames, one view with leading
frames); its 2D pose comes from load-mode PoseEstimationTasks reading the projected ground
truth (rig_helpers.py), so no network is trained. Own subject ('nwb3d'), model ('nwb3d_truth') and
calibration ('nwb3d_true'); every task created here is populated.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ndx_pose import CalibratedCamera, MultiCameraPoseEstimation
from pynwb import NWBHDF5IO, TimeSeries

from element_lightning_pose import dj_compat
from element_lightning_pose.export import dj_nwb, nwb
from tests.pipeline.rig_helpers import add_sources, build_rig

SIZE = (160, 120)
N_RIG = 20
LEAD = 2  # cam1's video has LEAD leading frames: its frame_offset
FPS = 30.0
SUBJECT = "nwb3d"
MODEL = "nwb3d_truth"
SKELETON = [["neck", "head"], ["head", "snout"]]


@pytest.fixture(scope="module")
def exported_rig(lp):
    """Rig recording -> 2D pose per view (load mode) -> Triangulation (smoother with a skeleton)."""
    rig_data = build_rig(
        lp,
        SUBJECT,
        n_rig=N_RIG,
        lead=LEAD,
        first_recording=401,
        when=dt.datetime(2024, 7, 1, 9, 0),
        size=SIZE,
        seed=3,
        lead_camera="cam1",
        device_prefix=SUBJECT,
        fps=FPS,
        species="Mus musculus",
        sex="F",
        subject_birth_date=dt.date(2024, 5, 1),
    )
    root, session, recs = rig_data["root"], rig_data["session"], rig_data["recs"]
    lp.multicam.CameraCalibration.insert_from_file(
        "nwb3d_true", rig_data["calibration"].relative_to(root), units="mm", reference_frame="arena floor centre, z up"
    )
    add_sources(lp, rig_data, MODEL, jump_rate=0.0)
    views = {name: rec["recording_id"] for name, rec in recs.items()}
    views["cam1"] = (recs["cam1"]["recording_id"], LEAD)
    rig_key = lp.multicam.MultiCameraRecording.insert_rig(session, 1, "nwb3d_true", views)
    idx = lp.multicam.TriangulationParamSet.insert_new_params(
        "nwb3d smoother + skeleton", {"method": "smoother", "skeleton": SKELETON}
    )
    task = lp.multicam.TriangulationTask.create(rig_key, idx, MODEL)
    assert dj_compat.populate(lp.multicam.Triangulation, task).errors == []
    return {"session": session, "task": task, "recs": recs, "group": rig_data["group"], "root": root}


def _assert_rig_matches_database(lp, nwbfile, exported_rig, video_prefix: str | None = None) -> None:
    task = exported_rig["task"]
    names = nwb.multicam_object_names(dj_nwb._rig_pose_name(task))
    behavior = nwbfile.processing["behavior"]
    pose = behavior[names.pose_estimation]
    assert isinstance(pose, MultiCameraPoseEstimation)
    order = list((lp.multicam.Triangulation & task).fetch1("body_parts"))
    np.testing.assert_array_equal(pose.skeleton.nodes[:], order)
    np.testing.assert_array_equal(pose.skeleton.edges[:], [(order.index(a), order.index(b)) for a, b in SKELETON])
    variance = behavior[names.posterior_variance].data[:]
    reprojection = behavior[names.reprojection_error].data[:]
    for k, bp in enumerate(order):
        row = (lp.multicam.Triangulation.BodyPartPosition3D & task & {"body_part": bp}).fetch1()
        series = pose.pose_estimation_series[bp]
        np.testing.assert_array_equal(series.data[:], np.column_stack([row["x"], row["y"], row["z"]]))
        np.testing.assert_array_equal(variance[:, k], np.column_stack([row["x_var"], row["y_var"], row["z_var"]]))
        np.testing.assert_array_equal(reprojection[:, k], row["reprojection_error"])
        assert series.unit == "millimeters"
        assert series.reference_frame == "arena floor centre, z up"
        assert series.rate == FPS and series.starting_time == pytest.approx(LEAD / FPS)
    assert behavior[names.posterior_variance].unit == "millimeters^2"
    for camera in exported_rig["group"].cameras:
        stored = (
            lp.multicam.CameraCalibration.Camera & {"calibration_id": "nwb3d_true", "camera_name": camera.name}
        ).fetch1()
        device = nwbfile.devices[camera.name]
        assert isinstance(device, CalibratedCamera)
        np.testing.assert_array_equal(device.intrinsic_matrix[:], stored["intrinsic_matrix"])
        np.testing.assert_array_equal(device.rotation_matrix[:], stored["rotation"])
        np.testing.assert_array_equal(device.translation_vector[:], stored["translation"])
        np.testing.assert_array_equal(device.distortion_coefficients[:], stored["distortion"])
        view = pose.pose_estimations[f"PoseEstimation_{camera.name}"]
        assert view.device is device
        rec = exported_rig["recs"][camera.name]
        video = lp.model.VideoRecording.file_paths(rec)[0]
        stored_video = str(view.source_video.external_file[0])
        assert (Path(nwbfile.container_source).parent / stored_video).samefile(video)
        if video_prefix is not None:
            assert stored_video == f"{video_prefix}{video.name}"
        # rig frame t is video frame t + offset in every view: one instant for all
        offset = LEAD if camera.name == "cam1" else 0
        first = view.pose_estimation_series[order[0]]
        assert first.starting_time == pytest.approx((LEAD - offset) / FPS)
        for bp in order:
            row = (lp.model.PoseEstimation.BodyPartPosition & rec & {"model_name": MODEL, "body_part": bp}).fetch1()
            data = view.pose_estimation_series[bp].data[:]
            np.testing.assert_array_equal(data[:, 0], row["x_pos"])
            np.testing.assert_array_equal(data[:, 1], row["y_pos"])
    # the rig's recordings are exported inside the rig pose only
    assert not [name for name in behavior.data_interfaces if name.startswith("PoseEstimation_nwb3d_")]


def _serious(path: Path) -> list:
    return [m for m in nwb.inspect_dandi(path) if m.importance.name in ("CRITICAL", "BEST_PRACTICE_VIOLATION")]


def test_rig_session_exports_3d_equal_to_database(lp, exported_rig, tmp_path):
    path = dj_nwb.export_session(exported_rig["session"], tmp_path, species="Mus musculus")
    with NWBHDF5IO(str(path), "r") as io:
        _assert_rig_matches_database(lp, io.read(), exported_rig)
    serious = _serious(path)
    assert serious == [], [m.message for m in serious]


def test_rig_session_appends_to_an_existing_file(lp, exported_rig, tmp_path):
    session = exported_rig["session"]
    existing = nwb.build_nwbfile(dj_nwb.session_info(session), dj_nwb.subject_info(session, species="Mus musculus"))
    existing.add_acquisition(TimeSeries(name="lfp_stand_in", data=np.arange(100.0), unit="V", rate=1000.0))
    path = tmp_path / "ephys.nwb"
    with NWBHDF5IO(str(path), "w") as io:
        io.write(existing)
    dj_nwb.export_session(session, append_to=path)
    with NWBHDF5IO(str(path), "r") as io:
        nwbfile = io.read()
        np.testing.assert_array_equal(nwbfile.acquisition["lfp_stand_in"].data[:], np.arange(100.0))
        _assert_rig_matches_database(lp, nwbfile, exported_rig)


def test_rig_session_in_dandiset_layout_validates(lp, exported_rig, tmp_path, dandi_cli):
    dandiset = tmp_path / "dandiset"
    dandiset.mkdir()
    (dandiset / "dandiset.yaml").write_text("identifier: '000000'\nname: ELP 3D\ndescription: 3D export test\n")
    path = dj_nwb.export_session(exported_rig["session"], dandiset, dandi_layout=True, species="Mus musculus")
    assert path.parent == dandiset / f"sub-{SUBJECT}"
    with NWBHDF5IO(str(path), "r") as io:
        _assert_rig_matches_database(lp, io.read(), exported_rig, video_prefix=f"{path.stem}/")
    for rec in exported_rig["recs"].values():
        video = lp.model.VideoRecording.file_paths(rec)[0]
        assert (path.parent / path.stem / video.name).samefile(video)
    assert _serious(path) == []

    result = subprocess.run(
        [dandi_cli, "validate", "--min-severity", "HINT", str(dandiset)], capture_output=True, text=True
    )
    assert result.returncode == 0 and "No errors found" in result.stdout, result.stdout + result.stderr
