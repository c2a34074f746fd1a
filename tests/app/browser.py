"""The app in a real browser for the tests: a server on a free loopback port, Debian's chromium
driven headless by Playwright (never a browser Playwright downloads: there is none here).

``served_app(roots)`` yields the base URL of a running app; ``browser_page()`` yields a page of a
fresh headless chromium. Screenshots for ``docs/app.md`` are taken with :func:`shoot` when
``ELP_SCREENSHOTS=1``.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import IN_CI, REPO_ROOT

# where the flows leave their screenshots for docs/app.md: only when asked, so that a test run
# does not rewrite the repository (ELP_SCREENSHOTS=1 bash scripts/test.sh -k browser)
SCREENSHOTS = REPO_ROOT / "docs" / "img" / "app"
TAKE_SCREENSHOTS = os.environ.get("ELP_SCREENSHOTS", "").lower() in {"1", "true", "yes"}
CHROMIUM = os.environ.get("ELP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# the flags a headless chromium needs here: no sandbox as root, no GPU, and no calls home
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_browser() -> None:
    """Skip on a workstation without chromium or Playwright; fail in CI, where both are installed."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package")
    if not Path(CHROMIUM).is_file():
        missing.append(f"chromium at {CHROMIUM} (apt-get install chromium)")
    if missing:
        message = "the browser tests need " + " and ".join(missing)
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served_app(roots: list[Path], **settings_options) -> Iterator[str]:
    """A running app on a free loopback port; yields its base URL and stops it at the end."""
    import uvicorn

    from element_lightning_pose.app.server import create_app
    from element_lightning_pose.app.settings import AppSettings

    port = _free_port()
    settings, _ = AppSettings.build(roots, port=port, **settings_options)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the app did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def browser_page(width: int = 1200, height: int = 760):
    """A page of a fresh headless chromium; the page's uncaught errors fail the test at the end."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on(
                "console",
                lambda message: (
                    errors.append(message.text)
                    if message.type == "error" and "Content Security Policy" in message.text
                    else None
                ),
            )
            yield page
        finally:
            browser.close()
    assert not errors, f"the page raised: {errors}"


def shoot(page, name: str) -> Path | None:
    """A screenshot of ``page`` for docs/app.md, where the docs link it (with ELP_SCREENSHOTS)."""
    if not TAKE_SCREENSHOTS:
        return None
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    # lazy thumbnails below the fold would be blank in a full-page shot: load them all first
    page.evaluate(
        """() => Promise.all([...document.images].map((image) => image.complete ? null :
             new Promise((done) => { image.onload = image.onerror = done; image.loading = "eager"; })))"""
    )
    page.screenshot(path=str(path), full_page=True)
    return path


def canvas_point(page, x: float, y: float) -> tuple[float, float]:
    """The page position of original-frame pixel (x, y) in the labeler's canvas (the engine's
    convention: pixel i is centred on i), from the view the labeler publishes on its canvas."""
    box = page.locator("#canvas").bounding_box()
    view = page.locator("#canvas").evaluate("c => ({scale: +c.dataset.scale, x: +c.dataset.x, y: +c.dataset.y})")
    return box["x"] + (x + 0.5) * view["scale"] + view["x"], box["y"] + (y + 0.5) * view["scale"] + view["y"]
