"""``elp demo``: the whole pipeline on a local database (see :mod:`element_lightning_pose.demo`)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from element_lightning_pose import demo


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
    parser.add_argument("--models", type=int, default=2, help="ensemble size (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=120, help="training epochs per model (default: %(default)s)")
    parser.add_argument("--backbone", default="efficientnet_lite0", help="(default: %(default)s, ImageNet weights)")
    parser.add_argument("--resize", type=int, default=128, help="network input size (default: %(default)s)")
    parser.add_argument("--image-size", type=int, default=128, help="synthetic frame size (default: %(default)s)")
    parser.add_argument("--labeled", type=int, default=60, help="synthetic labeled frames (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=600, help="synthetic frames per video (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        summary = demo.run_demo(args)
    except Exception as exc:  # any failure of a long run: the cause plainly, the traceback one flag away
        if os.environ.get("ELP_DEBUG"):
            raise
        print(f"\ndemo failed: {type(exc).__name__}: {exc}\n(set ELP_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    demo.print_summary(summary, time.perf_counter() - start)
    return 0
