"""The rounds of the labeling loop: a project's models, each with its error on today's labels.

"Did this round help" is answered by putting side by side, for every model of a project
(``<project>/models/<name>/``), the number of labels it was trained on (``n_train``, ``n_val``
of its ``model.json``) and its pixel error on the project's labeled frames as they are now,
per split of the model (``splits.csv``): ``train``, ``val``, ``test``, and ``unused`` for frames
labeled after the model was trained, which no model of an earlier round has seen.

An evaluation runs the network on every labeled frame, so it is computed once per model and
labels and cached in the model directory (``evaluation.json``, written atomically), keyed by a
digest of the labels as read and of the model's checkpoint: a relabeled project or a retrained
model is evaluated again, anything else reads the cache.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from element_lightning_pose.engine.atomic import write_text_atomic
from element_lightning_pose.engine.config import TrainConfig
from element_lightning_pose.engine.data.labels import LabeledFrames
from element_lightning_pose.engine.data.projects import read_project_labels
from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.model_dir import MODEL_JSON, PER_VIEW, ModelInfo, read_model_info
from element_lightning_pose.engine.types import PathLike
from element_lightning_pose.version import __version__

MODELS_DIR = "models"
EVALUATION_FILE = "evaluation.json"
SPLITS = ("train", "val", "test", "unused")


@dataclass
class ProjectModel:
    """One model directory of a project: its description, or why it cannot be read."""

    name: str
    path: Path
    info: ModelInfo | None
    error: str | None = None

    @property
    def trained_at(self) -> float:
        """When its ``model.json`` was written (seconds since the epoch): the order of the rounds."""
        return (self.path / MODEL_JSON).stat().st_mtime

    def to_dict(self) -> dict[str, Any]:
        info = self.info
        return {
            "name": self.name,
            "trained_at": self.trained_at,
            "error": self.error,
            "kind": info.kind if info else None,
            "backbone": info.backbone if info else None,
            "model_type": info.model_type if info else None,
            "image_resize": info.image_resize if info else None,
            "n_train": info.n_train if info else None,
            "n_val": info.n_val if info else None,
            "n_test": info.n_test if info else None,
            "epochs": info.epochs if info else None,
            "wall_time_s": info.wall_time_s if info else None,
            "best_val_loss": info.best_val_loss if info else None,
        }


def project_models(project_root: PathLike) -> list[ProjectModel]:
    """The model directories of the project (``models/<name>/`` with a ``model.json``), oldest first.

    Hidden folders (a run's staging folder, the app's job records) are not models. A model
    directory that breaks the contract is listed with its error, not skipped.
    """
    folder = Path(project_root) / MODELS_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_dir() or path.is_symlink() or not (path / MODEL_JSON).is_file():
            continue
        try:
            found.append(ProjectModel(path.name, path, _model_info(path)))
        except ElpError as exc:
            found.append(ProjectModel(path.name, path, None, str(exc)))
    return sorted(found, key=lambda model: (model.trained_at, model.name))


def _model_info(path: Path) -> ModelInfo:
    try:
        return read_model_info(path)
    except ElpError:
        # one network per view: described by its model.json, evaluated view by view (not here)
        data = json.loads((path / MODEL_JSON).read_text())
        info = ModelInfo.from_dict(data, source=str(path / MODEL_JSON))
        if info.kind != PER_VIEW:
            raise
        return info


def labels_digest(labels: LabeledFrames) -> str:
    """A digest of labels as read (image paths and coordinates): equal labels, equal digest."""
    digest = hashlib.sha256()
    digest.update("\n".join(map(str, labels.image_paths)).encode())
    digest.update(np.ascontiguousarray(labels.keypoints, dtype=np.float64).tobytes())
    return digest.hexdigest()[:16]


def _model_stamp(info: ModelInfo) -> str:
    """The checkpoint the evaluation ran (size and modification time): a retrained model differs."""
    checkpoint = info.checkpoint
    if checkpoint is None or not checkpoint.is_file():
        return ""
    stat = checkpoint.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def split_summary(errors: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per split of :func:`~element_lightning_pose.engine.inference.evaluate.evaluate`'s table:
    the labeled frames and keypoints, and the mean / median / p95 pixel error (None when none)."""
    summary: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        rows = errors[errors["split"] == split]
        values = rows["error_px"].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        frames = rows.loc[np.isfinite(values), "image"].nunique()
        if not len(finite):
            summary[split] = {"frames": 0, "keypoints": 0, "mean_px": None, "median_px": None, "p95_px": None}
            continue
        summary[split] = {
            "frames": int(frames),
            "keypoints": int(len(finite)),
            "mean_px": float(np.mean(finite)),
            "median_px": float(np.median(finite)),
            "p95_px": float(np.percentile(finite, 95)),
        }
    return summary


def cached_evaluation(model: ProjectModel, project_root: PathLike) -> dict[str, Any] | None:
    """The cached evaluation of ``model``, with ``"current": False`` when the labels or the model
    changed since it was computed; None when there is none."""
    path = model.path / EVALUATION_FILE
    if not path.is_file() or model.info is None:
        return None
    try:
        cached = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(cached, dict) or not isinstance(cached.get("splits"), dict):
        return None
    try:
        digest = labels_digest(_model_labels(model.info, project_root))
    except ElpError:
        digest = ""
    cached["current"] = cached.get("labels_digest") == digest and cached.get("model_stamp") == _model_stamp(model.info)
    return cached


def evaluate_model(model: ProjectModel, project_root: PathLike, *, force: bool = False) -> dict[str, Any]:
    """The evaluation of ``model`` on the project's labels now (:func:`split_summary`), from the
    cache when it is current, else computed and cached in ``evaluation.json``."""
    # the heavy part (torch) is imported only when a model is evaluated
    from element_lightning_pose.engine.inference.evaluate import evaluate

    if model.info is None:
        raise ElpError(f"model {model.name!r}: {model.error}")
    if model.info.kind == PER_VIEW:
        raise ElpError(f"model {model.name!r}: one network per view; evaluate each view's model directory")
    if not force:
        cached = cached_evaluation(model, project_root)
        if cached is not None and cached["current"]:
            return cached
    labels = _model_labels(model.info, project_root)
    errors = evaluate(model.path, labels)
    result = {
        "labels_digest": labels_digest(labels),
        "model_stamp": _model_stamp(model.info),
        "engine_version": __version__,
        "n_train": model.info.n_train,
        "n_val": model.info.n_val,
        "splits": split_summary(errors),
    }
    write_text_atomic(model.path / EVALUATION_FILE, json.dumps(_json_safe(result), indent=2))
    return {**result, "current": True}


def _model_labels(info: ModelInfo, project_root: PathLike) -> LabeledFrames:
    """The project's labels as the model's configuration names them (its csv_file and views)."""
    data = TrainConfig.from_dict(info.config or {}, source=str((info.model_dir or Path()) / "config.yaml")).data
    return read_project_labels(project_root, data.csv_file, data.view_names or None, check_images=False)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
