"""The review: a video's prediction files, their traces by range, one frame's keypoints, the worst
frames and "send to the labeler", predicting a video with a model, and "did this round help".

Every file is named relative to its project (``file=models/m1/predictions/video00.csv``) and
checked to lie inside it; the browser gets ranges and decimated traces, never a whole file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse

from element_lightning_pose.app.frames import cached_video_info
from element_lightning_pose.app.locations import Location
from element_lightning_pose.app.projects import open_store, project_video, queue_frames, view_of_video
from element_lightning_pose.app.review import SYNC_WAIT_S, review_state
from element_lightning_pose.app.routes.common import project_at
from element_lightning_pose.app.routes.pipeline_rows import add_review_sources, prediction_file
from element_lightning_pose.engine.data.labels import IMAGE_SUFFIXES, context_image_paths
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.labeling.prefill import read_prefill, save_prefill
from element_lightning_pose.engine.labeling.rounds import MODELS_DIR, project_models
from element_lightning_pose.engine.labeling.traces import (
    CRITERIA,
    PredictionTable,
    companion_of,
    find_prediction_files,
    minmax_decimate,
    series_names,
    worst_frames,
)

router = APIRouter(prefix="/api")
MAX_KEYPOINT_FRAMES = 1000  # frames of keypoints one request may ask for (the page asks for pages of them)
MAX_TRACE_POINTS = 20000
CONTEXT_RADIUS = 2  # frames each side of a frame sent to the labeler (the context model's window)
PREDICTIONS_DIR = "predictions"
_IMAGE_NUMBER = re.compile(r"img(\d+)\.png$")


def _finite(values: np.ndarray, digits: int = 3) -> list:
    """A float array as nested lists for JSON: rounded, NaN as null."""
    rounded = np.round(values.astype(float), digits)
    cells = rounded.astype(object)
    cells[~np.isfinite(rounded)] = None
    return cells.tolist()


def _table_of(request: Request, project: Location, file: str) -> PredictionTable:
    path = prediction_file(request, project, file)
    if path.suffix.lower() != ".csv" or not path.is_file():
        raise ProjectError(f"file {file!r}: not a CSV file of the project")
    return review_state(request.app).tables.get(path)


def _model_dirs(project: Location) -> list[Path]:
    """The project's readable model directories, oldest first (:func:`rounds.project_models`)."""
    return [model.path for model in project_models(project.path) if model.info is not None]


def _model_dir(project: Location, key: str) -> Path:
    path = project.child(key, "model").path
    if path.resolve() not in [d.resolve() for d in _model_dirs(project)]:
        raise ProjectError(f"model {key!r}: not a model directory of the project ({MODELS_DIR}/<name>/model.json)")
    return path


# ------------------------------------------------------------------------------------ sources


@router.get("/review/sources")
def sources(request: Request, p: str, video: str) -> dict[str, Any]:
    """The prediction files about ``video`` anywhere in the project, and the models that have
    none for it yet (which the page offers to run)."""
    project = project_at(request, p)
    path = project_video(project, video)
    view = view_of_video(open_store(project.path), path)
    info = cached_video_info(path)
    files = []
    for found in find_prediction_files(project.path, path.stem, view):
        relative = found.path.relative_to(project.path).as_posix()
        parts = relative.split("/")
        model = parts[1] if len(parts) > 2 and parts[0] == MODELS_DIR else None
        companion = companion_of(found.path)
        files.append(
            {
                "file": relative,
                "kind": found.kind,
                "bodyparts": found.bodyparts,
                "model": model,
                "diagnostics": companion.relative_to(project.path).as_posix() if companion.is_file() else None,
            }
        )
    with_files = {f["model"] for f in files if f["model"] is not None and f["kind"] != "diagnostics"}
    models = [
        {"model": d.name, "path": d.relative_to(project.path).as_posix()}
        for d in _model_dirs(project)
        if d.name not in with_files
    ]
    size = {"n_frames": info.n_frames, "fps": info.fps, "width": info.width, "height": info.height}
    answer = {"video": video, **size, "files": files, "models_without_predictions": models}
    return add_review_sources(request, project, path, answer)  # with a pipeline, its rows' files too


@router.get("/review/table")
def table_info(request: Request, p: str, file: str) -> dict[str, Any]:
    """What a prediction file holds: body parts, frames, series, worst-frame criteria."""
    table = _table_of(request, project_at(request, p), file)
    return {
        "file": file,
        "kind": table.kind,
        "bodyparts": table.bodyparts,
        "first_frame": int(table.frames[0]),
        "last_frame": int(table.frames[-1]),
        "n_frames": len(table.frames),
        "series": list(table.series),
        "criteria": {name: CRITERIA.get(name, name.replace("_", " ")) for name in table.criteria()},
        "has_positions": table.has_positions,
    }


@router.get("/review/traces")
def traces(
    request: Request,
    p: str,
    file: str,
    start: int | None = Query(None, ge=0),
    stop: int | None = Query(None, ge=0),
    max_points: int = Query(1000, ge=2, le=MAX_TRACE_POINTS),
    series: str | None = None,
    bodyparts: str | None = None,
) -> dict[str, Any]:
    """The series of frames ``start:stop`` (default: all), at most ``max_points`` points per body
    part and series (min/max per bucket of frames, so spikes survive). ``series`` and
    ``bodyparts`` are comma-separated names (default: all)."""
    table = _table_of(request, project_at(request, p), file)
    names = series_names(table, series.split(",") if series else None)
    parts = bodyparts.split(",") if bodyparts else table.bodyparts
    unknown = [b for b in parts if b not in table.bodyparts]
    if unknown:
        raise ProjectError(f"bodyparts {unknown}: {file} has {table.bodyparts}")
    columns = [table.bodyparts.index(b) for b in parts]
    rows = table.rows(start, stop)
    out: dict[str, Any] = {}
    for name in names:
        frames, values = minmax_decimate(table.frames[rows], table.series[name][rows][:, columns], max_points)
        out[name] = {
            part: {"frames": frames[:, k].tolist(), "values": _finite(values[:, k])} for k, part in enumerate(parts)
        }
    first, last = rows.start, rows.stop
    return {
        "file": file,
        "start": int(table.frames[first]) if last > first else start,
        "stop": int(table.frames[last - 1]) + 1 if last > first else stop,
        "n_frames": last - first,
        "decimated": last - first > max_points,
        "series": out,
    }


@router.get("/review/keypoints")
def keypoints(
    request: Request,
    p: str,
    file: str,
    start: int = Query(ge=0),
    stop: int | None = Query(None, ge=0),
) -> dict[str, Any]:
    """x, y, likelihood (and posterior sd) of frames ``start:stop`` (default: ``start`` alone),
    at most :data:`MAX_KEYPOINT_FRAMES` of them: ``points[i][k] = [x, y, likelihood]``."""
    table = _table_of(request, project_at(request, p), file)
    if not table.has_positions:
        raise ProjectError(f"file {file!r}: diagnostics hold no positions; choose the predictions beside it")
    stop = start + 1 if stop is None else stop
    if not 0 < stop - start <= MAX_KEYPOINT_FRAMES:
        raise ProjectError(f"start={start}, stop={stop}: ask for 1 to {MAX_KEYPOINT_FRAMES} frames at a time")
    rows = table.rows(start, stop)
    points = np.stack([table.series[c][rows] for c in ("x", "y", "likelihood")], axis=-1)
    answer = {"file": file, "bodyparts": table.bodyparts, "frames": table.frames[rows].tolist()}
    answer["points"] = _finite(points, 2)
    if "posterior_sd" in table.series:
        answer["posterior_sd"] = _finite(table.series["posterior_sd"][rows], 2)
    return answer


@router.get("/review/worst")
def worst(
    request: Request,
    p: str,
    file: str,
    criterion: str,
    n: int = Query(20, ge=1, le=200),
    min_gap: int = Query(10, ge=1),
    start: int | None = Query(None, ge=0),
    stop: int | None = Query(None, ge=0),
) -> dict[str, Any]:
    """The ``n`` worst frames by ``criterion``, no two closer than ``min_gap`` frames."""
    table = _table_of(request, project_at(request, p), file)
    found = worst_frames(table, criterion, n=n, min_gap=min_gap, start=start, stop=stop)
    return {
        "file": file,
        "criterion": criterion,
        "frames": [
            {"frame": w.frame, "score": round(w.score, 4), "bodypart": w.bodypart, "reason": w.reason} for w in found
        ],
    }


# ------------------------------------------------------------------------------------ to the labeler


@router.post("/review/send")
def send_to_labeler(request: Request, p: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    """Queue a frame of a video for labeling: ``{file, video, frame, base_revision}``.

    The frame and its context frames are written into ``labeled-data/`` (in a multi-view project,
    the same instant of every view's video), queued in the label tables, and the prediction of
    ``file`` at that frame is kept as the labeler's prefill (:mod:`...engine.labeling.prefill`).
    """
    project = project_at(request, p)
    file, video_key = str(body.get("file", "")), str(body.get("video", ""))
    frame = body.get("frame")
    if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
        raise ProjectError(f"frame {frame!r}: give a frame number (0 or more)")
    video = project_video(project, video_key)
    table = _table_of(request, project, file)
    if not table.has_positions:
        raise ProjectError(f"file {file!r}: diagnostics hold no positions to prefill; send from the predictions")
    rows = table.rows(frame, frame + 1)
    if rows.stop == rows.start:
        raise ProjectError(f"frame {frame}: not in {file} (frames {int(table.frames[0])}..{int(table.frames[-1])})")
    store = open_store(project.path)
    shared = [b for b in table.bodyparts if b in store.bodyparts]
    if not shared:
        raise ProjectError(
            f"file {file!r}: its body parts {table.bodyparts} are none of the project's {store.bodyparts}"
        )
    before = {image for image, _ in store.images()}
    images, revision = queue_frames(project, video, [frame], str(body.get("base_revision", "")))
    queued = images[view_of_video(store, video)][0]
    already = queued in before
    row = rows.start
    points = {
        b: [float(table.series[c][row, table.bodyparts.index(b)]) for c in ("x", "y", "likelihood")] for b in shared
    }
    save_prefill(project.path, queued, points, source=file, frame=frame)
    return {
        "image": queued,
        "images": {str(k) if k is not None else "": v for k, v in images.items()},
        "context": context_image_paths(project.path, queued, CONTEXT_RADIUS),
        "already_queued": already,
        "revision": revision,
    }


@router.get("/labels/prefill")
def prefill(request: Request, p: str, image: str) -> dict[str, Any]:
    """The model's prediction kept for ``image`` when it was sent to the labeler:
    ``{image, points: {bodypart: [x, y, likelihood]}, source, frame}``; ``points`` is empty
    when none was kept (the labeler then starts from nothing)."""
    project = project_at(request, p)
    path = project.child(image, "image").path
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ProjectError(f"image {image!r}: not an image of the project")
    entry = read_prefill(project.path, image) or {"points": {}, "source": None, "frame": None}
    return {"image": image, "points": entry["points"], "source": entry["source"], "frame": entry["frame"]}


# ------------------------------------------------------------------------------------ predicting


@router.post("/review/predict")
def predict(request: Request, p: str, body: dict[str, Any] = Body(...)) -> JSONResponse:
    """Predict ``video`` with the model directory ``model`` (``models/<name>``) into
    ``models/<name>/predictions/<video>.csv`` (and its diagnostics), in a job of the server.

    The answer waits up to :data:`~element_lightning_pose.app.review.SYNC_WAIT_S` seconds: a short
    video's predictions are done by then (200, state ``done``); a longer one answers 202 with the
    job to poll at ``GET /api/review/predict?job=``. Existing predictions are never replaced.
    """
    project = project_at(request, p)
    model_key, video_key = str(body.get("model", "")), str(body.get("video", ""))
    model_dir = _model_dir(project, model_key)
    video = project_video(project, video_key)
    out_csv = model_dir / PREDICTIONS_DIR / f"{video.stem}.csv"
    if out_csv.exists() or companion_of(out_csv).exists():
        raise ProjectError(f"{model_key}/{PREDICTIONS_DIR}/{video.stem}.csv: exists already; review it")
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    job = review_state(request.app).jobs.start(model_dir, video, out_csv, model=model_key, video_key=video_key)
    job.done.wait(SYNC_WAIT_S)
    return _job_answer(project, job)


@router.get("/review/predict")
def prediction_job(request: Request, p: str, job: str) -> JSONResponse:
    """The state of a prediction job (``queued``, ``running``, ``done`` with its file, ``failed`` with why)."""
    project = project_at(request, p)
    found = review_state(request.app).jobs.get(job)
    if found is None:
        raise ProjectError(f"job {job!r}: no such prediction job on this server")
    return _job_answer(project, found)


def _job_answer(project: Location, job) -> JSONResponse:
    answer = job.to_dict()
    if job.state == "done":
        answer["file"] = job.out_csv.relative_to(project.path).as_posix()
    if job.state == "failed":
        return JSONResponse({"error": f"predicting {job.video} with {job.model}: {job.error}", **answer}, 400)
    return JSONResponse(answer, status_code=200 if job.state == "done" else 202)


# ------------------------------------------------------------------------------------ did this round help
