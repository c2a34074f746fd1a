"""DataJoint schema for calibrated camera rigs and 3D pose (triangulation of several cameras).

Tables
------
CameraCalibration (+ Camera)         a rig's calibration: intrinsics and world -> camera poses
CalibrationTask (+ BoardVideo)       board videos of a rig to calibrate it from
Calibration                          runs the board calibration, fills CameraCalibration
MultiCameraRecording (+ View)        which VideoRecording of a session is which camera
TriangulationParamSet                method (smoother | robust | dlt), priors, skeleton
TriangulationTask (+ PoseSource,     a rig recording x a 2D source per camera x a parameter set
  EnsembleSource)                    (foreign keys to the 2D tasks)
Triangulation (+ BodyPartPosition3D, x, y, z per frame with posterior variance and
  PoseSource, EnsembleSource)        reprojection error per camera; foreign keys to the 2D
                                     rows it was computed from

The maths is ``element_lightning_pose.engine.multicam`` (numpy, no database): this module reads
and stores. Frames: rig frame ``t`` is video frame ``t + frame_offset`` of each view (the
offset is the number of leading frames a video has before the rig's frame 0); 3D arrays are
indexed by rig frame, ``0 .. n_frames - 1``.

A triangulation depends on its 2D sources through foreign keys (one part table per source
kind, since a nullable foreign key cannot be part of a primary key): deleting a
``PoseEstimation`` or ``EnsembleSmoothing`` it was computed from (or a ``PoseEstimation`` that
smoothing read: ``ensemble.EnsembleSmoothing.Member``) deletes it too, and deleting
a ``PoseEstimationTask`` or ``EnsembleSmoothingTask`` (or the ``Model``) deletes the tasks
that name it. The cascade passes through part tables, so DataJoint refuses such a delete
unless told to include their masters: ``dj_compat.delete_cascading`` does (0.14:
``force_masters=True``; 2.x: ``part_integrity="cascade"``). 3D is never left beside changed 2D.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import datajoint as dj
import numpy as np
import pandas as pd

from element_lightning_pose import ensemble, model, paths
from element_lightning_pose.dj_compat import BLOB, FLOAT64, INT16, INT32, KeyTextChecked, fetch_dicts, fetch_keys, match
from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.inference.metrics import error_scale_px
from element_lightning_pose.engine.multicam.io import Points3D, ViewError, ViewSource, read_views, write_points3d
from element_lightning_pose.engine.multicam.params import (
    TriangulationParams,
    triangulate_views,
)
from element_lightning_pose.engine.safe_paths import check_name, inside_root
from element_lightning_pose.params import ImmutableParams

schema = dj.Schema()
_LINK = paths.LinkedSchema("multicam")

# The world frame engine.multicam.calibrate chooses (a task may describe its own instead).
DEFAULT_REFERENCE_FRAME = (
    "world frame of the calibration: camera {first}'s optical frame (origin at its centre, "
    "x right, y down, z along its optical axis)"
)


def activate(
    multicam_schema_name: str,
    *,
    create_schema: bool = True,
    create_tables: bool = True,
    linking_module: str | ModuleType | None = None,
) -> None:
    """Activate this schema; the model and ensemble schemas must be active already.

    Args:
        multicam_schema_name: schema name on the database server.
        create_schema: create the schema on the server if it does not exist yet.
        create_tables: create the tables if they do not exist yet.
        linking_module: the same linking module given to ``model.activate``.
    """
    if not model.schema.is_activated() or not ensemble.schema.is_activated():
        raise RuntimeError("multicam.activate(): activate the model and ensemble schemas first")
    _LINK.activate(
        schema, multicam_schema_name, linking_module, create_schema=create_schema, create_tables=create_tables
    )


root_dirs = _LINK.root_dirs
processed_dir = _LINK.processed_dir


class RigError(ElpError, ValueError):
    """A rig, its calibration, its views or a triangulation's sources do not fit together; the
    message names the camera, key or row at fault."""


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


def _find_file(path: str | Path) -> Path:
    """An absolute path as given, or a path relative to a root data directory."""
    path = Path(path)
    if path.is_absolute():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: file not found")
        return path
    return paths.find_full_path(root_dirs(), path)


def _number_or_none(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


# --------------------------------------------------------------------------- calibration


@schema
class CameraCalibration(KeyTextChecked, dj.Manual):
    """A calibrated camera rig: one row per calibration, one ``Camera`` part per camera.

    Attributes:
        calibration_id (varchar): unique name of the calibration.
        units (varchar): length unit of the translations and of the 3D positions, e.g. 'mm'.
        reference_frame (varchar): how the world frame is defined (free text; goes into NWB).
        calibration_description (varchar): free text.
        mean_reprojection_error (float64): px, over all cameras (null when unknown).
    """

    definition = f"""
    calibration_id                 : varchar(32)
    ---
    units                          : varchar(16)
    reference_frame                : varchar(1000)
    calibration_description = ''   : varchar(1000)
    mean_reprojection_error = null : {FLOAT64}
    """

    class Camera(KeyTextChecked, dj.Part):
        """One calibrated camera (OpenCV's pinhole model with 5 distortion coefficients).

        Attributes:
            camera_name (varchar): the camera's name in the calibration.
            image_height, image_width (int): image size in pixels.
            intrinsic_matrix (blob): (3, 3) ``K``.
            distortion (blob): (5,) ``k1 k2 p1 p2 k3``.
            rotation (blob): (3, 3) rotation matrix, world -> camera.
            translation (blob): (3,) world -> camera, in the calibration's units.
            reprojection_error (float64): px (null when unknown).
        """

        definition = f"""
        -> master
        camera_name               : varchar(32)
        ---
        image_height              : {INT32}
        image_width               : {INT32}
        intrinsic_matrix          : {BLOB}
        distortion                : {BLOB}
        rotation                  : {BLOB}
        translation               : {BLOB}
        reprojection_error = null : {FLOAT64}
        """

    @classmethod
    def insert_group(
        cls,
        calibration_id: str,
        group: Any,
        *,
        units: str,
        reference_frame: str,
        description: str = "",
        errors: list | None = None,
        source: str = "calibration",
    ) -> dict:
        """Insert an engine ``CameraGroup`` (master + one Camera row per camera); returns the key.

        ``errors``: reprojection error per camera (px), default the group's ``metadata['errors']``.
        Call inside a transaction to make it part of a larger insert (``Calibration`` does).
        """
        rows = _camera_rows(calibration_id, group, errors, source)
        known = [r["reprojection_error"] for r in rows if r["reprojection_error"] is not None]
        mean = _number_or_none(group.metadata.get("error")) if errors is None else None
        if mean is None and known:
            mean = float(np.mean(known))
        cls.insert1(
            {
                "calibration_id": calibration_id,
                "units": units,
                "reference_frame": reference_frame,
                "calibration_description": description,
                "mean_reprojection_error": mean,
            }
        )
        cls.Camera.insert(rows)
        return {"calibration_id": calibration_id}

    @classmethod
    def insert_from_file(
        cls, calibration_id: str, path: str | Path, *, units: str, reference_frame: str, description: str = ""
    ) -> dict:
        """Insert an anipose ``calibration.toml`` (absolute, or relative to a root data directory).

        The engine's reader validates it first: a missing or malformed field raises
        ``CalibrationError`` naming the file, the camera and the field, and nothing is inserted.
        """
        from element_lightning_pose.engine.multicam.cameras import read_calibration

        full = _find_file(path)
        group = read_calibration(full)
        with cls.connection.transaction:
            return cls.insert_group(
                calibration_id,
                group,
                units=units,
                reference_frame=reference_frame,
                description=description,
                source=str(full),
            )

    @classmethod
    def camera_group(cls, key: dict) -> Any:
        """The calibration as an engine ``CameraGroup``, cameras in ``camera_name`` order."""
        from element_lightning_pose.engine.multicam.cameras import Camera, CameraGroup, check_camera

        calibration = {"calibration_id": (cls & match(key)).fetch1("calibration_id")}
        rows = fetch_dicts(cls.Camera & match(calibration), order_by="camera_name")
        where = f"CameraCalibration {calibration['calibration_id']!r}"
        aliases = {"matrix": "intrinsic_matrix", "size": "image_width, image_height"}
        cameras = tuple(
            Camera(
                **check_camera(
                    str(r["camera_name"]),
                    (r["image_width"], r["image_height"]),
                    r["intrinsic_matrix"],
                    r["distortion"],
                    r["rotation"],
                    r["translation"],
                    where=where,
                    aliases=aliases,
                )
            )
            for r in rows
        )
        return CameraGroup(cameras, {"calibration_id": str(calibration["calibration_id"])})


def _camera_rows(calibration_id: str, group: Any, errors: list | None, source: str) -> list[dict]:
    from element_lightning_pose.engine.multicam.cameras import CalibrationError

    per_camera = errors if errors is not None else group.metadata.get("errors")
    if not isinstance(per_camera, (list, tuple, np.ndarray)) or len(per_camera) != len(group):
        per_camera = [None] * len(group)
    rows = []
    for camera, error in zip(group.cameras, per_camera):
        camera.check(where=f"calibration {calibration_id!r}")  # its arrays may have changed since it was made
        if camera.fisheye:
            raise CalibrationError(
                f"{source}: camera {camera.name!r} uses the fisheye model; CameraCalibration stores "
                "the pinhole model with 5 distortion coefficients"
            )
        if len(camera.name) > 32:
            raise CalibrationError(f"{source}: camera name {camera.name!r} is longer than 32 characters")
        rows.append(
            {
                "calibration_id": calibration_id,
                "camera_name": camera.name,
                "image_width": int(camera.size[0]),
                "image_height": int(camera.size[1]),
                "intrinsic_matrix": np.asarray(camera.matrix, dtype=np.float64),
                "distortion": np.asarray(camera.distortion, dtype=np.float64),
                "rotation": np.asarray(camera.rotation, dtype=np.float64),
                "translation": np.asarray(camera.translation, dtype=np.float64),
                "reprojection_error": _number_or_none(error),
            }
        )
    return rows


@schema
class CalibrationTask(KeyTextChecked, dj.Manual):
    """Board videos of a rig, to be calibrated into ``CameraCalibration`` under ``calibration_id``.

    Attributes:
        calibration_id (varchar): the calibration to create.
        board (blob): the board (engine ``Board`` fields: board_type 'charuco' | 'checkerboard',
            board_x, board_y, square_length in ``units``, marker_length, marker_bits, dict_size).
        units (varchar): unit of square_length, hence of the calibration.
        reference_frame (varchar): how the world frame is defined; empty: the first camera's
            optical frame (what the engine's calibration chooses).
        min_corners (int): a board view needs at least this many corners to be used.
        calibration_description (varchar): free text.
    """

    definition = f"""
    calibration_id                : varchar(32)
    ---
    board                         : {BLOB}
    units                         : varchar(16)
    reference_frame = ''          : varchar(1000)
    min_corners = 6               : {INT16}
    calibration_description = ''  : varchar(1000)
    """

    class BoardVideo(KeyTextChecked, dj.Part):
        """One camera's board video (frames synchronous across cameras).

        Attributes:
            camera_name (varchar): name the camera gets in the calibration.
            file_path (varchar): relative to a root data directory.
        """

        definition = """
        -> master
        camera_name : varchar(32)
        ---
        file_path   : varchar(1000)  # relative to a root data directory
        """

    @classmethod
    def create(
        cls,
        calibration_id: str,
        board: dict,
        videos: dict[str, str | Path],
        *,
        units: str,
        reference_frame: str = "",
        min_corners: int = 6,
        description: str = "",
    ) -> dict:
        """Insert a task and its board videos (paths relative to a root); returns the key.

        Checked by the engine's rules first (nothing inserted otherwise): the board
        (``BoardError`` naming the field; without ``board_type`` it is ChArUco when
        ``marker_length`` is given, a checkerboard otherwise, and stored so), ``min_corners``
        against the board, every video exists under a root, and no video is given to two cameras.
        """
        from element_lightning_pose.engine.multicam.boards import BoardError, board_from_dict, check_distinct_videos

        where = f"calibration task {calibration_id!r}"
        if not isinstance(board, Mapping):
            raise BoardError(f"{where}: board {board!r} must be a dict of board fields")
        try:
            checked = board_from_dict(board)
            min_corners = checked.check_min_corners(min_corners)
        except BoardError as exc:
            raise BoardError(f"{where}: {exc}") from None
        if len(videos) < 2:
            raise RigError(f"{where}: a rig needs at least 2 board videos, got {videos}")
        paths.key_folder_name({"calibration_id": calibration_id}, ["calibration_id"])  # it names a folder
        for name in videos:
            check_name(name, f"{where}: camera name")
        if CameraCalibration & match({"calibration_id": calibration_id}):
            raise RigError(f"calibration_id {calibration_id!r} is already in CameraCalibration")
        relative = {name: paths.relative_to_roots(root_dirs(), path) for name, path in videos.items()}
        try:
            check_distinct_videos({n: paths.find_full_path(root_dirs(), p) for n, p in relative.items()})
        except BoardError as exc:
            raise BoardError(f"{where}: {exc}") from None
        key = {"calibration_id": calibration_id}
        with cls.connection.transaction:
            cls.insert1(
                {
                    **key,
                    "board": {name: getattr(checked, name) for name in checked.__dataclass_fields__},
                    "units": units,
                    "reference_frame": reference_frame,
                    "min_corners": min_corners,
                    "calibration_description": description,
                }
            )
            cls.BoardVideo.insert({**key, "camera_name": n, "file_path": p} for n, p in relative.items())
        return key


@schema
class Calibration(dj.Computed):
    """Board calibration of a rig (``engine.multicam.calibrate``), stored in ``CameraCalibration``.

    Its make inserts the ``CameraCalibration`` row and cameras under the task's
    ``calibration_id`` in the same transaction as its own row. The calibration is also
    written as an anipose ``calibration.toml`` (for ``elp triangulate`` and anipose).

    Attributes:
        n_board_frames (int): frames where some camera found the board.
        calibration_file (varchar): the calibration.toml, relative to the processed-data root.
        calibration_time_s (float64): wall time of detection and calibration.
        calibrated_time (datetime): when it was done (UTC).
    """

    definition = f"""
    -> CalibrationTask
    ---
    n_board_frames     : {INT32}
    calibration_file   : varchar(1000)
    calibration_time_s : {FLOAT64}
    calibrated_time    : datetime
    """

    def make_fetch(self, key: dict) -> tuple:
        if CameraCalibration & key:  # inserted from a file after the task was made
            raise RigError(
                f"calibration task {key}: CameraCalibration {key['calibration_id']!r} already exists; "
                "give the task another calibration_id"
            )
        task = (CalibrationTask & key).fetch1()
        videos = fetch_dicts(CalibrationTask.BoardVideo & key, "file_path", order_by="camera_name")
        return task, [(v["camera_name"], v["file_path"]) for v in videos]

    def make_compute(self, key, task, videos) -> tuple:
        from element_lightning_pose.engine.multicam.boards import board_from_dict, detect_video
        from element_lightning_pose.engine.multicam.calibrate import calibrate
        from element_lightning_pose.engine.multicam.cameras import write_calibration

        folder = paths.key_folder_name(key, ["calibration_id"])
        out = inside_root(processed_dir(), f"lp_calibrations/{folder}/calibration.toml", f"calibration task {key}")
        start = time.perf_counter()
        board = board_from_dict(task["board"])
        detections, sizes = {}, {}
        for name, file_path in videos:
            detections[name], sizes[name], _ = detect_video(board, paths.find_full_path(root_dirs(), file_path))
        result = calibrate(board, detections, sizes, min_corners=int(task["min_corners"]))
        frames = len({d.frame for found in detections.values() for d in found})
        write_calibration(result.group, out)
        elapsed = time.perf_counter() - start
        return (
            task,
            result.group,
            [float(e) for e in result.errors],
            frames,
            paths.relative_to_roots([processed_dir()], out),
            elapsed,
        )

    def make_insert(self, key, task, group, errors, frames, calibration_file, elapsed) -> None:
        reference = task["reference_frame"] or DEFAULT_REFERENCE_FRAME.format(first=repr(group.names[0]))
        CameraCalibration.insert_group(
            key["calibration_id"],
            group,
            units=task["units"],
            reference_frame=reference,
            description=task["calibration_description"] or "board calibration (element_lightning_pose.multicam)",
            errors=errors,
            source=f"calibration task {key}",
        )
        self.insert1(
            {
                **key,
                "n_board_frames": int(frames),
                "calibration_file": calibration_file,
                "calibration_time_s": float(elapsed),
                "calibrated_time": _utcnow(),
            }
        )


# --------------------------------------------------------------------------- rig recordings


@schema
class MultiCameraRecording(KeyTextChecked, dj.Manual):
    """Synchronised recordings of one session by the cameras of a calibrated rig.

    Attributes:
        rig_recording_id (int): unique within the session.
        CameraCalibration (foreign key): the rig's calibration.
        n_frames (int): rig frames, i.e. frames every view has after its offset.
    """

    definition = f"""
    -> Session
    rig_recording_id : {INT16}
    ---
    -> CameraCalibration
    n_frames         : {INT32}
    """

    class View(KeyTextChecked, dj.Part):
        """Which ``VideoRecording`` of the session a camera of the calibration recorded.

        Attributes:
            camera_name (varchar): a camera of the master's calibration.
            recording_id (int): a VideoRecording of the same session (foreign key).
            frame_offset (int): rig frame t is video frame t + frame_offset (>= 0).
        """

        definition = f"""
        -> master
        camera_name      : varchar(32)
        ---
        -> model.VideoRecording
        frame_offset = 0 : {INT32}
        """

    @classmethod
    def insert_rig(
        cls,
        session_key: dict,
        rig_recording_id: int,
        calibration_id: str,
        views: dict[str, int | tuple[int, int]],
    ) -> dict:
        """Insert a rig recording; ``views`` maps camera name -> recording_id or (recording_id, offset).

        Checked first (``RigError`` naming what is wrong, nothing inserted): the session key has
        the session's attributes; every camera is in the calibration; each value is an integer
        recording_id or a pair of integers; no recording is given to two cameras; each recording
        exists with its ``RecordingInfo`` and the camera's image size; offsets are >= 0; without
        offsets, every view has the same number of frames.
        """
        wanted = [k for k in model.VideoRecording.primary_key if k != "recording_id"]
        lacking = [k for k in wanted if not isinstance(session_key, Mapping) or k not in session_key]
        if lacking:
            raise RigError(f"rig recording {rig_recording_id}: session key {session_key!r} lacks {lacking}")
        session = {k: session_key[k] for k in wanted}
        cal = {"calibration_id": calibration_id}
        if not CameraCalibration & match(cal):
            raise RigError(f"calibration {calibration_id!r} is not in CameraCalibration")
        cameras = {r["camera_name"]: r for r in fetch_dicts(CameraCalibration.Camera & match(cal))}
        unknown = sorted(set(views) - set(cameras))
        if unknown:
            raise RigError(
                f"rig recording {rig_recording_id} of {session}: camera(s) {unknown} are not in calibration "
                f"{calibration_id!r} (its cameras: {sorted(cameras)})"
            )
        if len(views) < 2:
            raise RigError(f"rig recording {rig_recording_id}: a rig needs at least 2 views, got {sorted(views)}")
        parsed = {name: _view_value(name, value) for name, value in views.items()}
        given_offsets = any(not isinstance(v, (int, np.integer)) for v in views.values())
        by_recording: dict[int, list[str]] = {}
        for name, (recording_id, _) in sorted(parsed.items()):
            by_recording.setdefault(recording_id, []).append(name)
        shared = {rec: names for rec, names in by_recording.items() if len(names) > 1}
        if shared:
            listed = "; ".join(f"recording {rec} is given to cameras {names}" for rec, names in shared.items())
            raise RigError(
                f"rig recording {rig_recording_id}: {listed}; each camera records its own video "
                "(one recording as several cameras has no baseline to triangulate)"
            )
        counts = {}
        for name, (recording_id, offset) in parsed.items():
            rec = {**session, "recording_id": int(recording_id)}
            if not model.VideoRecording & match(rec):
                raise RigError(f"view {name!r}: no VideoRecording {rec}")
            if not model.RecordingInfo & match(rec):
                raise RigError(f"view {name!r}: recording {rec} has no RecordingInfo (populate RecordingInfo first)")
            n, width, height = (model.RecordingInfo & match(rec)).fetch1("n_frames", "width", "height")
            camera = cameras[name]
            if (int(width), int(height)) != (camera["image_width"], camera["image_height"]):
                raise RigError(
                    f"view {name!r}: recording {recording_id} is {width}x{height} px but camera {name!r} of "
                    f"calibration {calibration_id!r} is {camera['image_width']}x{camera['image_height']}"
                )
            if int(offset) < 0:
                raise RigError(f"view {name!r}: frame_offset {offset} is negative (leading video frames to skip)")
            counts[name] = (int(n), int(offset))
        lengths = {name: n - offset for name, (n, offset) in counts.items()}
        if not given_offsets and len(set(lengths.values())) > 1:
            raise RigError(
                f"rig recording {rig_recording_id}: the views have different frame counts "
                f"{dict(sorted(lengths.items()))} and no frame offsets; give (recording_id, frame_offset) "
                "per view (rig frame t = video frame t + frame_offset)"
            )
        n_frames = min(lengths.values())
        if n_frames <= 0:
            raise RigError(
                f"rig recording {rig_recording_id}: no frame is common to all views after the offsets "
                f"(frames after offset: {dict(sorted(lengths.items()))})"
            )
        key = {**session, "rig_recording_id": rig_recording_id}
        with cls.connection.transaction:
            cls.insert1({**key, **cal, "n_frames": n_frames})
            cls.View.insert(
                {**key, "camera_name": name, "recording_id": int(rec_id), "frame_offset": int(offset)}
                for name, (rec_id, offset) in parsed.items()
            )
        return key

    @classmethod
    def views(cls, key: dict) -> list[dict]:
        """The View rows of a rig recording, in ``camera_name`` order (the calibration's)."""
        return fetch_dicts(cls.View & match(key), order_by="camera_name")


def _integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _view_value(name: str, value: Any) -> tuple[int, int]:
    """A view of ``insert_rig``: a recording_id, or (recording_id, frame_offset), integers only
    (``True`` or ``1.0`` is not taken as recording 1)."""
    if _integer(value):
        return int(value), 0
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(_integer(v) for v in value):
        return int(value[0]), int(value[1])
    raise RigError(
        f"view {name!r}: {value!r} is not a recording_id (an integer) or (recording_id, frame_offset) (two integers)"
    )


# --------------------------------------------------------------------------- triangulation


def validate_triangulation_params(params: dict) -> dict:
    """Check triangulation parameters (``engine.multicam.params.TriangulationParams``);
    returns them with defaults filled in. The error names every key at fault."""
    return TriangulationParams.from_dict(params, source="TriangulationParamSet").to_dict()


@schema
class TriangulationParamSet(ImmutableParams, dj.Lookup):
    """How 2D predictions become 3D.

    Attributes:
        triangulation_paramset_idx (int): unique id.
        paramset_desc (varchar): description.
        param_set_hash (char): hash of the canonical parameters.
        params (blob): method ('smoother' | 'robust' | 'dlt'), min_likelihood, skeleton (body-part
            name pairs of the smoother's limb-length prior), bone_lengths, and per-method options
            (smoother: nu, floor_px, iterations, q, limb_sd, limb_iterations, min_weight; robust:
            sigma_px, nu, iterations, min_weight; dlt: sigma_px). Validated at insert by
            ``engine.multicam.params.TriangulationParams``; unknown keys are refused.
            ``elp triangulate`` takes the same parameters (``--method``, ``--set KEY=VALUE``).
    """

    definition = f"""
    triangulation_paramset_idx : {INT16}
    ---
    paramset_desc              : varchar(1000)
    param_set_hash             : char(32)  # md5 of the canonical params
    params                     : {BLOB}
    unique index (param_set_hash)
    """
    params_example = "{'method': 'smoother'}"

    @classmethod
    def canonical_params(cls, params: Mapping[str, Any]) -> dict:
        """``params`` checked by :func:`validate_triangulation_params`, defaults filled in."""
        return validate_triangulation_params(dict(params))

    @classmethod
    def insert_new_params(cls, paramset_desc: str, params: dict, triangulation_paramset_idx: int | None = None) -> int:
        """Validate and insert; returns the id of the new or identical existing set. A
        ``triangulation_paramset_idx`` holding other parameters raises ``params.ParamSetConflictError``
        (:meth:`params.ImmutableParams.insert_canonical`). ``params`` that are not a mapping
        (a method name, None) raise ``params.ParamSetTypeError``."""
        return cls.insert_canonical(paramset_desc, params, triangulation_paramset_idx)


SOURCE_KINDS = ("pose", "ensemble")  # TriangulationTask.create's names of the 2D source tables


@schema
class TriangulationTask(dj.Manual):
    """3D pose of a rig recording: one 2D source per camera, and a parameter set.

    The sources are foreign keys (one part table per kind): ``PoseSource`` names a
    ``PoseEstimationTask``, ``EnsembleSource`` an ``EnsembleSmoothingTask``, on the view's
    recording. Cameras of the rig without a source are not used (``create(unused_cameras=...)``).

    Attributes:
        triangulation_id (int): unique within the rig recording and parameter set.
        triangulation_description (varchar): free text.
    """

    definition = f"""
    -> MultiCameraRecording
    -> TriangulationParamSet
    triangulation_id : {INT16}
    ---
    triangulation_description = '' : varchar(1000)
    """

    class PoseSource(dj.Part):
        """A camera whose 2D pose is a model's ``PoseEstimation`` on the view's recording."""

        definition = """
        -> master
        -> MultiCameraRecording.View
        ---
        -> model.PoseEstimationTask
        """

    class EnsembleSource(dj.Part):
        """A camera whose 2D pose is an ``EnsembleSmoothing`` of the view's recording."""

        definition = """
        -> master
        -> MultiCameraRecording.View
        ---
        -> ensemble.EnsembleSmoothingTask
        """

    @classmethod
    def create(
        cls,
        rig_key: dict,
        triangulation_paramset_idx: int,
        sources: Mapping[str, tuple[str, str | int]] | str,
        *,
        triangulation_id: int = 1,
        description: str = "",
        unused_cameras: list[str] | tuple[str, ...] = (),
    ) -> dict:
        """Insert a task; ``sources`` maps each camera to ('pose', model_name) or ('ensemble',
        ensemble_id), or is one model name for every camera. Returns the task key.

        ``unused_cameras``: views of the rig to leave out (a camera that failed, or that no
        model tracks); the others, at least two, are triangulated.

        Checked first (``RigError`` naming the camera, nothing inserted): every view has a
        source or is named unused, every source names a view; each source is a (kind, name)
        pair; the PoseEstimationTask / EnsembleSmoothingTask exists on the view's recording.
        """
        rig = {k: rig_key[k] for k in MultiCameraRecording.primary_key}
        views = {v["camera_name"]: v for v in MultiCameraRecording.views(rig)}
        if not views:
            raise RigError(f"no MultiCameraRecording {rig}")
        if isinstance(unused_cameras, str) or not all(isinstance(n, str) for n in unused_cameras):
            raise RigError(f"triangulation task of {rig}: unused_cameras must be a list of camera names")
        unused = sorted(set(unused_cameras))
        if set(unused) - set(views):
            raise RigError(
                f"triangulation task of {rig}: unused_cameras {sorted(set(unused) - set(views))} are not views "
                f"of the rig recording (its views: {sorted(views)})"
            )
        if isinstance(sources, str):
            sources = {name: ("pose", sources) for name in views if name not in unused}
        if not isinstance(sources, Mapping):
            raise RigError(
                f"triangulation task of {rig}: sources must be a model name or a mapping camera -> "
                f"('pose', model_name) | ('ensemble', ensemble_id), got {type(sources).__name__} {sources!r}"
            )
        wanted = set(views) - set(unused)
        if set(sources) != wanted:
            raise RigError(
                f"triangulation task of {rig}: sources for {sorted(sources)} but the rig's views are {sorted(views)} "
                f"(missing: {sorted(wanted - set(sources))}, not views: {sorted(set(sources) - set(views))}"
                + (f", unused: {unused}" if unused else "")
                + "); give a source per view, or name the views to leave out in unused_cameras"
            )
        if len(wanted) < 2:
            raise RigError(
                f"triangulation task of {rig}: {sorted(wanted)} leaves fewer than two cameras to triangulate with"
            )
        key = {**rig, "triangulation_paramset_idx": triangulation_paramset_idx, "triangulation_id": triangulation_id}
        rows: dict[str, list[dict]] = {kind: [] for kind in SOURCE_KINDS}
        for name, spec in sorted(sources.items()):
            kind, ident = _source_spec(name, spec)
            rec = {**{k: rig[k] for k in rig if k != "rig_recording_id"}, "recording_id": views[name]["recording_id"]}
            task_table = model.PoseEstimationTask if kind == "pose" else ensemble.EnsembleSmoothingTask
            task_key = {**rec, ("model_name" if kind == "pose" else "ensemble_id"): ident}
            if not task_table & match(task_key):
                raise RigError(f"camera {name!r}: no {task_table.__name__} {task_key}")
            rows[kind].append({**key, **task_key, "camera_name": name})
        with cls.connection.transaction:
            cls.insert1({**key, "triangulation_description": description})
            cls.PoseSource.insert(rows["pose"])
            cls.EnsembleSource.insert(rows["ensemble"])
        return key

    @classmethod
    def sources(cls, task_key: dict) -> list[tuple[str, Any, dict]]:
        """The 2D source of each camera of a task, in ``camera_name`` order: (camera,
        ``model.PoseEstimation`` or ``ensemble.EnsembleSmoothing``, its key)."""
        task = {k: task_key[k] for k in cls.primary_key}
        found = []
        for part, table in ((cls.PoseSource, model.PoseEstimation), (cls.EnsembleSource, ensemble.EnsembleSmoothing)):
            for row in fetch_dicts(part & match(task)):
                found.append((str(row["camera_name"]), table, {k: row[k] for k in table.primary_key}))
        return sorted(found, key=lambda source: source[0])

    @classmethod
    def source_key(cls, task_key: dict, camera_name: str) -> tuple[Any, dict]:
        """The 2D source of one camera of a task: (``model.PoseEstimation`` or
        ``ensemble.EnsembleSmoothing``, its key)."""
        for name, table, key in cls.sources(task_key):
            if name == camera_name:
                return table, key
        raise RigError(f"triangulation task {task_key}: camera {camera_name!r} has no source")

    @classmethod
    def unused_cameras(cls, task_key: dict) -> list[str]:
        """Views of the task's rig recording that it does not triangulate with."""
        used = {name for name, _, _ in cls.sources(task_key)}
        rig = {k: task_key[k] for k in MultiCameraRecording.primary_key}
        return [str(v["camera_name"]) for v in MultiCameraRecording.views(rig) if v["camera_name"] not in used]

    @classmethod
    def missing_sources(cls, task_key: dict) -> dict[str, str]:
        """Cameras whose source is not populated yet: {camera: 'Table {key}'}."""
        return {name: f"{table.__name__} {key}" for name, table, key in cls.sources(task_key) if not table & key}


def _evaluation_rows(task_key: dict) -> dict[str, list[dict]]:
    """``ModelEvaluation.BodyPart`` rows of the model(s) behind each camera's 2D source (an
    ensemble's: its members'), {camera: rows}; a camera whose models are not evaluated is an
    error naming them."""
    rows, missing = {}, []
    for name, table, source_key in TriangulationTask.sources(task_key):
        if table is model.PoseEstimation:
            names = [source_key["model_name"]]
        else:
            names = [m["model_name"] for m in fetch_dicts(ensemble.EnsembleSmoothing.Member & source_key, "model_name")]
        found = fetch_dicts(
            model.ModelEvaluation.BodyPart & [{"model_name": m} for m in names],
            "body_part",
            "split",
            "n_frames",
            "mean_px",
        )
        if not found:
            missing.append(f"camera {name!r}: model(s) {names}")
        rows[name] = found
    if missing:
        raise RigError(
            f"triangulation {task_key}: smoother.error_px='evaluation' needs ModelEvaluation of the 2D sources' "
            f"models ({'; '.join(missing)}); populate model.ModelEvaluation first"
        )
    return rows


def _evaluation_scales(key: dict, rows: dict[str, list[dict]], cameras: list[str], bodyparts: list[str]) -> np.ndarray:
    """(C, K) 2D error scale (px) of each camera's model(s) per body part (``error_scale_px``)."""
    out = np.empty((len(cameras), len(bodyparts)))
    for c, camera in enumerate(cameras):
        scales = error_scale_px(pd.DataFrame(rows[camera], columns=["body_part", "split", "n_frames", "mean_px"]))
        missing = [bp for bp in bodyparts if bp not in scales]
        if missing:
            raise RigError(
                f"triangulation {key}: smoother.error_px='evaluation': camera {camera!r}'s model evaluation has no "
                f"labeled frame of body part(s) {missing}"
            )
        out[c] = [scales[bp] for bp in bodyparts]
    return out


def _source_spec(camera: str, spec: Any) -> tuple[str, str | int]:
    """A task's source of one camera, checked: ('pose', model name) or ('ensemble', ensemble id)."""
    usage = "('pose', model_name) or ('ensemble', ensemble_id)"
    if isinstance(spec, str) or not isinstance(spec, (tuple, list)) or len(spec) != 2:
        raise RigError(f"camera {camera!r}: source {spec!r} is not {usage}")
    kind, ident = spec
    if kind == "pose" and isinstance(ident, str) and ident:
        return kind, ident
    if kind == "ensemble" and isinstance(ident, (int, np.integer)) and not isinstance(ident, bool):
        return kind, int(ident)
    if kind not in SOURCE_KINDS:
        raise RigError(f"camera {camera!r}: source kind {kind!r} must be 'pose' or 'ensemble'")
    raise RigError(f"camera {camera!r}: source {spec!r} is not {usage}")


@schema
class Triangulation(dj.Computed):
    """3D pose of a rig recording from its cameras' 2D pose (``engine.multicam``).

    A task runs once all its 2D sources are populated (``elp worker`` populates the 2D tables
    first, and waits for sources that other workers compute); ``Triangulation.populate()``
    called without ``suppress_errors`` refuses, naming the cameras and the missing rows, while
    a task it would run has sources missing. The 3D points are also
    written as a 3D points CSV (``engine.multicam.io``) under the processed-data root. The
    part tables ``PoseSource`` / ``EnsembleSource`` are foreign keys to the 2D rows read:
    deleting one of those deletes this row (see the module's docstring).

    Attributes:
        n_frames (int): rig frames.
        cameras (blob): camera names, in the order of the reprojection errors' columns.
        body_parts (blob): body-part names, in the sources' order.
        points_file (varchar): 3D points CSV, relative to the processed-data root.
        triangulation_time_s (float64): wall time of the method.
        mean_reprojection_error (float64): px, mean over frames, body parts and the views used.
        triangulated_time (datetime): when it was done (UTC).
    """

    definition = f"""
    -> TriangulationTask
    ---
    n_frames                       : {INT32}
    cameras                        : {BLOB}
    body_parts                     : {BLOB}
    points_file                    : varchar(1000)
    triangulation_time_s           : {FLOAT64}
    mean_reprojection_error = null : {FLOAT64}
    triangulated_time              : datetime
    """

    class BodyPartPosition3D(dj.Part):
        """Trajectory of one body part in the calibration's world frame and units.

        Attributes:
            x, y, z (blob): (n_frames,) positions, NaN where not triangulated.
            x_var, y_var, z_var (blob): (n_frames,) posterior variance (units^2).
            reprojection_error (blob): (n_frames, n_cameras) px per camera, columns in the
                master's ``cameras`` order (NaN where the camera has no prediction).
            cameras_used (blob): (n_frames,) number of views that contributed.
        """

        definition = f"""
        -> master
        -> model.BodyPart
        ---
        x                  : {BLOB}
        y                  : {BLOB}
        z                  : {BLOB}
        x_var              : {BLOB}
        y_var              : {BLOB}
        z_var              : {BLOB}
        reprojection_error : {BLOB}
        cameras_used       : {BLOB}
        """

    class PoseSource(dj.Part):
        """The ``PoseEstimation`` a camera's 2D pose was read from."""

        definition = """
        -> master
        -> MultiCameraRecording.View
        ---
        -> model.PoseEstimation
        """

    class EnsembleSource(dj.Part):
        """The ``EnsembleSmoothing`` a camera's 2D pose was read from."""

        definition = """
        -> master
        -> MultiCameraRecording.View
        ---
        -> ensemble.EnsembleSmoothing
        """

    @property
    def key_source(self):
        # Tasks whose every 2D source is populated: a worker waits for the others (as
        # EnsembleSmoothing waits for its members) instead of recording an error while a
        # parallel worker is still computing a source.
        task = TriangulationTask
        with_sources = task & [task.PoseSource.proj(), task.EnsembleSource.proj()]
        done = fetch_keys(with_sources & self.proj())
        ready = [key for key in fetch_keys(with_sources - self.proj()) if not task.missing_sources(key)]
        return with_sources & (done + ready)

    def populate(self, *restrictions, **kwargs):
        """``populate`` that, unless ``suppress_errors``, first refuses tasks (matching the
        restrictions) whose 2D sources are not all populated, naming each camera and missing row;
        nothing is populated then. With ``suppress_errors`` (``elp worker``) they wait."""
        if not kwargs.get("suppress_errors"):
            task = TriangulationTask
            with_sources = task & [task.PoseSource.proj(), task.EnsembleSource.proj()]
            waiting = (with_sources & dj.AndList(restrictions)) - self.proj()
            problems = []
            for key in fetch_keys(waiting):
                missing = TriangulationTask.missing_sources(key)
                if missing:
                    listed = "; ".join(f"camera {name!r}: {what}" for name, what in missing.items())
                    problems.append(f"triangulation {key}: 2D source(s) not populated yet ({listed})")
            if problems:
                raise RigError("; ".join(problems) + "; populate them first")
        return super().populate(*restrictions, **kwargs)

    def make_fetch(self, key: dict) -> tuple:
        missing = TriangulationTask.missing_sources(key)
        if missing:
            listed = "; ".join(f"camera {name!r}: {what}" for name, what in missing.items())
            raise RigError(f"triangulation {key}: 2D source(s) not populated yet ({listed}); populate them first")
        rig = {k: key[k] for k in MultiCameraRecording.primary_key}
        calibration_id, n_frames = (MultiCameraRecording & rig).fetch1("calibration_id", "n_frames")
        offsets = {v["camera_name"]: int(v["frame_offset"]) for v in MultiCameraRecording.views(rig)}
        sources = []
        for name, table, source_key in TriangulationTask.sources(key):
            column = "predictions_file" if table is model.PoseEstimation else "output_file"
            file, frames = (table & source_key).fetch1(column, "n_frames")
            sources.append((name, table.__name__, source_key, str(file), int(frames), offsets[name]))
        params = (TriangulationParamSet & key).fetch1("params")
        if (params.get("smoother") or {}).get("error_px") == "evaluation":
            params = {**params, "_evaluation": _evaluation_rows(key)}
        return calibration_id, int(n_frames), sources, params

    def make_compute(self, key, calibration_id, n_frames, sources, params) -> tuple:
        rig = paths.key_folder_name(key, MultiCameraRecording.primary_key)
        file_name = f"triangulation{key['triangulation_paramset_idx']}_{key['triangulation_id']}.csv"
        out = inside_root(processed_dir(), f"lp_triangulations/{rig}/{file_name}", f"triangulation {key}")
        params = dict(params)
        evaluation = params.pop("_evaluation", None)
        options = TriangulationParams.from_dict(params, source=f"TriangulationParamSet of triangulation {key}")
        group = CameraCalibration.camera_group({"calibration_id": calibration_id}).subset([s[0] for s in sources])
        views = [
            ViewSource(name, (processed_dir() / file,), offset, frames, f"{table_name} {source_key}")
            for name, table_name, source_key, file, frames, offset in sources
        ]
        try:
            read = read_views(
                views,
                n_frames=n_frames,
                min_likelihood=options.min_likelihood,
                image_sizes={camera.name: camera.size for camera in group.cameras},
                context=f"triangulation {key}: ",
            )
        except ViewError as exc:
            raise RigError(str(exc)) from None
        scales = None if evaluation is None else _evaluation_scales(key, evaluation, group.names, read.bodyparts)
        start = time.perf_counter()
        result = triangulate_views(
            group, read.pixels, read.likelihood, read.variance, read.bodyparts, options, evaluation_error_px=scales
        )
        elapsed = time.perf_counter() - start
        table = Points3D(
            result.points,
            result.variance,
            result.mean_reprojection_error,
            result.n_views.astype(float),
            list(read.bodyparts),
            list(range(n_frames)),
        )
        write_points3d(out, table)
        inputs = [(name, table_name, source_key) for name, table_name, source_key, *_ in sources]
        return group.names, read.bodyparts, result, paths.relative_to_roots([processed_dir()], out), elapsed, inputs

    def make_insert(self, key, cameras, bodyparts, result, points_file, elapsed, inputs) -> None:
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(result.mean_reprojection_error)
            mean = float(np.mean(result.mean_reprojection_error[finite])) if finite.any() else None
        self.insert1(
            {
                **key,
                "n_frames": int(result.points.shape[0]),
                "cameras": list(cameras),
                "body_parts": list(bodyparts),
                "points_file": points_file,
                "triangulation_time_s": float(elapsed),
                "mean_reprojection_error": mean,
                "triangulated_time": _utcnow(),
            }
        )
        self.BodyPartPosition3D.insert(
            {
                **key,
                "body_part": bp,
                "x": result.points[:, k, 0].astype(np.float64),
                "y": result.points[:, k, 1].astype(np.float64),
                "z": result.points[:, k, 2].astype(np.float64),
                "x_var": result.variance[:, k, 0].astype(np.float64),
                "y_var": result.variance[:, k, 1].astype(np.float64),
                "z_var": result.variance[:, k, 2].astype(np.float64),
                "reprojection_error": np.ascontiguousarray(result.reprojection_error[:, :, k].T, dtype=np.float64),
                "cameras_used": result.n_views[:, k].astype(np.int64),
            }
            for k, bp in enumerate(bodyparts)
        )
        for name, table_name, source_key in inputs:
            part = self.PoseSource if table_name == model.PoseEstimation.__name__ else self.EnsembleSource
            part.insert1({**key, **source_key, "camera_name": name})

    @classmethod
    def get_trajectory(cls, key: dict, body_parts: list[str] | str = "all"):
        """The 3D pose of one triangulation as a DataFrame.

        Columns are (bodypart, coord) with coords x, y, z, x_var, y_var, z_var, n_cameras; the
        index is the rig frame.
        """
        import pandas as pd

        keys = fetch_keys(cls & match(key))
        if len(keys) != 1:
            raise ValueError(f"get_trajectory: {len(keys)} triangulations match {key}; restrict to one")
        key = keys[0]
        order = list((cls & key).fetch1("body_parts"))
        wanted = order if body_parts == "all" else [bp for bp in order if bp in body_parts]
        rows = {r["body_part"]: r for r in fetch_dicts(cls.BodyPartPosition3D & key)}
        coords = ("x", "y", "z", "x_var", "y_var", "z_var")
        data = {}
        for bp in wanted:
            for coord in coords:
                data[(bp, coord)] = np.asarray(rows[bp][coord], dtype=float)
            data[(bp, "n_cameras")] = np.asarray(rows[bp]["cameras_used"], dtype=np.int64)
        frame = pd.DataFrame(data)
        frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["bodyparts", "coords"])
        frame.index.name = "frame"
        return frame
