#!/usr/bin/env python
"""Out of distribution: do the unsupervised losses / the context model help on NEW sessions?

The project (``synthetic.sessions.make_session_project``): one animal, two labeled
"training" sessions (``--labeled`` frames spread over them), four new sessions that each change
two or three things a network has not seen (light, contrast and colour; camera distance, a
striped floor and wider poses; a checkerboard floor with body-part-coloured distractor blobs
and disc occluders; motion blur, wider poses and bar occluders). The videos of ALL six
sessions are the unlabeled videos (as a lab adds its new recordings); the new sessions' ground
truth of every frame is the test set. Two views (a mirror rig: a top and a side view).

Arms: ``supervised``; ``semi`` (temporal + pose PCA + multi-view PCA, the engine's default
weights); ``context`` (the temporal context model); ``context_semi``; ``semi@W`` (all weights
W); ``temporal``, ``pca_singleview``, ``pca_multiview`` (one loss alone). Every arm: the same
backbone (efficientnet_lite0, ImageNet), resize, epochs, labeled batch, seeds (the seed changes
the split, the initialisation and the batch order; the project is the same); then EKS
(multi-view) over its seeds.

Metrics per session and pooled over the new sessions (every frame, every keypoint, original
pixels): mean, median and 95th percentile error; the share of gross errors (error > 10% and >
25% of the body length: the session's median true nose-to-tail-base distance in view 1);
jitter = mean |(p_t - p_t-1) - (g_t - g_t-1)|; the pose-PCA and multi-view-PCA residuals of
the predictions (PCAs fitted on each seed's training labels, as the semi arm fits them).
Paired differences against supervised per seed, with a 95% t-interval over seeds.

Each run's result (metrics, per-epoch history) is saved as JSON in ``--work`` and its
predictions as .npy as soon as it ends; a second call skips runs already done, and the report
is rebuilt from every saved run.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_ood.py --seeds 3 --epochs 150
           [--arms supervised,semi,context,context_semi] [--work /var/tmp/elp-ood]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from _common import RESULTS, cpu_model, header, write_results
from bench_semisupervised import base_config, constraint_pcas, step_seconds
from scipy import stats

from element_lightning_pose.engine.eks import smooth_multiview
from element_lightning_pose.engine.inference.models import load_model
from element_lightning_pose.engine.inference.predict import predict_video
from element_lightning_pose.engine.training import train
from element_lightning_pose.synthetic.sessions import load_session_project, make_session_project

N_PARTS = 9
VIEW = list(range(N_PARTS))
VIEW_GROUPS = [VIEW, list(range(N_PARTS, 2 * N_PARTS))]
BATCH, CLIP = 8, 8
LOSSES = ("temporal", "pca_singleview", "pca_multiview")
GROSS = (0.10, 0.25)


def arm_config(arm: str, epochs: int, seed: int, resize: tuple[int, int]) -> dict:
    config = base_config(epochs, seed, resize, BATCH)
    name, _, weight = arm.partition("@")
    if name.startswith("context"):
        config["model"]["model_type"] = "context"
        # The collapse guard compares the training loss with ONE head's flat-heatmap loss, but the
        # context model's loss sums two heads (about twice as large): the guard fired on normal
        # fluctuations late in training (context_semi, seed 0: epochs 77-79, the learning rate cut
        # 8x). Fixed in the engine since (train._guards uses two heads' flat value); kept off here
        # so that the committed results/ood.md reproduces as it was run.
        config["training"]["collapse_guard"] = False
    chosen = {"semi": list(LOSSES), "context_semi": list(LOSSES)}.get(name, [name] if name in LOSSES else [])
    if chosen:
        losses: dict = {
            "unsupervised": chosen,
            "pca_singleview_keypoints": VIEW,
            "view_groups": VIEW_GROUPS,
            "warmup_epochs": max(1, epochs // 4),
            "clip_length": CLIP,
        }
        if weight:  # "semi@0.01": every chosen loss at weight 0.01 (else the engine's defaults)
            losses.update({f"{loss}_weight": float(weight) for loss in chosen})
        config["losses"] = losses
    return config


def session_metrics(pred: np.ndarray, truth: np.ndarray, pcas: dict) -> dict:
    """Error distribution, gross-error shares, jitter and constraint residuals of one session."""
    error = np.linalg.norm(pred[..., :2] - truth, axis=-1)
    body = float(np.median(np.linalg.norm(truth[:, 0] - truth[:, 3], axis=-1)))  # nose - tail base, view 1
    jitter = np.linalg.norm(np.diff(pred[..., :2], axis=0) - np.diff(truth, axis=0), axis=-1)
    row = {
        "errors": error,  # kept for pooling; dropped before JSON
        "mean": float(error.mean()),
        "median": float(np.median(error)),
        "p95": float(np.percentile(error, 95)),
        "jitter": float(jitter.mean()),
        "body_length": body,
    }
    for share in GROSS:
        row[f"gross{int(share * 100)}"] = float((error > share * body).mean())
        row[f"gross_mask{int(share * 100)}"] = error > share * body
    for kind, pca in pcas.items():
        row[f"{kind}_residual"] = float(pca.residual_keypoints(pred[..., :2]).mean())
    return row


def pooled(rows: dict[str, dict], sessions) -> dict:
    """The metrics over every frame of ``sessions`` together."""
    error = np.concatenate([rows[s]["errors"].ravel() for s in sessions])
    out = {"mean": float(error.mean()), "median": float(np.median(error)), "p95": float(np.percentile(error, 95))}
    for share in GROSS:
        key = f"gross{int(share * 100)}"
        out[key] = float(np.concatenate([rows[s][f"gross_mask{int(share * 100)}"].ravel() for s in sessions]).mean())
    n = [rows[s]["errors"].shape[0] for s in sessions]
    for key in ("jitter", "pca_singleview_residual", "pca_multiview_residual"):
        if key in rows[sessions[0]]:
            out[key] = float(np.average([rows[s][key] for s in sessions], weights=n))
    return out


def evaluate_predictions(preds: dict[str, np.ndarray], project, pcas: dict) -> dict:
    rows = {}
    for session, pred in preds.items():
        truth, _ = project.ground_truth(project.video(session))
        rows[session] = session_metrics(pred, truth, pcas)
    result = {
        "new": pooled(rows, list(project.new_sessions)),
        "train_sessions": pooled(rows, list(project.train_sessions)),
        "per_session": {s: {k: v for k, v in r.items() if not isinstance(v, np.ndarray)} for s, r in rows.items()},
    }
    return result


def run_one(arm: str, seed: int, args, project, work: Path) -> dict:
    path = work / "runs" / f"{arm}_{seed}.json"
    if path.is_file() and not args.redo:
        return json.loads(path.read_text())
    model_dir = work / "models" / f"{arm}_{seed}"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    config = arm_config(arm, args.epochs, seed, tuple(args.resize))
    if "losses" in config:
        config["losses"]["cache_dir"] = str(work / "cache")
    started = time.perf_counter()
    result = train(config, project.root, model_dir, progress=False)
    train_s = time.perf_counter() - started
    model = load_model(model_dir, device="cpu")
    preds, predict_s = {}, 0.0
    pred_dir = work / "preds" / f"{arm}_{seed}"
    pred_dir.mkdir(parents=True, exist_ok=True)
    for session in project.train_sessions + project.new_sessions:
        t0 = time.perf_counter()
        preds[session] = predict_video(model, project.video(session), batch_size=32, progress=False).predictions
        predict_s += time.perf_counter() - t0
        np.save(pred_dir / f"{session}.npy", preds[session])
    pcas = constraint_pcas(project.root, seed, VIEW_GROUPS, VIEW)
    row = evaluate_predictions(preds, project, pcas)
    history = result.history
    row.update(
        arm=arm,
        seed=seed,
        step_s=step_seconds(result),
        train_s=train_s,
        predict_s=predict_s,
        epochs=int(result.epochs),
        collapse_guard=bool(config["training"].get("collapse_guard", True)),
        cpu=cpu_model(),  # runs resume across calls, maybe on another machine
        history={c: [float(v) for v in history[c]] for c in history.columns if history[c].dtype.kind in "fi"},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(row))
    tmp.replace(path)
    shutil.rmtree(model_dir / "frame_cache", ignore_errors=True)
    print(
        f"{arm} seed {seed}: new mean {row['new']['mean']:.2f} p95 {row['new']['p95']:.2f} "
        f"gross10 {row['new']['gross10']:.3f}; train sessions mean {row['train_sessions']['mean']:.2f}; "
        f"train {train_s:.0f}s step {row['step_s']:.3f}s",
        flush=True,
    )
    return row


def eks_row(arm: str, seeds: list[int], project, work: Path) -> dict | None:
    """EKS (multi-view) over the arm's seeds, scored like a run (PCAs of seed 0)."""
    if len(seeds) < 2:
        return None
    preds = {}
    for session in project.train_sessions + project.new_sessions:
        members = np.stack([np.load(work / "preds" / f"{arm}_{s}" / f"{session}.npy") for s in seeds])
        smoothed = smooth_multiview(members, [[k, k + N_PARTS] for k in VIEW], project.bodyparts)
        preds[session] = np.stack([smoothed.x, smoothed.y], axis=-1)
    return evaluate_predictions(preds, project, constraint_pcas(project.root, 0, VIEW_GROUPS, VIEW))


def diagnose(arms: list[str], seeds: list[int], project, work: Path) -> list[str]:
    """Why the losses can or cannot help: do the gross errors break the constraints the losses enforce?

    For each arm's predictions on the new sessions, gross (> 25% body length) keypoint errors
    against correct ones: their multi-view PCA residual (what that loss penalises: its epsilon
    is 0 here, the truth being exactly rank 3), the share above the pose PCA's epsilon, the
    share that jump more than the temporal epsilon (20 px) from the previous frame; the
    predicted pose's size (median nose-to-tail-base length over the true one); and the ground
    truth's own residuals (true new poses the PCAs of the training labels would penalise). On
    ``new_distractor``: the share of frames whose nose (view 1) is predicted on a distractor
    blob.
    """
    lines = [
        "| arm | gross kp: error (px) | gross kp: MV residual (px) | correct kp: MV residual (px) "
        "| gross kp: pose res. > eps (%) | correct kp: pose res. > eps (%) | gross kp: jump > 20 px (%) "
        "| nose on a distractor (% frames) | predicted / true body length, per new session |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    truth_rows = {}
    for arm in arms:
        acc: dict[str, list] = {k: [] for k in ("ge", "gm", "cm", "gp", "cp", "gj", "dis")}
        ratios: dict[str, list[float]] = {s: [] for s in project.new_sessions}
        for seed in seeds:
            pred_dir = work / "preds" / f"{arm}_{seed}"
            if not pred_dir.is_dir():
                continue
            pcas = constraint_pcas(project.root, seed, VIEW_GROUPS, VIEW)
            mv, pose = pcas["pca_multiview"], pcas["pca_singleview"]
            for session in project.new_sessions:
                pred = np.load(pred_dir / f"{session}.npy")[..., :2]
                truth, _ = project.ground_truth(project.video(session))
                body = np.median(np.linalg.norm(truth[:, 0] - truth[:, 3], axis=-1))
                error = np.linalg.norm(pred - truth, axis=-1)
                gross = error > 0.25 * body
                mv_res = mv.residual_keypoints(pred)  # (T, 18)
                ratios[session].append(
                    float(np.median(np.linalg.norm(pred[:, 0] - pred[:, 3], axis=-1)) / body)  # nose - tail base
                )
                pose_over = np.zeros_like(gross)
                pose_over[:, VIEW] = pose.residual_keypoints(pred) > pose.epsilon
                jump = np.zeros_like(gross)
                jump[1:] = np.linalg.norm(np.diff(pred, axis=0), axis=-1) > 20.0
                acc["ge"].append(error[gross])
                acc["gm"].append(mv_res[gross])
                acc["cm"].append(mv_res[~gross])
                acc["gp"].append(pose_over[:, VIEW][gross[:, VIEW]])
                acc["cp"].append(pose_over[:, VIEW][~gross[:, VIEW]])
                acc["gj"].append(jump[gross])
                if session not in truth_rows:
                    truth_rows[session] = (
                        float((mv.residual_keypoints(truth) > mv.epsilon).mean()),
                        float((pose.residual_keypoints(truth) > pose.epsilon).mean()),
                    )
                with np.load(project.root / "ground_truth" / f"{session}.npz") as gt:
                    blobs = gt["distractors"]
                if len(blobs):
                    near = np.linalg.norm(pred[:, None, 0] - blobs[None], axis=-1).min(axis=1) < 0.1 * body
                    acc["dis"].append(near)
        if not acc["gm"]:
            continue
        cells = [
            (
                f"{np.concatenate(acc[k]).mean():.2f}"
                if k in ("ge", "gm", "cm")
                else f"{100 * np.concatenate(acc[k]).mean():.1f}"
            )
            if acc[k]
            else "n/a"
            for k in acc
        ]
        cells.append(", ".join(f"{s.removeprefix('new_')} {np.mean(v):.2f}" for s, v in ratios.items() if v))
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    pcas = constraint_pcas(project.root, seeds[0], VIEW_GROUPS, VIEW)
    lines += [
        "",
        f"Epsilons (seed {seeds[0]}): multi-view {pcas['pca_multiview'].epsilon:.3f} px, "
        f"pose {pcas['pca_singleview'].epsilon:.3f} px.",
        "",
        "Ground truth of the new sessions against the PCAs of the training labels (share of keypoints above "
        "epsilon, %: multi-view / pose): "
        + ", ".join(f"{s} {100 * a:.1f} / {100 * b:.1f}" for s, (a, b) in truth_rows.items())
        + ".",
    ]
    return lines


def t_interval(values: np.ndarray) -> str:
    if len(values) < 2:
        return f"{values.mean():+.2f}"
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return f"{values.mean():+.2f} [{values.mean() - half:+.2f}, {values.mean() + half:+.2f}]"


def fmt(values, digits=2, pct=False) -> str:
    values = np.asarray(values, dtype=float)
    if pct:
        values = 100 * values
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


METRICS = ("mean", "median", "p95", "gross10", "gross25", "jitter", "pca_singleview_residual", "pca_multiview_residual")
HEADER = (
    "| arm | mean | median | p95 | gross >10% (%) | gross >25% (%) | jitter | pose PCA res. | multi-view PCA res. |"
)


def table(runs: dict[str, list[dict]], eks: dict[str, dict | None], part: str) -> list[str]:
    lines = [HEADER, "|---|" + "---|" * len(METRICS)]
    for arm, rows in runs.items():
        cells = [fmt([r[part][m] for r in rows], pct=m.startswith("gross")) for m in METRICS]
        lines.append(f"| {arm} ({len(rows)} seeds) | " + " | ".join(cells) + " |")
        if eks.get(arm):
            e = eks[arm][part]
            cells = [fmt([e[m]], pct=m.startswith("gross")) for m in METRICS]
            lines.append(f"| {arm} + EKS | " + " | ".join(cells) + " |")
    return lines


def paired(runs: dict[str, list[dict]]) -> list[str]:
    base = {r["seed"]: r for r in runs.get("supervised", [])}
    lines = [
        "| arm - supervised | mean | p95 | gross >10% (pp) | gross >25% (pp) | jitter | seeds with p95 AND gross10 lower, mean not worse |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, rows in runs.items():
        rows = [r for r in rows if r["seed"] in base]
        if arm == "supervised" or not rows:
            continue
        cells = []
        for m in ("mean", "p95", "gross10", "gross25", "jitter"):
            scale = 100 if m.startswith("gross") else 1
            cells.append(t_interval(np.array([scale * (r["new"][m] - base[r["seed"]]["new"][m]) for r in rows])))
        wins = sum(
            r["new"]["p95"] < base[r["seed"]]["new"]["p95"]
            and r["new"]["gross10"] < base[r["seed"]]["new"]["gross10"]
            and r["new"]["mean"] <= base[r["seed"]]["new"]["mean"]
            for r in rows
        )
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {wins} of {len(rows)} |")
    return lines


def report(runs, eks, args, project, wall_s: float) -> str:
    cpus = sorted({r.get("cpu", "not recorded") for rows in runs.values() for r in rows})
    lines = [
        *header("Out of distribution: new sessions, few labels"),
        f"Wall time: {wall_s / 60:.1f} min this call, CPU only; the saved runs ran on: {', '.join(cpus) or '-'}.",
        "",
        f"Project (`make_session_project`, seed 0): {args.size[0]}x{args.size[1]} frames, two views side by side, "
        f"{args.frames} frames per session, {args.labeled} labeled frames from the training sessions "
        f"{', '.join(project.train_sessions)} (split 80/10/10 by seed), unlabeled videos: all six sessions; "
        f"new sessions {', '.join(project.new_sessions)}. efficientnet_lite0 (ImageNet), resize "
        f"{args.resize[0]}x{args.resize[1]}, labeled batch {BATCH}, {args.epochs} epochs, Adam 1e-3 (decay x0.5 "
        f"at 80%), backbone trained from epoch 0. Semi arms: {CLIP}-frame clip per step, warm-up over a quarter of "
        "the epochs, the engine's default weights (0.001) unless `@W`. Context arms: collapse guard off (it misjudges "
        "the context model's two-head loss; see the note at the end). EKS: multi-view, over the arm's seeds. "
        "Mean ± SD over seeds; errors in original pixels over every frame x 18 keypoints; gross = error above "
        "10% / 25% of the body length.",
        "",
        "## New sessions (the test)",
        "",
        *table(runs, eks, "new"),
        "",
        "Paired differences against supervised on the new sessions (mean over seeds [95% t-interval]; "
        "negative = better):",
        "",
        *paired(runs),
        "",
        "## Training sessions (in distribution, for contrast)",
        "",
        *table(runs, eks, "train_sessions"),
        "",
        "## Per session (mean error / p95 / gross >10% %, mean over seeds)",
        "",
    ]
    sessions = list(project.train_sessions + project.new_sessions)
    lines += ["| arm | " + " | ".join(sessions) + " |", "|---|" + "---|" * len(sessions)]
    for arm, rows in runs.items():
        cells = []
        for s in sessions:
            per = [r["per_session"][s] for r in rows]
            cells.append(
                f"{np.mean([p['mean'] for p in per]):.1f} / {np.mean([p['p95'] for p in per]):.1f} / "
                f"{100 * np.mean([p['gross10'] for p in per]):.0f}"
            )
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    body = {s: runs[next(iter(runs))][0]["per_session"][s]["body_length"] for s in sessions} if runs else {}
    lines += ["", "Body length (px, view 1): " + ", ".join(f"{s} {v:.1f}" for s, v in body.items()) + "."]
    lines += ["", "## Cost and convergence", ""]
    sup = {r["seed"]: r for r in runs.get("supervised", [])}
    for arm, rows in runs.items():
        # the same network without the losses: context_semi against context, the rest against supervised
        ref_arm = "context" if arm.startswith("context") and arm != "context" else "supervised"
        ref = {r["seed"]: r for r in runs.get(ref_arm, [])}
        ratios = [r["step_s"] / ref[r["seed"]]["step_s"] for r in rows if r["seed"] in ref]
        lines.append(
            f"- {arm}: {np.mean([r['step_s'] for r in rows]):.3f} s/step, "
            f"train {np.mean([r['train_s'] for r in rows]):.0f} s, predict (6 videos) "
            f"{np.mean([r['predict_s'] for r in rows]):.0f} s per run; step cost / {ref_arm} "
            f"{np.mean(ratios) if ratios else float('nan'):.2f}x (per seed {', '.join(f'{x:.2f}' for x in ratios)})"
        )
    if sup:
        h = sup[min(sup)]["history"]
        if "val_pixel_error" in h:
            val = h["val_pixel_error"]
            n = len(val)
            marks = sorted(
                {0, n // 10, n // 4, n // 2, 3 * n // 4, 4 * n // 5, 17 * n // 20, 9 * n // 10, 19 * n // 20, n - 1}
            )
            lines += [
                "",
                "Convergence: supervised, first seed, validation pixel error (network-input px; x2 = original px) "
                "by epoch: "
                + ", ".join(f"{m}: {val[m]:.2f}" for m in marks)
                + "; validation loss: "
                + ", ".join(f"{m}: {h['val_loss'][m]:.4f}" for m in marks),
            ]
    lines += ["", "Unsupervised losses, mean over the first / last 10% of epochs (mean over seeds, px):", ""]
    for arm, rows in runs.items():
        parts = []
        for name in ("supervised", *LOSSES):
            key = f"train_{name}_loss"
            if name == "supervised" and key not in rows[0]["history"]:
                key = "train_loss"  # a supervised-only run logs its one loss under this name
            if key in rows[0]["history"]:
                series = np.array([r["history"][key] for r in rows])
                n = max(1, series.shape[1] // 10)
                parts.append(f"{name} {series[:, :n].mean():.4f} -> {series[:, -n:].mean():.4f}")
        lines.append(f"- {arm}: " + "; ".join(parts))
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--resize", type=int, nargs=2, default=[64, 128], metavar=("H", "W"))
    parser.add_argument("--size", type=int, nargs=2, default=[128, 256], metavar=("H", "W"), help="frame size")
    parser.add_argument("--labeled", type=int, default=40)
    parser.add_argument("--frames", type=int, default=400, help="frames per session")
    parser.add_argument(
        "--arms", type=lambda s: s.split(","), default=["supervised", "semi", "context", "context_semi"]
    )
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/elp-ood"))
    parser.add_argument("--redo", action="store_true", help="repeat runs already saved")
    parser.add_argument("--no-train", action="store_true", help="only rebuild the report from saved runs")
    parser.add_argument("--out", type=Path, default=RESULTS / "ood.md")
    args = parser.parse_args()
    started = time.perf_counter()
    work = (
        args.work / f"s{args.size[0]}x{args.size[1]}_r{args.resize[0]}x{args.resize[1]}_e{args.epochs}_l{args.labeled}"
    )
    root = work / "project"
    if not root.exists():
        make_session_project(
            root, seed=0, image_size=tuple(args.size), views=2, n_labeled=args.labeled, n_frames=args.frames
        )
    project = load_session_project(root)
    # the first two arms (supervised, semi) over every seed first, then the others seed by seed:
    # an interrupted run still has the main comparison at every seed
    runs: dict[str, list[dict]] = {arm: [] for arm in args.arms}
    for phase in (args.arms[:2], args.arms[2:]):
        for seed in range(args.seeds):
            for arm in phase:
                saved = work / "runs" / f"{arm}_{seed}.json"
                if args.no_train and not saved.is_file():
                    continue
                runs[arm].append(run_one(arm, seed, args, project, work))
                done = {a: r for a, r in runs.items() if r}
                write_results(
                    args.out, report(done, {}, args, project, time.perf_counter() - started) + "\n(partial)\n"
                )
    runs = {arm: rows for arm, rows in runs.items() if rows}
    eks = {arm: eks_row(arm, [r["seed"] for r in rows], project, work) for arm, rows in runs.items()}
    text = report(runs, eks, args, project, time.perf_counter() - started)
    explain = " ".join(line.strip() for line in (diagnose.__doc__ or "").split("\n\n")[1].splitlines())
    text += "\n## Diagnostics: what the losses could see\n\n" + explain
    text += "\n\n" + "\n".join(diagnose(list(runs), list(range(args.seeds)), project, work)) + "\n"
    print(write_results(args.out, text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
