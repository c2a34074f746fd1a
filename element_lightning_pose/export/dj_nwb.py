"""Export a session's pose from the database to NWB (the DataJoint side of ``export.nwb``).

``export_session(session_key, out_dir)`` gathers, for every recording of the session, the
ensemble-smoothed pose when an ``EnsembleSmoothing`` exists and otherwise each model's
``PoseEstimation``, plus subject and session metadata from the upstream tables, and writes one
DANDI-named file (``sub-<subject>_ses-<session>_behavior+image.nwb``) — or appends to an
existing NWB file that already holds, say, the session's ephys.

When the ``multicam`` schema is active, every ``Triangulation`` of the session becomes one
``MultiCameraPoseEstimation`` (3D pose in the calibration's units and world frame, with its
cameras as ``CalibratedCamera`` devices and the 2D pose each view was triangulated from);
the recordings that are views of a triangulated rig are exported there only, not again as
single cameras. ``dandi_layout=True`` lays the file and its videos out as a dandiset expects.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import date, datetime
from datetime import timezone as dt_timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from element_lightning_pose import model, paths
from element_lightning_pose.dj_compat import fetch_dicts, fetch_keys, match
from element_lightning_pose.engine.multicam.cameras import CameraGroup
from element_lightning_pose.export import nwb

LIKELIHOOD_DEFINITION = (
    "Network confidence in [0, 1]: the share of the keypoint's spatial-softmax heatmap mass "
    "within a small radius of its peak (element-lightning-pose engine)."
)
EKS_LIKELIHOOD_DEFINITION = (
    "Mean over ensemble members of each member's network confidence in [0, 1]; uncertainty of "
    "the smoothed position is in the posterior variance series."
)


def _upstream(name: str):
    return getattr(model._linking_module, name, None)


def _row(table, key: dict) -> dict:
    rows = fetch_dicts(table & match(key))
    return rows[0] if len(rows) == 1 else {}


def subject_info(session_key: dict, **overrides: Any) -> nwb.SubjectInfo:
    """Subject metadata from the upstream ``Subject`` table (when it has one); ``overrides``
    (any ``SubjectInfo`` field, e.g. ``species=``) replace or complete it."""
    subject_table = _upstream("Subject")
    row = _row(subject_table, session_key) if subject_table is not None else {}
    session_start = session_info(session_key).session_start_time
    birth = row.get("subject_birth_date")
    age = None
    if isinstance(birth, (date, datetime)):
        days = (session_start.date() - (birth.date() if isinstance(birth, datetime) else birth)).days
        age = f"P{days}D" if days >= 0 else None
    values = {
        "subject_id": str(row.get("subject", session_key.get("subject", ""))),
        "species": row.get("species"),
        "sex": row.get("sex"),
        "age": age,
        "description": row.get("subject_description") or None,
    }
    values.update(overrides)
    return nwb.SubjectInfo(**values)


def session_info(session_key: dict, *, timezone: str = "UTC", **overrides: Any) -> nwb.SessionInfo:
    """Session metadata from the upstream ``Session`` table (``session_datetime``), then arguments.

    DataJoint stores naive datetimes; ``timezone`` says which zone they are in (DANDI needs it).
    """
    row = _row(model._linking_module.Session, session_key)
    start = overrides.pop("session_start_time", None) or row.get("session_datetime")
    if start is None:
        raise ValueError(f"session {session_key}: no session_datetime upstream; pass session_start_time=")
    if start.tzinfo is None:
        start = start.replace(tzinfo=dt_timezone.utc if timezone == "UTC" else ZoneInfo(timezone))
    session_id = "_".join(str(v) for k, v in session_key.items() if k != "subject") or "1"
    session_id = session_id.replace(" ", "T").replace(":", "-")
    values = {
        "session_id": session_id,
        "session_start_time": start,
        "session_description": row.get("session_description") or f"pose estimation of session {session_key}",
    }
    values.update(overrides)
    return nwb.SessionInfo(**values)


def _recording_video(key: dict) -> tuple[Path, dict]:
    path = model.VideoRecording.file_paths(key)[0]
    rows = fetch_dicts(model.RecordingInfo & key)
    if not rows:
        recording = {k: key[k] for k in model.VideoRecording.primary_key}
        raise ValueError(
            f"RecordingInfo of recording {recording} is not populated: populate it "
            f"before exporting the session (its frame rate and size go into the NWB file)"
        )
    return path, rows[0]


def _camera_from_pose(key: dict, camera_name: str) -> nwb.CameraPose:
    bodyparts = model.Model.bodyparts(key)
    rows = {r["body_part"]: r for r in fetch_dicts(model.PoseEstimation.BodyPartPosition & key)}
    ordered = [rows[bp] for bp in bodyparts]
    return _camera_pose(
        key,
        camera_name,
        ordered,
        confidence_definition=LIKELIHOOD_DEFINITION,
        scorer=key["model_name"],
        description=f"keypoints predicted by model {key['model_name']} (element-lightning-pose)",
    )


def _camera_pose(
    key: dict, camera_name: str, rows: list[dict], arrays: tuple[str, ...] = (), **labels: str
) -> nwb.CameraPose:
    """One camera's pose from per-body-part rows (``body_part``, ``x_pos``, ``y_pos``,
    ``likelihood`` and the ``arrays`` fields) of a recording, with the video and its size from
    ``RecordingInfo``."""
    video, info = _recording_video(key)
    stack = lambda field: np.stack([r[field] for r in rows], axis=1)  # noqa: E731
    device = (model.VideoRecording & key).fetch1("device")
    return nwb.CameraPose(
        camera_name=camera_name,
        camera_description=f"camera {device}",
        video_path=video,
        bodyparts=[r["body_part"] for r in rows],
        x=stack("x_pos"),
        y=stack("y_pos"),
        likelihood=stack("likelihood"),
        image_width=int(info["width"]),
        image_height=int(info["height"]),
        fps=float(info["fps"]),
        **{name: stack(name) for name in arrays},
        **labels,
    )


def _camera_from_ensemble(key: dict, camera_name: str) -> nwb.CameraPose:
    from element_lightning_pose import ensemble

    members = sorted(r["model_name"] for r in fetch_dicts(ensemble.EnsembleSmoothingTask.Member & key, "model_name"))
    rows = fetch_dicts(ensemble.EnsembleSmoothing.BodyPartPosition & key)
    order = model.Model.bodyparts({"model_name": members[0]})
    rows = sorted(rows, key=lambda r: order.index(r["body_part"]))
    return _camera_pose(
        key,
        camera_name,
        rows,
        arrays=("posterior_var", "ensemble_var"),
        confidence_definition=EKS_LIKELIHOOD_DEFINITION,
        scorer="EKS(" + ", ".join(members) + ")",
        description=(
            f"Ensemble Kalman Smoother over models {', '.join(members)} "
            f"(ensemble {key['ensemble_id']}, element-lightning-pose)"
        ),
    )


def session_cameras(session_key: dict, *, exclude: frozenset[int] | set[int] = frozenset()) -> list[nwb.CameraPose]:
    """One CameraPose per recording (except the ``exclude`` recording ids): its ensemble if
    smoothed, else each model's pose."""
    from element_lightning_pose import ensemble

    cameras = []
    for rec in fetch_keys(model.VideoRecording & match(session_key), order_by="recording_id"):
        if int(rec["recording_id"]) in exclude:
            continue
        device = (model.VideoRecording & rec).fetch1("device")
        ensembles = fetch_keys(ensemble.EnsembleSmoothing & rec, order_by="ensemble_id")
        if ensembles:
            cameras.append(_camera_from_ensemble(ensembles[-1], _camera_name(device, rec, None)))
            continue
        poses = fetch_keys(model.PoseEstimation & rec, order_by="model_name")
        for pose in poses:
            suffix = pose["model_name"] if len(poses) > 1 else None
            cameras.append(_camera_from_pose(pose, _camera_name(device, rec, suffix)))
    return cameras


# ----------------------------------------------------------------------------------------------
# 3D pose of calibrated rigs (the multicam schema)


def _multicam():
    """The multicam schema module when it is activated, else None."""
    from element_lightning_pose import multicam

    return multicam if multicam.schema.is_activated() else None


def _view_pose(task_key: dict, camera_name: str, nwb_name: str) -> nwb.CameraPose:
    """The 2D pose a triangulation used for one camera (its PoseEstimation or EnsembleSmoothing)."""
    from element_lightning_pose import ensemble

    multicam = _multicam()
    table, key = multicam.TriangulationTask.source_key(task_key, camera_name)
    if not table & key:
        raise ValueError(
            f"triangulation {task_key}: the 2D source of camera {camera_name!r} ({table.__name__} {key}) is gone"
        )
    if table is ensemble.EnsembleSmoothing:
        return _camera_from_ensemble(key, nwb_name)
    return _camera_from_pose(key, nwb_name)


def _in_order(camera: nwb.CameraPose, bodyparts: list[str]) -> nwb.CameraPose:
    """``camera`` with its body parts (and every per-part array) in ``bodyparts`` order."""
    if list(camera.bodyparts) == list(bodyparts):
        return camera
    order = [list(camera.bodyparts).index(bp) for bp in bodyparts]
    arrays = {
        name: np.asarray(getattr(camera, name))[:, order]
        for name in ("x", "y", "likelihood", "posterior_var", "ensemble_var")
        if getattr(camera, name) is not None
    }
    return replace(camera, bodyparts=list(bodyparts), **arrays)


def _rig_pose(task_key: dict, camera_names: dict[str, str]) -> nwb.MultiCameraPose:
    """One Triangulation as an ``nwb.MultiCameraPose`` (``camera_names``: calibration -> NWB name).

    Times: each view's video starts at its own time so that rig frame ``t`` (video frame
    ``t + frame_offset`` of every view) falls at one instant in all of them, and the 3D pose is
    timed by rig frame; time 0 is the start of the video that started first.
    """
    multicam = _multicam()
    row = (multicam.Triangulation & task_key).fetch1()
    rig_key = {k: task_key[k] for k in multicam.MultiCameraRecording.primary_key}
    calibration_id = (multicam.MultiCameraRecording & rig_key).fetch1("calibration_id")
    calibration = (multicam.CameraCalibration & {"calibration_id": calibration_id}).fetch1()
    cameras = [str(name) for name in row["cameras"]]
    bodyparts = [str(bp) for bp in row["body_parts"]]
    group = multicam.CameraCalibration.camera_group({"calibration_id": calibration_id}).subset(cameras)
    offsets = {v["camera_name"]: int(v["frame_offset"]) for v in multicam.MultiCameraRecording.views(rig_key)}
    lead = max(offsets[name] for name in cameras)
    views = []
    for name in cameras:
        view = _in_order(_view_pose(task_key, name, camera_names[name]), bodyparts)
        views.append(replace(view, starting_time=(lead - offsets[name]) / float(view.fps)))
    parts = {r["body_part"]: r for r in fetch_dicts(multicam.Triangulation.BodyPartPosition3D & task_key)}
    stack = lambda fields: np.stack(  # noqa: E731
        [np.stack([np.asarray(parts[bp][f], dtype=np.float64) for f in fields], axis=-1) for bp in bodyparts], axis=1
    )
    params = (multicam.TriangulationParamSet & task_key).fetch1("params")
    method = (params or {}).get("method", "smoother")
    skeleton = (params or {}).get("skeleton")
    sources = [
        f"{name}: {table.__name__} {key.get('model_name', key.get('ensemble_id'))}"
        for name in cameras
        for table, key in [multicam.TriangulationTask.source_key(task_key, name)]
    ]
    rig_group = CameraGroup(
        tuple(replace(camera, name=camera_names[camera.name]) for camera in group.cameras), dict(group.metadata)
    )
    first = views[0]
    return nwb.MultiCameraPose(
        name=_rig_pose_name(task_key),
        rig=rig_group,
        views=views,
        bodyparts=bodyparts,
        points=stack(("x", "y", "z")),
        variance=stack(("x_var", "y_var", "z_var")),
        reprojection_error=np.stack(
            [np.asarray(parts[bp]["reprojection_error"], dtype=np.float64) for bp in bodyparts], axis=1
        ),
        cameras_used=np.stack([np.asarray(parts[bp]["cameras_used"], dtype=np.float64) for bp in bodyparts], axis=1),
        units=calibration["units"],
        reference_frame=calibration["reference_frame"],
        description=(
            f"3D pose triangulated by element-lightning-pose (method '{method}', triangulation parameter set "
            f"{task_key['triangulation_paramset_idx']}) from calibration '{calibration_id}' and the 2D pose of "
            f"{'; '.join(sources)}. Rig frame t is video frame t + frame_offset of each view "
            f"(offsets {', '.join(f'{n}: {offsets[n]}' for n in cameras)})."
        ),
        scorer=f"triangulation {method}",
        fps=float(first.fps),
        starting_time=lead / float(first.fps),
        skeleton_edges=[tuple(edge) for edge in skeleton] if skeleton else None,
    )


def _rig_pose_name(task_key: dict) -> str:
    return (
        f"rig{task_key['rig_recording_id']}_params{task_key['triangulation_paramset_idx']}"
        f"_tri{task_key['triangulation_id']}"
    )


def session_rig_poses(session_key: dict) -> tuple[list[nwb.MultiCameraPose], set[int]]:
    """Every Triangulation of the session as an ``nwb.MultiCameraPose``, and the recording ids
    of their views; nothing when the multicam schema is not active.

    Cameras keep their calibration names; when the session has several rig recordings, the
    names get ``_rig<id>`` so that each rig's cameras and videos are distinct NWB objects.
    """
    multicam = _multicam()
    if multicam is None:
        return [], set()
    session = {k: session_key[k] for k in model._linking_module.Session.primary_key}
    order = ("rig_recording_id", "triangulation_paramset_idx", "triangulation_id")
    tasks = sorted(fetch_keys(multicam.Triangulation & match(session)), key=lambda k: tuple(int(k[f]) for f in order))
    rigs = fetch_keys(multicam.MultiCameraRecording & match(session), order_by="rig_recording_id")
    poses, covered = [], set()
    for task in tasks:
        rig_id = task["rig_recording_id"]
        views = multicam.MultiCameraRecording.views({**session, "rig_recording_id": rig_id})
        names = {
            v["camera_name"]: v["camera_name"] if len(rigs) == 1 else f"{v['camera_name']}_rig{rig_id}" for v in views
        }
        poses.append(_rig_pose(task, names))
        covered |= {int(v["recording_id"]) for v in views}
    return poses, covered


def _camera_name(device: str, rec: dict, suffix: str | None) -> str:
    name = f"{device}_rec{rec['recording_id']}"
    return f"{name}_{suffix}" if suffix else name


def export_session(
    session_key: dict,
    out: str | os.PathLike | None = None,
    *,
    append_to: str | os.PathLike | None = None,
    species: str | None = None,
    timezone: str = "UTC",
    overwrite: bool = False,
    subject: dict | None = None,
    session: dict | None = None,
    dandi_layout: bool = False,
) -> Path:
    """Write (or append) a session's pose (2D, and 3D of its triangulations) to NWB; returns
    the file path.

    Args:
        session_key: restricts the upstream ``Session`` to one session.
        out: a folder (the DANDI file name is used) or a file path; default: the
            processed-data root's ``nwb/`` folder.
        append_to: an existing NWB file to add the pose to instead (its other content stays); its
            subject and session must be this one's (``subject={"subject_id": ...}`` /
            ``session={"session_id": ...}`` give the ids a file written elsewhere uses).
        species: Latin binomial when the upstream Subject has no species attribute.
        timezone: zone of the naive session datetime stored in the database.
        overwrite: replace an existing output file.
        subject, session: extra or overriding ``SubjectInfo`` / ``SessionInfo`` fields.
        dandi_layout: ``out`` is a dandiset folder: the file goes to
            ``sub-<subject>/sub-<subject>_ses-<session>_behavior+image.nwb`` in it and the source
            videos are hard-linked (or copied) into the folder named after the file, referenced
            relative to it. With ``append_to``, the videos are placed beside that file the same way.
    """
    rig_poses, covered = session_rig_poses(session_key)
    cameras = session_cameras(session_key, exclude=covered)
    if not cameras and not rig_poses:
        raise ValueError(f"session {session_key}: no PoseEstimation, EnsembleSmoothing or Triangulation to export")
    overrides = {**({"species": species} if species is not None else {}), **(subject or {})}
    subject_meta = subject_info(session_key, **overrides)
    session_meta = session_info(session_key, timezone=timezone, **(session or {}))
    if append_to is not None:  # only into this subject's and session's file
        return nwb.append_pose(
            append_to,
            cameras,
            multicam=rig_poses,
            place_videos_beside=dandi_layout,
            subject_id=subject_meta.subject_id,
            session_id=session_meta.session_id,
        )
    target = Path(out) if out is not None else paths.processed_dir(model._linking_module) / "nwb"
    if dandi_layout:
        if target.suffix == ".nwb":
            raise ValueError(f"with dandi_layout, out is the dandiset folder, not a file: {target}")
    elif target.suffix != ".nwb":
        target.mkdir(parents=True, exist_ok=True)
        target = target / nwb.dandi_filename(subject_meta.subject_id, session_meta.session_id)
    return nwb.write_nwb(
        target, session_meta, subject_meta, cameras, multicam=rig_poses, overwrite=overwrite, dandi_layout=dandi_layout
    )
