"""What the review page keeps between requests: parsed prediction files and prediction jobs.

- **Parsed files.** A prediction file is parsed once (:func:`~element_lightning_pose.engine.
  labeling.traces.read_prediction_table`) and kept while its file and its companion diagnostics
  are unchanged (size and modification time), within a bound on memory: a page that scrolls a
  long video's traces asks for range after range of the same arrays, never for the file.
- **Prediction jobs.** A model predicts a video in a thread of the server, one job at a time
  (the machine's cores are the network's); the request that starts a job waits for it a few
  seconds, so a short video's predictions come back in the same answer and a long one's job
  is polled by the page.
- **Evaluations.** A model's error on the project's labeled frames is kept per model checkpoint
  and label revision: a new label or a retrained model makes it stale, nothing else does.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.inference.models import load_model
from element_lightning_pose.engine.inference.predict import predict_video
from element_lightning_pose.engine.labeling.traces import PredictionTable, companion_of, read_prediction_table

MAX_CACHED_BYTES = 512 * 2**20
MAX_CACHED_FILES = 16
# how long a request that starts a prediction waits for it before answering with a job to poll
SYNC_WAIT_S = 15.0


def _signature(path: Path) -> tuple:
    stats: list[tuple[int, int] | None] = []
    for candidate in (path, companion_of(path)):
        try:
            stat = candidate.stat()
            stats.append((stat.st_size, stat.st_mtime_ns))
        except FileNotFoundError:
            stats.append(None)
    return tuple(stats)


class TableCache:
    """Parsed prediction files, least recently used first out, bounded in bytes and files."""

    def __init__(self, max_bytes: int = MAX_CACHED_BYTES, max_files: int = MAX_CACHED_FILES) -> None:
        self.max_bytes, self.max_files = max_bytes, max_files
        self._tables: OrderedDict[Path, tuple[tuple, PredictionTable]] = OrderedDict()
        self._lock = threading.Lock()
        self.reads = 0  # files parsed: the tests' and the benchmark's count of work done

    def get(self, path: Path) -> PredictionTable:
        key = path.resolve()
        signature = _signature(key)
        with self._lock:
            held = self._tables.get(key)
            if held is not None and held[0] == signature:
                self._tables.move_to_end(key)
                return held[1]
        table = read_prediction_table(key)
        with self._lock:
            self.reads += 1
            self._tables[key] = (signature, table)
            self._tables.move_to_end(key)
            while len(self._tables) > 1 and (
                len(self._tables) > self.max_files or sum(t.nbytes for _, t in self._tables.values()) > self.max_bytes
            ):
                self._tables.popitem(last=False)
        return table


@dataclass
class PredictionJob:
    """One model predicting one video into its model directory's ``predictions/``."""

    id: str
    model: str  # relative to the project
    video: str  # relative to the project
    out_csv: Path
    state: str = "queued"  # queued | running | done | failed
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.id, "model": self.model, "video": self.video, "state": self.state, "error": self.error}


class PredictionJobs:
    """Prediction jobs of the server, run one at a time in threads."""

    def __init__(self) -> None:
        self._jobs: dict[str, PredictionJob] = {}
        self._lock = threading.Lock()
        self._running = threading.Lock()

    def get(self, job_id: str) -> PredictionJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def start(self, model_dir: Path, video: Path, out_csv: Path, *, model: str, video_key: str) -> PredictionJob:
        """The job writing ``out_csv`` (and its diagnostics): the one already under way, or a new one."""
        with self._lock:
            for job in self._jobs.values():
                if job.out_csv == out_csv and job.state in ("queued", "running"):
                    return job
            job = PredictionJob(uuid.uuid4().hex[:12], model, video_key, out_csv)
            self._jobs[job.id] = job
        thread = threading.Thread(target=self._run, args=(job, model_dir, video), daemon=True, name=f"predict-{job.id}")
        thread.start()
        return job

    def _run(self, job: PredictionJob, model_dir: Path, video: Path) -> None:
        with self._running:
            job.state = "running"
            try:
                model = load_model(model_dir)
                predict_video(
                    model, video, out_csv=job.out_csv, diagnostics_csv=companion_of(job.out_csv), progress=False
                )
                job.state = "done"
            except ElpError as exc:
                job.state, job.error = "failed", str(exc)
            except Exception as exc:  # a job's failure is its message; the server goes on
                job.state, job.error = "failed", f"prediction failed ({type(exc).__name__}: {exc})"
            finally:
                job.finished = time.time()
                job.done.set()


@dataclass
class ReviewState:
    tables: TableCache = field(default_factory=TableCache)
    jobs: PredictionJobs = field(default_factory=PredictionJobs)


_STATE_LOCK = threading.Lock()


def review_state(app: FastAPI) -> ReviewState:
    """The review's state of this app (made on first use, so the server needs no wiring for it)."""
    with _STATE_LOCK:
        state = getattr(app.state, "review", None)
        if state is None:
            state = ReviewState()
            app.state.review = state
        return state
