"""The app with a DataJoint pipeline: a round of the loop registered for a worker to train.

With a database (the usual ``DJ_*`` settings) and the lab's pipeline named (``LP_PIPELINE``,
or ``LP_SCHEMA_PREFIX`` of the reference one; or its schemas already active in the process that
runs the app), the Train page can, instead of running
``elp train`` itself, register the project as a ``VideoSet`` (a relabeled project has another
``labels_hash``, hence a new VideoSet, while the old one keeps describing what earlier models
were trained on), its parameters as a ``TrainingParamSet`` (the same parameters are the same
set) and a ``TrainingTask`` that a worker (``elp worker``) populates into ``ModelTraining``.
The rounds of the loop are then rows a lab can query.

The pipeline is the module ``LP_PIPELINE`` names (default: the element's reference pipeline,
activated under ``LP_SCHEMA_PREFIX``, default ``lp_``, with the app's roots as its data roots
unless ``LP_ROOT_DATA_DIR`` names others), as ``elp worker`` finds it; it is activated on first
use, not when the app starts. A project must lie under the pipeline's data roots.
"""

from __future__ import annotations

import functools
import importlib
import os
import shlex
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from element_lightning_pose import paths
from element_lightning_pose.engine.errors import ElpError

DEFAULT_PIPELINE = "element_lightning_pose.pipeline"
DEFAULT_PREFIX = "lp_"
_lock = threading.Lock()
_submit_lock = threading.Lock()  # the next training_id is read, then inserted
# the process has one DataJoint connection, which the server's threads share: one user at a time
DB_LOCK = threading.RLock()
_Result = TypeVar("_Result")


def one_at_a_time(function: Callable[..., _Result]) -> Callable[..., _Result]:
    """``function`` run under :data:`DB_LOCK` (it queries the process's DataJoint connection)."""

    @functools.wraps(function)
    def locked(*args: Any, **kwargs: Any) -> _Result:
        with DB_LOCK:
            return function(*args, **kwargs)

    return locked


class PipelineError(ElpError):
    """The pipeline cannot be reached or cannot take this project; the message says why."""


def _active_train() -> Any:
    """The element's ``train`` schema module when this process activated it already, else None
    (found without importing DataJoint)."""
    module = sys.modules.get("element_lightning_pose.train")
    return module if module is not None and module.schema.is_activated() else None


def configured() -> bool:
    """Whether the app works with a pipeline: the element's schemas are active in this process
    (a lab's script started the app), or a database (``DJ_HOST``) and the lab's pipeline
    (``LP_PIPELINE``, or ``LP_SCHEMA_PREFIX`` of the reference one) are named. A database alone
    is not enough: activating the reference pipeline under a guessed prefix would create schemas.
    Nothing is connected to find out."""
    if _active_train() is not None:
        return True
    named = os.environ.get("LP_PIPELINE") or os.environ.get("LP_SCHEMA_PREFIX")
    return bool(os.environ.get("DJ_HOST") and named)


def describe(roots: Sequence[Path] = ()) -> dict[str, Any]:
    """What the page says about the pipeline before anything connects, with the command of a
    worker that trains what the app registers."""
    active = _active_train()
    pipeline = os.environ.get("LP_PIPELINE", DEFAULT_PIPELINE)
    prefix = (
        active.schema.database.removesuffix("train") if active else os.environ.get("LP_SCHEMA_PREFIX", DEFAULT_PREFIX)
    )
    command = ["elp", "worker", "--loop", "--table", "ModelTraining", "--pipeline", pipeline, "--prefix", prefix]
    if active is None and not os.environ.get("LP_ROOT_DATA_DIR") and roots:
        # the app's roots are the pipeline's data roots (activate): the worker needs the same
        command.insert(0, "LP_ROOT_DATA_DIR=" + os.pathsep.join(str(root) for root in roots))
    return {"configured": configured(), "pipeline": pipeline, "prefix": prefix, "worker": shlex.join(command)}


def activate(roots: Sequence[Path]) -> Any:
    """The pipeline's ``train`` schema module, the pipeline activated first when it is not yet.

    Importing the schema modules connects to nothing; activating them does."""
    if not configured():
        raise PipelineError(
            "no pipeline: give the app a database (DJ_HOST, DJ_USER, DJ_PASS, DJ_PORT, DJ_BACKEND) and the lab's "
            "pipeline (LP_PIPELINE, or LP_SCHEMA_PREFIX of the reference pipeline)"
        )
    # DataJoint only when the app is given a database: on project folders alone the app does not
    # import it (its import costs seconds and warns without a datajoint.json)
    from element_lightning_pose import dj_compat, model, train

    with _lock:
        if not train.schema.is_activated():
            name = os.environ.get("LP_PIPELINE", DEFAULT_PIPELINE)
            try:
                dj_compat.configure_from_env()
                module = importlib.import_module(name)
                if not model.schema.is_activated() and hasattr(module, "activate_pipeline"):
                    root_dir = None if os.environ.get("LP_ROOT_DATA_DIR") else list(roots)
                    module.activate_pipeline(os.environ.get("LP_SCHEMA_PREFIX", DEFAULT_PREFIX), root_dir=root_dir)
            except ElpError:
                raise
            except Exception as exc:  # a server that does not answer, a refused login, a bad module
                raise PipelineError(f"pipeline {name!r}: cannot activate it ({type(exc).__name__}: {exc})") from None
            if not train.schema.is_activated():
                raise PipelineError(f"pipeline {name!r}: importing it did not activate the element's schemas")
    return train


@one_at_a_time
def submit(
    roots: Sequence[Path], project: Path, params: dict[str, Any], *, name: str = "", description: str = ""
) -> dict[str, Any]:
    """Register ``project`` (a VideoSet: the existing one while its labels and videos are the
    same), ``params`` (a TrainingParamSet) and a new TrainingTask; their keys, and whether the
    VideoSet is new (a relabeled project)."""
    from element_lightning_pose import dj_compat

    train = activate(roots)
    project_dir = _project_dir(train, project)
    before = set(dj_compat.fetch_column(train.VideoSet, "video_set_id"))
    video_set = train.VideoSet.insert_project(project_dir, description=description or f"{project.name} (elp app)")
    paramset_idx = train.TrainingParamSet.insert_new_params(description or "elp app", params)
    canonical = (train.TrainingParamSet & {"paramset_idx": paramset_idx}).fetch1("params")
    key = {**video_set, "paramset_idx": paramset_idx}
    with _submit_lock:
        taken = dj_compat.fetch_column(train.TrainingTask & key, "training_id")
        training_id = int(max(taken, default=0)) + 1
        train.TrainingTask.insert1(
            {**key, "training_id": training_id, "seed": int(canonical["training"]["seed"]), "model_prefix": name[:64]}
        )
    return {
        **{k: int(v) for k, v in key.items()},
        "training_id": training_id,
        "new_video_set": int(video_set["video_set_id"]) not in before,
        "model_dir": train.TrainingTask.default_model_dir({**key, "training_id": training_id}, name[:64]),
    }


@one_at_a_time
def tasks(roots: Sequence[Path], project: Path) -> list[dict[str, Any]]:
    """The TrainingTasks of every VideoSet of ``project``, newest first: trained (with the
    ModelTraining row's epochs, loss and model directory), failed (with the worker's error),
    or waiting for a worker."""
    from element_lightning_pose import dj_compat

    train = activate(roots)
    project_dir = _project_dir(train, project)
    # matched in Python, never by a restriction built from the path: DataJoint 0.14 puts a
    # string into its SQL without escaping a double quote, and a folder name may hold one
    ids = [
        r["video_set_id"]
        for r in dj_compat.fetch_dicts(train.VideoSet, "video_set_id", "project_dir")
        if r["project_dir"] == project_dir
    ]
    sets = train.VideoSet & [{"video_set_id": int(i)} for i in ids]
    fields = ("video_set_id", "paramset_idx", "training_id", "model_prefix", "seed")
    rows = dj_compat.fetch_dicts(train.TrainingTask & sets.proj(), *fields)
    labels = {
        int(r["video_set_id"]): r
        for r in dj_compat.fetch_dicts(sets, "video_set_id", "labels_hash", "n_labeled_frames")
    }
    trained = {
        _key(r): r
        for r in dj_compat.fetch_dicts(
            train.ModelTraining & sets.proj(),
            *fields[:3],
            "model_dir",
            "n_epochs",
            "best_val_loss",
            "trained_at",
        )
    }
    errors = {
        _key(job["key"]): str(job.get("error_message") or "")
        for job in dj_compat.list_jobs([train.ModelTraining], status="error")
    }
    out = []
    for row in rows:
        key = _key(row)
        done = trained.get(key)
        video_set = labels.get(int(row["video_set_id"]), {})
        out.append(
            {
                "video_set_id": key[0],
                "paramset_idx": key[1],
                "training_id": key[2],
                "name": row["model_prefix"],
                "labels_hash": video_set.get("labels_hash"),
                "n_labeled_frames": video_set.get("n_labeled_frames"),
                "state": "trained" if done else "failed" if key in errors else "waiting for a worker",
                "error": errors.get(key) if not done else None,
                "model_dir": done["model_dir"] if done else None,
                "epochs": int(done["n_epochs"]) if done else None,
                "best_val_loss": _number(done["best_val_loss"]) if done else None,
                "trained_at": str(done["trained_at"]) if done else None,
            }
        )
    return sorted(out, key=lambda r: (r["video_set_id"], r["paramset_idx"], r["training_id"]), reverse=True)


def _project_dir(train: Any, project: Path) -> str:
    try:
        return paths.relative_to_roots(train.root_dirs(), project)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise PipelineError(f"{project}: not under the pipeline's data roots ({exc})") from None


def _key(row: dict) -> tuple[int, int, int]:
    return int(row["video_set_id"]), int(row["paramset_idx"]), int(row["training_id"])


def _number(value: Any) -> float | None:
    return None if value is None else float(value)
