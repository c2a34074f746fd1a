"""``elp train``: train a pose model on a labeled project, without a database."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from element_lightning_pose.cli import fail
from element_lightning_pose.engine.atomic import check_output
from element_lightning_pose.engine.config import PRESETS


def configure_parser(parser: argparse.ArgumentParser, command: str = "train") -> None:
    parser.add_argument("config_or_project", help="a config YAML, or a project folder (then default parameters)")
    parser.add_argument(
        "--project", help="labeled project folder (CollectedData.csv, labeled-data/, videos/; or a DeepLabCut project)"
    )
    parser.add_argument("--model-dir", required=True, help="output folder of the trained model")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter, e.g. --set training.max_epochs=20 (repeatable)",
    )
    parser.add_argument(
        "--preset",
        help="the parameters to start from, before --set: 'auto' (the default for a project folder: picked from the "
        "project, see docs/small_animals.md), " + ", ".join(PRESETS) + ", or 'none' (the config as written)",
    )
    parser.add_argument(
        "--resume",
        help="checkpoint to resume from: MODEL_DIR/checkpoints/last.ckpt, or the one in MODEL_DIR.stopped that a run "
        "stopped by a signal names (MODEL_DIR.stopped/checkpoints/last.ckpt for one network; for crop zoom or one "
        "network per view, the stopped stage's or view's, and the finished ones are reused)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from element_lightning_pose.engine.config import AUTO_PRESET, ConfigError, TrainConfig
    from element_lightning_pose.engine.data.projects import DEFAULT_CSV, detect_layout
    from element_lightning_pose.engine.training import PerViewResult, TrainingInterrupted, train
    from element_lightning_pose.engine.training.advice import advise_project, resolve_preset

    source = Path(args.config_or_project)
    if source.is_dir():  # a project folder: the defaults, with preset auto unless --preset names another
        project, config = Path(args.project) if args.project else source, TrainConfig(preset=AUTO_PRESET)
    else:
        if not args.project:
            raise ConfigError("--project is required when the first argument is a config file")
        project, config = Path(args.project), TrainConfig.from_yaml(source)
    # the model folder is replaced whole at the end: it must not be, or hold, the project
    check_output(args.model_dir, folder=True, replaced_whole=True, inputs=[project], what="--model-dir")
    if config.data.csv_file == DEFAULT_CSV:  # say which layout was found when none was named
        layout = detect_layout(project)
        if layout.kind != "lightning_pose":
            views = f", views {layout.view_names}" if layout.view_names else ""
            print(f"{project}: {layout.kind} project ({layout.csv_file}{views})")
    if args.preset == "none":
        config = config.model_copy(update={"preset": None})
    try:
        # the preset first, then --set on top of it
        resolved = resolve_preset(config, project, args.preset if args.preset != "none" else None, args.overrides)
        config = resolved.config
        print(advise_project(project, config).summary(), flush=True)  # how large the animal is, what to train
        for note in resolved.notes:  # what the preset resolved to, and why
            print(note, flush=True)
        # any layout: Lightning Pose's (one CSV or one per view), DeepLabCut's (config.yaml + labeled-data/)
        result = train(config, project, args.model_dir, resume_from=args.resume, progress=not args.no_progress)
    except (FileNotFoundError, FileExistsError) as exc:  # a missing project, a folder that is not a model's
        return fail("train", exc)
    except TrainingInterrupted as exc:  # not a failure of the input: the status a shell gives the signal
        try:
            print(f"elp train: {exc}", file=sys.stderr)
        except OSError:  # SIGHUP: the terminal is gone, and writing to it fails (EIO)
            pass
        return int(exc.code)
    if isinstance(result, PerViewResult):
        for view, view_result in result.views.items():
            best = "n/a" if view_result.best_val_loss is None else f"{view_result.best_val_loss:.5g}"
            print(f"view {view}: {view_result.epochs} epoch(s), best val loss {best}; model in {view_result.model_dir}")
        print(f"trained {len(result.views)} view(s) in {result.wall_time_s:.1f} s; models in {result.model_dir}")
        return 0
    best = "n/a" if result.best_val_loss is None else f"{result.best_val_loss:.5g}"
    print(
        f"trained {result.epochs} epoch(s) in {result.wall_time_s:.1f} s; best val loss {best}; "
        f"model in {result.model_dir}"
    )
    return 0
