"""The projects page's SLEAP import in Debian's chromium, headless: a refused file's error names
the file and the frame on the page, and an accepted one links to its new project."""

from __future__ import annotations

import pytest

from tests.app.browser import browser_page, require_browser, served_app, shoot
from tests.engine.labeling.test_sleap_import import LABELED, make_slp

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def _browser():
    require_browser()


def test_a_sleap_file_is_imported_from_the_projects_page(tmp_path):
    root = tmp_path / "root"
    (root / "raw").mkdir(parents=True)
    make_slp(root / "raw", "mouse.slp")
    make_slp(root / "raw", "pair.slp", video=root / "raw" / "session1.mp4", extra_instance_on=6)
    with served_app([root]) as url, browser_page(1200, 1100) as page:
        page.goto(url)
        page.click('#sleap-browser .browser-entry[data-key="0:raw"]')
        page.click('#sleap-browser .browser-entry[data-key="0:raw/pair.slp"]')
        page.fill("#import-sleap input[name=name]", "pair")
        page.click("#import-sleap button")
        page.wait_for_selector("body[data-import-error]")
        error = page.locator("#messages .message.error").inner_text()
        assert error.startswith("0:raw/pair.slp: video 0 (") and "frame 6: 2 user instances" in error
        assert not (root / "pair").exists()

        page.click('#sleap-browser .browser-entry[data-key="0:raw/mouse.slp"]')
        page.fill("#import-sleap input[name=name]", "mouse")
        page.click("#import-sleap button")
        page.wait_for_selector("body[data-imported='0:mouse']")
        result = page.locator("#sleap-chosen")
        assert result.inner_text().startswith(f"imported {len(LABELED)} labeled frames into mouse")
        shoot(page, "import")
        result.locator("a").click()
        page.wait_for_url("**/project?p=0%3Amouse")
    assert (root / "mouse" / "CollectedData.csv").is_file()
