"""Evaluation of a trained model on labeled frames: inference, then :mod:`metrics`.

Lives next to prediction (not in ``metrics``), so ``metrics`` stays pure numpy / pandas and
imports neither the network nor the predictor.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from element_lightning_pose.engine.data.labels import LabeledFrames
from element_lightning_pose.engine.data.splits import read_splits
from element_lightning_pose.engine.inference.metrics import long_table, pixel_errors
from element_lightning_pose.engine.inference.models import PoseModel, load_model
from element_lightning_pose.engine.inference.predict import predict_labeled
from element_lightning_pose.engine.types import PathLike


def evaluate(
    model_dir: PathLike, labels: LabeledFrames, *, model: PoseModel | None = None, batch_size: int = 16
) -> pd.DataFrame:
    """Pixel error of the model in ``model_dir`` on ``labels``, in original-frame pixels.

    Long format: ``image, split, bodypart, error_px`` (+ ``likelihood``). The split comes from
    ``model_dir/splits.csv``; images the model never saw in any split are ``"unused"``.
    Unlabeled keypoints give NaN errors (kept, so counts per keypoint stay honest).
    """
    model_dir = Path(model_dir)
    model = model or load_model(model_dir)
    predictions = predict_labeled(model, labels, batch_size=batch_size)
    errors = pixel_errors(predictions, labels.keypoints)
    splits_path = model_dir / "splits.csv"
    splits = read_splits(splits_path) if splits_path.is_file() else {}
    table = long_table(errors, labels.bodyparts, labels.image_paths, "image", "error_px")
    table.insert(1, "split", table["image"].map(lambda image: splits.get(image, "unused")))
    table["likelihood"] = predictions[..., 2].reshape(-1)
    return table[["image", "split", "bodypart", "error_px", "likelihood"]]
