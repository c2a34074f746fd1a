"""The HTML pages: server-rendered shells whose own script asks the API for their content."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from element_lightning_pose.app.routes.common import project_at
from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.version import __version__

router = APIRouter()


def _render(request: Request, template: str, title: str, project: str | None = None) -> HTMLResponse:
    templates = request.app.state.templates
    return templates.TemplateResponse(request, template, {"title": title, "project": project, "version": __version__})


@router.get("/favicon.ico")
def favicon() -> Response:
    return Response(status_code=204)


@router.get("/", response_class=HTMLResponse)
def projects_page(request: Request) -> HTMLResponse:
    return _render(request, "projects.html", "Projects")


def _project_page(request: Request, p: str, template: str, title: str) -> HTMLResponse:
    """A page of one project; a key that names no project inside the roots is a message page."""
    try:
        project_at(request, p)
    except ElpError as exc:
        templates = request.app.state.templates
        values = {"title": title, "project": None, "version": __version__, "message": str(exc)}
        return templates.TemplateResponse(request, "message.html", values, status_code=404)
    return _render(request, template, title, p)


@router.get("/project", response_class=HTMLResponse)
def project_page(request: Request, p: str) -> HTMLResponse:
    return _project_page(request, p, "project.html", "Project")


@router.get("/select", response_class=HTMLResponse)
def select_page(request: Request, p: str) -> HTMLResponse:
    return _project_page(request, p, "select.html", "Select frames")


@router.get("/check", response_class=HTMLResponse)
def check_page(request: Request, p: str) -> HTMLResponse:
    return _project_page(request, p, "check.html", "Check labels")


@router.get("/label", response_class=HTMLResponse)
def label_page(request: Request, p: str) -> HTMLResponse:
    return _project_page(request, p, "label.html", "Label")


@router.get("/review", response_class=HTMLResponse)
def review_page(request: Request, p: str) -> HTMLResponse:
    return _project_page(request, p, "review.html", "Review")


@router.get("/train", response_class=HTMLResponse)
def train_page(request: Request, p: str) -> HTMLResponse:
    return _project_page(request, p, "train.html", "Train")
