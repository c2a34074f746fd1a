"""Frame selection: which frames of a video to label next, and queuing them.

k-means and uniform need only the video; model-guided reads the prediction files a user
picks among those the project holds about the video (a model's predictions, an ensemble's
members, its EKS output, diagnostics). Frames already in the label tables are not suggested
again. Queuing exports each frame with its context frames and adds it to the label tables.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

from fastapi import APIRouter, Body, Request

from element_lightning_pose.app.projects import open_store, project_video, queue_frames
from element_lightning_pose.app.routes.common import project_at
from element_lightning_pose.app.routes.pipeline_rows import prediction_file
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.labeling.selection import (
    read_frame_scores,
    select_kmeans,
    select_model_guided,
    select_uniform,
)

router = APIRouter(prefix="/api/select")
METHODS = ("kmeans", "uniform", "model")
MAX_SUGGESTIONS = 500
_FRAME_NUMBER = re.compile(r"(\d+)\.\w+$")


def queued_frames(image_paths: list[str], video_stem: str) -> set[int]:
    """Frame numbers of the images of ``labeled-data/<video_stem>/`` already in the label tables."""
    frames = set()
    for image in image_paths:
        path = PurePosixPath(image)
        if path.parent.name == video_stem and (number := _FRAME_NUMBER.search(path.name)):
            frames.add(int(number.group(1)))
    return frames


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SUGGESTIONS:
        raise ProjectError(f"n: give a number of frames from 1 to {MAX_SUGGESTIONS}, got {value!r}")
    return value


@router.post("")
def suggest(request: Request, p: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    """``{video, method, n, seed, predictions, members, eks, diagnostics, model}`` -> suggestions,
    best first, each with the reason it was picked."""
    project = project_at(request, p)
    video_key = str(body.get("video", ""))
    video = project_video(project, video_key)
    method, n, seed = str(body.get("method", "kmeans")), _count(body.get("n", 10)), body.get("seed", 0)
    if method not in METHODS:
        raise ProjectError(f"method {method!r}: one of {', '.join(METHODS)}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ProjectError(f"seed {seed!r}: give a whole number")
    exclude = queued_frames([image for image, _ in open_store(project.path).images()], video.stem)
    if method == "kmeans":
        suggestions = select_kmeans(video, n, exclude=exclude, seed=seed)
    elif method == "uniform":
        suggestions = select_uniform(video, n, exclude=exclude)
    else:

        def file(key: str) -> Any:
            value = body.get(key)
            return prediction_file(request, project, str(value), key) if value else None

        members = body.get("members") or []
        if not isinstance(members, list):
            raise ProjectError("members: give a list of the ensemble's prediction files")
        scores = read_frame_scores(
            predictions_csv=file("predictions"),
            members=[prediction_file(request, project, str(m), "member") for m in members],
            eks_csv=file("eks"),
            diagnostics_csv=file("diagnostics"),
            pca=file("model"),
        )
        suggestions = select_model_guided(scores, n, exclude=exclude, seed=seed)
    return {
        "video": video_key,
        "excluded": len(exclude),
        "suggestions": [{"frame": s.frame, "score": s.score, "reason": s.reason} for s in suggestions],
    }


@router.post("/queue")
def queue(request: Request, p: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    """``{video, frames, base_revision}``: export the frames (and their context frames) and
    queue them for labeling; the images queued by view, and the new revision."""
    project = project_at(request, p)
    video = project_video(project, str(body.get("video", "")))
    frames = body.get("frames")
    if (
        not isinstance(frames, list)
        or not frames
        or not all(isinstance(f, int) and not isinstance(f, bool) for f in frames)
    ):
        raise ProjectError("frames: give a non-empty list of frame numbers")
    images, revision = queue_frames(project, video, sorted(set(frames)), str(body.get("base_revision", "")))
    return {"images": {str(k) if k is not None else "": v for k, v in images.items()}, "revision": revision}
