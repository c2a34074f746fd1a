"""Imports of other tools' label files as new projects: a SLEAP file (``.slp``, ``.pkg.slp``).

Lightning Pose and DeepLabCut projects need no import (the app opens them where they are); a
SLEAP file is converted by :func:`element_lightning_pose.engine.labeling.imports.import_sleap` into a
new Lightning Pose project, validated by the engine's reader, beside the other projects.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Request

from element_lightning_pose.app import projects
from element_lightning_pose.app.locations import locate
from element_lightning_pose.app.routes.common import folder_listing, settings_of
from element_lightning_pose.engine.data.sleap import SLEAP_SUFFIX, check_sleap_file
from element_lightning_pose.engine.errors import ElpError, ProjectError
from element_lightning_pose.engine.labeling.imports import import_sleap
from element_lightning_pose.engine.safe_paths import check_name

router = APIRouter(prefix="/api/import")


@router.get("/files")
def list_sleap_files(request: Request, p: str = "0:") -> dict[str, Any]:
    """SLEAP files and folders directly in a folder of the roots (to pick the file to import)."""
    return folder_listing(request, p, lambda path: path.suffix.lower() == SLEAP_SUFFIX)


@router.post("/sleap")
def import_sleap_file(request: Request, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    """Import the SLEAP file ``file`` as the new project ``parent``/``name``; its summary and the
    import's notes (frames left out, frames without context)."""
    settings = settings_of(request)
    source = locate(settings, str(body.get("file", "")), "SLEAP file")
    parent = locate(settings, str(body.get("parent", "0:")), "parent folder")
    if not parent.path.is_dir():
        raise ProjectError(f"parent folder {parent.key!r}: not a folder")
    name = check_name(str(body.get("name", "")), "project name")
    target = parent.child(name, "project name")
    if target.path.exists():
        raise ProjectError(f"{target.key}: exists already; choose another name")
    try:
        check_sleap_file(source.path)
        done = import_sleap(source.path, target.path, video_roots=list(settings.roots))
    except ElpError as exc:
        raise ProjectError(_with_keys(str(exc), settings.roots)) from None
    summary = projects.summarise(target).to_dict()
    return summary | {"notes": done.notes}


def _with_keys(message: str, roots: Sequence[Path]) -> str:
    """``message`` naming paths inside the roots by the page's keys (``0:raw/mouse.slp``), not
    by the server's absolute paths; the longest root first, should one hold another."""
    for index, root in sorted(enumerate(roots), key=lambda item: -len(str(item[1]))):
        message = message.replace(f"{root}/", f"{index}:")
    return message
