"""``elp plot traces|video|evaluation``: figures and labeled videos from CSV and video files."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from element_lightning_pose.cli import ArgumentError, fail
from element_lightning_pose.engine.atomic import check_output
from element_lightning_pose.engine.data.keypoints import read_keypoint_csv, read_predictions
from element_lightning_pose.engine.eks import parse_fit_range
from element_lightning_pose.engine.errors import ElpError, ProjectError
from element_lightning_pose.plotting.core import plot_evaluation, plot_traces, write_labeled_video


def configure_parser(parser: argparse.ArgumentParser, command: str = "plot") -> None:
    """Arguments of ``elp plot`` (database-free: works on CSV and video files)."""
    sub = parser.add_subparsers(dest="plot_command", metavar="WHAT", required=True)

    traces = sub.add_parser(
        "traces",
        help="x, y, likelihood over time from a predictions or EKS CSV",
        description="Trace plot of a predictions CSV (LP/DLC layout) or an EKS CSV.",
    )
    traces.add_argument("predictions", type=Path, help="predictions CSV (3-row header)")
    traces.add_argument("-o", "--output", type=Path, required=True, help="figure to write (.png, .svg, .pdf)")
    traces.add_argument(
        "--eks",
        action="store_true",
        help="the CSV is an EKS output: draw the 95%% posterior band (required columns "
        "x_posterior_var, y_posterior_var; the band is also drawn without --eks "
        "when they are present)",
    )
    traces.add_argument(
        "--members",
        type=Path,
        nargs="+",
        default=None,
        metavar="CSV",
        help="ensemble members' prediction CSVs, drawn as thin grey lines",
    )
    traces.add_argument("--fps", type=float, default=None, help="frames per second (time axis in s)")
    traces.add_argument("--keypoints", nargs="+", default=None, metavar="NAME", help="body parts to show")
    traces.add_argument(
        "--frames",
        default=None,
        metavar="START:STOP",
        help="rows to show (0-based, STOP excluded, either may be empty)",
    )
    traces.add_argument("--threshold", type=float, default=0.9, help="likelihood threshold line (default 0.9)")

    video = sub.add_parser(
        "video",
        help="labeled video: keypoints drawn on the frames",
        description="Draw a predictions CSV on its video and write an mp4.",
    )
    video.add_argument("video", type=Path, help="the video the predictions were made on")
    video.add_argument("predictions", type=Path, help="predictions or EKS CSV (index: frame number)")
    video.add_argument("-o", "--output", type=Path, required=True, help="labeled video to write (.mp4)")
    video.add_argument("--start", type=int, default=0, help="first video frame (default 0)")
    video.add_argument("--stop", type=int, default=None, help="stop before this video frame (default: end)")
    video.add_argument(
        "--threshold",
        type=float,
        default=0.9,
        help="likelihood below which a keypoint is a hollow circle (default 0.9)",
    )
    video.add_argument(
        "--skeleton",
        default=None,
        metavar="A-B,C-D",
        help="body-part pairs joined by lines, e.g. nose-head,head-centre",
    )
    video.add_argument("--radius", type=int, default=None, help="dot radius in pixels")

    evaluation = sub.add_parser(
        "evaluation",
        help="pixel error per body part and split",
        description="Bar plot of a per-image error table (columns image, "
        "split, bodypart, error_px) as engine.inference.evaluate.evaluate writes.",
    )
    evaluation.add_argument("errors", type=Path, help="errors CSV (one header row)")
    evaluation.add_argument("-o", "--output", type=Path, required=True, help="figure to write")


def run(args: argparse.Namespace) -> int:
    """Run ``elp plot traces|video|evaluation``; 2 on bad input, with the reason on stderr."""
    check_output(args.output, inputs=_inputs(args), what="-o")
    try:
        if args.plot_command == "traces":
            path = _traces(args)
        elif args.plot_command == "video":
            path = _video(args)
        else:
            path = _evaluation(args)
    except ElpError as exc:  # every bad input (files, options, video) names itself
        return fail(f"plot {args.plot_command}", exc)
    print(f"wrote {path}")
    return 0


def _inputs(args: argparse.Namespace) -> list[Path]:
    """The files a plot reads (its output must be none of them)."""
    if args.plot_command == "traces":
        return [args.predictions, *(args.members or [])]
    if args.plot_command == "video":
        return [args.video, args.predictions]
    return [args.errors]


def _read_estimates(path: Path) -> tuple[np.ndarray, list[str], np.ndarray | None, pd.Index]:
    """(T, K, 3) x/y/likelihood, body parts, (T, K, 2) posterior variance or None, index."""
    values, bodyparts, coords, index = read_keypoint_csv(path)
    missing = [c for c in ("x", "y", "likelihood") if c not in coords]
    if missing:
        raise ProjectError(f"{path}: coordinate columns {missing} missing (found {coords})")
    pick = [coords.index(c) for c in ("x", "y", "likelihood")]
    posterior = None
    if "x_posterior_var" in coords and "y_posterior_var" in coords:
        posterior = values[..., [coords.index("x_posterior_var"), coords.index("y_posterior_var")]]
    return values[..., pick], bodyparts, posterior, index


def _first_frame(index: pd.Index) -> int:
    """Video frame of the first row: the CSV index when it counts frames, else 0."""
    numbers = pd.to_numeric(pd.Series(index), errors="coerce").to_numpy()
    if len(numbers) and np.isfinite(numbers).all() and np.array_equal(numbers, numbers[0] + np.arange(len(numbers))):
        return int(numbers[0])
    return 0


def _traces(args: argparse.Namespace) -> Path:
    values, bodyparts, posterior, index = _read_estimates(args.predictions)
    if args.eks and posterior is None:
        raise ProjectError(
            f"{args.predictions}: --eks needs the columns x_posterior_var and y_posterior_var "
            "(an EKS CSV as `elp smooth` writes)"
        )
    members = None
    if args.members:
        arrays = []
        for member in args.members:
            member_values, member_parts = read_predictions(member)
            if member_parts != bodyparts or len(member_values) != len(values):
                raise ProjectError(
                    f"{member}: {len(member_values)} frames of {member_parts} do not match "
                    f"{args.predictions} ({len(values)} frames of {bodyparts})"
                )
            arrays.append(member_values)
        members = np.stack(arrays)
    frames = None
    if args.frames:
        ranges = parse_fit_range(args.frames)
        if len(ranges) != 1:
            raise ArgumentError(f"--frames takes one START:STOP, got {args.frames!r}")
        frames = ranges[0]
    plot_traces(
        values[..., 0],
        values[..., 1],
        values[..., 2],
        bodyparts,
        fps=args.fps,
        posterior_var=posterior,
        members=members,
        keypoints=args.keypoints,
        frames=frames,
        first_frame=_first_frame(index),
        likelihood_threshold=args.threshold,
        title=args.predictions.name,
        out=args.output,
    )
    return args.output


def _video(args: argparse.Namespace) -> Path:
    values, bodyparts, _, index = _read_estimates(args.predictions)
    skeleton = None
    if args.skeleton:
        skeleton = []
        for edge in args.skeleton.split(","):
            a, sep, b = edge.strip().partition("-")
            if not sep or not a or not b:
                raise ArgumentError(f"--skeleton: {edge!r} is not A-B")
            skeleton.append((a, b))
    return write_labeled_video(
        args.video,
        values,
        bodyparts,
        args.output,
        likelihood_threshold=args.threshold,
        start=args.start,
        stop=args.stop,
        skeleton=skeleton,
        dot_radius=args.radius,
        first_frame=_first_frame(index),
    )


def _evaluation(args: argparse.Namespace) -> Path:
    if not args.errors.is_file():
        raise ArgumentError(f"{args.errors}: errors table not found")
    plot_evaluation(pd.read_csv(args.errors), args.output, title=args.errors.name)
    return args.output
