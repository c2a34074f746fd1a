"""The training page in Debian's chromium, headless: a bad parameter is shown under its field, a
short training is started from the page and followed to its end, and its model appears in the
models table with its evaluation."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from element_lightning_pose.app.jobs import JOB_FILE, JOBS_DIR, LOG_FILE
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


@pytest.fixture
def no_leftover_jobs(tmp_path):
    """Jobs outlive the app's server by design: stop any ``elp train`` a failed test left running."""
    yield
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            arguments = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"train" in arguments and any(str(tmp_path).encode() in a for a in arguments):
            try:
                os.killpg(int(cmdline.parent.name), signal.SIGKILL)  # each job is a session of its own
            except ProcessLookupError:  # ended in the meantime
                pass


def test_a_cancelled_training_is_resumed_from_the_page(tmp_path, no_leftover_jobs):
    """Cancel keeps the finished epochs; resume goes on from them, the epoch table carrying on."""
    root = tmp_path / "root"
    project = make_synthetic_project(root / "mouse", image_size=(96, 128), n_labeled=6, n_video_frames=20)
    models = project.root / "models"
    with served_app([root]) as url, browser_page(1300, 1000) as page:
        page.goto(f"{url}/train?p=0:mouse")
        page.wait_for_selector("#params select[name=preset] option", state="attached")
        page.select_option("select[name=preset]", "default")
        page.select_option("select[name=backbone]", "resnet18")
        page.fill("input[name=image_resize]", "64x64")
        page.fill("input[name=max_epochs]", "100000")
        page.fill("textarea[name=extra]", TINY_EXTRA)
        page.wait_for_selector("label.invalid", state="detached")
        name = page.input_value("input[name=name]")
        page.click("#start")
        page.wait_for_selector("body[data-job-state=running]", timeout=60_000)
        assert page.locator("#resume").is_disabled()
        deadline = time.monotonic() + 240
        while not any(models.glob(f".{name}.*.tmp/checkpoints/last.ckpt")):  # an epoch's checkpoint written
            assert time.monotonic() < deadline, "no epoch's checkpoint within 240 s"
            time.sleep(0.2)
        page.click("#cancel")
        page.wait_for_selector("body[data-job-state=cancelled]", timeout=60_000)
        assert "resume goes on from them" in page.locator("#job-state").inner_text()
        kept = int(page.get_attribute("body", "data-job-epochs"))
        assert kept >= 1 and (models / f"{name}.stopped" / "checkpoints" / "last.ckpt").is_file()

        page.click("#resume")
        page.wait_for_selector("body[data-job-state=running]", timeout=60_000)
        deadline = time.monotonic() + 240  # the page's strict CSP forbids wait_for_function's eval
        while int(page.get_attribute("body", "data-job-epochs")) <= kept + 1:
            assert time.monotonic() < deadline and page.get_attribute("body", "data-job-state") == "running"
            time.sleep(0.3)
        epochs = page.locator("#epochs tbody tr td:first-child").all_inner_texts()  # newest first
        assert [int(e) for e in epochs] == sorted((int(e) for e in epochs), reverse=True) and int(epochs[0]) > kept
        page.click("#cancel")
        page.wait_for_selector("body[data-job-state=cancelled]", timeout=60_000)
    # the resumed job itself was cancelled (its record), and its run was stopped (the job's log)
    record = json.loads((models / JOBS_DIR / name / JOB_FILE).read_text())
    assert (record["state"], record["cancel_requested"], bool(record["resumed_from"])) == ("cancelled", True, True)
    assert (models / JOBS_DIR / name / LOG_FILE).read_text().count("training stopped by SIGTERM") == 2
    assert not (models / name).exists()
