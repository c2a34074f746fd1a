"""Projects as the app sees them: found under the roots, opened, created, described.

A project is a folder in one of the layouts the engine reads (Lightning Pose's, DeepLabCut's, a
multi-view project) or a new one the app created, which has no labels yet. What the labels do
not say - the body parts and views of a new project, a skeleton - the app keeps in the project's
``elp_project.yaml``; the label tables stay the project's own files.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from element_lightning_pose.app.frames import cached_video_info
from element_lightning_pose.app.locations import Location
from element_lightning_pose.engine.atomic import write_text_atomic
from element_lightning_pose.engine.data.dlc import is_dlc_project, read_dlc_config
from element_lightning_pose.engine.data.projects import SETTINGS_FILE, VIDEO_SUFFIXES, detect_layout
from element_lightning_pose.engine.data.video import VideoError, video_info
from element_lightning_pose.engine.errors import ElpError, ProjectError
from element_lightning_pose.engine.labeling.rounds import MODELS_DIR
from element_lightning_pose.engine.labeling.selection import export_frames
from element_lightning_pose.engine.labeling.store import LabelConflictError, LabelStore
from element_lightning_pose.engine.safe_paths import check_name

VIDEO_DIR = "videos"
# folders a project keeps its own things in: not searched for other projects
_NOT_PROJECTS = {"labeled-data", VIDEO_DIR, MODELS_DIR, "checkpoints", "logs", "frame_cache", "__pycache__"}
MAX_DEPTH = 3


@dataclass
class VideoSummary:
    name: str  # relative to the project
    n_frames: int | None
    fps: float | None
    width: int | None
    height: int | None
    error: str | None = None


@dataclass
class ProjectSummary:
    """What the projects page and every other page show of a project."""

    key: str
    name: str
    layout: str  # lightning_pose | deeplabcut | multiview | new
    bodyparts: list[str]
    views: list[str]
    skeleton: list[list[str]]
    videos: list[VideoSummary] = field(default_factory=list)
    labeled: dict[str, dict[str, int]] = field(default_factory=dict)  # folder -> frames, labeled
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def is_project(folder: Path) -> bool:
    if (folder / SETTINGS_FILE).is_file() or is_dlc_project(folder):
        return True
    return (folder / "CollectedData.csv").is_file() or len(list(folder.glob("CollectedData_*.csv"))) >= 2


def find_projects(root: Path, max_depth: int = MAX_DEPTH) -> list[Path]:
    """Project folders under ``root`` (itself included), at most ``max_depth`` levels down; the
    folders a project keeps its own things in and hidden ones are not searched, nor are links."""
    found: list[Path] = []

    def walk(folder: Path, depth: int) -> None:
        if is_project(folder):
            found.append(folder)
            return
        if depth >= max_depth:
            return
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError:
            return
        for child in children:
            if not child.name.startswith(".") and child.name not in _NOT_PROJECTS:
                walk(child, depth + 1)

    walk(root, 0)
    return found


def read_settings(folder: Path) -> dict:
    """The app's settings of a project (``elp_project.yaml``): {} when there are none."""
    path = folder / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ProjectError(f"{path}: not valid YAML ({type(exc).__name__})") from None
    if not isinstance(values, dict):
        raise ProjectError(f"{path}: expected a mapping (bodyparts, views, skeleton)")
    return values


def check_bodyparts(bodyparts: object) -> list[str]:
    """Body-part names a label table and an NWB file can hold: unique, non-empty, no separators."""
    if not isinstance(bodyparts, list) or not bodyparts:
        raise ProjectError("bodyparts: give a non-empty list of names")
    names = []
    for name in bodyparts:
        if (
            not isinstance(name, str)
            or not name.strip()
            or any(c in name for c in ',"\n\r\t/\\')
            or name != name.strip()
        ):
            raise ProjectError(
                f"bodyparts: {name!r} is not a body-part name (no commas, quotes, slashes or spaces around it)"
            )
        names.append(name)
    if len(set(names)) != len(names):
        raise ProjectError(f"bodyparts: a name is given twice ({names})")
    return names


def check_skeleton(skeleton: object, bodyparts: list[str]) -> list[list[str]]:
    """Pairs of known body parts, each pair once."""
    if skeleton is None:
        return []
    if not isinstance(skeleton, list):
        raise ProjectError("skeleton: give a list of [body part, body part] pairs")
    pairs: list[list[str]] = []
    for pair in skeleton:
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise ProjectError(f"skeleton: {pair!r} is not a pair of body-part names")
        unknown = [p for p in pair if p not in bodyparts]
        if unknown or pair[0] == pair[1]:
            raise ProjectError(
                f"skeleton: {list(pair)} names {'unknown body parts ' + str(unknown) if unknown else 'one body part twice'}"
            )
        if sorted(pair) in [sorted(p) for p in pairs]:
            raise ProjectError(f"skeleton: {list(pair)} is given twice")
        pairs.append(list(pair))
    return pairs


def project_videos(folder: Path) -> list[Path]:
    """The project's videos: ``videos/`` (links followed), sorted by name."""
    videos = folder / VIDEO_DIR
    if not videos.is_dir():
        return []
    return sorted(p for p in videos.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith("."))


def open_store(folder: Path) -> LabelStore:
    """The project's label store (a new project's from its settings)."""
    settings = read_settings(folder)
    return LabelStore(folder, bodyparts=settings.get("bodyparts"), views=settings.get("views") or None)


def summarise(location: Location, *, with_videos: bool = True) -> ProjectSummary:
    """A project's summary; a project that cannot be read says why in ``error``, not by raising."""
    folder = location.path
    name = folder.name or str(folder)
    try:
        settings = read_settings(folder)
        try:
            layout = detect_layout(folder).kind
        except ProjectError:
            if not settings:
                raise
            layout = "new"
        store = open_store(folder)
        views = [v for v in store.views if v is not None]
        skeleton = settings.get("skeleton") or (
            read_dlc_config(folder).get("skeleton") if layout == "deeplabcut" else None
        )
        summary = ProjectSummary(
            location.key, name, layout, store.bodyparts, views, _skeleton_or_empty(skeleton, store.bodyparts)
        )
        summary.labeled = store.counts()
    except ElpError as exc:
        return ProjectSummary(location.key, name, "unreadable", [], [], [], error=str(exc))
    if with_videos:
        for video in project_videos(folder):
            relative = video.relative_to(folder).as_posix()
            try:
                info = cached_video_info(video)
                summary.videos.append(VideoSummary(relative, info.n_frames, info.fps, info.width, info.height))
            except VideoError as exc:
                summary.videos.append(VideoSummary(relative, None, None, None, None, error=str(exc)))
    return summary


def _skeleton_or_empty(skeleton: object, bodyparts: list[str]) -> list[list[str]]:
    try:
        return check_skeleton(skeleton or [], bodyparts)
    except ProjectError:  # a DeepLabCut skeleton naming parts no longer labeled: shown as none
        return []


def save_skeleton(folder: Path, skeleton: object) -> list[list[str]]:
    """Store a checked skeleton in the project's settings file (atomically)."""
    store = open_store(folder)
    pairs = check_skeleton(skeleton, store.bodyparts)
    settings = read_settings(folder)
    settings["skeleton"] = pairs
    write_text_atomic(folder / SETTINGS_FILE, yaml.safe_dump(settings, sort_keys=False))
    return pairs


def create_project(
    parent: Location,
    name: str,
    bodyparts: object,
    *,
    videos: list[Location],
    skeleton: object = None,
    views: object = None,
) -> Path:
    """A new project folder ``parent/name`` with its settings and links to ``videos`` in ``videos/``.

    The videos stay where they are (large files are linked, not copied). Nothing is created
    when a check fails; an existing folder is never reused.
    """
    check_name(name, "project name")
    names = check_bodyparts(bodyparts)
    pairs = check_skeleton(skeleton, names)
    if views is not None and not isinstance(views, list):
        raise ProjectError("views: give a list of view names (or none for a single-view project)")
    view_names = [check_name(v, "view name") for v in views or []]
    if len(set(view_names)) != len(view_names):
        raise ProjectError(f"views: a name is given twice ({view_names})")
    for video in videos:
        if not video.path.is_file() or video.path.suffix.lower() not in VIDEO_SUFFIXES:
            raise ProjectError(f"{video.key}: not a video file ({', '.join(VIDEO_SUFFIXES)})")
        video_info(video.path)  # refuse what does not decode before anything is created
    if view_names:
        for video in videos:
            if not any(v in video.path.name for v in view_names):
                raise ProjectError(f"{video.key}: a multi-view project's video names contain their view ({view_names})")
    folder = parent.child(name, "project name").path
    if folder.exists():
        raise ProjectError(f"{parent.key}/{name}: exists already; choose another name")
    folder.mkdir(parents=False)
    try:
        (folder / VIDEO_DIR).mkdir()
        for video in videos:
            target = folder / VIDEO_DIR / video.path.name
            if target.exists():
                raise ProjectError(f"{video.key}: two videos named {video.path.name}")
            os.symlink(video.path.resolve(), target)
        values = {"bodyparts": names, "skeleton": pairs} | ({"views": view_names} if view_names else {})
        write_text_atomic(folder / SETTINGS_FILE, yaml.safe_dump(values, sort_keys=False))
    except BaseException:
        _remove_tree(folder)
        raise
    return folder


def project_video(location: Location, video: str) -> Path:
    """The project's ``video`` (relative to the project): a video file inside the roots."""
    path = location.child(video, "video").path
    if path.suffix.lower() not in VIDEO_SUFFIXES or not path.is_file():
        raise ProjectError(f"video {video!r}: not a video of the project")
    return path


def view_of_video(store: LabelStore, video: Path) -> str | None:
    """The view a video shows in a multi-view project (the longest view name in its file name)."""
    named = [v for v in store.views if v is not None and v in video.name]
    if store.views != [None] and not named:
        raise ProjectError(f"{video.name}: its name contains none of the project's views {store.views}")
    return max(named, key=len) if named else None


def queue_frames(location: Location, video: Path, frames: list[int], base_revision: str) -> tuple[dict, str]:
    """Export ``frames`` of ``video`` with their context frames into the project's
    ``labeled-data/`` and queue them in its label tables; in a multi-view project the same
    frames of every view's video (named alike, the view's name swapped). Refused before any
    file is written when the labels changed since ``base_revision``. Returns the queued images
    by view and the new revision."""
    store = open_store(location.path)
    current = store.revision()
    if base_revision != current:
        raise LabelConflictError(
            f"{location.key}: the labels changed since this page read them (revision {base_revision}, now {current}); reload"
        )
    view = view_of_video(store, video)
    videos = (
        {view: video} if view is None else {v: video.with_name(video.name.replace(view, str(v))) for v in store.views}
    )
    for other in videos.values():
        if not other.is_file():
            raise ProjectError(f"{other.name}: no video of that view for the instant of {video.name}")
    images = {name: export_frames(path, frames, location.path) for name, path in videos.items()}
    return images, store.add_frames(images, base_revision=base_revision)


def _remove_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_symlink() or path.is_file():
            path.unlink()
        else:
            path.rmdir()
    folder.rmdir()
