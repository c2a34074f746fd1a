"""Other tools' labels written as a new Lightning Pose project: a SLEAP file (``.slp``, ``.pkg.slp``).

Lightning Pose and DeepLabCut projects need no import (:func:`~..data.projects.load_project`
reads them where they are). A SLEAP file, read by :func:`~..data.sleap.read_sleap` (one animal,
user instances only), becomes:

- ``CollectedData.csv`` (the engine's keypoint writer, scorer ``sleap``);
- ``labeled-data/<video>/img<frame>.png`` for every labeled frame: from the source video with its
  +-2 context frames (:func:`~.selection.export_frames`) when the video is found, else from the
  images the file embeds (no context frames). Where both exist the embedded images are written
  first and the video's frames must match them, which checks that SLEAP's frame numbers and
  this engine's decoding mean the same frames;
- a link to each video found in ``videos/``, and ``elp_project.yaml`` with the body parts, the
  skeleton's edges and the file it came from.

:func:`import_sleap` writes it all in a staging folder beside the target, reads it back with
:func:`~..data.projects.load_project` (the checks every project gets), and only then renames it
into place: a failed import leaves nothing behind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from element_lightning_pose.engine.atomic import atomic_directory, atomic_output, write_text_atomic
from element_lightning_pose.engine.data.keypoints import write_keypoint_csv
from element_lightning_pose.engine.data.labels import LabeledFrames
from element_lightning_pose.engine.data.projects import DEFAULT_CSV, SETTINGS_FILE, load_project
from element_lightning_pose.engine.data.sleap import SleapLabels, SleapVideo, read_embedded, read_sleap
from element_lightning_pose.engine.data.video import VideoError, video_info
from element_lightning_pose.engine.errors import ElpError, ProjectError
from element_lightning_pose.engine.labeling.selection import FRAME_DIGITS, export_frames
from element_lightning_pose.engine.types import PathLike

logger = logging.getLogger(__name__)

SLEAP_SCORER = "sleap"


@dataclass
class SleapImport:
    """What :func:`import_sleap` made: the project, its labels as the engine reads them, notes."""

    project: Path
    labels: LabeledFrames
    videos: list[str]
    notes: list[str]


def import_sleap(slp_path: PathLike, project_dir: PathLike, *, video_roots: list[Path] | None = None) -> SleapImport:
    """Write the labels of the SLEAP file ``slp_path`` as a new Lightning Pose project at
    ``project_dir``, validated by :func:`~..data.projects.load_project`; atomic (a failure leaves
    no folder). ``project_dir`` must not exist. A source video outside ``video_roots`` (when
    given) is not read."""
    slp_path, project_dir = Path(slp_path), Path(project_dir)
    if project_dir.exists() or project_dir.is_symlink():
        raise ProjectError(f"{project_dir}: exists already; a SLEAP file is imported into a new project folder")
    if not project_dir.parent.is_dir():
        raise ProjectError(f"{project_dir.parent}: folder not found")
    sleap = read_sleap(slp_path, video_roots=video_roots)
    with atomic_directory(project_dir) as staging:
        try:
            image_paths = _write_frames(sleap, staging)
            write_keypoint_csv(
                staging / DEFAULT_CSV, sleap.keypoints, sleap.bodyparts, ("x", "y"), SLEAP_SCORER, index=image_paths
            )
            settings = {"bodyparts": sleap.bodyparts, "skeleton": sleap.skeleton, "imported_from": str(slp_path)}
            write_text_atomic(staging / SETTINGS_FILE, yaml.safe_dump(settings, sort_keys=False))
            load_project(staging)  # the engine's reader checks the table and every image before the rename
        except ElpError as exc:  # say where the project would be, not the staging folder
            raise ProjectError(f"{slp_path}: {str(exc).replace(str(staging), str(project_dir))}") from None
    labels, _ = load_project(project_dir)
    for note in sleap.notes:
        logger.info("%s: %s", slp_path, note)
    videos = project_dir / "videos"
    linked = sorted(p.name for p in videos.iterdir()) if videos.is_dir() else []
    return SleapImport(project_dir, labels, linked, sleap.notes)


def _write_frames(sleap: SleapLabels, root: Path) -> list[str]:
    """Write every labeled frame's image (and context frames where the video is found); return
    each row's image path relative to ``root``."""
    image_of: dict[tuple[int, int], str] = {}
    for position, video in enumerate(sleap.videos):
        frames = [frame for row_video, frame in sleap.rows if row_video == position]
        where = f"video {video.index} ({video.recorded})"
        embedded = read_embedded(video, frames)
        for frame, image in embedded.items():
            _write_png(root / "labeled-data" / video.name / f"img{frame:0{FRAME_DIGITS}d}.png", image)
        if video.source is not None:
            link = _link_video(video, root)
            _check_video(video, frames, where)
            paths = export_frames(link, frames, root)
        else:
            missing = [frame for frame in frames if frame not in embedded]
            if missing:
                raise ProjectError(f"{where}: frame {missing[0]} is neither embedded in the file nor in a video found")
            paths = [f"labeled-data/{video.name}/img{frame:0{FRAME_DIGITS}d}.png" for frame in frames]
        image_of.update({(position, frame): image for frame, image in zip(frames, paths)})
    return [image_of[row] for row in sleap.rows]


def _write_png(path: Path, image: np.ndarray) -> None:
    pixels = image if image.ndim == 2 else image[..., ::-1]  # OpenCV writes BGR
    with atomic_output(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(pixels)):
            raise ProjectError(f"{path}: OpenCV could not write the image")


def _link_video(video: SleapVideo, root: Path) -> Path:
    assert video.source is not None
    link = root / "videos" / f"{video.name}{video.source.suffix}"
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(video.source)
    return link


def _check_video(video: SleapVideo, frames: list[int], where: str) -> None:
    """The video found is the one labeled: the frame size SLEAP recorded, every labeled frame in it."""
    assert video.source is not None
    try:
        info = video_info(video.source)
    except VideoError as exc:
        raise ProjectError(f"{where}: {exc}") from None
    if video.frame_size is not None and video.frame_size != (info.height, info.width):
        height, width = video.frame_size
        raise ProjectError(
            f"{where}: {video.source} has frames of {info.width}x{info.height}, SLEAP recorded {width}x{height}; "
            "another video than the one labeled?"
        )
    outside = [frame for frame in frames if frame >= info.n_frames]
    if outside:
        raise ProjectError(
            f"{where}: frame {outside[0]} is labeled but {video.source} has {info.n_frames} frames; "
            "another video than the one labeled?"
        )
