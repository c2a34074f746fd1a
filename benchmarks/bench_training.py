#!/usr/bin/env python
"""Supervised training throughput on mirror-mouse (labeled frames / s, augmentation included).

Side by side in one run, resnet18, 256x256, batch 8, random init:

* ``train()``: the real entry point (Lightning loop, DataLoader workers, augmentation,
  resizing, heatmap targets, loss, Adam, checkpointing, validation); frames/s from the
  per-epoch wall times of ``metrics.csv`` (epoch 0 excluded: it includes start-up);
* ``bare``: forward + loss + backward + Adam step on one pre-made batch repeated, no data
  loading -- the compute ceiling.

* ``lightning pose``: ``litpose train`` 2.4.3 with the same backbone, resize, batch size,
  epochs and validation period, in the peer venv built by ../shared/peers/lightning_pose/
  run_baseline.sh (``--lp-venv``); per-epoch times from its TensorBoard log (the peer's
  ``epoch_times.py``). Runs only when that venv exists.

Usage: python benchmarks/bench_training.py [--project DIR] [--epochs 6] [--lp-venv /tmp/peers/venv]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import REPO, RESULTS, header, markdown_table, write_results

from element_lightning_pose.engine.networks import HeatmapNet
from element_lightning_pose.engine.training import train
from element_lightning_pose.engine.training.losses import heatmap_mse

DEFAULT_PROJECT = REPO.parent / "shared" / "data" / "mirror-mouse-example"
PEER_RECIPE = REPO.parent / "shared" / "peers" / "lightning_pose"
VAL_EVERY = 5  # Lightning Pose's validation period in the peer config; ours uses the same


def lightning_pose_epochs(venv: Path, project: Path, epochs: int, out_dir: Path) -> list[float]:
    """Per-epoch wall times of ``litpose train`` (resnet18, 256x256, batch 8) in ``venv``."""
    config = out_dir / "config_mirror_cpu.yaml"
    config.write_text((PEER_RECIPE / "config_mirror_cpu.yaml").read_text().replace("__DATA__", str(project)))
    run_dir = out_dir / "lp_model"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    subprocess.run(
        [
            str(venv / "bin" / "litpose"),
            "train",
            str(config),
            "--output_dir",
            str(run_dir),
            "--overrides",
            "model.backbone=resnet18",
            f"training.min_epochs={epochs}",
            f"training.max_epochs={epochs}",
            f"training.check_val_every_n_epoch={VAL_EVERY}",
            f"training.lr_scheduler_params.multisteplr.milestones=[{epochs}]",
        ],
        check=True,
        env=env,
        cwd=out_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    summary = out_dir / "lp_epochs.json"
    subprocess.run(
        [str(venv / "bin" / "python"), str(PEER_RECIPE / "epoch_times.py"), str(run_dir), "--json", str(summary)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return json.loads(summary.read_text())["epoch_seconds"]


def bare_fps(backbone: str, batch_size: int, size: tuple[int, int], n_keypoints: int, steps: int) -> float:
    torch.manual_seed(0)
    net = HeatmapNet(backbone, n_keypoints, pretrained=False).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    images = torch.randint(0, 256, (batch_size, 3, *size), dtype=torch.uint8)
    keypoints = torch.rand(batch_size, n_keypoints, 2) * torch.tensor([size[1] - 1, size[0] - 1])

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        heatmap_mse(net(images), keypoints).backward()
        optimizer.step()

    step()  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=DEFAULT_PROJECT)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument(
        "--lp-venv", type=Path, default=Path("/tmp/peers/venv"), help="Lightning Pose 2.4.3 venv (peer recipe)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "training.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    size, batch = (256, 256), 8
    config = {
        "data": {"image_resize": list(size)},
        "model": {"backbone": "resnet18", "pretrained": False},
        "training": {
            "max_epochs": args.epochs,
            "unfreeze_epoch": 0,
            "batch_size": batch,
            "num_workers": args.workers,
            "check_val_every_n_epoch": VAL_EVERY,
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = train(config, args.project, Path(tmp) / "model", progress=False)
        ours_total = time.perf_counter() - started
        n_train = json.loads((result.model_dir / "model.json").read_text())["n_train"]
        lp_epoch_s: list[float] = []
        lp_total = None
        if (args.lp_venv / "bin" / "litpose").exists():
            started = time.perf_counter()
            lp_epoch_s = lightning_pose_epochs(args.lp_venv, args.project.resolve(), args.epochs, Path(tmp))
            lp_total = time.perf_counter() - started
    history = result.history
    epoch_s = np.diff(np.concatenate([[0.0], history["elapsed_s"].to_numpy()]))[1:]  # epoch 0 (start-up) excluded
    fps_train = n_train / np.median(epoch_s)
    n_keypoints = 17
    fps_bare = bare_fps("resnet18", batch, size, n_keypoints, steps=9)
    print(
        f"train(): {np.median(epoch_s):.2f} s/epoch ({n_train} frames) = {fps_train:.1f} frames/s; bare {fps_bare:.1f} frames/s"
    )
    lp_rows: list[str] = []
    if lp_epoch_s:
        lp_median = float(np.median(lp_epoch_s[1:]))
        print(f"lightning pose: {lp_median:.2f} s/epoch; per epoch {lp_epoch_s}")
        lp_rows = [
            f"| Lightning Pose 2.4.3 `litpose train`, same settings, same run (median of epochs 1..{args.epochs - 1}) | "
            f"{lp_median:.2f} | {n_train / lp_median:.1f} |",
            "",
            f"**Ours / Lightning Pose training throughput: {lp_median / np.median(epoch_s):.2f}x** (target >= 1.3x). "
            f"Whole runs, process start to end, {args.epochs} epochs: ours `train()` {ours_total:.0f} s, "
            f"`litpose train` {lp_total:.0f} s (start-up, data setup and the final predictions LP writes included).",
            "",
            f"Lightning Pose per-epoch times: {', '.join(f'{s:.2f}' for s in lp_epoch_s)} s (epoch 0 includes start-up).",
        ]

    lines = [
        *header("Supervised training throughput"),
        f"Project: mirror-mouse-example ({n_train} training frames of 406x396), resnet18 random init, "
        f"{size[0]}x{size[1]}, batch {batch}, augmentation on (defaults), validation every {VAL_EVERY} epochs "
        f"(as in the Lightning Pose peer config), {args.workers} DataLoader workers each.",
        "",
        *markdown_table(
            ("run", "s / epoch", "labeled frames / s"),
            [
                (
                    f"ours, `train()` (median of epochs 1..{args.epochs - 1}; includes validation and checkpointing)",
                    f"{np.median(epoch_s):.2f}",
                    f"{fps_train:.1f}",
                ),
                (
                    "bare forward + backward + Adam on a fixed batch (ceiling)",
                    f"{n_train / fps_bare:.2f}",
                    f"{fps_bare:.1f}",
                ),
            ],
        ),
        *lp_rows,
        "",
        f"Per-epoch times of our run (epochs 1..): {', '.join(f'{s:.2f}' for s in epoch_s)} s.",
        f"`train()` reaches {100 * fps_train / fps_bare:.0f}% of the bare ceiling.",
        "Noise: the machine is shared; repeated runs vary by ~10-20%.",
    ]
    write_results(args.out, lines)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
