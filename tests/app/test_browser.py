"""The app in Debian's chromium, headless: what a person does, checked in the files it writes.

These run in CI (`scripts/test.sh` installs chromium; Playwright drives it, it downloads no
browser). Each flow also leaves a screenshot of its page in docs/img/app/ for docs/app.md.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from element_lightning_pose.engine.data.labels import read_labels
from element_lightning_pose.engine.labeling.store import LabelStore
from element_lightning_pose.synthetic.projects import make_synthetic_project
from tests.app.browser import browser_page, canvas_point, require_browser, served_app, shoot
from tests.engine.labeling.test_store import write_images

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def _browser():
    require_browser()


@pytest.fixture
def new_project(tmp_path):
    """A project made as the app makes one (three body parts, a skeleton) with two queued frames."""
    root = tmp_path / "root"
    project = root / "reach"
    project.mkdir(parents=True)
    (project / "elp_project.yaml").write_text("bodyparts: [snout, paw_l, paw_r]\nskeleton: [[snout, paw_l]]\n")
    store = LabelStore(project, bodyparts=["snout", "paw_l", "paw_r"])
    images = write_images(project, "session1", [4, 9])
    store.add_frames({None: images}, base_revision=store.revision())
    return root, project, images


def test_a_frame_is_labeled_by_clicks_and_keys_undone_once_and_saved(new_project):
    root, project, images = new_project
    with served_app([root]) as url, browser_page() as page:
        page.goto(f"{url}/label?p=0:reach")
        page.wait_for_selector(f"body[data-frame='{images[0]}']")
        page.mouse.click(*canvas_point(page, 10, 12))  # snout, then the next body part is current
        page.mouse.click(*canvas_point(page, 25, 7))  # paw_l
        page.mouse.click(*canvas_point(page, 30, 20))  # paw_r
        page.keyboard.press("Control+z")  # undo paw_r: it is the current body part again
        page.keyboard.press("o")  # paw_r is occluded
        shoot(page, "label")
        page.keyboard.press("Control+s")
        page.wait_for_selector(".message.note")
    labels = read_labels(project / "CollectedData.csv")
    np.testing.assert_allclose(labels.keypoints[0, :2], [[10, 12], [25, 7]], atol=1.0)
    assert np.isnan(labels.keypoints[0, 2]).all() and np.isnan(labels.keypoints[1]).all()
    history = [json.loads(line) for line in (project / "CollectedData.csv.history.jsonl").read_text().splitlines()]
    assert {(h["bodypart"], h["state"]) for h in history} == {
        ("snout", "labeled"),
        ("paw_l", "labeled"),
        ("paw_r", "occluded"),
    }


def test_a_save_from_a_stale_tab_is_shown_and_not_written(new_project):
    root, project, images = new_project
    with served_app([root]) as url, browser_page() as first:
        second = first.context.browser.new_page()  # another tab, opened before the first one saves
        for page in (first, second):
            page.goto(f"{url}/label?p=0:reach")
            page.wait_for_selector(f"body[data-frame='{images[0]}']")
        first.mouse.click(*canvas_point(first, 5, 5))
        first.keyboard.press("Control+s")
        first.wait_for_selector(".message.note")
        second.mouse.click(*canvas_point(second, 20, 20))
        second.keyboard.press("Control+s")
        alert = second.wait_for_selector(".message.error")
        assert "changed on disk" in alert.inner_text()
    labels = read_labels(project / "CollectedData.csv")
    np.testing.assert_allclose(labels.keypoints[0, 0], [5, 5], atol=1.0)


def test_the_projects_page_lists_and_creates_projects(tmp_path):
    root = tmp_path / "root"
    make_synthetic_project(root / "lab" / "mouse", image_size=(48, 64), n_labeled=4, n_video_frames=20)
    with served_app([root]) as url, browser_page() as page:
        page.goto(url)
        page.wait_for_selector("#projects a:text('mouse')")
        page.fill("input[name=name]", "reach")
        page.fill("textarea[name=bodyparts]", "snout\npaw_l\npaw_r")
        page.click(".browser-entry:text('lab/')")
        page.click(".browser-entry:text('mouse/')")
        page.click(".browser-entry:text('videos/')")
        page.click(".browser-entry:text('video00.mp4')")
        shoot(page, "projects")
        page.click("button[type=submit]")
        page.wait_for_url("**/project?p=0%3Areach")
        page.wait_for_selector("#videos td:text('videos/video00.mp4')")
        shoot(page, "project")
    assert (root / "reach" / "videos" / "video00.mp4").is_symlink()


def test_kmeans_frames_are_selected_queued_and_labeled(tmp_path):
    root = tmp_path / "root"
    project = make_synthetic_project(root / "mouse", image_size=(96, 128), n_labeled=4, n_video_frames=120)
    with served_app([root]) as url, browser_page() as page:
        page.goto(f"{url}/select?p=0:mouse")
        page.wait_for_selector("select[name=video] option", state="attached")
        page.fill("input[name=n]", "10")
        page.click("#select button[type=submit]")
        page.wait_for_selector("body[data-suggested='10']")
        reasons = page.locator("#suggestions tbody td:nth-child(4)").all_inner_texts()
        assert len(reasons) == 10 and all("cluster" in r for r in reasons)
        shoot(page, "select")
        page.click("#queue")
        page.wait_for_selector("body[data-queued='10']")
        page.click("#queued a")
        page.wait_for_selector("body[data-frame]")
        image = page.locator("body").get_attribute("data-frame")
        bodyparts = LabelStore(project.root).bodyparts
        page.mouse.click(*canvas_point(page, 40, 30))  # the first body part
        page.mouse.click(*canvas_point(page, 50, 35))  # the second
        page.keyboard.press("Control+z")  # undo the second
        page.keyboard.press("s")  # S: the next body part is current: the third
        page.mouse.click(*canvas_point(page, 60, 40))
        page.keyboard.press("Control+s")
        page.wait_for_selector(".message.note")
    labels = read_labels(project.csv_path, require_keypoints=False)
    row = labels.image_paths.index(image)
    assert len(labels) == 4 + 10
    np.testing.assert_allclose(labels.keypoints[row, 0], [40, 30], atol=1.0)
    assert np.isnan(labels.keypoints[row, 1]).all()
    np.testing.assert_allclose(labels.keypoints[row, 2], [60, 40], atol=1.0)
    assert bodyparts[0] and len(bodyparts) > 3


def test_model_guided_frames_from_a_tiny_ensemble_put_a_planted_error_first(tmp_path):
    """Two tiny networks trained for a few steps with different seeds predict the video; one
    member's prediction of frame 37 is planted far off, so the members disagree there."""
    from element_lightning_pose.engine.data.keypoints import read_predictions, write_predictions
    from element_lightning_pose.engine.inference.models import load_model
    from element_lightning_pose.engine.inference.predict import predict_video
    from element_lightning_pose.engine.training import train
    from tests.engine.conftest import TINY_CONFIG

    root = tmp_path / "root"
    project = make_synthetic_project(root / "mouse", image_size=(64, 64), n_labeled=8, n_video_frames=60)
    members = []
    for seed in (0, 1):
        config = {**TINY_CONFIG, "training": {**TINY_CONFIG["training"], "seed": seed, "max_steps": 3}}
        model_dir = project.root / "models" / f"seed{seed}"
        train(config, project.root, model_dir, progress=False)
        csv = model_dir / "predictions" / "video00.csv"
        predict_video(load_model(model_dir, device="cpu"), project.videos[0], out_csv=csv, progress=False)
        members.append(csv)
    values, bodyparts = read_predictions(members[1])
    values[37, 2, :2] += 30.0  # one member places body part 2 far off at frame 37
    write_predictions(members[1], values, bodyparts)
    with served_app([root]) as url, browser_page() as page:
        page.goto(f"{url}/select?p=0:mouse")
        page.wait_for_selector("select[name=video] option", state="attached")
        page.check("input[name=method][value=model]")
        for member in members:
            page.check(f"#files input[value='{member.relative_to(project.root).as_posix()}']")
        page.fill("input[name=n]", "5")
        page.click("#select button[type=submit]")
        page.wait_for_selector("body[data-suggested='5']")
        frames = [
            int(f) for f in page.locator("#suggestions tbody tr").evaluate_all("rows => rows.map(r => r.dataset.frame)")
        ]
        reason = page.locator("#suggestions tbody tr[data-frame='37'] td:nth-child(4)").inner_text()
        shoot(page, "select-model")
    assert 37 in frames
    assert bodyparts[2] in reason  # the criterion that stands out first there names the planted body part
