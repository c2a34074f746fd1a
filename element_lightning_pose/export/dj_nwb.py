"""Export a session's pose from the database to NWB (the DataJoint side of ``export.nwb``).

``export_session(session_key, out_dir)`` gathers, for every recording of the session, the
ensemble-smoothed pose when an ``EnsembleSmoothing`` exists and otherwise each model's
``PoseEstimation``, plus subject and session metadata from the upstream tables, and writes one
DANDI-named file (``sub-<subject>_ses-<session>_behavior+image.nwb``) — or appends to an
existing NWB file that already holds, say, the session's ephys.
"""

from __future__ import annotations

import os
from datetime import date, datetime
from datetime import timezone as dt_timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from .. import model, paths
from ..dj_compat import fetch_dicts, fetch_keys
from . import nwb

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
    rows = fetch_dicts(table & key)
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
    from .. import ensemble

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


def session_cameras(session_key: dict) -> list[nwb.CameraPose]:
    """One CameraPose per recording: its ensemble if smoothed, else each model's pose."""
    from .. import ensemble

    cameras = []
    for rec in fetch_keys(model.VideoRecording & session_key, order_by="recording_id"):
        device = (model.VideoRecording & rec).fetch1("device")
        ensembles = fetch_keys(ensemble.EnsembleSmoothing & rec, order_by="ensemble_id")
        if ensembles:
            cameras.append(_camera_from_ensemble(ensembles[-1], _camera_name(device, rec, None)))
            continue
        poses = fetch_keys(model.PoseEstimation & rec, order_by="model_name")
        for pose in poses:
            suffix = pose["model_name"] if len(poses) > 1 else None
            cameras.append(_camera_from_pose(pose, _camera_name(device, rec, suffix)))
    if not cameras:
        raise ValueError(f"session {session_key}: no PoseEstimation or EnsembleSmoothing to export")
    return cameras


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
) -> Path:
    """Write (or append) a session's pose to NWB; returns the file path.

    Args:
        session_key: restricts the upstream ``Session`` to one session.
        out: a folder (the DANDI file name is used) or a file path; default: the
            processed-data root's ``nwb/`` folder.
        append_to: an existing NWB file to add the pose to instead (its other content stays).
        species: Latin binomial when the upstream Subject has no species attribute.
        timezone: zone of the naive session datetime stored in the database.
        overwrite: replace an existing output file.
        subject, session: extra or overriding ``SubjectInfo`` / ``SessionInfo`` fields.
    """
    cameras = session_cameras(session_key)
    if append_to is not None:
        return nwb.append_pose(append_to, cameras)
    overrides = {**({"species": species} if species is not None else {}), **(subject or {})}
    subject_meta = subject_info(session_key, **overrides)
    session_meta = session_info(session_key, timezone=timezone, **(session or {}))
    target = Path(out) if out is not None else paths.processed_dir(model._linking_module) / "nwb"
    if target.suffix != ".nwb":
        target.mkdir(parents=True, exist_ok=True)
        target = target / nwb.dandi_filename(subject_meta.subject_id, session_meta.session_id)
    return nwb.write_nwb(target, session_meta, subject_meta, cameras, overwrite=overwrite)
