"""Projects: list those under the roots, describe one, create one, edit its skeleton."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request

from element_lightning_pose.app import projects
from element_lightning_pose.app.locations import locate
from element_lightning_pose.app.routes.common import folder_listing, project_at, settings_of
from element_lightning_pose.engine.errors import ProjectError

router = APIRouter(prefix="/api")


@router.get("/roots")
def list_roots(request: Request) -> dict[str, Any]:
    return {"roots": [{"index": i, "path": str(root)} for i, root in enumerate(settings_of(request).roots)]}


@router.get("/projects")
def list_projects(request: Request) -> dict[str, Any]:
    settings = settings_of(request)
    found = []
    for index, root in enumerate(settings.roots):
        for folder in projects.find_projects(root):
            location = locate(settings, f"{index}:{folder.relative_to(root).as_posix()}", "project")
            found.append(projects.summarise(location, with_videos=False).to_dict())
    return {"projects": found}


@router.get("/project")
def describe_project(request: Request, p: str) -> dict[str, Any]:
    return projects.summarise(project_at(request, p)).to_dict()


@router.post("/projects")
def create_project(request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    settings = settings_of(request)
    parent = locate(settings, str(body.get("parent", "0:")), "parent folder")
    if not parent.path.is_dir():
        raise ProjectError(f"parent folder {parent.key!r}: not a folder")
    videos = [locate(settings, str(key), "video") for key in body.get("videos") or []]
    folder = projects.create_project(
        parent,
        str(body.get("name", "")),
        body.get("bodyparts"),
        videos=videos,
        skeleton=body.get("skeleton"),
        views=body.get("views"),
    )
    return projects.summarise(
        locate(settings, f"{parent.root_index}:{folder.relative_to(parent.root).as_posix()}")
    ).to_dict()


@router.put("/project/skeleton")
def save_skeleton(request: Request, p: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    return {"skeleton": projects.save_skeleton(project_at(request, p).path, body.get("skeleton"))}


@router.get("/files")
def list_videos(request: Request, p: str = "0:") -> dict[str, Any]:
    """Videos and folders directly in a folder of the roots (to pick a new project's videos)."""
    return folder_listing(request, p, lambda path: path.suffix.lower() in projects.VIDEO_SUFFIXES)
