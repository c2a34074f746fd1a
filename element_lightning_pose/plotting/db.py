"""Plots of what the element's tables hold: thin fetchers that call :mod:`.core`.

:func:`plot_pose_estimation`, :func:`plot_ensemble`, :func:`labeled_video_for` and
:func:`plot_model_evaluation` fetch one row's arrays from the schema modules and draw them.
The schema modules (and so DataJoint) are imported only when one of these is called.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from element_lightning_pose.engine.config import SPLITS
from element_lightning_pose.engine.types import PathLike
from element_lightning_pose.plotting.core import (
    ALL_BODYPARTS,
    PlotError,
    _error_figure,
    plot_traces,
    write_labeled_video,
)


def _one_key(table, key: dict, what: str) -> dict:
    from element_lightning_pose.dj_compat import fetch_keys, match

    keys = fetch_keys(table & match(key))
    if len(keys) != 1:
        raise PlotError(f"{what}: {len(keys)} rows match {key}; restrict the key to exactly one")
    return keys[0]


def _recording_key(key: dict) -> dict:
    from element_lightning_pose import model

    return {k: key[k] for k in model.VideoRecording.primary_key}


def _recording_fps(key: dict) -> float | None:
    from element_lightning_pose import model
    from element_lightning_pose.dj_compat import fetch_dicts

    rows = fetch_dicts(model.RecordingInfo & _recording_key(key), "fps")
    return float(rows[0]["fps"]) if rows else None


def _pose_array(key: dict, bodyparts: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """(T, K, 3) x, y, likelihood of one ``PoseEstimation`` row, in the model's body-part order."""
    from element_lightning_pose import model

    frame = model.PoseEstimation.get_trajectory(key, "all" if bodyparts is None else bodyparts)
    names = list(dict.fromkeys(frame.columns.get_level_values("bodyparts")))
    if bodyparts is not None and names != list(bodyparts):
        raise PlotError(f"PoseEstimation {key} has body parts {names}, expected {list(bodyparts)}")
    return frame.to_numpy().reshape(len(frame), len(names), 3), names


def _describe(key: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in key.items())


def plot_pose_estimation(key: dict, out: PathLike | None = None, **kwargs) -> Figure:
    """Traces of one ``model.PoseEstimation`` row (time in seconds when ``RecordingInfo`` has
    the recording). Extra keyword arguments go to :func:`plot_traces` (``keypoints``, ``frames``)."""
    from element_lightning_pose import model

    key = _one_key(model.PoseEstimation, key, "plot_pose_estimation")
    values, bodyparts = _pose_array(key)
    return plot_traces(
        values[..., 0],
        values[..., 1],
        values[..., 2],
        bodyparts,
        fps=_recording_fps(key),
        title=f"pose estimation: {_describe(key)}",
        out=out,
        **kwargs,
    )


def _ensemble_arrays(key: dict) -> dict:
    """Smoothed traces, posterior variance and members' predictions of one ensemble."""
    from element_lightning_pose import ensemble, model
    from element_lightning_pose.dj_compat import fetch_dicts

    members = sorted(r["model_name"] for r in fetch_dicts(ensemble.EnsembleSmoothingTask.Member & key, "model_name"))
    rows = {r["body_part"]: r for r in fetch_dicts(ensemble.EnsembleSmoothing.BodyPartPosition & key)}
    if not members or not rows:
        raise PlotError(f"ensemble {key} has no members or no smoothed body parts")
    bodyparts = [bp for bp in model.Model.bodyparts({"model_name": members[0]}) if bp in rows]
    recording = _recording_key(key)
    member_values = np.stack([_pose_array({**recording, "model_name": m}, bodyparts)[0] for m in members])
    return {
        "bodyparts": bodyparts,
        "members": members,
        "x": np.stack([np.asarray(rows[bp]["x_pos"], dtype=float) for bp in bodyparts], axis=1),
        "y": np.stack([np.asarray(rows[bp]["y_pos"], dtype=float) for bp in bodyparts], axis=1),
        "likelihood": np.stack([np.asarray(rows[bp]["likelihood"], dtype=float) for bp in bodyparts], axis=1),
        "posterior_var": np.stack([np.asarray(rows[bp]["posterior_var"], dtype=float) for bp in bodyparts], axis=1),
        "member_values": member_values,
    }


def plot_ensemble(key: dict, out: PathLike | None = None, **kwargs) -> Figure:
    """Traces of one ``ensemble.EnsembleSmoothing`` row with its 95% posterior band and its
    members' predictions. Extra keyword arguments go to :func:`plot_traces`."""
    from element_lightning_pose import ensemble

    key = _one_key(ensemble.EnsembleSmoothing, key, "plot_ensemble")
    data = _ensemble_arrays(key)
    title = f"ensemble ({len(data['members'])} members, EKS): {_describe(key)}"
    return plot_traces(
        data["x"],
        data["y"],
        data["likelihood"],
        data["bodyparts"],
        fps=_recording_fps(key),
        posterior_var=data["posterior_var"],
        members=data["member_values"],
        title=title,
        out=out,
        **kwargs,
    )


def labeled_video_for(key: dict, out: PathLike | None = None, **kwargs) -> Path:
    """Labeled mp4 of a recording's video from a ``PoseEstimation`` key (with ``model_name``)
    or an ``EnsembleSmoothing`` key (with ``ensemble_id``: the smoothed keypoints).

    ``out`` defaults to ``<predictions or ensemble CSV>_labeled.mp4`` beside the CSV in the
    processed-data folder. Extra keyword arguments go to :func:`write_labeled_video`.
    """
    from element_lightning_pose import model
    from element_lightning_pose.dj_compat import fetch_dicts

    if "ensemble_id" in key:
        from element_lightning_pose import ensemble

        key = _one_key(ensemble.EnsembleSmoothing, key, "labeled_video_for")
        data = _ensemble_arrays(key)
        values = np.stack([data["x"], data["y"], data["likelihood"]], axis=-1)
        bodyparts = data["bodyparts"]
        source = fetch_dicts(ensemble.EnsembleSmoothing & key, "output_file")[0]["output_file"]
    else:
        key = _one_key(model.PoseEstimation, key, "labeled_video_for")
        values, bodyparts = _pose_array(key)
        source = fetch_dicts(model.PoseEstimation & key, "predictions_file")[0]["predictions_file"]
    if out is None:
        source_path = model.processed_dir() / source
        out = source_path.with_name(f"{source_path.stem}_labeled.mp4")
    files = model.VideoRecording.file_paths(_recording_key(key))
    return write_labeled_video(files, values, bodyparts, out, **kwargs)


def plot_model_evaluation(model_key: dict, out: PathLike | None = None) -> Figure:
    """Pixel error per body part and split of one model, from ``model.ModelEvaluation.BodyPart``
    (summaries only: bars of the mean and ticks at the 90th percentile)."""
    from element_lightning_pose import model
    from element_lightning_pose.dj_compat import fetch_dicts

    key = _one_key(model.ModelEvaluation, model_key, "plot_model_evaluation")
    master = fetch_dicts(model.ModelEvaluation & key)[0]
    rows = fetch_dicts(model.ModelEvaluation.BodyPart & key)
    summary = pd.DataFrame(
        {
            "bodypart": r["body_part"],
            "split": r["split"],
            "mean": r["mean_px"],
            "p90": r["p90_px"],
            "frames": r["n_frames"],
        }
        for r in rows
    )
    overall = pd.DataFrame(
        {
            "bodypart": ALL_BODYPARTS,
            "split": split,
            "mean": master[f"{split}_mean_px"],
            "p90": master[f"{split}_p90_px"],
            "frames": master[f"n_{split}"],
        }
        for split in SPLITS
    )
    summary = pd.concat([summary, overall], ignore_index=True)
    summary = summary[summary["frames"] > 0].astype({"mean": float, "p90": float, "frames": float})
    if summary.empty:
        raise PlotError(f"ModelEvaluation {key} has no labeled frames in any split")
    bodyparts = [*model.Model.bodyparts(key), ALL_BODYPARTS]
    return _error_figure(summary, bodyparts, None, out, f"pixel error of model {key['model_name']} (bars: mean)")
