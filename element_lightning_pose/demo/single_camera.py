"""``elp demo``: the whole pipeline on a local database, from data to NWB, plots and video.

Steps: connect (starting a private server when no ``DJ_HOST`` is set), generate a synthetic
labeled project with ground truth (or use ``--project``), register it, train two models with
different seeds, evaluate them, predict a session video with each, smooth the ensemble with
EKS, export NWB (checked with nwbinspector's DANDI config), draw trace plots and a labeled
video, and print a summary. Running it again reuses what exists.

``elp demo --rig`` runs a calibrated camera rig instead (:mod:`.rig`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
from pathlib import Path

import numpy as np

from element_lightning_pose.demo.common import (
    Step,
    connect,
    demo_params,
    find_or_register_video_set,
    raise_populate_errors,
    relative_to_root,
)
from element_lightning_pose.engine.data.projects import load_project
from element_lightning_pose.synthetic.projects import load_synthetic_project, make_synthetic_project


def synthetic_data(root: Path, image_size: int, n_labeled: int, n_frames: int):
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
        from element_lightning_pose import dj_compat, pipeline

        lp = pipeline.activate_pipeline(args.prefix, root_dir=root, processed_dir=processed)
    train, model, ensemble = lp.train, lp.model, lp.ensemble

    with Step("labeled project"):
        if args.project:
            project_root = Path(args.project).absolute()
            link = root / "projects" / project_root.name
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(project_root, target_is_directory=True)
            labels, project_videos = load_project(link)
            session_videos = [Path(v).absolute() for v in (args.videos or project_videos[:1])]
            truth = None
            project_rel = f"projects/{project_root.name}"
        else:
            synth = synthetic_data(root, args.image_size, args.labeled, args.frames)
            session_videos = [synth.videos[1]]
            truth = synth.ground_truth(synth.videos[1])[0]
            project_rel = "projects/synthetic"
        vs_key = find_or_register_video_set(train, project_rel, "demo project")
        n_labeled = (train.VideoSet & vs_key).fetch1("n_labeled_frames")
        print(f"    {project_rel}: {n_labeled} labeled frames")

    with Step(f"training {args.models} models ({args.backbone}, {args.epochs} epochs, {args.resize}px)"):
        idx = train.TrainingParamSet.insert_new_params("demo", demo_params(args.epochs, args.resize, args.backbone))
        for i in range(args.models):
            train.TrainingTask.insert1(
                {**vs_key, "paramset_idx": idx, "training_id": i + 1, "seed": i}, skip_duplicates=True
            )
        result = dj_compat.populate(train.ModelTraining, display_progress=True)
        raise_populate_errors(result)
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
        raise_populate_errors(dj_compat.populate(model.ModelEvaluation))
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
                    {**rec, "file_id": i, "file_path": relative_to_root(root, v)} for i, v in enumerate(session_videos)
                )
        raise_populate_errors(dj_compat.populate(model.RecordingInfo, rec))
        for name in names:
            model.PoseEstimationTask.generate(rec, name, batch_size=16)
        raise_populate_errors(dj_compat.populate(model.PoseEstimation, rec, display_progress=True))
        pose_rows = dj_compat.fetch_dicts(model.PoseEstimation & rec)
        summary["inference_fps"] = {r["model_name"]: r["frames_per_s"] for r in pose_rows}

    with Step("ensemble (Ensemble Kalman Smoother)"):
        sidx = ensemble.SmoothingParamSet.insert_new_params("automatic s", {})
        ens_key = {**rec, "ensemble_id": 1}
        if not ensemble.EnsembleSmoothingTask & ens_key:
            ensemble.EnsembleSmoothingTask.create(rec, names, sidx, ensemble_id=1, description="demo ensemble")
        raise_populate_errors(dj_compat.populate(ensemble.EnsembleSmoothing, rec))

    if truth is not None:
        summary["pixel_error_vs_truth"] = _errors_vs_truth(model, ensemble, rec, ens_key, names, truth)

    with Step("NWB export (checked with nwbinspector --config dandi)"):
        from element_lightning_pose.export import dj_nwb, nwb

        nwb_path = dj_nwb.export_session(session, out / "nwb", species="Mus musculus", overwrite=True)
        serious = [
            m for m in nwb.inspect_dandi(nwb_path) if m.importance.name in ("CRITICAL", "BEST_PRACTICE_VIOLATION")
        ]
        summary["outputs"]["nwb"] = nwb_path
        summary["nwb_serious_findings"] = len(serious)
        for message in serious:
            print(f"    nwbinspector: {message.importance.name}: {message.message}")

    with Step("plots and labeled video"):
        from element_lightning_pose import plotting

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


def _errors_vs_truth(model, ensemble, rec, ens_key, names, truth) -> dict:
    errors = {}
    for name in names:
        pose = model.PoseEstimation.get_trajectory({**rec, "model_name": name}).to_numpy().reshape(len(truth), -1, 3)
        errors[name] = float(np.nanmean(np.linalg.norm(pose[..., :2] - truth, axis=-1)))
    from element_lightning_pose.dj_compat import fetch_dicts

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
