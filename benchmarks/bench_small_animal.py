#!/usr/bin/env python
"""Small animals in large frames: today's single stage vs the stabilised one vs crop zoom vs crop training.

Every arm trains on the same labeled frames with the same wall-time budget on this CPU
(``training.max_time_s``), the same schedule (``--unfreeze-epoch``, no step decay within the
budget), ImageNet efficientnet_lite0 (the offline backbone), and is scored in ORIGINAL-frame
pixels on the same test frames (``split_frames`` with seed 0, computed here, so every arm's
directory layout is irrelevant to the scoring):

- ``today``: the single stage at 256x256 as it was before issue #19: BatchNorm switched to batch
  statistics at unfreeze, the backbone at the full learning rate at once, no collapse guard.
- ``stabilised``: the single stage at 256x256 with the defaults (BatchNorm on batch statistics
  from the first epoch, the backbone learning-rate ramp, the collapse guard).
- ``frozen_bn``: as ``stabilised`` with the pretrained BatchNorm statistics kept all along.
- ``crop_zoom``: the preset ``small_animal_crop_zoom`` (detector at 128x128, pose model on crops
  at 256x256; the budget is shared by the two stages).
- ``crop_train``: the preset ``full_resolution_crops`` (the frame at its own resolution, rounded to
  multiples of 32, trained on random crops of 3/4 of each side, predicted whole).

Datasets: ``arena`` (the synthetic arena scene, 480x640, generated here, with ground truth for
every frame of a second video, on which prediction speed is also measured), ``reaching``
(DeepLabCut's reaching example, 832x747, no video) and ``mirror`` (mirror-mouse).

Reported per run: test mean / median / p95 error, the error on every frame of the arena's
second video, whether the training loss ever went back to the flat-heatmap value (and how
often the guard restored weights), epochs reached, training wall time, prediction frames/s.
Each run's result is saved as JSON in ``--work`` as soon as it ends; a second call skips runs
already done (``--redo`` to repeat), and the table is rebuilt from every saved run.

Usage: python benchmarks/bench_small_animal.py --budget-s 300 [--datasets arena reaching mirror]
           [--arms today stabilised crop_zoom crop_train] [--work /var/tmp/elp-small-animal]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _common import REPO, RESULTS, cpu_model, header, write_results

from element_lightning_pose.engine.data.projects import load_project
from element_lightning_pose.engine.data.splits import split_frames
from element_lightning_pose.engine.inference.metrics import temporal_norm
from element_lightning_pose.engine.inference.models import load_model
from element_lightning_pose.engine.inference.predict import predict_labeled, predict_video
from element_lightning_pose.engine.training import train
from element_lightning_pose.engine.training.advice import preset_params
from element_lightning_pose.engine.training.callbacks import flat_heatmap_loss
from element_lightning_pose.synthetic.projects import load_synthetic_project, make_synthetic_project

SHARED = REPO.parent / "shared" / "data"
ARMS = ("today", "stabilised", "frozen_bn", "crop_zoom", "crop_train")
DATASETS = ("arena", "reaching", "mirror")
JUMP_PX = 30.0  # a keypoint moving farther than this between two frames is a jump (issue #27's count)
TODAY = {
    "backbone_batchnorm": "train",
    "backbone_lr_ratio": 1.0,
    "backbone_lr_warmup_epochs": 0,
    "collapse_guard": False,
}


def dataset(name: str, work: Path) -> dict:
    """Project root, label CSV, frame size and (arena) the video with ground truth."""
    if name == "arena":
        root = work / "arena_project"
        project = (
            load_synthetic_project(root)
            if root.is_dir()
            else make_synthetic_project(
                root, seed=1, image_size=(480, 640), n_labeled=116, n_video_frames=600, n_videos=2, scene="arena"
            )
        )
        return {
            "root": project.root,
            "csv": "CollectedData.csv",
            "size": (480, 640),
            "video": project.videos[1],
            "synthetic": True,
        }
    if name == "reaching":
        root = SHARED / "dlc-reaching-example"
        return {"root": root, "csv": "labeled-data/reachingvideo1/CollectedData_Mackenzie.csv", "size": (747, 832)}
    if name == "mirror":
        return {"root": SHARED / "mirror-mouse-example", "csv": "CollectedData.csv", "size": (406, 396)}
    raise ValueError(f"unknown dataset {name!r}; known: {DATASETS}")


def base_config(data: dict, budget_s: float, unfreeze_epoch: int, seed: int = 0) -> dict:
    """What every arm shares: the labels, 256x256, ImageNet efficientnet_lite0, the wall-time budget,
    the backbone unfrozen at ``unfreeze_epoch``, no step decay, no loader processes, the seed."""
    return {
        "data": {"csv_file": data["csv"], "image_resize": [256, 256]},
        "model": {"backbone": "efficientnet_lite0", "pretrained": True},
        "training": {
            "max_epochs": 1000,
            "max_time_s": budget_s,
            "unfreeze_epoch": unfreeze_epoch,
            "lr_milestones": [],
            "num_workers": 0,
            "seed": seed,
        },
    }


def arm_config(arm: str, data: dict, budget_s: float, unfreeze_epoch: int) -> dict:
    config = base_config(data, budget_s, unfreeze_epoch)
    training = config["training"]
    if arm == "today":
        training.update(TODAY)
        return config
    if arm == "stabilised":
        return config
    if arm == "frozen_bn":
        training["backbone_batchnorm"] = "frozen"
        return config
    # the new models are the presets elp train recommends (engine.advice), as a user gets them
    if arm == "crop_zoom":
        return preset_params("small_animal_crop_zoom", base=config)
    if arm == "crop_train":
        return preset_params("full_resolution_crops", frame_size=data["size"], base=config)
    raise ValueError(f"unknown arm {arm!r}; known: {ARMS}")


def flat_returns(model_dir: Path) -> tuple[bool, int, int]:
    """(loss went back to the flat value, guard restores, epochs) over every stage's metrics.csv.

    "Back to flat": after an epoch below 0.9x the flat-heatmap loss, an epoch at 0.95x or above.
    """
    returned, restores, epochs = False, 0, 0
    for metrics_csv in model_dir.rglob("metrics.csv"):
        if "logs" in metrics_csv.parts:
            continue
        frame = pd.read_csv(metrics_csv)
        if "stage" in frame:  # a crop-zoom model's combined history: each stage is scored on its own
            continue
        config = yaml.safe_load((metrics_csv.parent / "config.yaml").read_text())
        flat = flat_heatmap_loss(tuple(config["data"]["image_resize"]), config["model"]["heatmap_sigma"])
        loss = frame.get("train_supervised_loss", frame.get("train_loss"))
        if loss is not None:
            loss = loss.to_numpy(dtype=float)
            learned = np.flatnonzero(loss < 0.9 * flat)
            returned |= bool(len(learned) and (loss[learned[0] :] >= 0.95 * flat).any())
        if "collapse_restored" in frame:
            restores += int(frame["collapse_restored"].fillna(0).sum())
        epochs = max(epochs, len(frame))
    return returned, restores, epochs


def error_summary(errors: np.ndarray) -> dict:
    """Mean / median / p95 of the finite errors, how many there are, and how many are missing
    (NaN: a keypoint the model did not place, e.g. a crop-zoom frame whose detection failed)."""
    finite = errors[np.isfinite(errors)]
    missed = int(np.sum(~np.isfinite(errors)))
    if not len(finite):
        return {"mean": None, "median": None, "p95": None, "n": 0, "missed": missed}
    return {
        "mean": float(finite.mean()),
        "median": float(np.median(finite)),
        "p95": float(np.percentile(finite, 95)),
        "n": int(len(finite)),
        "missed": missed,
    }


def video_stability(predictions: np.ndarray, jump_px: float = JUMP_PX) -> dict:
    """Frames whose any keypoint moved more than ``jump_px`` since the previous frame, frames with
    a keypoint not placed (NaN: no jump can be seen there), and the likelihood: the median over
    every (frame, keypoint) and the range of the per-keypoint medians."""
    moved = temporal_norm(predictions)
    per_keypoint = np.nanmedian(predictions[..., 2], axis=0)
    return {
        "video_frames": int(len(predictions)),
        "jump_frames": int(np.sum((moved > jump_px).any(axis=1))),
        "missed_frames": int(np.sum(~np.isfinite(predictions[..., :2]).all(axis=(1, 2)))),
        "likelihood_median": float(np.nanmedian(predictions[..., 2])),
        "likelihood_keypoint_medians": [float(per_keypoint.min()), float(per_keypoint.max())],
    }


def train_and_score(data: dict, config: dict, model_dir: Path) -> dict:
    """Train ``config`` on ``data`` into ``model_dir``; score it on the test split of seed 0 in
    original-frame pixels and, where ``data`` has a video, on every frame of it (against ground
    truth when ``data["synthetic"]``)."""
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    train(config, data["root"], model_dir, progress=False)
    train_s = time.perf_counter() - started
    returned, restores, epochs = flat_returns(model_dir)
    result = {"train_wall_s": train_s, "epochs": epochs, "returned_to_flat": returned, "guard_restores": restores}
    result.update(score(data, model_dir))
    result["load_average"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    return result


def score(data: dict, model_dir: Path) -> dict:
    """The scores of :func:`train_and_score` of a trained ``model_dir``, with today's inference code."""
    load_before = os.getloadavg()[0]
    labels, _ = load_project(data["root"], data["csv"])
    test_rows = np.flatnonzero(split_frames(len(labels), 0.8, 0.1, 0) == "test")
    model = load_model(model_dir)
    predictions = predict_labeled(model, labels.subset(test_rows))
    errors = np.linalg.norm(predictions[..., :2] - labels.keypoints[test_rows], axis=-1)
    labeled = np.isfinite(labels.keypoints[test_rows]).all(axis=-1)  # an unlabeled keypoint is not a miss
    result: dict = {"test": error_summary(errors[labeled])}
    if data.get("video"):
        video = predict_video(model, data["video"], progress=False)
        result.update(video_stability(video.predictions))
        result["frames_per_s"] = video.frames_per_s
        if data.get("synthetic"):
            truth, _ = load_synthetic_project(data["root"]).ground_truth(data["video"])
            video_errors = np.linalg.norm(video.predictions[..., :2] - truth, axis=-1)
            result["video"] = error_summary(video_errors.ravel())
            result["video_gross_share"] = float(np.mean(~(video_errors <= 30)))  # a miss (NaN) is gross too
    result.update(
        load_average=[round(load_before, 1), round(os.getloadavg()[0], 1)],
        cpu=cpu_model(),
        when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    return result


def run(dataset_name: str, arm: str, args: argparse.Namespace) -> dict:
    data = dataset(dataset_name, args.work)
    config = arm_config(arm, data, args.budget_s, args.unfreeze_epoch)
    model_dir = args.work / "models" / f"{dataset_name}_{arm}"
    return {"dataset": dataset_name, "arm": arm, "budget_s": args.budget_s, **train_and_score(data, config, model_dir)}


def _px(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(results: list[dict]) -> str:
    cpu = sorted({r["cpu"] for r in results})
    lines = [
        *header("Small animals in large frames (issue #19)"),
        f"The saved runs ran on: {', '.join(cpu)} (other jobs shared the machine, so wall times are per run, "
        "not exclusive).",
        "",
        "Errors in original-frame pixels; test = the labeled test split (seed 0, 10%); video = every frame of the "
        "arena's second video against ground truth (gross = share of keypoints off by more than 30 px). "
        "'back to flat': the training loss returned to >= 0.95x the flat-heatmap value after being below 0.9x.",
        "",
        "| dataset | arm | test mean | test median | test p95 | video mean | video p95 | video gross | back to flat | "
        "guard restores | epochs | train wall s | predict fps | load avg | when |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {name: i for i, name in enumerate(DATASETS)}
    for r in sorted(results, key=lambda r: (order.get(r["dataset"], 9), ARMS.index(r["arm"]))):
        video = r.get("video", {})
        gross = f"{r['video_gross_share']:.3f}" if "video_gross_share" in r else "-"
        lines.append(
            f"| {r['dataset']} | {r['arm']} | {_px(r['test']['mean'])} | {_px(r['test']['median'])} | "
            f"{_px(r['test']['p95'])} | {_px(video.get('mean'))} | {_px(video.get('p95'))} | "
            f"{gross} | "
            f"{'yes' if r['returned_to_flat'] else 'no'} | {r['guard_restores']} | {r['epochs']} | "
            f"{r['train_wall_s']:.0f} | {_px(r.get('frames_per_s'))} | "
            f"{'/'.join(str(v) for v in r.get('load_average', [])) or '-'} | {r['when']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--budget-s", type=float, default=300.0, help="training wall time per run")
    parser.add_argument("--unfreeze-epoch", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/elp-small-animal"))
    parser.add_argument("--out", type=Path, default=RESULTS / "small_animal.md")
    parser.add_argument("--redo", action="store_true", help="repeat runs already saved in --work")
    parser.add_argument(
        "--rescore", action="store_true", help="recompute the flat-loss columns of saved runs from their model dirs"
    )
    args = parser.parse_args()
    if args.rescore:
        for saved in sorted((args.work / "results").glob("*.json")):
            result = json.loads(saved.read_text())
            model_dir = args.work / "models" / f"{result['dataset']}_{result['arm']}"
            if model_dir.is_dir():
                result["returned_to_flat"], result["guard_restores"], result["epochs"] = flat_returns(model_dir)
                saved.write_text(json.dumps(result, indent=2))
    (args.work / "results").mkdir(parents=True, exist_ok=True)
    for name in args.datasets:
        for arm in args.arms:
            saved = args.work / "results" / f"{name}_{arm}.json"
            if saved.is_file() and not args.redo:
                continue
            print(f"{name} / {arm}: training for {args.budget_s:.0f} s", flush=True)
            result = run(name, arm, args)
            saved.write_text(json.dumps(result, indent=2))
            print(json.dumps(result), flush=True)
    results = [json.loads(p.read_text()) for p in sorted((args.work / "results").glob("*.json"))]
    print(write_results(args.out, table(results)))


if __name__ == "__main__":
    main()
