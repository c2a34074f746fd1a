"""Calibrated geometry as an unsupervised loss on a rig whose views are occluded in turn.

Issue #18 part 3: with 20 labeled instants, does the calibrated reprojection loss (and the
limb-length loss) lower the error of occluded views below supervised training and below the
multi-view PCA loss? One synthetic rig project (synthetic.rig_project.make_rig_project):
3 calibrated cameras, a body walking in the arena, each camera's points hidden in runs
(``--occlusion`` of the frames per camera and keypoint; hidden points are neither drawn nor
labeled). Every arm trains the same shared network (efficientnet_lite0, ImageNet weights)
on the same labels; the unlabeled video is the project's own (the video a lab wants
predicted, as in Lightning Pose). Errors are measured on every unlabeled frame against the
ground truth: per view on the visible and on the occluded points, and in 3D after
triangulating the predictions (engine.multicam.triangulate.triangulate_dlt, likelihood
weights). Each run is saved as JSON under --work, so an interrupted benchmark resumes.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_rig_losses.py \\
        --seeds 3 --epochs 60 --out benchmarks/results/rig_losses.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import cpu_model, header, write_results

ARMS = {
    "supervised": [],
    "pca_multiview": ["pca_multiview"],
    "reprojection": ["reprojection"],
    "reprojection+limb": ["reprojection", "limb_length"],
}


def make_project(work: Path, args) -> Path:
    from element_lightning_pose.synthetic.rig_project import make_rig_project

    root = work / "project"
    if not (root / "ground_truth.npz").is_file():
        make_rig_project(
            root,
            n_cameras=args.cameras,
            image_size=(320, 240),
            n_frames=args.frames,
            n_labeled=args.labeled,
            n_board_frames=2,
            occlusion_rate=args.occlusion,
            decoys=args.decoys,
            dot_radius=args.dot_radius,
            seed=args.project_seed,
        )
    return root


def config_for(arm: str, seed: int, names: list[str], args) -> dict:
    return {
        "data": {
            "image_resize": list(args.resize),
            "csv_file": [f"CollectedData_{n}.csv" for n in names],
            "view_names": names,
            "train_prob": 0.85,
            "val_prob": 0.15,
        },
        "model": {"backbone": "efficientnet_lite0", "pretrained": True},
        "training": {
            "max_epochs": args.epochs,
            "seed": seed,
            "num_workers": 0,
            "batch_size": 8,
            "unfreeze_epoch": min(20, args.epochs // 4),
            "lr_milestones": [int(args.epochs * 0.6), int(args.epochs * 0.85)],
            "log_every_n_steps": 5,
        },
        "losses": {
            "unsupervised": ARMS[arm],
            "calibration": "calibration.toml" if any("reproj" in a or "limb" in a for a in ARMS[arm]) else None,
            "clip_length": 4,
            "warmup_epochs": max(1, args.epochs // 4),
        },
    }


def evaluate(model_dir: Path, root: Path, truth: dict) -> dict:
    from element_lightning_pose.engine.inference.models import load_model
    from element_lightning_pose.engine.inference.predict import predict_video
    from element_lightning_pose.engine.multicam.cameras import read_calibration
    from element_lightning_pose.engine.multicam.triangulate import triangulate_dlt

    names = [str(n) for n in truth["camera_names"]]
    model = load_model(model_dir)
    unlabeled = np.setdiff1d(np.arange(truth["pixels"].shape[1]), truth["labeled_frames"])
    predictions = np.stack(
        [predict_video(model, root / "videos" / f"session0_{n}.mp4", progress=False).predictions for n in names]
    )  # (C, T, K, 3)
    pixels, visible, occluded = truth["pixels"], truth["visible"], truth["occluded"]
    error = np.linalg.norm(predictions[..., :2] - pixels, axis=-1)[:, unlabeled]  # (C, T', K)
    seen = (visible & ~occluded)[:, unlabeled]
    hidden = (visible & occluded)[:, unlabeled]
    group = read_calibration(root / "calibration.toml").subset(names)
    tri = triangulate_dlt(group, predictions[..., :2], predictions[..., 2])
    error3d = np.linalg.norm(tri.points - truth["points3d"], axis=-1)[unlabeled]
    finite3d = error3d[np.isfinite(error3d)]
    return {
        "visible_mean": float(error[seen].mean()),
        "occluded_mean": float(error[hidden].mean()),
        "occluded_median": float(np.median(error[hidden])),
        "occluded_p95": float(np.percentile(error[hidden], 95)),
        "all_p95": float(np.percentile(error[visible[:, unlabeled]], 95)),
        "error3d_mean": float(finite3d.mean()),
        "error3d_median": float(np.median(finite3d)),
        "error3d_p95": float(np.percentile(finite3d, 95)),
        "n_occluded": int(hidden.sum()),
    }


def diagnose(model_dir: Path, root: Path, truth: dict) -> dict:
    """What the reprojection loss can pull a model's predictions towards, measured on its own
    predictions of the unlabeled frames: the 2D error of each view's raw prediction against
    that of the reprojection of the OTHER views' triangulation (leave-one-view-out), on the
    visible and on the occluded points. Where the other views do not place a point better
    than the view itself, consistency has nothing to correct."""
    from element_lightning_pose.engine.inference.models import load_model
    from element_lightning_pose.engine.inference.predict import predict_video
    from element_lightning_pose.engine.multicam.cameras import read_calibration
    from element_lightning_pose.engine.multicam.triangulate import triangulate_dlt

    names = [str(n) for n in truth["camera_names"]]
    model = load_model(model_dir)
    unlabeled = np.setdiff1d(np.arange(truth["pixels"].shape[1]), truth["labeled_frames"])
    predictions = np.stack(
        [predict_video(model, root / "videos" / f"session0_{n}.mp4", progress=False).predictions for n in names]
    )[:, unlabeled]
    pixels = truth["pixels"][:, unlabeled]
    seen = (truth["visible"] & ~truth["occluded"])[:, unlabeled]
    hidden = (truth["visible"] & truth["occluded"])[:, unlabeled]
    group = read_calibration(root / "calibration.toml").subset(names)
    out: dict = {}
    raw = np.linalg.norm(predictions[..., :2] - pixels, axis=-1)
    others = np.full_like(raw, np.nan)
    for c, name in enumerate(names):
        rest = [n for n in names if n != name]
        index = [names.index(n) for n in rest]
        tri = triangulate_dlt(group.subset(rest), predictions[index, ..., :2], predictions[index, ..., 2])
        others[c] = np.linalg.norm(group[name].project(tri.points) - pixels[c], axis=-1)
    for label, mask in (("visible", seen), ("occluded", hidden)):
        out[f"{label}_raw_mean"] = float(np.nanmean(raw[mask]))
        out[f"{label}_others_mean"] = float(np.nanmean(others[mask]))
        out[f"{label}_others_better_share"] = float(np.nanmean((others < raw)[mask]))
        out[f"{label}_confidence_mean"] = float(predictions[..., 2][mask].mean())
    tri = triangulate_dlt(group, predictions[..., :2], predictions[..., 2])
    consistency = np.linalg.norm(group.project(tri.points) - predictions[..., :2], axis=-1)
    valid = np.isfinite(consistency) & truth["visible"][:, unlabeled]
    out["reprojection_error_mean"] = float(consistency[valid].mean())
    # the predicted pose's size: median triangulated bone length / true length, per bone, then median
    from element_lightning_pose.synthetic.rig import BODYPARTS, BONES

    index = {name: i for i, name in enumerate(BODYPARTS)}
    ratios = [
        np.nanmedian(np.linalg.norm(tri.points[:, index[child]] - tri.points[:, index[parent]], axis=-1)) / length
        for child, parent, length in BONES
    ]
    out["bone_length_ratio_median"] = float(np.median(ratios))
    out["bone_length_ratio_min"] = float(np.min(ratios))
    out["corr_reprojection_vs_true_error"] = float(np.corrcoef(consistency[valid], raw[valid])[0, 1])
    return out


def run(arm: str, seed: int, root: Path, work: Path, args, truth: dict) -> dict:
    from element_lightning_pose.engine.training import train

    out = work / "runs" / f"{arm}-seed{seed}.json"
    if out.is_file():
        return json.loads(out.read_text())
    names = [str(n) for n in truth["camera_names"]]
    model_dir = work / "models" / f"{arm}-seed{seed}"
    started = time.perf_counter()
    result = train(config_for(arm, seed, names, args), root, model_dir, progress=False)
    wall = time.perf_counter() - started
    row = {"arm": arm, "seed": seed, "train_s": wall, "epochs": result.epochs, **evaluate(model_dir, root, truth)}
    row["cpu"] = cpu_model()  # runs resume across calls, maybe on another machine
    history = result.history
    row["steps"] = int(history["step"].iloc[-1]) if len(history) else 0
    row["s_per_step"] = wall / max(1, row["steps"])
    for column in history.columns:
        if column.startswith("train_") and column.endswith("_loss"):
            row[f"last_{column}"] = float(history[column].dropna().iloc[-1]) if history[column].notna().any() else None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=1))
    print(json.dumps(row), flush=True)
    return row


def interval(differences: list[float]) -> tuple[float, float, float]:
    """Mean and 95% t-interval of per-seed paired differences."""
    from scipy import stats

    d = np.asarray(differences, dtype=float)
    if len(d) < 2:
        return float(d.mean()), float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half)


def report(rows: list[dict], args, elapsed: float) -> str:
    metrics = [
        ("visible_mean", "visible kp, mean px"),
        ("occluded_mean", "occluded kp, mean px"),
        ("occluded_median", "occluded, median px"),
        ("occluded_p95", "occluded, p95 px"),
        ("error3d_mean", "3D mean mm"),
        ("error3d_p95", "3D p95 mm"),
        ("s_per_step", "s / step"),
    ]
    cpus = sorted({r.get("cpu", "not recorded") for r in rows})
    lines = [
        *header("Calibrated reprojection and limb-length losses on an occluded rig"),
        f"Wall time: {elapsed / 60:.1f} min this invocation; the saved runs ran on: {', '.join(cpus) or '-'}.",
        "",
        f"Rig: {args.cameras} calibrated cameras, 320x240, {args.frames}-frame video, {args.labeled} labeled instants "
        f"(85% train / 15% val), points hidden in per-camera runs ({args.occlusion:.0%} of frames per camera and "
        "keypoint, mean 15 frames; hidden = not labeled, and "
        f"{'drawn at a fixed wrong offset (a decoy)' if args.decoys else 'not drawn'}; dots of radius "
        f"{args.dot_radius or 2} px). Shared efficientnet_lite0 (ImageNet), resize "
        f"{args.resize[0]}x{args.resize[1]}, batch 8, {args.epochs} epochs, clip 4 frames x every camera per step, default loss weights "
        "(0.001). Errors on every unlabeled frame against the ground truth; mean ± SD over seeds.",
        "",
        "| arm | " + " | ".join(label for _, label in metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    by_arm: dict[str, list[dict]] = {}
    for row in rows:
        by_arm.setdefault(row["arm"], []).append(row)
    for arm in ARMS:
        if arm not in by_arm:
            continue
        cells = []
        for key, _ in metrics:
            values = np.array([r[key] for r in by_arm[arm]], dtype=float)
            cells.append(f"{values.mean():.2f} ± {values.std():.2f}" if len(values) > 1 else f"{values.mean():.2f}")
        lines.append(f"| {arm} ({len(by_arm[arm])} seeds) | " + " | ".join(cells) + " |")
    base = {r["seed"]: r for r in by_arm.get("supervised", [])}
    lines += ["", "Paired differences against supervised (same seed; mean and 95% t-interval over seeds):", ""]
    lines += [
        "| arm | occluded mean px | occluded p95 px | 3D mean mm | seeds better on occluded mean |",
        "|---|---|---|---|---|",
    ]
    for arm, arm_rows in by_arm.items():
        if arm == "supervised":
            continue
        paired = [r for r in arm_rows if r["seed"] in base]
        if not paired:
            continue
        cells = []
        for key in ("occluded_mean", "occluded_p95", "error3d_mean"):
            mean, low, high = interval([r[key] - base[r["seed"]][key] for r in paired])
            cells.append(f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]")
        better = sum(r["occluded_mean"] < base[r["seed"]]["occluded_mean"] for r in paired)
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {better} of {len(paired)} |")
    lines += ["", "Per run:", ""]
    for row in rows:
        losses = ", ".join(f"{k[5:]}={v:.4g}" for k, v in row.items() if k.startswith("last_") and v is not None)
        lines.append(
            f"- {row['arm']} seed {row['seed']}: occluded {row['occluded_mean']:.2f} px, visible "
            f"{row['visible_mean']:.2f} px, 3D {row['error3d_mean']:.2f} mm, {row['epochs']} epochs in "
            f"{row['train_s']:.0f} s; last losses {losses}"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--labeled", type=int, default=20)
    parser.add_argument("--occlusion", type=float, default=0.25)
    parser.add_argument("--project-seed", type=int, default=0)
    parser.add_argument("--decoys", action="store_true", help="a hidden point's dot is drawn in the wrong place")
    parser.add_argument("--resize", type=int, nargs=2, default=(128, 160), metavar=("H", "W"))
    parser.add_argument("--dot-radius", type=int, default=None, help="dot radius in pixels (default: 2 at 320 wide)")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/elp-bench-rig"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--report-only", action="store_true", help="write the table from the saved runs")
    parser.add_argument("--diagnose", nargs="*", default=None, help="run names (ARM-seedN) to diagnose and print")
    args = parser.parse_args()
    started = time.perf_counter()
    root = make_project(args.work, args)
    truth = dict(np.load(root / "ground_truth.npz"))
    if args.diagnose is not None:
        for name in args.diagnose:
            print(
                name,
                json.dumps({k: round(v, 3) for k, v in diagnose(args.work / "models" / name, root, truth).items()}),
            )
        return
    rows = []
    for seed in range(args.seeds):  # seed-major: every arm has a paired run as early as possible
        for arm in args.arms.split(","):
            saved = args.work / "runs" / f"{arm}-seed{seed}.json"
            if args.report_only:
                if saved.is_file():
                    rows.append(json.loads(saved.read_text()))
                continue
            rows.append(run(arm, seed, root, args.work, args, truth))
    text = report(rows, args, time.perf_counter() - started)
    print(text)
    if args.out:
        write_results(args.out, text)


if __name__ == "__main__":
    main()
