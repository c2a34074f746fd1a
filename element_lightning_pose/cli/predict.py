"""``elp predict MODEL_DIR VIDEO ... -o OUT_DIR``: keypoints of every frame, one CSV per video."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from element_lightning_pose.engine.atomic import check_output


def configure_parser(parser: argparse.ArgumentParser, command: str = "predict") -> None:
    parser.add_argument("model_dir", help="trained model folder (from elp train)")
    parser.add_argument("videos", nargs="+", help="video file(s)")
    parser.add_argument("-o", "--out-dir", required=True, help="folder for <video name>.csv predictions")
    parser.add_argument("--batch-size", type=int, default=16, help="frames per network batch (default 16)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--diagnostics",
        action="store_true",
        help="also write <video name>_diagnostics.csv: per-frame temporal norm and PCA residuals",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("auto", "fp32", "bf16", "int8", "ov-fp32", "ov-bf16"),
        help="arithmetic of the network: fp32; bf16 (CPUs with AMX or AVX512-BF16, recent GPUs); int8 (CPU, "
        "calibrated on the project's frames); ov-fp32, ov-bf16: the backbone compiled by OpenVINO (CPU, "
        "pip install element-lightning-pose[openvino]); auto = the fastest that passes the accuracy gate here. A fast "
        "path is checked against fp32 on the model's labeled frames once (kept in MODEL_DIR/precision.json); "
        "one that fails or is missing here is said so and fp32 is used (default fp32)",
    )
    parser.add_argument(
        "--project",
        help="the labeled project the model was trained on, for the precision check (default: the one "
        "model.json names)",
    )
    parser.add_argument(
        "--allow-short-video",
        action="store_true",
        help="a video that decodes fewer frames than it lists (truncated, damaged) is a warning, "
        "its missing frames NaN with likelihood 0, instead of an error",
    )


def run(args: argparse.Namespace) -> int:
    from element_lightning_pose.engine.inference.models import load_model
    from element_lightning_pose.engine.inference.precision import select_precision
    from element_lightning_pose.engine.inference.predict import ShortVideoWarning, output_names, predict_videos

    # FFmpeg's own decoder messages would bury the one-line error below (a user's setting wins)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    # bad input raises ElpErrors (a model directory, a video, two videos of one name): cli.main prints them
    names = output_names(args.videos)
    out_dir = Path(args.out_dir)
    check_output(out_dir, folder=True, what="-o")
    for name in names:  # before the model loads: no planned CSV is a video given
        for suffix in ("", "_diagnostics") if getattr(args, "diagnostics", False) else ("",):
            check_output(out_dir / f"{name}{suffix}.csv", inputs=args.videos, what="-o")
    model = load_model(args.model_dir, device=args.device)
    model, _ = select_precision(
        model,
        getattr(args, "precision", "fp32"),
        project=getattr(args, "project", None),
        batch_size=args.batch_size,
        report=lambda message: print(f"elp predict: {message}", file=sys.stderr),
    )
    diagnostics = getattr(args, "diagnostics", False)
    out_csvs = [out_dir / f"{name}.csv" for name in names]

    def done(result) -> None:
        print(f"{result.video}: {result.n_frames} frames -> {result.out_csv} ({result.frames_per_s:.1f} frames/s)")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ShortVideoWarning)
        predict_videos(
            model,
            args.videos,
            out_csvs,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            diagnostics_csvs=[out_dir / f"{name}_diagnostics.csv" if diagnostics else None for name in names],
            allow_short=getattr(args, "allow_short_video", False),
            on_done=done,
        )
    for warning in caught:
        if issubclass(warning.category, ShortVideoWarning):
            print(f"elp predict: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return 0
