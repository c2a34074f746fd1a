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
import re
import shutil
import stat
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from ndx_pose import (
    CalibratedCamera,
    MultiCameraPoseEstimation,
    PoseEstimation,
    PoseEstimationSeries,
    PoseTraining,
    Skeleton,
    SkeletonInstance,
    SkeletonInstances,
    Skeletons,
    TrainingFrame,
    TrainingFrames,
)
from pynwb import NWBHDF5IO, NWBFile, ProcessingModule, TimeSeries
from pynwb.base import Images
from pynwb.device import Device
from pynwb.file import Subject
from pynwb.image import GrayscaleImage, ImageSeries, RGBImage

from element_lightning_pose.engine.atomic import atomic_output
from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.multicam.cameras import Camera, CameraGroup
from element_lightning_pose.engine.safe_paths import inside_root
from element_lightning_pose.version import __version__

PathLike = str | os.PathLike

BEHAVIOR_MODULE = "behavior"
SKELETONS_NAME = "Skeletons"
REFERENCE_FRAME = "(0,0) is the top-left corner of the video frame; x to the right, y down, in pixels"
DANDI_SEXES = ("M", "F", "U", "O")
C_ELEGANS_SEXES = ("XO", "XX")

# The same forms nwbinspector's DANDI configuration accepts (checks/_nwbfile_metadata.py).
_ISO_DURATION = re.compile(
    r"^P(?!$)(\d+(?:\.\d+)?Y)?(\d+(?:\.\d+)?M)?(\d+(?:\.\d+)?W)?(\d+(?:\.\d+)?D)?"
    r"(T(?=\d)(\d+(?:\.\d+)?H)?(\d+(?:\.\d+)?M)?(\d+(?:\.\d+)?S)?)?$"
)
_SPECIES_FORM = re.compile(r"([A-Z][a-z]* [a-z]+)|(http://purl\.obolibrary\.org/obo/NCBITaxon_\d+)")
_WEIGHT_FORM = re.compile(r"(?i)^\d+(\.\d+)? (kg|g|mg|ug|μg|ng|pg)$")
# Camera and body-part names become HDF5 object names: no slashes, and keep them readable.
_OBJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]*$")


# ----------------------------------------------------------------------------------------------
# Inputs


@dataclass(kw_only=True)
class SubjectInfo:
    """The animal, as DANDI needs it described.

    ``species`` is a Latin binomial ("Mus musculus") or an NCBI taxonomy IRI; ``sex`` is one of
    M, F, U, O; ``age`` is an ISO-8601 duration ("P90D", or a range "P80D/P100D") and may be
    omitted when ``date_of_birth`` (timezone-aware) is given. ``weight`` reads like "25 g".
    """

    subject_id: str
    species: str | None = None
    sex: str | None = None
    age: str | None = None
    date_of_birth: datetime | None = None
    description: str | None = None
    strain: str | None = None
    genotype: str | None = None
    weight: str | None = None


@dataclass(kw_only=True)
class SessionInfo:
    """The recording session; ``session_start_time`` must be timezone-aware."""

    session_id: str
    session_start_time: datetime
    session_description: str
    identifier: str | None = None  # a fresh UUID when None
    experimenter: list[str] | None = None  # "Last, First" is the form DANDI prefers
    lab: str | None = None
    institution: str | None = None
    experiment_description: str | None = None
    keywords: list[str] | None = None


@dataclass(kw_only=True)
class CameraPose:
    """Pose estimates for one camera view.

    Arrays are (T, K) for T frames and K body parts, in original-frame pixels (see
    :data:`REFERENCE_FRAME`); ``likelihood`` lies in [0, 1] (NaN allowed). Timing is either
    ``timestamps`` (seconds, strictly increasing, length T) or ``fps`` and ``starting_time``.
    ``posterior_var`` / ``ensemble_var`` are (T, K, 2) variances of (x, y) in pixels², for
    ensemble and EKS results. ``video_path`` is stored as the ``external_file`` of the source
    video; DANDI wants it relative to the NWB file (``write_nwb`` / ``append_pose`` rewrite an
    absolute path that way).
    """

    camera_name: str
    video_path: str | os.PathLike
    bodyparts: list[str]
    x: np.ndarray
    y: np.ndarray
    likelihood: np.ndarray
    image_width: int
    image_height: int
    confidence_definition: str
    description: str
    scorer: str
    fps: float | None = None
    starting_time: float = 0.0
    timestamps: np.ndarray | None = None
    camera_description: str | None = None
    source_software: str = "element-lightning-pose"
    source_software_version: str = __version__
    skeleton_edges: list[tuple[int, int]] | None = None
    posterior_var: np.ndarray | None = None
    ensemble_var: np.ndarray | None = None


@dataclass(kw_only=True)
class TrainingLabels:
    """Hand-labeled frames of one camera view (the ground truth a model was trained on).

    ``image_paths`` are the frames' paths as the labeled project lists them (e.g.
    ``labeled-data/session1/img000123.png``); ``keypoints`` is (N, K, 2) in pixels, NaN where a
    body part was not labeled. ``images`` (each (H, W) or (H, W, 3) uint8), when given, are
    stored in the file so that the training set travels with it. The labels use the camera's
    Skeleton (the one its pose uses), created here if absent; an existing one must have these
    nodes, and these edges unless ``skeleton_edges`` is None.
    """

    camera_name: str
    bodyparts: list[str]
    image_paths: list[str]
    keypoints: np.ndarray
    images: Sequence[np.ndarray] | None = None
    annotator: str | None = None
    skeleton_edges: list[tuple[int, int]] | None = None  # None: accept an existing Skeleton's


@dataclass(frozen=True)
class CameraObjectNames:
    """Where one camera's objects live in the file (names inside their containers)."""

    device: str  # nwbfile.devices
    video: str  # nwbfile.acquisition
    skeleton: str  # processing["behavior"]["Skeletons"]
    pose_estimation: str  # processing["behavior"]
    posterior_variance: str  # processing["behavior"]
    ensemble_variance: str  # processing["behavior"]
    pose_training: str  # processing["behavior"]
    training_images: str  # processing["behavior"]


def camera_object_names(camera_name: str) -> CameraObjectNames:
    """Names of the NWB objects written for the camera ``camera_name``."""
    pose_name = f"PoseEstimation_{camera_name}"
    return CameraObjectNames(
        device=camera_name,
        video=f"Video_{camera_name}",
        skeleton=f"Skeleton_{camera_name}",
        pose_estimation=pose_name,
        posterior_variance=f"{pose_name}_posterior_variance",
        ensemble_variance=f"{pose_name}_ensemble_variance",
        pose_training=f"PoseTraining_{camera_name}",
        training_images=f"TrainingImages_{camera_name}",
    )


# ----------------------------------------------------------------------------------------------
# Metadata checks (DANDI)


def _is_tz_aware(moment: datetime) -> bool:
    return moment.tzinfo is not None and moment.tzinfo.utcoffset(moment) is not None


def _check_identifier(value: str | None, field: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field} is required by DANDI and must be a non-empty string")
    if "/" in value:
        raise ValueError(f"{field} {value!r} contains '/', which DANDI forbids")


def _is_iso_age(age: str) -> bool:
    if _ISO_DURATION.fullmatch(age):
        return True
    if age.count("/") != 1:
        return False
    lower, upper = age.split("/")
    bounds_valid = all(bound == "" or _ISO_DURATION.fullmatch(bound) for bound in (lower, upper))
    return bounds_valid and bool(lower or upper)


def validate_subject(subject: SubjectInfo) -> None:
    """Raise ``ValueError`` naming the first subject field that DANDI would reject."""
    _check_identifier(subject.subject_id, "SubjectInfo.subject_id")
    if not subject.species:
        raise ValueError("SubjectInfo.species is required by DANDI (e.g. 'Mus musculus')")
    if not _SPECIES_FORM.fullmatch(subject.species):
        raise ValueError(
            f"SubjectInfo.species {subject.species!r} must be a Latin binomial such as "
            "'Mus musculus' or an NCBI taxonomy IRI such as "
            "'http://purl.obolibrary.org/obo/NCBITaxon_10090'"
        )
    allowed = C_ELEGANS_SEXES if subject.species == "Caenorhabditis elegans" else DANDI_SEXES
    if subject.sex not in allowed:
        raise ValueError(f"SubjectInfo.sex {subject.sex!r} must be one of {', '.join(allowed)}")
    if subject.age is None and subject.date_of_birth is None:
        raise ValueError("SubjectInfo.age or SubjectInfo.date_of_birth is required by DANDI")
    if subject.age is not None and not _is_iso_age(subject.age):
        raise ValueError(
            f"SubjectInfo.age {subject.age!r} must be an ISO-8601 duration such as 'P90D' "
            "(or a range such as 'P80D/P100D')"
        )
    if subject.date_of_birth is not None and not _is_tz_aware(subject.date_of_birth):
        raise ValueError("SubjectInfo.date_of_birth must be timezone-aware")
    if subject.weight is not None and not _WEIGHT_FORM.fullmatch(subject.weight):
        raise ValueError(f"SubjectInfo.weight {subject.weight!r} must read '<number> <unit>', e.g. '25 g'")


def validate_session(session: SessionInfo) -> None:
    """Raise ``ValueError`` naming the first session field that DANDI would reject."""
    _check_identifier(session.session_id, "SessionInfo.session_id")
    if not isinstance(session.session_start_time, datetime):
        raise ValueError("SessionInfo.session_start_time must be a datetime")
    if not _is_tz_aware(session.session_start_time):
        raise ValueError(
            "SessionInfo.session_start_time must be timezone-aware "
            "(e.g. datetime(..., tzinfo=ZoneInfo('America/New_York')))"
        )
    if session.session_start_time > datetime.now(timezone.utc):
        raise ValueError(f"SessionInfo.session_start_time {session.session_start_time.isoformat()} lies in the future")
    if not session.session_description or not session.session_description.strip():
        raise ValueError("SessionInfo.session_description must be a non-empty string")


def build_nwbfile(session: SessionInfo, subject: SubjectInfo) -> NWBFile:
    """An empty in-memory ``NWBFile`` with DANDI-clean session and subject metadata."""
    validate_session(session)
    validate_subject(subject)
    nwb_subject = Subject(
        subject_id=subject.subject_id,
        species=subject.species,
        sex=subject.sex,
        age=subject.age,
        date_of_birth=subject.date_of_birth,
        description=subject.description,
        strain=subject.strain,
        genotype=subject.genotype,
        weight=subject.weight,
    )
    return NWBFile(
        session_description=session.session_description,
        identifier=session.identifier or str(uuid.uuid4()),
        session_start_time=session.session_start_time,
        session_id=session.session_id,
        experimenter=list(session.experimenter) if session.experimenter else None,
        lab=session.lab,
        institution=session.institution,
        experiment_description=session.experiment_description,
        keywords=list(session.keywords) if session.keywords else None,
        subject=nwb_subject,
    )


# ----------------------------------------------------------------------------------------------
# Pose checks


def _float_array(values, name: str, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
    return array


def _check_names(camera: CameraPose) -> None:
    where = f"CameraPose {camera.camera_name!r}"
    if not isinstance(camera.camera_name, str) or not _OBJECT_NAME.match(camera.camera_name):
        raise ValueError(
            f"camera_name {camera.camera_name!r} must start with a letter or digit and hold only "
            "letters, digits, '_', '-', '.', spaces"
        )
    if not camera.bodyparts:
        raise ValueError(f"{where}: bodyparts is empty")
    for bodypart in camera.bodyparts:
        if not isinstance(bodypart, str) or not _OBJECT_NAME.match(bodypart):
            raise ValueError(f"{where}: body part name {bodypart!r} is not a valid object name")
    duplicates = sorted({b for b in camera.bodyparts if camera.bodyparts.count(b) > 1})
    if duplicates:
        raise ValueError(f"{where}: duplicate body parts {duplicates}")
    for field in ("video_path", "scorer", "confidence_definition", "description"):
        value = getattr(camera, field)
        value = os.fspath(value) if isinstance(value, os.PathLike) else value
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: {field} must be a non-empty string")


def _check_arrays(camera: CameraPose) -> None:
    where = f"CameraPose {camera.camera_name!r}"
    x = np.asarray(camera.x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] != len(camera.bodyparts):
        raise ValueError(
            f"{where}: x has shape {x.shape}, expected (T>0, {len(camera.bodyparts)}) for the listed body parts"
        )
    n_frames, n_parts = x.shape
    _float_array(camera.y, f"{where}: y", (n_frames, n_parts))
    likelihood = _float_array(camera.likelihood, f"{where}: likelihood", (n_frames, n_parts))
    finite = likelihood[np.isfinite(likelihood)]
    if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
        raise ValueError(f"{where}: likelihood must lie in [0, 1], got [{finite.min()}, {finite.max()}]")
    for field in ("posterior_var", "ensemble_var"):
        value = getattr(camera, field)
        if value is not None:
            variance = _float_array(value, f"{where}: {field}", (n_frames, n_parts, 2))
            if np.any(variance[np.isfinite(variance)] < 0):
                raise ValueError(f"{where}: {field} holds negative variances")
    for field in ("image_width", "image_height"):
        value = getattr(camera, field)
        if not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"{where}: {field} must be a positive integer, got {value!r}")


def _edges_array(skeleton_edges: Sequence[tuple[int, int]] | None, n_parts: int, where: str) -> np.ndarray:
    """Edges as the (E, 2) uint8 array ndx-pose stores; empty (0, 2) when none are given."""
    if skeleton_edges is None or len(skeleton_edges) == 0:
        return np.zeros((0, 2), dtype=np.uint8)
    edges = np.asarray(skeleton_edges)
    if edges.ndim != 2 or edges.shape[1] != 2 or not np.issubdtype(edges.dtype, np.integer):
        raise ValueError(f"{where}: skeleton_edges must be integer pairs, got {skeleton_edges!r}")
    if edges.min() < 0 or edges.max() >= n_parts:
        raise ValueError(f"{where}: skeleton_edges index outside 0..{n_parts - 1}")
    if np.any(edges[:, 0] == edges[:, 1]):
        raise ValueError(f"{where}: skeleton_edges joins a body part to itself")
    if n_parts > 256:
        raise ValueError(f"{where}: ndx-pose stores edge indices as uint8; {n_parts} body parts is too many")
    return edges.astype(np.uint8)


def _timing(camera: CameraPose, n_frames: int) -> dict:
    """Keyword arguments giving a TimeSeries its times: timestamps, or rate and starting time."""
    return _series_timing(
        f"CameraPose {camera.camera_name!r}", camera.timestamps, camera.fps, camera.starting_time, n_frames
    )


def _series_timing(
    where: str, timestamps: np.ndarray | None, fps: float | None, starting_time: float, n_frames: int
) -> dict:
    if timestamps is None:
        if fps is None or not np.isfinite(fps) or fps <= 0:
            raise ValueError(f"{where}: fps must be a positive number when timestamps is None")
        if not np.isfinite(starting_time):
            raise ValueError(f"{where}: starting_time must be finite")
        return {"rate": float(fps), "starting_time": float(starting_time)}
    timestamps = np.asarray(timestamps, dtype=np.float64)
    if timestamps.shape != (n_frames,):
        raise ValueError(f"{where}: timestamps has shape {timestamps.shape}, expected ({n_frames},)")
    if not np.all(np.isfinite(timestamps)):
        raise ValueError(f"{where}: timestamps hold NaN or infinite values")
    if n_frames > 1 and np.any(np.diff(timestamps) <= 0):
        raise ValueError(f"{where}: timestamps must be strictly increasing")
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
    _edges_array(camera.skeleton_edges, len(camera.bodyparts), f"CameraPose {camera.camera_name!r}")
    _timing(camera, np.asarray(camera.x).shape[0])


# ----------------------------------------------------------------------------------------------
# Building the pose objects


def _behavior_module(nwbfile: NWBFile) -> ProcessingModule:
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
        raise ValueError(f"processing/{BEHAVIOR_MODULE}/{SKELETONS_NAME} exists and is not Skeletons")
    return skeletons.skeletons.get(name)


def _check_skeleton_fits(nwbfile: NWBFile, name: str, bodyparts: Sequence[str], skeleton_edges) -> None:
    """An existing Skeleton of this name is reused only when it has these nodes (and these
    edges, unless ``skeleton_edges`` is None, which accepts the stored ones)."""
    existing = _existing_skeleton(nwbfile, name)
    if existing is None:
        return
    same_nodes = [str(node) for node in existing.nodes[:]] == list(bodyparts)
    same_edges = True
    if skeleton_edges is not None:
        edges = _edges_array(skeleton_edges, len(bodyparts), f"Skeleton {name!r}")
        stored = np.zeros((0, 2)) if existing.edges is None else np.asarray(existing.edges[:])
        same_edges = stored.shape == edges.shape and np.array_equal(stored, edges)
    if not (same_nodes and same_edges):
        raise ValueError(
            f"Skeleton {name!r} already exists in the NWB file with other nodes or edges "
            f"({[str(node) for node in existing.nodes[:]]})"
        )


def _skeleton(nwbfile: NWBFile, name: str, bodyparts: Sequence[str], skeleton_edges) -> Skeleton:
    """The Skeleton ``name`` in behavior/Skeletons, created (with the subject linked) if absent."""
    existing = _existing_skeleton(nwbfile, name)
    if existing is not None:  # already checked to match
        return existing
    module = _behavior_module(nwbfile)
    if SKELETONS_NAME not in module.data_interfaces:
        module.add(Skeletons(name=SKELETONS_NAME))
    skeleton = Skeleton(
        name=name,
        nodes=list(bodyparts),
        edges=_edges_array(skeleton_edges, len(bodyparts), f"Skeleton {name!r}"),
        subject=nwbfile.subject,
    )
    module[SKELETONS_NAME].add_skeletons(skeleton)
    return skeleton


def _check_no_clash(nwbfile: NWBFile, cameras: Sequence[CameraPose], video_paths: list[str]) -> None:
    """Refuse before touching the file when an object we would add already exists."""
    camera_names = [camera.camera_name for camera in cameras]
    duplicates = sorted({name for name in camera_names if camera_names.count(name) > 1})
    if duplicates:
        raise ValueError(f"camera names repeat: {duplicates}")
    module = nwbfile.processing.get(BEHAVIOR_MODULE)
    for camera, video_path in zip(cameras, video_paths):
        names = camera_object_names(camera.camera_name)
        taken = [names.pose_estimation, names.posterior_variance, names.ensemble_variance]
        for name in taken:
            if module is not None and name in module.data_interfaces:
                raise ValueError(f"processing/{BEHAVIOR_MODULE}/{name} already exists in the NWB file")
        _check_skeleton_fits(nwbfile, names.skeleton, camera.bodyparts, camera.skeleton_edges)
        _check_video_fits(nwbfile, camera.camera_name, video_path)
        device = nwbfile.devices.get(names.device)
        if device is not None and not isinstance(device, Device):
            raise ValueError(f"devices/{names.device} exists and is not a Device")


def _check_video_fits(nwbfile: NWBFile, camera_name: str, video_path: str) -> None:
    """An existing source video of this camera is reused only when it is the same file."""
    name = camera_object_names(camera_name).video
    video = nwbfile.acquisition.get(name)
    if video is not None:
        existing = [str(f) for f in (getattr(video, "external_file", None) or [])]
        if not isinstance(video, ImageSeries) or existing != [video_path]:
            raise ValueError(
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


def _camera_pose_estimation(
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


def _add_camera_variances(
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
    skeleton = _skeleton(nwbfile, names.skeleton, camera.bodyparts, camera.skeleton_edges)
    pose, linked = _camera_pose_estimation(nwbfile, camera, video_path, device, skeleton, names.pose_estimation)
    module = _behavior_module(nwbfile)
    module.add(pose)
    _add_camera_variances(module, camera, linked, names.posterior_variance, names.ensemble_variance)


def _relative_video_path(video_path: PathLike, nwb_dir: PathLike | None) -> str:
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
        raise ValueError("no cameras given")
    for camera in cameras:
        validate_camera(camera)
    video_paths = [_relative_video_path(camera.video_path, nwb_dir) for camera in cameras]
    _check_no_clash(nwbfile, cameras, video_paths)
    for camera, video_path in zip(cameras, video_paths):
        _add_camera(nwbfile, camera, video_path)


# ----------------------------------------------------------------------------------------------
# Multi-camera 3D pose (ndx-pose 0.4: CalibratedCamera, MultiCameraPoseEstimation)


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
        raise ValueError(
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
            raise ValueError(f"{where}: skeleton edge {edge!r} is not a pair")
        pair = []
        for end in edge:
            if isinstance(end, str):
                if end not in pose.bodyparts:
                    raise ValueError(f"{where}: skeleton edge {edge!r} names {end!r}, not one of {pose.bodyparts}")
                pair.append(pose.bodyparts.index(end))
            else:
                pair.append(end)
        edges.append((pair[0], pair[1]))
    return edges


def validate_multicam(pose: MultiCameraPose) -> None:
    """Raise ``ValueError`` naming the rig pose, camera and field at fault."""
    where = f"MultiCameraPose {pose.name!r}"
    if not isinstance(pose.name, str) or not _OBJECT_NAME.match(pose.name):
        raise ValueError(f"{where}: name must start with a letter or digit and hold only letters, digits, '_-. '")
    if not pose.bodyparts or len(set(pose.bodyparts)) != len(pose.bodyparts):
        raise ValueError(f"{where}: bodyparts must be non-empty and unique")
    for bodypart in pose.bodyparts:
        if not isinstance(bodypart, str) or not _OBJECT_NAME.match(bodypart):
            raise ValueError(f"{where}: body part name {bodypart!r} is not a valid object name")
    for field in ("units", "reference_frame", "description", "scorer"):
        value = getattr(pose, field)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: {field} must be a non-empty string")
    try:
        spatial_unit(pose.units)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    points = np.asarray(pose.points, dtype=np.float64)
    if points.ndim != 3 or points.shape[0] == 0 or points.shape[1:] != (len(pose.bodyparts), 3):
        raise ValueError(f"{where}: points has shape {points.shape}, expected (T>0, {len(pose.bodyparts)}, 3)")
    if np.any(np.isinf(points)):
        raise ValueError(f"{where}: points hold infinite values (use NaN where not triangulated)")
    n_frames, n_parts = points.shape[:2]
    if pose.variance is not None:
        variance = _float_array(pose.variance, f"{where}: variance", (n_frames, n_parts, 3))
        if np.any(variance[np.isfinite(variance)] < 0):
            raise ValueError(f"{where}: variance holds negative values")
    if not pose.views:
        raise ValueError(f"{where}: no camera views")
    view_names = [view.camera_name for view in pose.views]
    duplicates = sorted({n for n in view_names if view_names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{where}: camera views repeat: {duplicates}")
    missing = [n for n in view_names if n not in pose.rig.names]
    if missing:
        raise ValueError(f"{where}: views {missing} are not cameras of the calibration ({pose.rig.names})")
    if pose.reprojection_error is not None:
        _float_array(pose.reprojection_error, f"{where}: reprojection_error", (n_frames, n_parts, len(view_names)))
    if pose.cameras_used is not None:
        _float_array(pose.cameras_used, f"{where}: cameras_used", (n_frames, n_parts))
    _edges_array(_edge_indices(pose, where), n_parts, where)
    _series_timing(where, pose.timestamps, pose.fps, pose.starting_time, n_frames)
    for view in pose.views:
        validate_camera(view)
        if list(view.bodyparts) != list(pose.bodyparts):
            raise ValueError(
                f"{where}: camera {view.camera_name!r} has body parts {list(view.bodyparts)}, "
                f"the 3D pose has {list(pose.bodyparts)}"
            )
        size = pose.rig[view.camera_name].size
        if (int(view.image_width), int(view.image_height)) != size:
            raise ValueError(
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
            raise ValueError(f"processing/{BEHAVIOR_MODULE}/{name} already exists in the NWB file")
    _check_skeleton_fits(nwbfile, names.skeleton, pose.bodyparts, _edge_indices(pose, pose.name))
    for view, video_path in zip(pose.views, video_paths):
        device = nwbfile.devices.get(view.camera_name)
        if device is not None and not (
            isinstance(device, CalibratedCamera) and _calibration_matches(device, pose.rig[view.camera_name])
        ):
            raise ValueError(
                f"devices/{view.camera_name} already exists in the NWB file and is not a CalibratedCamera "
                "with this calibration"
            )
        _check_video_fits(nwbfile, view.camera_name, video_path)


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
    skeleton = _skeleton(nwbfile, names.skeleton, pose.bodyparts, _edge_indices(pose, pose.name))
    timing = _series_timing(
        f"MultiCameraPose {pose.name!r}", pose.timestamps, pose.fps, pose.starting_time, np.shape(pose.points)[0]
    )
    series = _pose_series_3d(pose, timing)
    linked = timing if "rate" in timing else {"timestamps": series[0]}
    module = _behavior_module(nwbfile)
    views = []
    for view, video_path in zip(pose.views, video_paths):
        view_names = names.view(view.camera_name)
        device = _calibrated_camera(nwbfile, pose.rig[view.camera_name], spatial_unit(pose.units))
        view_pose, view_timing = _camera_pose_estimation(
            nwbfile, view, video_path, device, skeleton, view_names.pose_estimation
        )
        views.append(view_pose)
        _add_camera_variances(module, view, view_timing, view_names.posterior_variance, view_names.ensemble_variance)
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
        raise ValueError(f"multi-camera pose names repeat: {names}")
    all_paths = []
    for pose in poses:
        validate_multicam(pose)
        video_paths = [_relative_video_path(view.video_path, nwb_dir) for view in pose.views]
        _check_multicam_clash(nwbfile, pose, video_paths)
        all_paths.append(video_paths)
    for pose, video_paths in zip(poses, all_paths):
        _add_multicam(nwbfile, pose, video_paths)


# ----------------------------------------------------------------------------------------------
# Labeled training frames


def training_frame_name(image_path: str) -> str:
    """The TrainingFrame (and Image) name of a labeled frame: its path with '/' written '__'.

    NWB names cannot hold '/' (and DANDI flags ':'), so both become '__'.
    """
    return re.sub(r"[/\\:]", "__", image_path)


def validate_training(labels: TrainingLabels) -> None:
    """Raise ``ValueError`` naming the camera and field at fault."""
    where = f"TrainingLabels {labels.camera_name!r}"
    if not isinstance(labels.camera_name, str) or not _OBJECT_NAME.match(labels.camera_name):
        raise ValueError(f"{where}: camera_name is not a valid object name")
    if not labels.bodyparts or len(set(labels.bodyparts)) != len(labels.bodyparts):
        raise ValueError(f"{where}: bodyparts must be non-empty and unique")
    n_frames = len(labels.image_paths)
    if n_frames == 0:
        raise ValueError(f"{where}: image_paths is empty")
    names = [training_frame_name(path) for path in labels.image_paths]
    if len(set(names)) != n_frames:
        raise ValueError(f"{where}: image_paths repeat")
    keypoints = _float_array(labels.keypoints, f"{where}: keypoints", (n_frames, len(labels.bodyparts), 2))
    if np.any(np.isinf(keypoints)):
        raise ValueError(f"{where}: keypoints hold infinite values")
    _edges_array(labels.skeleton_edges, len(labels.bodyparts), where)
    if labels.images is None:
        return
    if len(labels.images) != n_frames:
        raise ValueError(f"{where}: {len(labels.images)} images for {n_frames} image_paths")
    for path, image in zip(labels.image_paths, labels.images):
        image = np.asarray(image)
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise ValueError(
                f"{where}: image {path!r} must be (H, W) or (H, W, 3) uint8, got {image.shape} {image.dtype}"
            )


def _training_images(labels: TrainingLabels, name: str) -> Images:
    images = []
    for path, pixels in zip(labels.image_paths, labels.images):
        pixels = np.asarray(pixels)
        kind = GrayscaleImage if pixels.ndim == 2 else RGBImage
        images.append(kind(name=training_frame_name(path), data=pixels, description=path))
    return Images(
        name=name,
        images=images,
        description=(f"Labeled frames of camera '{labels.camera_name}'; each description is the path."),
    )


def _training_frame(labels: TrainingLabels, index: int, skeleton: Skeleton, images: Images | None) -> TrainingFrame:
    name = training_frame_name(labels.image_paths[index])
    locations = np.asarray(labels.keypoints[index], dtype=np.float64)
    instance = SkeletonInstance(
        name="instance_0",
        id=np.uint8(0),
        node_locations=locations,
        node_visibility=~np.isnan(locations).any(axis=1),
        skeleton=skeleton,
    )
    return TrainingFrame(
        name=name,
        annotator=labels.annotator,
        skeleton_instances=SkeletonInstances(skeleton_instances=[instance]),
        source_frame=images[name] if images is not None else None,
    )


def add_training(nwbfile: NWBFile, labels: Sequence[TrainingLabels]) -> None:
    """Add each camera's labeled frames as a ``PoseTraining`` in the behavior module.

    Each labeled frame becomes a ``TrainingFrame`` (named by :func:`training_frame_name`) with
    one ``SkeletonInstance`` on the camera's Skeleton, and, when images are given, a link to
    its ``Image`` in an ``Images`` container beside it. Validated before the file is touched.
    """
    for item in labels:
        validate_training(item)
        names = camera_object_names(item.camera_name)
        module = nwbfile.processing.get(BEHAVIOR_MODULE)
        for name in (names.pose_training, names.training_images):
            if module is not None and name in module.data_interfaces:
                raise ValueError(f"processing/{BEHAVIOR_MODULE}/{name} already exists in the NWB file")
        _check_skeleton_fits(nwbfile, names.skeleton, item.bodyparts, item.skeleton_edges)
    cameras = [item.camera_name for item in labels]
    if len(set(cameras)) != len(cameras):
        raise ValueError(f"training labels repeat a camera: {cameras}")
    for item in labels:
        names = camera_object_names(item.camera_name)
        skeleton = _skeleton(nwbfile, names.skeleton, item.bodyparts, item.skeleton_edges)
        module = _behavior_module(nwbfile)
        images = None
        if item.images is not None:
            images = _training_images(item, names.training_images)
            module.add(images)
        frames = [_training_frame(item, i, skeleton, images) for i in range(len(item.image_paths))]
        module.add(
            PoseTraining(
                name=names.pose_training,
                training_frames=TrainingFrames(training_frames=frames),
            )
        )


# ----------------------------------------------------------------------------------------------
# Files


def _dandi_label(value: str, field: str) -> str:
    cleaned = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9-]", "-", str(value))).strip("-")
    if not cleaned:
        raise ValueError(f"{field} {value!r} leaves nothing usable in a DANDI file name")
    return cleaned


def dandi_filename(subject_id: str, session_id: str) -> str:
    """``sub-<id>_ses-<id>_behavior+image.nwb`` with each id reduced to letters, digits and '-'.

    DANDI separates entities with '_' and modalities with '+', so any other character in an id
    (including '_', '.', '/', spaces) becomes '-'.
    """
    subject, session = _dandi_label(subject_id, "subject_id"), _dandi_label(session_id, "session_id")
    return f"sub-{subject}_ses-{session}_behavior+image.nwb"


def dandi_path(subject_id: str, session_id: str) -> Path:
    """Where ``dandi organize`` puts the file inside a dandiset: ``sub-<id>/<dandi_filename>``."""
    return Path(f"sub-{_dandi_label(subject_id, 'subject_id')}") / dandi_filename(subject_id, session_id)


class ForeignNWBFileError(ElpError):
    """An existing NWB file belongs to another subject or session than the pose to write into it."""


def nwb_identity(path: PathLike) -> tuple[str | None, str | None]:
    """``(subject_id, session_id)`` of the NWB file ``path`` (None where the file has none)."""
    try:
        with NWBHDF5IO(str(path), mode="r") as io:
            nwbfile = io.read()
            subject = nwbfile.subject.subject_id if nwbfile.subject is not None else None
            return subject, nwbfile.session_id
    except (OSError, ValueError, KeyError, TypeError) as exc:  # h5py and pynwb's ways of saying "not NWB"
        raise ForeignNWBFileError(
            f"{path}: exists and is not a readable NWB file ({exc}); it is left as it is"
        ) from None


def check_same_subject_and_session(
    path: PathLike, subject_id: str | None, session_id: str | None, *, action: str, strict: bool
) -> None:
    """Refuse (:class:`ForeignNWBFileError`) to ``action`` the NWB file ``path`` when its subject or
    session differs from ``subject_id`` / ``session_id`` (None: not compared). ``strict``: a file
    that does not say counts as another's (a file to be replaced); otherwise it is accepted (a
    file to append to, written by another tool)."""
    found = dict(zip(("subject_id", "session_id"), nwb_identity(path)))
    differences = [
        f"{field} {found[field]!r}, not {expected!r}"
        for field, expected in (("subject_id", subject_id), ("session_id", session_id))
        if expected is not None and (found[field] is not None or strict) and found[field] != expected
    ]
    if differences:
        raise ForeignNWBFileError(
            f"{path}: belongs to {' and '.join(differences)}; not going to {action} another subject's or "
            "session's file (DANDI names can coincide for different ids: choose another file name, or give "
            "the ids that file uses if it really is this session)"
        )


def _all_views(cameras: Sequence[CameraPose], multicam: Sequence[MultiCameraPose]) -> list[CameraPose]:
    return list(cameras) + [view for pose in multicam for view in pose.views]


def _warn_missing_videos(path: Path, cameras: Sequence[CameraPose]) -> None:
    for camera in cameras:
        video = Path(_relative_video_path(camera.video_path, path.parent))
        if not (video if video.is_absolute() else path.parent / video).exists():
            warnings.warn(
                f"source video {camera.video_path!r} of camera {camera.camera_name!r} is not found "
                f"relative to {path}; DANDI's inspector reports missing external files",
                stacklevel=3,
            )


def _video_destinations(nwb_path: Path, views: Sequence[CameraPose]) -> dict[Path, Path]:
    """Each distinct source video -> its place in ``<nwb folder>/<nwb stem>/`` (its own file name;
    the camera name in front when two sources share a name). Missing sources raise."""
    folder = nwb_path.parent / nwb_path.stem
    destinations: dict[Path, Path] = {}
    for view in views:
        source = Path(view.video_path).absolute()
        if not source.is_file():
            raise FileNotFoundError(
                f"source video {os.fspath(view.video_path)!r} of camera {view.camera_name!r} does not exist "
                "(relative paths are read from the working directory when videos are placed beside the file)"
            )
        if source in destinations:
            continue
        target = folder / source.name
        if target in destinations.values():
            target = inside_root(folder, f"{view.camera_name}_{source.name}", f"video of camera {view.camera_name!r}")
        destinations[source] = target
    return destinations


def _place_video(source: Path, target: Path, overwrite: bool) -> bool:
    """Hard-link (or, across file systems, copy) ``source`` to ``target``; True when new (a
    replaced file is not new: a later failure must not delete what stands in its place).

    An existing ``target`` that is ``source`` itself (a hard link) is kept; another file there
    raises unless ``overwrite``. A copy goes through a temporary, so no truncated video is left.
    """
    existed = target.exists()
    if existed:
        if os.path.samefile(source, target):
            return False
        if not overwrite:
            raise FileExistsError(f"{target} exists and is not {source}; pass overwrite=True to replace it")
    with atomic_output(target, mode=stat.S_IMODE(source.stat().st_mode)) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:  # another file system, or links not allowed: copy the bytes
            shutil.copyfile(source, tmp)
    return not existed


def place_videos(
    nwb_path: PathLike,
    cameras: Sequence[CameraPose] = (),
    multicam: Sequence[MultiCameraPose] = (),
    *,
    overwrite: bool = False,
) -> tuple[list[CameraPose], list[MultiCameraPose], list[Path]]:
    """Put the source videos where DANDI wants them: ``<nwb folder>/<nwb stem>/`` (hard links
    when the file system allows, else copies), and return the cameras and rig poses pointing at
    them (stored relative to the file, e.g. ``sub-m1_ses-1_behavior+image/top.mp4``) and the
    files created here (for the caller to remove if writing the NWB file fails)."""
    nwb_path = Path(nwb_path)
    destinations = _video_destinations(nwb_path, _all_views(cameras, multicam))
    created: list[Path] = []
    try:
        for source, target in destinations.items():
            if _place_video(source, target, overwrite):
                created.append(target)
    except BaseException:
        _remove_placed(created)
        raise

    def moved(view: CameraPose) -> CameraPose:
        return replace(view, video_path=destinations[Path(view.video_path).absolute()])

    new_cameras = [moved(camera) for camera in cameras]
    new_multicam = [replace(pose, views=[moved(view) for view in pose.views]) for pose in multicam]
    return new_cameras, new_multicam, created


def _remove_placed(created: Sequence[Path]) -> None:
    for path in created:
        path.unlink(missing_ok=True)
    for folder in {path.parent for path in created}:
        try:
            folder.rmdir()  # only when empty
        except OSError:
            pass


def _check_camera_names_disjoint(cameras: Sequence[CameraPose], multicam: Sequence[MultiCameraPose]) -> None:
    single = {camera.camera_name for camera in cameras}
    for pose in multicam:
        shared = sorted(single & {view.camera_name for view in pose.views})
        if shared:
            raise ValueError(
                f"cameras {shared} are given both as single cameras and as views of the rig pose {pose.name!r}; "
                "a rig view's 2D pose is written inside its MultiCameraPoseEstimation"
            )


def _add_everything(
    nwbfile: NWBFile,
    cameras: Sequence[CameraPose],
    multicam: Sequence[MultiCameraPose],
    training: Sequence[TrainingLabels],
    nwb_dir: Path,
) -> None:
    _check_camera_names_disjoint(cameras, multicam)
    for pose in multicam:  # validate the rig poses before the single cameras touch the file
        validate_multicam(pose)
    if cameras:
        add_pose(nwbfile, cameras, nwb_dir=nwb_dir)
    if multicam:
        add_multicam_pose(nwbfile, multicam, nwb_dir=nwb_dir)
    if training:
        add_training(nwbfile, training)


def write_nwb(
    path: PathLike,
    session: SessionInfo,
    subject: SubjectInfo,
    cameras: Sequence[CameraPose],
    *,
    multicam: Sequence[MultiCameraPose] = (),
    training: Sequence[TrainingLabels] = (),
    overwrite: bool = False,
    dandi_layout: bool = False,
) -> Path:
    """Write a new NWB file with the session, subject, pose of ``cameras``, the 3D pose of
    calibrated rigs (``multicam``) and optional labeled ``training`` frames; return its path.

    ``path`` is a file, or an existing folder in which :func:`dandi_filename` names the file.
    With ``dandi_layout``, ``path`` is the dandiset's folder: the file goes to
    :func:`dandi_path` inside it and the source videos are hard-linked (or copied) into the
    folder named after the file (see :func:`place_videos`), as ``dandi organize`` lays them out.
    Refuses (``FileExistsError``) to replace an existing file unless ``overwrite``, and even then
    a file of another subject or session (:class:`ForeignNWBFileError`; ``"m 1"`` and ``"m_1"``
    share a DANDI name). The file is
    written beside the target and renamed, so a failure leaves no file (and any old one intact),
    and removes the videos it placed.
    """
    path = Path(path)
    if dandi_layout:
        if path.suffix == ".nwb":
            raise ValueError(f"with dandi_layout, path is the dandiset folder, not a file: {path}")
        path = path / dandi_path(subject.subject_id, session.session_id)
    elif path.is_dir():
        path = path / dandi_filename(subject.subject_id, session.session_id)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    if path.exists():  # overwrite=True replaces this subject's and session's file only
        check_same_subject_and_session(path, subject.subject_id, session.session_id, action="replace", strict=True)
    if not cameras and not multicam and not training:
        raise ValueError("nothing to write: no cameras, no multi-camera pose and no training labels")
    nwbfile = build_nwbfile(session, subject)
    created: list[Path] = []
    if dandi_layout:
        for pose in multicam:  # bad input fails before any video is placed
            validate_multicam(pose)
        for camera in cameras:
            validate_camera(camera)
        cameras, multicam, created = place_videos(path, cameras, multicam, overwrite=overwrite)
    try:
        _add_everything(nwbfile, cameras, multicam, training, path.parent)
        _warn_missing_videos(path, _all_views(cameras, multicam))
        with atomic_output(path) as tmp:  # the temporary keeps the .nwb suffix pynwb wants
            with NWBHDF5IO(str(tmp), mode="w") as io:
                io.write(nwbfile)
    except BaseException:
        _remove_placed(created)
        raise
    return path


def append_pose(
    path: PathLike,
    cameras: Sequence[CameraPose],
    *,
    multicam: Sequence[MultiCameraPose] = (),
    training: Sequence[TrainingLabels] = (),
    atomic: bool = True,
    place_videos_beside: bool = False,
    subject_id: str | None = None,
    session_id: str | None = None,
) -> Path:
    """Add pose (3D pose of rigs, labeled ``training`` frames) to the existing NWB file
    ``path``, leaving its other contents as they are.

    With ``atomic`` (the default) the file is copied beside itself, appended to, and renamed
    over the original, so a failure leaves the original untouched; ``atomic=False`` appends in
    place, which avoids the copy for very large files at the cost of that guarantee. With
    ``place_videos_beside`` the source videos are placed as DANDI wants them (see
    :func:`place_videos`). ``subject_id`` / ``session_id``, when given, must be the file's (a
    file that has none is accepted): :class:`ForeignNWBFileError` otherwise, before anything is written.
    """
    path = Path(path)
    if not cameras and not multicam and not training:
        raise ValueError("nothing to append: no cameras, no multi-camera pose and no training labels")
    if not path.is_file():
        raise FileNotFoundError(f"NWB file {path} does not exist")
    check_same_subject_and_session(path, subject_id, session_id, action="append to", strict=False)
    created: list[Path] = []
    if place_videos_beside:
        for pose in multicam:
            validate_multicam(pose)
        for camera in cameras:
            validate_camera(camera)
        cameras, multicam, created = place_videos(path, cameras, multicam)
    try:
        _warn_missing_videos(path, _all_views(cameras, multicam))
        if not atomic:
            _append(path, path, cameras, multicam, training)
            return path
        # the appended copy keeps the original's mode, as an in-place append would
        with atomic_output(path, mode=stat.S_IMODE(path.stat().st_mode)) as tmp:
            shutil.copy2(path, tmp)
            _append(tmp, path, cameras, multicam, training)
    except BaseException:
        _remove_placed(created)
        raise
    return path


def _append(
    target: Path,
    path: Path,
    cameras: Sequence[CameraPose],
    multicam: Sequence[MultiCameraPose],
    training: Sequence[TrainingLabels],
) -> None:
    """Append to the NWB file ``target`` (``path`` or its temporary copy; videos are relative to ``path``)."""
    with NWBHDF5IO(str(target), mode="a") as io:
        nwbfile = io.read()
        _add_everything(nwbfile, cameras, multicam, training, path.parent)
        io.write(nwbfile)


def inspect_dandi(path: PathLike) -> list:
    """nwbinspector's messages for ``path`` under its DANDI configuration (all importances).

    Each item is an ``nwbinspector.InspectorMessage``; DANDI refuses files with messages of
    importance ``CRITICAL`` (or ``PYNWB_VALIDATION`` / ``ERROR``).
    """
    from nwbinspector import inspect_nwbfile, load_config  # slow import, only when asked

    return list(inspect_nwbfile(nwbfile_path=str(path), config=load_config("dandi")))
