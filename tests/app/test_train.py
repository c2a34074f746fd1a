"""The training page's API: presets and advice, parameters checked per field, training jobs run as
``elp train`` processes (followed epoch by epoch, cancelled), the models with their evaluation.

Each job is a real ``elp train`` process on a tiny synthetic project (48x64 frames, a 64x64
resnet18 from random weights): about ten seconds of Python and torch start-up, then a fraction
of a second per epoch.
"""

from __future__ import annotations

import os
import stat
import threading
import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from element_lightning_pose.app.jobs import JOB_FILE, JOBS_DIR, LOG_FILE  # noqa: E402
from element_lightning_pose.app.server import create_app  # noqa: E402
from element_lightning_pose.app.settings import AppSettings  # noqa: E402
from element_lightning_pose.engine.labeling.rounds import EVALUATION_FILE  # noqa: E402
from element_lightning_pose.synthetic.projects import make_synthetic_project  # noqa: E402

CHANGE = {"X-ELP-Request": "1"}
LOCAL = "http://127.0.0.1:8765"
P = {"p": "0:lab/mouse"}
# a network that trains in a fraction of a second per epoch (tests/engine/conftest.py's TINY_CONFIG)
TINY_FIELDS = {"backbone": "resnet18", "image_resize": "64x64", "max_epochs": "1", "model_type": "heatmap", "seed": "0"}
TINY_EXTRA = "model.pretrained=false\ntraining.unfreeze_epoch=0\ntraining.num_workers=0"
JOB_TIMEOUT_S = 180


@pytest.fixture
def lab(tmp_path):
    """A root with one tiny synthetic project (lab/mouse); every job still running at the end is cancelled."""
    root = tmp_path / "root"
    project = make_synthetic_project(root / "lab" / "mouse", image_size=(48, 64), n_labeled=6, n_video_frames=30)
    settings, _ = AppSettings.build([root])
    app = create_app(settings)
    client = TestClient(app, base_url=LOCAL)
    yield client, project
    jobs = getattr(app.state, "training_jobs", None)
    if jobs is not None:
        jobs.cancel_all(timeout=30)


def start(client, name, *, fields=None, extra=TINY_EXTRA, **more):
    body = {"name": name, "preset": "default", "fields": {**TINY_FIELDS, **(fields or {})}, "extra": extra, **more}
    return client.post("/api/train/start", params=P, json=body, headers=CHANGE)


def wait_for(client, name, done, timeout=JOB_TIMEOUT_S):
    """Poll the job as the page does until ``done(status)``; the last status."""
    deadline = time.monotonic() + timeout
    while True:
        status = client.get("/api/train/job", params={**P, "name": name}).json()
        if done(status):
            return status
        assert time.monotonic() < deadline, (
            f"job {name} still {status['state']} after {timeout} s: {status['log_tail']}"
        )
        time.sleep(0.3)


def test_presets_carry_the_engines_advice_for_the_project(lab):
    client, _ = lab
    answer = client.get("/api/train/presets", params=P).json()
    assert {p["name"] for p in answer["presets"]} >= {"default", "small_animal_crop_zoom"}
    advice = answer["advice"]
    assert advice["frame_size"] == [48, 64] and "recommended:" in advice["summary"]
    assert [p["name"] for p in answer["presets"] if p["recommended"]] == [advice["preset"]]
    assert "resnet18" in answer["choices"]["backbone"] and answer["defaults"]["image_resize"] == "256x256"


def test_a_tiny_training_runs_to_the_end_and_its_model_is_evaluated(lab):
    client, project = lab
    answer = start(client, "round1")
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "running"
    status = wait_for(client, "round1", lambda s: not s["running"])
    assert status["state"] == "finished", status["log_tail"]
    assert [e["epoch"] for e in status["epochs"]] == [0]
    epoch = status["epochs"][0]
    assert epoch["train_loss"] > 0 and epoch["val_loss"] > 0 and epoch["val_pixel_error"] > 0
    assert any("trained 1 epoch(s)" in line for line in status["log_tail"])
    assert (project.root / "models" / JOBS_DIR / "round1" / LOG_FILE).is_file()

    listed = client.get("/api/train/models", params=P).json()["models"]
    assert [m["name"] for m in listed] == ["round1"]
    assert listed[0]["evaluation"] is None  # computed on demand, once
    assert listed[0]["n_train"] + listed[0]["n_val"] + listed[0]["n_test"] == 6
    evaluated = client.post("/api/train/evaluate", params={**P, "model": "round1"}, headers=CHANGE)
    assert evaluated.status_code == 200, evaluated.text
    evaluation = evaluated.json()["evaluation"]
    assert evaluation["current"] and evaluation["n_train"] == listed[0]["n_train"]
    train = evaluation["splits"]["train"]
    assert train["frames"] == listed[0]["n_train"] and train["mean_px"] > 0
    assert train["median_px"] <= train["p95_px"]
    cache = project.root / "models" / "round1" / EVALUATION_FILE
    assert stat.S_IMODE(cache.stat().st_mode) == 0o666 & ~_umask()
    cached_at = cache.stat().st_mtime_ns
    again = client.get("/api/train/models", params=P).json()["models"][0]["evaluation"]
    assert again["current"] and again["splits"] == evaluation["splits"]
    client.post("/api/train/evaluate", params={**P, "model": "round1"}, headers=CHANGE)
    assert cache.stat().st_mtime_ns == cached_at  # not computed twice

    # a relabeled project makes the evaluation stale: the next round is measured on today's labels
    queue = client.get("/api/labels", params=P).json()
    edit = {"bodypart": queue["bodyparts"][0], "x": 3.0, "y": 4.0}
    saved = client.post(
        "/api/labels/frame",
        params=P,
        json={"image": queue["frames"][0]["image"], "base_revision": queue["revision"], "edits": [edit]},
        headers=CHANGE,
    )
    assert saved.status_code == 200
    assert client.get("/api/train/models", params=P).json()["models"][0]["evaluation"]["current"] is False

    # the model exists now: the same name is refused unless the form asks to replace it
    refused = start(client, "round1")
    assert refused.status_code == 400 and "exists already" in refused.json()["fields"]["name"]
    assert (project.root / "models" / "round1" / "model.json").is_file()


def _kept_epochs(models, name, timeout=JOB_TIMEOUT_S):
    """Wait until the job's run has written an epoch's checkpoint into its staging folder."""
    deadline = time.monotonic() + timeout
    while not any(models.glob(f".{name}.*.tmp/checkpoints/last.ckpt")):
        assert time.monotonic() < deadline, f"no checkpoint of job {name} within {timeout} s"
        time.sleep(0.2)


def test_cancel_stops_a_running_job_and_leaves_no_model_but_its_epochs_to_resume(lab):
    client, project = lab
    models = project.root / "models"
    assert start(client, "long", fields={"max_epochs": "100000"}).status_code == 200
    # epochs are reported while the job runs (the engine rewrites metrics.csv after each one)
    running = wait_for(client, "long", lambda s: len(s["epochs"]) >= 1 or not s["running"])
    assert running["running"], running["log_tail"]
    assert not running["resumable"]
    busy = start(client, "other")
    assert busy.status_code == 400 and "is running" in busy.json()["error"]

    _kept_epochs(models, "long")
    cancelled = client.post("/api/train/cancel", params={**P, "name": "long"}, headers=CHANGE)
    assert cancelled.status_code == 200
    status = wait_for(client, "long", lambda s: not s["running"], timeout=60)
    assert status["state"] == "cancelled"
    assert status["returncode"] == 143, status["log_tail"]  # elp train says it was stopped
    assert len(status["epochs"]) >= len(running["epochs"])  # what it trained stays on the page
    # no model and no staging folder, but the finished epochs, kept to resume from
    assert sorted(p.name for p in models.iterdir()) == [JOBS_DIR, "long.stopped"]
    assert status["resumable"] and any("kept in" in line for line in status["log_tail"])
    assert client.get("/api/train/models", params=P).json()["models"] == []
    again = client.post("/api/train/cancel", params={**P, "name": "long"}, headers=CHANGE)
    assert again.status_code == 400 and "not running" in again.json()["error"]

    # the job list survives a server restart (read back from its record)
    settings, _ = AppSettings.build([project.root.parent.parent])
    restarted = TestClient(create_app(settings), base_url=LOCAL)
    jobs = restarted.get("/api/train/jobs", params=P).json()["jobs"]
    assert [(j["name"], j["state"], j["running"], j["resumable"]) for j in jobs] == [("long", "cancelled", False, True)]
    assert jobs[0]["epochs"] == status["epochs"]
    assert (models / JOBS_DIR / "long" / JOB_FILE).is_file()

    # a new job of that name would not know of the kept epochs: refused unless asked to replace them
    refused = start(restarted, "long")
    assert refused.status_code == 400 and "holds the epochs of a stopped run" in refused.json()["fields"]["name"]
    assert start(restarted, "other.stopped").json()["fields"]["name"].startswith("names ending in .stopped")

    # resumed: the same parameters from the kept checkpoint, its epochs carried on, then cancelled again
    kept = len(jobs[0]["epochs"])
    resumed = restarted.post("/api/train/resume", params={**P, "name": "long"}, headers=CHANGE)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["running"] and resumed.json()["resumed"] and not resumed.json()["resumable"]
    more = wait_for(restarted, "long", lambda s: len(s["epochs"]) > kept + 1 or not s["running"])
    assert more["running"], more["log_tail"]
    assert [e["epoch"] for e in more["epochs"]] == list(range(len(more["epochs"])))
    restarted.post("/api/train/cancel", params={**P, "name": "long"}, headers=CHANGE)
    wait_for(restarted, "long", lambda s: not s["running"], timeout=60)
    # one log for the job: the resumed run's output follows the first run's
    assert (models / JOBS_DIR / "long" / LOG_FILE).read_text().count("training stopped by SIGTERM") == 2
    unknown = restarted.post("/api/train/resume", params={**P, "name": "other"}, headers=CHANGE)
    assert unknown.status_code == 400


def test_resume_needs_a_kept_run(lab):
    client, project = lab
    assert start(client, "short").status_code == 200
    done = wait_for(client, "short", lambda s: not s["running"])
    assert done["state"] == "finished" and not done["resumable"]
    refused = client.post("/api/train/resume", params={**P, "name": "short"}, headers=CHANGE)
    assert refused.status_code == 400
    assert "nothing of its run was kept to resume from (models/short.stopped/" in refused.json()["error"]


def test_bad_parameters_give_per_field_errors_and_start_nothing(lab):
    client, project = lab
    bad = {"image_resize": "65x64", "max_epochs": "many", "backbone": "vgg"}
    extra = TINY_EXTRA + "\nmodel.colour=blue"
    checked = client.post(
        "/api/train/validate",
        params=P,
        json={"name": "m", "fields": {**TINY_FIELDS, **bad}, "extra": extra},
        headers=CHANGE,
    ).json()
    assert not checked["ok"]
    fields = checked["fields"]
    assert set(fields) == {"image_resize", "max_epochs", "backbone", "extra"}
    assert "multiples of 32" in fields["image_resize"] and "'many'" in fields["max_epochs"]
    assert "model.colour" in fields["extra"]
    answer = start(client, "m", fields=bad, extra=extra)
    assert answer.status_code == 400 and set(answer.json()["fields"]) == set(fields)
    assert start(client, "m", extra="not an assignment").json()["fields"] == {
        "extra": "line 'not an assignment': expected KEY=VALUE, e.g. training.batch_size=4"
    }
    assert start(client, "m", fields={"image_resize": "big"}).json()["fields"]["image_resize"].startswith("give height")
    good = client.post(
        "/api/train/validate", params=P, json={"name": "m", "fields": TINY_FIELDS, "extra": TINY_EXTRA}, headers=CHANGE
    ).json()
    assert good["ok"] and "training.max_epochs=1" in good["overrides"] and good["advice"]["summary"]
    assert not (project.root / "models").exists()  # nothing started, nothing written
    assert client.get("/api/train/jobs", params=P).json()["jobs"] == []


def test_a_model_name_outside_the_project_is_refused(lab, tmp_path):
    client, project = lab
    for name in ("../escape", "a/b", ".hidden", "", "/abs"):
        answer = start(client, name)
        assert answer.status_code == 400 and "model name" in answer.json()["fields"]["name"], name
    assert not (project.root / "models").exists()
    # a models/ folder that links outside the app's roots
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, project.root / "models")
    answer = start(client, "fine")
    assert answer.status_code == 403 and "outside" in answer.json()["error"]
    assert list(outside.iterdir()) == []
    (outside / "m").mkdir()  # nothing there is listed, read or evaluated
    assert client.get("/api/train/models", params=P).status_code == 403
    assert client.get("/api/train/jobs", params=P).status_code == 403
    unknown = client.post("/api/train/evaluate", params={**P, "model": "../mouse"}, headers=CHANGE)
    assert unknown.status_code == 403


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_job_another_server_records_is_shown_as_it_last_recorded_it(tmp_path):
    """Two app servers on one project: each shows the other's job as the other last recorded it.

    One read a job's record once and kept it: it took the other's cancelled job for abandoned
    (and wrote that over the other's record), and never saw it resumed until it restarted.
    """
    import subprocess

    from element_lightning_pose.app.jobs import CANCELLED, RUNNING, JobRecord, TrainingJob, TrainingJobs, _process_start

    project = tmp_path / "project"
    ours = TrainingJobs()  # this server
    process = subprocess.Popen(["sleep", "60"])  # the other server's training process
    try:
        theirs = TrainingJob(project, JobRecord("m", [], ["elp", "train"], time.time(), pid=process.pid))
        theirs.record.process_start = _process_start(process.pid)
        theirs.job_dir.mkdir(parents=True)
        theirs.save()
        assert [job.status()["state"] for job in ours.jobs(project)] == [RUNNING]

        # the other server cancels it; its run kept an epoch
        process.kill()
        process.wait()
        theirs.record.state, theirs.record.cancel_requested, theirs.record.ended_at = CANCELLED, True, time.time()
        theirs.record.epochs = [{"epoch": 0.0, "train_loss": 1.0}]
        (project / "models" / "m.stopped" / "checkpoints").mkdir(parents=True)
        (project / "models" / "m.stopped" / "checkpoints" / "last.ckpt").write_bytes(b"kept")
        theirs.save()
        shown = ours.get(project, "m").status()
        assert shown["state"] == CANCELLED and shown["resumable"] and shown["epochs"] == theirs.record.epochs
        assert JobRecord.read(theirs.job_dir / JOB_FILE).state == CANCELLED  # not overwritten as abandoned
    finally:
        process.kill()
        process.wait()

    # the other server resumes it
    resumed = subprocess.Popen(["sleep", "60"])
    try:
        again = JobRecord("m", [], ["elp", "train", "--resume"], time.time(), pid=resumed.pid)
        again.process_start, again.resumed_from = _process_start(resumed.pid), "models/m.stopped/checkpoints/last.ckpt"
        TrainingJob(project, again).save()
        shown = ours.get(project, "m").status()
        assert shown["state"] == RUNNING and shown["running"] and shown["resumed"] and not shown["resumable"]
        # a resume holds the job's lock while start() lists the jobs, which reads its record again
        listed = []

        def resume_like() -> None:
            with ours.get(project, "m").lock:
                TrainingJob(project, again).save()  # the other server rewrites it meanwhile
                listed.append(ours.get(project, "m").status()["running"])

        worker = threading.Thread(target=resume_like, daemon=True)  # a deadlock must not hang the suite
        worker.start()
        worker.join(30)
        assert not worker.is_alive() and listed == [True]
    finally:
        resumed.kill()
        resumed.wait()


def test_a_cancel_sent_from_another_server_ends_the_job_as_cancelled(tmp_path):
    """The server running a job records it cancelled when another server cancelled it.

    It read the other server's cancel nowhere, so it took the stopped process for a failed run
    and wrote that over the other's record.
    """
    import subprocess

    from element_lightning_pose.app.jobs import CANCELLED, JobRecord, TrainingJob, _process_start

    project = tmp_path / "project"
    # its own process group, as the app starts training: the cancel signals the whole group
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        record = JobRecord("m", [], ["elp", "train"], time.time(), pid=process.pid)
        record.process_start = _process_start(process.pid)
        ours = TrainingJob(project, record, process)  # this server's job
        ours.job_dir.mkdir(parents=True)
        ours.save()
        theirs = TrainingJob(project, JobRecord.read(ours.job_dir / JOB_FILE))  # the other server's view
        theirs.cancel(grace_s=30)
        assert ours.wait(timeout=30) == CANCELLED
        assert ours.record.returncode == -15
        assert JobRecord.read(ours.job_dir / JOB_FILE).state == CANCELLED
        assert theirs.status()["state"] == CANCELLED
    finally:
        process.kill()
        process.wait()


def test_a_run_stopped_once_its_model_is_in_place_is_finished(tmp_path):
    """elp train stopped by a signal (not the app's cancel) after its model was renamed into place
    exits 143 with a complete model: the job is finished, not failed."""
    import subprocess

    from element_lightning_pose.app.jobs import FINISHED, JobRecord, TrainingJob

    project = tmp_path / "project"
    process = subprocess.Popen(["sh", "-c", "sleep 0.5; exit 143"], start_new_session=True)
    # started a second before its model is written: the file system stamps files from a coarser
    # clock than time.time(), so a model.json written at once could look older than the job
    started_at = time.time() - 1.0
    job = TrainingJob(project, JobRecord("m", [], ["elp", "train"], started_at, pid=process.pid), process)
    job.job_dir.mkdir(parents=True)
    job.model_dir.mkdir(parents=True)
    (job.model_dir / "model.json").write_text("{}")  # the run's model, in place
    assert job.wait(timeout=30) == FINISHED and job.record.returncode == 143
