"""A tiny synthetic camera rig in the pipeline, for the 3D tests (multicam, NWB export, ephys join).

``build_rig`` makes the cameras, a walking body, one rendered video per camera (one camera with
leading frames: its frame offset), their ``VideoRecording`` and ``RecordingInfo`` rows and the
true calibration file, in a new session of its own subject. ``add_sources`` gives every view a
load-mode ``PoseEstimation``: predictions CSVs written from the projected ground truth (plus
pixel noise), so the plumbing is tested, not a network. Every task created is populated.
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from element_lightning_pose import dj_compat, pipeline
from element_lightning_pose.engine.data.keypoints import write_predictions
from element_lightning_pose.engine.multicam.cameras import write_calibration
from element_lightning_pose.synthetic import rig

# the ChArUco board of the rig tests (anipose's board.toml fields)
BOARD = {
    "board_type": "charuco",
    "board_x": 7,
    "board_y": 5,
    "square_length": 50.0,
    "marker_length": 37.0,
    "marker_bits": 4,
    "dict_size": 50,
}


def build_rig(
    lp,
    subject: str,
    *,
    n_rig: int,
    lead: int,
    first_recording: int,
    when: dt.datetime,
    size: tuple[int, int] = (320, 240),
    seed: int = 0,
    lead_camera: str = "cam2",
    device_prefix: str = "rig",
    fps: float = 30.0,
    **session: object,
) -> dict:
    """Three cameras of ``size`` (width, height) and a walking body of ``n_rig`` rig frames;
    ``lead_camera``'s video starts ``lead`` frames early. ``session`` goes to
    ``pipeline.add_session`` (default ``sex="M"``). Returns the rig's pieces by name."""
    root = lp.model.root_dirs()[0]
    base = root / subject
    group = rig.make_rig(3, seed=seed, image_size=size)
    body = rig.make_body(n_rig + lead, seed=seed)
    truth = body.points[lead:]  # rig frame t = body frame t + lead
    calibration = write_calibration(group, base / "calibration.toml")
    session_key = pipeline.add_session(subject, when, **{"sex": "M", **session})
    recs, projected = {}, {}
    for i, cam in enumerate(group.cameras):
        points = body.points if cam.name == lead_camera else truth
        videos = rig.render_body_videos(group.subset([cam.name]), points, body.bodyparts, base / "videos", fps=fps)
        device = f"{device_prefix}_{cam.name}"
        lp.Device.insert1({"device": device}, skip_duplicates=True)
        rec = {**session_key, "recording_id": first_recording + i}
        lp.model.VideoRecording.insert1({**rec, "device": device})
        video = videos[cam.name][0].relative_to(root).as_posix()
        lp.model.VideoRecording.File.insert1({**rec, "file_id": 0, "file_path": video})
        recs[cam.name] = rec
        projected[cam.name] = points
    assert dj_compat.populate(lp.model.RecordingInfo, [recs[n] for n in group.names]).errors == []
    return {
        "subject": subject,
        "size": size,
        "root": root,
        "base": base,
        "group": group,
        "body": body,
        "truth": truth,
        "calibration": calibration,
        "session": session_key,
        "recs": recs,
        "points": projected,
    }


def insert_load_model(lp, rig_data: dict, name: str, bodyparts: list[str] | None = None) -> None:
    """A Model row for load-mode tasks (no network: the predictions CSVs are written here)."""
    bodyparts = list(rig_data["body"].bodyparts if bodyparts is None else bodyparts)
    width, height = rig_data["size"]
    lp.model.BodyPart.extend(bodyparts)
    lp.model.Model.insert1(
        {
            "model_name": name,
            "model_dir": f"{rig_data['subject']}/models/{name}",
            "best_checkpoint": "none",
            "backbone": "none",
            "model_type": "loaded",
            "resize_height": height,
            "resize_width": width,
            "config": {"loaded": True},
            "engine_version": "test",
            "model_description": "2D ground truth of the synthetic rig",
        }
    )
    lp.model.Model.BodyPart.insert(
        {"model_name": name, "body_part": bp, "body_part_index": i} for i, bp in enumerate(bodyparts)
    )


def load_task(lp, rec: dict, model_name: str, values: np.ndarray, bodyparts: list[str]) -> dict:
    """A load-mode PoseEstimationTask whose predictions CSV holds ``values`` (T, K, 3)."""
    key = lp.model.PoseEstimationTask.generate(rec, model_name, task_mode="load")
    output_dir = lp.model.PoseEstimationTask.default_output_dir(key)
    write_predictions(lp.model.processed_dir() / output_dir / "predictions.csv", values, bodyparts, scorer=model_name)
    return key


def observations(group, name: str, points: np.ndarray, seed: int, jump_rate: float = 0.02) -> np.ndarray:
    """(T, K, 3) x, y, likelihood of one camera: the projection plus noise and a few confident jumps."""
    obs = rig.observe(group.subset([name]), points, seed=seed, noise_px=0.5, jump_rate=jump_rate, occlusion_rate=0.0)
    return np.concatenate([obs.pixels[0], obs.likelihood[0][..., None]], axis=-1)


def add_sources(lp, rig_data: dict, model_name: str, seed: int = 0, jump_rate: float = 0.02) -> dict:
    """A load-mode model ``model_name`` on every view of the rig, populated; {camera: task key}."""
    group, bodyparts = rig_data["group"], rig_data["body"].bodyparts
    insert_load_model(lp, rig_data, model_name)
    keys = {}
    for i, name in enumerate(group.names):
        values = observations(group, name, rig_data["points"][name], seed=seed + i, jump_rate=jump_rate)
        keys[name] = load_task(lp, rig_data["recs"][name], model_name, values, bodyparts)
    result = dj_compat.populate(lp.model.PoseEstimation, list(keys.values()))
    assert result.errors == [] and result.success_count == len(keys)
    return keys
