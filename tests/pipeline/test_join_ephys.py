"""The lab's question: spikes and paw position of this session, in one DataJoint query.

Under DataJoint 0.14 the published element-array-ephys is activated on the same upstream
Session (element-session) as the pose element; its units are inserted directly (this test is
about the join, not about spike sorting). DataJoint 2.x cannot import element-array-ephys, so
there a unit table of the lab's own, keyed by the same Session, stands in.
"""

from __future__ import annotations

import datetime as dt
import sys
from types import ModuleType

import numpy as np
import pytest

from element_lightning_pose import dj_compat


def activate_ephys(lp, prefix: str):
    from element_array_ephys import ephys_acute as ephys
    from element_array_ephys import probe

    links = ModuleType("ephys_links")
    links.Session = lp.Session
    links.SkullReference = lp.Device  # any lookup: InsertionLocation is not used here
    links.get_ephys_root_data_dir = lambda: [str(lp.model.root_dirs()[0])]
    links.get_session_directory = lambda key: "ephys"
    sys.modules["ephys_links"] = links
    ephys.activate(prefix + "ephys", prefix + "probe", linking_module=links)
    return ephys, probe


def insert_units(ephys, probe, session: dict, spike_times: list[np.ndarray]) -> None:
    """A 4-electrode probe, one recording, one curated clustering, one unit per spike train."""
    probe.ProbeType.insert1({"probe_type": "test-4ch"}, skip_duplicates=True)
    electrodes = [
        {
            "probe_type": "test-4ch",
            "electrode": e,
            "shank": 0,
            "shank_col": 0,
            "shank_row": e,
            "x_coord": 0.0,
            "y_coord": 20.0 * e,
        }
        for e in range(4)
    ]
    probe.ProbeType.Electrode.insert(electrodes, skip_duplicates=True)
    probe.Probe.insert1({"probe": "p1", "probe_type": "test-4ch"}, skip_duplicates=True)
    config = ephys.generate_electrode_config("test-4ch", [{"probe_type": "test-4ch", "electrode": e} for e in range(4)])
    insertion = {**session, "insertion_number": 0}
    ephys.ProbeInsertion.insert1({**insertion, "probe": "p1"})
    ephys.EphysRecording.insert1(
        {
            **insertion,
            **config,
            "acq_software": "SpikeGLX",
            "sampling_rate": 30000.0,
            "recording_datetime": session["session_datetime"],
            "recording_duration": 2.0,
        },
        allow_direct_insert=True,
    )
    ephys.ClusteringParamSet.insert_new_params("kilosort2", "test", {"threshold": 6}, paramset_idx=0)
    task = {**insertion, "paramset_idx": 0}
    ephys.ClusteringTask.insert1({**task, "clustering_output_dir": "ks", "task_mode": "load"})
    ephys.Clustering.insert1({**task, "clustering_time": dt.datetime(2024, 5, 1, 12)}, allow_direct_insert=True)
    curation = {**task, "curation_id": 1}
    ephys.Curation.insert1(
        {
            **curation,
            "curation_time": dt.datetime(2024, 5, 1, 12),
            "curation_output_dir": "ks",
            "quality_control": False,
            "manual_curation": False,
        }
    )
    ephys.CuratedClustering.insert1(curation, allow_direct_insert=True)
    ephys.CuratedClustering.Unit.insert(
        (
            {
                **curation,
                "unit": u,
                **config,
                "probe_type": "test-4ch",
                "electrode": u % 4,
                "cluster_quality_label": "good",
                "spike_count": len(t),
                "spike_times": t,
                "spike_sites": np.full(len(t), u % 4),
            }
            for u, t in enumerate(spike_times)
        ),
        allow_direct_insert=True,
    )
    return ephys.CuratedClustering.Unit


def stand_in_units(lp, prefix: str, session: dict, spike_times: list[np.ndarray]):
    import datajoint as dj

    schema = dj.Schema(prefix + "labephys", context={"Session": lp.Session})

    @schema
    class Unit(dj.Manual):
        definition = f"""
        -> Session
        unit        : {dj_compat.INT32}
        ---
        spike_times : {dj_compat.BLOB}
        """

    Unit.insert({**session, "unit": u, "spike_times": t} for u, t in enumerate(spike_times))
    return Unit


@pytest.mark.parametrize("backend_note", ["spikes and paw position"])
def test_one_query_joins_units_with_pose(lp, flow, schema_prefix, backend_note):
    assert dj_compat.populate(lp.model.PoseEstimation, flow["rec"]).errors == []
    session = {k: flow["rec"][k] for k in lp.Session.primary_key}
    session_row = dj_compat.fetch_dicts(lp.Session & session)[0]
    spikes = [np.sort(np.random.default_rng(u).uniform(0, 2, 50 + u)) for u in range(3)]
    if lp.upstream == "elements":
        ephys, probe = activate_ephys(lp, schema_prefix)
        units = insert_units(ephys, probe, {**session, "session_datetime": session_row["session_datetime"]}, spikes)
    else:
        units = stand_in_units(lp, schema_prefix, session, spikes)
    paw = flow["project"].bodyparts[-1]
    query = (
        units.proj("spike_times") * lp.model.PoseEstimation.BodyPartPosition.proj("x_pos", "y_pos")
        & session
        & {"body_part": paw, "model_name": flow["names"][0]}
    )
    rows = dj_compat.fetch_dicts(query, order_by="unit")
    assert [r["unit"] for r in rows] == [0, 1, 2]
    for row, expected in zip(rows, spikes):
        np.testing.assert_array_equal(row["spike_times"], expected)
        assert len(row["x_pos"]) == 48
    trajectory = lp.model.PoseEstimation.get_trajectory({**flow["rec"], "model_name": flow["names"][0]})
    np.testing.assert_allclose(rows[0]["x_pos"], trajectory.xs((paw, "x"), axis=1, level=(1, 2)).iloc[:, 0])
