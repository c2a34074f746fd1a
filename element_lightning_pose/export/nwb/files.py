"""NWB files on disk: written whole or not at all, appended to only when they are the same
subject's and session's, and the source videos placed beside them as DANDI lays them out.
"""

from __future__ import annotations

import os
import shutil
import stat
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from pynwb import NWBHDF5IO, NWBFile

from element_lightning_pose.engine.atomic import atomic_output
from element_lightning_pose.engine.safe_paths import inside_root
from element_lightning_pose.engine.types import PathLike
from element_lightning_pose.export.nwb.dandi import build_nwbfile, dandi_filename, dandi_path
from element_lightning_pose.export.nwb.inputs import CameraPose, NwbError, SessionInfo, SubjectInfo, TrainingLabels
from element_lightning_pose.export.nwb.pose import add_pose, relative_video_path, validate_camera
from element_lightning_pose.export.nwb.pose3d import MultiCameraPose, add_multicam_pose, validate_multicam
from element_lightning_pose.export.nwb.training import add_training


class ForeignNWBFileError(NwbError):
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
        video = Path(relative_video_path(camera.video_path, path.parent))
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
            raise NwbError(
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
            raise NwbError(f"with dandi_layout, path is the dandiset folder, not a file: {path}")
        path = path / dandi_path(subject.subject_id, session.session_id)
    elif path.is_dir():
        path = path / dandi_filename(subject.subject_id, session.session_id)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    if path.exists():  # overwrite=True replaces this subject's and session's file only
        check_same_subject_and_session(path, subject.subject_id, session.session_id, action="replace", strict=True)
    if not cameras and not multicam and not training:
        raise NwbError("nothing to write: no cameras, no multi-camera pose and no training labels")
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
        raise NwbError("nothing to append: no cameras, no multi-camera pose and no training labels")
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
