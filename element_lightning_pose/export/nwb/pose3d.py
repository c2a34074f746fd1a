"""A calibrated rig's 3D pose in NWB (ndx-pose 0.4): one ``CalibratedCamera`` per camera, a
``MultiCameraPoseEstimation`` holding the 3D series and each camera's 2D ``PoseEstimation``,
the posterior variance and the reprojection error per camera as ``TimeSeries``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from ndx_pose import (
    CalibratedCamera,
    MultiCameraPoseEstimation,
    PoseEstimationSeries,
)
from pynwb import NWBFile, TimeSeries

from element_lightning_pose.engine.multicam.cameras import Camera, CameraGroup
from element_lightning_pose.engine.types import PathLike
from element_lightning_pose.export.nwb.inputs import (
    BEHAVIOR_MODULE,
    OBJECT_NAME,
    CameraObjectNames,
    CameraPose,
    NwbError,
    camera_object_names,
)
from element_lightning_pose.export.nwb.pose import (
    add_camera_variances,
    behavior_module,
    camera_pose_estimation,
    check_skeleton_fits,
    check_video_fits,
    edges_array,
    float_array,
    relative_video_path,
    series_timing,
    skeleton_for,
    validate_camera,
)
from element_lightning_pose.version import __version__


@dataclass(kw_only=True)
class MultiCameraPose:
    """3D pose of one calibrated rig, with the 2D pose of each of its camera views.

    ``points`` and ``variance`` are (T, K, 3): world (x, y, z) in ``units`` (the calibration's,
    e.g. 'mm') and their posterior variances in ``units``², NaN where a body part was not
    triangulated (``variance`` None for methods without one). ``reprojection_error`` (T, K, C)
    in pixels and ``cameras_used`` (T, K) are optional, with columns in ``views`` order.
    ``rig`` holds the calibration of every camera in ``views`` (extra cameras are ignored);
    each view's ``camera_name`` names its camera in ``rig``, and its body parts are
    ``bodyparts``. Timing (``timestamps`` or ``fps`` + ``starting_time``) is that of the rig
    frames; each view keeps its own. ``skeleton_edges`` are index or body-part-name pairs.
    """

    name: str
    rig: CameraGroup
    views: list[CameraPose]
    bodyparts: list[str]
    points: np.ndarray
    units: str
    reference_frame: str
    description: str
    scorer: str
    variance: np.ndarray | None = None
    reprojection_error: np.ndarray | None = None
    cameras_used: np.ndarray | None = None
    fps: float | None = None
    starting_time: float = 0.0
    timestamps: np.ndarray | None = None
    skeleton_edges: Sequence[tuple[int, int]] | Sequence[tuple[str, str]] | None = None
    source_software: str = "element-lightning-pose"
    source_software_version: str = __version__


@dataclass(frozen=True)
class MultiCameraObjectNames:
    """Where one rig's objects live in the file (names inside their containers)."""

    pose_estimation: str  # processing["behavior"]: the MultiCameraPoseEstimation
    skeleton: str  # processing["behavior"]["Skeletons"]
    posterior_variance: str  # processing["behavior"]: TimeSeries (T, K, 3)
    reprojection_error: str  # processing["behavior"]: TimeSeries (T, K, C)
    cameras_used: str  # processing["behavior"]: TimeSeries (T, K)

    def view(self, camera_name: str) -> CameraObjectNames:
        """Names of a view's objects: its PoseEstimation inside the MultiCameraPoseEstimation,
        its CalibratedCamera in devices, its video in acquisition, its 2D variances."""
        names = camera_object_names(camera_name)
        prefix = f"{self.pose_estimation}_{camera_name}"
        return replace(
            names,
            skeleton=self.skeleton,
            posterior_variance=f"{prefix}_posterior_variance",
            ensemble_variance=f"{prefix}_ensemble_variance",
        )


def multicam_object_names(name: str) -> MultiCameraObjectNames:
    """Names of the NWB objects written for the rig pose ``name``."""
    pose_name = f"MultiCameraPoseEstimation_{name}"
    return MultiCameraObjectNames(
        pose_estimation=pose_name,
        skeleton=f"Skeleton_{pose_name}",
        posterior_variance=f"{pose_name}_posterior_variance",
        reprojection_error=f"{pose_name}_reprojection_error",
        cameras_used=f"{pose_name}_cameras_used",
    )


# nwbinspector's DANDI configuration accepts only these spelled-out length units on a SpatialSeries.
_LENGTH_UNITS = {
    "m": "meters",
    "meter": "meters",
    "meters": "meters",
    "cm": "centimeters",
    "centimeter": "centimeters",
    "centimeters": "centimeters",
    "mm": "millimeters",
    "millimeter": "millimeters",
    "millimeters": "millimeters",
    "um": "micrometers",
    "µm": "micrometers",
    "μm": "micrometers",
    "micrometer": "micrometers",
    "micrometers": "micrometers",
}


def spatial_unit(units: str) -> str:
    """The NWB unit of a calibration's length ``units`` ('mm' -> 'millimeters'); others raise."""
    unit = _LENGTH_UNITS.get(str(units).strip().lower())
    if unit is None:
        raise NwbError(
            f"units {units!r} is not a length unit NWB / DANDI accept; use one of m, cm, mm, um "
            "(or meters, centimeters, millimeters, micrometers)"
        )
    return unit


def _edge_indices(pose: MultiCameraPose, where: str) -> list[tuple[int, int]] | None:
    if pose.skeleton_edges is None:
        return None
    edges = []
    for edge in pose.skeleton_edges:
        if len(edge) != 2:
            raise NwbError(f"{where}: skeleton edge {edge!r} is not a pair")
        pair = []
        for end in edge:
            if isinstance(end, str):
                if end not in pose.bodyparts:
                    raise NwbError(f"{where}: skeleton edge {edge!r} names {end!r}, not one of {pose.bodyparts}")
                pair.append(pose.bodyparts.index(end))
            else:
                pair.append(end)
        edges.append((pair[0], pair[1]))
    return edges


def validate_multicam(pose: MultiCameraPose) -> None:
    """Raise ``ValueError`` naming the rig pose, camera and field at fault."""
    where = f"MultiCameraPose {pose.name!r}"
    if not isinstance(pose.name, str) or not OBJECT_NAME.match(pose.name):
        raise NwbError(f"{where}: name must start with a letter or digit and hold only letters, digits, '_-. '")
    if not pose.bodyparts or len(set(pose.bodyparts)) != len(pose.bodyparts):
        raise NwbError(f"{where}: bodyparts must be non-empty and unique")
    for bodypart in pose.bodyparts:
        if not isinstance(bodypart, str) or not OBJECT_NAME.match(bodypart):
            raise NwbError(f"{where}: body part name {bodypart!r} is not a valid object name")
    for field in ("units", "reference_frame", "description", "scorer"):
        value = getattr(pose, field)
        if not isinstance(value, str) or not value.strip():
            raise NwbError(f"{where}: {field} must be a non-empty string")
    try:
        spatial_unit(pose.units)
    except ValueError as exc:
        raise NwbError(f"{where}: {exc}") from None
    points = np.asarray(pose.points, dtype=np.float64)
    if points.ndim != 3 or points.shape[0] == 0 or points.shape[1:] != (len(pose.bodyparts), 3):
        raise NwbError(f"{where}: points has shape {points.shape}, expected (T>0, {len(pose.bodyparts)}, 3)")
    if np.any(np.isinf(points)):
        raise NwbError(f"{where}: points hold infinite values (use NaN where not triangulated)")
    n_frames, n_parts = points.shape[:2]
    if pose.variance is not None:
        variance = float_array(pose.variance, f"{where}: variance", (n_frames, n_parts, 3))
        if np.any(variance[np.isfinite(variance)] < 0):
            raise NwbError(f"{where}: variance holds negative values")
    if not pose.views:
        raise NwbError(f"{where}: no camera views")
    view_names = [view.camera_name for view in pose.views]
    duplicates = sorted({n for n in view_names if view_names.count(n) > 1})
    if duplicates:
        raise NwbError(f"{where}: camera views repeat: {duplicates}")
    missing = [n for n in view_names if n not in pose.rig.names]
    if missing:
        raise NwbError(f"{where}: views {missing} are not cameras of the calibration ({pose.rig.names})")
    if pose.reprojection_error is not None:
        float_array(pose.reprojection_error, f"{where}: reprojection_error", (n_frames, n_parts, len(view_names)))
    if pose.cameras_used is not None:
        float_array(pose.cameras_used, f"{where}: cameras_used", (n_frames, n_parts))
    edges_array(_edge_indices(pose, where), n_parts, where)
    series_timing(where, pose.timestamps, pose.fps, pose.starting_time, n_frames)
    for view in pose.views:
        validate_camera(view)
        if list(view.bodyparts) != list(pose.bodyparts):
            raise NwbError(
                f"{where}: camera {view.camera_name!r} has body parts {list(view.bodyparts)}, "
                f"the 3D pose has {list(pose.bodyparts)}"
            )
        size = pose.rig[view.camera_name].size
        if (int(view.image_width), int(view.image_height)) != size:
            raise NwbError(
                f"{where}: camera {view.camera_name!r} video is {view.image_width}x{view.image_height} px, "
                f"its calibration is for {size[0]}x{size[1]} px"
            )


def _calibration_matches(device: CalibratedCamera, camera: Camera) -> bool:
    stored = [
        device.intrinsic_matrix,
        device.rotation_matrix,
        device.translation_vector,
        device.distortion_coefficients,
    ]
    wanted = [camera.matrix, camera.rotation, camera.translation, camera.distortion]
    for value, expected in zip(stored, wanted):
        if value is None or np.asarray(value[:]).shape != expected.shape:
            return False
        if not np.array_equal(np.asarray(value[:], dtype=np.float64), expected):
            return False
    return True


def _check_multicam_clash(nwbfile: NWBFile, pose: MultiCameraPose, video_paths: list[str]) -> None:
    names = multicam_object_names(pose.name)
    module = nwbfile.processing.get(BEHAVIOR_MODULE)
    taken = [names.pose_estimation, names.posterior_variance, names.reprojection_error, names.cameras_used]
    for view in pose.views:
        view_names = names.view(view.camera_name)
        taken += [view_names.posterior_variance, view_names.ensemble_variance]
    for name in taken:
        if module is not None and name in module.data_interfaces:
            raise NwbError(f"processing/{BEHAVIOR_MODULE}/{name} already exists in the NWB file")
    check_skeleton_fits(nwbfile, names.skeleton, pose.bodyparts, _edge_indices(pose, pose.name))
    for view, video_path in zip(pose.views, video_paths):
        device = nwbfile.devices.get(view.camera_name)
        if device is not None and not (
            isinstance(device, CalibratedCamera) and _calibration_matches(device, pose.rig[view.camera_name])
        ):
            raise NwbError(
                f"devices/{view.camera_name} already exists in the NWB file and is not a CalibratedCamera "
                "with this calibration"
            )
        check_video_fits(nwbfile, view.camera_name, video_path)


def _calibrated_camera(nwbfile: NWBFile, camera: Camera, units: str) -> CalibratedCamera:
    """The camera's ``CalibratedCamera`` in devices (an identical existing one is reused)."""
    if camera.name in nwbfile.devices:  # already checked to hold this calibration
        return nwbfile.devices[camera.name]
    model = (
        "fisheye model (distortion k1 k2 k3 k4 on the angle, cv2.fisheye)"
        if camera.fisheye
        else "pinhole model with distortion k1 k2 p1 p2 k3 (cv2.projectPoints)"
    )
    device = CalibratedCamera(
        name=camera.name,
        description=(
            f"Calibrated camera '{camera.name}', {camera.size[0]}x{camera.size[1]} px. OpenCV {model}: a world "
            f"point X maps to the camera frame as R X + t (rotation_matrix R, translation_vector t in {units}), "
            "then to pixels through the distortion and intrinsic_matrix K."
        ),
        intrinsic_matrix=camera.matrix,
        rotation_matrix=camera.rotation,
        translation_vector=camera.translation,
        distortion_coefficients=camera.distortion,
    )
    nwbfile.add_device(device)
    return device


def _pose_series_3d(pose: MultiCameraPose, timing: dict) -> list[PoseEstimationSeries]:
    points = np.asarray(pose.points, dtype=np.float64)
    series: list[PoseEstimationSeries] = []
    for k, bodypart in enumerate(pose.bodyparts):
        shared = timing if not series or "rate" in timing else {"timestamps": series[0]}
        series.append(
            PoseEstimationSeries(
                name=bodypart,
                description=(
                    f"3D position of '{bodypart}' triangulated from cameras {[v.camera_name for v in pose.views]}; "
                    "NaN where it was not triangulated."
                ),
                data=points[:, k, :],
                unit=spatial_unit(pose.units),
                reference_frame=pose.reference_frame,
                **shared,
            )
        )
    return series


def _rig_series(pose: MultiCameraPose, names: MultiCameraObjectNames, linked: dict) -> list[TimeSeries]:
    """The 3D posterior variance, reprojection errors and view counts, beside the 3D pose."""
    parts = list(pose.bodyparts)
    cameras = [view.camera_name for view in pose.views]
    unit = spatial_unit(pose.units)
    items = [
        (
            names.posterior_variance,
            pose.variance,
            f"{unit}^2",
            f"Posterior variance of the 3D positions in {names.pose_estimation}, in {unit} squared. "
            f"Array axes: (frame, body part, coordinate); body parts in order {parts}; coordinates (x, y, z).",
        ),
        (
            names.reprojection_error,
            pose.reprojection_error,
            "pixels",
            f"Distance in pixels between each camera's 2D estimate and the projection of the 3D position in "
            f"{names.pose_estimation}. Array axes: (frame, body part, camera); body parts in order {parts}; "
            f"cameras in order {cameras}.",
        ),
        (
            names.cameras_used,
            pose.cameras_used,
            "n.a.",
            f"Number of camera views that contributed to each 3D position in {names.pose_estimation}. "
            f"Array axes: (frame, body part); body parts in order {parts}.",
        ),
    ]
    return [
        TimeSeries(name=name, description=text, data=np.asarray(values, dtype=np.float64), unit=item_unit, **linked)
        for name, values, item_unit, text in items
        if values is not None
    ]


def _add_multicam(nwbfile: NWBFile, pose: MultiCameraPose, video_paths: list[str]) -> None:
    names = multicam_object_names(pose.name)
    skeleton = skeleton_for(nwbfile, names.skeleton, pose.bodyparts, _edge_indices(pose, pose.name))
    timing = series_timing(
        f"MultiCameraPose {pose.name!r}", pose.timestamps, pose.fps, pose.starting_time, np.shape(pose.points)[0]
    )
    series = _pose_series_3d(pose, timing)
    linked = timing if "rate" in timing else {"timestamps": series[0]}
    module = behavior_module(nwbfile)
    views = []
    for view, video_path in zip(pose.views, video_paths):
        view_names = names.view(view.camera_name)
        device = _calibrated_camera(nwbfile, pose.rig[view.camera_name], spatial_unit(pose.units))
        view_pose, view_timing = camera_pose_estimation(
            nwbfile, view, video_path, device, skeleton, view_names.pose_estimation
        )
        views.append(view_pose)
        add_camera_variances(module, view, view_timing, view_names.posterior_variance, view_names.ensemble_variance)
    module.add(
        MultiCameraPoseEstimation(
            name=names.pose_estimation,
            pose_estimation_series=series,
            pose_estimations=views,
            description=pose.description,
            scorer=pose.scorer,
            source_software=pose.source_software,
            source_software_version=pose.source_software_version,
            skeleton=skeleton,
        )
    )
    for item in _rig_series(pose, names, linked):
        module.add(item)


def add_multicam_pose(nwbfile: NWBFile, poses: Sequence[MultiCameraPose], *, nwb_dir: PathLike | None = None) -> None:
    """Add each rig's 3D pose to ``nwbfile``: one ``CalibratedCamera`` per camera (reused when an
    identical one exists), one ``MultiCameraPoseEstimation`` (3D series + one 2D
    ``PoseEstimation`` per view, each linked to its camera and source video) and the posterior
    variance beside it. Validated before the file is touched; names that exist raise."""
    names = [pose.name for pose in poses]
    if len(set(names)) != len(names):
        raise NwbError(f"multi-camera pose names repeat: {names}")
    all_paths = []
    for pose in poses:
        validate_multicam(pose)
        video_paths = [relative_video_path(view.video_path, nwb_dir) for view in pose.views]
        _check_multicam_clash(nwbfile, pose, video_paths)
        all_paths.append(video_paths)
    for pose, video_paths in zip(poses, all_paths):
        _add_multicam(nwbfile, pose, video_paths)
