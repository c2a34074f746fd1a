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

* ``bf16``: the same ``train()`` with ``training.precision: bf16`` (CPUs with native bf16), run to
  the same epochs: its validation error must stay within 5% of fp32's.

The peer venv is built by its recipe when missing (``ensure_peer_venv``); where that fails the
table says so with the error.

Usage: python benchmarks/bench_training.py [--project DIR] [--epochs 30] [--lp-epochs 6]
       [--lp-venv /tmp/peers/venv] [--keep-models DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _common import REPO, RESULTS, THREADS, header, markdown_table, thread_env, write_results

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
    env = thread_env()
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


def bare_network(backbone: str, n_keypoints: int, bf16: bool = False) -> HeatmapNet:
    """The network as ``train()`` trains it (channels-last, seed 0), without Lightning."""
    torch.manual_seed(0)
    net = HeatmapNet(backbone, n_keypoints, pretrained=False).train().to(memory_format=torch.channels_last)
    net.backbone_autocast = torch.bfloat16 if bf16 else None
    return net


def bare_step(
    net: torch.nn.Module,
    batch_size: int,
    size: tuple[int, int],
    n_keypoints: int,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Callable[[], None]:
    """One forward + loss + backward + Adam step of ``net`` (through ``forward``, e.g. compiled)
    on one fixed random batch."""
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    images = torch.randint(0, 256, (batch_size, 3, *size), dtype=torch.uint8)
    keypoints = torch.rand(batch_size, n_keypoints, 2) * torch.tensor([size[1] - 1, size[0] - 1])
    forward = forward or net

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        heatmap_mse(forward(images), keypoints).backward()
        optimizer.step()

    return step


def bare_fps(
    backbone: str, batch_size: int, size: tuple[int, int], n_keypoints: int, steps: int, bf16: bool = False
) -> float:
    step = bare_step(bare_network(backbone, n_keypoints, bf16), batch_size, size, n_keypoints)
    step()  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - started)


def ensure_peer_venv(venv: Path) -> str | None:
    """Build the Lightning Pose venv by its recipe where it is missing; the error in words where that fails."""
    if (venv / "bin" / "litpose").exists():
        return None
    env = {**os.environ, "PEERS": str(venv.parent), "STEPS": "setup", "WAIT_QUIET": "0"}
    run = subprocess.run(
        ["bash", str(PEER_RECIPE / "run_baseline.sh")], env=env, capture_output=True, text=True, check=False
    )
    if run.returncode or not (venv / "bin" / "litpose").exists():
        tail = (run.stderr or run.stdout).strip().splitlines()[-3:]
        return f"the peer recipe could not install Lightning Pose 2.4.3 (rc {run.returncode}): {' / '.join(tail)}"
    return None


def ours(config: dict, project: Path, model_dir: Path) -> dict:
    """One ``train()`` run: total wall time, per-epoch times and throughput, validation and test errors."""
    from element_lightning_pose.engine.data.projects import load_project
    from element_lightning_pose.engine.inference.evaluate import evaluate

    started = time.perf_counter()
    result = train(config, project, model_dir, progress=False)
    total = time.perf_counter() - started
    history = result.history
    validated = history.dropna(subset=["val_pixel_error"])
    labels, _ = load_project(project)
    errors = evaluate(result.model_dir, labels)
    by_split = errors.groupby("split")["error_px"].mean()
    return {
        "model_dir": result.model_dir,
        "total_s": total,
        "epoch_s": history["epoch_s"].to_numpy()[1:],  # epoch 0 (start-up) excluded
        "frames_per_s": history["train_frames_per_s"].to_numpy()[1:],
        "n_train": int(history["train_frames"].iloc[0]),
        "val_px": float(validated["val_pixel_error"].iloc[-1]),
        "best_val_loss": float(result.best_val_loss or float("nan")),
        "val_px_orig": float(by_split.get("val", float("nan"))),
        "test_px": float(by_split.get("test", float("nan"))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=DEFAULT_PROJECT)
    parser.add_argument("--epochs", type=int, default=30, help="epochs of each of our runs (fp32, bf16)")
    parser.add_argument("--lp-epochs", type=int, default=6, help="epochs of the Lightning Pose run (timing only)")
    parser.add_argument(
        "--lp-venv", type=Path, default=Path("/tmp/peers/venv"), help="Lightning Pose 2.4.3 venv (peer recipe)"
    )
    parser.add_argument("--no-peer", action="store_true", help="skip Lightning Pose")
    parser.add_argument("--keep-models", type=Path, help="keep our trained models here (fp32/, bf16/)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--seeds", type=int, default=1, help="seeds of the fp32 / bf16 accuracy comparison (seed 0 is also timed)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "training.md")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    size, batch = (256, 256), 8
    from element_lightning_pose.engine.hardware import native_bf16

    def config(precision: str, seed: int = 0) -> dict:
        return {
            "data": {"image_resize": list(size)},
            "model": {"backbone": "resnet18", "pretrained": False},
            "training": {
                "max_epochs": args.epochs,
                "unfreeze_epoch": 0,
                "batch_size": batch,
                "num_workers": args.workers,
                "check_val_every_n_epoch": VAL_EVERY,
                # the Lightning Pose peer config's schedule, scaled to the epochs
                "lr_milestones": [args.epochs // 2, args.epochs * 2 // 3, args.epochs * 5 // 6],
                "precision": precision,
                "seed": seed,
            },
        }

    with tempfile.TemporaryDirectory() as tmp:
        keep = args.keep_models or Path(tmp) / "models"
        runs = {"fp32": ours(config("fp32"), args.project, keep / "fp32")}
        print("fp32", {k: v for k, v in runs["fp32"].items() if k not in ("epoch_s", "frames_per_s")}, flush=True)
        if native_bf16("cpu"):
            runs["bf16"] = ours(config("bf16"), args.project, keep / "bf16")
            print("bf16", {k: v for k, v in runs["bf16"].items() if k not in ("epoch_s", "frames_per_s")}, flush=True)
        by_seed = {0: runs} if "bf16" in runs else {}
        for seed in range(1, args.seeds if "bf16" in runs else 0):
            by_seed[seed] = {
                precision: ours(config(precision, seed), args.project, keep / f"seed{seed}" / precision)
                for precision in ("fp32", "bf16")
            }
            print(f"seed {seed}", {p: (r["val_px"], r["test_px"]) for p, r in by_seed[seed].items()}, flush=True)
        n_train = runs["fp32"]["n_train"]
        lp_epoch_s: list[float] = []
        lp_total = None
        peer_error = "not run (--no-peer)" if args.no_peer else ensure_peer_venv(args.lp_venv)
        if peer_error is None:
            started = time.perf_counter()
            try:
                lp_epoch_s = lightning_pose_epochs(args.lp_venv, args.project.resolve(), args.lp_epochs, Path(tmp))
                lp_total = time.perf_counter() - started
            except subprocess.CalledProcessError as exc:
                peer_error = f"`litpose train` failed: {exc}"
    fps_bare = {
        "fp32": bare_fps("resnet18", batch, size, 17, steps=9),
    }
    if "bf16" in runs:
        fps_bare["bf16"] = bare_fps("resnet18", batch, size, 17, steps=9, bf16=True)
    timing_epochs = min(args.lp_epochs - 1, len(runs["fp32"]["epoch_s"]))  # epochs 1.. as Lightning Pose's
    rows = []
    for name, run in runs.items():
        median = float(np.median(run["epoch_s"][:timing_epochs]))
        rows.append(
            (
                f"ours, `train()` {name} (median of epochs 1..{timing_epochs}; validation and checkpoints included)",
                f"{median:.2f}",
                f"{n_train / median:.1f}",
                f"{np.median(run['frames_per_s'][:timing_epochs]):.1f}",
            )
        )
        rows.append(
            (
                f"bare forward + backward + Adam, {name}, fixed batch (ceiling)",
                f"{n_train / fps_bare[name]:.2f}",
                f"{fps_bare[name]:.1f}",
                "",
            )
        )
    lines = [
        *header("Supervised training throughput and bf16 accuracy"),
        f"Project: mirror-mouse-example ({n_train} training frames of 406x396), resnet18 random init, "
        f"{size[0]}x{size[1]}, batch {batch}, augmentation on (defaults), validation every {VAL_EVERY} epochs "
        f"(as in the Lightning Pose peer config), {args.workers} DataLoader workers each; our runs "
        f"{args.epochs} epochs (learning rate halved at 1/2, 2/3, 5/6), channels-last.",
        "",
        *markdown_table(
            ("run", "s / epoch", "labeled frames / s (epoch)", "frames / s (training batches, metrics.csv)"), rows
        ),
    ]
    fp32_median = float(np.median(runs["fp32"]["epoch_s"][:timing_epochs]))
    if lp_epoch_s:
        lp_median = float(np.median(lp_epoch_s[1:]))
        print(f"lightning pose: {lp_median:.2f} s/epoch; per epoch {lp_epoch_s}")
        lines += [
            "",
            *markdown_table(
                ("peer", "s / epoch", "labeled frames / s"),
                [
                    (
                        f"Lightning Pose 2.4.3 `litpose train`, same settings, same run (median of epochs 1..{args.lp_epochs - 1})",
                        f"{lp_median:.2f}",
                        f"{n_train / lp_median:.1f}",
                    )
                ],
            ),
            "",
            f"**Ours fp32 / Lightning Pose per epoch: {lp_median / fp32_median:.2f}x**"
            + (
                f"; **ours bf16 / Lightning Pose: {lp_median / float(np.median(runs['bf16']['epoch_s'][:timing_epochs])):.2f}x**"
                if "bf16" in runs
                else ""
            )
            + f" (target >= 2x). Lightning Pose's whole run ({args.lp_epochs} epochs, start-up and its final predictions "
            f"included): {lp_total:.0f} s; per epoch {', '.join(f'{s:.2f}' for s in lp_epoch_s)} s (epoch 0 includes start-up).",
        ]
    else:
        lines += ["", f"Lightning Pose: {peer_error}."]
    lines += [
        "",
        f"Accuracy after {args.epochs} epochs, same seed, same split (bf16 trains the backbone under autocast; the heads, "
        "losses and weights stay fp32):",
        "",
        *markdown_table(
            (
                "run",
                "whole run s",
                "last val pixel error (input px)",
                "best val loss",
                "val mean px (original)",
                "test mean px (original)",
            ),
            [
                (
                    name,
                    f"{run['total_s']:.0f}",
                    f"{run['val_px']:.2f}",
                    f"{run['best_val_loss']:.5f}",
                    f"{run['val_px_orig']:.2f}",
                    f"{run['test_px']:.2f}",
                )
                for name, run in runs.items()
            ],
        ),
    ]
    if "bf16" in runs:
        ratio = runs["bf16"]["val_px"] / runs["fp32"]["val_px"]
        lines += [
            "",
            f"bf16 / fp32 validation pixel error: {ratio:.3f} (target: within 5%, i.e. <= 1.05: "
            f"{'met' if ratio <= 1.05 else 'missed'}).",
        ]
        if len(by_seed) > 1:
            seed_rows = []
            for seed, pair in by_seed.items():
                seed_rows.append(
                    (
                        seed,
                        f"{pair['fp32']['val_px']:.2f}",
                        f"{pair['bf16']['val_px']:.2f}",
                        f"{pair['bf16']['val_px'] / pair['fp32']['val_px']:.3f}",
                        f"{pair['fp32']['test_px']:.2f}",
                        f"{pair['bf16']['test_px']:.2f}",
                    )
                )
            mean = {p: float(np.mean([pair[p]["val_px"] for pair in by_seed.values()])) for p in ("fp32", "bf16")}
            mean_test = {p: float(np.mean([pair[p]["test_px"] for pair in by_seed.values()])) for p in ("fp32", "bf16")}
            lines += [
                "",
                f"By seed (weights, augmentation and batch order; the split is fixed), {args.epochs} epochs each:",
                "",
                *markdown_table(
                    (
                        "seed",
                        "fp32 val px (input)",
                        "bf16 val px (input)",
                        "bf16 / fp32",
                        "fp32 test px (original)",
                        "bf16 test px (original)",
                    ),
                    seed_rows,
                ),
                "",
                f"**Mean over {len(by_seed)} seeds, bf16 / fp32 validation pixel error: "
                f"{mean['bf16'] / mean['fp32']:.3f}** ({mean['bf16']:.2f} vs {mean['fp32']:.2f}; target <= 1.05: "
                f"{'met' if mean['bf16'] <= 1.05 * mean['fp32'] else 'missed'}); test: "
                f"{mean_test['bf16'] / mean_test['fp32']:.3f} ({mean_test['bf16']:.2f} vs {mean_test['fp32']:.2f}).",
            ]
    else:
        lines += ["", "bf16: this CPU has no native bf16 (AMX or AVX512-BF16); not run."]
    for name, run in runs.items():
        lines.append(
            f"Per-epoch times of our {name} run (epochs 1..): {', '.join(f'{s:.2f}' for s in run['epoch_s'])} s."
        )
    lines.append("Noise: the machine is shared; repeated runs vary by ~10-20% (see the load average above).")
    write_results(args.out, lines)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
