#!/usr/bin/env python
"""Do the semi-supervised losses pay on real data? A fine-tune comparison with seeds (issue #27, item 4).

Project: Lightning Pose's mirror-mouse example (90 labeled frames, 17 keypoints, a top and a
bottom view in one 406x396 frame) and its video ``videos/test_vid.mp4`` (994 frames), which
comes from another session than the labeled frames (``semisupervised_real.md`` says how that
was checked). ImageNet efficientnet_lite0, input 256x256, labeled batch 8, the engine's
defaults otherwise (backbone unfrozen at epoch 20, no step decay within these epochs), no data
loader processes.

1. ``base``: one supervised model, split seed 0, ``--base-epochs`` epochs.
2. From its ``last.ckpt`` (the end of its last epoch that improved the validation loss: Lightning
   2.6 writes ``last.ckpt`` only with a new best checkpoint), for each training seed (batch order, augmentation, clips), ``--epochs``
   more epochs through ``train(..., resume_from=...)`` with a changed configuration (the
   engine's way to continue a model: weights, optimizer and epoch counter carry on; the new
   configuration's losses apply), into a model directory of its own:

   - ``supervised``: the labels only;
   - ``semi``: the same plus the temporal, pose PCA (the 14 body keypoints, obstacles out) and
     multi-view PCA losses (``losses.view_groups``: the 7 body parts seen in the top view and
     in the bottom view) on clips of the video, at the engine's default weights and clip
     length;
   - ``supervised_long``: ``supervised`` continued until it has had the ``semi`` run's CPU
     time (the sum of ``train_cpu_s`` over the fine-tune epochs: at one thread the work of one
     core, which other jobs on a shared machine do not inflate as they inflate wall time).

3. Every model (its ``best.ckpt``: the epoch of lowest validation loss within its run, as
   ``elp predict`` and the pipeline load it) is scored on the labeled test frames of the base's split (the same frames for every model; error in
   original pixels: mean, median, p95) and on every frame of the video: frames where any
   keypoint moved > 30 px since the previous frame (all 17 keypoints, as issue #27 counts
   them, and the 14 body keypoints), the median likelihood, the pose-PCA and multi-view-PCA
   residuals of the predictions (PCAs fitted on the base's training labels, as the semi arm
   fits them) and frames/s.

Each run is saved as JSON in ``--work/results`` as soon as it is scored; a second call skips
what is saved, ``--table-only`` rebuilds the markdown from the saved JSON. Text after the
``## Notes`` heading of an existing ``--out`` is kept. ``--quick`` is a smoke check (2 base
epochs, 1 fine-tune epoch, one seed, 100 video frames) in its own work folder and output;
``--diagnose RUN ...`` prints per-keypoint jumps, likelihood and test error of saved runs.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_semisupervised_real.py --base-epochs 60 --epochs 16
           --seeds 0 1 2 3 4 [--work /var/tmp/elp-semireal] [--out benchmarks/results/semisupervised_real.md]
           [--quick] [--table-only] [--diagnose RUN ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from _common import REPO, RESULTS, cpu_model, header, markdown_table, write_results
from bench_presets import NOTES, kept_notes
from bench_small_animal import JUMP_PX, error_summary, video_stability

from element_lightning_pose.engine.config import LossesConfig
from element_lightning_pose.engine.data.labels import image_file, read_image
from element_lightning_pose.engine.data.projects import load_project
from element_lightning_pose.engine.data.splits import read_splits
from element_lightning_pose.engine.data.video import iter_frames
from element_lightning_pose.engine.inference.metrics import temporal_norm
from element_lightning_pose.engine.inference.models import load_model
from element_lightning_pose.engine.inference.predict import predict_labeled, predict_video
from element_lightning_pose.engine.training import train
from element_lightning_pose.engine.training.pca import fit_pcas

PROJECT = Path(os.environ.get("LP_EXAMPLE_DATA", REPO.parent / "shared" / "data" / "mirror-mouse-example"))
VIDEO = "videos/test_vid.mp4"
PARTS = ("paw1LH", "paw2LF", "paw3RF", "paw4RH", "tailBase", "tailMid", "nose")  # seen in both views
VIEW_GROUPS = [[f"{part}_top" for part in PARTS], [f"{part}_bot" for part in PARTS]]
BODY = [name for view in VIEW_GROUPS for name in view]  # the obstacles (obs_top, obsHigh_bot, obsLow_bot) left out
ARMS = ("supervised", "semi", "supervised_long")
# the lick spout, top right of the frame (rows, columns): where it sits tells one session's set-up from another's
SPOUT = (slice(20, 55), slice(340, 396))
LOSS_COLUMNS = (
    "train_loss",
    "train_supervised_loss",
    "train_temporal_loss",
    "train_pca_singleview_loss",
    "train_pca_multiview_loss",
)


def base_config(epochs: int, seed: int) -> dict:
    """What every model shares; the rest is the engine's defaults."""
    return {
        "data": {"image_resize": [256, 256], "split_seed": 0},
        "model": {"backbone": "efficientnet_lite0", "pretrained": True},
        "training": {"max_epochs": epochs, "batch_size": 8, "seed": seed, "num_workers": 0},
    }


def semi_losses(cache_dir: Path) -> dict:
    """The three losses a single-frame mirror project can use, at the engine's default weights and clip."""
    return {
        "unsupervised": ["temporal", "pca_singleview", "pca_multiview"],
        "pca_singleview_keypoints": BODY,
        "view_groups": VIEW_GROUPS,
        "cache_dir": str(cache_dir),  # decoded once, shared by every semi run
    }


class Scorer:
    """Scores a model on the base's test frames and on the video (PCAs from the base's training labels)."""

    def __init__(self, base_dir: Path, video_frames: int | None) -> None:
        self.labels, _ = load_project(PROJECT)
        saved = read_splits(base_dir / "splits.csv")
        splits = np.array([saved[p] for p in self.labels.image_paths])
        self.test_rows = np.flatnonzero(splits == "test")
        losses = LossesConfig(
            unsupervised=["pca_singleview", "pca_multiview"], pca_singleview_keypoints=BODY, view_groups=VIEW_GROUPS
        )
        self.pcas = fit_pcas(self.labels.keypoints[splits == "train"], self.labels.bodyparts, losses)
        self.body = [self.labels.bodyparts.index(name) for name in BODY]
        self.video_frames = video_frames

    def __call__(self, model_dir: Path) -> dict:
        model = load_model(model_dir)  # best.ckpt, as elp predict and the pipeline load it
        test = self.labels.subset(self.test_rows)
        predictions = predict_labeled(model, test)
        errors = np.linalg.norm(predictions[..., :2] - test.keypoints, axis=-1)
        video = predict_video(model, PROJECT / VIDEO, stop=self.video_frames, progress=False)
        points = video.predictions
        body = video_stability(points[:, self.body])
        return {
            "test": error_summary(errors[np.isfinite(test.keypoints).all(axis=-1)]),
            "test_frames": len(self.test_rows),
            **video_stability(points),
            "jump_frames_body": body["jump_frames"],
            **{
                f"{kind}_residual": float(np.mean(pca.residual_keypoints(points[..., :2])))
                for kind, pca in self.pcas.items()
            },
            "pca_epsilon": {kind: pca.epsilon for kind, pca in self.pcas.items()},
            "frames_per_s": video.frames_per_s,
            "scored_epoch": checkpoint_epoch(model_dir / "checkpoints" / "best.ckpt"),
        }


def session_evidence() -> dict:
    """Is the video another session than the labeled frames? What the pixels say (grey, original size).

    Each labeled frame's nearest video frame (blurred, sigma 3 px, every 4th pixel: small shifts and
    noise do not count), against the distance between consecutive video frames (4 ms apart); and
    the lick spout's box in each labeled frame against the video's median image there.
    """

    def grey(rgb: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)

    def coarse(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image, (0, 0), 3)[::4, ::4]

    labels, _ = load_project(PROJECT)
    video = np.stack([grey(frame) for frame in iter_frames(PROJECT / VIDEO)])
    labeled = np.stack([grey(read_image(image_file(labels, row))) for row in range(len(labels))])
    video_coarse = np.stack([coarse(f) for f in video])
    nearest = [
        float(np.sqrt(((coarse(f) - video_coarse) ** 2).mean(axis=(1, 2))).min()) for f in labeled
    ]  # per labeled frame
    consecutive = np.sqrt(((video_coarse[1:] - video_coarse[:-1]) ** 2).mean(axis=(1, 2)))
    median_spout = np.median(video, axis=0)[SPOUT]
    spout_video = np.sqrt(((video[(slice(None), *SPOUT)] - median_spout) ** 2).mean(axis=(1, 2)))
    spout_labeled = np.sqrt(((labeled[(slice(None), *SPOUT)] - median_spout) ** 2).mean(axis=(1, 2)))
    return {
        "labeled_frames": len(labels),
        "video_frames": len(video),
        "nearest_video_rms": [min(nearest), float(np.median(nearest))],
        "consecutive_video_rms": [float(np.median(consecutive)), float(consecutive.max())],
        "spout_rms_video_p99": float(np.percentile(spout_video, 99)),
        "spout_rms_labeled": [float(spout_labeled.min()), float(np.median(spout_labeled))],
        "labeled_within_video_spout_p99": int((spout_labeled <= np.percentile(spout_video, 99)).sum()),
        "brightness_video": [float(video.mean(axis=(1, 2)).min()), float(video.mean(axis=(1, 2)).max())],
        "brightness_labeled": [float(labeled.mean(axis=(1, 2)).min()), float(labeled.mean(axis=(1, 2)).max())],
    }


def diagnose(names: list[str], args: argparse.Namespace) -> None:
    """Per keypoint, for the saved models ``names``: video jump counts, median move and likelihood, test error."""
    scorer = Scorer(args.work / "models" / "base", args.video_frames)
    test = scorer.labels.subset(scorer.test_rows)
    short = [n.replace("_top", "_t").replace("_bot", "_b") for n in scorer.labels.bodyparts]
    print(f"{'':30}" + "".join(f"{n:>11}" for n in short))
    for name in names:
        model = load_model(args.work / "models" / name)
        points = predict_video(model, PROJECT / VIDEO, stop=args.video_frames, progress=False).predictions
        moved = temporal_norm(points)
        errors = np.linalg.norm(predict_labeled(model, test)[..., :2] - test.keypoints, axis=-1)
        for what, values in (
            (f"jumps > {JUMP_PX:.0f} px", (moved > JUMP_PX).sum(axis=0)),
            ("median move px", np.nanmedian(moved, axis=0)),
            ("median likelihood", np.median(points[..., 2], axis=0)),
            ("test mean px", np.nanmean(errors, axis=0)),
            ("test max px", np.nanmax(errors, axis=0)),
        ):
            print(f"{name + ' ' + what:30}" + "".join(f"{v:>11.2f}" for v in values))
        # a one-frame excursion: out > JUMP_PX and straight back (within half of it of where it was)
        back = np.linalg.norm(points[2:, :, :2] - points[:-2, :, :2], axis=-1)
        spikes = (moved[1:-1] > JUMP_PX) & (moved[2:] > JUMP_PX) & (back < JUMP_PX / 2)
        print(f"{name}: {int(spikes.sum())} one-frame excursions of {int((moved > JUMP_PX).sum())} keypoint jumps")


def checkpoint_epoch(path: Path) -> int:
    """The epoch (0-based) whose end ``path`` holds."""
    return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["epoch"])


def fine_tune_costs(history: pd.DataFrame, first_epoch: int) -> dict:
    """CPU and wall seconds of the epochs from ``first_epoch`` on, and their losses first -> last."""
    rows = history[history["epoch"] >= first_epoch]
    costs = {
        "epochs_run": int(len(rows)),
        "train_cpu_s": float(rows["train_cpu_s"].sum()),
        "epoch_wall_s": float(rows["epoch_s"].sum()),
    }
    for column in LOSS_COLUMNS:
        if column in rows and rows[column].notna().any():
            costs[column] = [float(rows[column].iloc[0]), float(rows[column].iloc[-1])]
    return costs


def run_model(
    name: str, config: dict, args: argparse.Namespace, resume_from: Path | None, start_epoch: int, scorer_of
) -> dict:
    """Train ``config`` into ``--work/models/name`` (from ``resume_from``) and score it; its costs are
    those of its history's epochs from ``start_epoch`` on (a resumed history carries on)."""
    model_dir = args.work / "models" / name
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    result = train(config, PROJECT, model_dir, resume_from=resume_from, progress=False)
    run_wall = time.perf_counter() - started
    base_split = args.work / "models" / "base" / "splits.csv"
    if base_split.read_text() != (model_dir / "splits.csv").read_text():
        raise SystemExit(f"{model_dir}: its split differs from the base's")  # the test frames must be the same
    return {
        "name": name,
        "total_epochs": int(result.history["epoch"].iloc[-1]) + 1,
        "run_wall_s": run_wall,
        "start_epoch": start_epoch,
        **fine_tune_costs(result.history, start_epoch),
        **scorer_of()(model_dir),
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        "cpu": cpu_model(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def saved_or_run(
    name: str, args: argparse.Namespace, config: dict, resume_from: Path | None, start_epoch: int, scorer_of
) -> dict:
    """The saved result of run ``name``, or :func:`run_model`'s, saved as soon as it is scored."""
    path = args.work / "results" / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    print(f"{name}: training", flush=True)
    row = run_model(name, config, args, resume_from, start_epoch, scorer_of)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=2))
    print(json.dumps(row), flush=True)
    return row


def run_all(args: argparse.Namespace) -> None:
    scorer: list[Scorer] = []

    def scorer_of() -> Scorer:  # built after the base exists: its split and training labels
        if not scorer:
            scorer.append(Scorer(args.work / "models" / "base", args.video_frames))
        return scorer[0]

    models = args.work / "models"
    saved_or_run("base", args, base_config(args.base_epochs, 0), None, 0, scorer_of)
    start = models / "base" / "checkpoints" / "last.ckpt"
    # last.ckpt holds the base's last epoch that improved the validation loss (Lightning 2.6 writes it only
    # with a best checkpoint), not always its final epoch: the fine-tunes train on from the epoch after it
    first = checkpoint_epoch(start) + 1
    end = first + args.epochs
    for seed in args.seeds:
        supervised = saved_or_run(f"supervised_s{seed}", args, base_config(end, seed), start, first, scorer_of)
        semi_config = {**base_config(end, seed), "losses": semi_losses(args.work / "frame_cache")}
        semi = saved_or_run(f"semi_s{seed}", args, semi_config, start, first, scorer_of)
        # as many epochs as the semi run's CPU time buys at this seed's supervised cost per epoch
        per_epoch = supervised["train_cpu_s"] / supervised["epochs_run"]
        epochs = max(args.epochs, round(semi["train_cpu_s"] / per_epoch))
        resume = models / f"supervised_s{seed}" / "checkpoints" / "last.ckpt"
        name = f"supervised_long_s{seed}"
        # from the supervised run's last.ckpt: its history up to there is part of this arm's fine-tune
        long = saved_or_run(name, args, base_config(first + epochs, seed), resume, first, scorer_of)
        if long["epochs_run"] != long["total_epochs"] - first:
            # its costs must include the supervised run's epochs it continued (a resumed history carries on)
            raise SystemExit(f"{name}: its history lacks the supervised run's epochs")


def _num(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _mean_sd(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    sd = np.std(values, ddof=1) if len(values) > 1 else 0.0
    return f"{np.mean(values):.{digits}f} ± {sd:.{digits}f}"


METRICS = (  # (column, value of a run, digits)
    ("fine-tune epochs", lambda r: r["epochs_run"], 0),
    ("test mean px", lambda r: r["test"]["mean"], 2),
    ("test median", lambda r: r["test"]["median"], 2),
    ("test p95", lambda r: r["test"]["p95"], 2),
    ("jump frames", lambda r: r["jump_frames"], 0),
    ("jumps, body kp", lambda r: r["jump_frames_body"], 0),
    ("likelihood median", lambda r: r["likelihood_median"], 3),
    ("pose PCA residual px", lambda r: r["pca_singleview_residual"], 2),
    ("multi-view residual px", lambda r: r["pca_multiview_residual"], 2),
    ("train CPU s", lambda r: r["train_cpu_s"], 0),
    ("train wall s", lambda r: r["epoch_wall_s"], 0),
    ("frames/s", lambda r: r["frames_per_s"], 1),
)


def verdict(results: dict[str, dict], seeds: list[int], against: str) -> tuple[int, int, list[str]]:
    """Seeds where semi had fewer jump frames than ``against`` at a test mean no worse; per-seed lines."""
    wins, seen, lines = 0, 0, []
    for seed in seeds:
        semi, other = results.get(f"semi_s{seed}"), results.get(f"{against}_s{seed}")
        if semi is None or other is None:
            continue
        seen += 1
        fewer = semi["jump_frames"] < other["jump_frames"]
        no_worse = semi["test"]["mean"] <= other["test"]["mean"]
        wins += fewer and no_worse
        lines.append(
            f"| {seed} | {against} | {other['jump_frames']} -> {semi['jump_frames']} | "
            f"{other['jump_frames_body']} -> {semi['jump_frames_body']} | "
            f"{other['test']['mean']:.2f} -> {semi['test']['mean']:.2f} | "
            f"{other['test']['p95']:.2f} -> {semi['test']['p95']:.2f} | "
            f"{'yes' if fewer else 'no'} | {'yes' if no_worse else 'no'} | "
            f"{semi['train_cpu_s'] / other['train_cpu_s']:.2f}x |"
        )
    return wins, seen, lines


def table(results: dict[str, dict], session: dict, args: argparse.Namespace) -> str:
    seeds = sorted({int(k.rsplit("_s", 1)[1]) for k in results if k != "base"})
    cpus = sorted({r["cpu"] for r in results.values()})
    base = results.get("base")
    loads = [value for r in results.values() for value in r["load_average"]]
    lines = [
        *header(
            "Semi-supervised losses on real data: mirror-mouse, fine-tuned from one checkpoint over seeds (issue #27)"
        ),
        f"The runs ran on: {', '.join(cpus)}; one at a time, one thread, on a machine that other jobs shared "
        f"(1-minute load {min(loads):.1f}-{max(loads):.1f} on its 2 cores; `load avg`: before/after each run), so "
        "wall times are inflated and noisy; CPU times are not.",
        "",
        f"Project `mirror-mouse-example` ({PROJECT}): 90 labeled frames, 17 keypoints, a top and a bottom view in "
        "one 406x396 frame, and its video `videos/test_vid.mp4` (994 frames, 250 frames/s). The video is from "
        "another session than the labeled frames, as far as the pixels tell: no labeled frame is near any video "
        f"frame (blurred grey rms to the nearest: {session['nearest_video_rms'][0]:.1f} at least, median "
        f"{session['nearest_video_rms'][1]:.1f}, where consecutive video frames, 4 ms apart, differ by "
        f"{session['consecutive_video_rms'][0]:.1f} median, {session['consecutive_video_rms'][1]:.1f} at most), "
        "and the lick spout sits elsewhere in every labeled frame (rms of its box to the video's median image: "
        f"{session['spout_rms_labeled'][0]:.1f} at least, where 99% of the video's frames are within "
        f"{session['spout_rms_video_p99']:.1f}; {session['labeled_within_video_spout_p99']} of "
        f"{session['labeled_frames']} labeled frames within it). ImageNet efficientnet_lite0, input 256x256, labeled batch 8, "
        "the engine's defaults otherwise (backbone unfrozen at epoch 20, Adam 1e-3, no step decay within these "
        "epochs), no loader processes. Every model is scored at its `best.ckpt` (the epoch of lowest validation "
        "loss on 9 frames within its run, as `elp predict` loads it; `scored epoch` below).",
        "",
        f"- `base`: supervised, split seed 0, training seed 0, {args.base_epochs} epochs"
        + (
            f" ({base['train_cpu_s']:.0f} CPU s, {base['epoch_wall_s']:.0f} s of epochs); its `last.ckpt`, where "
            f"the fine-tunes start, holds the end of epoch {base['scored_epoch'] + 1} (Lightning writes `last.ckpt` "
            "only with a new best checkpoint)."
            if base
            else "."
        ),
        "- From the base's `last.ckpt`, per training seed, `train(config, ..., resume_from=last.ckpt)` into a new "
        f"model directory, {args.epochs} more epochs: `supervised` (labels only); `semi` (+ temporal, pose PCA on "
        "the 14 body keypoints, multi-view PCA on `view_groups` = the 7 body parts in the top and bottom views, on "
        "4-frame clips of the video: the engine's default weights 0.001, clip length 4, epsilons; its warm-up "
        "counts from epoch 0, so it is over at the fine-tune's start); `supervised_long`: `supervised` continued "
        "(from its `last.ckpt`) until it has had the semi run's CPU time (`train_cpu_s`).",
        "- Test: the base's test split (the same "
        + (f"{base['test_frames']} frames" if base else "frames")
        + " for every model), original pixels. Video: every frame; jump frames = frames where a keypoint moved "
        f"> {JUMP_PX:.0f} px since the previous frame (all 17 keypoints; `body kp`: the 14 without the "
        "obstacles); likelihood = median over (frame, keypoint); residuals = mean distance of the predicted "
        "keypoints from the pose PCA / multi-view PCA fitted on the base's training labels (the semi arm's own "
        "PCAs"
        + (
            f"; their epsilons {base['pca_epsilon']['pca_singleview']:.1f} / {base['pca_epsilon']['pca_multiview']:.1f} px"
            if base
            else ""
        )
        + "). CPU s: the process's CPU time on the fine-tune's training batches; wall s: those epochs' wall time; "
        "`train() s`: the whole call (`supervised_long`: its own epochs, after those of `supervised` it continued).",
        "",
        "## Mean ± sd over seeds",
        "",
    ]
    rows = []
    if base:
        rows.append(["base (start)", "-", *[_num(get(base), d) for _, get, d in METRICS]])
    for arm in ARMS:
        runs = [results[f"{arm}_s{s}"] for s in seeds if f"{arm}_s{s}" in results]
        if runs:
            rows.append([arm, str(len(runs)), *[_mean_sd([get(r) for r in runs], d) for _, get, d in METRICS]])
    lines += markdown_table(["arm", "seeds", *[name for name, _, _ in METRICS]], rows)
    lines += [
        "",
        "## Semi vs supervised, seed by seed",
        "",
        "Fewer jumps: semi's jump frames (all keypoints) below the other arm's; no worse: semi's test mean <= the "
        "other arm's. CPU: semi's fine-tune CPU seconds / the other arm's.",
        "",
        "| seed | against | jump frames | jumps, body kp | test mean px | test p95 | fewer jumps | test no worse | CPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    summary = []
    for against in ("supervised", "supervised_long"):
        wins, seen, seed_lines = verdict(results, seeds, against)
        lines += seed_lines
        if seen:
            summary.append(
                f"- against `{against}`: semi had fewer jump frames at a test error no worse on **{wins} of {seen}** seeds."
            )
    lines += ["", *summary, "", "## Every run", ""]
    run_rows = []
    for key in ["base", *[f"{arm}_s{s}" for s in seeds for arm in ARMS]]:
        r = results.get(key)
        if r is None:
            continue
        losses = "; ".join(
            f"{c.removeprefix('train_').removesuffix('_loss')} {r[c][0]:.3g}->{r[c][1]:.3g}"
            for c in LOSS_COLUMNS
            if c in r
        )
        run_rows.append(
            [
                key,
                str(r["total_epochs"]),
                str(r["scored_epoch"] + 1),
                *[_num(get(r), d) for _, get, d in METRICS],
                f"{r['run_wall_s']:.0f}",
                losses,
                "/".join(str(v) for v in r["load_average"]),
                r["when"],
            ]
        )
    lines += markdown_table(
        [
            "run",
            "epochs in all",
            "scored epoch",
            *[name for name, _, _ in METRICS],
            "train() s",
            "losses first->last",
            "load avg",
            "when",
        ],
        run_rows,
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-epochs", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=16, help="fine-tune epochs of the supervised and semi arms")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="fine-tune training seeds")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/elp-semireal"))
    parser.add_argument("--out", type=Path, default=RESULTS / "semisupervised_real.md")
    parser.add_argument("--video-frames", type=int, default=None, help="score only the video's first frames")
    parser.add_argument("--quick", action="store_true", help="smoke check: 2 + 1 epochs, one seed, 100 video frames")
    parser.add_argument("--table-only", action="store_true", help="rebuild the markdown from the saved JSON")
    parser.add_argument(
        "--diagnose", nargs="+", metavar="RUN", help="per-keypoint jumps and test error of saved runs (no table)"
    )
    args = parser.parse_args()
    if args.quick:
        args.base_epochs, args.epochs, args.seeds, args.video_frames = 2, 1, [0], 100
        args.work = Path("/tmp/elp-semireal-quick")
        args.out = Path("/tmp/semisupervised_real_quick.md")
    if args.diagnose:
        diagnose(args.diagnose, args)
        return
    session = args.work / "session.json"
    if not session.is_file():
        session.parent.mkdir(parents=True, exist_ok=True)
        session.write_text(json.dumps(session_evidence(), indent=2))
    if not args.table_only:
        run_all(args)
    results = {p.stem: json.loads(p.read_text()) for p in sorted((args.work / "results").glob("*.json"))}
    notes = kept_notes(args.out)
    text = table(results, json.loads(session.read_text()), args)
    print(write_results(args.out, text + ("\n" + notes if notes else f"\n{NOTES}\n")))


if __name__ == "__main__":
    main()
