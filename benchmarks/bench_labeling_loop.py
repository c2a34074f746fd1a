#!/usr/bin/env python
"""A simulated labeling loop: does model-guided frame selection beat k-means and uniform?

Issue #24's claim, measured: after 3 rounds of 10 frames chosen by the model (its diagnostics)
the held-out p95 error is lower than after 3 rounds of 10 k-means frames.

The project (per seed, ``synthetic.sessions.make_session_project``): one animal, two views side
by side (a mirror rig), sessions that differ as a lab's recordings do (the floor's texture and
brightness, light and colour balance, the camera's distance with wider poses, distractor blobs
of body-part colours with disc occluders, motion blur with bar occluders). Each style is
recorded twice: a POOL session (its video is what the strategies select frames from) and a
HELD-OUT session (another draw of the same conditions: background, trajectory, occluders,
distractor positions; never selected from, every frame scored). Ground truth is known for every
frame of every session; the oracle labels what is selected from it.

The loop, per seed: the same initial labeled set for every strategy (``--initial`` k-means
frames, spread evenly over the pool videos), a model trained on it (round 0, shared), then
``--rounds`` rounds: each strategy selects ``--per-round`` frames over the pool videos (the same
quota per video for every strategy, frames already labeled excluded), the oracle labels them
through the app's own path (``selection.export_frames`` then ``labeling.store.LabelStore``:
``add_frames``, ``save_frame``), and a model is trained FROM SCRATCH (ImageNet weights) on all
labels so far and its predictions of the held-out sessions are scored. What is trained: k-means
and uniform selections depend on no model, so by default they are selected and labeled round
after round and trained only on their final labeled set; model-guided needs its model after
every round to select the next (per seed: round 0, model-guided after each round, k-means and
uniform once: 6 trainings for 3 rounds). ``--every-round`` trains every strategy after every
round (the report says which was run). Strategies:

- ``model``: ``select_model_guided`` over ``read_frame_scores`` of the previous round's model:
  its predictions CSV of the pool video (likelihood, temporal jumps) and the PCAs of the labels
  it was trained on (``training.pca.fit_pcas``, the training's own fit: the multi-view PCA from
  the start, the pose PCA once 18 frames are labeled); one model, no ensemble;
- ``kmeans``: ``select_kmeans`` (thumbnails, motion, PCA, k-means);
- ``uniform``: ``select_uniform``.

Every training: ``engine.training.train``, the same backbone, resize, batch and number of
optimizer steps (``--steps``; epochs = steps / batches per epoch, learning rate halved at 80%),
all labels for training (no validation split: with 10-40 labels a validation frame is a label
lost; the checkpoint kept is the one of the lowest training loss), the same training seed for
every strategy of a seed (the labels are the only difference). ``--max-time-s`` caps a training
in case the machine stalls (the report says if any hit it).

Metrics on the held-out sessions (every frame x every keypoint, original pixels): mean, p95 and
the gross-error share (error > 25% of the body length, the session's median true nose to tail
base distance in view 1, as ``results/ood.md``). For the diagnosis, each selection also records
the previous model's TRUE error on the frames it picked (what a perfect "where is the model
wrong" would pick) and where those errors rank in their pool video (for a k-means or uniform
round whose previous round trained no model: round 0's model); and for each model that a
selection used, how well its model-guided frame score ranks its true errors (Spearman).

Resumable: each (strategy, seed, round) result is saved as JSON in ``--work`` as soon as it
ends, with its selections and predictions; a rerun skips what is done and the report is
rebuilt from every saved run. A hand-written section of an existing ``--out`` (from a heading
``## Reading these numbers (written by hand``) is kept when the report is rewritten.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_labeling_loop.py --seeds 3 --rounds 3 --steps 200
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _common import RESULTS, command_line, cpu_model, header, markdown_table, write_results
from bench_ood import pooled, session_metrics

from element_lightning_pose.engine.atomic import write_text_atomic
from element_lightning_pose.engine.config import LossesConfig
from element_lightning_pose.engine.inference.models import load_model
from element_lightning_pose.engine.inference.predict import predict_video
from element_lightning_pose.engine.labeling.selection import (
    export_frames,
    read_frame_scores,
    select_kmeans,
    select_model_guided,
    select_uniform,
)
from element_lightning_pose.engine.labeling.store import LabelStore, PointEdit
from element_lightning_pose.engine.training import train
from element_lightning_pose.engine.training.pca import PCAFitError, fit_pca
from element_lightning_pose.synthetic.sessions import (
    NEW_SESSIONS,
    SessionProject,
    SessionStyle,
    load_session_project,
    make_session_project,
)

STRATEGIES = ("model", "kmeans", "uniform")
INITIAL = "initial"  # the shared round 0: the initial labeled set and its model
N_PARTS = 9
VIEW = list(range(N_PARTS))
VIEW_GROUPS = [VIEW, list(range(N_PARTS, 2 * N_PARTS))]
BATCH = 8
GROSS_SHARE = 0.25  # of the body length: the gross-error share reported (results/ood.md's >25%)
HAND_WRITTEN = "## Reading these numbers (written by hand"

# The conditions a lab's sessions vary in: the labeled rig of results/ood.md and its four new
# sessions' changes, each recorded once in the pool and once held out.
STYLES: dict[str, SessionStyle] = {
    "plain": SessionStyle(),
    "light": NEW_SESSIONS["new_light"],
    "closer": NEW_SESSIONS["new_closer"],
    "distractor": NEW_SESSIONS["new_distractor"],
    "blur": NEW_SESSIONS["new_blur"],
}


# ------------------------------------------------------------------------------ the project


def build_project(root: Path, seed: int, args: argparse.Namespace) -> SessionProject:
    """The seed's sessions: ``pool_<style>`` and ``held_<style>`` for each style of ``--styles``."""
    if not (root / "synthetic.json").is_file():
        if root.exists():
            shutil.rmtree(root)
        styles = {name: STYLES[name] for name in args.styles}
        make_session_project(
            root,
            seed=seed,
            image_size=tuple(args.size),
            views=2,
            n_labeled=len(styles),  # make_session_project's own labels are not used (see initial_project)
            n_frames=args.frames,
            train_sessions={f"pool_{name}": style for name, style in styles.items()},
            new_sessions={f"held_{name}": style for name, style in styles.items()},
        )
    return load_session_project(root)


def quotas(n: int, n_videos: int, round_index: int) -> list[int]:
    """``n`` frames over ``n_videos`` videos, as evenly as possible; the videos that get one more
    change from round to round (the same for every strategy)."""
    base, extra = divmod(n, n_videos)
    return [base + int((v - round_index) % n_videos < extra) for v in range(n_videos)]


def labeled_frames(store: LabelStore, video_stem: str) -> set[int]:
    """Frame numbers of ``labeled-data/<video_stem>/img*.png`` in the label table."""
    frames = set()
    for image, _ in store.images():
        parts = Path(image).parts
        if len(parts) == 3 and parts[1] == video_stem:
            frames.add(int(Path(parts[2]).stem.removeprefix("img")))
    return frames


def oracle_label(
    project_root: Path, source: SessionProject, picks: dict[str, list[int]], noise_px: float, rng: np.random.Generator
) -> None:
    """Export the picked frames of each pool session into ``project_root`` and label every body
    part at its true position (plus Gaussian noise of ``noise_px`` per coordinate), through the
    label store the app saves with."""
    store = LabelStore(project_root, bodyparts=source.bodyparts)
    for session, frames in picks.items():
        if not frames:
            continue
        video = source.video(session)
        truth, _ = source.ground_truth(video)
        images = export_frames(video, frames, project_root)
        revision = store.add_frames({None: images}, base_revision=store.revision())
        for image, frame in zip(images, frames):
            points = truth[frame] + (rng.normal(0.0, noise_px, truth[frame].shape) if noise_px > 0 else 0.0)
            edits = [
                PointEdit(part, "labeled", float(x), float(y), origin="manual")
                for part, (x, y) in zip(source.bodyparts, points)
            ]
            revision = store.save_frame(image, edits, base_revision=revision)


def label_pcas(project_root: Path) -> tuple[dict, list[str]]:
    """The pose and multi-view PCAs of the project's labels (training's own fit), those that can
    be fitted: the pose PCA needs as many labeled frames as it has dimensions (18)."""
    store = LabelStore(project_root)
    keypoints = store.tables[0].keypoints
    losses = LossesConfig(
        unsupervised=["pca_singleview", "pca_multiview"], view_groups=VIEW_GROUPS, pca_singleview_keypoints=VIEW
    )
    pcas, skipped = {}, []
    for kind in ("pca_singleview", "pca_multiview"):
        try:
            pcas[kind] = fit_pca(kind, keypoints, store.bodyparts, losses)
        except PCAFitError as exc:
            skipped.append(f"{kind}: {exc}")
    return pcas, skipped


# ------------------------------------------------------------------------------ selection


def select(
    strategy: str,
    source: SessionProject,
    previous: Path,
    round_index: int,
    seed: int,
    args: argparse.Namespace,
) -> tuple[dict[str, list[int]], list[dict], dict]:
    """The frames ``strategy`` picks in each pool video for ``round_index`` (1-based), given the
    previous round's folder (its labels, and its model's predictions of the pool videos)."""
    store = LabelStore(previous / "project")
    sessions = list(source.train_sessions)
    wanted = quotas(args.per_round, len(sessions), round_index)
    picks, rows = {}, []
    info: dict = {}
    if strategy == "model":
        pcas, skipped = label_pcas(previous / "project")
        info = {"pcas": sorted(pcas), "pcas_skipped": skipped}
    for session, n in zip(sessions, wanted):
        if n == 0:
            picks[session] = []
            continue
        video = source.video(session)
        exclude = labeled_frames(store, video.stem)
        selection_seed = 1000 * seed + round_index
        if strategy == "kmeans":
            suggestions = select_kmeans(video, n, exclude=exclude, seed=selection_seed)
        elif strategy == "uniform":
            suggestions = select_uniform(video, n, exclude=exclude)
        elif strategy == "model":
            scores = read_frame_scores(predictions_csv=previous / "pool_preds" / f"{session}.csv", pca=pcas)
            suggestions = select_model_guided(scores, n, exclude=exclude, seed=selection_seed)
        else:
            raise ValueError(f"unknown strategy {strategy!r}; one of {STRATEGIES}")
        picks[session] = [s.frame for s in suggestions]
        rows += [{"session": session, "frame": s.frame, "score": s.score, "reason": s.reason} for s in suggestions]
    return picks, rows, info


def selection_diagnostics(rows: list[dict], source: SessionProject, previous: Path, store: LabelStore) -> dict:
    """How wrong the previous model really was on the picked frames, against its pool frames.

    Per picked frame: the model's mean and worst keypoint error (px) and the percentile of its
    mean error among the frames of its pool video that were not labeled yet (100 = the frame it
    got most wrong). Per selection: their means, and the pool's mean for comparison.
    """
    picked_mean, picked_worst, percentile, pool_means = [], [], [], []
    for session in source.train_sessions:
        video = source.video(session)
        truth, _ = source.ground_truth(video)
        pred = np.load(previous / "pool_preds" / f"{session}.npy")[..., :2]
        error = np.linalg.norm(pred - truth, axis=-1)  # (T, K)
        frame_error = error.mean(axis=1)
        open_frames = np.setdiff1d(np.arange(len(truth)), sorted(labeled_frames(store, video.stem)))
        pool_means.append(frame_error[open_frames])
        for row in rows:
            if row["session"] != session:
                continue
            f = row["frame"]
            row["true_error_mean"] = float(frame_error[f])
            row["true_error_worst"] = float(error[f].max())
            row["true_error_percentile"] = float(100.0 * (frame_error[open_frames] < frame_error[f]).mean())
            picked_mean.append(row["true_error_mean"])
            picked_worst.append(row["true_error_worst"])
            percentile.append(row["true_error_percentile"])
    pool = np.concatenate(pool_means)
    return {
        "picked_error_mean": float(np.mean(picked_mean)),
        "picked_error_worst": float(np.mean(picked_worst)),
        "picked_error_percentile": float(np.mean(percentile)),
        "pool_error_mean": float(pool.mean()),
        "pool_error_p95": float(np.percentile(pool, 95)),
    }


# ------------------------------------------------------------------------------ one round


def train_config(n_labels: int, seed: int, args: argparse.Namespace) -> dict:
    """Every arm's training: ``--steps`` optimizer steps over all labels, from ImageNet weights."""
    batches_per_epoch = math.ceil(n_labels / BATCH)
    epochs = max(1, math.ceil(args.steps / batches_per_epoch))
    training = {
        "max_epochs": epochs,
        "unfreeze_epoch": 0,
        "num_workers": 0,
        "batch_size": BATCH,
        "seed": seed,
        "lr_milestones": [max(1, int(epochs * 0.8))],
        "log_every_n_steps": 1,
    }
    if args.max_time_s:
        training["max_time_s"] = float(args.max_time_s)
    return {
        "data": {"image_resize": list(args.resize), "train_prob": 1.0, "val_prob": 0.0, "split_seed": seed},
        "model": {"backbone": args.backbone, "pretrained": not args.no_pretrained},
        "training": training,
    }


def fit_and_score(
    folder: Path, source: SessionProject, seed: int, args: argparse.Namespace, *, predict_pool: bool = True
) -> dict:
    """Train on ``folder/project``, predict the held-out sessions and score them; predict the pool
    sessions too where a next round selects from them (``predict_pool``)."""
    store = LabelStore(folder / "project")
    n_labels = len(store.images())
    config = train_config(n_labels, seed, args)
    model_dir = folder / "model"
    started = time.perf_counter()
    result = train(config, folder / "project", model_dir, progress=False)
    train_s = time.perf_counter() - started
    history = result.history
    model = load_model(model_dir, device="cpu")
    (folder / "pool_preds").mkdir(exist_ok=True)
    (folder / "heldout_preds").mkdir(exist_ok=True)
    rows, predict_s = {}, 0.0
    for session in source.train_sessions if predict_pool else ():
        t0 = time.perf_counter()
        found = predict_video(
            model,
            source.video(session),
            batch_size=32,
            progress=False,
            out_csv=folder / "pool_preds" / f"{session}.csv",
        )
        predict_s += time.perf_counter() - t0
        np.save(folder / "pool_preds" / f"{session}.npy", found.predictions.astype(np.float32))
    for session in source.new_sessions:
        t0 = time.perf_counter()
        pred = predict_video(model, source.video(session), batch_size=32, progress=False).predictions
        predict_s += time.perf_counter() - t0
        np.save(folder / "heldout_preds" / f"{session}.npy", pred.astype(np.float32))
        truth, _ = source.ground_truth(source.video(session))
        rows[session] = session_metrics(pred, truth, {})
    if not args.keep_models:
        shutil.rmtree(model_dir)
    held = pooled(rows, list(source.new_sessions))
    return {
        "n_labels": n_labels,
        "held_out": {key: held[key] for key in ("mean", "median", "p95", "gross10", "gross25")},
        "per_session": {
            s: {k: float(v) for k, v in r.items() if not isinstance(v, np.ndarray)} for s, r in rows.items()
        },
        "steps": int(history["step"].iloc[-1]) if len(history) else 0,
        "epochs": int(result.epochs),
        "train_s": train_s,
        "predict_s": predict_s,
        "hit_time_cap": bool(args.max_time_s) and train_s >= 0.98 * float(args.max_time_s),
        "train_loss_last": float(history["train_loss"].iloc[-1]) if "train_loss" in history else None,
    }


def save_run(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(row, indent=1) + "\n")


def initial_round(source: SessionProject, seed: int, args: argparse.Namespace, work: Path) -> dict:
    """Round 0, shared by every strategy of the seed: ``--initial`` k-means frames and their model."""
    path = work / "runs" / f"{INITIAL}_s{seed}_r0.json"
    if path.is_file() and not args.redo:
        return json.loads(path.read_text())
    folder = work / f"seed{seed}" / INITIAL / "r0"
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "project").mkdir(parents=True)
    picks, rows = {}, []
    for session, n in zip(source.train_sessions, quotas(args.initial, len(source.train_sessions), 0)):
        suggestions = select_kmeans(source.video(session), n, seed=1000 * seed) if n else []
        picks[session] = [s.frame for s in suggestions]
        rows += [{"session": session, "frame": s.frame, "score": s.score, "reason": s.reason} for s in suggestions]
    oracle_label(folder / "project", source, picks, args.label_noise, np.random.default_rng([seed, 0]))
    row = {"strategy": INITIAL, "seed": seed, "round": 0, "selected": rows, "cpu": cpu_model()}
    row.update(fit_and_score(folder, source, seed, args))
    save_run(path, row)
    print(f"seed {seed} round 0 ({row['n_labels']} labels): {_short(row)}", flush=True)
    return row


def trains_at(strategy: str, round_index: int, args: argparse.Namespace) -> bool:
    """Whether ``strategy`` trains a model after ``round_index``: always after the last round; after
    every round with ``--every-round``, or where a next selection needs the model (model-guided)."""
    return args.every_round or strategy == "model" or round_index == args.rounds


def next_round(
    strategy: str, source: SessionProject, seed: int, round_index: int, args: argparse.Namespace, work: Path
) -> dict:
    """Round ``round_index`` of ``strategy``: select from the previous round's labels (and model),
    label, and train and score where ``trains_at`` says so."""
    path = work / "runs" / f"{strategy}_s{seed}_r{round_index}.json"
    train_now = trains_at(strategy, round_index, args)
    if path.is_file() and not args.redo:
        saved = json.loads(path.read_text())
        if saved.get("trained", True) or not train_now:
            return saved
    previous = work / f"seed{seed}" / (INITIAL if round_index == 1 else strategy) / f"r{round_index - 1}"
    # k-means and uniform picks need no model; where the previous round trained none, the picks'
    # true error (the diagnosis) is that of the newest model there is: the shared round 0's
    scored_by = previous if any((previous / "pool_preds").glob("*.npy")) else work / f"seed{seed}" / INITIAL / "r0"
    folder = work / f"seed{seed}" / strategy / f"r{round_index}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    picks, rows, info = select(strategy, source, previous, round_index, seed, args)
    select_s = time.perf_counter() - started
    diagnostics = selection_diagnostics(rows, source, scored_by, LabelStore(previous / "project"))
    diagnostics["scored_by_round"] = 0 if scored_by.parent.name == INITIAL else round_index - 1
    shutil.copytree(previous / "project", folder / "project")
    rng = np.random.default_rng([seed, STRATEGIES.index(strategy) + 1, round_index])
    oracle_label(folder / "project", source, picks, args.label_noise, rng)
    row = {
        "strategy": strategy,
        "seed": seed,
        "round": round_index,
        "selected": rows,
        "selection": diagnostics | info | {"select_s": select_s},
        "cpu": cpu_model(),
        "trained": train_now,
    }
    if train_now:
        row.update(fit_and_score(folder, source, seed, args, predict_pool=round_index < args.rounds))
    else:
        row["n_labels"] = len(LabelStore(folder / "project").images())
    save_run(path, row)
    print(
        f"seed {seed} {strategy} round {round_index} ({row['n_labels']} labels): "
        f"{_short(row) if train_now else 'not trained'}; picked frames' "
        f"true error {diagnostics['picked_error_mean']:.1f} px (pool {diagnostics['pool_error_mean']:.1f}, "
        f"percentile {diagnostics['picked_error_percentile']:.0f})",
        flush=True,
    )
    return row


def _short(row: dict) -> str:
    h = row["held_out"]
    return (
        f"held-out mean {h['mean']:.2f} p95 {h['p95']:.2f} gross {100 * h['gross25']:.1f}%; "
        f"{row['steps']} steps, train {row['train_s']:.0f} s, predict {row['predict_s']:.0f} s"
    )


# ------------------------------------------------------------------------------ the report


def _cell(h: dict) -> str:
    return f"{h['mean']:.2f} / {h['p95']:.2f} / {100 * h['gross25']:.1f}"


def _mean_sd(values: Sequence[float], digits: int = 2) -> str:
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return f"{values.mean():.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def report(runs: dict, args: argparse.Namespace, command: str, project_note: str, wall_s: float) -> list[str]:
    """``runs[(strategy, seed, round)]`` -> the markdown lines of the results file."""
    seeds = sorted({seed for _, seed, _ in runs})
    strategies = [s for s in args.strategies if any(k[0] == s for k in runs)]
    rounds = list(range(args.rounds + 1))

    def picked(strategy: str, seed: int, r: int) -> dict | None:
        return runs.get((INITIAL, seed, 0)) if r == 0 else runs.get((strategy, seed, r))

    def at(strategy: str, seed: int, r: int) -> dict | None:  # a round whose model was trained and scored
        row = picked(strategy, seed, r)
        return row if row is not None and "held_out" in row else None

    final_only = any(not row.get("trained", True) for row in runs.values())
    complete = [seed for seed in seeds if all(at(s, seed, args.rounds) for s in strategies)]
    partial = [seed for seed in seeds if seed not in complete]

    cpus = sorted({row.get("cpu", "not recorded") for row in runs.values()})
    lines = [
        *header("Simulated labeling loop: model-guided vs k-means vs uniform frame selection", command),
        f"Wall time: {wall_s / 60:.1f} min this call, CPU only; the saved runs ran on: {', '.join(cpus) or '-'}.",
        "",
        project_note,
        "",
        (
            "**Trained: final round only for k-means and uniform** (the default). Their selections need no model, "
            "so their rounds 1 to "
            f"{args.rounds - 1} were selected and labeled without training and only the final labeled set was "
            "trained; model-guided trains after every round (it selects with the previous round's model). Their "
            "columns of rounds 1 to "
            f"{args.rounds - 1} are 'not trained'. (`--every-round` trains every strategy after every round.)"
            if final_only
            else "**Trained: every strategy after every round** (`--every-round`)."
        ),
        "",
        "## Held-out error after each round (mean px / p95 px / gross-error share %)",
        "",
        f"Gross = error above {int(100 * GROSS_SHARE)}% of the body length. Round 0 is the shared initial set "
        f"({args.initial} k-means frames); round r has {args.initial} + {args.per_round}·r labels.",
        "",
    ]
    if partial:
        lines += [
            f"**PARTIAL RESULTS: seed(s) {', '.join(map(str, partial))} did not finish** (of the {args.seeds} "
            f"asked for); the summary over seeds and the target count the finished seeds only "
            f"({', '.join(map(str, complete)) or 'none'}).",
            "",
        ]
    table_rows = []
    for seed in seeds:
        for strategy in strategies:
            cells = [
                _cell(row["held_out"])
                if (row := at(strategy, seed, r))
                else "not trained"
                if picked(strategy, seed, r)
                else "-"
                for r in rounds
            ]
            table_rows.append([str(seed), strategy, *cells])
    lines += markdown_table(["seed", "strategy", *[f"round {r}" for r in rounds]], table_rows)
    lines += ["", "Mean ± SD over seeds, after each round:", ""]
    summary = []
    for strategy in strategies:
        for metric, scale, name in (("mean", 1, "mean px"), ("p95", 1, "p95 px"), ("gross25", 100, "gross %")):
            cells = []
            for r in rounds:
                values = [scale * row["held_out"][metric] for seed in complete if (row := at(strategy, seed, r))]
                cells.append(_mean_sd(values) if values else "-")
            summary.append([strategy, name, *cells])
    lines += markdown_table(["strategy", "metric", *[f"round {r}" for r in rounds]], summary)

    last = args.rounds
    lines += [
        "",
        f"## Paired differences after round {last}, per seed (negative = the first strategy is better)",
        "",
    ]
    paired_rows, met = [], []
    for other in [s for s in strategies if s != "model"]:
        for seed in seeds:
            a, b = at("model", seed, last), at(other, seed, last)
            if not (a and b):
                continue
            d = {m: a["held_out"][m] - b["held_out"][m] for m in ("mean", "p95", "gross25")}
            lower = d["p95"] < 0
            if other == "kmeans":
                met.append(lower)
            paired_rows.append(
                [
                    f"model - {other}",
                    str(seed),
                    f"{d['mean']:+.2f}",
                    f"{d['p95']:+.2f}",
                    f"{100 * d['gross25']:+.1f}",
                    ("met" if lower else "MISSED") if other == "kmeans" else ("lower" if lower else "not lower"),
                ]
            )
    lines += markdown_table(
        ["difference", "seed", "mean px", "p95 px", "gross pp", "p95 lower (target vs k-means)"], paired_rows
    )
    if met:
        lines += [
            "",
            f"**Target (model-guided p95 below k-means' on every seed): {'MET' if all(met) else 'MISSED'}** "
            f"({sum(met)} of {len(met)} seeds).",
        ]

    lines += ["", "## What each strategy picked: the previous model's true error on its frames", ""]
    lines += [
        "Per round (mean over seeds): the mean keypoint error (px) of the previous round's model on the frames "
        "picked, its worst keypoint's error, and the percentile of the picked frames' error among the pool video's "
        "frames not yet labeled (50 = a random frame, 100 = the frame it got most wrong); the pool's mean for "
        "comparison. Where the previous round trained no model (k-means and uniform by default), the model that "
        "scores the picks is the newest one there is, round 0's ('scored by').",
        "",
    ]
    pick_rows = []
    for strategy in strategies:
        for r in rounds[1:]:
            found = [row["selection"] for seed in seeds if (row := picked(strategy, seed, r))]
            if not found:
                continue
            pick_rows.append(
                [
                    strategy,
                    str(r),
                    f"{np.mean([f['picked_error_mean'] for f in found]):.2f}",
                    f"{np.mean([f['picked_error_worst'] for f in found]):.2f}",
                    f"{np.mean([f['picked_error_percentile'] for f in found]):.0f}",
                    f"{np.mean([f['pool_error_mean'] for f in found]):.2f}",
                    ", ".join(sorted({f"round {f.get('scored_by_round', r - 1)}" for f in found})),
                ]
            )
    lines += markdown_table(
        [
            "strategy",
            "round",
            "picked: mean error",
            "picked: worst kp",
            "picked: percentile",
            "pool: mean error",
            "scored by model of",
        ],
        pick_rows,
    )
    reasons: dict[str, int] = {}
    for (strategy, _, _), row in runs.items():
        if strategy == "model":
            for pick in row["selected"]:
                criterion = pick["reason"].split(" on ")[0].rsplit(" ", 2)[0] if " on " in pick["reason"] else "?"
                reasons[criterion] = reasons.get(criterion, 0) + 1
    if reasons:
        total = sum(reasons.values())
        lines += [
            "",
            "Model-guided picks by the criterion that ranked them: "
            + ", ".join(f"{name} {count} ({100 * count / total:.0f}%)" for name, count in sorted(reasons.items()))
            + ".",
        ]

    lines += ["", f"## Per held-out session after round {last} (mean px / p95 px / gross %, mean over seeds)", ""]
    sessions = next((list(row["per_session"]) for row in runs.values()), [])
    session_rows = []
    for strategy in [INITIAL, *strategies]:
        r = 0 if strategy == INITIAL else last
        found = [row for seed in seeds if (row := at(strategy, seed, r))]
        if not found:
            continue
        cells = []
        for s in sessions:
            per = [row["per_session"][s] for row in found]
            cells.append(
                f"{np.mean([p['mean'] for p in per]):.1f} / {np.mean([p['p95'] for p in per]):.1f} / "
                f"{100 * np.mean([p['gross25'] for p in per]):.0f}"
            )
        session_rows.append([f"{strategy} (round {r})", *cells])
    lines += markdown_table(["strategy", *sessions], session_rows)

    lines += ["", "## Cost", ""]
    for strategy in [INITIAL, *strategies]:
        selections = [row for key, row in runs.items() if key[0] == strategy]
        found = [row for row in selections if "train_s" in row]
        if found:
            capped = sum(row.get("hit_time_cap", False) for row in found)
            lines.append(
                f"- {strategy}: {len(found)} trainings, {np.mean([r['steps'] for r in found]):.0f} steps, "
                f"train {np.mean([r['train_s'] for r in found]):.0f} s, predict (all sessions) "
                f"{np.mean([r['predict_s'] for r in found]):.0f} s per training"
                + (f"; {capped} stopped by the time cap" if capped else "")
                + (
                    f"; selection {np.mean([r['selection']['select_s'] for r in selections]):.1f} s per round"
                    if strategy != INITIAL
                    else ""
                )
            )
    return lines


def diagnose(runs: dict, work: Path, args: argparse.Namespace) -> list[str]:
    """Where the picks and the remaining held-out errors are, from the saved selections and predictions.

    Picks (every round and seed) against the pool's frames: the share with at least one truly
    occluded keypoint and the true speed of the animal (median keypoint displacement from the
    previous frame, px). Held-out errors after the last round: the gross-error share and p95 on
    visible and on occluded keypoints apart, and the share of gross errors on occluded keypoints;
    the body parts that hold most gross errors.
    """
    seeds = sorted({seed for _, seed, _ in runs})
    strategies = [s for s in args.strategies if any(k[0] == s for k in runs)]
    sources = {seed: load_session_project(work / f"seed{seed}" / "sessions") for seed in seeds}
    truth = {
        (seed, session): sources[seed].ground_truth(sources[seed].video(session))
        for seed in seeds
        for session in sources[seed].train_sessions + sources[seed].new_sessions
    }

    def speed(points: np.ndarray) -> np.ndarray:  # (T,) median keypoint displacement since the previous frame
        moved = np.linalg.norm(np.diff(points, axis=0, prepend=points[:1]), axis=-1)
        return np.median(moved, axis=1)

    pool_occluded, pool_speed = [], []
    for seed in seeds:
        for session in sources[seed].train_sessions:
            points, occluded = truth[(seed, session)]
            pool_occluded.append(occluded.any(axis=1))
            pool_speed.append(speed(points))
    lines = [
        "### Picked frames against the pool",
        "",
        *markdown_table(
            ["frames", "n", "with an occluded keypoint (%)", "animal speed, median (px/frame)"],
            [
                [
                    "pool (every frame)",
                    str(sum(len(o) for o in pool_occluded)),
                    f"{100 * np.concatenate(pool_occluded).mean():.0f}",
                    f"{np.median(np.concatenate(pool_speed)):.2f}",
                ]
            ]
            + [
                _picks_row(
                    strategy, [row for key, row in runs.items() if key[0] == strategy and key[2] > 0], truth, speed
                )
                for strategy in strategies
            ],
        ),
        "",
        f"### Held-out errors after round {args.rounds}: visible and occluded keypoints apart",
        "",
    ]
    rows, parts_rows = [], []
    bodyparts = sources[seeds[0]].bodyparts
    for strategy in [INITIAL, *strategies]:
        r = 0 if strategy == INITIAL else args.rounds
        errors, gross, hidden, part_gross = [], [], [], []
        for seed in seeds:
            if (strategy, seed, r) not in runs:
                continue
            folder = work / f"seed{seed}" / strategy / f"r{r}" / "heldout_preds"
            for session in sources[seed].new_sessions:
                points, occluded = truth[(seed, session)]
                pred = np.load(folder / f"{session}.npy")[..., :2]
                error = np.linalg.norm(pred - points, axis=-1)
                limit = GROSS_SHARE * runs[(strategy, seed, r)]["per_session"][session]["body_length"]
                errors.append(error.ravel())
                gross.append((error > limit).ravel())
                hidden.append(occluded.ravel())
                part_gross.append(error > limit)
        if not errors:
            continue
        error, is_gross, is_hidden = np.concatenate(errors), np.concatenate(gross), np.concatenate(hidden)
        rows.append(
            [
                f"{strategy} (round {r})",
                f"{100 * is_hidden.mean():.1f}",
                f"{np.percentile(error[~is_hidden], 95):.2f}",
                f"{100 * is_gross[~is_hidden].mean():.1f}",
                f"{np.percentile(error[is_hidden], 95):.2f}" if is_hidden.any() else "-",
                f"{100 * is_gross[is_hidden].mean():.1f}" if is_hidden.any() else "-",
                f"{100 * (is_gross & is_hidden).sum() / max(is_gross.sum(), 1):.1f}",
            ]
        )
        share = np.concatenate(part_gross).mean(axis=0)
        top = np.argsort(share)[::-1][:4]
        parts_rows.append([f"{strategy} (round {r})", ", ".join(f"{bodyparts[k]} {100 * share[k]:.0f}%" for k in top)])
    lines += markdown_table(
        [
            "model",
            "occluded keypoints (%)",
            "visible: p95 px",
            "visible: gross %",
            "occluded: p95 px",
            "occluded: gross %",
            "gross errors on occluded kp (%)",
        ],
        rows,
    )
    lines += ["", "Body parts with the highest gross-error share (held-out, all frames):", ""]
    lines += markdown_table(["model", "worst body parts"], parts_rows)
    return lines


def _ranks(values: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(values, kind="stable"), kind="stable").astype(float)


def ranking(runs: dict, work: Path, args: argparse.Namespace) -> list[str]:
    """Can a model rank its own errors? For every model whose pool predictions a selection used,
    its model-guided frame score (the largest normalised criterion over keypoints, as
    ``select_model_guided`` ranks before spreading) against its true mean error, per pool video
    over the frames not labeled yet: the Spearman rank correlation, and the share of its 10% worst
    scored frames that are among its 10% truly worst (10% = chance)."""
    rows = []
    for (strategy, seed, r), row in sorted(runs.items(), key=lambda item: (item[0][1], item[0][2])):
        folder = work / f"seed{seed}" / strategy / f"r{r}"
        if strategy not in (INITIAL, "model") or not any((folder / "pool_preds").glob("*.npy")):
            continue
        source = load_session_project(work / f"seed{seed}" / "sessions")
        store = LabelStore(folder / "project")
        pcas, _ = label_pcas(folder / "project")
        rhos, overlaps = [], []
        for session in source.train_sessions:
            video = source.video(session)
            truth, _ = source.ground_truth(video)
            pred = np.load(folder / "pool_preds" / f"{session}.npy")[..., :2]
            true_error = np.linalg.norm(pred - truth, axis=-1).mean(axis=1)
            scores = read_frame_scores(predictions_csv=folder / "pool_preds" / f"{session}.csv", pca=pcas)
            stacked = np.stack(list(scores.normalised().values()))  # (C, T, K)
            frame_score = np.nanmax(np.where(np.isnan(stacked), -np.inf, stacked), axis=(0, 2))
            open_rows = ~np.isin(scores.frames, sorted(labeled_frames(store, video.stem)))
            score, error = frame_score[open_rows], true_error[scores.frames[open_rows]]
            rhos.append(float(np.corrcoef(_ranks(score), _ranks(error))[0, 1]))
            top = max(1, len(score) // 10)
            overlaps.append(len(set(np.argsort(-score)[:top]) & set(np.argsort(-error)[:top])) / top)
        rows.append(
            [
                str(seed),
                "initial (round 0)" if strategy == INITIAL else f"model (round {r})",
                str(row["n_labels"]),
                f"{np.mean(rhos):+.2f} ({min(rhos):+.2f} to {max(rhos):+.2f})",
                f"{100 * np.mean(overlaps):.0f}",
            ]
        )
    return markdown_table(
        [
            "seed",
            "model",
            "labels",
            "Spearman: frame score vs true error (mean over pool videos, range)",
            "worst 10% by score that are in the truly worst 10% (%)",
        ],
        rows,
    )


def _picks_row(strategy: str, rows: list[dict], truth: dict, speed) -> list[str]:
    occluded, speeds = [], []
    for row in rows:
        for pick in row["selected"]:
            points, hidden = truth[(row["seed"], pick["session"])]
            occluded.append(bool(hidden[pick["frame"]].any()))
            speeds.append(float(speed(points)[pick["frame"]]))
    if not occluded:
        return [f"{strategy} picks", "0", "-", "-"]
    return [f"{strategy} picks", str(len(occluded)), f"{100 * np.mean(occluded):.0f}", f"{np.median(speeds):.2f}"]


def hand_written_tail(path: Path) -> str:
    """The hand-written section of an existing results file (kept when the report is rewritten)."""
    if not path.is_file():
        return ""
    text = path.read_text()
    start = text.find(HAND_WRITTEN)
    return "\n" + text[start:] if start >= 0 else ""


def load_runs(work: Path) -> dict:
    runs = {}
    for path in sorted((work / "runs").glob("*.json")):
        row = json.loads(path.read_text())
        runs[(row["strategy"], row["seed"], row["round"])] = row
    return runs


def run_loop(args: argparse.Namespace) -> Path:
    """Every (strategy, seed, round) not saved yet, seed by seed (so an interrupted call still
    holds whole seeds); returns the settings' work folder."""
    work = args.work / (
        f"s{args.size[0]}x{args.size[1]}_r{args.resize[0]}x{args.resize[1]}_f{args.frames}_"
        f"{args.backbone}{'' if not args.no_pretrained else '-scratch'}_st{args.steps}_i{args.initial}_"
        f"p{args.per_round}_n{args.label_noise:g}_{'-'.join(args.styles)}"
    )
    if args.no_train:
        return work
    for seed in range(args.seeds):
        source = build_project(work / f"seed{seed}" / "sessions", seed, args)
        initial_round(source, seed, args, work)
        for round_index in range(1, args.rounds + 1):
            for strategy in args.strategies:
                next_round(strategy, source, seed, round_index, args, work)
    return work


def project_note(args: argparse.Namespace) -> str:
    pool = ", ".join(f"pool_{s}" for s in args.styles)
    return (
        f"Project per seed (`make_session_project`, seed = the benchmark seed): {args.size[0]}x{args.size[1]} frames, "
        f"two views side by side, {args.frames} frames per session; pool sessions (selected from) {pool}; held-out "
        f"sessions (scored, never selected from): the same conditions drawn again (held_<style>). Styles: plain = "
        "the labeled rig of results/ood.md; light, closer, distractor, blur = its four new sessions' changes. "
        f"Initial set: {args.initial} k-means frames (same for every strategy of a seed); then {args.rounds} rounds "
        f"of {args.per_round} frames per strategy, the same quota per pool video for each. Oracle: every body part "
        f"at its true position"
        + (f" plus Gaussian noise of {args.label_noise:g} px per coordinate" if args.label_noise > 0 else " (exact)")
        + ", saved through `LabelStore` after `export_frames`. Each round retrains FROM SCRATCH "
        f"({args.backbone}, {'random init' if args.no_pretrained else 'ImageNet weights'}), resize "
        f"{args.resize[0]}x{args.resize[1]}, batch {BATCH}, {args.steps} optimizer steps (epochs = steps / batches "
        "per epoch, Adam 1e-3 halved at 80%), backbone trained from the start, all labels used for training (no "
        "validation split), training seed = the benchmark seed. Model-guided: one model (no ensemble), its "
        "predictions of the pool video (likelihood, temporal jumps) and the PCAs of its labels (multi-view from "
        "the start, pose PCA from 18 labeled frames), `select_model_guided` with its defaults (min gap 5 frames, "
        "k-means over the 4n worst frames' poses). Errors: held-out sessions, every frame x 18 keypoints, original "
        "pixels."
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-round", type=int, default=10, help="frames selected per round")
    parser.add_argument("--initial", type=int, default=10, help="initial k-means frames, shared by the strategies")
    parser.add_argument("--strategies", type=lambda s: s.split(","), default=list(STRATEGIES))
    parser.add_argument("--styles", type=lambda s: s.split(","), default=list(STYLES), help=f"of {list(STYLES)}")
    parser.add_argument("--frames", type=int, default=300, help="frames per session")
    parser.add_argument("--size", type=int, nargs=2, default=[128, 256], metavar=("H", "W"), help="frame size")
    parser.add_argument("--resize", type=int, nargs=2, default=[64, 128], metavar=("H", "W"))
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--no-pretrained", action="store_true", help="random initialisation instead of ImageNet")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps per training")
    parser.add_argument("--max-time-s", type=float, default=1800.0, help="cap per training (0: none)")
    parser.add_argument("--label-noise", type=float, default=0.0, help="oracle's label noise, px SD per coordinate")
    parser.add_argument("--keep-models", action="store_true", help="keep each round's model directory")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/elp-labeling-loop"))
    parser.add_argument(
        "--every-round",
        action="store_true",
        help="train every strategy after every round (default: k-means and uniform only after the last)",
    )
    parser.add_argument("--redo", action="store_true", help="repeat runs already saved")
    parser.add_argument("--no-train", action="store_true", help="only rebuild the report from saved runs")
    parser.add_argument("--out", type=Path, default=RESULTS / "labeling_loop.md")
    args = parser.parse_args(argv)
    unknown = [s for s in args.strategies if s not in STRATEGIES] + [s for s in args.styles if s not in STYLES]
    if unknown:
        parser.error(f"unknown strategies or styles: {unknown}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    work = run_loop(args)
    runs = load_runs(work)
    tail = hand_written_tail(args.out)
    lines = report(runs, args, command_line(argv), project_note(args), time.perf_counter() - started)
    if runs:
        lines += ["", "## Diagnosis: what the picks were, where the held-out errors remain", ""]
        lines += [" ".join(line.strip() for line in (diagnose.__doc__ or "").split("\n\n")[1].splitlines()), ""]
        lines += diagnose(runs, work, args)
        lines += ["", "### Can a model rank its own errors?", ""]
        lines += [" ".join(line.strip() for line in (ranking.__doc__ or "? ").split("? ", 1)[1].splitlines()), ""]
        lines += ranking(runs, work, args)
    text = "\n".join(lines) + "\n" + tail
    print(write_results(args.out, text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
