"""`elp jobs list|clear` and workers that meet each other's keys, with real worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from element_lightning_pose import dj_compat
from tests.pipeline.conftest import lp_session
from tests.pipeline.jobs_helpers import TableLock, add_recording, jobs_command, reservations, wait_for, worker_command


def error_recordings(lp) -> list[int]:
    return sorted(int(row["key"]["recording_id"]) for row in dj_compat.list_jobs([lp.model.RecordingInfo], "error"))


@pytest.fixture(scope="module")
def failing_recordings(lp, lp_root):
    """Four recordings whose videos are corrupt: RecordingInfo leaves an error job for each."""
    root, _ = lp_root
    session = lp_session(lp)
    lp.Device.insert1({"device": "cam_top", "device_description": "top camera"}, skip_duplicates=True)
    (root / "jobs_bad").mkdir(exist_ok=True)
    ids = [700, 701, 702, 703]
    for rec_id in ids:
        (root / "jobs_bad" / f"bad{rec_id}.mp4").write_bytes(os.urandom(2048))
        add_recording(lp, session, rec_id, f"jobs_bad/bad{rec_id}.mp4")
    result = dj_compat.populate(
        lp.model.RecordingInfo, "recording_id >= 700 and recording_id <= 703", reserve_jobs=True, suppress_errors=True
    )
    assert len(result.errors) == len(ids)
    assert error_recordings(lp) == ids
    return ids


def test_clear_removes_only_the_error_jobs_the_restriction_matches(lp, lp_root, failing_recordings):
    clear = jobs_command(lp, lp_root, "clear", "--status", "error")
    done = subprocess.run(
        clear + ["--table", "RecordingInfo", "--restrict", json.dumps({"recording_id": 701})],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "cleared 1 error job(s)" in done.stdout
    assert error_recordings(lp) == [700, 702, 703]
    # a restriction on an attribute RecordingInfo's keys lack matches none of its jobs
    done = subprocess.run(
        clear + ["--restrict", json.dumps({"model_name": "no_such_model"})], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert error_recordings(lp) == [700, 702, 703]
    # an attribute no table has is an error, and nothing is cleared
    done = subprocess.run(clear + ["--restrict", json.dumps({"recordng_id": 700})], capture_output=True, text=True)
    assert done.returncode == 2
    assert "recordng_id" in done.stderr and "Traceback" not in done.stderr
    assert error_recordings(lp) == [700, 702, 703]
    # the API takes the same restrictions (all must match)
    removed = dj_compat.clear_jobs([lp.model.RecordingInfo], "error", [{"recording_id": 702}, {"subject": "mouse1"}])
    assert removed.removed == 1
    assert error_recordings(lp) == [700, 703]
    listing = subprocess.run(
        jobs_command(lp, lp_root, "list", "--restrict", json.dumps({"recording_id": 703})),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "bad703.mp4" in listing.stdout and "bad700.mp4" not in listing.stdout


def test_live_reservation_needs_force_and_a_duplicate_does_not_kill_the_worker(lp, lp_root, flow):
    """The scenario of issue 13 defect 11, made deterministic with a real table lock and SIGSTOP.

    Worker A reserves a key and waits (a lock on a table its make_fetch reads); it is stopped.
    Its reservation cannot be cleared without --force while it lives. Forced, worker B computes
    the key; A, continued, meets the duplicate: it logs it, exits 0 and records no error.
    """
    import datetime as dt

    from element_lightning_pose import pipeline

    root, project = lp_root
    # a session of its own: the session that other tests export and join stays as they left it
    session = pipeline.add_session("jobs", dt.datetime(2024, 5, 2, 9, 0), species="Mus musculus")
    session = {k: session[k] for k in lp.Session.primary_key}
    rec = add_recording(lp, session, 600, project.videos[0].relative_to(root).as_posix())
    key = {**rec, "model_name": flow["names"][0]}
    lp.model.PoseEstimationTask.generate(rec, key["model_name"], batch_size=8)
    table = lp.model.PoseEstimation
    only_this = ("--once", "--table", "PoseEstimation", "--restrict", json.dumps({"recording_id": 600}))
    clear = jobs_command(
        lp,
        lp_root,
        "clear",
        "--status",
        "reserved",
        "--table",
        "PoseEstimation",
        "--restrict",
        json.dumps({"recording_id": 600}),
    )

    # Hold A before it reserves (its jobs insert waits) until its schemas are active; then
    # let it reserve, and hold it in make_fetch, reading a locked table outside any transaction.
    gate = TableLock(dj_compat.jobs_table(table), blocks="writes").__enter__()
    lock = TableLock(lp.model.VideoRecording.File, blocks="all")
    first = subprocess.Popen(
        worker_command(lp, lp_root, *only_this), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for(lambda: gate.waiters() > 0, "it was about to reserve", first)
        lock.__enter__()
        gate.release()
        wait_for(lambda: [r["pid"] for r in reservations(lp, table, 600)] == [first.pid], "it reserved the key", first)
        wait_for(lambda: lock.waiters() > 0, "it waited in make_fetch", first)
        first.send_signal(signal.SIGSTOP)
        # stopped in a SELECT outside any transaction: it holds no lock that B would meet, and
        # other processes may load the table's heading again (PostgreSQL reads it for that)
        lock.release()
        # the list shows who holds the reservation, and that it is alive
        listing = subprocess.run(
            jobs_command(lp, lp_root, "list", "--table", "PoseEstimation"), capture_output=True, text=True, check=True
        )
        line = next(ln for ln in listing.stdout.splitlines() if "'recording_id': 600" in ln)
        assert f":{first.pid} (alive)" in line and "reserved" in line
        (row,) = reservations(lp, table, 600)
        assert row["alive"] is True and row["host"] and row["age_s"] >= 0
        # a live reservation is kept without --force
        kept = subprocess.run(clear, capture_output=True, text=True)
        assert kept.returncode == 1
        assert "--force" in kept.stderr and str(first.pid) in kept.stderr
        assert len(reservations(lp, table, 600)) == 1
        forced = subprocess.run(clear + ["--force"], capture_output=True, text=True)
        assert forced.returncode == 0, forced.stderr
        assert reservations(lp, table, 600) == []
        # a second worker now computes the key
        second = subprocess.run(worker_command(lp, lp_root, *only_this), capture_output=True, text=True)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "worker done: 1 key(s) populated" in second.stdout
        first.send_signal(signal.SIGCONT)
        out = first.communicate(timeout=300)[0]
    finally:
        gate.release()
        lock.release()
        if first.poll() is None:
            first.send_signal(signal.SIGCONT)
            first.kill()
            first.wait()
    assert first.returncode == 0, out
    assert "populated by another worker" in out, out
    assert "Traceback" not in out
    assert len(table & key) == 1
    assert [r for r in dj_compat.list_jobs([table], "error") if int(r["key"]["recording_id"]) == 600] == []
