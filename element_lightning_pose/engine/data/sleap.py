"""SLEAP labels files (``.slp``, ``.pkg.slp``) read through sleap-io, as one single-animal table.

sleap-io is an optional dependency (``pip install "element-lightning-pose[sleap]"``), imported
when a SLEAP file is read. What :func:`read_sleap` takes, and how:

- one skeleton, and one *user* instance per labeled frame (a single-animal project); a file with
  several skeletons, or a frame with several user instances, is refused naming the frame;
- predicted instances are not labels: they are left out, and a frame that holds only predictions
  is not read (a note says how many);
- body parts are the skeleton's nodes in order; a node marked not visible is NaN (unlabeled);
- coordinates are copied as they are: SLEAP (format 1.1 on, older files shifted by sleap-io),
  Lightning Pose and DeepLabCut all put the centre of the top-left pixel at (0, 0);
- each video's frames come from its source video when it is found (where SLEAP recorded it,
  else beside the ``.slp``) and from the images a labels package (``.pkg.slp``) embeds
  (:func:`read_embedded`); whether it embeds them is read from the file's HDF5 groups, not from
  metadata that SLEAP 1.x did not write, and a source that is itself a SLEAP file (a package
  made from another) is not a video;
- a multi-view SLEAP session (a RecordingSession of two or more cameras), a cropped video and an
  image sequence without embedded images are refused.

:func:`element_lightning_pose.engine.labeling.imports.import_sleap` writes what is read here as
a new Lightning Pose project.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np

from element_lightning_pose.engine.errors import ElpError, ProjectError
from element_lightning_pose.engine.types import PathLike

logger = logging.getLogger(__name__)

SLEAP_SUFFIX = ".slp"
INSTALL_HINT = 'pip install "element-lightning-pose[sleap]"'
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")


@dataclass
class SleapVideo:
    """One video of a SLEAP file that holds labeled frames, and where its frames come from."""

    index: int  # its position in the file's list of videos
    recorded: str  # the file name SLEAP recorded (the source video's, for embedded images)
    name: str  # the folder under labeled-data/ (and the link's name in videos/)
    source: Path | None  # the video file, when found
    embedded: Any = None  # sleap-io's Video of the embedded images, when the file has them
    frame_size: tuple[int, int] | None = None  # (height, width) as SLEAP recorded it


@dataclass
class SleapLabels:
    """The labels of a SLEAP file as one single-animal table (rows sorted by video, frame)."""

    path: Path
    bodyparts: list[str]
    skeleton: list[list[str]]
    videos: list[SleapVideo]
    rows: list[tuple[int, int]]  # (position in ``videos``, frame index) of each row
    keypoints: np.ndarray  # (N, K, 2) in pixels, NaN where a node is not visible
    notes: list[str] = field(default_factory=list)


def _sleap_io(path: Path) -> Any:
    try:
        import sleap_io  # optional and heavy (skia, ffmpeg, NWB): only for this import
    except ImportError:
        raise ProjectError(f"{path}: reading SLEAP files needs sleap-io: {INSTALL_HINT}") from None
    return sleap_io


def check_sleap_file(path: PathLike) -> Path:
    """``path`` if it is an existing ``.slp`` file (``.pkg.slp`` included), else ProjectError."""
    path = Path(path)
    if path.suffix.lower() != SLEAP_SUFFIX:
        raise ProjectError(f"{path}: not a SLEAP labels file (expected a .slp or .pkg.slp file)")
    if not path.is_file():
        raise ProjectError(f"{path}: SLEAP labels file not found")
    return path


def read_sleap(path: PathLike, *, video_roots: list[Path] | None = None) -> SleapLabels:
    """The single-animal user labels of a SLEAP file (see the module's notes for what is refused).

    A source video outside ``video_roots`` (when given) is not used: the app reads nothing
    outside its roots.
    """
    path = check_sleap_file(path)
    sio = _sleap_io(path)
    try:
        labels = sio.load_slp(str(path), open_videos=False)
    except Exception as exc:  # h5py and sleap-io raise many types for a damaged or foreign file
        raise ProjectError(f"{path}: not a readable SLEAP labels file ({type(exc).__name__}: {exc})") from None
    _refuse_sessions(path, labels)
    if len(labels.skeletons) != 1:
        names = [s.name for s in labels.skeletons]
        raise ProjectError(
            f"{path}: {len(names)} skeletons {names}; a single-animal project has one skeleton"
            if names
            else f"{path}: no skeleton (nothing was labeled)"
        )
    skeleton = labels.skeletons[0]
    bodyparts = [str(node) for node in skeleton.node_names]
    if not bodyparts:
        raise ProjectError(f"{path}: skeleton {skeleton.name!r} has no nodes")
    for name in bodyparts:  # a label table's header cell: stripped when read, one line
        if not name.strip() or name != name.strip() or any(c in name for c in "\n\r"):
            raise ProjectError(f"{path}: skeleton {skeleton.name!r}: node name {name!r} cannot be a body-part name")
    edges = [[bodyparts[a], bodyparts[b]] for a, b in skeleton.edge_inds]

    found: dict[tuple[int, int], np.ndarray] = {}
    predicted_only = 0
    video_position = {id(video): i for i, video in enumerate(labels.videos)}
    for frame in labels.labeled_frames:
        users = frame.user_instances
        if not users:
            predicted_only += bool(frame.predicted_instances)
            continue
        index = video_position[id(frame.video)]
        key = (index, int(frame.frame_idx))
        where = f"{path}: video {index} ({_recorded_name(frame.video)}), frame {key[1]}"
        if len(users) > 1 or key in found:
            count = len(users) + (key in found)
            raise ProjectError(
                f"{where}: {count} user instances; only single-animal files (one instance per frame) are imported"
            )
        instance = users[0]
        if instance.skeleton is not skeleton:
            raise ProjectError(f"{where}: an instance of another skeleton than {skeleton.name!r}")
        xy = np.asarray(instance.numpy(invisible_as_nan=True), dtype=float)
        xy[np.isnan(xy).any(axis=1)] = np.nan  # a point is labeled (x and y) or not at all
        found[key] = xy
    if not found:
        raise ProjectError(
            f"{path}: no user-labeled frame"
            + (
                f" ({predicted_only} frame(s) hold only predicted instances, which are not labels)"
                if predicted_only
                else ""
            )
        )
    notes = []
    if predicted_only:
        notes.append(
            f"{predicted_only} frame(s) hold only predicted instances: not imported (predictions are not labels)"
        )
    used = sorted({index for index, _ in found})
    videos = _videos(path, [labels.videos[i] for i in used], used, video_roots, notes)
    position = {video.index: i for i, video in enumerate(videos)}
    keys = sorted(found)
    return SleapLabels(
        path,
        bodyparts,
        edges,
        videos,
        [(position[index], frame) for index, frame in keys],
        np.stack([found[key] for key in keys]),
        notes,
    )


def _refuse_sessions(path: Path, labels: Any) -> None:
    for session in getattr(labels, "sessions", None) or []:
        cameras = len(getattr(session, "cameras", None) or [])
        if cameras > 1:
            raise ProjectError(
                f"{path}: a multi-view SLEAP session ({cameras} cameras) is not imported; export each camera's "
                "labels to a file of its own, or build a Lightning Pose multi-view project (CollectedData_<view>.csv)"
            )


def _recorded_name(video: Any) -> str:
    """The file name SLEAP recorded for a video: its source's for embedded images."""
    source = getattr(video, "source_video", None)
    filename = (source if source is not None else video).filename
    return str(filename[0] if isinstance(filename, list) and filename else filename)


def _embedding(path: Path, videos: list[Any], indices: list[int]) -> set[int]:
    """The indices (of ``indices``) of the videos whose frames the SLEAP file ``path`` embeds.

    Decided from the file, as SLEAP and sleap-io lay a package out: the video points at the file
    itself (``"."``, which sleap-io reads as ``path``) and its dataset (``video<index>/video``
    unless the metadata names another) holds images beside a non-empty ``frame_numbers``. The
    metadata's ``has_embedded_images`` and ``type`` are not asked: SLEAP 1.x wrote neither."""
    import h5py  # comes with sleap-io, as optional as it

    embedding = set()
    try:
        with h5py.File(path, "r") as h5:
            for index, video in zip(indices, videos):
                filename = video.filename
                if not isinstance(filename, str) or Path(filename).resolve() != path.resolve():
                    continue
                stored = h5.get(video.backend_metadata.get("dataset") or f"video{index}/video")
                if isinstance(stored, h5py.Group):
                    stored = stored.get("video")
                if not isinstance(stored, h5py.Dataset) or not stored.shape or not stored.shape[0]:
                    continue
                numbers = stored.parent.get("frame_numbers")
                if isinstance(numbers, h5py.Dataset) and numbers.shape and numbers.shape[0]:
                    embedding.add(index)
    except (OSError, KeyError, ValueError) as exc:  # h5py's errors for a damaged file or a bad name
        raise ProjectError(f"{path}: not a readable SLEAP labels file ({type(exc).__name__}: {exc})") from None
    return embedding


def _is_sleap_file(recorded: str) -> bool:
    """Whether a recorded source is a SLEAP file: a package re-saved from another, not a video."""
    return PureWindowsPath(recorded).suffix.lower() == SLEAP_SUFFIX


def _videos(
    path: Path, videos: list[Any], indices: list[int], roots: list[Path] | None, notes: list[str]
) -> list[SleapVideo]:
    embedding = _embedding(path, videos, indices)
    found: list[SleapVideo] = []
    taken: set[str] = set()
    for index, video in zip(indices, videos):
        recorded = _recorded_name(video)
        if getattr(video, "is_cropped", False):
            raise ProjectError(
                f"{path}: video {index} ({recorded}) is a crop of a video; cropped videos are not imported"
            )
        embedded = video if index in embedding else None
        source_video = video.source_video if embedded is not None and video.source_video is not None else video
        is_sequence = isinstance(source_video.filename, list)
        if is_sequence and embedded is None:
            raise ProjectError(
                f"{path}: video {index} is an image sequence ({recorded}, ...); export a labels package "
                "(.pkg.slp, frames embedded) from SLEAP to import it"
            )
        from_package = embedded is not None and _is_sleap_file(recorded)
        skip = is_sequence or source_video is embedded or from_package
        source = None if skip else _find_video(path, recorded, roots)
        if source is None and embedded is None:
            raise ProjectError(
                f"{path}: video {index} ({recorded}): not found where SLEAP recorded it nor beside the .slp"
                + (" (inside the app's folders)" if roots is not None else "")
                + ", and the file embeds no frames; put the video beside the .slp, or export a labels "
                "package (.pkg.slp) from SLEAP"
            )
        if source is None:
            notes.append(
                f"video {index} ({recorded}): {'a SLEAP file, not a video' if from_package else 'not found'}; "
                "labeled frames taken from the images the file embeds, without context frames"
            )
        name = _folder_name(recorded, index, path, taken)
        taken.add(name)
        shape = source_video.backend_metadata.get("shape") or video.backend_metadata.get("shape")
        frame_size = (int(shape[1]), int(shape[2])) if shape is not None and len(shape) >= 3 else None
        found.append(SleapVideo(index, recorded, name, source, embedded, frame_size))
    return found


def _find_video(path: Path, recorded: str, roots: list[Path] | None) -> Path | None:
    """The video SLEAP recorded, where it says (relative to the .slp when relative) or beside the .slp."""
    candidates = []
    if recorded and recorded != ".":
        given = Path(recorded)
        candidates.append(given if given.is_absolute() else path.parent / given)
        candidates.append(path.parent / PureWindowsPath(recorded).name)  # moved, or recorded on Windows
    for candidate in candidates:
        if not candidate.is_file():
            continue
        real = candidate.resolve()
        if roots is not None and not any(real.is_relative_to(root.resolve()) for root in roots):
            continue
        return real
    return None


def _folder_name(recorded: str, index: int, path: Path, taken: set[str]) -> str:
    stem = PureWindowsPath(recorded).stem if recorded and recorded != "." else ""
    name = _UNSAFE.sub("_", stem).lstrip(".-")[:100] or f"{_UNSAFE.sub('_', path.stem).lstrip('.-')}_video{index}"
    return name if name not in taken else f"{name}_{index}"


def read_embedded(video: SleapVideo, frames: list[int]) -> dict[int, np.ndarray]:
    """The images a labels package embeds for ``frames`` of ``video`` (RGB, or (H, W) grey), by
    frame; a frame the file does not embed is absent."""
    embedded = video.embedded
    if embedded is None:
        return {}
    images: dict[int, np.ndarray] = {}
    try:
        embedded.open()
        available = {int(k) for k in embedded.backend.frame_map}
        for frame in frames:
            if frame in available:
                image = np.asarray(embedded[frame])
                images[frame] = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    except ElpError:
        raise
    except Exception as exc:  # sleap-io and h5py raise many types for damaged embedded images
        raise ProjectError(
            f"video {video.index} ({video.recorded}): its embedded images are unreadable ({type(exc).__name__}: {exc})"
        ) from None
    finally:
        embedded.close()
    return images
