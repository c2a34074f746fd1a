"""A first integration test: declare, insert, fetch and populate on a real server.

Runs under DataJoint 2.x (PostgreSQL or MySQL) and 0.14.x (MariaDB); the compat layer is the
only place that knows which one it is.
"""

from __future__ import annotations

import numpy as np
import pytest

from element_lightning_pose import dj_compat


@pytest.fixture(scope="module")
def toy_schema(dj_connection, schema_prefix):
    import datajoint as dj

    schema = dj_compat.schema(schema_prefix + "toy", connection=dj_connection)

    @schema
    class Recording(dj.Manual):
        definition = f"""
        recording_id : {dj_compat.INT32}
        ---
        fps          : {dj_compat.FLOAT64}
        trace        : {dj_compat.BLOB}
        """

    @schema
    class TraceStats(dj.Computed):
        definition = f"""
        -> Recording
        ---
        mean_value : {dj_compat.FLOAT64}
        squared    : {dj_compat.BLOB}
        """

        def make(self, key):
            trace = (Recording & key).fetch1("trace")
            self.insert1({**key, "mean_value": float(np.mean(trace)), "squared": trace**2})

    return Recording, TraceStats


def test_arrays_round_trip_and_populate_reserves_jobs(toy_schema):
    recording, stats = toy_schema
    rng = np.random.default_rng(0)
    traces = {i: rng.normal(size=(50, 3)).astype(np.float32) for i in range(4)}
    recording.insert({"recording_id": i, "fps": 249.93, "trace": t} for i, t in traces.items())

    fetched = (recording & {"recording_id": 2}).fetch1("trace")
    assert fetched.dtype == np.float32 and fetched.shape == (50, 3)
    np.testing.assert_array_equal(fetched, traces[2])
    assert (recording & {"recording_id": 2}).fetch1("fps") == pytest.approx(249.93, abs=1e-12)

    result = dj_compat.populate(stats, reserve_jobs=True, suppress_errors=True)
    assert result.errors == []
    assert result.success_count == 4
    assert len(stats()) == 4
    for row in dj_compat.fetch_dicts(stats):
        np.testing.assert_allclose(row["squared"], traces[row["recording_id"]] ** 2)
        assert row["mean_value"] == pytest.approx(float(np.mean(traces[row["recording_id"]])), rel=1e-6)
    # nothing left reserved or errored after a clean run
    assert dj_compat.list_jobs([stats]) == []
    # a second populate finds nothing to do
    assert dj_compat.populate(stats, reserve_jobs=True).success_count == 0
