"""``elp demo``: the whole pipeline on a local database (see :mod:`element_lightning_pose.demo`)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from element_lightning_pose import demo
from element_lightning_pose.engine.atomic import check_output


def configure_parser(parser: argparse.ArgumentParser, command: str = "demo") -> None:
    parser.add_argument("--out", default="demo_output", help="output folder (default: %(default)s)")
    parser.add_argument(
        "--backend",
        choices=["postgresql", "mysql"],
        default="postgresql",
        help="private server to start when DJ_HOST is not set",
    )
    parser.add_argument("--prefix", default=demo.DEMO_PREFIX, help="schema prefix (default: %(default)s)")
    parser.add_argument("--project", help="an LP/DeepLabCut project folder to use instead of synthetic data")
    parser.add_argument("--videos", nargs="+", help="session video file(s) (default: the project's first video)")
    parser.add_argument(
        "--rig",
        "--multiview",
        dest="rig",
        action="store_true",
        help="the calibrated camera-rig demo instead: board videos -> calibration -> one network for the views "
        "-> pose per camera -> 3D -> plots -> NWB (--multiview is its former name)",
    )
    parser.add_argument("--cameras", type=int, default=3, help="--rig: cameras of the rig (default: %(default)s)")
    parser.add_argument(
        "--board-frames",
        type=int,
        default=120,
        help="--rig: frames of each board video; with 12 the calibration alone put the 3D points 30 mm off, "
        "with 120 about 3 mm (default: %(default)s)",
    )
    parser.add_argument(
        "--min-likelihood",
        type=float,
        default=0.1,
        help="--rig: 2D predictions below this likelihood are left out of the 3D; the demo's networks, "
        "trained for minutes, are rarely more confident than 0.5 (default: %(default)s)",
    )
    parser.add_argument(
        "--max-train-s",
        type=float,
        default=240.0,
        help="--rig: stop training a model after this many seconds, whatever the epochs, so that the demo "
        "keeps its time on a busy machine; 0: no limit (default: %(default)s)",
    )
    parser.add_argument("--models", type=int, help="ensemble size (default: 2; 1 with --rig)")
    parser.add_argument("--epochs", type=int, help="training epochs per model (default: 120; 70 with --rig)")
    parser.add_argument("--backbone", default="efficientnet_lite0", help="(default: %(default)s, ImageNet weights)")
    parser.add_argument(
        "--resize",
        type=int,
        help="network input size (default: 128; with --rig the side of the square crops around the animal "
        "that its pose network sees, 96, after a detector of the whole frame)",
    )
    parser.add_argument(
        "--image-size", type=int, help="synthetic frame size (default: 128; with --rig the width, default 320)"
    )
    parser.add_argument("--labeled", type=int, help="synthetic labeled frames (default: 60; per view 30 with --rig)")
    parser.add_argument("--frames", type=int, help="synthetic frames per video (default: 600; 300 with --rig)")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    check_output(args.out, folder=True, what="--out")
    try:
        demo.fill_defaults(args)
        summary = demo.run_rig_demo(args) if args.rig else demo.run_demo(args)
    except Exception as exc:  # any failure of a long run: the cause plainly, the traceback one flag away
        if os.environ.get("ELP_DEBUG"):
            raise
        print(f"\ndemo failed: {type(exc).__name__}: {exc}\n(set ELP_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    printer = demo.print_rig_summary if args.rig else demo.print_summary
    printer(summary, time.perf_counter() - start)
    return 0
