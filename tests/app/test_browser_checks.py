"""The label check page in chromium: a planted left/right swap is the first flag, and its link
opens the labeler on that frame."""

from __future__ import annotations

import pytest

from element_lightning_pose.engine.data.labels import read_labels
from element_lightning_pose.synthetic.projects import make_synthetic_project
from tests.app.browser import browser_page, require_browser, served_app, shoot
from tests.app.planted import swap_labels

pytestmark = pytest.mark.browser


def test_a_planted_swap_is_flagged_first_and_opens_its_frame(tmp_path):
    require_browser()
    root = tmp_path / "root"
    project = make_synthetic_project(root / "mouse", image_size=(96, 96), n_labeled=30, n_video_frames=60)
    labels = read_labels(project.csv_path)
    swap_labels(project.csv_path, 7, labels.bodyparts.index("paw_left_hind"), labels.bodyparts.index("paw_right_hind"))
    with served_app([root]) as url, browser_page() as page:
        page.goto(f"{url}/check?p=0:mouse")
        page.wait_for_selector("body[data-checked]")
        first = page.locator("#flags tbody tr").first
        assert first.get_attribute("data-kind") == "left_right_swap"
        assert "paw_left_hind" in first.inner_text() and "paw_right_hind" in first.inner_text()
        shoot(page, "check")
        first.locator("a").click()
        page.wait_for_selector("body[data-frame]")
        assert page.locator("body").get_attribute("data-frame") == labels.image_paths[7]
