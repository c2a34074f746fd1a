"""Load-mode pose on one real video, without a network: Model rows whose tasks read a predictions
CSV the test writes, sessions of any subject with one recording and its RecordingInfo.

For tests that need ``PoseEstimation`` rows of chosen sessions cheaply (path containment, NWB
ownership). Every task a test makes must be populated or deleted by its end (the worker tests
count pending tasks of the shared schema).
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from element_lightning_pose import dj_compat, pipeline
from element_lightning_pose.dj_compat import fetch_keys
from element_lightning_pose.engine.data.keypoints import write_predictions

BODYPARTS = ["nose", "tail"]
LOAD_MODELS = ("pc_load1", "pc_load2")
WHEN = dt.datetime(2024, 7, 1, 12, 0)


def insert_loaded_model(lp, name: str, bodyparts: list[str], folder: str) -> None:
    """A Model row ``name`` (in ``folder``/``name``) for load-mode tasks: no network, the test
    writes its predictions. Nothing is inserted when the row exists."""
    lp.model.BodyPart.extend(bodyparts)
    if lp.model.Model & {"model_name": name}:
        return
    lp.model.Model.insert1(
        {
            "model_name": name,
            "model_dir": f"{folder}/{name}",
            "best_checkpoint": "none",
            "backbone": "none",
            "model_type": "loaded",
            "resize_height": 64,
            "resize_width": 64,
            "config": {"loaded": True},
            "engine_version": "test",
        }
    )
    lp.model.Model.BodyPart.insert(
        {"model_name": name, "body_part": bp, "body_part_index": i} for i, bp in enumerate(bodyparts)
    )


def insert_load_models(lp) -> tuple[str, ...]:
    """Model rows :data:`LOAD_MODELS` (body parts :data:`BODYPARTS`) for load-mode tasks."""
    for name in LOAD_MODELS:
        insert_loaded_model(lp, name, BODYPARTS, "pc")
    return LOAD_MODELS


def recording(lp, subject: str, video: str, recording_id: int = 1) -> dict:
    """A session of ``subject`` with one recording of ``video`` (relative to the data root) and
    its RecordingInfo; the key as the database returns it (what populate gives make)."""
    session = pipeline.add_session(subject, WHEN)
    lp.Device.insert1({"device": "pc_cam"}, skip_duplicates=True)
    rec = {**session, "recording_id": recording_id}
    if not lp.model.VideoRecording & rec:
        lp.model.VideoRecording.insert1({**rec, "device": "pc_cam"})
        lp.model.VideoRecording.File.insert1({**rec, "file_id": 0, "file_path": video})
    assert dj_compat.populate(lp.model.RecordingInfo, rec).errors == []
    return fetch_keys(lp.model.VideoRecording & rec)[0]


def predictions(lp, rec: dict, seed: int) -> np.ndarray:
    """(n_frames, 2, 3) random x, y, likelihood for the recording ``rec``."""
    n = (lp.model.RecordingInfo & rec).fetch1("n_frames")
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.uniform(0, 64, (n, len(BODYPARTS), 2)), rng.uniform(0, 1, (n, len(BODYPARTS), 1))], -1)


def load_task(lp, rec: dict, model_name: str, output_dir: str, seed: int) -> tuple[dict, np.ndarray]:
    """A load-mode task with an explicit ``output_dir`` whose predictions CSV is written first."""
    key = {**rec, "model_name": model_name}
    lp.model.PoseEstimationTask.insert1({**key, "task_mode": "load", "output_dir": output_dir})
    values = predictions(lp, rec, seed)
    write_predictions(lp.model.processed_dir() / output_dir / "predictions.csv", values, BODYPARTS)
    return key, values
