"""The label check: flags in the human labels (engine.labeling.checks), each linking to its frame.

A model's disagreement is judged only on the frames that model did not train on (its val and
test split, from its ``splits.csv``): there its prediction is a cross-validated one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from element_lightning_pose.app.projects import read_settings
from element_lightning_pose.app.routes.common import project_at
from element_lightning_pose.app.routes.labels import project_calibration
from element_lightning_pose.engine.data.labels import LabeledFrames
from element_lightning_pose.engine.data.projects import read_project_labels
from element_lightning_pose.engine.data.splits import read_splits
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.inference.models import load_model
from element_lightning_pose.engine.inference.predict import predict_labeled
from element_lightning_pose.engine.labeling.checks import check_labels

router = APIRouter(prefix="/api")


@router.get("/checks")
def checks(request: Request, p: str, model: str | None = None) -> dict[str, Any]:
    """The flags of the project's labels, most suspicious first, and why a check did not run."""
    location = project_at(request, p)
    settings = read_settings(location.path)
    try:
        labels = read_project_labels(location.path, settings.get("csv_file") or "CollectedData.csv", check_images=False)
    except ProjectError as exc:
        return {"flags": [], "notes": [f"no labels to check yet ({exc})"]}
    predictions, notes = None, []
    if model:
        model_dir = location.child(model, "model").path
        predictions, held_out = held_out_predictions(labels, model_dir)
        notes.append(f"model {model}: compared on the {held_out} labeled frames it did not train on (val, test)")
    report = check_labels(
        labels,
        skeleton=settings.get("skeleton") or None,
        calibration=project_calibration(location) if labels.views is not None else None,
        predictions=predictions,
    )
    return {"flags": [flag.to_dict() for flag in report.flags], "notes": notes + list(report.notes)}


def held_out_predictions(labels: LabeledFrames, model_dir) -> tuple[np.ndarray, int]:
    """(N, K, 3) predictions of ``model_dir`` on the labeled rows it did not train on, NaN on
    the others, and how many rows that is."""
    splits = read_splits(model_dir / "splits.csv") if (model_dir / "splits.csv").is_file() else {}
    rows = np.array([splits.get(image) in ("val", "test") for image in labels.image_paths])
    predictions = np.full((len(labels), len(labels.bodyparts), 3), np.nan)
    if rows.any():
        predictions[rows] = predict_labeled(load_model(model_dir, device="cpu"), labels.subset(np.flatnonzero(rows)))
    return predictions, int(rows.sum())
