"""The pipeline's rows about a project (``app/pipeline_rows.py``), for review and selection.

``GET /api/pipeline/rows`` lists them. The review's sources of a video gain the rows' 2D files
(:func:`add_review_sources`), named by their references; the review and select routes read a
file a request names through :func:`prediction_file`, which resolves a reference (a file outside
the app's roots is refused, 403) and leaves a project's own file to the project.

A project's rows are kept a few seconds (:data:`KEPT_S`): the review asks for range after range
of one file's traces, and each request resolves its reference; listing a video's sources always
reads them afresh.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request

from element_lightning_pose.app import pipeline as app_pipeline
from element_lightning_pose.app.locations import Location
from element_lightning_pose.app.pipeline_rows import ProjectRows, is_reference, project_rows, review_sources
from element_lightning_pose.app.projects import project_video
from element_lightning_pose.app.routes.common import project_at, settings_of
from element_lightning_pose.engine.errors import ProjectError

router = APIRouter(prefix="/api/pipeline")
KEPT_S = 10.0
_KEPT_LOCK = threading.Lock()


@router.get("/rows")
def rows(request: Request, p: str, video: str | None = None) -> dict[str, Any]:
    """The project's VideoSets, the models trained from them, and per video (all, or ``video``)
    its recordings' PoseEstimation, EnsembleSmoothing and Triangulation rows with their files:
    ``location`` is the ``<root>:<path>`` key of a file inside the app's roots, ``state`` says
    why another cannot be read. Without a pipeline: ``configured`` false, nothing listed."""
    project = project_at(request, p)
    described = app_pipeline.describe(settings_of(request).roots)
    if not described["configured"]:
        return {**described, "project_dir": None, "video_sets": [], "models": [], "videos": []}
    path = project_video(project, video) if video else None
    listed, _ = _project_rows(request, project, [path] if path else [], fresh=True)
    return {**described, **listed.to_dict(path)}


def add_review_sources(request: Request, project: Location, video: Path, answer: dict[str, Any]) -> dict[str, Any]:
    """The review's ``answer`` of ``video``'s sources with the pipeline's 2D files about it
    appended to ``files`` (each marked with its table, key, location and state), and
    ``pipeline``: whether there is one, and why its rows could not be read."""
    if not app_pipeline.configured():
        answer["pipeline"] = {"configured": False, "error": None}
        return answer
    try:
        listed, _ = _project_rows(request, project, [video], fresh=True)
    except app_pipeline.PipelineError as exc:  # the project's own files are still reviewed
        answer["pipeline"] = {"configured": True, "error": str(exc)}
        return answer
    answer["files"] = [*answer["files"], *review_sources(listed, video)]
    answer["pipeline"] = {"configured": True, "error": None}
    return answer


def prediction_file(request: Request, project: Location, file: str, what: str = "file") -> Path:
    """The file a review or select request names: a pipeline row's reference (its file, when it
    lies inside the app's roots), else a path inside the project."""
    if not is_reference(file):
        return project.child(file, what).path
    if not app_pipeline.configured():
        raise ProjectError(f"{what} {file!r}: names a pipeline row, and the app has no pipeline")
    listed, kept = _project_rows(request, project, [], fresh=False)
    try:
        return listed.file(file)
    except ProjectError:
        if not kept:
            raise
        return _project_rows(request, project, [], fresh=True)[0].file(file)  # a row computed since


def _kept(request: Request) -> dict[Path, tuple[float, ProjectRows]]:
    with _KEPT_LOCK:
        kept = getattr(request.app.state, "pipeline_rows", None)
        if kept is None:
            kept = request.app.state.pipeline_rows = {}
        return kept


def _project_rows(request: Request, project: Location, videos: list[Path], *, fresh: bool) -> tuple[ProjectRows, bool]:
    """The project's rows, and whether they are the ones kept (not read afresh)."""
    kept = _kept(request)
    held = kept.get(project.path)
    if held is not None and not fresh and time.monotonic() - held[0] < KEPT_S:
        return held[1], True
    # videos outside videos/ that a page asked about before are listed again
    earlier = [r.video for r in held[1].videos] if held is not None else []
    listed = project_rows(settings_of(request), project.path, [*earlier, *videos])
    with _KEPT_LOCK:
        kept[project.path] = (time.monotonic(), listed)
    return listed, False
