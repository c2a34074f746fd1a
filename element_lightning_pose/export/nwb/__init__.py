"""Pose estimates to NWB (pynwb, ndx-pose 0.4), ready for DANDI; plain Python, no DataJoint.

Callers describe a session, its subject and one :class:`CameraPose` per camera view with plain
dataclasses; this package turns them into NWB objects:

* processing module ``behavior`` holding a ``Skeletons`` container (one ``Skeleton`` per camera),
  one ``PoseEstimation`` per camera with one ``PoseEstimationSeries`` per body part, and, for
  ensemble / EKS results, the posterior and ensemble variances as ``TimeSeries``;
* one ``Device`` per camera (reused when the file already has one of that name);
* one external-file ``ImageSeries`` per camera in ``acquisition`` (the source video), linked from
  its ``PoseEstimation``;
* for a calibrated rig, ``CalibratedCamera`` devices and a ``MultiCameraPoseEstimation`` with the
  3D series; the labeled training frames as ``PoseTraining``.

All series of one camera share a single timestamps dataset (the first body part's series owns
it, the others link to it) or a rate and starting time. Timestamps that are regular to 1 ns are
stored as rate + starting time because DANDI's inspector flags regular timestamps.

Modules, along the export's steps:

- :mod:`.inputs` - the dataclasses an export is given, object names, :class:`NwbError`;
- :mod:`.dandi` - DANDI's metadata rules (checked before anything is written), file names of
  the dandiset layout, the inspector;
- :mod:`.pose` - each camera's 2D pose, skeleton, device and source video;
- :mod:`.pose3d` - a calibrated rig's cameras and 3D pose;
- :mod:`.training` - the labeled training frames;
- :mod:`.files` - :func:`write_nwb` and :func:`append_pose`: written whole or not at all, and
  appended to only when the file is the same subject's and session's.

Names used by several of these modules but not by callers (``behavior_module``,
``series_timing``, ...) are left out of this package's namespace.

Bad input fails with an :class:`NwbError` (an ``ElpError`` and a ``ValueError``) naming the
field, before any file is written.
"""

from element_lightning_pose.export.nwb.dandi import (
    C_ELEGANS_SEXES,
    DANDI_SEXES,
    build_nwbfile,
    dandi_filename,
    dandi_path,
    inspect_dandi,
    validate_session,
    validate_subject,
)
from element_lightning_pose.export.nwb.files import (
    ForeignNWBFileError,
    append_pose,
    check_same_subject_and_session,
    nwb_identity,
    place_videos,
    write_nwb,
)
from element_lightning_pose.export.nwb.inputs import (
    BEHAVIOR_MODULE,
    REFERENCE_FRAME,
    SKELETONS_NAME,
    CameraObjectNames,
    CameraPose,
    NwbError,
    SessionInfo,
    SubjectInfo,
    TrainingLabels,
    camera_object_names,
)
from element_lightning_pose.export.nwb.pose import (
    add_pose,
    validate_camera,
)
from element_lightning_pose.export.nwb.pose3d import (
    MultiCameraObjectNames,
    MultiCameraPose,
    add_multicam_pose,
    multicam_object_names,
    spatial_unit,
    validate_multicam,
)
from element_lightning_pose.export.nwb.training import (
    add_training,
    training_frame_name,
    validate_training,
)

__all__ = [
    "BEHAVIOR_MODULE",
    "C_ELEGANS_SEXES",
    "CameraObjectNames",
    "CameraPose",
    "DANDI_SEXES",
    "ForeignNWBFileError",
    "MultiCameraObjectNames",
    "MultiCameraPose",
    "NwbError",
    "REFERENCE_FRAME",
    "SKELETONS_NAME",
    "SessionInfo",
    "SubjectInfo",
    "TrainingLabels",
    "add_multicam_pose",
    "add_pose",
    "add_training",
    "append_pose",
    "build_nwbfile",
    "camera_object_names",
    "check_same_subject_and_session",
    "dandi_filename",
    "dandi_path",
    "inspect_dandi",
    "multicam_object_names",
    "nwb_identity",
    "place_videos",
    "spatial_unit",
    "training_frame_name",
    "validate_camera",
    "validate_multicam",
    "validate_session",
    "validate_subject",
    "validate_training",
    "write_nwb",
]
