"""Trace plots, labeled videos and evaluation figures from arrays and files (no database).

* :func:`plot_traces` - x, y and likelihood of each body part over time, with the EKS
  posterior band, ensemble members and ground truth when given;
* :func:`write_labeled_video` - the video with keypoints drawn on it (streamed frame by frame);
* :func:`plot_evaluation` - pixel error per body part and split.

Figures are ``matplotlib.figure.Figure`` objects drawn on an Agg canvas without pyplot, so
plotting changes no global matplotlib state, needs no display, and a returned figure shows
itself in a notebook. Every file is written through ``engine.atomic``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from element_lightning_pose.engine.atomic import atomic_output
from element_lightning_pose.engine.config import SPLITS
from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.types import PathLike

POSTERIOR_BAND_GID = "posterior_band"  # marks the EKS band's PolyCollection in a figure
Z_95 = 1.959963984540054  # two-sided 95% interval of a Gaussian
SPLIT_ORDER = (*SPLITS, "unused")
SPLIT_COLOURS = {"train": "#4c72b0", "val": "#dd8452", "test": "#55a868", "unused": "#8c8c8c"}
ALL_BODYPARTS = "all"
EVALUATION_COLUMNS = ("image", "split", "bodypart", "error_px")


# --------------------------------------------------------------------------------- shared


class PlotError(ElpError, ValueError):
    """What a plot was given does not fit (shapes, body parts, frames, files); the message names it."""


def bodypart_colours(n: int) -> np.ndarray:
    """(n, 3) uint8 RGB colours, one per body part, the same in trace plots and videos.

    Up to 10 body parts take matplotlib's ``tab10``, up to 20 ``tab20``, more are spread
    evenly around the hue circle.
    """
    if n <= 10:
        colours = colormaps["tab10"](np.arange(n))
    elif n <= 20:
        colours = colormaps["tab20"](np.arange(n))
    else:
        colours = colormaps["hsv"](np.arange(n) / n)
    return np.round(np.asarray(colours)[:, :3] * 255).astype(np.uint8)


def save_figure(figure: Figure, out: PathLike, *, dpi: int = 100) -> Path:
    """Save ``figure`` to ``out`` (format from the suffix) through a temporary file and a rename."""
    out = Path(out)
    fmt = out.suffix.lstrip(".").lower() or "png"
    with atomic_output(out) as tmp:
        figure.savefig(tmp, format=fmt, dpi=dpi)
    return out


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)  # Agg canvas: renders without a display and without pyplot
    return figure


def _select_keypoints(bodyparts: Sequence[str], keypoints: Sequence[str | int] | None) -> list[int]:
    """Indices of the chosen body parts (names or indices; default all), in the given order."""
    if keypoints is None:
        return list(range(len(bodyparts)))
    chosen = []
    for item in keypoints:
        if isinstance(item, (int, np.integer)):
            if not -len(bodyparts) <= item < len(bodyparts):
                raise PlotError(f"keypoint index {item} out of range for {len(bodyparts)} body parts")
            chosen.append(int(item) % len(bodyparts))
        elif item in bodyparts:
            chosen.append(list(bodyparts).index(item))
        else:
            raise PlotError(f"unknown body part {item!r}; known: {list(bodyparts)}")
    if not chosen:
        raise PlotError("no keypoints selected")
    return chosen


def _check_shape(name: str, value: np.ndarray | None, expected: tuple, *, min_last: int | None = None):
    """``value`` as a float array of shape ``expected`` (last axis at least ``min_last`` long)."""
    if value is None:
        return None
    value = np.asarray(value, dtype=float)
    if min_last is not None:
        ok = value.shape[:-1] == expected[:-1] and value.shape[-1] >= min_last
    else:
        ok = value.shape == expected
    if not ok:
        want = expected if min_last is None else (*expected[:-1], f">={min_last}")
        raise PlotError(f"{name} has shape {value.shape}, expected {want}")
    return value


# --------------------------------------------------------------------------------- traces


def plot_traces(
    x: np.ndarray,
    y: np.ndarray,
    likelihood: np.ndarray,
    bodyparts: Sequence[str],
    *,
    fps: float | None = None,
    posterior_var: np.ndarray | None = None,
    members: np.ndarray | None = None,
    ground_truth: np.ndarray | None = None,
    keypoints: Sequence[str | int] | None = None,
    frames: tuple[int | None, int | None] | None = None,
    first_frame: int = 0,
    likelihood_threshold: float | None = 0.9,
    title: str | None = None,
    out: PathLike | None = None,
) -> Figure:
    """Keypoint traces over time: one row per body part, columns x (px), y (px), likelihood.

    Args:
        x, y, likelihood: (T, K) estimates (NaN where missing).
        bodyparts: the K names.
        fps: frames per second; the time axis is in seconds when given, else in frames.
        posterior_var: (T, K, 2) EKS posterior variance of x and y; draws the 95% band
            ``estimate +- 1.96 sqrt(var)``.
        members: (M, T, K, >=2) ensemble members' predictions, drawn as thin grey lines.
        ground_truth: (T, K, >=2) true keypoints, drawn dashed.
        keypoints: body parts to show (names or indices; default all).
        frames: ``(start, stop)`` rows to show (half-open, ``None`` for an open end).
        first_frame: video frame number of row 0 (predictions of a frame range).
        likelihood_threshold: dotted line on the likelihood panels and grey shading of the
            frames below it on the x and y panels (``None``: neither).
        title: figure title.
        out: save the figure there (PNG, SVG or PDF by suffix), atomically.
    """
    x, y, likelihood = (np.asarray(a, dtype=float) for a in (x, y, likelihood))
    if x.ndim != 2 or y.shape != x.shape or likelihood.shape != x.shape:
        raise PlotError(
            f"x, y, likelihood must be (T, K) arrays of one shape, got {x.shape}, {y.shape}, {likelihood.shape}"
        )
    n_frames, n_keypoints = x.shape
    if len(bodyparts) != n_keypoints:
        raise PlotError(f"{len(bodyparts)} body part names for {n_keypoints} keypoints")
    posterior_var = _check_shape("posterior_var", posterior_var, (n_frames, n_keypoints, 2))
    ground_truth = _check_shape("ground_truth", ground_truth, (n_frames, n_keypoints, 2), min_last=2)
    if members is not None:
        members = np.asarray(members, dtype=float)
        if members.ndim != 4 or members.shape[1:3] != (n_frames, n_keypoints) or members.shape[3] < 2:
            raise PlotError(f"members has shape {members.shape}, expected (M, {n_frames}, {n_keypoints}, >=2)")
    if fps is not None and not (np.isfinite(fps) and fps > 0):
        raise PlotError(f"fps must be positive, got {fps}")
    chosen = _select_keypoints(bodyparts, keypoints)
    rows = _frame_rows(frames, n_frames)
    frame_numbers = first_frame + np.arange(n_frames)[rows]
    time = frame_numbers / fps if fps else frame_numbers

    colours = bodypart_colours(n_keypoints) / 255.0
    figure = _new_figure(13.0, 0.9 + 1.55 * len(chosen))
    axes = figure.subplots(len(chosen), 3, sharex=True, squeeze=False)
    low = likelihood[rows] < likelihood_threshold if likelihood_threshold is not None else None
    for row, k in enumerate(chosen):
        for coord, ax in enumerate(axes[row, :2]):
            estimate = (x if coord == 0 else y)[rows, k]
            if low is not None and low[:, k].any():
                ax.fill_between(
                    time,
                    0,
                    1,
                    where=low[:, k],
                    step="mid",
                    color="0.85",
                    linewidth=0,
                    transform=ax.get_xaxis_transform(),
                    zorder=0,
                )
            if members is not None:
                for member in members:
                    ax.plot(time, member[rows, k, coord], color="0.55", linewidth=0.6, alpha=0.8, zorder=1)
            if posterior_var is not None:
                half = Z_95 * np.sqrt(posterior_var[rows, k, coord])
                band = ax.fill_between(
                    time, estimate - half, estimate + half, color=colours[k], alpha=0.3, linewidth=0, zorder=2
                )
                band.set_gid(POSTERIOR_BAND_GID)
            ax.plot(time, estimate, color=colours[k], linewidth=1.2, zorder=3)
            if ground_truth is not None:
                ax.plot(time, ground_truth[rows, k, coord], color="black", linewidth=1.0, linestyle="--", zorder=4)
        axes[row, 0].set_ylabel(bodyparts[k], color=colours[k] * 0.8, fontweight="bold")
        ax = axes[row, 2]
        ax.plot(time, likelihood[rows, k], color=colours[k], linewidth=1.0)
        if likelihood_threshold is not None:
            ax.axhline(likelihood_threshold, color="0.3", linestyle=":", linewidth=1.0)
        ax.set_ylim(-0.03, 1.03)
    for ax, name in zip(axes[0], ("x (px)", "y (px)", "likelihood")):
        ax.set_title(name)
    figure.align_ylabels(axes[:, 0])
    for ax in axes[-1]:
        ax.set_xlabel("time (s)" if fps else "frame")
    for ax in axes.flat:
        ax.margins(x=0)
        ax.grid(True, color="0.92", linewidth=0.6)
    handles = _trace_legend(posterior_var, members, ground_truth, low, likelihood_threshold)
    if handles:
        figure.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    if title:
        figure.suptitle(title)
    if out is not None:
        save_figure(figure, out)
    return figure


def _frame_rows(frames: tuple[int | None, int | None] | None, n_frames: int) -> slice:
    if frames is None:
        return slice(0, n_frames)
    if len(frames) != 2:
        raise PlotError(f"frames must be (start, stop), got {frames!r}")
    start, stop = (0 if frames[0] is None else int(frames[0])), (n_frames if frames[1] is None else int(frames[1]))
    if not 0 <= start < min(stop, n_frames):
        raise PlotError(f"frames {frames} select no rows of {n_frames}")
    return slice(start, min(stop, n_frames))


def _trace_legend(posterior_var, members, ground_truth, low, threshold) -> list:
    handles: list[Artist] = [Line2D([], [], color="0.25", linewidth=1.2, label="estimate (colour: body part)")]
    if posterior_var is not None:
        handles.append(Patch(color="0.25", alpha=0.3, label="95% posterior interval"))
    if members is not None:
        handles.append(Line2D([], [], color="0.55", linewidth=0.6, label="ensemble members"))
    if ground_truth is not None:
        handles.append(Line2D([], [], color="black", linestyle="--", label="ground truth"))
    if low is not None and low.any():
        handles.append(Patch(color="0.85", label=f"likelihood < {threshold:g}"))
    return handles


# --------------------------------------------------------------------------------- labeled video


def write_labeled_video(
    video_path: PathLike | Sequence[PathLike],
    predictions: np.ndarray,
    bodyparts: Sequence[str],
    out_path: PathLike,
    *,
    likelihood_threshold: float = 0.9,
    start: int = 0,
    stop: int | None = None,
    skeleton: Sequence[tuple[str | int, str | int]] | None = None,
    dot_radius: int | None = None,
    first_frame: int = 0,
    codec: str = "mp4v",
) -> Path:
    """Draw keypoints on frames ``start:stop`` of a video and write them to ``out_path`` (mp4).

    Confident keypoints (likelihood >= ``likelihood_threshold``) are filled dots, others
    hollow circles, each body part in its colour of :func:`bodypart_colours`; NaN keypoints
    are not drawn. ``skeleton`` pairs (names or indices) are joined by lines when both ends
    are confident. The frame number is written in the top-left corner. Frames are decoded,
    drawn and encoded one at a time; the file appears only when complete.

    Args:
        video_path: the video, or the consecutive files of one recording.
        predictions: (T, K, >=3) x, y, likelihood in original-frame pixels.
        bodyparts: the K names.
        out_path: the labeled video to write.
        start, stop: video frame range (half-open; ``stop`` default: the end of the video).
        dot_radius: marker radius in pixels (default: 1% of the frame's shorter side, >= 2).
        first_frame: the video frame of ``predictions[0]`` (predictions of a frame range).
        codec: four-character code for OpenCV's writer.
    """
    from element_lightning_pose.engine.data.video import video_info, write_video

    files = [Path(video_path)] if isinstance(video_path, (str, os.PathLike)) else [Path(p) for p in video_path]
    if not files:
        raise PlotError("no video file given")
    predictions = np.asarray(predictions, dtype=float)
    if predictions.ndim != 3 or predictions.shape[2] < 3 or predictions.shape[1] != len(bodyparts):
        raise PlotError(
            f"predictions have shape {predictions.shape}, expected (T, {len(bodyparts)}, 3) "
            f"for body parts {list(bodyparts)}"
        )
    infos = [video_info(path) for path in files]
    n_video = sum(info.n_frames for info in infos)
    stop = n_video if stop is None else min(int(stop), n_video)
    if not 0 <= start < stop:
        raise PlotError(f"{files[0]}: frame range start={start}, stop={stop} is empty (the video has {n_video} frames)")
    covered = (first_frame, first_frame + len(predictions))
    if start < covered[0] or stop > covered[1] or covered[1] > n_video:
        raise PlotError(
            f"predictions cover video frames {covered[0]}..{covered[1] - 1} but the video "
            f"{files[0]}{f' (+{len(files) - 1} files)' if len(files) > 1 else ''} has {n_video} frames "
            f"and frames {start}..{stop - 1} were requested: wrong video, or pass start/stop/first_frame"
        )
    pairs = _skeleton_indices(skeleton, bodyparts)
    first = infos[0]
    radius = dot_radius if dot_radius is not None else max(2, round(min(first.width, first.height) / 100))
    if radius < 1:
        raise PlotError(f"dot_radius must be >= 1, got {radius}")
    style = _MarkerStyle(bodypart_colours(len(bodyparts)), radius, likelihood_threshold, first.height)

    def labeled_frames() -> Iterator[np.ndarray]:
        for number, frame in _recording_frames(files, [i.n_frames for i in infos], start, stop):
            yield style.draw(frame, predictions[number - first_frame], pairs, number)

    return write_video(out_path, labeled_frames(), first.fps, codec=codec)


def _skeleton_indices(skeleton, bodyparts: Sequence[str]) -> list[tuple[int, int]]:
    pairs = []
    for pair in skeleton or []:
        if len(pair) != 2:
            raise PlotError(f"skeleton edge {pair!r} must be a pair of body parts")
        a, b = _select_keypoints(bodyparts, list(pair))
        pairs.append((a, b))
    return pairs


def _recording_frames(files: list[Path], counts: list[int], start: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
    """(recording frame number, RGB frame) for frames ``start:stop`` over consecutive files."""
    from element_lightning_pose.engine.data.video import VideoError, iter_frames

    offset = 0
    for path, count in zip(files, counts):
        local_start, local_stop = max(start - offset, 0), min(stop - offset, count)
        if local_start < local_stop:
            number = offset + local_start
            for frame in iter_frames(path, local_start, local_stop):
                yield number, frame
                number += 1
            if number != offset + local_stop:
                raise VideoError(f"{path}: decoding stopped at frame {number - offset} of {local_stop}")
        offset += count


class _MarkerStyle:
    """How keypoints, skeleton and frame numbers are drawn (OpenCV, in place, RGB)."""

    def __init__(self, colours: np.ndarray, radius: int, threshold: float, height: int) -> None:
        self.colours = [tuple(int(c) for c in colour) for colour in colours]
        self.radius = radius
        self.threshold = threshold
        self.ring = max(1, radius // 3)
        self.font_scale = max(0.3, height / 900)
        self.font_thickness = max(1, round(height / 450))

    def draw(self, frame: np.ndarray, pose: np.ndarray, pairs: list[tuple[int, int]], number: int) -> np.ndarray:
        frame = np.ascontiguousarray(frame)
        height, width = frame.shape[:2]
        with np.errstate(invalid="ignore"):  # NaN compares False: not drawn
            x, y, r = pose[:, 0], pose[:, 1], self.radius
            finite = (x > -r) & (x < width + r) & (y > -r) & (y < height + r)  # off-frame: not drawn
        confident = finite & (np.nan_to_num(pose[:, 2], nan=0.0) >= self.threshold)
        points = np.round(np.where(finite[:, None], pose[:, :2], 0)).astype(int)
        for a, b in pairs:
            if confident[a] and confident[b]:
                cv2.line(frame, tuple(points[a]), tuple(points[b]), (220, 220, 220), 1, cv2.LINE_AA)
        for k in np.flatnonzero(finite):
            if confident[k]:
                cv2.circle(frame, tuple(points[k]), self.radius, self.colours[k], -1, cv2.LINE_AA)
            else:  # hollow: low confidence, and the pixels under the estimate stay visible
                cv2.circle(frame, tuple(points[k]), self.radius, self.colours[k], self.ring, cv2.LINE_AA)
        self._frame_number(frame, number)
        return frame

    def _frame_number(self, frame: np.ndarray, number: int) -> None:
        text = str(number)
        (_, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, self.font_scale, self.font_thickness)
        origin = (2, 2 + height)
        # dark outline under light text: readable on any background
        cv2.putText(
            frame,
            text,
            origin,
            cv2.FONT_HERSHEY_SIMPLEX,
            self.font_scale,
            (0, 0, 0),
            self.font_thickness + 2,
            cv2.LINE_AA,
        )
        cv2.putText(
            frame,
            text,
            origin,
            cv2.FONT_HERSHEY_SIMPLEX,
            self.font_scale,
            (255, 255, 255),
            self.font_thickness,
            cv2.LINE_AA,
        )


# --------------------------------------------------------------------------------- evaluation


def plot_evaluation(errors: pd.DataFrame, out: PathLike | None = None, *, title: str | None = None) -> Figure:
    """Pixel error per body part and split: bars of the mean, a tick at the 90th percentile,
    and each labeled keypoint's error as a dot.

    Args:
        errors: long table with columns ``image, split, bodypart, error_px`` (the output of
            ``engine.inference.evaluate.evaluate``); NaN errors (unlabeled keypoints) are ignored.
        out: save the figure there, atomically.
        title: figure title.
    """
    missing = [c for c in EVALUATION_COLUMNS if c not in errors.columns]
    if missing:
        raise PlotError(
            f"errors table lacks column(s) {missing}; expected {list(EVALUATION_COLUMNS)} "
            "(the output of engine.inference.evaluate.evaluate)"
        )
    labeled = errors.dropna(subset=["error_px"])
    if labeled.empty:
        raise PlotError("errors table has no finite error_px value to plot")
    bodyparts = list(dict.fromkeys(errors["bodypart"]))
    summary = _summarise_errors(labeled, bodyparts)
    points = pd.concat([labeled, labeled.assign(bodypart=ALL_BODYPARTS)])
    return _error_figure(summary, [*bodyparts, ALL_BODYPARTS], points, out, title)


def _summarise_errors(labeled: pd.DataFrame, bodyparts: list[str]) -> pd.DataFrame:
    both = pd.concat([labeled, labeled.assign(bodypart=ALL_BODYPARTS)])
    grouped = both.groupby(["bodypart", "split"], sort=False)
    summary = grouped["error_px"].agg(mean="mean", p90=lambda v: np.percentile(v, 90), count="count")
    summary["frames"] = grouped["image"].nunique()
    return summary.reset_index()


def _error_figure(
    summary: pd.DataFrame,
    bodyparts: list[str],
    points: pd.DataFrame | None,
    out: PathLike | None,
    title: str | None,
) -> Figure:
    """Grouped bars from ``summary`` (bodypart, split, mean, p90, frames) and optional dots."""
    present = set(summary["split"])
    splits = [s for s in SPLIT_ORDER if s in present] + sorted(present - set(SPLIT_ORDER))
    width = 0.8 / len(splits)
    figure = _new_figure(max(6.0, 1.5 + 0.32 * len(bodyparts) * len(splits)), 4.6)
    ax = figure.subplots()
    rng = np.random.default_rng(0)  # fixed jitter: the same data gives the same picture
    for j, split in enumerate(splits):
        colour = SPLIT_COLOURS.get(split, "#937860")
        rows = summary[summary["split"] == split].set_index("bodypart").reindex(bodyparts)
        centres = np.arange(len(bodyparts)) - 0.4 + width * (j + 0.5)
        frames = rows["frames"].iloc[-1] if bodyparts[-1] == ALL_BODYPARTS else np.nan
        label = f"{split} ({int(frames)} frames)" if np.isfinite(frames) else split
        ax.bar(centres, rows["mean"], width=width * 0.9, color=colour, alpha=0.55, label=label)
        ax.scatter(centres, rows["p90"], marker="_", s=(width * 220) ** 2 / 40, color=colour, linewidths=2.0, zorder=4)
        if points is not None:
            in_split = points[points["split"] == split]
            position = {bp: c for bp, c in zip(bodyparts, centres)}
            xs = in_split["bodypart"].map(position).to_numpy(dtype=float)
            xs = xs + rng.uniform(-0.3, 0.3, len(xs)) * width
            ax.scatter(xs, in_split["error_px"], s=6, color=colour, alpha=0.6, linewidths=0, zorder=3)
    ax.set_xticks(np.arange(len(bodyparts)), bodyparts, rotation=45, ha="right", rotation_mode="anchor")
    if bodyparts[-1] == ALL_BODYPARTS:
        ax.axvline(len(bodyparts) - 1.5, color="0.6", linewidth=0.8)
    ax.set_ylabel("pixel error (px)")
    ax.set_ylim(bottom=0)
    ax.set_xlim(-0.6, len(bodyparts) - 0.4)
    ax.grid(True, axis="y", color="0.92", linewidth=0.6)
    ax.set_axisbelow(True)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.3", marker="_", linestyle="", markersize=12, markeredgewidth=2))
    labels.append("90th percentile")
    ax.legend(handles, labels, frameon=False, fontsize="small", loc="upper left")
    ax.set_title(title or "pixel error per body part (bars: mean)")
    if out is not None:
        save_figure(figure, out)
    return figure
