#!/usr/bin/env python
"""Crop zoom with and without the unsupervised losses, at equal epochs, over seeds (issue #27, items 3-4).

The synthetic arena of ``bench_small_animal`` (480x640 frames, a small animal, 116 labeled frames,
two 600-frame videos with ground truth). Both arms train the two crop-zoom stages for the same
``--epochs`` from ImageNet efficientnet_lite0 at ``--pose-input`` / ``--detector-input``:

- ``supervised``: the labeled crops alone;
- ``semi``: plus the temporal and pose-PCA losses on the project's videos cropped by the trained
  detector (``training.crop_zoom.write_cropped_videos``), 4-frame clips;
- ``semi_temporal`` / ``semi_pca``: one of the two losses (``--arms``), to tell which does what.

Scores (``bench_small_animal.score``): the labeled test split of seed 0, and every frame of the
project's second video against its ground truth (error, gross share = keypoints > 30 px off),
jumps (a keypoint moving > 30 px between frames), likelihood. The clips come from the project's
videos, the scored one included: transductive, as a lab's own videos are. The arena's labels
come from both videos (58 of the scored video's 600 frames are labeled), so the video error is
not all on unseen frames; the test split is. Runs are saved as JSON in ``--work/results``; ``--table-only`` rebuilds the table.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_cropzoom_semi.py --epochs 30 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import RESULTS, header, markdown_table, write_results
from bench_small_animal import dataset, train_and_score

# the losses of each arm (``--arms``); the last two tell which loss does what
ARMS = {
    "supervised": None,
    "semi": {"unsupervised": ["temporal", "pca_singleview"], "clip_length": 4},
    "semi_temporal": {"unsupervised": ["temporal"], "clip_length": 4},
    "semi_pca": {"unsupervised": ["pca_singleview"], "clip_length": 4},
}


# arms run by an earlier version of the engine, kept in the table (they cannot be run again)
EARLIER = {
    "semi_uncentred": "semi before the pose stage's PCA was centred (the defect this benchmark found, fixed in "
    "the commit 'Crop zoom's pose PCA is of the keypoints relative to their mean')",
}


def arm_config(arm: str, data: dict, args: argparse.Namespace, seed: int) -> dict:
    config = {
        "data": {"csv_file": data["csv"], "image_resize": [args.pose_input] * 2},
        "model": {"backbone": "efficientnet_lite0", "pretrained": True},
        "training": {
            "max_epochs": args.epochs,
            "unfreeze_epoch": min(5, args.epochs // 3),
            "lr_milestones": [],
            "num_workers": 0,
            "seed": seed,
        },
        "crop_zoom": {"enabled": True, "detector_resize": [args.detector_input] * 2},
    }
    if ARMS[arm] is not None:
        config["losses"] = dict(ARMS[arm])
    return config


def _num(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: list[dict], args: argparse.Namespace) -> list[str]:
    rows = []
    order = [*ARMS, *EARLIER]
    for r in sorted(results, key=lambda r: (r["seed"], order.index(r["arm"]))):
        video = r.get("video", {})
        rows.append(
            [
                r["arm"],
                str(r["seed"]),
                _num(r["test"]["mean"]),
                _num(r["test"]["p95"]),
                _num(video.get("mean")),
                _num(video.get("p95")),
                f"{r.get('video_gross_share', float('nan')):.3f}",
                f"{r['jump_frames']} / {r['video_frames']}",
                f"{r['likelihood_median']:.2f}",
                str(r["epochs"]),
                f"{r['train_wall_s']:.0f}",
                "/".join(str(v) for v in r["load_average"]),
            ]
        )
    pairs = []
    for seed in sorted({r["seed"] for r in results}):
        by_arm = {r["arm"]: r for r in results if r["seed"] == seed}
        if {"supervised", "semi"} <= by_arm.keys():
            s, m = by_arm["supervised"], by_arm["semi"]
            pairs.append(
                {
                    "seed": seed,
                    "fewer_jumps": m["jump_frames"] < s["jump_frames"],
                    "test_no_worse": m["test"]["mean"] <= s["test"]["mean"],
                    "video_better": m["video"]["mean"] < s["video"]["mean"],
                    "time": m["train_wall_s"] / s["train_wall_s"],
                }
            )
    lines = [
        *header("Crop zoom with and without the unsupervised losses (issue #27)"),
        f"Synthetic arena (480x640, 116 labels, 600-frame scored video with ground truth); both crop-zoom stages "
        f"{args.epochs} epochs, pose input {args.pose_input}x{args.pose_input}, detector "
        f"{args.detector_input}x{args.detector_input}, ImageNet efficientnet_lite0, batch 8. Semi: temporal + pose "
        "PCA on the project's videos cropped by the trained detector, 4-frame clips. Errors in original pixels.",
        "",
        *markdown_table(
            [
                "arm",
                "seed",
                "test mean",
                "test p95",
                "video mean",
                "video p95",
                "video gross",
                "jumps",
                "likelihood",
                "epochs",
                "train s",
                "load avg",
            ],
            rows,
        ),
        "",
    ]
    lines += [f"- `{arm}`: {about}" for arm, about in EARLIER.items() if any(r["arm"] == arm for r in results)]
    lines += [""]
    if pairs:
        n = len(pairs)
        lines += [
            f"Seeds where semi had fewer jumps: {sum(p['fewer_jumps'] for p in pairs)} of {n}; a test error no worse: "
            f"{sum(p['test_no_worse'] for p in pairs)} of {n}; a lower video error: "
            f"{sum(p['video_better'] for p in pairs)} of {n}. Training time semi / supervised: "
            + ", ".join(f"{p['time']:.2f}x" for p in pairs)
            + ".",
            "",
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--arms", nargs="+", default=["supervised", "semi"], choices=list(ARMS))
    parser.add_argument("--pose-input", type=int, default=128)
    parser.add_argument("--detector-input", type=int, default=64)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/elp-cropzoom-semi"))
    parser.add_argument("--out", type=Path, default=RESULTS / "cropzoom_semi.md")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    results_dir = args.work / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    data = dataset("arena", args.work)
    for seed in [] if args.table_only else args.seeds:
        for arm in args.arms:
            saved = results_dir / f"{arm}_s{seed}.json"
            if saved.is_file():
                continue
            started = time.strftime("%H:%M")
            print(f"{arm} seed {seed}: training ({started})", flush=True)
            result = train_and_score(data, arm_config(arm, data, args, seed), args.work / "models" / saved.stem)
            result.update(arm=arm, seed=seed)
            saved.write_text(json.dumps(result, indent=2))
            print(json.dumps({k: result[k] for k in ("test", "jump_frames", "video")}), flush=True)
    results = [json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))]
    print(write_results(args.out, table(results, args)))


if __name__ == "__main__":
    main()
