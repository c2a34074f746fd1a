"""The training page in Debian's chromium, headless: a bad parameter is shown under its field, a
short training is started from the page and followed to its end, and its model appears in the
models table with its evaluation."""

from __future__ import annotations

import pytest

from element_lightning_pose.synthetic.projects import make_synthetic_project
from tests.app.browser import browser_page, require_browser, served_app, shoot

pytestmark = pytest.mark.browser
EPOCHS = 3
TINY_EXTRA = "model.pretrained=false\ntraining.unfreeze_epoch=0\ntraining.num_workers=0"


@pytest.fixture(autouse=True)
def _browser():
    require_browser()


def test_a_short_training_is_followed_in_the_page_and_its_model_evaluated(tmp_path):
    root = tmp_path / "root"
    project = make_synthetic_project(root / "mouse", image_size=(96, 128), n_labeled=6, n_video_frames=20)
    with served_app([root]) as url, browser_page(1300, 1000) as page:
        page.goto(f"{url}/train?p=0:mouse")
        page.wait_for_selector("#params select[name=preset] option", state="attached")
        assert "recommended:" in page.locator("#advice").inner_text()
        assert page.locator("#where").is_hidden()  # no pipeline named: training runs here

        page.fill("input[name=max_epochs]", "lots")
        error = page.locator('.field-error[data-for="max_epochs"]')
        error.filter(has_text="valid integer").wait_for()

        page.select_option("select[name=preset]", "default")
        page.select_option("select[name=backbone]", "resnet18")
        page.fill("input[name=image_resize]", "64x64")
        page.fill("input[name=max_epochs]", str(EPOCHS))
        page.fill("textarea[name=extra]", TINY_EXTRA)
        page.wait_for_selector("label.invalid", state="detached")
        name = page.input_value("input[name=name]")
        page.click("#start")
        page.wait_for_selector("body[data-job-state=finished]", timeout=240_000)
        assert page.locator("#epochs tbody tr").count() == EPOCHS
        assert page.locator("#job-state").inner_text().startswith(f"finished - {EPOCHS} epoch(s)")

        page.wait_for_selector("body[data-models-evaluated='1']", timeout=120_000)
        row = page.locator(f'#models tr[data-model="{name}"]')
        cells = row.locator("td").all_inner_texts()
        assert cells[0] == name and cells[4] == str(EPOCHS) and " / " in cells[5]  # train px: mean / median / p95
        shoot(page, "train")
    assert (project.root / "models" / name / "model.json").is_file()
