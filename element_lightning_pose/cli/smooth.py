"""``elp smooth MEMBER.csv ... -o OUT.csv``: the Ensemble Kalman Smoother over member CSVs."""

from __future__ import annotations

import argparse
from pathlib import Path

from element_lightning_pose.cli import fail
from element_lightning_pose.engine.atomic import check_output
from element_lightning_pose.engine.eks import (
    CENTRES,
    NOISE_MODELS,
    OUTLIER_MODES,
    VAR_MODES,
    SmoothingParams,
    smooth_ensemble,
)
from element_lightning_pose.engine.errors import ProjectError


def configure_parser(parser: argparse.ArgumentParser, command: str = "smooth") -> None:
    """Arguments of ``elp smooth``."""
    parser.add_argument("members", nargs="+", type=Path, help="prediction CSVs, one per member")
    parser.add_argument("-o", "--output", type=Path, required=True, help="smoothed CSV to write")
    parser.add_argument(
        "--s",
        type=float,
        default=None,
        dest="smooth_param",
        help="fixed random-walk variance s (px^2/frame); default: fitted",
    )
    parser.add_argument("--centre", choices=CENTRES, default="median")
    parser.add_argument("--var-mode", choices=VAR_MODES, default="confidence_weighted")
    parser.add_argument(
        "--noise",
        choices=NOISE_MODELS,
        default="auto",
        help="noise model: eks's (ensemble variance as is), calibrated (shrunk "
        "and scaled by a fitted factor); auto: eks with --s, else calibrated",
    )
    parser.add_argument(
        "--outliers",
        choices=OUTLIER_MODES,
        default="auto",
        help="reject members far from the smoothed trace (confident outliers) "
        "and smooth again; none: every member counts (eks); auto: reject "
        "unless --s is given",
    )
    parser.add_argument(
        "--outlier-threshold",
        type=float,
        default=5.0,
        metavar="R",
        help="rejection threshold in robust standard deviations (>= 2)",
    )
    parser.add_argument(
        "--fit-range",
        default=None,
        metavar="START:STOP[,START:STOP]",
        help="frames used to fit s (0-based, stop excluded; empty = open end)",
    )
    parser.add_argument(
        "--keypoint-groups",
        default=None,
        metavar="A,B;C,D",
        help="keypoints (names or indices) sharing one s, groups split by ';'",
    )
    parser.add_argument(
        "--view-groups",
        default=None,
        metavar="A_top,A_bot;B_top,B_bot",
        help="multi-view: the same keypoint in each view, groups split by ';'",
    )


# How the CLI spells each parameter, so that an error names the option the user typed.
CLI_NAMES = {
    "s": "--s",
    "centre": "--centre",
    "var_mode": "--var-mode",
    "noise": "--noise",
    "fit_range": "--fit-range",
    "keypoint_groups": "--keypoint-groups",
    "outliers": "--outliers",
    "outlier_threshold": "--outlier-threshold",
    "view_groups": "--view-groups",
}


def run(args: argparse.Namespace) -> int:
    """Smooth the member CSVs and write the eks-layout CSV; print s per keypoint.

    Bad input (a parameter, a member file) is one line on stderr and exit status 2; nothing
    is written.
    """
    check_output(args.output, inputs=args.members, what="-o")
    try:
        params = SmoothingParams.from_dict(
            {
                "s": args.smooth_param,
                "centre": args.centre,
                "var_mode": args.var_mode,
                "noise": args.noise,
                "fit_range": args.fit_range,
                "keypoint_groups": args.keypoint_groups,
                "outliers": args.outliers,
                "outlier_threshold": args.outlier_threshold,
                "view_groups": args.view_groups,
            },
            source="invalid options",
            key_names=CLI_NAMES,
        )
        result = smooth_ensemble(args.members, params=params)
    except (ProjectError, ValueError) as exc:
        return fail("smooth", exc)
    try:
        path = result.to_csv(args.output)
    except OSError as exc:  # e.g. a parent that is a file, a folder without write permission
        return fail("smooth", f"cannot write {args.output} ({exc})")
    for name, s_value in zip(result.bodyparts, result.s):
        print(f"{name}\ts={s_value:.6g}")
    print(f"wrote {path}")
    return 0
