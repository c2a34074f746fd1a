#!/usr/bin/env python
"""What the unsupervised losses cost per training step, by clip length (issue #27: at most 1.5x).

One labeled project (mirror-mouse by default: its 994-frame video is the unlabeled data), one
backbone and input, the same labeled batch for every arm:

* ``supervised``: the labels only;
* ``clipN``: the same plus the temporal and pose-PCA losses on one N-frame unlabeled clip per
  step (``losses.clip_length=N``).

Each repeat trains every arm once, in turn. The cost of a run is the CPU seconds per optimizer
step of its epochs after the first (``train_cpu_s`` of the history: the process's CPU time on
the epoch's batches, which other jobs of a shared machine do not inflate as they inflate the
wall time; start-up and the frame cache excluded: the cache is built once and shared); the wall
seconds per step are shown beside it. An arm's ratio is taken to the supervised run of the same
repeat, and the table gives the median over repeats. Run it with OMP_NUM_THREADS=1 so that
CPU time is the work of one core.

Usage: python benchmarks/bench_unsupervised_cost.py [--project DIR] [--clips 16 8 4] [--epochs 4]
           [--repeats 2] [--resize 256] [--out benchmarks/results/unsupervised_cost.md]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from _common import RESULTS, header, markdown_table, write_results
from bench_semisupervised import MIRROR_MOUSE, base_config

from element_lightning_pose.engine.training import train


def arm_config(arm: str, args: argparse.Namespace, cache_dir: Path) -> dict:
    config = base_config(args.epochs, seed=0, resize=(args.resize, args.resize), batch=args.batch)
    config["training"]["lr_milestones"] = []
    config["model"]["backbone"] = args.backbone
    if arm != "supervised":
        config["losses"] = {
            "unsupervised": ["temporal", "pca_singleview"],
            "clip_length": int(arm.removeprefix("clip")),
            "warmup_epochs": 0,
            "cache_dir": str(cache_dir),
        }
    return config


def step_costs(result) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per optimizer step of the run's epochs after the first."""
    history = result.history
    steps = float(history["step"].iloc[-1] - history["step"].iloc[0])
    cpu = float(history["train_cpu_s"].iloc[1:].sum())
    wall = float(history["elapsed_s"].iloc[-1] - history["elapsed_s"].iloc[0])
    return cpu / steps, wall / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path(os.environ.get("LP_EXAMPLE_DATA", MIRROR_MOUSE)))
    parser.add_argument("--clips", type=int, nargs="+", default=[16, 8, 4])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--resize", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--out", type=Path, default=RESULTS / "unsupervised_cost.md")
    args = parser.parse_args()

    arms = ["supervised", *[f"clip{n}" for n in args.clips]]
    steps: dict[str, list[float]] = {arm: [] for arm in arms}
    walls: dict[str, list[float]] = {arm: [] for arm in arms}
    ratios: dict[str, list[float]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory(prefix="elp-unsup-cost-") as tmp:
        work = Path(tmp)
        for repeat in range(args.repeats):
            for arm in arms:
                result = train(
                    arm_config(arm, args, work / "cache"), args.project, work / f"{arm}_{repeat}", progress=False
                )
                cpu, wall = step_costs(result)
                steps[arm].append(cpu)
                walls[arm].append(wall)
                print(f"repeat {repeat} {arm}: {cpu:.3f} CPU s/step, {wall:.3f} wall s/step", flush=True)
            for arm in arms:
                ratios[arm].append(steps[arm][-1] / steps["supervised"][-1])
    rows = [
        (
            arm,
            "-" if arm == "supervised" else arm.removeprefix("clip"),
            f"{np.median(steps[arm]):.3f}",
            f"{np.median(walls[arm]):.3f}",
            f"{np.median(ratios[arm]):.2f}x",
            ", ".join(f"{r:.2f}" for r in ratios[arm]),
        )
        for arm in arms
    ]
    lines = header("What the unsupervised losses cost per step")
    lines += [
        f"Project `{args.project.name}`, {args.backbone} (ImageNet), input {args.resize}x{args.resize}, labeled batch "
        f"{args.batch}, {args.epochs} epochs per run (the first excluded), {args.repeats} repeats, arms interleaved; "
        "losses temporal + pose PCA, no warm-up.",
        "",
        *markdown_table(
            ["arm", "clip frames", "CPU s / step", "wall s / step", "CPU cost vs supervised", "per repeat"], rows
        ),
    ]
    print(write_results(args.out, lines))


if __name__ == "__main__":
    main()
