"""``elp demo --rig``: a calibrated camera rig from board videos to 3D pose in NWB.

Rendered board videos -> ``Calibration`` -> a labeled multi-view project (one CSV per view)
as one ``VideoSet`` -> one network shared by the views -> ``PoseEstimation`` per camera of a
new session -> ``MultiCameraRecording`` -> ``Triangulation`` -> 3D plots -> NWB; it prints
the 3D error against the ground truth, the reprojection errors and the time of each step.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
from pathlib import Path

import numpy as np

from element_lightning_pose.demo.common import (
    Step,
    busy_machine_threads,
    connect,
    demo_params,
    find_or_register_video_set,
    raise_populate_errors,
    relative_to_root,
)
from element_lightning_pose.engine.atomic import atomic_output, write_text_atomic
from element_lightning_pose.engine.multicam.cameras import read_calibration
from element_lightning_pose.synthetic.rig import make_body, render_body_videos
from element_lightning_pose.synthetic.rig_project import BOARD, make_rig_project

RIG_CALIBRATION = "demo_rig"


# The rig's animal spans about a third of its 320x240 frames, its body parts drawn as dots of 2 px:
# a network of the whole frame at 128x96 (0.4 of the pixels) stayed 15-16 px off per camera and
# 34-46 mm in 3D. Crop zoom finds the animal with a small detector and gives the pose network a
# crop around it at about the original pixels (benchmarks/results/rig_demo.md).
RIG_DETECTOR_RESIZE = (64, 64)
# twice the default: the pose network still underfits at 70 epochs (8.7 mm against 9.9 mm in 3D)
RIG_LEARNING_RATE = 2e-3


def rig_data(root: Path, args: argparse.Namespace) -> dict:
    """The synthetic rig: a labeled multi-view project (its board videos and true calibration
    included) and a session of the same rig with a different walk, its 3D ground truth.

    Returns a dict: the project's root, camera_names, board_videos and true calibration, the
    true ``group``, the session's videos {camera: path}, its ``truth`` (T, K, 3) in the rig's
    world frame (mm) and its ``bodyparts``. Reused when it exists with the same sizes (other
    sizes in the same output folder and prefix would meet the first run's VideoSet: use
    another ``--out`` and ``--prefix``)."""
    width, height = args.image_size, int(round(args.image_size * 0.75))
    sizes = {
        "cameras": args.cameras,
        "image_size": [width, height],
        "frames": args.frames,
        "labeled": args.labeled,
        "board_frames": args.board_frames,
    }
    project_dir = root / "projects" / "rig"
    session_dir = root / "sessions" / "rig_session"
    stamp = project_dir / "demo_sizes.json"
    if not (stamp.is_file() and json.loads(stamp.read_text()) == sizes):
        for folder in (project_dir, session_dir):
            if folder.exists():
                shutil.rmtree(folder)
        make_rig_project(
            project_dir,
            n_cameras=args.cameras,
            image_size=(width, height),
            n_frames=args.frames,
            n_labeled=args.labeled,
            n_board_frames=args.board_frames,
            seed=0,
        )
    project = _load_rig_project(project_dir)
    group = read_calibration(project["calibration"])
    truth_file = session_dir / "ground_truth.npz"
    if not truth_file.is_file():
        body = make_body(args.frames, seed=1)  # another walk than the labeled one: a held-out session
        radius = max(1, int(round(4 * width / 640)))  # as make_rig_project draws the labeled videos
        render_body_videos(group, body.points, body.bodyparts, session_dir, radius=radius)

        with atomic_output(truth_file) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, points3d=body.points, bodyparts=np.array(body.bodyparts))

    write_text_atomic(stamp, json.dumps(sizes))
    truth = np.load(truth_file)
    return {
        **project,
        "group": group,
        "session_videos": {name: session_dir / f"{name}.mp4" for name in group.names},
        "truth": truth["points3d"],
        "bodyparts": [str(b) for b in truth["bodyparts"]],
    }


def _load_rig_project(project_dir: Path) -> dict:
    """The paths of a project :func:`make_rig_project` wrote (its layout is fixed)."""
    truth = np.load(project_dir / "ground_truth.npz")
    names = [str(n) for n in truth["camera_names"]]
    return {
        "root": project_dir,
        "camera_names": names,
        "board_videos": {n: project_dir / "calibration" / f"{n}.avi" for n in names},
        "calibration": project_dir / "calibration.toml",
    }


def rig_params(args: argparse.Namespace) -> dict:
    """:func:`demo_params` with one network shared by the views, in two stages (crop zoom): a
    detector of the whole frame at :data:`RIG_DETECTOR_RESIZE`, then the pose network on crops
    around the animal resized to ``--resize`` square."""
    params = demo_params(args.epochs, args.resize, args.backbone)
    params["data"]["multiview"] = "shared"
    params["crop_zoom"] = {"enabled": True, "detector_resize": list(RIG_DETECTOR_RESIZE)}
    params["training"]["learning_rate"] = RIG_LEARNING_RATE
    limit = float(getattr(args, "max_train_s", 0) or 0)
    if limit > 0:
        params["training"]["max_time_s"] = limit
    return params


def _time_cap(args: argparse.Namespace) -> str:
    limit = float(getattr(args, "max_train_s", 0) or 0)
    return f", at most {limit:.0f} s each" if limit > 0 else ""


def run_rig_demo(args: argparse.Namespace) -> dict:
    """Run every step of the multi-camera demo; returns the summary (also written as
    ``summary.json`` in the output folder)."""
    out = Path(args.out).absolute()
    root, processed = out / "data", out / "processed"
    root.mkdir(parents=True, exist_ok=True)
    processed.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    summary: dict = {"outputs": {}, "timings": timings}

    with Step("database", timings):
        connect(args.backend)
        from element_lightning_pose import dj_compat, pipeline

        lp = pipeline.activate_pipeline(args.prefix, root_dir=root, processed_dir=processed)
    train, model, multicam = lp.train, lp.model, lp.multicam

    with Step(f"rig of {args.cameras} cameras: board videos, labeled views, session videos", timings):
        data = rig_data(root, args)
        names = data["camera_names"]

    with Step("calibration from the board videos", timings):
        cal = {"calibration_id": RIG_CALIBRATION}
        if not multicam.CameraCalibration & cal:
            board = {f: getattr(BOARD, f) for f in ("board_type", "board_x", "board_y", "square_length")}
            board.update({f: getattr(BOARD, f) for f in ("marker_length", "marker_bits", "dict_size")})
            if not multicam.CalibrationTask & cal:
                multicam.CalibrationTask.create(RIG_CALIBRATION, board, data["board_videos"], units="mm")
            raise_populate_errors(dj_compat.populate(multicam.Calibration, cal))
        units = (multicam.CameraCalibration & cal).fetch1("units")
        summary["units"] = units
        summary["calibration_error_px"] = {
            r["camera_name"]: r["reprojection_error"]
            for r in dj_compat.fetch_dicts(multicam.CameraCalibration.Camera & cal, order_by="camera_name")
        }

    with Step("multi-view project as one VideoSet", timings):
        project_rel = "projects/rig"
        vs_key = find_or_register_video_set(train, project_rel, "demo rig: one label CSV per view")
        n_labeled = (train.VideoSet & vs_key).fetch1("n_labeled_frames")
        print(f"    {project_rel}: {n_labeled} labeled frames in views {train.VideoSet.views(vs_key)}")

    threads = busy_machine_threads()
    if threads:
        import torch  # the demo's training is in this process; torch is heavy, imported where needed

        torch.set_num_threads(threads)
        print(f"    the machine is busy (load average {os.getloadavg()[0]:.1f}): training with {threads} thread")
    detector_height, detector_width = RIG_DETECTOR_RESIZE
    with Step(
        f"training {args.models} shared multi-view model(s) ({args.backbone}, {args.epochs} epochs, detector "
        f"{detector_width}x{detector_height}px, pose {args.resize}x{args.resize}px crops{_time_cap(args)})",
        timings,
    ):
        idx = train.TrainingParamSet.insert_new_params("demo multi-view", rig_params(args))
        for i in range(args.models):
            train.TrainingTask.insert1(
                {**vs_key, "paramset_idx": idx, "training_id": i + 1, "seed": i}, skip_duplicates=True
            )
        raise_populate_errors(
            dj_compat.populate(train.ModelTraining, {**vs_key, "paramset_idx": idx}, display_progress=True)
        )
        models = []
        for i in range(args.models):
            tkey = {**vs_key, "paramset_idx": idx, "training_id": i + 1}
            name = f"demo_rig_seed{i}"
            if not model.Model & {"model_name": name}:
                model.Model.insert_from_training(tkey, model_name=name)
            models.append(name)
            row = (train.ModelTraining & tkey).fetch1()
            print(f"    {name}: {row['n_epochs']} epochs in {row['wall_time_s']:.0f} s")

    with Step("session: one recording per camera, pose estimation per camera", timings):
        session = pipeline.add_session(
            "mouse01",
            dt.datetime(2024, 5, 2, 10, 30),
            session_id=2,  # session 1 is the 2D demo's (same schemas by default)
            sex="F",
            subject_birth_date=dt.date(2024, 1, 2),
            description="element-lightning-pose multi-camera demo session",
        )
        recs = {}
        for i, camera in enumerate(names):
            device = f"rig_{camera}"
            lp.Device.insert1({"device": device, "device_description": f"rig camera {camera}"}, skip_duplicates=True)
            rec = {**session, "recording_id": i + 1}
            if not model.VideoRecording & rec:
                with model.VideoRecording.connection.transaction:
                    model.VideoRecording.insert1({**rec, "device": device})
                    model.VideoRecording.File.insert1(
                        {**rec, "file_id": 0, "file_path": relative_to_root(root, data["session_videos"][camera])}
                    )
            recs[camera] = rec
        raise_populate_errors(dj_compat.populate(model.RecordingInfo, list(recs.values())))
        for rec in recs.values():
            for name in models:
                model.PoseEstimationTask.generate(rec, name, batch_size=16)
        raise_populate_errors(dj_compat.populate(model.PoseEstimation, list(recs.values()), display_progress=True))

    with Step("3D: MultiCameraRecording -> TriangulationTask -> Triangulation", timings):
        rig_key = {**session, "rig_recording_id": 1}
        if not multicam.MultiCameraRecording & rig_key:
            multicam.MultiCameraRecording.insert_rig(
                session, 1, RIG_CALIBRATION, {c: recs[c]["recording_id"] for c in names}
            )
        # the 3D smoother: robust to confident 2D mistakes, a posterior variance per coordinate
        # that holds the network's own error (its evaluation on labeled frames): the views
        # share that error, so the reprojection residuals alone cannot show it
        raise_populate_errors(dj_compat.populate(model.ModelEvaluation, [{"model_name": m} for m in models]))
        triangulation = {
            "method": "smoother",
            "min_likelihood": float(getattr(args, "min_likelihood", 0.1)),
            "smoother": {"error_px": "evaluation"},
        }
        tidx = multicam.TriangulationParamSet.insert_new_params("demo 3D smoother", triangulation)
        task = {**rig_key, "triangulation_paramset_idx": tidx, "triangulation_id": 1}
        if not multicam.TriangulationTask & task:
            multicam.TriangulationTask.create(rig_key, tidx, models[0], description="demo: the first model per camera")
        raise_populate_errors(dj_compat.populate(multicam.Triangulation, task))

    summary.update(_rig_errors(lp, data, recs, models[0], task))

    with Step("3D plots", timings):
        figures = out / "figures"
        figures.mkdir(exist_ok=True)
        summary["outputs"].update(_rig_plots(lp, task, summary.pop("_arrays"), figures))

    with Step("NWB export (checked with nwbinspector --config dandi)", timings):
        from element_lightning_pose.export import dj_nwb, nwb

        nwb_path = dj_nwb.export_session(session, out / "nwb", species="Mus musculus", overwrite=True)
        messages = nwb.inspect_dandi(nwb_path)
        serious = [m for m in messages if m.importance.name in ("CRITICAL", "BEST_PRACTICE_VIOLATION")]
        summary["outputs"]["nwb"] = nwb_path
        summary["nwb_serious_findings"] = len(serious)
        summary["nwb_findings"] = [f"{m.importance.name}: {m.message}" for m in messages]
        for message in serious:
            print(f"    nwbinspector: {message.importance.name}: {message.message}")
        summary["nwb_3d"] = _nwb_3d_contents(nwb_path)

    points_file = (multicam.Triangulation & task).fetch1("points_file")
    summary["outputs"]["3D points CSV"] = processed / points_file

    write_text_atomic(out / "summary.json", json.dumps(summary, default=str, indent=1) + "\n")
    summary["outputs"]["summary"] = out / "summary.json"
    return summary


def _rig_errors(lp, data: dict, recs: dict, model_name: str, task: dict) -> dict:
    """3D error against the truth, reprojection error per camera and each camera's 2D error
    against the true projections. The board calibration's world frame is the first camera's
    optical frame, so the truth is moved into it with that camera's true pose (the calibration
    is in mm like the truth: no scale or alignment is fitted)."""
    from element_lightning_pose.dj_compat import fetch_dicts

    group, multicam = data["group"], lp.multicam
    trajectory = multicam.Triangulation.get_trajectory(task)
    bodyparts = list(dict.fromkeys(trajectory.columns.get_level_values(0)))
    order = [data["bodyparts"].index(bp) for bp in bodyparts]
    truth_world = data["truth"][:, order]
    truth = group[data["camera_names"][0]].to_camera(truth_world)
    estimate = np.stack([trajectory[bp][["x", "y", "z"]].to_numpy() for bp in bodyparts], axis=1)
    variance = np.stack([trajectory[bp][["x_var", "y_var", "z_var"]].to_numpy() for bp in bodyparts], axis=1)
    error = np.linalg.norm(estimate - truth, axis=-1)
    finite = error[np.isfinite(error)]
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.abs(estimate - truth) / np.sqrt(variance)
    z = z[np.isfinite(z)]
    cameras = [str(c) for c in (multicam.Triangulation & task).fetch1("cameras")]
    rows = {r["body_part"]: r for r in fetch_dicts(multicam.Triangulation.BodyPartPosition3D & task)}
    reprojection = np.stack([np.asarray(rows[bp]["reprojection_error"], float).T for bp in bodyparts], -1)  # (C,T,K)
    pixel_error = {}
    for camera in cameras:
        pose = lp.model.PoseEstimation.get_trajectory({**recs[camera], "model_name": model_name})
        pose_parts = list(dict.fromkeys(pose.columns.get_level_values(1)))
        xy = pose.to_numpy().reshape(len(pose), len(pose_parts), 3)[:, [pose_parts.index(b) for b in bodyparts], :2]
        true_px = group[camera].project(truth_world)
        inside = np.all((true_px >= 0) & (true_px < np.array(group[camera].size)), axis=-1)
        pixel_error[camera] = float(np.nanmean(np.linalg.norm(xy - true_px, axis=-1)[inside]))
    with np.errstate(invalid="ignore"):
        per_camera = {c: float(np.nanmean(reprojection[i])) for i, c in enumerate(cameras)}
    return {
        "error_3d": {
            "mean": float(np.mean(finite)) if finite.size else float("nan"),
            "median": float(np.median(finite)) if finite.size else float("nan"),
            "p95": float(np.percentile(finite, 95)) if finite.size else float("nan"),
            "triangulated": f"{finite.size} of {error.size} body-part frames",
            # the share of (frame, body part, axis) whose 95% posterior interval holds the truth
            "coverage_95": float(np.mean(z <= 1.959964)) if z.size else float("nan"),
            "median_error_over_sd": float(np.median(z)) if z.size else float("nan"),
        },
        "reprojection_error_px": per_camera,
        "pixel_error_px": pixel_error,
        "_arrays": {
            "points": estimate,
            "variance": variance,
            "truth": truth,
            "bodyparts": bodyparts,
            "reprojection": reprojection,
            "cameras": cameras,
        },
    }


def _rig_plots(lp, task: dict, arrays: dict, figures: Path) -> dict:
    """The 3D traces (a few body parts, with the truth dashed) and the reprojection errors."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from element_lightning_pose.plotting.multicam import plot_reprojection_errors, plot_traces_3d

    units = (lp.multicam.CameraCalibration * lp.multicam.MultiCameraRecording & task).fetch1("units")
    shown = [bp for bp in ("snout", "paw_fl", "tail_base") if bp in arrays["bodyparts"]] or arrays["bodyparts"][:3]
    traces = figures / "traces_3d.png"
    errors = figures / "reprojection_errors.png"
    figure = plot_traces_3d(
        arrays["points"],
        arrays["bodyparts"],
        variance=arrays["variance"],
        ground_truth=arrays["truth"],
        keypoints=shown,
        fps=30.0,
        units=units,
        title="3D pose (calibration frame), 95% posterior band; truth dashed",
        out=traces,
    )
    plt.close(figure)
    figure = plot_reprojection_errors(
        arrays["reprojection"], arrays["cameras"], fps=30.0, title="reprojection error per camera", out=errors
    )
    plt.close(figure)
    return {"3D trace plot": traces, "reprojection plot": errors}


def _nwb_3d_contents(path: Path) -> dict[str, int]:
    """How many ``MultiCameraPoseEstimation`` (3D pose) and ``CalibratedCamera`` objects the
    NWB file holds."""
    from pynwb import NWBHDF5IO

    counts = {"MultiCameraPoseEstimation": 0, "CalibratedCamera": 0}
    with NWBHDF5IO(str(path), "r", load_namespaces=True) as io:
        for obj in io.read().objects.values():
            if type(obj).__name__ in counts:
                counts[type(obj).__name__] += 1
    return counts


def print_rig_summary(summary: dict, elapsed: float) -> None:
    """The multi-camera demo's figures: 3D error, reprojection and 2D errors, step times, outputs."""
    units = summary["units"]
    e3 = summary["error_3d"]
    print("\n================ multi-camera demo summary ================")
    print(f"3D error against ground truth ({e3['triangulated']} triangulated), in {units}:")
    print(f"  mean {e3['mean']:.2f}   median {e3['median']:.2f}   p95 {e3['p95']:.2f}")
    print(
        f"  95% posterior intervals cover {100 * e3['coverage_95']:.1f}% of the truth (frame, body part, axis); "
        f"median |error| / sd {e3['median_error_over_sd']:.2f} (0.67 when honest)"
    )
    print("per camera (px):          calibration   reprojection   2D error vs truth")
    for camera in summary["reprojection_error_px"]:
        calibration = summary["calibration_error_px"].get(camera)
        print(
            f"  {camera:22s} {'-' if calibration is None else f'{calibration:11.2f}'}"
            f"   {summary['reprojection_error_px'][camera]:12.2f}   {summary['pixel_error_px'][camera]:17.2f}"
        )
    contents = summary["nwb_3d"]
    print(
        f"NWB serious inspector findings: {summary['nwb_serious_findings']}; the file holds "
        f"{contents['MultiCameraPoseEstimation']} MultiCameraPoseEstimation (3D) and "
        f"{contents['CalibratedCamera']} CalibratedCamera"
    )
    print("wall time per step:")
    for step, seconds in summary["timings"].items():
        print(f"  {seconds:7.1f} s  {step}")
    print("outputs:")
    for what, path in summary["outputs"].items():
        print(f"  {what:28s} {path}")
    print(f"total {elapsed / 60:.1f} min")
