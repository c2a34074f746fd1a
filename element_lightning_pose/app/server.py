"""The app's ASGI server: ``create_app(settings)`` wires the guard, the routes and the pages.

Errors are messages, never tracebacks: an :class:`~element_lightning_pose.engine.errors.ElpError`
(bad input, named) is answered 400 with its message (409 for an edit that another one
overtook, 403 for a path outside the roots); anything else is logged on the server and
answered 500 with one line that says so.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from element_lightning_pose.app.frames import FrameServer
from element_lightning_pose.app.routes import (
    checks,
    imports,
    labels,
    media,
    pages,
    pipeline_rows,
    projects,
    review,
    select,
    train,
)
from element_lightning_pose.app.security import Guard
from element_lightning_pose.app.settings import AppSettings
from element_lightning_pose.engine.errors import ElpError
from element_lightning_pose.engine.labeling.store import LabelConflictError
from element_lightning_pose.engine.safe_paths import UnsafePathError
from element_lightning_pose.version import __version__

HERE = Path(__file__).parent
logger = logging.getLogger(__name__)
# FastAPI 0.16x records OpenTelemetry spans, metrics and logs, and exports them when the
# environment asks it to (FASTAPI_OTEL_AUTO_CONFIGURE): the app sends nothing anywhere, ever
NO_TELEMETRY = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False, "auto_configure": False}


def create_app(settings: AppSettings) -> FastAPI:
    """The app for ``settings``: its pages under ``/``, its API under ``/api``."""
    options: dict = {"telemetry": NO_TELEMETRY} if "telemetry" in inspect.signature(FastAPI).parameters else {}
    app = FastAPI(
        title="element-lightning-pose", version=__version__, docs_url=None, redoc_url=None, openapi_url=None, **options
    )
    app.state.settings = settings
    app.state.frames = FrameServer()
    app.state.templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    for module in (pages, projects, media, labels, checks, review, select, train, pipeline_rows, imports):
        app.include_router(module.router)
    app.add_exception_handler(ElpError, _elp_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_middleware(Guard, settings=settings)
    app.router.add_event_handler("shutdown", app.state.frames.close)
    return app


async def _elp_error(request: Request, exc: Exception) -> JSONResponse:
    status = 409 if isinstance(exc, LabelConflictError) else 403 if isinstance(exc, UnsafePathError) else 400
    return JSONResponse({"error": str(exc)}, status_code=status)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("app: %s %s failed", request.method, request.url.path)
    return JSONResponse(
        {"error": f"the server failed on this request ({type(exc).__name__}); its log has the details"},
        status_code=500,
    )
