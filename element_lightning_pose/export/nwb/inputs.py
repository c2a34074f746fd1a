"""What an NWB export is given: plain dataclasses for the session, its subject, each camera's pose
and the labeled training frames, the names of the NWB objects made from them, and :class:`NwbError`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.version import __version__

BEHAVIOR_MODULE = "behavior"
SKELETONS_NAME = "Skeletons"
REFERENCE_FRAME = "(0,0) is the top-left corner of the video frame; x to the right, y down, in pixels"
# Camera and body-part names become HDF5 object names: no slashes, and keep them readable.
OBJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]*$")


class NwbError(ElpError, ValueError):
    """What an export was given cannot make a valid NWB file (or a DANDI one); the message names the field."""


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
