"""The labeled training frames in NWB (ndx-pose's ``PoseTraining``): each frame's keypoints as a
``SkeletonInstance`` and, when given, its image.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from ndx_pose import (
    PoseTraining,
    Skeleton,
    SkeletonInstance,
    SkeletonInstances,
    TrainingFrame,
    TrainingFrames,
)
from pynwb import NWBFile
from pynwb.base import Images
from pynwb.image import GrayscaleImage, RGBImage

from element_lightning_pose.export.nwb.inputs import (
    BEHAVIOR_MODULE,
    OBJECT_NAME,
    NwbError,
    TrainingLabels,
    camera_object_names,
)
from element_lightning_pose.export.nwb.pose import (
    behavior_module,
    check_skeleton_fits,
    edges_array,
    float_array,
    skeleton_for,
)


def training_frame_name(image_path: str) -> str:
    """The TrainingFrame (and Image) name of a labeled frame: its path with '/' written '__'.

    NWB names cannot hold '/' (and DANDI flags ':'), so both become '__'.
    """
    return re.sub(r"[/\\:]", "__", image_path)


def validate_training(labels: TrainingLabels) -> None:
    """Raise ``ValueError`` naming the camera and field at fault."""
    where = f"TrainingLabels {labels.camera_name!r}"
    if not isinstance(labels.camera_name, str) or not OBJECT_NAME.match(labels.camera_name):
        raise NwbError(f"{where}: camera_name is not a valid object name")
    if not labels.bodyparts or len(set(labels.bodyparts)) != len(labels.bodyparts):
        raise NwbError(f"{where}: bodyparts must be non-empty and unique")
    n_frames = len(labels.image_paths)
    if n_frames == 0:
        raise NwbError(f"{where}: image_paths is empty")
    names = [training_frame_name(path) for path in labels.image_paths]
    if len(set(names)) != n_frames:
        raise NwbError(f"{where}: image_paths repeat")
    keypoints = float_array(labels.keypoints, f"{where}: keypoints", (n_frames, len(labels.bodyparts), 2))
    if np.any(np.isinf(keypoints)):
        raise NwbError(f"{where}: keypoints hold infinite values")
    edges_array(labels.skeleton_edges, len(labels.bodyparts), where)
    if labels.images is None:
        return
    if len(labels.images) != n_frames:
        raise NwbError(f"{where}: {len(labels.images)} images for {n_frames} image_paths")
    for path, image in zip(labels.image_paths, labels.images):
        image = np.asarray(image)
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise NwbError(
                f"{where}: image {path!r} must be (H, W) or (H, W, 3) uint8, got {image.shape} {image.dtype}"
            )


def _training_images(labels: TrainingLabels, name: str) -> Images:
    """The labeled frames' pixels as an ``Images`` container (only called when ``labels.images`` is given)."""
    assert labels.images is not None
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
                raise NwbError(f"processing/{BEHAVIOR_MODULE}/{name} already exists in the NWB file")
        check_skeleton_fits(nwbfile, names.skeleton, item.bodyparts, item.skeleton_edges)
    cameras = [item.camera_name for item in labels]
    if len(set(cameras)) != len(cameras):
        raise NwbError(f"training labels repeat a camera: {cameras}")
    for item in labels:
        names = camera_object_names(item.camera_name)
        skeleton = skeleton_for(nwbfile, names.skeleton, item.bodyparts, item.skeleton_edges)
        module = behavior_module(nwbfile)
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
