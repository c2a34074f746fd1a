"""The label store over HTTP: the queue of frames, one frame's labels, saving one frame.

Every answer carries the store's ``revision``; a save names the revision it was made on and is
refused (409) when the labels changed since (another tab, another person).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Body, Request

from element_lightning_pose.app.locations import Location
from element_lightning_pose.app.projects import open_store, read_settings
from element_lightning_pose.app.routes.common import project_at
from element_lightning_pose.engine.data.labels import context_image_paths
from element_lightning_pose.engine.errors import ProjectError
from element_lightning_pose.engine.labeling.store import PointEdit
from element_lightning_pose.engine.labeling.views import epipolar_curve, project_from_views
from element_lightning_pose.engine.multicam.cameras import CameraGroup, read_calibration

router = APIRouter(prefix="/api/labels")


@router.get("")
def queue(request: Request, p: str) -> dict[str, Any]:
    """Every frame of the label tables, in order, with how many of its points are labeled."""
    location = project_at(request, p)
    store = open_store(location.path)
    frames = []
    for table in store.tables:
        labeled = np.isfinite(table.keypoints).all(axis=-1).sum(axis=1) if len(table.image_paths) else []
        for image, n in zip(table.image_paths, labeled):
            frames.append({"image": image, "view": table.view, "labeled": int(n)})
    return {
        "revision": store.revision(),
        "bodyparts": store.bodyparts,
        "views": [v for v in store.views if v is not None],
        "skeleton": read_settings(location.path).get("skeleton") or [],
        "frames": frames,
    }


@router.get("/frame")
def frame(request: Request, p: str, image: str) -> dict[str, Any]:
    """One image's labels, its history, its context frames and, in a multi-view project, the
    same instant's image in every view."""
    location = project_at(request, p)
    location.child(image, "image")  # inside the root, or refused
    store = open_store(location.path)
    labels = store.frame(image)
    row = next(t.image_paths.index(image) for t in store.tables if image in t.image_paths)
    instant = {str(t.view): t.image_paths[row] for t in store.tables if t.view is not None and row < len(t.image_paths)}
    return {
        "revision": store.revision(),
        "image": image,
        "view": labels.view,
        "points": {b: (list(xy) if xy is not None else None) for b, xy in labels.points.items()},
        "occluded": labels.occluded,
        "history": labels.history[-50:],
        "context": context_image_paths(location.path, image),
        "instant": instant,
    }


@router.get("/views")
def views(request: Request, p: str, image: str) -> dict[str, Any]:
    """A multi-view instant seen by a calibrated rig: each view's labels, the projection of the
    body parts triangulated from the labeled views, each view's residual, and in ``image``'s
    view the epipolar curve of every body part labeled in another view. Empty without a
    calibration (``calibration.toml`` in the project, or ``calibration`` in its settings)."""
    location = project_at(request, p)
    location.child(image, "image")
    store = open_store(location.path)
    table = next((t for t in store.tables if image in t.image_paths), None)
    if table is None or table.view is None:
        return {"calibrated": False, "views": {}}
    group = project_calibration(location)
    if group is None:
        return {"calibrated": False, "views": {}}
    row = table.image_paths.index(image)
    instant = {str(t.view): t for t in store.tables if t.view is not None and row < len(t.image_paths)}
    labels = {view: t.keypoints[row] for view, t in instant.items() if view in group.names}
    agreement = project_from_views(group, labels)
    curves: dict[str, dict[str, list]] = {}
    for view, points in labels.items():
        if view == table.view:
            continue
        for k, bodypart in enumerate(store.bodyparts):
            if np.isfinite(points[k]).all():
                curve = epipolar_curve(group, view, points[k], str(table.view))
                curves.setdefault(bodypart, {})[view] = np.round(curve, 2).tolist()
    return {
        "calibrated": True,
        "view": table.view,
        "views": {
            view: {
                "image": instant[view].image_paths[row],
                "points": _nan_to_none(labels[view]),
                "projected": _nan_to_none(agreement.projected[view]),
                "residual": [None if not np.isfinite(r) else round(float(r), 2) for r in agreement.residual[view]],
            }
            for view in labels
        },
        "epipolar": curves,
    }


def project_calibration(location: Location) -> CameraGroup | None:
    """The rig's calibration of a multi-view project, or None when it has none."""
    named = read_settings(location.path).get("calibration")
    path = location.child(str(named), "calibration").path if named else location.path / "calibration.toml"
    return read_calibration(path) if path.is_file() else None


def _nan_to_none(points: np.ndarray) -> list:
    return [None if not np.isfinite(xy).all() else [round(float(xy[0]), 2), round(float(xy[1]), 2)] for xy in points]


@router.post("/frame")
def save(request: Request, p: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    """Save the edits of one image: ``{image, base_revision, edits: [{bodypart, state, x, y, origin}]}``."""
    location = project_at(request, p)
    image = str(body.get("image", ""))
    location.child(image, "image")
    edits_in = body.get("edits")
    if not isinstance(edits_in, list) or not all(isinstance(e, dict) for e in edits_in):
        raise ProjectError("edits: give a list of {bodypart, state, x, y, origin}")
    edits = []
    for edit in edits_in:
        unknown = set(edit) - {"bodypart", "state", "x", "y", "origin"}
        if unknown:
            raise ProjectError(f"edit of {edit.get('bodypart')!r}: unknown field(s) {sorted(unknown)}")
        edits.append(
            PointEdit(
                str(edit.get("bodypart")),
                str(edit.get("state", "labeled")),
                edit.get("x"),
                edit.get("y"),
                str(edit.get("origin", "manual")),
            )
        )
    revision = open_store(location.path).save_frame(image, edits, base_revision=str(body.get("base_revision", "")))
    return {"revision": revision}


@router.post("/queue")
def add_to_queue(request: Request, p: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:
    """Queue exported images: ``{base_revision, images: {view or "": [image, ...]}}``."""
    location = project_at(request, p)
    given = body.get("images")
    if not isinstance(given, dict):
        raise ProjectError("images: give {view: [image, ...]} ('' for a single-view project)")
    images = {}
    for view, paths in given.items():
        if not isinstance(paths, list):
            raise ProjectError(f"images of view {view!r}: give a list of image paths")
        for path in paths:
            location.child(str(path), "image")
        images[view or None] = [str(path) for path in paths]
    revision = open_store(location.path).add_frames(images, base_revision=str(body.get("base_revision", "")))
    return {"revision": revision}
