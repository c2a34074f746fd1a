"""``elp demo``: the whole pipeline on a local database, from data to NWB, plots and video.

Steps: connect (starting a private server when no ``DJ_HOST`` is set), generate a synthetic
labeled project with ground truth (or use ``--project``), register it, train two models with
different seeds, evaluate them, predict a session video with each, smooth the ensemble with
EKS, export NWB (checked with nwbinspector's DANDI config), draw trace plots and a labeled
video, and print a summary. Running it again reuses what exists.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import time
from pathlib import Path

import numpy as np

DEMO_PREFIX = "lp_demo_"


def demo_params(epochs: int, resize: int, backbone: str) -> dict:
    """Training parameters sized for a 2-core laptop: a few minutes per model."""
    return {
        "data": {"image_resize": [resize, resize], "train_prob": 0.8, "val_prob": 0.1},
        "model": {"backbone": backbone, "pretrained": backbone == "efficientnet_lite0"},
        "training": {
            "batch_size": 8,
            "max_epochs": epochs,
            "unfreeze_epoch": 0,
            "lr_milestones": [int(epochs * 0.6), int(epochs * 0.85)],
            "num_workers": 0,
            "check_val_every_n_epoch": max(1, epochs // 10),
            "log_every_n_steps": 5,
        },
    }


class Step:
    """Prints a step's name, then its duration when it ends."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        print(f"==> {self.name} ...", flush=True)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            print(f"    done in {time.perf_counter() - self.start:.1f} s", flush=True)


def connect(backend: str) -> None:
    """Use DJ_* when set, else start (or reuse) a private local server."""
    if os.environ.get("DJ_HOST"):
        print(f"using the database server at {os.environ['DJ_HOST']} (DJ_HOST)")
    else:
        from . import localdb

        conn = localdb.start(backend)
        os.environ.update(conn.env())
        print(f"private {backend} server on {conn.host}:{conn.port} (data in {conn.data_dir})")
    from . import dj_compat

    dj_compat.configure_from_env()


def synthetic_data(root: Path, image_size: int, n_labeled: int, n_frames: int):
    from .engine.synthetic import load_synthetic_project, make_synthetic_project

    project_dir = root / "projects" / "synthetic"
    if (project_dir / "synthetic.json").is_file():
        return load_synthetic_project(project_dir)
    if project_dir.exists():
        shutil.rmtree(project_dir)
    # video00 feeds the labels; video01 plays the session recording (with ground truth)
    return make_synthetic_project(
        project_dir,
        seed=0,
        image_size=(image_size, image_size),
        n_labeled=n_labeled,
        n_video_frames=n_frames,
        n_videos=2,
        fps=30.0,
    )


def run_demo(args: argparse.Namespace) -> dict:
    """Run every step; returns the summary dictionary printed at the end."""
    out = Path(args.out).absolute()
    root, processed = out / "data", out / "processed"
    root.mkdir(parents=True, exist_ok=True)
    processed.mkdir(parents=True, exist_ok=True)
    summary: dict = {"outputs": {}}

    with Step("database"):
        connect(args.backend)
        from . import dj_compat, pipeline
        from .engine import io

        lp = pipeline.activate_pipeline(args.prefix, root_dir=root, processed_dir=processed)
    train, model, ensemble = lp.train, lp.model, lp.ensemble

    with Step("labeled project"):
        if args.project:
            project_root = Path(args.project).absolute()
            link = root / "projects" / project_root.name
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(project_root, target_is_directory=True)
            labels, project_videos = io.load_project(link)
            session_videos = [Path(v).absolute() for v in (args.videos or project_videos[:1])]
            truth = None
            project_rel = f"projects/{project_root.name}"
        else:
            synth = synthetic_data(root, args.image_size, args.labeled, args.frames)
            session_videos = [synth.videos[1]]
            truth = synth.ground_truth(synth.videos[1])[0]
            project_rel = "projects/synthetic"
        existing = dj_compat.fetch_dicts(train.VideoSet & {"project_dir": project_rel})
        vs_key = (
            {"video_set_id": existing[0]["video_set_id"]}
            if existing
            else train.VideoSet.insert_project(project_rel, description="demo project")
        )
        n_labeled = (train.VideoSet & vs_key).fetch1("n_labeled_frames")
        print(f"    {project_rel}: {n_labeled} labeled frames")

    with Step(f"training {args.models} models ({args.backbone}, {args.epochs} epochs, {args.resize}px)"):
        idx = train.TrainingParamSet.insert_new_params("demo", demo_params(args.epochs, args.resize, args.backbone))
        for i in range(args.models):
            train.TrainingTask.insert1(
                {**vs_key, "paramset_idx": idx, "training_id": i + 1, "seed": i}, skip_duplicates=True
            )
        result = dj_compat.populate(train.ModelTraining, display_progress=True)
        _raise_errors(result)
        names = []
        for i in range(args.models):
            tkey = {**vs_key, "paramset_idx": idx, "training_id": i + 1}
            name = f"demo_seed{i}"
            if not model.Model & {"model_name": name}:
                model.Model.insert_from_training(tkey, model_name=name)
            names.append(name)
        for row in dj_compat.fetch_dicts(train.ModelTraining & vs_key & {"paramset_idx": idx}):
            print(f"    training {row['training_id']}: {row['n_epochs']} epochs in {row['wall_time_s']:.0f} s")

    with Step("evaluation on the labeled frames"):
        _raise_errors(dj_compat.populate(model.ModelEvaluation))
        summary["evaluation"] = {
            r["model_name"]: (r["train_mean_px"], r["val_mean_px"], r["test_mean_px"])
            for r in dj_compat.fetch_dicts(model.ModelEvaluation & [{"model_name": n} for n in names])
        }

    with Step("session recording and pose estimation"):
        session = pipeline.add_session(
            "mouse01",
            dt.datetime(2024, 5, 1, 10, 30),
            sex="F",
            subject_birth_date=dt.date(2024, 1, 2),
            description="element-lightning-pose demo session",
        )
        lp.Device.insert1({"device": "camera1", "device_description": "behaviour camera"}, skip_duplicates=True)
        rec = {**session, "recording_id": 1}
        if not model.VideoRecording & rec:
            with model.VideoRecording.connection.transaction:
                model.VideoRecording.insert1({**rec, "device": "camera1"})
                model.VideoRecording.File.insert(
                    {**rec, "file_id": i, "file_path": _relative(root, v)} for i, v in enumerate(session_videos)
                )
        _raise_errors(dj_compat.populate(model.RecordingInfo, rec))
        for name in names:
            model.PoseEstimationTask.generate(rec, name, batch_size=16)
        _raise_errors(dj_compat.populate(model.PoseEstimation, rec, display_progress=True))
        pose_rows = dj_compat.fetch_dicts(model.PoseEstimation & rec)
        summary["inference_fps"] = {r["model_name"]: r["frames_per_s"] for r in pose_rows}

    with Step("ensemble (Ensemble Kalman Smoother)"):
        sidx = ensemble.SmoothingParamSet.insert_new_params("automatic s", {})
        ens_key = {**rec, "ensemble_id": 1}
        if not ensemble.EnsembleSmoothingTask & ens_key:
            ensemble.EnsembleSmoothingTask.create(rec, names, sidx, ensemble_id=1, description="demo ensemble")
        _raise_errors(dj_compat.populate(ensemble.EnsembleSmoothing, rec))

    if truth is not None:
        summary["pixel_error_vs_truth"] = _errors_vs_truth(model, ensemble, rec, ens_key, names, truth)

    with Step("NWB export (checked with nwbinspector --config dandi)"):
        from .export import dj_nwb, nwb

        nwb_path = dj_nwb.export_session(session, out / "nwb", species="Mus musculus", overwrite=True)
        serious = [
            m for m in nwb.inspect_dandi(nwb_path) if m.importance.name in ("CRITICAL", "BEST_PRACTICE_VIOLATION")
        ]
        summary["outputs"]["nwb"] = nwb_path
        summary["nwb_serious_findings"] = len(serious)
        for message in serious:
            print(f"    nwbinspector: {message.importance.name}: {message.message}")

    with Step("plots and labeled video"):
        from . import plotting

        figures = out / "figures"
        figures.mkdir(exist_ok=True)
        plotting.plot_ensemble(ens_key, figures / "ensemble_traces.png")
        plotting.plot_model_evaluation({"model_name": names[0]}, figures / "evaluation.png")
        video = plotting.labeled_video_for(ens_key, figures / "ensemble_labeled.mp4")
        summary["outputs"].update(
            {
                "trace plot": figures / "ensemble_traces.png",
                "evaluation plot": figures / "evaluation.png",
                "labeled video": video,
                "ensemble CSV": processed / (ensemble.EnsembleSmoothing & ens_key).fetch1("output_file"),
            }
        )
        for r in pose_rows:
            summary["outputs"][f"predictions {r['model_name']}"] = processed / r["predictions_file"]
    return summary


def _relative(root: Path, path: Path) -> str:
    path = Path(path).absolute()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        link = root / "videos_external" / path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(path)
        return link.relative_to(root).as_posix()


def _raise_errors(result) -> None:
    if result.errors:
        key, message = result.errors[0]
        raise RuntimeError(f"populate failed for {key}: {message}")


def _errors_vs_truth(model, ensemble, rec, ens_key, names, truth) -> dict:
    errors = {}
    for name in names:
        pose = model.PoseEstimation.get_trajectory({**rec, "model_name": name}).to_numpy().reshape(len(truth), -1, 3)
        errors[name] = float(np.nanmean(np.linalg.norm(pose[..., :2] - truth, axis=-1)))
    from .dj_compat import fetch_dicts

    rows = {r["body_part"]: r for r in fetch_dicts(ensemble.EnsembleSmoothing.BodyPartPosition & ens_key)}
    order = model.Model.bodyparts({"model_name": names[0]})
    smoothed = np.stack([np.stack([rows[b]["x_pos"], rows[b]["y_pos"]], -1) for b in order], axis=1)
    errors["ensemble (EKS)"] = float(np.nanmean(np.linalg.norm(smoothed - truth, axis=-1)))
    return errors


def print_summary(summary: dict, elapsed: float) -> None:
    print("\n================ demo summary ================")
    if "pixel_error_vs_truth" in summary:
        print("mean pixel error against ground truth, every frame of the session video:")
        for name, err in summary["pixel_error_vs_truth"].items():
            print(f"  {name:24s} {err:6.2f} px")
    print("labeled-frame error (train / val / test mean px):")
    for name, values in summary["evaluation"].items():
        print(f"  {name:24s} " + " / ".join("-" if v is None else f"{v:.2f}" for v in values))
    print("inference speed:")
    for name, fps in summary["inference_fps"].items():
        print(f"  {name:24s} {fps:7.1f} frames/s" if fps else f"  {name:24s} (loaded)")
    print(f"NWB serious inspector findings: {summary['nwb_serious_findings']}")
    print("outputs:")
    for what, path in summary["outputs"].items():
        print(f"  {what:28s} {path}")
    print(f"total {elapsed / 60:.1f} min")
