"""Evaluation metrics: pixel error on labeled frames, temporal norm and PCA residuals on video predictions.

Pure numpy / pandas: running a model on labeled frames is :mod:`.evaluate`.

Long-format tables (one row per frame x keypoint) keep the split and body part beside each
value, so any summary is one ``groupby`` away; :func:`summarise` gives mean / median / p90
per body part plus an ``__all__`` row.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

ALL = "__all__"


def pixel_errors(predictions: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Euclidean distance (N, K) between predicted (N, K, >=2) and true (N, K, 2) keypoints.

    NaN where the keypoint is unlabeled (or not predicted).
    """
    predictions, truth = np.asarray(predictions, dtype=float), np.asarray(truth, dtype=float)
    if predictions.shape[:2] != truth.shape[:2]:
        raise ValueError(f"predictions {predictions.shape} and labels {truth.shape} differ in frames/keypoints")
    return np.linalg.norm(predictions[..., :2] - truth[..., :2], axis=-1)


def temporal_norm(predictions: np.ndarray) -> np.ndarray:
    """Displacement (T, K) of each keypoint since the previous frame; row 0 is NaN."""
    xy = np.asarray(predictions, dtype=float)[..., :2]
    norm = np.full(xy.shape[:2], np.nan)
    norm[1:] = np.linalg.norm(np.diff(xy, axis=0), axis=-1)
    return norm


def long_table(
    values: np.ndarray, bodyparts: Sequence[str], index: Sequence | np.ndarray, index_name: str, value_name: str
) -> pd.DataFrame:
    """(N, K) values -> long DataFrame (index_name, bodypart, value_name)."""
    values = np.asarray(values, dtype=float)
    n, k = values.shape
    return pd.DataFrame(
        {
            index_name: np.repeat(np.asarray(index, dtype=object), k),
            "bodypart": np.tile(np.asarray(bodyparts, dtype=object), n),
            value_name: values.reshape(-1),
        }
    )


def temporal_norm_table(predictions: np.ndarray, bodyparts: Sequence[str]) -> pd.DataFrame:
    """Long table (frame, bodypart, temporal_norm_px) of video predictions (T, K, >=2)."""
    norm = temporal_norm(predictions)
    return long_table(norm, bodyparts, np.arange(len(norm)), "frame", "temporal_norm_px")


def summarise(table: pd.DataFrame, value: str | None = None, by: Sequence[str] = ("bodypart",)) -> pd.DataFrame:
    """mean / median / p90 / count of ``value`` per group of ``by``, plus an overall ``__all__`` row.

    ``value`` defaults to the table's last column. NaNs (unlabeled keypoints) are ignored.
    """
    value = value or table.columns[-1]
    by = list(by)

    def stats(series: pd.Series) -> pd.Series:
        finite = series.dropna()
        return pd.Series(
            {
                "mean": finite.mean() if len(finite) else np.nan,
                "median": finite.median() if len(finite) else np.nan,
                "p90": finite.quantile(0.9) if len(finite) else np.nan,
                "count": int(len(finite)),
            }
        )

    grouped = table.groupby(by, sort=False)[value].apply(stats).unstack()
    overall = stats(table[value]).to_frame().T
    overall.index = (
        pd.MultiIndex.from_tuples([(ALL,) * len(by)], names=by) if len(by) > 1 else pd.Index([ALL], name=by[0])
    )
    summary = pd.concat([grouped, overall])
    summary["count"] = summary["count"].astype(int)
    return summary


def diagnostics_table(
    predictions: np.ndarray,
    bodyparts: Sequence[str],
    pcas: dict | None = None,
    index: Sequence | np.ndarray | None = None,
) -> pd.DataFrame:
    """Per-frame diagnostics of video predictions (T, K, >=2), in original pixels.

    Wide table, one row per frame (index ``frame``), two header rows (metric, bodypart):
    ``temporal_norm`` (displacement since the previous frame) and, for each PCA the model was
    trained with (``pca_singleview``, ``pca_multiview``), the residual of each keypoint it
    covers (NaN for the others). Large values flag frames worth checking or relabeling.
    """
    predictions = np.asarray(predictions, dtype=float)
    parts = list(bodyparts)
    blocks = {"temporal_norm": temporal_norm(predictions)}
    for kind, pca in (pcas or {}).items():
        blocks[f"{kind}_residual"] = pca.residual_table(predictions[..., :2], len(parts))
    columns = pd.MultiIndex.from_tuples([(m, b) for m in blocks for b in parts], names=["metric", "bodypart"])
    frame_index = pd.Index(np.arange(len(predictions)) if index is None else np.asarray(index), name="frame")
    values = np.concatenate([blocks[m] for m in blocks], axis=1) if len(predictions) else np.empty((0, len(columns)))
    return pd.DataFrame(values, index=frame_index, columns=columns)


HELD_OUT_SPLITS = ("val", "test")
RAYLEIGH_MEAN = float(np.sqrt(np.pi / 2.0))  # mean distance of a 2D Gaussian error, in sds per axis


def error_scale_px(summary: pd.DataFrame) -> dict[str, float]:
    """A model's 2D error scale per body part: the sd per image axis (px) of a Gaussian error
    with the mean pixel distance the model has on labeled frames it did not train on.

    ``summary`` has one row per body part and split (``ModelEvaluation.BodyPart``): columns
    ``bodypart`` (or ``body_part``), ``split``, ``n_frames``, ``mean_px``. The held-out splits
    (val, test) are pooled, weighted by their frames; a body part with none falls back to train
    (an optimistic scale). Body parts with no labeled frame at all are left out.
    """
    table = summary.rename(columns={"body_part": "bodypart"})
    table = table[np.isfinite(table["mean_px"].astype(float)) & (table["n_frames"] > 0)]
    scales = {}
    for bodypart, rows in table.groupby("bodypart", sort=False):
        held = rows[rows["split"].isin(HELD_OUT_SPLITS)]
        use = held if len(held) else rows[rows["split"] == "train"]
        if len(use):
            weights = use["n_frames"].to_numpy(dtype=float)
            mean = float(np.sum(weights * use["mean_px"].to_numpy(dtype=float)) / weights.sum())
            scales[str(bodypart)] = mean / RAYLEIGH_MEAN
    return scales
