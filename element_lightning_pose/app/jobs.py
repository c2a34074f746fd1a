"""Training jobs of the app: ``elp train`` in a process of its own, followed and cancelled from a page.

A job is one ``python -m element_lightning_pose.cli train PROJECT --model-dir models/<name>
--no-progress --set KEY=VALUE ...``, started from an argument list (never a shell) in a session
of its own, so that cancelling it reaches its data-loading workers too: SIGTERM to the process
group (the engine stops the run where it is, keeps its staging folder as ``models/N.stopped/``
when an epoch was finished, else deletes it, and ``elp train`` exits 143), then SIGKILL after a
grace period. A job whose run was kept can be resumed: the same command with ``--resume``. A CPU has no room for two trainings, so a project runs one job at
a time by default.

Where a job's things are, for a project ``P`` and a model name ``N``::

    P/models/N/                     the model directory, only once training succeeded: the engine
                                    trains into a hidden sibling ``P/models/.N.<pid>.<random>.tmp/``
                                    (where its ``metrics.csv`` grows epoch by epoch) and renames
                                    it into place, so a cancelled or failed job leaves no model
    P/models/N.stopped/             a cancelled run's finished epochs (checkpoints, history), until
                                    a resumed run completes ``P/models/N/``
    P/models/.jobs/N/job.json       the job's record: parameters, process, state, times, exit status
    P/models/.jobs/N/train.log      the process's output (a resumed job's appended)

The record and the log live beside the model directory, not in it, because training replaces
the model directory whole. The server keeps its jobs in memory and in the records, so a page
reload finds them, and a restarted server reads the records back: a process that still runs
is followed again (and can be cancelled); one that is gone without an end recorded is
``finished`` when its model directory was completed after it started, else ``abandoned``.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from element_lightning_pose.engine.atomic import pid_alive, remove_stale_temporaries, write_text_atomic
from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.labeling.rounds import MODELS_DIR
from element_lightning_pose.engine.model_dir import MODEL_JSON, check_replaceable
from element_lightning_pose.engine.safe_paths import check_name
from element_lightning_pose.engine.training.stopping import (
    STOP_SIGNALS,
    STOP_SIGNALS_LEFT_AT_DEFAULT,
    STOPPED_SUFFIX,
    discard_stopped,
    kept_checkpoint,
    stopped_folder,
)

JOBS_DIR = ".jobs"
JOB_FILE = "job.json"
LOG_FILE = "train.log"
# from SIGTERM to SIGKILL: the engine stops at once, then Lightning winds down and the stopped run
# is kept (a rename) or its staging folder deleted; a loaded machine needs more than a few seconds
GRACE_S = 30.0
LOG_TAIL_LINES = 30
RUNNING, FINISHED, FAILED, CANCELLED, ABANDONED = "running", "finished", "failed", "cancelled", "abandoned"
# how a process that a stop signal stopped ends: by the signal (Popen: -N) or by elp train's exit (128 + N)
STOPPED_STATUSES = {
    status for signum in (*STOP_SIGNALS, *STOP_SIGNALS_LEFT_AT_DEFAULT) for status in (-signum, 128 + signum)
}
METRIC_COLUMNS = ("epoch", "step", "elapsed_s", "train_loss", "val_loss", "val_pixel_error", "lr")
# a staging folder of atomic_directory: .<name>.<pid>.<random>.tmp (engine/atomic.py)
_STAGE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


STOPPED_NAME = f"names ending in {STOPPED_SUFFIX} are where stopped runs are kept; choose another name"


def kept_run_problem(model_dir: Path, replace: bool) -> str | None:
    """Why a new job may not train into ``model_dir``: a stopped run of that name is kept there
    (``<model_dir>.stopped``) and the job does not ask to replace it; None where it may."""
    kept = stopped_folder(model_dir)
    if replace or not (kept.exists() or kept.is_symlink()):
        return None
    return (
        f"{MODELS_DIR}/{kept.name} holds the epochs of a stopped run of this name: resume that job, "
        "choose another name, or replace (the kept epochs are then discarded)"
    )


class TrainJobError(ElpError):
    """A training job cannot be started or found; the message names the model or the job."""


@dataclass
class JobRecord:
    """What ``job.json`` keeps of a job (and what a restarted server reads back)."""

    name: str
    overrides: list[str]
    command: list[str]
    started_at: float
    pid: int | None = None
    process_start: str | None = None  # the process's start time (/proc), so a reused pid is not taken for it
    state: str = RUNNING
    ended_at: float | None = None
    returncode: int | None = None
    cancel_requested: bool = False
    replace: bool = False
    fields: dict[str, Any] = field(default_factory=dict)  # the page's form, to show what was asked
    # the epochs of a run that left no model (cancelled, failed): its staging folder is gone
    epochs: list[dict[str, float | None]] = field(default_factory=list)
    stage: str | None = None
    resumed_from: str | None = None  # the kept checkpoint a resumed job went on from

    @classmethod
    def read(cls, path: Path) -> JobRecord | None:
        try:
            data = json.loads(path.read_text())
            known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
            return cls(**known)
        except (OSError, ValueError, TypeError):
            return None


class TrainingJob:
    """One job: its record, its process (when this server started it) and what it shows."""

    def __init__(self, project: Path, record: JobRecord, process: subprocess.Popen | None = None) -> None:
        self.project = project
        self.record = record
        self.process = process
        # re-entrant: a resume holds it while start() lists the jobs, which reads this one's record again
        self.lock = threading.RLock()
        self._seen: tuple[str | None, list[dict[str, float | None]]] = (None, [])  # the latest epochs read
        self._record_read = _file_version(self.job_dir / JOB_FILE)  # the job.json version ``record`` came from

    @property
    def model_dir(self) -> Path:
        return self.project / MODELS_DIR / self.record.name

    @property
    def job_dir(self) -> Path:
        return self.project / MODELS_DIR / JOBS_DIR / self.record.name

    @property
    def resume_checkpoint(self) -> Path | None:
        """The checkpoint a stopped run of this job kept to resume from (in ``models/<name>.stopped/``), if any."""
        return kept_checkpoint(stopped_folder(self.model_dir))

    def save(self) -> None:
        write_text_atomic(self.job_dir / JOB_FILE, json.dumps(asdict(self.record), indent=2))
        self._record_read = _file_version(self.job_dir / JOB_FILE)

    def refresh(self) -> None:
        """Read the record again when another server process has rewritten it (a job it started,
        cancelled, saw end or resumed); while this server's own process of the job runs, the
        record is this server's to write."""
        if self.process is not None and self.record.state == RUNNING:
            return  # until its end is recorded (running() does it once the process is gone)
        version = _file_version(self.job_dir / JOB_FILE)
        if version is None or version == self._record_read:
            return
        with self.lock:
            record = JobRecord.read(self.job_dir / JOB_FILE)
            if record is None or record.name != self.record.name:
                return
            if self.process is not None and record.pid != self.process.pid:
                self.process = None  # another server started the job again (resumed it)
            self.record, self._record_read = record, version

    # ---- state -------------------------------------------------------------------------------
    def running(self) -> bool:
        """Whether the job's process still runs (and records its end when it does not)."""
        if self.record.state != RUNNING:
            return False
        if self.process is not None:
            if self.process.poll() is None:
                return True
            self._ended(self.process.returncode)
            return False
        if self.record.pid is not None and _same_process(self.record.pid, self.record.process_start):
            return True
        # another server's process, gone: its end as that server recorded it, if it did
        self.refresh()
        if self.record.state != RUNNING:
            return False
        self._ended(None)  # gone without its end recorded (its server stopped first)
        return False

    def _ended(self, returncode: int | None) -> None:
        with self.lock:
            if self.record.state != RUNNING:
                return
            record = self.record
            if self.process is not None and not record.cancel_requested:
                # a cancel sent from another server on this project is only in its record
                recorded = JobRecord.read(self.job_dir / JOB_FILE)
                record.cancel_requested = (
                    recorded is not None and recorded.pid == record.pid and recorded.cancel_requested
                )
            record.returncode = returncode
            record.ended_at = time.time()
            # elp train exits 0 only with its model written. A run stopped by a signal exits 128 + its
            # number (143 for SIGTERM), also one stopped once its files were written, which ends with its model in
            # place; the model directory tells then, and where there is no status (a process of
            # an earlier server) or a cancel came after the model was complete
            stopped = returncode is None or record.cancel_requested or returncode in STOPPED_STATUSES
            if returncode == 0 or (stopped and self._model_completed()):
                record.state = FINISHED
            elif record.cancel_requested:
                record.state = CANCELLED
            else:
                record.state = ABANDONED if returncode is None else FAILED
            if record.state != FINISHED:
                record.stage, record.epochs = self._seen
            if self.process is not None:  # this server's child: its group may hold data-loading workers
                _kill_group(self.process.pid, signal.SIGKILL)
            remove_stale_temporaries(self.model_dir)  # a killed run's staging folder
            self.save()

    def _model_completed(self) -> bool:
        info = self.model_dir / MODEL_JSON
        return info.is_file() and info.stat().st_mtime >= self.record.started_at

    def cancel(self, grace_s: float = GRACE_S) -> None:
        """SIGTERM to the job's process group, SIGKILL after ``grace_s`` if it still runs."""
        if not self.running():
            raise TrainJobError(f"job {self.record.name!r}: not running ({self.record.state})")
        self.record.cancel_requested = True
        self.save()
        pid = self.record.pid
        assert pid is not None
        _kill_group(pid, signal.SIGTERM)

        def kill_if_running() -> None:
            if self.running():
                _kill_group(pid, signal.SIGKILL)

        timer = threading.Timer(grace_s, kill_if_running)
        timer.daemon = True
        timer.start()

    def follow(self, every_s: float = 1.0) -> None:
        """Read the run's epochs while its process runs (they vanish with the staging folder of
        a cancelled or failed run, and stay in the record), then record its end."""
        assert self.process is not None
        while True:
            try:
                self.process.wait(every_s)
                break
            except subprocess.TimeoutExpired:
                self._epochs()
        self._epochs()
        self.running()

    def wait(self, timeout: float | None = None) -> str:
        """Wait for the process of a job this server started; its final state."""
        if self.process is not None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.running()
        return self.record.state

    # ---- what the page shows -----------------------------------------------------------------
    def status(self, *, log_lines: int = LOG_TAIL_LINES) -> dict[str, Any]:
        running = self.running()
        record = self.record
        stage, epochs = self._epochs()
        log_tail = _tail(self.job_dir / LOG_FILE, log_lines)
        end = record.ended_at or time.time()
        return {
            "name": record.name,
            "model": f"{MODELS_DIR}/{record.name}",
            "state": record.state,
            "running": running,
            "started_at": record.started_at,
            "ended_at": record.ended_at,
            "elapsed_s": round(end - record.started_at, 1),
            "returncode": record.returncode,
            "overrides": record.overrides,
            "fields": record.fields,
            "stage": stage,
            "epochs": epochs,
            "error": _error_line(log_tail) if record.state == FAILED else None,
            "log_tail": log_tail,
            "resumed": record.resumed_from is not None,
            # a cancelled (or failed, abandoned) run that kept its epochs: POST /api/train/resume
            "resumable": not running and self.resume_checkpoint is not None,
        }

    def _epochs(self) -> tuple[str | None, list[dict[str, float | None]]]:
        """The stage and the epochs of the run so far: its metrics.csv, else what the record kept."""
        stage, path = self._metrics_file()
        if path is None:
            return (self.record.stage, self.record.epochs) if self.record.state != RUNNING else self._seen
        epochs = _read_metrics(path)
        if epochs and self.record.state == RUNNING:
            self._seen = (stage, epochs)
        return stage, epochs

    def _metrics_file(self) -> tuple[str | None, Path | None]:
        """The ``metrics.csv`` written last by the run (the stage it is in, for a two-stage or
        per-view model), in the run's staging folder while it runs, else in the model directory."""
        folders = []
        if self.record.pid is not None:
            folders += [
                p
                for p in self.model_dir.parent.glob(f".{self.record.name}.{self.record.pid}.*.tmp")
                if _stage_match(p.name, self.record.name)
            ]
        if self._model_completed():
            folders.append(self.model_dir)
        newest: tuple[float, str | None, Path] | None = None
        for folder in folders:
            for path in folder.rglob("metrics.csv"):
                relative = path.relative_to(folder).parts[:-1]
                if "logs" in relative:  # Lightning's own CSV log, one row per logging step
                    continue
                try:
                    mtime = path.stat().st_mtime
                except OSError:  # renamed away between the listing and now
                    continue
                names = [_stage_name(part) for part in relative]
                if newest is None or mtime > newest[0]:
                    newest = (mtime, "/".join(names) or None, path)
        return (newest[1], newest[2]) if newest else (None, None)


class TrainingJobs:
    """The training jobs of one app server: started, listed, followed, cancelled."""

    def __init__(self, *, per_project: int = 1, grace_s: float = GRACE_S) -> None:
        self.per_project = per_project
        self.grace_s = grace_s
        self._jobs: dict[tuple[Path, str], TrainingJob] = {}
        self._lock = threading.Lock()

    def start(
        self,
        project: Path,
        name: str,
        overrides: list[str],
        *,
        replace: bool = False,
        fields: dict[str, Any] | None = None,
        resume_from: Path | None = None,
    ) -> TrainingJob:
        """Start ``elp train`` on ``project`` into ``models/<name>`` with ``overrides`` (checked
        ``KEY=VALUE`` strings). An existing model is replaced only when ``replace`` is given.
        ``resume_from``: a kept checkpoint to go on from (:meth:`resume`)."""
        check_name(name, "model name")
        model_dir = project / MODELS_DIR / name
        if name.endswith(STOPPED_SUFFIX):
            raise TrainJobError(f"model {name!r}: {STOPPED_NAME}")
        with self._lock:
            running = [job for job in self.jobs(project) if job.running()]
            if len(running) >= self.per_project:
                names = ", ".join(repr(job.record.name) for job in running)
                raise TrainJobError(
                    f"a training job is running in this project ({names}); wait for it to end or cancel it"
                )
            if model_dir.exists() or model_dir.is_symlink():
                if not replace:
                    raise TrainJobError(
                        f"model {name!r}: {MODELS_DIR}/{name} exists already; choose another name "
                        "(or ask to replace that model)"
                    )
                if model_dir.is_symlink():
                    raise TrainJobError(f"model {name!r}: {MODELS_DIR}/{name} is a link; it is not replaced")
                try:
                    check_replaceable(model_dir)
                except FileExistsError as exc:
                    raise TrainJobError(f"model {name!r}: {exc}") from None
            if resume_from is None:
                problem = kept_run_problem(model_dir, replace)
                if problem:
                    raise TrainJobError(f"model {name!r}: {problem}")
                discard_stopped(model_dir)  # asked to replace: the kept epochs go
            command = [
                sys.executable,
                "-m",
                "element_lightning_pose.cli",
                "train",
                str(project),
                "--model-dir",
                str(model_dir),
                "--no-progress",
            ]
            if resume_from is not None:
                command += ["--resume", str(resume_from)]
            for override in overrides:
                command += ["--set", override]
            record = JobRecord(
                name,
                list(overrides),
                command,
                time.time(),
                replace=replace,
                fields=fields or {},
                resumed_from=str(resume_from) if resume_from is not None else None,
            )
            job = TrainingJob(project, record)
            job.job_dir.mkdir(parents=True, exist_ok=True)
            with open(job.job_dir / LOG_FILE, "ab" if resume_from is not None else "wb") as log:
                job.process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=project,
                    start_new_session=True,  # its own process group: a cancel reaches its workers
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            record.pid = job.process.pid
            record.process_start = _process_start(job.process.pid)
            job.save()
            self._jobs[(project, name)] = job
        # follows its epochs and records its end as soon as it comes, whether a page polls or not
        threading.Thread(target=job.follow, name=f"elp-train-{name}", daemon=True).start()
        return job

    def jobs(self, project: Path) -> list[TrainingJob]:
        """The project's jobs: this server's, and those another server (an earlier one, or one
        running beside it) recorded, as last recorded, newest first."""
        folder = project / MODELS_DIR / JOBS_DIR
        if folder.is_dir() and not folder.is_symlink():
            for path in folder.iterdir():
                key = (project, path.name)
                if key in self._jobs:
                    self._jobs[key].refresh()  # another server may have ended, cancelled or resumed it
                    continue
                if path.is_symlink() or not (path / JOB_FILE).is_file():
                    continue  # a link is not a record this app wrote
                record = JobRecord.read(path / JOB_FILE)
                if record is not None and record.name == path.name:
                    self._jobs[key] = TrainingJob(project, record)
        found = [job for (where, _), job in self._jobs.items() if where == project]
        return sorted(found, key=lambda job: job.record.started_at, reverse=True)

    def get(self, project: Path, name: str) -> TrainingJob:
        for job in self.jobs(project):
            if job.record.name == name:
                return job
        raise TrainJobError(f"job {name!r}: no training job of that name in this project")

    def cancel(self, project: Path, name: str) -> TrainingJob:
        job = self.get(project, name)
        job.cancel(self.grace_s)
        return job

    def resume(self, project: Path, name: str) -> TrainingJob:
        """Start job ``name`` again from the epochs its stopped run kept, with its parameters."""
        job = self.get(project, name)
        if job.running():
            raise TrainJobError(f"job {name!r}: still running; there is nothing to resume")
        with job.lock:  # its end is recorded (and saved) before the resumed job's record replaces it
            return self._resume(project, job)

    def _resume(self, project: Path, job: TrainingJob) -> TrainingJob:
        name = job.record.name
        checkpoint = job.resume_checkpoint
        if checkpoint is None:
            raise TrainJobError(
                f"job {name!r}: nothing of its run was kept to resume from ({MODELS_DIR}/{stopped_folder(job.model_dir).name}/ "
                "holds no checkpoint: it was stopped before its first epoch ended, or a later run completed the model)"
            )
        record = job.record
        return self.start(
            project, name, record.overrides, replace=record.replace, fields=record.fields, resume_from=checkpoint
        )

    def cancel_all(self, timeout: float | None = None) -> None:
        """Cancel every job this server started that still runs, and wait for them to end
        (a server that stops its jobs with it; by default they outlive it)."""
        started = [job for job in self._jobs.values() if job.process is not None and job.running()]
        for job in started:
            try:
                job.cancel(self.grace_s)
            except TrainJobError:  # it ended in the meantime
                pass
        for job in started:
            job.wait(timeout)


def _file_version(path: Path) -> tuple[int, int] | None:
    """What tells one version of a file from the next (records are replaced by a rename)."""
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the job leads its own session: its group id is its pid
    except (ProcessLookupError, PermissionError):
        pass


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, /proc), None where unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()[19]  # field 22, counted after the command name


def _same_process(pid: int, started: str | None) -> bool:
    if not pid_alive(pid):
        return False
    now = _process_start(pid)
    return started is None or now is None or now == started


def _stage_match(folder: str, name: str) -> bool:
    match = _STAGE.match(folder)
    return match is not None and match["name"] == name


def _stage_name(part: str) -> str:
    match = _STAGE.match(part)
    return match["name"] if match else part


def _read_metrics(path: Path) -> list[dict[str, float | None]]:
    """The epochs of a ``metrics.csv`` (the columns the page plots; empty cells are None)."""
    try:
        with open(path, newline="") as stream:
            rows = list(csv.DictReader(stream))
    except OSError:
        return []
    epochs = []
    for row in rows:
        epochs.append({name: _number(row.get(name)) for name in METRIC_COLUMNS})
    return epochs


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is None or value == value else None  # NaN: None (JSON has no NaN)


def _tail(path: Path, lines: int) -> list[str]:
    try:
        with open(path, "rb") as stream:
            stream.seek(0, os.SEEK_END)
            size = stream.tell()
            stream.seek(max(0, size - 64 * 1024))
            text = stream.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def _error_line(log_tail: list[str]) -> str | None:
    """The one-line error ``elp`` printed (``elp train: error: ...``), else the log's last line."""
    for line in reversed(log_tail):
        if line.startswith("elp train: error:"):
            return line.removeprefix("elp train: error:").strip()
    return log_tail[-1] if log_tail else None
