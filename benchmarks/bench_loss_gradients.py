#!/usr/bin/env python
"""Why the unsupervised losses do not help on the synthetic project: their gradients' signal and noise.

A loss can only improve a model if its gradient points the same way from one training step to
the next. This script trains supervised models on the synthetic two-view project of
``bench_semisupervised.py`` for a few epoch counts, then at each trained model compares, over
``--steps`` independent draws as in training:

* the supervised heatmap loss gradient of one augmented labeled batch (batch 8);
* each unsupervised loss gradient of one augmented 8-frame clip, times its training weight.

For each term it reports the gradient norm of one step, the mean cosine between steps, the
cosine of each step with the mean of the other steps (leave-one-out: > 0 means a direction
that holds across clips), and ``|mean| / (norm / sqrt(n))``: about 1 for pure noise, up to
``sqrt(n)`` when every step agrees.

Usage: python benchmarks/bench_loss_gradients.py [--epochs 10 30 150] [--steps 24]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, header, write_results
from bench_semisupervised import (
    BATCH,
    RESIZE,
    VIEW,
    VIEW_GROUPS,
    base_config,
    semi_losses,
    synthetic_project,
    video_metrics,
)

from element_lightning_pose.engine.config import TrainConfig
from element_lightning_pose.engine.data.projects import load_project
from element_lightning_pose.engine.data.splits import split_frames
from element_lightning_pose.engine.training import train
from element_lightning_pose.engine.training.datasets import PoseDataModule
from element_lightning_pose.engine.training.heatmap_module import HeatmapModule
from element_lightning_pose.engine.training.unsupervised import unsupervised_inputs


def flat_gradient(loss: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm() + 1e-20))


def statistics(grads: list[torch.Tensor], weight: float) -> dict[str, float]:
    g = torch.stack(grads) * weight
    n = len(g)
    total = g.sum(0)
    pairs = [cosine(g[i], g[j]) for i in range(n) for j in range(i)]
    return {
        "n": n,
        "norm": float(g.norm(dim=1).mean()),
        "pairwise_cos": float(np.mean(pairs)),
        "loo_cos": float(np.mean([cosine(g[i], (total - g[i]) / (n - 1)) for i in range(n)])),
        "coherence": float(g.mean(0).norm() / (g.norm(dim=1).mean() / np.sqrt(n))),
    }


def measure(project, model_dir: Path, steps: int, seed: int, eps_variants: list[float]) -> list[dict]:
    """Gradient statistics of every loss term at the model in ``model_dir``."""
    config_dict = base_config(1, seed, RESIZE, BATCH)
    config_dict["losses"] = semi_losses(VIEW_GROUPS, VIEW, 1)
    config = TrainConfig.from_dict(config_dict)
    labels, videos = load_project(project.root)
    splits = split_frames(len(labels), 0.8, 0.1, seed)
    pcas, clips, _ = unsupervised_inputs(config, labels, splits, videos, model_dir / "gradient_cache")
    module = HeatmapModule(
        config.to_dict(), list(labels.bodyparts), build_pretrained=False, pca={k: v.to_dict() for k, v in pcas.items()}
    )
    state = torch.load(model_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    module.load_state_dict(state)
    module.train()  # as in training: BatchNorm on batch statistics
    params = [p for p in module.parameters() if p.requires_grad]
    torch.manual_seed(seed)
    labeled = PoseDataModule(labels, splits, config).datasets["train"]
    supervised = []
    for _ in range(steps):
        rows = torch.randperm(len(labeled))[:BATCH].tolist()
        batch = torch.utils.data.default_collate([labeled[i] for i in rows])
        loss, _ = module._loss(batch)
        supervised.append(flat_gradient(loss, params))
    out = [{"term": "supervised (batch 8)", "weight": 1.0, "active": steps, **statistics(supervised, 1.0)}]

    variants = [("temporal", None), ("pca_singleview", None), ("pca_multiview", None)]
    variants += [("pca_multiview", eps) for eps in eps_variants]
    for name, eps in variants:
        module.pcas = pcas if eps is None else {**pcas, name: replace(pcas[name], epsilon=eps)}
        grads = []
        for i in range(steps):
            value = module.unsupervised_losses(clips[i])[name]
            if value.requires_grad and float(value.detach()) > 0:  # a step where the loss is active
                grads.append(flat_gradient(value, params))
        if eps is not None:
            epsilon = f"{eps:g} px"
        else:
            epsilon = f"{pcas[name].epsilon:.2f} px" if name in pcas else f"{config.losses.temporal_epsilon} px"
        weight = getattr(config.losses, f"{name}_weight")
        row = {"term": f"{name} (eps {epsilon})", "weight": weight, "active": len(grads)}
        row.update(statistics(grads, weight) if len(grads) >= 3 else {})
        out.append(row)
    return out


def report(tables: list[tuple[int, float, list[dict]]], args, elapsed: float) -> str:
    lines = [
        *header("Gradients of the unsupervised losses: signal or noise?"),
        f"Wall time: {elapsed / 60:.1f} min, CPU only.",
        "",
        "Synthetic two-view project of `bench_semisupervised.py` (128x128, 40 labeled frames, seed 0), "
        f"efficientnet_lite0 ImageNet, resize {RESIZE[0]}, supervised models trained for the given epochs. "
        f"At each model: {args.steps} independent draws of an augmented labeled batch (supervised term) and of an "
        "augmented 8-frame clip (unsupervised terms), gradients of each term times its training weight (0.01), "
        "BatchNorm in training mode as in training. 'active': draws where the loss was above zero. "
        "Coherence = |mean gradient| / (per-step norm / sqrt(n)): ~1 is pure noise, sqrt(n) is perfect agreement.",
        "",
        "| model | term | active | weighted grad norm / step | x supervised | mean pairwise cos | leave-one-out cos | coherence |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for epochs, error, rows in tables:
        reference = rows[0]["norm"]
        for row in rows:
            if "norm" not in row:
                lines.append(f"| {epochs} ep, {error:.1f} px | {row['term']} | {row['active']} | (too few) | | | | |")
                continue
            lines.append(
                f"| {epochs} ep, {error:.1f} px | {row['term']} | {row['active']} | {row['norm']:.4f} | "
                f"{row['norm'] / reference:.1f} | {row['pairwise_cos']:.3f} | {row['loo_cos']:.3f} | {row['coherence']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[10, 30, 150])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--eps", type=float, nargs="*", default=[3.0], help="extra multi-view epsilons to measure (px)")
    parser.add_argument("--out", type=Path, default=RESULTS / "loss_gradients.md")
    args = parser.parse_args()
    started = time.perf_counter()
    tables = []
    with tempfile.TemporaryDirectory(prefix="elp-bench-grad-") as tmp:
        work = Path(tmp)
        project = synthetic_project(work)
        truth, occluded = project.ground_truth(project.videos[0])
        for epochs in args.epochs:
            model_dir = work / f"supervised_{epochs}"
            train(base_config(epochs, 0, RESIZE, BATCH), project.root, model_dir, progress=False)
            error = video_metrics(model_dir, project.videos[0], truth, occluded)["error"]
            rows = measure(project, model_dir, args.steps, 0, args.eps)
            tables.append((epochs, error, rows))
            print(epochs, round(error, 2), rows, flush=True)
    print(write_results(args.out, report(tables, args, time.perf_counter() - started)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
