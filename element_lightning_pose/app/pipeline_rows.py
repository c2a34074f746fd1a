"""The pipeline's rows about a project, for review and selection.

With a pipeline (:func:`.pipeline.configured`), a project has rows in it: the ``VideoSet``
versions registered from its folder, the ``Model`` rows trained from them, and, for each of its
videos, the ``PoseEstimation``, ``EnsembleSmoothing`` and ``Triangulation`` rows of the
recordings made of that video (a ``VideoRecording`` whose only file is the video, symbolic links
followed). :func:`project_rows` lists them.

**Files.** A row names its file relative to the pipeline's processed-data root, which need not
be one of the app's roots. Each file is resolved there (it may not leave that root) and then
looked for among the app's roots: one inside gets its ``<root>:<path>`` key and can be read;
one outside is listed as such and never read, nor even looked at. The review and select routes
name a row's file by its *reference*, ``pipeline:<Table>:<key>`` (the key spelled as
:func:`element_lightning_pose.paths.key_folder_name` spells it, one name per key);
:meth:`ProjectRows.file` finds it among the project's rows again and refuses one outside the
roots (:class:`~element_lightning_pose.engine.safe_paths.UnsafePathError`, answered 403).

**Queries.** Nothing a request sends reaches a query: rows are fetched whole or restricted by
keys the database returned, and matched to the project here. The process has one DataJoint
connection, which the server's threads share: the listing runs under :data:`.pipeline.DB_LOCK`.

The pipeline stores no reprojected 2D files of a triangulation (its per-camera reprojection
errors are columns of ``Triangulation.BodyPartPosition3D``), so a ``Triangulation`` row lists its
3D points file.
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from element_lightning_pose import paths
from element_lightning_pose.app import pipeline as app_pipeline
from element_lightning_pose.app.locations import location_of
from element_lightning_pose.app.projects import project_videos
from element_lightning_pose.app.settings import AppSettings
from element_lightning_pose.engine.errors import ElpError, ProjectError
from element_lightning_pose.engine.labeling.traces import EKS, PREDICTIONS, sniff
from element_lightning_pose.engine.safe_paths import UnsafePathError, inside_root

REFERENCE_PREFIX = "pipeline:"
POINTS3D = "points3d"
READABLE = "readable"
OUTSIDE_ROOTS = "outside the app's roots"
MISSING = "missing"
OUTSIDE_PROCESSED = "outside the pipeline's processed-data root"


@dataclass(frozen=True)
class RowFile:
    """The file a pipeline row names, and whether the app may read it."""

    table: str  # PoseEstimation | EnsembleSmoothing | Triangulation
    key: dict[str, Any]  # the row's primary key, as the database returned it
    role: str  # predictions | eks | points3d
    stored: str  # as the row stores it: relative to the processed-data root
    path: Path | None  # on this machine; None when the stored path would leave the processed root
    location: str | None  # its <root>:<path> key when it lies inside the app's roots and exists
    state: str  # READABLE | OUTSIDE_ROOTS | MISSING | OUTSIDE_PROCESSED

    @property
    def reference(self) -> str:
        return f"{REFERENCE_PREFIX}{self.table}:{key_name(self.key)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "key": json_key(self.key),
            "reference": self.reference,
            "role": self.role,
            "stored": self.stored,
            "location": self.location,
            "state": self.state,
        }


@dataclass
class VideoRows:
    """The rows about one video of the project."""

    video: Path
    recordings: list[dict] = field(default_factory=list)  # VideoRecording keys
    pose_estimations: list[dict] = field(default_factory=list)  # each with its "file" (a RowFile)
    ensembles: list[dict] = field(default_factory=list)
    triangulations: list[dict] = field(default_factory=list)

    def files(self) -> list[RowFile]:
        return [row["file"] for rows in (self.pose_estimations, self.ensembles, self.triangulations) for row in rows]


@dataclass
class ProjectRows:
    """A project's rows: its VideoSets, the models trained from them, and per video the rest."""

    project: Path
    project_dir: str | None  # relative to the pipeline's data roots; None when under none of them
    video_sets: list[dict]
    models: list[dict]
    videos: list[VideoRows]

    def of_video(self, video: Path) -> VideoRows | None:
        real = video.resolve()
        return next((rows for rows in self.videos if rows.video.resolve() == real), None)

    def file(self, reference: str) -> Path:
        """The readable file of the row ``reference`` names: a :class:`ProjectError` when no
        row of the project's videos has it or it is missing, an :class:`UnsafePathError` when
        it lies outside the app's roots or the processed-data root."""
        found = next((f for rows in self.videos for f in rows.files() if f.reference == reference), None)
        if found is None:
            raise ProjectError(f"file {reference!r}: no pipeline row about this project's videos has it")
        if found.state == READABLE and found.path is not None:
            return found.path
        where = f"{found.table} {key_name(found.key)}: its file {found.stored!r}"
        if found.state == MISSING:
            raise ProjectError(f"{where} is not on this machine (not under the pipeline's processed-data root)")
        if found.state == OUTSIDE_PROCESSED:
            raise UnsafePathError(f"{where} leads out of the pipeline's processed-data root; it is not read")
        raise UnsafePathError(
            f"{where} lies outside the app's roots; start the app with the pipeline's processed-data root "
            "as a --root to review it"
        )

    def to_dict(self, video: Path | None = None) -> dict[str, Any]:
        listed = self.videos if video is None else [r for r in self.videos if r.video.resolve() == video.resolve()]
        return {
            "project_dir": self.project_dir,
            "video_sets": [json_row(r) for r in self.video_sets],
            "models": [json_row(r) for r in self.models],
            "videos": [
                {
                    "video": rows.video.relative_to(self.project).as_posix(),
                    "recordings": [json_key(r) for r in rows.recordings],
                    "pose_estimations": [json_row(r) for r in rows.pose_estimations],
                    "ensembles": [json_row(r) for r in rows.ensembles],
                    "triangulations": [json_row(r) for r in rows.triangulations],
                }
                for rows in listed
            ],
        }


# ------------------------------------------------------------------------------------ listing


@app_pipeline.one_at_a_time
def project_rows(settings: AppSettings, project: Path, extra_videos: Iterable[Path] = ()) -> ProjectRows:
    """The pipeline's rows about ``project`` (its videos in ``videos/``, and ``extra_videos``).

    Raises :class:`~.pipeline.PipelineError` when there is no pipeline or it does not answer."""
    train = app_pipeline.activate(settings.roots)
    # activated together with train by the lab's pipeline (each checked: a lab may lack some)
    from element_lightning_pose import ensemble, model, multicam

    videos = list(dict.fromkeys([*project_videos(project), *extra_videos]))
    try:
        project_dir, video_sets = _video_sets(train, project)
        if not model.schema.is_activated():
            return ProjectRows(project, project_dir, video_sets, [], [VideoRows(v) for v in videos])
        models = _models(model, video_sets)
        rows = _recordings(model, videos)
        _pose_estimations(settings, model, rows, model.processed_dir(), {m["model_name"] for m in models})
        if ensemble.schema.is_activated():
            _ensembles(settings, ensemble, rows, ensemble.processed_dir())
        if multicam.schema.is_activated():
            _triangulations(settings, multicam, rows, multicam.processed_dir())
    except ElpError:
        raise
    except Exception as exc:  # a connection lost, a lab's schema without a column read here
        raise app_pipeline.PipelineError(
            f"pipeline rows of {project.name}: cannot read them ({type(exc).__name__}: {exc})"
        ) from None
    return ProjectRows(project, project_dir, video_sets, models, rows)


def _video_sets(train: Any, project: Path) -> tuple[str | None, list[dict]]:
    roots = train.root_dirs()
    names = _names_under(roots, project)
    fields = ("project_dir", "csv_file", "labels_hash", "n_labeled_frames", "video_set_description")
    found = [
        row
        for row in _fetch(train.VideoSet, *fields, order_by="video_set_id")
        if _same_file(roots, row["project_dir"], project, names)
    ]
    try:
        project_dir: str | None = paths.relative_to_roots(roots, project)
    except (FileNotFoundError, ValueError):
        project_dir = None
    return project_dir, found


def _models(model: Any, video_sets: list[dict]) -> list[dict]:
    ids = {int(row["video_set_id"]) for row in video_sets}
    fields = ("model_dir", "video_set_id", "paramset_idx", "training_id", "backbone", "model_type")
    found = [
        row
        for row in _fetch(model.Model, *fields, "model_description", order_by="model_name")
        if row["video_set_id"] is not None and int(row["video_set_id"]) in ids
    ]
    if found:
        stats = ("n_train", "n_val", "n_test", "val_mean_px", "test_mean_px", "test_p90_px")
        keys = [{"model_name": row["model_name"]} for row in found]
        evaluated = {r["model_name"]: r for r in _fetch(model.ModelEvaluation & keys, *stats)}
        for row in found:
            done = evaluated.get(row["model_name"])
            row["evaluation"] = {s: done[s] for s in stats} if done else None
    return found


def _recordings(model: Any, videos: Sequence[Path]) -> list[VideoRows]:
    """Each video with the keys of the recordings whose only file it is."""
    roots = model.root_dirs()
    primary = list(model.VideoRecording.primary_key)
    by_recording: dict[tuple, list[dict]] = {}
    for row in _fetch(model.VideoRecording.File, "file_path"):
        by_recording.setdefault(tuple(row[k] for k in primary), []).append(row)
    single = [(files[0], {k: files[0][k] for k in primary}) for files in by_recording.values() if len(files) == 1]
    out = []
    for video in videos:
        names = _names_under(roots, video)
        matched = [key for row, key in single if _same_file(roots, row["file_path"], video, names)]
        out.append(VideoRows(video, recordings=matched))
    return out


def _pose_estimations(
    settings: AppSettings, model: Any, rows: list[VideoRows], processed: Path, trained_here: set[str]
) -> None:
    recordings = [key for video in rows for key in video.recordings]
    if not recordings:
        return
    fields = ("predictions_file", "n_frames", "pose_estimation_time")
    for row in _fetch(model.PoseEstimation & recordings, *fields, order_by=["recording_id", "model_name"]):
        key = _primary(model.PoseEstimation, row)
        row["file"] = _row_file(settings, processed, "PoseEstimation", key, PREDICTIONS, row["predictions_file"])
        row["trained_from_project"] = row["model_name"] in trained_here
        _video_of(rows, row).pose_estimations.append(row)


def _ensembles(settings: AppSettings, ensemble: Any, rows: list[VideoRows], processed: Path) -> None:
    recordings = [key for video in rows for key in video.recordings]
    if not recordings:
        return
    table = ensemble.EnsembleSmoothing
    members: dict[tuple, list[str]] = {}
    for member in _fetch(table.Member & recordings):
        members.setdefault(_tuple(table, member), []).append(str(member["model_name"]))
    fields = ("output_file", "n_members", "n_frames")
    for row in _fetch(table & recordings, *fields, order_by=["recording_id", "ensemble_id"]):
        key = _primary(table, row)
        row["file"] = _row_file(settings, processed, "EnsembleSmoothing", key, EKS, row["output_file"])
        row["members"] = sorted(members.get(_tuple(table, row), []))
        _video_of(rows, row).ensembles.append(row)


def _triangulations(settings: AppSettings, multicam: Any, rows: list[VideoRows], processed: Path) -> None:
    recordings = [key for video in rows for key in video.recordings]
    if not recordings:
        return
    views = _fetch(multicam.MultiCameraRecording.View & recordings)
    if not views:
        return
    rig_primary = list(multicam.MultiCameraRecording.primary_key)
    rigs = [{k: view[k] for k in rig_primary} for view in views]
    table = multicam.Triangulation
    sources: dict[tuple, dict[str, str]] = {}
    for part, what in ((table.PoseSource, "model_name"), (table.EnsembleSource, "ensemble_id")):
        for source in _fetch(part & rigs):
            label = f"model {source[what]}" if what == "model_name" else f"ensemble {source[what]}"
            sources.setdefault(_tuple(table, source), {})[str(source["camera_name"])] = label
    fields = ("points_file", "n_frames", "cameras", "mean_reprojection_error", "triangulated_time")
    for row in _fetch(table & rigs, *fields, order_by=rig_primary):
        key = _primary(table, row)
        file = _row_file(settings, processed, "Triangulation", key, POINTS3D, row["points_file"])
        cameras = [str(c) for c in row["cameras"]]
        used = sources.get(_tuple(table, row), {})
        for view in views:
            if any(view[k] != row[k] for k in rig_primary):
                continue
            video = _video_of(rows, view)
            video.triangulations.append(
                {
                    **{k: v for k, v in row.items() if k != "cameras"},
                    "cameras": cameras,
                    "camera": str(view["camera_name"]),
                    "frame_offset": int(view["frame_offset"]),
                    "source": used.get(str(view["camera_name"])),  # None: this camera was not used
                    "file": file,
                }
            )


# ------------------------------------------------------------------------------------ review


def review_sources(rows: ProjectRows, video: Path) -> list[dict[str, Any]]:
    """The 2D files of the rows about ``video`` as the review's sources list them: ``file`` is
    the row's reference, ``kind`` and ``bodyparts`` are read from a readable file's header."""
    found = rows.of_video(video)
    if found is None:
        return []
    out = []
    for row, label in [(r, r["model_name"]) for r in found.pose_estimations] + [
        (r, f"ensemble {r['ensemble_id']} ({', '.join(r['members'])})") for r in found.ensembles
    ]:
        file: RowFile = row["file"]
        info = sniff(file.path) if file.state == READABLE and file.path is not None else None
        out.append(
            {
                "file": file.reference,
                "kind": info.kind if info is not None else file.role,
                "bodyparts": info.bodyparts if info is not None else [],
                "model": label,
                "diagnostics": None,
                **{k: v for k, v in file.to_dict().items() if k != "reference"},
            }
        )
    return out


def is_reference(file: str) -> bool:
    """Whether a file named by a request is a pipeline row's reference (not a project's file)."""
    return file.startswith(REFERENCE_PREFIX)


# ------------------------------------------------------------------------------------ helpers


def key_name(key: dict[str, Any]) -> str:
    """A key as one name (:func:`~element_lightning_pose.paths.key_folder_name`; a key value that
    cannot be a folder name gets a digest of the key instead)."""
    try:
        return paths.key_folder_name(key, list(key))
    except UnsafePathError:
        exact = json.dumps([[k, str(v)] for k, v in key.items()], ensure_ascii=False)
        return f"key~{hashlib.sha256(exact.encode()).hexdigest()[:12]}"


def json_value(value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def json_key(key: dict[str, Any]) -> dict[str, Any]:
    return {k: json_value(v) for k, v in key.items()}


def json_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in row.items():
        if isinstance(value, RowFile):
            out[name] = value.to_dict()
        elif isinstance(value, dict):
            out[name] = json_key(value)
        else:
            out[name] = json_value(value)
    return out


def _fetch(expression: Any, *attrs: str, order_by: str | list[str] | None = None) -> list[dict]:
    from element_lightning_pose import dj_compat

    return dj_compat.fetch_dicts(expression, *attrs, order_by=order_by)


def _primary(table: Any, row: dict) -> dict:
    return {k: row[k] for k in table.primary_key}


def _tuple(table: Any, row: dict) -> tuple:
    return tuple(row[k] for k in table.primary_key)


def _video_of(rows: list[VideoRows], row: dict) -> VideoRows:
    """The video whose recording ``row`` is about (rows are fetched for those recordings only)."""
    for video in rows:
        for key in video.recordings:
            if all(row[k] == v for k, v in key.items()):
                return video
    raise RuntimeError(f"a row of recording {row} matches none of the project's videos")  # not reached


def _names_under(roots: Sequence[Path], path: Path) -> set[str]:
    """``path`` as a table may store it: relative to each root (as given and resolved), or absolute."""
    names = set()
    spellings = {spelled for root in roots for spelled in (Path(root).absolute(), Path(root).resolve())}
    for candidate in {path.absolute(), path.resolve()}:
        names.add(candidate.as_posix())
        names.update(candidate.relative_to(root).as_posix() for root in spellings if root in candidate.parents)
    return names


def _same_file(roots: Sequence[Path], stored: str, path: Path, names: set[str]) -> bool:
    """Whether a stored path (relative to the first root holding it, or absolute) is ``path``."""
    if PurePosixPath(str(stored)).as_posix() not in names:
        return False
    try:
        return paths.find_full_path(roots, stored).resolve() == path.resolve()
    except FileNotFoundError:
        return False


def _row_file(settings: AppSettings, processed: Path, table: str, key: dict, role: str, stored: str) -> RowFile:
    """A row's file: resolved under the processed-data root, then located among the app's roots
    (a file outside them is not looked at)."""
    try:
        path = inside_root(processed, str(stored), f"{table} {key_name(key)}: file")
    except UnsafePathError:
        return RowFile(table, key, role, str(stored), None, None, OUTSIDE_PROCESSED)
    try:
        location = location_of(settings, path)
    except UnsafePathError:
        return RowFile(table, key, role, str(stored), path, None, OUTSIDE_ROOTS)
    if not path.is_file():
        return RowFile(table, key, role, str(stored), path, None, MISSING)
    return RowFile(table, key, role, str(stored), path, location.key, READABLE)
