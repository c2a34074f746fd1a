#!/usr/bin/env python
"""Supervised training throughput on mirror-mouse (labeled frames / s, augmentation included).

Side by side in one run, resnet18, 256x256, batch 8, random init:

* ``train()``: the real entry point (Lightning loop, DataLoader workers, augmentation,
  resizing, heatmap targets, loss, Adam, checkpointing, validation); frames/s from the
  per-epoch wall times of ``metrics.csv`` (epoch 0 excluded: it includes start-up);
* ``bare``: forward + loss + backward + Adam step on one pre-made batch repeated, no data
  loading -- the compute ceiling.

Anchor: Lightning Pose 2.4.3 on this machine took 10.7 s per 72-frame epoch (6.7 frames/s)
with the same backbone, resize and batch size (peer recipe ../shared/peers/lightning_pose).

Usage: python benchmarks/bench_training.py [--project DIR] [--epochs 4] [--out results/training.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from element_lightning_pose.engine.losses import heatmap_mse  # noqa: E402
from element_lightning_pose.engine.networks import HeatmapNet  # noqa: E402
from element_lightning_pose.engine.train import train  # noqa: E402

DEFAULT_PROJECT = REPO.parent / "shared" / "data" / "mirror-mouse-example"
LP_EPOCH_S, LP_FRAMES = 10.7, 72


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
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "training.md")
    args = parser.parse_args()
    torch.set_num_threads(2)
    size, batch = (256, 256), 8
    config = {
        "data": {"image_resize": list(size)},
        "model": {"backbone": "resnet18", "pretrained": False},
        "training": {"max_epochs": args.epochs, "unfreeze_epoch": 0, "batch_size": batch, "num_workers": args.workers},
    }
    with tempfile.TemporaryDirectory() as tmp:
        result = train(config, args.project, Path(tmp) / "model", progress=False)
        n_train = json.loads((result.model_dir / "model.json").read_text())["n_train"]
    history = result.history
    epoch_s = np.diff(history["elapsed_s"].to_numpy())
    fps_train = n_train / np.median(epoch_s)
    n_keypoints = 17
    fps_bare = bare_fps("resnet18", batch, size, n_keypoints, steps=9)
    print(f"train(): {np.median(epoch_s):.2f} s/epoch ({n_train} frames) = {fps_train:.1f} frames/s; bare {fps_bare:.1f} frames/s")

    command = "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_training.py" + (f" --epochs {args.epochs}" if args.epochs != 4 else "")
    lines = [
        "# Supervised training throughput",
        "",
        f"Command: `{command}` (torch {torch.__version__}, 2 threads, {args.workers} DataLoader workers, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other jobs; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        "",
        f"Project: mirror-mouse-example ({n_train} training frames of 406x396), resnet18 random init, "
        f"{size[0]}x{size[1]}, batch {batch}, augmentation on (defaults), validation each epoch.",
        "",
        "| run | s / epoch | labeled frames / s |",
        "|---|---|---|",
        f"| ours, `train()` (median of epochs 1..{args.epochs - 1}; includes validation and checkpointing) | "
        f"{np.median(epoch_s):.2f} | {fps_train:.1f} |",
        f"| bare forward + backward + Adam on a fixed batch (ceiling) | {n_train / fps_bare:.2f} | {fps_bare:.1f} |",
        f"| Lightning Pose 2.4.3, same settings (anchor measured earlier on this machine) | {LP_EPOCH_S} | {LP_FRAMES / LP_EPOCH_S:.1f} |",
        "",
        f"Per-epoch times of our run: {', '.join(f'{s:.2f}' for s in epoch_s)} s.",
        f"`train()` reaches {100 * fps_train / fps_bare:.0f}% of the bare ceiling.",
        "Noise: the machine's 2 cores are shared with other jobs; repeated runs vary by ~10-20%.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
