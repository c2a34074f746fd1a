"""The lab's question in 3D: spikes and the snout's 3D position of this session, in one query.

As in test_join_ephys.py: under DataJoint 0.14 the published element-array-ephys is activated
on the same upstream Session as the pose element and its units are inserted directly; under
DataJoint 2.x (which cannot import element-array-ephys) a unit table of the lab's own, keyed by
the same Session, stands in. The 3D pose comes from a tiny synthetic rig (load-mode 2D
sources, see rig_helpers.py) in a session of its own.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from element_lightning_pose import dj_compat
from tests.pipeline.rig_helpers import add_sources, build_rig
from tests.pipeline.test_join_ephys import activate_ephys, insert_units, stand_in_units

N_RIG = 20


def test_one_query_joins_units_with_3d_pose(lp, schema_prefix):
    rig_data = build_rig(lp, "rig3dj", n_rig=N_RIG, lead=0, first_recording=401, when=dt.datetime(2024, 6, 2, 9, 0))
    add_sources(lp, rig_data, "rig_join_truth", seed=40)
    lp.multicam.CameraCalibration.insert_from_file(
        "rig3dj_true", rig_data["calibration"], units="mm", reference_frame="arena: origin at the floor centre, z up"
    )
    views = {name: rec["recording_id"] for name, rec in rig_data["recs"].items()}
    rig_key = lp.multicam.MultiCameraRecording.insert_rig(rig_data["session"], 1, "rig3dj_true", views)
    idx = lp.multicam.TriangulationParamSet.insert_new_params("3D smoother", {"method": "smoother"})
    task = lp.multicam.TriangulationTask.create(rig_key, idx, "rig_join_truth")
    assert dj_compat.populate(lp.multicam.Triangulation, task).errors == []

    session = {k: rig_key[k] for k in lp.Session.primary_key}
    session_row = dj_compat.fetch_dicts(lp.Session & session)[0]
    spikes = [np.sort(np.random.default_rng(10 + u).uniform(0, 2, 40 + u)) for u in range(3)]
    if lp.upstream == "elements":
        ephys, probe = activate_ephys(lp, schema_prefix)
        units = insert_units(ephys, probe, {**session, "session_datetime": session_row["session_datetime"]}, spikes)
    else:
        units = stand_in_units(lp, schema_prefix, session, spikes)
    query = (
        units.proj("spike_times") * lp.multicam.Triangulation.BodyPartPosition3D.proj("x", "y", "z", "z_var")
        & session
        & {"body_part": "snout"}
    )
    rows = dj_compat.fetch_dicts(query, order_by="unit")
    assert [r["unit"] for r in rows] == [0, 1, 2]
    trajectory = lp.multicam.Triangulation.get_trajectory(task)
    for row, expected in zip(rows, spikes):
        np.testing.assert_array_equal(row["spike_times"], expected)
        assert len(row["z"]) == N_RIG
        np.testing.assert_allclose(row["z"], trajectory[("snout", "z")])
    # the join gives the 3D position, close to the synthetic ground truth
    snout = rig_data["body"].bodyparts.index("snout")
    estimate = np.stack([rows[0]["x"], rows[0]["y"], rows[0]["z"]], axis=-1)
    assert np.median(np.linalg.norm(estimate - rig_data["truth"][:, snout], axis=-1)) < 2.0
