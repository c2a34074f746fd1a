#!/usr/bin/env python
"""Does semi-supervised training / the context network help? Evidence on data with ground truth.

Synthetic two-view project (``synthetic.projects``: 128x128 frames, two 64-wide views of one 3D
pose, a 2,000-frame video, 40 labeled frames of it, occluder episodes), identical backbone,
epochs and labeled batch for every arm, several seeds (the seed changes the split, the
initialisation and the batch order; the project is the same):

* ``supervised``: heatmap model on the labels only;
* ``semi``: the same plus temporal + pose PCA (view 1's 9 keypoints) + multi-view PCA losses
  on 8-frame clips of the video (one per step);
* ``context``: the temporal context model, supervised (only the occluded-frame comparison).

Metrics on ALL 2,000 video frames against the ground truth (original pixels): mean pixel
error, error on occluded keypoints, and jitter = mean |(p_t - p_t-1) - (g_t - g_t-1)| (motion
that the true pose does not have). Step cost: training seconds per optimizer step of the same
labeled batch, semi vs supervised. Then mirror-mouse (real data, no video ground truth):
supervised vs PCA losses, pixel error on the labeled test split.

Usage: python benchmarks/bench_semisupervised.py [--seeds 3] [--epochs 30] [--out results/semisupervised.md]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from _common import REPO, RESULTS, header, write_results

from element_lightning_pose.engine.data.projects import load_project
from element_lightning_pose.engine.inference.evaluate import evaluate
from element_lightning_pose.engine.inference.models import load_model
from element_lightning_pose.engine.inference.predict import predict_video
from element_lightning_pose.engine.training import train
from element_lightning_pose.synthetic.projects import make_synthetic_project

MIRROR_MOUSE = REPO.parent / "shared" / "data" / "mirror-mouse-example"
VIEW = list(range(9))
VIEW_GROUPS = [VIEW, list(range(9, 18))]  # the same 9 keypoints in each view
# Sized for a 2-core CPU shared with other jobs (~25 min in all): see the report header.
RESIZE, MM_RESIZE, BATCH, CLIP = (64, 64), (96, 96), 8, 8


def base_config(epochs: int, seed: int, resize: tuple[int, int], batch: int) -> dict:
    return {
        "data": {"image_resize": list(resize), "split_seed": seed},
        "model": {"backbone": "efficientnet_lite0", "pretrained": True},
        "training": {
            "max_epochs": epochs,
            "unfreeze_epoch": 0,
            "num_workers": 0,
            "batch_size": batch,
            "seed": seed,
            "lr_milestones": [int(epochs * 0.8)],
            "log_every_n_steps": 1,
        },
    }


def semi_losses(view_groups: list, single_view: list, epochs: int) -> dict:
    # weights 0.01 (the engine's default until the third session, Lightning Pose's scale): the
    # committed tables were made with them; "semi@W" arms override them
    return {
        "unsupervised": ["temporal", "pca_singleview", "pca_multiview"],
        "pca_singleview_keypoints": single_view,
        "view_groups": view_groups,
        "warmup_epochs": max(1, epochs // 4),
        "clip_length": CLIP,
        "temporal_weight": 0.01,
        "pca_singleview_weight": 0.01,
        "pca_multiview_weight": 0.01,
    }


def constraint_pcas(project_root: Path, seed: int, groups: list, single_view: list) -> dict:
    """The pose and multi-view PCAs the semi arm of this seed fits (training split, held-out epsilon)."""
    from element_lightning_pose.engine.config import LossesConfig
    from element_lightning_pose.engine.data.splits import split_frames
    from element_lightning_pose.engine.training.pca import fit_pcas

    labels, _ = load_project(project_root)
    train_rows = split_frames(len(labels), 0.8, 0.1, seed) == "train"
    losses = LossesConfig(
        unsupervised=["pca_singleview", "pca_multiview"], view_groups=groups, pca_singleview_keypoints=single_view
    )
    return fit_pcas(labels.keypoints[train_rows], labels.bodyparts, losses)


def sparsify_second_view(csv_path: Path, keep: int, n_view1: int) -> None:
    """Blank the second view's labels in all but ``keep`` labeled frames (a seeded, fixed choice).

    A lab's second camera is often the harder one to label; this is the case the multi-view
    loss exists for: the video must teach view 2 what the labels of view 1 already say.
    """
    import pandas as pd

    table = pd.read_csv(csv_path, header=[0, 1, 2], index_col=0)
    blank = np.random.default_rng(0).permutation(len(table))[keep:]
    table.iloc[blank, 2 * n_view1 :] = np.nan
    table.to_csv(csv_path)


def video_metrics(
    model_dir: Path, video: Path, truth: np.ndarray, occluded: np.ndarray, pcas: dict | None = None
) -> dict:
    model = load_model(model_dir, device="cpu")
    started = time.perf_counter()
    pred = predict_video(model, video, batch_size=32, progress=False).predictions
    fps = len(pred) / (time.perf_counter() - started)
    error = np.linalg.norm(pred[..., :2] - truth, axis=-1)
    jitter = np.linalg.norm(np.diff(pred[..., :2], axis=0) - np.diff(truth, axis=0), axis=-1)
    half = error.shape[1] // 2
    row = {
        "error": float(error.mean()),
        "error_occluded": float(error[occluded].mean()),
        "error_view1": float(error[:, :half].mean()),
        "error_view2": float(error[:, half:].mean()),
        "error_visible": float(error[~occluded].mean()),
        "jitter": float(jitter.mean()),
        "predict_fps": fps,
    }
    for kind, pca in (pcas or {}).items():
        # how far the predictions are from satisfying each constraint (what the loss would act on)
        residual = pca.residual_keypoints(pred[..., :2])
        row[f"{kind}_residual"] = float(residual.mean())
        row[f"{kind}_truth_residual"] = float(pca.residual_keypoints(truth).mean())
    return row


def step_seconds(result) -> float:
    """Training seconds per optimizer step, epoch 0 (start-up, cache build) excluded."""
    h = result.history
    if len(h) < 3:
        return float(h["elapsed_s"].iloc[-1] / max(h["step"].iloc[-1], 1))
    return float((h["elapsed_s"].iloc[-1] - h["elapsed_s"].iloc[0]) / (h["step"].iloc[-1] - h["step"].iloc[0]))


def synthetic_project(work: Path, n_labeled: int = 40, view2_labeled: int | None = None):
    """The two-view synthetic project every synthetic benchmark uses (project seed 0, 2,000-frame video)."""
    project = make_synthetic_project(
        work / "project", seed=0, image_size=(128, 128), n_labeled=n_labeled, n_video_frames=2000, views=2
    )
    if view2_labeled is not None:
        sparsify_second_view(project.csv_path, view2_labeled, len(VIEW))
    return project


def synthetic_arms(
    work: Path,
    seeds: int,
    epochs: int,
    semi_overrides: dict,
    on_result=None,
    arms: tuple[str, ...] = ("supervised", "semi", "context"),
    n_labeled: int = 40,
    resize: tuple[int, int] = RESIZE,
    view2_labeled: int | None = None,
) -> dict[str, list[dict]]:
    project = synthetic_project(work, n_labeled, view2_labeled)
    truth, occluded = project.ground_truth(project.videos[0])
    results: dict[str, list[dict]] = {arm: [] for arm in arms}
    for seed in range(seeds):
        pcas = constraint_pcas(project.root, seed, VIEW_GROUPS, VIEW)  # the same for every arm of a seed
        for arm in results:
            config = base_config(epochs, seed, resize, BATCH)
            if arm.startswith("semi"):
                config["losses"] = {**semi_losses(VIEW_GROUPS, VIEW, epochs), **semi_overrides}
                if "@" in arm:  # "semi@0.001": all three weights set to 0.001
                    weight = float(arm.split("@", 1)[1])
                    config["losses"].update(
                        temporal_weight=weight, pca_singleview_weight=weight, pca_multiview_weight=weight
                    )
            if arm == "context":
                config["model"]["model_type"] = "context"
            model_dir = work / f"{arm}_{seed}"
            result = train(config, project.root, model_dir, progress=False)
            row = video_metrics(model_dir, project.videos[0], truth, occluded, pcas)
            row.update(step_s=step_seconds(result), wall_s=result.wall_time_s)
            h = result.history
            for column in (
                "train_supervised_loss",
                "train_temporal_loss",
                "train_pca_singleview_loss",
                "train_pca_multiview_loss",
            ):
                if column in h:
                    row[f"{column}_first"], row[f"{column}_last"] = float(h[column].iloc[0]), float(h[column].iloc[-1])
            results[arm].append(row)
            print(arm, seed, {k: round(v, 3) for k, v in row.items()}, flush=True)
            if on_result is not None:  # a partial report survives an interrupted run
                on_result(results)
    return results


def mirror_mouse_arms(work: Path, epochs: int, semi_overrides: dict) -> dict[str, dict]:
    labels, _ = load_project(MIRROR_MOUSE)
    groups = [list(range(0, 7)), list(range(8, 15))]
    out = {}
    for arm in ("supervised", "semi"):
        config = base_config(epochs, 0, MM_RESIZE, BATCH)
        if arm == "semi":
            config["losses"] = {
                "unsupervised": ["pca_singleview", "pca_multiview"],
                "view_groups": groups,
                "pca_singleview_keypoints": groups[0],
                "warmup_epochs": max(1, epochs // 4),
                "clip_length": CLIP,
                **semi_overrides,
            }
        model_dir = work / f"mm_{arm}"
        result = train(config, MIRROR_MOUSE, model_dir, progress=False)
        table = evaluate(model_dir, labels)
        test = table[table["split"] == "test"]
        out[arm] = {
            "test_error": float(test["error_px"].mean()),
            "train_error": float(table[table["split"] == "train"]["error_px"].mean()),
            "step_s": step_seconds(result),
            "wall_s": result.wall_time_s,
        }
        print("mirror-mouse", arm, out[arm], flush=True)
    return out


def mean_sd(rows: list[dict], key: str) -> str:
    values = np.array([r[key] for r in rows if key in r], dtype=float)
    if not len(values):
        return "n/a"
    return f"{values.mean():.2f} ± {values.std(ddof=1) if len(values) > 1 else 0:.2f}"


def report(results, mirror, args, elapsed: float) -> str:
    lines = [
        *header("Semi-supervised losses and the context model: evidence"),
        f"Wall time: {elapsed / 60:.1f} min, CPU only.",
        "",
        f"Synthetic two-view project: 128x128 frames, 2,000-frame video, {args.n_labeled} labeled frames of it "
        f"(split 80/10/10%)"
        + (f", the second view labeled in only {args.view2_labeled} of them" if args.view2_labeled is not None else "")
        + f", efficientnet_lite0 (ImageNet), resize {args.resize}x{args.resize}, labeled batch {BATCH}, "
        f"{args.epochs} epochs, Adam 1e-3. Semi: temporal (eps 20 px) + pose PCA (view 1, 99% variance) + "
        f"multi-view PCA (3 components), weights 0.01 unless overridden below, {CLIP}-frame clip per step, warm-up over a quarter of the epochs. "
        f"Mean ± SD over {args.seeds} seeds; errors in original pixels over all 2,000 frames x 18 keypoints.",
        "",
        "| arm | pixel error (all frames) | view 1 | view 2 | error, visible kp | error, occluded kp | jitter (px/frame) | s / step | train wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, rows in results.items():
        lines.append(
            f"| {arm} | {mean_sd(rows, 'error')} | {mean_sd(rows, 'error_view1')} | {mean_sd(rows, 'error_view2')} | "
            f"{mean_sd(rows, 'error_visible')} | "
            f"{mean_sd(rows, 'error_occluded')} | {mean_sd(rows, 'jitter')} | {mean_sd(rows, 'step_s')} | "
            f"{mean_sd(rows, 'wall_s')} |"
        )
    sup, semi = results.get("supervised", []), results.get("semi", [])
    ratios = [b["step_s"] / a["step_s"] for a, b in zip(sup, semi)]
    ratio = f"{np.mean(ratios):.2f}x" if ratios else "n/a"
    lines += [
        "",
        f"Semi-supervised step cost relative to supervised (same labeled batch {BATCH}, + a {CLIP}-frame clip): "
        f"**{ratio}** (target <= 2.5x; per seed: {', '.join(f'{r:.2f}' for r in ratios)}).",
        "",
    ]
    lines += [
        "Constraint residuals of the predictions on all video frames (px; PCAs fitted on each seed's "
        "training labels as the semi arm does; the ground truth's own residuals in brackets):",
        "",
        "| arm | pose PCA residual | multi-view PCA residual |",
        "|---|---|---|",
    ]
    for arm, rows in results.items():
        if rows and "pca_singleview_residual" in rows[0]:
            truth_s = np.mean([r["pca_singleview_truth_residual"] for r in rows])
            truth_m = np.mean([r["pca_multiview_truth_residual"] for r in rows])
            lines.append(
                f"| {arm} | {mean_sd(rows, 'pca_singleview_residual')} ({truth_s:.2f}) | "
                f"{mean_sd(rows, 'pca_multiview_residual')} ({truth_m:.2f}) |"
            )
    lines += ["", "Per seed (error all / occluded / jitter):", ""]
    for arm, rows in results.items():
        lines.append(
            f"- {arm}: " + "; ".join(f"{r['error']:.2f} / {r['error_occluded']:.2f} / {r['jitter']:.2f}" for r in rows)
        )
    lines += ["", "Unsupervised losses in the semi arm, first -> last epoch (mean over seeds, px):", ""]
    for name in ("supervised", "temporal", "pca_singleview", "pca_multiview"):
        key = f"train_{name}_loss"
        if semi and f"{key}_first" in semi[0]:
            first = np.mean([r[f"{key}_first"] for r in semi])
            last = np.mean([r[f"{key}_last"] for r in semi])
            lines.append(f"- {key}: {first:.4f} -> {last:.4f}")
    if mirror:
        s, m = mirror["supervised"], mirror["semi"]
        lines += [
            "",
            f"Mirror-mouse (real, 90 labeled frames, 17 keypoints, resize {MM_RESIZE[0]}x{MM_RESIZE[1]}, {args.mm_epochs} epochs, one seed; "
            "semi = pose PCA on keypoints 0-6 + multi-view PCA [[0..6],[8..14]] on test_vid.mp4 clips):",
            "",
            "| arm | test pixel error | train pixel error | s / step |",
            "|---|---|---|---|",
            f"| supervised | {s['test_error']:.2f} | {s['train_error']:.2f} | {s['step_s']:.2f} |",
            f"| semi (PCA losses) | {m['test_error']:.2f} | {m['train_error']:.2f} | {m['step_s']:.2f} |",
            "",
            f"Step cost ratio on mirror-mouse: **{m['step_s'] / s['step_s']:.2f}x**.",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--mm-epochs", type=int, default=5)
    parser.add_argument("--no-mirror-mouse", action="store_true")
    parser.add_argument("--n-labeled", type=int, default=40, help="labeled frames of the synthetic project")
    parser.add_argument(
        "--view2-labeled",
        type=int,
        default=None,
        help="keep the second view's labels in only this many labeled frames (default: all)",
    )
    parser.add_argument(
        "--resize", type=int, default=RESIZE[0], help="network input size (square) on the synthetic project"
    )
    parser.add_argument(
        "--arms",
        default="supervised,semi,context",
        help="comma-separated arms to run; semi@W = the semi arm with all three loss weights W",
    )
    parser.add_argument(
        "--semi",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a losses.* parameter of the semi arms, e.g. --semi pca_min_confidence=0.5",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "semisupervised.md")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="elp-bench-semi-") as tmp:
        work = Path(tmp)
        overrides = {k: yaml.safe_load(v) for k, _, v in (a.partition("=") for a in args.semi)}

        def partial(results):
            write_results(
                args.out, report(results, None, args, time.perf_counter() - started) + "\n(partial: run in progress)\n"
            )

        results = synthetic_arms(
            work,
            args.seeds,
            args.epochs,
            overrides,
            partial,
            tuple(args.arms.split(",")),
            args.n_labeled,
            (args.resize, args.resize),
            args.view2_labeled,
        )
        mirror = (
            None
            if args.no_mirror_mouse or not MIRROR_MOUSE.is_dir()
            else mirror_mouse_arms(work, args.mm_epochs, overrides)
        )
    print(write_results(args.out, report(results, mirror, args, time.perf_counter() - started)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
