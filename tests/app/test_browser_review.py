"""The review page in Debian's chromium, headless: a spike clicked in a trace shows its frame, the
keys step, and the worst frame sent to the labeler opens there prefilled with the model's
prediction: the wrong point is corrected by a click, and saving writes it with the prefilled rest."""

from __future__ import annotations

import numpy as np
import pytest

from element_lightning_pose.engine.data.keypoints import write_predictions
from element_lightning_pose.engine.data.labels import read_labels
from element_lightning_pose.synthetic.projects import make_synthetic_project
from tests.app.browser import browser_page, canvas_point, require_browser, served_app, shoot

pytestmark = pytest.mark.browser
BAD_FRAME = 61  # the planted wrong prediction: the nose 25 px off, likelihood 0.1
N_FRAMES = 90
TRACE_HEIGHT = 84  # css px of a trace canvas (app.css), drawn with a 4 px margin


@pytest.fixture(autouse=True)
def _browser():
    require_browser()


@pytest.fixture
def reviewed(tmp_path):
    root = tmp_path / "root"
    project = make_synthetic_project(root / "mouse", image_size=(96, 128), n_labeled=4, n_video_frames=N_FRAMES)
    truth, _ = project.ground_truth(project.videos[0])
    predictions = np.concatenate([truth, np.full((*truth.shape[:2], 1), 0.95)], axis=-1)
    predictions[BAD_FRAME, 0] = [truth[BAD_FRAME, 0, 0] + 25.0, truth[BAD_FRAME, 0, 1], 0.1]
    write_predictions(project.root / "models/m1/predictions/video00.csv", predictions, project.bodyparts)
    return root, project, predictions


def test_a_spike_is_clicked_and_the_worst_frame_is_labeled_from_its_prediction(reviewed):
    root, project, predictions = reviewed
    truth, _ = project.ground_truth(project.videos[0])
    with served_app([root]) as url, browser_page(1300, 1000) as page:
        page.goto(f"{url}/review?p=0:mouse")
        page.wait_for_selector("body[data-frame='0']")
        page.wait_for_selector("canvas.trace[data-series='likelihood']")
        box = page.locator("canvas.trace[data-series='likelihood']").bounding_box()
        # where the trace draws frame 61 at likelihood 0.1 (frames across, likelihood 0..1 up)
        x = box["x"] + 1 + (BAD_FRAME + 0.5) / N_FRAMES * (box["width"] - 2)
        y = box["y"] + 1 + 4 + (1 - 0.1) * (TRACE_HEIGHT - 8)
        page.mouse.click(x + 5, y)  # a little beside the spike: its own frame is found
        page.wait_for_selector(f"body[data-frame='{BAD_FRAME}']")
        for key, frame in (("ArrowRight", 62), ("Shift+ArrowRight", 72), ("Shift+ArrowLeft", 62), ("ArrowLeft", 61)):
            page.keyboard.press(key)
            page.wait_for_selector(f"body[data-frame='{frame}']")
        worst = page.locator("#worst li").first
        assert worst.get_attribute("data-frame") == str(BAD_FRAME)
        shoot(page, "review")
        worst.locator("button").click()
        link = page.wait_for_selector("#worst li a[data-image]")
        image = link.get_attribute("data-image")
        assert image == f"labeled-data/video00/img{BAD_FRAME:05d}.png"
        link.click()
        page.wait_for_selector(f"body[data-frame='{image}']")
        page.mouse.click(*canvas_point(page, *truth[BAD_FRAME, 0]))  # the nose where it is
        page.keyboard.press("Control+s")  # the correction and the prefilled rest
        page.wait_for_selector(".message.note")
    labels = read_labels(project.csv_path, require_keypoints=False)
    row = labels.image_paths.index(image)
    np.testing.assert_allclose(labels.keypoints[row, 0], truth[BAD_FRAME, 0], atol=1.0)
    np.testing.assert_allclose(labels.keypoints[row, 1:], predictions[BAD_FRAME, 1:, :2], atol=0.01)
    history = (project.root / "CollectedData.csv.history.jsonl").read_text()
    assert history.count('"origin": "prefilled"') == len(project.bodyparts) - 1
    assert history.count('"origin": "manual"') == 1
