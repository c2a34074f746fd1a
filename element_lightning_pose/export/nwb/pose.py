"""Pose estimates to NWB (pynwb, ndx-pose 0.4), ready for DANDI; plain Python, no DataJoint.

Callers describe a session, its subject and one :class:`CameraPose` per camera view with plain
dataclasses; this module turns them into NWB objects:

* processing module ``behavior`` holding a ``Skeletons`` container (one ``Skeleton`` per camera),
  one ``PoseEstimation`` per camera with one ``PoseEstimationSeries`` per body part, and, for
  ensemble / EKS results, the posterior and ensemble variances as ``TimeSeries``;
* one ``Device`` per camera (reused when the file already has one of that name);
* one external-file ``ImageSeries`` per camera in ``acquisition`` (the source video), linked from
  its ``PoseEstimation``.

All series of one camera share a single timestamps dataset (the first body part's series owns
it, the others link to it) or a rate and starting time. Timestamps that are regular to 1 ns are
stored as rate + starting time because DANDI's inspector flags regular timestamps.

DANDI's requirements (subject id, Latin-binomial species, sex in M/F/U/O, ISO-8601 age or a date
of birth, a timezone-aware session start) are checked up front, so bad metadata fails with a
``ValueError`` naming the field instead of producing a file that DANDI rejects. Files are
written to a temporary file beside the target and renamed, so a failure never leaves a
half-written file behind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ndx_pose import (
    PoseEstimation,
    PoseEstimationSeries,
    Skeleton,
    Skeletons,
)
from pynwb import NWBFile, ProcessingModule, TimeSeries
from pynwb.device import Device
from pynwb.image import ImageSeries

from element_lightning_pose.engine.types import PathLike
from element_lightning_pose.export.nwb.inputs import (
    BEHAVIOR_MODULE,
    OBJECT_NAME,
    REFERENCE_FRAME,
    SKELETONS_NAME,
    CameraPose,
    NwbError,
    camera_object_names,
)

# ----------------------------------------------------------------------------------------------
# Inputs


# ----------------------------------------------------------------------------------------------
# Metadata checks (DANDI)


# ----------------------------------------------------------------------------------------------
# Pose checks


def float_array(values, name: str, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != shape:
        raise NwbError(f"{name} has shape {array.shape}, expected {shape}")
    return array


def _check_names(camera: CameraPose) -> None:
    where = f"CameraPose {camera.camera_name!r}"
    if not isinstance(camera.camera_name, str) or not OBJECT_NAME.match(camera.camera_name):
        raise NwbError(
            f"camera_name {camera.camera_name!r} must start with a letter or digit and hold only "
            "letters, digits, '_', '-', '.', spaces"
        )
    if not camera.bodyparts:
        raise NwbError(f"{where}: bodyparts is empty")
    for bodypart in camera.bodyparts:
        if not isinstance(bodypart, str) or not OBJECT_NAME.match(bodypart):
            raise NwbError(f"{where}: body part name {bodypart!r} is not a valid object name")
    duplicates = sorted({b for b in camera.bodyparts if camera.bodyparts.count(b) > 1})
    if duplicates:
        raise NwbError(f"{where}: duplicate body parts {duplicates}")
    for field in ("video_path", "scorer", "confidence_definition", "description"):
        value = getattr(camera, field)
        value = os.fspath(value) if isinstance(value, os.PathLike) else value
        if not isinstance(value, str) or not value.strip():
            raise NwbError(f"{where}: {field} must be a non-empty string")


def _check_arrays(camera: CameraPose) -> None:
    where = f"CameraPose {camera.camera_name!r}"
    x = np.asarray(camera.x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] != len(camera.bodyparts):
        raise NwbError(
            f"{where}: x has shape {x.shape}, expected (T>0, {len(camera.bodyparts)}) for the listed body parts"
        )
    n_frames, n_parts = x.shape
    float_array(camera.y, f"{where}: y", (n_frames, n_parts))
    likelihood = float_array(camera.likelihood, f"{where}: likelihood", (n_frames, n_parts))
    finite = likelihood[np.isfinite(likelihood)]
    if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
        raise NwbError(f"{where}: likelihood must lie in [0, 1], got [{finite.min()}, {finite.max()}]")
    for field in ("posterior_var", "ensemble_var"):
        value = getattr(camera, field)
        if value is not None:
            variance = float_array(value, f"{where}: {field}", (n_frames, n_parts, 2))
            if np.any(variance[np.isfinite(variance)] < 0):
                raise NwbError(f"{where}: {field} holds negative variances")
    for field in ("image_width", "image_height"):
        value = getattr(camera, field)
        if not isinstance(value, (int, np.integer)) or value <= 0:
            raise NwbError(f"{where}: {field} must be a positive integer, got {value!r}")


def edges_array(skeleton_edges: Sequence[tuple[int, int]] | None, n_parts: int, where: str) -> np.ndarray:
    """Edges as the (E, 2) uint8 array ndx-pose stores; empty (0, 2) when none are given."""
    if skeleton_edges is None or len(skeleton_edges) == 0:
        return np.zeros((0, 2), dtype=np.uint8)
    edges = np.asarray(skeleton_edges)
    if edges.ndim != 2 or edges.shape[1] != 2 or not np.issubdtype(edges.dtype, np.integer):
        raise NwbError(f"{where}: skeleton_edges must be integer pairs, got {skeleton_edges!r}")
    if edges.min() < 0 or edges.max() >= n_parts:
        raise NwbError(f"{where}: skeleton_edges index outside 0..{n_parts - 1}")
    if np.any(edges[:, 0] == edges[:, 1]):
        raise NwbError(f"{where}: skeleton_edges joins a body part to itself")
    if n_parts > 256:
        raise NwbError(f"{where}: ndx-pose stores edge indices as uint8; {n_parts} body parts is too many")
    return edges.astype(np.uint8)


def _timing(camera: CameraPose, n_frames: int) -> dict:
    """Keyword arguments giving a TimeSeries its times: timestamps, or rate and starting time."""
    return series_timing(
        f"CameraPose {camera.camera_name!r}", camera.timestamps, camera.fps, camera.starting_time, n_frames
    )


def series_timing(
    where: str, timestamps: np.ndarray | None, fps: float | None, starting_time: float, n_frames: int
) -> dict:
    if timestamps is None:
        if fps is None or not np.isfinite(fps) or fps <= 0:
            raise NwbError(f"{where}: fps must be a positive number when timestamps is None")
        if not np.isfinite(starting_time):
            raise NwbError(f"{where}: starting_time must be finite")
        return {"rate": float(fps), "starting_time": float(starting_time)}
    timestamps = np.asarray(timestamps, dtype=np.float64)
    if timestamps.shape != (n_frames,):
        raise NwbError(f"{where}: timestamps has shape {timestamps.shape}, expected ({n_frames},)")
    if not np.all(np.isfinite(timestamps)):
        raise NwbError(f"{where}: timestamps hold NaN or infinite values")
    if n_frames > 1 and np.any(np.diff(timestamps) <= 0):
        raise NwbError(f"{where}: timestamps must be strictly increasing")
    # DANDI's inspector flags timestamps whose steps agree to 9 decimals: store a rate instead.
    if n_frames > 2 and np.unique(np.diff(timestamps).round(9)).size == 1:
        step = (timestamps[-1] - timestamps[0]) / (n_frames - 1)
        rate = float(fps) if fps and abs(1.0 / fps - step) < 1e-9 else 1.0 / step
        return {"rate": rate, "starting_time": float(timestamps[0])}
    return {"timestamps": timestamps}


def validate_camera(camera: CameraPose) -> None:
    """Raise ``ValueError`` naming the camera and field at fault."""
    _check_names(camera)
    _check_arrays(camera)
    edges_array(camera.skeleton_edges, len(camera.bodyparts), f"CameraPose {camera.camera_name!r}")
    _timing(camera, np.asarray(camera.x).shape[0])


# ----------------------------------------------------------------------------------------------
# Building the pose objects


def behavior_module(nwbfile: NWBFile) -> ProcessingModule:
    if BEHAVIOR_MODULE in nwbfile.processing:
        return nwbfile.processing[BEHAVIOR_MODULE]
    return nwbfile.create_processing_module(
        name=BEHAVIOR_MODULE, description="Processed behavioral data: pose estimates from video."
    )


def _existing_skeleton(nwbfile: NWBFile, name: str) -> Skeleton | None:
    module = nwbfile.processing.get(BEHAVIOR_MODULE)
    skeletons = module.data_interfaces.get(SKELETONS_NAME) if module is not None else None
    if skeletons is None:
        return None
    if not isinstance(skeletons, Skeletons):
        raise NwbError(f"processing/{BEHAVIOR_MODULE}/{SKELETONS_NAME} exists and is not Skeletons")
    return skeletons.skeletons.get(name)


def check_skeleton_fits(nwbfile: NWBFile, name: str, bodyparts: Sequence[str], skeleton_edges) -> None:
    """An existing Skeleton of this name is reused only when it has these nodes (and these
    edges, unless ``skeleton_edges`` is None, which accepts the stored ones)."""
    existing = _existing_skeleton(nwbfile, name)
    if existing is None:
        return
    same_nodes = [str(node) for node in existing.nodes[:]] == list(bodyparts)
    same_edges = True
    if skeleton_edges is not None:
        edges = edges_array(skeleton_edges, len(bodyparts), f"Skeleton {name!r}")
        stored = np.zeros((0, 2)) if existing.edges is None else np.asarray(existing.edges[:])
        same_edges = stored.shape == edges.shape and np.array_equal(stored, edges)
    if not (same_nodes and same_edges):
        raise NwbError(
            f"Skeleton {name!r} already exists in the NWB file with other nodes or edges "
            f"({[str(node) for node in existing.nodes[:]]})"
        )


def skeleton_for(nwbfile: NWBFile, name: str, bodyparts: Sequence[str], skeleton_edges) -> Skeleton:
    """The Skeleton ``name`` in behavior/Skeletons, created (with the subject linked) if absent."""
    existing = _existing_skeleton(nwbfile, name)
    if existing is not None:  # already checked to match
        return existing
    module = behavior_module(nwbfile)
    if SKELETONS_NAME not in module.data_interfaces:
        module.add(Skeletons(name=SKELETONS_NAME))
    skeleton = Skeleton(
        name=name,
        nodes=list(bodyparts),
        edges=edges_array(skeleton_edges, len(bodyparts), f"Skeleton {name!r}"),
        subject=nwbfile.subject,
    )
    module[SKELETONS_NAME].add_skeletons(skeleton)
    return skeleton


def _check_no_clash(nwbfile: NWBFile, cameras: Sequence[CameraPose], video_paths: list[str]) -> None:
    """Refuse before touching the file when an object we would add already exists."""
    camera_names = [camera.camera_name for camera in cameras]
    duplicates = sorted({name for name in camera_names if camera_names.count(name) > 1})
    if duplicates:
        raise NwbError(f"camera names repeat: {duplicates}")
    module = nwbfile.processing.get(BEHAVIOR_MODULE)
    for camera, video_path in zip(cameras, video_paths):
        names = camera_object_names(camera.camera_name)
        taken = [names.pose_estimation, names.posterior_variance, names.ensemble_variance]
        for name in taken:
            if module is not None and name in module.data_interfaces:
                raise NwbError(f"processing/{BEHAVIOR_MODULE}/{name} already exists in the NWB file")
        check_skeleton_fits(nwbfile, names.skeleton, camera.bodyparts, camera.skeleton_edges)
        check_video_fits(nwbfile, camera.camera_name, video_path)
        device = nwbfile.devices.get(names.device)
        if device is not None and not isinstance(device, Device):
            raise NwbError(f"devices/{names.device} exists and is not a Device")


def check_video_fits(nwbfile: NWBFile, camera_name: str, video_path: str) -> None:
    """An existing source video of this camera is reused only when it is the same file."""
    name = camera_object_names(camera_name).video
    video = nwbfile.acquisition.get(name)
    if video is not None:
        existing = [str(f) for f in (getattr(video, "external_file", None) or [])]
        if not isinstance(video, ImageSeries) or existing != [video_path]:
            raise NwbError(
                f"acquisition/{name} already exists and is not an ImageSeries of {video_path!r} (it holds {existing})"
            )


def _camera_device(nwbfile: NWBFile, camera: CameraPose) -> Device:
    name = camera_object_names(camera.camera_name).device
    if name in nwbfile.devices:
        return nwbfile.devices[name]
    description = camera.camera_description or f"Video camera '{camera.camera_name}'."
    return nwbfile.create_device(name=name, description=description)


def _source_video(nwbfile: NWBFile, camera: CameraPose, video_path: str, device: Device, timing: dict) -> ImageSeries:
    name = camera_object_names(camera.camera_name).video
    if name in nwbfile.acquisition:  # already checked to point at the same file
        return nwbfile.acquisition[name]
    video = ImageSeries(
        name=name,
        description=f"Source video of camera '{camera.camera_name}' used for pose estimation.",
        external_file=[video_path],
        format="external",
        starting_frame=[0],
        # Data stay empty for an external file, so the frame count must be stated; the pose
        # has one row per video frame.
        num_samples=int(np.asarray(camera.x).shape[0]),
        dimension=[int(camera.image_width), int(camera.image_height)],
        device=device,
        **timing,
    )
    nwbfile.add_acquisition(video)
    return video


def _pose_series(camera: CameraPose, timing: dict) -> list[PoseEstimationSeries]:
    """One series per body part; the first owns the timestamps, the others link to it."""
    x = np.asarray(camera.x, dtype=np.float64)
    y = np.asarray(camera.y, dtype=np.float64)
    likelihood = np.asarray(camera.likelihood, dtype=np.float64)
    series: list[PoseEstimationSeries] = []
    for k, bodypart in enumerate(camera.bodyparts):
        shared = timing if not series or "rate" in timing else {"timestamps": series[0]}
        series.append(
            PoseEstimationSeries(
                name=bodypart,
                description=f"Position of '{bodypart}' in the '{camera.camera_name}' video.",
                data=np.column_stack([x[:, k], y[:, k]]),
                unit="pixels",
                reference_frame=REFERENCE_FRAME,
                confidence=likelihood[:, k],
                confidence_definition=camera.confidence_definition,
                **shared,
            )
        )
    return series


def _variance_series(name: str, what: str, variance: np.ndarray, camera: CameraPose, timing: dict) -> TimeSeries:
    return TimeSeries(
        name=name,
        description=(
            f"{what} of the '{camera.camera_name}' pose estimates, in pixels squared. Array axes: "
            f"(frame, body part, coordinate); body parts in order {list(camera.bodyparts)}; "
            "coordinates in order (x, y)."
        ),
        data=np.asarray(variance, dtype=np.float64),
        unit="pixels^2",
        **timing,
    )


def camera_pose_estimation(
    nwbfile: NWBFile, camera: CameraPose, video_path: str, device: Device, skeleton: Skeleton, name: str
) -> tuple[PoseEstimation, dict]:
    """The ``PoseEstimation`` of one camera (not yet placed) and the timing its variances link to."""
    timing = _timing(camera, np.asarray(camera.x).shape[0])
    series = _pose_series(camera, timing)
    linked = timing if "rate" in timing else {"timestamps": series[0]}
    video = _source_video(nwbfile, camera, video_path, device, linked)
    pose = PoseEstimation(
        name=name,
        pose_estimation_series=series,
        description=camera.description,
        scorer=camera.scorer,
        source_software=camera.source_software,
        source_software_version=camera.source_software_version,
        skeleton=skeleton,
        device=device,
        source_video=video,
    )
    return pose, linked


def add_camera_variances(
    module: ProcessingModule, camera: CameraPose, linked: dict, posterior_name: str, ensemble_name: str
) -> None:
    variances = [
        (posterior_name, "Posterior variance", camera.posterior_var),
        (ensemble_name, "Ensemble variance (across ensemble members)", camera.ensemble_var),
    ]
    for name, what, variance in variances:
        if variance is not None:
            module.add(_variance_series(name, what, variance, camera, linked))


def _add_camera(nwbfile: NWBFile, camera: CameraPose, video_path: str) -> None:
    names = camera_object_names(camera.camera_name)
    device = _camera_device(nwbfile, camera)
    skeleton = skeleton_for(nwbfile, names.skeleton, camera.bodyparts, camera.skeleton_edges)
    pose, linked = camera_pose_estimation(nwbfile, camera, video_path, device, skeleton, names.pose_estimation)
    module = behavior_module(nwbfile)
    module.add(pose)
    add_camera_variances(module, camera, linked, names.posterior_variance, names.ensemble_variance)


def relative_video_path(video_path: PathLike, nwb_dir: PathLike | None) -> str:
    """``video_path`` relative to ``nwb_dir`` when it is absolute (DANDI's preference)."""
    video_path = os.fspath(video_path)
    if nwb_dir is None or not os.path.isabs(video_path):
        return Path(video_path).as_posix()
    try:
        return Path(os.path.relpath(video_path, os.path.abspath(nwb_dir))).as_posix()
    except ValueError:  # another drive on Windows: no relative path exists
        return Path(video_path).as_posix()


def add_pose(nwbfile: NWBFile, cameras: Sequence[CameraPose], *, nwb_dir: PathLike | None = None) -> None:
    """Add each camera's pose estimates to ``nwbfile`` (see the module docstring for the layout).

    Everything is validated before the file is touched; an object that already exists under a
    name this would use raises ``ValueError`` (an existing camera ``Device``, an existing
    source-video ``ImageSeries`` of the same file and an existing ``Skeleton`` with the same
    nodes and edges are reused). With ``nwb_dir`` (the folder of the NWB file), absolute video
    paths are stored relative to it.
    """
    if not cameras:
        raise NwbError("no cameras given")
    for camera in cameras:
        validate_camera(camera)
    video_paths = [relative_video_path(camera.video_path, nwb_dir) for camera in cameras]
    _check_no_clash(nwbfile, cameras, video_paths)
    for camera, video_path in zip(cameras, video_paths):
        _add_camera(nwbfile, camera, video_path)


# ----------------------------------------------------------------------------------------------
# Multi-camera 3D pose (ndx-pose 0.4: CalibratedCamera, MultiCameraPoseEstimation)


# ----------------------------------------------------------------------------------------------
# Labeled training frames


# ----------------------------------------------------------------------------------------------
# Files
