"""Labeled projects on disk: which layout a folder holds, its labels and its videos.

Three layouts (:func:`detect_layout`): Lightning Pose's (one ``CollectedData.csv``), DeepLabCut's
(``config.yaml`` + ``labeled-data/``, :mod:`.dlc`) and Lightning Pose's multi-view layout (one
``CollectedData_<view>.csv`` per view, the same instants in each). :func:`load_project` is the one
entry: the labels of any layout as one :class:`~.labels.LabeledFrames`, and the project's videos.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from element_lightning_pose.engine.data.dlc import (
    DLC_CONFIG,
    DLC_LABELED_DIR,
    explain_dlc_project,
    is_dlc_project,
    read_dlc_project,
)
from element_lightning_pose.engine.data.labels import LabeledFrames, concat_labels, read_labels
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.safe_paths import check_name
from element_lightning_pose.engine.types import PathLike

logger = logging.getLogger(__name__)


VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
DEFAULT_CSV = "CollectedData.csv"
# what the labels do not say (a new project's body parts and views, a skeleton): the app's, and an import's
SETTINGS_FILE = "elp_project.yaml"


def find_videos(video_dir: PathLike) -> list[Path]:
    """Video files (mp4/avi/mov/mkv, any case) directly in ``video_dir``, sorted; hidden files skipped."""
    video_dir = Path(video_dir)
    if not video_dir.is_dir():
        raise ProjectError(f"{video_dir}: video folder not found")
    return sorted(
        p
        for p in video_dir.iterdir()
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".")
    )


def load_project(
    root: PathLike,
    csv_file: str | Sequence[str] = DEFAULT_CSV,
    video_dir: str = "videos",
    view_names: Sequence[str] | None = None,
) -> tuple[LabeledFrames, list[Path]]:
    """Labels of the project at ``root`` and the videos in its ``video_dir`` (none if absent).

    ``csv_file`` is one label CSV, a list of them (one per view, :func:`read_multiview_labels`)
    or a DeepLabCut ``config.yaml``; the default, when ``CollectedData.csv`` is absent, takes
    the layout :func:`detect_layout` finds. A multi-view project's videos are those whose
    file name contains one of its view names.
    """
    root = Path(root)
    if not root.is_dir():
        raise ProjectError(f"{root}: project folder not found")
    labels = read_project_labels(root, csv_file, view_names)
    videos = find_videos(root / video_dir) if (root / video_dir).is_dir() else []
    if labels.views is not None:
        names = set(labels.views)
        videos = [v for v in videos if any(name in v.name for name in names)]
    return labels, videos


@dataclass(frozen=True)
class ProjectLayout:
    """How a project folder keeps its labels.

    ``kind`` is ``lightning_pose`` (one ``CollectedData.csv``), ``deeplabcut`` (``config.yaml``
    + ``labeled-data/<video>/CollectedData_<scorer>.csv``) or ``multiview`` (one CSV per view).
    ``csv_file`` is what ``data.csv_file`` names: a CSV, ``config.yaml``, or the list of CSVs.
    """

    kind: str
    csv_file: str | list[str]
    view_names: list[str]


def detect_layout(root: PathLike) -> ProjectLayout:
    """The layout of the project at ``root``: ``CollectedData.csv`` first, then a DeepLabCut
    ``config.yaml`` (with ``bodyparts``) beside ``labeled-data/``, then two or more
    ``CollectedData_<view>.csv`` (Lightning Pose's multi-view layout); else ProjectError."""
    root = Path(root)
    if not root.is_dir():
        raise ProjectError(f"{root}: project folder not found")
    if (root / DEFAULT_CSV).is_file():
        return ProjectLayout("lightning_pose", DEFAULT_CSV, [])
    if is_dlc_project(root):
        return ProjectLayout("deeplabcut", DLC_CONFIG, [])
    per_view = sorted(p.name for p in root.glob("CollectedData_*.csv") if p.is_file())
    if len(per_view) >= 2:
        return ProjectLayout("multiview", per_view, derive_view_names(per_view))
    explain_dlc_project(root)  # a broken config.yaml, or no labeled-data/: say so, not "no labels"
    raise ProjectError(
        f"{root}: no labels found: neither {DEFAULT_CSV}, nor a DeepLabCut {DLC_CONFIG} (with bodyparts) "
        f"beside {DLC_LABELED_DIR}/, nor two or more CollectedData_<view>.csv (found {per_view or 'none'})"
    )


def read_project_labels(
    root: PathLike,
    csv_file: str | Sequence[str] = DEFAULT_CSV,
    view_names: Sequence[str] | None = None,
    *,
    check_images: bool = True,
) -> LabeledFrames:
    """The labels of any layout (see :func:`load_project`), image paths relative to ``root``."""
    root = Path(root)
    if not isinstance(csv_file, str):
        return read_multiview_labels(root, list(csv_file), view_names, check_images=check_images)
    if csv_file == DEFAULT_CSV and not (root / csv_file).exists():
        layout = detect_layout(root)
        logger.info("%s: no %s; reading it as a %s project", root, DEFAULT_CSV, layout.kind)
        if layout.kind == "multiview":
            return read_multiview_labels(root, list(layout.csv_file), layout.view_names, check_images=check_images)
        csv_file = str(layout.csv_file)
    if Path(csv_file).name == DLC_CONFIG:  # a DeepLabCut project named by its config.yaml
        return read_dlc_project((root / csv_file).parent, check_images=check_images)
    return read_labels(root / csv_file, root, check_images=check_images)


def derive_view_names(csv_files: Sequence[str]) -> list[str]:
    """View names from per-view label files: ``CollectedData_top.csv`` -> ``top``."""
    stems = [Path(name).stem for name in csv_files]
    return [stem[len("CollectedData_") :] if stem.startswith("CollectedData_") else stem for stem in stems]


def read_multiview_labels(
    root: PathLike,
    csv_files: Sequence[str],
    view_names: Sequence[str] | None = None,
    *,
    check_images: bool = True,
) -> LabeledFrames:
    """Lightning Pose's multi-view layout: one label CSV per view, the same frames in each.

    Returns the views' labels concatenated (view after view, each in its CSV's row order, so
    row ``i`` of every view is the same instant), ``views`` naming each row's view. The views
    must list the same body parts and the same instants in the same order: row ``i`` of every
    view must be the same frame (:func:`instant_of`), not only the same number of rows.
    """
    root = Path(root)
    csv_files = list(csv_files)
    names = list(view_names) if view_names else derive_view_names(csv_files)
    if not csv_files:
        raise ProjectError(f"{root}: data.csv_file is an empty list (one label CSV per view expected)")
    if len(names) != len(csv_files):
        raise ProjectError(
            f"{root}: data.view_names has {len(names)} name(s) {names} for {len(csv_files)} label file(s) {csv_files}"
        )
    if len(set(names)) != len(names):
        raise ProjectError(f"{root}: data.view_names repeats a view: {names}")
    for name in names:  # a view names per-view model folders and frame caches
        check_name(name, f"{root}: view name")
    parts = [read_labels(root / name, root, check_images=check_images) for name in csv_files]
    first = parts[0]
    for part in parts[1:]:
        if part.bodyparts != first.bodyparts:
            raise ProjectError(
                f"{part.csv_path}: body parts {part.bodyparts} differ from {first.csv_path.name}'s "
                f"{first.bodyparts}; every view labels the same body parts"
            )
        if len(part) != len(first):
            raise ProjectError(
                f"{part.csv_path}: {len(part)} labeled frames, {first.csv_path.name} has {len(first)}; "
                "the same frames must be labeled in every view"
            )
    for part, name in zip(parts[1:], names[1:]):
        _check_same_instants(first, names[0], part, name)
    return concat_labels(parts, root, first.csv_path, names)


_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def instant_of(image_path: str, view: str) -> tuple[str | None, str]:
    """What names the instant of a view's labeled image, to compare it with the other views':
    its folder with the view's name (its last occurrence) taken out, None when the folder does
    not hold the name, and its frame (the last number in the file name, else the file name
    without the view's name).

    Lightning Pose's layout, ``labeled-data/<session>_<view>/img<frame>.png``, gives
    ``("labeled-data/<session>_", "<frame>")`` in every view.
    """
    path = PurePosixPath(image_path)
    head, found, tail = str(path.parent).rpartition(view)  # the last one: "stopwatch_top" is session "stopwatch"
    folder = head + tail if found else None
    number = _LAST_NUMBER.search(path.stem)
    frame = str(int(number.group(1))) if number else path.name.replace(view, "")
    return folder, frame


def _check_same_instants(first: LabeledFrames, first_view: str, part: LabeledFrames, view: str) -> None:
    """Row ``i`` of ``part`` must be the instant of row ``i`` of ``first`` (same frame; same
    folder where both folders name their view)."""
    ours = [instant_of(p, first_view) for p in first.image_paths]
    theirs = [instant_of(p, view) for p in part.image_paths]
    for row, ((folder_a, frame_a), (folder_b, frame_b)) in enumerate(zip(ours, theirs)):
        same_folder = folder_a is None or folder_b is None or folder_a == folder_b
        if frame_a != frame_b or not same_folder:
            order = (
                "; they list the same frames in another order: sort the CSVs alike"
                if sorted(map(str, ours)) == sorted(map(str, theirs))
                else ""
            )
            raise ProjectError(
                f"{part.csv_path}, row {row + 1} ({part.image_paths[row]}): not the instant of row {row + 1} of "
                f"{first.csv_path.name} ({first.image_paths[row]}); row i of every view must be the same "
                f"frame{order}"
            )


def project_views(
    project_root: PathLike, csv_file: str | Sequence[str], view_names: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """``(view name, label CSV)`` of each camera view of the project: from ``csv_file`` (a list,
    one CSV per view; ``data.csv_file``), or the layout found on disk when the default CSV is
    named but absent; empty for a single-view project."""
    if not isinstance(csv_file, str):
        names = list(view_names) if view_names else derive_view_names(list(csv_file))
        return list(zip(names, csv_file))
    if csv_file == DEFAULT_CSV and not (Path(project_root) / DEFAULT_CSV).exists():
        layout = detect_layout(project_root)
        if layout.kind == "multiview":
            return list(zip(layout.view_names, list(layout.csv_file)))
    return []
