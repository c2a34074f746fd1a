"""What every route is given: the settings, the frame server, a checked project location."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import Request

from element_lightning_pose.app.frames import FrameServer
from element_lightning_pose.app.locations import Location, locate
from element_lightning_pose.app.projects import is_project
from element_lightning_pose.app.settings import AppSettings
from element_lightning_pose.engine.errors import ProjectError


def settings_of(request: Request) -> AppSettings:
    return request.app.state.settings


def frames_of(request: Request) -> FrameServer:
    return request.app.state.frames


def project_at(request: Request, key: str) -> Location:
    """The project named by ``key`` (``<root>:<path>``): inside the roots, and a project folder."""
    location = locate(settings_of(request), key, "project")
    if not location.path.is_dir() or not is_project(location.path):
        raise ProjectError(f"project {key!r}: no project there (no labels, DeepLabCut config or app settings)")
    return location


def folder_listing(request: Request, key: str, shows: Callable[[Path], bool]) -> dict[str, Any]:
    """The sub-folders and the files that ``shows`` accepts directly in the folder ``key`` of the
    roots, hidden ones left out (what a page's file picker lists)."""
    location = locate(settings_of(request), key, "folder")
    if not location.path.is_dir():
        raise ProjectError(f"folder {key!r}: not a folder")
    entries = [
        {"name": child.name, "key": location.child(child.name).key, "folder": child.is_dir()}
        for child in sorted(location.path.iterdir())
        if not child.name.startswith(".") and (child.is_dir() or (child.is_file() and shows(child)))
    ]
    return {"folder": location.key, "entries": entries}
