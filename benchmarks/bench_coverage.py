"""Do the posterior intervals cover the truth on network outputs? The 3D smoother on the rig
demo's network, and the 2D EKS on real ensembles (issue #27 item 5).

1. **Rig demo** (``elp demo --rig``'s options and defaults, read from its parser, and its
   training parameters, ``demo.rig.rig_params``: 3 cameras, 320x240 frames, one network shared
   by the views, its time cap ``--max-train-s``): the project from
   ``synthetic.rig_project.make_rig_project``, the held-out session of the demo (another
   walk, ``make_body(seed=1)``), its 2D predictions, then the 3D smoother with the true
   calibration, without and with the network's own error scale per body part
   (``smoother.error_px``, from ``engine.inference.evaluate`` on its labeled frames). Reported:
   3D error, posterior sd, median |error|/sd and the 95% coverage of (frame, body part, axis).
   ``--epochs``, ``--resize``, ``--labeled``, ``--backbone``, ``--max-train-s`` and
   ``--set KEY=VALUE`` (training parameters on top) try other configurations; ``--table``
   adds one row per configuration to a results table (``results/rig_demo.md``: 2D error per
   camera, 3D median, coverage, epochs reached, training wall time, load, the validation
   error by epoch). Each configuration's network, evaluation and predictions are cached under
   ``--work``, in a folder named by a hash of its parameters.
2. **2D EKS on real ensembles** (``/work/shared/data/eks-examples``; no ground truth there):
   leave one member out. EKS on the other members; the held-out member's prediction is a new
   draw of "truth + a member's error", so its z-score against the posterior mean with the
   variance posterior + the ensemble's per-member variance should be N(0, 1) if the
   ensemble spread is an honest error scale. This checks the spread part only: an error every
   member shares (the 3D case above) cannot be seen without ground truth.

    OMP_NUM_THREADS=1 python benchmarks/bench_coverage.py --out benchmarks/results/coverage.md
    OMP_NUM_THREADS=1 python benchmarks/bench_coverage.py --stage rig --epochs 60 --table benchmarks/results/rig_demo.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import command_line, header, markdown_table, write_results
from scipy.stats import t as student_t

from element_lightning_pose.engine.config import TrainConfig

Z95 = 1.959963984540054
EKS_EXAMPLES = Path("/work/shared/data/eks-examples")


# ------------------------------------------------------------------------------ 1. the rig demo


def demo_args(args: argparse.Namespace) -> argparse.Namespace:
    """``elp demo --rig``'s options as its command line would give them (its defaults), with the
    bench's sizes on top where given: the bench trains what the demo trains."""
    from element_lightning_pose.cli.demo import configure_parser
    from element_lightning_pose.demo.common import fill_defaults

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    demo = parser.parse_args(["--rig"])
    for name in ("epochs", "resize", "image_size", "frames", "labeled", "backbone", "max_train_s"):
        if getattr(args, name) is not None:
            setattr(demo, name, getattr(args, name))
    return fill_defaults(demo)


def rig_config(args: argparse.Namespace) -> tuple[argparse.Namespace, dict]:
    """The demo's sizes and its training parameters (``demo.rig.rig_params``), ``--set`` on top."""
    from element_lightning_pose.demo.rig import rig_params

    demo = demo_args(args)
    params = rig_params(demo)
    if args.set:
        params = TrainConfig.from_dict(params).with_overrides(args.set).to_dict()
    return demo, params


def rig_outputs(work: Path, args: argparse.Namespace) -> dict:
    """Train the demo's network once (cached under ``work``, one folder per configuration) and
    predict the held-out session; returns the truth (T, K, 3), predictions (C, T, K, 3), the
    per-body-part error table of the labeled frames, the bodyparts and the training record
    (epochs reached, wall time, the validation error per epoch)."""
    demo, params = rig_config(args)
    width, height = demo.image_size, int(round(demo.image_size * 0.75))
    project_dir = work / f"project_{width}x{height}_{demo.labeled}labeled_{demo.frames}frames"
    key = hashlib.sha1(json.dumps([params, project_dir.name], sort_keys=True).encode()).hexdigest()[:10]
    run = work / f"run_{key}"
    cache = run / "rig_outputs.npz"
    print(
        f"configuration {key}: {demo.image_size} px frames, {demo.labeled} labeled instants, "
        f"{params['data']['image_resize']} input, {params['training']['max_epochs']} epochs, "
        f"time cap {params['training'].get('max_time_s')} s; under {run}",
        flush=True,
    )
    if not cache.is_file():
        _train_and_predict(run, project_dir, demo, params)
    data = dict(np.load(cache, allow_pickle=False))
    data["evaluation"] = json.loads((run / "evaluation.json").read_text())
    data["record"] = {**json.loads((run / "record.json").read_text()), **training_record(run / "model")}
    data["calibration"] = str(project_dir / "calibration.toml")
    return data


def _train_and_predict(run: Path, project_dir: Path, demo: argparse.Namespace, params: dict) -> None:
    from element_lightning_pose.engine.data.projects import read_project_labels
    from element_lightning_pose.engine.inference.evaluate import evaluate
    from element_lightning_pose.engine.inference.models import load_model
    from element_lightning_pose.engine.inference.predict import predict_video
    from element_lightning_pose.engine.multicam.cameras import read_calibration
    from element_lightning_pose.engine.training import train
    from element_lightning_pose.synthetic.rig import make_body, render_body_videos
    from element_lightning_pose.synthetic.rig_project import make_rig_project

    width, height = demo.image_size, int(round(demo.image_size * 0.75))
    stamp = project_dir / "bench_sizes.json"
    if not stamp.is_file():
        if project_dir.exists():
            shutil.rmtree(project_dir)
        make_rig_project(
            project_dir,
            n_cameras=3,
            image_size=(width, height),
            n_frames=demo.frames,
            n_labeled=demo.labeled,
            n_board_frames=2,
            seed=0,
        )
        stamp.write_text(json.dumps({"done": True}))
    project = _rig_project_files(project_dir)
    group = read_calibration(project_dir / "calibration.toml")
    params = {**params, "data": {**params["data"], "csv_file": project["csv_files"], "view_names": group.names}}
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    load = os.getloadavg()
    start = time.perf_counter()
    train(params, project_dir, run / "model", progress=False)
    train_s = time.perf_counter() - start
    labels = read_project_labels(project_dir, project["csv_files"], group.names)
    table = evaluate(run / "model", labels)
    evaluation = table.assign(view=table["image"].str.split("/").str[1]).to_dict(orient="list")
    body = make_body(demo.frames, seed=1)  # the demo's held-out session
    radius = max(1, int(round(4 * width / 640)))
    session = run.parent / f"session_{project_dir.name}"
    if not all((session / f"{name}.mp4").is_file() for name in group.names):
        render_body_videos(group, body.points, body.bodyparts, session, radius=radius)
    model = load_model(run / "model")
    preds = [predict_video(model, session / f"{name}.mp4", progress=False).predictions for name in group.names]
    record = {"params": params, "train_s": train_s, "load_before": list(load), "load_after": list(os.getloadavg())}
    np.savez(
        run / "rig_outputs.npz", truth=body.points, predictions=np.stack(preds), bodyparts=np.array(body.bodyparts)
    )
    (run / "evaluation.json").write_text(json.dumps(evaluation))
    (run / "record.json").write_text(json.dumps(record))


def training_record(model_dir: Path) -> dict:
    """What the model directory says of its training: epochs reached and allowed, wall time,
    each crop-zoom stage's epochs and time, the crop size, the validation error by epoch (the
    pose stage's under crop zoom: its error is the 2D error)."""
    info = json.loads((model_dir / "model.json").read_text())
    config = TrainConfig.from_yaml(model_dir / "config.yaml")
    metrics = pd.read_csv(model_dir / "metrics.csv")
    if "stage" in metrics:
        metrics = metrics[metrics["stage"] == "pose"]
    curve = metrics.dropna(subset=["val_pixel_error"]).drop_duplicates("val_loss")
    crop_zoom = info.get("crop_zoom") or {}
    return {
        "max_epochs": config.training.max_epochs,
        "epochs": int(info["epochs"]),
        "train_wall_s": float(info["wall_time_s"]),
        "stages": {
            name: {"epochs": stage["epochs"], "wall_time_s": stage["wall_time_s"]}
            for name, stage in crop_zoom.items()
            if isinstance(stage, dict) and "epochs" in stage
        },
        "crop_size": crop_zoom.get("crop_size"),
        "val_curve": [[int(e), float(v)] for e, v in zip(curve["epoch"], curve["val_pixel_error"])],
    }


def _rig_project_files(project_dir: Path) -> dict:
    names = [str(n) for n in np.load(project_dir / "ground_truth.npz")["camera_names"]]
    return {"csv_files": [f"CollectedData_{name}.csv" for name in names]}


def coverage_row(points: np.ndarray, variance: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """3D error, posterior sd, median |error|/sd and 95% coverage over (frame, body part, axis)."""
    error = points - truth
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.abs(error) / np.sqrt(variance)
    ok = np.isfinite(z)
    return {
        "error_median": float(np.nanmedian(np.linalg.norm(error, axis=-1))),
        "sd_median": float(np.nanmedian(np.sqrt(variance))),
        "ratio": float(np.median(z[ok])),
        "coverage": float(np.mean(z[ok] <= Z95)),
    }


def rig_results(data: dict) -> dict:
    """The held-out session's 2D error per camera, the labeled frames' error scale per body part,
    and the 3D smoother's error and coverage without and with ``smoother.error_px``."""
    from element_lightning_pose.engine.inference.metrics import error_scale_px
    from element_lightning_pose.engine.multicam.cameras import read_calibration
    from element_lightning_pose.engine.multicam.params import TriangulationParams, triangulate_views

    group = read_calibration(Path(data["calibration"]))
    bodyparts = [str(b) for b in data["bodyparts"]]
    table = pd.DataFrame(data["evaluation"])
    summary = table.groupby(["bodypart", "split"])["error_px"].agg(n_frames="count", mean_px="mean").reset_index()
    scales = error_scale_px(summary)
    pred = data["predictions"]
    true_px = np.stack([cam.project(data["truth"]) for cam in group.cameras])
    pixel_error = np.nanmean(np.linalg.norm(pred[..., :2] - true_px, axis=-1), axis=(1, 2))
    arms = {
        "before: residuals alone (error_px None)": {},
        "after: error_px from the evaluation": {"error_px": "evaluation"},
    }
    rows = {}
    for arm, smoother in arms.items():
        params = TriangulationParams.from_dict({"method": "smoother", "min_likelihood": 0.1, "smoother": smoother})
        start = time.perf_counter()
        result = triangulate_views(
            group,
            pred[..., :2],
            pred[..., 2],
            None,
            bodyparts,
            params,
            evaluation_error_px=np.array([[scales[b] for b in bodyparts]] * len(group)),
        )
        rows[arm] = {
            **coverage_row(result.points, result.variance, data["truth"]),
            "seconds": time.perf_counter() - start,
        }
        print(arm, rows[arm], flush=True)
    held = summary[summary["split"] != "train"]
    return {
        "cameras": list(group.names),
        "pixel_error": [float(e) for e in pixel_error],
        "labeled_px": float(np.average(held["mean_px"], weights=held["n_frames"])),
        "labeled_points": int(held["n_frames"].sum()),
        "scales": scales,
        "bodyparts": bodyparts,
        "frames": int(pred.shape[1]),
        "arms": rows,
    }


def network_input(record: dict) -> str:
    """What the pose network's input covers: the whole frame, or crop zoom's crops."""
    crop_zoom = record["params"].get("crop_zoom") or {}
    if not crop_zoom.get("enabled"):
        return " (the whole frame)"
    height, width = crop_zoom["detector_resize"]
    crop = record.get("crop_size") or ["?", "?"]
    return f" (crop zoom: crops of {crop[1]}x{crop[0]} px around a detector's find at {width}x{height})"


def rig_section(data: dict, results: dict) -> list[str]:
    record = data["record"]
    params = record["params"]
    height, width = params["data"]["image_resize"]
    rows = [
        [
            arm,
            f"{r['error_median']:.1f}",
            f"{r['sd_median']:.2f}",
            f"{r['ratio']:.2f}",
            f"{r['coverage']:.3f}",
            f"{r['seconds']:.1f}",
        ]
        for arm, r in results["arms"].items()
    ]
    return [
        "## 1. The rig demo's network: the 3D smoother's 95% intervals against the truth",
        "",
        f"Network: {params['model']['backbone']} at {width}x{height}{network_input(record)}, {record['epochs']} of "
        f"{record['max_epochs']} epochs trained in {record['train_s']:.0f} s; "
        f"2D error on the held-out session per camera (px, mean distance): "
        + ", ".join(f"{name} {e:.1f}" for name, e in zip(results["cameras"], results["pixel_error"]))
        + f"; on its labeled val+test frames {results['labeled_px']:.1f} px "
        f"({results['labeled_points']} points). Error scale per body part (px sd per axis, "
        "`metrics.error_scale_px`): "
        + ", ".join(f"{b} {results['scales'][b]:.1f}" for b in results["bodyparts"])
        + ". Triangulation with the true calibration, `min_likelihood` 0.1 (the demo's); coverage over "
        f"{results['frames']} frames x {len(results['bodyparts'])} body parts x 3 axes (0.95 and a median "
        "|error|/sd of 0.67 when honest).",
        "",
        *markdown_table(
            [
                "smoother",
                "3D error median (mm)",
                "posterior sd median (mm)",
                "median abs error / sd",
                "95% coverage",
                "wall time (s)",
            ],
            rows,
        ),
        "",
    ]


RIG_TABLE_COLUMNS = [
    "configuration",
    "command",
    "CPU",
    "load average (1 min) before / after training",
    "2D px per camera (held-out session)",
    "2D px labeled val+test",
    "3D median (mm)",
    "95% coverage (error_px evaluation)",
    "epochs reached / max",
    "training wall (s)",
    "val px (input px) by epoch",
]


def rig_table_row(label: str, data: dict, results: dict) -> list[str]:
    """One line of ``benchmarks/results/rig_demo.md``: a configuration and what it reached."""
    from element_lightning_pose.engine.hardware import cpu_model

    record = data["record"]
    after = results["arms"]["after: error_px from the evaluation"]
    curve = record["val_curve"]
    step = max(1, len(curve) // 6)
    shown = curve[::step] + ([curve[-1]] if (len(curve) - 1) % step else [])
    return [
        label,
        f"`{command_line()}`",
        cpu_model(),
        f"{record['load_before'][0]:.1f} / {record['load_after'][0]:.1f}",
        ", ".join(f"{e:.1f}" for e in results["pixel_error"]),
        f"{results['labeled_px']:.1f}",
        f"{after['error_median']:.1f}",
        f"{after['coverage']:.3f}",
        f"{record['epochs']} / {record['max_epochs']}"
        + "".join(f" ({name} {stage['epochs']})" for name, stage in record.get("stages", {}).items() if name != "pose"),
        f"{record['train_wall_s']:.0f}"
        + "".join(f" ({name} {stage['wall_time_s']:.0f})" for name, stage in record.get("stages", {}).items()),
        " ".join(f"{e}:{v:.1f}" for e, v in shown),
    ]


def append_rig_table(path: Path, row: list[str]) -> None:
    """Add a row to the results table (its header written first when the file is new)."""
    if path.is_file():
        lines = path.read_text().rstrip("\n").split("\n")
    else:
        title = "The rig demo's 3D error: configurations tried"
        lines = header(title, command="each row's own (column 'command')") + markdown_table(RIG_TABLE_COLUMNS, [])
    lines += markdown_table(RIG_TABLE_COLUMNS, [row])[2:]
    write_results(path, lines)


# ------------------------------------------------------------------------------ the rig demo's calibration


def calibration_section(work: Path, board_frames: list[int], frames: int) -> list[str]:
    """How far the board calibration alone puts the 3D points: the demo's held-out walk projected
    exactly into each camera (perfect 2D), triangulated with the cameras calibrated from board
    videos of ``board_frames`` frames (the demo's ``--board-frames``), against the truth moved into
    that calibration's world frame (camera 0's, as the demo does)."""
    from element_lightning_pose.engine.multicam.boards import detect_video
    from element_lightning_pose.engine.multicam.calibrate import calibrate
    from element_lightning_pose.engine.multicam.cameras import read_calibration
    from element_lightning_pose.engine.multicam.params import TriangulationParams, triangulate_views
    from element_lightning_pose.synthetic.rig import make_body
    from element_lightning_pose.synthetic.rig_project import BOARD, make_rig_project

    body = make_body(frames, seed=1)
    params = TriangulationParams.from_dict({"method": "smoother", "min_likelihood": 0.1, "smoother": {}})
    rows = []
    for n_board in board_frames:
        start = time.perf_counter()
        project = make_rig_project(
            work / f"calibration_{n_board}", image_size=(320, 240), n_frames=10, n_labeled=2, n_board_frames=n_board
        )
        true = read_calibration(project.calibration)
        detections, sizes = {}, {}
        for name in project.camera_names:
            detections[name], sizes[name], _ = detect_video(BOARD, project.board_videos[name])
        result = calibrate(BOARD, detections, sizes)
        seconds = time.perf_counter() - start
        exact = np.stack([camera.project(body.points) for camera in true.cameras])
        points = triangulate_views(
            result.group, exact, np.ones(exact.shape[:-1]), None, list(body.bodyparts), params
        ).points
        truth = true[true.names[0]].to_camera(body.points)
        error = np.linalg.norm(points - truth, axis=-1)
        centres = [
            float(np.linalg.norm(est.centre - true[true.names[0]].to_camera(cam.centre[None])[0]))
            for est, cam in zip(result.group.cameras, true.cameras)
        ]
        rows.append(
            [
                n_board,
                ", ".join(f"{e:.2f}" for e in result.errors),
                ", ".join(f"{c:.1f}" for c in centres),
                f"{np.nanmedian(error):.1f}",
                f"{seconds:.0f}",
            ]
        )
        print(n_board, rows[-1], flush=True)
    return [
        "## The rig demo's calibration: 3D error with perfect 2D",
        "",
        "320x240 board videos of the demo's rig (`make_rig_project`, seed 0), `engine.multicam.calibrate` "
        "with its defaults; the demo's held-out walk projected exactly into every camera and triangulated "
        "with the calibrated cameras (the 3D smoother, as the demo), against the truth in camera 0's frame.",
        "",
        *markdown_table(
            [
                "board frames per camera",
                "board reprojection error per camera (px)",
                "camera centre error per camera (mm)",
                "3D median error, perfect 2D (mm)",
                "render + detect + calibrate (s)",
            ],
            rows,
        ),
        "",
    ]


# ------------------------------------------------------------------------------ 2. 2D EKS, real ensembles


def eks_sets(root: Path) -> dict[str, list[Path]]:
    """Each single-view ensemble of the eks examples: {name: member CSVs}."""
    sets: dict[str, list[Path]] = {"mirror-mouse": sorted((root / "mirror-mouse").glob("*.csv"))}
    for view in ("left", "right"):
        sets[f"ibl-paw {view}"] = sorted((root / "ibl-paw").glob(f"*.{view}.rng=*.csv"))
    for camera in ("A", "B", "C"):
        sets[f"fly Cam-{camera}"] = sorted((root / "fly").glob(f"*_Cam-{camera}_*.csv"))
    return {name: files for name, files in sets.items() if len(files) >= 3}


def eks_leave_one_out(files: list[Path]) -> dict[str, float]:
    """EKS on all members but one, for each member in turn; the held-out member's z-scores
    against the posterior mean, with the posterior variance alone and with the posterior
    variance plus the others' spread (the predictive variance of a new member)."""
    from element_lightning_pose.engine.eks import load_members, smooth

    members, names = load_members(files)
    z_post, z_pred, z_model = [], [], []
    for held in range(len(members)):
        others = np.delete(members, held, axis=0)
        result = smooth(others, names)
        mean = np.stack([result.x, result.y], axis=-1)  # (T, K, 2)
        xy = others[..., :2]
        spread = np.nanvar(xy, axis=0, ddof=1)  # a member's error variance, as the others spread
        truth_like = members[held, ..., :2]
        ok = np.isfinite(truth_like).all(-1) & (members[held, ..., 2] >= 0.5)
        diff = (truth_like - mean)[ok]
        z_post.append(np.abs(diff) / np.sqrt(result.posterior_var[ok]))
        z_pred.append(np.abs(diff) / np.sqrt(result.posterior_var[ok] + spread[ok]))
        z_model.append(np.abs(diff) / np.sqrt(result.posterior_var[ok] + result.ensemble_var[ok]))
    post, pred = np.concatenate(z_post).ravel(), np.concatenate(z_pred).ravel()
    post, pred = post[np.isfinite(post)], pred[np.isfinite(pred)]
    noise = np.concatenate(z_model).ravel()
    noise = noise[np.isfinite(noise)]
    return {
        "members": float(len(members)),
        "frames": float(members.shape[1]),
        "n": float(post.size),
        "post_cover": float(np.mean(post <= Z95)),
        "post_ratio": float(np.median(post)),
        "pred_cover": float(np.mean(pred <= Z95)),
        "pred_ratio": float(np.median(pred)),
        # a variance estimated from M-1 members: a t with M-2 degrees of freedom when honest
        "pred_expected": float(2 * student_t.cdf(Z95, len(members) - 2) - 1),
        "model_cover": float(np.mean(noise <= Z95)),
        "model_ratio": float(np.median(noise)),
    }


def eks_section(root: Path) -> list[str]:
    rows = []
    for name, files in eks_sets(root).items():
        r = eks_leave_one_out(files)
        rows.append(
            [
                name,
                f"{r['members']:.0f}",
                f"{r['frames']:.0f}",
                f"{r['post_cover']:.3f}",
                f"{r['post_ratio']:.2f}",
                f"{r['pred_cover']:.3f}",
                f"{r['pred_ratio']:.2f}",
                f"{r['pred_expected']:.3f}",
                f"{r['model_cover']:.3f}",
                f"{r['model_ratio']:.2f}",
            ]
        )
        print(name, r, flush=True)
    columns = [
        "ensemble",
        "members",
        "frames",
        "95% posterior interval covers held-out member",
        "median abs z (posterior)",
        "95% predictive interval covers held-out member",
        "median abs z (predictive)",
        "predictive coverage expected if honest (t, M-2 dof)",
        "covered with EKS's noise R_t instead of the spread",
        "median abs z (R_t)",
    ]
    return [
        "## 2. 2D EKS on real ensembles: leave one member out",
        "",
        f"{root}: no ground truth. EKS (`engine.eks.smooth`, defaults: fitted s, calibrated noise, "
        "outlier rejection) on all members but one, each member held out in turn; points where the "
        "held-out member's likelihood is >= 0.5. Posterior: |held-out - posterior mean| / posterior sd. "
        "Predictive: the same over sqrt(posterior var + the other members' variance), the variance a new "
        "member should have if the spread is its error scale; a spread of M-1 members is itself a noisy "
        "variance, so an honest spread gives the t coverage of the next column. R_t: EKS's own observation "
        "noise (calibrated: the spread shrunk to its median, times a fitted scale).",
        "",
        *markdown_table(columns, rows),
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_coverage"))
    parser.add_argument("--out", type=Path, default=None)
    sizes = "(default: elp demo --rig's)"
    parser.add_argument("--epochs", type=int, help=f"training epochs {sizes}")
    parser.add_argument("--resize", type=int, help=f"network input width, 4:3 {sizes}")
    parser.add_argument("--image-size", type=int, help=f"frame width, 4:3 {sizes}")
    parser.add_argument("--frames", type=int, help=f"frames per video {sizes}")
    parser.add_argument("--labeled", type=int, help=f"labeled instants per view {sizes}")
    parser.add_argument("--backbone", help=f"network backbone {sizes}")
    parser.add_argument("--max-train-s", type=float, help=f"training time cap, 0: none {sizes}")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="training parameter on top (as elp train --set)"
    )
    parser.add_argument(
        "--stage",
        choices=("outputs", "rig", "all", "calibration"),
        default="all",
        help="rig: leave out the EKS part; calibration: the board calibration's own 3D error (--board-frames)",
    )
    parser.add_argument("--board-frames", type=int, nargs="+", default=[12, 30, 60, 120, 240])
    parser.add_argument("--table", type=Path, help="add this configuration's row to a results table (rig_demo.md)")
    parser.add_argument("--label", default="", help="the configuration's name in --table")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage == "calibration":
        lines = header("The rig demo's calibration") + calibration_section(args.work, args.board_frames, 300)
        print("\n".join(lines))
        if args.out:
            write_results(args.out, lines)
        return 0
    lines = header("Posterior interval coverage on network outputs")
    data = rig_outputs(args.work, args)
    if args.stage == "outputs":
        print("outputs cached under", args.work)
        return 0
    results = rig_results(data)
    lines += rig_section(data, results)
    if args.table:
        append_rig_table(
            args.table, rig_table_row(args.label or " ".join(sys.argv[1:] if argv is None else argv), data, results)
        )
    if args.stage == "all":
        lines += eks_section(EKS_EXAMPLES)
    print("\n".join(lines))
    if args.out:
        write_results(args.out, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
