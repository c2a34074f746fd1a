"""NWB export of a session from the database: read back, DANDI inspection, append, errors."""

from __future__ import annotations

import numpy as np
import pytest
from pynwb import NWBHDF5IO, TimeSeries

from element_lightning_pose import dj_compat
from element_lightning_pose.export import dj_nwb, nwb


@pytest.fixture(scope="module")
def smoothed(lp, flow):
    """The flow's recording with pose from both models and an ensemble (id 5) over them."""
    for table in (lp.model.RecordingInfo, lp.model.PoseEstimation):
        assert dj_compat.populate(table, flow["rec"]).errors == []
    idx = lp.ensemble.SmoothingParamSet.insert_new_params("auto s", {})
    key = {**flow["rec"], "ensemble_id": 5}
    if not lp.ensemble.EnsembleSmoothingTask & key:
        lp.ensemble.EnsembleSmoothingTask.create(flow["rec"], flow["names"], idx, ensemble_id=5)
    assert dj_compat.populate(lp.ensemble.EnsembleSmoothing, key).errors == []
    session = {k: flow["rec"][k] for k in lp.Session.primary_key}
    return session, flow


def exported_ensemble_key(lp, rec) -> dict:
    keys = dj_compat.fetch_keys(lp.ensemble.EnsembleSmoothing & rec, order_by="ensemble_id")
    return keys[-1]


def test_export_reads_back_equal_to_database(lp, smoothed, tmp_path):
    session, flow = smoothed
    path = dj_nwb.export_session(session, tmp_path, species="Mus musculus")
    assert path.name == nwb.dandi_filename("mouse1", dj_nwb.session_info(session).session_id)
    assert path.name.startswith("sub-mouse1_ses-") and path.name.endswith("_behavior+image.nwb")
    ens_key = exported_ensemble_key(lp, flow["rec"])
    with NWBHDF5IO(str(path), "r") as io:
        nwbfile = io.read()
        assert nwbfile.subject.subject_id == "mouse1"
        assert nwbfile.subject.species == "Mus musculus"
        assert nwbfile.subject.sex == "F"
        assert nwbfile.session_start_time.tzinfo is not None
        behavior = nwbfile.processing["behavior"]
        names = nwb.camera_object_names("cam_top_rec1")
        pose = behavior[names.pose_estimation]
        assert pose.device.name == "cam_top_rec1" or pose.device is not None
        members = ", ".join(sorted(flow["names"]))
        assert members in pose.description
        fps = (lp.model.RecordingInfo & flow["rec"]).fetch1("fps")
        for bp in flow["project"].bodyparts:
            series = pose.pose_estimation_series[bp]
            row = (lp.ensemble.EnsembleSmoothing.BodyPartPosition & ens_key & {"body_part": bp}).fetch1()
            np.testing.assert_allclose(series.data[:, 0], row["x_pos"])
            np.testing.assert_allclose(series.data[:, 1], row["y_pos"])
            np.testing.assert_allclose(series.confidence[:], row["likelihood"])
            assert series.rate == pytest.approx(fps) or series.timestamps is not None
        variance = behavior[names.posterior_variance].data[:]
        first = (
            lp.ensemble.EnsembleSmoothing.BodyPartPosition & ens_key & {"body_part": flow["project"].bodyparts[0]}
        ).fetch1("posterior_var")
        np.testing.assert_allclose(variance[:, 0, :], first)


def test_export_passes_dandi_inspection(lp, smoothed, tmp_path):
    session, _ = smoothed
    path = dj_nwb.export_session(session, tmp_path, species="Mus musculus")
    messages = nwb.inspect_dandi(path)
    serious = [m for m in messages if m.importance.name in ("CRITICAL", "BEST_PRACTICE_VIOLATION")]
    assert serious == [], [m.message for m in serious]


def test_append_keeps_existing_content(lp, smoothed, tmp_path):
    session, _ = smoothed
    subject = dj_nwb.subject_info(session, species="Mus musculus")
    meta = dj_nwb.session_info(session)
    existing = nwb.build_nwbfile(meta, subject)
    existing.add_acquisition(TimeSeries(name="lfp_stand_in", data=np.arange(100.0), unit="V", rate=1000.0))
    path = tmp_path / "ephys.nwb"
    with NWBHDF5IO(str(path), "w") as io:
        io.write(existing)
    dj_nwb.export_session(session, append_to=path)
    with NWBHDF5IO(str(path), "r") as io:
        nwbfile = io.read()
        np.testing.assert_array_equal(nwbfile.acquisition["lfp_stand_in"].data[:], np.arange(100.0))
        assert nwb.camera_object_names("cam_top_rec1").pose_estimation in nwbfile.processing["behavior"].data_interfaces


def test_missing_dandi_subject_field_is_named(lp, smoothed, tmp_path):
    session, _ = smoothed
    with pytest.raises(ValueError, match="species"):
        dj_nwb.export_session(session, tmp_path, subject={"species": None})
    assert list(tmp_path.iterdir()) == []


def test_dandiset_layout_places_the_file_and_its_video(lp, smoothed, tmp_path):
    session, flow = smoothed
    path = dj_nwb.export_session(session, tmp_path, species="Mus musculus", dandi_layout=True)
    assert path.parent == tmp_path / "sub-mouse1"
    video = lp.model.VideoRecording.file_paths(flow["rec"])[0]
    with NWBHDF5IO(str(path), "r") as io:
        stored = io.read().acquisition[nwb.camera_object_names("cam_top_rec1").video].external_file[:]
    assert list(stored) == [f"{path.stem}/{video.name}"]
    assert (path.parent / stored[0]).samefile(video)
    serious = [m for m in nwb.inspect_dandi(path) if m.importance.name in ("CRITICAL", "BEST_PRACTICE_VIOLATION")]
    assert serious == [], [m.message for m in serious]
