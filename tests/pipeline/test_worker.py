"""Workers in separate processes sharing one database (populate with reserve_jobs=True)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess

import pytest

from element_lightning_pose import dj_compat, pipeline
from tests.pipeline.jobs_helpers import TableLock, add_recording, jobs_command, wait_for, worker_command

N_GOOD = 6


def reserved_recordings(lp) -> list[int]:
    """recording_id of every reserved PoseEstimation job (2.x: key columns; 0.14: a key blob)."""
    rows = dj_compat.list_jobs([lp.model.PoseEstimation], "reserved")
    return sorted(int((row["key"] if "key" in row else row)["recording_id"]) for row in rows)


@pytest.fixture(scope="module")
def worker_recordings(lp, lp_root, flow):
    """Six good recordings, one whose video is corrupt, for the first model."""
    root, project = lp_root
    session = {k: flow["rec"][k] for k in lp.Session.primary_key}
    model_name = flow["names"][0]
    videos = root / "worker_videos"
    videos.mkdir()
    good = []
    for i in range(N_GOOD):
        shutil.copy(project.videos[0], videos / f"good{i}.mp4")
        good.append(add_recording(lp, session, 100 + i, f"worker_videos/good{i}.mp4"))
    (videos / "corrupt.mp4").write_bytes(os.urandom(4096))
    bad = add_recording(lp, session, 200, "worker_videos/corrupt.mp4")
    for rec in good + [bad]:
        lp.model.PoseEstimationTask.generate(rec, model_name, batch_size=8)
    return [{**r, "model_name": model_name} for r in good], {**bad, "model_name": model_name}


def test_three_workers_populate_each_key_once_and_record_failures(lp, lp_root, worker_recordings):
    good, bad = worker_recordings
    pending = len(lp.model.PoseEstimationTask - lp.model.PoseEstimation) - 1  # all but the corrupt one
    assert pending >= N_GOOD
    procs = [
        subprocess.Popen(
            worker_command(lp, lp_root, "--once", "--table", "PoseEstimation"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n-----\n".join(outputs)
    populated = [int(out.rsplit("worker done: ", 1)[1].split()[0]) for out in outputs]
    # every pending key exactly once across the three workers: no key was computed twice
    assert sum(populated) == pending, outputs
    assert len(lp.model.PoseEstimationTask - lp.model.PoseEstimation) == 1
    for key in good:
        assert len(lp.model.PoseEstimation & key) == 1
        assert len(lp.model.PoseEstimation.BodyPartPosition & key) == len(lp_root[1].bodyparts)
    assert not lp.model.PoseEstimation & bad
    errors = dj_compat.list_jobs([lp.model.PoseEstimation], "error")
    assert len(errors) == 1
    assert "corrupt.mp4" in errors[0]["error_message"]
    # the jobs command shows it, and clearing makes the key eligible again
    listing = subprocess.run(
        jobs_command(lp, lp_root, "list", "--table", "PoseEstimation"), capture_output=True, text=True, check=True
    )
    assert "corrupt.mp4" in listing.stdout
    subprocess.run(
        jobs_command(lp, lp_root, "clear", "--status", "error", "--table", "PoseEstimation"),
        check=True,
        capture_output=True,
    )
    assert dj_compat.list_jobs([lp.model.PoseEstimation], "error") == []


def test_killed_worker_leaves_no_partial_rows(lp, lp_root, flow, tmp_path_factory):
    """SIGKILL mid-make: no rows; after clearing the stale reservation the key completes.

    The worker must be mid-make when it is killed, on any device: a real lock on the part
    table holds it inside its final transaction (inference done, master row inserted but not
    committed, the part rows waiting), so it cannot finish first however fast it computes.
    """
    from element_lightning_pose.synthetic.projects import make_synthetic_project

    root, _ = lp_root
    n_frames = 300
    long_project = make_synthetic_project(
        root / "projects" / "long", seed=3, image_size=(64, 64), n_labeled=4, n_video_frames=n_frames
    )
    session = {k: flow["rec"][k] for k in lp.Session.primary_key}
    rec = add_recording(lp, session, 300, long_project.videos[0].relative_to(root).as_posix())
    key = {**rec, "model_name": flow["names"][1]}
    lp.model.PoseEstimationTask.generate(rec, key["model_name"], batch_size=4)

    only_this = ("--once", "--table", "PoseEstimation", "--restrict", json.dumps({"recording_id": 300}))
    with TableLock(lp.model.PoseEstimation.BodyPartPosition, blocks="writes") as lock:
        proc = subprocess.Popen(
            worker_command(lp, lp_root, *only_this), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            wait_for(lambda: reserved_recordings(lp) == [300], "it reserved the job", proc)
            wait_for(lambda: lock.waiters() > 0, "it waited for the part table inside make_insert", proc)
            assert proc.poll() is None, "the worker is no longer running: it cannot be killed mid-make"
            assert not lp.model.PoseEstimation & key  # inserted, but not committed
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == -signal.SIGKILL

    assert not lp.model.PoseEstimation & key
    assert not lp.model.PoseEstimation.BodyPartPosition & key
    assert reserved_recordings(lp) == [300]
    # the stale reservation blocks the key until it is cleared
    subprocess.run(worker_command(lp, lp_root, *only_this), check=True, capture_output=True)
    assert not lp.model.PoseEstimation & key
    subprocess.run(
        jobs_command(lp, lp_root, "clear", "--status", "reserved", "--table", "PoseEstimation"),
        check=True,
        capture_output=True,
    )
    assert reserved_recordings(lp) == []
    subprocess.run(worker_command(lp, lp_root, *only_this), check=True, capture_output=True)
    assert len(lp.model.PoseEstimation & key) == 1
    assert (lp.model.PoseEstimation & key).fetch1("n_frames") == n_frames


def test_processes_split_the_cores_between_workers_that_share_the_keys(lp, lp_root, flow):
    """`elp worker --processes 2`: two reserve_jobs workers at cores / 2 threads each, every key once."""
    root, project = lp_root
    session = pipeline.add_session("wsplit", dt.datetime(2024, 7, 1, 9, 0))  # its own subject: 4 keys to restrict to
    videos = root / "split_videos"
    videos.mkdir()
    recordings = []
    for i in range(4):
        shutil.copy(project.videos[0], videos / f"split{i}.mp4")
        recordings.append(add_recording(lp, session, 300 + i, f"split_videos/split{i}.mp4"))
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        run = subprocess.run(
            worker_command(
                lp, lp_root, "--processes", "2", "--table", "RecordingInfo", "--restrict", '{"subject": "wsplit"}'
            ),
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        threads = str(max(1, (os.cpu_count() or 1) // 2))
        lines = run.stdout.splitlines()
        starts = [line for line in lines if ", OMP_NUM_THREADS=" in line]
        assert sorted(line.split()[1] for line in starts) == ["1/2]", "2/2]"], run.stdout
        assert all(line.endswith(f"OMP_NUM_THREADS={threads}") for line in starts), run.stdout
        assert len({line.split()[3] for line in starts}) == 2  # two processes
        done = [int(line.rsplit("worker done: ", 1)[1].split()[0]) for line in lines if "worker done: " in line]
        assert sum(done) == len(recordings) and len(done) == 2, run.stdout  # each key once, by one of them
        assert f"2 workers done at {threads} thread(s) each; exit statuses [0, 0]" in run.stdout
        assert all(len(lp.model.RecordingInfo & dj_compat.match(rec)) == 1 for rec in recordings)
    finally:
        dj_compat.delete_cascading(lp.Subject & {"subject": "wsplit"}, prompt=False)
