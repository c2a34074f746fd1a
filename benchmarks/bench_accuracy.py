#!/usr/bin/env python
"""Pixel error on mirror-mouse test frames after a stated training budget (the accuracy anchor).

Trains one model with ``train()`` on the mirror-mouse project (resnet18 or efficientnet_lite0,
256x256, batch 8) on Lightning Pose's own 72/9/9 split -- read from the ``set`` column of the
``predictions_pixel_error.csv`` a ``litpose train`` run wrote (``--lp-split-from``), so both
tools are scored on the same 9 test frames -- then reports the mean and median pixel error
(original-frame pixels, over labeled keypoints) per split, the wall time of ``train()`` and
the Lightning Pose anchor given with ``--anchor``.

Each call appends one row to the results file, so several budgets accumulate in one table; the
row names the CPU model it ran on (the header names the first run's command and machine).

Usage: python benchmarks/bench_accuracy.py --backbone resnet18 --epochs 150 \\
           --lp-split-from /tmp/peers/runs/r18_e10 [--pretrained] [--out results/accuracy.md]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from _common import REPO, RESULTS, command_line, cpu_model, header, markdown_table, write_results

from element_lightning_pose.engine.data.projects import load_project
from element_lightning_pose.engine.inference.evaluate import evaluate
from element_lightning_pose.engine.inference.metrics import summarise
from element_lightning_pose.engine.training import train

DEFAULT_PROJECT = REPO.parent / "shared" / "data" / "mirror-mouse-example"
LP_SPLIT_NAMES = {"train": "train", "validation": "val", "test": "test"}
COLUMNS = (
    "model",
    "epochs",
    "train wall (min)",
    "test mean px",
    "test median px",
    "val mean px",
    "train mean px",
    "when",
    "CPU",
)


def lightning_pose_split(lp_model_dir: Path, out_csv: Path) -> Path:
    """Lightning Pose's train/validation/test assignment as our ``image,split`` CSV."""
    errors = pd.read_csv(lp_model_dir / "predictions_pixel_error.csv", index_col=0)
    split = errors["set"].map(LP_SPLIT_NAMES)
    if split.isna().any():
        raise ValueError(f"{lp_model_dir}: unexpected set names {sorted(set(errors['set']) - set(LP_SPLIT_NAMES))}")
    pd.DataFrame({"image": errors.index.astype(str), "split": split.to_numpy()}).to_csv(out_csv, index=False)
    return out_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=DEFAULT_PROJECT)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--pretrained", action="store_true", help="ImageNet weights (default: random init)")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--unfreeze-epoch", type=int, default=0)
    parser.add_argument(
        "--lp-split-from", type=Path, required=True, help="a litpose train output dir (its split is reused)"
    )
    parser.add_argument(
        "--anchor",
        default="Lightning Pose 2.4.3 resnet18 random init, 100 epochs: 21.6 min, "
        "test mean 8.2 px (median 3.05), val mean 6.0 px (peer recipe, this machine)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "accuracy.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    # step decay at the same fractions of the run as the Lightning Pose anchor (1/2, 2/3, 5/6)
    milestones = sorted({max(1, args.epochs * a // b) for a, b in ((1, 2), (2, 3), (5, 6))})
    config = {
        "data": {"image_resize": [256, 256]},
        "model": {"backbone": args.backbone, "pretrained": args.pretrained},
        "training": {
            "max_epochs": args.epochs,
            "batch_size": 8,
            "unfreeze_epoch": args.unfreeze_epoch,
            "lr_milestones": milestones,
            "check_val_every_n_epoch": 5,
            "num_workers": 2,
        },
    }
    labels, _ = load_project(args.project)
    with tempfile.TemporaryDirectory() as tmp:
        config["data"]["split_file"] = str(lightning_pose_split(args.lp_split_from, Path(tmp) / "lp_split.csv"))
        started = time.perf_counter()
        result = train(config, args.project, Path(tmp) / "model", progress=False)
        wall = time.perf_counter() - started
        summary = summarise(evaluate(result.model_dir, labels), "error_px", by=("split",))
        errors = summary.loc[["train", "val", "test"], ["mean", "median", "count"]].to_dict("index")
    weights = "ImageNet" if args.pretrained else "random init"
    print(json.dumps({"wall_s": wall, "errors": errors}, indent=1))
    row = (
        f"{args.backbone}, {weights}",
        args.epochs,
        f"{wall / 60:.1f}",
        f"{errors['test']['mean']:.2f}",
        f"{errors['test']['median']:.2f}",
        f"{errors['val']['mean']:.2f}",
        f"{errors['train']['mean']:.2f}",
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        cpu_model(),
    )
    columns, separator, line = markdown_table(COLUMNS, [row])
    if args.out.exists():
        lines = args.out.read_text().splitlines()
        if columns not in lines:
            raise SystemExit(f"{args.out}: its table does not have the columns {columns}; give another --out")
    else:
        lines = [
            *header("Accuracy on mirror-mouse test frames after a stated budget"),
            "Mirror-mouse-example (90 labeled frames, 17 keypoints, 406x396), Lightning Pose's own 72/9/9 split",
            "(seed 0, read from its `predictions_pixel_error.csv`), 256x256, batch 8, Adam 1e-3 halved at 1/2, 2/3",
            "and 5/6 of the epochs, our default augmentation, validation every 5 epochs, best checkpoint by",
            "validation loss, 2 torch threads + 2 DataLoader workers on the 2-core CPU. Errors: Euclidean distance in",
            "original-frame pixels over labeled keypoints (as Lightning Pose's `predictions_pixel_error.csv`).",
            "",
            f"Anchor: {args.anchor}.",
            "",
            columns,
            separator,
        ]
    # the new row goes under the table's last row: notes written below the table stay below it
    end = lines.index(columns)
    while end + 1 < len(lines) and lines[end + 1].startswith("|"):
        end += 1
    write_results(args.out, [*lines[: end + 1], line, *lines[end + 1 :]])
    print(f"appended to {args.out}; command: {command_line()}")


if __name__ == "__main__":
    main()
