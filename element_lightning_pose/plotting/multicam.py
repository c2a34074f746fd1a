"""Figures of multi-camera 3D estimates (no database).

* :func:`plot_traces_3d` - x, y, z of each body part over time with the 95% posterior band
  (and the ground truth when known);
* :func:`plot_reprojection_errors` - per camera, the reprojection error over time (median
  over body parts, and the worst body part).

Labeled videos with the reprojected points: ``elp triangulate ... --reproject DIR`` writes
one predictions CSV per camera, which :func:`~element_lightning_pose.plotting.core.write_labeled_video`
(or ``elp plot video VIDEO DIR/<camera>.csv``) draws on that camera's video.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from element_lightning_pose.engine.types import PathLike
from element_lightning_pose.plotting.core import (
    POSTERIOR_BAND_GID,
    Z_95,
    PlotError,
    _new_figure,
    _select_keypoints,
    bodypart_colours,
    save_figure,
)

AXES = ("x", "y", "z")


def _time_axis(n: int, first_frame: int, fps: float | None) -> tuple[np.ndarray, str]:
    frames = first_frame + np.arange(n)
    return (frames / fps, "time (s)") if fps else (frames.astype(float), "frame")


def plot_traces_3d(
    points: np.ndarray,
    bodyparts: Sequence[str],
    *,
    variance: np.ndarray | None = None,
    ground_truth: np.ndarray | None = None,
    keypoints: Sequence[str | int] | None = None,
    fps: float | None = None,
    first_frame: int = 0,
    units: str = "mm",
    title: str | None = None,
    out: PathLike | None = None,
) -> Figure:
    """One row per body part, columns x, y, z, with ``estimate +- 1.96 sqrt(variance)`` shaded.

    Args:
        points: (T, K, 3) estimates (NaN where missing).
        bodyparts: the K names.
        variance: (T, K, 3) posterior variances (e.g. ``x_var, y_var, z_var`` of a 3D CSV).
        ground_truth: (T, K, 3) true positions, drawn dashed.
        keypoints: body parts to draw (names or indices; default all).
        fps: frames per second (time axis in seconds when given).
        out: also save the figure there (format from the suffix).
    """
    points = np.asarray(points, dtype=float)
    if points.ndim != 3 or points.shape[1:] != (len(bodyparts), 3):
        raise PlotError(f"points have shape {points.shape}, expected (T, {len(bodyparts)}, 3)")
    for name, value in (("variance", variance), ("ground_truth", ground_truth)):
        if value is not None and np.shape(value) != points.shape:
            raise PlotError(f"{name} has shape {np.shape(value)}, expected {points.shape}")
    chosen = _select_keypoints(bodyparts, keypoints)
    colours = bodypart_colours(len(bodyparts)) / 255.0
    time, label = _time_axis(len(points), first_frame, fps)
    figure = _new_figure(11, 1.6 * len(chosen) + 0.6)
    axes = figure.subplots(len(chosen), 3, sharex=True, squeeze=False)
    for row, k in enumerate(chosen):
        for col in range(3):
            ax = axes[row, col]
            ax.plot(time, points[:, k, col], color=colours[k], lw=1.0)
            if variance is not None:
                half = Z_95 * np.sqrt(np.asarray(variance, dtype=float)[:, k, col])
                band = ax.fill_between(
                    time, points[:, k, col] - half, points[:, k, col] + half, color=colours[k], alpha=0.3, lw=0
                )
                band.set_gid(POSTERIOR_BAND_GID)
            if ground_truth is not None:
                ax.plot(time, np.asarray(ground_truth)[:, k, col], color="k", lw=0.8, ls="--")
            ax.set_ylabel(f"{bodyparts[k]}\n{AXES[col]} ({units})" if col == 0 else f"{AXES[col]} ({units})")
    for col in range(3):
        axes[-1, col].set_xlabel(label)
    if title:
        figure.suptitle(title)
    if out is not None:
        save_figure(figure, out)
    return figure


def plot_reprojection_errors(
    errors: np.ndarray,
    cameras: Sequence[str],
    *,
    fps: float | None = None,
    first_frame: int = 0,
    title: str | None = None,
    out: PathLike | None = None,
) -> Figure:
    """Per camera (one row each): median over body parts and the worst body part, px over time.

    Args:
        errors: (C, T, K) pixel distances between the reprojected 3D estimate and each camera's
            prediction (NaN where the camera has none), e.g.
            ``np.linalg.norm(group.project(points) - pixels, axis=-1)``.
        cameras: the C camera names.
    """
    errors = np.asarray(errors, dtype=float)
    if errors.ndim != 3 or errors.shape[0] != len(cameras):
        raise PlotError(f"errors have shape {errors.shape}, expected ({len(cameras)}, T, K)")
    time, label = _time_axis(errors.shape[1], first_frame, fps)
    figure = _new_figure(10, 1.5 * len(cameras) + 0.6)
    axes = figure.subplots(len(cameras), 1, sharex=True, squeeze=False)[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # frames no body part was seen in: NaN
        median = np.nanmedian(errors, axis=-1)
        worst = np.nanmax(errors, axis=-1)
    for c, ax in enumerate(axes):
        ax.plot(time, worst[c], color="#dd8452", lw=0.7, label="worst body part")
        ax.plot(time, median[c], color="#4c72b0", lw=1.0, label="median over body parts")
        ax.set_ylabel(f"{cameras[c]}\nerror (px)")
        ax.set_yscale("symlog", linthresh=1.0)
    axes[0].legend(loc="upper right", fontsize="small")
    axes[-1].set_xlabel(label)
    if title:
        figure.suptitle(title)
    if out is not None:
        save_figure(figure, out)
    return figure
