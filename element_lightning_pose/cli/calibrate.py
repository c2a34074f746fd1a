"""``elp calibrate``: calibrate a camera rig from board videos (ChArUco or checkerboard)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from element_lightning_pose.cli import ArgumentError
from element_lightning_pose.engine.atomic import check_output
from element_lightning_pose.engine.safe_paths import check_name


def configure_parser(parser: argparse.ArgumentParser, command: str = "calibrate") -> None:
    """Arguments of ``elp calibrate``."""
    parser.add_argument(
        "board",
        type=Path,
        help="BOARD.toml: board_type, board_x, board_y, square_length, "
        "marker_length, marker_bits, dict_size (or anipose's [calibration]; without board_type, "
        "as sleap-anipose writes it: ChArUco if marker_length is given, else checkerboard)",
    )
    parser.add_argument(
        "--video",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="board video of camera NAME (repeat per camera, same frames in every video; one video per camera)",
    )
    parser.add_argument(
        "--min-corners",
        type=int,
        default=6,
        help="corners a frame needs to count as a board view (default 6; at least 4)",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="calibration.toml to write")


def parse_videos(items: list[str]) -> dict[str, Path]:
    """``NAME=PATH`` items -> {name: path}; a name given twice, or one video given to two
    cameras (after resolving links), is an error."""
    from element_lightning_pose.engine.multicam.boards import check_distinct_videos

    videos: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ArgumentError(f"--video {item!r} is not NAME=PATH")
        if name in videos:
            raise ArgumentError(f"--video: camera {name!r} given twice ({videos[name]} and {path})")
        videos[name] = Path(path)
    check_distinct_videos(videos)
    return videos


def run(args: argparse.Namespace) -> int:
    """Detect, calibrate, bundle-adjust, write ``calibration.toml``; print the error per camera."""
    from tqdm import tqdm

    from element_lightning_pose.engine.multicam.boards import detect_video, read_board
    from element_lightning_pose.engine.multicam.calibrate import ShortBaselineWarning, calibrate
    from element_lightning_pose.engine.multicam.cameras import write_calibration

    notes: list[str] = []
    board = read_board(args.board, notes=notes)
    min_corners = board.check_min_corners(args.min_corners)
    videos = parse_videos(args.video)
    check_inputs_and_output(args, videos)
    print(f"board: {board.describe()}")
    for note in notes:
        print(note)
    detections, sizes = {}, {}
    for name, path in tqdm(videos.items(), desc="detecting", unit="video", disable=len(videos) < 2):
        detections[name], sizes[name], _ = detect_video(board, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ShortBaselineWarning)
        result = calibrate(board, detections, sizes, min_corners=min_corners)
    write_calibration(result.group, args.output)
    for name, error, before, views in zip(result.group.names, result.errors, result.initial_errors, result.n_frames):
        print(
            f"{name}: {views} board views, reprojection error {error:.3f} px (before bundle adjustment {before:.3f} px)"
        )
    print(f"wrote {args.output}")
    for warning in caught:
        if issubclass(warning.category, ShortBaselineWarning):
            print(f"elp calibrate: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return 0


def check_inputs_and_output(args: argparse.Namespace, videos: dict[str, Path]) -> None:
    """Before minutes of board detection: camera names that can name files, and an output that
    can be written and is none of the inputs."""
    for name in videos:
        check_name(name, "--video: camera name")
    check_output(args.output, inputs=[args.board, *videos.values()], what="-o")
