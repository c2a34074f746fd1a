"""Pixels: a video frame decoded on the server (frame-exact), a labeled image as it is on disk."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response

from element_lightning_pose.app.routes.common import frames_of, project_at
from element_lightning_pose.engine.data.labels import IMAGE_SUFFIXES
from element_lightning_pose.engine.data.projects import VIDEO_SUFFIXES
from element_lightning_pose.engine.errors import ProjectError

router = APIRouter(prefix="/api")
# a frame changes only if its file does: the browser may keep it for the session
CACHE = {"Cache-Control": "private, max-age=3600"}


@router.get("/frame")
def video_frame(
    request: Request, p: str, video: str, frame: int = Query(ge=0), width: int = Query(0, ge=0, le=8192)
) -> Response:
    """Frame ``frame`` of the project's ``video`` (relative to the project) as JPEG."""
    path = project_at(request, p).child(video, "video").path
    if path.suffix.lower() not in VIDEO_SUFFIXES or not path.is_file():
        raise ProjectError(f"video {video!r}: not a video of the project")
    return Response(
        frames_of(request).video_frame(path, frame, max_width=width), media_type="image/jpeg", headers=CACHE
    )


@router.get("/image")
def labeled_image(request: Request, p: str, image: str) -> Response:
    """A labeled image of the project (``labeled-data/...``), as it is on disk."""
    path = project_at(request, p).child(image, "image").path
    if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
        raise ProjectError(f"image {image!r}: not an image of the project")
    return FileResponse(path, headers=CACHE)
